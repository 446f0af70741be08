//! What the SQL stores share: ids, times, rows and pages.

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use engine_store::{Claim, Listing, Record, StoreError, Summary, Versioned};

use crate::backend;

/// The current time, epoch milliseconds.
pub(crate) fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

/// Milliseconds of `duration`, saturating.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The claims of a `claim_due` statement's rows, `(next_refresh_at, id, version)`, soonest due
/// first, as the statement chose them (`RETURNING` keeps no order).
pub(crate) fn claims(mut rows: Vec<(i64, String, i64)>, token: &str, until_ms: u64) -> Vec<Claim> {
    rows.sort();
    rows.into_iter()
        .map(|(_, id, version)| Claim {
            id,
            version: u64::try_from(version).unwrap_or(0),
            token: token.to_owned(),
            until_ms,
        })
        .collect()
}

/// A number for an `INTEGER`/`BIGINT` column; values past `i64::MAX` (never a version or a
/// time) saturate.
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A listing from `limit + 1` rows: the extra row only says there is a next page.
pub(crate) fn paginate(mut rows: Vec<Summary>, limit: usize) -> Listing {
    let next = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|last| last.id.clone())
    } else {
        None
    };
    Listing {
        instances: rows,
        next,
    }
}

/// A stored row as a [`Versioned`].
pub(crate) fn decode(instance: &str, version: i64, text: &str) -> Result<Versioned, StoreError> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(state)) => Ok(Versioned {
            state: Arc::new(state),
            version: u64::try_from(version).unwrap_or(0),
        }),
        Ok(_) => Err(backend(
            instance,
            io::Error::other("the stored state is not a JSON object"),
        )),
        Err(source) => Err(backend(instance, source)),
    }
}

/// A stored record's row, `(version, expires_at, value)`, as a [`Record`] with id `id`.
pub(crate) fn record(id: String, row: (i64, Option<i64>, String)) -> Result<Record, StoreError> {
    let (version, expires_at, text) = row;
    let value = serde_json::from_str(&text).map_err(|source| backend(&id, source))?;
    Ok(Record {
        id,
        value,
        version: u64::try_from(version).unwrap_or(0),
        expires_at_ms: expires_at.and_then(|at| u64::try_from(at).ok()),
    })
}

//! Records: small JSON documents a store keeps beside its instances, by namespace and id, with
//! an optional expiry and a conditional write ([`crate::InstanceStore::put_record`]). The
//! service's API keys are kept so; anything else a server shares between its processes
//! (short-lived authorization state, an outbox) can be too.

use crate::{StoreError, StoreErrorKind};

/// One stored record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Its id in its namespace.
    pub id: String,
    /// What it holds.
    pub value: serde_json::Value,
    /// 1 after its first write, one more after each write.
    pub version: u64,
    /// When it expires, epoch milliseconds (`None`: never). An expired record is absent: it is
    /// neither read nor listed, and a write expecting version 0 replaces it.
    pub expires_at_ms: Option<u64>,
}

impl Record {
    /// True when the record has expired at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now_ms)
    }
}

/// The largest number of records [`crate::InstanceStore::list_records`] returns at once.
pub const MAX_RECORDS_PAGE: usize = 1000;

/// Checks a namespace and a record id: each one as [`crate::valid_id`] wants an instance id
/// (they name files in a file store).
///
/// Fails with [`StoreErrorKind::InvalidInstanceId`] naming the one that is not.
pub fn valid_record(namespace: &str, id: &str) -> Result<(), StoreError> {
    crate::valid_id(namespace)?;
    crate::valid_id(id)
}

/// The error of a conditional write or delete that found another version.
pub fn record_conflict(namespace: &str, id: &str, expected: u64, found: u64) -> StoreError {
    StoreErrorKind::Conflict {
        instance: format!("{namespace}/{id}"),
        expected,
        found,
    }
    .into()
}

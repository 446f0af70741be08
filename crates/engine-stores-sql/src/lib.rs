//! Instance stores in databases, behind [`engine_store::InstanceStore`].
//!
//! - [`SqliteStore`] (`sqlite:PATH`): many instances in one file, no server; the embedded
//!   default for many instances on one host.
//! - [`PostgresStore`] (`postgres://...`): instances shared by engine processes on several
//!   machines.
//!
//! Both keep the contract of [`engine_store`]: every write is a compare-and-swap on the
//! instance's version, and [`InstanceStore::lock`] excludes other lockers across processes.
//! How each one locks, and why, is on its type and in `docs/stores.md`.
//!
//! [`open`] picks the store a URL names, the file stores included:
//!
//! ```
//! use engine_store::InstanceStore;
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let url = format!("sqlite:{}", dir.path().join("state.db").display());
//! let store = engine_stores_sql::open(&url).await?;
//! let mut state = engine_store::State::new();
//! state.insert("client.id".to_owned(), json!("demo-client"));
//! let version = store.write("cust42", state, 0).await?;
//! assert_eq!(store.load("cust42").await?.version, version);
//! # Ok(())
//! # }
//! ```
//!
//! This crate is separate from `engine-store` so that the runtime, and every build and test of
//! it, does not compile SQLite and `sqlx`; only the `engine` binary links them.

use std::io;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use engine_store::{
    FileStore, InstanceStore, Listing, StoreError, StoreErrorKind, Summary, Versioned,
};

pub use encrypted_store::{EncryptedStore, IsSecret, SecretKey, is_encrypted};
pub use postgres_store::{DEFAULT_LOCK_LIFETIME, PostgresStore};
pub use sqlite_store::SqliteStore;

mod encrypted_store;
mod postgres_store;
mod sqlite_store;

#[cfg(test)]
mod conformance;

/// Opens the store `url` names:
///
/// - `sqlite:PATH`: a [`SqliteStore`], created and migrated on first use;
/// - `postgres://...` (or `postgresql://...`): a [`PostgresStore`], migrated on connect;
/// - `file:DIR`, or a bare directory: a [`FileStore`] of one `<id>.json` per instance.
///
/// Fails with [`StoreErrorKind::Backend`] when the database cannot be opened, reached or
/// migrated.
pub async fn open(url: &str) -> Result<Arc<dyn InstanceStore>, StoreError> {
    open_with(url, &Options::default()).await
}

/// How [`open_with`] opens a store, beyond its URL.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The lifetime of a [`PostgresStore`] lock held by a silent holder
    /// ([`PostgresStore::lock_lifetime`]); `None`: [`DEFAULT_LOCK_LIFETIME`]. Other stores' locks
    /// have no lifetime: the OS releases them when their holder dies.
    pub lock_lifetime: Option<std::time::Duration>,
}

/// Opens the store `url` names, like [`open`], with `options`.
pub async fn open_with(url: &str, options: &Options) -> Result<Arc<dyn InstanceStore>, StoreError> {
    if let Some(path) = url.strip_prefix("sqlite:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        return Ok(Arc::new(SqliteStore::open(path).await?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = PostgresStore::connect(url).await?;
        return Ok(Arc::new(match options.lock_lifetime {
            Some(lifetime) => store.lock_lifetime(lifetime),
            None => store,
        }));
    }
    let dir = url.strip_prefix("file:").unwrap_or(url);
    Ok(Arc::new(FileStore::new(dir)))
}

/// `url` without its password, for messages: `postgres://user:secret@host/db` →
/// `postgres://user:****@host/db`.
pub fn display_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:****@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

fn backend(instance: &str, source: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreErrorKind::Backend {
        instance: instance.to_owned(),
        source: Box::new(source),
    }
    .into()
}

/// Refuses ids a [`FileStore`] could not hold either, so that instances move between stores
/// (`engine instances export`, then import) under the same id.
fn valid_id(instance: &str) -> Result<(), StoreError> {
    let valid = !instance.is_empty()
        && !instance.starts_with('.')
        && instance
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"._-".contains(&byte));
    if valid {
        Ok(())
    } else {
        Err(StoreErrorKind::InvalidInstanceId {
            id: instance.to_owned(),
        }
        .into())
    }
}

/// The current time, epoch milliseconds.
fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// A number for an `INTEGER`/`BIGINT` column; values past `i64::MAX` (never a version or a
/// time) saturate.
fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// A listing from `limit + 1` rows: the extra row only says there is a next page.
fn paginate(mut rows: Vec<Summary>, limit: usize) -> Listing {
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
fn decode(instance: &str, version: i64, text: &str) -> Result<Versioned, StoreError> {
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

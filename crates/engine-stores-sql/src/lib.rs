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
//!
//! # Features
//!
//! `sqlite` (bundled SQLite) and `postgres` (`sqlx`), both on by default. Without them the crate
//! keeps [`EncryptedStore`] and the file stores, and [`open`] refuses a `sqlite:` or
//! `postgres://` URL saying the build lacks it: `connectors/quickstart.sh` builds the engine so,
//! about a third of a cold build less.

#[cfg(not(all(feature = "sqlite", feature = "postgres")))]
use std::io;
use std::sync::Arc;

use engine_store::{FileStore, InstanceStore, StoreError, StoreErrorKind};

pub use encrypted_store::{
    EncryptedStore, IsSecret, SecretKey, Unsealing, is_encrypted, sealed_with,
};
#[cfg(feature = "postgres")]
pub use postgres_store::{DEFAULT_LOCK_LIFETIME, PostgresStore};
#[cfg(feature = "sqlite")]
pub use sqlite_store::SqliteStore;

mod encrypted_store;
#[cfg(feature = "postgres")]
mod postgres_store;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod rows;
#[cfg(feature = "sqlite")]
mod sqlite_store;

#[cfg(test)]
mod conformance;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
use engine_store::valid_id;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use rows::{claims, decode, epoch_ms, millis, paginate, to_i64};

/// Opens the store `url` names:
///
/// - `sqlite:PATH`: a `SqliteStore`, created and migrated on first use;
/// - `postgres://...` (or `postgresql://...`): a `PostgresStore`, migrated on connect;
/// - `file:DIR`, or a bare directory: a [`FileStore`] of one `<id>.json` per instance.
///
/// Fails with [`StoreErrorKind::Backend`] when the database cannot be opened, reached or
/// migrated, or when this build lacks its feature.
pub async fn open(url: &str) -> Result<Arc<dyn InstanceStore>, StoreError> {
    open_with(url, &Options::default()).await
}

/// How [`open_with`] opens a store, beyond its URL.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The lifetime of a `PostgresStore` lock held by a silent holder
    /// (`PostgresStore::lock_lifetime`); `None`: `DEFAULT_LOCK_LIFETIME`. Other stores' locks
    /// have no lifetime: the OS releases them when their holder dies.
    pub lock_lifetime: Option<std::time::Duration>,
}

/// Opens the store `url` names, like [`open`], with `options`.
#[cfg_attr(
    not(feature = "postgres"),
    expect(unused_variables, reason = "the options are PostgreSQL's")
)]
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    expect(
        clippy::unused_async,
        reason = "only the databases are opened asynchronously"
    )
)]
pub async fn open_with(url: &str, options: &Options) -> Result<Arc<dyn InstanceStore>, StoreError> {
    if let Some(path) = url.strip_prefix("sqlite:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        #[cfg(feature = "sqlite")]
        return Ok(Arc::new(SqliteStore::open(path).await?));
        #[cfg(not(feature = "sqlite"))]
        return Err(not_built(path, "SQLite", "sqlite"));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        {
            let store = PostgresStore::connect(url).await?;
            return Ok(Arc::new(match options.lock_lifetime {
                Some(lifetime) => store.lock_lifetime(lifetime),
                None => store,
            }));
        }
        #[cfg(not(feature = "postgres"))]
        return Err(not_built(&display_url(url), "PostgreSQL", "postgres"));
    }
    let dir = url.strip_prefix("file:").unwrap_or(url);
    Ok(Arc::new(FileStore::new(dir)))
}

/// The error for a store URL whose backend this build left out.
#[cfg(not(all(feature = "sqlite", feature = "postgres")))]
fn not_built(instance: &str, backend_name: &str, feature: &str) -> StoreError {
    backend(
        instance,
        io::Error::other(format!(
            "this build has no {backend_name} store: it needs the `{feature}` feature of \
             engine-stores-sql"
        )),
    )
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

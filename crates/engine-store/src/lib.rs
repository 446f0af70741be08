//! Persistent state of connector instances.
//!
//! An instance's [`State`] is a flat JSON object mapping configuration keys to values. Keys such
//! as `authentication.time` are one flat key each, not a path. This crate owns how that state is
//! read, locked and written back; it knows nothing about connectors, HTTP or async.
//!
//! The entry point is the [`StateStore`] trait, with two implementations:
//!
//! - [`FileStore`] keeps each instance in `<dir>/<instance>.json` ([`FileStore::new`]) or in one
//!   given file ([`FileStore::for_file`]). Its lock works across processes and its writes are
//!   atomic, so a crash never leaves a torn file.
//! - [`MemoryStore`] keeps state in memory, for tests.
//!
//! A read-modify-write cycle (the token refresh, for instance) takes the instance's lock with
//! [`StateStore::lock`], re-reads the state with [`StateLock::load`], writes it with
//! [`StateLock::persist`] and releases the lock by dropping the guard. A plain
//! [`StateStore::load`] is a lock-free snapshot.
//!
//! ```
//! use engine_store::{FileStore, StateStore};
//! use serde_json::json;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = FileStore::new(dir.path());
//! fs_err::write(store.path_of("acme")?, r#"{ "authentication.time": "0" }"#)?;
//!
//! let mut lock = store.lock("acme")?;
//! let mut state = lock.load()?;
//! state.insert("authentication.time".to_owned(), json!("1700000000"));
//! lock.persist(&state)?;
//! drop(lock);
//!
//! assert_eq!(store.load("acme")?["authentication.time"], "1700000000");
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

pub use file_store::FileStore;
pub use memory_store::MemoryStore;
pub use store_error::{StoreError, StoreErrorKind};

mod file_store;
mod memory_store;
mod store_error;

/// The state of one instance: configuration key → value, in file order.
pub type State = serde_json::Map<String, serde_json::Value>;

/// Where instance state lives.
///
/// Implementations are shared between threads; [`StateStore::lock`] serializes writers.
pub trait StateStore: Send + Sync {
    /// Reads the current state of `instance` without locking, as a shared snapshot: later
    /// writes replace the store's state and never change a snapshot already handed out (a
    /// [`MemoryStore`] hands out the state it holds without copying it).
    ///
    /// Fails with [`StoreErrorKind::NotFound`] when the instance has no state, and with
    /// [`StoreErrorKind::Malformed`] or [`StoreErrorKind::NotAnObject`] when its file cannot be
    /// parsed.
    fn load(&self, instance: &str) -> Result<Arc<State>, StoreError>;

    /// Takes the exclusive lock for `instance`, blocking until it is free.
    ///
    /// Returns a guard that holds the lock until it is dropped. The instance need not exist yet:
    /// [`StateLock::persist`] creates it.
    fn lock(&self, instance: &str) -> Result<Box<dyn StateLock + '_>, StoreError>;

    /// Like [`StateStore::lock`], but gives up after `timeout`.
    ///
    /// Fails with [`StoreErrorKind::LockTimeout`] when the lock is still held by someone else
    /// after `timeout`.
    fn lock_timeout(
        &self,
        instance: &str,
        timeout: Duration,
    ) -> Result<Box<dyn StateLock + '_>, StoreError>;
}

/// A held lock on one instance, from [`StateStore::lock`]. Dropping it releases the lock.
pub trait StateLock: Send {
    /// Re-reads the instance's state under the lock.
    ///
    /// Fails like [`StateStore::load`].
    fn load(&self) -> Result<State, StoreError>;

    /// Replaces the instance's whole state with `state`, atomically.
    ///
    /// Readers see either the old or the new state, never a mix. The output is pretty JSON with a
    /// 2-space indent and a trailing newline, with keys in the order of `state`. Fails with
    /// [`StoreErrorKind::Io`]; the stored state is then unchanged, except after a failed final
    /// directory sync (operation `sync` on the directory), when the new state is in place but
    /// may not survive a power loss.
    fn persist(&mut self, state: &State) -> Result<(), StoreError>;
}

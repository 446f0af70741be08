//! Persistent state of connector instances.
//!
//! An instance's [`State`] is a flat JSON object mapping configuration keys to values. Keys such
//! as `authentication.time` are one flat key each, not a path. This crate owns how that state is
//! read, locked and written back, and knows nothing about connectors or HTTP.
//!
//! The entry point is the async [`InstanceStore`] trait, with two implementations:
//!
//! - [`FileStore`] keeps each instance in `<dir>/<instance>.json` ([`FileStore::new`]) or in one
//!   given file ([`FileStore::for_file`]). Its lock works across processes, its writes are
//!   atomic (a crash never leaves a torn file), and its blocking file work runs on tokio's
//!   blocking pool, never on a runtime worker.
//! - [`MemoryStore`] keeps state in memory, for tests and dry runs.
//!
//! A store that wraps another (to encrypt, to cache) writes what it changes and hands the rest to
//! the inner store with [`forward_instance_store!`].
//!
//! Every stored instance has a **version** ([`Versioned::version`]): 0 for an instance that does
//! not exist or was never written by the engine, one more after each write. Every write is a
//! compare-and-swap: it names the version it read and fails with [`StoreErrorKind::Conflict`]
//! when the stored version is no longer that one, so a writer that read an older state (a paused
//! process, another machine) can never overwrite a newer one; it re-reads instead. A file keeps
//! its version in the reserved key [`VERSION_KEY`] (`engine.version`), so that processes that
//! share nothing but the file still fence each other.
//!
//! A read-modify-write cycle that talks to a vendor in the middle (the token refresh) also takes
//! the instance's **lock** with [`InstanceStore::lock`], re-reads under it
//! ([`InstanceLock::load`]), writes ([`InstanceLock::write`]) and releases it by dropping the
//! guard: one refresh at a time per instance, across processes.
//!
//! Beside the instances, every store keeps **records** ([`Record`]): small JSON documents by
//! namespace and id, each with a version for a conditional write ([`InstanceStore::put_record`])
//! and an optional expiry after which it is absent, and is removed by
//! [`InstanceStore::purge_expired_records`]. What a server shares between its processes goes
//! there (the service's API keys first).
//!
//! Each state carries its refresh [`Schedule`] (when the token expires, when it is next due,
//! how its refreshes went) under [`SCHEDULE_KEY`]: the runtime computes it, the stores list and
//! index it ([`Summary`], [`Page`]) and never read the authentication keys it comes from.
//!
//! ```
//! use engine_store::{FileStore, InstanceStore};
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = FileStore::new(dir.path());
//! fs_err::write(store.path_of("acme")?, r#"{ "authentication.time": "0" }"#)?;
//!
//! let mut lock = store.lock("acme", None).await?;
//! let read = lock.load().await?;
//! let mut state = (*read.state).clone();
//! state.insert("authentication.time".to_owned(), json!("1700000000"));
//! let version = lock.write(state, read.version).await?;
//! drop(lock);
//!
//! let stored = store.load("acme").await?;
//! assert_eq!((stored.state["authentication.time"].as_str(), stored.version), (Some("1700000000"), version));
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use file_store::{FileStore, lock_file};
pub use memory_store::MemoryStore;
pub use record::{MAX_RECORDS_PAGE, Record, record_conflict, valid_record};
pub use schedule::{SCHEDULE_KEY, Schedule, ScheduleStatus};
pub use store_error::{StoreError, StoreErrorKind};

/// For [`forward_instance_store!`]'s expansion in crates that may not name `serde_json`.
#[doc(hidden)]
pub use serde_json as __serde_json;

mod file_store;
mod forward;
mod memory_store;
mod record;
mod schedule;
mod store_error;

/// The state of one instance: configuration key → value, in file order.
pub type State = serde_json::Map<String, serde_json::Value>;

/// A future the store traits return: boxed, so that the traits are `dyn`-compatible.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The reserved key under which a [`FileStore`] keeps an instance's version in its file. It is
/// never part of the [`State`] handed out.
pub const VERSION_KEY: &str = "engine.version";

/// The reserved key under which every store records the connector an instance belongs to (its
/// `name`, or the file it was imported with). It is part of the [`State`]: the SQL stores also
/// copy it into a column at each write, so that listings filter on it without reading states.
pub const CONNECTOR_KEY: &str = "engine.connector";

/// The reserved key under which an instance created through the service records the public id
/// of the API key that created it: only that key sees it. An instance without it (imported)
/// is seen by every key.
pub const OWNER_KEY: &str = "engine.owner";

/// The reserved key of an instance's status before [`Schedule`] held it (`needs-reauth`):
/// read, for states written before, by [`Schedule::read`], and removed by [`Schedule::put`].
pub const STATUS_KEY: &str = "engine.status";

/// The reserved key counting an instance's consecutive rejected refreshes before [`Schedule`]
/// held the count: read and removed like [`STATUS_KEY`].
pub const FAILURES_KEY: &str = "engine.failures";

/// The status of `state` as listings filter on it ([`Schedule::mark`]): `needs-reauth`,
/// `retrying`, or `None` for a fresh one.
pub fn status_of(state: &State) -> Option<&'static str> {
    Schedule::read(state).mark()
}

/// The connector `state` belongs to, from [`CONNECTOR_KEY`]; `None` when it was never recorded.
pub fn connector_of(state: &State) -> Option<&str> {
    state.get(CONNECTOR_KEY)?.as_str()
}

/// Changes `instance` under its lock: takes the lock (calling `waiting` once when another
/// holder makes it wait, then waiting at most `timeout`), re-reads, lets `change` edit the state
/// and writes it with the version read. `change` returns whether to write at all.
///
/// Every writer that is not a token refresh goes through here (the failure count, the status,
/// a rekey, a credential set by hand): a refresh holds the lock from its read to its write, so
/// such a write never lands in between, and a rotated refresh token is never lost to it.
pub async fn update(
    store: &dyn InstanceStore,
    instance: &str,
    timeout: Option<Duration>,
    waiting: &(dyn Fn() + Sync),
    change: impl FnOnce(&mut State) -> Result<bool, StoreError> + Send,
) -> Result<bool, StoreError> {
    let mut lock = match store.lock(instance, Some(Duration::ZERO)).await {
        Ok(lock) => lock,
        Err(error) if matches!(error.kind(), StoreErrorKind::LockTimeout { .. }) => {
            waiting();
            store.lock(instance, timeout).await?
        }
        Err(error) => return Err(error),
    };
    let read = lock.load().await?;
    let mut state = State::clone(&read.state);
    if !change(&mut state)? {
        return Ok(false);
    }
    lock.write(state, read.version).await?;
    Ok(true)
}

/// The longest instance id, in bytes: its files (`<id>.json`, `.<id>.json.lock`,
/// `<id>.lock`) must fit in a file name (255 bytes).
pub const MAX_ID_LEN: usize = 200;

/// Checks that `instance` is an id every store can keep: 1 to [`MAX_ID_LEN`] ASCII letters,
/// digits, `.`, `_` and `-`, not starting with `.` (it names files).
///
/// Fails with [`StoreErrorKind::InvalidInstanceId`].
pub fn valid_id(instance: &str) -> Result<(), StoreError> {
    let valid = !instance.is_empty()
        && instance.len() <= MAX_ID_LEN
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

/// An instance's state with the version it was read at.
#[derive(Debug, Clone, Default)]
pub struct Versioned {
    /// The state, shared: later writes replace the store's state and never change it.
    pub state: Arc<State>,
    /// 0 for an instance never written by the engine (or absent); one more after each write.
    pub version: u64,
}

/// Which instances [`InstanceStore::list`] returns: ids after `after`, in id order, at most
/// `limit`, of those that match every filter that is set.
#[derive(Debug, Clone)]
pub struct Page {
    /// Start after this id (`None`: from the first).
    pub after: Option<String>,
    /// At most this many instances.
    pub limit: usize,
    /// Only the instances of this connector ([`connector_of`]).
    pub connector: Option<String>,
    /// Only the instances with this status ([`status_of`]).
    pub status: Option<String>,
    /// Only the instances whose token expires ([`Schedule::expires_at_ms`]) at or before this
    /// time, epoch milliseconds; an instance without a known expiry never matches.
    pub expires_before_ms: Option<u64>,
    /// Only the instances without a known expiry ([`Schedule::expires_at_ms`] is `None`: never
    /// provisioned, a token that does not expire, or a schedule not computed yet).
    pub expiry_unknown: bool,
    /// Only the instances due for a refresh ([`Schedule::next_refresh_at_ms`]) at or before this
    /// time, epoch milliseconds; an instance with nothing scheduled never matches, one whose
    /// schedule was never computed always does.
    pub due_before_ms: Option<u64>,
}

impl Default for Page {
    fn default() -> Self {
        Self {
            after: None,
            limit: 100,
            connector: None,
            status: None,
            expires_before_ms: None,
            expiry_unknown: false,
            due_before_ms: None,
        }
    }
}

impl Page {
    /// True when `summary` passes every filter of the page (`after` and `limit` aside).
    pub fn matches(&self, summary: &Summary) -> bool {
        self.connector
            .as_deref()
            .is_none_or(|wanted| summary.connector.as_deref() == Some(wanted))
            && self
                .status
                .as_deref()
                .is_none_or(|wanted| summary.status.as_deref() == Some(wanted))
            && self
                .expires_before_ms
                .is_none_or(|before| summary.expires_at_ms.is_some_and(|at| at <= before))
            && (!self.expiry_unknown || summary.expires_at_ms.is_none())
            && self
                .due_before_ms
                .is_none_or(|before| summary.next_refresh_at_ms.is_some_and(|at| at <= before))
    }
}

/// One page of [`InstanceStore::list`].
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// The instances, in id order.
    pub instances: Vec<Summary>,
    /// The `after` of the next page, when there are more.
    pub next: Option<String>,
}

/// What [`InstanceStore::list`] says of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The instance id.
    pub id: String,
    /// Its version.
    pub version: u64,
    /// When its token expires (epoch ms), from its [`Schedule`]; `None` when unknown.
    pub expires_at_ms: Option<u64>,
    /// The connector it belongs to, as [`connector_of`] reads it; `None` when never recorded.
    pub connector: Option<String>,
    /// Its status, as [`status_of`] reads it (`needs-reauth`, `retrying`); `None` when fresh.
    pub status: Option<String>,
    /// When it is next due for a refresh (epoch ms), from its [`Schedule`] (0: never computed,
    /// due at once); `None` when nothing is scheduled.
    pub next_refresh_at_ms: Option<u64>,
}

impl Summary {
    /// What a listing says of `state`, stored as `id` at `version`: its [`Schedule::read`], its
    /// connector and status.
    pub fn of(id: String, version: u64, state: &State) -> Self {
        let schedule = Schedule::read(state);
        Self {
            id,
            version,
            expires_at_ms: schedule.expires_at_ms,
            connector: connector_of(state).map(str::to_owned),
            status: schedule.mark().map(str::to_owned),
            next_refresh_at_ms: schedule.next_refresh_at_ms,
        }
    }
}

/// A lease on one instance due for a refresh, from [`InstanceStore::claim_due`]: until it ends
/// no other claim returns the instance. Renew it ([`InstanceStore::renew`]) while the vendor
/// call runs, release it ([`InstanceStore::release`]) when done.
///
/// The lease shares work out; it does not guard the state: a refresh still takes the
/// instance's lock, and every write is fenced by the version. A holder whose lease ended while
/// another claimer wrote the instance finds its write refused ([`StoreErrorKind::Conflict`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The instance id.
    pub id: String,
    /// Its version when claimed.
    pub version: u64,
    /// The lease's token: only the claim holding it renews or releases the lease.
    pub token: String,
    /// When the lease ends, epoch milliseconds.
    pub until_ms: u64,
}

/// A token for the leases of one [`InstanceStore::claim_due`]: unique across processes (the
/// process id, the time in nanoseconds and a counter), so that another claimer's lease is never
/// mistaken for one's own.
pub fn lease_token() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    format!(
        "{:x}-{nanos:x}-{:x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Milliseconds of `duration`, saturating.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Where instance state lives. Shared between tasks and threads; see the crate documentation
/// for versions and locks.
pub trait InstanceStore: Send + Sync {
    /// Reads `instance` without locking.
    ///
    /// Fails with [`StoreErrorKind::NotFound`] when it has no state, and with
    /// [`StoreErrorKind::Malformed`] or [`StoreErrorKind::NotAnObject`] when its file cannot be
    /// parsed.
    fn load<'a>(&'a self, instance: &'a str) -> BoxFuture<'a, Result<Versioned, StoreError>>;

    /// Replaces the state of `instance` with `state` if its stored version is still `expected`
    /// (0: absent or never written by the engine), and returns the new version. Atomic: readers
    /// see the old or the new state, never a mix.
    ///
    /// Fails with [`StoreErrorKind::Conflict`] when the stored version is another one: re-read
    /// and decide again.
    fn write<'a>(
        &'a self,
        instance: &'a str,
        state: State,
        expected: u64,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Takes the exclusive lock of `instance`, waiting at most `timeout` (`None`: as long as it
    /// takes). The instance need not exist. Waiting never blocks a runtime worker thread.
    ///
    /// Fails with [`StoreErrorKind::LockTimeout`] when it is still held after `timeout`.
    fn lock<'a>(
        &'a self,
        instance: &'a str,
        timeout: Option<Duration>,
    ) -> BoxFuture<'a, Result<Box<dyn InstanceLock>, StoreError>>;

    /// Lists the instances of `page`, with their versions and token expiries.
    fn list(&self, page: Page) -> BoxFuture<'_, Result<Listing, StoreError>>;

    /// Deletes `instance` if its stored version is still `expected`.
    ///
    /// Fails with [`StoreErrorKind::NotFound`] when it does not exist, and with
    /// [`StoreErrorKind::Conflict`] when it was written since.
    fn delete<'a>(
        &'a self,
        instance: &'a str,
        expected: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Appends `entry` (one refresh, as JSON) to the history of `instance` and drops the oldest
    /// entries beyond `keep`. The instance need not exist.
    fn append_history<'a>(
        &'a self,
        instance: &'a str,
        entry: serde_json::Value,
        keep: usize,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Returns the history of `instance`, oldest first (empty when it has none).
    fn history<'a>(
        &'a self,
        instance: &'a str,
    ) -> BoxFuture<'a, Result<Vec<serde_json::Value>, StoreError>>;

    /// Leases up to `limit` instances due for a refresh at `now_ms` ([`Schedule::next_refresh_at_ms`]
    /// at or before it; an instance whose schedule was never computed is due) that no unexpired
    /// lease holds, for `lease` from `now_ms`, soonest due first. Two claims, from any
    /// processes, never return the same instance while its lease lasts.
    ///
    /// Fails when the store cannot be read or written.
    fn claim_due(
        &self,
        now_ms: u64,
        limit: usize,
        lease: Duration,
    ) -> BoxFuture<'_, Result<Vec<Claim>, StoreError>>;

    /// The earliest due time ([`Schedule::next_refresh_at_ms`]) at or after `from_ms` of the
    /// instances that have one (a schedule never computed is due at 0); `None` when none has.
    /// The scheduler sleeps until it, so the SQL stores answer from their index on the due
    /// time; this default walks the listing (the file and memory stores).
    ///
    /// Fails when the store cannot be read.
    fn next_due_ms(&self, from_ms: u64) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        Box::pin(async move {
            let mut page = Page {
                limit: 1000,
                ..Page::default()
            };
            let mut earliest: Option<u64> = None;
            loop {
                let listing = self.list(page.clone()).await?;
                for summary in listing.instances {
                    if let Some(at) = summary.next_refresh_at_ms.filter(|at| *at >= from_ms) {
                        earliest = Some(earliest.map_or(at, |earliest| earliest.min(at)));
                    }
                }
                match listing.next {
                    Some(next) => page.after = Some(next),
                    None => return Ok(earliest),
                }
            }
        })
    }

    /// Extends `claim`'s lease to `lease` from `now_ms`, and returns the claim with its new end.
    ///
    /// Fails with [`StoreErrorKind::LeaseLost`] when the lease ended before `now_ms` or is no
    /// longer this claim's (the instance was deleted, or claimed again after the lease ended).
    fn renew<'a>(
        &'a self,
        claim: &'a Claim,
        now_ms: u64,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Claim, StoreError>>;

    /// Ends `claim`'s lease, so that the instance can be claimed again at once. A lease already
    /// lost is left alone.
    fn release<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, Result<(), StoreError>>;

    /// A name for `instance` that is the same for every handle on the same stored instance in
    /// this process (a file store: the file's path): the engine's in-process single-flight keys
    /// its refreshes by it.
    fn identity(&self, instance: &str) -> String;

    /// Reads the record `id` of `namespace` ([`Record`]); `None` when there is none, or it
    /// expired at `now_ms`.
    ///
    /// Fails with [`StoreErrorKind::InvalidInstanceId`] for a namespace or id that is not an id
    /// every store can keep ([`valid_record`]), and when the store cannot be read.
    fn get_record<'a>(
        &'a self,
        namespace: &'a str,
        id: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Record>, StoreError>>;

    /// Writes the record `id` of `namespace` with `value` and `expires_at_ms` if its version is
    /// still `expected` (0: absent, or expired at `now_ms`), and returns its new version.
    /// Atomic across processes, like [`InstanceStore::write`]: of two writers expecting the same
    /// version, one wins.
    ///
    /// Fails with [`StoreErrorKind::Conflict`] when the record is at another version, and like
    /// [`InstanceStore::get_record`].
    fn put_record<'a>(
        &'a self,
        namespace: &'a str,
        id: &'a str,
        value: serde_json::Value,
        expires_at_ms: Option<u64>,
        expected: u64,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Lists the records of `namespace` that have not expired at `now_ms`, in id order: those
    /// after `after`, at most `limit` (and at most [`MAX_RECORDS_PAGE`]).
    ///
    /// Fails like [`InstanceStore::get_record`].
    fn list_records<'a>(
        &'a self,
        namespace: &'a str,
        after: Option<&'a str>,
        limit: usize,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Record>, StoreError>>;

    /// Deletes the record `id` of `namespace` if its version is `expected` (`None`: whatever
    /// its version), and says whether it did (`false`: absent, or another version).
    ///
    /// Fails like [`InstanceStore::get_record`].
    fn delete_record<'a>(
        &'a self,
        namespace: &'a str,
        id: &'a str,
        expected: Option<u64>,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Removes the records that expired at `now_ms` (their `expires_at_ms` at or before it) of
    /// `namespace` (`None`: of every namespace), at most `limit` of them, and returns how many
    /// it removed; `limit` removed means there may be more. Records that never expire, or
    /// expire later, are left as they are, versions included. Reads and listings already skip
    /// expired records: this only gives their room back (a file store: their files, and the
    /// namespace's directory once empty).
    ///
    /// Fails with [`StoreErrorKind::InvalidInstanceId`] for a namespace that is not an id every
    /// store can keep, and when the store cannot be read or written.
    fn purge_expired_records<'a>(
        &'a self,
        namespace: Option<&'a str>,
        now_ms: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<usize, StoreError>>;

    /// Takes what the store did since the last call that the user should be told once, as
    /// sentences (a file store: an instance file's permissions tightened to owner-only).
    fn take_notices(&self) -> Vec<String> {
        Vec::new()
    }
    /// Drops the copies of overwritten values the store may still hold (SQLite: the old pages in
    /// its write-ahead log), after a rewrite of every secret such as a rekey.
    fn scrub(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
}

/// A held lock on one instance, from [`InstanceStore::lock`]. Dropping it releases the lock.
pub trait InstanceLock: Send {
    /// Re-reads the instance under the lock; an absent instance is an empty state at version 0.
    ///
    /// Fails like [`InstanceStore::load`] for a file that cannot be parsed.
    fn load(&mut self) -> BoxFuture<'_, Result<Versioned, StoreError>>;

    /// Writes like [`InstanceStore::write`], under the lock already held.
    fn write(&mut self, state: State, expected: u64) -> BoxFuture<'_, Result<u64, StoreError>>;
}

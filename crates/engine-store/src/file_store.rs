use std::ffi::OsString;
use std::fs::TryLockError;
use std::io::{self, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{
    BoxFuture, Claim, InstanceLock, InstanceStore, Listing, MAX_RECORDS_PAGE, Page, Record,
    Schedule, State, StoreError, StoreErrorKind, Summary, VERSION_KEY, Versioned, lease_token,
    millis, record_conflict, valid_record,
};

mod purge;

/// The first pause between two attempts at a held lock; it doubles up to [`LOCK_POLL_MAX`].
const LOCK_POLL_FIRST: Duration = Duration::from_millis(2);
/// The longest pause between two attempts at a held lock.
const LOCK_POLL_MAX: Duration = Duration::from_millis(50);

/// An [`InstanceStore`] that keeps each instance in a JSON file.
///
/// # Locking
///
/// The lock for `dir/x.json` is taken with [`std::fs::File::lock`] on a sidecar file,
/// `dir/.x.json.lock`, which is created on first use and never deleted. The data file itself cannot
/// carry the lock: [`InstanceLock::write`] renames a new file over it, so a process waiting on the
/// old inode would wake up holding a lock on a file that is no longer the instance. Deleting the
/// sidecar would break the lock the same way, hence it stays. The lock is advisory and works across
/// processes and across threads of one process.
///
/// Records (`DIR/.records/NAMESPACE/ID.json`, or `.x.json.records/NAMESPACE/ID.json` beside a
/// one-file store's file) are locked the same way, but their sidecars go with them when they
/// expire ([`InstanceStore::purge_expired_records`]): a purge removes a sidecar only while it
/// holds it, and a writer's lock counts only while the sidecar at the path is the file it locked.
///
/// # Writing
///
/// [`InstanceLock::write`] writes a temp file `dir/.x.json.<random>.tmp`, created owner-only
/// (`0600` on Unix), syncs it, renames it over `dir/x.json` and syncs the directory. A crash at
/// any point leaves either the old or the new file, plus at worst a stray temp file that loading
/// ignores and the next holder of the lock removes (every write happens under the lock, so a temp
/// file found by the holder is a dead writer's). File ownership is not carried over.
///
/// The file holds tokens, so the new file keeps the owner's permission bits of the file it
/// replaces but never group or other bits (`0644` becomes `0600`); each such tightening is kept
/// as a notice ([`InstanceStore::take_notices`]) for the caller to show once.
///
/// An instance file that is a symbolic link is written through: the link is resolved and the
/// target replaced atomically in its own directory, so the link and every other path to the
/// target see the new state. The lock is the target's, so two links to one file share it.
///
/// # Versions
///
/// The instance's version is the number under [`VERSION_KEY`] in the file (0 when it has none),
/// written as the file's last key. Every write checks it under the lock ([`InstanceStore::write`]).
/// All file work runs on tokio's blocking pool.
#[derive(Debug, Clone)]
pub struct FileStore {
    layout: Layout,
    /// What the store did that the user should hear about once (permissions tightened).
    notices: Arc<Mutex<Vec<String>>>,
}

#[derive(Debug, Clone)]
enum Layout {
    /// One `<instance>.json` per instance in this directory.
    Directory(PathBuf),
    /// Every instance id maps to this file.
    File(PathBuf),
}

impl FileStore {
    /// Returns a store whose instances are the files `<dir>/<instance>.json`.
    ///
    /// The directory must exist before the first lock or write.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            layout: Layout::Directory(dir.into()),
            notices: Arc::default(),
        }
    }

    /// Returns a store holding exactly one instance, the file at `path`; every instance id maps to
    /// it.
    pub fn for_file(path: impl Into<PathBuf>) -> Self {
        Self {
            layout: Layout::File(path.into()),
            notices: Arc::default(),
        }
    }

    /// Returns the path where `instance` is stored.
    ///
    /// Fails with [`StoreErrorKind::InvalidInstanceId`] for a directory store when `instance` is
    /// not an id every store can keep ([`crate::valid_id`]).
    pub fn path_of(&self, instance: &str) -> Result<PathBuf, StoreError> {
        match &self.layout {
            Layout::File(path) => Ok(path.clone()),
            Layout::Directory(dir) => {
                crate::valid_id(instance)?;
                Ok(dir.join(format!("{instance}.json")))
            }
        }
    }

    /// Takes the lock of `instance` (on its sidecar file, next to the file the instance's path
    /// resolves to) without blocking a thread, waiting at most `timeout`.
    async fn acquire(
        &self,
        instance: &str,
        timeout: Option<Duration>,
    ) -> Result<FileLock, StoreError> {
        let path = resolve_links(&self.path_of(instance)?)?;
        let lock_file = lock_file(&lock_path_of(&path), timeout).await?;
        let cleanup = path.clone();
        blocking(&path, move || remove_stale_temps(&cleanup)).await?;
        Ok(FileLock {
            path,
            notices: Arc::clone(&self.notices),
            _lock_file: lock_file,
        })
    }

    /// The directory of the records of `namespace`: `DIR/.records/NAMESPACE` for a directory
    /// store, `.FILE.records/NAMESPACE` beside the file of a one-file store.
    fn records_dir(&self, namespace: &str) -> PathBuf {
        self.records_root().join(namespace)
    }

    /// The directory of every namespace's records: `DIR/.records`, or `.FILE.records`.
    fn records_root(&self) -> PathBuf {
        match &self.layout {
            Layout::Directory(dir) => dir.join(".records"),
            Layout::File(path) => parent_of(path).join(hidden_name(path, ".records")),
        }
    }

    /// The ids of a directory store, sorted: the `*.json` files that are not hidden.
    fn ids(&self) -> Result<Vec<String>, StoreError> {
        match &self.layout {
            Layout::File(path) => Ok(vec![path.file_stem().map_or_else(
                || "instance".to_owned(),
                |stem| stem.to_string_lossy().into_owned(),
            )]),
            Layout::Directory(dir) => {
                let mut ids = Vec::new();
                for entry in
                    fs_err::read_dir(dir).map_err(|source| io_error(dir, "read", source))?
                {
                    let entry = entry.map_err(|source| io_error(dir, "read", source))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if let Some(id) = name.strip_suffix(".json")
                        && !id.starts_with('.')
                        && self.path_of(id).is_ok()
                    {
                        ids.push(id.to_owned());
                    }
                }
                ids.sort();
                Ok(ids)
            }
        }
    }
}

/// Takes an OS file lock ([`std::fs::File::try_lock`]) on `path`, creating the file if needed,
/// without blocking a thread: non-blocking attempts with short async pauses (2 ms, doubling to
/// 50 ms), until `timeout` (`None`: as long as it takes). The lock is held while the returned
/// file is open, and released by the kernel when its holder dies.
///
/// Fails with [`StoreErrorKind::LockTimeout`] naming `path` when it is still held after
/// `timeout`, and with [`StoreErrorKind::Io`] when the file cannot be opened or locked.
pub async fn lock_file(path: &Path, timeout: Option<Duration>) -> Result<fs_err::File, StoreError> {
    let file = fs_err::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| io_error(path, "lock", source))?;
    let start = Instant::now();
    let mut pause = LOCK_POLL_FIRST;
    loop {
        match file.file().try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) => {
                if let Some(timeout) = timeout {
                    let remaining = timeout.saturating_sub(start.elapsed());
                    if remaining.is_zero() {
                        return Err(StoreErrorKind::LockTimeout {
                            path: path.to_owned(),
                            waited: timeout,
                        }
                        .into());
                    }
                    pause = pause.min(remaining);
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(LOCK_POLL_MAX);
            }
            Err(TryLockError::Error(source)) => return Err(io_error(path, "lock", source)),
        }
    }
}

/// Runs blocking file work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    path: &Path,
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work).await.map_err(|error| {
        io_error(
            path,
            "read",
            io::Error::other(format!("the file task failed: {error}")),
        )
    })?
}

impl InstanceStore for FileStore {
    fn load<'a>(&'a self, instance: &'a str) -> BoxFuture<'a, Result<Versioned, StoreError>> {
        Box::pin(async move {
            let path = self.path_of(instance)?;
            let read = path.clone();
            blocking(&path, move || load_file(&read)).await
        })
    }

    fn write<'a>(
        &'a self,
        instance: &'a str,
        state: State,
        expected: u64,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let mut lock = self.acquire(instance, None).await?;
            lock.write_checked(instance.to_owned(), state, expected)
                .await
        })
    }

    fn lock<'a>(
        &'a self,
        instance: &'a str,
        timeout: Option<Duration>,
    ) -> BoxFuture<'a, Result<Box<dyn InstanceLock>, StoreError>> {
        Box::pin(async move {
            let lock: Box<dyn InstanceLock> = Box::new(self.acquire(instance, timeout).await?);
            Ok(lock)
        })
    }

    fn list(&self, page: Page) -> BoxFuture<'_, Result<Listing, StoreError>> {
        Box::pin(async move {
            let store = self.clone();
            let anchor = match &self.layout {
                Layout::Directory(dir) | Layout::File(dir) => dir.clone(),
            };
            blocking(&anchor, move || {
                let ids = store.ids()?;
                let mut instances = Vec::new();
                let mut next = None;
                for id in ids
                    .into_iter()
                    .filter(|id| page.after.as_ref().is_none_or(|after| id > after))
                {
                    if instances.len() == page.limit {
                        next = instances.last().map(|last: &Summary| last.id.clone());
                        break;
                    }
                    let read = load_file(&store.path_of(&id)?)?;
                    let summary = Summary::of(id, read.version, &read.state);
                    if page.matches(&summary) {
                        instances.push(summary);
                    }
                }
                Ok(Listing { instances, next })
            })
            .await
        })
    }

    fn claim_due(
        &self,
        now_ms: u64,
        limit: usize,
        lease: Duration,
    ) -> BoxFuture<'_, Result<Vec<Claim>, StoreError>> {
        Box::pin(async move {
            let store = self.clone();
            let anchor = match &self.layout {
                Layout::Directory(dir) | Layout::File(dir) => dir.clone(),
            };
            // The due instances, soonest first, as read now; each is claimed under its lease
            // file's lock, which re-reads it (another may have written or claimed it since).
            let mut due = blocking(&anchor, move || {
                let mut due = Vec::new();
                for id in store.ids()? {
                    let path = store.path_of(&id)?;
                    let Ok(read) = load_file(&path) else {
                        continue;
                    };
                    if let Some(at) = Schedule::read(&read.state).next_refresh_at_ms
                        && at <= now_ms
                    {
                        due.push((at, id));
                    }
                }
                Ok(due)
            })
            .await?;
            due.sort();
            let (token, until_ms) = (lease_token(), now_ms.saturating_add(millis(lease)));
            let mut claims = Vec::new();
            for (_, id) in due {
                if claims.len() == limit {
                    break;
                }
                let path = resolve_links(&self.path_of(&id)?)?;
                let change = LeaseChange::Claim {
                    token: token.clone(),
                    until: until_ms,
                    now: now_ms,
                };
                // A lease file another claimer holds this moment is skipped (SKIP LOCKED).
                if let Some(version) = change_lease(path, change, true).await? {
                    claims.push(Claim {
                        id,
                        version,
                        token: token.clone(),
                        until_ms,
                    });
                }
            }
            Ok(claims)
        })
    }

    fn renew<'a>(
        &'a self,
        claim: &'a Claim,
        now_ms: u64,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Claim, StoreError>> {
        Box::pin(async move {
            let path = resolve_links(&self.path_of(&claim.id)?)?;
            let until_ms = now_ms.saturating_add(millis(lease));
            let change = LeaseChange::Renew {
                token: claim.token.clone(),
                until: until_ms,
                now: now_ms,
            };
            match change_lease(path, change, false).await? {
                Some(_) => Ok(Claim {
                    until_ms,
                    ..claim.clone()
                }),
                None => Err(StoreErrorKind::LeaseLost {
                    instance: claim.id.clone(),
                }
                .into()),
            }
        })
    }

    fn release<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let path = resolve_links(&self.path_of(&claim.id)?)?;
            let change = LeaseChange::Release {
                token: claim.token.clone(),
            };
            change_lease(path, change, false).await.map(drop)
        })
    }

    fn delete<'a>(
        &'a self,
        instance: &'a str,
        expected: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let lock = self.acquire(instance, None).await?;
            // A link is removed, not its target: the instance is what this store calls it.
            let path = self.path_of(instance)?;
            let owned = instance.to_owned();
            blocking(&path.clone(), move || {
                let found = load_file(&path)?.version;
                if found != expected {
                    return Err(StoreErrorKind::Conflict {
                        instance: owned,
                        expected,
                        found,
                    }
                    .into());
                }
                fs_err::remove_file(&path).map_err(|source| io_error(&path, "delete", source))?;
                sync_dir(parent_of(&path))
            })
            .await?;
            drop(lock);
            Ok(())
        })
    }

    fn append_history<'a>(
        &'a self,
        instance: &'a str,
        entry: serde_json::Value,
        keep: usize,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let lock = self.acquire(instance, None).await?;
            let path = history_path_of(&lock.path);
            blocking(&path.clone(), move || {
                let mut entries = read_history(&path)?;
                entries.push(entry);
                let start = entries.len().saturating_sub(keep);
                let mut text = String::new();
                for entry in &entries[start..] {
                    text.push_str(&entry.to_string());
                    text.push('\n');
                }
                persist_text(&path, text.as_bytes(), &mut Vec::new())
            })
            .await?;
            drop(lock);
            Ok(())
        })
    }

    fn history<'a>(
        &'a self,
        instance: &'a str,
    ) -> BoxFuture<'a, Result<Vec<serde_json::Value>, StoreError>> {
        Box::pin(async move {
            let path = history_path_of(&resolve_links(&self.path_of(instance)?)?);
            blocking(&path.clone(), move || read_history(&path)).await
        })
    }

    fn identity(&self, instance: &str) -> String {
        self.path_of(instance)
            .and_then(|path| resolve_links(&path))
            .map_or_else(|_| instance.to_owned(), |path| path.display().to_string())
    }

    fn take_notices(&self) -> Vec<String> {
        std::mem::take(&mut *self.notices.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn get_record<'a>(
        &'a self,
        namespace: &'a str,
        id: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Record>, StoreError>> {
        Box::pin(async move {
            valid_record(namespace, id)?;
            let path = self.records_dir(namespace).join(format!("{id}.json"));
            let id = id.to_owned();
            let record = blocking(&path.clone(), move || read_record(&path, id)).await?;
            Ok(record.filter(|record| !record.is_expired(now_ms)))
        })
    }

    fn put_record<'a>(
        &'a self,
        namespace: &'a str,
        id: &'a str,
        value: Value,
        expires_at_ms: Option<u64>,
        expected: u64,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            valid_record(namespace, id)?;
            let path = self.records_dir(namespace).join(format!("{id}.json"));
            let lock = purge::lock_record(&path).await?;
            let (namespace, id) = (namespace.to_owned(), id.to_owned());
            let notices = Arc::clone(&self.notices);
            let version = blocking(&path.clone(), move || {
                let found = read_record(&path, id.clone())?
                    .filter(|record| !record.is_expired(now_ms))
                    .map_or(0, |record| record.version);
                if found != expected {
                    return Err(record_conflict(&namespace, &id, expected, found));
                }
                let version = found + 1;
                let text = serde_json::json!({
                    "version": version,
                    "expires_at_ms": expires_at_ms,
                    "value": value,
                })
                .to_string();
                let mut told = Vec::new();
                persist_text(&path, text.as_bytes(), &mut told)?;
                notices
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .extend(told);
                Ok(version)
            })
            .await?;
            drop(lock);
            Ok(version)
        })
    }

    fn list_records<'a>(
        &'a self,
        namespace: &'a str,
        after: Option<&'a str>,
        limit: usize,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Record>, StoreError>> {
        Box::pin(async move {
            crate::valid_id(namespace)?;
            let dir = self.records_dir(namespace);
            let after = after.map(str::to_owned);
            blocking(&dir.clone(), move || {
                let entries = match fs_err::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(source) if source.kind() == io::ErrorKind::NotFound => {
                        return Ok(Vec::new());
                    }
                    Err(source) => return Err(io_error(&dir, "read", source)),
                };
                let mut ids = Vec::new();
                for entry in entries {
                    let entry = entry.map_err(|source| io_error(&dir, "read", source))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if let Some(id) = name.strip_suffix(".json")
                        && crate::valid_id(id).is_ok()
                        && after.as_deref().is_none_or(|after| id > after)
                    {
                        ids.push(id.to_owned());
                    }
                }
                ids.sort();
                let mut records = Vec::new();
                for id in ids {
                    if records.len() >= limit.min(MAX_RECORDS_PAGE) {
                        break;
                    }
                    let path = dir.join(format!("{id}.json"));
                    if let Some(record) = read_record(&path, id)?
                        && !record.is_expired(now_ms)
                    {
                        records.push(record);
                    }
                }
                Ok(records)
            })
            .await
        })
    }

    fn delete_record<'a>(
        &'a self,
        namespace: &'a str,
        id: &'a str,
        expected: Option<u64>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            valid_record(namespace, id)?;
            let path = self.records_dir(namespace).join(format!("{id}.json"));
            if !path.exists() {
                return Ok(false);
            }
            let lock = purge::lock_record(&path).await?;
            let id = id.to_owned();
            let deleted = blocking(&path.clone(), move || {
                let Some(record) = read_record(&path, id)? else {
                    return Ok(false);
                };
                if expected.is_some_and(|expected| expected != record.version) {
                    return Ok(false);
                }
                fs_err::remove_file(&path).map_err(|source| io_error(&path, "delete", source))?;
                Ok(true)
            })
            .await?;
            drop(lock);
            Ok(deleted)
        })
    }

    fn purge_expired_records<'a>(
        &'a self,
        namespace: Option<&'a str>,
        now_ms: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(async move {
            if let Some(namespace) = namespace {
                crate::valid_id(namespace)?;
            }
            let root = self.records_root();
            let namespace = namespace.map(str::to_owned);
            blocking(&root.clone(), move || {
                let namespaces = match namespace {
                    Some(namespace) => vec![namespace],
                    None => match fs_err::read_dir(&root) {
                        Ok(entries) => {
                            let mut names: Vec<String> = entries
                                .filter_map(Result::ok)
                                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                                .filter(|name| crate::valid_id(name).is_ok())
                                .collect();
                            names.sort();
                            names
                        }
                        Err(source) if source.kind() == io::ErrorKind::NotFound => Vec::new(),
                        Err(source) => return Err(io_error(&root, "read", source)),
                    },
                };
                let mut removed = 0;
                for namespace in namespaces {
                    if removed >= limit {
                        break;
                    }
                    removed +=
                        purge::purge_namespace(&root.join(namespace), now_ms, limit - removed)?;
                }
                purge::remove_if_empty(&root);
                Ok(removed)
            })
            .await
        })
    }
}

/// Reads the record file `path` (`{"version", "expires_at_ms", "value"}`); `None` when it does
/// not exist.
fn read_record(path: &Path, id: String) -> Result<Option<Record>, StoreError> {
    let bytes = match fs_err::read(path) {
        Ok(bytes) => bytes,
        Err(source) if source.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io_error(path, "read", source)),
    };
    let mut stored: serde_json::Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|error| {
            StoreError::from(StoreErrorKind::Malformed {
                path: path.to_owned(),
                line: error.line(),
                column: error.column(),
                message: "a record file is not a JSON object".to_owned(),
            })
        })?;
    Ok(Some(Record {
        id,
        value: stored.remove("value").unwrap_or(Value::Null),
        version: stored.get("version").and_then(Value::as_u64).unwrap_or(0),
        expires_at_ms: stored.get("expires_at_ms").and_then(Value::as_u64),
    }))
}

/// The guard of [`FileStore`]: the open, locked sidecar file. Closing it releases the lock.
#[derive(Debug)]
struct FileLock {
    /// The instance file, links resolved.
    path: PathBuf,
    notices: Arc<Mutex<Vec<String>>>,
    _lock_file: fs_err::File,
}

impl FileLock {
    /// The compare-and-swap write, under this lock.
    async fn write_checked(
        &mut self,
        instance: String,
        state: State,
        expected: u64,
    ) -> Result<u64, StoreError> {
        let path = self.path.clone();
        let notices = Arc::clone(&self.notices);
        blocking(&self.path, move || {
            let found = match load_file(&path) {
                Ok(read) => read.version,
                Err(error) if matches!(error.kind(), StoreErrorKind::NotFound { .. }) => 0,
                Err(error) => return Err(error),
            };
            if found != expected {
                return Err(StoreErrorKind::Conflict {
                    instance,
                    expected,
                    found,
                }
                .into());
            }
            let mut said = Vec::new();
            persist_file(&path, &state, found + 1, &mut said)?;
            notices
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(said);
            Ok(found + 1)
        })
        .await
    }
}

impl InstanceLock for FileLock {
    fn load(&mut self) -> BoxFuture<'_, Result<Versioned, StoreError>> {
        Box::pin(async move {
            let path = self.path.clone();
            blocking(&self.path, move || match load_file(&path) {
                Err(error) if matches!(error.kind(), StoreErrorKind::NotFound { .. }) => {
                    Ok(Versioned::default())
                }
                other => other,
            })
            .await
        })
    }

    fn write(&mut self, state: State, expected: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            let instance = self
                .path
                .file_stem()
                .map_or_else(String::new, |stem| stem.to_string_lossy().into_owned());
            self.write_checked(instance, state, expected).await
        })
    }
}

/// Returns the history of the instance file `path`: `dir/x.json` → `dir/.x.json.history.jsonl`,
/// one JSON object per line, oldest first.
fn history_path_of(path: &Path) -> PathBuf {
    parent_of(path).join(hidden_name(path, ".history.jsonl"))
}

/// Reads a history file; an absent one is empty, and a line that does not parse (a write cut
/// short by a crash before the rename, which cannot happen, or a hand edit) is skipped.
fn read_history(path: &Path) -> Result<Vec<Value>, StoreError> {
    match fs_err::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()),
        Err(source) if source.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(io_error(path, "read", source)),
    }
}

/// How long a claim, renewal or release waits for another's moment on a lease file.
const LEASE_WAIT: Duration = Duration::from_secs(5);

/// Returns the lease file of the instance file `path`: `dir/x.json` → `dir/.x.json.lease`. It
/// holds `TOKEN UNTIL_MS` (empty, or anything else: no lease) and is its own lock: an OS file
/// lock held only while a claim, renewal or release reads and rewrites it, never across a
/// vendor call (so a holder renewing its lease never waits for its own instance lock).
fn lease_path_of(path: &Path) -> PathBuf {
    parent_of(path).join(hidden_name(path, ".lease"))
}

/// The lease in a locked lease file: its token and end.
fn read_lease(file: &mut fs_err::File) -> io::Result<Option<(String, u64)>> {
    use std::io::{Read as _, Seek as _};
    let mut text = String::new();
    file.rewind()?;
    file.read_to_string(&mut text)?;
    let mut words = text.split_whitespace();
    Ok(words
        .next()
        .zip(words.next().and_then(|until| until.parse().ok()))
        .map(|(token, until)| (token.to_owned(), until)))
}

/// Replaces the lease in a locked lease file (`None`: none).
fn write_lease(file: &mut fs_err::File, lease: Option<(&str, u64)>) -> io::Result<()> {
    use std::io::Seek as _;
    file.set_len(0)?;
    file.rewind()?;
    if let Some((token, until)) = lease {
        write!(file, "{token} {until}")?;
    }
    file.sync_data()
}

/// What to do with the lease of an instance under its lease file's lock.
enum LeaseChange {
    /// Take it for `token` until the time, if no unexpired lease holds it and the instance is
    /// due at `now`.
    Claim { token: String, until: u64, now: u64 },
    /// Extend it to the time, if `token` still holds it at `now`.
    Renew { token: String, until: u64, now: u64 },
    /// End it, if `token` holds it.
    Release { token: String },
}

/// Applies `change` to the lease of the instance file `path` under the lease file's lock;
/// `skip_locked` gives up at once (`Ok(None)`) when another holds that lock. Returns the
/// instance's version when the change was made, `None` when it was not.
async fn change_lease(
    path: PathBuf,
    change: LeaseChange,
    skip_locked: bool,
) -> Result<Option<u64>, StoreError> {
    let lease_path = lease_path_of(&path);
    let wait = if skip_locked {
        Duration::ZERO
    } else {
        LEASE_WAIT
    };
    let mut file = match lock_file(&lease_path, Some(wait)).await {
        Ok(file) => file,
        Err(error) if skip_locked && matches!(error.kind(), StoreErrorKind::LockTimeout { .. }) => {
            return Ok(None);
        }
        Err(error) => return Err(error),
    };
    blocking(&lease_path.clone(), move || {
        let read = match load_file(&path) {
            Ok(read) => read,
            Err(error) if matches!(error.kind(), StoreErrorKind::NotFound { .. }) => {
                return Ok(None);
            }
            Err(error) => return Err(error),
        };
        let io = |source| io_error(&lease_path, "write", source);
        let held = read_lease(&mut file).map_err(io)?;
        let written = match change {
            LeaseChange::Claim { token, until, now } => {
                let due = Schedule::read(&read.state)
                    .next_refresh_at_ms
                    .is_some_and(|at| at <= now);
                if !due || held.is_some_and(|(_, end)| end > now) {
                    return Ok(None);
                }
                write_lease(&mut file, Some((&token, until)))
            }
            LeaseChange::Renew { token, until, now } => {
                if !held.is_some_and(|(holder, end)| holder == token && end > now) {
                    return Ok(None);
                }
                write_lease(&mut file, Some((&token, until)))
            }
            LeaseChange::Release { token } => {
                if held.is_none_or(|(holder, _)| holder != token) {
                    return Ok(None);
                }
                write_lease(&mut file, None)
            }
        };
        written.map_err(io)?;
        Ok(Some(read.version))
    })
    .await
}

/// Returns the sidecar lock file of the instance file `path`: `dir/x.json` → `dir/.x.json.lock`.
fn lock_path_of(path: &Path) -> PathBuf {
    parent_of(path).join(hidden_name(path, ".lock"))
}

/// Returns the file name of `path` hidden and extended: `dir/x.json` → `.x.json<suffix>`.
fn hidden_name(path: &Path, suffix: &str) -> OsString {
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(suffix);
    name
}

/// Returns the directory holding `path`, `.` for a bare file name.
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

fn io_error(path: &Path, operation: &'static str, source: io::Error) -> StoreError {
    StoreErrorKind::Io {
        path: path.to_owned(),
        operation,
        source,
    }
    .into()
}

/// Reads an instance file: its state without [`VERSION_KEY`], and its version.
fn load_file(path: &Path) -> Result<Versioned, StoreError> {
    let bytes = fs_err::read(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => StoreErrorKind::NotFound {
            path: path.to_owned(),
        }
        .into(),
        _ => io_error(path, "read", source),
    })?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(mut state)) => {
            let version = state
                .shift_remove(VERSION_KEY)
                .and_then(|version| version.as_u64())
                .unwrap_or(0);
            Ok(Versioned {
                state: Arc::new(state),
                version,
            })
        }
        Ok(_) => Err(StoreErrorKind::NotAnObject {
            path: path.to_owned(),
        }
        .into()),
        Err(error) => {
            let (line, column) = (error.line(), error.column());
            // serde_json appends the position to its message; we report it in fields instead.
            let message = error.to_string();
            let message = message
                .strip_suffix(&format!(" at line {line} column {column}"))
                .unwrap_or(&message)
                .to_owned();
            Err(StoreErrorKind::Malformed {
                path: path.to_owned(),
                line,
                column,
                message,
            }
            .into())
        }
    }
}

/// Writes `state` at `version` to `path` atomically; see [`FileStore`] for the steps. On error
/// the temp file is removed (by dropping it) and `path` is untouched. A tightening of the file's
/// permissions is pushed to `notices`.
fn persist_file(
    path: &Path,
    state: &State,
    version: u64,
    notices: &mut Vec<String>,
) -> Result<(), StoreError> {
    persist_with(path, notices, |file| write_pretty(file, state, version))
}

/// Writes `bytes` to `path` atomically, like [`persist_file`].
fn persist_text(path: &Path, bytes: &[u8], notices: &mut Vec<String>) -> Result<(), StoreError> {
    persist_with(path, notices, |file| file.write_all(bytes))
}

/// The steps of [`persist_file`], with `write` filling the temp file (created `0600` on Unix by
/// `tempfile`).
fn persist_with(
    path: &Path,
    notices: &mut Vec<String>,
    write: impl FnOnce(&mut std::fs::File) -> io::Result<()>,
) -> Result<(), StoreError> {
    let dir = parent_of(path);
    let existing = match fs_err::metadata(path) {
        Ok(metadata) => Some(metadata.permissions()),
        Err(source) if source.kind() == io::ErrorKind::NotFound => None,
        Err(source) => return Err(io_error(path, "read", source)),
    };
    let mut temp = tempfile::Builder::new()
        .prefix(&hidden_name(path, "."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|source| io_error(path, "write", source))?;
    if let Some(permissions) = owner_only(path, existing, notices) {
        temp.as_file()
            .set_permissions(permissions)
            .map_err(|source| io_error(path, "write", source))?;
    }
    write(temp.as_file_mut()).map_err(|source| io_error(path, "write", source))?;
    temp.as_file()
        .sync_all()
        .map_err(|source| io_error(path, "sync", source))?;
    temp.persist(path)
        .map_err(|error| io_error(path, "rename", error.error))?;
    sync_dir(dir)
}

/// The permissions for the new file replacing one with `existing` permissions (`None`: keep the
/// temp file's owner-only ones): on Unix the owner's bits of the old file, never group or other
/// bits, with a notice when that takes some away.
#[cfg(unix)]
fn owner_only(
    path: &Path,
    existing: Option<std::fs::Permissions>,
    notices: &mut Vec<String>,
) -> Option<std::fs::Permissions> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = existing?.mode() & 0o7777;
    let tightened = (mode & 0o700) | 0o600;
    if mode & 0o077 != 0 {
        notices.push(format!(
            "`{}` was readable by others ({mode:04o}); it holds secrets, so it is now {tightened:04o}",
            path.display()
        ));
    }
    Some(std::fs::Permissions::from_mode(tightened))
}

#[cfg(not(unix))]
fn owner_only(
    _path: &Path,
    existing: Option<std::fs::Permissions>,
    _notices: &mut Vec<String>,
) -> Option<std::fs::Permissions> {
    existing
}

/// Removes the temp files a writer killed mid-write left beside the instance file `path`
/// (`.x.json.<random>.tmp`, and the history's `..x.json.history.jsonl.<random>.tmp`). Called
/// under the instance's lock: every writer holds it, so such a file belongs to a dead writer.
fn remove_stale_temps(path: &Path) -> Result<(), StoreError> {
    let dir = parent_of(path);
    let data = hidden_name(path, ".");
    let history = hidden_name(&history_path_of(path), ".");
    let entries = match fs_err::read_dir(dir) {
        Ok(entries) => entries,
        Err(source) if source.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(io_error(dir, "read", source)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let stale = [&data, &history].iter().any(|prefix| {
            name.strip_prefix(&*prefix.to_string_lossy())
                .and_then(|rest| rest.strip_suffix(".tmp"))
                .is_some_and(|random| {
                    random.len() == TEMP_RANDOM_LEN
                        && random.bytes().all(|byte| byte.is_ascii_alphanumeric())
                })
        });
        if stale {
            let stale_path = entry.path();
            fs_err::remove_file(&stale_path)
                .or_else(|source| {
                    if source.kind() == io::ErrorKind::NotFound {
                        Ok(())
                    } else {
                        Err(source)
                    }
                })
                .map_err(|source| io_error(&stale_path, "delete", source))?;
        }
    }
    Ok(())
}

/// The length of the random part of `tempfile`'s names (its default).
const TEMP_RANDOM_LEN: usize = 6;

/// Follows `path` while it is a symbolic link (at most 40 links, as Linux does) and returns the
/// file it points to; a path that is not a link, or does not exist, is returned as it is.
fn resolve_links(path: &Path) -> Result<PathBuf, StoreError> {
    let mut current = path.to_owned();
    for _ in 0..40 {
        match fs_err::symlink_metadata(&current) {
            Ok(metadata) if metadata.file_type().is_symlink() => {
                let target = fs_err::read_link(&current)
                    .map_err(|source| io_error(&current, "read", source))?;
                current = parent_of(&current).join(target);
            }
            Ok(_) => return Ok(current),
            Err(source) if source.kind() == io::ErrorKind::NotFound => return Ok(current),
            Err(source) => return Err(io_error(&current, "read", source)),
        }
    }
    Err(io_error(
        path,
        "read",
        io::Error::other("too many levels of symbolic links"),
    ))
}

fn write_pretty(file: &mut std::fs::File, state: &State, version: u64) -> io::Result<()> {
    let mut writer = BufWriter::new(file);
    let mut versioned = state.clone();
    versioned.shift_remove(VERSION_KEY);
    versioned.insert(VERSION_KEY.to_owned(), Value::from(version));
    serde_json::to_writer_pretty(&mut writer, &versioned)?;
    writer.write_all(b"\n")?;
    writer.flush()
}

/// Makes the rename durable: on Unix the directory entry is only on disk once the directory is
/// synced. Other platforms cannot open a directory as a file, and need not.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs_err::File::open(dir)
        .and_then(|dir_file| dir_file.sync_all())
        .map_err(|source| io_error(dir, "sync", source))
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), StoreError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use serde_json::json;

    use super::*;

    /// Set in a child process of [`cross_process_increments_lose_no_update`] to the store directory.
    const CHILD_DIR_VAR: &str = "ENGINE_STORE_TEST_CHILD_DIR";

    #[track_caller]
    fn state(value: Value) -> State {
        match value {
            Value::Object(state) => state,
            other => panic!("not an object: {other}"),
        }
    }

    #[track_caller]
    fn file_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs_err::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// Takes the lock, adds one to `count` and writes, `times` times.
    async fn increment(store: &FileStore, times: usize) {
        for _ in 0..times {
            let mut lock = store.lock("acme", None).await.unwrap();
            let read = lock.load().await.unwrap();
            let count = read.state["count"].as_u64().unwrap();
            lock.write(state(json!({"count": count + 1})), read.version)
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn round_trip_keeps_key_order_and_untouched_keys_and_counts_versions() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let path = store.path_of("acme").unwrap();
        fs_err::write(
            &path,
            r#"{"zone": "eu", "authentication.time": "0", "apiKey": {"nested": [1, 2]}, "b": true}"#,
        )
        .unwrap();

        let read = store.load("acme").await.unwrap();
        assert_eq!(read.version, 0);
        let mut written = (*read.state).clone();
        written.insert("authentication.time".to_owned(), json!("1700000000"));
        written.insert("added".to_owned(), json!("new"));
        assert_eq!(store.write("acme", written.clone(), 0).await.unwrap(), 1);

        assert_eq!(
            fs_err::read_to_string(&path).unwrap(),
            r#"{
  "zone": "eu",
  "authentication.time": "1700000000",
  "apiKey": {
    "nested": [
      1,
      2
    ]
  },
  "b": true,
  "added": "new",
  "engine.version": 1
}
"#
        );
        let read = store.load("acme").await.unwrap();
        assert_eq!((&*read.state, read.version), (&written, 1));
    }

    /// Compare-and-swap: of two writers that read the same version, the second fails with a
    /// conflict, re-reads, and then succeeds; the first one's write is never lost.
    #[tokio::test]
    async fn a_stale_writer_gets_a_conflict_and_re_reads() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        store
            .write("acme", state(json!({"token": "old"})), 0)
            .await
            .unwrap();
        let first = store.load("acme").await.unwrap();
        let second = store.load("acme").await.unwrap();
        store
            .write("acme", state(json!({"token": "new"})), first.version)
            .await
            .unwrap();
        let error = store
            .write("acme", state(json!({"token": "stale"})), second.version)
            .await
            .unwrap_err();
        assert!(
            matches!(
                error.kind(),
                StoreErrorKind::Conflict {
                    expected: 1,
                    found: 2,
                    ..
                }
            ),
            "{error:?}"
        );
        let again = store.load("acme").await.unwrap();
        assert_eq!(again.state["token"], "new");
        store
            .write("acme", state(json!({"token": "newer"})), again.version)
            .await
            .unwrap();
        assert_eq!(store.load("acme").await.unwrap().version, 3);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn writes_tighten_permissions_to_owner_only_and_say_so_once() {
        use std::os::unix::fs::PermissionsExt as _;

        let mode = |path: &Path| fs_err::metadata(path).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let shared = store.path_of("shared").unwrap();
        fs_err::write(&shared, "{}").unwrap();
        fs_err::set_permissions(&shared, std::fs::Permissions::from_mode(0o644)).unwrap();
        let private = store.path_of("private").unwrap();
        fs_err::write(&private, "{}").unwrap();
        fs_err::set_permissions(&private, std::fs::Permissions::from_mode(0o400)).unwrap();

        store.write("shared", State::new(), 0).await.unwrap();
        store.write("private", State::new(), 0).await.unwrap();
        store.write("new", State::new(), 0).await.unwrap();
        let notices = store.take_notices();
        store.write("shared", State::new(), 1).await.unwrap();

        assert_eq!(mode(&shared), 0o600);
        assert_eq!(mode(&private), 0o600, "the owner can still write it");
        assert_eq!(mode(&store.path_of("new").unwrap()), 0o600);
        assert_eq!(notices.len(), 1, "{notices:?}");
        assert!(
            notices[0].contains("shared.json") && notices[0].contains("(0644)"),
            "{notices:?}"
        );
        assert!(store.take_notices().is_empty(), "said once");
    }

    #[tokio::test]
    async fn the_lock_holder_removes_a_dead_writers_temp_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let stale = [
            ".acme.json.Ab3xYz.tmp",
            "..acme.json.history.jsonl.Qw12Er.tmp",
        ];
        // Not the temp files of `acme`: another instance's, and names `tempfile` never makes.
        let kept = [
            ".acme.json.x.json.Ab3xYz.tmp",
            ".acme.json.too-long-random.tmp",
            "acme.json.Ab3xYz.tmp",
        ];
        for name in stale.iter().chain(&kept) {
            fs_err::write(dir.path().join(name), "{\"token\": \"t\"}").unwrap();
        }

        store
            .write("acme", state(json!({"token": "new"})), 0)
            .await
            .unwrap();

        assert_eq!(
            file_names(dir.path()),
            [
                ".acme.json.lock",
                ".acme.json.too-long-random.tmp",
                ".acme.json.x.json.Ab3xYz.tmp",
                "acme.json",
                "acme.json.Ab3xYz.tmp",
            ]
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_linked_instance_is_written_through_to_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let real_dir = dir.path().join("real");
        fs_err::create_dir(&real_dir).unwrap();
        let target = real_dir.join("acme.json");
        fs_err::write(&target, "{\"refresh\": \"old\"}").unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink("real/acme.json", &link).unwrap();
        let store = FileStore::for_file(&link);

        let read = store.load("instance").await.unwrap();
        store
            .write("instance", state(json!({"refresh": "new"})), read.version)
            .await
            .unwrap();

        assert!(
            fs_err::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink(),
            "the link stays a link"
        );
        let written: Value =
            serde_json::from_str(&fs_err::read_to_string(&target).unwrap()).unwrap();
        assert_eq!(written["refresh"], "new");
        assert_eq!(
            file_names(&real_dir),
            [".acme.json.lock", "acme.json"],
            "the lock and the temp file live beside the target"
        );
        assert_eq!(
            store.identity("instance"),
            FileStore::for_file(&target).identity("instance"),
            "one single-flight key for the link and the target"
        );
    }

    #[tokio::test]
    async fn load_errors_name_the_file_and_the_position() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let error = store.load("missing").await.unwrap_err();
        assert!(
            matches!(error.kind(), StoreErrorKind::NotFound { path } if *path == dir.path().join("missing.json")),
            "{error:?}"
        );
        fs_err::write(
            store.path_of("acme").unwrap(),
            "{\n  \"a\": \"1\",\n  \"b\" \"2\"\n}\n",
        )
        .unwrap();
        let error = store.load("acme").await.unwrap_err();
        let StoreErrorKind::Malformed {
            line,
            column,
            message,
            ..
        } = error.kind()
        else {
            panic!("expected Malformed, got {error:?}");
        };
        assert_eq!((*line, *column, message.as_str()), (3, 7, "expected `:`"));
        fs_err::write(store.path_of("list").unwrap(), r#"["a"]"#).unwrap();
        let error = store.load("list").await.unwrap_err();
        assert!(
            matches!(error.kind(), StoreErrorKind::NotAnObject { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn unsafe_instance_ids_are_rejected() {
        let store = FileStore::new("state");
        for id in [
            "", ".hidden", "..", "a/b", "../x", "a\\b", "a b", "é", "a:b",
        ] {
            let error = store.path_of(id).unwrap_err();
            assert!(
                matches!(error.kind(), StoreErrorKind::InvalidInstanceId { id: rejected } if rejected == id),
                "{id:?}: {error:?}"
            );
        }
        assert_eq!(
            store.path_of("acme-prod_1.v2").unwrap(),
            Path::new("state/acme-prod_1.v2.json")
        );
    }

    #[tokio::test]
    async fn for_file_maps_every_instance_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("instance.json");
        fs_err::write(&path, r#"{"a": "1"}"#).unwrap();
        let store = FileStore::for_file(&path);
        assert_eq!(store.path_of("anything/../at all").unwrap(), path);
        store.write("x", State::new(), 0).await.unwrap();
        assert_eq!(
            file_names(dir.path()),
            [".instance.json.lock", "instance.json"]
        );
        assert_eq!(*store.load("y").await.unwrap().state, State::new());
        let listing = store.list(Page::default()).await.unwrap();
        assert_eq!(listing.instances.len(), 1);
        assert_eq!(listing.instances[0].id, "instance");
    }

    #[test]
    fn lock_path_is_a_hidden_sidecar() {
        assert_eq!(
            lock_path_of(Path::new("state/acme.json")),
            Path::new("state/.acme.json.lock")
        );
        assert_eq!(
            lock_path_of(Path::new("instance.json")),
            Path::new("./.instance.json.lock")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lock_excludes_other_tasks() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        fs_err::write(store.path_of("acme").unwrap(), r#"{"count": 0}"#).unwrap();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move { increment(&store, 25).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let read = store.load("acme").await.unwrap();
        assert_eq!(
            (read.state["count"].as_u64(), read.version),
            (Some(100), 100)
        );
    }

    #[tokio::test]
    async fn lock_timeout_gives_up_while_the_lock_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let held = store.lock("acme", None).await.unwrap();

        let timeout = Duration::from_millis(50);
        let start = Instant::now();
        let error = store.lock("acme", Some(timeout)).await.err().unwrap();
        assert!(start.elapsed() >= timeout);
        assert!(
            matches!(error.kind(), StoreErrorKind::LockTimeout { path, waited }
                if *path == dir.path().join(".acme.json.lock") && *waited == timeout),
            "{error:?}"
        );
        // Other instances are not affected.
        store.lock("other", Some(timeout)).await.unwrap();

        drop(held);
        store.lock("acme", Some(timeout)).await.unwrap();
    }

    #[tokio::test]
    async fn leftover_temp_files_do_not_affect_loads_and_writes_leave_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let path = store.path_of("acme").unwrap();
        fs_err::write(&path, r#"{"count": 1}"#).unwrap();
        // What a crash between creating and renaming the temp file leaves behind.
        let leftover = dir.path().join(".acme.json.a1b2c3.tmp");
        fs_err::write(&leftover, r#"{"count": "#).unwrap();
        assert_eq!(
            *store.load("acme").await.unwrap().state,
            state(json!({ "count": 1 }))
        );
        fs_err::remove_file(&leftover).unwrap();
        let mut lock = store.lock("acme", None).await.unwrap();
        for count in 0..3_u64 {
            lock.write(state(json!({ "count": count })), count)
                .await
                .unwrap();
        }
        drop(lock);
        assert_eq!(file_names(dir.path()), [".acme.json.lock", "acme.json"]);
    }

    #[tokio::test]
    async fn a_failed_write_removes_its_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        // A non-empty directory where the file should be makes the rename fail, even as root.
        let path = store.path_of("acme").unwrap();
        fs_err::create_dir(&path).unwrap();
        fs_err::write(path.join("keep"), "").unwrap();

        let mut lock = store.lock("acme", None).await.unwrap();
        let error = lock.write(State::new(), 0).await.unwrap_err();
        assert!(
            matches!(error.kind(), StoreErrorKind::Io { .. }),
            "{error:?}"
        );
        drop(lock);
        assert_eq!(file_names(dir.path()), [".acme.json.lock", "acme.json"]);
        assert_eq!(file_names(&path), ["keep"]);
    }

    #[tokio::test]
    async fn list_pages_in_id_order_with_expiries_and_delete_is_versioned() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        for (id, time) in [("c", 3), ("a", 1), ("b", 2)] {
            let mut expiring = state(json!({"authentication.time": time}));
            crate::Schedule {
                expires_at_ms: Some(time * 1_000_000_000_000_u64 + 60_000),
                ..crate::Schedule::default()
            }
            .put(&mut expiring);
            store.write(id, expiring, 0).await.unwrap();
        }
        fs_err::write(dir.path().join("notes.txt"), "not an instance").unwrap();
        let first = store
            .list(Page {
                after: None,
                limit: 2,
                ..Page::default()
            })
            .await
            .unwrap();
        let ids: Vec<&str> = first
            .instances
            .iter()
            .map(|summary| summary.id.as_str())
            .collect();
        assert_eq!((ids, first.next.as_deref()), (vec!["a", "b"], Some("b")));
        assert_eq!(first.instances[0].expires_at_ms, Some(1_000_000_060_000));
        let second = store
            .list(Page {
                after: first.next,
                limit: 2,
                ..Page::default()
            })
            .await
            .unwrap();
        assert_eq!((second.instances.len(), second.next), (1, None));

        let error = store.delete("a", 7).await.unwrap_err();
        assert!(
            matches!(error.kind(), StoreErrorKind::Conflict { .. }),
            "{error:?}"
        );
        store.delete("a", 1).await.unwrap();
        assert!(matches!(
            store.load("a").await.unwrap_err().kind(),
            StoreErrorKind::NotFound { .. }
        ));
        assert!(matches!(
            store.delete("a", 1).await.unwrap_err().kind(),
            StoreErrorKind::NotFound { .. }
        ));
    }

    #[tokio::test]
    async fn cross_process_increments_lose_no_update() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        fs_err::write(store.path_of("acme").unwrap(), r#"{"count": 0}"#).unwrap();
        let children: Vec<_> = (0..2)
            .map(|_| {
                Command::new(std::env::current_exe().unwrap())
                    .args([
                        "--exact",
                        "file_store::tests::cross_process_child",
                        "--nocapture",
                    ])
                    .env(CHILD_DIR_VAR, dir.path())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        increment(&store, 50).await;
        for child in children {
            let output = child.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "child failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let read = store.load("acme").await.unwrap();
        assert_eq!(
            (read.state["count"].as_u64(), read.version),
            (Some(150), 150)
        );
    }

    /// The child half of [`cross_process_increments_lose_no_update`]; does nothing on its own.
    #[tokio::test]
    async fn cross_process_child() {
        if let Some(dir) = std::env::var_os(CHILD_DIR_VAR) {
            increment(&FileStore::new(dir), 50).await;
        }
    }
}

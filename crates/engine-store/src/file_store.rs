use std::ffi::OsString;
use std::fs::TryLockError;
use std::io::{self, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{
    BoxFuture, InstanceLock, InstanceStore, Listing, Page, State, StoreError, StoreErrorKind,
    Summary, VERSION_KEY, Versioned, expiry_of,
};

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
/// # Writing
///
/// [`InstanceLock::write`] writes a temp file `dir/.x.json.<random>.tmp` with the permissions of the
/// file it replaces (`0600` on Unix for a new file), syncs it, renames it over `dir/x.json` and
/// syncs the directory. A crash at any point leaves either the old or the new file, plus at worst
/// a stray temp file that loading ignores. File ownership is not carried over.
///
/// # Versions
///
/// The instance's version is the number under [`VERSION_KEY`] in the file (0 when it has none),
/// written as the file's last key. Every write checks it under the lock ([`InstanceStore::write`]).
/// All file work runs on tokio's blocking pool.
#[derive(Debug, Clone)]
pub struct FileStore {
    layout: Layout,
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
        }
    }

    /// Returns a store holding exactly one instance, the file at `path`; every instance id maps to
    /// it.
    pub fn for_file(path: impl Into<PathBuf>) -> Self {
        Self {
            layout: Layout::File(path.into()),
        }
    }

    /// Returns the path where `instance` is stored.
    ///
    /// Fails with [`StoreErrorKind::InvalidInstanceId`] for a directory store when `instance` is
    /// not a safe file stem: it must be non-empty, use only ASCII letters, digits, `.`, `_` and
    /// `-`, and not start with `.`.
    pub fn path_of(&self, instance: &str) -> Result<PathBuf, StoreError> {
        match &self.layout {
            Layout::File(path) => Ok(path.clone()),
            Layout::Directory(dir) => {
                let valid = !instance.is_empty()
                    && !instance.starts_with('.')
                    && instance
                        .bytes()
                        .all(|byte| byte.is_ascii_alphanumeric() || b"._-".contains(&byte));
                if !valid {
                    return Err(StoreErrorKind::InvalidInstanceId {
                        id: instance.to_owned(),
                    }
                    .into());
                }
                Ok(dir.join(format!("{instance}.json")))
            }
        }
    }

    /// Opens (creating it if needed) the sidecar lock file of `instance`.
    fn open_lock_file(&self, instance: &str) -> Result<(PathBuf, fs_err::File), StoreError> {
        let path = self.path_of(instance)?;
        let lock_path = lock_path_of(&path);
        let file = fs_err::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|source| io_error(&lock_path, "lock", source))?;
        Ok((path, file))
    }
}

impl FileStore {
    /// Takes the lock of `instance` without blocking a thread: non-blocking attempts with short
    /// async pauses, until `timeout`.
    async fn acquire(
        &self,
        instance: &str,
        timeout: Option<Duration>,
    ) -> Result<FileLock, StoreError> {
        let (path, lock_file) = self.open_lock_file(instance)?;
        let start = Instant::now();
        let mut pause = LOCK_POLL_FIRST;
        loop {
            match lock_file.file().try_lock() {
                Ok(()) => {
                    return Ok(FileLock {
                        path,
                        _lock_file: lock_file,
                    });
                }
                Err(TryLockError::WouldBlock) => {
                    if let Some(timeout) = timeout {
                        let remaining = timeout.saturating_sub(start.elapsed());
                        if remaining.is_zero() {
                            return Err(StoreErrorKind::LockTimeout {
                                path: lock_file.path().to_owned(),
                                waited: timeout,
                            }
                            .into());
                        }
                        pause = pause.min(remaining);
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(LOCK_POLL_MAX);
                }
                Err(TryLockError::Error(source)) => {
                    return Err(io_error(lock_file.path(), "lock", source));
                }
            }
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
                    instances.push(Summary {
                        id,
                        version: read.version,
                        expires_at_ms: expiry_of(&read.state),
                    });
                }
                Ok(Listing { instances, next })
            })
            .await
        })
    }

    fn delete<'a>(
        &'a self,
        instance: &'a str,
        expected: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let lock = self.acquire(instance, None).await?;
            let path = lock.path.clone();
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

    fn identity(&self, instance: &str) -> String {
        self.path_of(instance)
            .map_or_else(|_| instance.to_owned(), |path| path.display().to_string())
    }
}

/// The guard of [`FileStore`]: the open, locked sidecar file. Closing it releases the lock.
#[derive(Debug)]
struct FileLock {
    path: PathBuf,
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
            persist_file(&path, &state, found + 1)?;
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
/// the temp file is removed (by dropping it) and `path` is untouched.
fn persist_file(path: &Path, state: &State, version: u64) -> Result<(), StoreError> {
    let dir = parent_of(path);
    let permissions = match fs_err::metadata(path) {
        Ok(metadata) => Some(metadata.permissions()),
        Err(source) if source.kind() == io::ErrorKind::NotFound => None,
        Err(source) => return Err(io_error(path, "read", source)),
    };
    // A new file holds secrets: owner-only on Unix, the temp file's defaults elsewhere.
    #[cfg(unix)]
    let permissions = permissions.or_else(|| {
        use std::os::unix::fs::PermissionsExt as _;
        Some(std::fs::Permissions::from_mode(0o600))
    });
    let mut temp = tempfile::Builder::new()
        .prefix(&hidden_name(path, "."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|source| io_error(path, "write", source))?;
    if let Some(permissions) = permissions {
        temp.as_file()
            .set_permissions(permissions)
            .map_err(|source| io_error(path, "write", source))?;
    }
    write_pretty(temp.as_file_mut(), state, version)
        .map_err(|source| io_error(path, "write", source))?;
    temp.as_file()
        .sync_all()
        .map_err(|source| io_error(path, "sync", source))?;
    temp.persist(path)
        .map_err(|error| io_error(path, "rename", error.error))?;
    sync_dir(dir)
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
    async fn writes_keep_permissions_and_create_owner_only_files() {
        use std::os::unix::fs::PermissionsExt as _;

        let mode = |path: &Path| fs_err::metadata(path).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let existing = store.path_of("existing").unwrap();
        fs_err::write(&existing, "{}").unwrap();
        fs_err::set_permissions(&existing, std::fs::Permissions::from_mode(0o640)).unwrap();

        store.write("existing", State::new(), 0).await.unwrap();
        store.write("new", State::new(), 0).await.unwrap();

        assert_eq!(mode(&existing), 0o640);
        assert_eq!(mode(&store.path_of("new").unwrap()), 0o600);
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
            let expiring = state(
                json!({"authentication.time": time * 1_000_000_000_000_u64, "expires_in": 60}),
            );
            store.write(id, expiring, 0).await.unwrap();
        }
        fs_err::write(dir.path().join("notes.txt"), "not an instance").unwrap();
        let first = store
            .list(Page {
                after: None,
                limit: 2,
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

use std::ffi::OsString;
use std::fs::TryLockError;
use std::io::{self, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{State, StateLock, StateStore, StoreError, StoreErrorKind};

/// How often [`StateStore::lock_timeout`] retries a held lock.
const LOCK_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// A [`StateStore`] that keeps each instance in a JSON file.
///
/// # Locking
///
/// The lock for `dir/x.json` is taken with [`std::fs::File::lock`] on a sidecar file,
/// `dir/.x.json.lock`, which is created on first use and never deleted. The data file itself cannot
/// carry the lock: [`StateLock::persist`] renames a new file over it, so a process waiting on the
/// old inode would wake up holding a lock on a file that is no longer the instance. Deleting the
/// sidecar would break the lock the same way, hence it stays. The lock is advisory and works across
/// processes and across threads of one process.
///
/// # Writing
///
/// [`StateLock::persist`] writes a temp file `dir/.x.json.<random>.tmp` with the permissions of the
/// file it replaces (`0600` on Unix for a new file), syncs it, renames it over `dir/x.json` and
/// syncs the directory. A crash at any point leaves either the old or the new file, plus at worst
/// a stray temp file that [`StateStore::load`] ignores. File ownership is not carried over.
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

impl StateStore for FileStore {
    fn load(&self, instance: &str) -> Result<Arc<State>, StoreError> {
        load_file(&self.path_of(instance)?).map(Arc::new)
    }

    fn lock(&self, instance: &str) -> Result<Box<dyn StateLock + '_>, StoreError> {
        let (path, lock_file) = self.open_lock_file(instance)?;
        lock_file
            .file()
            .lock()
            .map_err(|source| io_error(lock_file.path(), "lock", source))?;
        Ok(Box::new(FileLock {
            path,
            _lock_file: lock_file,
        }))
    }

    fn lock_timeout(
        &self,
        instance: &str,
        timeout: Duration,
    ) -> Result<Box<dyn StateLock + '_>, StoreError> {
        let (path, lock_file) = self.open_lock_file(instance)?;
        let start = Instant::now();
        loop {
            match lock_file.file().try_lock() {
                Ok(()) => {
                    return Ok(Box::new(FileLock {
                        path,
                        _lock_file: lock_file,
                    }));
                }
                Err(TryLockError::WouldBlock) => {
                    let remaining = timeout.saturating_sub(start.elapsed());
                    if remaining.is_zero() {
                        return Err(StoreErrorKind::LockTimeout {
                            path,
                            waited: timeout,
                        }
                        .into());
                    }
                    thread::sleep(remaining.min(LOCK_POLL_INTERVAL));
                }
                Err(TryLockError::Error(source)) => {
                    return Err(io_error(lock_file.path(), "lock", source));
                }
            }
        }
    }
}

/// The guard of [`FileStore`]: the open, locked sidecar file. Closing it releases the lock.
#[derive(Debug)]
struct FileLock {
    path: PathBuf,
    _lock_file: fs_err::File,
}

impl StateLock for FileLock {
    fn load(&self) -> Result<State, StoreError> {
        load_file(&self.path)
    }

    fn persist(&mut self, state: &State) -> Result<(), StoreError> {
        persist_file(&self.path, state)
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

fn load_file(path: &Path) -> Result<State, StoreError> {
    let bytes = fs_err::read(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => StoreErrorKind::NotFound {
            path: path.to_owned(),
        }
        .into(),
        _ => io_error(path, "read", source),
    })?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(state)) => Ok(state),
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

/// Writes `state` to `path` atomically; see [`FileStore`] for the steps. On error the temp file is
/// removed (by dropping it) and `path` is untouched.
fn persist_file(path: &Path, state: &State) -> Result<(), StoreError> {
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
    write_pretty(temp.as_file_mut(), state).map_err(|source| io_error(path, "write", source))?;
    temp.as_file()
        .sync_all()
        .map_err(|source| io_error(path, "sync", source))?;
    temp.persist(path)
        .map_err(|error| io_error(path, "rename", error.error))?;
    sync_dir(dir)
}

fn write_pretty(file: &mut std::fs::File, state: &State) -> io::Result<()> {
    let mut writer = BufWriter::new(file);
    serde_json::to_writer_pretty(&mut writer, state)?;
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

    /// Takes the lock, adds one to `count` and persists, `times` times.
    #[track_caller]
    fn increment(store: &FileStore, times: usize) {
        for _ in 0..times {
            let mut lock = store.lock("acme").unwrap();
            let mut state = lock.load().unwrap();
            let count = state["count"].as_u64().unwrap();
            state.insert("count".to_owned(), json!(count + 1));
            lock.persist(&state).unwrap();
        }
    }

    #[test]
    fn round_trip_keeps_key_order_and_untouched_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let path = store.path_of("acme").unwrap();
        fs_err::write(
            &path,
            r#"{"zone": "eu", "authentication.time": "0", "apiKey": {"nested": [1, 2]}, "b": true}"#,
        )
        .unwrap();

        let mut lock = store.lock("acme").unwrap();
        let mut state = lock.load().unwrap();
        state.insert("authentication.time".to_owned(), json!("1700000000"));
        state.insert("added".to_owned(), json!("new"));
        lock.persist(&state).unwrap();
        drop(lock);

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
  "added": "new"
}
"#
        );
        assert_eq!(*store.load("acme").unwrap(), state);
    }

    #[test]
    fn persist_creates_a_missing_instance() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let expected = state(json!({ "a": "1" }));
        store.lock("new").unwrap().persist(&expected).unwrap();
        assert_eq!(*store.load("new").unwrap(), expected);
    }

    #[cfg(unix)]
    #[test]
    fn persist_keeps_permissions_and_creates_owner_only_files() {
        use std::os::unix::fs::PermissionsExt as _;

        let mode = |path: &Path| fs_err::metadata(path).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let existing = store.path_of("existing").unwrap();
        fs_err::write(&existing, "{}").unwrap();
        fs_err::set_permissions(&existing, std::fs::Permissions::from_mode(0o640)).unwrap();

        store
            .lock("existing")
            .unwrap()
            .persist(&State::new())
            .unwrap();
        store.lock("new").unwrap().persist(&State::new()).unwrap();

        assert_eq!(mode(&existing), 0o640);
        assert_eq!(mode(&store.path_of("new").unwrap()), 0o600);
    }

    #[test]
    fn load_missing_instance_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let error = store.load("missing").unwrap_err();
        assert!(
            matches!(error.kind(), StoreErrorKind::NotFound { path } if *path == dir.path().join("missing.json")),
            "{error:?}"
        );
    }

    #[test]
    fn load_malformed_file_reports_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        fs_err::write(
            store.path_of("acme").unwrap(),
            "{\n  \"a\": \"1\",\n  \"b\" \"2\"\n}\n",
        )
        .unwrap();
        let error = store.load("acme").unwrap_err();
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
    }

    #[test]
    fn load_non_object_is_not_an_object() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        fs_err::write(store.path_of("acme").unwrap(), r#"["a"]"#).unwrap();
        let error = store.load("acme").unwrap_err();
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

    #[test]
    fn for_file_maps_every_instance_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("instance.json");
        fs_err::write(&path, r#"{"a": "1"}"#).unwrap();
        let store = FileStore::for_file(&path);
        assert_eq!(store.path_of("anything/../at all").unwrap(), path);
        store.lock("x").unwrap().persist(&State::new()).unwrap();
        assert_eq!(
            file_names(dir.path()),
            [".instance.json.lock", "instance.json"]
        );
        assert_eq!(*store.load("y").unwrap(), State::new());
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

    #[test]
    fn lock_excludes_other_threads() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        fs_err::write(store.path_of("acme").unwrap(), r#"{"count": 0}"#).unwrap();
        thread::scope(|scope| {
            scope.spawn(|| increment(&store, 50));
            scope.spawn(|| increment(&store, 50));
        });
        assert_eq!(store.load("acme").unwrap()["count"], 100);
    }

    #[test]
    fn lock_timeout_gives_up_while_the_lock_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let held = store.lock("acme").unwrap();

        let timeout = Duration::from_millis(50);
        let start = Instant::now();
        let error = store.lock_timeout("acme", timeout).err().unwrap();
        assert!(start.elapsed() >= timeout);
        assert!(
            matches!(error.kind(), StoreErrorKind::LockTimeout { path, waited }
                if *path == dir.path().join("acme.json") && *waited == timeout),
            "{error:?}"
        );
        // Other instances are not affected.
        store.lock_timeout("other", timeout).unwrap();

        drop(held);
        store.lock_timeout("acme", timeout).unwrap();
    }

    #[test]
    fn leftover_temp_file_does_not_affect_load() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let path = store.path_of("acme").unwrap();
        fs_err::write(&path, r#"{"count": 1}"#).unwrap();
        // What a crash between creating and renaming the temp file leaves behind.
        fs_err::write(dir.path().join(".acme.json.a1b2c3.tmp"), r#"{"count": "#).unwrap();

        assert_eq!(*store.load("acme").unwrap(), state(json!({ "count": 1 })));
        let mut lock = store.lock("acme").unwrap();
        lock.persist(&state(json!({ "count": 2 }))).unwrap();
        assert_eq!(lock.load().unwrap(), state(json!({ "count": 2 })));
    }

    #[test]
    fn persist_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let mut lock = store.lock("acme").unwrap();
        for count in 0..3 {
            lock.persist(&state(json!({ "count": count }))).unwrap();
        }
        assert_eq!(file_names(dir.path()), [".acme.json.lock", "acme.json"]);
    }

    #[test]
    fn failed_persist_removes_its_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        // A non-empty directory where the file should be makes the rename fail, even as root.
        let path = store.path_of("acme").unwrap();
        fs_err::create_dir(&path).unwrap();
        fs_err::write(path.join("keep"), "").unwrap();

        let error = store
            .lock("acme")
            .unwrap()
            .persist(&State::new())
            .unwrap_err();
        assert!(
            matches!(
                error.kind(),
                StoreErrorKind::Io {
                    operation: "rename",
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(file_names(dir.path()), [".acme.json.lock", "acme.json"]);
        assert_eq!(file_names(&path), ["keep"]);
    }

    #[test]
    fn cross_process_increments_lose_no_update() {
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
        increment(&store, 50);
        for child in children {
            let output = child.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "child failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        assert_eq!(store.load("acme").unwrap()["count"], 150);
    }

    /// The child half of [`cross_process_increments_lose_no_update`]; does nothing on its own.
    #[test]
    fn cross_process_child() {
        if let Some(dir) = std::env::var_os(CHILD_DIR_VAR) {
            increment(&FileStore::new(dir), 50);
        }
    }
}

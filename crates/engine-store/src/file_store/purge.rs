//! Expired records leave a [`FileStore`](super::FileStore)'s record directories: their files,
//! their lock sidecars, and a namespace's directory once empty
//! ([`crate::InstanceStore::purge_expired_records`]).
//!
//! A record's sidecar (`.ID.json.lock`) is removed only by a process holding its lock. A process
//! that opened the sidecar before then would wake up holding a lock on a file that is no longer
//! there, so a lock on a record counts only while the sidecar at its path is still the file
//! locked ([`lock_record`] takes it again otherwise).

use std::fs::TryLockError;
use std::io;
use std::path::Path;

use super::{io_error, lock_file, lock_path_of, parent_of, read_record};
use crate::{Record, StoreError, StoreErrorKind};

/// How often [`lock_record`] takes the lock again when a purge removed the sidecar or its
/// directory meanwhile, before it gives up.
const LOCK_ATTEMPTS: usize = 100;

/// Takes the lock of the record file `path` on its sidecar, making its directory when it is
/// missing, as long as it takes.
///
/// Fails when the directory cannot be made, or the sidecar opened or locked (also when purges
/// removed it [`LOCK_ATTEMPTS`] times in a row).
pub(super) async fn lock_record(path: &Path) -> Result<fs_err::File, StoreError> {
    let dir = parent_of(path);
    let lock_path = lock_path_of(path);
    for _ in 0..LOCK_ATTEMPTS {
        match fs_err::create_dir_all(dir) {
            Ok(()) => {}
            // A purge removed an empty parent between two of its steps: made again.
            Err(source)
                if matches!(
                    source.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::AlreadyExists
                ) =>
            {
                continue;
            }
            Err(source) => return Err(io_error(dir, "write", source)),
        }
        let file = match lock_file(&lock_path, None).await {
            Ok(file) => file,
            // A purge removed the empty directory between the two steps: made again.
            Err(error) if is_not_found(&error) => continue,
            Err(error) => return Err(error),
        };
        if still_at(&file, &lock_path)? {
            return Ok(file);
        }
    }
    Err(io_error(
        &lock_path,
        "lock",
        io::Error::other("the lock file was removed each time it was taken"),
    ))
}

/// Removes the records of the namespace directory `dir` that expired at `now_ms`, at most
/// `limit`, and the sidecars left by records no longer there (deleted ones); then `dir` itself
/// when that left it empty. Returns how many records it removed. A record whose lock is held
/// (a write under way) is left for the next purge: a purge never waits.
///
/// Fails when `dir` cannot be listed, or a record read or removed.
pub(super) fn purge_namespace(dir: &Path, now_ms: u64, limit: usize) -> Result<usize, StoreError> {
    let mut names = match fs_err::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect::<Vec<_>>(),
        Err(source) if source.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(io_error(dir, "read", source)),
    };
    names.sort();
    let mut removed = 0;
    for name in &names {
        if removed >= limit {
            break;
        }
        let Some(id) = name.strip_suffix(".json") else {
            continue;
        };
        if crate::valid_id(id).is_err() {
            continue;
        }
        let path = dir.join(name);
        let expired =
            |record: Option<&Record>| record.is_some_and(|stored| stored.is_expired(now_ms));
        if expired(readable(read_record(&path, id.to_owned()))?.as_ref())
            && remove_if(&path, true, expired)?
        {
            removed += 1;
        }
    }
    for name in &names {
        let Some(record) = name
            .strip_prefix('.')
            .and_then(|rest| rest.strip_suffix(".lock"))
            .filter(|record| {
                record
                    .strip_suffix(".json")
                    .is_some_and(|id| crate::valid_id(id).is_ok())
            })
        else {
            continue;
        };
        if names
            .binary_search_by(|name| name.as_str().cmp(record))
            .is_err()
        {
            remove_if(&dir.join(record), false, |record| record.is_none())?;
        }
    }
    remove_if_empty(dir);
    Ok(removed)
}

/// Removes the directory `dir` if it is empty; leaves it otherwise, or when it is gone.
pub(super) fn remove_if_empty(dir: &Path) {
    // Not empty (another record, a write under way), or already gone: nothing to do either way.
    let _ = fs_err::remove_dir(dir);
}

/// Under the lock of the record file `path` (not waiting for it: `false` when it is held), reads
/// the record and, when `condition` holds of it, removes its file and its sidecar. Returns
/// whether it removed a record. `create`: make the sidecar when missing (a record's); otherwise
/// a missing sidecar is left alone.
fn remove_if(
    path: &Path,
    create: bool,
    condition: impl Fn(Option<&Record>) -> bool,
) -> Result<bool, StoreError> {
    let lock_path = lock_path_of(path);
    let lock = match fs_err::OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(&lock_path)
    {
        Ok(lock) => lock,
        Err(source) if source.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(source) => return Err(io_error(&lock_path, "lock", source)),
    };
    match lock.file().try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Ok(false),
        Err(TryLockError::Error(source)) => return Err(io_error(&lock_path, "lock", source)),
    }
    if !still_at(&lock, &lock_path)? {
        return Ok(false);
    }
    let id = path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default();
    let record = readable(read_record(path, id))?;
    if record.is_none() && path.exists() {
        // A file that is not a record: neither expired nor the sidecar's to lose.
        return Ok(false);
    }
    if !condition(record.as_ref()) {
        return Ok(false);
    }
    if record.is_some() {
        remove_file(path)?;
    }
    // Elsewhere a sidecar cannot be told from the one that replaced it: kept there.
    if cfg!(unix) {
        remove_file(&lock_path)?;
    }
    Ok(record.is_some())
}

/// A record file read: one that is not a record (not JSON, edited by hand) is no record to
/// remove, and does not hold back the purge of the others.
fn readable(read: Result<Option<Record>, StoreError>) -> Result<Option<Record>, StoreError> {
    match read {
        Err(error) if matches!(error.kind(), StoreErrorKind::Malformed { .. }) => Ok(None),
        read => read,
    }
}

fn remove_file(path: &Path) -> Result<(), StoreError> {
    match fs_err::remove_file(path) {
        Ok(()) => Ok(()),
        Err(source) if source.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(io_error(path, "delete", source)),
    }
}

/// True when the sidecar at `lock_path` is still the file `lock` holds (a purge did not remove
/// it meanwhile).
#[cfg(unix)]
fn still_at(lock: &fs_err::File, lock_path: &Path) -> Result<bool, StoreError> {
    use std::os::unix::fs::MetadataExt as _;
    let held = lock
        .metadata()
        .map_err(|source| io_error(lock_path, "lock", source))?;
    match fs_err::metadata(lock_path) {
        Ok(there) => Ok(there.dev() == held.dev() && there.ino() == held.ino()),
        Err(source) if source.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(io_error(lock_path, "lock", source)),
    }
}

/// Elsewhere sidecars are never removed, so the one held is the one there.
#[cfg(not(unix))]
fn still_at(_lock: &fs_err::File, _lock_path: &Path) -> Result<bool, StoreError> {
    Ok(true)
}

fn is_not_found(error: &StoreError) -> bool {
    matches!(error.kind(), StoreErrorKind::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::json;

    use super::*;
    use crate::{FileStore, InstanceStore};

    #[track_caller]
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs_err::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// A one-file store's records beside its file: the expired ones go with their sidecars,
    /// then each directory left empty, and nothing of them remains beside the file.
    #[tokio::test]
    async fn expired_records_leave_no_file_behind() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("acme.json");
        fs_err::write(&file, "{}").unwrap();
        let store = FileStore::for_file(&file);
        let now = 1_000;
        store
            .put_record("events", "e1", json!(1), Some(now - 1), 0, 0)
            .await
            .unwrap();
        store
            .put_record("events", "e2", json!(2), Some(now + 1), 0, 0)
            .await
            .unwrap();
        store
            .put_record("event-quiet", "acme", json!({}), Some(now), 0, 0)
            .await
            .unwrap();
        let records: PathBuf = dir.path().join(".acme.json.records");
        assert_eq!(names(&records), ["event-quiet", "events"]);

        assert_eq!(store.purge_expired_records(None, now, 10).await.unwrap(), 2);
        assert_eq!(names(&records), ["events"]);
        assert_eq!(names(&records.join("events")), [".e2.json.lock", "e2.json"]);

        assert_eq!(
            store
                .purge_expired_records(None, now + 1, 10)
                .await
                .unwrap(),
            1
        );
        assert_eq!(names(dir.path()), ["acme.json"]);
    }

    /// A deleted record's sidecar goes at the next purge; a record whose lock is held is left
    /// (the purge does not wait) and goes at the next purge after.
    #[tokio::test]
    async fn purges_skip_held_records_and_sweep_orphan_sidecars() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        store
            .put_record("flows", "gone", json!(1), None, 0, 0)
            .await
            .unwrap();
        assert!(store.delete_record("flows", "gone", None).await.unwrap());
        store
            .put_record("flows", "held", json!(1), Some(5), 0, 0)
            .await
            .unwrap();
        let flows = dir.path().join(".records").join("flows");
        let held = lock_record(&flows.join("held.json")).await.unwrap();

        assert_eq!(store.purge_expired_records(None, 10, 10).await.unwrap(), 0);
        assert_eq!(names(&flows), [".held.json.lock", "held.json"]);
        drop(held);
        assert_eq!(store.purge_expired_records(None, 10, 10).await.unwrap(), 1);
        assert_eq!(names(dir.path()), Vec::<String>::new());
    }

    /// A record file that is not JSON is kept, with its lock file, and holds back no other.
    #[tokio::test]
    async fn a_file_that_is_not_a_record_is_kept_and_the_rest_purged() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        store
            .put_record("flows", "a", json!(1), Some(5), 0, 0)
            .await
            .unwrap();
        store
            .put_record("flows", "b", json!(1), Some(5), 0, 0)
            .await
            .unwrap();
        let flows = dir.path().join(".records").join("flows");
        fs_err::write(flows.join("a.json"), "not json").unwrap();

        assert_eq!(store.purge_expired_records(None, 10, 10).await.unwrap(), 1);
        assert_eq!(names(&flows), [".a.json.lock", "a.json"]);
    }

    /// A process that opened a record's sidecar before a purge removed it locks a file no
    /// longer there: that lock is told apart, and the sidecar made anew is the lock.
    #[cfg(unix)]
    #[tokio::test]
    async fn a_lock_on_a_removed_sidecar_does_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        store
            .put_record("flows", "a", json!(1), Some(5), 0, 0)
            .await
            .unwrap();
        let path = dir.path().join(".records").join("flows").join("a.json");
        let lock_path = lock_path_of(&path);
        let opened_before = fs_err::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&lock_path)
            .unwrap();
        assert_eq!(store.purge_expired_records(None, 10, 10).await.unwrap(), 1);
        opened_before.file().try_lock().unwrap();
        assert!(!still_at(&opened_before, &lock_path).unwrap());

        let lock = lock_record(&path).await.unwrap();
        assert!(still_at(&lock, &lock_path).unwrap());
        let again = fs_err::File::open(&lock_path).unwrap();
        assert!(
            again.file().try_lock().is_err(),
            "the new sidecar is the one held"
        );
    }

    /// A writer racing purges that remove its namespace's sidecars and directories (made again
    /// under it): every write succeeds, and each record that never expires is there after its
    /// write, whatever the purges did meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_racing_purges_are_never_lost() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let purger = {
            let (store, done) = (store.clone(), std::sync::Arc::clone(&done));
            tokio::spawn(async move {
                let mut removed = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    removed += store.purge_expired_records(None, 10, 100).await.unwrap();
                }
                removed
            })
        };
        for round in 0..200 {
            // Expired as soon as written: the purges' to take.
            store
                .put_record("flows", "a", json!(round), Some(1), 0, 10)
                .await
                .unwrap();
            let version = store
                .put_record("flows", "a", json!(round), None, 0, 10)
                .await
                .unwrap();
            let read = store.get_record("flows", "a", 10).await.unwrap();
            assert_eq!(read.map(|record| record.version), Some(version), "{round}");
            assert!(
                store
                    .delete_record("flows", "a", Some(version))
                    .await
                    .unwrap()
            );
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        purger.await.unwrap();
        store.purge_expired_records(None, 10, 100).await.unwrap();
        assert_eq!(names(dir.path()), Vec::<String>::new());
    }
}

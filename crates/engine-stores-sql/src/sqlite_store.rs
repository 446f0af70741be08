use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use engine_store::{
    BoxFuture, Claim, InstanceLock, InstanceStore, Listing, MAX_RECORDS_PAGE, Page, Record,
    Schedule, State, StoreError, StoreErrorKind, Summary, Versioned, connector_of, lease_token,
    record_conflict, valid_record,
};
use rusqlite::{Connection, OptionalExtension as _, TransactionBehavior, params};

use crate::{backend, claims, decode, epoch_ms, millis, to_i64, valid_id};

/// How long a statement waits for another connection's write lock before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The schema, one step per version: `PRAGMA user_version` is the number of steps applied.
/// Steps are only ever appended.
const MIGRATIONS: &[&str] = &[
    // 1: instances, with the columns listings filter on, copied from the state at each write.
    "CREATE TABLE instances (
        id TEXT PRIMARY KEY NOT NULL,
        version INTEGER NOT NULL,
        connector TEXT,
        expires_at INTEGER,
        state TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX instances_expires_at ON instances (expires_at);
    CREATE INDEX instances_connector ON instances (connector, id);",
    // 2: the refresh history of each instance, oldest first (seq), bounded by the writer.
    "CREATE TABLE history (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        instance TEXT NOT NULL,
        entry TEXT NOT NULL
    );
    CREATE INDEX history_instance ON history (instance, seq);",
    // 3: the status (`needs-reauth`) as a column, indexed, so that listing the instances that
    // need re-authentication reads only those.
    "ALTER TABLE instances ADD COLUMN status TEXT;
    UPDATE instances SET status = json_extract(state, '$.\"engine.status\"');
    CREATE INDEX instances_status ON instances (status, id);",
    // 4: when each instance is next due for a refresh, from its schedule, indexed: the runtime
    // computes the schedule; a row written before is due at once (0) so that the runtime's first
    // look computes it, unless it needs re-authentication. And the lease of a claim on it.
    "ALTER TABLE instances ADD COLUMN next_refresh_at INTEGER;
    UPDATE instances SET next_refresh_at = 0 WHERE status IS NOT 'needs-reauth';
    CREATE INDEX instances_next_refresh_at ON instances (next_refresh_at);
    ALTER TABLE instances ADD COLUMN lease_token TEXT;
    ALTER TABLE instances ADD COLUMN lease_until INTEGER;",
    // 5: records (`InstanceStore::put_record`): small JSON documents by namespace and id, with
    // a version for conditional writes and an optional expiry (epoch ms).
    "CREATE TABLE records (
        namespace TEXT NOT NULL,
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        expires_at INTEGER,
        value TEXT NOT NULL,
        PRIMARY KEY (namespace, id)
    );
    CREATE INDEX records_expires_at ON records (expires_at);",
];

/// An [`InstanceStore`] in one SQLite file: many instances, no server.
///
/// # Storage
///
/// The file is created and migrated on first use ([`SqliteStore::open`]): versioned steps, the
/// applied count kept in `PRAGMA user_version`, applied inside a `BEGIN IMMEDIATE` transaction so
/// that two processes opening a new file at once apply them once. The journal is in WAL mode
/// (readers never wait for the writer) with `synchronous = FULL` (a committed token survives a
/// power cut), and every connection waits up to 30 s for another's write (`busy_timeout`).
/// Every call runs on tokio's blocking pool. Reads take a connection from a small pool; writes
/// (every `BEGIN IMMEDIATE`) share one writer connection per store behind a mutex, so the writers
/// of one process queue in order instead of meeting SQLite's busy handler, which sleeps (up to
/// 100 ms at a time) and retries: with `--jobs 64` most of a refresh was spent there. Writers of
/// other processes still meet it, bounded by `busy_timeout`.
///
/// Each instance is a row: its state as JSON text, its version, and columns copied from the
/// state at each write for listings: from its [`Schedule`] (which the runtime computes)
/// `expires_at`, `next_refresh_at` (both indexed: the next due instances are found without a
/// scan) and `status`, and `connector` (from [`connector_of`]).
///
/// # Versions
///
/// A write is a compare-and-swap inside one `BEGIN IMMEDIATE` transaction: read the row's
/// version, compare, write the whole state. The state (a rotated refresh token together with its
/// access token) is one column of one row: a crash commits all of it or none of it.
///
/// # Locking
///
/// The lock of an instance is an OS file lock ([`std::fs::File::try_lock`]) on
/// `PATH.locks/<id>.lock`, taken by polling without blocking a thread ([`engine_store::lock_file`], as the file
/// store takes its locks). It is not a database
/// transaction held for the lock's life: `BEGIN IMMEDIATE` takes the *whole file's* write lock, so
/// holding it across a vendor call would serialise every refresh of every instance. A file lock is
/// per instance, and the kernel releases it when the holder dies (`kill -9` never leaves a stale
/// lock, and there is no lease to wait out). SQLite in WAL mode only works on one host (its
/// shared memory index must be local), so a host-local lock covers every process that can open
/// the file. The version fence still guards every write, locked or not.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    locks: PathBuf,
    /// Idle connections for reads; one is opened when none is idle.
    idle: Mutex<Vec<Connection>>,
    /// The connection every write of this store runs on, opened on the first write.
    writer: Mutex<Option<Connection>>,
    /// What the user should be told once (a file's permissions tightened).
    notices: Mutex<Vec<String>>,
    /// Opened read-only (its file or directory cannot be written: a read-only mount): reads
    /// work, every write and lock fails with [`Inner::read_only_error`].
    read_only: AtomicBool,
}

impl SqliteStore {
    /// Opens the database at `path`, creating the file and applying the schema's missing steps.
    /// An existing file that cannot be written (a read-only mount, a file or directory without
    /// write permission) is opened read-only: it can be listed and read, and each write or lock
    /// fails with [`StoreErrorKind::Io`] naming the file (`Read-only file system`).
    ///
    /// Fails with [`StoreErrorKind::Backend`] when the file cannot be opened or migrated (a
    /// directory that does not exist, a file that is not a database, a schema newer than this
    /// `engine`, a read-only file whose schema lacks steps).
    pub async fn open(path: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let path = path.into();
        let locks = locks_dir_of(&path);
        let inner = Arc::new(Inner {
            path,
            locks,
            idle: Mutex::new(Vec::new()),
            writer: Mutex::new(None),
            notices: Mutex::new(Vec::new()),
            read_only: AtomicBool::new(false),
        });
        let opened = Arc::clone(&inner);
        run_blocking(move || {
            let writable = || {
                opened.owner_only()?;
                let connection = opened.connect()?;
                migrate(&connection).map_err(|source| opened.error(source))?;
                create_private_dir(&opened.locks).map_err(|source| {
                    StoreError::from(StoreErrorKind::Io {
                        path: opened.locks.clone(),
                        operation: "write",
                        source,
                    })
                })?;
                Ok(connection)
            };
            let connection = match writable() {
                Ok(connection) => connection,
                Err(error) if is_read_only(&error) && opened.path.is_file() => {
                    opened.read_only.store(true, Ordering::Relaxed);
                    let Ok(connection) = opened.connect() else {
                        return Err(error);
                    };
                    check_schema(&connection).map_err(|source| opened.error(source))?;
                    connection
                }
                Err(error) => return Err(error),
            };
            opened.give_back(connection);
            Ok(())
        })
        .await?;
        Ok(Self { inner })
    }

    /// True when the file was opened read-only ([`SqliteStore::open`]).
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only.load(Ordering::Relaxed)
    }

    /// Returns the database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Returns the number of schema steps applied to the file (`PRAGMA user_version`).
    pub async fn schema_version(&self) -> Result<u32, StoreError> {
        self.with("schema", |connection| {
            connection.pragma_query_value(None, "user_version", |row| row.get(0))
        })
        .await
    }

    /// Runs `work` on a pooled connection on the blocking pool; database errors become
    /// [`StoreErrorKind::Backend`] naming `instance`.
    async fn with<T: Send + 'static>(
        &self,
        instance: &str,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.with_checked(naming_errors(instance, work)).await
    }

    /// Like [`SqliteStore::with`], for work that reports its own [`StoreError`]s.
    async fn with_checked<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        run_blocking(move || {
            let mut connection = inner.take()?;
            let result = work(&mut connection);
            inner.give_back(connection);
            result
        })
        .await
    }

    /// Runs `work`, which writes, on the store's one writer connection on the blocking pool;
    /// database errors become [`StoreErrorKind::Backend`] naming `instance`.
    async fn writing<T: Send + 'static>(
        &self,
        instance: &str,
        work: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.writing_checked(naming_errors(instance, work)).await
    }

    /// Like [`SqliteStore::writing`], for work that reports its own [`StoreError`]s.
    async fn writing_checked<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        if self.is_read_only() {
            return Err(self.inner.read_only_error());
        }
        let inner = Arc::clone(&self.inner);
        run_blocking(move || {
            // The connection is whole whatever panicked while another writer held it: a
            // transaction it left open rolls back when the next one begins (rusqlite drops it).
            let mut writer = inner.writer.lock().unwrap_or_else(PoisonError::into_inner);
            let connection = match &mut *writer {
                Some(connection) => connection,
                empty => empty.insert(inner.connect()?),
            };
            work(connection)
        })
        .await
    }

    fn unknown(&self, instance: &str) -> StoreError {
        StoreErrorKind::UnknownInstance {
            instance: instance.to_owned(),
            store: format!("sqlite:{}", self.inner.path.display()),
        }
        .into()
    }

    async fn load_or_absent(&self, instance: &str) -> Result<Option<Versioned>, StoreError> {
        let id = instance.to_owned();
        let row = self
            .with(instance, move |connection| {
                // Every call through `engine serve` reads its instance: the statement is
                // compiled once per connection, not on every read.
                connection
                    .prepare_cached("SELECT version, state FROM instances WHERE id = ?1")?
                    .query_row([&id], |row| {
                        Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
                    })
                    .optional()
            })
            .await?;
        row.map(|(version, text)| decode(instance, version, &text))
            .transpose()
    }

    async fn write_checked(
        &self,
        instance: &str,
        state: State,
        expected: u64,
    ) -> Result<u64, StoreError> {
        valid_id(instance)?;
        let id = instance.to_owned();
        self.writing_checked(move |connection| {
            let error = |source| backend(&id, source);
            let transaction = connection
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(error)?;
            let found = transaction
                .query_row(
                    "SELECT version FROM instances WHERE id = ?1",
                    [&id],
                    |row| row.get::<_, i64>(0),
                )
                .optional()
                .map_err(error)?
                .map_or(0, |version| u64::try_from(version).unwrap_or(0));
            if found != expected {
                return Err(StoreErrorKind::Conflict {
                    instance: id,
                    expected,
                    found,
                }
                .into());
            }
            let version = found + 1;
            let text = serde_json::Value::Object(state.clone()).to_string();
            let schedule = Schedule::read(&state);
            transaction
                .execute(
                    "INSERT INTO instances
                       (id, version, connector, expires_at, state, updated_at, status,
                        next_refresh_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (id) DO UPDATE SET version = excluded.version,
                       connector = excluded.connector, expires_at = excluded.expires_at,
                       state = excluded.state, updated_at = excluded.updated_at,
                       status = excluded.status, next_refresh_at = excluded.next_refresh_at",
                    params![
                        id,
                        to_i64(version),
                        connector_of(&state),
                        schedule.expires_at_ms.map(to_i64),
                        text,
                        to_i64(epoch_ms()),
                        schedule.mark(),
                        schedule.next_refresh_at_ms.map(to_i64),
                    ],
                )
                .map_err(error)?;
            transaction.commit().map_err(error)?;
            Ok(version)
        })
        .await
    }

    async fn acquire(
        &self,
        instance: &str,
        timeout: Option<Duration>,
    ) -> Result<SqliteLock, StoreError> {
        valid_id(instance)?;
        if self.is_read_only() {
            return Err(self.inner.read_only_error());
        }
        let lock_path = self.inner.locks.join(format!("{instance}.lock"));
        Ok(SqliteLock {
            store: self.clone(),
            instance: instance.to_owned(),
            _file: engine_store::lock_file(&lock_path, timeout).await?,
        })
    }
}

impl Inner {
    /// Creates the database file owner-only (`0600`: SQLite gives its `-wal` and `-shm` files the
    /// database's permissions), and tightens an existing one (and those files) that group or
    /// others could read, with a notice: the file holds tokens.
    #[cfg(unix)]
    fn owner_only(&self) -> Result<(), StoreError> {
        use fs_err::os::unix::fs::OpenOptionsExt as _;
        use std::os::unix::fs::PermissionsExt as _;
        let io = |path: &Path, source| {
            StoreError::from(StoreErrorKind::Io {
                path: path.to_owned(),
                operation: "write",
                source,
            })
        };
        if let Err(source) = fs_err::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&self.path)
            && source.kind() != io::ErrorKind::AlreadyExists
        {
            return Err(io(&self.path, source));
        }
        let mut files = vec![self.path.clone()];
        for suffix in ["-wal", "-shm"] {
            let mut name = self.path.clone().into_os_string();
            name.push(suffix);
            files.push(PathBuf::from(name));
        }
        let mut notices = self.notices.lock().unwrap_or_else(PoisonError::into_inner);
        for file in files {
            let Ok(metadata) = fs_err::metadata(&file) else {
                continue;
            };
            let mode = metadata.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                let tightened = (mode & 0o700) | 0o600;
                fs_err::set_permissions(&file, std::fs::Permissions::from_mode(tightened))
                    .map_err(|source| io(&file, source))?;
                notices.push(format!(
                    "`{}` was readable by others ({mode:04o}); it holds secrets, so it is now {tightened:04o}",
                    file.display()
                ));
            }
        }
        Ok(())
    }

    #[cfg(not(unix))]
    fn owner_only(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn connect(&self) -> Result<Connection, StoreError> {
        if self.read_only.load(Ordering::Relaxed) {
            return self.connect_read_only();
        }
        let connection = Connection::open(&self.path).map_err(|source| self.error(source))?;
        let setup = || -> rusqlite::Result<()> {
            connection.busy_timeout(BUSY_TIMEOUT)?;
            let mode: String =
                connection
                    .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
            debug_assert_eq!(mode.to_lowercase(), "wal");
            connection.pragma_update(None, "synchronous", "FULL")?;
            // Deleted and overwritten content is zeroed, not left in free pages: a value
            // rewritten encrypted (a rekey) leaves no clear copy behind.
            connection.pragma_update(None, "secure_delete", "ON")?;
            Ok(())
        };
        // Switching a new file to WAL takes its exclusive lock, and SQLite answers `SQLITE_BUSY`
        // at once, without the busy handler, to the second of two connections doing it at the
        // same moment (two processes opening a new file): try again, as the handler would.
        let start = Instant::now();
        loop {
            match setup() {
                Ok(()) => return Ok(connection),
                Err(rusqlite::Error::SqliteFailure(error, _))
                    if error.code == rusqlite::ErrorCode::DatabaseBusy
                        && start.elapsed() < BUSY_TIMEOUT =>
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(source) => return Err(self.error(source)),
            }
        }
    }

    /// A read-only connection. SQLite reads a WAL file whose `-wal` and `-shm` files exist;
    /// without a `-wal` file (closed cleanly: everything is in the database file) and a
    /// directory where none can be created, only as `immutable` (no locking: nothing can write
    /// to a read-only mount).
    fn connect_read_only(&self) -> Result<Connection, StoreError> {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        // A URI: the characters it gives a meaning escaped.
        let mut uri = format!(
            "file:{}",
            self.path
                .to_string_lossy()
                .replace('%', "%25")
                .replace('?', "%3F")
                .replace('#', "%23")
        );
        uri.push_str("?mode=ro");
        if !Path::new(&wal).exists() {
            uri.push_str("&immutable=1");
        }
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
            | rusqlite::OpenFlags::SQLITE_OPEN_URI
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection =
            Connection::open_with_flags(&uri, flags).map_err(|source| self.error(source))?;
        connection
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|source| self.error(source))?;
        Ok(connection)
    }

    /// What a write or a lock of a store opened read-only fails with.
    fn read_only_error(&self) -> StoreError {
        StoreErrorKind::Io {
            path: self.path.clone(),
            operation: "write",
            source: io::Error::new(
                io::ErrorKind::ReadOnlyFilesystem,
                "opened read-only: the database file or its directory cannot be written",
            ),
        }
        .into()
    }

    fn take(&self) -> Result<Connection, StoreError> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match idle {
            Some(connection) => Ok(connection),
            None => self.connect(),
        }
    }

    fn give_back(&self, connection: Connection) {
        // A pushed connection is whole whatever panicked elsewhere: the poisoned list is usable.
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(connection);
    }

    fn error(&self, source: rusqlite::Error) -> StoreError {
        backend(&format!("sqlite:{}", self.path.display()), source)
    }
}

/// Applies the steps of [`MIGRATIONS`] the file lacks, in one `BEGIN IMMEDIATE` transaction:
/// a second process opening the file at the same time waits (`busy_timeout`), then finds them
/// applied.
fn migrate(connection: &Connection) -> rusqlite::Result<()> {
    connection.execute_batch("BEGIN IMMEDIATE")?;
    let result = (|| {
        let applied: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
        let applied = usize::try_from(applied).unwrap_or(usize::MAX);
        if applied > MIGRATIONS.len() {
            return Err(rusqlite::Error::InvalidParameterName(format!(
                "the database's schema version {applied} is newer than this engine's ({})",
                MIGRATIONS.len()
            )));
        }
        for step in &MIGRATIONS[applied..] {
            connection.execute_batch(step)?;
        }
        connection.pragma_update(None, "user_version", to_i64(MIGRATIONS.len() as u64))?;
        Ok(())
    })();
    match result {
        Ok(()) => connection.execute_batch("COMMIT"),
        Err(error) => {
            // The rollback's own failure would hide the cause; the cause is what matters.
            let _ = connection.execute_batch("ROLLBACK");
            Err(error)
        }
    }
}

/// Checks that a file opened read-only has every step of the schema (it cannot take them).
fn check_schema(connection: &Connection) -> rusqlite::Result<()> {
    let applied: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if usize::try_from(applied).ok() == Some(MIGRATIONS.len()) {
        return Ok(());
    }
    Err(rusqlite::Error::InvalidParameterName(format!(
        "the database is read-only and its schema version is {applied}, where this engine needs {}: \
         open it once where it can be written",
        MIGRATIONS.len()
    )))
}

/// True when `error` says the file or its directory cannot be written: a read-only file system,
/// a permission denied, SQLite's `SQLITE_READONLY` or its `SQLITE_CANTOPEN` (the `-shm` or `-wal`
/// file cannot be created beside the database).
fn is_read_only(error: &StoreError) -> bool {
    let io_read_only = |error: &io::Error| {
        matches!(
            error.kind(),
            io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied
        )
    };
    match error.kind() {
        StoreErrorKind::Io { source, .. } => io_read_only(source),
        StoreErrorKind::Backend { source, .. } => match source.downcast_ref::<rusqlite::Error>() {
            Some(rusqlite::Error::SqliteFailure(failure, _)) => matches!(
                failure.code,
                rusqlite::ErrorCode::ReadOnly
                    | rusqlite::ErrorCode::CannotOpen
                    | rusqlite::ErrorCode::PermissionDenied
            ),
            _ => false,
        },
        _ => false,
    }
}

/// `work` with its database errors turned into [`StoreErrorKind::Backend`] naming `instance`.
fn naming_errors<T, W>(
    instance: &str,
    work: W,
) -> impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + use<T, W>
where
    W: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send,
{
    let instance = instance.to_owned();
    move |connection| work(connection).map_err(|source| backend(&instance, source))
}

/// Creates `dir` (and its parents) owner-only (`0700` on Unix): its lock files are named by
/// instance ids.
fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs_err::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        fs_err::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// `state.db` → `state.db.locks`.
fn locks_dir_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".locks");
    PathBuf::from(name)
}

async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| backend("sqlite", io::Error::other(error.to_string())))?
}

impl InstanceStore for SqliteStore {
    fn load<'a>(&'a self, instance: &'a str) -> BoxFuture<'a, Result<Versioned, StoreError>> {
        Box::pin(async move {
            self.load_or_absent(instance)
                .await?
                .ok_or_else(|| self.unknown(instance))
        })
    }

    fn write<'a>(
        &'a self,
        instance: &'a str,
        state: State,
        expected: u64,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(self.write_checked(instance, state, expected))
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
            let limit = page.limit;
            let rows = self
                .with("list", move |connection| {
                    // Only the filters that are set, so that SQLite can use their indexes.
                    // Without statistics SQLite would walk the primary key to save the sort
                    // of `ORDER BY id`, reading every row: due instances are found by their
                    // expiry index instead (the status index is chosen on its own).
                    let by_expiry = page.expires_before_ms.is_some() || page.expiry_unknown;
                    let index = if page.status.is_some() {
                        ""
                    } else if page.due_before_ms.is_some() {
                        " INDEXED BY instances_next_refresh_at"
                    } else if by_expiry {
                        " INDEXED BY instances_expires_at"
                    } else {
                        ""
                    };
                    let mut sql = format!(
                        "SELECT id, version, expires_at, connector, status, next_refresh_at \
                         FROM instances{index} WHERE 1"
                    );
                    let mut values: Vec<rusqlite::types::Value> = Vec::new();
                    let mut filter = |clause: &str, value: rusqlite::types::Value| {
                        values.push(value);
                        let _ = write!(sql, " AND {clause} ?{}", values.len());
                    };
                    if let Some(after) = page.after {
                        filter("id >", after.into());
                    }
                    if let Some(connector) = page.connector {
                        filter("connector =", connector.into());
                    }
                    if let Some(status) = page.status {
                        filter("status =", status.into());
                    }
                    if let Some(before) = page.expires_before_ms {
                        filter("expires_at <=", to_i64(before).into());
                    }
                    if let Some(before) = page.due_before_ms {
                        filter("next_refresh_at <=", to_i64(before).into());
                    }
                    if page.expiry_unknown {
                        sql.push_str(" AND expires_at IS NULL");
                    }
                    values.push(to_i64(limit as u64).saturating_add(1).into());
                    let _ = write!(sql, " ORDER BY id LIMIT ?{}", values.len());
                    let mut statement = connection.prepare_cached(&sql)?;
                    let rows = statement.query_map(rusqlite::params_from_iter(values), |row| {
                        // A column holding something else than a number (a row written by hand)
                        // lists as unknown: loading that instance reports it, and the others
                        // are listed.
                        let number = |index: usize| -> rusqlite::Result<Option<u64>> {
                            Ok(match row.get_ref(index)? {
                                rusqlite::types::ValueRef::Integer(number) => {
                                    u64::try_from(number).ok()
                                }
                                _ => None,
                            })
                        };
                        Ok(Summary {
                            id: row.get(0)?,
                            version: number(1)?.unwrap_or(0),
                            expires_at_ms: number(2)?,
                            connector: row.get(3)?,
                            status: row.get(4)?,
                            next_refresh_at_ms: number(5)?,
                        })
                    })?;
                    rows.collect::<rusqlite::Result<Vec<_>>>()
                })
                .await?;
            Ok(crate::paginate(rows, limit))
        })
    }

    /// The first entry at or after `from_ms` of the index on `next_refresh_at`: one lookup.
    fn next_due_ms(&self, from_ms: u64) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        Box::pin(async move {
            self.with("next due", move |connection| {
                let mut statement = connection.prepare_cached(
                    "SELECT next_refresh_at FROM instances INDEXED BY instances_next_refresh_at
                     WHERE next_refresh_at >= ?1 ORDER BY next_refresh_at LIMIT 1",
                )?;
                let mut rows = statement.query(params![to_i64(from_ms)])?;
                // Text sorts after every number: a value written by hand is never taken.
                Ok(match rows.next()? {
                    Some(row) => match row.get_ref(0)? {
                        rusqlite::types::ValueRef::Integer(at) => u64::try_from(at).ok(),
                        _ => None,
                    },
                    None => None,
                })
            })
            .await
        })
    }

    /// One statement on the writer connection: an `UPDATE ... WHERE id IN (SELECT ... LIMIT)
    /// RETURNING`, which SQLite runs under its write lock, so no other claim (of any process)
    /// sees the rows between the choice and the lease.
    fn claim_due(
        &self,
        now_ms: u64,
        limit: usize,
        lease: Duration,
    ) -> BoxFuture<'_, Result<Vec<Claim>, StoreError>> {
        Box::pin(async move {
            let token = lease_token();
            let until_ms = now_ms.saturating_add(millis(lease));
            let leased = token.clone();
            let rows = self
                .writing("claim", move |connection| {
                    let mut statement = connection.prepare_cached(
                        "UPDATE instances SET lease_token = ?1, lease_until = ?2
                         WHERE id IN (
                           SELECT id FROM instances INDEXED BY instances_next_refresh_at
                           WHERE next_refresh_at <= ?3
                             AND (lease_until IS NULL OR lease_until <= ?3)
                           ORDER BY next_refresh_at, id LIMIT ?4)
                         RETURNING id, version, next_refresh_at",
                    )?;
                    let rows = statement.query_map(
                        params![
                            leased,
                            to_i64(until_ms),
                            to_i64(now_ms),
                            to_i64(limit as u64)
                        ],
                        |row| {
                            Ok((
                                row.get::<_, i64>(2)?,
                                row.get::<_, String>(0)?,
                                row.get::<_, i64>(1)?,
                            ))
                        },
                    )?;
                    rows.collect::<rusqlite::Result<Vec<_>>>()
                })
                .await?;
            Ok(claims(rows, &token, until_ms))
        })
    }

    fn renew<'a>(
        &'a self,
        claim: &'a Claim,
        now_ms: u64,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Claim, StoreError>> {
        Box::pin(async move {
            let until_ms = now_ms.saturating_add(millis(lease));
            let (id, token) = (claim.id.clone(), claim.token.clone());
            let renewed = self
                .writing(&claim.id, move |connection| {
                    connection.execute(
                        "UPDATE instances SET lease_until = ?1
                         WHERE id = ?2 AND lease_token = ?3 AND lease_until > ?4",
                        params![to_i64(until_ms), id, token, to_i64(now_ms)],
                    )
                })
                .await?;
            if renewed == 0 {
                return Err(StoreErrorKind::LeaseLost {
                    instance: claim.id.clone(),
                }
                .into());
            }
            Ok(Claim {
                until_ms,
                ..claim.clone()
            })
        })
    }

    fn release<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let (id, token) = (claim.id.clone(), claim.token.clone());
            self.writing(&claim.id, move |connection| {
                connection.execute(
                    "UPDATE instances SET lease_token = NULL, lease_until = NULL
                     WHERE id = ?1 AND lease_token = ?2",
                    params![id, token],
                )
            })
            .await
            .map(drop)
        })
    }

    fn delete<'a>(
        &'a self,
        instance: &'a str,
        expected: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let id = instance.to_owned();
            let found = self
                .writing(instance, move |connection| {
                    let transaction =
                        connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    let found = transaction
                        .query_row(
                            "SELECT version FROM instances WHERE id = ?1",
                            [&id],
                            |row| row.get::<_, i64>(0),
                        )
                        .optional()?;
                    if found == Some(to_i64(expected)) {
                        transaction.execute("DELETE FROM instances WHERE id = ?1", [&id])?;
                    }
                    transaction.commit()?;
                    Ok(found)
                })
                .await?;
            match found {
                None => Err(self.unknown(instance)),
                Some(found) if found == to_i64(expected) => Ok(()),
                Some(found) => Err(StoreErrorKind::Conflict {
                    instance: instance.to_owned(),
                    expected,
                    found: u64::try_from(found).unwrap_or(0),
                }
                .into()),
            }
        })
    }

    fn append_history<'a>(
        &'a self,
        instance: &'a str,
        entry: serde_json::Value,
        keep: usize,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let id = instance.to_owned();
            self.writing(instance, move |connection| {
                let transaction =
                    connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                transaction.execute(
                    "INSERT INTO history (instance, entry) VALUES (?1, ?2)",
                    params![id, entry.to_string()],
                )?;
                transaction.execute(
                    "DELETE FROM history WHERE instance = ?1 AND seq NOT IN
                       (SELECT seq FROM history WHERE instance = ?1 ORDER BY seq DESC LIMIT ?2)",
                    params![id, to_i64(keep as u64)],
                )?;
                transaction.commit()
            })
            .await
        })
    }

    fn history<'a>(
        &'a self,
        instance: &'a str,
    ) -> BoxFuture<'a, Result<Vec<serde_json::Value>, StoreError>> {
        Box::pin(async move {
            let id = instance.to_owned();
            let texts = self
                .with(instance, move |connection| {
                    let mut statement = connection.prepare_cached(
                        "SELECT entry FROM history WHERE instance = ?1 ORDER BY seq",
                    )?;
                    let rows = statement.query_map([&id], |row| row.get::<_, String>(0))?;
                    rows.collect::<rusqlite::Result<Vec<_>>>()
                })
                .await?;
            Ok(texts
                .iter()
                .filter_map(|text| serde_json::from_str(text).ok())
                .collect())
        })
    }

    fn identity(&self, instance: &str) -> String {
        format!("sqlite:{}#{instance}", self.inner.path.display())
    }

    fn get_record<'a>(
        &'a self,
        namespace: &'a str,
        id: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Record>, StoreError>> {
        Box::pin(async move {
            valid_record(namespace, id)?;
            let (space, key) = (namespace.to_owned(), id.to_owned());
            let row = self
                .with(id, move |connection| {
                    connection
                        .query_row(
                            "SELECT version, expires_at, value FROM records
                             WHERE namespace = ?1 AND id = ?2
                               AND (expires_at IS NULL OR expires_at > ?3)",
                            params![space, key, to_i64(now_ms)],
                            |row| {
                                Ok((
                                    row.get::<_, i64>(0)?,
                                    row.get::<_, Option<i64>>(1)?,
                                    row.get::<_, String>(2)?,
                                ))
                            },
                        )
                        .optional()
                })
                .await?;
            row.map(|row| crate::rows::record(id.to_owned(), row))
                .transpose()
        })
    }

    fn put_record<'a>(
        &'a self,
        namespace: &'a str,
        id: &'a str,
        value: serde_json::Value,
        expires_at_ms: Option<u64>,
        expected: u64,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            valid_record(namespace, id)?;
            let (space, key) = (namespace.to_owned(), id.to_owned());
            let (now, expires) = (to_i64(now_ms), expires_at_ms.map(to_i64));
            let text = value.to_string();
            let written = self
                .writing(id, move |connection| {
                    let transaction =
                        connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    let found = transaction
                        .query_row(
                            "SELECT version FROM records WHERE namespace = ?1 AND id = ?2
                               AND (expires_at IS NULL OR expires_at > ?3)",
                            params![space, key, now],
                            |row| row.get::<_, i64>(0),
                        )
                        .optional()?
                        .unwrap_or(0);
                    if found != to_i64(expected) {
                        return Ok(Err(found));
                    }
                    transaction.execute(
                        "INSERT INTO records (namespace, id, version, expires_at, value)
                         VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (namespace, id) DO UPDATE SET version = excluded.version,
                           expires_at = excluded.expires_at, value = excluded.value",
                        params![space, key, found + 1, expires, text],
                    )?;
                    transaction.commit()?;
                    Ok(Ok(found + 1))
                })
                .await?;
            written
                .map(|version| u64::try_from(version).unwrap_or(0))
                .map_err(|found| {
                    record_conflict(namespace, id, expected, u64::try_from(found).unwrap_or(0))
                })
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
            valid_id(namespace)?;
            let space = namespace.to_owned();
            let after = after.unwrap_or_default().to_owned();
            let limit = to_i64(limit.min(MAX_RECORDS_PAGE) as u64);
            let rows = self
                .with(namespace, move |connection| {
                    let mut statement = connection.prepare_cached(
                        "SELECT id, version, expires_at, value FROM records
                         WHERE namespace = ?1 AND id > ?2
                           AND (expires_at IS NULL OR expires_at > ?3)
                         ORDER BY id LIMIT ?4",
                    )?;
                    let rows = statement.query_map(
                        params![space, after, to_i64(now_ms), limit],
                        |row| {
                            Ok((
                                row.get::<_, String>(0)?,
                                (
                                    row.get::<_, i64>(1)?,
                                    row.get::<_, Option<i64>>(2)?,
                                    row.get::<_, String>(3)?,
                                ),
                            ))
                        },
                    )?;
                    rows.collect::<rusqlite::Result<Vec<_>>>()
                })
                .await?;
            rows.into_iter()
                .map(|(id, row)| crate::rows::record(id, row))
                .collect()
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
            let (space, key) = (namespace.to_owned(), id.to_owned());
            let expected = expected.map(to_i64);
            let deleted = self
                .writing(id, move |connection| {
                    connection.execute(
                        "DELETE FROM records WHERE namespace = ?1 AND id = ?2
                           AND (?3 IS NULL OR version = ?3)",
                        params![space, key, expected],
                    )
                })
                .await?;
            Ok(deleted == 1)
        })
    }

    /// One statement: a `DELETE` of the rows a bounded `SELECT` on the expiry index finds.
    fn purge_expired_records<'a>(
        &'a self,
        namespace: Option<&'a str>,
        now_ms: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(async move {
            if let Some(namespace) = namespace {
                valid_id(namespace)?;
            }
            let space = namespace.map(str::to_owned);
            let limit = to_i64(limit as u64);
            let removed = self
                .writing("purge", move |connection| {
                    connection.execute(
                        "DELETE FROM records WHERE rowid IN (
                           SELECT rowid FROM records
                           WHERE expires_at <= ?1 AND (?2 IS NULL OR namespace = ?2)
                           LIMIT ?3)",
                        params![to_i64(now_ms), space, limit],
                    )
                })
                .await?;
            Ok(removed)
        })
    }

    fn take_notices(&self) -> Vec<String> {
        std::mem::take(
            &mut *self
                .inner
                .notices
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Copies every page of the write-ahead log into the database (where `secure_delete` zeroed
    /// the old values) and truncates the log, which still held the pages as they were.
    fn scrub(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.writing("", |connection| {
                connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            })
            .await
        })
    }
}

/// The guard of [`SqliteStore`]: the open, locked `PATH.locks/<id>.lock`. Closing it releases
/// the lock.
struct SqliteLock {
    store: SqliteStore,
    instance: String,
    _file: fs_err::File,
}

impl InstanceLock for SqliteLock {
    fn load(&mut self) -> BoxFuture<'_, Result<Versioned, StoreError>> {
        Box::pin(async move {
            Ok(self
                .store
                .load_or_absent(&self.instance)
                .await?
                .unwrap_or_default())
        })
    }

    fn write(&mut self, state: State, expected: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(async move {
            self.store
                .write_checked(&self.instance, state, expected)
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 19: a row whose version is not a number (written by hand) does not fail the
    /// listing of the whole store: it lists with version 0, and loading it names it.
    #[tokio::test]
    async fn one_bad_row_does_not_fail_the_listing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("state.db"))
            .await
            .unwrap();
        for id in ["a", "b", "c"] {
            store.write(id, State::new(), 0).await.unwrap();
        }
        let connection = Connection::open(dir.path().join("state.db")).unwrap();
        connection
            .execute("UPDATE instances SET version = 'x' WHERE id = 'b'", [])
            .unwrap();
        let listing = store.list(Page::default()).await.unwrap();
        let listed: Vec<(&str, u64)> = listing
            .instances
            .iter()
            .map(|summary| (summary.id.as_str(), summary.version))
            .collect();
        assert_eq!(listed, [("a", 1), ("b", 0), ("c", 1)]);
        let error = store.load("b").await.unwrap_err();
        assert!(error.to_string().contains("`b`"), "{error}");
    }

    /// A file made before schedules (three schema steps) keeps its rows' expiry and status,
    /// and its rows are due at once (but one that needs re-authentication): the runtime's first
    /// look computes their schedules.
    #[tokio::test]
    async fn rows_written_before_schedules_are_due_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let connection = Connection::open(&path).unwrap();
        for step in &MIGRATIONS[..3] {
            connection.execute_batch(step).unwrap();
        }
        connection.pragma_update(None, "user_version", 3).unwrap();
        connection
            .execute_batch(
                "INSERT INTO instances (id, version, connector, expires_at, state, updated_at, status)
                 VALUES ('old', 4, 'demo', 1700000060000, '{}', 0, NULL),
                        ('stuck', 2, 'demo', NULL, '{\"engine.status\": \"needs-reauth\"}', 0,
                         'needs-reauth');",
            )
            .unwrap();
        drop(connection);
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(
            store.schema_version().await.unwrap() as usize,
            MIGRATIONS.len()
        );
        let listing = store.list(Page::default()).await.unwrap();
        let listed: Vec<_> = listing
            .instances
            .iter()
            .map(|summary| {
                (
                    summary.id.as_str(),
                    summary.expires_at_ms,
                    summary.next_refresh_at_ms,
                    summary.status.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            listed,
            [
                ("old", Some(1_700_000_060_000), Some(0), None),
                ("stuck", None, None, Some("needs-reauth"))
            ]
        );
    }
}

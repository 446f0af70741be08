use std::str::FromStr as _;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use engine_store::{
    BoxFuture, Claim, InstanceLock, InstanceStore, Listing, MAX_RECORDS_PAGE, Page, Record,
    Schedule, State, StoreError, StoreErrorKind, Summary, Versioned, connector_of, lease_token,
    record_conflict, valid_record,
};
use sqlx::Postgres;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{Row as _, SqlSafeStr as _};

use crate::{backend, claims, epoch_ms, millis, to_i64};

/// How long a lock survives a holder that stopped talking to the server (paused, partitioned)
/// unless [`PostgresStore::lock_lifetime`] says otherwise.
pub const DEFAULT_LOCK_LIFETIME: Duration = Duration::from_mins(1);

/// The connections of the pool used for reads and writes.
const POOL_SIZE: u32 = 16;
/// The connections of the pool that holds locks: at most this many instances locked at once by
/// one process (`engine refresh --jobs` above it waits for a connection).
const LOCK_POOL_SIZE: u32 = 64;

/// The connection budget of one process, from the store URL's `max_connections` (the pool for
/// reads and writes, default [`POOL_SIZE`]) and `max_lock_connections` (the pool that holds
/// locks, default [`LOCK_POOL_SIZE`]); returns the URL without them, for the driver.
fn budget_of(url: &str) -> Result<(String, u32, u32), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), POOL_SIZE, LOCK_POOL_SIZE));
    };
    let (mut pool, mut locks) = (POOL_SIZE, LOCK_POOL_SIZE);
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            "max_connections" => &mut pool,
            "max_lock_connections" => &mut locks,
            _ => {
                kept.push(pair);
                continue;
            }
        };
        *slot = value
            .parse()
            .ok()
            .filter(|count| (1..=1000).contains(count))
            .ok_or_else(|| {
                format!("`{key}` in the store URL must be a number from 1 to 1000, not `{value}`")
            })?;
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, pool, locks))
}

/// The schema migrations shipped in the binary (`migrations/postgres/NNNN_description.sql`),
/// applied by [`PostgresStore::connect`], as `sqlx::migrate!` would embed them (same versions,
/// descriptions and checksums) without its proc macro, which would build sqlx and its TLS stack a
/// second time for the host (about a minute of a cold build). A test checks this list against the
/// directory.
static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| migrator(MIGRATIONS));

/// A migrator applying `migrations`, versions, descriptions and SQL.
fn migrator(migrations: &[(i64, &'static str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        migrations
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// Version, description and SQL of each migration, oldest first.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "instances",
        include_str!("../migrations/postgres/0001_instances.sql"),
    ),
    (
        2,
        "history",
        include_str!("../migrations/postgres/0002_history.sql"),
    ),
    (
        3,
        "status",
        include_str!("../migrations/postgres/0003_status.sql"),
    ),
    (
        4,
        "schedule",
        include_str!("../migrations/postgres/0004_schedule.sql"),
    ),
    (
        5,
        "records",
        include_str!("../migrations/postgres/0005_records.sql"),
    ),
];

/// An [`InstanceStore`] in PostgreSQL, shared by engine processes on any number of machines.
///
/// # Schema
///
/// Versioned migrations shipped in the binary (`migrations/postgres/`, embedded like `sqlx::migrate!`) are
/// applied by [`PostgresStore::connect`]. The migrator holds a PostgreSQL advisory lock for the
/// whole run, so when two processes start at once one applies them and the other then finds
/// them applied. Tables live in the connection's `search_path` (add
/// `?options=-c%20search_path%3Dengine` to the URL for a schema of their own).
///
/// # Versions
///
/// A write is one statement: `UPDATE ... SET version = version + 1 WHERE id = $1 AND version =
/// $2` (an `INSERT ... ON CONFLICT DO NOTHING` for a new instance). The whole state, a rotated
/// refresh token with its access token, is one column of one row, committed together or not
/// at all.
///
/// # Locking: an advisory lock with a lifetime, fenced by the version
///
/// [`InstanceStore::lock`] takes a connection from a pool of its own (not the pool of reads and
/// writes, so that tasks holding locks can never starve the pool their own writes need), begins
/// a transaction, and takes `pg_advisory_xact_lock(hashtextextended(id, 0))`, waiting at most the
/// lock timeout (`lock_timeout`). Reads and writes under the lock go through the other pool; the
/// lock's connection only holds the lock. It is released when the guard is dropped (the
/// transaction is rolled back as the connection goes back to its pool, which sqlx does before
/// reusing it), and by the server when the holder dies (its socket closes). An earlier version
/// opened a connection per lock: a server process forked per refresh, which capped refreshes at
/// 55 to 77 a second on this project's 2-core machine.
///
/// A holder that is alive but silent (a paused process, a partitioned machine) would keep the
/// lock forever. The transaction sets `idle_in_transaction_session_timeout` to the lock's
/// lifetime ([`DEFAULT_LOCK_LIFETIME`]): past it the server ends the session and the lock passes
/// on. When the paused holder resumes it still believes it holds the lock, which is why every
/// write is a compare-and-swap on the version: its write names the version it read, finds a
/// newer one, fails with [`StoreErrorKind::Conflict`], and the engine re-reads the newer token
/// instead of overwriting it.
///
/// A row lock (`SELECT ... FOR UPDATE`) would also work, but only for rows that exist, and it
/// would hold a row lock that blocks plain writers for the duration of a vendor call; the
/// advisory lock excludes only other lockers.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// The connections that hold advisory locks, opened on demand.
    locks: PgPool,
    lock_lifetime: Duration,
    display: Arc<str>,
    /// How this store connects, for [`PostgresStore::explain`].
    options: PgConnectOptions,
    /// The connection budget: the pool's size, the lock pool's.
    budget: (u32, u32),
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:port/database`) and applies the migrations.
    ///
    /// Fails with [`StoreErrorKind::Backend`] when the URL is invalid, the server cannot be
    /// reached, or a migration fails.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, None).await
    }

    /// Connects like [`PostgresStore::connect`], with `search_path` set to `schema`, which must
    /// exist: the tables and the migrations' bookkeeping live in it.
    pub async fn connect_in_schema(url: &str, schema: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, Some(schema)).await
    }

    async fn connect_with(url: &str, schema: Option<&str>) -> Result<Self, StoreError> {
        let display: Arc<str> = Arc::from(crate::display_url(url));
        let error = |source: sqlx::Error| match source {
            // The server's own words, once: sqlx's text repeats them with the server's source
            // line (`database "x" does not exist at line 948`).
            sqlx::Error::Database(database) => backend(
                &display,
                std::io::Error::other(format!("the server says: {}", database.message())),
            ),
            source => backend(&display, source),
        };
        let (url, pool_size, lock_pool_size) = budget_of(url).map_err(|message| {
            backend(
                &display,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, message),
            )
        })?;
        let mut options = PgConnectOptions::from_str(&url).map_err(error)?;
        if let Some(schema) = schema {
            options = options.options([("search_path", schema)]);
        }
        let pool = match PgPoolOptions::new()
            .max_connections(pool_size)
            .connect_with(options.clone())
            .await
        {
            Ok(pool) => pool,
            Err(source @ sqlx::Error::PoolTimedOut) => {
                let budget = (pool_size, lock_pool_size);
                return Err(explain(&options, budget, &display, source).await);
            }
            Err(source) => return Err(error(source)),
        };
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|source| backend(&display, source))?;
        let locks = PgPoolOptions::new()
            .max_connections(lock_pool_size)
            .min_connections(0)
            .connect_lazy_with(options.clone());
        Ok(Self {
            pool,
            locks,
            lock_lifetime: DEFAULT_LOCK_LIFETIME,
            display,
            options,
            budget: (pool_size, lock_pool_size),
        })
    }

    /// A connection of the pool for reads and writes; when none came within the pool's wait,
    /// the error says why ([`explain`]).
    async fn connection(&self, instance: &str) -> Result<PoolConnection<Postgres>, StoreError> {
        match self.pool.acquire().await {
            Ok(connection) => Ok(connection),
            Err(source) => Err(explain(&self.options, self.budget, instance, source).await),
        }
    }

    /// Sets how long a lock outlives a holder that stopped talking to the server (see the type's
    /// documentation). A refresh that takes longer than this may lose its lock; its write is
    /// then fenced by the version.
    #[must_use]
    pub fn lock_lifetime(mut self, lifetime: Duration) -> Self {
        self.lock_lifetime = lifetime;
        self
    }

    /// Returns the number of migrations applied to the database.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut *self.connection(&self.display).await?)
            .await
            .map_err(|source| backend(&self.display, source))
    }

    /// Applies the migrations again: a no-op when they are all applied.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|source| backend(&self.display, source))
    }

    fn unknown(&self, instance: &str) -> StoreError {
        StoreErrorKind::UnknownInstance {
            instance: instance.to_owned(),
            store: self.display.to_string(),
        }
        .into()
    }

    async fn load_or_absent(&self, instance: &str) -> Result<Option<Versioned>, StoreError> {
        let row = sqlx::query("SELECT version, state FROM instances WHERE id = $1")
            .bind(instance)
            .fetch_optional(&mut *self.connection(instance).await?)
            .await
            .map_err(|source| backend(instance, source))?;
        let Some(row) = row else { return Ok(None) };
        let version: i64 = row.try_get(0).map_err(|source| backend(instance, source))?;
        let text: String = row.try_get(1).map_err(|source| backend(instance, source))?;
        crate::decode(instance, version, &text).map(Some)
    }

    async fn version_of(&self, instance: &str) -> Result<Option<i64>, StoreError> {
        sqlx::query_scalar("SELECT version FROM instances WHERE id = $1")
            .bind(instance)
            .fetch_optional(&mut *self.connection(instance).await?)
            .await
            .map_err(|source| backend(instance, source))
    }

    async fn write_checked(
        &self,
        instance: &str,
        state: State,
        expected: u64,
    ) -> Result<u64, StoreError> {
        crate::valid_id(instance)?;
        let text = serde_json::Value::Object(state.clone()).to_string();
        let connector = connector_of(&state);
        let schedule = Schedule::read(&state);
        let expires_at = schedule.expires_at_ms.map(to_i64);
        let status = schedule.mark();
        let next_refresh_at = schedule.next_refresh_at_ms.map(to_i64);
        let now = to_i64(epoch_ms());
        let written: Option<i64> = if expected == 0 {
            sqlx::query_scalar(
                "INSERT INTO instances
                   (id, version, connector, expires_at, state, updated_at, status, next_refresh_at)
                 VALUES ($1, 1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING RETURNING version",
            )
            .bind(instance)
            .bind(connector)
            .bind(expires_at)
            .bind(&text)
            .bind(now)
            .bind(status)
            .bind(next_refresh_at)
            .fetch_optional(&mut *self.connection(instance).await?)
            .await
        } else {
            sqlx::query_scalar(
                "UPDATE instances SET version = version + 1, connector = $3, expires_at = $4,
                   state = $5, updated_at = $6, status = $7, next_refresh_at = $8
                 WHERE id = $1 AND version = $2 RETURNING version",
            )
            .bind(instance)
            .bind(to_i64(expected))
            .bind(connector)
            .bind(expires_at)
            .bind(&text)
            .bind(now)
            .bind(status)
            .bind(next_refresh_at)
            .fetch_optional(&mut *self.connection(instance).await?)
            .await
        }
        .map_err(|source| backend(instance, source))?;
        match written {
            Some(version) => Ok(u64::try_from(version).unwrap_or(0)),
            None => Err(StoreErrorKind::Conflict {
                instance: instance.to_owned(),
                expected,
                found: self
                    .version_of(instance)
                    .await?
                    .map_or(0, |found| u64::try_from(found).unwrap_or(0)),
            }
            .into()),
        }
    }

    async fn acquire(
        &self,
        instance: &str,
        timeout: Option<Duration>,
    ) -> Result<PostgresLock, StoreError> {
        crate::valid_id(instance)?;
        let error = |source: sqlx::Error| backend(instance, source);
        let mut connection = match self.locks.begin().await {
            Ok(connection) => connection,
            Err(source) => return Err(explain(&self.options, self.budget, instance, source).await),
        };
        sqlx::query(
            "SELECT set_config('idle_in_transaction_session_timeout', $1, true),
                    set_config('lock_timeout', $2, true)",
        )
        .bind(millis(self.lock_lifetime).max(1).to_string())
        .bind(
            timeout
                .map_or(0, |timeout| millis(timeout).max(1))
                .to_string(),
        )
        .execute(&mut *connection)
        .await
        .map_err(error)?;
        let timed_out = || {
            StoreError::from(StoreErrorKind::LockTimeout {
                path: format!("{}#{instance}", self.display).into(),
                waited: timeout.unwrap_or_default(),
            })
        };
        if timeout == Some(Duration::ZERO) {
            let taken: bool =
                sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))")
                    .bind(instance)
                    .fetch_one(&mut *connection)
                    .await
                    .map_err(error)?;
            if !taken {
                return Err(timed_out());
            }
        } else {
            let taken = sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(instance)
                .execute(&mut *connection)
                .await;
            match taken {
                Ok(_) => {}
                // 55P03 lock_not_available: `lock_timeout` passed.
                Err(sqlx::Error::Database(database))
                    if database.code().as_deref() == Some("55P03") =>
                {
                    return Err(timed_out());
                }
                Err(source) => return Err(error(source)),
            }
        }
        Ok(PostgresLock {
            store: self.clone(),
            instance: instance.to_owned(),
            _connection: connection,
        })
    }
}

/// `source` as the error of `instance`. A pool that found no connection within its wait
/// (sqlx retries a server's `too many connections` until then, and says only that it timed
/// out) is explained by one connection of its own: when the server refuses it too, the error
/// gives the server's words and this process's budget, and how to change it.
async fn explain(
    options: &PgConnectOptions,
    (pool, locks): (u32, u32),
    instance: &str,
    source: sqlx::Error,
) -> StoreError {
    if !matches!(source, sqlx::Error::PoolTimedOut) {
        return backend(instance, source);
    }
    let probe = tokio::time::timeout(
        Duration::from_secs(10),
        <PgConnection as sqlx::Connection>::connect_with(options),
    )
    .await;
    let refused = match probe {
        Ok(Err(sqlx::Error::Database(database)))
            // Class 53, insufficient resources: 53300 too_many_connections.
            if database.code().is_some_and(|code| code.starts_with("53")) =>
        {
            database.message().to_owned()
        }
        Ok(Ok(connection)) => {
            let _ = <PgConnection as sqlx::Connection>::close(connection).await;
            return backend(instance, source);
        }
        _ => return backend(instance, source),
    };
    backend(
        instance,
        std::io::Error::other(format!(
            "no connection to PostgreSQL: the server says `{refused}`. This process opens up to \
             {pool} connections for reads and writes and {locks} for locks: lower \
             `max_connections` and `max_lock_connections` in the store URL (docs/stores.md, \
             \"The connection budget\"), keeping the sum over every process under the server's \
             limit, or raise that limit"
        )),
    )
}

impl InstanceStore for PostgresStore {
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
            // Only the filters that are set, so that the planner can use their indexes.
            let mut builder = sqlx::QueryBuilder::<sqlx::Postgres>::new(
                "SELECT id, version, expires_at, connector, status, next_refresh_at
                 FROM instances WHERE true",
            );
            if let Some(after) = page.after {
                builder.push(" AND id > ").push_bind(after);
            }
            if let Some(connector) = page.connector {
                builder.push(" AND connector = ").push_bind(connector);
            }
            if let Some(status) = page.status {
                builder.push(" AND status = ").push_bind(status);
            }
            if let Some(before) = page.expires_before_ms {
                builder
                    .push(" AND expires_at <= ")
                    .push_bind(to_i64(before));
            }
            if page.expiry_unknown {
                builder.push(" AND expires_at IS NULL");
            }
            if let Some(before) = page.due_before_ms {
                builder
                    .push(" AND next_refresh_at <= ")
                    .push_bind(to_i64(before));
            }
            builder
                .push(" ORDER BY id LIMIT ")
                .push_bind(to_i64(page.limit as u64).saturating_add(1));
            let rows = builder
                .build()
                .fetch_all(&mut *self.connection("list").await?)
                .await
                .map_err(|source| backend("list", source))?;
            let summaries = rows
                .iter()
                .map(|row| {
                    Ok(Summary {
                        id: row.try_get(0)?,
                        version: u64::try_from(row.try_get::<i64, _>(1)?).unwrap_or(0),
                        expires_at_ms: row
                            .try_get::<Option<i64>, _>(2)?
                            .and_then(|at| u64::try_from(at).ok()),
                        connector: row.try_get(3)?,
                        status: row.try_get(4)?,
                        next_refresh_at_ms: row
                            .try_get::<Option<i64>, _>(5)?
                            .and_then(|at| u64::try_from(at).ok()),
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(|source| backend("list", source))?;
            Ok(crate::paginate(summaries, page.limit))
        })
    }

    /// The first entry at or after `from_ms` of the index on `next_refresh_at`: one lookup.
    fn next_due_ms(&self, from_ms: u64) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        Box::pin(async move {
            let at: Option<i64> = sqlx::query_scalar(
                "SELECT next_refresh_at FROM instances
                 WHERE next_refresh_at >= $1 ORDER BY next_refresh_at LIMIT 1",
            )
            .bind(to_i64(from_ms))
            .fetch_optional(&mut *self.connection("next due").await?)
            .await
            .map_err(|source| backend("next due", source))?;
            Ok(at.and_then(|at| u64::try_from(at).ok()))
        })
    }

    /// One statement, its own short transaction: the due rows are chosen `FOR UPDATE SKIP
    /// LOCKED` (rows another claim is taking this moment are skipped, not waited for) and leased
    /// in the same `UPDATE`. No connection or transaction stays open after it.
    fn claim_due(
        &self,
        now_ms: u64,
        limit: usize,
        lease: Duration,
    ) -> BoxFuture<'_, Result<Vec<Claim>, StoreError>> {
        Box::pin(async move {
            let token = lease_token();
            let until_ms = now_ms.saturating_add(millis(lease));
            let rows: Vec<(String, i64, i64)> = sqlx::query_as(
                "WITH due AS (
                   SELECT id FROM instances
                   WHERE next_refresh_at <= $1 AND (lease_until IS NULL OR lease_until <= $1)
                   ORDER BY next_refresh_at, id LIMIT $2
                   FOR UPDATE SKIP LOCKED)
                 UPDATE instances SET lease_token = $3, lease_until = $4
                 FROM due WHERE instances.id = due.id
                 RETURNING instances.id, instances.version, instances.next_refresh_at",
            )
            .bind(to_i64(now_ms))
            .bind(to_i64(limit as u64))
            .bind(&token)
            .bind(to_i64(until_ms))
            .fetch_all(&mut *self.connection("claim").await?)
            .await
            .map_err(|source| backend("claim", source))?;
            let rows = rows
                .into_iter()
                .map(|(id, version, at)| (at, id, version))
                .collect();
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
            let renewed = sqlx::query(
                "UPDATE instances SET lease_until = $1
                 WHERE id = $2 AND lease_token = $3 AND lease_until > $4",
            )
            .bind(to_i64(until_ms))
            .bind(&claim.id)
            .bind(&claim.token)
            .bind(to_i64(now_ms))
            .execute(&mut *self.connection(&claim.id).await?)
            .await
            .map_err(|source| backend(&claim.id, source))?;
            if renewed.rows_affected() == 0 {
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
            sqlx::query(
                "UPDATE instances SET lease_token = NULL, lease_until = NULL
                 WHERE id = $1 AND lease_token = $2",
            )
            .bind(&claim.id)
            .bind(&claim.token)
            .execute(&mut *self.connection(&claim.id).await?)
            .await
            .map_err(|source| backend(&claim.id, source))?;
            Ok(())
        })
    }

    fn delete<'a>(
        &'a self,
        instance: &'a str,
        expected: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let deleted = sqlx::query("DELETE FROM instances WHERE id = $1 AND version = $2")
                .bind(instance)
                .bind(to_i64(expected))
                .execute(&mut *self.connection(instance).await?)
                .await
                .map_err(|source| backend(instance, source))?;
            if deleted.rows_affected() == 1 {
                return Ok(());
            }
            match self.version_of(instance).await? {
                None => Err(self.unknown(instance)),
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
            let error = |source| backend(instance, source);
            let mut transaction = match self.pool.begin().await {
                Ok(transaction) => transaction,
                Err(source) => {
                    return Err(explain(&self.options, self.budget, instance, source).await);
                }
            };
            sqlx::query("INSERT INTO history (instance, entry) VALUES ($1, $2)")
                .bind(instance)
                .bind(entry.to_string())
                .execute(&mut *transaction)
                .await
                .map_err(error)?;
            sqlx::query(
                "DELETE FROM history WHERE instance = $1 AND seq NOT IN
                   (SELECT seq FROM history WHERE instance = $1 ORDER BY seq DESC LIMIT $2)",
            )
            .bind(instance)
            .bind(to_i64(keep as u64))
            .execute(&mut *transaction)
            .await
            .map_err(error)?;
            transaction.commit().await.map_err(error)
        })
    }

    fn history<'a>(
        &'a self,
        instance: &'a str,
    ) -> BoxFuture<'a, Result<Vec<serde_json::Value>, StoreError>> {
        Box::pin(async move {
            let texts: Vec<String> =
                sqlx::query_scalar("SELECT entry FROM history WHERE instance = $1 ORDER BY seq")
                    .bind(instance)
                    .fetch_all(&mut *self.connection(instance).await?)
                    .await
                    .map_err(|source| backend(instance, source))?;
            Ok(texts
                .iter()
                .filter_map(|text| serde_json::from_str(text).ok())
                .collect())
        })
    }

    fn identity(&self, instance: &str) -> String {
        format!("{}#{instance}", self.display)
    }

    fn get_record<'a>(
        &'a self,
        namespace: &'a str,
        id: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Record>, StoreError>> {
        Box::pin(async move {
            valid_record(namespace, id)?;
            let row: Option<(i64, Option<i64>, String)> = sqlx::query_as(
                "SELECT version, expires_at, value FROM records
                 WHERE namespace = $1 AND id = $2 AND (expires_at IS NULL OR expires_at > $3)",
            )
            .bind(namespace)
            .bind(id)
            .bind(to_i64(now_ms))
            .fetch_optional(&mut *self.connection(id).await?)
            .await
            .map_err(|source| backend(id, source))?;
            row.map(|row| crate::rows::record(id.to_owned(), row))
                .transpose()
        })
    }

    /// One statement, so that two writers expecting the same version never both win: an
    /// `INSERT ... ON CONFLICT DO UPDATE ... WHERE` expired for version 0, an `UPDATE ...
    /// WHERE version` otherwise.
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
            let sql = if expected == 0 {
                "INSERT INTO records (namespace, id, version, expires_at, value)
                 VALUES ($1, $2, 1, $3, $4)
                 ON CONFLICT (namespace, id) DO UPDATE SET version = 1,
                   expires_at = EXCLUDED.expires_at, value = EXCLUDED.value
                 WHERE records.expires_at IS NOT NULL AND records.expires_at <= $5
                   AND $6 = 0
                 RETURNING version"
            } else {
                "UPDATE records SET version = version + 1, expires_at = $3, value = $4
                 WHERE namespace = $1 AND id = $2 AND version = $6
                   AND (expires_at IS NULL OR expires_at > $5)
                 RETURNING version"
            };
            let written: Option<i64> = sqlx::query_scalar(sql)
                .bind(namespace)
                .bind(id)
                .bind(expires_at_ms.map(to_i64))
                .bind(value.to_string())
                .bind(to_i64(now_ms))
                .bind(to_i64(expected))
                .fetch_optional(&mut *self.connection(id).await?)
                .await
                .map_err(|source| backend(id, source))?;
            if let Some(version) = written {
                return Ok(u64::try_from(version).unwrap_or(0));
            }
            let found = self
                .get_record(namespace, id, now_ms)
                .await?
                .map_or(0, |record| record.version);
            Err(record_conflict(namespace, id, expected, found))
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
            let rows: Vec<(String, i64, Option<i64>, String)> = sqlx::query_as(
                "SELECT id, version, expires_at, value FROM records
                 WHERE namespace = $1 AND id > $2 AND (expires_at IS NULL OR expires_at > $3)
                 ORDER BY id LIMIT $4",
            )
            .bind(namespace)
            .bind(after.unwrap_or_default())
            .bind(to_i64(now_ms))
            .bind(to_i64(limit.min(MAX_RECORDS_PAGE) as u64))
            .fetch_all(&mut *self.connection(namespace).await?)
            .await
            .map_err(|source| backend(namespace, source))?;
            rows.into_iter()
                .map(|(id, version, expires_at, value)| {
                    crate::rows::record(id, (version, expires_at, value))
                })
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
            let deleted = sqlx::query(
                "DELETE FROM records WHERE namespace = $1 AND id = $2
                   AND ($3::BIGINT IS NULL OR version = $3)",
            )
            .bind(namespace)
            .bind(id)
            .bind(expected.map(to_i64))
            .execute(&mut *self.connection(id).await?)
            .await
            .map_err(|source| backend(id, source))?;
            Ok(deleted.rows_affected() == 1)
        })
    }

    /// One statement: a `DELETE` of the rows a bounded `SELECT ... FOR UPDATE SKIP LOCKED` on
    /// the expiry index finds, so that processes purging at once skip each other's rows, and a
    /// row a writer renewed meanwhile is checked again and kept.
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
            let subject = "purge";
            let removed = sqlx::query(
                "DELETE FROM records
                 WHERE (namespace, id) IN (
                   SELECT namespace, id FROM records
                   WHERE expires_at <= $1 AND ($2::TEXT IS NULL OR namespace = $2)
                   LIMIT $3
                   FOR UPDATE SKIP LOCKED)
                 AND expires_at <= $1",
            )
            .bind(to_i64(now_ms))
            .bind(namespace)
            .bind(to_i64(limit as u64))
            .execute(&mut *self.connection(subject).await?)
            .await
            .map_err(|source| backend(subject, source))?;
            Ok(usize::try_from(removed.rows_affected()).unwrap_or(usize::MAX))
        })
    }
}

/// The guard of [`PostgresStore`]: a connection in a transaction that holds the instance's
/// advisory lock. Dropping it closes the connection, which ends the transaction and releases
/// the lock.
struct PostgresLock {
    store: PostgresStore,
    instance: String,
    /// The transaction holding the advisory lock; dropping it rolls back, releasing the lock.
    _connection: sqlx::Transaction<'static, sqlx::Postgres>,
}

impl InstanceLock for PostgresLock {
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

    /// The connection budget is set in the store URL and taken out of what the driver sees.
    #[test]
    fn the_connection_budget_comes_from_the_url() {
        assert_eq!(
            budget_of("postgres://u@h/db").unwrap(),
            ("postgres://u@h/db".to_owned(), 16, 64)
        );
        assert_eq!(
            budget_of("postgres://u@h/db?max_connections=4&sslmode=disable&max_lock_connections=8")
                .unwrap(),
            ("postgres://u@h/db?sslmode=disable".to_owned(), 4, 8)
        );
        assert_eq!(
            budget_of("postgres://u@h/db?max_lock_connections=0").unwrap_err(),
            "`max_lock_connections` in the store URL must be a number from 1 to 1000, not `0`"
        );
    }

    /// A database migrated before schedules (three migrations) keeps its rows' expiry and
    /// status, and its rows are due at once (but one that needs re-authentication): the
    /// runtime's first look computes their schedules.
    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn rows_written_before_schedules_are_due_at_once() {
        let Some(backend) = crate::conformance::Postgres::create().await else {
            return;
        };
        let options = PgConnectOptions::from_str(&backend.url)
            .unwrap()
            .options([("search_path", backend.schema.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        migrator(&MIGRATIONS[..3]).run(&pool).await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO instances (id, version, connector, expires_at, state, updated_at, status)
             VALUES ('old', 4, 'demo', 1700000060000, '{}', 0, NULL),
                    ('stuck', 2, 'demo', NULL, '{\"engine.status\": \"needs-reauth\"}', 0,
                     'needs-reauth')",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
        let store = backend.store().await;
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
        drop(store);
        backend.drop_schema().await;
        assert_eq!(
            listed,
            [
                ("old", Some(1_700_000_060_000), Some(0), None),
                ("stuck", None, None, Some("needs-reauth"))
            ]
        );
    }

    /// The embedded list is the directory: a migration added as a file but not listed (or listed
    /// under another version or description) fails here, not on a database.
    #[test]
    fn the_embedded_migrations_are_the_files_of_the_directory() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres");
        let mut files: Vec<String> = fs_err::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        let listed: Vec<String> = MIGRATIONS
            .iter()
            .map(|(version, description, _)| {
                format!("{version:04}_{}.sql", description.replace(' ', "_"))
            })
            .collect();
        assert_eq!(listed, files, "list each file of {dir} in MIGRATIONS");
    }
}

//! One conformance suite, run against every backend: the file store, SQLite and PostgreSQL.
//!
//! Each case is an `async fn(&dyn Backend)`; [`conformance!`] makes one test per case and
//! backend. PostgreSQL tests read `ENGINE_TEST_POSTGRES` (a `postgres://` URL); where it is
//! unset they print one line saying so and pass. Each PostgreSQL test works in a schema of its
//! own, created before and dropped after (also when the case fails).
#![cfg(all(feature = "sqlite", feature = "postgres"))]

use std::io::Write as _;
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use engine_store::{
    BoxFuture, FileStore, InstanceStore, Page, Schedule, ScheduleStatus, State, StoreErrorKind,
};
use serde_json::json;

use crate::{PostgresStore, SqliteStore};

/// Opens handles on one backend's storage: each [`Backend::open`] is a new handle (for a
/// database: a new pool, as another process would have) on the same instances.
trait Backend: Send + Sync {
    fn open(&self) -> BoxFuture<'_, Box<dyn InstanceStore>>;
    /// The number of schema steps applied, for the stores that migrate.
    fn schema_version(&self) -> BoxFuture<'_, Option<i64>>;
}

struct Files(tempfile::TempDir);

impl Backend for Files {
    fn open(&self) -> BoxFuture<'_, Box<dyn InstanceStore>> {
        Box::pin(async move { Box::new(FileStore::new(self.0.path())) as Box<dyn InstanceStore> })
    }
    fn schema_version(&self) -> BoxFuture<'_, Option<i64>> {
        Box::pin(async { None })
    }
}

struct Sqlite(tempfile::TempDir);

impl Sqlite {
    async fn store(&self) -> SqliteStore {
        SqliteStore::open(self.0.path().join("state.db"))
            .await
            .expect("the SQLite file opens")
    }
}

impl Backend for Sqlite {
    fn open(&self) -> BoxFuture<'_, Box<dyn InstanceStore>> {
        Box::pin(async move { Box::new(self.store().await) as Box<dyn InstanceStore> })
    }
    fn schema_version(&self) -> BoxFuture<'_, Option<i64>> {
        Box::pin(async move {
            Some(i64::from(
                self.store().await.schema_version().await.unwrap(),
            ))
        })
    }
}

pub(crate) struct Postgres {
    pub(crate) url: String,
    pub(crate) schema: String,
}

impl Postgres {
    /// A fresh schema in the test server, or `None` (after one printed line) without
    /// `ENGINE_TEST_POSTGRES`.
    pub(crate) async fn create() -> Option<Self> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let Ok(url) = std::env::var("ENGINE_TEST_POSTGRES") else {
            static SAID: Once = Once::new();
            // Written to the process's stderr, past the test harness's capture: never silent.
            SAID.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "skipping the PostgreSQL store tests: ENGINE_TEST_POSTGRES is not set"
                );
            });
            return None;
        };
        let schema = format!(
            "engine_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            crate::epoch_ms() % 1_000_000
        );
        Self::admin(&url, &format!("CREATE SCHEMA {schema}")).await;
        Some(Self { url, schema })
    }

    async fn admin(url: &str, sql: &str) {
        use sqlx::Connection as _;
        let mut connection = sqlx::PgConnection::connect(url)
            .await
            .expect("the test server at ENGINE_TEST_POSTGRES answers");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut connection)
            .await
            .unwrap();
    }

    pub(crate) async fn drop_schema(&self) {
        Self::admin(&self.url, &format!("DROP SCHEMA {} CASCADE", self.schema)).await;
    }

    pub(crate) async fn store(&self) -> PostgresStore {
        PostgresStore::connect_in_schema(&self.url, &self.schema)
            .await
            .expect("the test schema migrates")
    }
}

impl Backend for Postgres {
    fn open(&self) -> BoxFuture<'_, Box<dyn InstanceStore>> {
        Box::pin(async move { Box::new(self.store().await) as Box<dyn InstanceStore> })
    }
    fn schema_version(&self) -> BoxFuture<'_, Option<i64>> {
        Box::pin(async move { Some(self.store().await.schema_version().await.unwrap()) })
    }
}

fn state(value: serde_json::Value) -> State {
    match value {
        serde_json::Value::Object(map) => map,
        _ => unreachable!("test states are objects"),
    }
}

/// `value` with a schedule (as the runtime computes it) expiring at `expires_at_ms`, due at
/// `next_refresh_at_ms`.
fn scheduled(
    value: serde_json::Value,
    expires_at_ms: Option<u64>,
    next_refresh_at_ms: Option<u64>,
) -> State {
    let mut state = state(value);
    Schedule {
        next_refresh_at_ms,
        expires_at_ms,
        ..Schedule::default()
    }
    .put(&mut state);
    state
}

/// A stale writer (one that read an older version) fails with `Conflict` and, re-reading, sees
/// the newer state; the newer state is never overwritten.
async fn cas_conflict(backend: &dyn Backend) {
    let store = backend.open().await;
    let other = backend.open().await;
    let first = store
        .write("acme", state(json!({"access.token": "t1"})), 0)
        .await
        .unwrap();
    assert_eq!(first, 1);
    // Creating it again is a conflict too.
    let again = store.write("acme", State::new(), 0).await.unwrap_err();
    assert!(matches!(
        again.kind(),
        StoreErrorKind::Conflict {
            expected: 0,
            found: 1,
            ..
        }
    ));
    let read_by_one = store.load("acme").await.unwrap();
    let read_by_two = other.load("acme").await.unwrap();
    assert_eq!((read_by_one.version, read_by_two.version), (1, 1));
    let newer = other
        .write(
            "acme",
            state(json!({"access.token": "t2"})),
            read_by_two.version,
        )
        .await
        .unwrap();
    assert_eq!(newer, 2);
    let stale = store
        .write(
            "acme",
            state(json!({"access.token": "t-stale"})),
            read_by_one.version,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            stale.kind(),
            StoreErrorKind::Conflict {
                expected: 1,
                found: 2,
                ..
            }
        ),
        "{stale:?}"
    );
    let reread = store.load("acme").await.unwrap();
    assert_eq!(reread.version, 2);
    assert_eq!(reread.state["access.token"], "t2");
}

/// The lock excludes a second locker (another handle, as another process), which times out,
/// and passes on when dropped; writes under it are compare-and-swaps too.
async fn lock_excludes(backend: &dyn Backend) {
    let store = backend.open().await;
    let other = backend.open().await;
    let mut held = store
        .lock("acme", Some(Duration::from_secs(5)))
        .await
        .unwrap();
    let absent = held.load().await.unwrap();
    assert_eq!(absent.version, 0, "an absent instance reads as version 0");
    let waited = other
        .lock("acme", Some(Duration::from_millis(200)))
        .await
        .err()
        .expect("the second locker times out");
    assert!(
        matches!(waited.kind(), StoreErrorKind::LockTimeout { .. }),
        "{waited:?}"
    );
    let busy = other
        .lock("acme", Some(Duration::ZERO))
        .await
        .err()
        .unwrap();
    assert!(matches!(busy.kind(), StoreErrorKind::LockTimeout { .. }));
    assert_eq!(held.write(state(json!({"a": 1})), 0).await.unwrap(), 1);
    let fenced = held.write(state(json!({"a": 2})), 0).await.unwrap_err();
    assert!(matches!(fenced.kind(), StoreErrorKind::Conflict { .. }));
    drop(held);
    let mut next = other
        .lock("acme", Some(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(next.load().await.unwrap().version, 1);
}

/// Listings are in id order, paged, and carry each instance's version, expiry and connector.
async fn list_pages(backend: &dyn Backend) {
    let store = backend.open().await;
    for (index, id) in ["c", "a", "e", "b", "d"].iter().enumerate() {
        let expires = json!({
            "engine.connector": if index % 2 == 0 { "demo" } else { "other" },
            "authentication.time": 1_700_000_000_000_u64 + index as u64,
        });
        let at = 1_700_000_060_000 + index as u64;
        store
            .write(id, scheduled(expires, Some(at), Some(at - 12_000)), 0)
            .await
            .unwrap();
    }
    store.write("a", state(json!({"x": 1})), 1).await.unwrap();
    let mut ids = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let listing = store
            .list(Page {
                after,
                limit: 2,
                ..Page::default()
            })
            .await
            .unwrap();
        pages += 1;
        ids.extend(listing.instances.iter().map(|summary| summary.id.clone()));
        if let Some(c) = listing.instances.iter().find(|summary| summary.id == "c") {
            assert_eq!(c.expires_at_ms, Some(1_700_000_060_000));
            assert_eq!(c.next_refresh_at_ms, Some(1_700_000_048_000));
            assert_eq!(c.connector.as_deref(), Some("demo"));
            assert_eq!(c.version, 1);
        }
        if let Some(a) = listing.instances.iter().find(|summary| summary.id == "a") {
            // Written without a schedule: no known expiry, due at once.
            assert_eq!(
                (
                    a.version,
                    a.expires_at_ms,
                    a.next_refresh_at_ms,
                    a.connector.as_deref()
                ),
                (2, None, Some(0), None)
            );
        }
        match listing.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(ids, ["a", "b", "c", "d", "e"]);
    assert_eq!(pages, 3);
    let empty = store
        .list(Page {
            after: Some("e".to_owned()),
            limit: 2,
            ..Page::default()
        })
        .await
        .unwrap();
    assert!(empty.instances.is_empty() && empty.next.is_none());
}

/// Delete is fenced by the version and leaves nothing behind.
async fn delete_fenced(backend: &dyn Backend) {
    let store = backend.open().await;
    store
        .write("gone", state(json!({"a": 1})), 0)
        .await
        .unwrap();
    store
        .write("gone", state(json!({"a": 2})), 1)
        .await
        .unwrap();
    let stale = store.delete("gone", 1).await.unwrap_err();
    assert!(matches!(
        stale.kind(),
        StoreErrorKind::Conflict {
            expected: 1,
            found: 2,
            ..
        }
    ));
    store.delete("gone", 2).await.unwrap();
    assert!(store.load("gone").await.unwrap_err().kind().is_absent());
    assert!(
        store
            .delete("gone", 2)
            .await
            .unwrap_err()
            .kind()
            .is_absent()
    );
    assert!(
        store
            .list(Page::default())
            .await
            .unwrap()
            .instances
            .is_empty()
    );
    // Recreated, it starts over at version 1.
    assert_eq!(store.write("gone", State::new(), 0).await.unwrap(), 1);
}

/// States come back as written, key order included.
async fn round_trip(backend: &dyn Backend) {
    let store = backend.open().await;
    let written = state(json!({"z": "last-first", "a": {"nested": [1, 2]}, "m": null}));
    store.write("order", written.clone(), 0).await.unwrap();
    let read = store.load("order").await.unwrap();
    assert_eq!(*read.state, written);
    assert_eq!(
        read.state.keys().collect::<Vec<_>>(),
        ["z", "a", "m"],
        "key order is kept"
    );
    let invalid = store.write("../etc", State::new(), 0).await.unwrap_err();
    assert!(matches!(
        invalid.kind(),
        StoreErrorKind::InvalidInstanceId { .. }
    ));
}

/// A migrating store creates its schema on first use, and opening it again (also two at once)
/// changes nothing and keeps the instances.
async fn migrations(backend: &dyn Backend) {
    let (one, two) = tokio::join!(backend.open(), backend.open());
    let Some(version) = backend.schema_version().await else {
        return;
    };
    assert!(version >= 1);
    one.write("kept", state(json!({"a": 1})), 0).await.unwrap();
    drop((one, two));
    let again = backend.open().await;
    assert_eq!(backend.schema_version().await, Some(version));
    assert_eq!(again.load("kept").await.unwrap().version, 1);
}

/// The history keeps the last `keep` entries per instance, oldest first, apart per instance.
async fn history_bounds(backend: &dyn Backend) {
    let store = backend.open().await;
    assert!(store.history("acme").await.unwrap().is_empty());
    for attempt in 0..7 {
        store
            .append_history("acme", json!({"attempt": attempt}), 5)
            .await
            .unwrap();
    }
    store
        .append_history("other", json!({"attempt": 99}), 5)
        .await
        .unwrap();
    let history = store.history("acme").await.unwrap();
    let attempts: Vec<i64> = history
        .iter()
        .map(|entry| entry["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(attempts, [2, 3, 4, 5, 6]);
    assert_eq!(
        store.history("other").await.unwrap(),
        [json!({"attempt": 99})]
    );
}

/// Listings filter by connector, status, expiry (or its absence) and due time, paging over the
/// matches only.
async fn list_filters(backend: &dyn Backend) {
    let store = backend.open().await;
    for index in 0..6_u64 {
        let value = json!({
            "engine.connector": if index % 2 == 0 { "even" } else { "odd" },
            "engine.status": if index == 3 { Some("needs-reauth") } else { None },
        });
        let at = 1_700_000_060_000_u64 + index * 1000;
        let mut value = scheduled(value, Some(at), Some(at - 12_000));
        if index == 3 {
            let mut schedule = Schedule::of(&value).unwrap();
            (schedule.status, schedule.next_refresh_at_ms) = (ScheduleStatus::NeedsReauth, None);
            schedule.put(&mut value);
        }
        store.write(&format!("i{index}"), value, 0).await.unwrap();
    }
    store
        .write("none", scheduled(json!({}), None, None), 0)
        .await
        .unwrap();
    store.write("legacy", State::new(), 0).await.unwrap();
    let ids = |page: Page| {
        let store = &store;
        async move {
            let listing = store.list(page).await.unwrap();
            let ids: Vec<String> = listing
                .instances
                .into_iter()
                .map(|summary| summary.id)
                .collect();
            (ids, listing.next)
        }
    };
    let even = ids(Page {
        connector: Some("even".to_owned()),
        limit: 2,
        ..Page::default()
    })
    .await;
    assert_eq!(
        even,
        (
            vec!["i0".to_owned(), "i2".to_owned()],
            Some("i2".to_owned())
        )
    );
    let rest = ids(Page {
        connector: Some("even".to_owned()),
        after: Some("i2".to_owned()),
        limit: 2,
        ..Page::default()
    })
    .await;
    assert_eq!(rest, (vec!["i4".to_owned()], None));
    let stuck = ids(Page {
        status: Some("needs-reauth".to_owned()),
        ..Page::default()
    })
    .await;
    assert_eq!(stuck.0, ["i3"]);
    let due = ids(Page {
        expires_before_ms: Some(1_700_000_062_000),
        ..Page::default()
    })
    .await;
    assert_eq!(
        due.0,
        ["i0", "i1", "i2"],
        "inclusive, and never an instance without expiry"
    );
    let unknown = ids(Page {
        expiry_unknown: true,
        ..Page::default()
    })
    .await;
    assert_eq!(
        unknown.0,
        ["legacy", "none"],
        "only the instances without expiry"
    );
    let due = ids(Page {
        due_before_ms: Some(1_700_000_050_000),
        ..Page::default()
    })
    .await;
    assert_eq!(
        due.0,
        ["i0", "i1", "i2", "legacy"],
        "inclusive; never one with nothing scheduled; one never computed always"
    );
    // A status cleared by a write leaves the status listing.
    let read = store.load("i3").await.unwrap();
    let mut cleared = State::clone(&read.state);
    Schedule::default().put(&mut cleared);
    store.write("i3", cleared, read.version).await.unwrap();
    assert!(
        ids(Page {
            status: Some("needs-reauth".to_owned()),
            ..Page::default()
        })
        .await
        .0
        .is_empty()
    );
}

/// Listings carry the instance's status: its schedule's, or for a state written before
/// schedules, `engine.status`.
async fn status_listed(backend: &dyn Backend) {
    let store = backend.open().await;
    store
        .write("stuck", state(json!({"engine.status": "needs-reauth"})), 0)
        .await
        .unwrap();
    store.write("fine", State::new(), 0).await.unwrap();
    let mut retrying = State::new();
    Schedule {
        status: ScheduleStatus::Retrying,
        consecutive_failures: 1,
        ..Schedule::default()
    }
    .put(&mut retrying);
    store.write("retrying", retrying, 0).await.unwrap();
    let listing = store.list(Page::default()).await.unwrap();
    let statuses: Vec<(&str, Option<&str>)> = listing
        .instances
        .iter()
        .map(|summary| (summary.id.as_str(), summary.status.as_deref()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("fine", None),
            ("retrying", Some("retrying")),
            ("stuck", Some("needs-reauth"))
        ]
    );
}

/// Claims lease the due instances (soonest first, up to the limit, none with nothing
/// scheduled); two claimers at once never get the same instance; a leased instance is not
/// claimed again until its lease ends or is released; a holder renews its lease while it lasts
/// and not once it ended and went to another; and the version a claim read fences the late
/// holder's write.
async fn claims(backend: &dyn Backend) {
    const NOW: u64 = 1_700_000_000_000;
    let store = backend.open().await;
    for index in 0..20_u64 {
        // 0 to 15 due (the higher, the sooner), 16 and 17 later, 18 with nothing scheduled, 19
        // needing re-authentication.
        let next = match index {
            0..16 => Some(NOW - index * 1000),
            16 | 17 => Some(NOW + 60_000),
            _ => None,
        };
        let mut value = scheduled(json!({"n": index}), None, next);
        if index == 19 {
            let mut schedule = Schedule::read(&value);
            schedule.status = ScheduleStatus::NeedsReauth;
            schedule.put(&mut value);
        }
        store
            .write(&format!("i{index:02}"), value, 0)
            .await
            .unwrap();
    }
    let lease = Duration::from_secs(30);
    let other = backend.open().await;
    let (first, second) = tokio::join!(
        store.claim_due(NOW, 10, lease),
        other.claim_due(NOW, 10, lease)
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    let mut claimed: Vec<&str> = first
        .iter()
        .chain(&second)
        .map(|claim| claim.id.as_str())
        .collect();
    claimed.sort_unstable();
    let due: Vec<String> = (0..16).map(|index| format!("i{index:02}")).collect();
    assert_eq!(claimed, due, "every due instance once, none twice");
    for claims in [&first, &second] {
        assert!(!claims.is_empty() && claims.len() <= 10, "{claims:?}");
        assert!(
            claims.windows(2).all(|pair| pair[0].id > pair[1].id),
            "soonest due first: {claims:?}"
        );
        assert!(claims.iter().all(|claim| claim.until_ms == NOW + 30_000));
        assert!(claims.iter().all(|claim| claim.version == 1));
    }
    assert!(
        store
            .claim_due(NOW + 1000, 100, lease)
            .await
            .unwrap()
            .is_empty(),
        "leased instances are not claimed again"
    );

    // The holder renews; a release frees the instance at once.
    let renewed = store.renew(&first[0], NOW + 20_000, lease).await.unwrap();
    assert_eq!(renewed.until_ms, NOW + 50_000);
    other.release(&second[0]).await.unwrap();
    let again = store.claim_due(NOW + 1000, 100, lease).await.unwrap();
    assert_eq!(
        again.iter().map(|claim| &claim.id).collect::<Vec<_>>(),
        [&second[0].id]
    );
    let error = other
        .renew(&second[0], NOW + 2000, lease)
        .await
        .unwrap_err();
    assert!(
        matches!(error.kind(), StoreErrorKind::LeaseLost { .. }),
        "{error:?}"
    );

    // At the end of the leases the instances not renewed are due again.
    let later = other.claim_due(NOW + 30_000, 100, lease).await.unwrap();
    let mut ids: Vec<&str> = later.iter().map(|claim| claim.id.as_str()).collect();
    ids.sort_unstable();
    let mut expected: Vec<&str> = due
        .iter()
        .map(String::as_str)
        .filter(|id| *id != first[0].id && *id != second[0].id)
        .collect();
    expected.sort_unstable();
    assert_eq!(ids, expected);
    let lost = &first[1];
    let error = store.renew(lost, NOW + 30_000, lease).await.unwrap_err();
    assert!(
        matches!(error.kind(), StoreErrorKind::LeaseLost { .. }),
        "{error:?}"
    );
    // The new holder writes; the late one's write, naming the version it claimed, is refused.
    let taken = later.iter().find(|claim| claim.id == lost.id).unwrap();
    other
        .write(&taken.id, state(json!({"by": "new"})), taken.version)
        .await
        .unwrap();
    let error = store
        .write(&lost.id, state(json!({"by": "late"})), lost.version)
        .await
        .unwrap_err();
    assert!(
        matches!(error.kind(), StoreErrorKind::Conflict { .. }),
        "{error:?}"
    );
    // Nothing scheduled, or needing re-authentication: never claimed.
    let everything = store.claim_due(u64::MAX / 2, 100, lease).await.unwrap();
    assert!(
        everything
            .iter()
            .all(|claim| claim.id != "i18" && claim.id != "i19"),
        "{everything:?}"
    );
    assert!(
        everything.iter().any(|claim| claim.id == "i16"),
        "{everything:?}"
    );
}

/// The earliest due time at or after a time: nothing scheduled, nothing due; an instance
/// without a schedule counts as due at 0, one with nothing scheduled (or needing
/// re-authentication) never; a write that moves a due time moves the answer, and so does a
/// deletion.
async fn next_due(backend: &dyn Backend) {
    const NOW: u64 = 1_700_000_000_000;
    let store = backend.open().await;
    assert_eq!(store.next_due_ms(0).await.unwrap(), None, "an empty store");
    store
        .write("never", scheduled(json!({}), None, None), 0)
        .await
        .unwrap();
    let mut stuck = scheduled(json!({}), Some(NOW), None);
    let mut schedule = Schedule::read(&stuck);
    schedule.status = ScheduleStatus::NeedsReauth;
    schedule.put(&mut stuck);
    store.write("stuck", stuck, 0).await.unwrap();
    assert_eq!(
        store.next_due_ms(0).await.unwrap(),
        None,
        "nothing scheduled"
    );

    for (id, at) in [
        ("late", NOW + 90_000),
        ("soon", NOW + 30_000),
        ("past", NOW - 5000),
    ] {
        store
            .write(id, scheduled(json!({}), Some(at + 60_000), Some(at)), 0)
            .await
            .unwrap();
    }
    let other = backend.open().await;
    assert_eq!(other.next_due_ms(0).await.unwrap(), Some(NOW - 5000));
    assert_eq!(other.next_due_ms(NOW).await.unwrap(), Some(NOW + 30_000));
    assert_eq!(
        other.next_due_ms(NOW + 30_000).await.unwrap(),
        Some(NOW + 30_000),
        "at or after"
    );
    assert_eq!(
        other.next_due_ms(NOW + 30_001).await.unwrap(),
        Some(NOW + 90_000)
    );
    assert_eq!(other.next_due_ms(NOW + 90_001).await.unwrap(), None);

    // Refreshed: due later; imported without a schedule: due at once.
    store
        .write(
            "soon",
            scheduled(json!({}), Some(NOW + 200_000), Some(NOW + 120_000)),
            1,
        )
        .await
        .unwrap();
    assert_eq!(other.next_due_ms(NOW).await.unwrap(), Some(NOW + 90_000));
    store.delete("past", 1).await.unwrap();
    store.write("bare", state(json!({})), 0).await.unwrap();
    assert_eq!(other.next_due_ms(0).await.unwrap(), Some(0));
    store.delete("bare", 1).await.unwrap();
    assert_eq!(other.next_due_ms(0).await.unwrap(), Some(NOW + 90_000));
}

fn key(text: &str) -> crate::SecretKey {
    crate::SecretKey::parse(text).unwrap()
}

const KEY_ONE: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_ONE_WRONG: &str = "k1:Hx4dHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";
const KEY_TWO: &str = "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

fn secret_name(key: &str) -> bool {
    key.contains("token") || key.contains("secret")
}

fn rule(is_secret: fn(&str) -> bool) -> crate::IsSecret {
    std::sync::Arc::new(is_secret)
}

/// The rule decides which keys are encrypted (a connector's: a `PASSWORD` property named like
/// no secret, `user.pin`), and a value stored encrypted stays encrypted when a handle with a
/// narrower rule (names only) writes it back through the lock or rekeys it.
async fn encryption_follows_the_rule(backend: &dyn Backend) {
    let raw: std::sync::Arc<dyn InstanceStore> = backend.open().await.into();
    let typed = crate::EncryptedStore::new(
        raw.clone(),
        key(KEY_ONE),
        Vec::new(),
        std::sync::Arc::new(|key: &str| key == "user.pin" || secret_name(key)),
    );
    let written = state(json!({"user.pin": "FAKE-pin-1234", "user.name": "ada"}));
    typed.write("acme", written.clone(), 0).await.unwrap();
    let at_rest = raw.load("acme").await.unwrap();
    assert!(crate::is_encrypted(&at_rest.state["user.pin"]));
    assert_eq!(at_rest.state["user.name"], "ada");

    let names =
        crate::EncryptedStore::new(raw.clone(), key(KEY_ONE), Vec::new(), rule(secret_name));
    let mut lock = names
        .lock("acme", Some(Duration::from_secs(5)))
        .await
        .unwrap();
    let read = lock.load().await.unwrap();
    assert_eq!(read.state["user.pin"], "FAKE-pin-1234");
    let mut next = State::clone(&read.state);
    next.insert("access.token".to_owned(), json!("FAKE-token-123"));
    lock.write(next, read.version).await.unwrap();
    drop(lock);
    assert!(crate::is_encrypted(
        &raw.load("acme").await.unwrap().state["user.pin"]
    ));

    let rotating = crate::EncryptedStore::new(
        raw.clone(),
        key(KEY_TWO),
        vec![key(KEY_ONE)],
        rule(secret_name),
    );
    assert!(rotating.rekey("acme", None, &|| ()).await.unwrap());
    let at_rest = raw.load("acme").await.unwrap();
    for secret in ["user.pin", "access.token"] {
        assert!(
            at_rest.state[secret]
                .as_str()
                .unwrap()
                .starts_with("enc:v1:k2:"),
            "{secret}: {}",
            at_rest.state[secret]
        );
    }
    assert_eq!(
        rotating.load("acme").await.unwrap().state["user.pin"],
        "FAKE-pin-1234"
    );
}

/// Secrets at rest: encrypted in the inner store (never the plain value), decrypted on read, by
/// the lock too; a wrong key under the same id and an unknown key id fail the read; rekeying
/// rewrites every value under the current key, after which the old key is not needed.
async fn encryption(backend: &dyn Backend) {
    let raw: std::sync::Arc<dyn InstanceStore> = backend.open().await.into();
    let one = crate::EncryptedStore::new(raw.clone(), key(KEY_ONE), Vec::new(), rule(secret_name));
    let written = state(json!({"client.id": "public", "access.token": "FAKE-token-123", "n": 5}));
    one.write("acme", written.clone(), 0).await.unwrap();
    assert_eq!(*one.load("acme").await.unwrap().state, written);
    let at_rest = raw.load("acme").await.unwrap();
    assert_eq!(at_rest.state["client.id"], "public");
    let sealed = at_rest.state["access.token"].as_str().unwrap();
    assert!(
        sealed.starts_with("enc:v1:k1:") && !sealed.contains("FAKE-token"),
        "{sealed}"
    );

    let mut lock = one
        .lock("acme", Some(Duration::from_secs(5)))
        .await
        .unwrap();
    let read = lock.load().await.unwrap();
    assert_eq!(read.state["access.token"], "FAKE-token-123");
    let mut next = State::clone(&read.state);
    next.insert("refresh.token".to_owned(), json!("FAKE-refresh-456"));
    lock.write(next, read.version).await.unwrap();
    drop(lock);
    assert!(crate::is_encrypted(
        &raw.load("acme").await.unwrap().state["refresh.token"]
    ));

    let wrong = crate::EncryptedStore::new(
        raw.clone(),
        key(KEY_ONE_WRONG),
        Vec::new(),
        rule(secret_name),
    );
    let error = wrong.load("acme").await.unwrap_err();
    assert!(
        error.to_string().contains("does not decrypt with key `k1`"),
        "{error:?}"
    );
    let two = crate::EncryptedStore::new(raw.clone(), key(KEY_TWO), Vec::new(), rule(secret_name));
    let error = two.load("acme").await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains("encrypted with key `k1`, which is not among"),
        "{error:?}"
    );

    let rotating = crate::EncryptedStore::new(
        raw.clone(),
        key(KEY_TWO),
        vec![key(KEY_ONE)],
        rule(secret_name),
    );
    assert!(rotating.rekey("acme", None, &|| ()).await.unwrap());
    assert!(
        !rotating.rekey("acme", None, &|| ()).await.unwrap(),
        "a second rekey changes nothing"
    );
    let rekeyed = two.load("acme").await.unwrap();
    assert_eq!(
        (
            rekeyed.state["access.token"].as_str(),
            rekeyed.state["refresh.token"].as_str()
        ),
        (Some("FAKE-token-123"), Some("FAKE-refresh-456"))
    );
    let at_rest = raw.load("acme").await.unwrap();
    assert!(
        at_rest.state["access.token"]
            .as_str()
            .unwrap()
            .starts_with("enc:v1:k2:")
    );
}

/// Records: a conditional write per version (0: absent or expired), reads and listings that
/// skip expired records, namespaces apart, deletes by version; of writers racing from two
/// handles on the same version, exactly one wins.
async fn records(backend: &dyn Backend) {
    let (one, two) = (backend.open().await, backend.open().await);
    let now = 1_000_000;
    assert_eq!(one.get_record("keys", "a1", now).await.unwrap(), None);
    let first = one
        .put_record("keys", "a1", json!({"n": 1}), None, 0, now)
        .await
        .unwrap();
    assert_eq!(first, 1);
    let again = two
        .put_record("keys", "a1", json!({"n": 9}), None, 0, now)
        .await;
    assert!(
        matches!(
            again.unwrap_err().kind(),
            StoreErrorKind::Conflict { found: 1, .. }
        ),
        "a second create of the same record is refused"
    );
    let second = two
        .put_record("keys", "a1", json!({"n": 2}), None, first, now)
        .await
        .unwrap();
    assert_eq!(second, 2);
    let stale = one
        .put_record("keys", "a1", json!({"n": 3}), None, first, now)
        .await;
    assert!(matches!(
        stale.unwrap_err().kind(),
        StoreErrorKind::Conflict { .. }
    ));
    let read = one.get_record("keys", "a1", now).await.unwrap().unwrap();
    assert_eq!(
        (read.id.as_str(), &read.value, read.version),
        ("a1", &json!({"n": 2}), 2)
    );

    // Expiry: read until it, absent from then, and replaceable as absent.
    one.put_record("keys", "b2", json!("short"), Some(now + 10), 0, now)
        .await
        .unwrap();
    assert!(
        one.get_record("keys", "b2", now + 9)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(one.get_record("keys", "b2", now + 10).await.unwrap(), None);
    let ids = |records: Vec<engine_store::Record>| {
        records
            .into_iter()
            .map(|record| record.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(two.list_records("keys", None, 10, now + 10).await.unwrap()),
        ["a1"]
    );
    assert_eq!(
        two.put_record("keys", "b2", json!("again"), None, 0, now + 10)
            .await
            .unwrap(),
        1
    );

    // Listings: id order, pages, namespaces apart.
    two.put_record("keys", "c3", json!(3), None, 0, now)
        .await
        .unwrap();
    two.put_record("other", "a1", json!("elsewhere"), None, 0, now)
        .await
        .unwrap();
    assert_eq!(
        ids(one.list_records("keys", None, 10, now).await.unwrap()),
        ["a1", "b2", "c3"]
    );
    assert_eq!(
        ids(one.list_records("keys", None, 2, now).await.unwrap()),
        ["a1", "b2"]
    );
    assert_eq!(
        ids(one.list_records("keys", Some("b2"), 2, now).await.unwrap()),
        ["c3"]
    );
    assert_eq!(
        one.get_record("other", "a1", now)
            .await
            .unwrap()
            .unwrap()
            .value,
        json!("elsewhere")
    );

    // Deletes: by version, or whatever it is.
    assert!(!one.delete_record("keys", "a1", Some(1)).await.unwrap());
    assert!(one.delete_record("keys", "a1", Some(2)).await.unwrap());
    assert!(!two.delete_record("keys", "a1", None).await.unwrap());
    assert!(two.delete_record("keys", "c3", None).await.unwrap());
    assert_eq!(
        ids(one.list_records("keys", None, 10, now).await.unwrap()),
        ["b2"]
    );

    // A namespace or id that is not an id every store keeps is refused.
    let invalid = one.put_record("keys", "../x", json!(1), None, 0, now).await;
    assert!(matches!(
        invalid.unwrap_err().kind(),
        StoreErrorKind::InvalidInstanceId { .. }
    ));

    // Racing creates from two handles: one wins, the other is told of the conflict.
    for round in 0..5 {
        let id = format!("race{round}");
        let (a, b) = tokio::join!(
            one.put_record("keys", &id, json!("one"), None, 0, now),
            two.put_record("keys", &id, json!("two"), None, 0, now),
        );
        assert_eq!(u8::from(a.is_ok()) + u8::from(b.is_ok()), 1, "{a:?} {b:?}");
    }
}

/// The ids and versions of the records of `space`, expired or not (as of time 0).
async fn versions(store: &dyn InstanceStore, space: &str) -> Vec<(String, u64)> {
    store
        .list_records(space, None, 100, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|record| (record.id, record.version))
        .collect()
}

/// Purging expired records: those expired at `now` go, bounded per call and by namespace or
/// not; those that never expire or expire later stay, at their versions; a purged id is free
/// for a new record at version 1.
async fn purge_expired(backend: &dyn Backend) {
    let (one, two) = (backend.open().await, backend.open().await);
    let now = 1_000_000;
    for (space, id, expires) in [
        ("events", "e1", Some(now - 1)),
        ("events", "e2", Some(now)),
        ("events", "e3", Some(now + 1)),
        ("events", "e4", None),
        ("flows", "f1", Some(now - 5)),
        ("flows", "f2", Some(now + 60_000)),
        ("quiet", "q1", Some(now - 10)),
    ] {
        one.put_record(space, id, json!(id), expires, 0, now - 100)
            .await
            .unwrap();
    }
    // A later write: the version that must survive the purge untouched.
    one.put_record("events", "e4", json!("e4 again"), None, 1, now - 100)
        .await
        .unwrap();
    assert_eq!(
        versions(&*two, "events").await,
        [
            ("e1".into(), 1),
            ("e2".into(), 1),
            ("e3".into(), 1),
            ("e4".into(), 2)
        ],
        "at time 0 every record is listed"
    );

    // One namespace, bounded: one of its two expired records, then the other; none of the rest.
    assert_eq!(
        two.purge_expired_records(Some("events"), now, 1)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        two.purge_expired_records(Some("events"), now, 10)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        two.purge_expired_records(Some("events"), now, 10)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        versions(&*one, "events").await,
        [("e3".into(), 1), ("e4".into(), 2)],
        "gone even from a listing as of before their expiry"
    );
    assert_eq!(
        versions(&*one, "flows").await.len(),
        2,
        "other namespaces wait"
    );

    // Every namespace.
    assert_eq!(two.purge_expired_records(None, now, 10).await.unwrap(), 2);
    assert_eq!(versions(&*one, "flows").await, [("f2".into(), 1)]);
    assert_eq!(versions(&*one, "quiet").await, []);
    assert_eq!(two.purge_expired_records(None, now, 10).await.unwrap(), 0);
    let e3 = one.get_record("events", "e3", now).await.unwrap().unwrap();
    assert_eq!((e3.version, e3.expires_at_ms), (1, Some(now + 1)));

    // A purged id takes a new record, from version 1; a later purge takes the rest.
    assert_eq!(
        one.put_record("flows", "f1", json!("new"), Some(now + 5), 0, now)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        one.purge_expired_records(None, now + 60_000, 10)
            .await
            .unwrap(),
        3,
        "e3, f1 and f2"
    );
    assert_eq!(versions(&*two, "events").await, [("e4".into(), 2)]);
    assert_eq!(versions(&*two, "flows").await, []);

    let invalid = one.purge_expired_records(Some("../x"), now, 10).await;
    assert!(matches!(
        invalid.unwrap_err().kind(),
        StoreErrorKind::InvalidInstanceId { .. }
    ));
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod file {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(&super::Files(tempfile::tempdir().unwrap())).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(&super::Sqlite(tempfile::tempdir().unwrap())).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(backend) = super::Postgres::create().await else { return };
                    let backend = std::sync::Arc::new(backend);
                    let running = std::sync::Arc::clone(&backend);
                    let outcome = tokio::spawn(async move { super::$case(&*running).await }).await;
                    backend.drop_schema().await;
                    if let Err(error) = outcome {
                        std::panic::resume_unwind(error.into_panic());
                    }
                }
            )*
        }
    };
}

conformance!(
    cas_conflict,
    lock_excludes,
    list_pages,
    delete_fenced,
    round_trip,
    migrations,
    history_bounds,
    status_listed,
    list_filters,
    encryption,
    encryption_follows_the_rule,
    claims,
    next_due,
    records,
    purge_expired,
);

/// PostgreSQL only: a lock holder that goes silent past the lock's lifetime loses the lock to
/// another process, and its late write, naming the version it read, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lost_lock_is_fenced() {
    let Some(backend) = Postgres::create().await else {
        return;
    };
    let outcome = tokio::spawn({
        let store = backend
            .store()
            .await
            .lock_lifetime(Duration::from_millis(500));
        async move {
            store
                .write("acme", state(json!({"access.token": "old"})), 0)
                .await
                .unwrap();
            let mut paused = store
                .lock("acme", Some(Duration::from_secs(5)))
                .await
                .unwrap();
            let read = paused.load().await.unwrap();
            // Silent for longer than the lock's lifetime: the server ends the holder's session.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let mut other = store
                .lock("acme", Some(Duration::from_secs(5)))
                .await
                .unwrap();
            let current = other.load().await.unwrap();
            other
                .write(state(json!({"access.token": "new"})), current.version)
                .await
                .unwrap();
            drop(other);
            let late = paused
                .write(state(json!({"access.token": "older"})), read.version)
                .await
                .unwrap_err();
            assert!(matches!(
                late.kind(),
                StoreErrorKind::Conflict {
                    expected: 1,
                    found: 2,
                    ..
                }
            ));
            assert_eq!(paused.load().await.unwrap().state["access.token"], "new");
        }
    })
    .await;
    backend.drop_schema().await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

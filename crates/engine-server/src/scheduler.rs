//! The refresh scheduler: sleeps until the next instance is due, then refreshes the due ones
//! through engine-service's [`Refresh`], N at a time. The decisions are pure ([`plan`],
//! [`Holds`], [`jitter`]) and take the time as an argument; the loop ([`Scheduler::run`]) does
//! the I/O on an injected [`Clock`] (the runtime's: a [`engine_runtime::ManualClock`] moves
//! instead of sleeping, so tests never sleep). Where the work comes from is one seam, [`Source`]: today
//! the store's listing ([`StoreSource`]); claims that lease due instances to one process can
//! replace it without touching the rest.

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine_runtime::{Clock, Engine};
use engine_service::{Due, Opened, Outcome, Refresh, RefreshOptions, Registry};
use engine_store::{BoxFuture, InstanceStore, Page, Summary};
use tokio::sync::{Notify, watch};

/// The most a refresh is moved earlier to spread refreshes that fall due together.
pub const MAX_JITTER: Duration = Duration::from_mins(1);

/// The longest the scheduler sleeps without listing again: instances that other processes add
/// or change are seen at least this often.
pub const MAX_IDLE: Duration = Duration::from_mins(1);

/// How long an instance the runtime found fresh or with nothing to refresh is left alone,
/// unless it changes (its version) before.
pub const SETTLE: Duration = Duration::from_mins(10);

/// An instance the scheduler keeps fresh, as its [`Source`] lists it.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The instance, as the store lists it.
    pub summary: Summary,
    /// Its token's lifetime, when known ([`engine_service::lifetime_of`]).
    pub lifetime: Option<Duration>,
}

/// Where the scheduler's work comes from: the seam that claims (a lease per due instance,
/// across processes) will implement instead of the listing.
pub trait Source: Send + Sync {
    /// The instances to keep fresh: each with a known expiry, not marked `needs-reauth`.
    fn candidates(&self) -> BoxFuture<'_, Result<Vec<Candidate>, engine_service::Error>>;
}

/// The store's listing, every page, each instance's lifetime read from its state.
pub struct StoreSource {
    store: Arc<dyn InstanceStore>,
}

impl StoreSource {
    /// The listing of `store` (opened with the keys, so that the lifetimes can be read).
    pub fn new(store: Arc<dyn InstanceStore>) -> Self {
        Self { store }
    }
}

impl std::fmt::Debug for StoreSource {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("StoreSource")
            .finish_non_exhaustive()
    }
}

impl Source for StoreSource {
    fn candidates(&self) -> BoxFuture<'_, Result<Vec<Candidate>, engine_service::Error>> {
        Box::pin(async move {
            let mut candidates = Vec::new();
            let mut page = Page {
                limit: 1000,
                ..Page::default()
            };
            loop {
                let listing = self.store.list(page.clone()).await?;
                for summary in listing.instances {
                    if summary.expires_at_ms.is_none()
                        || summary.status.as_deref() == Some(engine_service::NEEDS_REAUTH)
                    {
                        continue;
                    }
                    let lifetime = match (summary.next_refresh_at_ms, summary.expires_at_ms) {
                        // Nothing scheduled: a token that does not expire.
                        (None, _) => continue,
                        // The runtime's schedule: due a fifth of the lifetime ahead, so the
                        // lifetime is five times the lead (a retry's is shorter: it only
                        // bounds the jitter).
                        (Some(next), Some(expires)) if next > 0 => Some(Duration::from_millis(
                            expires.saturating_sub(next).saturating_mul(5),
                        )),
                        // A schedule never computed (a state written before schedules): the
                        // lifetime from the state. One that cannot be read now is refreshed at
                        // its expiry, and fails then the way it would anyway.
                        _ => match self.store.load(&summary.id).await {
                            Ok(read) => engine_service::lifetime_of(&read.state),
                            Err(_) => None,
                        },
                    };
                    candidates.push(Candidate { summary, lifetime });
                }
                match listing.next {
                    Some(next) => page.after = Some(next),
                    None => return Ok(candidates),
                }
            }
        })
    }
}

/// When a token is due: a fifth of its lifetime before it expires (at its expiry when the
/// lifetime is unknown), as `engine refresh` decides.
pub fn due_at(expires_at_ms: u64, lifetime: Option<Duration>) -> u64 {
    let ahead = lifetime.map_or(0, |lifetime| millis(lifetime / 5));
    expires_at_ms.saturating_sub(ahead)
}

/// The most an instance's refresh is moved earlier: a twentieth of its lifetime, at most
/// [`MAX_JITTER`]; none for an unknown lifetime.
pub fn jitter_bound(lifetime: Option<Duration>) -> Duration {
    lifetime.map_or(Duration::ZERO, |lifetime| (lifetime / 20).min(MAX_JITTER))
}

/// How much earlier than [`due_at`] this instance's refresh runs: in `0..=bound`, the same for
/// the same instance and expiry (a hash of both, so that instances due together spread out,
/// and a plan made twice agrees with itself).
pub fn jitter(id: &str, expires_at_ms: u64, bound: Duration) -> Duration {
    let bound = millis(bound);
    if bound == 0 {
        return Duration::ZERO;
    }
    let mut hasher = std::hash::DefaultHasher::new();
    (id, expires_at_ms).hash(&mut hasher);
    Duration::from_millis(hasher.finish() % (bound + 1))
}

/// How long a failing instance waits before its next attempt: `base` doubled per consecutive
/// failure, at most `cap`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// The wait after the first failure.
    pub base: Duration,
    /// The longest wait.
    pub cap: Duration,
}

impl Default for Backoff {
    /// Returns: 30 seconds, doubled up to an hour.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(30),
            cap: Duration::from_hours(1),
        }
    }
}

impl Backoff {
    /// The wait after `failures` consecutive failures (at least one).
    pub fn delay(self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.base.saturating_mul(1_u32 << doublings).min(self.cap)
    }
}

/// Why an instance is left alone for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// Its refreshes failed `failures` times in a row: not before `until_ms`.
    Failing { failures: u32, until_ms: u64 },
    /// Found fresh, or with nothing to refresh: not before `until_ms` unless its version
    /// changes.
    Settled { version: u64, until_ms: u64 },
}

/// The instances left alone for a while, by id: failing ones back off, settled ones wait for a
/// change.
#[derive(Debug, Default)]
pub struct Holds {
    holds: HashMap<String, Hold>,
    backoff: Backoff,
}

impl Holds {
    /// No instance held; failures back off by `backoff`.
    pub fn new(backoff: Backoff) -> Self {
        Self {
            holds: HashMap::new(),
            backoff,
        }
    }

    /// A refresh of `id` failed at `now_ms`: it backs off one step more. Returns until when.
    pub fn failed(&mut self, id: &str, now_ms: u64) -> u64 {
        let failures = match self.holds.get(id) {
            Some(Hold::Failing { failures, .. }) => failures.saturating_add(1),
            _ => 1,
        };
        let until_ms = now_ms.saturating_add(millis(self.backoff.delay(failures)));
        self.holds
            .insert(id.to_owned(), Hold::Failing { failures, until_ms });
        until_ms
    }

    /// `id` (at `version`) needed no refresh at `now_ms`: left alone for [`SETTLE`] unless it
    /// changes.
    pub fn settled(&mut self, id: &str, version: u64, now_ms: u64) {
        let until_ms = now_ms.saturating_add(millis(SETTLE));
        self.holds
            .insert(id.to_owned(), Hold::Settled { version, until_ms });
    }

    /// `id` was refreshed: nothing holds it.
    pub fn refreshed(&mut self, id: &str) {
        self.holds.remove(id);
    }

    /// Until when `summary`'s instance is held at `now_ms`; `None` when it is not (a hold that
    /// ran out, or a settled instance that changed, is dropped).
    fn until(&mut self, summary: &Summary, now_ms: u64) -> Option<u64> {
        let until_ms = match self.holds.get(&summary.id)? {
            Hold::Failing { until_ms, .. } => *until_ms,
            Hold::Settled { version, until_ms } if *version == summary.version => *until_ms,
            Hold::Settled { .. } => 0,
        };
        if until_ms > now_ms {
            return Some(until_ms);
        }
        // A failing instance keeps its count until it succeeds; only its time ran out.
        if !matches!(self.holds.get(&summary.id), Some(Hold::Failing { .. })) {
            self.holds.remove(&summary.id);
        }
        None
    }
}

/// What to do now: the instances to refresh, and when to look again when none is left.
#[derive(Debug, Default)]
pub struct Plan {
    /// The instances due at the plan's time, each with how far ahead the runtime refreshes it.
    pub due: Vec<Due>,
    /// The earliest time another instance falls due or a hold ends; `None`: nothing to wait
    /// for.
    pub wake_at_ms: Option<u64>,
}

/// The plan at `now_ms` for `candidates`, `holds` aside: an instance is due at [`due_at`]
/// minus its [`jitter`], and refreshed `lifetime / 5 + jitter` ahead of its expiry.
pub fn plan(candidates: Vec<Candidate>, now_ms: u64, holds: &mut Holds) -> Plan {
    let mut plan = Plan::default();
    let mut wake = |at: u64| {
        plan.wake_at_ms = Some(plan.wake_at_ms.map_or(at, |earliest: u64| earliest.min(at)));
    };
    let mut due = Vec::new();
    for Candidate { summary, lifetime } in candidates {
        let Some(expires_at_ms) = summary.expires_at_ms else {
            continue;
        };
        if let Some(until_ms) = holds.until(&summary, now_ms) {
            wake(until_ms);
            continue;
        }
        let jitter = jitter(&summary.id, expires_at_ms, jitter_bound(lifetime));
        let at_ms = due_at(expires_at_ms, lifetime).saturating_sub(millis(jitter));
        if at_ms > now_ms {
            wake(at_ms);
            continue;
        }
        let ahead = lifetime.map_or(Duration::ZERO, |lifetime| lifetime / 5) + jitter;
        due.push(Due { summary, ahead });
    }
    plan.due = due;
    plan
}

/// What the scheduler did, for the front end to show. Messages are the errors' own, which the
/// runtime masks.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// An instance was refreshed.
    Refreshed {
        /// The instance.
        id: String,
    },
    /// An instance's refresh failed; it backs off until `retry_at_ms`.
    Failed {
        /// The instance.
        id: String,
        /// `rejected`, `failed-transiently` or `failed`.
        outcome: &'static str,
        /// Why.
        message: String,
        /// When it is tried again, epoch milliseconds.
        retry_at_ms: u64,
    },
    /// The instances could not be listed; the scheduler tries again after `retry_in`.
    SourceFailed {
        /// Why.
        message: String,
        /// When it lists again.
        retry_in: Duration,
    },
}

/// The scheduler's parts: what it refreshes with and how.
pub struct Scheduler {
    /// Where the due work comes from.
    pub source: Arc<dyn Source>,
    /// The time; the engine's own, so that what is due here is due there.
    pub clock: Arc<dyn Clock>,
    /// The store, with its keys.
    pub opened: Arc<Opened>,
    /// The connectors instances name.
    pub registry: Arc<Mutex<Registry>>,
    /// The engine refreshes run on.
    pub engine: Arc<Engine>,
    /// How many at once, rejections before `needs-reauth`, history kept.
    pub options: RefreshOptions,
    /// How failing instances, and a failing source, back off.
    pub backoff: Backoff,
    /// Notified when instances change (a forced refresh): the scheduler plans again at once.
    pub wake: Arc<Notify>,
    /// Told of each refresh and failure.
    pub events: Arc<dyn Fn(Event) + Send + Sync>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Scheduler")
            .field("options", &self.options)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// Plans, refreshes what is due, sleeps until the next due time (at most [`MAX_IDLE`]) or a
    /// wake-up, until `shutdown` turns true. A batch of refreshes under way is finished first:
    /// a token the vendor answered is always written.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut holds = Holds::new(self.backoff);
        let mut source_failures = 0_u32;
        while !*shutdown.borrow() {
            let now_ms = self.clock.now_ms();
            let wake_at_ms = match self.source.candidates().await {
                Ok(candidates) => {
                    source_failures = 0;
                    let plan = plan(candidates, now_ms, &mut holds);
                    if !plan.due.is_empty() {
                        self.refresh(plan.due, &mut holds).await;
                        continue;
                    }
                    plan.wake_at_ms
                        .unwrap_or(u64::MAX)
                        .min(now_ms.saturating_add(millis(MAX_IDLE)))
                }
                Err(error) => {
                    source_failures = source_failures.saturating_add(1);
                    let retry_in = self.backoff.delay(source_failures).min(MAX_IDLE);
                    (self.events)(Event::SourceFailed {
                        message: error.to_string(),
                        retry_in,
                    });
                    now_ms.saturating_add(millis(retry_in))
                }
            };
            let wait = Duration::from_millis(wake_at_ms.saturating_sub(now_ms));
            tokio::select! {
                () = self.clock.sleep(wait) => {}
                () = self.wake.notified() => {}
                changed = shutdown.changed() => {
                    // The server is gone without a word: nothing to run for.
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// Refreshes `due` through engine-service, `options.jobs` at a time, and holds each by its
    /// outcome.
    async fn refresh(&self, due: Vec<Due>, holds: &mut Holds) {
        let versions: HashMap<String, u64> = due
            .iter()
            .map(|due| (due.summary.id.clone(), due.summary.version))
            .collect();
        let mut refresh = {
            let mut registry = self
                .registry
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Refresh::spawn(
                &self.opened,
                &mut registry,
                &self.engine,
                &self.options,
                due,
            )
        };
        while let Some(refreshed) = refresh.next().await {
            let Ok(refreshed) = refreshed else { continue };
            let now_ms = self.clock.now_ms();
            let id = refreshed.id;
            let failed = |outcome, message: String, holds: &mut Holds| {
                let retry_at_ms = holds.failed(&id, now_ms);
                Event::Failed {
                    id: id.clone(),
                    outcome,
                    message,
                    retry_at_ms,
                }
            };
            let event = match refreshed.outcome {
                Outcome::Refreshed(_) => {
                    holds.refreshed(&id);
                    Some(Event::Refreshed { id: id.clone() })
                }
                Outcome::Rejected { error, .. } => {
                    Some(failed("rejected", error.to_string(), holds))
                }
                Outcome::Transient(error) => {
                    Some(failed("failed-transiently", error.to_string(), holds))
                }
                Outcome::Failed(failure) => {
                    Some(failed("failed", failure_message(&failure), holds))
                }
                _ => {
                    let version = versions.get(&id).copied().unwrap_or_default();
                    holds.settled(&id, version, now_ms);
                    None
                }
            };
            if let Some(event) = event {
                (self.events)(event);
            }
        }
    }
}

/// What a [`engine_service::Failure`] says.
fn failure_message(failure: &engine_service::Failure) -> String {
    match failure {
        engine_service::Failure::NoConnector => "the instance records no connector".to_owned(),
        engine_service::Failure::ConnectorUnloadable { name } => {
            format!("connector `{name}` cannot be loaded")
        }
        engine_service::Failure::Store(error) => error.to_string(),
        engine_service::Failure::Run(error) => error.to_string(),
        _ => "the refresh failed".to_owned(),
    }
}

/// `duration` in whole milliseconds, saturating.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: u64 = 3_600_000;

    fn candidate(id: &str, version: u64, expires_at_ms: u64) -> Candidate {
        Candidate {
            summary: Summary {
                id: id.to_owned(),
                version,
                expires_at_ms: Some(expires_at_ms),
                connector: Some("demo".to_owned()),
                status: None,
                next_refresh_at_ms: None,
            },
            lifetime: Some(Duration::from_hours(1)),
        }
    }

    fn ids(plan: &Plan) -> Vec<&str> {
        plan.due.iter().map(|due| due.summary.id.as_str()).collect()
    }

    #[test]
    fn a_token_is_due_a_fifth_of_its_lifetime_before_it_expires() {
        assert_eq!(
            due_at(10 * HOUR_MS, Some(Duration::from_hours(1))),
            10 * HOUR_MS - 720_000
        );
        assert_eq!(due_at(10 * HOUR_MS, None), 10 * HOUR_MS);
        assert_eq!(due_at(1_000, Some(Duration::from_hours(1))), 0);
    }

    #[test]
    fn jitter_stays_within_its_bound_and_spreads_instances() {
        assert_eq!(
            jitter_bound(Some(Duration::from_mins(10))),
            Duration::from_secs(30)
        );
        assert_eq!(jitter_bound(Some(Duration::from_hours(24))), MAX_JITTER);
        assert_eq!(jitter_bound(None), Duration::ZERO);
        let bound = Duration::from_secs(30);
        let jitters: Vec<Duration> = (0..1000)
            .map(|index| jitter(&format!("cust{index}"), HOUR_MS, bound))
            .collect();
        assert!(jitters.iter().all(|jitter| *jitter <= bound));
        // Spread over the bound: both halves are used, and most values differ.
        assert!(jitters.iter().any(|jitter| *jitter < bound / 2));
        assert!(jitters.iter().any(|jitter| *jitter > bound / 2));
        let mut distinct = jitters.clone();
        distinct.sort();
        distinct.dedup();
        assert!(distinct.len() > 900, "{}", distinct.len());
        // The same instance and expiry, the same jitter; none without a bound.
        assert_eq!(
            jitter("cust1", HOUR_MS, bound),
            jitter("cust1", HOUR_MS, bound)
        );
        assert_eq!(jitter("cust1", HOUR_MS, Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn with_nothing_due_the_plan_wakes_at_the_earliest_due_time() {
        let now = 100 * HOUR_MS;
        let mut holds = Holds::default();
        let later = candidate("later", 1, now + 2 * HOUR_MS);
        let sooner = candidate("sooner", 1, now + HOUR_MS);
        let plan = plan(vec![later, sooner.clone()], now, &mut holds);
        assert!(plan.due.is_empty(), "{plan:?}");
        let expires = now + HOUR_MS;
        let lifetime = sooner.lifetime;
        let expected =
            due_at(expires, lifetime) - millis(jitter("sooner", expires, jitter_bound(lifetime)));
        assert_eq!(plan.wake_at_ms, Some(expected));
        // At that time it is due, refreshed a fifth of its lifetime (and its jitter) ahead.
        let plan = super::plan(vec![sooner], expected, &mut holds);
        assert_eq!(ids(&plan), ["sooner"]);
        assert!(plan.due[0].ahead >= Duration::from_mins(12));
        assert!(plan.due[0].ahead <= Duration::from_mins(12) + MAX_JITTER);
        assert!(
            super::plan(Vec::new(), now, &mut holds)
                .wake_at_ms
                .is_none()
        );
    }

    #[test]
    fn a_failing_refresh_backs_off_doubling_up_to_the_cap() {
        let backoff = Backoff {
            base: Duration::from_secs(30),
            cap: Duration::from_mins(2),
        };
        assert_eq!(backoff.delay(1), Duration::from_secs(30));
        assert_eq!(backoff.delay(2), Duration::from_mins(1));
        assert_eq!(backoff.delay(3), Duration::from_mins(2));
        assert_eq!(backoff.delay(40), Duration::from_mins(2));

        let now = 100 * HOUR_MS;
        let mut holds = Holds::new(backoff);
        let expired = || vec![candidate("expired", 1, now - HOUR_MS)];
        assert_eq!(ids(&plan(expired(), now, &mut holds)), ["expired"]);
        let until = holds.failed("expired", now);
        assert_eq!(until, now + 30_000);
        // Held until then, and the plan wakes for it.
        let held = plan(expired(), now + 29_999, &mut holds);
        assert!(held.due.is_empty());
        assert_eq!(held.wake_at_ms, Some(until));
        assert_eq!(ids(&plan(expired(), until, &mut holds)), ["expired"]);
        // A second failure waits twice as long; a success clears the count.
        assert_eq!(holds.failed("expired", until), until + 60_000);
        holds.refreshed("expired");
        assert_eq!(holds.failed("expired", until), until + 30_000);
    }

    /// The shipped demo connector, by the path an instance records.
    fn demo() -> String {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../connectors/demo.json")
            .display()
            .to_string()
    }

    /// A demo instance at `url`, authenticated at `at_ms` with a token of an hour.
    fn demo_instance(url: &str, at_ms: u64, secret: &str) -> engine_store::State {
        let serde_json::Value::Object(mut state) = serde_json::json!({
            "base.url": url,
            "client.id": "demo-client",
            "client.secret": secret,
            "access.token": "FAKE-old-token",
            "authentication.time": at_ms.to_string(),
            "expires_in": "3600",
            (engine_store::CONNECTOR_KEY): demo(),
        }) else {
            unreachable!()
        };
        // As `engine instances import` stores it: with the schedule of its keys.
        engine_runtime::estimated_schedule(&state, &engine_store::Schedule::default())
            .put(&mut state);
        state
    }

    /// Runs a scheduler over `store` on `clock` until `stop_after` events; returns them with
    /// the clock's time at each.
    async fn schedule(
        store: Arc<engine_store::MemoryStore>,
        clock: &engine_runtime::ManualClock,
        stop_after: usize,
    ) -> Vec<(Event, u64)> {
        let engine = engine_runtime::EngineBuilder::new()
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap();
        let plain: Arc<dyn InstanceStore> = store;
        let (stop, stopped) = watch::channel(false);
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        let time = clock.clone();
        let scheduler = Scheduler {
            source: Arc::new(StoreSource::new(Arc::clone(&plain))),
            clock: Arc::new(clock.clone()),
            opened: Arc::new(Opened::new(plain, None)),
            registry: Arc::new(Mutex::new(Registry::new())),
            engine: Arc::new(engine),
            options: RefreshOptions::default(),
            backoff: Backoff::default(),
            wake: Arc::new(Notify::new()),
            events: Arc::new(move |event| {
                let mut events = sink.lock().unwrap();
                events.push((event, time.now_ms()));
                if events.len() >= stop_after {
                    let _ = stop.send(true);
                }
            }),
        };
        // A guard on a scheduler that never stops, not a wait: the virtual clock never sleeps.
        tokio::time::timeout(Duration::from_mins(1), scheduler.run(stopped))
            .await
            .expect("the scheduler stops after its events");
        std::mem::take(&mut *events.lock().unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_loop_sleeps_until_the_due_time_then_refreshes() {
        let emulator =
            engine_emulator::Emulator::start(engine_emulator::EmulatorConfig::default(), 0)
                .await
                .unwrap();
        let start = 1_800_000_000_000;
        let clock = engine_runtime::ManualClock::new(start);
        let store = Arc::new(engine_store::MemoryStore::new());
        // Obtained 10 minutes ago: expires in 50, due in 38 (a fifth of the hour ahead).
        store.insert(
            "soon",
            demo_instance(&emulator.url(), start - 600_000, "demo-secret"),
        );

        let events = schedule(Arc::clone(&store), &clock, 1).await;
        assert!(
            matches!(&events[..], [(Event::Refreshed { id }, _)] if id == "soon"),
            "{events:?}"
        );
        let refreshed_at = events[0].1;
        let due = start + 38 * 60_000;
        assert!(
            (due - millis(MAX_JITTER)..=due).contains(&refreshed_at),
            "refreshed {} ms after the start",
            refreshed_at - start
        );
        assert_eq!(emulator.stats().token_requests, 1);
        emulator.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_loop_backs_off_a_failing_refresh() {
        let emulator =
            engine_emulator::Emulator::start(engine_emulator::EmulatorConfig::default(), 0)
                .await
                .unwrap();
        let start = 1_800_000_000_000;
        let clock = engine_runtime::ManualClock::new(start);
        let store = Arc::new(engine_store::MemoryStore::new());
        store.insert(
            "revoked",
            demo_instance(&emulator.url(), start - 7_200_000, "FAKE-wrong"),
        );

        let events = schedule(Arc::clone(&store), &clock, 3).await;
        let times: Vec<u64> = events
            .iter()
            .map(|(event, at)| {
                assert!(
                    matches!(event, Event::Failed { id, outcome: "rejected", .. } if id == "revoked"),
                    "{event:?}"
                );
                at - start
            })
            .collect();
        // At once, then 30 s and 60 s later; the third rejection marks it `needs-reauth`.
        assert_eq!(times, [0, 30_000, 90_000]);
        let state = store.load("revoked").await.unwrap().state;
        assert_eq!(
            engine_store::Schedule::read(&state).status,
            engine_store::ScheduleStatus::NeedsReauth
        );
        assert_eq!(emulator.stats().token_requests, 3);
        emulator.shutdown().await;
    }

    #[test]
    fn a_settled_instance_waits_unless_it_changes() {
        let now = 100 * HOUR_MS;
        let mut holds = Holds::default();
        holds.settled("cust", 3, now);
        let due = |version| vec![candidate("cust", version, now - HOUR_MS)];
        assert!(plan(due(3), now + 1, &mut holds).due.is_empty());
        assert_eq!(ids(&plan(due(4), now + 1, &mut holds)), ["cust"]);
        assert_eq!(
            ids(&plan(due(3), now + millis(SETTLE), &mut holds)),
            ["cust"]
        );
    }
}

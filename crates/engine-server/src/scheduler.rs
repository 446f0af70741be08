//! The refresh scheduler: sleeps until the earliest `next_refresh_at` of the store's schedule,
//! then refreshes what is due as engine-service's [`Refresh::start`] does (its two halves, so
//! that the shared registry is held only to start the refreshes): it claims the due instances (a lease each, so that processes sharing the store never refresh one twice) and
//! applies the runtime's refresh policy (backoff, cooldown, `Retry-After`, `needs-reauth`) to
//! each instance's schedule in the store. The scheduler keeps no state of its own: the store's
//! schedule is the one record of what is due when. The loop ([`Scheduler::run`]) runs on an
//! injected [`Clock`] (the runtime's: a [`engine_runtime::ManualClock`] moves instead of
//! sleeping, so tests never sleep). Once per [`PURGE_EVERY`], a pass also removes the store's
//! expired records (events, outbox, sign-in flows past their time).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine_runtime::{Clock, Engine};
use engine_service::{Opened, Outcome, Refresh, RefreshOptions, Registry};
use engine_store::{InstanceStore, Page};
use tokio::sync::{Notify, watch};

use crate::metrics::{Census, Metrics};

/// The longest the scheduler sleeps without reading the schedule again: instances that other
/// processes add or change are seen at least this often.
pub const MAX_IDLE: Duration = Duration::from_mins(1);

/// How often the scheduler removes the store's expired records (at its first pass, then at the
/// first pass this long after the last purge).
pub const PURGE_EVERY: Duration = Duration::from_mins(1);

/// How often the scheduler counts the instances by status for the metrics
/// (`engine_instances`): at its first pass, then at the first pass this long after the last
/// count. Counting reads every instance's summary; the due times are read from the store's
/// index at every pass instead.
pub const CENSUS_EVERY: Duration = Duration::from_mins(1);

/// The most batches of [`engine_service::events::PURGE_BATCH`] expired records one purge
/// removes; what is left waits for the next.
const PURGE_BATCHES: usize = 10;

/// How many due instances a pass of the scheduler claims per refresh it runs at once
/// (`--jobs`): the next pass claims more as soon as this one ends.
pub const CLAIMS_PER_JOB: usize = 4;

/// When the scheduler next looks at `store`, at `now_ms`: the earliest due time of its
/// schedule ([`InstanceStore::next_due_ms`], an index lookup in the SQL stores), at most
/// [`MAX_IDLE`] from now. An instance still due now (another process's claim holds it, or its
/// refresh failed without a new schedule) is looked at again after `lease`, when a claim on it
/// has ended.
pub async fn wake_at(
    store: &dyn InstanceStore,
    now_ms: u64,
    lease: Duration,
) -> Result<u64, engine_store::StoreError> {
    let mut wake_at_ms = now_ms.saturating_add(millis(MAX_IDLE));
    let Some(earliest) = store.next_due_ms(0).await? else {
        return Ok(wake_at_ms);
    };
    if earliest > now_ms {
        return Ok(wake_at_ms.min(earliest));
    }
    wake_at_ms = wake_at_ms.min(now_ms.saturating_add(millis(lease)));
    if let Some(next) = store.next_due_ms(now_ms.saturating_add(1)).await? {
        wake_at_ms = wake_at_ms.min(next);
    }
    Ok(wake_at_ms)
}

/// Counts the instances of `store` by status at `now_ms` (every page of its listing) for the
/// metrics: once per [`CENSUS_EVERY`], not at each pass.
async fn census(
    store: &dyn InstanceStore,
    now_ms: u64,
) -> Result<Census, engine_store::StoreError> {
    let mut census = Census::new(now_ms);
    let mut page = Page {
        limit: 1000,
        ..Page::default()
    };
    loop {
        let listing = store.list(page.clone()).await?;
        for summary in &listing.instances {
            census.count(summary);
        }
        match listing.next {
            Some(next) => page.after = Some(next),
            None => return Ok(census),
        }
    }
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
    /// An instance's refresh failed.
    Failed {
        /// The instance.
        id: String,
        /// `rejected`, `failed-transiently` or `failed`.
        outcome: &'static str,
        /// Why.
        message: String,
        /// When it is tried again (epoch milliseconds), as the runtime's policy scheduled it;
        /// `None` when it is not (it needs re-authentication, or the policy was not applied).
        retry_at_ms: Option<u64>,
    },
    /// The store could not be read or claimed from; the scheduler tries again after `retry_in`.
    StoreFailed {
        /// Why.
        message: String,
        /// When it reads the store again.
        retry_in: Duration,
    },
    /// The store's expired records could not be removed; the scheduler tries again after
    /// [`PURGE_EVERY`], and refreshes meanwhile as ever.
    PurgeFailed {
        /// Why.
        message: String,
    },
}

/// The scheduler's parts: what it refreshes with and how.
pub struct Scheduler {
    /// The time; the engine's own, so that what is due here is due there.
    pub clock: Arc<dyn Clock>,
    /// The store, with its keys.
    pub opened: Arc<Opened>,
    /// The connectors instances name.
    pub registry: Arc<Mutex<Registry>>,
    /// The engine refreshes run on.
    pub engine: Arc<Engine>,
    /// How many at once, rejections before `needs-reauth`, history kept, the claims' lease.
    pub options: RefreshOptions,
    /// Notified when instances change (a forced refresh): the scheduler looks again at once.
    pub wake: Arc<Notify>,
    /// Told of each refresh and failure.
    pub events: Arc<dyn Fn(Event) + Send + Sync>,
    /// Counts the refreshes, and the instances by status at each pass over the schedule.
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Scheduler")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// Refreshes what is due ([`Refresh::start`]), sleeps until the store's next due time
    /// ([`wake_at`]) or a wake-up, until `shutdown` turns true. A batch of refreshes under way
    /// is finished first: a token the vendor answered is always written. A store that fails is
    /// read again after the policy's first backoff, doubled per failure, at most [`MAX_IDLE`].
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut store_failures = 0_u32;
        let mut purge_at_ms = 0;
        let mut census_at_ms = 0;
        while !*shutdown.borrow() {
            let passed = match self.refresh().await {
                // A full pass: more are due now, claimed by the next pass at once.
                Ok(true) => continue,
                Ok(false) => {
                    if self.clock.now_ms() >= purge_at_ms {
                        purge_at_ms = self.clock.now_ms().saturating_add(millis(PURGE_EVERY));
                        self.purge().await;
                    }
                    let store = &**self.opened.plain();
                    let counted = if self.clock.now_ms() >= census_at_ms {
                        census_at_ms = self.clock.now_ms().saturating_add(millis(CENSUS_EVERY));
                        census(store, self.clock.now_ms()).await.map(Some)
                    } else {
                        Ok(None)
                    };
                    match counted {
                        Ok(counted) => {
                            if let Some(counted) = counted {
                                self.metrics.counted(counted);
                            }
                            wake_at(store, self.clock.now_ms(), self.options.lease).await
                        }
                        Err(error) => Err(error),
                    }
                    .map_err(engine_service::Error::from)
                }
                Err(error) => Err(error),
            };
            let now_ms = self.clock.now_ms();
            let wake_at_ms = match passed {
                Ok(wake_at_ms) => {
                    store_failures = 0;
                    wake_at_ms
                }
                Err(error) => {
                    store_failures = store_failures.saturating_add(1);
                    let doublings = store_failures.saturating_sub(1).min(31);
                    let retry_in = self
                        .options
                        .policy()
                        .first_backoff
                        .saturating_mul(1_u32 << doublings)
                        .min(MAX_IDLE);
                    (self.events)(Event::StoreFailed {
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

    /// Removes the store's expired records ([`InstanceStore::purge_expired_records`]), batch
    /// after batch while one is full, at most [`PURGE_BATCHES`]; tells of a failure.
    async fn purge(&self) {
        let store = self.opened.plain();
        let batch = engine_service::events::PURGE_BATCH;
        for _ in 0..PURGE_BATCHES {
            match store
                .purge_expired_records(None, self.clock.now_ms(), batch)
                .await
            {
                Ok(removed) if removed == batch => {}
                Ok(_) => return,
                Err(error) => {
                    (self.events)(Event::PurgeFailed {
                        message: error.to_string(),
                    });
                    return;
                }
            }
        }
    }

    /// Claims and refreshes due instances through engine-service, `options.jobs` at a time, and
    /// tells of each outcome. Claims at most [`CLAIMS_PER_JOB`] per job, so that no claim waits
    /// behind a long batch while its lease runs down; returns true when that stopped the
    /// claiming (more may be due now).
    async fn refresh(&self) -> Result<bool, engine_service::Error> {
        let options = RefreshOptions {
            max_claims: Some(self.options.jobs.max(1).saturating_mul(CLAIMS_PER_JOB)),
            ..self.options.clone()
        };
        let claimed = Refresh::claim(&self.opened, Arc::clone(&self.engine), &options).await?;
        let full = claimed.is_full();
        let mut refresh = {
            let mut registry = self
                .registry
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            claimed.spawn(&self.opened, &mut registry, &options)
        };
        // Whether a refresh of this pass took effect or was rescheduled: a pass whose every
        // refresh failed without a new schedule (a connector that does not load) is not
        // repeated at once, or it would claim the same instances again and again.
        let mut progressed = false;
        while let Some(refreshed) = refresh.next().await {
            let Ok(refreshed) = refreshed else { continue };
            progressed |= !matches!(refreshed.outcome, Outcome::Failed(_));
            self.metrics.refreshed(&refreshed, "schedule");
            let id = refreshed.id;
            let retry_at_ms = refreshed
                .transition
                .and_then(|transition| transition.retry_at_ms);
            let failed = |outcome, message| Event::Failed {
                id: id.clone(),
                outcome,
                message,
                retry_at_ms,
            };
            let event = match refreshed.outcome {
                Outcome::Refreshed(_) => Event::Refreshed { id: id.clone() },
                Outcome::Rejected { error, .. } => failed("rejected", error.to_string()),
                Outcome::Transient(error) => failed("failed-transiently", error.to_string()),
                Outcome::Failed(failure) => failed("failed", failure_message(&failure)),
                _ => continue,
            };
            (self.events)(event);
        }
        Ok(full && progressed)
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

    /// The shipped demo connector, by the path an instance records.
    fn demo() -> String {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../connectors/demo.json")
            .display()
            .to_string()
    }

    /// Demo instance `id` at `url`, authenticated at `at_ms` with a token of an hour.
    fn demo_instance(id: &str, url: &str, at_ms: u64, secret: &str) -> engine_store::State {
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
        engine_runtime::estimated_schedule(id, &state, &engine_store::Schedule::default())
            .put(&mut state);
        state
    }

    /// Runs a scheduler over `store` on `clock` until `stop_after` events; returns them with
    /// the clock's time at each, and the metrics it kept.
    async fn schedule(
        store: Arc<engine_store::MemoryStore>,
        clock: &engine_runtime::ManualClock,
        stop_after: usize,
    ) -> (Vec<(Event, u64)>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
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
            clock: Arc::new(clock.clone()),
            opened: Arc::new(Opened::new(plain, None)),
            registry: Arc::new(Mutex::new(Registry::new())),
            engine: Arc::new(engine),
            options: RefreshOptions::default(),
            wake: Arc::new(Notify::new()),
            metrics: Arc::clone(&metrics),
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
        let events = std::mem::take(&mut *events.lock().unwrap());
        (events, metrics)
    }

    /// The schedule `store` keeps for `id`.
    async fn schedule_of(store: &engine_store::MemoryStore, id: &str) -> engine_store::Schedule {
        engine_store::Schedule::read(&store.load(id).await.unwrap().state)
    }

    /// The wake-up is the store's next due time; an instance due now that a claim holds is
    /// looked at again after the lease, or at the next due time when sooner.
    #[tokio::test]
    async fn the_wake_up_is_the_next_due_time_or_the_end_of_a_claim() {
        const NOW: u64 = 1_800_000_000_000;
        let lease = Duration::from_secs(30);
        let store = engine_store::MemoryStore::new();
        let due_at = |at: Option<u64>| {
            let mut state = engine_store::State::new();
            engine_store::Schedule {
                next_refresh_at_ms: at,
                ..engine_store::Schedule::default()
            }
            .put(&mut state);
            state
        };
        assert_eq!(wake_at(&store, NOW, lease).await.unwrap(), NOW + 60_000);
        store.insert("never", due_at(None));
        store.insert("later", due_at(Some(NOW + 45_000)));
        assert_eq!(wake_at(&store, NOW, lease).await.unwrap(), NOW + 45_000);
        store.insert("held", due_at(Some(NOW - 1000)));
        let claimed = store.claim_due(NOW, 10, lease).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(wake_at(&store, NOW, lease).await.unwrap(), NOW + 30_000);
        store.insert("soon", due_at(Some(NOW + 10_000)));
        assert_eq!(wake_at(&store, NOW, lease).await.unwrap(), NOW + 10_000);
    }

    /// More instances due at once than a pass claims: the passes follow each other at once, so
    /// that every one is refreshed at its due time, none waiting for a lease to run out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_follow_each_other_while_more_are_due_than_a_pass_claims() {
        let emulator =
            engine_emulator::Emulator::start(engine_emulator::EmulatorConfig::default(), 0)
                .await
                .unwrap();
        let start = 1_800_000_000_000;
        let clock = engine_runtime::ManualClock::new(start);
        let store = Arc::new(engine_store::MemoryStore::new());
        let per_pass = RefreshOptions::default().jobs * CLAIMS_PER_JOB;
        let count = per_pass * 2 + 3;
        for n in 0..count {
            let id = format!("i{n:03}");
            // Obtained two hours ago: expired, due.
            let state = demo_instance(&id, &emulator.url(), start - 7_200_000, "demo-secret");
            store.insert(&id, state);
        }

        let (events, _) = schedule(Arc::clone(&store), &clock, count).await;
        let mut refreshed: Vec<&str> = events
            .iter()
            .filter_map(|(event, at_ms)| match event {
                Event::Refreshed { id } => {
                    assert_eq!(*at_ms, start, "{id} waited");
                    Some(id.as_str())
                }
                _ => None,
            })
            .collect();
        refreshed.sort_unstable();
        refreshed.dedup();
        assert_eq!(refreshed.len(), count, "{events:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_loop_sleeps_until_the_stored_due_time_then_refreshes() {
        let emulator =
            engine_emulator::Emulator::start(engine_emulator::EmulatorConfig::default(), 0)
                .await
                .unwrap();
        let start = 1_800_000_000_000;
        let clock = engine_runtime::ManualClock::new(start);
        let store = Arc::new(engine_store::MemoryStore::new());
        // Obtained 10 minutes ago: expires in 50, due when its schedule says (before then).
        store.insert(
            "soon",
            demo_instance("soon", &emulator.url(), start - 600_000, "demo-secret"),
        );
        let due = schedule_of(&store, "soon")
            .await
            .next_refresh_at_ms
            .unwrap();
        assert!((start + 1..start + 50 * 60_000).contains(&due), "{due}");
        // Records: one expired by the first pass, one that never expires.
        for (space, expires) in [("flows", Some(start)), ("keys", None)] {
            store
                .put_record(space, "a", serde_json::json!({}), expires, 0, 0)
                .await
                .unwrap();
        }

        let (events, metrics) = schedule(Arc::clone(&store), &clock, 1).await;
        assert_eq!(
            store.purge_expired_records(None, start, 10).await.unwrap(),
            0,
            "the scheduler removed the expired record"
        );
        assert!(
            store
                .get_record("keys", "a", start)
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            matches!(&events[..], [(Event::Refreshed { id }, _)] if id == "soon"),
            "{events:?}"
        );
        // Counted: one scheduled refresh, one vendor step, started at its due time on the dot.
        let text = metrics.render();
        for line in [
            format!(
                "engine_refreshes_total{{connector=\"{}\",trigger=\"schedule\",outcome=\"ok\"}} 1\n",
                demo()
            ),
            format!(
                "engine_refresh_step_seconds_count{{connector=\"{}\"}} 1\n",
                demo()
            ),
            "engine_scheduler_lag_seconds_bucket{le=\"0.1\"} 1\n".to_owned(),
            "engine_scheduler_lag_seconds_sum 0\n".to_owned(),
            "engine_lease_losses_total 0\n".to_owned(),
        ] {
            assert!(text.contains(&line), "{line} in {text}");
        }
        // Refreshed at the due time the store kept, not before, and due again by the new token.
        assert_eq!(events[0].1, due);
        let after = schedule_of(&store, "soon").await;
        assert!(after.next_refresh_at_ms.unwrap() > due, "{after:?}");
        assert_eq!(emulator.stats().token_requests, 1);
        emulator.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_loop_retries_a_rejected_refresh_by_the_runtime_policy_until_needs_reauth() {
        let emulator =
            engine_emulator::Emulator::start(engine_emulator::EmulatorConfig::default(), 0)
                .await
                .unwrap();
        let start = 1_800_000_000_000;
        let clock = engine_runtime::ManualClock::new(start);
        let store = Arc::new(engine_store::MemoryStore::new());
        store.insert(
            "revoked",
            demo_instance("revoked", &emulator.url(), start - 7_200_000, "FAKE-wrong"),
        );

        let (events, metrics) = schedule(Arc::clone(&store), &clock, 3).await;
        let attempts: Vec<(u64, Option<u64>)> = events
            .iter()
            .map(|(event, at)| match event {
                Event::Failed {
                    id,
                    outcome: "rejected",
                    retry_at_ms,
                    ..
                } if id == "revoked" => (*at, *retry_at_ms),
                _ => panic!("{event:?}"),
            })
            .collect();
        // At once; then each retry at the time the policy stored: 30 s, then 60 s, less up to a
        // fifth of jitter; the third rejection marks it `needs-reauth`, with no retry.
        let policy = RefreshOptions::default().policy();
        assert_eq!(attempts[0].0, start);
        for (index, first) in [(1, 30_000), (2, 60_000)] {
            let retry_at = attempts[index - 1].1.expect("a retry time");
            assert_eq!(attempts[index].0, retry_at, "{attempts:?}");
            let waited = retry_at - attempts[index - 1].0;
            assert!(
                (first - first / u64::from(policy.jitter_divisor)..=first).contains(&waited),
                "{attempts:?}"
            );
        }
        assert_eq!(attempts[2].1, None);
        let stored = schedule_of(&store, "revoked").await;
        assert_eq!(stored.status, engine_store::ScheduleStatus::NeedsReauth);
        assert_eq!(stored.consecutive_rejections, 3);
        assert_eq!(stored.next_refresh_at_ms, None);
        assert_eq!(emulator.stats().token_requests, 3);
        let rejected = format!(
            "engine_refreshes_total{{connector=\"{}\",trigger=\"schedule\",outcome=\"rejected\"}} 3\n",
            demo()
        );
        let text = metrics.render();
        assert!(text.contains(&rejected), "{text}");
        // The first attempt started 72 minutes after its due time (a fifth of the hour before
        // an expiry an hour ago, and the instance's jitter before that); each retry at the time
        // the policy stored: no lag.
        let lag_ms = 4_320_000 + engine_runtime::jitter_ms("revoked", 3_600_000);
        #[expect(
            clippy::cast_precision_loss,
            reason = "a lag of minutes, in milliseconds"
        )]
        let sum = format!(
            "engine_scheduler_lag_seconds_sum {}\n",
            lag_ms as f64 / 1000.0
        );
        for line in [
            "engine_scheduler_lag_seconds_bucket{le=\"0.1\"} 2\n",
            "engine_scheduler_lag_seconds_bucket{le=\"3600\"} 2\n",
            "engine_scheduler_lag_seconds_bucket{le=\"+Inf\"} 3\n",
            &sum,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        emulator.shutdown().await;
    }
}

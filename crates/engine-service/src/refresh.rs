//! The refresh policy: which instances of a store are due ([`due_instances`]), refreshing them
//! N at a time ([`Refresh`]), counting consecutive rejections and marking an instance
//! [`NEEDS_REAUTH`] at the limit, and recording each refresh in its history. It returns typed
//! [`Outcome`]s: what they say and what they exit with are the front end's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use engine_runtime::{
    Engine, Freshness, NoObserver, RefreshReason, RefreshReport, RefreshRequest, RunError,
    RunErrorKind,
};
use engine_spec::Connector;
use engine_store::{
    InstanceStore, Page, Schedule, ScheduleStatus, State, StoreError, StoreErrorKind, Summary,
};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::history::{self, Trigger, Warning};
use crate::{Error, ErrorKind, Opened, Registry, WRITE_LOCK_TIMEOUT};

/// The status an instance gets after too many consecutive rejected refreshes: it is no longer
/// refreshed until its credentials change or it signs in again.
pub const NEEDS_REAUTH: &str = "needs-reauth";

/// What to refresh, and how.
#[derive(Debug, Clone)]
pub struct RefreshOptions {
    /// Refresh tokens that expire within this; `None`: within a fifth of each token's lifetime.
    pub ahead: Option<Duration>,
    /// Only the instances of this connector (as recorded).
    pub connector: Option<String>,
    /// How many refreshes run at once (at least one).
    pub jobs: usize,
    /// After this many consecutive rejected refreshes, an instance is marked
    /// [`NEEDS_REAUTH`].
    pub max_failures: u64,
    /// How many refreshes each instance's history keeps.
    pub keep_history: usize,
    /// Why the refreshes run, as their history entries say.
    pub trigger: Trigger,
}

impl Default for RefreshOptions {
    /// Returns: a fifth of each lifetime ahead, every connector, 8 at once, 3 rejections,
    /// [`history::DEFAULT_KEEP`] entries, [`Trigger::Schedule`].
    fn default() -> Self {
        Self {
            ahead: None,
            connector: None,
            jobs: 8,
            max_failures: 3,
            keep_history: history::DEFAULT_KEEP,
            trigger: Trigger::Schedule,
        }
    }
}

/// An instance to consider, with how far ahead its token counts as due.
#[derive(Debug, Clone)]
pub struct Due {
    /// The instance, as the store lists it.
    pub summary: Summary,
    /// How far ahead of its expiry the token is refreshed.
    pub ahead: Duration,
}

/// How one instance's refresh ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum Outcome {
    /// Refreshed by this process: the last successful step.
    Refreshed(RefreshReport),
    /// Found fresh, or refreshed by another process meanwhile.
    Fresh,
    /// The vendor rejected the refresh: re-authentication is needed.
    Rejected {
        /// The refresh's error.
        error: RunError,
        /// The rejection count after this one, or why it was not recorded.
        count: Result<u64, StoreError>,
        /// The count at which the instance is marked [`NEEDS_REAUTH`].
        max_failures: u64,
    },
    /// A transient failure (network, 5xx, 429, a lock not obtained): the next run may succeed.
    Transient(RunError),
    /// Anything else.
    Failed(Failure),
    /// No token yet: left alone, to be provisioned (`reason` is
    /// [`RefreshReason::NotProvisioned`]) or signed in ([`RefreshReason::NoToken`]).
    NotProvisioned {
        /// Which of the two.
        reason: RefreshReason,
    },
    /// Nothing to refresh (a token that does not expire, `session.management: always`).
    Skipped,
}

/// Why a refresh failed other than by the vendor's rejection or a transient failure.
#[derive(Debug)]
#[non_exhaustive]
pub enum Failure {
    /// The instance records no connector.
    NoConnector,
    /// Its connector cannot be loaded ([`Refresh::take_load_errors`] says why).
    ConnectorUnloadable {
        /// The connector's name, as recorded.
        name: String,
    },
    /// The store failed reading or writing the instance.
    Store(StoreError),
    /// The refresh failed (an invalid connector, a store failure during it).
    Run(RunError),
}

/// One instance's refresh: its id, outcome, and what went wrong beside it.
#[derive(Debug)]
pub struct Refreshed {
    /// The instance.
    pub id: String,
    /// Its connector, as recorded.
    pub connector: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// What could not be recorded (history entries).
    pub warnings: Vec<Warning>,
}

/// The refreshes of the due instances of a store, running N at a time: read their outcomes
/// with [`Refresh::next`].
pub struct Refresh {
    tasks: JoinSet<Refreshed>,
    due: usize,
    load_errors: Vec<(String, Error)>,
}

/// Counts, the tasks and errors aside.
impl std::fmt::Debug for Refresh {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Refresh")
            .field("due", &self.due)
            .field("running", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl Refresh {
    /// Finds the due instances of the store ([`due_instances`]), loads their connectors through
    /// `registry` (once per name), and starts their refreshes on the current tokio runtime,
    /// `options.jobs` at a time. Fails only when the store cannot list its instances.
    pub async fn start(
        opened: &Opened,
        registry: &mut Registry,
        engine: Arc<Engine>,
        options: &RefreshOptions,
    ) -> Result<Self, Error> {
        let due = due_instances(&*opened.sealed(None), options).await?;
        Ok(Self::spawn(opened, registry, &engine, options, due))
    }

    /// Starts the refreshes of `due` (instances a caller listed: a scheduler, a forced refresh)
    /// as [`Refresh::start`] does, `options.jobs` at a time; `options.ahead` and
    /// `options.connector` are not looked at (each [`Due`] says how far ahead).
    pub fn spawn(
        opened: &Opened,
        registry: &mut Registry,
        engine: &Arc<Engine>,
        options: &RefreshOptions,
        due: Vec<Due>,
    ) -> Self {
        let count = due.len();
        let mut connectors: HashMap<String, Option<Arc<Connector>>> = HashMap::new();
        let mut load_errors = Vec::new();
        let semaphore = Arc::new(Semaphore::new(options.jobs.max(1)));
        let mut tasks = JoinSet::new();
        for Due { summary, ahead } in due {
            let connector = match summary.connector.as_deref() {
                Some(name) => connectors
                    .entry(name.to_owned())
                    .or_insert_with(|| match registry.get(name) {
                        Ok(connector) => Some(connector),
                        Err(error) => {
                            load_errors.push((name.to_owned(), error));
                            None
                        }
                    })
                    .clone(),
                None => None,
            };
            // Each instance's secrets are encrypted by its connector's rule.
            let store = opened.sealed(connector.as_deref());
            let engine = Arc::clone(engine);
            let semaphore = Arc::clone(&semaphore);
            let policy = Policy {
                max_failures: options.max_failures,
                keep: options.keep_history,
                trigger: options.trigger,
            };
            tasks.spawn(async move {
                let _permit = semaphore.acquire_owned().await;
                let Some(connector) = connector else {
                    let failure = match &summary.connector {
                        Some(name) => Failure::ConnectorUnloadable { name: name.clone() },
                        None => Failure::NoConnector,
                    };
                    return Refreshed {
                        id: summary.id,
                        connector: summary.connector,
                        outcome: Outcome::Failed(failure),
                        warnings: Vec::new(),
                    };
                };
                if summary.expires_at_ms.is_none()
                    && let Some(outcome) =
                        without_expiry(&*store, &connector, &summary.id, ahead).await
                {
                    return Refreshed {
                        id: summary.id,
                        connector: summary.connector,
                        outcome,
                        warnings: Vec::new(),
                    };
                }
                let (outcome, warnings) =
                    refresh_one(&engine, &*store, &connector, &summary.id, ahead, policy).await;
                Refreshed {
                    id: summary.id,
                    connector: summary.connector,
                    outcome,
                    warnings,
                }
            });
        }
        Self {
            tasks,
            due: count,
            load_errors,
        }
    }

    /// How many instances were due.
    pub fn len(&self) -> usize {
        self.due
    }

    /// True when no instance was due.
    pub fn is_empty(&self) -> bool {
        self.due == 0
    }

    /// The connectors that could not be loaded, by name, each once, in the order the due
    /// instances named them; emptied.
    pub fn take_load_errors(&mut self) -> Vec<(String, Error)> {
        std::mem::take(&mut self.load_errors)
    }

    /// The next refresh to end; `None` when every one has. A refresh that ended without an
    /// outcome (a panic) is [`ErrorKind::TaskFailed`].
    pub async fn next(&mut self) -> Option<Result<Refreshed, Error>> {
        let joined = self.tasks.join_next().await?;
        Some(joined.map_err(|error| {
            ErrorKind::TaskFailed {
                message: error.to_string(),
            }
            .into()
        }))
    }
}

/// The instances to consider, each with how far ahead its token counts as due: not marked
/// [`NEEDS_REAUTH`], of `options.connector`, with a known expiry within `options.ahead` (or a
/// fifth of its lifetime), and every one without a known expiry (the runtime's check decides
/// what it is when it is refreshed). Fails when the store cannot list its instances.
pub async fn due_instances(
    store: &dyn InstanceStore,
    options: &RefreshOptions,
) -> Result<Vec<Due>, Error> {
    let now_ms = u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or(0);
    let mut due = Vec::new();
    // With `ahead`, the store finds the due instances by its expiry index; otherwise each
    // instance's lifetime decides, read from its state.
    let mut page = Page {
        after: None,
        limit: 1000,
        connector: options.connector.clone(),
        expires_before_ms: options.ahead.map(|ahead| {
            now_ms.saturating_add(u64::try_from(ahead.as_millis()).unwrap_or(u64::MAX))
        }),
        ..Page::default()
    };
    loop {
        let listing = store.list(page.clone()).await?;
        for summary in listing.instances {
            if summary.status.as_deref() == Some(NEEDS_REAUTH) {
                continue;
            }
            let Some(expires_at) = summary.expires_at_ms else {
                let ahead = options.ahead.unwrap_or_default();
                due.push(Due { summary, ahead });
                continue;
            };
            let ahead = if let Some(ahead) = options.ahead {
                ahead
            } else {
                // One that cannot be read fails the same way when refreshed: it is reported with
                // the others.
                let Ok(read) = store.load(&summary.id).await else {
                    due.push(Due {
                        summary,
                        ahead: Duration::ZERO,
                    });
                    continue;
                };
                lifetime_of(&read.state).map_or(Duration::ZERO, |lifetime| lifetime / 5)
            };
            let ahead_ms = u64::try_from(ahead.as_millis()).unwrap_or(u64::MAX);
            if expires_at <= now_ms.saturating_add(ahead_ms) {
                due.push(Due { summary, ahead });
            }
        }
        match listing.next {
            Some(next) => page.after = Some(next),
            // The expiry index lists no instance without an expiry: those are listed next.
            None if page.expires_before_ms.is_some() => {
                page = Page {
                    after: None,
                    expires_before_ms: None,
                    expiry_unknown: true,
                    ..page
                };
            }
            None => return Ok(due),
        }
    }
}

/// What to do with an instance whose expiry the store does not know, by the runtime's own check
/// at `ahead` from now: `None` to refresh it (its connector knows an expiry, and it is due);
/// otherwise never provisioned, or nothing to refresh.
async fn without_expiry(
    store: &dyn InstanceStore,
    connector: &Connector,
    id: &str,
    ahead: Duration,
) -> Option<Outcome> {
    let read = match store.load(id).await {
        Ok(read) => read,
        Err(error) => return Some(Outcome::Failed(Failure::Store(error))),
    };
    let now_ms = u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or(0);
    let at_ms = now_ms.saturating_add(u64::try_from(ahead.as_millis()).unwrap_or(u64::MAX));
    match crate::freshness(connector, &read.state, at_ms) {
        Freshness::Stale(RefreshReason::Expired { .. }) => None,
        // Written before schedules: the runtime's refresh finds it fresh and writes its schedule.
        Freshness::Fresh(Some(_)) if Schedule::of(&read.state).is_none() => None,
        Freshness::Stale(reason @ (RefreshReason::NotProvisioned | RefreshReason::NoToken)) => {
            Some(Outcome::NotProvisioned { reason })
        }
        _ => Some(Outcome::Skipped),
    }
}

/// A token's lifetime from the engine's bookkeeping keys (`expires_in` or
/// `oauth.user.refresh_interval`, seconds); `None` when neither is a number.
pub fn lifetime_of(state: &State) -> Option<Duration> {
    ["expires_in", "oauth.user.refresh_interval"]
        .iter()
        .find_map(|key| match state.get(*key)? {
            serde_json::Value::Number(number) => number.as_u64(),
            serde_json::Value::String(text) => text.trim().parse().ok(),
            _ => None,
        })
        .map(Duration::from_secs)
}

/// What [`refresh_one`] records and counts, from the [`RefreshOptions`].
#[derive(Debug, Clone, Copy)]
struct Policy {
    max_failures: u64,
    keep: usize,
    trigger: Trigger,
}

/// Refreshes one instance, records its history and its consecutive rejections; returns the
/// outcome and the warnings of its history.
async fn refresh_one(
    engine: &Engine,
    store: &dyn InstanceStore,
    connector: &Connector,
    id: &str,
    ahead: Duration,
    policy: Policy,
) -> (Outcome, Vec<Warning>) {
    let Policy {
        max_failures,
        keep,
        trigger,
    } = policy;
    let recorder = history::Recorder::new(&NoObserver);
    let request = RefreshRequest {
        connector,
        instance: id,
        ahead,
    };
    let result = engine.refresh(&request, store, &recorder).await;
    let reports = recorder.take();
    let warnings = history::record(store, id, &reports, trigger, keep).await;
    let outcome = match result {
        Ok(_) => match set_failures(store, id, false, max_failures).await {
            Err(error) => Outcome::Failed(Failure::Store(error)),
            Ok(_) => match reports
                .into_iter()
                .rev()
                .find(|report| report.error.is_none())
            {
                Some(report) => Outcome::Refreshed(report),
                None => Outcome::Fresh,
            },
        },
        Err(error) => match classify(&error) {
            Class::Rejected => {
                let count = set_failures(store, id, true, max_failures)
                    .await
                    .map(Option::unwrap_or_default);
                Outcome::Rejected {
                    error,
                    count,
                    max_failures,
                }
            }
            Class::Transient => Outcome::Transient(error),
            Class::Failed => Outcome::Failed(Failure::Run(error)),
        },
    };
    (outcome, warnings)
}

/// The kinds of failed refreshes.
enum Class {
    Rejected,
    Transient,
    Failed,
}

/// Which kind a failed refresh is.
fn classify(error: &RunError) -> Class {
    match error.kind() {
        RunErrorKind::AuthFailed { status, .. } if *status == 429 || *status >= 500 => {
            Class::Transient
        }
        RunErrorKind::AuthFailed { .. }
        | RunErrorKind::NoToken { .. }
        | RunErrorKind::TokenRejected { .. }
        | RunErrorKind::NotAuthorized { .. } => Class::Rejected,
        RunErrorKind::Transport { .. }
        | RunErrorKind::TimedOut { .. }
        | RunErrorKind::CoolingDown { .. } => Class::Transient,
        RunErrorKind::Store(store)
            if matches!(store.kind(), StoreErrorKind::LockTimeout { .. }) =>
        {
            Class::Transient
        }
        _ => Class::Failed,
    }
}

/// Clears the rejection count and a [`NEEDS_REAUTH`] mark after a success outside a scheduled
/// refresh (a run that obtained a token, a sign-in). Returns a [`Warning`] when they could not
/// be cleared.
pub async fn clear_needs_reauth(store: &dyn InstanceStore, id: &str) -> Result<(), Warning> {
    set_failures(store, id, false, 0)
        .await
        .map(|_| ())
        .map_err(|error| Warning::FailuresKept {
            instance: id.to_owned(),
            error,
        })
}

/// Counts one more rejection (`rejected`), or clears the count and the status after a success;
/// marks the instance [`NEEDS_REAUTH`] at `max_failures`. Under the instance's lock, so that it
/// never lands between a refresh's read and its write. Returns the new count.
async fn set_failures(
    store: &dyn InstanceStore,
    id: &str,
    rejected: bool,
    max_failures: u64,
) -> Result<Option<u64>, StoreError> {
    // The common case, a success on an instance with nothing to clear, takes no lock.
    if !rejected {
        let read = store.load(id).await?;
        if !Schedule::read(&read.state).has_failures() {
            return Ok(None);
        }
    }
    let mut count = None;
    // Quietly: a run or a refresh holding the lock is the normal case here.
    let quiet = || {};
    engine_store::update(store, id, Some(WRITE_LOCK_TIMEOUT), &quiet, |state| {
        let mut schedule = Schedule::read(state);
        if rejected {
            schedule.consecutive_failures = schedule.consecutive_failures.saturating_add(1);
            schedule.consecutive_rejections = schedule.consecutive_rejections.saturating_add(1);
            if u64::from(schedule.consecutive_rejections) >= max_failures {
                schedule.status = ScheduleStatus::NeedsReauth;
                schedule.next_refresh_at_ms = None;
            }
            count = Some(u64::from(schedule.consecutive_rejections));
            schedule.put(state);
            return Ok(true);
        }
        if !schedule.has_failures() {
            return Ok(false);
        }
        schedule.cleared().put(state);
        Ok(true)
    })
    .await?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use engine_emulator::{Emulator, EmulatorConfig};
    use engine_runtime::EngineBuilder;
    use engine_store::MemoryStore;
    use serde_json::json;

    use super::*;

    /// The shipped demo connector (client credentials through `ON REFRESH`), by the path an
    /// instance records.
    fn demo() -> String {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../connectors/demo.json")
            .display()
            .to_string()
    }

    /// An instance of the demo connector at `url`, authenticated `ago` seconds before now with
    /// a token of an hour, with `secret` and recorded as of `connector`.
    fn instance(url: &str, ago: u64, secret: &str, connector: Option<&str>) -> State {
        let now_ms = u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap();
        let mut state = json!({
            "base.url": url,
            "client.id": "demo-client",
            "client.secret": secret,
            "access.token": "FAKE-old-token",
            "authentication.time": (now_ms - ago * 1000).to_string(),
            "expires_in": "3600",
        });
        if let Some(connector) = connector {
            state[engine_store::CONNECTOR_KEY] = connector.into();
        }
        let serde_json::Value::Object(mut state) = state else {
            unreachable!()
        };
        // As `engine instances import` stores it: with the schedule of its keys.
        engine_runtime::estimated_schedule(&state, &Schedule::default()).put(&mut state);
        state
    }

    /// Every outcome of one refresh, by instance, sorted.
    async fn refresh_all(
        store: &Arc<MemoryStore>,
        options: &RefreshOptions,
    ) -> (Vec<Refreshed>, Vec<(String, Error)>) {
        let plain: Arc<dyn InstanceStore> = Arc::clone(store) as Arc<dyn InstanceStore>;
        let opened = Opened::new(plain, None);
        let engine = Arc::new(EngineBuilder::new().build().unwrap());
        let mut registry = Registry::new();
        let mut refresh = Refresh::start(&opened, &mut registry, engine, options)
            .await
            .unwrap();
        let load_errors = refresh.take_load_errors();
        let mut outcomes = Vec::new();
        while let Some(refreshed) = refresh.next().await {
            outcomes.push(refreshed.unwrap());
        }
        outcomes.sort_by(|one, other| one.id.cmp(&other.id));
        (outcomes, load_errors)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn due_instances_are_refreshed_and_rejections_mark_needs_reauth() {
        let emulator = Emulator::start(EmulatorConfig::default(), 0).await.unwrap();
        let url = emulator.url();
        let demo = demo();
        let store = Arc::new(MemoryStore::new());
        store.insert("expired", instance(&url, 7200, "demo-secret", Some(&demo)));
        store.insert("fresh", instance(&url, 60, "demo-secret", Some(&demo)));
        store.insert("revoked", instance(&url, 7200, "FAKE-wrong", Some(&demo)));
        store.insert("orphan", instance(&url, 7200, "demo-secret", None));
        store.insert(
            "lost",
            instance(&url, 7200, "demo-secret", Some("missing.json")),
        );
        let options = RefreshOptions {
            max_failures: 2,
            ..RefreshOptions::default()
        };

        let (outcomes, load_errors) = refresh_all(&store, &options).await;
        let ids: Vec<&str> = outcomes
            .iter()
            .map(|refreshed| refreshed.id.as_str())
            .collect();
        assert_eq!(ids, ["expired", "lost", "orphan", "revoked"]);
        assert!(
            matches!(&outcomes[0].outcome, Outcome::Refreshed(report) if report.status == Some(200)),
            "{outcomes:?}"
        );
        assert!(matches!(
            &outcomes[1].outcome,
            Outcome::Failed(Failure::ConnectorUnloadable { name }) if name == "missing.json"
        ));
        assert!(matches!(
            &outcomes[2].outcome,
            Outcome::Failed(Failure::NoConnector)
        ));
        assert!(
            matches!(&outcomes[3].outcome, Outcome::Rejected { count: Ok(1), .. }),
            "{outcomes:?}"
        );
        assert!(
            outcomes
                .iter()
                .all(|refreshed| refreshed.warnings.is_empty())
        );
        assert_eq!(load_errors.len(), 1);
        assert!(matches!(
            load_errors[0].1.kind(),
            ErrorKind::ConnectorUnreadable { .. }
        ));
        assert_eq!(emulator.stats().client_credentials_grants, 1);

        // The refresh is in the history, with fingerprints and never a token.
        let history = store.history("expired").await.unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(
            (&history[0]["trigger"], &history[0]["outcome"]),
            (&json!("schedule"), &json!("ok"))
        );
        assert!(!history[0].to_string().contains("FAKE-old-token"));

        // The second rejection marks the instance; a marked one is no longer due.
        let (outcomes, _) = refresh_all(&store, &options).await;
        let revoked = outcomes.iter().find(|refreshed| refreshed.id == "revoked");
        assert!(
            matches!(
                revoked.map(|refreshed| &refreshed.outcome),
                Some(Outcome::Rejected { count: Ok(2), .. })
            ),
            "{outcomes:?}"
        );
        let state = store.load("revoked").await.unwrap().state;
        assert_eq!(Schedule::read(&state).status, ScheduleStatus::NeedsReauth);
        let due = due_instances(&*store, &options).await.unwrap();
        assert!(due.iter().all(|due| due.summary.id != "revoked"), "{due:?}");

        // A success elsewhere (a sign-in) clears the mark and the count: it is due again.
        clear_needs_reauth(&*store, "revoked").await.unwrap();
        let state = store.load("revoked").await.unwrap().state;
        assert!(!Schedule::read(&state).has_failures());
        let due = due_instances(&*store, &options).await.unwrap();
        assert!(due.iter().any(|due| due.summary.id == "revoked"), "{due:?}");
        emulator.shutdown().await;
    }

    #[tokio::test]
    async fn ahead_makes_fresh_tokens_due_and_the_connector_filters() {
        let store = MemoryStore::new();
        store.insert(
            "fresh",
            instance("http://127.0.0.1:1", 60, "s", Some("a.json")),
        );
        store.insert(
            "other",
            instance("http://127.0.0.1:1", 60, "s", Some("b.json")),
        );
        let ids = |due: Vec<Due>| -> Vec<String> {
            let mut ids: Vec<String> = due.into_iter().map(|due| due.summary.id).collect();
            ids.sort();
            ids
        };
        let by_lifetime = due_instances(&store, &RefreshOptions::default())
            .await
            .unwrap();
        assert!(by_lifetime.is_empty(), "{by_lifetime:?}");
        let ahead = RefreshOptions {
            ahead: Some(Duration::from_hours(2)),
            ..RefreshOptions::default()
        };
        assert_eq!(
            ids(due_instances(&store, &ahead).await.unwrap()),
            ["fresh", "other"]
        );
        let only_a = RefreshOptions {
            connector: Some("a.json".to_owned()),
            ..ahead
        };
        assert_eq!(
            ids(due_instances(&store, &only_a).await.unwrap()),
            ["fresh"]
        );
    }
}

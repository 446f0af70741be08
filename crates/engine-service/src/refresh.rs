//! The refresh policy: claiming the due instances of a store ([`InstanceStore::claim_due`]: a
//! lease, renewed while the vendor call runs and released after the write, so that processes
//! sharing a store never refresh an instance twice), refreshing them N at a time ([`Refresh`]),
//! and the failure state machine ([`RefreshPolicy`]: a failed refresh backs off and cools down,
//! consecutive rejections mark an instance [`NEEDS_REAUTH`], a success clears it). Each refresh
//! and each change of status ([`Transition`]) goes to the instance's history, and each change
//! of status is published as an event ([`crate::events`]). It returns typed
//! [`Outcome`]s and [`Transition`]s: what they say and what they exit with are the front end's.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use engine_runtime::{
    Engine, Freshness, NoObserver, RefreshOutcome, RefreshPolicy, RefreshReason, RefreshReport,
    RefreshRequest, RunError, RunErrorKind, SeededJitter,
};
use engine_spec::Connector;
use engine_store::{
    Claim, InstanceStore, Page, Schedule, ScheduleStatus, State, StoreError, StoreErrorKind,
    Summary,
};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::error::Warning;
use crate::events::{self, EventType, NewEvent};
use crate::history::{self, Trigger};
use crate::status::DEFAULT_KEEP;
pub use crate::status::Transition;
use crate::{Error, ErrorKind, Opened, Registry, WRITE_LOCK_TIMEOUT};

/// The status an instance gets after too many consecutive rejected refreshes: it is no longer
/// refreshed until its credentials change or it signs in again.
pub const NEEDS_REAUTH: &str = "needs-reauth";

/// How many due instances one claim takes.
const CLAIM_BATCH: usize = 100;

/// What to refresh, and how.
#[derive(Debug, Clone)]
pub struct RefreshOptions {
    /// Refresh tokens that expire within this; `None`: those their schedule says are due (a
    /// fifth of each token's lifetime ahead, or a retry's time).
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
    /// How long a claim on a due instance keeps other processes off it; renewed while its
    /// refresh runs, released after its write. A process that dies loses its claims after this.
    pub lease: Duration,
    /// Why the refreshes run, as their history entries say.
    pub trigger: Trigger,
    /// Claim at most this many due instances ([`Refresh::claim`]); `None`: every one due. A
    /// scheduler that runs pass after pass claims a few at a time, so that a claim is not held
    /// (and its lease not run down) while the refreshes before it wait for their turn.
    pub max_claims: Option<usize>,
}

impl Default for RefreshOptions {
    /// Returns: due by each schedule, every connector, 8 at once, 3 rejections,
    /// [`DEFAULT_KEEP`] entries, a lease of a minute, [`Trigger::Schedule`], every due instance
    /// claimed.
    fn default() -> Self {
        Self {
            ahead: None,
            connector: None,
            jobs: 8,
            max_failures: 3,
            keep_history: DEFAULT_KEEP,
            lease: Duration::from_mins(1),
            trigger: Trigger::Schedule,
            max_claims: None,
        }
    }
}

impl RefreshOptions {
    /// The failure state machine these options ask for: the runtime's defaults, with
    /// [`RefreshOptions::max_failures`] rejections.
    pub fn policy(&self) -> RefreshPolicy {
        RefreshPolicy {
            max_rejections: u32::try_from(self.max_failures).unwrap_or(u32::MAX),
            ..RefreshPolicy::default()
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
        /// The consecutive rejections after this one, or why they were not recorded.
        count: Result<u64, StoreError>,
        /// The count at which the instance is marked [`NEEDS_REAUTH`].
        max_failures: u64,
    },
    /// A transient failure (network, 5xx, 429, a lock not obtained): retried after a backoff.
    Transient(RunError),
    /// Anything else.
    Failed(Failure),
    /// No token yet: left alone, to be provisioned (`reason` is
    /// [`RefreshReason::NotProvisioned`]) or signed in ([`RefreshReason::NoToken`]).
    NotProvisioned {
        /// Which of the two.
        reason: RefreshReason,
    },
    /// Nothing to refresh (a token that does not expire, `session.management: always`), or
    /// not this process's to refresh (another process's claim took it meanwhile, or it cools
    /// down).
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
    /// The change of status it made, if any.
    pub transition: Option<Transition>,
    /// What could not be recorded (history entries, a claim not released).
    pub warnings: Vec<Warning>,
    /// How late its refresh started after its schedule's due time (waiting for a claim, then
    /// for one of the `jobs`); `None` unless it was claimed by its schedule.
    pub lag: Option<Duration>,
    /// True when its claim's lease was found lost while the refresh ran (it ended before it
    /// was renewed; another process may have claimed it): the write stays fenced by the
    /// version.
    pub lease_lost: bool,
    /// How long each step of the refresh took (its call to the vendor; the last step's with
    /// its write), in order; none when nothing was sent.
    pub vendor_time: Vec<Duration>,
}

impl Refreshed {
    fn new(summary: Summary, outcome: Outcome) -> Self {
        Self {
            id: summary.id,
            connector: summary.connector,
            outcome,
            transition: None,
            warnings: Vec::new(),
            lag: None,
            lease_lost: false,
            vendor_time: Vec::new(),
        }
    }
}

/// The refreshes of the due instances of a store, running N at a time: read their outcomes
/// with [`Refresh::next`].
pub struct Refresh {
    tasks: JoinSet<Refreshed>,
    due: usize,
    load_errors: Vec<(String, Error)>,
    /// Claims taken on instances left alone (another connector's): released once every refresh
    /// has ended, so that no claim of this run takes them twice.
    held: Vec<Claim>,
    store: Arc<dyn InstanceStore>,
}

/// Counts, the tasks and errors aside.
impl std::fmt::Debug for Refresh {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Refresh")
            .field("due", &self.due)
            .field("running", &self.tasks.len())
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl Refresh {
    /// Claims the due instances of the store (those whose schedule's next refresh is due, or
    /// due within `options.ahead`) for `options.lease`, lists the ones whose expiry the store
    /// does not know (to report those never provisioned), loads their connectors through
    /// `registry` (once per name), and starts their refreshes on the current tokio runtime,
    /// `options.jobs` at a time: [`Refresh::claim`], then [`Claimed::spawn`]. Fails only when
    /// the store cannot claim or list.
    pub async fn start(
        opened: &Opened,
        registry: &mut Registry,
        engine: Arc<Engine>,
        options: &RefreshOptions,
    ) -> Result<Self, Error> {
        Ok(Self::claim(opened, engine, options)
            .await?
            .spawn(opened, registry, options))
    }

    /// The first half of [`Refresh::start`], which needs no registry (a caller that shares one
    /// holds it only for [`Claimed::spawn`]): claims the due instances and lists those whose
    /// expiry the store does not know. Claims not spawned lapse at the end of their lease.
    pub async fn claim(
        opened: &Opened,
        engine: Arc<Engine>,
        options: &RefreshOptions,
    ) -> Result<Claimed, Error> {
        // Claims, connectors and schedules are read as stored: nothing secret is decrypted here
        // (an instance that cannot be decrypted fails its refresh, with why).
        let store = Arc::clone(opened.plain());
        let now_ms = engine.now_ms();
        let ahead_ms = options.ahead.map_or(0, millis);
        let mut due = Vec::new();
        let mut held = Vec::new();
        let mut claimed = HashSet::new();
        let most = options.max_claims.unwrap_or(usize::MAX);
        loop {
            let room = most.saturating_sub(claimed.len());
            if room == 0 {
                break;
            }
            let claims = store
                .claim_due(
                    now_ms.saturating_add(ahead_ms),
                    CLAIM_BATCH.min(room),
                    options.lease,
                )
                .await?;
            if claims.is_empty() {
                break;
            }
            for claim in claims {
                claimed.insert(claim.id.clone());
                let read = match store.load(&claim.id).await {
                    Ok(read) => read,
                    // Deleted meanwhile: nothing to refresh.
                    Err(error) if matches!(error.kind(), StoreErrorKind::NotFound { .. }) => {
                        let _ = store.release(&claim).await;
                        continue;
                    }
                    Err(error) => return Err(error.into()),
                };
                let summary = Summary::of(claim.id.clone(), read.version, &read.state);
                if options
                    .connector
                    .as_ref()
                    .is_some_and(|only| summary.connector.as_ref() != Some(only))
                {
                    held.push(claim);
                    continue;
                }
                // Claimed means due: refreshed whatever its token's lifetime says.
                let ahead = options.ahead.unwrap_or_else(|| {
                    Duration::from_millis(summary.expires_at_ms.map_or(0, |expires| {
                        expires.saturating_sub(now_ms).saturating_add(1)
                    }))
                });
                due.push((Due { summary, ahead }, Take::Claimed(claim)));
            }
        }
        // The instances whose expiry the store does not know are never due by their schedule:
        // they are looked at (never sent for) to report those that need provisioning.
        let mut page = Page {
            limit: 1000,
            connector: options.connector.clone(),
            expiry_unknown: true,
            ..Page::default()
        };
        loop {
            let listing = store.list(page.clone()).await?;
            for summary in listing.instances {
                if summary.status.as_deref() == Some(NEEDS_REAUTH) || claimed.contains(&summary.id)
                {
                    continue;
                }
                let ahead = options.ahead.unwrap_or_default();
                due.push((Due { summary, ahead }, Take::Look));
            }
            match listing.next {
                Some(next) => page.after = Some(next),
                None => break,
            }
        }
        let full = claimed.len() >= most;
        Ok(Claimed {
            due,
            held,
            engine,
            full,
        })
    }

    /// Starts the refreshes of `due` (instances a caller listed and claimed, if it shares the
    /// store with other processes) as [`Refresh::start`] does, `options.jobs` at a time;
    /// `options.ahead` and `options.connector` are not looked at (each [`Due`] says how far
    /// ahead).
    pub fn spawn(
        opened: &Opened,
        registry: &mut Registry,
        engine: &Arc<Engine>,
        options: &RefreshOptions,
        due: Vec<Due>,
    ) -> Self {
        let due = due.into_iter().map(|due| (due, Take::Listed)).collect();
        Self::spawn_claimed(opened, registry, engine, options, due)
    }

    /// [`Refresh::spawn`], each instance with how it was taken.
    fn spawn_claimed(
        opened: &Opened,
        registry: &mut Registry,
        engine: &Arc<Engine>,
        options: &RefreshOptions,
        due: Vec<(Due, Take)>,
    ) -> Self {
        let count = due.len();
        let mut connectors: HashMap<String, Option<Arc<Connector>>> = HashMap::new();
        let mut load_errors = Vec::new();
        let semaphore = Arc::new(Semaphore::new(options.jobs.max(1)));
        let mut tasks = JoinSet::new();
        for (Due { summary, ahead }, take) in due {
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
            let settings = Settings {
                policy: options.policy(),
                max_failures: options.max_failures,
                keep: options.keep_history,
                lease: options.lease,
                trigger: options.trigger,
            };
            tasks.spawn(async move {
                let _permit = semaphore.acquire_owned().await;
                let lag = match &take {
                    Take::Claimed(_) => summary
                        .next_refresh_at_ms
                        .map(|due| Duration::from_millis(engine.now_ms().saturating_sub(due))),
                    Take::Listed | Take::Look => None,
                };
                let mut refreshed = if let Some(connector) = connector {
                    consider(
                        &engine, &*store, &connector, summary, ahead, &take, settings,
                    )
                    .await
                } else {
                    let failure = match &summary.connector {
                        Some(name) => Failure::ConnectorUnloadable { name: name.clone() },
                        None => Failure::NoConnector,
                    };
                    Refreshed::new(summary, Outcome::Failed(failure))
                };
                refreshed.lag = lag;
                if let Take::Claimed(claim) = &take
                    && let Err(error) = store.release(claim).await
                {
                    refreshed.warnings.push(Warning::ClaimNotReleased {
                        instance: claim.id.clone(),
                        error,
                    });
                }
                refreshed
            });
        }
        Self {
            tasks,
            due: count,
            load_errors,
            held: Vec::new(),
            store: Arc::clone(opened.plain()),
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

    /// The next refresh to end; `None` when every one has (and the claims on instances left
    /// alone are released). A refresh that ended without an outcome (a panic) is
    /// [`ErrorKind::TaskFailed`].
    pub async fn next(&mut self) -> Option<Result<Refreshed, Error>> {
        let Some(joined) = self.tasks.join_next().await else {
            // A claim not released lapses at the end of its lease.
            for claim in std::mem::take(&mut self.held) {
                let _ = self.store.release(&claim).await;
            }
            return None;
        };
        Some(joined.map_err(|error| {
            ErrorKind::TaskFailed {
                message: error.to_string(),
            }
            .into()
        }))
    }
}

/// The due instances [`Refresh::claim`] took, to be refreshed by [`Claimed::spawn`].
pub struct Claimed {
    due: Vec<(Due, Take)>,
    held: Vec<Claim>,
    engine: Arc<Engine>,
    full: bool,
}

impl Claimed {
    /// True when [`RefreshOptions::max_claims`] stopped the claiming: more may be due now.
    pub fn is_full(&self) -> bool {
        self.full
    }
}

/// Counts, the claims aside.
impl std::fmt::Debug for Claimed {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Claimed")
            .field("due", &self.due.len())
            .field("held", &self.held.len())
            .field("full", &self.full)
            .finish_non_exhaustive()
    }
}

impl Claimed {
    /// Loads the connectors of the claimed instances through `registry` (once per name) and
    /// starts their refreshes on the current tokio runtime, `options.jobs` at a time (the
    /// second half of [`Refresh::start`]).
    pub fn spawn(
        self,
        opened: &Opened,
        registry: &mut Registry,
        options: &RefreshOptions,
    ) -> Refresh {
        let mut refresh = Refresh::spawn_claimed(opened, registry, &self.engine, options, self.due);
        refresh.held = self.held;
        refresh
    }
}

/// What [`refresh_one`] needs of the [`RefreshOptions`].
#[derive(Debug, Clone, Copy)]
struct Settings {
    policy: RefreshPolicy,
    max_failures: u64,
    keep: usize,
    lease: Duration,
    trigger: Trigger,
}

/// How an instance came to be considered.
#[derive(Debug)]
enum Take {
    /// Claimed: refreshed, the claim renewed meanwhile and released after.
    Claimed(Claim),
    /// Listed by the caller ([`Refresh::spawn`]): refreshed.
    Listed,
    /// Listed for its unknown expiry: only looked at, nothing sent.
    Look,
}

/// One instance: one whose expiry the store does not know is checked first (never provisioned,
/// nothing to refresh); a claimed or listed one is refreshed, unless it still cools down.
async fn consider(
    engine: &Engine,
    store: &dyn InstanceStore,
    connector: &Connector,
    summary: Summary,
    ahead: Duration,
    take: &Take,
    settings: Settings,
) -> Refreshed {
    if summary.expires_at_ms.is_none()
        && let Some(outcome) = without_expiry(engine, store, connector, &summary.id, ahead).await
    {
        return Refreshed::new(summary, outcome);
    }
    let claim = match take {
        Take::Claimed(claim) => Some(claim),
        Take::Listed => None,
        Take::Look => return Refreshed::new(summary, Outcome::Skipped),
    };
    // A retry claimed ahead of its time (`ahead`) waits for it: the cooldown keeps the vendor
    // from being hammered.
    let before = match store.load(&summary.id).await {
        Ok(read) => Schedule::read(&read.state),
        Err(error) => return Refreshed::new(summary, Outcome::Failed(Failure::Store(error))),
    };
    if before.cooling_down(engine.now_ms()).is_some() {
        return Refreshed::new(summary, Outcome::Skipped);
    }
    let job = Job {
        id: &summary.id,
        ahead,
        claim,
        before,
    };
    let (outcome, transition, warnings, measured) =
        refresh_one(engine, store, connector, &job, settings).await;
    Refreshed {
        id: summary.id,
        connector: summary.connector,
        outcome,
        transition,
        warnings,
        lag: None,
        lease_lost: measured.lease_lost,
        vendor_time: measured.vendor_time,
    }
}

/// What to do with an instance whose expiry the store does not know, by the runtime's own check
/// at `ahead` from now: `None` to refresh it (its connector knows an expiry, and it is due);
/// otherwise never provisioned, or nothing to refresh.
async fn without_expiry(
    engine: &Engine,
    store: &dyn InstanceStore,
    connector: &Connector,
    id: &str,
    ahead: Duration,
) -> Option<Outcome> {
    let read = match store.load(id).await {
        Ok(read) => read,
        Err(error) => return Some(Outcome::Failed(Failure::Store(error))),
    };
    let at_ms = engine.now_ms().saturating_add(millis(ahead));
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

/// One claimed instance to refresh.
struct Job<'a> {
    id: &'a str,
    /// How far ahead of its expiry its token is refreshed.
    ahead: Duration,
    /// Its claim, renewed while the refresh runs; `None` for an instance a caller listed.
    claim: Option<&'a Claim>,
    /// Its schedule before the refresh.
    before: Schedule,
}

/// What a refresh measured beside its outcome ([`Refreshed::lease_lost`],
/// [`Refreshed::vendor_time`]).
struct Measured {
    lease_lost: bool,
    vendor_time: Vec<Duration>,
}

/// Refreshes one instance, renewing its claim (if any) while the vendor call runs; applies the
/// failure state machine to its schedule under its lock; records the refresh and the
/// transition in its history. Returns the outcome, the transition, the warnings and what it
/// measured.
async fn refresh_one(
    engine: &Engine,
    store: &dyn InstanceStore,
    connector: &Connector,
    job: &Job<'_>,
    settings: Settings,
) -> (Outcome, Option<Transition>, Vec<Warning>, Measured) {
    let Job {
        id,
        ahead,
        claim,
        before,
    } = job;
    let (id, ahead) = (*id, *ahead);
    let recorder = history::Recorder::new(&NoObserver);
    let request = RefreshRequest {
        connector,
        instance: id,
        ahead,
    };
    let mut lease_lost = false;
    let result = {
        let refreshing = engine.refresh(&request, store, &recorder);
        tokio::pin!(refreshing);
        // Renewed at half the lease (a second at least), so that it never lapses while the
        // refresh runs.
        let mut renewal = tokio::time::interval((settings.lease / 2).max(Duration::from_secs(1)));
        renewal.tick().await;
        let mut claim = claim.cloned();
        loop {
            tokio::select! {
                result = &mut refreshing => break result,
                _ = renewal.tick(), if claim.is_some() => {
                    // A lost lease is not fatal: the write is fenced by the version.
                    if let Some(held) = &claim {
                        match store.renew(held, engine.now_ms(), settings.lease).await {
                            Ok(renewed) => claim = Some(renewed),
                            Err(error)
                                if matches!(error.kind(), StoreErrorKind::LeaseLost { .. }) =>
                            {
                                lease_lost = true;
                                claim = None;
                            }
                            Err(_) => {}
                        }
                    }
                }
            }
        }
    };
    let reports = recorder.take();
    // The vendor answered, but another process stored newer tokens first (this process's claim
    // and lock had lapsed): the write was fenced, and the stored tokens kept.
    let superseded = result.is_ok() && recorder.superseded();
    let measured = Measured {
        lease_lost,
        vendor_time: reports
            .iter()
            .filter(|report| !report.retry)
            .map(|report| report.elapsed)
            .collect(),
    };
    let attempt = match &result {
        Ok(_) => Some(RefreshOutcome::Refreshed),
        Err(error) => attempt_of(error),
    };
    let transition = match attempt {
        Some(attempt) => {
            transition(
                engine.now_ms(),
                store,
                connector,
                id,
                attempt,
                before,
                &settings.policy,
            )
            .await
        }
        None => Ok(None),
    };
    let mut warnings = Vec::new();
    let (transition, stored) = match transition {
        Ok(transition) => (transition, Ok(())),
        Err(error) => (None, Err(error)),
    };
    // A success with no change of status may still end failures that something else cleared
    // first (new credentials: `engine instances set`): the history's last word before this
    // refresh says whether it had failed.
    let transition = match transition {
        None if result.is_ok()
            && !superseded
            && reports
                .iter()
                .any(|report| report.error.is_none() && !report.retry) =>
        {
            events::failed_before(store, id)
                .await
                .map(|from| Transition {
                    from,
                    to: ScheduleStatus::Fresh,
                    failures: 0,
                    rejections: 0,
                    retry_at_ms: None,
                })
        }
        transition => transition,
    };
    let mut entries = history::entries_of(&reports, settings.trigger, superseded);
    if let Some(transition) = &transition {
        match entries.last_mut() {
            Some(last) => last["transition"] = transition.to_value(),
            // Failed before any step (a lock not obtained): the transition on its own.
            None => entries.push(json!({
                "at": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
                "trigger": match settings.trigger {
                    Trigger::Manual => "manual",
                    _ => "schedule",
                },
                "outcome": "failed",
                "error": result.as_ref().err().map(ToString::to_string),
                "transition": transition.to_value(),
            })),
        }
    }
    for entry in entries {
        if let Err(error) = store.append_history(id, entry, settings.keep).await {
            warnings.push(Warning::HistoryNotRecorded {
                instance: id.to_owned(),
                error,
            });
        }
    }
    // Each change of status the policy made is an event, from here alone for the scheduler and
    // a forced refresh.
    if let Some(transition) = transition
        && let Some(kind) = EventType::of(&transition)
    {
        let trigger = match settings.trigger {
            Trigger::Manual => "manual",
            Trigger::Run => "call",
            Trigger::Schedule => "schedule",
            Trigger::SignIn => "sign-in",
        };
        let error = result.as_ref().err();
        let event = NewEvent::new(kind, id, trigger, Some(transition), &reports, error);
        if let Err(error) = events::publish(store, &event, engine.now_ms()).await {
            warnings.push(Warning::EventNotPublished {
                instance: id.to_owned(),
                error,
            });
        }
    }
    let outcome = match (result, stored) {
        (Ok(_), Err(error)) => Outcome::Failed(Failure::Store(error)),
        (Ok(_), Ok(())) if superseded => Outcome::Fresh,
        (Ok(_), Ok(())) => match reports
            .into_iter()
            .rev()
            .find(|report| report.error.is_none())
        {
            Some(report) => Outcome::Refreshed(report),
            None => Outcome::Fresh,
        },
        (Err(error), stored) => match classify(&error) {
            Class::Rejected => Outcome::Rejected {
                error,
                count: stored
                    .map(|()| transition.map_or(0, |transition| u64::from(transition.rejections))),
                max_failures: settings.max_failures,
            },
            Class::Transient { .. } | Class::CoolingDown => Outcome::Transient(error),
            Class::Failed => Outcome::Failed(Failure::Run(error)),
        },
    };
    (outcome, transition, warnings, measured)
}

/// The kinds of failed refreshes.
enum Class {
    Rejected,
    Transient {
        retry_after: Option<Duration>,
    },
    /// Another process's failed refresh started a cooldown meanwhile: not an attempt.
    CoolingDown,
    Failed,
}

/// What the failure state machine makes of a failed refresh: a rejection, a transient failure
/// (with the vendor's `Retry-After`), or nothing (a cooldown another refresh started, a failure
/// that is no attempt at the vendor).
pub(crate) fn attempt_of(error: &RunError) -> Option<RefreshOutcome> {
    match classify(error) {
        Class::Rejected => Some(RefreshOutcome::Rejected),
        Class::Transient { retry_after } => Some(RefreshOutcome::Failed { retry_after }),
        Class::CoolingDown | Class::Failed => None,
    }
}

/// Which kind a failed refresh is, with the vendor's `Retry-After` when it sent one.
fn classify(error: &RunError) -> Class {
    match error.kind() {
        RunErrorKind::AuthFailed {
            status,
            retry_after,
            ..
        } if *status == 429 || *status >= 500 => Class::Transient {
            retry_after: *retry_after,
        },
        RunErrorKind::AuthFailed { .. }
        | RunErrorKind::NoToken { .. }
        | RunErrorKind::TokenRejected { .. }
        | RunErrorKind::NotAuthorized { .. } => Class::Rejected,
        RunErrorKind::Transport { .. } | RunErrorKind::TimedOut { .. } => {
            Class::Transient { retry_after: None }
        }
        RunErrorKind::CoolingDown { .. } => Class::CoolingDown,
        RunErrorKind::Store(store)
            if matches!(store.kind(), StoreErrorKind::LockTimeout { .. }) =>
        {
            Class::Transient { retry_after: None }
        }
        _ => Class::Failed,
    }
}

/// Applies `attempt` to the instance's schedule by `policy`, under its lock (so that it never
/// lands between a refresh's read and its write), at the engine's time. After a success the
/// next refresh is computed from the token. Returns the change of status, if any.
pub(crate) async fn transition(
    now_ms: u64,
    store: &dyn InstanceStore,
    connector: &Connector,
    id: &str,
    attempt: RefreshOutcome,
    before: &Schedule,
    policy: &RefreshPolicy,
) -> Result<Option<Transition>, StoreError> {
    // The common case, a success the runtime's write cleared the failure state with, takes no
    // lock: the transition is from the state the refresh started from.
    if attempt == RefreshOutcome::Refreshed {
        let read = store.load(id).await?;
        let now = Schedule::read(&read.state);
        if !now.has_failures() {
            return Ok(before.has_failures().then_some(Transition {
                from: before.status,
                to: now.status,
                failures: 0,
                rejections: 0,
                retry_at_ms: None,
            }));
        }
    }
    let mut changed = None;
    // Quietly: a run or a refresh holding the lock is the normal case here.
    let quiet = || {};
    engine_store::update(store, id, Some(WRITE_LOCK_TIMEOUT), &quiet, |state| {
        let before = Schedule::read(state);
        let after = match attempt {
            RefreshOutcome::Refreshed if !before.has_failures() => return Ok(false),
            // Cleared, and due when the new token says.
            RefreshOutcome::Refreshed => {
                engine_runtime::schedule_of(connector, id, state, &before.cleared())
            }
            _ => policy.next(&before, attempt, now_ms, &mut SeededJitter::from_entropy()),
        };
        after.put(state);
        changed = Some(Transition {
            from: before.status,
            to: after.status,
            failures: after.consecutive_failures,
            rejections: after.consecutive_rejections,
            retry_at_ms: after.cooldown_until_ms,
        });
        Ok(true)
    })
    .await?;
    Ok(changed)
}

/// `duration` in whole milliseconds, saturating.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
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

    /// Instance `id` of the demo connector at `url`, authenticated `ago` seconds before now
    /// with a token of an hour, with `secret` and recorded as of `connector`.
    fn instance(id: &str, url: &str, ago: u64, secret: &str, connector: Option<&str>) -> State {
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
        engine_runtime::estimated_schedule(id, &state, &Schedule::default()).put(&mut state);
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
    async fn due_instances_are_refreshed_and_rejections_back_off_then_mark_needs_reauth() {
        let emulator = Emulator::start(EmulatorConfig::default(), 0).await.unwrap();
        let url = emulator.url();
        let demo = demo();
        let store = Arc::new(MemoryStore::new());
        store.insert(
            "expired",
            instance("expired", &url, 7200, "demo-secret", Some(&demo)),
        );
        store.insert(
            "fresh",
            instance("fresh", &url, 60, "demo-secret", Some(&demo)),
        );
        store.insert(
            "revoked",
            instance("revoked", &url, 7200, "FAKE-wrong", Some(&demo)),
        );
        store.insert(
            "orphan",
            instance("orphan", &url, 7200, "demo-secret", None),
        );
        store.insert(
            "lost",
            instance("lost", &url, 7200, "demo-secret", Some("missing.json")),
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
        assert_eq!(outcomes[0].transition, None);
        // Due a fifth of the hour (and its jitter) before its expiry an hour ago: started 72
        // minutes late and the jitter; one step, its lease kept.
        let lag = outcomes[0].lag.unwrap();
        let late = Duration::from_mins(72)
            + Duration::from_millis(engine_runtime::jitter_ms("expired", 3_600_000));
        assert!(
            (late..late + Duration::from_mins(1)).contains(&lag),
            "{lag:?}"
        );
        assert_eq!(outcomes[0].vendor_time.len(), 1);
        assert!(!outcomes[0].lease_lost);
        assert!(outcomes[1].vendor_time.is_empty());
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
        // The first rejection: retrying after the first backoff (30 s, less a fifth at most).
        let before = u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap();
        let transition = outcomes[3].transition.unwrap();
        assert_eq!(
            (transition.from, transition.to, transition.rejections),
            (ScheduleStatus::Fresh, ScheduleStatus::Retrying, 1)
        );
        let retry_at = transition.retry_at_ms.unwrap();
        assert!(
            (before + 20_000..=before + 30_000).contains(&retry_at),
            "{retry_at} {before}"
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

        // The refresh is in the history, with fingerprints and never a token; the rejection
        // with its transition.
        let history = store.history("expired").await.unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(
            (&history[0]["trigger"], &history[0]["outcome"]),
            (&json!("schedule"), &json!("ok"))
        );
        assert!(!history[0].to_string().contains("FAKE-old-token"));
        let history = store.history("revoked").await.unwrap();
        assert_eq!(
            (
                &history[0]["transition"]["from"],
                &history[0]["transition"]["to"]
            ),
            (&json!("fresh"), &json!("retrying"))
        );

        // While it cools down, it is not due: nothing is sent for it.
        let (outcomes, _) = refresh_all(&store, &options).await;
        assert!(
            outcomes.iter().all(|refreshed| refreshed.id != "revoked"),
            "{outcomes:?}"
        );
        assert_eq!(emulator.stats().client_credentials_grants, 1);

        // Once its retry is due, the second rejection marks the instance; a marked one is no
        // longer due.
        cool_down(&store, "revoked").await;
        let (outcomes, _) = refresh_all(&store, &options).await;
        let revoked = outcomes
            .iter()
            .find(|refreshed| refreshed.id == "revoked")
            .unwrap();
        assert!(
            matches!(&revoked.outcome, Outcome::Rejected { count: Ok(2), .. }),
            "{outcomes:?}"
        );
        let transition = revoked.transition.unwrap();
        assert_eq!(
            (transition.from, transition.to, transition.retry_at_ms),
            (ScheduleStatus::Retrying, ScheduleStatus::NeedsReauth, None)
        );
        let state = store.load("revoked").await.unwrap().state;
        assert_eq!(Schedule::read(&state).status, ScheduleStatus::NeedsReauth);
        let (outcomes, _) = refresh_all(&store, &options).await;
        assert!(
            outcomes.iter().all(|refreshed| refreshed.id != "revoked"),
            "{outcomes:?}"
        );

        // A success elsewhere (a sign-in) clears the mark and the count: it is due again.
        crate::clear_needs_reauth(&*store, "revoked").await.unwrap();
        // Each change of status was an event, of the instance that changed; in the order made.
        let events: Vec<(String, String, String)> = store
            .list_records(
                crate::events::EVENTS_NAMESPACE,
                None,
                100,
                u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap(),
            )
            .await
            .unwrap()
            .into_iter()
            .map(|record| {
                let payload = &record.value["payload"];
                let text = |value: &serde_json::Value| value.as_str().unwrap().to_owned();
                (
                    text(&payload["type"]),
                    text(&payload["data"]["instance"]),
                    text(&payload["data"]["trigger"]),
                )
            })
            .collect();
        let expected = [
            ("refresh.failed", "revoked", "schedule"),
            ("instance.needs_reauth", "revoked", "schedule"),
            ("instance.recovered", "revoked", "sign-in"),
        ]
        .map(|(kind, id, trigger)| (kind.to_owned(), id.to_owned(), trigger.to_owned()));
        assert_eq!(events, expected);
        let state = store.load("revoked").await.unwrap().state;
        assert!(!Schedule::read(&state).has_failures());
        let (outcomes, _) = refresh_all(&store, &options).await;
        assert!(
            outcomes.iter().any(|refreshed| refreshed.id == "revoked"),
            "{outcomes:?}"
        );
        emulator.shutdown().await;
    }

    /// Moves the cooldown and the retry of `id` into the past, as the time passing would.
    async fn cool_down(store: &MemoryStore, id: &str) {
        let quiet = || {};
        engine_store::update(store, id, None, &quiet, |state| {
            let mut schedule = Schedule::read(state);
            schedule.next_refresh_at_ms = Some(1);
            schedule.cooldown_until_ms = Some(1);
            schedule.put(state);
            Ok(true)
        })
        .await
        .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_transient_failure_backs_off_by_the_vendors_retry_after_and_a_success_clears_it() {
        let emulator = Emulator::start(EmulatorConfig::default(), 0).await.unwrap();
        let store = Arc::new(MemoryStore::new());
        // Nothing listens on port 1: the connection is refused.
        store.insert(
            "down",
            instance(
                "down",
                "http://127.0.0.1:1",
                7200,
                "demo-secret",
                Some(&demo()),
            ),
        );
        let (outcomes, _) = refresh_all(&store, &RefreshOptions::default()).await;
        assert!(
            matches!(&outcomes[0].outcome, Outcome::Transient(_)),
            "{outcomes:?}"
        );
        let schedule = Schedule::read(&store.load("down").await.unwrap().state);
        assert_eq!(
            (
                schedule.status,
                schedule.consecutive_failures,
                schedule.consecutive_rejections
            ),
            (ScheduleStatus::Retrying, 1, 0)
        );
        assert!(schedule.cooldown_until_ms.is_some());

        // The vendor is back: the retry succeeds and clears the state; the next refresh is
        // the new token's.
        let quiet = || {};
        engine_store::update(&*store, "down", None, &quiet, |state| {
            state.insert("base.url".into(), emulator.url().into());
            Ok(true)
        })
        .await
        .unwrap();
        cool_down(&store, "down").await;
        let (outcomes, _) = refresh_all(&store, &RefreshOptions::default()).await;
        assert!(
            matches!(&outcomes[0].outcome, Outcome::Refreshed(_)),
            "{outcomes:?}"
        );
        assert_eq!(
            outcomes[0].transition.map(|transition| transition.to),
            Some(ScheduleStatus::Fresh)
        );
        let events: Vec<String> = store
            .list_records(
                crate::events::EVENTS_NAMESPACE,
                None,
                100,
                u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap(),
            )
            .await
            .unwrap()
            .into_iter()
            .map(|record| record.value["payload"]["type"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(events, ["refresh.failed", "instance.recovered"]);
        let schedule = Schedule::read(&store.load("down").await.unwrap().state);
        assert!(!schedule.has_failures(), "{schedule:?}");
        let now = u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap();
        assert!(
            schedule.next_refresh_at_ms.unwrap() > now + 40 * 60_000,
            "{schedule:?}"
        );
        emulator.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refresh_that_outlasts_its_lease_says_it_was_lost() {
        // A vendor that takes connections and never answers: the refresh lasts its timeout.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", silent.local_addr().unwrap());
        let vendor = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = silent.accept().await {
                open.push(stream);
            }
        });
        let store = Arc::new(MemoryStore::new());
        store.insert(
            "slow",
            instance("slow", &url, 7200, "demo-secret", Some(&demo())),
        );
        let plain: Arc<dyn InstanceStore> = Arc::clone(&store) as Arc<dyn InstanceStore>;
        let opened = Opened::new(plain, None);
        let engine = EngineBuilder::new()
            .timeout(Duration::from_secs(3))
            .retries(0)
            .build()
            .unwrap();
        // The claim is first renewed after a second (the shortest renewal): a lease of 10 ms has
        // ended by then.
        let options = RefreshOptions {
            lease: Duration::from_millis(10),
            ..RefreshOptions::default()
        };
        let mut registry = Registry::new();
        let mut refresh = Refresh::start(&opened, &mut registry, Arc::new(engine), &options)
            .await
            .unwrap();
        let refreshed = refresh.next().await.unwrap().unwrap();
        assert!(
            matches!(refreshed.outcome, Outcome::Transient(_)),
            "{:?}",
            refreshed.outcome
        );
        assert!(refreshed.lease_lost);
        vendor.abort();
    }

    /// The vendor's `Retry-After` on a 503 sets the retry when longer than the backoff.
    #[test]
    fn a_retry_after_is_read_from_the_vendors_answer() {
        let error: RunError = RunErrorKind::AuthFailed {
            step: "ON REFRESH".into(),
            status: 503,
            problem: None,
            body: String::new(),
            retry_after: Some(Duration::from_mins(10)),
        }
        .into();
        assert!(matches!(
            classify(&error),
            Class::Transient { retry_after: Some(after) } if after == Duration::from_mins(10)
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_refreshes_at_once_on_one_store_refresh_each_instance_once() {
        let emulator = Emulator::start(EmulatorConfig::default(), 0).await.unwrap();
        let url = emulator.url();
        let store = Arc::new(MemoryStore::new());
        for index in 0..40 {
            store.insert(
                &format!("due-{index:02}"),
                instance(
                    &format!("due-{index:02}"),
                    &url,
                    7200,
                    "demo-secret",
                    Some(&demo()),
                ),
            );
        }
        let options = RefreshOptions::default();
        let (one, other) =
            tokio::join!(refresh_all(&store, &options), refresh_all(&store, &options));
        let refreshed = one
            .0
            .iter()
            .chain(&other.0)
            .filter(|refreshed| matches!(refreshed.outcome, Outcome::Refreshed(_)))
            .count();
        assert_eq!(refreshed, 40);
        assert_eq!(emulator.stats().client_credentials_grants, 40);
        emulator.shutdown().await;
    }

    /// The instances a caller lists (a forced refresh) are refreshed without a claim, whatever
    /// their schedule says.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn listed_instances_are_refreshed_without_claims() {
        let emulator = Emulator::start(EmulatorConfig::default(), 0).await.unwrap();
        let store = Arc::new(MemoryStore::new());
        let state = instance("fresh", &emulator.url(), 60, "demo-secret", Some(&demo()));
        let summary = Summary::of("fresh".to_owned(), 0, &state);
        store.insert("fresh", state);
        let plain: Arc<dyn InstanceStore> = Arc::clone(&store) as Arc<dyn InstanceStore>;
        let opened = Opened::new(plain, None);
        let engine = Arc::new(EngineBuilder::new().build().unwrap());
        let due = Due {
            summary,
            ahead: Duration::from_hours(2),
        };
        let mut refresh = Refresh::spawn(
            &opened,
            &mut Registry::new(),
            &engine,
            &RefreshOptions::default(),
            vec![due],
        );
        let refreshed = refresh.next().await.unwrap().unwrap();
        assert!(
            matches!(refreshed.outcome, Outcome::Refreshed(_)),
            "{refreshed:?}"
        );
        assert!(refresh.next().await.is_none());
        assert_eq!(emulator.stats().client_credentials_grants, 1);
        emulator.shutdown().await;
    }

    #[tokio::test]
    async fn ahead_makes_fresh_tokens_due_and_the_connector_filters() {
        let store = Arc::new(MemoryStore::new());
        store.insert(
            "fresh",
            instance("fresh", "http://127.0.0.1:1", 60, "s", Some("a.json")),
        );
        store.insert(
            "other",
            instance("other", "http://127.0.0.1:1", 60, "s", Some("b.json")),
        );
        let ids = |outcomes: Vec<Refreshed>| -> Vec<String> {
            outcomes.into_iter().map(|refreshed| refreshed.id).collect()
        };
        let (by_schedule, _) = refresh_all(&store, &RefreshOptions::default()).await;
        assert!(by_schedule.is_empty(), "{by_schedule:?}");
        let ahead = RefreshOptions {
            ahead: Some(Duration::from_hours(2)),
            ..RefreshOptions::default()
        };
        // Neither connector loads: each is considered, nothing is sent.
        assert_eq!(ids(refresh_all(&store, &ahead).await.0), ["fresh", "other"]);
        let only_a = RefreshOptions {
            connector: Some("a.json".to_owned()),
            ..ahead.clone()
        };
        assert_eq!(ids(refresh_all(&store, &only_a).await.0), ["fresh"]);
        // The other connector's instance was claimed, left alone, and released.
        assert_eq!(ids(refresh_all(&store, &ahead).await.0), ["fresh", "other"]);
    }
}

//! `engine refresh --store URL`: refreshes every due instance of a store ahead of expiry, N at a
//! time, records each refresh in the instance's history, and marks an instance `needs-reauth`
//! after consecutive rejected refreshes.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::Duration;

use engine_runtime::{
    Engine, EngineBuilder, Freshness, NoObserver, RefreshReason, RefreshRequest, RunError,
    RunErrorKind,
};
use engine_spec::Connector;
use engine_store::{InstanceStore, Page, Schedule, ScheduleStatus, State, StoreErrorKind, Summary};
use tokio::sync::Semaphore;

use crate::Exit;
use crate::history::{self, Recorder, Trigger};
use crate::instances::{Failure, StoreArgs, open_store, runtime};
use crate::printer;
use crate::run::LogFormat;

/// How long the failure count's write waits for the instance's lock.
const WRITE_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// The status `engine refresh` gives up with.
const NEEDS_REAUTH: &str = "needs-reauth";

#[derive(Debug, clap::Args)]
pub(crate) struct RefreshArgs {
    /// Refresh tokens that expire within this (`30s`, `5m`, `1h`); default: within a fifth of
    /// each token's lifetime.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    ahead: Option<Duration>,
    /// Only the instances of this connector (as recorded by `engine instances import
    /// --connector`).
    #[arg(long, value_name = "CONNECTOR")]
    connector: Option<String>,
    /// How many refreshes run at once.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    jobs: u32,
    /// After this many consecutive refreshes the vendor rejected, an instance is marked
    /// `needs-reauth` and no longer refreshed.
    #[arg(long, value_name = "N", default_value_t = 3)]
    max_failures: u64,
    /// How many refreshes each instance's history keeps.
    #[arg(long, value_name = "N", default_value_t = history::DEFAULT_KEEP)]
    keep_history: usize,
    /// The bound on each instance's whole refresh: every request, retry and pause of it
    /// (`30s`, `5m`, or seconds).
    #[arg(long, value_name = "DURATION", default_value = "30", value_parser = crate::duration::parse_timeout)]
    timeout: Duration,
    /// How long to wait for an instance's lock when another process holds it, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    lock_timeout: u64,
    /// How the lines are printed: `human`, or `json`, one JSON object per instance and one for
    /// the summary, for scripts (no progress bar).
    #[arg(long, value_enum, value_name = "FORMAT", default_value = "human")]
    log_format: LogFormat,
    #[command(flatten)]
    store: StoreArgs,
}

/// How one instance's refresh ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Refreshed by this process.
    Refreshed,
    /// Found fresh, or refreshed by another process meanwhile.
    Fresh,
    /// The vendor rejected the refresh: re-authentication is needed.
    Rejected,
    /// A transient failure (network, 5xx, 429): the next run may succeed.
    Transient,
    /// Anything else (no connector recorded, an invalid connector, a store failure).
    Failed,
    /// Never provisioned (no token yet): left alone, to be provisioned or signed in.
    NotProvisioned,
    /// Nothing to refresh (a token that does not expire, `session.management: always`).
    Skipped,
}

pub(crate) fn refresh(args: &RefreshArgs) -> Exit {
    let Some(runtime) = runtime() else {
        return Exit::Invalid;
    };
    runtime.block_on(async {
        match refresh_all(args).await {
            Ok(exit) => exit,
            Err(failure) => failure.print(),
        }
    })
}

async fn refresh_all(args: &RefreshArgs) -> Result<Exit, Failure> {
    let opened = open_store(&args.store.store).await?;
    let due = due_instances(&*opened.sealed(None), args).await?;
    let engine = EngineBuilder::new()
        .timeout(args.timeout)
        .lock_timeout(Some(Duration::from_secs(args.lock_timeout)))
        .build()
        .map_err(|error| Failure::new(error.to_string(), Exit::Transport))?;
    let engine = Arc::new(engine);
    let mut connectors: HashMap<String, Option<Arc<Connector>>> = HashMap::new();
    let json = args.log_format == LogFormat::Json;
    let progress = (std::io::stderr().is_terminal() && !json).then(|| {
        let bar = indicatif::ProgressBar::new(due.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let semaphore = Arc::new(Semaphore::new(args.jobs as usize));
    let mut tasks = tokio::task::JoinSet::new();
    for (summary, ahead) in due {
        let connector = match summary.connector.as_deref() {
            Some(name) => connectors
                .entry(name.to_owned())
                .or_insert_with(|| crate::run::load_connector(name.as_ref()).map(Arc::new))
                .clone(),
            None => None,
        };
        // Each instance's secrets are encrypted by its connector's rule.
        let store = opened.sealed(connector.as_deref());
        let engine = Arc::clone(&engine);
        let semaphore = Arc::clone(&semaphore);
        let (max_failures, keep) = (args.max_failures, args.keep_history);
        let store_url = engine_stores_sql::display_url(&args.store.store);
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            let Some(connector) = connector else {
                let why = summary.connector.as_deref().map_or_else(
                    || "no connector recorded: import it with `--connector FILE`".to_owned(),
                    |name| format!("connector `{name}` cannot be loaded"),
                );
                return (summary.id, Outcome::Failed, why);
            };
            if summary.expires_at_ms.is_none()
                && let Some((outcome, line)) =
                    without_expiry(&*store, &connector, &summary, ahead, &store_url).await
            {
                return (summary.id, outcome, line);
            }
            let (outcome, line) = refresh_one(
                &engine,
                &*store,
                &connector,
                &summary.id,
                ahead,
                max_failures,
                keep,
            )
            .await;
            (summary.id, outcome, line)
        });
    }
    let mut counts: HashMap<&'static str, usize> = HashMap::new();
    let mut rejected = Vec::new();
    let mut unprovisioned = Vec::new();
    let mut worst = Exit::Success;
    while let Some(joined) = tasks.join_next().await {
        let Ok((id, outcome, line)) = joined else {
            worst = Exit::VendorError;
            continue;
        };
        let (label, exit) = match outcome {
            Outcome::Refreshed => ("refreshed", Exit::Success),
            Outcome::Fresh => ("fresh", Exit::Success),
            Outcome::Rejected => ("rejected", Exit::AuthFailed),
            Outcome::Transient => ("failed transiently", Exit::Transport),
            Outcome::Failed => ("failed", Exit::VendorError),
            Outcome::NotProvisioned => ("not provisioned", Exit::AuthFailed),
            Outcome::Skipped => {
                if let Some(bar) = &progress {
                    bar.inc(1);
                }
                continue;
            }
        };
        *counts.entry(label).or_default() += 1;
        match outcome {
            Outcome::Rejected => rejected.push(id.clone()),
            Outcome::NotProvisioned => unprovisioned.push(id.clone()),
            _ => {}
        }
        worst = worse(worst, exit);
        if json {
            let event = serde_json::json!({
                "event": "refresh",
                "instance": id,
                "outcome": label.replace(' ', "-"),
                "detail": (!line.is_empty()).then_some(&line),
                "at": crate::time::now(),
            });
            printer::verbose(&event.to_string());
            continue;
        }
        let text = format!(
            "{label}: {id}{}",
            if line.is_empty() {
                String::new()
            } else {
                format!(": {line}")
            }
        );
        match &progress {
            Some(bar) => {
                bar.inc(1);
                if outcome != Outcome::Refreshed && outcome != Outcome::Fresh {
                    bar.println(&text);
                }
            }
            None => printer::verbose(&text),
        }
    }
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    let summary: Vec<String> = LABELS
        .iter()
        .filter_map(|label| counts.get(label).map(|count| format!("{count} {label}")))
        .collect();
    rejected.sort();
    unprovisioned.sort();
    if json {
        let mut event = serde_json::json!({"event": "summary", "at": crate::time::now()});
        for label in LABELS {
            event[label.replace(' ', "_")] = counts.get(label).copied().unwrap_or(0).into();
        }
        event["reauthenticate"] = rejected.into();
        event["provision"] = unprovisioned.into();
        printer::verbose(&event.to_string());
        return Ok(worst);
    }
    printer::verbose(&if summary.is_empty() {
        "nothing due".to_owned()
    } else {
        summary.join(", ")
    });
    if !rejected.is_empty() {
        printer::verbose(&format!(
            "re-authenticate: {} (see `engine history ID`)",
            rejected.join(", ")
        ));
    }
    if !unprovisioned.is_empty() {
        printer::verbose(&format!(
            "provision: {} (see each one's line)",
            unprovisioned.join(", ")
        ));
    }
    Ok(worst)
}

/// The outcomes counted on the summary line, in its order.
const LABELS: [&str; 6] = [
    "refreshed",
    "fresh",
    "rejected",
    "not provisioned",
    "failed transiently",
    "failed",
];

/// The exit code that says more: 1 (other failures) over 4 (re-authenticate) over 5
/// (transient) over 0.
fn worse(current: Exit, next: Exit) -> Exit {
    let rank = |exit: Exit| match exit {
        Exit::Success => 0,
        Exit::Transport => 1,
        Exit::AuthFailed => 2,
        _ => 3,
    };
    if rank(next) > rank(current) {
        next
    } else {
        current
    }
}

/// The instances to consider, each with how far ahead its token counts as due: not marked
/// `needs-reauth`, of `--connector`, with a known expiry within `--ahead` (or a fifth of its
/// lifetime), and every one without a known expiry (the runtime's check decides what it is:
/// [`without_expiry`]).
async fn due_instances(
    store: &dyn InstanceStore,
    args: &RefreshArgs,
) -> Result<Vec<(Summary, Duration)>, Failure> {
    let now_ms = u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or(0);
    let mut due = Vec::new();
    // With `--ahead`, the store finds the due instances by its expiry index; otherwise each
    // instance's lifetime decides, read from its state.
    let mut page = Page {
        after: None,
        limit: 1000,
        connector: args.connector.clone(),
        expires_before_ms: args.ahead.map(|ahead| {
            now_ms.saturating_add(u64::try_from(ahead.as_millis()).unwrap_or(u64::MAX))
        }),
        ..Page::default()
    };
    loop {
        let listing = store
            .list(page.clone())
            .await
            .map_err(|error| Failure::of_store(&error, &args.store.store))?;
        for summary in listing.instances {
            if summary.status.as_deref() == Some(NEEDS_REAUTH) {
                continue;
            }
            let Some(expires_at) = summary.expires_at_ms else {
                due.push((summary, args.ahead.unwrap_or_default()));
                continue;
            };
            let ahead = if let Some(ahead) = args.ahead {
                ahead
            } else {
                // One that cannot be read fails the same way when refreshed: it is reported with
                // the others.
                let Ok(read) = store.load(&summary.id).await else {
                    due.push((summary, Duration::ZERO));
                    continue;
                };
                lifetime_of(&read.state).map_or(Duration::ZERO, |lifetime| lifetime / 5)
            };
            let ahead_ms = u64::try_from(ahead.as_millis()).unwrap_or(u64::MAX);
            if expires_at <= now_ms.saturating_add(ahead_ms) {
                due.push((summary, ahead));
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
/// at `ahead` from now: `None` to refresh it (its connector knows an expiry, and it is due, or
/// it has no schedule yet: the refresh writes it);
/// otherwise never provisioned (with what to do), or nothing to refresh.
async fn without_expiry(
    store: &dyn InstanceStore,
    connector: &Connector,
    summary: &Summary,
    ahead: Duration,
    store_url: &str,
) -> Option<(Outcome, String)> {
    let read = match store.load(&summary.id).await {
        Ok(read) => read,
        Err(error) => return Some((Outcome::Failed, error.to_string())),
    };
    let now_ms = u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or(0);
    let at_ms = now_ms.saturating_add(u64::try_from(ahead.as_millis()).unwrap_or(u64::MAX));
    let file = summary.connector.as_deref().unwrap_or("CONNECTOR");
    let id = &summary.id;
    match crate::status::freshness(connector, &read.state, at_ms) {
        Freshness::Stale(RefreshReason::Expired { .. }) => None,
        // Written before schedules: the runtime's refresh finds it fresh and writes its schedule.
        Freshness::Fresh(Some(_)) if Schedule::of(&read.state).is_none() => None,
        Freshness::Stale(RefreshReason::NotProvisioned) => Some((
            Outcome::NotProvisioned,
            format!(
                "never provisioned: the next run provisions it, or now: `engine run {file} \
                 provisionAuthValidation --instance {id} --store {store_url}`"
            ),
        )),
        Freshness::Stale(RefreshReason::NoToken) => Some((
            Outcome::NotProvisioned,
            format!(
                "no token yet: the next run obtains one, or sign in: `engine authorize {file} \
                 --instance {id} --store {store_url}`"
            ),
        )),
        _ => Some((Outcome::Skipped, String::new())),
    }
}

/// A token's lifetime from the engine's bookkeeping keys (`expires_in` or
/// `oauth.user.refresh_interval`, seconds).
fn lifetime_of(state: &State) -> Option<Duration> {
    ["expires_in", "oauth.user.refresh_interval"]
        .iter()
        .find_map(|key| match state.get(*key)? {
            serde_json::Value::Number(number) => number.as_u64(),
            serde_json::Value::String(text) => text.trim().parse().ok(),
            _ => None,
        })
        .map(Duration::from_secs)
}

/// Refreshes one instance, records its history and its consecutive rejections; returns the
/// outcome and a line about it.
async fn refresh_one(
    engine: &Engine,
    store: &dyn InstanceStore,
    connector: &Connector,
    id: &str,
    ahead: Duration,
    max_failures: u64,
    keep: usize,
) -> (Outcome, String) {
    let recorder = Recorder::new(&NoObserver);
    let request = RefreshRequest {
        connector,
        instance: id,
        ahead,
    };
    let result = engine.refresh(&request, store, &recorder).await;
    let reports = recorder.take();
    history::record(store, id, &reports, Trigger::Schedule, keep).await;
    let did_refresh = reports.iter().any(|report| report.error.is_none());
    match result {
        Ok(_) => {
            if let Err(error) = set_failures(store, id, false, max_failures).await {
                return (Outcome::Failed, error);
            }
            let line = reports
                .iter()
                .rev()
                .find(|report| report.error.is_none())
                .map(|report| {
                    format!(
                        "{}, {}, {} ms",
                        report.by,
                        report
                            .status
                            .map_or_else(|| "-".to_owned(), |status| status.to_string()),
                        report.elapsed.as_millis()
                    )
                })
                .unwrap_or_default();
            if did_refresh {
                (Outcome::Refreshed, line)
            } else {
                (Outcome::Fresh, String::new())
            }
        }
        Err(error) => {
            let outcome = classify(&error);
            // With its causes: a store's failure says why (`too many clients already`).
            let mut line = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                let cause_text = cause.to_string();
                if !line.contains(&cause_text) {
                    let _ = write!(line, ": {cause_text}");
                }
                source = cause.source();
            }
            if outcome == Outcome::Rejected {
                match set_failures(store, id, true, max_failures).await {
                    Ok(Some(count)) if count >= max_failures => {
                        let _ = write!(
                            line,
                            " ({count} consecutive rejections: marked `{NEEDS_REAUTH}`)"
                        );
                    }
                    Ok(_) => {}
                    Err(error) => {
                        let _ = write!(line, " (not recorded: {error})");
                    }
                }
            }
            (outcome, line)
        }
    }
}

/// Which outcome a failed refresh is.
fn classify(error: &RunError) -> Outcome {
    match error.kind() {
        RunErrorKind::AuthFailed { status, .. } if *status == 429 || *status >= 500 => {
            Outcome::Transient
        }
        RunErrorKind::AuthFailed { .. }
        | RunErrorKind::NoToken { .. }
        | RunErrorKind::TokenRejected { .. }
        | RunErrorKind::NotAuthorized { .. } => Outcome::Rejected,
        RunErrorKind::Transport { .. }
        | RunErrorKind::TimedOut { .. }
        | RunErrorKind::CoolingDown { .. } => Outcome::Transient,
        RunErrorKind::Store(store)
            if matches!(store.kind(), StoreErrorKind::LockTimeout { .. }) =>
        {
            Outcome::Transient
        }
        _ => Outcome::Failed,
    }
}

/// Clears the rejection count and a `needs-reauth` mark after a successful refresh by `engine
/// run`; a failure to clear is a warning.
pub(crate) async fn clear_needs_reauth(store: &dyn InstanceStore, id: &str) {
    if let Err(error) = set_failures(store, id, false, 0).await {
        printer::verbose(&format!(
            "warning: `{id}` keeps its rejection count: {error}"
        ));
    }
}

/// Counts one more rejection (`Some`), or clears the count and the status after a success
/// (`None`); marks the instance `needs-reauth` at `max_failures`. Under the instance's lock, so
/// that it never lands between a refresh's read and its write. Returns the new count.
async fn set_failures(
    store: &dyn InstanceStore,
    id: &str,
    rejected: bool,
    max_failures: u64,
) -> Result<Option<u64>, String> {
    // The common case, a success on an instance with nothing to clear, takes no lock.
    if !rejected {
        let read = store.load(id).await.map_err(|error| error.to_string())?;
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
    .await
    .map_err(|error| error.to_string())?;
    Ok(count)
}

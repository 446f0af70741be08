//! `engine refresh --store URL`: refreshes every due instance of a store ahead of expiry, N at a
//! time, by [`engine_service::Refresh`] (which claims each one, records each refresh and change
//! of status in the instance's history, backs failures off and marks an instance `needs-reauth`
//! after consecutive rejected refreshes), and prints a line per instance and a summary.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::Duration;

use engine_runtime::{EngineBuilder, RefreshReason, RunError};
use engine_service::{Failure as Why, NEEDS_REAUTH, Outcome, Refresh, RefreshOptions, Transition};
use engine_store::ScheduleStatus;

use crate::Exit;
use crate::instances::StoreArgs;
use crate::printer;
use crate::run::{EgressArg, LogFormat};
use crate::store::{Failure, open_store, runtime};

#[derive(Debug, clap::Args)]
pub(crate) struct RefreshArgs {
    /// Refresh the instances due within this (`30s`, `5m`, `1h`); default: those due now (a
    /// fifth of each token's lifetime ahead of its expiry, or a failed refresh's retry).
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
    #[arg(long, value_name = "N", default_value_t = engine_service::history::DEFAULT_KEEP)]
    keep_history: usize,
    /// The bound on each instance's whole refresh: every request, retry and pause of it
    /// (`30s`, `5m`, or seconds). Each instance is claimed for twice this, so that another
    /// `engine refresh` on the store leaves it alone.
    #[arg(long, value_name = "DURATION", default_value = "30", value_parser = crate::duration::parse_timeout)]
    timeout: Duration,
    /// How long to wait for an instance's lock when another process holds it, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    lock_timeout: u64,
    /// Which addresses the token requests may connect to: `public` (public and loopback),
    /// `private` (also private networks), `any` (also link-local, such as the cloud metadata
    /// address).
    #[arg(long, value_name = "POLICY", value_enum, default_value_t = EgressArg::Any)]
    egress: EgressArg,
    /// How the lines are printed: `human`, or `json`, one JSON object per instance and one for
    /// the summary, for scripts (no progress bar).
    #[arg(long, value_enum, value_name = "FORMAT", default_value = "human")]
    log_format: LogFormat,
    #[command(flatten)]
    store: StoreArgs,
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
    let engine = EngineBuilder::new()
        .timeout(args.timeout)
        .lock_timeout(Some(Duration::from_secs(args.lock_timeout)))
        .egress(args.egress.into())
        .build()
        .map_err(|error| Failure::new(error.to_string(), Exit::Transport))?;
    let options = RefreshOptions {
        ahead: args.ahead,
        connector: args.connector.clone(),
        jobs: args.jobs as usize,
        max_failures: args.max_failures,
        keep_history: args.keep_history,
        // A claim outlives the refresh's own bound; it is renewed while the vendor call runs.
        lease: args.timeout.saturating_mul(2),
        ..RefreshOptions::default()
    };
    // Connectors by the path each instance recorded, loaded once.
    let mut registry = engine_service::Registry::new();
    let mut refresh = Refresh::start(&opened, &mut registry, Arc::new(engine), &options)
        .await
        .map_err(|error| Failure::of_service(&error, &args.store.store))?;
    for (_, error) in refresh.take_load_errors() {
        crate::run::print_load_error(&error);
    }
    let store_url = engine_stores_sql::display_url(&args.store.store);
    let json = args.log_format == LogFormat::Json;
    let progress = (std::io::stderr().is_terminal() && !json).then(|| {
        let bar = indicatif::ProgressBar::new(refresh.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut counts: HashMap<&'static str, usize> = HashMap::new();
    let mut rejected = Vec::new();
    let mut unprovisioned = Vec::new();
    let mut worst = Exit::Success;
    while let Some(refreshed) = refresh.next().await {
        let Ok(refreshed) = refreshed else {
            worst = Exit::VendorError;
            continue;
        };
        printer::warnings(&refreshed.warnings);
        let id = refreshed.id;
        let outcome = &refreshed.outcome;
        let (label, exit) = match outcome {
            Outcome::Refreshed(_) => ("refreshed", Exit::Success),
            Outcome::Fresh => ("fresh", Exit::Success),
            Outcome::Rejected { .. } => ("rejected", Exit::AuthFailed),
            Outcome::Transient(_) => ("failed transiently", Exit::Transport),
            Outcome::NotProvisioned { .. } => ("not provisioned", Exit::AuthFailed),
            Outcome::Skipped => {
                if let Some(bar) = &progress {
                    bar.inc(1);
                }
                continue;
            }
            _ => ("failed", Exit::VendorError),
        };
        *counts.entry(label).or_default() += 1;
        match outcome {
            Outcome::Rejected { .. } => rejected.push(id.clone()),
            Outcome::NotProvisioned { .. } => unprovisioned.push(id.clone()),
            _ => {}
        }
        worst = worse(worst, exit);
        let file = refreshed.connector.as_deref().unwrap_or("CONNECTOR");
        let mut line = line_of(outcome, &id, file, &store_url);
        if json {
            let event = serde_json::json!({
                "event": "refresh",
                "instance": id,
                "outcome": label.replace(' ', "-"),
                "detail": (!line.is_empty()).then_some(&line),
                "transition": refreshed.transition.map(|transition| transition.to_value()),
                "at": crate::time::now(),
            });
            printer::verbose(&event.to_string());
            continue;
        }
        if let Some(transition) = &refreshed.transition
            && transition.to != ScheduleStatus::NeedsReauth
        {
            let _ = write!(line, "{}", transition_of(transition));
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
                if !matches!(outcome, Outcome::Refreshed(_) | Outcome::Fresh) {
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

/// The line about an instance's outcome: the step that refreshed it, or what failed and what
/// to do.
fn line_of(outcome: &Outcome, id: &str, file: &str, store_url: &str) -> String {
    match outcome {
        Outcome::Refreshed(report) => format!(
            "{}, {}, {} ms",
            report.by,
            report
                .status
                .map_or_else(|| "-".to_owned(), |status| status.to_string()),
            report.elapsed.as_millis()
        ),
        Outcome::Rejected {
            error,
            count,
            max_failures,
        } => {
            let mut line = chain(error);
            match count {
                Ok(count) if count >= max_failures => {
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
            line
        }
        Outcome::Transient(error) | Outcome::Failed(Why::Run(error)) => chain(error),
        Outcome::Failed(Why::Store(error)) => error.to_string(),
        Outcome::Failed(Why::NoConnector) => {
            "no connector recorded: import it with `--connector FILE`".to_owned()
        }
        Outcome::Failed(Why::ConnectorUnloadable { name }) => {
            format!("connector `{name}` cannot be loaded")
        }
        Outcome::NotProvisioned {
            reason: RefreshReason::NoToken,
        } => format!(
            "no token yet: the next run obtains one, or sign in: `engine authorize {file} \
             --instance {id} --store {store_url}`"
        ),
        Outcome::NotProvisioned { .. } => format!(
            "never provisioned: the next run provisions it, or now: `engine run {file} \
             provisionAuthValidation --instance {id} --store {store_url}`"
        ),
        _ => String::new(),
    }
}

/// What a change of status says after an outcome's line: the new status, and when the next
/// attempt is due (`needs-reauth` says itself, in the rejection's line).
fn transition_of(transition: &Transition) -> String {
    let mut text = format!(
        " (`{}` → `{}`",
        transition.from.as_str(),
        transition.to.as_str()
    );
    if let Some(at) = transition
        .retry_at_ms
        .and_then(|ms| i64::try_from(ms).ok())
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
    {
        let _ = write!(
            text,
            ": next attempt at {}",
            at.strftime("%Y-%m-%dT%H:%M:%SZ")
        );
    }
    text.push(')');
    text
}

/// A run error with its causes: a store's failure says why (`too many clients already`).
fn chain(error: &RunError) -> String {
    let mut line = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !line.contains(&cause_text) {
            let _ = write!(line, ": {cause_text}");
        }
        source = cause.source();
    }
    line
}

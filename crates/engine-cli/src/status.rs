//! `engine status CONNECTOR --config INSTANCE` (or `--instance ID --store URL`): whether the
//! instance's token is fresh and when it expires, decided by the runtime's own freshness check
//! (the one `engine run` uses: session modes, skew, OAuth2's keys), without sending anything.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use engine_runtime::{Freshness, RefreshReason};
use engine_store::{FileStore, InstanceStore};
use serde_json::json;

use crate::exit::Exit;
use crate::printer;
use crate::render::{Level, Message};
use crate::run::{InstanceArgs, Target, load_connector};

#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    /// The connector file (it decides how tokens expire).
    connector: PathBuf,
    #[command(flatten)]
    target: InstanceArgs,
    /// `table` for people, `json` for scripts.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

pub(crate) fn status(args: &StatusArgs) -> Exit {
    let Some(connector) = load_connector(&args.connector) else {
        return Exit::Invalid;
    };
    let Some(target) = args.target.target() else {
        return Exit::Usage;
    };
    let Some(runtime) = crate::store::runtime() else {
        return Exit::Invalid;
    };
    let (id, shown, store_url) = match target {
        Target::File(path) => ("instance", path.display().to_string(), String::new()),
        Target::Stored { instance, store } => (instance, instance.to_owned(), store.to_owned()),
    };
    if let Target::File(path) = target
        && !path.is_file()
    {
        let title = format!(
            "instance file `{}` does not exist or is not a regular file",
            path.display()
        );
        printer::error(&Message::new(Level::Error, &title));
        return Exit::Invalid;
    }
    let loaded = runtime.block_on(async {
        let store: Arc<dyn InstanceStore> = match target {
            Target::File(path) => Arc::new(FileStore::for_file(path)),
            Target::Stored { store, .. } => crate::store::open_for(store, &connector).await?,
        };
        store
            .load(id)
            .await
            .map_err(|error| crate::store::Failure::of_store(&error, &store_url))
    });
    let stored = match loaded {
        Ok(stored) => stored,
        Err(failure) => return failure.print(),
    };
    let now_ms = u64::try_from(jiff::Timestamp::now().as_millisecond()).unwrap_or_default();
    let freshness = engine_service::freshness(&connector, &stored.state, now_ms);
    let report = Report::of(&freshness, now_ms);
    match args.format {
        Format::Json => {
            let value = json!({
                "instance": shown,
                "connector": connector.name(),
                "state": report.state,
                "expires_at": report.expires_at_ms.map(crate::time::format_ms),
                "expires_in_seconds": report.expires_in_seconds,
                "why": report.why,
            });
            printer::stdout(&format!("{value:#}\n"));
        }
        Format::Table => {
            let mut lines = vec![
                ("instance", shown),
                ("connector", connector.name().to_owned()),
                ("state", report.state.to_owned()),
            ];
            if let Some(at) = report.expires_at_ms {
                let when = crate::time::format_ms(at);
                let relative = match report.expires_in_seconds {
                    Some(seconds) if seconds >= 0 => {
                        format!("in {}", humantime::format_duration(rounded(seconds)))
                    }
                    Some(seconds) => {
                        format!("{} ago", humantime::format_duration(rounded(-seconds)))
                    }
                    None => String::new(),
                };
                lines.push(("expires", format!("{when} ({relative})")));
            }
            lines.push(("why", report.why.to_owned()));
            let mut text = String::new();
            for (name, value) in &lines {
                let _ = writeln!(text, "{name:<10} {value}");
            }
            printer::stdout(&text);
        }
    }
    Exit::Success
}

/// Whole seconds, for a duration people read.
fn rounded(seconds: i64) -> std::time::Duration {
    std::time::Duration::from_secs(seconds.unsigned_abs())
}

/// What `status` prints: the state word, the expiry, and why.
struct Report {
    state: &'static str,
    expires_at_ms: Option<u64>,
    expires_in_seconds: Option<i64>,
    why: &'static str,
}

impl Report {
    fn of(freshness: &Freshness, now_ms: u64) -> Self {
        let until = |at_ms: u64| {
            let difference = i128::from(at_ms) - i128::from(now_ms);
            i64::try_from(difference / 1000).ok()
        };
        match freshness {
            Freshness::Fresh(Some(at_ms)) => Report {
                state: "fresh",
                expires_at_ms: Some(*at_ms),
                expires_in_seconds: until(*at_ms),
                why: "the next run uses the stored token",
            },
            Freshness::Fresh(None) => Report {
                state: "fresh",
                expires_at_ms: None,
                expires_in_seconds: None,
                why: "no expiry to check: the connector keeps no token, or its session never expires",
            },
            Freshness::Stale(RefreshReason::Expired { at_ms }) => Report {
                state: "expired",
                expires_at_ms: Some(*at_ms),
                expires_in_seconds: until(*at_ms),
                why: "the next run refreshes the token first (or it expires within the skew)",
            },
            Freshness::Stale(RefreshReason::NotProvisioned) => Report {
                state: "not-provisioned",
                expires_at_ms: None,
                expires_in_seconds: None,
                why: "the next run provisions the instance first (PROVISION AUTH VALIDATION)",
            },
            Freshness::Stale(RefreshReason::NoToken) => Report {
                state: "no-token",
                expires_at_ms: None,
                expires_in_seconds: None,
                why: "no access token yet: the next run obtains one (or `engine authorize` signs in)",
            },
            Freshness::Stale(RefreshReason::SessionAlways) => Report {
                state: "refreshed-every-run",
                expires_at_ms: None,
                expires_in_seconds: None,
                why: "`session.management` is `always`: every run obtains a new token",
            },
            Freshness::Stale(_) => Report {
                state: "stale",
                expires_at_ms: None,
                expires_in_seconds: None,
                why: "the next run refreshes the token first",
            },
        }
    }
}

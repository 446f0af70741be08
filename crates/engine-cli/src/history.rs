//! Refresh history: what the runtime reports of each refresh ([`RefreshReport`]), kept per
//! instance in its store, and `engine history ID`.

use std::sync::{Mutex, PoisonError};

use engine_runtime::{Event, Observer, RefreshReason, RefreshReport};
use engine_store::InstanceStore;
use serde_json::{Value, json};

use crate::Exit;
use crate::instances::{Failure, Format, StoreArgs, open, runtime};
use crate::printer;

/// How many entries each instance keeps unless `--keep-history` says otherwise.
pub(crate) const DEFAULT_KEEP: usize = 100;

/// Why a refresh ran, as the history records it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Trigger {
    /// `engine run`, on its own: expiry, a missing token, or the vendor's 401.
    Run,
    /// `engine refresh`.
    Schedule,
}

/// Passes every event on to `inner`, and keeps the [`RefreshReport`]s.
pub(crate) struct Recorder<'a> {
    inner: &'a dyn Observer,
    reports: Mutex<Vec<RefreshReport>>,
}

impl<'a> Recorder<'a> {
    pub(crate) fn new(inner: &'a dyn Observer) -> Self {
        Self {
            inner,
            reports: Mutex::new(Vec::new()),
        }
    }

    /// The reports kept so far, emptied.
    pub(crate) fn take(&self) -> Vec<RefreshReport> {
        std::mem::take(&mut *self.reports.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Observer for Recorder<'_> {
    fn event(&self, event: &Event) {
        if let Event::RefreshFinished(report) = event {
            self.reports
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(report.clone());
        }
        if self.inner.enabled() {
            self.inner.event(event);
        }
    }
}

/// One history entry: when, why, what, the status, how long, the outcome, and token
/// fingerprints (never a token; the error is already masked by the runtime).
pub(crate) fn entry_of(report: &RefreshReport, trigger: Trigger) -> Value {
    let trigger = match (trigger, &report.reason) {
        (Trigger::Schedule, _) => "schedule",
        (Trigger::Run, RefreshReason::Rejected { .. }) => "401",
        (Trigger::Run, RefreshReason::SessionAlways) => "manual",
        (Trigger::Run, _) => "expiry",
    };
    json!({
        "at": jiff::Timestamp::now().to_string(),
        "trigger": trigger,
        "resource": report.by,
        "status": report.status,
        "duration_ms": u64::try_from(report.elapsed.as_millis()).unwrap_or(u64::MAX),
        "outcome": if report.error.is_none() { "ok" } else { "failed" },
        "error": report.error,
        "old_token": report.old_token,
        "new_token": report.new_token,
    })
}

/// Appends the entries of `reports` to the history of `instance`; a failure to record is a
/// warning, never the command's failure.
pub(crate) async fn record(
    store: &dyn InstanceStore,
    instance: &str,
    reports: &[RefreshReport],
    trigger: Trigger,
    keep: usize,
) {
    for report in reports {
        if let Err(error) = store
            .append_history(instance, entry_of(report, trigger), keep)
            .await
        {
            printer::verbose(&format!(
                "warning: the refresh history of `{instance}` was not recorded: {error}"
            ));
        }
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct HistoryArgs {
    /// The instance id.
    id: String,
    /// `table` for people, `json` for programs.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    #[command(flatten)]
    store: StoreArgs,
}

/// `engine history ID`: the instance's refreshes, oldest first.
pub(crate) fn history(args: &HistoryArgs) -> Exit {
    let Some(runtime) = runtime() else {
        return Exit::Invalid;
    };
    runtime.block_on(async {
        let result = async {
            let store = open(&args.store).await?;
            store
                .history(&args.id)
                .await
                .map_err(|error| Failure::of_store(&error, &args.store.store))
        }
        .await;
        let entries = match result {
            Ok(entries) => entries,
            Err(failure) => return failure.print(),
        };
        let text = match args.format {
            Format::Json => format!(
                "{}\n",
                serde_json::to_string_pretty(&entries).unwrap_or_default()
            ),
            Format::Table => {
                let cell = |entry: &Value, key: &str| match &entry[key] {
                    Value::Null => "-".to_owned(),
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                let mut rows = vec![
                    [
                        "AT", "TRIGGER", "RESOURCE", "STATUS", "MS", "OUTCOME", "OLD", "NEW",
                        "ERROR",
                    ]
                    .map(str::to_owned)
                    .to_vec(),
                ];
                rows.extend(entries.iter().map(|entry| {
                    [
                        "at",
                        "trigger",
                        "resource",
                        "status",
                        "duration_ms",
                        "outcome",
                        "old_token",
                        "new_token",
                        "error",
                    ]
                    .iter()
                    .map(|key| cell(entry, key))
                    .collect()
                }));
                crate::instances::render_table(&rows)
            }
        };
        printer::stdout(&text);
        Exit::Success
    })
}

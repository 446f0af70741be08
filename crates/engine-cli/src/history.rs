//! Refresh history: what the runtime reports of each lifecycle step ([`RefreshReport`]), kept
//! per instance in its store (an instance file's: a sidecar JSON-lines file next to it), and
//! `engine history ID` / `engine history --config FILE`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use engine_runtime::{Event, Observer, RefreshReason, RefreshReport, RunRequest};
use engine_spec::kinds::ResourceType;
use engine_store::{FileStore, InstanceStore};
use serde_json::{Value, json};

use crate::Exit;
use crate::instances::{Failure, Format, open_url, runtime};
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
        // Every event, whatever the verbosity (the inner observer decides): warnings are shown,
        // and `engine run` keeps the skipped parameters for a refusal's error.
        self.inner.event(event);
    }
}

/// The longest vendor body a history entry keeps, in characters.
const MAX_RESPONSE: usize = 2000;

/// One history entry: when, why (`schedule`, `expiry`, `401`, `manual`), which step or retried
/// resource, the status, how long, the outcome (`ok`; `rejected` for a 4xx answer other than
/// 429, which re-authentication fixes; `failed` otherwise), the error and the vendor's body
/// (both masked by the runtime), and token fingerprints (never a token).
pub(crate) fn entry_of(report: &RefreshReport, trigger: Trigger) -> Value {
    let trigger = match (trigger, &report.reason) {
        (Trigger::Schedule, _) => "schedule",
        (Trigger::Run, RefreshReason::Rejected { .. }) => "401",
        (Trigger::Run, RefreshReason::Requested) => "manual",
        (Trigger::Run, _) => "expiry",
    };
    let outcome = match (&report.error, report.status) {
        (None, _) => "ok",
        (Some(_), Some(status)) if (400..500).contains(&status) && status != 429 => "rejected",
        (Some(_), _) => "failed",
    };
    let response = report.response.as_deref().map(|body| {
        if body.chars().count() > MAX_RESPONSE {
            let mut cut: String = body.chars().take(MAX_RESPONSE).collect();
            cut.push('…');
            cut
        } else {
            body.to_owned()
        }
    });
    json!({
        "at": crate::time::now(),
        "trigger": trigger,
        "resource": report.by,
        "retry": report.retry,
        "status": report.status,
        "duration_ms": u64::try_from(report.elapsed.as_millis()).unwrap_or(u64::MAX),
        "outcome": outcome,
        "error": report.error,
        "response": response,
        "old_token": report.old_token,
        "new_token": report.new_token,
    })
}

/// After `engine run`: records the run's lifecycle steps in the instance's history, and clears
/// its rejection count and `needs-reauth` mark when the run obtained a token: a refresh or a
/// provisioning the engine decided on, or a `PROVISION AUTH VALIDATION` or `ON REFRESH` resource
/// the caller ran.
pub(crate) async fn after_run(
    store: &dyn InstanceStore,
    request: &RunRequest<'_>,
    reports: &[RefreshReport],
    succeeded: bool,
) {
    record(store, request.instance, reports, Trigger::Run, DEFAULT_KEEP).await;
    let renewed = reports.iter().any(|report| {
        report.error.is_none() && !report.retry && report.reason != RefreshReason::Requested
    }) || request
        .connector
        .find_resource(request.selector)
        .is_some_and(|resource| {
            matches!(
                resource.kind(),
                ResourceType::ProvisionAuthValidation | ResourceType::OnRefresh
            )
        });
    if succeeded && renewed {
        crate::refresh::clear_needs_reauth(store, request.instance).await;
    }
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
    /// The instance id, in the store of `--store`.
    #[arg(required_unless_present = "config", conflicts_with = "config")]
    id: Option<String>,
    /// An instance file run with `engine run --config FILE`: its history is the sidecar
    /// `.FILE.history.jsonl` next to it.
    #[arg(long, short = 'c', value_name = "INSTANCE")]
    config: Option<PathBuf>,
    /// `table` for people, `json` for programs.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// The instance store: `sqlite:PATH`, `postgres://USER@HOST/DB`, or `file:DIR`.
    #[arg(long, env = "ENGINE_STORE", hide_env_values = true, value_name = "URL")]
    store: Option<String>,
}

/// `engine history ID`: the instance's lifecycle steps, oldest first.
pub(crate) fn history(args: &HistoryArgs) -> Exit {
    let Some(runtime) = runtime() else {
        return Exit::Invalid;
    };
    runtime.block_on(async {
        let result = async {
            let (store, id, url): (Arc<dyn InstanceStore>, &str, String) =
                match (&args.config, &args.id, &args.store) {
                    (Some(config), _, _) => {
                        let file: Arc<dyn InstanceStore> = Arc::new(FileStore::for_file(config));
                        (file, "instance", config.display().to_string())
                    }
                    (None, Some(id), Some(url)) => (open_url(url).await?, id, url.clone()),
                    (None, _, _) => {
                        return Err(Failure::new(
                            "`engine history ID` needs a store".to_owned(),
                            Exit::Usage,
                        )
                        .help("pass `--store URL` (or set `ENGINE_STORE`), or read an instance file's history with `--config FILE`"));
                    }
                };
            store
                .history(id)
                .await
                .map_err(|error| Failure::of_store(&error, &url))
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
                    Value::String(text) if key == "at" => crate::time::format_text(text),
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
                    .map(|key| match cell(entry, key) {
                        resource if *key == "resource" && entry["retry"] == true => {
                            format!("{resource} (retry)")
                        }
                        text => text,
                    })
                    .collect()
                }));
                crate::instances::render_table(&rows)
            }
        };
        printer::stdout(&text);
        Exit::Success
    })
}

//! `engine history ID` / `engine history --config FILE`: the refresh history
//! ([`engine_service::history`]) of an instance, as a table or JSON.

use std::path::PathBuf;
use std::sync::Arc;

use engine_store::{FileStore, InstanceStore};
use serde_json::Value;

use crate::Exit;
use crate::instances::Format;
use crate::printer;
use crate::store::{Failure, open_url, runtime};

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
                        // The change of status the refresh made: `rejected → needs-reauth`.
                        outcome if *key == "outcome" && entry["transition"]["to"].is_string() => {
                            format!("{outcome} → {}", cell(&entry["transition"], "to"))
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

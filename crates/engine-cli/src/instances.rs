//! `engine instances import | list | show | delete | export`: the instances of a store
//! (`--store URL` or `ENGINE_STORE`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine_runtime::EngineBuilder;
use engine_service::{DeleteConnector, ErrorKind, OnDelete, secret_rule};
use engine_spec::Connector;
use engine_store::{InstanceStore, Page, State, connector_of};

use crate::Exit;
use crate::printer;
use crate::store::{Failure, open_store, open_url, runtime, secret_keys};

/// Where instances live.
#[derive(Debug, clap::Args)]
pub(crate) struct StoreArgs {
    /// The instance store: `sqlite:PATH`, `postgres://USER@HOST/DB`, or `file:DIR` (a
    /// directory of `<id>.json` files).
    #[arg(long, env = "ENGINE_STORE", hide_env_values = true, value_name = "URL")]
    pub(crate) store: String,
}

#[derive(Debug, clap::Args)]
pub(crate) struct InstancesArgs {
    #[command(subcommand)]
    command: InstancesCommand,
}

#[derive(Debug, clap::Subcommand)]
enum InstancesCommand {
    /// Store instance files; an instance's id is its file's stem (`cust42.json` → `cust42`).
    Import {
        /// The instance files (JSON objects of configuration key to value).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The id of the instance (only with one file).
        #[arg(long)]
        id: Option<String>,
        /// The connector the instances belong to, recorded with each one.
        #[arg(long, value_name = "CONNECTOR")]
        connector: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the instances: id, connector, state, token expiry and the last refresh's outcome.
    List {
        /// Only the instances of this connector.
        #[arg(long, value_name = "CONNECTOR")]
        connector: Option<String>,
        /// Only the instances in this state.
        #[arg(long, value_enum)]
        state: Option<InstanceState>,
        /// `table` for people, `json` for programs.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Print an instance with its secrets masked.
    Show {
        /// The instance id.
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete an instance, after running its connector's `onDelete` resource when it has one.
    Delete {
        /// The instance id.
        id: String,
        /// Delete the instance even when its `onDelete` call fails (or its connector cannot be
        /// loaded).
        #[arg(long)]
        force: bool,
        /// The connector whose `onDelete` runs (default: the one recorded at import).
        #[arg(long, value_name = "FILE")]
        connector: Option<PathBuf>,
        /// The bound on the whole `onDelete` call, a token refresh and a retry included (`30s`,
        /// `5m`, or seconds).
        #[arg(long, value_name = "DURATION", default_value = "30", value_parser = crate::duration::parse_timeout)]
        timeout: std::time::Duration,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Set configuration values of an instance: `KEY=VALUE`, or `KEY` alone to read its value
    /// from standard input (a prompt on a terminal, not echoed). A secret (by the connector's
    /// rule) is only ever read so, never taken from the command line.
    Set {
        /// The instance id.
        id: String,
        /// `KEY=VALUE` for a plain value, `KEY` for one read from standard input (one line each,
        /// in order).
        #[arg(required = true, value_name = "KEY[=VALUE]")]
        values: Vec<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Re-encrypt every instance's secrets with the current key (`ENGINE_SECRET_KEY`), reading
    /// values encrypted with the old keys (`ENGINE_SECRET_KEYS_OLD`) or not encrypted yet.
    Rekey {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Print an instance as an instance file, secrets in clear, or write it with `--output`.
    Export {
        /// The instance id.
        id: String,
        /// Write the file here (owner-only permissions) instead of standard output.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
        /// Print the secrets on a terminal too (without it, `export` refuses a terminal).
        #[arg(long)]
        reveal: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Table,
    Json,
}

/// What `engine instances list` says of an instance's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum InstanceState {
    /// `engine refresh` gave up after consecutive rejected refreshes: re-authenticate.
    NeedsReauth,
    /// The token is valid now.
    Fresh,
    /// The token expired.
    Expired,
    /// No expiry is known (not provisioned yet, or a token without expiry).
    Unknown,
}

impl From<engine_service::InstanceState> for InstanceState {
    fn from(state: engine_service::InstanceState) -> Self {
        match state {
            engine_service::InstanceState::NeedsReauth => Self::NeedsReauth,
            engine_service::InstanceState::Fresh => Self::Fresh,
            engine_service::InstanceState::Expired => Self::Expired,
            engine_service::InstanceState::Unknown => Self::Unknown,
        }
    }
}

pub(crate) fn instances(args: &InstancesArgs) -> Exit {
    let Some(runtime) = runtime() else {
        return Exit::Invalid;
    };
    runtime.block_on(async {
        let result = match &args.command {
            InstancesCommand::Import {
                files,
                id,
                connector,
                store,
            } => import(store, files, id.as_deref(), connector.as_deref()).await,
            InstancesCommand::List {
                connector,
                state,
                format,
                store,
            } => list(store, connector.as_deref(), *state, *format).await,
            InstancesCommand::Show { id, store } => show(store, id).await,
            InstancesCommand::Delete {
                id,
                force,
                connector,
                timeout,
                store,
            } => delete(store, id, *force, connector.as_deref(), *timeout).await,
            InstancesCommand::Set { id, values, store } => set(store, id, values).await,
            InstancesCommand::Rekey { store } => rekey(store).await,
            InstancesCommand::Export {
                id,
                output,
                reveal,
                store,
            } => export(store, id, output.as_deref(), *reveal).await,
        };
        result.unwrap_or_else(Failure::print)
    })
}

/// Opens the store of `args`; secrets are encrypted by the rule for secret names.
pub(crate) async fn open(args: &StoreArgs) -> Result<Arc<dyn InstanceStore>, Failure> {
    open_url(&args.store).await
}

async fn import(
    args: &StoreArgs,
    files: &[PathBuf],
    id: Option<&str>,
    connector: Option<&str>,
) -> Result<Exit, Failure> {
    if id.is_some() && files.len() > 1 {
        return Err(Failure::new(
            "`--id` names one instance, but several files were given".to_owned(),
            Exit::Usage,
        )
        .help("import the files one at a time, or let each file's stem be its id"));
    }
    // A connector file gives the rule for which values are encrypted; a bare name cannot.
    let known = match connector.map(Path::new) {
        Some(path) if path.is_file() => match crate::run::load_connector(path) {
            Some(connector) => Some(connector),
            None => return Ok(Exit::Invalid),
        },
        _ => None,
    };
    let store = open_store(&args.store).await?.sealed(known.as_ref());
    if secret_keys()?.is_none() {
        printer::verbose(
            "note: `ENGINE_SECRET_KEY` is not set: secrets are stored unencrypted (docs/stores.md)",
        );
    }
    for file in files {
        let instance = match id {
            Some(id) => id.to_owned(),
            None => file
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        let values = read_instance_file(file)?;
        let new = engine_service::NewInstance {
            id: &instance,
            connector_name: connector,
            connector: known.as_ref(),
            values,
        };
        match engine_service::import(&*store, new).await {
            Ok(_) => printer::verbose(&format!("imported `{instance}` from `{}`", file.display())),
            Err(error) => {
                if let engine_service::ErrorKind::InstanceExists { .. } = error.kind() {
                    return Err(Failure::new(error.to_string(), Exit::Invalid).help(format!(
                        "delete it first (`engine instances delete {instance}`), or import under another id with `--id`"
                    )));
                }
                return Err(Failure::of_service(&error, &args.store));
            }
        }
    }
    Ok(Exit::Success)
}

fn read_instance_file(path: &Path) -> Result<State, Failure> {
    let text = crate::input::read_text(path)
        .map_err(|error| Failure::new(error.to_string(), Exit::Invalid))?;
    match serde_json::from_str(&text) {
        Ok(serde_json::Value::Object(state)) => Ok(state),
        Ok(_) => Err(Failure::new(
            format!(
                "instance file `{}` must contain a JSON object at the top level",
                path.display()
            ),
            Exit::Invalid,
        )),
        Err(error) => Err(Failure::new(
            format!(
                "instance file `{}` is not valid JSON: {error}",
                path.display()
            ),
            Exit::Invalid,
        )),
    }
}

async fn list(
    args: &StoreArgs,
    connector: Option<&str>,
    state: Option<InstanceState>,
    format: Format,
) -> Result<Exit, Failure> {
    let store = open(args).await?;
    let now_ms = jiff::Timestamp::now()
        .as_millisecond()
        .try_into()
        .unwrap_or(0);
    let mut rows = Vec::new();
    // The store filters what it can (by its indexes); the rest is decided here.
    let mut page = Page {
        after: None,
        limit: 1000,
        connector: connector.map(str::to_owned),
        status: (state == Some(InstanceState::NeedsReauth)).then(|| "needs-reauth".to_owned()),
        expires_before_ms: (state == Some(InstanceState::Expired)).then_some(now_ms),
        ..Page::default()
    };
    loop {
        let listing = store
            .list(page.clone())
            .await
            .map_err(|error| Failure::of_store(&error, &args.store))?;
        for summary in listing.instances {
            let instance_state = engine_service::InstanceState::of(&summary, now_ms);
            if state.is_some_and(|wanted| wanted != InstanceState::from(instance_state)) {
                continue;
            }
            let last = engine_service::last_refresh(&*store, &summary.id).await;
            rows.push((summary, instance_state, last));
        }
        match listing.next {
            Some(next) => page.after = Some(next),
            None => break,
        }
    }
    let text = match format {
        Format::Json => {
            let items: Vec<serde_json::Value> = rows
                .iter()
                .map(|(summary, state, last)| {
                    serde_json::json!({
                        "id": summary.id,
                        "connector": summary.connector,
                        "state": state.label(),
                        "expires_at": summary.expires_at_ms.map(crate::time::format_ms),
                        "last_refresh": last.as_ref().map(|last| serde_json::json!({
                            "outcome": last.outcome,
                            "at": last.at,
                        })),
                        "version": summary.version,
                    })
                })
                .collect();
            format!(
                "{}\n",
                serde_json::to_string_pretty(&items).unwrap_or_default()
            )
        }
        Format::Table => {
            let mut table = vec![[
                "ID".to_owned(),
                "CONNECTOR".to_owned(),
                "STATE".to_owned(),
                "EXPIRES".to_owned(),
                "LAST REFRESH".to_owned(),
            ]];
            table.extend(rows.iter().map(|(summary, state, last)| {
                [
                    summary.id.clone(),
                    summary.connector.clone().unwrap_or_else(|| "-".to_owned()),
                    state.label().to_owned(),
                    summary
                        .expires_at_ms
                        .map_or_else(|| "-".to_owned(), crate::time::format_ms),
                    last.as_ref().map_or_else(
                        || "-".to_owned(),
                        |last| format!("{} {}", last.outcome, crate::time::format_text(&last.at)),
                    ),
                ]
            }));
            render_table(&table)
        }
    };
    printer::stdout(&text);
    Ok(Exit::Success)
}

/// Columns padded to their widest cell, two spaces apart, no trailing spaces.
pub(crate) fn render_table<Row: AsRef<[String]>>(rows: &[Row]) -> String {
    let columns = rows.first().map_or(0, |row| row.as_ref().len());
    let mut widths = vec![0; columns];
    for row in rows {
        let row = row.as_ref();
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in rows {
        let mut line = String::new();
        for (index, (cell, width)) in row.as_ref().iter().zip(&widths).enumerate() {
            if index > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            line.extend(std::iter::repeat_n(
                ' ',
                width.saturating_sub(cell.chars().count()),
            ));
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// Prints an instance with every secret masked: the values its connector's rule says are secret
/// (the rule the runtime masks and encrypts by: `PASSWORD` properties, the keys it sends as
/// credentials, names like secrets; the name rule alone when the connector is not at hand) and
/// every value stored encrypted. It reads the stored form: nothing is decrypted to be masked.
async fn show(args: &StoreArgs, id: &str) -> Result<Exit, Failure> {
    let opened = open_store(&args.store).await?;
    let read = opened
        .plain()
        .load(id)
        .await
        .map_err(|error| Failure::of_store(&error, &args.store))?;
    let connector = connector_of(&read.state).and_then(quiet_connector);
    let is_secret = secret_rule(connector.as_ref());
    let mut state = State::clone(&read.state);
    for (key, value) in &mut state {
        if !value.is_null() && (is_secret(key) || engine_stores_sql::is_encrypted(value)) {
            *value = "****".into();
        }
    }
    let mut shown = serde_json::Map::new();
    shown.insert("id".to_owned(), id.into());
    shown.insert("version".to_owned(), read.version.into());
    shown.insert("state".to_owned(), serde_json::Value::Object(state));
    let text = serde_json::to_string_pretty(&shown).unwrap_or_default();
    printer::stdout(&format!("{text}\n"));
    Ok(Exit::Success)
}

/// `engine instances set ID KEY[=VALUE]...`: sets values under the instance's lock (a refresh
/// in progress is waited for, never overwritten), secrets read from standard input only; a
/// changed secret (a credential, by the connector's rule) clears the instance's rejection count
/// and `needs-reauth` mark.
async fn set(args: &StoreArgs, id: &str, values: &[String]) -> Result<Exit, Failure> {
    let opened = open_store(&args.store).await?;
    let stored = opened
        .plain()
        .load(id)
        .await
        .map_err(|error| Failure::of_store(&error, &args.store))?;
    let connector = connector_of(&stored.state).and_then(quiet_connector);
    let is_secret = secret_rule(connector.as_ref());
    let mut assignments: Vec<(String, Option<String>)> = Vec::new();
    for value in values {
        let (key, given) = match value.split_once('=') {
            Some((key, given)) => (key, Some(given.to_owned())),
            None => (value.as_str(), None),
        };
        if key.is_empty() || key.starts_with("engine.") {
            return Err(Failure::new(
                format!("`{key}` cannot be set: keys starting with `engine.` are the engine's own"),
                Exit::Usage,
            )
            .help("name a configuration key of the connector, such as `client.id`"));
        }
        if given.is_some() && is_secret(key) {
            return Err(Failure::new(
                format!("`{key}` is a secret: its value is never taken from the command line"),
                Exit::Usage,
            )
            .help(format!(
                "pass `{key}` alone and type its value at the prompt, or pipe it on standard input (one line per key)"
            )));
        }
        assignments.push((key.to_owned(), given));
    }
    let mut read = Vec::new();
    for (key, given) in &assignments {
        let value = match given {
            Some(value) => value.clone(),
            None => read_value(key)?,
        };
        read.push((key.clone(), value));
    }
    let store = opened.sealed(connector.as_ref());
    engine_service::set_values(&*store, id, read, &is_secret, &waiting_note(id))
        .await
        .map_err(|error| Failure::of_store(&error, &args.store))?;
    let keys: Vec<String> = assignments
        .iter()
        .map(|(key, _)| format!("`{key}`"))
        .collect();
    printer::verbose(&format!("set {} on `{id}`", keys.join(", ")));
    Ok(Exit::Success)
}

/// One line of standard input, the value of `key`: after a prompt, not echoed, on a terminal.
fn read_value(key: &str) -> Result<String, Failure> {
    use std::io::{BufRead as _, IsTerminal as _};
    let terminal = std::io::stdin().is_terminal();
    let echo = |on: bool| {
        if terminal {
            let _ = std::process::Command::new("stty")
                .arg(if on { "echo" } else { "-echo" })
                .stdin(std::process::Stdio::inherit())
                .status();
        }
    };
    if terminal {
        printer::message(&format!("value of `{key}` (not echoed): "));
    }
    echo(false);
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    echo(true);
    if terminal {
        printer::message("\n");
    }
    match read {
        Ok(0) | Err(_) => Err(Failure::new(
            format!("no value for `{key}` on standard input"),
            Exit::Usage,
        )
        .help("give one line per key named without `=VALUE`, in the order named")),
        Ok(_) => Ok(line.trim_end_matches(['\n', '\r']).to_owned()),
    }
}

/// What a writer says when another process holds the lock it needs.
fn waiting_note(id: &str) -> impl Fn() + Sync + '_ {
    move || {
        printer::verbose(&format!(
            "waiting for the lock of `{id}`: another process holds it (a refresh in progress)"
        ));
    }
}

async fn rekey(args: &StoreArgs) -> Result<Exit, Failure> {
    let Some(keys) = secret_keys()? else {
        return Err(Failure::new(
            "`engine instances rekey` needs the key to encrypt with".to_owned(),
            Exit::Usage,
        )
        .help(
            "set `ENGINE_SECRET_KEY=ID:BASE64`, and the previous keys in `ENGINE_SECRET_KEYS_OLD`",
        ));
    };
    let current_id = keys.current.id().to_owned();
    let plain = engine_service::open_plain(&args.store)
        .await
        .map_err(|error| Failure::of_service(&error, &args.store))?;
    let waiting = |id: &str| waiting_note(id)();
    let engine_service::Rekeyed { changed, total } = engine_service::rekey(&plain, &keys, &waiting)
        .await
        .map_err(|error| Failure::of_service(&error, &args.store))?;
    printer::verbose(&format!(
        "rekeyed {changed} of {total} instances with key `{current_id}`"
    ));
    Ok(Exit::Success)
}

/// The connector file `name` names, loaded without a word when it cannot be (a bare name, a
/// moved file).
fn quiet_connector(name: &str) -> Option<Connector> {
    engine_service::load_connector(Path::new(name)).ok()
}

/// Runs the connector's `onDelete` resource (when it has one), then deletes the instance; a
/// failed `onDelete` keeps it unless `force`.
async fn delete(
    args: &StoreArgs,
    id: &str,
    force: bool,
    connector: Option<&Path>,
    timeout: std::time::Duration,
) -> Result<Exit, Failure> {
    let opened = open_store(&args.store).await?;
    let read = opened
        .sealed(None)
        .load(id)
        .await
        .map_err(|error| Failure::of_store(&error, &args.store))?;
    let path = connector
        .map(Path::to_path_buf)
        .or_else(|| connector_of(&read.state).map(PathBuf::from));
    let loaded = match &path {
        Some(path) if path.is_file() => crate::run::load_connector(path),
        _ => None,
    };
    let kept = |title: String, exit: Exit| {
        Failure::new(title, exit).help(format!(
            "fix the cause and delete again, or delete it anyway with `engine instances delete {id} --force` (what `onDelete` would have removed at the vendor stays)"
        ))
    };
    let name = path.as_ref().map(|path| path.display().to_string());
    let target = match (&name, &loaded) {
        (_, Some(connector)) => DeleteConnector::Loaded(connector),
        (Some(name), None) => DeleteConnector::Unloadable { name },
        (None, None) => DeleteConnector::Unrecorded,
    };
    let engine = EngineBuilder::new()
        .timeout(timeout)
        .build()
        .map_err(|error| Failure::new(error.to_string(), Exit::Transport))?;
    let on_delete = match engine_service::delete(&opened, id, target, &engine, force).await {
        Ok(on_delete) => on_delete,
        Err(error) => {
            let title = error.to_string();
            return Err(match error.into_kind() {
                ErrorKind::DeleteConnectorUnavailable { .. } => Failure::new(title, Exit::Invalid)
                .help(format!(
                    "name the connector file with `--connector FILE`, or delete the instance without its `onDelete` call with `engine instances delete {id} --force`"
                )),
                ErrorKind::OnDeleteFailed { error, .. } => {
                    let connector = loaded.as_ref().expect("`onDelete` ran on a loaded connector");
                    let exit = crate::run::report(&error, connector);
                    kept(title, exit)
                }
                ErrorKind::Store(error) => Failure::of_store(&error, &args.store),
                kind => Failure::of_service(&kind.into(), &args.store),
            });
        }
    };
    match on_delete {
        OnDelete::Sent { status } => printer::verbose(&format!("ON DELETE: {status}")),
        OnDelete::FailedForced(error) => printer::verbose(&format!(
            "warning: `onDelete` failed: {error}; `{id}` is deleted anyway (`--force`)"
        )),
        OnDelete::Unloadable => printer::verbose(&format!(
            "warning: connector `{}` cannot be loaded: `{id}` is deleted without its `onDelete` call (`--force`)",
            name.as_deref().unwrap_or_default()
        )),
        _ => {}
    }
    printer::verbose(&format!("deleted `{id}`"));
    Ok(Exit::Success)
}

/// Prints the instance as an instance file, secrets in clear (meant for a file or a pipe:
/// refused on a terminal without `reveal`), or writes it to `output`.
async fn export(
    args: &StoreArgs,
    id: &str,
    output: Option<&Path>,
    reveal: bool,
) -> Result<Exit, Failure> {
    if output.is_none() && !reveal && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(Failure::new(
            format!("`engine instances export` prints the secrets of `{id}` in clear, and standard output is a terminal"),
            Exit::Usage,
        )
        .help("write a file with `-o FILE` (owner-only permissions), pipe it, or pass `--reveal` to print them here; `engine instances show` masks them"));
    }
    let store = open(args).await?;
    let read = store
        .load(id)
        .await
        .map_err(|error| Failure::of_store(&error, &args.store))?;
    let text = format!(
        "{}\n",
        serde_json::to_string_pretty(&*read.state).unwrap_or_default()
    );
    match output {
        None => printer::stdout(&text),
        Some(path) => {
            let target = engine_store::FileStore::for_file(path);
            let state = State::clone(&read.state);
            let version = match target.load("instance").await {
                Ok(existing) => existing.version,
                Err(_) => 0,
            };
            target
                .write("instance", state, version)
                .await
                .map_err(|error| Failure::of_store(&error, &args.store))?;
            printer::verbose(&format!("exported `{id}` to `{}`", path.display()));
        }
    }
    Ok(Exit::Success)
}

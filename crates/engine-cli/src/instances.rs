//! `engine instances import | list | show | delete | export`: the instances of a store
//! (`--store URL` or `ENGINE_STORE`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use engine_runtime::{EngineBuilder, Inputs, RunRequest};
use engine_spec::Connector;
use engine_spec::kinds::ResourceType;
use engine_store::{
    CONNECTOR_KEY, InstanceStore, Page, Schedule, State, StoreError, StoreErrorKind, VERSION_KEY,
    connector_of,
};
use engine_stores_sql::{IsSecret, SecretKey};

use crate::Exit;
use crate::printer;
use crate::render::{Level, Message};

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

impl InstanceState {
    fn of(summary: &engine_store::Summary, now_ms: u64) -> Self {
        if summary.status.as_deref() == Some("needs-reauth") {
            return Self::NeedsReauth;
        }
        match summary.expires_at_ms {
            Some(at) if at > now_ms => Self::Fresh,
            Some(_) => Self::Expired,
            None => Self::Unknown,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::NeedsReauth => "needs-reauth",
            Self::Fresh => "fresh",
            Self::Expired => "expired",
            Self::Unknown => "unknown",
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

/// A failed command: its message, hint and exit code.
pub(crate) struct Failure {
    title: String,
    help: Option<String>,
    causes: Vec<String>,
    exit: Exit,
}

impl Failure {
    pub(crate) fn new(title: String, exit: Exit) -> Self {
        Self {
            title,
            help: None,
            causes: Vec::new(),
            exit,
        }
    }

    pub(crate) fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub(crate) fn print(self) -> Exit {
        let mut message = Message::new(Level::Error, &self.title);
        message.help = self.help.as_deref();
        message.causes = self.causes;
        printer::error(&message);
        self.exit
    }

    /// A store's error: its message and causes; an unknown instance is exit 3 with a hint, a
    /// backend failure exit 1.
    pub(crate) fn of_store(error: &StoreError, store: &str) -> Self {
        let mut causes = Vec::new();
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            causes.push(cause.to_string());
            source = cause.source();
        }
        let (exit, help) = match error.kind() {
            StoreErrorKind::UnknownInstance { .. } | StoreErrorKind::NotFound { .. } => (
                Exit::Invalid,
                Some(format!(
                    "list the instances with `engine instances list --store {}`, or import one with `engine instances import FILE --store {0}`",
                    engine_stores_sql::display_url(store)
                )),
            ),
            StoreErrorKind::InvalidInstanceId { .. } => (Exit::Invalid, None),
            StoreErrorKind::Io { source, .. }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
                ) =>
            {
                (
                    Exit::VendorError,
                    Some(
                        "the store can be listed and read where it is read-only; to change it, \
                         mount it read-write or give this user write access to its files and \
                         their directory"
                            .to_owned(),
                    ),
                )
            }
            _ => (Exit::VendorError, None),
        };
        Self {
            title: error.to_string(),
            help,
            causes,
            exit,
        }
    }
}

/// A multi-threaded runtime for the store's async calls; `None` after printing why it failed.
pub(crate) fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => Some(runtime),
        Err(error) => {
            let message = format!("cannot start the async runtime: {error}");
            printer::error(&Message::new(Level::Error, &message));
            None
        }
    }
}

/// Opens the store of `args`; secrets are encrypted by the rule for secret names.
pub(crate) async fn open(args: &StoreArgs) -> Result<Arc<dyn InstanceStore>, Failure> {
    open_url(&args.store).await
}

/// Opens the store `url` names; secrets are encrypted by the rule for secret names.
pub(crate) async fn open_url(url: &str) -> Result<Arc<dyn InstanceStore>, Failure> {
    Ok(open_store(url).await?.sealed(None))
}

/// Opens the store `url` names for the instances of `connector`: secrets are encrypted by the
/// connector's rule.
pub(crate) async fn open_for(
    url: &str,
    connector: &Connector,
) -> Result<Arc<dyn InstanceStore>, Failure> {
    Ok(open_store(url).await?.sealed(Some(connector)))
}

/// A store as opened, with the keys of `ENGINE_SECRET_KEY`: the encryption layer goes on top
/// with the rule of the connector of the instances it serves ([`Opened::sealed`]).
pub(crate) struct Opened {
    plain: Arc<dyn InstanceStore>,
    keys: Option<(SecretKey, Vec<SecretKey>)>,
}

impl Opened {
    /// The store, encrypting the values of secret keys when a key is set: the keys `connector`
    /// says are secret ([`secret_rule`]). Without a key, the store for a connector (a command
    /// that sends values) refuses to hand out encrypted values.
    pub(crate) fn sealed(&self, connector: Option<&Connector>) -> Arc<dyn InstanceStore> {
        match &self.keys {
            Some((current, old)) => Arc::new(engine_stores_sql::EncryptedStore::new(
                Arc::clone(&self.plain),
                current.clone(),
                old.clone(),
                secret_rule(connector),
            )),
            // A command that sends values refuses encrypted ones when it has no key.
            None if connector.is_some() => {
                Arc::new(engine_stores_sql::EncryptedStore::without_key(
                    Arc::clone(&self.plain),
                    secret_rule(connector),
                ))
            }
            None => Arc::clone(&self.plain),
        }
    }
}

/// Which stored values are encrypted: with the instance's connector known, the connector's own
/// rule ([`Connector::is_secret_key`]: its `PASSWORD` properties and `"secret": true` ones, the
/// token keys it saves, the keys it sends as credentials, and names like secrets); without it,
/// the rule for names alone.
pub(crate) fn secret_rule(connector: Option<&Connector>) -> IsSecret {
    let Some(connector) = connector else {
        return Arc::new(is_secret_key);
    };
    // The connector's decision for each key it knows, taken once; other keys by their name,
    // as `Connector::is_secret_key` decides them.
    let known: std::collections::HashMap<String, bool> = connector
        .keys()
        .map(|key| (key.to_owned(), connector.is_secret_key(key)))
        .collect();
    Arc::new(move |key: &str| {
        known
            .get(key)
            .copied()
            .unwrap_or_else(|| is_secret_key(key))
    })
}

/// Opens the store `url` names, without the encryption layer yet. `ENGINE_STORE_LOCK_LIFETIME`
/// (`30s`, `2m`) sets how long a PostgreSQL lock outlives a holder that went silent
/// (docs/stores.md).
pub(crate) async fn open_store(url: &str) -> Result<Opened, Failure> {
    let database = ["sqlite:", "postgres://", "postgresql://"]
        .iter()
        .any(|scheme| url.starts_with(scheme));
    if database && !cfg!(feature = "sql") {
        return Err(Failure::new(
            format!(
                "this `engine` was built without the SQL stores, so it cannot open `{}`",
                engine_stores_sql::display_url(url)
            ),
            Exit::Usage,
        )
        .help(
            "connectors/quickstart.sh builds it so; build the full engine with \
             `cargo build --release -p engine-cli` (default features)",
        ));
    }
    let mut options = engine_stores_sql::Options::default();
    if let Ok(text) = std::env::var("ENGINE_STORE_LOCK_LIFETIME") {
        match humantime::parse_duration(&text) {
            Ok(lifetime) => options.lock_lifetime = Some(lifetime),
            Err(error) => {
                return Err(Failure::new(
                    format!("invalid `ENGINE_STORE_LOCK_LIFETIME` `{text}`: {error}"),
                    Exit::Usage,
                )
                .help("write a duration such as `30s` or `2m`"));
            }
        }
    }
    let plain = engine_stores_sql::open_with(url, &options)
        .await
        .map_err(|error| Failure::of_store(&error, url))?;
    for notice in plain.take_notices() {
        printer::verbose(&format!("note: {notice}"));
    }
    Ok(Opened {
        plain,
        keys: secret_keys()?,
    })
}

/// The rule for which stored values are encrypted: keys named like secrets (passwords,
/// tokens, secrets, API keys), except those that never are (`expires_in`, URLs).
fn is_secret_key(key: &str) -> bool {
    !engine_spec::is_never_secret(key) && engine_spec::is_secret_name(key)
}

/// The keys of `ENGINE_SECRET_KEY` (or the file `ENGINE_SECRET_KEY_FILE`) and
/// `ENGINE_SECRET_KEYS_OLD` (comma-separated), each `ID:BASE64`; `None` without a key.
pub(crate) fn secret_keys() -> Result<
    Option<(
        engine_stores_sql::SecretKey,
        Vec<engine_stores_sql::SecretKey>,
    )>,
    Failure,
> {
    let invalid = |variable: &str, message: String| {
        Failure::new(format!("invalid `{variable}`: {message}"), Exit::Usage)
            .help("write `ID:BASE64`, 32 random bytes in base64: `echo k1:$(head -c 32 /dev/urandom | base64)`")
    };
    let current = match (
        std::env::var("ENGINE_SECRET_KEY"),
        std::env::var_os("ENGINE_SECRET_KEY_FILE"),
    ) {
        (Ok(text), _) => text,
        (Err(_), Some(path)) => fs_err::read_to_string(&path)
            .map_err(|error| Failure::new(error.to_string(), Exit::Usage))?,
        (Err(_), None) => return Ok(None),
    };
    let current = engine_stores_sql::SecretKey::parse(&current)
        .map_err(|message| invalid("ENGINE_SECRET_KEY", message))?;
    let old = std::env::var("ENGINE_SECRET_KEYS_OLD")
        .unwrap_or_default()
        .split(',')
        .filter(|text| !text.trim().is_empty())
        .map(|text| {
            engine_stores_sql::SecretKey::parse(text)
                .map_err(|message| invalid("ENGINE_SECRET_KEYS_OLD", message))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some((current, old)))
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
        let mut state = read_instance_file(file)?;
        state.shift_remove(VERSION_KEY);
        if let Some(connector) = connector {
            state.insert(CONNECTOR_KEY.to_owned(), connector.into());
        }
        // The runtime's schedule: by the connector when it is a file, else by the keys alone.
        let previous = Schedule::read(&state);
        match &known {
            Some(connector) => engine_runtime::schedule_of(connector, &state, &previous),
            None => engine_runtime::estimated_schedule(&state, &previous),
        }
        .put(&mut state);
        match store.write(&instance, state, 0).await {
            Ok(_) => printer::verbose(&format!("imported `{instance}` from `{}`", file.display())),
            Err(error) if matches!(error.kind(), StoreErrorKind::Conflict { .. }) => {
                return Err(Failure::new(
                    format!("instance `{instance}` already exists in the store"),
                    Exit::Invalid,
                )
                .help(format!(
                    "delete it first (`engine instances delete {instance}`), or import under another id with `--id`"
                )));
            }
            Err(error) => return Err(Failure::of_store(&error, &args.store)),
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
            let instance_state = InstanceState::of(&summary, now_ms);
            if state.is_some_and(|wanted| wanted != instance_state) {
                continue;
            }
            let last = last_refresh(&*store, &summary.id).await;
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
                        "last_refresh": last.as_ref().map(|(outcome, at)| serde_json::json!({
                            "outcome": outcome,
                            "at": at,
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
                        |(outcome, at)| format!("{outcome} {}", crate::time::format_text(at)),
                    ),
                ]
            }));
            render_table(&table)
        }
    };
    printer::stdout(&text);
    Ok(Exit::Success)
}

/// The outcome (`ok`, `rejected`, `failed`) and time of the last refresh step in the history of
/// `id` (a retried call aside); `None` when it has none, or the history cannot be read.
async fn last_refresh(store: &dyn InstanceStore, id: &str) -> Option<(String, String)> {
    let entries = store.history(id).await.ok()?;
    let last = entries
        .iter()
        .rev()
        .find(|entry| entry["retry"] != serde_json::Value::Bool(true))?;
    Some((
        last["outcome"].as_str()?.to_owned(),
        last["at"].as_str()?.to_owned(),
    ))
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
        .plain
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
        .plain
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
    update(&*store, id, |state| {
        let mut credentials = false;
        for (key, value) in read {
            let value = serde_json::Value::String(value);
            if state.get(&key) != Some(&value) {
                credentials |= is_secret(&key);
            }
            state.insert(key, value);
        }
        if credentials {
            Schedule::read(state).cleared().put(state);
        }
        Ok(true)
    })
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

/// How long a writer that is not a refresh (the failure count, the status, a rekey, `engine
/// instances set`) waits for an instance's lock: the default `--lock-timeout`.
const WRITE_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Changes `id` under its lock ([`engine_store::update`]), saying so when another process holds
/// the lock and waiting at most [`WRITE_LOCK_TIMEOUT`].
pub(crate) async fn update(
    store: &dyn InstanceStore,
    id: &str,
    change: impl FnOnce(&mut State) -> Result<bool, StoreError> + Send,
) -> Result<bool, StoreError> {
    engine_store::update(
        store,
        id,
        Some(WRITE_LOCK_TIMEOUT),
        &waiting_note(id),
        change,
    )
    .await
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
    let Some((current, old)) = secret_keys()? else {
        return Err(Failure::new(
            "`engine instances rekey` needs the key to encrypt with".to_owned(),
            Exit::Usage,
        )
        .help(
            "set `ENGINE_SECRET_KEY=ID:BASE64`, and the previous keys in `ENGINE_SECRET_KEYS_OLD`",
        ));
    };
    let current_id = current.id().to_owned();
    let plain = open_plain(&args.store).await?;
    // Each instance under its connector's rule (a value stored encrypted stays so whatever the
    // rule says).
    let mut stores: std::collections::HashMap<Option<String>, engine_stores_sql::EncryptedStore> =
        std::collections::HashMap::new();
    let (mut changed, mut total) = (0, 0);
    let mut page = Page {
        after: None,
        limit: 1000,
        ..Page::default()
    };
    loop {
        let listing = plain
            .list(page.clone())
            .await
            .map_err(|error| Failure::of_store(&error, &args.store))?;
        for summary in &listing.instances {
            total += 1;
            let store = stores.entry(summary.connector.clone()).or_insert_with(|| {
                let connector = summary.connector.as_deref().and_then(quiet_connector);
                engine_stores_sql::EncryptedStore::new(
                    Arc::clone(&plain),
                    current.clone(),
                    old.clone(),
                    secret_rule(connector.as_ref()),
                )
            });
            if store
                .rekey(
                    &summary.id,
                    Some(WRITE_LOCK_TIMEOUT),
                    &waiting_note(&summary.id),
                )
                .await
                .map_err(|error| Failure::of_store(&error, &args.store))?
            {
                changed += 1;
            }
        }
        match listing.next {
            Some(next) => page.after = Some(next),
            None => break,
        }
    }
    plain
        .scrub()
        .await
        .map_err(|error| Failure::of_store(&error, &args.store))?;
    printer::verbose(&format!(
        "rekeyed {changed} of {total} instances with key `{current_id}`"
    ));
    Ok(Exit::Success)
}

/// Opens the store without the encryption layer.
async fn open_plain(url: &str) -> Result<Arc<dyn InstanceStore>, Failure> {
    engine_stores_sql::open(url)
        .await
        .map_err(|error| Failure::of_store(&error, url))
}

/// The connector file `name` names, loaded without a word when it cannot be (a bare name, a
/// moved file).
fn quiet_connector(name: &str) -> Option<Connector> {
    let path = Path::new(name);
    if !path.is_file() {
        return None;
    }
    engine_spec::load(path).ok()?.into_connector()
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
    let store = opened.sealed(loaded.as_ref());
    match (&path, &loaded) {
        (Some(path), None) if !force => {
            return Err(Failure::new(
                format!(
                    "`{id}` was not deleted: its connector `{}` cannot be loaded to run its `onDelete` resource",
                    path.display()
                ),
                Exit::Invalid,
            )
            .help(format!(
                "name the connector file with `--connector FILE`, or delete the instance without its `onDelete` call with `engine instances delete {id} --force`"
            )));
        }
        (Some(path), None) => printer::verbose(&format!(
            "warning: connector `{}` cannot be loaded: `{id}` is deleted without its `onDelete` call (`--force`)",
            path.display()
        )),
        (_, Some(connector)) if connector.lifecycle(ResourceType::OnDelete).is_some() => {
            let engine = EngineBuilder::new()
                .timeout(timeout)
                .build()
                .map_err(|error| Failure::new(error.to_string(), Exit::Transport))?;
            let inputs = Inputs::default();
            let request = RunRequest {
                connector,
                selector: "onDelete",
                inputs: &inputs,
                instance: id,
            };
            // No history: the instance and its history go.
            let result = engine
                .run(&request, &*store, &engine_runtime::NoObserver)
                .await;
            match result {
                Ok(output) => printer::verbose(&format!("ON DELETE: {}", output.status)),
                Err(error) if force => {
                    printer::verbose(&format!(
                        "warning: `onDelete` failed: {error}; `{id}` is deleted anyway (`--force`)"
                    ));
                }
                Err(error) => {
                    let exit = crate::run::report(&error, connector);
                    return Err(kept(
                        format!("`{id}` was not deleted: its `onDelete` call failed"),
                        exit,
                    ));
                }
            }
        }
        _ => {}
    }
    // `onDelete` may have refreshed the token: delete the version there is now.
    let read = store
        .load(id)
        .await
        .map_err(|error| Failure::of_store(&error, &args.store))?;
    store
        .delete(id, read.version)
        .await
        .map_err(|error| Failure::of_store(&error, &args.store))?;
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

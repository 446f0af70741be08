//! `engine run CONNECTOR RESOURCE --config INSTANCE`: runs one resource and prints the vendor's
//! answer as JSON on stdout; every message goes to stderr.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use engine_runtime::{
    DEFAULT_MAX_BODY, EngineBuilder, Event, HttpTransport, InputFile, InputKind, Inputs,
    LifetimeProblem, Observer, PageStop, Pages, RecordingTransport, RefreshReason, RunError,
    RunErrorKind, RunRequest,
};
use engine_spec::{Connector, SourceMap};
use engine_store::{FileStore, InstanceStore, MemoryStore, StoreErrorKind};

use crate::Exit;
use crate::printer;
use crate::render::{Level, Message, Source};

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The connector file.
    #[arg(value_hint = clap::ValueHint::FilePath)]
    connector: PathBuf,
    /// A resource name, a lifecycle type (`provisionAuthValidation`, `ON REFRESH`...), or
    /// `METHOD:/path` matching a resource's path (`GET:/contacts/c1`); without it, the resources
    /// are listed.
    #[arg(add = clap_complete::ArgValueCompleter::new(crate::completions::resources))]
    resource: Option<String>,
    #[command(flatten)]
    target: InstanceArgs,
    /// A query, path, form or multipart input of the resource, or a `{NAME}` of its vendor path
    /// (a multipart value `@FILE` sends a file, `@-` standard input).
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE", value_parser = parse_pair)]
    params: Vec<(String, String)>,
    /// A header input of the resource (headers no parameter takes are sent as they are).
    #[arg(long = "header", short = 'H', value_name = "NAME=VALUE", value_parser = parse_pair)]
    headers: Vec<(String, String)>,
    /// The request body: a JSON file (a text file for resources with `bodyToken` parameters), or
    /// `-` for standard input.
    #[arg(long, value_name = "FILE|-")]
    body: Option<PathBuf>,
    /// Print the requests the run would send (secrets masked) and send nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    pages: PageArgs,
    /// Print each lifecycle step to stderr.
    #[arg(long, short = 'v')]
    verbose: bool,
    /// How `-v` prints the steps: `human` lines, or `json`, one JSON object per line for scripts,
    /// each named by its `event` (implies `-v`).
    #[arg(long, value_enum, value_name = "FORMAT", default_value = "human")]
    log_format: LogFormat,
    /// Refuse to run (exit 3, nothing sent) when the run would not do as the platform did: a
    /// JavaScript hook or converter of what it executes, a lifecycle resource it would skip.
    /// Without it, each is a `warning:` on stderr and the run goes on.
    #[arg(long)]
    strict: bool,
    /// The bound on the whole command (`30s`, `5m`, or seconds; at most a day): every request,
    /// retry, pause and token refresh it makes ends within it (waiting for the instance's lock
    /// is bounded by `--lock-timeout`).
    #[arg(long, value_name = "DURATION", default_value = "30", value_parser = crate::duration::parse_timeout)]
    timeout: Duration,
    /// Record every exchange of the run into this cassette (appended as a new run; secrets
    /// replaced by placeholders), for `engine test`.
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// How long to wait for the instance's lock when another process holds it, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    lock_timeout: u64,
    /// Which addresses requests may connect to: `public` (public and loopback), `private`
    /// (also private networks), `any` (also link-local, such as the cloud metadata address).
    #[arg(long, value_name = "POLICY", value_enum, default_value_t = EgressArg::Any)]
    egress: EgressArg,
}

/// How many pages `engine run` follows.
#[derive(Debug, clap::Args)]
pub(crate) struct PageArgs {
    /// Follow the vendor's next-page cursor (as the connector's `nextPageKey` says, or page
    /// numbers) for at most N pages; list pages are printed as one list.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000), conflicts_with = "all_pages")]
    pages: Option<u32>,
    /// Follow the next-page cursor until the vendor gives none (at most 100 pages; a cursor seen
    /// before stops it). Without `--pages`/`--all-pages`, the next page's input is printed on
    /// stderr as `next page: --param NAME=VALUE`.
    #[arg(long)]
    all_pages: bool,
}

impl PageArgs {
    fn pages(&self) -> Pages {
        match (self.all_pages, self.pages) {
            (true, _) => Pages::All,
            (false, Some(pages)) => Pages::UpTo(pages as usize),
            (false, None) => Pages::UpTo(1),
        }
    }
}

/// The largest `--body` or `--config` file: 16 MiB, as for connector files.
const MAX_INPUT_SIZE: u64 = engine_spec::MAX_SOURCE_SIZE;

/// `NAME=VALUE`. The error never repeats the text: a header or a parameter may hold a secret
/// (see `crate::usage_error`, which keeps clap from repeating it either).
fn parse_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err("expected `NAME=VALUE`".to_owned()),
    }
}

pub(crate) fn run(args: &RunArgs) -> Exit {
    let Some(connector) = load_connector(&args.connector) else {
        return Exit::Invalid;
    };
    let Some(resource) = &args.resource else {
        let title = format!("which resource of `{}`?", args.connector.display());
        let help = format!(
            "name one after the connector: {}; or a lifecycle type such as `provisionAuthValidation`",
            resource_list(&connector)
        );
        let mut message = Message::new(Level::Error, &title);
        message.help = Some(&help);
        printer::error(&message);
        return Exit::Usage;
    };
    let stdin_part = args
        .params
        .iter()
        .any(|(name, value)| value == "@-" && is_file_input(&connector, resource, name));
    if stdin_part
        && args
            .body
            .as_deref()
            .is_some_and(|body| body.as_os_str() == "-")
    {
        let mut message = Message::new(
            Level::Error,
            "standard input can feed `--body -` or a `--param NAME=@-` part, not both",
        );
        message.help = Some("pass the body or the part from a file");
        printer::error(&message);
        return Exit::Invalid;
    }
    let (body, body_text) = match read_body(args.body.as_deref()) {
        Ok(body) => body,
        Err(message) => {
            printer::error(&Message::new(Level::Error, &message));
            return Exit::Invalid;
        }
    };
    let Some((params, files)) = read_files(&connector, resource, &args.params) else {
        return Exit::Invalid;
    };
    let inputs = Inputs {
        params,
        headers: args.headers.clone(),
        body,
        body_text,
        files,
    };
    let Some(target) = args.target.target() else {
        return Exit::Usage;
    };
    let runtime = match target {
        Target::File(config) => {
            let Some(runtime) = prepare(config, &connector) else {
                return Exit::Invalid;
            };
            warn_unknown_keys(config, &connector);
            runtime
        }
        Target::Stored { .. } => {
            let Some(runtime) = crate::store::runtime() else {
                return Exit::Invalid;
            };
            runtime
        }
    };
    let recording = args.dry_run.then(RecordingTransport::new);
    let mut builder = EngineBuilder::new()
        .strict(args.strict)
        .timeout(args.timeout)
        .lock_timeout(Some(Duration::from_secs(args.lock_timeout)))
        .egress(args.egress.into());
    if let Some(recording) = &recording {
        builder = builder.transport(Arc::new(recording.clone()));
    }
    let recorder = match (&args.record, args.dry_run) {
        (Some(_), false) => {
            match HttpTransport::with_egress(
                None,
                Duration::from_secs(10),
                DEFAULT_MAX_BODY,
                args.egress.into(),
            ) {
                Ok(http) => Some(crate::test::record::RecordingHttp::new(http)),
                Err(error) => {
                    printer::error(&Message::new(Level::Error, &error.message));
                    return Exit::Transport;
                }
            }
        }
        _ => None,
    };
    if let Some(recorder) = &recorder {
        builder = builder.transport(Arc::new(recorder.clone()));
    }
    let engine = match builder.build() {
        Ok(engine) => engine,
        Err(error) => return report(&error, &connector),
    };
    let observer = Verbose::new(
        args.verbose || args.log_format == LogFormat::Json,
        &connector,
    )
    .format(args.log_format);
    let request = RunRequest {
        connector: &connector,
        selector: resource,
        inputs: &inputs,
        instance: match target {
            Target::File(_) => "instance",
            Target::Stored { instance, .. } => instance,
        },
    };
    let opened: Arc<dyn InstanceStore> = match target {
        Target::File(config) => Arc::new(FileStore::for_file(config)),
        Target::Stored { store, .. } => {
            match runtime.block_on(crate::store::open_for(store, &connector)) {
                Ok(opened) => opened,
                Err(failure) => return failure.print(),
            }
        }
    };
    let started = jiff::Timestamp::now();
    let before = recorder.as_ref().and_then(|_| {
        runtime
            .block_on(opened.load(request.instance))
            .ok()
            .map(|stored| (*stored.state).clone())
    });
    let result = runtime.block_on(async {
        // A dry run works on a copy of the instance and records instead of sending: the same
        // run, with nothing sent and nothing written.
        let copy;
        let store: &dyn InstanceStore = if recording.is_some() {
            copy = MemoryStore::new();
            let stored = opened.load(request.instance).await?;
            copy.insert(request.instance, (*stored.state).clone());
            &copy
        } else {
            &*opened
        };
        let history = engine_service::Recorder::new(&observer);
        let pages = args.pages.pages();
        let result = engine_runtime::run_pages(&engine, &request, store, &history, pages).await;
        // The lifecycle steps go into the instance's history (an instance file's: a sidecar
        // next to it); a dry run sends nothing.
        if recording.is_none() {
            let superseded = history.superseded();
            let warnings = engine_service::after_run(
                store,
                &request,
                &history.take(),
                superseded,
                result.as_ref().err(),
                None,
            )
            .await;
            printer::warnings(&warnings);
        }
        result
    });
    for notice in opened.take_notices() {
        if args.log_format == LogFormat::Json {
            let line =
                serde_json::json!({"event": "note", "message": notice, "at": crate::time::now()});
            printer::verbose(&line.to_string());
        } else {
            printer::verbose(&format!("note: {notice}"));
        }
    }
    if let (Some(recorder), Some(path), Some(before)) = (&recorder, &args.record, &before) {
        let after = runtime
            .block_on(opened.load(request.instance))
            .map(|stored| (*stored.state).clone())
            .unwrap_or_default();
        if let Err(message) = recorder.append(path, resource, started, &connector, before, &after) {
            printer::error(&Message::new(Level::Error, &message));
        }
    }
    match result {
        Ok(output) => {
            if let Some(recording) = &recording {
                let text: Vec<String> = recording
                    .requests()
                    .iter()
                    .map(|request| request.display(&output.redactor))
                    .collect();
                printer::stdout(&text.join("\n"));
            } else {
                let body = joined_pages(output.pages);
                let text = serde_json::to_string_pretty(&body).unwrap_or_default();
                printer::stdout(&format!("{text}\n"));
            }
            tell_outputs(&output.outputs, args.log_format);
            tell_next_page(
                output.next_page.as_ref(),
                output.stopped.as_ref(),
                &output.redactor,
                args.log_format,
            );
            Exit::Success
        }
        Err(error) => report_in(
            &error,
            &connector,
            &Reported {
                target: Some(target),
                skipped: observer.skipped(),
            },
        ),
    }
}

/// Where a command's instance lives: `--config FILE`, or `--instance ID` in `--store URL`.
#[derive(Debug, clap::Args)]
pub(crate) struct InstanceArgs {
    /// The instance file: a JSON object of configuration key to value. The tokens the command
    /// obtains are written back to it.
    #[arg(
        long,
        short = 'c',
        value_name = "INSTANCE",
        required_unless_present = "instance",
        conflicts_with = "instance"
    )]
    config: Option<PathBuf>,
    /// A stored instance's id, in the store of `--store` (instead of `--config FILE`).
    #[arg(long, value_name = "ID")]
    instance: Option<String>,
    /// The instance store of `--instance`: `sqlite:PATH`, `postgres://USER@HOST/DB` or
    /// `file:DIR`.
    #[arg(long, env = "ENGINE_STORE", hide_env_values = true, value_name = "URL")]
    store: Option<String>,
}

impl InstanceArgs {
    /// Where the instance lives; `None` (after saying why: exit 2) for `--instance` without a
    /// store.
    pub(crate) fn target(&self) -> Option<Target<'_>> {
        match (&self.config, &self.instance, &self.store) {
            (Some(config), _, _) => Some(Target::File(config)),
            (None, Some(instance), Some(store)) => Some(Target::Stored { instance, store }),
            (None, _, _) => {
                let mut message = Message::new(Level::Error, "`--instance` needs a store");
                message.help = Some(
                    "pass `--store URL` (or set `ENGINE_STORE`), or use an instance file with `--config FILE`",
                );
                printer::error(&message);
                None
            }
        }
    }
}

/// Where a command's instance lives.
#[derive(Clone, Copy)]
pub(crate) enum Target<'a> {
    /// `--config FILE`: the one-file form.
    File(&'a Path),
    /// `--instance ID --store URL`.
    Stored { instance: &'a str, store: &'a str },
}

impl Target<'_> {
    /// The flags that name this instance, as the person wrote them (a store's password
    /// masked), for hints: `--config acme.json` or `--instance acme --store sqlite:x.db`.
    pub(crate) fn flags(&self) -> String {
        match self {
            Target::File(path) => format!("--config {}", path.display()),
            Target::Stored { instance, store } => format!(
                "--instance {instance} --store {}",
                engine_stores_sql::display_url(store)
            ),
        }
    }

    /// Where credentials are changed: the instance file, or `engine instances set`.
    fn where_to_fix(&self) -> String {
        match self {
            Target::File(path) => format!("in `{}`", path.display()),
            Target::Stored { instance, store } => format!(
                "with `engine instances set {instance} KEY --store {}`",
                engine_stores_sql::display_url(store)
            ),
        }
    }
}

/// What the command line knows about a failed run beyond the error: how the person named the
/// instance, and the parameters the last request went without for want of a value.
#[derive(Default)]
pub(crate) struct Reported<'a> {
    /// `--config FILE` or `--instance ID --store URL`; `None` where no instance was named.
    pub(crate) target: Option<Target<'a>>,
    /// The parameters the last request sent went without.
    pub(crate) skipped: Vec<Skip>,
}

/// Checks that the instance file exists and starts the async runtime; on failure prints why
/// (for a missing file, the connector's required keys as a file to fill in) and returns `None`
/// (exit 3: nothing was sent).
pub(crate) fn prepare(instance: &Path, connector: &Connector) -> Option<tokio::runtime::Runtime> {
    if !instance.exists() {
        let message = format!("instance file `{}` does not exist", instance.display());
        let example = instance_example(connector);
        let help =
            format!("create it with this connector's configuration, for example:\n{example}");
        let mut rendered = Message::new(Level::Error, &message);
        rendered.help = Some(&help);
        printer::error(&rendered);
        return None;
    }
    // A FIFO or a device (`/dev/zero`) would be read forever; a huge file to the end.
    let problem = match fs_err::metadata(instance) {
        Ok(metadata) if !metadata.is_file() => Some("is not a regular file".to_owned()),
        Ok(metadata) if metadata.len() > MAX_INPUT_SIZE => Some(format!(
            "is larger than the limit of {}",
            engine_spec::human_size(MAX_INPUT_SIZE)
        )),
        Ok(_) => None,
        Err(error) => Some(format!("cannot be read: {error}")),
    };
    if let Some(problem) = problem {
        let message = format!("instance file `{}` {problem}", instance.display());
        printer::error(&Message::new(Level::Error, &message));
        return None;
    }
    // One run is one sequence of requests: one thread drives it (file I/O goes to tokio's
    // blocking pool), with no worker threads to start and wake.
    match tokio::runtime::Builder::new_current_thread()
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

/// A ready-to-fill instance file: every required key the engine does not maintain, with an
/// empty value (a declared default shown instead).
fn instance_example(connector: &Connector) -> String {
    let mut example = serde_json::Map::new();
    for property in connector.configuration() {
        let maintained = matches!(property.key(), "authentication.time" | "expires_in")
            || property.key().starts_with("oauth.user.");
        if property.required() && !maintained {
            let value = property.default_value().unwrap_or_default();
            example.insert(property.key().to_owned(), serde_json::Value::from(value));
        }
    }
    serde_json::to_string_pretty(&example).unwrap_or_else(|_| "{}".to_owned())
}

/// Warns about instance keys the connector does not know that are near a key it does
/// (`user.pasword` for `user.password`): the value is most likely meant for that key.
fn warn_unknown_keys(instance: &Path, connector: &Connector) {
    let Ok(text) = fs_err::read_to_string(instance) else {
        return;
    };
    let Ok(serde_json::Value::Object(state)) = serde_json::from_str::<serde_json::Value>(&text)
    else {
        return;
    };
    let known: Vec<&str> = connector.keys().collect();
    for key in state.keys() {
        if known.contains(&key.as_str()) || key.starts_with("engine.") {
            continue;
        }
        if let Some(meant) = engine_spec::suggest::did_you_mean(key, known.iter().copied()) {
            let title = format!(
                "instance key `{key}` is not a key of connector `{}`",
                connector.name()
            );
            let help = format!("did you mean `{meant}`? the value of `{key}` is not used");
            let mut message = Message::new(Level::Warning, &title);
            message.help = Some(&help);
            printer::error(&message);
        }
    }
}

/// Loads and validates the connector ([`engine_service::load_connector`]); on failure prints its
/// diagnostics (or why it cannot be read) and returns `None`. Warnings are not shown here:
/// `engine validate` shows them.
pub(crate) fn load_connector(path: &Path) -> Option<Connector> {
    engine_service::load_connector(path)
        .map_err(|error| print_load_error(&error))
        .ok()
}

/// Prints why a connector did not load: the error diagnostics of an invalid one, then the
/// error.
pub(crate) fn print_load_error(error: &engine_service::Error) {
    if let engine_service::ErrorKind::InvalidConnector { report, .. } = error.kind() {
        for index in 0..report.diagnostics().len() {
            if report.diagnostics()[index].severity == engine_spec::Severity::Error {
                printer::error(&Message::from_diagnostic(report, index));
            }
        }
    }
    printer::error(&Message::new(Level::Error, &error.to_string()));
}

/// True when `name` is a `multipart` input of the resource `selector` selects (its own or a
/// global one): its value `@FILE` (`@-`) is a file. An input of another resource is text.
fn is_file_input(connector: &Connector, selector: &str, name: &str) -> bool {
    file_parameter(connector, selector, name).is_some()
}

/// The `multipart` parameter `name` of the resource `selector` selects, if it has one.
fn file_parameter<'c>(
    connector: &'c Connector,
    selector: &str,
    name: &str,
) -> Option<&'c engine_spec::Parameter> {
    let resource = connector.find_resource(selector)?;
    connector
        .parameters_of(resource, engine_spec::kinds::Source::Request)
        .find(|parameter| {
            parameter.kind() == engine_spec::kinds::ParameterKind::Multipart
                && parameter.name() == name
        })
}

/// The pages of a run as one JSON value: the page itself when there is one, the items of all
/// pages in one list when each page is a list, else the list of the pages.
fn joined_pages(mut pages: Vec<serde_json::Value>) -> serde_json::Value {
    if pages.len() == 1 {
        return pages.pop().unwrap_or_default();
    }
    if pages.iter().all(serde_json::Value::is_array) {
        let items = pages
            .into_iter()
            .flat_map(|page| match page {
                serde_json::Value::Array(items) => items,
                _ => Vec::new(),
            })
            .collect();
        return serde_json::Value::Array(items);
    }
    serde_json::Value::Array(pages)
}

/// Says on stderr, one line each, the output parameters the body (a list) has no field for:
/// `output NAME: VALUE` (a string as it is, anything else as JSON); with `--log-format json`,
/// as `output` events.
fn tell_outputs(outputs: &[(String, serde_json::Value)], format: LogFormat) {
    for (name, value) in outputs {
        if format == LogFormat::Json {
            let line = serde_json::json!({
                "event": "output", "name": name, "value": value, "at": crate::time::now(),
            });
            printer::verbose(&line.to_string());
        } else {
            let text = match value {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            printer::verbose(&format!("output {name}: {text}"));
        }
    }
}

/// Says on stderr how to ask for the next page (one line), and why following stopped early;
/// with `--log-format json`, as one JSON object (`next-page`, with `stopped` when it did).
fn tell_next_page(
    next: Option<&engine_runtime::NextPage>,
    stopped: Option<&PageStop>,
    redactor: &engine_runtime::Redactor,
    format: LogFormat,
) {
    let Some(next) = next else {
        return;
    };
    let value = redactor.redact(&next.value);
    if format == LogFormat::Json {
        let stopped = stopped.map(|stop| match stop {
            PageStop::Repeated => "repeated-cursor",
            PageStop::Capped => "page-limit",
            PageStop::NotFollowable => "no-input",
        });
        let line = serde_json::json!({
            "event": "next-page",
            "input": next.input,
            "value": value,
            "stopped": stopped,
            "at": crate::time::now(),
        });
        return printer::verbose(&line.to_string());
    }
    let ask = format!("--param {}={value}", next.input);
    match stopped {
        Some(PageStop::Repeated) => {
            let title = format!(
                "the vendor gave the next-page cursor `{value}` again: following stopped, since it would loop"
            );
            printer::error(&Message::new(Level::Warning, &title));
        }
        Some(PageStop::Capped) => {
            let title = format!(
                "`--all-pages` stopped after {} pages, its limit; the vendor has more",
                engine_runtime::MAX_PAGES
            );
            let help = format!("continue from there with `{ask}`");
            let mut message = Message::new(Level::Warning, &title);
            message.help = Some(&help);
            printer::error(&message);
        }
        Some(PageStop::NotFollowable) => {
            let title = format!(
                "the next page cannot be followed: the resource has no `{}` input to ask for it",
                next.input
            );
            let help = "add a parameter named so to the resource, mapped to where the vendor reads the cursor";
            let mut message = Message::new(Level::Warning, &title);
            message.help = Some(help);
            printer::error(&message);
        }
        None => printer::verbose(&format!("next page: {ask}")),
    }
}

/// `NAME=VALUE` inputs.
type Pairs = Vec<(String, String)>;

/// A `multipart` input's file that could not be read.
pub(crate) struct FileProblem {
    /// The input's name.
    pub(crate) name: String,
    /// The path as given (`-`: standard input).
    pub(crate) path: String,
    /// Why.
    pub(crate) reason: String,
}

impl FileProblem {
    /// The one-line message.
    pub(crate) fn title(&self) -> String {
        format!(
            "cannot read the file `{}` of part `{}`: {}",
            self.path, self.name, self.reason
        )
    }
}

/// Splits `NAME=VALUE` inputs into text inputs and the files of `multipart` inputs given as
/// `@FILE` (relative to `base` when given) or `@-` (standard input), read here, bounded: the
/// runtime reads no file.
///
/// Fails on the first file that cannot be read.
pub(crate) fn split_files(
    connector: &Connector,
    selector: &str,
    params: &[(String, String)],
    base: Option<&Path>,
) -> Result<(Pairs, Vec<(String, InputFile)>), FileProblem> {
    let mut texts = Vec::new();
    let mut files = Vec::new();
    for (name, value) in params {
        let path = match value.strip_prefix('@') {
            Some(path) if !path.is_empty() && is_file_input(connector, selector, name) => path,
            _ => {
                texts.push((name.clone(), value.clone()));
                continue;
            }
        };
        let read = if path == "-" {
            crate::input::read_stdin(MAX_INPUT_SIZE).map(|bytes| (name.clone(), bytes))
        } else {
            let full = base.map_or_else(|| PathBuf::from(path), |base| base.join(path));
            crate::input::read_file(&full, MAX_INPUT_SIZE).map(|bytes| {
                let file_name = Path::new(path)
                    .file_name()
                    .map_or_else(|| name.clone(), |file| file.to_string_lossy().into_owned());
                (file_name, bytes)
            })
        };
        match read {
            Ok((file_name, bytes)) => files.push((name.clone(), InputFile { file_name, bytes })),
            Err(reason) => {
                return Err(FileProblem {
                    name: name.clone(),
                    path: path.to_owned(),
                    reason,
                });
            }
        }
    }
    Ok((texts, files))
}

/// [`split_files`] for `engine run`: `None` (after saying which file and why, pointing at the
/// parameter; exit 3, nothing sent) when one cannot be read.
fn read_files(
    connector: &Connector,
    selector: &str,
    params: &[(String, String)],
) -> Option<(Pairs, Vec<(String, InputFile)>)> {
    let problem = match split_files(connector, selector, params, None) {
        Ok(split) => return Some(split),
        Err(problem) => problem,
    };
    let (name, title) = (&problem.name, problem.title());
    let help = if problem.path == "-" {
        format!("pipe the part's content into `engine run`, or pass `--param {name}=@FILE`")
    } else {
        format!("check the path, or pass a text part with `--param {name}=VALUE`")
    };
    let text = connector.source().text();
    let mut message = Message::new(Level::Error, &title);
    message.help = Some(&help);
    message.source = file_parameter(connector, selector, name)
        .and_then(|parameter| SourceMap::new(text).span(parameter.location()))
        .map(|span| Source {
            text,
            path: connector.path(),
            span: span.start..span.end,
            label: Some("defined here"),
        });
    printer::error(&message);
    None
}

/// The body as JSON when it is JSON, and as written: a text body is a template for resources
/// with `bodyToken` parameters; the runtime refuses it for the others.
type Body = (Option<serde_json::Value>, Option<String>);

fn read_body(path: Option<&Path>) -> Result<Body, String> {
    let Some(path) = path else {
        return Ok((None, None));
    };
    let bytes = if path.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .take(MAX_INPUT_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(|error| format!("cannot read the body from standard input: {error}"))?;
        if bytes.len() as u64 > MAX_INPUT_SIZE {
            return Err(format!(
                "the body on standard input is larger than the limit of {}",
                engine_spec::human_size(MAX_INPUT_SIZE)
            ));
        }
        bytes
    } else {
        engine_spec::read_bounded(path, MAX_INPUT_SIZE).map_err(|error| error.to_string())?
    };
    let text = String::from_utf8(bytes).map_err(|_| {
        format!(
            "cannot read the body from `{}`: it is not UTF-8",
            path.display()
        )
    })?;
    Ok((serde_json::from_str(&text).ok(), Some(text)))
}

/// What the person should do next, when there is something to suggest: the runtime says what
/// happened, the command line says which flag or command helps.
pub(crate) fn hint(
    error: &RunError,
    connector: &Connector,
    target: Option<&Target<'_>>,
) -> Option<String> {
    let flag = |input: &InputKind| match input {
        InputKind::Param => "--param",
        InputKind::Header => "--header",
        InputKind::Body => "--body",
    };
    match error.kind() {
            RunErrorKind::MissingConfiguration { .. } => Some(match target {
                Some(target @ Target::Stored { .. }) => {
                    format!("set the keys {}, then run again", target.where_to_fix())
                }
                _ => "add the keys to the instance file, then run again".into(),
            }),
            RunErrorKind::MissingInput { input: InputKind::Body, .. } => Some(
                "pass the body with `--body FILE`, or `--body -` to read it from standard input"
                    .into(),
            ),
            RunErrorKind::MissingInput { input, name, .. } => {
                Some(format!("pass it with `{} {name}=VALUE`", flag(input)))
            }
            RunErrorKind::UnknownResource { suggestion, .. } => {
                let list = resource_list(connector);
                Some(match suggestion {
                    Some(suggestion) => format!("did you mean `{suggestion}`? the resources are: {list}"),
                    None => format!("the resources are: {list}"),
                })
            }
            RunErrorKind::UnknownInput { suggestion, .. } => suggestion
                .as_ref()
                .map(|suggestion| format!("did you mean `{suggestion}`?")),
            RunErrorKind::VendorStatus { status: 300..=399, .. } => Some(
                "the vendor redirects elsewhere: the engine follows redirects only to the same scheme, host and port, so credentials never leave for another address; point `base.url` (or the resource's `vendorPath`) at where it redirects".into(),
            ),
            RunErrorKind::AuthFailed { status: 300..=399, .. } => Some(
                "the token endpoint redirects: token requests carry credentials and are never redirected; point the connector at the address it redirects to".into(),
            ),
            RunErrorKind::AuthFailed { .. }
            | RunErrorKind::TokenRejected { .. }
            | RunErrorKind::NeedsReauth { .. } => Some(reauthenticate(connector, target)),
            RunErrorKind::NoToken { field, .. } => Some(format!(
                "the vendor answered without the token: if it is down, run again later; if it sends the token under another name, map that name instead of `{field}`"
            )),
            RunErrorKind::NotAuthorized { .. } => Some(format!(
                "run `engine authorize {} {}` to sign in through a browser",
                connector.path().display(),
                instance_flags(target)
            )),
            RunErrorKind::Store(error) if matches!(
                error.kind(),
                engine_store::StoreErrorKind::Io { operation, .. } if *operation != "read"
            ) => Some(
                "the instance file was left as it was; a token the vendor issued during this run may be lost: fix the file's permissions or free disk space and run again (re-authenticate if the vendor rotates refresh tokens)".into(),
            ),
            RunErrorKind::BodyTooLarge { .. } => Some(
                "the vendor's answer is larger than the engine reads; ask for less (a smaller page)".into(),
            ),
            RunErrorKind::Store(error) if matches!(error.kind(), StoreErrorKind::UnknownInstance { .. }) => Some(
                "list the stored instances with `engine instances list`, or import this one with `engine instances import FILE`".into(),
            ),
            RunErrorKind::Store(error) if matches!(error.kind(), StoreErrorKind::LockTimeout { .. }) => Some(
                "another process holds this lock (a refresh in progress, or a process that hung or was stopped): run again when it is done, or raise `--lock-timeout`; nothing was written".into(),
            ),
            // rustls's words ("invalid peer certificate: UnknownIssuer" and the like).
            RunErrorKind::Transport { message, .. } if message.contains("certificate") => Some(
                "the vendor's TLS certificate is not trusted here: if a private CA signed it, point `SSL_CERT_FILE` (a PEM file) or `SSL_CERT_DIR` at that CA; otherwise the system's roots decide".into(),
            ),
            // Nothing listens there: waiting longer cannot help.
            RunErrorKind::Transport { message, url } if message.contains("Connection refused") => {
                let place = target.map_or_else(|| "in the instance".to_owned(), Target::where_to_fix);
                Some(format!(
                    "nothing listens at `{}`: start the vendor (or the emulator), or fix `base.url` {place}",
                    origin_of(url)
                ))
            }
            RunErrorKind::Transport { .. } => Some(
                "check that the vendor is reachable, or raise `--timeout`".into(),
            ),
            RunErrorKind::TimedOut { .. } => Some(
                "check that the vendor is reachable, or raise `--timeout` (it bounds the whole command: every attempt, retry pause and token refresh)".into(),
            ),
            RunErrorKind::InvalidHeader { from_caller: true, shown, .. } if shown.contains('…') => Some(
                "write `--header NAME=VALUE`: the name is what comes before the first `=`".into(),
            ),
            RunErrorKind::InvalidHeader { from_caller: true, .. } => Some(
                "fix the value given to `--header`".into(),
            ),
            RunErrorKind::InvalidHeader { from_caller: false, .. } => Some(
                "fix the connector parameter that sets this header, or the instance value it reads".into(),
            ),
            RunErrorKind::BadPathValue { name, .. } => Some(format!(
                "pass the value the vendor names the item by with `--param {name}=VALUE`; other characters (`/` included) are percent-encoded and stay in the segment"
            )),
            RunErrorKind::CredentialsElsewhere { .. } => Some(
                "credentials go only to the origin of `base.url`, the token and authorization URLs, and the absolute `vendorPath`s of the connector; a hook's `request_vendor_path` or a next-page link that points elsewhere is refused: if the vendor moved, set `base.url` to its new address".into(),
            ),
            RunErrorKind::AddressRefused { .. } => Some(
                "the vendor's address is on a private or link-local network: if the engine is meant to reach it, pass `--egress private` (private networks) or `--egress any` (also link-local addresses)".into(),
            ),
            RunErrorKind::InvalidUrl { message, .. } if message.contains("the engine sends only") => Some(
                "set it to the vendor's `http://` or `https://` address in the instance file (or the connector's `defaultValue`)".into(),
            ),
            RunErrorKind::NeverExecuted { kind, .. } if kind == "OAUTH2 PASSWORD" => Some(
                "use `\"authentication\": {\"type\": \"oauth2\", \"grant\": \"password\"}`: the engine then obtains the token itself".into(),
            ),
            RunErrorKind::NeverExecuted { .. } => Some(
                "run an `API` resource (or a token lifecycle resource); to make this call, copy it into an `API` resource".into(),
            ),
            RunErrorKind::NotFaithful { .. } => Some(
                "the warnings above say what would differ: run without `--strict` to send it anyway, each difference then a warning, or change the connector so that it needs none".into(),
            ),
            RunErrorKind::TokenStepNotFaithful { .. } => Some(
                "give the resource what the platform ran (the hook's script as its `body`, from a new export of the connector), or map the values with parameters the engine executes".into(),
            ),
            RunErrorKind::ProtocolNotExecuted { .. } => Some(
                "call the vendor through its HTTP API with a connector whose `protocolType` is `http` or `soap`".into(),
            ),
            RunErrorKind::BodyNotJson { .. } => Some(
                "pass a JSON body; only resources with `bodyToken` parameters take a text body".into(),
            ),
            RunErrorKind::UnfilledToken { input: Some(name), .. } => {
                Some(format!("pass it with `--param {name}=VALUE`"))
            }
            _ => None,
        }
}

/// What re-authenticating means for this connector's authentication, with the flags the
/// person used.
fn reauthenticate(connector: &Connector, target: Option<&Target<'_>>) -> String {
    let path = connector.path().display();
    let flags = instance_flags(target);
    let place = target.map_or_else(|| "in the instance".to_owned(), Target::where_to_fix);
    match (
        connector.authentication().kind(),
        connector.authentication().grant(),
    ) {
        (engine_spec::AuthKind::Oauth2, engine_spec::kinds::Grant::AuthorizationCode) => {
            format!("sign in again through a browser: `engine authorize {path} {flags}`")
        }
        (engine_spec::AuthKind::Oauth2, engine_spec::kinds::Grant::Password) => format!(
            "fix `oauth.api.key`, `oauth.api.secret`, `username` and `password` {place}, then run again"
        ),
        (engine_spec::AuthKind::Oauth2, _) => {
            format!("fix `oauth.api.key` and `oauth.api.secret` {place}, then run again")
        }
        _ => format!(
            "fix the credentials {place}, then provision again: `engine run {path} provisionAuthValidation {flags}`"
        ),
    }
}

/// `scheme://host:port` of a URL, for messages about where something listens.
fn origin_of(url: &str) -> String {
    url::Url::parse(url).map_or_else(
        |_| url.to_owned(),
        |parsed| parsed.origin().ascii_serialization(),
    )
}

/// The flags naming the instance, or a placeholder where the command had none.
fn instance_flags(target: Option<&Target<'_>>) -> String {
    target.map_or_else(|| "--config INSTANCE".to_owned(), Target::flags)
}

/// The hint for credentials refused from a request that went without some parameters: set
/// the keys they read, where the person keeps the instance; a key the connector reads but does
/// not declare is most likely a typo of a declared one (`zorp.password` for `zorp.pass`).
fn skipped_hint(skipped: &[&Skip], connector: &Connector, target: Option<&Target<'_>>) -> String {
    let place = target.map_or_else(|| "in the instance".to_owned(), Target::where_to_fix);
    let not_sent: Vec<String> = skipped
        .iter()
        .map(|skip| format!("`{}` was not sent ({})", skip.parameter, skip.reason))
        .collect();
    let declared: Vec<&str> = connector
        .configuration()
        .iter()
        .map(engine_spec::ConfigProperty::key)
        .collect();
    let typos: Vec<String> = skipped
        .iter()
        .filter(|skip| !declared.contains(&skip.key.as_str()))
        .filter_map(|skip| {
            engine_spec::suggest::did_you_mean(&skip.key, declared.iter().copied()).map(|meant| {
                format!(
                    "the connector reads `{}`, which it does not declare: did you mean `{meant}`?",
                    skip.key
                )
            })
        })
        .collect();
    let fix = if typos.is_empty() {
        format!("give it a value {place}, then run again")
    } else {
        typos.join("; ")
    };
    format!("{}: {fix}", not_sent.join("; "))
}

/// The resources a caller can run, for messages: `me`, `list-contacts`, `GET /hubs/x`...
pub(crate) fn resource_list(connector: &Connector) -> String {
    let names: Vec<String> = crate::completions::selectors(connector)
        .map(|(selector, _)| format!("`{selector}`"))
        .collect();
    if names.is_empty() {
        "none (only lifecycle resources)".to_owned()
    } else {
        names.join(", ")
    }
}

/// The exit code of a failed run.
pub(crate) fn exit_of(error: &RunError) -> Exit {
    match error.kind() {
        RunErrorKind::VendorStatus { .. } => Exit::VendorError,
        RunErrorKind::AuthFailed { .. }
        | RunErrorKind::NoToken { .. }
        | RunErrorKind::TokenRejected { .. }
        | RunErrorKind::NotAuthorized { .. }
        | RunErrorKind::NeedsReauth { .. }
        | RunErrorKind::Authorize { .. } => Exit::AuthFailed,
        RunErrorKind::Transport { .. }
        | RunErrorKind::TimedOut { .. }
        | RunErrorKind::CoolingDown { .. }
        | RunErrorKind::BodyTooLarge { .. } => Exit::Transport,
        RunErrorKind::Store(error) => match error.kind() {
            StoreErrorKind::Io { operation, .. } if *operation != "read" => Exit::VendorError,
            StoreErrorKind::LockTimeout { .. } | StoreErrorKind::Secret { .. } => Exit::VendorError,
            _ => Exit::Invalid,
        },
        _ => Exit::Invalid,
    }
}

/// Prints a failed run: the message, where in the connector it comes from, the vendor's body,
/// and what to do.
pub(crate) fn report(error: &RunError, connector: &Connector) -> Exit {
    report_in(error, connector, &Reported::default())
}

/// [`report`], with hints that name the flags the person used, and, when the vendor refused
/// credentials (`401`, `403`) from a request that went without a parameter for want of a value,
/// that cause first.
pub(crate) fn report_in(error: &RunError, connector: &Connector, context: &Reported<'_>) -> Exit {
    let text = error.to_string();
    let refused = matches!(
        error.kind(),
        RunErrorKind::VendorStatus {
            status: 401 | 403,
            ..
        } | RunErrorKind::AuthFailed {
            status: 401 | 403,
            ..
        } | RunErrorKind::TokenRejected { .. }
    );
    // Keys a response saves (a token) or the engine maintains are filled by the lifecycle, not
    // by the person: a token request goes without the token it is about to obtain.
    let skipped: Vec<&Skip> = context
        .skipped
        .iter()
        .filter(|skip| {
            !matches!(skip.key.as_str(), "authentication.time" | "expires_in")
                && !skip.key.starts_with("oauth.user.")
                && !connector.all_parameters().any(|parameter| {
                    parameter.saves_to_configuration() && parameter.name() == skip.key
                })
        })
        .collect();
    let hint = if refused && !skipped.is_empty() {
        Some(skipped_hint(&skipped, connector, context.target.as_ref()))
    } else {
        hint(error, connector, context.target.as_ref())
    };
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            causes.push(cause_text);
        }
        source = cause.source();
    }
    match error.kind() {
        RunErrorKind::VendorStatus { body, .. }
        | RunErrorKind::AuthFailed { body, .. }
        | RunErrorKind::NoToken { body, .. }
            if !body.is_empty() =>
        {
            causes.push(format!("the vendor answered: {}", truncate(body, 2000)));
        }
        _ => {}
    }
    let location = error.location();
    let span =
        location.and_then(|location| SourceMap::new(connector.source().text()).span(location));
    let mut message = Message::new(Level::Error, &text);
    message.help = hint.as_deref();
    message.causes = causes;
    if let Some(span) = span {
        message.source = Some(Source {
            text: connector.source().text(),
            path: connector.path(),
            span: span.start..span.end,
            label: Some("defined here"),
        });
    }
    printer::error(&message);
    exit_of(error)
}

fn truncate(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(limit).collect();
        cut.push('…');
        cut
    }
}

/// `--egress`: which addresses requests may connect to ([`engine_runtime::Egress`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum EgressArg {
    // Plain comments, not docs: clap would list documented values one per line in `--help`.
    // Public addresses and loopback.
    Public,
    // Also private networks.
    Private,
    // Every address.
    Any,
}

impl From<EgressArg> for engine_runtime::Egress {
    fn from(arg: EgressArg) -> Self {
        match arg {
            EgressArg::Public => Self::Public,
            EgressArg::Private => Self::Private,
            EgressArg::Any => Self::Any,
        }
    }
}

/// How the steps of a run are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    // Plain comments, not docs: clap would list documented values one per line in `--help`.
    // Lines for people (`send: me: GET https://...`).
    Human,
    // One JSON object per line (`{"event":"send","resource":"me",...}`).
    Json,
}

/// `-v`: each lifecycle step as one line on stderr. What the run does not do as the platform
/// did is a warning whatever the verbosity. Verbose or not, it keeps the parameters the last
/// request sent went without, for the error when the vendor then refuses the credentials.
pub(crate) struct Verbose<'c> {
    enabled: bool,
    format: LogFormat,
    connector: &'c Connector,
    skipped: std::sync::Mutex<Skips>,
}

/// Parameters left out: of the request being built, and of the last one sent.
#[derive(Default)]
struct Skips {
    building: Vec<Skip>,
    sent: Vec<Skip>,
}

/// A parameter a request went without.
#[derive(Clone)]
pub(crate) struct Skip {
    /// The parameter's vendor name.
    pub(crate) parameter: String,
    /// The configuration key that had no value.
    pub(crate) key: String,
    /// Why, as `-v` says it.
    pub(crate) reason: String,
}

impl<'c> Verbose<'c> {
    pub(crate) fn new(enabled: bool, connector: &'c Connector) -> Self {
        Verbose {
            enabled,
            format: LogFormat::Human,
            connector,
            skipped: std::sync::Mutex::default(),
        }
    }

    fn format(mut self, format: LogFormat) -> Self {
        self.format = format;
        self
    }

    /// The parameters the last request sent went without.
    fn skipped(&self) -> Vec<Skip> {
        self.skipped
            .lock()
            .map(|skips| skips.sent.clone())
            .unwrap_or_default()
    }
}

impl Verbose<'_> {
    /// A warning pointing into the connector file.
    fn warn(
        &self,
        title: &str,
        code: Option<&str>,
        at: &engine_spec::Location,
        label: &str,
        help: Option<&str>,
    ) {
        let text = self.connector.source().text();
        let mut message = Message::new(Level::Warning, title);
        message.code = code;
        message.help = help;
        message.source = SourceMap::new(text).span(at).map(|span| Source {
            text,
            path: self.connector.path(),
            span: span.start..span.end,
            label: Some(label),
        });
        printer::error(&message);
    }
}

impl Observer for Verbose<'_> {
    /// Always, whatever the verbosity: each `Sending` marks the parameters its request went
    /// without, kept for the error when the vendor refuses the credentials.
    fn enabled(&self) -> bool {
        true
    }

    fn event(&self, event: &Event) {
        if let Ok(mut skips) = self.skipped.lock() {
            match event {
                // Skipped while its request is built, which is then sent.
                Event::Skipped {
                    parameter,
                    key,
                    reason,
                } => skips.building.push(Skip {
                    parameter: parameter.clone(),
                    key: key.clone(),
                    reason: reason.clone(),
                }),
                Event::Sending { .. } => skips.sent = std::mem::take(&mut skips.building),
                _ => {}
            }
        }
        // Scripts get every step, warnings included, as JSON lines, and nothing else.
        if self.format == LogFormat::Json {
            if let Some(line) = json_event(event) {
                printer::verbose(&line.to_string());
            }
            return;
        }
        match event {
            Event::NotExecuted(diagnostic) => {
                return self.warn(
                    &diagnostic.message,
                    Some(diagnostic.code.as_str()),
                    &diagnostic.location,
                    diagnostic.label.as_deref().unwrap_or("not executed"),
                    diagnostic.help.as_deref(),
                );
            }
            Event::NotFound {
                key,
                path,
                resource,
                lifecycle: true,
            } => {
                let title = format!(
                    "`{resource}` answered without `{path}`: configuration key `{key}` was not saved, and the requests that read it will go without"
                );
                let mut message = Message::new(Level::Warning, &title);
                message.help = Some(
                    "check the vendor's answer with `-v`, or map the value from where the vendor sends it",
                );
                return printer::error(&message);
            }
            Event::LifecycleSkipped {
                resource,
                reason,
                location,
            } => {
                let title = format!(
                    "lifecycle resource `{resource}` was not sent: it cannot be executed as the platform did ({reason})"
                );
                return self.warn(&title, None, location, "skipped", None);
            }
            // The platform always had its webhook URL: going without it differs.
            Event::Skipped { parameter, key, .. } if key == engine_spec::WEBHOOK_CALLBACK_KEY => {
                let title = format!(
                    "`{parameter}` was not sent: its `{{webhookCallbackUrl}}` is the URL the vendor calls with webhooks, and `{key}` has no value"
                );
                let help = format!(
                    "set `{key}` in the instance to the URL that receives the vendor's webhooks"
                );
                let mut message = Message::new(Level::Warning, &title);
                message.help = Some(&help);
                return printer::error(&message);
            }
            _ => {}
        }
        if !self.enabled {
            return;
        }
        let line = match event {
            // The history records it; `-v` already said what refreshed. The warnings are said
            // above, whatever the verbosity.
            Event::RefreshFinished(_) | Event::NotExecuted(_) | Event::LifecycleSkipped { .. } => {
                return;
            }
            Event::Refreshing { reason, by } => {
                let why = match reason {
                    RefreshReason::NotProvisioned => "instance not provisioned yet".to_owned(),
                    RefreshReason::NoToken => "no access token yet".to_owned(),
                    RefreshReason::Expired { at_ms } => {
                        format!("token expired at {}", crate::time::format_ms(*at_ms))
                    }
                    RefreshReason::SessionAlways => "session management is `always`".to_owned(),
                    RefreshReason::Rejected { status } => {
                        format!("the vendor rejected the token with {status}")
                    }
                    RefreshReason::Requested => "requested".to_owned(),
                };
                format!("refresh: {why}; running {by}")
            }
            Event::RefreshedElsewhere => {
                "refresh: another process refreshed while we waited; using its token".to_owned()
            }
            Event::Fresh {
                until_ms: Some(until),
            } => {
                format!("token: fresh until {}", crate::time::format_ms(*until))
            }
            Event::Fresh { until_ms: None } => "token: no expiry to check".to_owned(),
            Event::Sending {
                resource,
                method,
                url,
            } => format!("send: {resource}: {method} {url}"),
            Event::Received { status, elapsed } => {
                format!("receive: {status} in {} ms", elapsed.as_millis())
            }
            Event::Skipped {
                parameter, reason, ..
            } => {
                format!("skip: `{parameter}` not sent: {reason}")
            }
            Event::SentAsText { parameter, reason } => {
                format!("note: `{parameter}`: {reason}")
            }
            Event::WaitingForLock { instance, timeout } => match timeout {
                Some(timeout) => format!(
                    "lock: `{instance}` is locked by another process; waiting up to {} s",
                    timeout.as_secs()
                ),
                None => format!("lock: `{instance}` is locked by another process; waiting"),
            },
            Event::Saved { keys } => format!("save: {}", keys.join(", ")),
            Event::NotFound {
                key,
                path,
                resource,
                ..
            } => {
                format!("note: `{resource}` answered without `{path}`; `{key}` not saved")
            }
            Event::HookLog { resource, line } => format!("hook: `{resource}`: {line}"),
            Event::LifetimeAdjusted(adjusted) => match adjusted.problem {
                LifetimeProblem::Unusable => format!(
                    "note: the vendor's `{}` of `{}` is not a number of seconds; the token is taken to live {} s (saved as such)",
                    adjusted.key, adjusted.sent, adjusted.seconds
                ),
                LifetimeProblem::TooLong => format!(
                    "note: the vendor's `{}` of `{}` is longer than a year; the token is taken to live a year, {} s (saved as such)",
                    adjusted.key, adjusted.sent, adjusted.seconds
                ),
            },
            Event::Retrying {
                attempt,
                after,
                cause,
            } => format!(
                "retry: attempt {attempt} in {} ms after {cause}",
                after.as_millis()
            ),
        };
        printer::verbose(&line);
    }
}

/// `--log-format json`: one object per step, `event` naming it; `None` for what the history
/// records instead. Values are as `-v` shows them: URLs masked, names of keys, never values.
fn json_event(event: &Event) -> Option<serde_json::Value> {
    use serde_json::json;
    let at = crate::time::now();
    let mut value = match event {
        Event::RefreshFinished(_) => return None,
        Event::NotExecuted(diagnostic) => json!({
            "event": "warning",
            "code": diagnostic.code.as_str(),
            "message": diagnostic.message,
            "pointer": diagnostic.location.pointer.to_string(),
        }),
        Event::LifecycleSkipped {
            resource, reason, ..
        } => json!({"event": "skip-resource", "resource": resource, "reason": reason}),
        Event::Refreshing { reason, by } => {
            let (why, at_ms) = match reason {
                RefreshReason::NotProvisioned => ("not-provisioned", None),
                RefreshReason::NoToken => ("no-token", None),
                RefreshReason::Expired { at_ms } => ("expired", Some(*at_ms)),
                RefreshReason::SessionAlways => ("session-always", None),
                RefreshReason::Rejected { .. } => ("rejected", None),
                RefreshReason::Requested => ("requested", None),
            };
            let mut value = json!({"event": "refresh", "reason": why, "running": by});
            if let Some(at_ms) = at_ms {
                value["expired_at"] = json!(crate::time::format_ms(at_ms));
            }
            if let RefreshReason::Rejected { status } = reason {
                value["status"] = json!(status);
            }
            value
        }
        Event::RefreshedElsewhere => json!({"event": "refreshed-elsewhere"}),
        Event::Fresh { until_ms } => json!({
            "event": "fresh",
            "until": until_ms.map(crate::time::format_ms),
        }),
        Event::Sending {
            resource,
            method,
            url,
        } => json!({"event": "send", "resource": resource, "method": method, "url": url}),
        Event::Received { status, elapsed } => json!({
            "event": "answer",
            "status": status,
            "elapsed_ms": u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        }),
        Event::Skipped {
            parameter,
            key,
            reason,
        } => json!({"event": "skip", "parameter": parameter, "key": key, "reason": reason}),
        Event::SentAsText { parameter, reason } => {
            json!({"event": "sent-as-text", "parameter": parameter, "reason": reason})
        }
        Event::WaitingForLock { instance, timeout } => json!({
            "event": "waiting-for-lock",
            "instance": instance,
            "timeout_s": timeout.map(|timeout| timeout.as_secs()),
        }),
        Event::Saved { keys } => json!({"event": "save", "keys": keys}),
        Event::NotFound {
            key,
            path,
            resource,
            lifecycle,
        } => json!({
            "event": "not-found",
            "resource": resource,
            "path": path,
            "key": key,
            "lifecycle": lifecycle,
        }),
        Event::HookLog { resource, line } => {
            json!({"event": "hook-log", "resource": resource, "line": line})
        }
        Event::LifetimeAdjusted(adjusted) => json!({
            "event": "lifetime-adjusted",
            "key": adjusted.key,
            "sent": adjusted.sent,
            "seconds": adjusted.seconds,
        }),
        Event::Retrying {
            attempt,
            after,
            cause,
        } => json!({
            "event": "retry",
            "attempt": attempt,
            "after_ms": u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
            "cause": cause,
        }),
    };
    value["at"] = json!(at);
    Some(value)
}

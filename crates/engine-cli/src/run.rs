//! `engine run CONNECTOR RESOURCE --config INSTANCE`: runs one resource and prints the vendor's
//! answer as JSON on stdout; every message goes to stderr.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use engine_runtime::{
    DEFAULT_MAX_BODY, EngineBuilder, Event, HttpTransport, InputKind, Inputs, LifetimeProblem,
    Observer, RecordingTransport, RefreshReason, RunError, RunErrorKind, RunRequest,
};
use engine_spec::{Connector, SourceMap};
use engine_store::{FileStore, InstanceStore, MemoryStore, StoreErrorKind};

use crate::Exit;
use crate::printer;
use crate::render::{Level, Message, Source};

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The connector file.
    connector: PathBuf,
    /// A resource name, a lifecycle type (`provisionAuthValidation`, `ON REFRESH`...), or
    /// `METHOD:/path` matching a resource's path (`GET:/contacts/c1`); without it, the resources
    /// are listed.
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
    /// Print each lifecycle step to stderr.
    #[arg(long, short = 'v')]
    verbose: bool,
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
    let stdin_part = args.params.iter().any(|(_, value)| value == "@-");
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
    let stdin = if stdin_part {
        let mut bytes = Vec::new();
        if let Err(error) = std::io::stdin().read_to_end(&mut bytes) {
            let message = format!("cannot read standard input: {error}");
            printer::error(&Message::new(Level::Error, &message));
            return Exit::Invalid;
        }
        Some(bytes)
    } else {
        None
    };
    let inputs = Inputs {
        params: args.params.clone(),
        headers: args.headers.clone(),
        body,
        body_text,
        stdin,
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
            let Some(runtime) = crate::instances::runtime() else {
                return Exit::Invalid;
            };
            runtime
        }
    };
    let recording = args.dry_run.then(RecordingTransport::new);
    let mut builder = EngineBuilder::new()
        .timeout(args.timeout)
        .lock_timeout(Some(Duration::from_secs(args.lock_timeout)));
    if let Some(recording) = &recording {
        builder = builder.transport(Arc::new(recording.clone()));
    }
    let recorder = match (&args.record, args.dry_run) {
        (Some(_), false) => {
            match HttpTransport::new(None, Duration::from_secs(10), DEFAULT_MAX_BODY) {
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
    let observer = Verbose {
        enabled: args.verbose,
    };
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
            match runtime.block_on(crate::instances::open_for(store, &connector)) {
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
        let history = crate::history::Recorder::new(&observer);
        let result = engine.run(&request, store, &history).await;
        // The lifecycle steps go into the instance's history (an instance file's: a sidecar
        // next to it); a dry run sends nothing.
        if recording.is_none() {
            crate::history::after_run(store, &request, &history.take(), result.is_ok()).await;
        }
        result
    });
    for notice in opened.take_notices() {
        printer::verbose(&format!("note: {notice}"));
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
                let text = serde_json::to_string_pretty(&output.body).unwrap_or_default();
                printer::stdout(&format!("{text}\n"));
            }
            Exit::Success
        }
        Err(error) => report(&error, &connector),
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

/// Loads and validates the connector; on failure prints its diagnostics (or why it cannot be
/// read) and returns `None`. Warnings are not shown here: `engine validate` shows them.
pub(crate) fn load_connector(path: &Path) -> Option<Connector> {
    let report = match engine_spec::load(path) {
        Ok(report) => report,
        Err(error) => {
            let message = format!("cannot read connector `{}`: {error}", path.display());
            printer::error(&Message::new(Level::Error, &message));
            return None;
        }
    };
    if report.has_errors() {
        for index in 0..report.diagnostics().len() {
            if report.diagnostics()[index].severity == engine_spec::Severity::Error {
                printer::error(&Message::from_diagnostic(&report, index));
            }
        }
        let message = format!(
            "connector `{}` is invalid; nothing was sent",
            path.display()
        );
        printer::error(&Message::new(Level::Error, &message));
        return None;
    }
    report.into_connector()
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
pub(crate) fn hint(error: &RunError, connector: &Connector) -> Option<String> {
    let flag = |input: &InputKind| match input {
        InputKind::Param => "--param",
        InputKind::Header => "--header",
        InputKind::Body => "--body",
    };
    match error.kind() {
            RunErrorKind::MissingConfiguration { .. } => {
                Some("add the keys to the instance file, then run again".into())
            }
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
            RunErrorKind::AuthFailed { .. } | RunErrorKind::TokenRejected { .. } => {
                Some(reauthenticate(connector))
            }
            RunErrorKind::NoToken { field, .. } => Some(format!(
                "the vendor answered without the token: if it is down, run again later; if it sends the token under another name, map that name instead of `{field}`"
            )),
            RunErrorKind::NotAuthorized { .. } => Some(
                "run `engine authorize CONNECTOR --config INSTANCE` to sign in through a browser"
                    .into(),
            ),
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
            RunErrorKind::InvalidUrl { message, .. } if message.contains("the engine sends only") => Some(
                "set it to the vendor's `http://` or `https://` address in the instance file (or the connector's `defaultValue`)".into(),
            ),
            RunErrorKind::InputFile { name, path, .. } if path == "-" => Some(format!(
                "pipe the part's content into `engine run`, or pass `--param {name}=@FILE`"
            )),
            RunErrorKind::InputFile { name, .. } => Some(format!(
                "check the path, or pass a text part with `--param {name}=VALUE`"
            )),
            RunErrorKind::NeverExecuted { kind, .. } if kind == "OAUTH2 PASSWORD" => Some(
                "use `\"authentication\": {\"type\": \"oauth2\", \"grant\": \"password\"}`: the engine then obtains the token itself".into(),
            ),
            RunErrorKind::NeverExecuted { .. } => Some(
                "run an `API` resource (or a token lifecycle resource); to make this call, copy it into an `API` resource".into(),
            ),
            RunErrorKind::Oauth1 { .. } => Some(
                "the engine cannot sign OAuth 1.0a requests: use the vendor's OAuth 2.0 or API key authentication if it has one".into(),
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

/// What re-authenticating means for this connector's authentication.
fn reauthenticate(connector: &Connector) -> String {
    let path = connector.path().display();
    match (connector.authentication().kind(), connector.authentication().grant()) {
        (engine_spec::AuthKind::Oauth2, engine_spec::kinds::Grant::AuthorizationCode) => format!(
            "sign in again through a browser: `engine authorize {path} --config INSTANCE`"
        ),
        (engine_spec::AuthKind::Oauth2, engine_spec::kinds::Grant::Password) => "fix `oauth.api.key`, `oauth.api.secret`, `username` and `password` in the instance file, then run again".into(),
        (engine_spec::AuthKind::Oauth2, _) => "fix `oauth.api.key` and `oauth.api.secret` in the instance file, then run again".into(),
        _ => format!(
            "fix the credentials in the instance file, then provision again: `engine run {path} provisionAuthValidation --config INSTANCE`"
        ),
    }
}

/// The resources a caller can run, for messages: `me`, `list-contacts`, `GET /hubs/x`...
pub(crate) fn resource_list(connector: &Connector) -> String {
    let names: Vec<String> = connector
        .resources()
        .iter()
        .filter(|resource| resource.kind().is_api())
        .map(
            |resource| match (resource.name(), resource.method(), resource.path()) {
                (Some(name), _, _) => format!("`{name}`"),
                (None, Some(method), Some(path)) => format!("`{method}:{path}`"),
                _ => format!("`{}`", resource.display_name()),
            },
        )
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
        | RunErrorKind::Authorize { .. } => Exit::AuthFailed,
        RunErrorKind::Transport { .. }
        | RunErrorKind::TimedOut { .. }
        | RunErrorKind::BodyTooLarge { .. } => Exit::Transport,
        RunErrorKind::Store(error) => match error.kind() {
            StoreErrorKind::Io { operation, .. } if *operation != "read" => Exit::VendorError,
            StoreErrorKind::LockTimeout { .. } => Exit::VendorError,
            _ => Exit::Invalid,
        },
        _ => Exit::Invalid,
    }
}

/// Prints a failed run: the message, where in the connector it comes from, the vendor's body,
/// and what to do.
pub(crate) fn report(error: &RunError, connector: &Connector) -> Exit {
    let text = error.to_string();
    let hint = hint(error, connector);
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

/// `-v`: each lifecycle step as one line on stderr.
struct Verbose {
    enabled: bool,
}

impl Observer for Verbose {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn event(&self, event: &Event) {
        if !self.enabled {
            return;
        }
        let line = match event {
            // The history records it; `-v` already said what refreshed.
            Event::RefreshFinished(_) => return,
            Event::Refreshing { reason, by } => {
                let why = match reason {
                    RefreshReason::NotProvisioned => "instance not provisioned yet".to_owned(),
                    RefreshReason::NoToken => "no access token yet".to_owned(),
                    RefreshReason::Expired { at_ms } => {
                        format!("token expired at {}", format_time(*at_ms))
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
                format!("token: fresh until {}", format_time(*until))
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
            Event::Skipped { parameter, reason } => {
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

/// Epoch milliseconds as an RFC 3339 UTC time.
pub(crate) fn format_time(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(|| ms.to_string(), |time| time.to_string())
}

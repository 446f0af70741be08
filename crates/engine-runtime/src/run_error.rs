//! [`RunError`]: everything that can stop a run, with the place in the connector file it came
//! from when there is one.

use engine_spec::Location;
use engine_store::StoreError;

/// A failed run.
#[derive(Debug, thiserror::Error)]
#[error("{kind}")]
pub struct RunError {
    /// Also the source, so that `source()` goes on with the kind's cause (a store error's
    /// `io::Error`) for the `caused by:` lines.
    #[source]
    kind: Box<RunErrorKind>,
    location: Option<Location>,
}

impl RunError {
    /// What went wrong.
    pub fn kind(&self) -> &RunErrorKind {
        &self.kind
    }

    /// Where in the connector file, when the error comes from a node of it.
    pub fn location(&self) -> Option<&Location> {
        self.location.as_ref()
    }

    /// Attaches a location.
    #[must_use]
    pub fn at(mut self, location: &Location) -> Self {
        self.location = Some(location.clone());
        self
    }

    /// What the person should do next, when there is something to suggest.
    pub fn hint(&self) -> Option<String> {
        match &*self.kind {
            RunErrorKind::MissingConfiguration { .. } => {
                Some("add the keys to the instance file, then run again".into())
            }
            RunErrorKind::MissingInput { flag, .. } if *flag == "--body" => Some(
                "pass the body with `--body FILE`, or `--body -` to read it from standard input"
                    .into(),
            ),
            RunErrorKind::MissingInput { flag, name, .. } => {
                Some(format!("pass it with `{flag} {name}=VALUE`"))
            }
            RunErrorKind::UnknownResource { suggestion, .. } => suggestion
                .as_ref()
                .map(|suggestion| format!("did you mean `{suggestion}`?")),
            RunErrorKind::UnknownInput { suggestion, .. } => suggestion
                .as_ref()
                .map(|suggestion| format!("did you mean `{suggestion}`?")),
            RunErrorKind::AuthFailed { .. } | RunErrorKind::TokenRejected { .. } => Some(
                "re-authenticate: fix the credentials in the instance file (or run `engine authorize`), then run again".into(),
            ),
            RunErrorKind::NotAuthorized { .. } => Some(
                "run `engine authorize CONNECTOR --config INSTANCE` to sign in through a browser"
                    .into(),
            ),
            RunErrorKind::Store(error) if matches!(
                error.kind(),
                engine_store::StoreErrorKind::Io { operation, .. } if *operation != "read"
            ) || matches!(error.kind(), engine_store::StoreErrorKind::LockTimeout { .. }) => Some(
                "the instance file was left as it was; a token the vendor issued during this run may be lost: fix the file's permissions or free disk space and run again (re-authenticate if the vendor rotates refresh tokens)".into(),
            ),
            RunErrorKind::Transport { .. } => Some(
                "check that the vendor is reachable, or raise `--timeout`".into(),
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
}

impl From<RunErrorKind> for RunError {
    fn from(kind: RunErrorKind) -> Self {
        Self {
            kind: Box::new(kind),
            location: None,
        }
    }
}

impl From<StoreError> for RunError {
    fn from(error: StoreError) -> Self {
        RunErrorKind::Store(error).into()
    }
}

/// A required configuration key the instance lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingKey {
    /// The key.
    pub key: String,
    /// Its description, when the connector has one.
    pub description: Option<String>,
}

/// Everything that can stop a run. Messages: lowercase, no trailing period, literals in
/// backticks; they never contain a secret (vendor bodies are redacted before they get here).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunErrorKind {
    /// The caller named a resource the connector does not have.
    #[error("connector `{connector}` has no resource `{selector}`")]
    UnknownResource {
        /// The connector's name.
        connector: String,
        /// What the caller typed.
        selector: String,
        /// The closest resource name.
        suggestion: Option<String>,
    },
    /// The instance lacks required configuration.
    #[error("the instance lacks required configuration: {}", list_keys(missing))]
    MissingConfiguration {
        /// Every missing key.
        missing: Vec<MissingKey>,
    },
    /// A required caller input is missing.
    #[error("resource `{resource}` needs the input `{name}`")]
    MissingInput {
        /// The resource.
        resource: String,
        /// The input name.
        name: String,
        /// The flag that passes it (`--param`, `--header`, `--body`).
        flag: &'static str,
    },
    /// The caller passed an input no parameter of the resource takes.
    #[error("resource `{resource}` takes no input `{name}`")]
    UnknownInput {
        /// The resource.
        resource: String,
        /// The input name.
        name: String,
        /// The closest input name.
        suggestion: Option<String>,
    },
    /// A value could not be converted to its `dataType`.
    #[error("value of `{name}` is not a valid {data_type}: `{value}`")]
    BadValue {
        /// The parameter.
        name: String,
        /// The data type.
        data_type: String,
        /// The offending value (redacted).
        value: String,
    },
    /// A template could not be rendered.
    #[error("cannot render `{template}`: {message}")]
    Render {
        /// The template text.
        template: String,
        /// What failed.
        message: String,
    },
    /// The request URL is not a valid URL.
    #[error("invalid URL `{url}`: {message}")]
    InvalidUrl {
        /// The URL (redacted).
        url: String,
        /// Why.
        message: String,
    },
    /// The vendor answered an API call with an error status.
    #[error("the vendor answered `{resource}` with {status}{}", problem.as_ref().map(|p| format!(": {p}")).unwrap_or_default())]
    VendorStatus {
        /// The resource.
        resource: String,
        /// HTTP status.
        status: u16,
        /// The URL (redacted).
        url: String,
        /// A short problem from the body (`error`, `message`, `title`...), redacted.
        problem: Option<String>,
        /// The whole body, redacted.
        body: String,
    },
    /// No valid token could be obtained or refreshed.
    #[error("authentication failed: `{step}` answered {status}{}", problem.as_ref().map(|p| format!(": {p}")).unwrap_or_default())]
    AuthFailed {
        /// The lifecycle step (`ON REFRESH`, `oauth2 refresh_token` ...).
        step: String,
        /// HTTP status.
        status: u16,
        /// The vendor's error (`invalid_grant: ...`), redacted.
        problem: Option<String>,
        /// The whole body, redacted.
        body: String,
    },
    /// A lifecycle step succeeded but gave no token.
    #[error("authentication failed: `{step}` answered without `{field}`")]
    NoToken {
        /// The step.
        step: String,
        /// The field that was expected.
        field: String,
    },
    /// The vendor still rejected the request after one refresh.
    #[error("the vendor rejected the token for `{resource}` with {status} even after a refresh")]
    TokenRejected {
        /// The resource.
        resource: String,
        /// HTTP status.
        status: u16,
    },
    /// The authorization code grant needs a person to sign in first.
    #[error("instance has no token yet for connector `{connector}`")]
    NotAuthorized {
        /// The connector.
        connector: String,
    },
    /// Connect, timeout, TLS or a reset, after the allowed retries.
    #[error("request to `{url}` failed: {message}")]
    Transport {
        /// The URL (redacted).
        url: String,
        /// What failed, with its causes.
        message: String,
    },
    /// The instance state could not be read or written.
    #[error(transparent)]
    Store(StoreError),
    /// A `nextResource` chain ran longer than allowed (cannot happen with a validated connector).
    #[error("the `nextResource` chain is longer than {max}")]
    ChainTooLong {
        /// The limit.
        max: usize,
    },
    /// A multipart file input (`--param NAME=@FILE`) could not be read; nothing was sent.
    #[error("cannot read the file `{path}` of part `{name}`: {message}")]
    InputFile {
        /// The parameter (`--param` name).
        name: String,
        /// The path as given (`-` for standard input).
        path: String,
        /// Why.
        message: String,
    },
    /// The resource's type is accepted at load but never executed (webhooks, `onDelete`, ...).
    #[error(
        "resource `{resource}` of type `{kind}` is never executed by the engine; nothing was sent"
    )]
    NeverExecuted {
        /// The resource.
        resource: String,
        /// Its type, as a label (`ON PROVISION WEBHOOK`).
        kind: String,
    },
    /// The connector authenticates with OAuth 1.0a, which the engine does not sign.
    #[error(
        "connector `{connector}` uses OAuth 1.0a authentication, which the engine does not execute: its requests would go out unsigned; nothing was sent"
    )]
    Oauth1 {
        /// The connector.
        connector: String,
    },
    /// The connector's protocol is not HTTP (`jdbc`, `odata`, ...).
    #[error(
        "connector `{connector}` uses protocol `{protocol}`: only HTTP is executed; nothing was sent"
    )]
    ProtocolNotExecuted {
        /// The connector.
        connector: String,
        /// Its `protocolType`.
        protocol: String,
    },
    /// The caller's body is not JSON, and the resource takes a JSON body.
    #[error("the body is not valid JSON: {message}")]
    BodyNotJson {
        /// The parser's message.
        message: String,
    },
    /// A `{token}` of a text body names a `bodyToken` parameter that has no value.
    #[error("the body of `{resource}` has the token `{{{token}}}` but its parameter has no value")]
    UnfilledToken {
        /// The resource.
        resource: String,
        /// The token (the parameter's `vendorName`).
        token: String,
        /// The caller input that fills it, when it is one (`--param NAME`).
        input: Option<String>,
    },
    /// The authorization flow failed (`engine authorize`).
    #[error("authorization failed: {message}")]
    Authorize {
        /// What failed, redacted.
        message: String,
    },
}

fn list_keys(missing: &[MissingKey]) -> String {
    missing
        .iter()
        .map(|key| match &key.description {
            Some(description) => format!("`{}` ({description})", key.key),
            None => format!("`{}`", key.key),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

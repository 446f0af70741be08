//! [`RunError`]: everything that can stop a run, with the place in the connector file it came
//! from when there is one. It says what happened (kind, resource, vendor status, source), never
//! what a command line should do about it: the CLI turns it into exit codes and hints.

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

/// The kinds of caller input ([`crate::Inputs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// A query, path, form or multipart value (`Inputs::params`).
    Param,
    /// A header (`Inputs::headers`).
    Header,
    /// The body (`Inputs::body`).
    Body,
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
        /// What kind of input it is.
        input: InputKind,
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
        /// The vendor's response headers, in the order received, values redacted (values that
        /// are not text left out).
        headers: Vec<(String, String)>,
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
        /// How long the vendor asked to wait before the next attempt (its `Retry-After`),
        /// when it said.
        retry_after: Option<std::time::Duration>,
    },
    /// A lifecycle step succeeded but gave no token.
    #[error("authentication failed: `{step}` answered without `{field}`")]
    NoToken {
        /// The step.
        step: String,
        /// The field that was expected.
        field: String,
        /// The whole body, redacted (empty until the engine fills it).
        body: String,
    },
    /// The vendor still rejected the request after one refresh.
    #[error("the vendor rejected the token for `{resource}` with {status} even after a refresh")]
    TokenRejected {
        /// The resource.
        resource: String,
        /// HTTP status.
        status: u16,
    },
    /// The instance cools down after failed refreshes (its schedule's `cooldown_until`): no
    /// token request is sent before the next attempt is due, so callers are answered at once
    /// instead of hammering the vendor.
    #[error("instance `{instance}` is cooling down after failed refreshes: its next refresh is due in {} s", retry_in_ms.div_ceil(1000))]
    CoolingDown {
        /// The instance.
        instance: String,
        /// How long until the next refresh may be tried, in milliseconds.
        retry_in_ms: u64,
    },
    /// The vendor rejected the instance's refreshes until it was marked `needs-reauth`
    /// (its schedule's status): no token is asked for until someone signs in again or changes its
    /// credentials, so callers are answered at once.
    #[error(
        "instance `{instance}` needs to be signed in again: the vendor rejected its last {rejections} token requests, and none is sent until its credentials change"
    )]
    NeedsReauth {
        /// The instance.
        instance: String,
        /// The consecutive rejections that marked it.
        rejections: u32,
    },
    /// The authorization code grant needs a person to sign in first.
    #[error("instance has no token yet for connector `{connector}`")]
    NotAuthorized {
        /// The connector.
        connector: String,
    },
    /// The vendor's answer is larger than the engine reads.
    #[error("the response from `{url}` is larger than the limit of {limit} bytes")]
    BodyTooLarge {
        /// The URL (redacted).
        url: String,
        /// The limit, in bytes.
        limit: usize,
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
    /// A response JSONPath (`rootKey` or a response `bodyField`) would visit more of the
    /// response than the evaluation budget allows; nothing was saved or returned.
    #[error("resource `{resource}`: {source}")]
    JsonPathBudget {
        /// The resource whose response was read.
        resource: String,
        /// The path and the budget.
        source: engine_spec::jsonpath::BudgetExceeded,
    },
    /// A `nextResource` chain ran longer than allowed (cannot happen with a validated connector).
    #[error("the `nextResource` chain is longer than {max}")]
    ChainTooLong {
        /// The limit.
        max: usize,
    },
    /// A JavaScript hook failed: it threw, ran past its time budget or its memory cap, or
    /// answered something unusable. The run stops; nothing it computed is kept.
    #[error("{hook} failed{}: {message}", at.map(|(line, column)| format!(" at line {line}, column {column} of its script")).unwrap_or_default())]
    Hook {
        /// Which hook (`the connector's `preRequest` hook`).
        hook: String,
        /// What happened, secrets masked.
        message: String,
        /// Where in the script (line, column), when known.
        at: Option<(usize, usize)>,
        /// The vendor's answer a `postRequest` hook was given, masked (empty before the call).
        body: String,
    },
    /// The resource's type is accepted at load but never executed (webhooks, `oauthOnAuthorizeUrl`, ...).
    #[error(
        "resource `{resource}` of type `{kind}` is never executed by the engine; nothing was sent"
    )]
    NeverExecuted {
        /// The resource.
        resource: String,
        /// Its type, as a label (`ON PROVISION WEBHOOK`).
        kind: String,
    },
    /// A strict run would not do as the platform did (see [`crate::Event::NotExecuted`] and
    /// [`crate::Event::LifecycleSkipped`]).
    #[error(
        "run of `{resource}` refused in strict mode: {count} part{} of what it executes would not run as on the platform; nothing was sent",
        if *count == 1 { "" } else { "s" }
    )]
    NotFaithful {
        /// The resource run.
        resource: String,
        /// How many differences.
        count: usize,
    },
    /// A lifecycle resource that obtains the token cannot be executed as the platform did (a
    /// `preRequest` hook whose script the export lacks, a converter the engine does not run):
    /// it is not sent half-built, and the token cannot come without it.
    #[error(
        "`{resource}` obtains the token but cannot be executed as the platform did: {reason}; nothing was sent"
    )]
    TokenStepNotFaithful {
        /// The lifecycle resource.
        resource: String,
        /// What the engine would not do (the W0501 message).
        reason: String,
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
    /// A header cannot be sent as HTTP: its name is not a token, or its value holds a line
    /// break or another control character. Nothing was sent.
    #[error("header {shown} cannot be sent: {problem}; nothing was sent")]
    InvalidHeader {
        /// The header as it may be shown: its name in backticks, or the part of a bad name up to
        /// the first character a name cannot hold (the rest may be a secret).
        shown: String,
        /// What is wrong (never the value: it may be a secret).
        problem: String,
        /// True when a `--header` (a caller input) gave it, false for the connector.
        from_caller: bool,
    },
    /// A path value would not be exactly one path segment: empty, `.` or `..` (a URL cannot
    /// carry those as a segment: they would name another resource). Nothing was sent.
    #[error(
        "resource `{resource}`: the path value `{name}` is {shown}, which cannot be sent as one path segment; nothing was sent"
    )]
    BadPathValue {
        /// The resource.
        resource: String,
        /// The placeholder (or `--param`) name.
        name: String,
        /// The value, described: `empty`, `` `.` `` or `` `..` ``.
        shown: String,
    },
    /// No answer within the bound on the whole run (`--timeout`): every attempt, retry pause
    /// and refresh included.
    #[error("no answer from `{url}` within the run's timeout of {timeout} (every attempt, pause and refresh included; {attempts} attempt{plural})", plural = if *attempts == 1 { "" } else { "s" })]
    TimedOut {
        /// The URL (redacted).
        url: String,
        /// The bound, as shown (`2 s`, `0.5 s`).
        timeout: String,
        /// How many attempts this request made.
        attempts: u32,
    },
    /// The authorization flow failed (`engine authorize`).
    #[error("authorization failed: {message}")]
    Authorize {
        /// What failed, redacted.
        message: String,
    },
    /// A request carrying the instance's credentials would go to an origin they do not belong
    /// to (a hook's `request_vendor_path`, a next-page link): nothing was sent. See
    /// `docs/security.md`, "Where credentials go".
    #[error(
        "`{resource}` would carry the instance's credentials to `{origin}`, which is none of the origins they may go to ({}); nothing was sent",
        list_origins(allowed)
    )]
    CredentialsElsewhere {
        /// The resource (or token step) whose request it is.
        resource: String,
        /// Where the request would go: `scheme://host:port`.
        origin: String,
        /// Where the credentials may go (`https://*.example.com` for a host with a placeholder).
        allowed: Vec<String>,
    },
    /// The egress policy refused the address a request would connect to: nothing was sent.
    #[error("nothing was sent to `{url}`: {message}")]
    AddressRefused {
        /// The URL (redacted).
        url: String,
        /// What was refused: the host, its address and the policy.
        message: String,
    },
}

fn list_origins(allowed: &[String]) -> String {
    if allowed.is_empty() {
        return "none: no `base.url` or endpoint of the instance is an `http(s)` URL".to_owned();
    }
    allowed
        .iter()
        .map(|origin| format!("`{origin}`"))
        .collect::<Vec<_>>()
        .join(", ")
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

//! The one error of the operations: [`Error`] and its [`ErrorKind`]; and [`Warning`], what went
//! wrong beside an operation that still succeeded. Front ends map the kinds
//! to what they say and return (exit codes, HTTP statuses) in one place each.

use std::path::PathBuf;

use engine_store::StoreError;

/// Why an operation failed: see [`Error::kind`].
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Error {
    kind: Box<ErrorKind>,
}

impl Error {
    /// What failed, with its data.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// The error, without its box.
    pub fn into_kind(self) -> ErrorKind {
        *self.kind
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Self {
            kind: Box::new(kind),
        }
    }
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        ErrorKind::Store(error).into()
    }
}

/// The kinds of [`Error`]. Messages follow the project's style (lowercase, literals in
/// backticks); hints that name commands or flags are the front end's.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A database store URL, in a build without the SQL stores (the `sql` feature).
    #[error("this `engine` was built without the SQL stores, so it cannot open `{url}`")]
    SqlNotBuilt {
        /// The store's URL, its password masked.
        url: String,
    },
    /// `ENGINE_STORE_LOCK_LIFETIME` is not a duration.
    #[error("invalid `ENGINE_STORE_LOCK_LIFETIME` `{text}`: {message}")]
    InvalidLockLifetime {
        /// The variable's value.
        text: String,
        /// Why it is not a duration.
        message: String,
    },
    /// A key of `ENGINE_SECRET_KEY` or `ENGINE_SECRET_KEYS_OLD` cannot be parsed. The message
    /// names the key's id at most, never its bytes.
    #[error("invalid `{variable}`: {message}")]
    InvalidSecretKey {
        /// The environment variable.
        variable: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The file `ENGINE_SECRET_KEY_FILE` names cannot be read.
    #[error("{error}")]
    SecretKeyFile {
        /// The read's error (it names the file).
        error: std::io::Error,
    },
    /// The store failed: a backend error, an unknown instance, a lock not obtained.
    #[error(transparent)]
    Store(StoreError),
    /// A connector file cannot be read.
    #[error("cannot read connector `{}`: {error}", path.display())]
    ConnectorUnreadable {
        /// The file.
        path: PathBuf,
        /// The read's error.
        error: std::io::Error,
    },
    /// A connector file has errors; its [`engine_spec::Report`] holds the diagnostics.
    #[error("connector `{}` is invalid; nothing was sent", path.display())]
    InvalidConnector {
        /// The file.
        path: PathBuf,
        /// The diagnostics, errors and warnings.
        report: Box<engine_spec::Report>,
    },
    /// No connector of the [`Registry`](crate::Registry) has this name, and no file has it as
    /// its path.
    #[error("unknown connector `{name}`")]
    UnknownConnector {
        /// The name looked up.
        name: String,
        /// The names the registry knows, sorted.
        known: Vec<String>,
    },
    /// An instance with this id exists already.
    #[error("instance `{id}` already exists in the store")]
    InstanceExists {
        /// The id.
        id: String,
    },
    /// A configuration value does not fit the connector: an unknown key, one of the engine's
    /// own, a wrong type, a required key without a value.
    #[error("configuration key `{key}`: {problem}")]
    InvalidValue {
        /// The key at fault.
        key: String,
        /// What is wrong with it (never its value).
        problem: String,
    },
    /// The `onDelete` call of an instance failed: the instance was kept.
    #[error("`{id}` was not deleted: its `onDelete` call failed")]
    OnDeleteFailed {
        /// The instance.
        id: String,
        /// The call's error (secrets masked).
        error: engine_runtime::RunError,
    },
    /// The connector an instance names cannot be loaded to run its `onDelete`: the instance was
    /// kept.
    #[error(
        "`{id}` was not deleted: its connector `{connector}` cannot be loaded to run its `onDelete` resource"
    )]
    DeleteConnectorUnavailable {
        /// The instance.
        id: String,
        /// The connector's name as recorded (or given).
        connector: String,
    },
    /// API keys are created without `ENGINE_SECRET_KEY`: they are stored only as a MAC under
    /// a key derived from it, never under a weaker secret.
    #[error("API keys need a secret key to be stored under: `ENGINE_SECRET_KEY` is not set")]
    NoKeySecret,
    /// A key name that is not an id.
    #[error(
        "invalid key name `{name}`: expected 1 to 200 ASCII letters, digits, `.`, `_` or `-`, not starting with `.`"
    )]
    InvalidKeyName {
        /// The name.
        name: String,
    },
    /// A key created without a scope.
    #[error("a key needs at least one scope")]
    NoScope,
    /// A scope that does not exist.
    #[error(
        "unknown scope `{scope}`: expected `resources`, `instances:read`, `instances:write` or `tokens:read`"
    )]
    UnknownScope {
        /// The scope given.
        scope: String,
    },
    /// A key that is not revoked already has this name.
    #[error("a key named `{name}` exists")]
    KeyNameTaken {
        /// The name.
        name: String,
    },
    /// No key has this name or prefix.
    #[error("no key named `{name}`")]
    UnknownKey {
        /// The name or prefix given.
        name: String,
    },
    /// A stored key's record cannot be read as a key.
    #[error("the record of key `ek_{id}` is not a key")]
    MalformedKey {
        /// The key's id.
        id: String,
    },
    /// A connector that does not sign in through a browser (OAuth2's `authorization_code`
    /// grant): `scheme` says how it authenticates instead.
    #[error(
        "connector `{connector}` does not sign in through a browser: its authentication is {scheme}"
    )]
    NoBrowserSignIn {
        /// The connector, as the caller named it.
        connector: String,
        /// Its authentication, in words (`` `basic` ``, `` OAuth2 with the `client_credentials` grant ``).
        scheme: String,
    },
    /// A sign-in's callback whose `state` (OAuth 1.0a: `oauth_token`) names no flow under way:
    /// never started, expired, used already, or started under a secret key no longer set.
    #[error(
        "the sign-in's `state` (OAuth 1.0a: `oauth_token`) is unknown, expired or used already: start the sign-in again"
    )]
    UnknownState,
    /// A run of the connector failed (starting a sign-in: the instance cannot be read, an
    /// OAuth2 key is missing, its `oauthOnAuthorizeUrl` resource failed).
    #[error(transparent)]
    Run(engine_runtime::RunError),
    /// A refresh task ended without an outcome (it panicked or was cancelled).
    #[error("a refresh ended without an outcome: {message}")]
    TaskFailed {
        /// What the task's runtime said.
        message: String,
    },
}

/// What went wrong beside an operation that still succeeded: shown as a warning, never the
/// operation's failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Warning {
    /// An entry of the history was not written.
    #[error("the refresh history of `{instance}` was not recorded: {error}")]
    HistoryNotRecorded {
        /// The instance.
        instance: String,
        /// The store's error.
        error: StoreError,
    },
    /// A claim on a due instance was not released: it lapses at the end of its lease.
    #[error("the claim on `{instance}` was not released (it lapses with its lease): {error}")]
    ClaimNotReleased {
        /// The instance.
        instance: String,
        /// The store's error.
        error: StoreError,
    },
    /// An event ([`crate::events`]) was not published.
    #[error("an event of `{instance}` was not published: {error}")]
    EventNotPublished {
        /// The instance.
        instance: String,
        /// The store's error.
        error: StoreError,
    },
    /// A call's failed refresh did not advance the instance's failure state (its next call may
    /// ask the vendor again at once).
    #[error("the failed refresh of `{instance}` did not start its backoff: {error}")]
    FailureNotRecorded {
        /// The instance.
        instance: String,
        /// The store's error.
        error: StoreError,
    },
    /// The rejection count and `needs-reauth` mark were not cleared after a success.
    #[error("`{instance}` keeps its rejection count: {error}")]
    FailuresKept {
        /// The instance.
        instance: String,
        /// The store's error.
        error: StoreError,
    },
}

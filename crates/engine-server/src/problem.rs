//! Errors as RFC 9457 problem details (`application/problem+json`), and the one place that maps
//! the operations' errors to HTTP statuses ([`Failure::problem`]). A problem's `detail` is the
//! error's own message, which names configuration keys, connectors and instances, never a
//! secret (the runtime masks what it repeats of a vendor).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use engine_runtime::{RunError, RunErrorKind};
use engine_service::ErrorKind;
use engine_store::{StoreError, StoreErrorKind};
use serde::Serialize;

/// A problem details object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// A URI naming the kind of problem (`urn:engine:problem:NAME`).
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// This occurrence, in words.
    pub detail: String,
}

impl Problem {
    /// A problem of kind `name` (the last part of its `type`).
    pub fn new(status: StatusCode, name: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("urn:engine:problem:{name}"),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(self)).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        response
    }
}

/// Why a request failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// An operation of engine-service failed.
    Service(engine_service::Error),
    /// The store failed.
    Store(StoreError),
    /// A run of a resource failed.
    Run(RunError),
    /// The request itself is wrong (a filter, a body).
    BadRequest(String),
    /// The instance records no connector, so nothing can run on it.
    NoConnector(String),
}

impl From<engine_service::Error> for Failure {
    fn from(error: engine_service::Error) -> Self {
        match error.into_kind() {
            ErrorKind::Store(error) => Self::Store(error),
            kind => Self::Service(kind.into()),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

impl From<RunError> for Failure {
    fn from(error: RunError) -> Self {
        Self::Run(error)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        self.problem().into_response()
    }
}

impl Failure {
    /// The problem, and its status, for each kind of failure: the one mapping of errors to
    /// statuses.
    pub(crate) fn problem(&self) -> Problem {
        let detail = match self {
            Self::Service(error) => error.to_string(),
            Self::Store(error) => store_detail(error),
            Self::Run(error) => match error.kind() {
                RunErrorKind::Store(error) => store_detail(error),
                _ => error.to_string(),
            },
            Self::BadRequest(message) => message.clone(),
            Self::NoConnector(id) => format!(
                "instance `{id}` records no connector: import it again naming its connector"
            ),
        };
        let (status, name, title) = match self {
            Self::Service(error) => match error.kind() {
                ErrorKind::UnknownConnector { .. }
                | ErrorKind::ConnectorUnreadable { .. }
                | ErrorKind::InvalidConnector { .. } => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "connector-unavailable",
                    "the instance's connector cannot be loaded",
                ),
                _ => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the operation failed",
                ),
            },
            Self::Store(error) => store_status(error),
            Self::Run(error) => run_status(error),
            Self::BadRequest(_) => (
                StatusCode::BAD_REQUEST,
                "bad-request",
                "the request is invalid",
            ),
            Self::NoConnector(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "no-connector",
                "the instance records no connector",
            ),
        };
        Problem::new(status, name, title, detail)
    }
}

/// What a store's error says to a caller: which instance, never where the store keeps it (a
/// file's path, a database's URL).
fn store_detail(error: &StoreError) -> String {
    match error.kind() {
        StoreErrorKind::UnknownInstance { instance, .. } => {
            format!("instance `{instance}` does not exist")
        }
        StoreErrorKind::NotFound { path } => match path.file_stem() {
            Some(id) => format!("instance `{}` does not exist", id.to_string_lossy()),
            None => "the instance does not exist".to_owned(),
        },
        StoreErrorKind::InvalidInstanceId { .. } => error.to_string(),
        StoreErrorKind::LockTimeout { .. } | StoreErrorKind::Conflict { .. } => {
            "another refresh or write holds the instance: try again".to_owned()
        }
        _ => "the instance store failed (`/readyz` says whether it answers)".to_owned(),
    }
}

/// The status of a store's error.
fn store_status(error: &StoreError) -> (StatusCode, &'static str, &'static str) {
    match error.kind() {
        StoreErrorKind::NotFound { .. } | StoreErrorKind::UnknownInstance { .. } => (
            StatusCode::NOT_FOUND,
            "instance-not-found",
            "no such instance",
        ),
        StoreErrorKind::InvalidInstanceId { .. } => (
            StatusCode::BAD_REQUEST,
            "invalid-instance-id",
            "the instance id is invalid",
        ),
        StoreErrorKind::LockTimeout { .. } | StoreErrorKind::Conflict { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "instance-busy",
            "the instance is busy",
        ),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            "the instance store failed",
        ),
    }
}

/// The status of a failed run that is not the vendor's own answer.
fn run_status(error: &RunError) -> (StatusCode, &'static str, &'static str) {
    match error.kind() {
        RunErrorKind::UnknownResource { .. } => (
            StatusCode::NOT_FOUND,
            "resource-not-found",
            "the connector has no such resource",
        ),
        RunErrorKind::MissingInput { .. }
        | RunErrorKind::UnknownInput { .. }
        | RunErrorKind::BadValue { .. }
        | RunErrorKind::BodyNotJson { .. }
        | RunErrorKind::InvalidHeader { .. }
        | RunErrorKind::BadPathValue { .. } => (
            StatusCode::BAD_REQUEST,
            "bad-input",
            "the resource's inputs are invalid",
        ),
        RunErrorKind::AuthFailed { .. }
        | RunErrorKind::NoToken { .. }
        | RunErrorKind::TokenRejected { .. }
        | RunErrorKind::NotAuthorized { .. } => (
            StatusCode::CONFLICT,
            "reauthentication-needed",
            "no valid token: the instance needs re-authentication",
        ),
        RunErrorKind::Transport { .. } | RunErrorKind::BodyTooLarge { .. } => (
            StatusCode::BAD_GATEWAY,
            "vendor-unreachable",
            "the vendor could not be reached",
        ),
        RunErrorKind::TimedOut { .. } => (
            StatusCode::GATEWAY_TIMEOUT,
            "vendor-timeout",
            "the vendor did not answer in time",
        ),
        RunErrorKind::Store(error) => store_status(error),
        _ => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "not-runnable",
            "the instance or connector does not allow this run; nothing was sent",
        ),
    }
}

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
#[cfg_attr(test, derive(utoipa::ToSchema))]
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
    /// The service itself failed (no randomness for an id).
    Internal(String),
    /// The status page was asked for from an address that is not loopback, and the server does
    /// not open it to anyone.
    PageNotOpen,
    /// The vendor's callback said the person declined a sign-in (or why else it failed).
    Declined {
        /// The instance.
        id: String,
        /// The vendor's error, in words.
        message: String,
    },
}

impl From<engine_service::Error> for Failure {
    fn from(error: engine_service::Error) -> Self {
        match error.into_kind() {
            ErrorKind::Store(error) => Self::Store(error),
            ErrorKind::Run(error) => Self::Run(error),
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
        let retry_after = self.retry_after();
        let mut response = self.problem().into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl Failure {
    /// The seconds a caller should wait before trying again (`Retry-After`), for the answers
    /// that say "not now": an instance another writer holds (a second: a refresh takes about
    /// that), one cooling down after failed refreshes (until its next attempt).
    pub(crate) fn retry_after(&self) -> Option<u64> {
        match self {
            Self::Store(error) => store_retry_after(error),
            Self::Run(error) => run_retry_after(error),
            Self::Service(error) => match error.kind() {
                ErrorKind::OnDeleteFailed { error, .. } => run_retry_after(error),
                _ => None,
            },
            _ => None,
        }
    }

    /// The problem, and its status, for each kind of failure: the one mapping of errors to
    /// statuses.
    pub(crate) fn problem(&self) -> Problem {
        let detail = match self {
            Self::Service(error) => match error.kind() {
                ErrorKind::OnDeleteFailed { error: cause, .. } => format!(
                    "{error}: {}; fix the cause and delete again, or delete it anyway with `?force=true` (what `onDelete` would have removed at the vendor stays)",
                    match cause.kind() {
                        RunErrorKind::Store(store) => store_detail(store),
                        _ => cause.to_string(),
                    }
                ),
                ErrorKind::DeleteConnectorUnavailable { .. } => format!(
                    "{error}; fix the connector file, or delete the instance without its `onDelete` call with `?force=true`"
                ),
                _ => error.to_string(),
            },
            Self::Store(error) => store_detail(error),
            Self::Run(error) => match error.kind() {
                RunErrorKind::Store(error) => store_detail(error),
                _ => error.to_string(),
            },
            Self::BadRequest(message) | Self::Internal(message) => message.clone(),
            Self::NoConnector(id) => format!(
                "instance `{id}` records no connector: import it again naming its connector"
            ),
            Self::Declined { id, message } => format!(
                "the sign-in of `{id}` failed: {message}; start it again with `POST /v1/instances/{id}/authorize`"
            ),
            Self::PageNotOpen => "the status page lists every key's instances: it answers \
                                  callers on the server's machine (a loopback address) only; \
                                  open it on the machine, or start `engine serve` with \
                                  `--open-status-page` behind a proxy that authenticates"
                .to_owned(),
        };
        let (status, name, title) = match self {
            Self::Service(error) => match error.kind() {
                ErrorKind::UnknownConnector { .. }
                | ErrorKind::ConnectorUnreadable { .. }
                | ErrorKind::InvalidConnector { .. }
                | ErrorKind::DeleteConnectorUnavailable { .. } => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "connector-unavailable",
                    "the instance's connector cannot be loaded",
                ),
                ErrorKind::UnknownState => (
                    StatusCode::BAD_REQUEST,
                    "invalid-state",
                    "the sign-in's state is not valid",
                ),
                ErrorKind::NoBrowserSignIn { .. } => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "no-browser-sign-in",
                    "the connector does not sign in through a browser",
                ),
                ErrorKind::InstanceExists { .. } => (
                    StatusCode::CONFLICT,
                    "instance-exists",
                    "an instance with this id exists",
                ),
                ErrorKind::InvalidValue { .. } => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid-value",
                    "a configuration value does not fit the connector",
                ),
                ErrorKind::OnDeleteFailed { error, .. } => match error.kind() {
                    RunErrorKind::VendorStatus { .. } => (
                        StatusCode::BAD_GATEWAY,
                        "on-delete-failed",
                        "the instance's `onDelete` call failed: it was kept",
                    ),
                    _ => run_status(error),
                },
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
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the operation failed",
            ),
            Self::NoConnector(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "no-connector",
                "the instance records no connector",
            ),
            Self::Declined { .. } => (
                StatusCode::BAD_REQUEST,
                "authorization-declined",
                "the vendor did not authorize the sign-in",
            ),
            Self::PageNotOpen => (
                StatusCode::FORBIDDEN,
                "status-page-loopback-only",
                "the status page answers loopback callers only",
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

/// `Retry-After` for a store's error: a second for an instance another writer holds.
fn store_retry_after(error: &StoreError) -> Option<u64> {
    matches!(
        error.kind(),
        StoreErrorKind::LockTimeout { .. } | StoreErrorKind::Conflict { .. }
    )
    .then_some(1)
}

/// `Retry-After` for a failed run: a busy instance's, or a cooling-down one's time to its next
/// refresh.
fn run_retry_after(error: &RunError) -> Option<u64> {
    match error.kind() {
        RunErrorKind::Store(error) => store_retry_after(error),
        RunErrorKind::CoolingDown { retry_in_ms, .. } => Some(retry_in_ms.div_ceil(1000).max(1)),
        _ => None,
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
        | RunErrorKind::NotAuthorized { .. }
        | RunErrorKind::NeedsReauth { .. } => (
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
        RunErrorKind::CoolingDown { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "instance-cooling-down",
            "the instance cools down after failed refreshes",
        ),
        _ => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "not-runnable",
            "the instance or connector does not allow this run; nothing was sent",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry_after(failure: Failure) -> (u16, Option<String>) {
        let response = failure.into_response();
        let header = response
            .headers()
            .get(header::RETRY_AFTER)
            .map(|value| value.to_str().expect("text").to_owned());
        (response.status().as_u16(), header)
    }

    #[test]
    fn answers_that_say_not_now_say_when_to_try_again() {
        let cooling = RunErrorKind::CoolingDown {
            instance: "acme".to_owned(),
            retry_in_ms: 90_500,
        };
        assert_eq!(
            retry_after(Failure::Run(cooling.into())),
            (503, Some("91".to_owned()))
        );
        let busy = StoreError::from(StoreErrorKind::LockTimeout {
            path: "acme".into(),
            waited: std::time::Duration::from_secs(5),
        });
        assert_eq!(
            retry_after(Failure::Store(busy)),
            (503, Some("1".to_owned()))
        );
        let gone = StoreError::from(StoreErrorKind::UnknownInstance {
            instance: "acme".to_owned(),
            store: "sqlite".to_owned(),
        });
        assert_eq!(retry_after(Failure::Store(gone)), (404, None));
    }
}

//! Shared server state and the small response helpers every handler uses.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use axum::Json;
use axum::http::header::WWW_AUTHENTICATE;
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::tokens::{TokenKind, TokenStore, generate_token};
use crate::{EmulatorConfig, Stats};

/// Everything the handlers mutate, behind one lock.
#[derive(Debug, Default)]
pub(crate) struct Inner {
    pub(crate) store: TokenStore,
    pub(crate) stats: Stats,
}

/// The state handed to every handler: fixed configuration plus the locked mutable part.
#[derive(Clone, Debug)]
pub(crate) struct AppState {
    pub(crate) config: Arc<EmulatorConfig>,
    pub(crate) inner: Arc<Mutex<Inner>>,
}

impl AppState {
    /// Returns fresh state for `config`.
    pub(crate) fn new(config: EmulatorConfig) -> Self {
        Self {
            config: Arc::new(config),
            inner: Arc::new(Mutex::new(Inner::default())),
        }
    }

    /// Locks the mutable state. A handler that panicked cannot leave the counters or the token
    /// maps half-updated in a way that matters here, so a poisoned lock is simply taken over.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `update` to the counters.
    pub(crate) fn count(&self, update: impl FnOnce(&mut Stats)) {
        update(&mut self.lock().stats);
    }

    /// Returns whether `user`/`password` is one of the configured users.
    pub(crate) fn user_matches(&self, user: &str, password: &str) -> bool {
        self.config
            .users
            .iter()
            .any(|(name, secret)| name == user && secret == password)
    }

    /// Issues an access (`at_`) or session (`st_`) token that lives for `ttl`.
    ///
    /// Returns the token, or a 500 rejection when the OS random source fails.
    pub(crate) fn issue_access(
        &self,
        kind: TokenKind,
        ttl: std::time::Duration,
    ) -> Result<String, Rejection> {
        let prefix = match kind {
            TokenKind::OAuth => "at_",
            TokenKind::Session => "st_",
        };
        let token = random_token(prefix)?;
        let expires_at = Instant::now() + ttl;
        self.lock()
            .store
            .insert_access(token.clone(), kind, expires_at);
        Ok(token)
    }
}

/// An error response carried through `Result`s: a status, a JSON body and an optional
/// `WWW-Authenticate` challenge.
#[derive(Debug)]
pub(crate) struct Rejection {
    status: StatusCode,
    body: Value,
    challenge: Option<&'static str>,
}

impl Rejection {
    /// Returns a rejection with `status` and JSON `body`.
    pub(crate) fn new(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            body,
            challenge: None,
        }
    }

    /// Adds a `WWW-Authenticate: <challenge>` header to the response.
    pub(crate) fn with_challenge(mut self, challenge: &'static str) -> Self {
        self.challenge = Some(challenge);
        self
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(challenge) = self.challenge {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        response
    }
}

/// Returns a fresh token with `prefix`, or a 500 rejection when the OS random source fails.
pub(crate) fn random_token(prefix: &str) -> Result<String, Rejection> {
    generate_token(prefix).map_err(|error| {
        Rejection::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": "server_error", "error_description": error.to_string()}),
        )
    })
}

/// Returns `body` as a JSON response with `status`.
pub(crate) fn json_error(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// Answers an unrouted path with 404 `not_found`.
pub(crate) async fn not_found(method: Method, uri: Uri) -> Response {
    json_error(
        StatusCode::NOT_FOUND,
        json!({"error": "not_found", "message": format!("no route for {method} {}", uri.path())}),
    )
}

//! `POST /session/login`: a "not quite `OAuth2`" JSON login that returns a session token nested in
//! the body, its lifetime as a string, and the same token in an `X-Session-Token` header.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::state::{AppState, json_error};
use crate::tokens::TokenKind;

/// The name of the header that carries a session token, in both directions.
pub(crate) const SESSION_HEADER: &str = "x-session-token";

/// The login body: `{"credentials": {"user": "…", "secret": "…"}}`.
#[derive(Debug, Deserialize)]
struct LoginBody {
    credentials: Credentials,
}

/// The user name and password inside [`LoginBody`].
#[derive(Debug, Deserialize)]
struct Credentials {
    user: String,
    secret: String,
}

/// Handles `POST /session/login`.
///
/// Returns 200 with the session token, 401 `invalid_credentials` for an unknown user or wrong
/// secret, and 400 `invalid_request` when the body is not the expected JSON.
pub(crate) async fn login(State(state): State<AppState>, body: Bytes) -> Response {
    let login = match serde_json::from_slice::<LoginBody>(&body) {
        Ok(login) => login,
        Err(error) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                json!({"error": "invalid_request", "error_description": error.to_string()}),
            );
        }
    };
    let Credentials { user, secret } = login.credentials;
    if !state.user_matches(&user, &secret) {
        return json_error(
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid_credentials"}),
        );
    }
    let token = match state.issue_access(TokenKind::Session, state.config.session_ttl) {
        Ok(token) => token,
        Err(rejection) => return rejection.into_response(),
    };
    state.count(|stats| stats.logins += 1);
    let ttl = state.config.session_ttl.as_secs().to_string();
    let body = json!({"data": {"session": {"token": token, "ttl": ttl}}});
    let mut response = (StatusCode::OK, Json(body)).into_response();
    // A random token is URL-safe base64 plus a prefix, which is always a valid header value.
    if let Ok(value) = HeaderValue::from_str(&token) {
        response.headers_mut().insert(SESSION_HEADER, value);
    }
    response
}

//! `POST /oauth/token`: an RFC 6749 token endpoint with client credentials, password and rotating
//! refresh-token grants.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::form::{basic_credentials, parse_pairs};
use crate::state::{AppState, Rejection, random_token};
use crate::tokens::TokenKind;

/// The scope granted when the client asks for none.
const DEFAULT_SCOPE: &str = "read";

/// Handles `POST /oauth/token`.
///
/// Parameters come from the query string and the body (form, or a flat JSON object); body values
/// win over query values. Returns the token JSON, or an RFC 6749 §5.2 error object.
pub(crate) async fn token(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.count(|stats| stats.token_requests += 1);
    let params = request_params(&uri, &headers, &body);
    let mut response = match authenticate_client(&state, &headers, &params)
        .and_then(|()| grant(&state, &params))
    {
        Ok(response) => response,
        Err(rejection) => rejection.into_response(),
    };
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// Returns the merged query and body parameters; later (body) values replace earlier ones.
fn request_params(uri: &Uri, headers: &HeaderMap, body: &[u8]) -> HashMap<String, String> {
    let mut params: HashMap<String, String> = uri
        .query()
        .map(parse_pairs)
        .unwrap_or_default()
        .into_iter()
        .collect();
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    if is_json {
        if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) {
            for (name, value) in map {
                let text = match value {
                    Value::String(text) => text,
                    other => other.to_string(),
                };
                params.insert(name, text);
            }
        }
    } else {
        params.extend(parse_pairs(&String::from_utf8_lossy(body)));
    }
    params
}

/// Checks the client by HTTP Basic, or else by the `client_id`/`client_secret` parameters.
fn authenticate_client(
    state: &AppState,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<(), Rejection> {
    let credentials = match basic_credentials(headers) {
        Some(Ok(pair)) => Some(pair),
        Some(Err(())) => None,
        None => params.get("client_id").map(|id| {
            (
                id.clone(),
                params.get("client_secret").cloned().unwrap_or_default(),
            )
        }),
    };
    let known = credentials.is_some_and(|(id, secret)| {
        state
            .config
            .clients
            .iter()
            .any(|(known_id, known_secret)| *known_id == id && *known_secret == secret)
    });
    if known {
        return Ok(());
    }
    let body =
        json!({"error": "invalid_client", "error_description": "client authentication failed"});
    Err(Rejection::new(StatusCode::UNAUTHORIZED, body)
        .with_challenge("Basic realm=\"vendor-emulator\""))
}

/// Dispatches on `grant_type` and returns the token response or the error response.
fn grant(state: &AppState, params: &HashMap<String, String>) -> Result<Response, Rejection> {
    let scope = params
        .get("scope")
        .filter(|scope| !scope.is_empty())
        .map_or(DEFAULT_SCOPE, String::as_str);
    match params.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {
            let access = state.issue_access(TokenKind::OAuth, state.config.token_ttl)?;
            state.count(|stats| stats.client_credentials_grants += 1);
            Ok(token_response(state, &access, scope, None))
        }
        Some("password") => {
            let user = params.get("username").map_or("", String::as_str);
            let password = params.get("password").map_or("", String::as_str);
            if !state.user_matches(user, password) {
                return Err(invalid_grant("bad credentials"));
            }
            let refresh = random_token("rt_")?;
            let access = state.issue_access(TokenKind::OAuth, state.config.token_ttl)?;
            state
                .lock()
                .store
                .start_family(refresh.clone(), scope.to_owned());
            state.count(|stats| stats.password_grants += 1);
            Ok(token_response(state, &access, scope, Some(&refresh)))
        }
        Some("refresh_token") => {
            let presented = params.get("refresh_token").map_or("", String::as_str);
            let (next, scope) = if state.config.rotate_refresh_tokens {
                let next = random_token("rt_")?;
                let rotated = state.lock().store.rotate(presented, next.clone());
                (next, rotated)
            } else {
                (presented.to_owned(), state.lock().store.keep(presented))
            };
            let scope = scope.map_err(|error| invalid_grant(error.description()))?;
            let access = state.issue_access(TokenKind::OAuth, state.config.token_ttl)?;
            state.count(|stats| stats.refresh_grants += 1);
            Ok(token_response(state, &access, &scope, Some(&next)))
        }
        _ => Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            json!({"error": "unsupported_grant_type"}),
        )),
    }
}

/// Returns the 200 token response.
fn token_response(state: &AppState, access: &str, scope: &str, refresh: Option<&str>) -> Response {
    let mut body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": state.config.token_ttl.as_secs(),
        "scope": scope,
    });
    if let (Some(refresh), Some(object)) = (refresh, body.as_object_mut()) {
        object.insert("refresh_token".to_owned(), Value::from(refresh));
    }
    (StatusCode::OK, Json(body)).into_response()
}

/// Returns a 400 `invalid_grant` rejection with `description`.
fn invalid_grant(description: &str) -> Rejection {
    Rejection::new(
        StatusCode::BAD_REQUEST,
        json!({"error": "invalid_grant", "error_description": description}),
    )
}

//! The protected API under `/api/v1/`: bearer or session-token authentication, a fixed contact
//! list with pagination, and an echo endpoint that reflects what the client sent.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::form::parse_pairs;
use crate::session::SESSION_HEADER;
use crate::state::{AppState, Rejection, json_error};
use crate::tokens::{Lookup, TokenKind};

/// The fixed contact list: id, name, email.
const CONTACTS: [(&str, &str, &str); 5] = [
    ("c1", "Ada Lovelace", "ada@example.com"),
    ("c2", "Alan Turing", "alan@example.com"),
    ("c3", "Grace Hopper", "grace@example.com"),
    ("c4", "Edsger Dijkstra", "edsger@example.com"),
    ("c5", "Barbara Liskov", "barbara@example.com"),
];

/// The page size when the request gives no `limit`.
const DEFAULT_LIMIT: usize = 10;

/// Counts the call, checks the token and passes the request on with its [`TokenKind`] attached.
///
/// `Authorization: Bearer` accepts access and session tokens; `X-Session-Token` accepts session
/// tokens only. Returns 401 `invalid_token` when the token is missing, unknown or expired.
pub(crate) async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    state.count(|stats| stats.api_calls += 1);
    let outcome = match presented_token(request.headers()) {
        None => Err("the access token is missing"),
        Some((token, session_only)) => {
            let lookup = state.lock().store.check_access(&token, Instant::now());
            match lookup {
                Lookup::Valid(TokenKind::OAuth) if session_only => {
                    Err("the access token is unknown")
                }
                Lookup::Valid(kind) => Ok(kind),
                Lookup::Expired => Err("the access token expired"),
                Lookup::Unknown => Err("the access token is unknown"),
            }
        }
    };
    match outcome {
        Ok(kind) => {
            request.extensions_mut().insert(kind);
            next.run(request).await
        }
        Err(description) => {
            state.count(|stats| stats.api_unauthorized += 1);
            let body = json!({"error": "invalid_token", "error_description": description});
            Rejection::new(StatusCode::UNAUTHORIZED, body)
                .with_challenge("Bearer error=\"invalid_token\"")
                .into_response()
        }
    }
}

/// Returns the presented token and whether it came from `X-Session-Token` (session tokens only).
fn presented_token(headers: &HeaderMap) -> Option<(String, bool)> {
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| (token.trim().to_owned(), false));
    bearer.or_else(|| {
        headers
            .get(SESSION_HEADER)
            .and_then(|value| value.to_str().ok())
            .map(|token| (token.trim().to_owned(), true))
    })
}

/// Handles `GET /api/v1/me`: the fixed account and which kind of token was used.
pub(crate) async fn me(Extension(kind): Extension<TokenKind>) -> Json<Value> {
    Json(json!({
        "account": {"id": "acc-42", "name": "Demo Account"},
        "token_kind": kind,
    }))
}

/// Handles `GET /api/v1/contacts?limit=N&page=P` (1-based pages, `limit` defaults to 10).
///
/// Returns 400 `invalid_request` when `limit` or `page` is not a non-negative integer.
pub(crate) async fn list_contacts(uri: Uri) -> Response {
    let query: BTreeMap<String, String> = uri
        .query()
        .map(parse_pairs)
        .unwrap_or_default()
        .into_iter()
        .collect();
    let number = |name: &str, default: usize| -> Result<usize, Rejection> {
        query.get(name).map_or(Ok(default), |text| {
            text.parse().map_err(|_| {
                Rejection::new(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "invalid_request", "message": format!("`{name}` must be a non-negative integer, got `{text}`")}),
                )
            })
        })
    };
    let (limit, page) = match (number("limit", DEFAULT_LIMIT), number("page", 1)) {
        (Ok(limit), Ok(page)) => (limit, page),
        (Err(rejection), _) | (_, Err(rejection)) => return rejection.into_response(),
    };
    let skip = page.saturating_sub(1).saturating_mul(limit);
    let contacts: Vec<Value> = CONTACTS
        .iter()
        .skip(skip)
        .take(limit)
        .map(|&contact| contact_json(contact))
        .collect();
    Json(json!({"data": {"contacts": contacts}, "page": page, "limit": limit})).into_response()
}

/// Handles `GET /api/v1/contacts/{id}`; returns 404 `not_found` for an unknown id.
pub(crate) async fn get_contact(Path(id): Path<String>) -> Response {
    match CONTACTS.iter().find(|(known, _, _)| *known == id) {
        Some(&contact) => Json(contact_json(contact)).into_response(),
        None => json_error(
            StatusCode::NOT_FOUND,
            json!({"error": "not_found", "message": format!("contact `{id}` does not exist")}),
        ),
    }
}

/// Handles `POST /api/v1/contacts`: returns 201 with the JSON object plus `"id": "c6"`.
///
/// Nothing is stored, so the emulator stays deterministic. Returns 400 `invalid_request` when the
/// body is not a JSON object.
pub(crate) async fn create_contact(body: Bytes) -> Response {
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(mut object)) => {
            object.insert("id".to_owned(), Value::from("c6"));
            (StatusCode::CREATED, Json(Value::Object(object))).into_response()
        }
        _ => json_error(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_request", "message": "the body must be a JSON object"}),
        ),
    }
}

/// Handles `GET` and `POST /api/v1/echo`: reflects the method, path, query, the `x-*`,
/// `content-type` and `accept` headers, and the decoded body.
pub(crate) async fn echo(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Json<Value> {
    let query: BTreeMap<String, String> = uri
        .query()
        .map(parse_pairs)
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut echoed: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &headers {
        let name = name.as_str();
        if name.starts_with("x-") || name == "content-type" || name == "accept" {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            echoed
                .entry(name.to_owned())
                .and_modify(|existing| {
                    existing.push_str(", ");
                    existing.push_str(&value);
                })
                .or_insert(value);
        }
    }
    Json(json!({
        "method": method.as_str(),
        "path": uri.path(),
        "query": query,
        "headers": echoed,
        "body": echo_body(&headers, &body),
    }))
}

/// Returns the body as JSON, as a form map, as text for other content, or `null` when empty.
fn echo_body(headers: &HeaderMap, body: &[u8]) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(body);
    if content_type.starts_with("application/x-www-form-urlencoded") {
        let form: Map<String, Value> = parse_pairs(&text)
            .into_iter()
            .map(|(name, value)| (name, Value::from(value)))
            .collect();
        return Value::Object(form);
    }
    serde_json::from_slice(body).unwrap_or_else(|_| Value::from(text.into_owned()))
}

/// Returns one contact as JSON.
fn contact_json((id, name, email): (&str, &str, &str)) -> Value {
    json!({"id": id, "name": name, "email": email})
}

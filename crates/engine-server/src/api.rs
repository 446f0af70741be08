//! The HTTP API: health, instances (create, list, show, delete, force a refresh, history),
//! resource calls and events ([`crate::events`]),
//! JSON in and out, failures as problem details ([`crate::problem`]). Each handler calls
//! engine-service or the runtime and shapes the answer; what to decide is theirs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Bytes, HttpBody};
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use engine_runtime::{Inputs, NoObserver, RunErrorKind, RunRequest};
use engine_service::{DeleteConnector, NewInstance};
use engine_service::{Due, InstanceState, Outcome, Refresh, RefreshOptions, Trigger};
use engine_store::{InstanceStore, Page, StoreError, Summary, Versioned};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::problem::{Failure, Problem};

/// How far ahead a forced refresh looks: any token that expires at all is refreshed.
const FORCE_AHEAD: Duration = Duration::from_hours(24 * 365 * 100);

/// The largest page of `GET /v1/instances`.
const MAX_LIMIT: usize = 1000;

/// The routes.
pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(crate::page::page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", {
            let metrics = Arc::clone(&app.metrics);
            get(move || std::future::ready(crate::metrics::metrics(&metrics)))
        })
        .route("/v1/instances", get(list).post(create))
        .route("/v1/instances/{id}", get(show).delete(remove))
        .route("/v1/instances/{id}/refresh", post(refresh))
        .route("/v1/instances/{id}/history", get(history))
        .route("/v1/events", get(crate::events::list))
        .fallback(not_found)
        .with_state(app)
}

async fn not_found() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        "no such endpoint",
        "the API's endpoints are under `/v1/instances`",
    )
}

async fn healthz() -> axum::Json<Value> {
    axum::Json(json!({"status": "ok"}))
}

/// Ready when the store answers a listing. The store's error is not repeated: it may name
/// where the store lives.
async fn readyz(State(app): State<Arc<App>>) -> Response {
    let page = Page {
        limit: 1,
        ..Page::default()
    };
    match app.opened.plain().list(page).await {
        Ok(_) => axum::Json(json!({"status": "ready"})).into_response(),
        Err(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store-unavailable",
            "the instance store does not answer",
            "listing the instances failed; the scheduler backs off until the store answers",
        )
        .into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    connector: Option<String>,
    status: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/instances?connector=&status=&after=&limit=`: a page of instances in id order;
/// `next` is the `after` of the next page.
#[cfg_attr(test, utoipa::path(
    get,
    path = "/v1/instances",
    tag = "instances",
    params(crate::openapi::ListParams),
    responses(
        (status = 200, description = "A page of instances", body = crate::openapi::InstanceList),
        (status = 400, description = "A wrong filter", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["instances:read"]))
))]
async fn list(
    State(app): State<Arc<App>>,
    caller: Option<axum::Extension<crate::Caller>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<axum::Json<Value>, Failure> {
    let Query(query) = query.map_err(|rejection| Failure::BadRequest(rejection.body_text()))?;
    let now_ms = app.clock.now_ms();
    let wanted = match query.status.as_deref() {
        None => None,
        Some(label) => Some(state_of_label(label).ok_or_else(|| {
            Failure::BadRequest(format!(
                "unknown status `{label}`: expected `fresh`, `expired`, `unknown` or `needs-reauth`"
            ))
        })?),
    };
    let page = Page {
        after: query.after,
        limit: query.limit.unwrap_or(100).clamp(1, MAX_LIMIT),
        connector: query.connector,
        status: (wanted == Some(InstanceState::NeedsReauth))
            .then(|| engine_service::NEEDS_REAUTH.to_owned()),
        expires_before_ms: (wanted == Some(InstanceState::Expired)).then_some(now_ms),
        ..Page::default()
    };
    let store = app.opened.plain();
    let listing = store.list(page).await?;
    let mut instances = Vec::new();
    for summary in listing.instances {
        let state = InstanceState::of(&summary, now_ms);
        if wanted.is_some_and(|wanted| wanted != state)
            || !crate::auth::sees(&**store, caller.as_deref(), &summary.id).await
        {
            continue;
        }
        instances.push(describe(&**store, &summary, state).await);
    }
    Ok(axum::Json(
        json!({"instances": instances, "next": listing.next}),
    ))
}

/// `GET /v1/instances/{id}`: the instance with every secret masked (by its connector's rule,
/// and every value stored encrypted), its status, expiry and last refresh.
#[cfg_attr(test, utoipa::path(
    get,
    path = "/v1/instances/{id}",
    tag = "instances",
    params(("id" = String, Path, description = "The instance")),
    responses(
        (status = 200, description = "The instance, secrets masked", body = crate::openapi::Instance),
        (status = 404, description = "No such instance (or another key's)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["instances:read"]))
))]
async fn show(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, Failure> {
    Ok(axum::Json(masked(&app, &id).await?))
}

/// The instance `id` as `GET /v1/instances/{id}` shows it.
async fn masked(app: &App, id: &str) -> Result<Value, Failure> {
    let read = app.stored(id).await?;
    let summary = summary_of(id, &read);
    // A connector that cannot be loaded leaves the rule for names alone.
    let connector = summary
        .connector
        .as_deref()
        .and_then(|name| app.connector(name).ok());
    let is_secret = engine_service::secret_rule(connector.as_deref());
    let mut values = engine_store::State::clone(&read.state);
    for (key, value) in &mut values {
        if !value.is_null() && (is_secret(key) || engine_stores_sql::is_encrypted(value)) {
            *value = "****".into();
        }
    }
    let state = InstanceState::of(&summary, app.clock.now_ms());
    let mut shown = describe(&**app.opened.plain(), &summary, state).await;
    shown["values"] = Value::Object(values);
    Ok(shown)
}

/// The body of `POST /v1/instances`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBody {
    /// The instance's id; generated when absent.
    id: Option<String>,
    /// The connector's name in the registry (its path, stem or key).
    connector: String,
    /// The configuration values, tokens included.
    #[serde(default)]
    values: serde_json::Map<String, Value>,
}

/// `POST /v1/instances`: stores a new instance of a connector of the registry, its values
/// checked against the connector's configuration (existing tokens may come with them); `201`
/// with the instance (masked) and its `Location`.
#[cfg_attr(test, utoipa::path(
    post,
    path = "/v1/instances",
    tag = "instances",
    request_body = crate::openapi::NewInstance,
    responses(
        (status = 201, description = "Created: the instance, secrets masked, and its `Location`", body = crate::openapi::Instance),
        (status = 400, description = "The body is not an instance", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The id is taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown connector, or a value that does not fit it", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["instances:write"]))
))]
async fn create(
    State(app): State<Arc<App>>,
    caller: Option<axum::Extension<crate::Caller>>,
    body: Bytes,
) -> Result<Response, Failure> {
    let body: NewBody = serde_json::from_slice(&body).map_err(|error| {
        Failure::BadRequest(format!(
            "the request body is not an instance (`{{\"connector\": NAME, \"values\": {{...}}}}`, `id` optional): {error}"
        ))
    })?;
    let connector = app.connector(&body.connector)?;
    engine_service::check_values(&connector, &body.values)?;
    let id = match body.id {
        Some(id) => id,
        None => generated_id()?,
    };
    let store = app.sealed(&body.connector, &connector);
    let mut values = body.values;
    // The caller's key owns the instance: it is written with it, in the same write.
    if let Some(axum::Extension(caller)) = &caller {
        engine_service::keys::set_owner(&mut values, caller.key());
    }
    let new = NewInstance {
        id: &id,
        connector_name: Some(&body.connector),
        connector: Some(&connector),
        values,
    };
    engine_service::import(&*store, new).await?;
    // The scheduler plans with the new instance's expiry.
    app.wake.notify_one();
    let shown = masked(&app, &id).await?;
    let location = format!("/v1/instances/{}", encode_segment(&id));
    let mut response = (StatusCode::CREATED, axum::Json(shown)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// A new instance id: `inst-` and 20 random hex digits.
fn generated_id() -> Result<String, Failure> {
    let mut bytes = [0_u8; 10];
    getrandom::fill(&mut bytes).map_err(|error| {
        Failure::Internal(format!("no random bytes for an instance id: {error}"))
    })?;
    Ok(bytes.iter().fold(String::from("inst-"), |mut id, byte| {
        use std::fmt::Write as _;
        let _ = write!(id, "{byte:02x}");
        id
    }))
}

/// `id` as one path segment of a URL.
fn encode_segment(id: &str) -> String {
    id.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    #[serde(default)]
    force: bool,
}

/// `DELETE /v1/instances/{id}?force=true`: runs the connector's `onDelete` resource on the
/// instance, then deletes it (`204`); a failed `onDelete`, or a connector that cannot be
/// loaded, keeps it unless `force`.
#[cfg_attr(test, utoipa::path(
    delete,
    path = "/v1/instances/{id}",
    tag = "instances",
    params(
        ("id" = String, Path, description = "The instance"),
        ("force" = Option<bool>, Query, description = "Delete even when `onDelete` fails or the connector cannot be loaded"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such instance", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The connector cannot be loaded to run `onDelete`: kept", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The vendor answered `onDelete` with an error: kept", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["instances:write"]))
))]
async fn remove(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    query: Result<Query<DeleteQuery>, QueryRejection>,
) -> Result<StatusCode, Failure> {
    let Query(query) = query.map_err(|rejection| Failure::BadRequest(rejection.body_text()))?;
    let read = app.stored(&id).await?;
    let name = engine_store::connector_of(&read.state).map(str::to_owned);
    let loaded = name.as_deref().and_then(|name| app.connector(name).ok());
    let target = match (&name, &loaded) {
        (_, Some(connector)) => DeleteConnector::Loaded(connector),
        (Some(name), None) => DeleteConnector::Unloadable { name },
        (None, None) => DeleteConnector::Unrecorded,
    };
    engine_service::delete(&app.opened, &id, target, &app.engine, query.force).await?;
    app.wake.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/instances/{id}/refresh`: refreshes the instance now, whatever its expiry, through
/// engine-service's refresh policy (history, rejection count).
#[cfg_attr(test, utoipa::path(
    post,
    path = "/v1/instances/{id}/refresh",
    tag = "instances",
    params(("id" = String, Path, description = "The instance")),
    responses(
        (status = 200, description = "The instance and the `outcome`: `refreshed`, `fresh` or `skipped`", body = crate::openapi::Instance),
        (status = 404, description = "No such instance", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No valid token: the instance needs re-authentication", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The instance is busy or cools down (`Retry-After`)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["instances:write"]))
))]
async fn refresh(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Response, Failure> {
    let read = app.stored(&id).await?;
    let summary = summary_of(&id, &read);
    let mut refresh = {
        let mut registry = app
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = Due {
            summary,
            ahead: FORCE_AHEAD,
        };
        let options = RefreshOptions {
            trigger: Trigger::Manual,
            ..app.options.clone()
        };
        Refresh::spawn(&app.opened, &mut registry, &app.engine, &options, vec![due])
    };
    let load_error = refresh.take_load_errors().into_iter().next();
    let refreshed = match refresh.next().await {
        Some(refreshed) => refreshed?,
        None => return Err(Failure::BadRequest("nothing to refresh".to_owned())),
    };
    app.metrics.refreshed(&refreshed, "manual");
    // The scheduler plans again with the new expiry; the refresh may have published an event.
    app.wake.notify_one();
    app.deliver.notify_one();
    let outcome = match refreshed.outcome {
        Outcome::Refreshed(_) => "refreshed",
        Outcome::Fresh => "fresh",
        Outcome::Skipped => "skipped",
        Outcome::NotProvisioned { .. } => {
            return Err(Failure::Run(
                RunErrorKind::NotAuthorized {
                    connector: refreshed.connector.unwrap_or_default(),
                }
                .into(),
            ));
        }
        Outcome::Rejected { error, .. } | Outcome::Transient(error) => {
            return Err(Failure::Run(error));
        }
        Outcome::Failed(failure) => {
            return Err(match failure {
                engine_service::Failure::Run(error) => Failure::Run(error),
                engine_service::Failure::Store(error) => Failure::Store(error),
                engine_service::Failure::NoConnector => Failure::NoConnector(id),
                _ => match load_error {
                    Some((_, error)) => Failure::from(error),
                    None => Failure::NoConnector(id),
                },
            });
        }
        _ => "failed",
    };
    let read = app.stored(&id).await?;
    let summary = summary_of(&id, &read);
    let state = InstanceState::of(&summary, app.clock.now_ms());
    let mut shown = describe(&**app.opened.plain(), &summary, state).await;
    shown["outcome"] = outcome.into();
    Ok(axum::Json(shown).into_response())
}

/// `GET /v1/instances/{id}/history`: the refreshes the instance's history keeps, oldest first
/// (token fingerprints, never tokens).
#[cfg_attr(test, utoipa::path(
    get,
    path = "/v1/instances/{id}/history",
    tag = "instances",
    params(("id" = String, Path, description = "The instance")),
    responses(
        (status = 200, description = "Its refresh history, oldest first (token fingerprints, never a token)", body = crate::openapi::History),
        (status = 404, description = "No such instance", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["instances:read"]))
))]
async fn history(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, Failure> {
    app.stored(&id).await?;
    let entries = app.opened.plain().history(&id).await?;
    Ok(axum::Json(json!({"entries": entries})))
}

/// `ANY /v1/instances/{id}/resources/{resource}`: runs the resource on the instance, as
/// `engine run` does (its token refreshed when due, once more on a 401, the history recorded),
/// with the query parameters and the JSON body as its inputs; answers with the vendor's status
/// and body, secrets masked.
#[cfg_attr(test, utoipa::path(
    method(get, post, put, patch, delete),
    path = "/v1/instances/{id}/resources/{resource}",
    tag = "resources",
    params(
        ("id" = String, Path, description = "The instance"),
        ("resource" = String, Path, description = "A resource name, a lifecycle type, or `METHOD:/path` percent-encoded"),
    ),
    request_body(content = Object, description = "The resource's JSON body, when it takes one", content_type = "application/json"),
    responses(
        (status = 200, description = "The vendor's status and body after `rootKey`, secrets masked; a vendor's error status comes back as it was, with its body and headers", body = Object),
        (status = 400, description = "An input the resource does not take, lacks or cannot convert", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such instance or resource", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No valid token: the instance needs re-authentication", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The vendor could not be reached", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The instance is busy or cools down (`Retry-After`)", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "The vendor did not answer in time", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["resources"]))
))]
pub(crate) async fn resource(
    app: &Arc<App>,
    id: &str,
    resource: &str,
    read: Result<Versioned, StoreError>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let response = match call(app, id, resource, read, request).await {
        Ok(response) => response,
        Err(failure) => failure.into_response(),
    };
    app.metrics
        .called(response.status().as_u16(), started.elapsed());
    response
}

/// A resource call: the instance's resource run with the request's query, headers and body as
/// its inputs. `read` is the instance as the key check read it, or the store's word that there
/// is none (answered `404`).
async fn call(
    app: &Arc<App>,
    id: &str,
    resource: &str,
    read: Result<Versioned, StoreError>,
    request: Request,
) -> Result<Response, Failure> {
    let (mut parts, body) = request.into_parts();
    // As `Query` reads them (`+` a space, percent-decoded), without its deserializer.
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    // The request's own headers, taken rather than copied; its body within the server's limit.
    let headers = std::mem::take(&mut parts.headers);
    // The key check's read: a call reads the store once before its run.
    let read = read?;
    let body = if body.size_hint().exact() == Some(0) {
        // Nothing to read (a `GET`, say).
        Bytes::new()
    } else {
        match Bytes::from_request(Request::from_parts(parts, body), app).await {
            Ok(body) => body,
            Err(rejection) => return Ok(rejection.into_response()),
        }
    };
    let Some(name) = engine_store::connector_of(&read.state) else {
        return Err(Failure::NoConnector(id.to_owned()));
    };
    let connector = app.connector(name)?;
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(serde_json::from_slice::<Value>(&body).map_err(|error| {
            Failure::BadRequest(format!("the request body is not JSON: {error}"))
        })?)
    };
    let inputs = Inputs {
        params,
        headers: forwarded(&headers),
        body,
        body_text: None,
        files: Vec::new(),
    };
    let store = app.calling(name, &connector);
    let request = RunRequest {
        connector: &connector,
        selector: resource,
        inputs: &inputs,
        instance: id,
    };
    let recorder = engine_service::Recorder::new(&NoObserver);
    let result = app.engine.run(&request, &*store, &recorder).await;
    let reports = recorder.take();
    let superseded = recorder.superseded();
    app.metrics.call_refreshed(name, &reports, superseded);
    // A history not written is no reason to fail the call.
    // A failed refresh of the call's own advances the scheduler's failure state machine.
    let policy = app.options.policy();
    let _warnings = engine_service::after_run(
        &*store,
        &request,
        &reports,
        superseded,
        result.as_ref().err(),
        Some((&policy, app.engine.now_ms())),
    )
    .await;
    if !reports.is_empty() {
        // A refresh of the call's own may have published an event.
        app.deliver.notify_one();
    }
    match result {
        Ok(output) => {
            let status = StatusCode::from_u16(output.status).unwrap_or(StatusCode::OK);
            // Only the headers that come back are looked at for secrets.
            let connection = output.headers(|name| name == header::CONNECTION);
            let returning = Returned::new(connection.get_all(header::CONNECTION).iter(), false);
            let headers = output.headers(|name| returning.keeps(name));
            let mut response = match output.body.json_bytes() {
                // The vendor's JSON as it came: nothing changed it, and it holds no secret
                // (`Body::masked`). Not read into values and written out again.
                Some(raw) => (
                    status,
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )],
                    raw.clone(),
                )
                    .into_response(),
                None => (status, axum::Json(output.body)).into_response(),
            };
            for (name, value) in &headers {
                response.headers_mut().append(name, value.clone());
            }
            Ok(response)
        }
        Err(error) => match error.kind() {
            RunErrorKind::VendorStatus {
                status,
                body,
                headers,
                ..
            } => Ok(vendor_answer(*status, body.clone(), headers)),
            _ => Err(Failure::Run(error)),
        },
    }
}

/// Request headers that are never forwarded to a vendor: the hop-by-hop ones (RFC 9110), those
/// that describe this request rather than the vendor's (`Host`, `Content-Length`, the body's
/// `Content-Type`, which the resource decides, `Accept-Encoding`, which the engine negotiates),
/// and the caller's credentials for this service (`Authorization`, `Cookie`).
const NOT_FORWARDED: &[HeaderName] = &[
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HOST,
    header::CONTENT_LENGTH,
    header::CONTENT_TYPE,
    header::ACCEPT_ENCODING,
    header::AUTHORIZATION,
    header::COOKIE,
    header::EXPECT,
];

/// The caller's headers that become the call's header inputs: all but [`NOT_FORWARDED`],
/// `Keep-Alive`, `Proxy-*` and those `Connection` names; values that are not text are dropped.
fn forwarded(headers: &HeaderMap) -> Vec<(String, String)> {
    let named = connection_names(headers.get_all(header::CONNECTION).iter());
    headers
        .iter()
        .filter(|(name, _)| {
            let text = name.as_str();
            !NOT_FORWARDED.contains(name)
                && text != "keep-alive"
                && !text.starts_with("proxy-")
                && !named.iter().any(|named| named == text)
        })
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect()
}

/// Which of the vendor's response headers come back to the caller: all but the hop-by-hop ones
/// (`Connection` and those it names, `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`,
/// `Transfer-Encoding`, `Upgrade`), those that describe the vendor's encoding of its body
/// (`Content-Length`, `Content-Encoding`: the answer's body is decoded and masked), this
/// server's own (`Date`, `Server`), and `Set-Cookie`: a vendor's cookie belongs to the engine's
/// session with it, not to the caller's with this service. `Content-Type` too when `body_typed`
/// is false: a successful answer's body is the engine's JSON after `rootKey`, whatever the
/// vendor sent.
struct Returned {
    /// The names the vendor's `Connection` header lists.
    named: Vec<String>,
    body_typed: bool,
}

impl Returned {
    /// For an answer whose `Connection` header has the values `connection`.
    fn new<'a>(connection: impl Iterator<Item = &'a HeaderValue>, body_typed: bool) -> Self {
        Self {
            named: connection_names(connection),
            body_typed,
        }
    }

    /// True when the header `name` comes back.
    fn keeps(&self, name: &HeaderName) -> bool {
        const DROPPED: [HeaderName; 10] = [
            header::CONNECTION,
            header::TE,
            header::TRAILER,
            header::TRANSFER_ENCODING,
            header::UPGRADE,
            header::CONTENT_LENGTH,
            header::CONTENT_ENCODING,
            header::DATE,
            header::SERVER,
            header::SET_COOKIE,
        ];
        let text = name.as_str();
        !DROPPED.contains(name)
            && (self.body_typed || *name != header::CONTENT_TYPE)
            && text != "keep-alive"
            && !text.starts_with("proxy-")
            && !self.named.iter().any(|named| named == text)
    }
}

/// The header names a `Connection` header's values list (hop-by-hop for this connection),
/// lowercase.
fn connection_names<'a>(values: impl Iterator<Item = &'a HeaderValue>) -> Vec<String> {
    values
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect()
}

/// The vendor's error answer, as it came (masked): its status, its headers ([`returned`], its
/// `Content-Type` included) and its body; a body without a type is JSON when it parses as JSON.
fn vendor_answer(status: u16, body: String, headers: &[(String, String)]) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let received: HeaderMap = headers
        .iter()
        .filter_map(|(name, value)| {
            Some((
                HeaderName::from_bytes(name.as_bytes()).ok()?,
                HeaderValue::from_str(value).ok()?,
            ))
        })
        .collect();
    let returning = Returned::new(received.get_all(header::CONNECTION).iter(), true);
    let returned: Vec<(&HeaderName, &HeaderValue)> = received
        .iter()
        .filter(|(name, _)| returning.keeps(name))
        .collect();
    let typed = returned
        .iter()
        .any(|(name, _)| *name == header::CONTENT_TYPE);
    let kind = if serde_json::from_str::<Value>(&body).is_ok() {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut response = (status, body).into_response();
    let answer = response.headers_mut();
    if typed {
        answer.remove(header::CONTENT_TYPE);
    } else {
        answer.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    }
    for (name, value) in returned {
        answer.append(name, value.clone());
    }
    response
}

/// The instance's summary from its stored state, as a listing gives it.
pub(crate) fn summary_of(id: &str, read: &Versioned) -> Summary {
    Summary::of(id.to_owned(), read.version, &read.state)
}

/// What every answer says of an instance: id, connector, status, expiry, last refresh,
/// version.
pub(crate) async fn describe(
    store: &dyn InstanceStore,
    summary: &Summary,
    state: InstanceState,
) -> Value {
    let last = engine_service::last_refresh(store, &summary.id).await;
    json!({
        "id": summary.id,
        "connector": summary.connector,
        "status": state.label(),
        "expires_at": summary.expires_at_ms.and_then(format_ms),
        "last_refresh": last.map(|last| json!({"outcome": last.outcome, "at": last.at})),
        "version": summary.version,
    })
}

/// The state a status filter names.
fn state_of_label(label: &str) -> Option<InstanceState> {
    let states: HashMap<&str, InstanceState> = [
        InstanceState::Fresh,
        InstanceState::Expired,
        InstanceState::Unknown,
        InstanceState::NeedsReauth,
    ]
    .into_iter()
    .map(|state| (state.label(), state))
    .collect();
    states.get(label).copied()
}

/// Epoch milliseconds as RFC 3339.
pub(crate) fn format_ms(ms: u64) -> Option<String> {
    let ms = i64::try_from(ms).ok()?;
    jiff::Timestamp::from_millisecond(ms)
        .ok()
        .map(|at| at.to_string())
}

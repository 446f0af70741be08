//! The HTTP API: health, instances (list, show, force a refresh, history) and resource calls,
//! JSON in and out, failures as problem details ([`crate::problem`]). Each handler calls
//! engine-service or the runtime and shapes the answer; what to decide is theirs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use engine_runtime::{Engine, Inputs, NoObserver, Pages, RunErrorKind, RunRequest};
use engine_service::{
    Due, InstanceState, Opened, Outcome, Refresh, RefreshOptions, Registry, Trigger,
};
use engine_spec::Connector;
use engine_store::{InstanceStore, Page, Summary, Versioned};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::problem::{Failure, Problem};

/// How far ahead a forced refresh looks: any token that expires at all is refreshed.
const FORCE_AHEAD: Duration = Duration::from_hours(24 * 365 * 100);

/// The largest page of `GET /v1/instances`.
const MAX_LIMIT: usize = 1000;

/// What every handler shares.
pub(crate) struct App {
    pub(crate) opened: Arc<Opened>,
    pub(crate) registry: Arc<Mutex<Registry>>,
    pub(crate) engine: Arc<Engine>,
    pub(crate) options: RefreshOptions,
    /// Wakes the scheduler after a change.
    pub(crate) wake: Arc<Notify>,
    /// The scheduler's time.
    pub(crate) clock: Arc<dyn engine_runtime::Clock>,
    /// What `/metrics` shows.
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
}

impl App {
    /// The connector `name` names.
    fn connector(&self, name: &str) -> Result<Arc<Connector>, Failure> {
        let mut registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(registry.get(name)?)
    }

    /// The instance `id` as stored (encrypted values stay so).
    async fn stored(&self, id: &str) -> Result<Versioned, Failure> {
        Ok(self.opened.plain().load(id).await?)
    }
}

/// The routes.
pub(crate) fn router(app: Arc<App>) -> Router {
    let count_calls =
        axum::middleware::from_fn_with_state(Arc::clone(&app), crate::metrics::count_calls);
    Router::new()
        .route("/", get(crate::page::page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::metrics))
        .route("/v1/instances", get(list))
        .route("/v1/instances/{id}", get(show))
        .route("/v1/instances/{id}/refresh", post(refresh))
        .route("/v1/instances/{id}/history", get(history))
        .route(
            "/v1/instances/{id}/resources/{resource}",
            any(resource).layer(count_calls),
        )
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
async fn list(
    State(app): State<Arc<App>>,
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
        if wanted.is_some_and(|wanted| wanted != state) {
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
async fn show(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, Failure> {
    let read = app.stored(&id).await?;
    let summary = summary_of(&id, &read);
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
    Ok(axum::Json(shown))
}

/// `POST /v1/instances/{id}/refresh`: refreshes the instance now, whatever its expiry, through
/// engine-service's refresh policy (history, rejection count).
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
    // The scheduler plans again with the new expiry.
    app.wake.notify_one();
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
async fn resource(
    State(app): State<Arc<App>>,
    Path((id, resource)): Path<(String, String)>,
    params: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Bytes,
) -> Result<Response, Failure> {
    let Query(params) = params.map_err(|rejection| Failure::BadRequest(rejection.body_text()))?;
    let read = app.stored(&id).await?;
    let Some(name) = engine_store::connector_of(&read.state) else {
        return Err(Failure::NoConnector(id));
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
        headers: Vec::new(),
        body,
        body_text: None,
        files: Vec::new(),
    };
    let store = app.opened.sealed(Some(&connector));
    let request = RunRequest {
        connector: &connector,
        selector: &resource,
        inputs: &inputs,
        instance: &id,
    };
    let recorder = engine_service::Recorder::new(&NoObserver);
    let result =
        engine_runtime::run_pages(&app.engine, &request, &*store, &recorder, Pages::UpTo(1)).await;
    let reports = recorder.take();
    app.metrics.call_refreshed(name, &reports);
    // A history not written is no reason to fail the call.
    let _warnings = engine_service::after_run(&*store, &request, &reports, result.is_ok()).await;
    match result {
        Ok(output) => {
            let status = StatusCode::from_u16(output.status).unwrap_or(StatusCode::OK);
            let body = output.pages.into_iter().next().unwrap_or(Value::Null);
            Ok((status, axum::Json(body)).into_response())
        }
        Err(error) => match error.kind() {
            RunErrorKind::VendorStatus { status, body, .. } => {
                Ok(vendor_answer(*status, body.clone()))
            }
            _ => Err(Failure::Run(error)),
        },
    }
}

/// The vendor's error answer, as it came (masked): JSON when it is.
fn vendor_answer(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let kind = if serde_json::from_str::<Value>(&body).is_ok() {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    response
}

/// The instance's summary from its stored state, as a listing gives it.
fn summary_of(id: &str, read: &Versioned) -> Summary {
    Summary::of(id.to_owned(), read.version, &read.state)
}

/// What every answer says of an instance: id, connector, status, expiry, last refresh,
/// version.
async fn describe(store: &dyn InstanceStore, summary: &Summary, state: InstanceState) -> Value {
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
fn format_ms(ms: u64) -> Option<String> {
    let ms = i64::try_from(ms).ok()?;
    jiff::Timestamp::from_millisecond(ms)
        .ok()
        .map(|at| at.to_string())
}

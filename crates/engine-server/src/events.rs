//! `GET /v1/events`: the events of the store ([`engine_service::events`]), oldest first, a page
//! at a time; a key sees the events of the instances it may see.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use engine_service::events::{EVENTS_NAMESPACE, EventType};
use engine_store::MAX_RECORDS_PAGE;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::problem::Failure;

/// The query of `GET /v1/events`.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(utoipa::IntoParams), into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    /// The previous page's `next`.
    after: Option<String>,
    /// Only the events published at or after this time (RFC 3339).
    since: Option<String>,
    /// At most this many events (default 100).
    limit: Option<usize>,
    /// Only this instance's.
    instance: Option<String>,
    /// Only events of this type.
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// `GET /v1/events?after=&since=&limit=&instance=&type=`: `{"events": [...], "next": CURSOR}`,
/// in the order they were published; `next` is the `after` of the next page (`null` at the end:
/// ask again with the last one later for newer events).
#[cfg_attr(test, utoipa::path(
    get,
    path = "/v1/events",
    operation_id = "list_events",
    tag = "events",
    params(EventsQuery),
    responses(
        (status = 200, description = "A page of events, oldest first", body = crate::openapi::EventList),
        (status = 400, description = "A wrong filter", body = crate::problem::Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["instances:read"]))
))]
pub(crate) async fn list(
    State(app): State<Arc<App>>,
    caller: Option<axum::Extension<crate::Caller>>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<axum::Json<Value>, Failure> {
    let Query(query) = query.map_err(|rejection| Failure::BadRequest(rejection.body_text()))?;
    if let Some(kind) = &query.kind
        && EventType::parse(kind).is_none()
    {
        return Err(Failure::BadRequest(format!(
            "unknown event type `{kind}`: expected `refresh.failed`, `instance.needs_reauth` or \
             `instance.recovered`"
        )));
    }
    // Ids start with the time they were published: a time is a cursor.
    let since = match &query.since {
        Some(text) => {
            let at: jiff::Timestamp = text.parse().map_err(|_| {
                Failure::BadRequest(format!(
                    "`since` is not an RFC 3339 time (`2026-12-06T16:00:00Z`): `{text}`"
                ))
            })?;
            let ms = u64::try_from(at.as_millisecond()).unwrap_or(0);
            Some(format!("evt_{ms:013}"))
        }
        None => None,
    };
    let after = match (query.after, since) {
        (Some(after), Some(since)) => Some(after.max(since)),
        (after, since) => after.or(since),
    };
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_RECORDS_PAGE);
    let records = app
        .opened
        .plain()
        .list_records(
            EVENTS_NAMESPACE,
            after.as_deref(),
            limit,
            app.clock.now_ms(),
        )
        .await?;
    let next = (records.len() == limit)
        .then(|| records.last().map(|record| record.id.clone()))
        .flatten();
    let key = caller.as_deref().map(crate::Caller::key);
    let events: Vec<Value> = records
        .into_iter()
        .filter(|record| {
            // An event of another key's instance is not listed, as the instance is not.
            let owner = record.value["owner"].as_str();
            key.is_none_or(|key| owner.is_none_or(|owner| owner == key.id))
        })
        .filter(|record| {
            let payload = &record.value["payload"];
            query
                .instance
                .as_deref()
                .is_none_or(|id| payload["data"]["instance"].as_str() == Some(id))
                && query
                    .kind
                    .as_deref()
                    .is_none_or(|kind| payload["type"].as_str() == Some(kind))
        })
        .map(|record| {
            let payload = &record.value["payload"];
            let delivery = match &record.value["delivery"] {
                Value::Null => json!({"status": "pending"}),
                delivery => delivery.clone(),
            };
            json!({
                "id": record.id,
                "type": payload["type"],
                "timestamp": payload["timestamp"],
                "data": payload["data"],
                "delivery": delivery,
            })
        })
        .collect();
    Ok(axum::Json(json!({"events": events, "next": next})))
}

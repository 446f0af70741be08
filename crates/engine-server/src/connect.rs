//! Signing instances in through the service: `POST /v1/instances/{id}/authorize` answers the
//! vendor's authorization URL, and the vendor sends the browser back to `GET
//! /v1/oauth/callback`, on any process of the store, which exchanges the code. What a sign-in
//! decides (which connectors sign in so, the flow's record, the exchange, the history,
//! `needs-reauth`) is engine-service's ([`engine_service::authorize`]).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use engine_runtime::NoObserver;
use engine_service::InstanceState;
use engine_service::authorize::{Begun, FlowKeys, Start};
use serde::Serialize;
use serde_json::Value;

use crate::app::App;
use crate::problem::Failure;

/// The path of the callback, under the service's public URL.
pub(crate) const CALLBACK_PATH: &str = "/v1/oauth/callback";

/// What the sign-in routes share: the handlers' state, the keys verifiers are derived under,
/// and the redirect URI the vendor sees.
pub(crate) struct Connect {
    pub(crate) app: Arc<App>,
    pub(crate) keys: FlowKeys,
    pub(crate) redirect_uri: String,
}

/// The routes.
pub(crate) fn router(connect: Arc<Connect>) -> Router {
    Router::new()
        .route("/v1/instances/{id}/authorize", post(authorize))
        .route(CALLBACK_PATH, get(callback))
        .with_state(connect)
}

/// The answer to `POST /v1/instances/{id}/authorize`.
#[derive(Debug, Serialize)]
#[cfg_attr(test, derive(utoipa::ToSchema))]
#[expect(
    clippy::struct_field_names,
    reason = "`authorization_url` is the field's name in the JSON answer"
)]
pub(crate) struct Authorization {
    /// The vendor's authorization URL: send the person there.
    authorization_url: String,
    /// The service's callback the vendor sends the browser back to (`--public-url` and
    /// `/v1/oauth/callback`).
    redirect_uri: String,
    /// Until when the callback is accepted (RFC 3339): 10 minutes.
    expires_at: Option<String>,
}

/// Starts signing the instance in through a browser (OAuth2's authorization code grant, with
/// PKCE S256 when the connector enables it; OAuth 1.0a, with a request token the vendor gives):
/// answers the vendor's authorization URL, to open in a browser. The flow waits 10 minutes for
/// its callback, once.
#[cfg_attr(test, utoipa::path(
    post,
    path = "/v1/instances/{id}/authorize",
    tag = "sign-in",
    params(("id" = String, Path, description = "The instance")),
    responses(
        (status = 200, description = "The authorization URL", body = Authorization),
        (status = 404, description = "No such instance", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "The connector does not sign in through a browser, or a key of its sign-in is missing", body = crate::problem::Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = ["instances:write"]))
))]
pub(crate) async fn authorize(
    State(connect): State<Arc<Connect>>,
    Path(id): Path<String>,
) -> Result<axum::Json<Authorization>, Failure> {
    let app = &connect.app;
    let read = app.stored(&id).await?;
    let Some(name) = engine_store::connector_of(&read.state) else {
        return Err(Failure::NoConnector(id));
    };
    let connector = app.connector(name)?;
    let store = app.opened.sealed(Some(&connector));
    let start = Start {
        engine: &app.engine,
        connector: &connector,
        connector_name: name,
        store: &*store,
        instance: &id,
        redirect_uri: &connect.redirect_uri,
        now_ms: app.clock.now_ms(),
        observer: &NoObserver,
    };
    let Begun {
        url,
        redirect_uri,
        expires_at_ms,
    } = engine_service::authorize::begin(&start, &connect.keys).await?;
    Ok(axum::Json(Authorization {
        authorization_url: url,
        redirect_uri,
        expires_at: crate::api::format_ms(expires_at_ms),
    }))
}

/// The vendor's callback: the browser comes back with `code` and `state` (or `error`); from an
/// OAuth 1.0a vendor, with `oauth_token` and `oauth_verifier`. The `state` (the `oauth_token`)
/// is the credential (no API key): unknown, expired or used already, it is refused before
/// anything is sent to the vendor. Otherwise the code (the verifier) is exchanged, the tokens
/// stored, the instance provisioned when it never was, its `needs-reauth` mark cleared, the
/// exchange recorded in its history.
#[cfg_attr(test, utoipa::path(
    get,
    path = "/v1/oauth/callback",
    tag = "sign-in",
    params(
        ("state" = Option<String>, Query, description = "The flow's state, as the vendor sends it back (OAuth2)"),
        ("code" = Option<String>, Query, description = "The authorization code (OAuth2)"),
        ("oauth_token" = Option<String>, Query, description = "The request token the person approved (OAuth 1.0a)"),
        ("oauth_verifier" = Option<String>, Query, description = "The verifier that goes with it (OAuth 1.0a)"),
        ("denied" = Option<String>, Query, description = "The request token the person declined (OAuth 1.0a)"),
        ("error" = Option<String>, Query, description = "The vendor's error, when the person declined"),
        ("error_description" = Option<String>, Query, description = "The vendor's words for it"),
    ),
    responses(
        (status = 200, description = "Signed in: the instance", body = crate::openapi::Instance),
        (status = 400, description = "Unknown, expired or reused state; no code; the vendor's error", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The vendor refused the code", body = crate::problem::Problem, content_type = "application/problem+json"),
    ),
    security(())
))]
pub(crate) async fn callback(
    State(connect): State<Arc<Connect>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<axum::Json<Value>, Failure> {
    let Query(parameters) =
        query.map_err(|rejection| Failure::BadRequest(rejection.body_text()))?;
    let app = &connect.app;
    let plain = &**app.opened.plain();
    let now_ms = app.clock.now_ms();
    // OAuth 1.0a: the request token comes back instead of a state, with the verifier; a person
    // who declines comes back with `denied=TOKEN` (Twitter's, Trello's) or `oauth_problem`.
    let denied = parameters.get("denied");
    let oauth1 = parameters
        .get("oauth_token")
        .or(denied)
        .filter(|_| !parameters.contains_key("state"));
    let (pending, code, what) = if let Some(token) = oauth1 {
        (
            engine_service::authorize::take_oauth1(plain, &connect.keys, token, now_ms).await?,
            parameters.get("oauth_verifier"),
            "oauth_verifier",
        )
    } else {
        let state = parameters.get("state").map_or("", String::as_str);
        (
            engine_service::authorize::take(plain, &connect.keys, state, now_ms).await?,
            parameters.get("code"),
            "code",
        )
    };
    let id = pending.instance;
    let error = parameters
        .get("error")
        .or_else(|| parameters.get("oauth_problem"))
        .map(String::as_str)
        .or(denied.map(|_| "denied"));
    if let Some(error) = error {
        let message = engine_service::authorize::declined_message(
            error,
            parameters.get("error_description").map(String::as_str),
        );
        return Err(Failure::Declined { id, message });
    }
    let Some(code) = code else {
        return Err(Failure::BadRequest(format!(
            "the callback carries no `{what}`: start the sign-in again"
        )));
    };
    let read = app.stored(&id).await?;
    let Some(name) = engine_store::connector_of(&read.state) else {
        return Err(Failure::NoConnector(id));
    };
    let connector = app.connector(name)?;
    let store = app.opened.sealed(Some(&connector));
    // A history or a mark not written is no reason to fail the sign-in.
    let _warnings = engine_service::authorize::complete(
        &app.engine,
        &connector,
        &*store,
        &id,
        &NoObserver,
        &pending.request,
        code,
    )
    .await?;
    // The scheduler plans with the new token's expiry.
    app.wake.notify_one();
    let read = app.stored(&id).await?;
    let summary = crate::api::summary_of(&id, &read);
    let state = InstanceState::of(&summary, app.clock.now_ms());
    Ok(axum::Json(
        crate::api::describe(&**app.opened.plain(), &summary, state).await,
    ))
}

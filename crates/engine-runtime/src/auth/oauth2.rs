//! The built-in OAuth2 client (RFC 6749): client credentials, password and authorization code
//! grants, refresh with rotation, and the token response contract.
//!
//! The element.json keys drive it: `oauth.api.key`, `oauth.api.secret`, `oauth.token.url`,
//! `oauth.token.refresh_url` (defaults to the token URL), `oauth.scope`, `oauth.basic.header`
//! (client authentication by HTTP Basic when `true`, else in the form). The engine maintains
//! `oauth.user.token`, `oauth.user.refresh_token`, `oauth.user.refresh_time` (epoch ms) and
//! `oauth.user.refresh_interval` (seconds). A resource of type `oauthOnTokenRefresh` replaces
//! the refresh request; `onRefresh` still runs after a refresh when present.

use base64::Engine as _;
use engine_spec::kinds::{Grant, RefreshIn, ResourceType};
use engine_store::State;
use serde_json::Value;

use crate::Inputs;
use crate::configuration::Configuration;
use crate::engine::Run;
use crate::extract::parse_seconds;
use crate::request::{PreparedRequest, RequestBody, text_of};
use crate::run_error::{MissingKey, RunError, RunErrorKind};

/// Refreshes (or first obtains) the token, saving the contract's values into the run.
pub(crate) async fn obtain(run: &mut Run<'_>) -> Result<(), RunError> {
    let connector = run.connector;
    let holds_refresh_token = super::next_grant(run).is_none();
    if holds_refresh_token
        && let Some(resource) = connector.lifecycle(ResourceType::OauthOnTokenRefresh)
    {
        let (response, extracted) = run.execute_lifecycle(resource, &Inputs::default()).await?;
        run.save(&extracted.saved);
        let saved = apply_token_response(run, &response.body, "oauthOnTokenRefresh", true)?;
        run.save(&saved);
    } else {
        let request = next_token_request(run)?;
        let step = step_of(&request);
        let response = run.send_lifecycle(&request, &step).await?;
        let saved = apply_token_response(run, &response.body, &step, false)?;
        run.save(&saved);
    }
    if let Some(on_refresh) = connector.lifecycle(ResourceType::OnRefresh) {
        let (_, extracted) = run
            .execute_lifecycle(on_refresh, &Inputs::default())
            .await?;
        run.save(&extracted.saved);
    }
    Ok(())
}

fn step_of(request: &PreparedRequest) -> String {
    format!("oauth2 {}", request.resource)
}

/// The token request the next refresh sends: `refresh_token` when one is held, else the
/// connector's grant (`client_credentials` or `password`).
///
/// Fails when the token URL or client credentials are missing, or when the grant is
/// `authorization_code` and no refresh token is held (a person must sign in first).
pub(crate) fn next_token_request(run: &Run<'_>) -> Result<PreparedRequest, RunError> {
    let configuration = run.configuration();
    let value = |key: &str| configuration.get(key).and_then(text_of);
    let mut fields: Vec<(String, String)> = Vec::new();
    let grant = match super::next_grant(run) {
        None => {
            fields.push(("grant_type".into(), "refresh_token".into()));
            fields.push((
                "refresh_token".into(),
                value("oauth.user.refresh_token").unwrap_or_default(),
            ));
            "refresh_token"
        }
        Some(Grant::ClientCredentials) => {
            fields.push(("grant_type".into(), "client_credentials".into()));
            if let Some(scope) = value("oauth.scope") {
                fields.push(("scope".into(), scope));
            }
            "client_credentials"
        }
        Some(Grant::Password) => {
            fields.push(("grant_type".into(), "password".into()));
            for key in ["username", "password"] {
                let Some(found) = value(key) else {
                    return Err(missing(key, "the resource owner's credentials"));
                };
                fields.push((key.into(), found));
            }
            if let Some(scope) = value("oauth.scope") {
                fields.push(("scope".into(), scope));
            }
            "password"
        }
        Some(Grant::AuthorizationCode) => {
            return Err(RunErrorKind::NotAuthorized {
                connector: run.connector.name().to_owned(),
            }
            .into());
        }
    };
    let url_key = if grant == "refresh_token" && value("oauth.token.refresh_url").is_some() {
        "oauth.token.refresh_url"
    } else {
        "oauth.token.url"
    };
    token_request(run, configuration, url_key, grant, fields)
}

/// Builds a token endpoint request: client authentication by Basic header when
/// `oauth.basic.header` is true (RFC 6749 2.3.1), else `client_id`/`client_secret` fields; a
/// refresh puts its fields in the query string when `authentication.refreshIn` is `query`.
pub(crate) fn token_request(
    run: &Run<'_>,
    configuration: &Configuration<'_>,
    url_key: &str,
    grant: &str,
    mut fields: Vec<(String, String)>,
) -> Result<PreparedRequest, RunError> {
    let value = |key: &str| configuration.get(key).and_then(text_of);
    let Some(url) = value(url_key).or_else(|| value("oauth.token.url")) else {
        return Err(missing("oauth.token.url", "the OAuth2 token endpoint"));
    };
    let Some(client_id) = value("oauth.api.key") else {
        return Err(missing("oauth.api.key", "the OAuth2 client id"));
    };
    let client_secret = value("oauth.api.secret");
    let mut headers = vec![("Accept".to_owned(), "application/json".to_owned())];
    let basic = value("oauth.basic.header").is_some_and(|flag| flag == "true");
    if basic {
        let encode = |text: &str| engine_spec::template::percent_encode(text).into_owned();
        let credentials = format!(
            "{}:{}",
            encode(&client_id),
            encode(client_secret.as_deref().unwrap_or_default())
        );
        headers.push((
            "Authorization".into(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(credentials)
            ),
        ));
    } else {
        fields.push(("client_id".into(), client_id));
        if let Some(secret) = client_secret {
            fields.push(("client_secret".into(), secret));
        }
    }
    let mut url = url::Url::parse(&url).map_err(|error| RunErrorKind::InvalidUrl {
        url: run.redactor.redact(&url),
        message: error.to_string(),
    })?;
    let in_query =
        grant == "refresh_token" && run.connector.authentication().refresh_in() == RefreshIn::Query;
    let body = if in_query {
        url.query_pairs_mut().extend_pairs(&fields);
        RequestBody::Empty
    } else {
        RequestBody::Form(fields)
    };
    Ok(PreparedRequest {
        resource: grant.to_owned(),
        method: "POST".into(),
        url,
        headers,
        body,
    })
}

/// A missing-configuration error for one key.
pub(crate) fn missing(key: &str, description: &str) -> RunError {
    RunErrorKind::MissingConfiguration {
        missing: vec![MissingKey {
            key: key.into(),
            description: Some(description.into()),
        }],
    }
    .into()
}

/// Maps a token response onto the contract (`access_token`, `token_type`, `expires_in`,
/// `refresh_token`, `scope`) and returns the configuration values to save. A response without
/// `refresh_token` keeps the held one. The lifetime comes from `expires_in` (number or string),
/// else `expires_at`/`expires_on` (epoch seconds or ISO 8601), else the JWT's `exp`, else the
/// connector's `session.defaultExpiresIn`.
///
/// Fails when there is no `access_token` (unless `lenient`: a resource that replaces the
/// refresh may save the token itself through its parameters).
pub(crate) fn apply_token_response(
    run: &Run<'_>,
    body: &Value,
    step: &str,
    lenient: bool,
) -> Result<State, RunError> {
    let mut saved = State::new();
    let now_ms = run.now_ms();
    let field = |name: &str| body.get(name).filter(|value| !value.is_null());
    let token = field("access_token").and_then(text_of);
    let Some(token) = token else {
        if lenient {
            return Ok(saved);
        }
        return Err(RunErrorKind::NoToken {
            step: step.to_owned(),
            field: "access_token".into(),
        }
        .into());
    };
    let lifetime = field("expires_in")
        .and_then(parse_seconds)
        .or_else(|| {
            field("expires_at")
                .or_else(|| field("expires_on"))
                .and_then(|value| seconds_until(value, now_ms))
        })
        .or_else(|| jwt_seconds_until(&token, now_ms))
        .unwrap_or_else(|| run.connector.session().default_expires_in().as_secs());
    saved.insert("oauth.user.token".into(), Value::String(token));
    if let Some(refresh_token) = field("refresh_token").and_then(text_of) {
        saved.insert(
            "oauth.user.refresh_token".into(),
            Value::String(refresh_token),
        );
    }
    if let Some(token_type) = field("token_type").and_then(text_of) {
        saved.insert("oauth.user.token_type".into(), Value::String(token_type));
    }
    saved.insert(
        "oauth.user.refresh_interval".into(),
        Value::String(lifetime.to_string()),
    );
    saved.insert(
        "oauth.user.refresh_time".into(),
        Value::String(now_ms.to_string()),
    );
    Ok(saved)
}

/// Seconds from `now_ms` until an absolute expiry: epoch seconds (or ms), or ISO 8601.
fn seconds_until(value: &Value, now_ms: u64) -> Option<u64> {
    let at_ms = match value {
        Value::String(text) if text.contains('-') => {
            let timestamp: jiff::Timestamp = text.trim().parse().ok()?;
            u64::try_from(timestamp.as_millisecond()).ok()?
        }
        other => {
            let number = parse_seconds(other)?;
            if number < 100_000_000_000 {
                number * 1000
            } else {
                number
            }
        }
    };
    Some(at_ms.saturating_sub(now_ms) / 1000)
}

/// Seconds until a JWT access token's `exp`, when the token is a JWT.
fn jwt_seconds_until(token: &str, now_ms: u64) -> Option<u64> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    seconds_until(claims.get("exp")?, now_ms)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn absolute_expiry_forms() {
        let now = 1_700_000_000_000;
        assert_eq!(seconds_until(&json!(1_700_000_060), now), Some(60));
        assert_eq!(seconds_until(&json!("1700000060"), now), Some(60));
        assert_eq!(seconds_until(&json!("2023-11-14T22:14:20Z"), now), Some(60));
    }

    #[test]
    fn jwt_exp_is_read() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"x","exp":1700000120}"#);
        let token = format!("eyJhbGciOiJub25lIn0.{payload}.sig");
        assert_eq!(jwt_seconds_until(&token, 1_700_000_000_000), Some(120));
        assert_eq!(jwt_seconds_until("opaque", 1_700_000_000_000), None);
    }
}

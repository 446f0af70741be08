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
use engine_spec::Connector;
use engine_spec::kinds::{Grant as ConnectorGrant, RefreshIn, ResourceType};
use engine_spec::template::{TemplateContext, Values};
use engine_store::State;
use serde_json::Value;

use super::custom::resource_step;
use super::lifetime::{self, LifetimeProblem, MAX_LIFETIME_SECONDS};
use super::{Absorbed, Step};
use crate::Inputs;
use crate::prepared_request::{PreparedRequest, RequestBody, SecretSlot};
use crate::redact::Redactor;
use crate::run_error::{MissingKey, RunError, RunErrorKind};
use crate::value::{parse_seconds, text_of};

/// The OAuth2 grant of a token request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// `refresh_token`, with the held refresh token.
    RefreshToken,
    /// `client_credentials`.
    ClientCredentials,
    /// `password`, with the instance's `username` and `password`.
    Password,
    /// `authorization_code`: the code the browser brought back.
    AuthorizationCode {
        /// The code.
        code: String,
        /// The redirect URI the code was issued for.
        redirect_uri: String,
        /// The PKCE verifier, when the flow used PKCE.
        verifier: Option<String>,
    },
}

impl Grant {
    /// The `grant_type` value.
    pub fn name(&self) -> &'static str {
        match self {
            Self::RefreshToken => "refresh_token",
            Self::ClientCredentials => "client_credentials",
            Self::Password => "password",
            Self::AuthorizationCode { .. } => "authorization_code",
        }
    }
}

/// True when the instance holds a refresh token: the next token request refreshes.
fn holds_refresh_token(configuration: &dyn Values) -> bool {
    configuration
        .value("oauth.user.refresh_token")
        .and_then(text_of)
        .is_some()
}

/// The steps that refresh (or first obtain) the token: the `oauthOnTokenRefresh` resource when
/// the connector replaces the refresh and a refresh token is held, else the token request of
/// the next grant (the connector's `oauth2Password` resource for the password grant, when it has
/// one); then, when a token was held (a refresh, not the first token), the connector's
/// `onRefresh` resource, when it has one.
///
/// Fails when the grant is `authorization_code` and no refresh token is held (a person must
/// sign in first).
pub(crate) fn steps<'a>(
    connector: &'a Connector,
    configuration: &dyn Values,
) -> Result<Vec<Step<'a>>, RunError> {
    let mut steps = Vec::new();
    let held = holds_refresh_token(configuration);
    let own = |resource| {
        offering(
            resource_step(connector, resource, Inputs::default()),
            offered(resource.kind(), configuration, &[]),
        )
    };
    match connector.lifecycle(ResourceType::OauthOnTokenRefresh) {
        Some(resource) if held => steps.push(own(resource)),
        _ => match next_grant(connector, configuration)? {
            // The export's own password token request, as the platform ran it.
            Grant::Password
                if let Some(resource) = connector.lifecycle(ResourceType::Oauth2Password) =>
            {
                steps.push(own(resource));
            }
            grant => steps.push(Step::Token(grant)),
        },
    }
    // A refresh, not the first token: that one is followed by provisioning.
    let refreshes = configuration
        .value("oauth.user.token")
        .and_then(text_of)
        .is_some();
    if refreshes && let Some(on_refresh) = connector.lifecycle(ResourceType::OnRefresh) {
        steps.push(resource_step(connector, on_refresh, Inputs::default()));
    }
    Ok(steps)
}

/// What the platform gave an OAuth2 resource of `kind` besides its declared inputs (its hooks
/// read them in `request_parameters`): the client's `client_id` and `client_secret`, what its
/// flow sends (`grant_type`, `refresh_token`, `username`...), then `extra` (`code`, `state`),
/// which replaces a field of the same name; empty values are left out.
pub(crate) fn offered(
    kind: ResourceType,
    configuration: &dyn Values,
    extra: &[(&str, String)],
) -> Vec<(String, String)> {
    let value = |key: &str| {
        configuration
            .value(key)
            .and_then(text_of)
            .unwrap_or_default()
    };
    let mut fields = vec![
        ("client_id", value("oauth.api.key")),
        ("client_secret", value("oauth.api.secret")),
    ];
    match kind {
        ResourceType::OauthOnAuthorizeUrl => fields.extend([
            ("response_type", "code".to_owned()),
            ("redirect_uri", value("oauth.callback.url")),
            ("scope", value("oauth.scope")),
        ]),
        ResourceType::OauthOnTokenExchange => fields.extend([
            ("grant_type", "authorization_code".to_owned()),
            ("redirect_uri", value("oauth.callback.url")),
        ]),
        ResourceType::OauthOnTokenRefresh => fields.extend([
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", value("oauth.user.refresh_token")),
        ]),
        ResourceType::Oauth2Password => fields.extend([
            ("grant_type", "password".to_owned()),
            ("username", value("username")),
            ("password", value("password")),
            ("scope", value("oauth.scope")),
        ]),
        _ => return Vec::new(),
    }
    for (name, given) in extra {
        fields.retain(|(known, _)| known != name);
        fields.push((name, given.clone()));
    }
    fields
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
}

/// `step` with `offered` parameters ([`offered`]).
pub(crate) fn offering(mut step: Step<'_>, parameters: Vec<(String, String)>) -> Step<'_> {
    if let Step::Resource { offered, .. } = &mut step {
        *offered = parameters;
    }
    step
}

/// The grant the next token request uses: `refresh_token` when one is held, else the
/// connector's grant.
///
/// Fails for `authorization_code` without a refresh token.
pub(crate) fn next_grant(
    connector: &Connector,
    configuration: &dyn Values,
) -> Result<Grant, RunError> {
    if holds_refresh_token(configuration) {
        return Ok(Grant::RefreshToken);
    }
    match connector.authentication().grant() {
        ConnectorGrant::ClientCredentials => Ok(Grant::ClientCredentials),
        ConnectorGrant::Password => Ok(Grant::Password),
        ConnectorGrant::AuthorizationCode => Err(RunErrorKind::NotAuthorized {
            connector: connector.name().to_owned(),
        }
        .into()),
    }
}

/// Builds the token endpoint request of `grant`: client authentication by Basic header when
/// `oauth.basic.header` is true (RFC 6749 2.3.1), else `client_id`/`client_secret` fields; a
/// refresh goes to `oauth.token.refresh_url` when set, and puts its fields in the query string
/// when `authentication.refreshIn` is `query`.
///
/// Fails when the token URL, the client id or the password grant's credentials are missing, or
/// the URL is invalid.
pub(crate) fn token_request(
    connector: &Connector,
    configuration: &dyn Values,
    grant: &Grant,
    redactor: &Redactor,
) -> Result<PreparedRequest, RunError> {
    let value = |key: &str| configuration.value(key).and_then(text_of);
    let mut fields: Vec<(String, String)> = vec![("grant_type".into(), grant.name().into())];
    match grant {
        Grant::RefreshToken => fields.push((
            "refresh_token".into(),
            value("oauth.user.refresh_token").unwrap_or_default(),
        )),
        Grant::ClientCredentials => {
            if let Some(scope) = value("oauth.scope") {
                fields.push(("scope".into(), scope));
            }
        }
        Grant::Password => {
            for key in ["username", "password"] {
                let Some(found) = value(key) else {
                    return Err(missing(key, "the resource owner's credentials"));
                };
                fields.push((key.into(), found));
            }
            if let Some(scope) = value("oauth.scope") {
                fields.push(("scope".into(), scope));
            }
        }
        Grant::AuthorizationCode {
            code,
            redirect_uri,
            verifier,
        } => {
            fields.push(("code".into(), code.clone()));
            fields.push(("redirect_uri".into(), redirect_uri.clone()));
            if let Some(verifier) = verifier {
                fields.push(("code_verifier".into(), verifier.clone()));
            }
        }
    }
    let refresh = *grant == Grant::RefreshToken;
    let url = refresh
        .then(|| value("oauth.token.refresh_url"))
        .flatten()
        .or_else(|| value("oauth.token.url"));
    let Some(url) = url else {
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
    // A global header in the reversed form (zoom's `Authorization: Basic CE.b64(id:secret)`,
    // "the OAuth header") goes on the token calls, replacing the engine's own.
    for parameter in connector
        .global_parameters()
        .iter()
        .filter(|parameter| parameter.is_reversed_header())
    {
        let Some(template) = parameter.template() else {
            continue;
        };
        let Ok(rendered) = template.render(&TemplateContext::new(configuration, None)) else {
            continue;
        };
        let name = parameter.vendor_name();
        headers.retain(|(known, _)| !known.eq_ignore_ascii_case(name));
        headers.push((name.to_owned(), rendered));
    }
    let mut url = url::Url::parse(&url).map_err(|error| RunErrorKind::InvalidUrl {
        url: redactor.redact(&url),
        message: error.to_string(),
    })?;
    let key = if refresh && value("oauth.token.refresh_url").is_some() {
        "`oauth.token.refresh_url`"
    } else {
        "`oauth.token.url`"
    };
    crate::request::check_scheme(&url, key, redactor)?;
    let in_query = refresh && connector.authentication().refresh_in() == RefreshIn::Query;
    // Every credential of a token request, masked by place in `--dry-run`.
    let mut secrets: Vec<SecretSlot> = headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("authorization"))
        .map(|(name, value)| SecretSlot::header(name, value, value))
        .collect();
    for (name, _) in &fields {
        if matches!(
            name.as_str(),
            "refresh_token" | "password" | "client_secret" | "code" | "code_verifier"
        ) {
            secrets.push(if in_query {
                SecretSlot::Query(name.clone())
            } else {
                SecretSlot::Form(name.clone())
            });
        }
    }
    let body = if in_query {
        url.query_pairs_mut().extend_pairs(&fields);
        RequestBody::Empty
    } else {
        RequestBody::Form(fields)
    };
    Ok(PreparedRequest {
        resource: grant.name().into(),
        method: "POST".into(),
        url,
        headers,
        body,
        lifecycle: true,
        secrets,
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
/// `refresh_token`, `scope`) and returns the configuration values to save. Rotation: a
/// `refresh_token` in the answer replaces the held one; an answer without one keeps it (it is
/// not in the returned state). The lifetime comes from `expires_in` (number or string), else
/// `expires_at`/`expires_on` (epoch seconds or ISO 8601), else the JWT's `exp`, else the
/// connector's `session.defaultExpiresIn`; an `expires_in` that is no number of seconds is
/// skipped, and a lifetime longer than a year is a year (`auth/lifetime.rs`), both reported in
/// [`Absorbed::adjusted`].
///
/// Fails when there is no `access_token` (unless `lenient`: a resource that replaces the
/// refresh may save the token itself through its parameters).
pub(crate) fn token_state(
    connector: &Connector,
    body: &Value,
    step: &str,
    lenient: bool,
    now_ms: u64,
) -> Result<Absorbed, RunError> {
    let mut saved = State::new();
    let field = |name: &str| body.get(name).filter(|value| !value.is_null());
    let token = field("access_token").and_then(text_of);
    let Some(token) = token else {
        if lenient {
            return Ok(Absorbed::default());
        }
        return Err(RunErrorKind::NoToken {
            step: step.to_owned(),
            field: "access_token".into(),
            body: String::new(),
        }
        .into());
    };
    // The lifetime, where it came from, and what that said.
    let expires_in = field("expires_in");
    let expires_at = field("expires_at").or_else(|| field("expires_on"));
    let (lifetime, source, sent) = if let Some(seconds) = expires_in.and_then(parse_seconds) {
        (seconds, "expires_in", expires_in.cloned())
    } else if let Some(seconds) = expires_at.and_then(|value| seconds_until(value, now_ms)) {
        (seconds, "expires_at", expires_at.cloned())
    } else if let Some(seconds) = jwt_seconds_until(&token, now_ms) {
        (seconds, "exp", Some(Value::from(seconds)))
    } else {
        let seconds = connector.session().default_expires_in().as_secs();
        (
            seconds,
            "session.defaultExpiresIn",
            Some(Value::from(seconds)),
        )
    };
    let capped = lifetime.min(MAX_LIFETIME_SECONDS);
    let adjusted = match expires_in.filter(|value| parse_seconds(value).is_none()) {
        Some(unusable) => Some(lifetime::adjusted(
            "expires_in",
            unusable,
            capped,
            LifetimeProblem::Unusable,
        )),
        None if capped < lifetime => Some(lifetime::adjusted(
            source,
            &sent.unwrap_or(Value::Null),
            capped,
            LifetimeProblem::TooLong,
        )),
        None => None,
    };
    let lifetime = capped;
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
    Ok(Absorbed {
        state: saved,
        adjusted,
    })
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

    fn oauth2(extra: &str) -> Connector {
        super::super::tests::connector(&format!(
            r#"{{"authentication": {{"type": "oauth2", "grant": "client_credentials"{extra}}},
                "configuration": [{{"key": "oauth.token.url", "defaultValue": "https://idp.example/token"}},
                                  {{"key": "oauth.token.refresh_url"}}],
                "resources": [{{"name": "me", "type": "api", "vendorPath": "/me"}}]}}"#
        ))
    }

    use super::super::tests::state;

    #[test]
    fn the_next_grant_refreshes_when_a_refresh_token_is_held() {
        let connector = oauth2("");
        let none = State::new();
        assert_eq!(
            next_grant(&connector, &none).unwrap(),
            Grant::ClientCredentials
        );
        let held = state(json!({"oauth.user.refresh_token": "r1"}));
        assert_eq!(next_grant(&connector, &held).unwrap(), Grant::RefreshToken);
        let code = super::super::tests::connector(
            r#"{"authentication": {"type": "oauth2", "grant": "authorization_code"},
                "configuration": [{"key": "oauth.token.url", "required": true}],
                "resources": [{"name": "me", "type": "api", "vendorPath": "/me"}]}"#,
        );
        let error = next_grant(&code, &none).unwrap_err();
        assert!(
            matches!(error.kind(), RunErrorKind::NotAuthorized { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn token_requests_authenticate_the_client_in_the_form_or_by_basic() {
        let connector = oauth2("");
        let redactor = Redactor::default();
        let configuration = state(json!({"oauth.token.url": "https://idp.example/token",
            "oauth.api.key": "id", "oauth.api.secret": "s:1", "oauth.scope": "read"}));
        let request = token_request(
            &connector,
            &configuration,
            &Grant::ClientCredentials,
            &redactor,
        )
        .unwrap();
        assert_eq!(request.url.as_str(), "https://idp.example/token");
        assert_eq!(
            request.body,
            RequestBody::Form(vec![
                ("grant_type".into(), "client_credentials".into()),
                ("scope".into(), "read".into()),
                ("client_id".into(), "id".into()),
                ("client_secret".into(), "s:1".into()),
            ])
        );
        let basic = state(json!({"oauth.token.url": "https://idp.example/token",
            "oauth.api.key": "id", "oauth.api.secret": "s:1",
            "oauth.basic.header": "true", "oauth.user.refresh_token": "r1",
            "oauth.token.refresh_url": "https://idp.example/refresh"}));
        let request = token_request(&connector, &basic, &Grant::RefreshToken, &redactor).unwrap();
        assert_eq!(request.url.as_str(), "https://idp.example/refresh");
        assert!(
            request
                .headers
                .contains(&("Authorization".into(), "Basic aWQ6cyUzQTE=".into()))
        );
        assert_eq!(
            request.body,
            RequestBody::Form(vec![
                ("grant_type".into(), "refresh_token".into()),
                ("refresh_token".into(), "r1".into()),
            ])
        );
        // Refresh parameters in the query string.
        let query = oauth2(r#", "refreshIn": "query""#);
        let request = token_request(&query, &basic, &Grant::RefreshToken, &redactor).unwrap();
        assert_eq!(request.body, RequestBody::Empty);
        assert_eq!(
            request.url.query(),
            Some("grant_type=refresh_token&refresh_token=r1")
        );
        let error =
            token_request(&connector, &configuration, &Grant::Password, &redactor).unwrap_err();
        assert!(
            matches!(error.kind(), RunErrorKind::MissingConfiguration { .. }),
            "{error:?}"
        );
    }

    #[test]
    fn the_token_contract_rotates_keeps_and_times() {
        let connector = oauth2("");
        let rotated = token_state(
            &connector,
            &json!({"access_token": "a2", "refresh_token": "r2", "expires_in": "60", "token_type": "Bearer"}),
            "oauth2 refresh_token",
            false,
            1_000,
        )
        .unwrap();
        assert_eq!(
            rotated.state,
            state(
                json!({"oauth.user.token": "a2", "oauth.user.refresh_token": "r2",
                "oauth.user.token_type": "Bearer", "oauth.user.refresh_interval": "60",
                "oauth.user.refresh_time": "1000"})
            )
        );
        // No refresh token in the answer: the held one is kept (not overwritten).
        let kept = token_state(
            &connector,
            &json!({"access_token": "a3"}),
            "x",
            false,
            1_000,
        )
        .unwrap()
        .state;
        assert!(!kept.contains_key("oauth.user.refresh_token"));
        assert_eq!(
            kept["oauth.user.refresh_interval"], "3600",
            "the default lifetime"
        );
        let error = token_state(
            &connector,
            &json!({"token": "x"}),
            "oauth2 refresh_token",
            false,
            0,
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "authentication failed: `oauth2 refresh_token` answered without `access_token`"
        );
        assert!(
            token_state(&connector, &json!({}), "x", true, 0)
                .unwrap()
                .state
                .is_empty()
        );
    }

    #[test]
    fn token_lifetimes_are_capped_at_a_year_and_unusable_ones_skipped() {
        let connector = oauth2("");
        let answer = |extra: Value| {
            let mut body = json!({"access_token": "a1"});
            for (key, value) in extra.as_object().unwrap() {
                body[key] = value.clone();
            }
            token_state(&connector, &body, "x", false, 1_000_000).unwrap()
        };
        let unusable = answer(json!({"expires_in": -5}));
        assert_eq!(unusable.state["oauth.user.refresh_interval"], "3600");
        assert_eq!(
            unusable.adjusted,
            Some(lifetime::adjusted(
                "expires_in",
                &json!(-5),
                3600,
                LifetimeProblem::Unusable
            ))
        );
        // An unusable `expires_in` gives way to `expires_at`, and says so.
        let later = answer(json!({"expires_in": "abc", "expires_at": 1_060}));
        assert_eq!(later.state["oauth.user.refresh_interval"], "60");
        assert_eq!(
            later.adjusted.map(|adjusted| adjusted.problem),
            Some(LifetimeProblem::Unusable)
        );
        let year = MAX_LIFETIME_SECONDS.to_string();
        for (extra, key) in [
            (json!({"expires_in": 1e300}), "expires_in"),
            (json!({"expires_at": "3000-01-01T00:00:00Z"}), "expires_at"),
        ] {
            let capped = answer(extra);
            assert_eq!(capped.state["oauth.user.refresh_interval"], year.as_str());
            let adjusted = capped.adjusted.unwrap();
            assert_eq!(
                (adjusted.key.as_str(), adjusted.problem),
                (key, LifetimeProblem::TooLong)
            );
        }
        assert_eq!(answer(json!({"expires_in": 60})).adjusted, None);
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

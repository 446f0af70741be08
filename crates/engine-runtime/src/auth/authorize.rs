//! The authorization code flow (`engine authorize`), without I/O: the authorization URL with a
//! random `state` and, when enabled, PKCE S256; the callback address it implies; and the steps
//! that exchange the code. Listening for the browser's callback is the caller's (the CLI's) job.

use base64::Engine as _;
use engine_spec::kinds::ResourceType;
use engine_spec::template::Values;
use engine_spec::{Connector, Resource};
use serde_json::Value;
use sha2::Digest as _;

use super::Step;
use super::custom::resource_step;
use super::oauth2::{Grant, missing, offered, offering};
use crate::Inputs;
use crate::run_error::{RunError, RunErrorKind};
use crate::value::text_of;

/// An authorization to start: the URL a person opens, and what the callback must bring back.
#[derive(Clone)]
pub struct AuthorizationRequest {
    /// The authorization URL to open in a browser.
    pub url: String,
    /// The `state` the callback must carry (CSRF protection); a secret.
    pub state: String,
    /// The PKCE verifier, when the connector enables PKCE; a secret.
    pub verifier: Option<String>,
    /// `oauth.callback.url`, sent again with the code.
    pub redirect_uri: String,
    /// The loopback host to listen on (`127.0.0.1` or `::1`).
    pub host: String,
    /// The port to listen on.
    pub port: u16,
    /// The callback's path.
    pub path: String,
    /// OAuth 1.0a: the request token's secret, which signs the access token's request (the
    /// request token itself is [`AuthorizationRequest::state`], and the callback's
    /// `oauth_verifier` its code); a secret.
    pub request_token_secret: Option<String>,
}

/// Where the browser comes back: `oauth.callback.url`, and the loopback host, port and path it
/// names.
pub(crate) struct Callback {
    pub(crate) redirect_uri: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) path: String,
}

/// The callback of `configuration` (`oauth.callback.url`).
///
/// Fails when it is missing, or not a loopback `http://` URL with a port.
pub(crate) fn callback(configuration: &dyn Values) -> Result<Callback, RunError> {
    let redirect_uri = configuration
        .value("oauth.callback.url")
        .and_then(text_of)
        .ok_or_else(|| {
            missing(
                "oauth.callback.url",
                "where the browser returns, e.g. `http://127.0.0.1:8765/callback`",
            )
        })?;
    let callback = url::Url::parse(&redirect_uri).map_err(|error| RunErrorKind::InvalidUrl {
        url: redirect_uri.clone(),
        message: error.to_string(),
    })?;
    let host = callback.host_str().unwrap_or_default().to_owned();
    let loopback = matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]");
    let Some(port) = callback
        .port()
        .filter(|_| callback.scheme() == "http" && loopback)
    else {
        return Err(RunErrorKind::Authorize {
            message: format!(
                "`oauth.callback.url` must be a loopback URL with a port, such as `http://127.0.0.1:8765/callback`, not `{redirect_uri}`"
            ),
        }
        .into());
    };
    Ok(Callback {
        host: if host == "[::1]" { "::1" } else { "127.0.0.1" }.to_owned(),
        port,
        path: callback.path().to_owned(),
        redirect_uri,
    })
}

/// The callback of a flow: the redirect URI `flow` sets (any `http(s)` URL: a service's
/// callback), else `oauth.callback.url` ([`callback`]).
///
/// Fails like [`callback`], or when the redirect URI set is not an `http(s)` URL.
pub(crate) fn callback_of(
    configuration: &dyn Values,
    flow: &AuthorizationFlow,
) -> Result<Callback, RunError> {
    let Some(redirect_uri) = &flow.redirect_uri else {
        return callback(configuration);
    };
    let url = parse_url(redirect_uri)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(RunErrorKind::Authorize {
            message: format!("the redirect URI `{redirect_uri}` is not an `http(s)` URL"),
        }
        .into());
    }
    Ok(Callback {
        redirect_uri: redirect_uri.clone(),
        host: url.host_str().unwrap_or_default().to_owned(),
        port: url.port_or_known_default().unwrap_or(0),
        path: url.path().to_owned(),
    })
}

/// The URL and where the callback comes back; never the `state`, the verifier nor a request
/// token's secret.
impl std::fmt::Debug for AuthorizationRequest {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AuthorizationRequest")
            .field("redirect_uri", &self.redirect_uri)
            .field("pkce", &self.verifier.is_some())
            .finish_non_exhaustive()
    }
}

/// What the caller of an authorization decides: where the browser comes back, and the flow's
/// secrets when the caller makes them (a service that keeps no secret while it waits derives
/// the verifier from the `state`). Everything `None`: the instance's `oauth.callback.url`, a
/// loopback URL with a port the caller listens on, and a random `state` and verifier.
#[derive(Clone, Default)]
pub struct AuthorizationFlow {
    /// The redirect URI the vendor sees, any `http(s)` URL: the caller's callback.
    pub redirect_uri: Option<String>,
    /// The `state` the callback must carry.
    pub state: Option<String>,
    /// The PKCE verifier, used when the connector enables PKCE (43 to 128 characters of
    /// `[A-Za-z0-9-._~]`, RFC 7636).
    pub verifier: Option<String>,
}

/// Says which parts the caller set, never the `state` nor the verifier.
impl std::fmt::Debug for AuthorizationFlow {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("AuthorizationFlow")
            .field("redirect_uri", &self.redirect_uri)
            .field("state", &self.state.as_ref().map(|_| "****"))
            .field("verifier", &self.verifier.as_ref().map(|_| "****"))
            .finish()
    }
}

fn random_token(bytes: usize) -> Result<String, RunError> {
    let mut buffer = vec![0_u8; bytes];
    getrandom::fill(&mut buffer).map_err(|error| RunErrorKind::Authorize {
        message: format!("no random numbers available: {error}"),
    })?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buffer))
}

/// The authorization request of `connector` for an instance's `configuration`. The URL is
/// `oauth.authorization.url` with the flow's parameters; a connector with an
/// `oauthOnAuthorizeUrl` resource gets it from that resource instead ([`answered_url`]), and
/// `oauth.authorization.url` may then be absent.
///
/// `flow` may set the redirect URI (instead of `oauth.callback.url`), the `state` and the
/// verifier.
///
/// Fails when a required OAuth2 key is missing, or the callback URL is not a loopback `http://`
/// URL with a port (an `http(s)` URL, when `flow` sets it).
pub(crate) fn authorization_request(
    connector: &Connector,
    configuration: &dyn Values,
    flow: &AuthorizationFlow,
) -> Result<AuthorizationRequest, RunError> {
    let value = |key: &str| configuration.value(key).and_then(text_of);
    let own = connector
        .lifecycle(ResourceType::OauthOnAuthorizeUrl)
        .is_some();
    let authorization_url = match value("oauth.authorization.url") {
        Some(url) => Some(url),
        None if own => None,
        None => {
            return Err(missing(
                "oauth.authorization.url",
                "the OAuth2 authorization endpoint",
            ));
        }
    };
    let client_id =
        value("oauth.api.key").ok_or_else(|| missing("oauth.api.key", "the OAuth2 client id"))?;
    let callback = callback_of(configuration, flow)?;
    let verifier = if connector.authentication().pkce() {
        Some(match &flow.verifier {
            Some(verifier) => verifier.clone(),
            None => random_token(32)?,
        })
    } else {
        None
    };
    let state = match &flow.state {
        Some(state) => state.clone(),
        None => random_token(24)?,
    };
    let mut request = AuthorizationRequest {
        url: String::new(),
        state,
        verifier,
        redirect_uri: callback.redirect_uri,
        host: callback.host,
        port: callback.port,
        path: callback.path,
        request_token_secret: None,
    };
    let mut parameters = vec![
        ("response_type", "code".to_owned()),
        ("client_id", client_id),
        ("redirect_uri", request.redirect_uri.clone()),
        ("state", request.state.clone()),
    ];
    if let Some(scope) = value("oauth.scope") {
        parameters.push(("scope", scope));
    }
    if let Some(verifier) = &request.verifier {
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()));
        parameters.push(("code_challenge", challenge));
        parameters.push(("code_challenge_method", "S256".to_owned()));
    }
    if let Some(authorization_url) = authorization_url {
        let mut url =
            url::Url::parse(&authorization_url).map_err(|error| RunErrorKind::InvalidUrl {
                url: authorization_url.clone(),
                message: error.to_string(),
            })?;
        url.query_pairs_mut().extend_pairs(&parameters);
        request.url = url.into();
    }
    Ok(request)
}

fn parse_url(text: &str) -> Result<url::Url, RunError> {
    url::Url::parse(text).map_err(|error| {
        RunErrorKind::InvalidUrl {
            url: text.to_owned(),
            message: error.to_string(),
        }
        .into()
    })
}

/// The step that runs the connector's `oauthOnAuthorizeUrl` resource, when it has one: its
/// hooks see the flow's parameters (`client_id`, `redirect_uri`, `state`, `scope`...) in
/// `request_parameters`, as the platform gave them.
pub(crate) fn authorize_url_step<'a>(
    connector: &'a Connector,
    configuration: &dyn Values,
    request: &AuthorizationRequest,
) -> Option<Step<'a>> {
    let resource = connector.lifecycle(ResourceType::OauthOnAuthorizeUrl)?;
    let offered = offered(
        resource.kind(),
        configuration,
        &[
            ("redirect_uri", request.redirect_uri.clone()),
            ("state", request.state.clone()),
        ],
    );
    let declared = declared(resource, &offered);
    Some(offering(
        resource_step(connector, resource, declared),
        offered,
    ))
}

/// The authorization URL the `oauthOnAuthorizeUrl` resource answered (its body, a URL as text
/// or a JSON string: what its post-request hook returns), with the flow's own parameters it
/// lacks added (`state`, `redirect_uri`, PKCE), so that the callback can be checked.
///
/// Fails when the answer is no `http(s)` URL.
pub(crate) fn answered_url(
    resource: &Resource,
    body: &Value,
    request: &AuthorizationRequest,
) -> Result<String, RunError> {
    let text = match body {
        Value::String(text) => text.trim().to_owned(),
        _ => String::new(),
    };
    let mut url = url::Url::parse(&text)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https"))
        .ok_or_else(|| RunErrorKind::Authorize {
            message: format!(
                "`{}` (`OAUTH ON AUTHORIZE URL`) answered without an authorization URL: its answer must be the URL, as text or a JSON string (what its `postRequest` hook returns as `response_body`)",
                resource.display_name()
            ),
        })?;
    let mut parameters = vec![
        ("state", request.state.clone()),
        ("redirect_uri", request.redirect_uri.clone()),
    ];
    if let Some(verifier) = &request.verifier {
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()));
        parameters.push(("code_challenge", challenge));
        parameters.push(("code_challenge_method", "S256".to_owned()));
    }
    let present: Vec<String> = url
        .query_pairs()
        .map(|(name, _)| name.into_owned())
        .collect();
    let missing: Vec<(&str, String)> = parameters
        .into_iter()
        .filter(|(name, _)| !present.iter().any(|known| known == name))
        .collect();
    if !missing.is_empty() {
        url.query_pairs_mut().extend_pairs(&missing);
    }
    Ok(url.into())
}

/// The inputs of `offered` that `resource` declares: the ones its request may send.
fn declared(resource: &Resource, offered: &[(String, String)]) -> Inputs {
    Inputs {
        params: offered
            .iter()
            .filter(|(name, _)| {
                resource
                    .parameters()
                    .iter()
                    .any(|parameter| parameter.name() == name)
            })
            .cloned()
            .collect(),
        ..Inputs::default()
    }
}

/// The steps that exchange `code`: the connector's `oauthOnTokenExchange` resource when it has
/// one (given `code`, `redirect_uri` and `code_verifier` as inputs, those it declares; its hooks
/// see them all, with the client's credentials and `state`), else the built-in
/// `authorization_code` grant.
pub(crate) fn exchange_steps<'a>(
    connector: &'a Connector,
    configuration: &dyn Values,
    code: &str,
    request: &AuthorizationRequest,
) -> Vec<Step<'a>> {
    let Some(resource) = connector.lifecycle(ResourceType::OauthOnTokenExchange) else {
        return vec![Step::Token(Grant::AuthorizationCode {
            code: code.to_owned(),
            redirect_uri: request.redirect_uri.clone(),
            verifier: request.verifier.clone(),
        })];
    };
    let offered = offered(
        resource.kind(),
        configuration,
        &[
            ("code", code.to_owned()),
            ("redirect_uri", request.redirect_uri.clone()),
            (
                "code_verifier",
                request.verifier.clone().unwrap_or_default(),
            ),
            ("state", request.state.clone()),
        ],
    );
    let declared = declared(resource, &offered);
    vec![offering(
        resource_step(connector, resource, declared),
        offered,
    )]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use engine_store::State;

    use super::super::tests::{connector, state};
    use super::*;

    fn code_flow(pkce: bool) -> Connector {
        connector(&format!(
            r#"{{"authentication": {{"type": "oauth2", "grant": "authorization_code", "pkce": {pkce}}},
                "configuration": [{{"key": "oauth.token.url", "defaultValue": "https://idp.example/token"}}],
                "resources": [{{"name": "me", "type": "api", "vendorPath": "/me"}}]}}"#
        ))
    }

    #[test]
    fn the_url_carries_state_and_pkce_and_the_callback_is_loopback() {
        let configuration = state(json!({
            "oauth.authorization.url": "https://idp.example/auth?prompt=consent",
            "oauth.api.key": "id", "oauth.scope": "openid offline_access",
            "oauth.callback.url": "http://127.0.0.1:8765/callback"}));
        let request = authorization_request(
            &code_flow(true),
            &configuration,
            &AuthorizationFlow::default(),
        )
        .unwrap();
        let url = url::Url::parse(&request.url).unwrap();
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let names: Vec<&str> = pairs.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "prompt",
                "response_type",
                "client_id",
                "redirect_uri",
                "state",
                "scope",
                "code_challenge",
                "code_challenge_method"
            ]
        );
        assert!(pairs.contains(&("state".into(), request.state.clone())));
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
            sha2::Sha256::digest(request.verifier.as_deref().unwrap().as_bytes()),
        );
        assert!(pairs.contains(&("code_challenge".into(), challenge)));
        assert_eq!(
            (request.host.as_str(), request.port, request.path.as_str()),
            ("127.0.0.1", 8765, "/callback")
        );
        let without = authorization_request(
            &code_flow(false),
            &configuration,
            &AuthorizationFlow::default(),
        )
        .unwrap();
        assert!(without.verifier.is_none() && !without.url.contains("code_challenge"));

        let remote = state(json!({
            "oauth.authorization.url": "https://idp.example/auth", "oauth.api.key": "id",
            "oauth.callback.url": "https://app.example/callback"}));
        let error =
            authorization_request(&code_flow(false), &remote, &AuthorizationFlow::default())
                .unwrap_err();
        assert!(
            error.to_string().contains("must be a loopback URL"),
            "{error}"
        );
    }

    #[test]
    fn a_caller_sets_the_redirect_uri_state_and_verifier() {
        let configuration = state(json!({
            "oauth.authorization.url": "https://idp.example/auth", "oauth.api.key": "id",
            "oauth.callback.url": "http://127.0.0.1:8765/callback"}));
        let flow = AuthorizationFlow {
            redirect_uri: Some("https://engine.example/v1/oauth/callback".into()),
            state: Some("s".repeat(64)),
            verifier: Some("v".repeat(64)),
        };
        let request = authorization_request(&code_flow(true), &configuration, &flow).unwrap();
        assert_eq!(
            (request.redirect_uri.as_str(), request.state.as_str()),
            (
                "https://engine.example/v1/oauth/callback",
                "s".repeat(64).as_str()
            )
        );
        assert_eq!(request.verifier, flow.verifier);
        let pairs: Vec<(String, String)> = url::Url::parse(&request.url)
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect();
        assert!(pairs.contains(&(
            "redirect_uri".into(),
            "https://engine.example/v1/oauth/callback".into()
        )));
        let shown = format!("{request:?} {flow:?}");
        assert!(!shown.contains("sss") && !shown.contains("vvv"), "{shown}");
        let ftp = AuthorizationFlow {
            redirect_uri: Some("ftp://engine.example/cb".into()),
            ..AuthorizationFlow::default()
        };
        let error = authorization_request(&code_flow(false), &configuration, &ftp).unwrap_err();
        assert!(
            error.to_string().contains("is not an `http(s)` URL"),
            "{error}"
        );
    }

    #[test]
    fn an_answered_url_gets_the_state_and_callback_it_lacks() {
        let connector = connector(
            r#"{"authentication": {"type": "oauth2"},
                "configuration": [{"key": "oauth.token.url", "defaultValue": "https://idp.example/token"}],
                "resources": [{"type": "oauthOnAuthroizeUrl", "vendorPath": ""}]}"#,
        );
        let configuration = state(json!({"oauth.api.key": "id",
            "oauth.callback.url": "http://127.0.0.1:8765/callback"}));
        // `oauth.authorization.url` is not needed: the resource makes the URL.
        let request =
            authorization_request(&connector, &configuration, &AuthorizationFlow::default())
                .unwrap();
        let step = authorize_url_step(&connector, &configuration, &request).unwrap();
        let Step::Resource {
            resource, offered, ..
        } = &step
        else {
            panic!("a resource step");
        };
        let names: Vec<&str> = offered.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            ["client_id", "response_type", "redirect_uri", "state"]
        );
        let url = answered_url(
            resource,
            &json!("https://idp.example/auth?client_id=id&redirect_uri=x"),
            &request,
        )
        .unwrap();
        assert_eq!(
            url,
            format!(
                "https://idp.example/auth?client_id=id&redirect_uri=x&state={}",
                request.state
            )
        );
        let error = answered_url(resource, &json!({"ok": true}), &request).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("answered without an authorization URL"),
            "{error}"
        );
    }

    #[test]
    fn the_code_is_exchanged_by_the_grant_with_the_verifier() {
        let connector = code_flow(true);
        let request = AuthorizationRequest {
            url: String::new(),
            state: "s".into(),
            verifier: Some("v".into()),
            redirect_uri: "http://127.0.0.1:1/cb".into(),
            host: "127.0.0.1".into(),
            port: 1,
            path: "/cb".into(),
            request_token_secret: None,
        };
        let steps = exchange_steps(&connector, &State::new(), "c0de", &request);
        assert!(matches!(
            &steps[..],
            [Step::Token(Grant::AuthorizationCode { code, verifier: Some(verifier), .. })]
                if code == "c0de" && verifier == "v"
        ));
    }
}

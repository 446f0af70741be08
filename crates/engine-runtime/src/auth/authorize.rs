//! The authorization code flow (`engine authorize`), without I/O: the authorization URL with a
//! random `state` and, when enabled, PKCE S256; the callback address it implies; and the steps
//! that exchange the code. Listening for the browser's callback is the caller's (the CLI's) job.

use base64::Engine as _;
use engine_spec::Connector;
use engine_spec::kinds::ResourceType;
use engine_spec::template::Values;
use sha2::Digest as _;

use super::Step;
use super::custom::resource_step;
use super::oauth2::{Grant, missing};
use crate::Inputs;
use crate::run_error::{RunError, RunErrorKind};
use crate::value::text_of;

/// An authorization to start: the URL a person opens, and what the callback must bring back.
#[derive(Debug, Clone)]
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
}

fn random_token(bytes: usize) -> Result<String, RunError> {
    let mut buffer = vec![0_u8; bytes];
    getrandom::fill(&mut buffer).map_err(|error| RunErrorKind::Authorize {
        message: format!("no random numbers available: {error}"),
    })?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buffer))
}

/// The authorization request of `connector` for an instance's `configuration`.
///
/// Fails when a required OAuth2 key is missing, or the callback URL is not a loopback `http://`
/// URL with a port.
pub(crate) fn authorization_request(
    connector: &Connector,
    configuration: &dyn Values,
) -> Result<AuthorizationRequest, RunError> {
    let value = |key: &str| configuration.value(key).and_then(text_of);
    let authorization_url = value("oauth.authorization.url").ok_or_else(|| {
        missing(
            "oauth.authorization.url",
            "the OAuth2 authorization endpoint",
        )
    })?;
    let client_id =
        value("oauth.api.key").ok_or_else(|| missing("oauth.api.key", "the OAuth2 client id"))?;
    let redirect_uri = value("oauth.callback.url").ok_or_else(|| {
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
    let state = random_token(24)?;
    let mut url =
        url::Url::parse(&authorization_url).map_err(|error| RunErrorKind::InvalidUrl {
            url: authorization_url.clone(),
            message: error.to_string(),
        })?;
    let mut verifier = None;
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", &client_id)
            .append_pair("redirect_uri", &redirect_uri)
            .append_pair("state", &state);
        if let Some(scope) = value("oauth.scope") {
            query.append_pair("scope", &scope);
        }
        if connector.authentication().pkce() {
            let code_verifier = random_token(32)?;
            let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(sha2::Sha256::digest(code_verifier.as_bytes()));
            query
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256");
            verifier = Some(code_verifier);
        }
    }
    Ok(AuthorizationRequest {
        url: url.into(),
        state,
        verifier,
        redirect_uri,
        host: if host == "[::1]" { "::1" } else { "127.0.0.1" }.to_owned(),
        port,
        path: callback.path().to_owned(),
    })
}

/// The steps that exchange `code`: the connector's `oauthOnTokenExchange` resource when it has
/// one (given `code`, `redirect_uri` and `code_verifier` as inputs, those it takes), else the
/// built-in `authorization_code` grant.
pub(crate) fn exchange_steps<'a>(
    connector: &'a Connector,
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
    let offered = [
        ("code", code),
        ("redirect_uri", request.redirect_uri.as_str()),
        (
            "code_verifier",
            request.verifier.as_deref().unwrap_or_default(),
        ),
    ];
    let inputs = Inputs {
        params: offered
            .iter()
            .filter(|(name, value)| {
                !value.is_empty()
                    && resource
                        .parameters()
                        .iter()
                        .any(|parameter| parameter.name() == *name)
            })
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect(),
        ..Inputs::default()
    };
    vec![resource_step(connector, resource, inputs)]
}

#[cfg(test)]
mod tests {
    use serde_json::json;

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
        let request = authorization_request(&code_flow(true), &configuration).unwrap();
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
        let without = authorization_request(&code_flow(false), &configuration).unwrap();
        assert!(without.verifier.is_none() && !without.url.contains("code_challenge"));

        let remote = state(json!({
            "oauth.authorization.url": "https://idp.example/auth", "oauth.api.key": "id",
            "oauth.callback.url": "https://app.example/callback"}));
        let error = authorization_request(&code_flow(false), &remote).unwrap_err();
        assert!(
            error.to_string().contains("must be a loopback URL"),
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
        };
        let steps = exchange_steps(&connector, "c0de", &request);
        assert!(matches!(
            &steps[..],
            [Step::Token(Grant::AuthorizationCode { code, verifier: Some(verifier), .. })]
                if code == "c0de" && verifier == "v"
        ));
    }
}

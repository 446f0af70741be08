//! The authorization code flow's I/O, around the pure parts of `auth::authorize`: read the
//! instance, exchange the code, write the tokens. The caller listens for the browser.

use engine_spec::{AuthKind, Connector};
use engine_store::InstanceStore;
use serde_json::Value;

use crate::auth::authorize::{
    AuthorizationFlow, AuthorizationRequest, answered_url, authorization_request,
    authorize_url_step, callback_of, exchange_steps,
};
use crate::auth::{Step, oauth1};
use crate::engine::{Engine, Run};
use crate::observer::Observer;
use crate::run_error::RunError;

impl Engine {
    /// Starts the authorization code flow for `instance`: the URL to open, and where and with
    /// what the browser must come back. A connector with an `oauthOnAuthorizeUrl` resource
    /// gets the URL from it, as the platform did: the resource runs (hooks included) and its
    /// answer is the URL.
    ///
    /// Fails when the instance cannot be read, a required OAuth2 key is missing, the callback
    /// URL is not a loopback `http://` URL with a port, or the resource fails or answers no URL.
    pub async fn begin_authorization(
        &self,
        connector: &Connector,
        store: &dyn InstanceStore,
        instance: &str,
        observer: &dyn Observer,
    ) -> Result<AuthorizationRequest, RunError> {
        self.begin_authorization_with(
            connector,
            store,
            instance,
            observer,
            &AuthorizationFlow::default(),
        )
        .await
    }

    /// [`Engine::begin_authorization`] with what the caller decides of the flow: the redirect
    /// URI the vendor sees (any `http(s)` URL: a service's callback), the `state` and the PKCE
    /// verifier ([`AuthorizationFlow`]).
    ///
    /// OAuth 1.0a takes the redirect URI alone (its `oauth_callback`): the vendor makes its
    /// request token, the flow's `state`, and PKCE is OAuth2's.
    ///
    /// Fails like [`Engine::begin_authorization`].
    pub async fn begin_authorization_with(
        &self,
        connector: &Connector,
        store: &dyn InstanceStore,
        instance: &str,
        observer: &dyn Observer,
        flow: &AuthorizationFlow,
    ) -> Result<AuthorizationRequest, RunError> {
        let mut run = Run::new(self, connector, store, instance, observer).await?;
        if connector.authentication().kind() == AuthKind::Oauth1 {
            return begin_oauth1(&mut run, connector, flow).await;
        }
        let mut request = authorization_request(connector, &run.configuration, flow)?;
        let Some(step) = authorize_url_step(connector, &run.configuration, &request) else {
            return Ok(request);
        };
        run.redactor.learn(&request.state);
        let response = run.execute(&step).await?;
        run.persist_pending().await?;
        if let Step::Resource { resource, .. } = &step {
            request.url = answered_url(resource, &response.body, &request)?;
        }
        Ok(request)
    }

    /// Exchanges the `code` the browser brought back for `request`, writes the tokens into
    /// `instance`, and provisions it when it never was (`auth/custom.rs`). The exchange is
    /// reported as a requested lifecycle step ([`crate::Event::RefreshFinished`]), for a
    /// history.
    ///
    /// Fails when the exchange fails (the vendor's error in the message) or the tokens cannot
    /// be written.
    pub async fn complete_authorization(
        &self,
        connector: &Connector,
        store: &dyn InstanceStore,
        instance: &str,
        observer: &dyn Observer,
        request: &AuthorizationRequest,
        code: &str,
    ) -> Result<(), RunError> {
        let mut run = Run::new(self, connector, store, instance, observer).await?;
        run.redactor.learn(code);
        run.redactor.learn(&request.state);
        if connector.authentication().kind() == AuthKind::Oauth1 {
            return complete_oauth1(&mut run, connector, request, code).await;
        }
        if let Some(verifier) = &request.verifier {
            run.redactor.learn(verifier);
        }
        for step in exchange_steps(connector, &run.configuration, code, request) {
            run.execute_requested(&step).await?;
        }
        // Signed in, the instance is provisioned, as the platform did when it was created: its
        // `PROVISION AUTH VALIDATION` and `ON PROVISION` resources run with the new token. The
        // tokens are kept even when that fails: the next run provisions again.
        run.persist_pending().await?;
        run.ensure_fresh().await?;
        run.persist_pending().await
    }
}

/// OAuth 1.0a (RFC 5849): obtains a request token that comes back to the callback, and the
/// address where a person approves it. The request token is the request's `state` (the
/// callback brings it back as `oauth_token`), its secret is kept for the exchange.
async fn begin_oauth1(
    run: &mut Run<'_>,
    connector: &Connector,
    flow: &AuthorizationFlow,
) -> Result<AuthorizationRequest, RunError> {
    let callback = callback_of(&run.configuration, flow)?;
    let credentials = oauth1::Credentials::consumer(connector, &run.configuration)?;
    let (request, signer) =
        oauth1::request_token_request(&run.configuration, credentials, &callback.redirect_uri)?;
    let (_, token, secret) = run.oauth1_token(request, &signer, "request token").await?;
    Ok(AuthorizationRequest {
        url: oauth1::authorization_url(&run.configuration, &token)?,
        state: token,
        verifier: None,
        redirect_uri: callback.redirect_uri,
        host: callback.host,
        port: callback.port,
        path: callback.path,
        request_token_secret: Some(secret),
    })
}

/// OAuth 1.0a: exchanges the approved request token and the callback's `verifier` for the
/// access token and its secret, saves them (`oauth.user.token`, `oauth.user.token.secret`),
/// reports the exchange as a requested lifecycle step (`oauth1 access token`), then provisions
/// the instance when it never was.
async fn complete_oauth1(
    run: &mut Run<'_>,
    connector: &Connector,
    request: &AuthorizationRequest,
    verifier: &str,
) -> Result<(), RunError> {
    let secret = request.request_token_secret.clone().unwrap_or_default();
    run.redactor.learn(&secret);
    let credentials = oauth1::Credentials::consumer(connector, &run.configuration)?
        .with_token(request.state.clone(), secret);
    let (exchange, signer) =
        oauth1::access_token_request(&run.configuration, credentials, verifier)?;
    let started = std::time::Instant::now();
    let old_token = run.current_token();
    let exchanged = run.oauth1_token(exchange, &signer, "access token").await;
    if let Ok((_, token, secret)) = &exchanged {
        let mut saved = engine_store::State::new();
        saved.insert("oauth.user.token".to_owned(), Value::String(token.clone()));
        saved.insert(
            "oauth.user.token.secret".to_owned(),
            Value::String(secret.clone()),
        );
        run.save(&saved);
    }
    // The exchange is reported as OAuth2's is, for the instance's history.
    let status = exchanged.as_ref().map(|(status, _, _)| *status);
    run.report_requested("oauth1 access token".to_owned(), started, old_token, status);
    exchanged?;
    run.persist_pending().await?;
    run.ensure_fresh().await?;
    run.persist_pending().await
}

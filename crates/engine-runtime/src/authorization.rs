//! The authorization code flow's I/O, around the pure parts of `auth::authorize`: read the
//! instance, exchange the code, write the tokens. The caller listens for the browser.

use engine_spec::Connector;
use engine_store::InstanceStore;

use crate::auth::Step;
use crate::auth::authorize::{
    AuthorizationRequest, answered_url, authorization_request, authorize_url_step, exchange_steps,
};
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
        let mut run = Run::new(self, connector, store, instance, observer).await?;
        let mut request = authorization_request(connector, &run.configuration)?;
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
    /// `instance`, and provisions it when it never was (`auth/custom.rs`).
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
        if let Some(verifier) = &request.verifier {
            run.redactor.learn(verifier);
        }
        for step in exchange_steps(connector, &run.configuration, code, request) {
            run.execute(&step).await?;
        }
        // Signed in, the instance is provisioned, as the platform did when it was created: its
        // `PROVISION AUTH VALIDATION` and `ON PROVISION` resources run with the new token. The
        // tokens are kept even when that fails: the next run provisions again.
        run.persist_pending().await?;
        run.ensure_fresh().await?;
        run.persist_pending().await
    }
}

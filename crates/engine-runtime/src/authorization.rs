//! The authorization code flow's I/O, around the pure parts of `auth::authorize`: read the
//! instance, exchange the code, write the tokens. The caller listens for the browser.

use engine_spec::Connector;
use engine_store::InstanceStore;

use crate::auth::authorize::{AuthorizationRequest, authorization_request, exchange_steps};
use crate::configuration::Configuration;
use crate::engine::{Engine, Run};
use crate::observer::Observer;
use crate::run_error::RunError;

impl Engine {
    /// Starts the authorization code flow for `instance`: the URL to open, and where and with
    /// what the browser must come back.
    ///
    /// Fails when the instance cannot be read, a required OAuth2 key is missing, or the callback
    /// URL is not a loopback `http://` URL with a port.
    pub async fn begin_authorization(
        &self,
        connector: &Connector,
        store: &dyn InstanceStore,
        instance: &str,
    ) -> Result<AuthorizationRequest, RunError> {
        let stored = store.load(instance).await?;
        let configuration = Configuration::new(connector, stored.state);
        authorization_request(connector, &configuration)
    }

    /// Exchanges the `code` the browser brought back for `request` and writes the tokens into
    /// `instance`.
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
        for step in exchange_steps(connector, code, request) {
            run.execute(&step).await?;
        }
        run.persist_pending().await
    }
}

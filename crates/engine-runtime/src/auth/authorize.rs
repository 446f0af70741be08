//! The browser authorization code flow (`engine authorize`): build the authorization URL (with a
//! random `state` and, when enabled, PKCE S256), listen on the loopback address of
//! `oauth.callback.url`, accept the code from the query string or the URL fragment, reject a
//! wrong `state` and keep waiting, exchange the code (or run `oauthOnTokenExchange`) and save the
//! tokens.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::State as AxumState;
use axum::http::{StatusCode, Uri};
use axum::response::Html;
use base64::Engine as _;
use engine_spec::Connector;
use engine_spec::kinds::ResourceType;
use engine_store::StateStore;
use sha2::Digest as _;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use super::oauth2::missing;
use crate::Inputs;
use crate::engine::{Engine, Run};
use crate::observer::Observer;
use crate::request::text_of;
use crate::run_error::{RunError, RunErrorKind};

/// An authorization in progress: the URL a person opens, and the listener waiting for the
/// callback.
pub struct PendingAuthorization {
    url: String,
    state: String,
    verifier: Option<String>,
    redirect_uri: String,
    path: String,
    listener: TcpListener,
}

impl PendingAuthorization {
    /// The authorization URL to open in a browser.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The address the callback listener is bound to.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }
}

fn random_token(bytes: usize) -> Result<String, RunError> {
    let mut buffer = vec![0_u8; bytes];
    getrandom::fill(&mut buffer).map_err(|error| RunErrorKind::Authorize {
        message: format!("no random numbers available: {error}"),
    })?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buffer))
}

impl Engine {
    /// Starts the authorization code flow for the instance: builds the URL and binds the
    /// callback listener on the loopback host and port of `oauth.callback.url`.
    ///
    /// Fails when a required OAuth2 key is missing, the callback URL is not a loopback
    /// `http://` URL, or its port cannot be bound.
    pub async fn begin_authorization(
        &self,
        connector: &Connector,
        store: &dyn StateStore,
        instance: &str,
    ) -> Result<PendingAuthorization, RunError> {
        let state = store.load(instance)?;
        let configuration = crate::configuration::Configuration::new(connector, state);
        let value = |key: &str| configuration.get(key).and_then(text_of);
        let authorization_url = value("oauth.authorization.url").ok_or_else(|| {
            missing(
                "oauth.authorization.url",
                "the OAuth2 authorization endpoint",
            )
        })?;
        let client_id = value("oauth.api.key")
            .ok_or_else(|| missing("oauth.api.key", "the OAuth2 client id"))?;
        let redirect_uri = value("oauth.callback.url").ok_or_else(|| {
            missing(
                "oauth.callback.url",
                "where the browser returns, e.g. `http://127.0.0.1:8765/callback`",
            )
        })?;
        let callback =
            url::Url::parse(&redirect_uri).map_err(|error| RunErrorKind::InvalidUrl {
                url: redirect_uri.clone(),
                message: error.to_string(),
            })?;
        let host = callback.host_str().unwrap_or_default().to_owned();
        let loopback = matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]");
        if callback.scheme() != "http" || !loopback || callback.port().is_none() {
            return Err(RunErrorKind::Authorize {
                message: format!(
                    "`oauth.callback.url` must be a loopback URL with a port, such as `http://127.0.0.1:8765/callback`, not `{redirect_uri}`"
                ),
            }
            .into());
        }
        let port = callback.port().unwrap_or_default();
        let bind_host = if host == "[::1]" { "::1" } else { "127.0.0.1" };
        let listener = TcpListener::bind((bind_host, port))
            .await
            .map_err(|error| RunErrorKind::Authorize {
                message: format!("cannot listen on `{bind_host}:{port}` for the callback: {error}"),
            })?;
        let csrf = random_token(24)?;
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
                .append_pair("state", &csrf);
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
        Ok(PendingAuthorization {
            url: url.into(),
            state: csrf,
            verifier,
            redirect_uri,
            path: callback.path().to_owned(),
            listener,
        })
    }

    /// Waits for the browser's callback, exchanges the code and saves the tokens into the
    /// instance.
    ///
    /// Fails when no valid callback arrives within `timeout`, when the person declined (the
    /// vendor's `error` and `error_description` are in the message), or when the exchange fails.
    pub async fn complete_authorization(
        &self,
        pending: PendingAuthorization,
        connector: &Connector,
        store: &dyn StateStore,
        instance: &str,
        observer: &dyn Observer,
        timeout: Duration,
    ) -> Result<(), RunError> {
        let (sender, mut callbacks) = mpsc::channel::<Callback>(8);
        let (stop, stopped) = oneshot::channel::<()>();
        let router = Router::new()
            .route(&pending.path, axum::routing::get(callback))
            .with_state(sender);
        let server = tokio::spawn(async move {
            let _ = axum::serve(pending.listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let outcome = loop {
            let next = tokio::select! {
                next = callbacks.recv() => next,
                () = &mut deadline => None,
            };
            let Some(callback) = next else {
                break Err(RunErrorKind::Authorize {
                    message: format!(
                        "no callback arrived within {} s; run `engine authorize` again",
                        timeout.as_secs()
                    ),
                }
                .into());
            };
            let parameters = &callback.parameters;
            if parameters.get("state") != Some(&pending.state) {
                let _ = callback.reply.send(page(
                    StatusCode::BAD_REQUEST,
                    "The sign-in answer does not match this request (wrong or missing state). Still waiting for the genuine callback.",
                ));
                continue;
            }
            if let Some(error) = parameters.get("error") {
                let description = parameters
                    .get("error_description")
                    .map(|description| format!(": {description}"))
                    .unwrap_or_default();
                let message = format!("the vendor answered `{error}`{description}");
                let _ = callback.reply.send(page(
                    StatusCode::OK,
                    &format!(
                        "Sign-in failed: {}. You can close this window.",
                        html_escape(&message)
                    ),
                ));
                break Err(RunErrorKind::Authorize { message }.into());
            }
            let Some(code) = parameters.get("code") else {
                let _ = callback
                    .reply
                    .send(page(StatusCode::BAD_REQUEST, "No code in the answer."));
                continue;
            };
            let result = self
                .exchange_code(
                    connector,
                    store,
                    instance,
                    observer,
                    code,
                    &pending.redirect_uri,
                    pending.verifier.as_deref(),
                )
                .await;
            let reply = match &result {
                Ok(()) => page(StatusCode::OK, "Signed in. You can close this window."),
                Err(_) => page(
                    StatusCode::OK,
                    "Sign-in failed while exchanging the code; see the terminal. You can close this window.",
                ),
            };
            let _ = callback.reply.send(reply);
            break result;
        };
        let _ = stop.send(());
        let _ = server.await;
        outcome
    }

    /// Exchanges an authorization code: the connector's `oauthOnTokenExchange` resource when it
    /// has one, else the built-in `authorization_code` grant. Saves the tokens.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; the flow's own values"
    )]
    async fn exchange_code(
        &self,
        connector: &Connector,
        store: &dyn StateStore,
        instance: &str,
        observer: &dyn Observer,
        code: &str,
        redirect_uri: &str,
        verifier: Option<&str>,
    ) -> Result<(), RunError> {
        let mut run = Run::new(self, connector, store, instance, observer, false)?;
        run.redactor.learn(code);
        if let Some(verifier) = verifier {
            run.redactor.learn(verifier);
        }
        if let Some(resource) = connector.lifecycle(ResourceType::OauthOnTokenExchange) {
            let offered = [
                ("code", code),
                ("redirect_uri", redirect_uri),
                ("code_verifier", verifier.unwrap_or_default()),
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
            let (response, extracted) = run.execute_lifecycle(resource, &inputs).await?;
            run.save(&extracted.saved);
            let saved = super::oauth2::apply_token_response(
                &run,
                &response.body,
                "oauthOnTokenExchange",
                true,
            )?;
            run.save(&saved);
        } else {
            let configuration = run.configuration();
            let mut fields = vec![
                ("grant_type".to_owned(), "authorization_code".to_owned()),
                ("code".to_owned(), code.to_owned()),
                ("redirect_uri".to_owned(), redirect_uri.to_owned()),
            ];
            if let Some(verifier) = verifier {
                fields.push(("code_verifier".into(), verifier.to_owned()));
            }
            let request = super::oauth2::token_request(
                &run,
                configuration,
                "oauth.token.url",
                "authorization_code",
                fields,
            )?;
            let response = run
                .send_lifecycle(&request, "oauth2 authorization_code")
                .await?;
            let saved = super::oauth2::apply_token_response(
                &run,
                &response.body,
                "oauth2 authorization_code",
                false,
            )?;
            run.save(&saved);
        }
        run.persist_pending()
    }
}

/// One callback request, handed from the listener to the waiting flow with a channel for the
/// page to answer.
struct Callback {
    parameters: HashMap<String, String>,
    reply: oneshot::Sender<(StatusCode, Html<String>)>,
}

/// The page that forwards a URL fragment (`#code=...`, implicit-style vendors) as a query string.
const FRAGMENT_PAGE: &str = "<!doctype html><meta charset=utf-8><title>engine authorize</title>\
<p id=m>Waiting for the sign-in answer…</p><script>if(location.hash.length>1){\
location.replace(location.pathname+'?'+location.hash.slice(1));}else{\
document.getElementById('m').textContent='No sign-in answer in this address.';}</script>";

async fn callback(
    AxumState(sender): AxumState<mpsc::Sender<Callback>>,
    uri: Uri,
) -> (StatusCode, Html<String>) {
    let parameters: HashMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    if !["code", "error", "state"]
        .iter()
        .any(|name| parameters.contains_key(*name))
    {
        return (StatusCode::OK, Html(FRAGMENT_PAGE.to_owned()));
    }
    let (reply, answer) = oneshot::channel();
    if sender.send(Callback { parameters, reply }).await.is_err() {
        return page(
            StatusCode::GONE,
            "This sign-in is over. You can close this window.",
        );
    }
    answer.await.unwrap_or_else(|_| {
        page(
            StatusCode::GONE,
            "This sign-in is over. You can close this window.",
        )
    })
}

fn page(status: StatusCode, text: &str) -> (StatusCode, Html<String>) {
    (
        status,
        Html(format!(
            "<!doctype html><meta charset=utf-8><title>engine authorize</title><p>{text}</p>"
        )),
    )
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

//! `engine authorize CONNECTOR --config INSTANCE` (or `--instance ID --store URL`): signs a
//! person in through a browser (OAuth2 authorization code, with PKCE when the connector enables
//! it; OAuth 1.0a, whose callback's `oauth_token` and `oauth_verifier` stand for `state` and
//! `code`) and saves the tokens; a `needs-reauth` mark is cleared.
//!
//! The runtime builds the authorization URL; engine-service decides which connectors sign in
//! so and finishes the sign-in (the exchange, the history, `needs-reauth` cleared), as it does
//! for `engine serve`'s callback. This module owns the loopback callback server: it listens on the host and port of `oauth.callback.url`, accepts the
//! code from the query string or the URL fragment (a small page forwards a fragment), answers
//! `400` to a wrong or missing `state` and keeps waiting, and shows the vendor's error when the
//! person declines.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State as AxumState;
use axum::http::{StatusCode, Uri};
use axum::response::Html;
use engine_runtime::{
    AuthorizationRequest, Engine, EngineBuilder, Observer, RunError, RunErrorKind,
};
use engine_spec::Connector;
use engine_store::{FileStore, InstanceStore};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::Exit;
use crate::printer;
use crate::run::{EgressArg, InstanceArgs, Target, load_connector, prepare};

#[derive(Debug, clap::Args)]
pub(crate) struct AuthorizeArgs {
    /// The connector file (built-in `oauth2` authentication).
    connector: PathBuf,
    #[command(flatten)]
    target: InstanceArgs,
    /// Print the URL only; do not open a browser.
    #[arg(long)]
    no_browser: bool,
    /// How long to wait for the browser's callback (`5m`, `90s`, or seconds).
    #[arg(long, value_name = "DURATION", default_value = "300", value_parser = crate::duration::parse_timeout)]
    timeout: Duration,
    /// Which addresses the token requests may connect to: `public` (public and loopback),
    /// `private` (also private networks), `any` (also link-local, such as the cloud metadata
    /// address).
    #[arg(long, value_name = "POLICY", value_enum, default_value_t = EgressArg::Any)]
    egress: EgressArg,
}

pub(crate) fn authorize(args: &AuthorizeArgs) -> Exit {
    let Some(connector) = load_connector(&args.connector) else {
        return Exit::Invalid;
    };
    let name = args.connector.display().to_string();
    if let Err(error) = engine_service::authorize::check_code_flow(&connector, &name) {
        let title = error.to_string();
        let help = "`engine authorize` is for OAuth2's authorization code grant and OAuth 1.0a; this connector obtains its tokens by itself on `engine run` from the credentials in the instance file";
        let mut message = crate::render::Message::new(crate::render::Level::Error, &title);
        message.help = Some(help);
        printer::error(&message);
        return Exit::Invalid;
    }
    let Some(target) = args.target.target() else {
        return Exit::Usage;
    };
    let (runtime, store, instance, saved_to): (_, Arc<dyn InstanceStore>, &str, String) =
        match target {
            Target::File(config) => {
                let Some(runtime) = prepare(config, &connector) else {
                    return Exit::Invalid;
                };
                let store: Arc<dyn InstanceStore> = Arc::new(FileStore::for_file(config));
                (
                    runtime,
                    store,
                    "instance",
                    format!("`{}`", config.display()),
                )
            }
            Target::Stored {
                instance,
                store: url,
            } => {
                let Some(runtime) = crate::store::runtime() else {
                    return Exit::Invalid;
                };
                let store = match runtime.block_on(crate::store::open_for(url, &connector)) {
                    Ok(store) => store,
                    Err(failure) => return failure.print(),
                };
                (runtime, store, instance, format!("instance `{instance}`"))
            }
        };
    let result = runtime.block_on(async {
        let engine: Engine = EngineBuilder::new().egress(args.egress.into()).build()?;
        // Warnings (a lifecycle resource not sent) whatever the verbosity.
        let observer = crate::run::Verbose::new(false, &connector);
        let request = engine
            .begin_authorization(&connector, &*store, instance, &observer)
            .await?;
        let listener = TcpListener::bind((request.host.as_str(), request.port))
            .await
            .map_err(|error| RunErrorKind::Authorize {
                message: format!(
                    "cannot listen on `{}:{}` for the callback: {error}",
                    request.host, request.port
                ),
            })?;
        printer::stdout(&format!("{}\n", request.url));
        if !args.no_browser {
            open_browser(&request.url);
        }
        printer::verbose("waiting for the browser to come back with the sign-in answer...");
        let timeout = args.timeout;
        let place = Place {
            store: &*store,
            instance,
        };
        let warnings = serve(
            &engine, &connector, &place, &request, listener, timeout, &observer,
        )
        .await?;
        printer::warnings(&warnings);
        Ok(())
    });
    for notice in store.take_notices() {
        printer::verbose(&format!("note: {notice}"));
    }
    match result {
        Ok(()) => {
            printer::verbose(&format!("signed in; tokens saved to {saved_to}"));
            Exit::Success
        }
        Err(error) => crate::run::report_in(
            &error,
            &connector,
            &crate::run::Reported {
                target: Some(target),
                skipped: Vec::new(),
            },
        ),
    }
}

/// Where the tokens go: an instance of a store.
struct Place<'a> {
    store: &'a dyn InstanceStore,
    instance: &'a str,
}

/// Serves the callback until a genuine one arrives (or `timeout`), then exchanges its code
/// (engine-service's [`complete`](engine_service::authorize::complete): the tokens, the
/// history, `needs-reauth` cleared); returns what could not be written beside.
async fn serve(
    engine: &Engine,
    connector: &Connector,
    place: &Place<'_>,
    request: &AuthorizationRequest,
    listener: TcpListener,
    timeout: Duration,
    observer: &dyn Observer,
) -> Result<Vec<engine_service::Warning>, RunError> {
    let (sender, mut callbacks) = mpsc::channel::<Callback>(8);
    let (stop, stopped) = oneshot::channel::<()>();
    let router = Router::new()
        .route(&request.path, axum::routing::get(callback))
        .with_state(sender);
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router)
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
        let parameters = &oauth1_as_code(&callback.parameters);
        if parameters.get("state") != Some(&request.state) {
            let _ = callback.reply.send(page(
                StatusCode::BAD_REQUEST,
                "The sign-in answer does not match this request (wrong or missing state). Still waiting for the genuine callback.",
            ));
            continue;
        }
        if let Some(error) = parameters.get("error") {
            let message = engine_service::authorize::declined_message(
                error,
                parameters.get("error_description").map(String::as_str),
            );
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
        let result = engine_service::authorize::complete(
            engine,
            connector,
            place.store,
            place.instance,
            observer,
            request,
            code,
        )
        .await;
        let reply = match &result {
            Ok(_) => page(StatusCode::OK, "Signed in. You can close this window."),
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

/// An OAuth 1.0a callback (`oauth_token`, `oauth_verifier`, RFC 5849 2.2) read as the code
/// flow's: the request token is the `state` it must bring back, the verifier its `code`.
fn oauth1_as_code(parameters: &HashMap<String, String>) -> HashMap<String, String> {
    let mut read = parameters.clone();
    if let Some(verifier) = parameters.get("oauth_verifier") {
        read.insert("code".to_owned(), verifier.clone());
        if let Some(token) = parameters.get("oauth_token") {
            read.insert("state".to_owned(), token.clone());
        }
    }
    read
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
    if !["code", "error", "state", "oauth_verifier"]
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

/// Opens `url` in the default browser; a failure only means the person opens it by hand.
fn open_browser(url: &str) {
    let command = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let _ = std::process::Command::new(command)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

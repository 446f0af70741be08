//! [`Emulator`]: binds the listener, builds the router and owns the background server task.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::middleware::from_fn_with_state;
use axum::response::Response;
use axum::routing::{any, get, post};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::state::{AppState, json_error, not_found};
use crate::{EmulatorConfig, Stats, api, oauth, session};

/// How long [`Emulator::shutdown`] waits for open connections before aborting the server task.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running vendor emulator on `127.0.0.1`.
///
/// Dropping the handle starts a graceful shutdown in the background; [`Emulator::shutdown`] also
/// waits for the server task to finish.
#[derive(Debug)]
pub struct Emulator {
    addr: SocketAddr,
    state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Emulator {
    /// Binds `127.0.0.1:port` (`0` picks a free port) and serves in a background tokio task.
    ///
    /// Must be called inside a tokio runtime. Returns the running emulator, or the error from
    /// binding the port (for example when it is already in use).
    pub async fn start(config: EmulatorConfig, port: u16) -> std::io::Result<Emulator> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
        let addr = listener.local_addr()?;
        let state = AppState::new(config);
        let app = router(state.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let signal = async move {
                // Either an explicit stop or the handle being dropped ends the server.
                let _ = stopped.await;
            };
            // `serve` only fails on listener errors it cannot recover from; the task just ends.
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .await;
        });
        Ok(Emulator {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Returns the bound address, with the real port when `0` was asked for.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Returns the base URL, `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Returns a snapshot of the request counters.
    pub fn stats(&self) -> Stats {
        self.state.lock().stats.clone()
    }

    /// Expires every access and session token issued so far; refresh tokens stay valid.
    ///
    /// Tokens issued afterwards live their normal lifetime.
    pub fn expire_all_tokens(&self) {
        self.state.lock().store.expire_all(Instant::now());
    }

    /// Revokes every refresh token and expires every access and session token, as a vendor does
    /// when a user withdraws consent: the next refresh fails with `invalid_grant`.
    pub fn revoke_all_tokens(&self) {
        self.state.lock().store.revoke_all(Instant::now());
    }

    /// Stops accepting connections, lets open ones finish (up to 5 seconds) and waits for the
    /// server task to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Returns the full router: token endpoint, login, protected API and admin routes.
fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/api/v1/me", get(api::me))
        .route(
            "/api/v1/contacts",
            get(api::list_contacts).post(api::create_contact),
        )
        .route("/api/v1/contacts/{id}", get(api::get_contact))
        .route("/api/v1/echo", get(api::echo).post(api::echo))
        .route("/api/v1/{*rest}", any(not_found))
        .layer(from_fn_with_state(state.clone(), api::authenticate));
    Router::new()
        .route("/oauth/token", post(oauth::token))
        .route("/session/login", post(session::login))
        .route("/_stats", get(stats))
        .route("/_admin/expire", post(expire))
        .route("/_admin/revoke", post(revoke))
        .merge(protected)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Handles `GET /_stats`: the counters as JSON.
async fn stats(State(state): State<AppState>) -> Json<Stats> {
    Json(state.lock().stats.clone())
}

/// Handles `POST /_admin/expire`: expires all access and session tokens, then 204.
async fn expire(State(state): State<AppState>) -> StatusCode {
    state.lock().store.expire_all(Instant::now());
    StatusCode::NO_CONTENT
}

/// Handles `POST /_admin/revoke`: revokes every token, then 204.
async fn revoke(State(state): State<AppState>) -> StatusCode {
    state.lock().store.revoke_all(Instant::now());
    StatusCode::NO_CONTENT
}

/// Answers a known path with the wrong method with 405 `method_not_allowed`.
async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        json!({"error": "method_not_allowed", "message": format!("{method} is not allowed on {}", uri.path())}),
    )
}

//! `engine serve`: the HTTP API over the engine's operations (`/v1`, JSON, problem details) and
//! the scheduler that keeps instances fresh with no traffic. It owns HTTP and the scheduler's
//! timing; what an operation decides (store opening, the registry, the refresh policy, history)
//! is engine-service's. It never prints: the front end is told of the scheduler's [`Event`]s;
//! what it does is counted for `/metrics` ([`metrics`]) and shown on the status page at `/`.
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use engine_server::{ServeOptions, Server};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let opened = engine_service::open_store("sqlite:instances.db").await?;
//! let (registry, _unloadable) = engine_service::Registry::load("connectors".as_ref())?;
//! let engine = engine_runtime::EngineBuilder::new().build()?;
//! let options = ServeOptions::new("127.0.0.1:8080".parse()?);
//! let server = Server::bind(opened, registry, engine, options, Arc::new(|_event| {})).await?;
//! server.run(async { tokio::signal::ctrl_c().await.unwrap_or(()) }).await?;
//! # Ok(())
//! # }
//! ```

mod api;
mod app;
mod auth;
mod cache;
mod connect;
mod events;
pub mod metrics;
mod openapi;
mod page;
mod problem;
pub mod scheduler;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine_runtime::{Clock, Engine, SystemClock};
use engine_service::{Opened, RefreshOptions, Registry};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

pub use auth::{Caller, KEY_CACHE_SECONDS, Rate};
pub use problem::Problem;
pub use scheduler::Event;
pub use webhooks::{WebhookSecret, Webhooks};

/// How long a resource call's instance state is kept in memory by default
/// ([`ServeOptions::state_cache`]).
pub const DEFAULT_STATE_CACHE: Duration = Duration::from_secs(1);

/// How the server listens and refreshes.
#[derive(Clone)]
pub struct ServeOptions {
    /// The address to listen on (port 0: any free port, see [`Server::local_addr`]).
    pub listen: SocketAddr,
    /// How many refreshes run at once, rejections before `needs-reauth` (the runtime's refresh
    /// policy), history kept, the claims' lease; `ahead` and `connector` as for `engine
    /// refresh` (unset: every instance, due when the store's schedule says).
    pub refresh: RefreshOptions,
    /// The scheduler's time: the engine's (given to its builder too).
    pub clock: Arc<dyn Clock>,
    /// The requests each API key may make ([`Rate::default`]: 100 a second).
    pub rate: Rate,
    /// Where the store's events are delivered as webhooks ([`webhooks`]); `None`: they are
    /// only listed (`GET /v1/events`) and wait in the outbox for a server that delivers them.
    pub webhooks: Option<Webhooks>,
    /// The service's URL as browsers and vendors reach it (`https://engine.example.com`): a
    /// sign-in's redirect URI is it and `/v1/oauth/callback`. `None`: `http://` and the address
    /// listened on.
    pub public_url: Option<String>,
    /// The status page at `/` answers callers from any address; `false` (the default): from a
    /// loopback address only, since it lists every key's instances.
    pub open_status_page: bool,
    /// How long a resource call may run on an instance's state this process read or wrote
    /// less than this long ago, from memory (1 s by default; zero: every call reads the
    /// store). Another process's change is seen at the latest this long after it, a token it
    /// rotated at once on the vendor's 401 (docs/serve.md, "The state cache").
    pub state_cache: Duration,
}

impl ServeOptions {
    /// Listens on `listen`, with the default refresh options.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            refresh: RefreshOptions::default(),
            clock: Arc::new(SystemClock),
            rate: Rate::default(),
            webhooks: None,
            public_url: None,
            open_status_page: false,
            state_cache: DEFAULT_STATE_CACHE,
        }
    }
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ServeOptions")
            .field("listen", &self.listen)
            .field("refresh", &self.refresh)
            .field("rate", &self.rate)
            .field("webhooks", &self.webhooks)
            .field("public_url", &self.public_url)
            .field("open_status_page", &self.open_status_page)
            .field("state_cache", &self.state_cache)
            .finish_non_exhaustive()
    }
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The address cannot be listened on.
    #[error("cannot listen on `{addr}`: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The system's error.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("the server failed: {0}")]
    Serve(std::io::Error),
    /// The API keys cannot be checked: no `ENGINE_SECRET_KEY` to derive their server key from.
    #[error("{0}")]
    Keys(engine_service::Error),
    /// The webhooks' HTTP client cannot be set up.
    #[error("cannot deliver webhooks: {0}")]
    Webhooks(engine_runtime::TransportError),
}

/// A server bound to its address, not serving yet.
pub struct Server {
    listener: TcpListener,
    app: Arc<app::App>,
    connect: Arc<connect::Connect>,
    auth: Arc<auth::Auth>,
    events: Arc<dyn Fn(Event) + Send + Sync>,
    webhooks: Option<(Webhooks, Arc<dyn engine_runtime::Transport>)>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Server")
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds `options.listen`. `events` is told of each scheduled refresh and failure.
    ///
    /// Fails with [`Error::Keys`] when `opened` has no secret key (`ENGINE_SECRET_KEY`): every
    /// caller presents an API key, checked against its MAC under a key derived from it.
    pub async fn bind(
        opened: Opened,
        registry: Registry,
        engine: Engine,
        options: ServeOptions,
        events: Arc<dyn Fn(Event) + Send + Sync>,
    ) -> Result<Self, Error> {
        let mac = engine_service::keys::KeyMac::new(opened.keys()).map_err(Error::Keys)?;
        // Every store the server makes wraps the plain one: with the cache on, each write of
        // this process drops what the cache holds of its instance.
        let state_cache = (!options.state_cache.is_zero()).then(|| {
            Arc::new(cache::StateCache::new(
                options.state_cache,
                cache::MAX_CACHED,
            ))
        });
        let opened = match &state_cache {
            Some(state_cache) => Opened::new(
                Arc::new(cache::CachedStore::invalidating(
                    Arc::clone(opened.plain()),
                    state_cache,
                )),
                opened.keys().cloned(),
            ),
            None => opened,
        };
        // The key check's read of the instance a call names: from the cache.
        let instances: Arc<dyn engine_store::InstanceStore> = match &state_cache {
            Some(state_cache) => Arc::new(cache::CachedStore::reading(
                Arc::clone(opened.plain()),
                state_cache,
            )),
            None => Arc::clone(opened.plain()),
        };
        let flow_keys =
            engine_service::authorize::FlowKeys::new(opened.keys()).map_err(Error::Keys)?;
        let auth = Arc::new(auth::Auth::new(
            instances,
            mac,
            Arc::clone(&options.clock),
            options.rate,
        ));
        let listener = TcpListener::bind(options.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: options.listen,
                source,
            })?;
        let webhooks = match options.webhooks {
            Some(webhooks) => {
                let transport = engine_runtime::HttpTransport::new(
                    Some(webhooks.timeout),
                    webhooks.timeout,
                    engine_runtime::DEFAULT_MAX_BODY,
                )
                .map_err(Error::Webhooks)?;
                Some((
                    webhooks,
                    Arc::new(transport) as Arc<dyn engine_runtime::Transport>,
                ))
            }
            None => None,
        };
        let metrics = Arc::new(metrics::Metrics::default());
        if webhooks.is_some() {
            metrics.deliver_webhooks();
        }
        let app = Arc::new(app::App {
            opened: Arc::new(opened),
            registry: Arc::new(Mutex::new(registry)),
            engine: Arc::new(engine),
            options: options.refresh,
            wake: Arc::new(Notify::new()),
            clock: options.clock,
            metrics,
            deliver: Arc::new(Notify::new()),
            open_status_page: options.open_status_page,
            sealed: Mutex::default(),
            state_cache,
        });
        let public_url = match options.public_url {
            Some(url) => url,
            None => match listener.local_addr() {
                Ok(addr) => format!("http://{addr}"),
                Err(_) => format!("http://{}", options.listen),
            },
        };
        let connect = Arc::new(connect::Connect {
            app: Arc::clone(&app),
            keys: flow_keys,
            redirect_uri: format!(
                "{}{}",
                public_url.trim_end_matches('/'),
                connect::CALLBACK_PATH
            ),
        });
        Ok(Self {
            listener,
            app,
            connect,
            auth,
            events,
            webhooks,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves the API and runs the scheduler (and the webhook sender, with
    /// [`ServeOptions::webhooks`]) until `shutdown` resolves; then stops accepting, finishes the
    /// requests, the batch of refreshes and the delivery under way, and returns.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let (stop, stopped) = watch::channel(false);
        let app = &self.app;
        let sender = self.webhooks.map(|(webhooks, transport)| {
            let sender = Arc::new(webhooks::Sender {
                store: Arc::clone(app.opened.plain()),
                transport,
                webhooks,
                clock: Arc::clone(&app.clock),
                metrics: Arc::clone(&app.metrics),
                wake: Arc::clone(&app.deliver),
            });
            tokio::spawn(sender.run(stopped.clone()))
        });
        // A scheduled refresh may have published an event: the sender looks at once.
        let events = {
            let deliver = Arc::clone(&app.deliver);
            let told = self.events;
            Arc::new(move |event: Event| {
                if matches!(event, Event::Refreshed { .. } | Event::Failed { .. }) {
                    deliver.notify_one();
                }
                told(event);
            })
        };
        let scheduler = scheduler::Scheduler {
            clock: Arc::clone(&app.clock),
            opened: Arc::clone(&app.opened),
            registry: Arc::clone(&app.registry),
            engine: Arc::clone(&app.engine),
            options: app.options.clone(),
            wake: Arc::clone(&app.wake),
            events,
            metrics: Arc::clone(&app.metrics),
        };
        let scheduler = tokio::spawn(scheduler.run(stopped));
        let pacer = tokio::spawn(keep_a_timer_pending());
        let router = api::router(Arc::clone(&self.app))
            .merge(connect::router(self.connect))
            .merge(openapi::router());
        // Every request goes through the key check, which knows the peer's address (the status
        // page answers loopback callers only).
        let served = axum::serve(
            self.listener,
            auth::Gate::per_connection(self.auth, Arc::clone(&self.app), router),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = stop.send(true);
        })
        .await;
        // The scheduler and the sender stop at their `stop` (or when it is dropped, on an
        // error), each after the refresh or delivery under way.
        pacer.abort();
        let _ = scheduler.await;
        if let Some(sender) = sender {
            let _ = sender.await;
        }
        served.map_err(Error::Serve)
    }
}

/// Keeps a timer of the runtime due within half a second, forever. Each call's run is bounded
/// by a deadline (a timer due in `--timeout`); a timer due earlier than every other one wakes
/// the runtime's thread parked on the network to tell it so (a system call and a thread
/// switch), which happened on one call in eight under load when no other timer was pending
/// (docs/BENCHMARKS.md, "engine serve: a proxied call"). With this one pending, a call's
/// deadline is never the earliest. It costs two wake-ups a second.
async fn keep_a_timer_pending() {
    let mut ticks = tokio::time::interval(Duration::from_millis(500));
    loop {
        ticks.tick().await;
    }
}

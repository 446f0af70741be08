//! What every handler shares: the store, the connectors, the engine, the scheduler's wake-up and
//! clock, the metrics and the webhook sender's wake-up.

use std::sync::{Arc, Mutex};

use engine_runtime::Engine;
use engine_service::{Opened, RefreshOptions, Registry};
use engine_spec::Connector;
use engine_store::Versioned;
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::problem::Failure;

/// What every handler shares.
pub(crate) struct App {
    pub(crate) opened: Arc<Opened>,
    pub(crate) registry: Arc<Mutex<Registry>>,
    pub(crate) engine: Arc<Engine>,
    pub(crate) options: RefreshOptions,
    /// Wakes the scheduler after a change.
    pub(crate) wake: Arc<Notify>,
    /// The scheduler's time.
    pub(crate) clock: Arc<dyn engine_runtime::Clock>,
    /// What `/metrics` shows.
    pub(crate) metrics: Arc<Metrics>,
    /// Wakes the webhook sender after a refresh: an event may be waiting.
    pub(crate) deliver: Arc<Notify>,
    /// The status page answers callers from any address, not only loopback ones.
    pub(crate) open_status_page: bool,
}

impl App {
    /// The connector `name` names.
    pub(crate) fn connector(&self, name: &str) -> Result<Arc<Connector>, Failure> {
        let mut registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(registry.get(name)?)
    }

    /// The instance `id` as stored (encrypted values stay so).
    pub(crate) async fn stored(&self, id: &str) -> Result<Versioned, Failure> {
        Ok(self.opened.plain().load(id).await?)
    }
}

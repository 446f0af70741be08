//! What every handler shares: the store, the connectors, the engine, the scheduler's wake-up and
//! clock, the metrics and the webhook sender's wake-up.

use std::sync::{Arc, Mutex, PoisonError};

use engine_runtime::Engine;
use engine_service::{Opened, RefreshOptions, Registry};
use engine_spec::Connector;
use engine_store::{InstanceStore, Versioned};
use tokio::sync::Notify;

use crate::cache::{CachedStore, StateCache};
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
    /// The store that encrypts and decrypts by a connector's rule ([`App::sealed`]), by the
    /// connector's name, with the connector it was made for.
    pub(crate) sealed: Mutex<foldhash::HashMap<String, Sealed>>,
    /// The states resource calls run on, read less than its time to live ago; `None`: off
    /// (`--state-cache 0`).
    pub(crate) state_cache: Option<Arc<StateCache>>,
}

/// A connector, the store that seals its instances' secrets, and the same store whose reads
/// a resource call makes come from the state cache.
type Sealed = (
    Arc<Connector>,
    Arc<dyn InstanceStore>,
    Arc<dyn InstanceStore>,
);

impl App {
    /// The connector `name` names.
    pub(crate) fn connector(&self, name: &str) -> Result<Arc<Connector>, Failure> {
        let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(registry.get(name)?)
    }

    /// The store of the instances of `connector`, which `name` names: their secrets encrypted
    /// and decrypted by its rule. Made once per connector (and again when its file is
    /// reloaded), not on every call: the rule asks the connector about each of its keys.
    pub(crate) fn sealed(&self, name: &str, connector: &Arc<Connector>) -> Arc<dyn InstanceStore> {
        self.sealed_pair(name, connector).0
    }

    /// [`App::sealed`], its reads answered from the state cache when it is on: the store a
    /// resource call runs on. Its writes, and every read under the instance's lock (a
    /// refresh), go to the store.
    pub(crate) fn calling(&self, name: &str, connector: &Arc<Connector>) -> Arc<dyn InstanceStore> {
        self.sealed_pair(name, connector).1
    }

    fn sealed_pair(
        &self,
        name: &str,
        connector: &Arc<Connector>,
    ) -> (Arc<dyn InstanceStore>, Arc<dyn InstanceStore>) {
        let mut sealed = self.sealed.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((made_for, store, calling)) = sealed.get(name)
            && Arc::ptr_eq(made_for, connector)
        {
            return (Arc::clone(store), Arc::clone(calling));
        }
        let store = self.opened.sealed(Some(connector));
        let calling: Arc<dyn InstanceStore> = match &self.state_cache {
            Some(cache) => Arc::new(CachedStore::reading(Arc::clone(&store), cache)),
            None => Arc::clone(&store),
        };
        sealed.insert(
            name.to_owned(),
            (
                Arc::clone(connector),
                Arc::clone(&store),
                Arc::clone(&calling),
            ),
        );
        (store, calling)
    }

    /// The instance `id` as stored (encrypted values stay so).
    pub(crate) async fn stored(&self, id: &str) -> Result<Versioned, Failure> {
        Ok(self.opened.plain().load(id).await?)
    }
}

//! The engine's operations, for every front end (the `engine` command, a server): what to do,
//! never how to say it. This crate owns opening a store from its URL and the encryption rules
//! ([`open_store`], [`Opened::sealed`], [`secret_rule`]), connector loading and the
//! [`Registry`] that finds a connector by the name an instance records, the refresh policy
//! ([`Refresh`]: claiming the due instances, N at a time, the failure state machine of
//! backoff, cooldown and `needs-reauth`, and its [`Transition`]s),
//! adding and removing instances ([`import`], [`check_values`], [`delete`]), the refresh
//! history ([`Recorder`], [`after_run`]), the freshness check a status reports
//! ([`freshness`]), the events of refreshes and their outbox ([`events`]), the service's API
//! keys and instance owners ([`keys`]), and signing an instance in through a browser, its flow
//! kept in the store between its two halves ([`authorize`]). It returns typed
//! outcomes and one [`Error`]; it never prints, parses arguments or exits.
//!
//! The entry point of a scheduled refresh is [`Refresh::start`]:
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use engine_service::{Outcome, Refresh, RefreshOptions, Registry};
//!
//! # async fn demo() -> Result<(), engine_service::Error> {
//! let opened = engine_service::open_store("file:instances").await?;
//! let (mut registry, _unloadable) = Registry::load("connectors".as_ref())?;
//! let engine = Arc::new(engine_runtime::EngineBuilder::new().build().expect("an engine"));
//! let mut refresh =
//!     Refresh::start(&opened, &mut registry, engine, &RefreshOptions::default()).await?;
//! while let Some(refreshed) = refresh.next().await {
//!     let refreshed = refreshed?;
//!     if let Outcome::Rejected { .. } = refreshed.outcome {
//!         // sign `refreshed.id` in again
//!     }
//! }
//! # Ok(())
//! # }
//! ```

pub mod authorize;
mod error;
pub mod events;
mod freshness;
pub mod history;
mod instances;
pub mod keys;
pub mod refresh;
mod registry;
mod status;
mod store;

pub use error::{Error, ErrorKind, Warning};
pub use freshness::{InstanceState, LastRefresh, freshness, last_refresh};
pub use history::{Recorder, Trigger, after_run};
pub use instances::{DeleteConnector, NewInstance, OnDelete, check_values, delete, import};
pub use refresh::{
    Claimed, Due, Failure, NEEDS_REAUTH, Outcome, Refresh, RefreshOptions, Refreshed, Transition,
    lifetime_of,
};
pub use registry::{Registry, load_connector};
pub use store::{
    Opened, Rekeyed, SecretKeys, WRITE_LOCK_TIMEOUT, clear_needs_reauth, open_for, open_plain,
    open_store, open_url, rekey, secret_rule, set_values, update,
};

//! Execution of connector resources: render, build, send, extract, and the token lifecycle.
//! This is the only crate that knows HTTP and async.
//!
//! The entry point is [`Engine::run`]: it runs one resource of a validated
//! [`engine_spec::Connector`] against one instance held in an [`engine_store::StateStore`],
//! obtaining and refreshing the token on the way (see `docs/token-lifecycle.md`), and reports
//! each step to an [`Observer`]. Nothing here prints.
//!
//! ```no_run
//! use engine_runtime::{Engine, Inputs, NoObserver, RunRequest};
//! use engine_store::FileStore;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let report = engine_spec::load("connectors/achievers.json".as_ref())?;
//! let connector = report.connector().expect("valid connector");
//! let store = FileStore::for_file("instance.json");
//! let engine = Engine::new()?;
//! let output = engine
//!     .run(
//!         &RunRequest {
//!             connector,
//!             selector: "list-users",
//!             inputs: &Inputs::default(),
//!             instance: "instance",
//!             dry_run: false,
//!         },
//!         &store,
//!         &NoObserver,
//!     )
//!     .await?;
//! println!("{}", output.body);
//! # Ok(())
//! # }
//! ```

mod auth;
mod body;
mod clock;
mod configuration;
mod engine;
mod extract;
mod lifecycle;
mod observer;
mod redact;
mod request;
mod run_error;
mod send;

pub use auth::authorize::PendingAuthorization;
pub use auth::oauth2;
pub use body::{Part, PartContent};
pub use clock::{Clock, ManualClock, SystemClock};
pub use engine::{Engine, EngineBuilder, RunOutput, RunRequest};
pub use extract::parse_seconds;
pub use lifecycle::{Freshness, Lifecycle, check_fresh};
pub use observer::{Event, NoObserver, Observer, RefreshReason};
pub use redact::{MASK, Redactor, Secret, is_secret_name};
pub use request::{Inputs, PreparedRequest, RequestBody, redact_url};
pub use run_error::{MissingKey, RunError, RunErrorKind};
pub use send::VendorResponse;

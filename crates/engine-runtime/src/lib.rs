//! Execution of connector resources: render, build, send, extract, and the token lifecycle.
//! This is the only crate that knows HTTP and async.
//!
//! The entry point is [`Engine::run`]: it runs one resource of a validated
//! [`engine_spec::Connector`] against one instance held in an [`engine_store::InstanceStore`],
//! obtaining and refreshing the token on the way (see `docs/running.md`, "The token lifecycle"), and reports
//! each step to an [`Observer`]. Nothing here prints. One [`Engine`] serves a whole process:
//! share it between tasks; it holds one HTTP connection pool and makes concurrent refreshes of
//! one instance share one.
//!
//! The parts, each in its own module (`docs/architecture.md` draws them):
//! - authentication without I/O: a [`Scheme`] per way a connector authenticates decides
//!   freshness, the [`Step`]s that obtain a token, how an answer becomes state, and how the token
//!   goes onto a request;
//! - one [`Transport`]: [`HttpTransport`] (reqwest, a body limit), [`RecordingTransport`]
//!   (`--dry-run`: records, sends nothing); the [`RetryPolicy`] in one place;
//! - where requests go: an instance's credentials only to its own origins (`origins.rs`,
//!   checked before each request), and only to the addresses an [`Egress`] policy allows;
//! - the store: any [`engine_store::InstanceStore`], with versioned, compare-and-swap writes.
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
mod authorization;
mod body;
pub mod ceql;
mod clock;
mod configuration;
mod differences;
mod egress;
mod engine;
mod extract;
mod hooks;
mod observer;
mod origins;
mod pages;
mod pagination;
mod prepared_request;
#[cfg(test)]
mod properties;
mod redact;
mod refresh_policy;
mod request;
mod run_error;
mod schedule;
mod snapshot;
mod tls;
mod transport;
mod value;
mod xml;

pub use auth::authorize::{AuthorizationFlow, AuthorizationRequest};
pub use auth::lifetime::{LifetimeAdjusted, LifetimeProblem, MAX_LIFETIME_SECONDS};
pub use auth::oauth2::{self, Grant};
pub use auth::{Absorbed, Freshness, Scheme, Step, check_fresh};
pub use body::Body;
pub use clock::{Clock, ManualClock, SystemClock};
pub use differences::{changes_the_request, differences, executed, plan};
pub use egress::{AddressClass, AddressRefused, Egress};
pub use engine::{Engine, EngineBuilder, RefreshRequest, RunOutput, RunRequest};
pub use hooks::leave_sandbox_to_exit;
pub use observer::{Event, NoObserver, Observer, RefreshReason, RefreshReport, fingerprint};
pub use pages::{MAX_PAGES, PageStop, PagedOutput, Pages, run_pages};
pub use pagination::{NEXT_PAGE_HEADER, NextPage};
pub use prepared_request::{Part, PartContent, PreparedRequest, RequestBody, SecretSlot};
pub use redact::{MASK, Redactor, Secret, is_secret_name};
pub use refresh_policy::{Jitter, RefreshOutcome, RefreshPolicy, SeededJitter};
pub use request::{InputFile, Inputs};
pub use run_error::{InputKind, MissingKey, RunError, RunErrorKind};
pub use schedule::{AHEAD_DIVISOR, JITTER_DIVISOR, estimated_schedule, jitter_ms, schedule_of};
pub use transport::{
    DEFAULT_MAX_BODY, HttpTransport, RecordingTransport, RetryPolicy, Transport, TransportError,
    TransportErrorKind, VendorResponse, parse_retry_after,
};
pub use value::parse_seconds;

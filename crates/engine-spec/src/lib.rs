//! Connector definitions: the wire types, the loader, the JSON Schema, semantic validation and
//! diagnostics. This crate knows nothing about HTTP or async: `engine validate` builds on it
//! alone.
//!
//! The entry point is [`validate::load`] (or [`validate::validate`] for text in memory): it
//! parses the file, checks it against the schema, decodes the wire types in [`raw`] and validates
//! their meaning into a [`Connector`]. It collects every problem as a [`Diagnostic`] with a stable
//! [`Code`] and a [`Location`]; a [`Report`] without errors holds the connector.
//!
//! ```
//! use engine_spec::{SourceFile, validate};
//!
//! let text = r#"{
//!   "name": "ipify",
//!   "configuration": [{"key": "base.url", "type": "TEXTFIELD_1000", "defaultValue": "https://api.ipify.org"}],
//!   "resources": [{"name": "ip", "type": "API", "vendorMethod": "GET", "vendorPath": "/",
//!                  "parameters": [{"name": "json", "type": "value", "vendorName": "format", "vendorType": "query"}]}]
//! }"#;
//! let report = validate(SourceFile::new("ipify.json", text));
//! assert!(report.diagnostics().is_empty());
//! let connector = report.connector().expect("valid");
//! assert_eq!(connector.find_resource("ip").unwrap().vendor_method(), "GET");
//! ```
//!
//! Templates ([`template`]) and JSONPaths ([`jsonpath`]) are compiled here, once, at load; the
//! runtime only renders and queries them.

mod borrowed_json;
mod check;
mod diagnostic;
pub mod hook;
pub mod jsonpath;
pub mod kinds;
mod model;
mod parse;
mod pointer;
pub mod raw;
pub mod schema;
mod source;
mod source_map;
pub mod suggest;
pub mod template;
mod validate;

pub use check::chains::MAX_CHAIN;
pub use diagnostic::{Code, Diagnostic, Severity};
pub use model::{
    AuthKind, Authentication, ConfigProperty, Connector, ConnectorId, NOT_SECRET_KEYS, NotExecuted,
    NotExecutedKind, Paging, Parameter, Protocol, RESERVED_KEYS, Resource, SECRET_KEYS, Session,
    WEBHOOK_CALLBACK_KEY, is_credential_slot, is_never_secret, is_secret_name,
};
pub use pointer::JsonPointer;
pub use source::{
    Location, MAX_SOURCE_SIZE, Position, SourceFile, Span, human_size, read_bounded, too_large,
};
pub use source_map::SourceMap;
pub use validate::{DEFAULT_EXPIRES_IN, DEFAULT_SKEW, Report, load, validate};

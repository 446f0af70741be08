//! The one integration-test binary: drives the built `engine` binary against real servers on
//! loopback.
#![allow(missing_docs, unreachable_pub)]
#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a failed unwrap is a failed test, with its location"
)]

mod support;

mod auth;
mod cli;
mod compat_run;
mod docs;
mod egress;
mod engine_test;
mod fidelity;
mod fidelity_bodies;
mod hooks;
mod hostile;
mod hostile_run;
mod instance_lifecycle;
mod instances;
mod lifecycle;
mod pagination;
mod platform_lifecycle;
mod platform_oauth1;
mod platform_oauth1_signin;
mod run;
mod serve;
mod serve_cache;
mod serve_calls;
mod serve_connect;
mod serve_events;
mod serve_keys;
mod serve_page;
mod serve_scale;
mod shared_instances;
mod status;
mod store;
mod tls;
mod wire;

mod validate;

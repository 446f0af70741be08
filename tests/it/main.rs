//! The one integration-test binary: drives the built `engine` binary against real servers on
//! loopback.
#![allow(missing_docs, unreachable_pub)]

mod support;

mod auth;
mod lifecycle;
mod run;
mod store;

mod validate;

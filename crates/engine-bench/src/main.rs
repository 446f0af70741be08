//! Sends `COUNT` requests of one variant of engine-runtime's `run` benchmark (same server,
//! connectors and instances: `crates/engine-runtime/benches/support`), one after the other, and
//! exits. Not a benchmark by itself: `bench/instructions.sh` runs it under callgrind at two counts
//! and reports the instructions each request costs, a figure that, unlike time, does not move
//! with the machine's load.
//!
//! `cargo run --release -p engine-bench -- VARIANT COUNT`, VARIANT one of `reqwest`,
//! `reqwest/json`, `engine/auth-none`, `engine/custom-fresh`.
#![allow(missing_docs)]

use std::sync::Arc;

#[path = "../../engine-runtime/benches/support/mod.rs"]
mod support;

use support::{Setup, bare_request};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(variant), Some(count)) = (args.next(), args.next()) else {
        panic!("usage: requests VARIANT COUNT");
    };
    let count: u32 = count.parse().expect("COUNT is a number");
    let setup = Setup::new();
    let (client, url, engine) = (
        setup.client.clone(),
        setup.url.clone(),
        setup.engine.clone(),
    );
    let (none, custom) = (Arc::clone(&setup.none), Arc::clone(&setup.custom));
    setup
        .runtime
        .block_on(setup.runtime.spawn(async move {
            for _ in 0..count {
                match variant.as_str() {
                    "reqwest" => drop(bare_request(&client, &url, false).await),
                    "reqwest/json" => drop(bare_request(&client, &url, true).await),
                    "engine/auth-none" => drop(none.run_once(&engine).await),
                    "engine/custom-fresh" => drop(custom.run_once(&engine).await),
                    other => panic!("unknown variant {other}"),
                }
            }
        }))
        .expect("the loop task");
}

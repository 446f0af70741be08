//! The engine's per-request overhead: one `GET` against a local axum server on 127.0.0.1, sent
//! by a bare `reqwest::Client` and by [`Engine::run`] with a fresh token.
//!
//! Every variant sends the same request (`GET /api/v1/contacts/c1` with `Accept` and a Bearer
//! `Authorization` header) over a kept-alive connection and reads the whole body, so the
//! difference between them is what the engine adds: resource lookup, the freshness check,
//! rendering, building, sending through its client, parsing and redacting the body.
//!
//! - `reqwest`: a bare `reqwest::Client` (`Client::new()`), the floor;
//! - `reqwest/engine-settings`: a client with the engine's settings (30 s total and 10 s
//!   connect timeouts, its user agent), to tell what those cost from what the engine adds;
//! - `engine/auth-none`: a connector with `"authentication": {"type": "none"}`;
//! - `engine/custom-fresh`: `connectors/demo.json` (custom lifecycle) with an instance whose
//!   token was obtained now and lives a day. The server has no token endpoint: a refresh would
//!   fail the run, so none is made;
//! - `engine/pre-hook`: `engine/auth-none` with its `Authorization` header set by a connector-wide
//!   JavaScript `preRequest` hook instead of a parameter (docs/hooks.md): the difference is what
//!   a typical hook costs.
//!
//! Throughput is in requests per second (one element = one request). Run with
//! `cargo bench -p engine-runtime --bench run`; see docs/BENCHMARKS.md. Each variant is measured
//! in its own block of time, so a shared machine's drift shows in the ratios between them: the
//! `ratio` benchmark measures the ratios themselves, in alternating rounds.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

mod support;

use support::{Setup, bare_request};

fn bench_run(c: &mut Criterion) {
    let setup = Setup::new();
    let mut group = c.benchmark_group("get_contact");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(1));

    // Each sample runs its iterations in one task on a runtime worker, as a service would.
    for (name, client, parse) in [
        ("reqwest", &setup.client, false),
        ("reqwest/engine-settings", &setup.configured, false),
        ("reqwest/json", &setup.configured, true),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                let client = client.clone();
                let url = setup.url.clone();
                setup
                    .runtime
                    .block_on(setup.runtime.spawn(async move {
                        let started = Instant::now();
                        for _ in 0..iterations {
                            std::hint::black_box(bare_request(&client, &url, parse).await);
                        }
                        started.elapsed()
                    }))
                    .expect("the loop task")
            });
        });
    }
    for (name, fixture) in [
        ("engine/auth-none", &setup.none),
        ("engine/custom-fresh", &setup.custom),
        ("engine/pre-hook", &setup.hooked),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| {
                let engine = setup.engine.clone();
                let fixture = Arc::clone(fixture);
                setup
                    .runtime
                    .block_on(setup.runtime.spawn(async move {
                        let started = Instant::now();
                        for _ in 0..iterations {
                            std::hint::black_box(fixture.run_once(&engine).await);
                        }
                        started.elapsed()
                    }))
                    .expect("the loop task")
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_run);
criterion_main!(benches);

//! The in-process speed target measured as what it is, a ratio: the engine's requests per second
//! over a bare `reqwest::Client`'s, sending the same request to the same local server (the
//! `run` benchmark's setup, `benches/support`).
//!
//! A shared machine drifts by more than the difference being measured, and criterion measures
//! each variant in its own block of time. Here the variants alternate instead: each round times
//! 2,000 requests of each variant back to back, in a rotating order, and the ratio is taken within
//! the round. The median over 60 rounds is the figure; the quartiles show its spread.
//!
//! Run with `cargo bench -p engine-runtime --bench ratio`; see docs/BENCHMARKS.md.
#![allow(missing_docs)]
#![allow(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

use support::{Setup, bare_request};

const ROUNDS: usize = 60;
const REQUESTS: u32 = 2_000;
/// The target: the engine keeps at least this share of bare reqwest's requests per second.
const TARGET: f64 = 0.90;

#[derive(Clone, Copy)]
enum Variant {
    Reqwest,
    AuthNone,
    CustomFresh,
}

const VARIANTS: [Variant; 3] = [Variant::Reqwest, Variant::AuthNone, Variant::CustomFresh];

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Self::Reqwest => "reqwest",
            Self::AuthNone => "engine/auth-none",
            Self::CustomFresh => "engine/custom-fresh",
        }
    }
}

/// Sends `REQUESTS` requests of `variant` one after the other, in one task on a runtime worker
/// as a service would, and gives the time per request.
fn measure(setup: &Setup, variant: Variant) -> Duration {
    let client = setup.client.clone();
    let url = setup.url.clone();
    let engine = setup.engine.clone();
    let fixture = match variant {
        Variant::Reqwest | Variant::AuthNone => Arc::clone(&setup.none),
        Variant::CustomFresh => Arc::clone(&setup.custom),
    };
    let elapsed = setup
        .runtime
        .block_on(setup.runtime.spawn(async move {
            let started = Instant::now();
            for _ in 0..REQUESTS {
                match variant {
                    Variant::Reqwest => {
                        std::hint::black_box(bare_request(&client, &url, false).await);
                    }
                    Variant::AuthNone | Variant::CustomFresh => {
                        std::hint::black_box(fixture.run_once(&engine).await);
                    }
                }
            }
            started.elapsed()
        }))
        .expect("the loop task");
    elapsed / REQUESTS
}

/// The value at `quantile` (0 to 1) of sorted `values`.
fn quantile(sorted: &[f64], quantile: f64) -> f64 {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a short list"
    )]
    let index = ((sorted.len() - 1) as f64 * quantile).round() as usize;
    sorted[index]
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

fn main() {
    let setup = Setup::new();
    // Warm up: connections open, caches and the allocator settled.
    for variant in VARIANTS {
        measure(&setup, variant);
    }
    let mut times: [Vec<f64>; 3] = Default::default();
    for round in 0..ROUNDS {
        for offset in 0..VARIANTS.len() {
            let index = (round + offset) % VARIANTS.len();
            let per_request = measure(&setup, VARIANTS[index]);
            times[index].push(per_request.as_secs_f64() * 1e6);
        }
    }
    println!("{ROUNDS} rounds of {REQUESTS} requests per variant, alternating; µs per request:");
    println!(
        "{:<22} {:>8} {:>8} {:>8}",
        "variant", "median", "min", "max"
    );
    for (variant, values) in VARIANTS.iter().zip(&times) {
        let values = sorted(values.clone());
        println!(
            "{:<22} {:>8.2} {:>8.2} {:>8.2}",
            variant.name(),
            quantile(&values, 0.5),
            values[0],
            values[values.len() - 1],
        );
    }
    println!(
        "requests per second as a share of reqwest's, per round (target: at least {TARGET:.2}):"
    );
    println!("{:<22} {:>8} {:>8} {:>8}", "variant", "median", "q1", "q3");
    for (index, variant) in VARIANTS.iter().enumerate().skip(1) {
        let ratios = sorted(
            times[0]
                .iter()
                .zip(&times[index])
                .map(|(bare, engine)| bare / engine)
                .collect(),
        );
        let median = quantile(&ratios, 0.5);
        println!(
            "{:<22} {:>8.3} {:>8.3} {:>8.3}  {}",
            variant.name(),
            median,
            quantile(&ratios, 0.25),
            quantile(&ratios, 0.75),
            if median >= TARGET { "met" } else { "NOT met" },
        );
    }
}

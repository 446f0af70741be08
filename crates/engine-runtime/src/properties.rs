//! The configuration of this crate's property tests: the same cases on every run and every
//! machine. A property found false fails every time, on the machine that found it and on
//! yours, instead of once in a while; its case goes into `proptest-regressions/` to stay.
//! `PROPTEST_RNG_SEED=N` explores other cases and `PROPTEST_CASES=N` more of them, for a
//! longer search by hand.

use proptest::test_runner::{Config, RngSeed};

/// The seed when `PROPTEST_RNG_SEED` is unset.
const SEED: u64 = 0x656e_6769_6e65;

/// `cases` cases (unless `PROPTEST_CASES` says otherwise) from the fixed seed (unless
/// `PROPTEST_RNG_SEED` says otherwise).
pub(crate) fn config(cases: u32) -> Config {
    // The default reads the `PROPTEST_*` variables.
    let default = Config::default();
    Config {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            default.cases
        } else {
            cases
        },
        rng_seed: match default.rng_seed {
            RngSeed::Random => RngSeed::Fixed(SEED),
            seed @ RngSeed::Fixed(_) => seed,
        },
        ..default
    }
}

//! The connector loader and validator, bytes in, and the diagnostic renderer of `engine validate`
//! on whatever it reports.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = engine_cli::fuzz_validate(data);
});

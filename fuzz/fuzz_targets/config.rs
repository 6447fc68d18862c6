//! Config loading on arbitrary bytes: a policy or an error that says what
//! is wrong, never a panic (the gateway loads operator files at start and
//! on every reload).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use misp_guard_gw::config;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = config::from_slice(data, Path::new("fuzz.json")) {
        assert!(!e.to_string().is_empty());
    }
});

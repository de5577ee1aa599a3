//! Client query strings, durations, ttls, consistency levels, keys and configuration
//! variables (see `hypercache_fuzz::parse`). Never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hypercache_fuzz::parse::run(data));

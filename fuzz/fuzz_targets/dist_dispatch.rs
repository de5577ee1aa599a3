//! Arbitrary bytes posted to one real node's dist service, on the batch route and on
//! the probe route (see `hypercache_fuzz::node`). Never panic, never hang, always answer
//! every call of an accepted batch.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hypercache_fuzz::node::run(data));

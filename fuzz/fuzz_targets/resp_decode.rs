//! Bytes from a RESP client, in chunks, through the decoder and the command parser
//! (see `hypercache_fuzz::resp`). Never panic; what decodes is bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hypercache_fuzz::resp::run(data));

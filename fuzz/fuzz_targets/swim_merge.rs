//! Gossip fed to the SWIM state machine: a msgpack member list, or an arbitrary
//! sequence of gossip, replies, heartbeats and timers (see `hypercache_fuzz::swim`).
//! Never panic; this node's own entry stays its own.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| hypercache_fuzz::swim::run(data));

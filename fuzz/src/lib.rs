//! Shared harness code of the fuzz targets (`fuzz_targets/*.rs`) and of the seed
//! generator (`examples/gen_seeds.rs`).
//!
//! - [`swim`]: drives a [`hypercache_actors::swim::Swim`] with fuzzed gossip and checks
//!   its invariants. Every call into the `Swim` API is in [`swim::api`], the one place
//!   to adapt when that API changes.
//! - [`node`]: one real node (the whole actor tree) per process, for `dist_dispatch`.
//! - [`parse`]: the client and configuration parsers of the server crate.
//! - [`resp`]: the RESP decoder and command parser of the server crate.

pub mod node;
pub mod parse;
pub mod resp;
pub mod swim;

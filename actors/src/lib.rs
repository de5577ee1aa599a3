//! The actor system of a hypercache-server node.
//!
//! Pure cores (no I/O, no clocks of their own): [`types`], [`hlc`], [`store`], [`ring`],
//! [`swim`], [`quorum`], [`hints`], [`merkle`], [`rebalance`], [`proto`], [`metrics`].
//! Actors that own them: [`shard`], [`membership`], [`hint_queue`], [`repair`],
//! [`anti_entropy`], [`rebalancer`], [`drain`], supervised by [`root`]. [`node`] starts the tree and is the mailbox client the HTTP layer uses.
//! The supervision tree is drawn in [`root`].

pub mod anti_entropy;
pub mod drain;
pub mod error;
pub mod hint_queue;
pub mod hints;
pub mod hlc;
pub mod membership;
pub mod merkle;
pub mod metrics;
pub mod node;
pub mod proto;
pub mod quorum;
pub mod rebalance;
pub mod rebalancer;
pub mod repair;
pub mod ring;
pub mod root;
pub mod shard;
pub mod shards;
pub mod store;
pub mod swim;
pub mod transport;
pub mod types;

pub use error::CacheError;
pub use node::{start, NodeConfig, NodeHandle};

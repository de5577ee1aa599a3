//! The actor system of a hypercache-server node.
//!
//! Pure cores (no I/O, no clocks of their own): [`types`], [`hlc`], [`store`], [`ring`],
//! [`swim`], [`quorum`], [`hints`], [`merkle`], [`rebalance`], [`peer_queue`], [`proto`],
//! [`metrics`]; leaf data: [`config`], [`slot`], [`error`].
//! Actors that own them: [`shard`], [`membership`], [`hint_queue`], [`repair`],
//! [`anti_entropy`], [`rebalancer`], [`drain`], [`peer`], supervised by [`root`].
//! Mailbox clients: [`coordinator`] (client requests), [`service`] (peer requests);
//! [`node`] starts the tree and is the handle the HTTP layer uses. [`transport`] moves
//! bytes to peers; [`sim`] is the in-memory network of the cluster simulator.
//! The supervision tree is drawn in [`root`].

pub mod anti_entropy;
pub mod config;
pub mod coordinator;
pub mod drain;
pub mod error;
pub mod hint_queue;
pub mod hints;
pub mod hlc;
pub mod keyscan;
pub mod membership;
pub mod merkle;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod peer_queue;
pub mod proto;
pub mod quorum;
pub mod rebalance;
pub mod rebalancer;
pub mod repair;
pub mod ring;
pub mod root;
pub mod service;
pub mod shard;
pub mod shards;
pub mod sim;
pub mod slot;
pub mod store;
pub mod swim;
pub mod trace;
pub mod transport;
pub mod types;

pub use config::{NodeConfig, PeerLimits};
pub use coordinator::WriteAck;
pub use error::CacheError;
pub use node::{start, start_with, NodeHandle};

//! [`NodeConfig`]: what the actor system needs to know, built from the process
//! configuration. A leaf module: plain data, no behaviour.

use crate::hints::HintLimits;
use crate::quorum::Consistency;
use crate::swim::{SeedPeer, SwimConfig};
use std::time::Duration;

/// Bounds and batching of the traffic to one peer ([`crate::peer::PeerActor`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLimits {
    /// Calls queued for one peer at most; past it writes go to hints, other calls fail.
    pub queue_items: usize,
    /// Key and value bytes queued for one peer at most.
    pub queue_bytes: usize,
    /// Calls coalesced into one dist request at most.
    pub batch_items: usize,
    /// Key and value bytes coalesced into one dist request at most (a single larger call
    /// still travels alone).
    pub batch_bytes: usize,
    /// Dist requests to one peer in flight at once.
    pub pipeline: usize,
}

impl Default for PeerLimits {
    fn default() -> Self {
        Self {
            queue_items: 8192,
            queue_bytes: 64 << 20,
            batch_items: 256,
            batch_bytes: 4 << 20,
            pipeline: 4,
        }
    }
}

/// What the actor system needs to know; built from the process configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: String,
    /// The dist address peers reach this node at.
    pub advertise: String,
    pub replication: usize,
    pub shards: usize,
    pub capacity_items: usize,
    pub capacity_bytes: Option<u64>,
    pub max_value_bytes: u64,
    pub tombstone_retention: Duration,
    /// Most bytes of tombstones the node holds (split across shards).
    pub tombstone_bytes: u64,
    pub sweep_interval: Duration,
    pub seeds: Vec<SeedPeer>,
    pub heartbeat: Duration,
    pub swim: SwimConfig,
    /// Sent as a bearer token on every peer call.
    pub auth_token: Option<String>,
    /// Peers are called over HTTPS with this configuration (mutual TLS against the
    /// cluster's CA); `None`: plain HTTP.
    pub peer_tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// How long an unused connection to a peer is kept (below the peers' idle timeout).
    pub peer_pool_idle: Duration,
    /// How long one dist request to a peer may take.
    pub peer_timeout: Duration,
    /// Queue, batch and pipeline bounds of each peer actor.
    pub peer_limits: PeerLimits,
    /// How long a `one` read waits for an owner before it also asks the next one.
    pub read_hedge: Duration,
    pub write_consistency: Consistency,
    pub read_consistency: Consistency,
    pub hint_limits: HintLimits,
    pub hint_replay: Duration,
    pub anti_entropy_interval: Duration,
    pub anti_entropy_max_keys: usize,
    pub rebalance_interval: Duration,
    /// How often the rebalancer looks for copies this node holds but does not own.
    pub ownership_sweep: Duration,
    pub rebalance_batch: usize,
    pub rebalance_concurrency: usize,
    /// How long a drain waits for the key handoff.
    pub drain_timeout: Duration,
    /// Availability first: a key's owners are taken from the ring of reachable members,
    /// so stand-ins replace dead owners and their acknowledgements count. Off (the
    /// default): owners come from every member that has not left, and only those home
    /// owners' acknowledgements count (docs/architecture.md, "Quorums").
    pub sloppy_quorum: bool,
    /// Seed of the node's random choices (SWIM probe order); `None` draws one. The
    /// cluster simulator sets it so a run replays.
    pub rng_seed: Option<u64>,
}

//! `ShardActor`: owns one partition of the local store ([`ShardStore`]) and serialises
//! every read and write of it. Runs the expiry sweep on a timer.
//!
//! Does not own routing (which shard a key lives in: [`crate::shards::Shards`]) nor
//! replication (the coordinator). A shard that fails is restarted empty by the root
//! supervisor; in a cluster, anti-entropy and rebalance refill it.

use crate::store::{ShardLimits, ShardStats, ShardStore};
use crate::types::{now_ms, ApplyOutcome, Key, Stored, Write};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::time::Duration;

/// Messages of a shard.
pub enum ShardMsg {
    /// Read a live value; answered with `None` when missing or expired.
    Get {
        key: Key,
        reply: RpcReplyPort<Option<Stored>>,
    },
    /// Read the record (live value or tombstone) with its version; `None` when the
    /// shard has nothing for the key.
    Read {
        key: Key,
        reply: RpcReplyPort<Option<Write>>,
    },
    /// Apply a versioned write or tombstone (last-write-wins); answered with the outcome.
    Apply {
        key: Key,
        write: Write,
        reply: RpcReplyPort<ApplyOutcome>,
    },
    /// Timer: remove expired entries and purge old tombstones.
    Sweep,
    /// Current counters; answered with this shard's [`ShardStats`].
    Stats(RpcReplyPort<ShardStats>),
    /// Test-only fault hook: panic inside the handler, as a bug would.
    #[cfg(feature = "test-hooks")]
    Crash,
}

/// Start-up arguments of a shard.
pub struct ShardArgs {
    pub index: usize,
    pub limits: ShardLimits,
    pub sweep_interval: Duration,
}

/// A shard's state: its store and its index.
pub struct ShardState {
    index: usize,
    store: ShardStore,
}

/// The shard actor.
pub struct ShardActor;

impl Actor for ShardActor {
    type Msg = ShardMsg;
    type State = ShardState;
    type Arguments = ShardArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ShardMsg>,
        args: ShardArgs,
    ) -> Result<ShardState, ActorProcessingErr> {
        myself.send_interval(args.sweep_interval, || ShardMsg::Sweep);
        Ok(ShardState {
            index: args.index,
            store: ShardStore::new(args.limits),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ShardMsg>,
        msg: ShardMsg,
        state: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ShardMsg::Get { key, reply } => {
                let _ = reply.send(state.store.get(&key, now_ms()));
            }
            ShardMsg::Read { key, reply } => {
                let _ = reply.send(state.store.get_record(&key, now_ms()));
            }
            ShardMsg::Apply { key, write, reply } => {
                let _ = reply.send(state.store.apply(&key, &write, now_ms()));
            }
            ShardMsg::Sweep => {
                let expired = state.store.sweep(now_ms());
                if expired > 0 {
                    tracing::debug!(shard = state.index, expired, "expiry sweep");
                }
            }
            ShardMsg::Stats(reply) => {
                let _ = reply.send(state.store.stats());
            }
            #[cfg(feature = "test-hooks")]
            ShardMsg::Crash => panic!("test hook: shard {} crashed on purpose", state.index),
        }
        Ok(())
    }
}

//! `ShardActor`: owns one partition of the local store ([`ShardStore`]) and serialises
//! every read and write of it. Runs the expiry sweep on a timer.
//!
//! Does not own routing (which shard a key lives in: [`crate::shards::Shards`]) nor
//! replication (the coordinator). A shard that fails is restarted empty by the root
//! supervisor; in a cluster, anti-entropy and rebalance refill it.

use crate::merkle::{Leaf, Listing};
use crate::ring::Ring;
use crate::store::{ApplyError, ShardLimits, ShardStats, ShardStore};
use crate::types::{now_ms, ApplyMode, ApplyOutcome, Key, Stored, Version, Write};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::sync::Arc;
use std::time::Duration;

/// A shard's anti-entropy leaves and whether it is full.
#[derive(Debug, Clone, Default)]
pub struct ShardLeaves {
    /// Non-empty segments' leaves.
    pub leaves: Vec<(u32, Leaf)>,
    /// One more live item would evict (a `Fill` repair of a missing key is refused).
    pub full: bool,
}

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
        mode: ApplyMode,
        reply: RpcReplyPort<Result<ApplyOutcome, ApplyError>>,
    },
    /// Every record's key and version (live and tombstones); answered with the list.
    Versions(RpcReplyPort<Vec<(Key, Version)>>),
    /// The anti-entropy leaves for `ring` (rebuilt first if they were kept for another
    /// ring) and whether the shard is full; answered with [`ShardLeaves`].
    Leaves {
        ring: Arc<Ring>,
        reply: RpcReplyPort<ShardLeaves>,
    },
    /// The `(key, version)` of the records in `segments` (ascending), cut at `max_bytes`;
    /// answered with the [`Listing`].
    SegmentEntries {
        ring: Arc<Ring>,
        segments: Arc<[u32]>,
        max_bytes: usize,
        reply: RpcReplyPort<Listing>,
    },
    /// The raw records of `keys` (no eviction mark or counter change); answered in order.
    Records {
        keys: Vec<Key>,
        reply: RpcReplyPort<Vec<Option<Write>>>,
    },
    /// Drop the copy of `key` if it is still at `version`; answered with whether it was.
    Release {
        key: Key,
        version: Version,
        reply: RpcReplyPort<bool>,
    },
    /// The key browser: the smallest `max` live keys `filter` selects (within
    /// [`crate::keyscan::MAX_SCAN_BYTES`]), ascending, and how many it selects in all.
    Keys {
        filter: Arc<crate::keyscan::KeyFilter>,
        max: usize,
        reply: RpcReplyPort<(Vec<Key>, u64)>,
    },
    /// Drop every record and tombstone; answered with how many records went.
    Clear(RpcReplyPort<u64>),
    /// Drop every live value, keep the tombstones; answered with how many values went.
    ClearValues(RpcReplyPort<u64>),
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
            ShardMsg::Apply {
                key,
                write,
                mode,
                reply,
            } => {
                let _ = reply.send(state.store.apply_mode(&key, &write, mode, now_ms()));
            }
            ShardMsg::Clear(reply) => {
                let _ = reply.send(state.store.clear());
            }
            ShardMsg::Keys { filter, max, reply } => {
                let mut out = crate::keyscan::Smallest::new(max, crate::keyscan::MAX_SCAN_BYTES);
                state.store.scan_keys(&filter, now_ms(), &mut out);
                let _ = reply.send(out.finish());
            }
            ShardMsg::ClearValues(reply) => {
                let _ = reply.send(state.store.clear_values());
            }
            ShardMsg::Versions(reply) => {
                let _ = reply.send(state.store.versions());
            }
            ShardMsg::Leaves { ring, reply } => {
                let leaves = state
                    .store
                    .leaves(&ring)
                    .iter()
                    .map(|(s, l)| (*s, *l))
                    .collect();
                let _ = reply.send(ShardLeaves {
                    leaves,
                    full: state.store.is_full(),
                });
            }
            ShardMsg::SegmentEntries {
                ring,
                segments,
                max_bytes,
                reply,
            } => {
                let _ = reply.send(state.store.segment_entries(&ring, &segments, max_bytes));
            }
            ShardMsg::Records { keys, reply } => {
                let now = now_ms();
                let _ = reply.send(
                    keys.iter()
                        .map(|k| state.store.peek_record(k, now))
                        .collect(),
                );
            }
            ShardMsg::Release {
                key,
                version,
                reply,
            } => {
                let _ = reply.send(state.store.release(&key, version));
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

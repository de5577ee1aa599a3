//! `RepairActor`: read repair. When a read sees owners disagree, the coordinator casts
//! the newest record for each stale owner here; this actor pushes it asynchronously,
//! at most one push in flight per (peer, key), and at most [`MAX_IN_FLIGHT`] in all
//! (more are dropped and counted: anti-entropy repairs them later).
//!
//! Pushes use [`ApplyMode::Fill`], so a full replica is not made to evict for a repair.

use crate::metrics::Metrics;
use crate::peer::PeerClient;
use crate::proto::{KeyedWrite, Replicate};
use crate::shards::Shards;
use crate::types::{ApplyMode, Key, Write};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::HashSet;
use std::sync::Arc;

/// Repairs in flight at most.
pub const MAX_IN_FLIGHT: usize = 10_000;

/// Messages of the repair actor.
pub enum RepairMsg {
    /// Push `write` of `key` to the owner `peer` (node id; `local` when it is this node).
    Repair {
        peer: String,
        local: bool,
        key: Key,
        write: Write,
    },
    /// A push finished.
    Done { peer: String, key: Key },
}

/// Start-up arguments.
pub struct RepairArgs {
    pub peers: PeerClient,
    pub shards: Shards,
    pub metrics: Arc<Metrics>,
}

/// State: what is in flight.
pub struct RepairState {
    in_flight: HashSet<(String, Key)>,
    args: RepairArgs,
}

/// The repair actor.
pub struct RepairActor;

impl Actor for RepairActor {
    type Msg = RepairMsg;
    type State = RepairState;
    type Arguments = RepairArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<RepairMsg>,
        args: RepairArgs,
    ) -> Result<RepairState, ActorProcessingErr> {
        Ok(RepairState {
            in_flight: HashSet::new(),
            args,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<RepairMsg>,
        msg: RepairMsg,
        state: &mut RepairState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RepairMsg::Repair {
                peer,
                local,
                key,
                write,
            } => {
                let id = (peer.clone(), key.clone());
                if state.in_flight.contains(&id) || state.in_flight.len() >= MAX_IN_FLIGHT {
                    Metrics::inc(&state.args.metrics.read_repairs_coalesced_total);
                    return Ok(());
                }
                state.in_flight.insert(id);
                Metrics::inc(&state.args.metrics.read_repairs_total);
                let peers = state.args.peers.clone();
                let shards = state.args.shards.clone();
                let metrics = state.args.metrics.clone();
                tokio::spawn(async move {
                    let ok = if local {
                        shards
                            .apply_mode(&key, write, ApplyMode::Fill)
                            .await
                            .is_ok()
                    } else {
                        {
                            let req = Replicate {
                                writes: vec![KeyedWrite {
                                    key: key.clone(),
                                    write,
                                }],
                                mode: ApplyMode::Fill,
                            };
                            peers.call(&peer, req).await.is_ok()
                        }
                    };
                    if !ok {
                        // Anti-entropy repairs it at its next round.
                        Metrics::inc(&metrics.read_repair_failures_total);
                        tracing::debug!(%peer, %key, "read repair failed");
                    }
                    let _ = myself.cast(RepairMsg::Done { peer, key });
                });
            }
            RepairMsg::Done { peer, key } => {
                state.in_flight.remove(&(peer, key));
            }
        }
        Ok(())
    }
}

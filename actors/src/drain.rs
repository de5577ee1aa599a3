//! `DrainCoordinator`: owns the one-way "draining" state of the node and runs the drain
//! steps in order (SPEC §9): mark draining (health 503, writes 503), leave the ring and
//! tell the peers, hand the keys this node held to their new owners (the rebalancer does
//! the moving; this waits for it), then hand queued hints to their targets or to a live
//! peer. Publishes the flag through a watch channel that request handlers read.
//!
//! The steps run in a spawned task so the mailbox stays responsive. Does not stop
//! listeners or actors: the process shell does that after a drain completes.

use crate::hint_queue::HintMsg;
use crate::membership::{ClusterView, MembershipMsg};
use crate::metrics::Metrics;
use crate::node::ActorSlot;
use crate::proto::{AcceptHints, KeyedWrite, Replicate};
use crate::rebalancer::RebalanceMsg;
use crate::transport::Peers;
use crate::types::ApplyMode;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What a drain did, for the operator.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DrainReport {
    /// True when this call started the drain, false when it was already draining.
    pub started: bool,
    pub draining: bool,
    /// True when every key was handed to its new owners (and acknowledged) within the
    /// drain timeout. False means some keys only left as hints, or not at all.
    pub handoff_complete: bool,
    /// Hints delivered to their targets or handed to a live peer.
    pub hints_handed_off: u64,
    /// Hints that could not be handed to anyone (no live peer).
    pub hints_lost: u64,
}

/// Messages of the drain coordinator.
pub enum DrainMsg {
    /// Start draining (idempotent); answered once the drain steps are done.
    Drain(RpcReplyPort<DrainReport>),
    /// Whether the node is draining; answered with the flag.
    IsDraining(RpcReplyPort<bool>),
}

/// Start-up arguments.
pub struct DrainArgs {
    /// The published flag; kept across restarts so a drain stays one-way.
    pub flag: Arc<watch::Sender<bool>>,
    pub membership: ActorRef<MembershipMsg>,
    pub rebalancer: ActorSlot<RebalanceMsg>,
    pub hints: ActorSlot<HintMsg>,
    pub peers: Peers,
    pub view: watch::Receiver<Arc<ClusterView>>,
    pub me: String,
    pub drain_timeout: Duration,
    pub peer_timeout: Duration,
    pub metrics: Arc<Metrics>,
}

/// The coordinator actor; its state is its arguments (shared with the drain task).
pub struct DrainCoordinator;

impl Actor for DrainCoordinator {
    type Msg = DrainMsg;
    type State = Arc<DrainArgs>;
    type Arguments = DrainArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<DrainMsg>,
        args: DrainArgs,
    ) -> Result<Arc<DrainArgs>, ActorProcessingErr> {
        Ok(Arc::new(args))
    }

    async fn handle(
        &self,
        _myself: ActorRef<DrainMsg>,
        msg: DrainMsg,
        state: &mut Arc<DrainArgs>,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DrainMsg::Drain(reply) => {
                if *state.flag.borrow() {
                    let _ = reply.send(DrainReport {
                        started: false,
                        draining: true,
                        handoff_complete: false,
                        hints_handed_off: 0,
                        hints_lost: 0,
                    });
                    return Ok(());
                }
                state.flag.send_replace(true);
                Metrics::inc(&state.metrics.drains_total);
                state.metrics.draining.store(1, Ordering::Relaxed);
                tracing::info!("drain started: health 503, writes 503 DRAINING");
                let args = state.clone();
                tokio::spawn(async move {
                    let report = drain(&args).await;
                    let _ = reply.send(report);
                });
            }
            DrainMsg::IsDraining(reply) => {
                let _ = reply.send(*state.flag.borrow());
            }
        }
        Ok(())
    }
}

async fn drain(a: &DrainArgs) -> DrainReport {
    // Leave the ring: peers (and this node's coordinator) stop routing writes here.
    if a.membership
        .call(MembershipMsg::Leave, Some(Duration::from_secs(5)))
        .await
        .is_err()
    {
        tracing::warn!("membership did not confirm leave; continuing drain");
    }
    // Hand the keys this node held to their new owners.
    let handoff_complete = match a.rebalancer.get() {
        Some(r) => matches!(
            r.call(RebalanceMsg::Flush, Some(a.drain_timeout)).await,
            Ok(ractor::rpc::CallResult::Success(true))
        ),
        None => false,
    };
    if !handoff_complete {
        tracing::warn!(timeout = ?a.drain_timeout, "key handoff did not finish; anti-entropy will repair what is missing");
    }
    // Hand queued hints to their targets, or to a live peer that queues them.
    let hints: Vec<(String, KeyedWrite)> = match a.hints.get() {
        Some(h) => match h.call(HintMsg::TakeAll, Some(Duration::from_secs(5))).await {
            Ok(ractor::rpc::CallResult::Success(v)) => v,
            _ => Vec::new(),
        },
        None => Vec::new(),
    };
    let (handed, lost) = hand_off_hints(a, hints).await;
    a.metrics
        .drain_hints_handed_off_total
        .fetch_add(handed, Ordering::Relaxed);
    tracing::info!(
        handoff_complete,
        hints_handed_off = handed,
        hints_lost = lost,
        "drain finished"
    );
    DrainReport {
        started: true,
        draining: true,
        handoff_complete,
        hints_handed_off: handed,
        hints_lost: lost,
    }
}

async fn hand_off_hints(a: &DrainArgs, hints: Vec<(String, KeyedWrite)>) -> (u64, u64) {
    if hints.is_empty() {
        return (0, 0);
    }
    let view = a.view.borrow().clone();
    let mut by_target: HashMap<String, Vec<KeyedWrite>> = HashMap::new();
    for (t, w) in hints {
        by_target.entry(t).or_default().push(w);
    }
    let mut handed = 0u64;
    let mut left: Vec<(String, KeyedWrite)> = Vec::new();
    for (target, writes) in by_target {
        let delivered = match (view.ring.contains(&target), view.addr_of(&target)) {
            (true, Some(addr)) => {
                let req = Replicate {
                    writes: writes.clone(),
                    mode: ApplyMode::Normal,
                };
                a.peers.call(addr, req, a.peer_timeout).await.is_ok()
            }
            _ => false,
        };
        if delivered {
            handed += writes.len() as u64;
        } else {
            left.extend(writes.into_iter().map(|w| (target.clone(), w)));
        }
    }
    if left.is_empty() {
        return (handed, 0);
    }
    let n = left.len() as u64;
    for peer in view.ring.nodes().iter().filter(|p| **p != a.me) {
        let Some(addr) = view.addr_of(peer) else {
            continue;
        };
        let req = AcceptHints {
            hints: left.clone(),
        };
        if a.peers.call(addr, req, a.peer_timeout).await.is_ok() {
            return (handed + n, 0);
        }
    }
    tracing::warn!(hints = n, "no live peer took the queued hints");
    (handed, n)
}

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
use crate::peer::PeerClient;
use crate::proto::{chunk_writes, AcceptHints, KeyedWrite, Replicate, MAX_BATCH_BYTES};
use crate::rebalancer::RebalanceMsg;
use crate::slot::ActorSlot;
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
    /// Test hook: panic, so the supervisor restarts the coordinator.
    #[cfg(feature = "test-hooks")]
    Crash,
}

/// Start-up arguments.
pub struct DrainArgs {
    /// The published flag; kept across restarts so a drain stays one-way.
    pub flag: Arc<watch::Sender<bool>>,
    /// The report once the drain finished; kept across restarts, so a coordinator
    /// restarted during a drain still answers with the drain's report when it is done.
    pub report: Arc<watch::Sender<Option<DrainReport>>>,
    pub membership: ActorSlot<MembershipMsg>,
    pub rebalancer: ActorSlot<RebalanceMsg>,
    pub hints: ActorSlot<HintMsg>,
    pub peers: PeerClient,
    pub view: watch::Receiver<Arc<ClusterView>>,
    pub me: String,
    pub drain_timeout: Duration,
    pub metrics: Arc<Metrics>,
}

/// Times the drain takes the hint queue (it stops early once the queue is empty).
const HINT_ROUNDS: usize = 5;

/// The coordinator actor; its state is its arguments (shared with the drain task).
pub struct DrainCoordinator;

/// State: the arguments (shared with the drain task). Whether a drain ran and its
/// report live in the arguments, outside the actor, so they survive its restarts.
pub struct DrainState {
    args: Arc<DrainArgs>,
}

/// The answer to a drain request that did not start the drain.
fn not_started(r: Option<DrainReport>) -> DrainReport {
    match r {
        Some(r) => DrainReport {
            started: false,
            ..r
        },
        None => DrainReport {
            started: false,
            draining: true,
            handoff_complete: false,
            hints_handed_off: 0,
            hints_lost: 0,
        },
    }
}

impl Actor for DrainCoordinator {
    type Msg = DrainMsg;
    type State = DrainState;
    type Arguments = DrainArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<DrainMsg>,
        args: DrainArgs,
    ) -> Result<DrainState, ActorProcessingErr> {
        Ok(DrainState {
            args: Arc::new(args),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<DrainMsg>,
        msg: DrainMsg,
        st: &mut DrainState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DrainMsg::Drain(reply) => {
                if *st.args.flag.borrow() {
                    // A drain is running or done (this instance or one before a restart:
                    // the drain task outlives the actor): answer with its report once
                    // there is one, so a SIGTERM during a `POST /dist/drain` waits for
                    // the handoff.
                    let mut rx = st.args.report.subscribe();
                    tokio::spawn(async move {
                        let r = rx
                            .wait_for(Option::is_some)
                            .await
                            .ok()
                            .and_then(|r| r.clone());
                        let _ = reply.send(not_started(r));
                    });
                    return Ok(());
                }
                st.args.flag.send_replace(true);
                Metrics::inc(&st.args.metrics.drains_total);
                st.args.metrics.draining.store(1, Ordering::Relaxed);
                tracing::info!("drain started: health 503, writes 503 DRAINING");
                let args = st.args.clone();
                tokio::spawn(async move {
                    let report = drain(&args).await;
                    args.report.send_replace(Some(report.clone()));
                    let _ = reply.send(report);
                });
            }
            DrainMsg::IsDraining(reply) => {
                let _ = reply.send(*st.args.flag.borrow());
            }
            #[cfg(feature = "test-hooks")]
            DrainMsg::Crash => panic!("test hook: drain coordinator crashed on purpose"),
        }
        Ok(())
    }
}

async fn drain(a: &DrainArgs) -> DrainReport {
    // Leave the ring: peers (and this node's coordinator) stop routing writes here.
    if a.membership
        .call(MembershipMsg::Leave, Duration::from_secs(5))
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
    // Hand queued hints to their targets, or to a live peer that queues them. Calls
    // still in flight when the handoff starts can fail and queue more hints: take the
    // queue again until a round finds it empty (a bounded number of rounds).
    let (mut handed, mut lost) = (0, 0);
    for _ in 0..HINT_ROUNDS {
        let hints: Vec<(String, KeyedWrite)> = match a.hints.get() {
            Some(h) => match h.call(HintMsg::TakeAll, Some(Duration::from_secs(5))).await {
                Ok(ractor::rpc::CallResult::Success(v)) => v,
                _ => Vec::new(),
            },
            None => Vec::new(),
        };
        if hints.is_empty() {
            break;
        }
        let (h, l) = hand_off_hints(a, hints).await;
        handed += h;
        lost += l;
    }
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
        for chunk in chunk_writes(writes) {
            let delivered = view.ring.contains(&target) && view.is_live(&target) && {
                let req = Replicate {
                    writes: chunk.clone(),
                    mode: ApplyMode::Normal,
                };
                a.peers.call(&target, req).await.is_ok()
            };
            if delivered {
                handed += chunk.len() as u64;
            } else {
                left.extend(chunk.into_iter().map(|w| (target.clone(), w)));
            }
        }
    }
    if left.is_empty() {
        return (handed, 0);
    }
    // Hand the rest to the first live peer that takes them, in byte-bounded calls.
    let mut batches: Vec<Vec<(String, KeyedWrite)>> = vec![Vec::new()];
    let mut size = 0usize;
    for (t, w) in left {
        let n = w.weight();
        if size + n > MAX_BATCH_BYTES && batches.last().is_some_and(|b| !b.is_empty()) {
            batches.push(Vec::new());
            size = 0;
        }
        size += n;
        if let Some(b) = batches.last_mut() {
            b.push((t, w));
        }
    }
    let mut lost = 0u64;
    for batch in batches {
        let n = batch.len() as u64;
        let mut taken = false;
        for peer in view
            .ring
            .nodes()
            .iter()
            .filter(|p| **p != a.me && view.is_live(p))
        {
            let req = AcceptHints {
                hints: batch.clone(),
            };
            if a.peers.call(peer, req).await.is_ok() {
                taken = true;
                break;
            }
        }
        if taken {
            handed += n;
        } else {
            lost += n;
        }
    }
    if lost > 0 {
        tracing::warn!(hints = lost, "no live peer took the queued hints");
    }
    (handed, lost)
}

//! `HintQueueActor`: hinted handoff. Owns the [`HintQueue`] of failed replica writes
//! and deletes, replays each peer's hints every replay tick (one batch in flight per
//! peer, in a spawned task), expires them after their TTL, and hands them over when the
//! node drains.
//!
//! Enqueueing is a `cast`: the write path never waits for this actor.
//!
//! The queue itself lives outside the actor ([`SharedHints`], owned by the root), so a
//! restarted actor resumes with every hint it held; only which peers had a batch in
//! flight is forgotten (those batches may be sent again: replays are idempotent).

use crate::hints::{HintLimits, HintQueue};
use crate::membership::ClusterView;
use crate::metrics::Metrics;
use crate::peer::PeerClient;
use crate::proto::{KeyedWrite, Replicate, MAX_BATCH_BYTES};
use crate::types::{now_ms, ApplyMode};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;

/// Hints sent to a peer per replay call.
pub const REPLAY_BATCH: usize = 256;

/// Messages of the hint queue.
pub enum HintMsg {
    /// Queue a write that failed to reach `peer` (node id).
    Enqueue { peer: String, write: KeyedWrite },
    /// Timer: expire old hints and replay to every reachable peer.
    Replay,
    /// A replay batch reached `peer`: drop its hints up to `last_seq`.
    Delivered { peer: String, last_seq: u64 },
    /// A replay batch to `peer` failed; it is retried next tick.
    Failed { peer: String },
    /// Queue status; answered with it.
    Status(RpcReplyPort<HintStatus>),
    /// Remove and return every hint (drain handoff); answered with them.
    TakeAll(RpcReplyPort<Vec<(String, KeyedWrite)>>),
    /// Test hook: panic, so the supervisor restarts the actor.
    #[cfg(feature = "test-hooks")]
    Crash,
}

/// What `/dist/metrics` and operators see of the queue.
#[derive(Debug, Clone, Serialize)]
pub struct HintStatus {
    pub pending: usize,
    pub bytes: u64,
    pub peers: Vec<String>,
}

/// The hint queue, shared between the actor and the root that restarts it. Only the
/// actor locks it, one message at a time.
pub type SharedHints = Arc<Mutex<HintQueue>>;

/// A new, empty shared queue.
pub fn shared_hints(limits: HintLimits) -> SharedHints {
    Arc::new(Mutex::new(HintQueue::new(limits)))
}

/// Start-up arguments.
pub struct HintArgs {
    /// The queue; kept across restarts of this actor.
    pub queue: SharedHints,
    pub replay_interval: Duration,
    pub peers: PeerClient,
    pub view: watch::Receiver<Arc<ClusterView>>,
    pub metrics: Arc<Metrics>,
}

/// State: the queue, which peers have a batch in flight, and the arguments.
pub struct HintState {
    queue: SharedHints,
    in_flight: HashSet<String>,
    args: HintArgs,
}

/// The hint queue actor.
pub struct HintQueueActor;

impl HintState {
    /// The queue (a panic while it was held leaves it usable: every operation of
    /// [`HintQueue`] keeps it consistent before it can panic).
    fn queue(&self) -> MutexGuard<'_, HintQueue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn export(&self) {
        let q = self.queue();
        let st = q.stats();
        let m = &self.args.metrics;
        m.hints_queued_total.store(st.queued, Relaxed);
        m.hints_replayed_total.store(st.replayed, Relaxed);
        m.hints_expired_total.store(st.expired, Relaxed);
        m.hints_dropped_total.store(st.dropped, Relaxed);
        m.hints_pending.store(q.len() as u64, Relaxed);
        m.hints_bytes.store(q.bytes(), Relaxed);
        m.hint_backlog.set(q.backlog());
    }

    fn replay(&mut self, myself: &ActorRef<HintMsg>) {
        self.queue().expire(now_ms());
        let view = self.args.view.borrow().clone();
        let peers = self.queue().peers();
        for peer in peers {
            if self.in_flight.contains(&peer) {
                continue;
            }
            // Only live peers (alive or suspect) are tried; dead ones wait.
            if !view.is_live(&peer) {
                continue;
            }
            let batch = self
                .queue()
                .batch(&peer, REPLAY_BATCH, MAX_BATCH_BYTES as u64);
            let Some(last_seq) = batch.last().map(|h| h.seq) else {
                continue;
            };
            self.in_flight.insert(peer.clone());
            let req = Replicate {
                writes: batch.into_iter().map(|h| h.write).collect(),
                mode: ApplyMode::Normal,
            };
            let peers = self.args.peers.clone();
            let me = myself.clone();
            tokio::spawn(async move {
                let msg = match peers.call(&peer, req).await {
                    Ok(_) => HintMsg::Delivered { peer, last_seq },
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "hint replay failed; retrying next tick");
                        HintMsg::Failed { peer }
                    }
                };
                let _ = me.cast(msg);
            });
        }
    }
}

impl Actor for HintQueueActor {
    type Msg = HintMsg;
    type State = HintState;
    type Arguments = HintArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<HintMsg>,
        args: HintArgs,
    ) -> Result<HintState, ActorProcessingErr> {
        myself.send_interval(args.replay_interval, || HintMsg::Replay);
        Ok(HintState {
            queue: args.queue.clone(),
            in_flight: HashSet::new(),
            args,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<HintMsg>,
        msg: HintMsg,
        state: &mut HintState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            HintMsg::Enqueue { peer, write } => state.queue().enqueue(&peer, write, now_ms()),
            HintMsg::Replay => state.replay(&myself),
            HintMsg::Delivered { peer, last_seq } => {
                state.in_flight.remove(&peer);
                let n = state.queue().delivered(&peer, last_seq);
                tracing::debug!(%peer, n, "hints replayed");
            }
            HintMsg::Failed { peer } => {
                state.in_flight.remove(&peer);
            }
            HintMsg::Status(reply) => {
                let q = state.queue();
                let _ = reply.send(HintStatus {
                    pending: q.len(),
                    bytes: q.bytes(),
                    peers: q.peers(),
                });
            }
            #[cfg(feature = "test-hooks")]
            HintMsg::Crash => panic!("test hook: hint queue crashed on purpose"),
            HintMsg::TakeAll(reply) => {
                let all = state.queue().take_all();
                let _ = reply.send(all);
            }
        }
        state.export();
        Ok(())
    }
}

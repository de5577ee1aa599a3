//! `RebalancerActor`: moves keys to their new owners when the ring changes, in throttled
//! batches ([`crate::rebalance::plan`] decides what moves where). A copy this node no
//! longer owns is released only after every new owner acknowledged it; such a move that
//! fails is retried every tick (until the ring changes again); any other failed move
//! becomes hints for the owners that missed it. With no ring change a tick moves
//! nothing. The drain coordinator uses [`RebalanceMsg::Flush`] to wait for the handoff of
//! a leaving node.

use crate::hint_queue::HintMsg;
use crate::membership::ClusterView;
use crate::metrics::Metrics;
use crate::peer::PeerClient;
use crate::proto::{chunk_writes, KeyedWrite, Replicate};
use crate::rebalance::{plan, stranded, Move};
use crate::ring::Ring;
use crate::shards::Shards;
use crate::slot::ActorSlot;
use crate::types::ApplyMode;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Messages of the rebalancer.
pub enum RebalanceMsg {
    /// Timer: notice a ring change, plan, and send the next batches.
    Tick,
    /// A batch finished: `moved` keys acknowledged by all their targets, `failed` not;
    /// `retry` are the failed moves that would release the local copy (tried again next
    /// tick, so a copy is never dropped before its new owners hold it).
    BatchDone {
        moved: u64,
        failed: u64,
        retry: Vec<Move>,
    },
    /// Answered once nothing is pending or in flight (after checking for a ring change):
    /// `true` when every key moved since the last plan was acknowledged.
    Flush(RpcReplyPort<bool>),
}

/// Start-up arguments.
pub struct RebalanceArgs {
    pub me: String,
    pub shards: Shards,
    pub peers: PeerClient,
    pub view: watch::Receiver<Arc<ClusterView>>,
    pub hints: ActorSlot<HintMsg>,
    pub interval: Duration,
    pub batch_size: usize,
    pub concurrency: usize,
    /// How often an idle rebalancer looks for copies this node does not own.
    pub sweep_interval: Duration,
    pub metrics: Arc<Metrics>,
}

/// State: the ring migrations are planned from, the last ring seen, the work queue.
pub struct RebalanceState {
    base: Ring,
    seen: Ring,
    pending: VecDeque<Move>,
    retry: Vec<Move>,
    in_flight: usize,
    waiters: Vec<RpcReplyPort<bool>>,
    started: Option<Instant>,
    /// Keys whose move failed since the migration started.
    failed: u64,
    /// When the last sweep for stranded copies ran.
    last_sweep: Instant,
    args: RebalanceArgs,
}

/// The rebalancer actor.
pub struct RebalancerActor;

fn same_layout(a: &Ring, b: &Ring) -> bool {
    a.nodes() == b.nodes() && a.replication() == b.replication()
}

impl RebalanceState {
    async fn tick(&mut self, myself: &ActorRef<RebalanceMsg>) {
        // Stale local data is not moved until membership has dropped it; a flush
        // (a drain) waiting meanwhile is told its handoff is not complete.
        if self.args.shards.stale() {
            for w in self.waiters.drain(..) {
                let _ = w.send(false);
            }
            return;
        }
        let current = self.args.view.borrow().ring.clone();
        if !same_layout(&current, &self.seen) {
            if self.pending.is_empty() && self.in_flight == 0 && self.retry.is_empty() {
                self.base = self.seen.clone();
            }
            match self.args.shards.versions().await {
                Ok(keys) => {
                    let moves = plan(&self.args.me, &keys, &self.base, &current);
                    tracing::info!(moves = moves.len(), nodes = ?current.nodes(), "ring changed: rebalance planned");
                    self.pending = moves.into();
                    self.retry.clear();
                    if !self.pending.is_empty() && self.started.is_none() {
                        self.started = Some(Instant::now());
                        self.failed = 0;
                    }
                    self.seen = current;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "rebalance: cannot list keys; retrying next tick")
                }
            }
        }
        self.pending.extend(self.retry.drain(..));
        self.sweep_if_due().await;
        self.pump(myself);
    }

    /// When idle and the sweep interval has passed: plans the hand-off and release of
    /// every copy this node holds but does not own ([`stranded`]).
    async fn sweep_if_due(&mut self) {
        let idle = self.pending.is_empty() && self.in_flight == 0 && self.retry.is_empty();
        if !idle || self.last_sweep.elapsed() < self.args.sweep_interval {
            return;
        }
        self.last_sweep = Instant::now();
        let view = self.args.view.borrow().clone();
        if !same_layout(&view.ring, &self.seen) {
            return;
        }
        let keys = match self.args.shards.versions().await {
            Ok(keys) => keys,
            Err(e) => {
                tracing::warn!(error = %e, "ownership sweep: cannot list keys; retrying at the next sweep");
                return;
            }
        };
        let moves = stranded(&self.args.me, &keys, &view.ring, |o| view.is_live(o));
        if moves.is_empty() {
            return;
        }
        self.args
            .metrics
            .stranded_copies_total
            .fetch_add(moves.len() as u64, Relaxed);
        tracing::info!(
            copies = moves.len(),
            "copies held here but owned elsewhere: handing them off"
        );
        self.pending = moves.into();
    }

    /// Sends batches until `concurrency` are in flight. Called on every tick and every
    /// finished batch, so a migration runs at the speed the targets acknowledge.
    fn pump(&mut self, myself: &ActorRef<RebalanceMsg>) {
        while self.in_flight < self.args.concurrency && !self.pending.is_empty() {
            let n = self.args.batch_size.min(self.pending.len());
            let batch: Vec<Move> = self.pending.drain(..n).collect();
            self.in_flight += 1;
            Metrics::inc(&self.args.metrics.rebalance_batches_total);
            let ctx = (
                self.args.shards.clone(),
                self.args.peers.clone(),
                self.args.view.borrow().clone(),
                self.args.hints.clone(),
                self.args.view.clone(),
                self.args.me.clone(),
            );
            let me = myself.clone();
            tokio::spawn(async move {
                let (moved, failed, retry) = send_batch(batch, ctx).await;
                let _ = me.cast(RebalanceMsg::BatchDone {
                    moved,
                    failed,
                    retry,
                });
            });
        }
        if !self.pending.is_empty() {
            Metrics::inc(&self.args.metrics.rebalance_throttled_total);
        }
        self.args
            .metrics
            .rebalance_pending
            .store(self.pending.len() as u64, Relaxed);
        self.settle();
    }

    /// When idle: record the duration and answer flush waiters.
    fn settle(&mut self) {
        if !self.pending.is_empty() || self.in_flight > 0 || !self.retry.is_empty() {
            return;
        }
        // Not idle either while a ring change has not been planned yet.
        if !same_layout(&self.args.view.borrow().ring, &self.seen) {
            return;
        }
        if let Some(t) = self.started.take() {
            let ms = t.elapsed().as_millis() as u64;
            self.args
                .metrics
                .rebalance_last_duration_ms
                .store(ms, Relaxed);
            tracing::info!(took_ms = ms, "rebalance finished");
        }
        self.base = self.seen.clone();
        let clean = self.failed == 0;
        for w in self.waiters.drain(..) {
            let _ = w.send(clean);
        }
    }
}

/// What a batch needs: the view it was planned under, and the live one for the release
/// check, with this node's id.
type BatchCtx = (
    Shards,
    PeerClient,
    Arc<ClusterView>,
    ActorSlot<HintMsg>,
    watch::Receiver<Arc<ClusterView>>,
    String,
);

/// Sends one batch to its targets; releases acknowledged copies. A failed move that
/// keeps its copy becomes hints; one that would release its copy is returned for retry.
async fn send_batch(
    batch: Vec<Move>,
    (shards, peers, view, hints, view_now, me): BatchCtx,
) -> (u64, u64, Vec<Move>) {
    let keys: Vec<String> = batch.iter().map(|m| m.key.clone()).collect();
    let Ok(records) = shards.records(&keys).await else {
        let retry: Vec<Move> = batch.iter().filter(|m| m.release).cloned().collect();
        return (0, batch.len() as u64, retry);
    };
    let mut per_target: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, m) in batch.iter().enumerate() {
        if records[i].is_some() {
            for t in &m.to {
                per_target.entry(t.as_str()).or_default().push(i);
            }
        }
    }
    let mut missed = vec![0usize; batch.len()];
    let mut reached = vec![0usize; batch.len()];
    for (target, idxs) in per_target {
        if view.addr_of(target).is_some() && !view.is_live(target) {
            // A home owner declared dead gets the copy as a hint (it never acknowledges
            // now); the move counts on its live targets.
            for i in &idxs {
                if let Some(write) = records[*i].clone() {
                    hints.cast(HintMsg::Enqueue {
                        peer: target.to_owned(),
                        write: KeyedWrite {
                            key: batch[*i].key.clone(),
                            write,
                        },
                    });
                }
            }
            continue;
        }
        let writes: Vec<(usize, KeyedWrite)> = idxs
            .iter()
            .filter_map(|i| {
                records[*i].clone().map(|write| {
                    (
                        *i,
                        KeyedWrite {
                            key: batch[*i].key.clone(),
                            write,
                        },
                    )
                })
            })
            .collect();
        let known = view.addr_of(target).is_some();
        // Batches are split by bytes, one call per chunk.
        let mut sent = 0;
        for chunk in chunk_writes(writes.iter().map(|(_, w)| w.clone()).collect()) {
            let n = chunk.len();
            let ok = known && {
                let req = Replicate {
                    writes: chunk,
                    mode: ApplyMode::Normal,
                };
                peers.call(target, req).await.is_ok()
            };
            if ok {
                for (i, _) in &writes[sent..sent + n] {
                    reached[*i] += 1;
                }
            } else {
                for (i, w) in &writes[sent..sent + n] {
                    missed[*i] += 1;
                    if !batch[*i].release {
                        hints.cast(HintMsg::Enqueue {
                            peer: target.to_owned(),
                            write: w.clone(),
                        });
                    }
                }
            }
            sent += n;
        }
    }
    let (mut moved, mut failed, mut retry) = (0, 0, Vec::new());
    for (i, m) in batch.iter().enumerate() {
        let Some(rec) = &records[i] else { continue };
        // Every live target must hold the copy, and at least one must (a move whose
        // targets are all dead keeps its copy).
        if missed[i] > 0 || reached[i] == 0 {
            failed += 1;
            if m.release {
                retry.push(m.clone());
            }
            continue;
        }
        moved += 1;
        // Ownership is checked again right before the release: a ring that changed
        // since the move was planned may have made this node an owner again.
        if m.release && view_now.borrow().ring.owners(&m.key).contains(&me.as_str()) {
            continue;
        }
        if m.release {
            // A copy rewritten meanwhile is kept (false); a shard error leaves an extra copy.
            if let Err(e) = shards.release(&m.key, rec.version).await {
                tracing::warn!(key = %m.key, error = %e, "could not release a handed-off copy");
            }
        }
    }
    (moved, failed, retry)
}

impl Actor for RebalancerActor {
    type Msg = RebalanceMsg;
    type State = RebalanceState;
    type Arguments = RebalanceArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RebalanceMsg>,
        args: RebalanceArgs,
    ) -> Result<RebalanceState, ActorProcessingErr> {
        myself.send_interval(args.interval, || RebalanceMsg::Tick);
        let ring = args.view.borrow().ring.clone();
        Ok(RebalanceState {
            base: ring.clone(),
            seen: ring,
            pending: VecDeque::new(),
            retry: Vec::new(),
            in_flight: 0,
            waiters: Vec::new(),
            started: None,
            failed: 0,
            last_sweep: Instant::now(),
            args,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<RebalanceMsg>,
        msg: RebalanceMsg,
        state: &mut RebalanceState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RebalanceMsg::Tick => state.tick(&myself).await,
            RebalanceMsg::BatchDone {
                moved,
                failed,
                retry,
            } => {
                state.retry.extend(retry);
                state.in_flight = state.in_flight.saturating_sub(1);
                state
                    .args
                    .metrics
                    .rebalance_keys_total
                    .fetch_add(moved, Relaxed);
                state
                    .args
                    .metrics
                    .rebalance_failures_total
                    .fetch_add(failed, Relaxed);
                state.failed += failed;
                state.pump(&myself);
            }
            RebalanceMsg::Flush(reply) => {
                state.waiters.push(reply);
                state.tick(&myself).await;
            }
        }
        Ok(())
    }
}

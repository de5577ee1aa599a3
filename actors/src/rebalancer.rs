//! `RebalancerActor`: moves keys to their new owners when the ring changes, in throttled
//! batches ([`crate::rebalance::plan`] decides what moves where). A copy this node no
//! longer owns is released only after every new owner acknowledged it; a batch that
//! fails becomes hints for the owners that missed it. With no ring change a tick moves
//! nothing. The drain coordinator uses [`RebalanceMsg::Flush`] to wait for the handoff of
//! a leaving node.

use crate::hint_queue::HintMsg;
use crate::membership::ClusterView;
use crate::metrics::Metrics;
use crate::node::ActorSlot;
use crate::proto::{KeyedWrite, Replicate};
use crate::rebalance::{plan, Move};
use crate::ring::Ring;
use crate::shards::Shards;
use crate::transport::Peers;
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
    /// A batch finished: `moved` keys acknowledged by all their targets, `failed` not.
    BatchDone { moved: u64, failed: u64 },
    /// Answered once nothing is pending or in flight (after checking for a ring change):
    /// `true` when every key moved since the last plan was acknowledged.
    Flush(RpcReplyPort<bool>),
}

/// Start-up arguments.
pub struct RebalanceArgs {
    pub me: String,
    pub shards: Shards,
    pub peers: Peers,
    pub view: watch::Receiver<Arc<ClusterView>>,
    pub hints: ActorSlot<HintMsg>,
    pub interval: Duration,
    pub batch_size: usize,
    pub concurrency: usize,
    pub peer_timeout: Duration,
    pub metrics: Arc<Metrics>,
}

/// State: the ring migrations are planned from, the last ring seen, the work queue.
pub struct RebalanceState {
    base: Ring,
    seen: Ring,
    pending: VecDeque<Move>,
    in_flight: usize,
    waiters: Vec<RpcReplyPort<bool>>,
    started: Option<Instant>,
    /// Keys whose move failed since the migration started.
    failed: u64,
    args: RebalanceArgs,
}

/// The rebalancer actor.
pub struct RebalancerActor;

fn same_layout(a: &Ring, b: &Ring) -> bool {
    a.nodes() == b.nodes() && a.replication() == b.replication()
}

impl RebalanceState {
    async fn tick(&mut self, myself: &ActorRef<RebalanceMsg>) {
        let current = self.args.view.borrow().ring.clone();
        if !same_layout(&current, &self.seen) {
            if self.pending.is_empty() && self.in_flight == 0 {
                self.base = self.seen.clone();
            }
            match self.args.shards.versions().await {
                Ok(keys) => {
                    let moves = plan(&self.args.me, &keys, &self.base, &current);
                    tracing::info!(moves = moves.len(), nodes = ?current.nodes(), "ring changed: rebalance planned");
                    self.pending = moves.into();
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
        self.pump(myself);
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
                self.args.peer_timeout,
            );
            let me = myself.clone();
            tokio::spawn(async move {
                let (moved, failed) = send_batch(batch, ctx).await;
                let _ = me.cast(RebalanceMsg::BatchDone { moved, failed });
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
        if !self.pending.is_empty() || self.in_flight > 0 {
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

type BatchCtx = (
    Shards,
    Peers,
    Arc<ClusterView>,
    ActorSlot<HintMsg>,
    Duration,
);

/// Sends one batch to its targets; releases acknowledged copies; failures become hints.
async fn send_batch(
    batch: Vec<Move>,
    (shards, peers, view, hints, timeout): BatchCtx,
) -> (u64, u64) {
    let keys: Vec<String> = batch.iter().map(|m| m.key.clone()).collect();
    let Ok(records) = shards.records(&keys).await else {
        return (0, batch.len() as u64);
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
    for (target, idxs) in per_target {
        let writes: Vec<KeyedWrite> = idxs
            .iter()
            .filter_map(|i| {
                records[*i].clone().map(|write| KeyedWrite {
                    key: batch[*i].key.clone(),
                    write,
                })
            })
            .collect();
        let ok = match view.addr_of(target) {
            Some(addr) => {
                let req = Replicate {
                    writes: writes.clone(),
                    mode: ApplyMode::Normal,
                };
                peers.call(addr, req, timeout).await.is_ok()
            }
            None => false,
        };
        if !ok {
            for (i, w) in idxs.iter().zip(writes) {
                missed[*i] += 1;
                if let Some(h) = hints.get() {
                    let _ = h.cast(HintMsg::Enqueue {
                        peer: target.to_owned(),
                        write: w,
                    });
                }
            }
        }
    }
    let (mut moved, mut failed) = (0, 0);
    for (i, m) in batch.iter().enumerate() {
        let Some(rec) = &records[i] else { continue };
        if missed[i] > 0 {
            failed += 1;
            continue;
        }
        moved += 1;
        if m.release {
            let _ = shards.release(&m.key, rec.version).await;
        }
    }
    (moved, failed)
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
            in_flight: 0,
            waiters: Vec::new(),
            started: None,
            failed: 0,
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
            RebalanceMsg::BatchDone { moved, failed } => {
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

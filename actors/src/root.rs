//! The root supervisor and the supervision tree of one node.
//!
//! ```text
//! RootSupervisor
//! ├── DrainCoordinator      restart (its flag lives outside the actor: drain stays one-way)
//! ├── MembershipActor       restart (resumes from the last published member list)
//! ├── AntiEntropyActor      restart (stateless between rounds)
//! ├── RebalancerActor       restart (from the current ring; anti-entropy finishes an interrupted migration)
//! ├── RepairActor           restart (in-flight repairs are forgotten; anti-entropy covers them)
//! ├── HintQueueActor        restart (the queue lives outside the actor: no hint is lost)
//! ├── PeerActor × peers     one per remote member not known to have left, started and
//! │                         stopped as the published view changes; restart (calls it
//! │                         held fail as `Dropped`; anti-entropy repairs the writes)
//! └── ShardActor × N        restart empty; the shard table gets the new reference
//! ```
//!
//! Policy: a child that fails (panic or `Err` from a handler) is restarted; the root
//! knows each child by its [`Child`] kind, recorded when it spawned it. More than
//! [`MAX_RESTARTS`] restarts within [`RESTART_WINDOW`] escalate: the root stops, and the
//! process exits non-zero so its own supervisor (systemd, compose, Kubernetes) restarts
//! it. A child that stops normally is not restarted. On stop the root stops its children
//! in order: drain coordinator, membership, background actors, peers, then shards.

use crate::anti_entropy::{AeArgs, AeContext, AeMsg, AntiEntropyActor};
use crate::config::NodeConfig;
use crate::drain::{DrainArgs, DrainCoordinator, DrainMsg, DrainReport};
use crate::hint_queue::{HintArgs, HintMsg, HintQueueActor, SharedHints};
use crate::membership::{ClusterView, MembershipActor, MembershipArgs, MembershipMsg};
use crate::metrics::Metrics;
use crate::peer::{HintSink, PeerActor, PeerArgs, PeerClient, PeerMsg, PeerTable};
use crate::proto::WireState;
use crate::rebalancer::{RebalanceArgs, RebalanceMsg, RebalancerActor};
use crate::repair::{RepairActor, RepairArgs, RepairMsg};
use crate::shard::{ShardActor, ShardArgs};
use crate::shards::Shards;
use crate::slot::ActorSlot;
use crate::store::ShardLimits;
use crate::transport::Wire;
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Restarts allowed within [`RESTART_WINDOW`] before the root escalates.
pub const MAX_RESTARTS: usize = 20;
/// The window over which restarts are counted.
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// Messages of the root.
pub enum RootMsg {
    /// The published view changed: start, re-address or stop peer actors.
    ViewChanged,
}

/// Which child an actor is; how the root knows what to restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Child {
    Shard(usize),
    Membership,
    Drain,
    Hints,
    Repair,
    Rebalancer,
    AntiEntropy,
    Peer(String),
}

/// The replaceable references of the singleton children, shared with the node handle.
#[derive(Clone, Default)]
pub struct Slots {
    pub membership: ActorSlot<MembershipMsg>,
    pub drain: ActorSlot<DrainMsg>,
    pub hints: ActorSlot<HintMsg>,
    pub repair: ActorSlot<RepairMsg>,
    pub rebalancer: ActorSlot<RebalanceMsg>,
    pub anti_entropy: ActorSlot<AeMsg>,
}

/// Everything the root needs to build (and rebuild) its children.
pub struct RootArgs {
    pub config: Arc<NodeConfig>,
    pub metrics: Arc<Metrics>,
    pub shards: Shards,
    pub slots: Slots,
    pub view: Arc<watch::Sender<Arc<ClusterView>>>,
    pub draining: Arc<watch::Sender<bool>>,
    /// The drain's report once it finished; kept across restarts of the coordinator.
    pub drain_report: Arc<watch::Sender<Option<DrainReport>>>,
    pub wire: Wire,
    pub peer_table: PeerTable,
    pub peers: PeerClient,
    /// Where peer actors queue the writes of failed coordinated calls.
    pub hint_sink: HintSink,
    /// The hint queue; kept across restarts of its actor.
    pub hints: SharedHints,
}

/// The root's state: its arguments, its children by id, and the restart history.
pub struct RootState {
    args: RootArgs,
    children: HashMap<ActorId, Child>,
    restarts: VecDeque<Instant>,
}

/// The root supervisor.
pub struct RootSupervisor;

/// Splits `total` as evenly as possible into `parts` (the first ones get the remainder).
pub fn split_evenly(total: u64, parts: usize, index: usize) -> u64 {
    let parts = parts as u64;
    total / parts + u64::from((index as u64) < total % parts)
}

fn shard_args(cfg: &NodeConfig, index: usize) -> ShardArgs {
    ShardArgs {
        index,
        limits: ShardLimits {
            capacity_items: split_evenly(cfg.capacity_items as u64, cfg.shards, index) as usize,
            capacity_bytes: cfg
                .capacity_bytes
                .map(|b| split_evenly(b, cfg.shards, index)),
            tombstone_retention_ms: cfg.tombstone_retention.as_millis() as u64,
            tombstone_bytes: split_evenly(cfg.tombstone_bytes, cfg.shards, index),
        },
        sweep_interval: cfg.sweep_interval,
    }
}

/// The peers that should have an actor: every member but this node that has not left,
/// with its address.
pub fn wanted_peers(view: &ClusterView) -> HashMap<String, String> {
    view.members
        .iter()
        .filter(|m| m.id != view.self_id && m.state != WireState::Left)
        .map(|m| (m.id.clone(), m.address.clone()))
        .collect()
}

impl RootState {
    /// Spawns `child` linked to the root and records its kind.
    async fn spawn(&mut self, root: &ActorCell, child: Child) -> Result<(), ActorProcessingErr> {
        let a = &self.args;
        let c = &a.config;
        let cell = match &child {
            Child::Shard(index) => {
                let (s, _) =
                    Actor::spawn_linked(None, ShardActor, shard_args(c, *index), root.clone())
                        .await?;
                a.shards.set(*index, s.clone());
                s.get_cell()
            }
            Child::Membership => {
                let args = MembershipArgs {
                    node_id: c.node_id.clone(),
                    advertise: c.advertise.clone(),
                    replication: c.replication,
                    seeds: c.seeds.clone(),
                    heartbeat: c.heartbeat,
                    swim: c.swim.clone(),
                    wire: a.wire.clone(),
                    metrics: a.metrics.clone(),
                    rng_seed: c.rng_seed,
                    publish: a.view.clone(),
                    sloppy_quorum: c.sloppy_quorum,
                    shards: a.shards.clone(),
                };
                let (m, _) = Actor::spawn_linked(None, MembershipActor, args, root.clone()).await?;
                a.slots.membership.set(m.clone());
                m.get_cell()
            }
            Child::Hints => {
                let args = HintArgs {
                    queue: a.hints.clone(),
                    replay_interval: c.hint_replay,
                    peers: a.peers.clone(),
                    view: a.view.subscribe(),
                    metrics: a.metrics.clone(),
                };
                let (h, _) = Actor::spawn_linked(None, HintQueueActor, args, root.clone()).await?;
                a.slots.hints.set(h.clone());
                h.get_cell()
            }
            Child::Repair => {
                let args = RepairArgs {
                    peers: a.peers.clone(),
                    shards: a.shards.clone(),
                    metrics: a.metrics.clone(),
                };
                let (r, _) = Actor::spawn_linked(None, RepairActor, args, root.clone()).await?;
                a.slots.repair.set(r.clone());
                r.get_cell()
            }
            Child::Rebalancer => {
                let args = RebalanceArgs {
                    me: c.node_id.clone(),
                    shards: a.shards.clone(),
                    peers: a.peers.clone(),
                    view: a.view.subscribe(),
                    hints: a.slots.hints.clone(),
                    interval: c.rebalance_interval,
                    batch_size: c.rebalance_batch,
                    concurrency: c.rebalance_concurrency,
                    sweep_interval: c.ownership_sweep,
                    metrics: a.metrics.clone(),
                };
                let (r, _) = Actor::spawn_linked(None, RebalancerActor, args, root.clone()).await?;
                a.slots.rebalancer.set(r.clone());
                r.get_cell()
            }
            Child::AntiEntropy => {
                let args = AeArgs {
                    ctx: AeContext {
                        me: c.node_id.clone(),
                        shards: a.shards.clone(),
                        peers: a.peers.clone(),
                        view: a.view.subscribe(),
                        max_keys: c.anti_entropy_max_keys,
                    },
                    interval: c.anti_entropy_interval,
                    metrics: a.metrics.clone(),
                };
                let (r, _) =
                    Actor::spawn_linked(None, AntiEntropyActor, args, root.clone()).await?;
                a.slots.anti_entropy.set(r.clone());
                r.get_cell()
            }
            Child::Drain => {
                let args = DrainArgs {
                    flag: a.draining.clone(),
                    report: a.drain_report.clone(),
                    membership: a.slots.membership.clone(),
                    rebalancer: a.slots.rebalancer.clone(),
                    hints: a.slots.hints.clone(),
                    peers: a.peers.clone(),
                    view: a.view.subscribe(),
                    me: c.node_id.clone(),
                    drain_timeout: c.drain_timeout,
                    metrics: a.metrics.clone(),
                };
                let (d, _) =
                    Actor::spawn_linked(None, DrainCoordinator, args, root.clone()).await?;
                a.slots.drain.set(d.clone());
                d.get_cell()
            }
            Child::Peer(peer) => {
                let Some(addr) = a.view.borrow().addr_of(peer).map(str::to_owned) else {
                    // Gone from the view meanwhile: the next reconcile starts it if it returns.
                    tracing::info!(%peer, "peer actor not started: the member is no longer known");
                    return Ok(());
                };
                let args = PeerArgs {
                    peer: peer.clone(),
                    addr,
                    wire: a.wire.clone(),
                    limits: c.peer_limits,
                    timeout: c.peer_timeout,
                    hints: a.hint_sink.clone(),
                    metrics: a.metrics.clone(),
                };
                let (p, _) = Actor::spawn_linked(None, PeerActor, args, root.clone()).await?;
                a.peer_table.insert(peer, p.clone());
                p.get_cell()
            }
        };
        self.children.insert(cell.get_id(), child);
        Ok(())
    }

    /// Starts an actor for every new peer, tells moved peers their new address, and
    /// stops the actors of members that left or were forgotten.
    async fn reconcile_peers(&mut self, root: &ActorCell) -> Result<(), ActorProcessingErr> {
        let view = self.args.view.borrow().clone();
        let wanted = wanted_peers(&view);
        for peer in self.args.peer_table.peers() {
            if !wanted.contains_key(&peer) {
                if let Some(a) = self.args.peer_table.remove(&peer) {
                    self.children.remove(&a.get_id());
                    // The actor fails its queue (no hints: the member is gone) and stops.
                    if a.cast(PeerMsg::Retire).is_err() {
                        a.stop(Some("member left".into()));
                    }
                    self.args.metrics.peers.remove(&peer);
                    tracing::info!(%peer, "peer actor stopped");
                }
            }
        }
        for (peer, addr) in wanted {
            match self.args.peer_table.get(&peer) {
                Some(a) => {
                    let _ = a.cast(PeerMsg::Address(addr));
                }
                None => {
                    self.spawn(root, Child::Peer(peer.clone())).await?;
                    tracing::debug!(%peer, %addr, "peer actor started");
                }
            }
        }
        Ok(())
    }

    /// Records a restart; `Err` when the budget is spent and the root must escalate.
    fn note_restart(&mut self) -> Result<(), ActorProcessingErr> {
        let now = Instant::now();
        self.restarts.push_back(now);
        while let Some(t) = self.restarts.front() {
            if now.duration_since(*t) > RESTART_WINDOW {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        if self.restarts.len() > MAX_RESTARTS {
            return Err(format!(
                "more than {MAX_RESTARTS} actor restarts within {RESTART_WINDOW:?}; escalating"
            )
            .into());
        }
        Ok(())
    }

    /// Restarts the failed child `id`, whatever its kind.
    async fn restart(
        &mut self,
        root: &ActorCell,
        id: ActorId,
        why: String,
    ) -> Result<(), ActorProcessingErr> {
        let Some(child) = self.children.remove(&id) else {
            tracing::warn!(actor = %id, error = %why, "unknown child failed; ignoring");
            return Ok(());
        };
        if let Child::Peer(peer) = &child {
            // A peer that left meanwhile is not restarted.
            if self.args.peer_table.peer_of(id).is_none() {
                return Ok(());
            }
            self.args.peer_table.remove(peer);
        }
        match &child {
            Child::Shard(_) | Child::Hints | Child::Peer(_) => {
                tracing::error!(child = ?child, error = %why, "actor failed; restarting it empty")
            }
            _ => tracing::error!(child = ?child, error = %why, "actor failed; restarting it"),
        }
        self.note_restart()?;
        let m = &self.args.metrics;
        if matches!(child, Child::Shard(_)) {
            Metrics::inc(&m.shard_restarts_total);
        } else {
            Metrics::inc(&m.actor_restarts_total);
        }
        self.spawn(root, child).await
    }
}

impl Actor for RootSupervisor {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = RootArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RootMsg>,
        args: RootArgs,
    ) -> Result<RootState, ActorProcessingErr> {
        let cell = myself.get_cell();
        let shards = args.config.shards;
        // Subscribe before anything can publish, so no change between the first
        // reconcile and the forwarding task is missed.
        let mut changes = args.view.subscribe();
        let mut state = RootState {
            args,
            children: HashMap::new(),
            restarts: VecDeque::new(),
        };
        for index in 0..shards {
            state.spawn(&cell, Child::Shard(index)).await?;
        }
        for child in [
            Child::Hints,
            Child::Repair,
            Child::Rebalancer,
            Child::AntiEntropy,
            Child::Membership,
            Child::Drain,
        ] {
            state.spawn(&cell, child).await?;
        }
        state.reconcile_peers(&cell).await?;
        // Forward view changes to the mailbox; the task ends with the root.
        let me = myself.clone();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                if me.cast(RootMsg::ViewChanged).is_err() {
                    break;
                }
            }
        });
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<RootMsg>,
        msg: RootMsg,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RootMsg::ViewChanged => state.reconcile_peers(&myself.get_cell()).await,
        }
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<RootMsg>,
        event: SupervisionEvent,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            // Every kind of child is restarted (see the tree above).
            SupervisionEvent::ActorFailed(who, err) => {
                state
                    .restart(&myself.get_cell(), who.get_id(), err.to_string())
                    .await
            }
            // Normal stops (shutdown, or a peer actor stopped because its member left).
            SupervisionEvent::ActorTerminated(who, ..) => {
                state.children.remove(&who.get_id());
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<RootMsg>,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        let wait = Some(Duration::from_secs(5));
        let s = &state.args.slots;
        let singletons: Vec<Option<ActorCell>> = vec![
            s.drain.get().map(|a| a.get_cell()),
            s.membership.get().map(|a| a.get_cell()),
            s.anti_entropy.get().map(|a| a.get_cell()),
            s.rebalancer.get().map(|a| a.get_cell()),
            s.repair.get().map(|a| a.get_cell()),
        ];
        for a in singletons.into_iter().flatten() {
            let _ = a.stop_and_wait(None, wait).await;
        }
        for p in state.args.peer_table.all() {
            let _ = p.stop_and_wait(None, wait).await;
        }
        if let Some(h) = s.hints.get() {
            let _ = h.stop_and_wait(None, wait).await;
        }
        for a in state.args.shards.all() {
            let _ = a.stop_and_wait(None, wait).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::split_evenly;

    #[test]
    fn split_evenly_sums_to_total() {
        for total in [0u64, 1, 7, 100, 100_001] {
            for parts in [1usize, 3, 16] {
                let sum: u64 = (0..parts).map(|i| split_evenly(total, parts, i)).sum();
                assert_eq!(sum, total);
            }
        }
    }
}

//! The root supervisor and the supervision tree of one node.
//!
//! ```text
//! RootSupervisor
//! ├── DrainCoordinator      restart (its flag lives outside the actor: drain stays one-way)
//! ├── MembershipActor       restart (resumes from the last published member list)
//! ├── AntiEntropyActor      restart (stateless between rounds)
//! ├── RebalancerActor       restart (from the current ring; anti-entropy finishes an interrupted migration)
//! ├── RepairActor           restart (in-flight repairs are forgotten; anti-entropy covers them)
//! ├── HintQueueActor        restart empty (lost hints are repaired by anti-entropy)
//! └── ShardActor × N        restart empty; the shard table gets the new reference
//! ```
//!
//! Policy: a child that fails (panic or `Err` from a handler) is restarted. More than
//! [`MAX_RESTARTS`] restarts within [`RESTART_WINDOW`] escalate: the root stops, and the
//! process exits non-zero so its own supervisor (systemd, compose, Kubernetes) restarts
//! it. A child that stops normally is not restarted. On stop the root stops its children
//! in order: drain coordinator, membership, then shards.

use crate::anti_entropy::{AeArgs, AeContext, AeMsg, AntiEntropyActor};
use crate::drain::{DrainArgs, DrainCoordinator, DrainMsg};
use crate::hint_queue::{HintArgs, HintMsg, HintQueueActor};
use crate::membership::ClusterView;
use crate::membership::{MembershipActor, MembershipArgs, MembershipMsg};
use crate::metrics::Metrics;
use crate::node::{ActorSlot, NodeConfig};
use crate::rebalancer::{RebalanceArgs, RebalanceMsg, RebalancerActor};
use crate::repair::{RepairActor, RepairArgs, RepairMsg};
use crate::shard::{ShardActor, ShardArgs};
use crate::shards::Shards;
use crate::store::ShardLimits;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Restarts allowed within [`RESTART_WINDOW`] before the root escalates.
pub const MAX_RESTARTS: usize = 20;
/// The window over which restarts are counted.
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// The root takes no requests; it only supervises.
pub enum RootMsg {}

/// Everything the root needs to build (and rebuild) its children.
pub struct RootArgs {
    pub config: NodeConfig,
    pub metrics: Arc<Metrics>,
    pub shards: Shards,
    pub membership: ActorSlot<MembershipMsg>,
    pub drain: ActorSlot<DrainMsg>,
    pub hints: ActorSlot<HintMsg>,
    pub repair: ActorSlot<RepairMsg>,
    pub rebalancer: ActorSlot<RebalanceMsg>,
    pub anti_entropy: ActorSlot<AeMsg>,
    pub view: Arc<watch::Sender<Arc<ClusterView>>>,
    pub draining: Arc<watch::Sender<bool>>,
    pub peers: crate::transport::Peers,
}

/// The root's state: its arguments plus the restart history.
pub struct RootState {
    args: RootArgs,
    restarts: VecDeque<Instant>,
}

/// The root supervisor.
pub struct RootSupervisor;

/// Splits `total` as evenly as possible into `parts` (the first ones get the remainder).
pub fn split_evenly(total: u64, parts: usize, index: usize) -> u64 {
    let parts = parts as u64;
    total / parts + u64::from((index as u64) < total % parts)
}

impl RootSupervisor {
    fn shard_args(cfg: &NodeConfig, index: usize) -> ShardArgs {
        ShardArgs {
            index,
            limits: ShardLimits {
                capacity_items: split_evenly(cfg.capacity_items as u64, cfg.shards, index) as usize,
                capacity_bytes: cfg
                    .capacity_bytes
                    .map(|b| split_evenly(b, cfg.shards, index)),
                tombstone_retention_ms: cfg.tombstone_retention.as_millis() as u64,
            },
            sweep_interval: cfg.sweep_interval,
        }
    }

    async fn spawn_shard(
        myself: &ActorCell,
        args: &RootArgs,
        index: usize,
    ) -> Result<(), ActorProcessingErr> {
        let (shard, _) = Actor::spawn_linked(
            None,
            ShardActor,
            Self::shard_args(&args.config, index),
            myself.clone(),
        )
        .await?;
        args.shards.set(index, shard);
        Ok(())
    }

    async fn spawn_membership(
        myself: &ActorCell,
        args: &RootArgs,
    ) -> Result<(), ActorProcessingErr> {
        let (m, _) = Actor::spawn_linked(
            None,
            MembershipActor,
            MembershipArgs {
                node_id: args.config.node_id.clone(),
                advertise: args.config.advertise.clone(),
                replication: args.config.replication,
                seeds: args.config.seeds.clone(),
                heartbeat: args.config.heartbeat,
                swim: args.config.swim.clone(),
                peers: args.peers.clone(),
                metrics: args.metrics.clone(),
                publish: args.view.clone(),
            },
            myself.clone(),
        )
        .await?;
        args.membership.set(m);
        Ok(())
    }

    async fn spawn_hints(myself: &ActorCell, args: &RootArgs) -> Result<(), ActorProcessingErr> {
        let c = &args.config;
        let (a, _) = Actor::spawn_linked(
            None,
            HintQueueActor,
            HintArgs {
                limits: c.hint_limits,
                replay_interval: c.hint_replay,
                peer_timeout: c.peer_timeout,
                peers: args.peers.clone(),
                view: args.view.subscribe(),
                metrics: args.metrics.clone(),
            },
            myself.clone(),
        )
        .await?;
        args.hints.set(a);
        Ok(())
    }

    async fn spawn_repair(myself: &ActorCell, args: &RootArgs) -> Result<(), ActorProcessingErr> {
        let (a, _) = Actor::spawn_linked(
            None,
            RepairActor,
            RepairArgs {
                peers: args.peers.clone(),
                shards: args.shards.clone(),
                metrics: args.metrics.clone(),
                peer_timeout: args.config.peer_timeout,
            },
            myself.clone(),
        )
        .await?;
        args.repair.set(a);
        Ok(())
    }

    async fn spawn_rebalancer(
        myself: &ActorCell,
        args: &RootArgs,
    ) -> Result<(), ActorProcessingErr> {
        let c = &args.config;
        let (a, _) = Actor::spawn_linked(
            None,
            RebalancerActor,
            RebalanceArgs {
                me: c.node_id.clone(),
                shards: args.shards.clone(),
                peers: args.peers.clone(),
                view: args.view.subscribe(),
                hints: args.hints.clone(),
                interval: c.rebalance_interval,
                batch_size: c.rebalance_batch,
                concurrency: c.rebalance_concurrency,
                peer_timeout: c.peer_timeout,
                metrics: args.metrics.clone(),
            },
            myself.clone(),
        )
        .await?;
        args.rebalancer.set(a);
        Ok(())
    }

    async fn spawn_anti_entropy(
        myself: &ActorCell,
        args: &RootArgs,
    ) -> Result<(), ActorProcessingErr> {
        let c = &args.config;
        let (a, _) = Actor::spawn_linked(
            None,
            AntiEntropyActor,
            AeArgs {
                ctx: AeContext {
                    me: c.node_id.clone(),
                    shards: args.shards.clone(),
                    peers: args.peers.clone(),
                    view: args.view.subscribe(),
                    peer_timeout: c.peer_timeout,
                    max_keys: c.anti_entropy_max_keys,
                },
                interval: c.anti_entropy_interval,
                metrics: args.metrics.clone(),
            },
            myself.clone(),
        )
        .await?;
        args.anti_entropy.set(a);
        Ok(())
    }

    async fn spawn_drain(myself: &ActorCell, args: &RootArgs) -> Result<(), ActorProcessingErr> {
        let membership = args
            .membership
            .get()
            .ok_or("membership must start before the drain coordinator")?;
        let (d, _) = Actor::spawn_linked(
            None,
            DrainCoordinator,
            DrainArgs {
                flag: args.draining.clone(),
                membership,
                rebalancer: args.rebalancer.clone(),
                hints: args.hints.clone(),
                peers: args.peers.clone(),
                view: args.view.subscribe(),
                me: args.config.node_id.clone(),
                drain_timeout: args.config.drain_timeout,
                peer_timeout: args.config.peer_timeout,
                metrics: args.metrics.clone(),
            },
            myself.clone(),
        )
        .await?;
        args.drain.set(d);
        Ok(())
    }

    /// Records a restart; `Err` when the budget is spent and the root must escalate.
    fn note_restart(state: &mut RootState) -> Result<(), ActorProcessingErr> {
        let now = Instant::now();
        state.restarts.push_back(now);
        while let Some(t) = state.restarts.front() {
            if now.duration_since(*t) > RESTART_WINDOW {
                state.restarts.pop_front();
            } else {
                break;
            }
        }
        if state.restarts.len() > MAX_RESTARTS {
            return Err(format!(
                "more than {MAX_RESTARTS} actor restarts within {RESTART_WINDOW:?}; escalating"
            )
            .into());
        }
        Ok(())
    }

    async fn restart_child(
        myself: &ActorRef<RootMsg>,
        state: &mut RootState,
        who: &ActorCell,
        why: String,
    ) -> Result<(), ActorProcessingErr> {
        let cell = myself.get_cell();
        let id = who.get_id();
        if let Some(index) = state.args.shards.index_of(id) {
            tracing::error!(shard = index, error = %why, "shard actor failed; restarting it empty");
            Self::note_restart(state)?;
            Metrics::inc(&state.args.metrics.shard_restarts_total);
            return Self::spawn_shard(&cell, &state.args, index).await;
        }
        if state.args.membership.is(id) {
            tracing::error!(error = %why, "membership actor failed; restarting it");
            Self::note_restart(state)?;
            Metrics::inc(&state.args.metrics.actor_restarts_total);
            Self::spawn_membership(&cell, &state.args).await?;
            // The drain coordinator holds the old membership reference: rebuild it too.
            if let Some(d) = state.args.drain.get() {
                d.stop(Some("membership restarted".into()));
            }
            return Self::spawn_drain(&cell, &state.args).await;
        }
        if state.args.drain.is(id) {
            tracing::error!(error = %why, "drain coordinator failed; restarting it");
            Self::note_restart(state)?;
            Metrics::inc(&state.args.metrics.actor_restarts_total);
            return Self::spawn_drain(&cell, &state.args).await;
        }
        let which = if state.args.hints.is(id) {
            "hint queue"
        } else if state.args.repair.is(id) {
            "repair"
        } else if state.args.rebalancer.is(id) {
            "rebalancer"
        } else if state.args.anti_entropy.is(id) {
            "anti-entropy"
        } else {
            ""
        };
        if !which.is_empty() {
            tracing::error!(actor = which, error = %why, "actor failed; restarting it");
            Self::note_restart(state)?;
            Metrics::inc(&state.args.metrics.actor_restarts_total);
            return match which {
                "hint queue" => Self::spawn_hints(&cell, &state.args).await,
                "repair" => Self::spawn_repair(&cell, &state.args).await,
                "rebalancer" => Self::spawn_rebalancer(&cell, &state.args).await,
                _ => Self::spawn_anti_entropy(&cell, &state.args).await,
            };
        }
        tracing::warn!(actor = %id, error = %why, "unknown child failed; ignoring");
        Ok(())
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
        for index in 0..args.config.shards {
            Self::spawn_shard(&cell, &args, index).await?;
        }
        Self::spawn_hints(&cell, &args).await?;
        Self::spawn_repair(&cell, &args).await?;
        Self::spawn_rebalancer(&cell, &args).await?;
        Self::spawn_anti_entropy(&cell, &args).await?;
        Self::spawn_membership(&cell, &args).await?;
        Self::spawn_drain(&cell, &args).await?;
        Ok(RootState {
            args,
            restarts: VecDeque::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<RootMsg>,
        msg: RootMsg,
        _state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {}
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<RootMsg>,
        event: SupervisionEvent,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(who, err) => {
                Self::restart_child(&myself, state, &who, err.to_string()).await
            }
            // Normal stops (shutdown, or a stale drain coordinator replaced above).
            SupervisionEvent::ActorTerminated(..) | SupervisionEvent::ActorStarted(_) => Ok(()),
            _ => Ok(()),
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<RootMsg>,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        let wait = Some(Duration::from_secs(5));
        if let Some(d) = state.args.drain.get() {
            let _ = d.stop_and_wait(None, wait).await;
        }
        if let Some(m) = state.args.membership.get() {
            let _ = m.stop_and_wait(None, wait).await;
        }
        if let Some(a) = state.args.anti_entropy.get() {
            let _ = a.stop_and_wait(None, wait).await;
        }
        if let Some(a) = state.args.rebalancer.get() {
            let _ = a.stop_and_wait(None, wait).await;
        }
        if let Some(a) = state.args.repair.get() {
            let _ = a.stop_and_wait(None, wait).await;
        }
        if let Some(a) = state.args.hints.get() {
            let _ = a.stop_and_wait(None, wait).await;
        }
        for s in state.args.shards.all() {
            let _ = s.stop_and_wait(None, wait).await;
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

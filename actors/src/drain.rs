//! `DrainCoordinator`: owns the one-way "draining" state of the node and runs the drain
//! steps in order (SPEC §9): mark draining (health 503, writes 503), announce that this
//! node is leaving. Publishes the flag through a watch channel that request handlers read.
//!
//! Does not stop listeners or actors: the process shell does that after a drain
//! completes, by stopping the supervision tree.

use crate::membership::MembershipMsg;
use crate::metrics::Metrics;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
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
    pub metrics: Arc<Metrics>,
}

/// The coordinator actor; its state is its arguments.
pub struct DrainCoordinator;

impl Actor for DrainCoordinator {
    type Msg = DrainMsg;
    type State = DrainArgs;
    type Arguments = DrainArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<DrainMsg>,
        args: DrainArgs,
    ) -> Result<DrainArgs, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<DrainMsg>,
        msg: DrainMsg,
        state: &mut DrainArgs,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DrainMsg::Drain(reply) => {
                let report = Self::drain(state).await;
                let _ = reply.send(report);
            }
            DrainMsg::IsDraining(reply) => {
                let _ = reply.send(*state.flag.borrow());
            }
        }
        Ok(())
    }
}

impl DrainCoordinator {
    async fn drain(state: &mut DrainArgs) -> DrainReport {
        if *state.flag.borrow() {
            return DrainReport {
                started: false,
                draining: true,
            };
        }
        state.flag.send_replace(true);
        Metrics::inc(&state.metrics.drains_total);
        state.metrics.draining.store(1, Ordering::Relaxed);
        tracing::info!("drain started: health 503, writes 503 DRAINING");
        // Leaving the ring: peers (and this node's coordinator) stop routing writes here.
        let left = state
            .membership
            .call(MembershipMsg::Leave, Some(Duration::from_secs(5)))
            .await;
        if left.is_err() {
            tracing::warn!("membership did not confirm leave; continuing drain");
        }
        DrainReport {
            started: true,
            draining: true,
        }
    }
}

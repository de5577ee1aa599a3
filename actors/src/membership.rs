//! `MembershipActor`: owns this node's view of the cluster and publishes it, with the ring
//! built from it, as an immutable [`ClusterView`] snapshot that request handlers read.
//!
//! Today the view holds this node only; the peer protocol (probes, gossip) plugs into the
//! same actor. Does not own key data or routing decisions beyond building the ring.

use crate::ring::{Ring, VIRTUAL_NODES};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use std::sync::Arc;
use tokio::sync::watch;

/// Liveness of a member as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    Alive,
    Suspect,
    Dead,
    Left,
}

impl MemberState {
    /// Alive and suspect members own keys; dead and left ones do not.
    pub fn in_ring(self) -> bool {
        matches!(self, MemberState::Alive | MemberState::Suspect)
    }
}

/// One member as shown on `/cluster/members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberInfo {
    pub id: String,
    pub address: String,
    pub state: MemberState,
    pub incarnation: u64,
}

/// An immutable snapshot of membership and the ring built from it.
#[derive(Debug, Clone)]
pub struct ClusterView {
    pub self_id: String,
    pub members: Vec<MemberInfo>,
    pub ring: Ring,
}

impl ClusterView {
    fn build(self_id: &str, members: Vec<MemberInfo>, replication: usize) -> Self {
        let ring = Ring::new(
            members
                .iter()
                .filter(|m| m.state.in_ring())
                .map(|m| m.id.clone()),
            replication,
        );
        Self {
            self_id: self_id.to_owned(),
            members,
            ring,
        }
    }

    /// Virtual nodes per member of the ring.
    pub fn virtual_nodes(&self) -> usize {
        VIRTUAL_NODES
    }
}

/// Messages of the membership actor.
pub enum MembershipMsg {
    /// The current member list; answered with a clone of it.
    Members(RpcReplyPort<Vec<MemberInfo>>),
    /// This node is leaving (drain): mark itself `left` so it leaves the ring.
    Leave(RpcReplyPort<()>),
}

/// Start-up arguments.
pub struct MembershipArgs {
    pub node_id: String,
    pub advertise: String,
    pub replication: usize,
    /// Where the current view is published; kept across restarts of this actor.
    pub publish: Arc<watch::Sender<Arc<ClusterView>>>,
}

/// State: the member list and the publisher.
pub struct MembershipState {
    node_id: String,
    replication: usize,
    members: Vec<MemberInfo>,
    publish: Arc<watch::Sender<Arc<ClusterView>>>,
}

impl MembershipState {
    fn publish(&self) {
        let view = ClusterView::build(&self.node_id, self.members.clone(), self.replication);
        self.publish.send_replace(Arc::new(view));
    }
}

/// The membership actor.
pub struct MembershipActor;

/// The view a node starts with: itself, alive.
pub fn initial_view(node_id: &str, advertise: &str, replication: usize) -> ClusterView {
    ClusterView::build(
        node_id,
        vec![MemberInfo {
            id: node_id.to_owned(),
            address: advertise.to_owned(),
            state: MemberState::Alive,
            incarnation: 0,
        }],
        replication,
    )
}

impl Actor for MembershipActor {
    type Msg = MembershipMsg;
    type State = MembershipState;
    type Arguments = MembershipArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<MembershipMsg>,
        args: MembershipArgs,
    ) -> Result<MembershipState, ActorProcessingErr> {
        // After a restart, keep what was last published (e.g. a `left` self state).
        let members = args.publish.borrow().members.clone();
        let members = if members.is_empty() {
            initial_view(&args.node_id, &args.advertise, args.replication).members
        } else {
            members
        };
        let state = MembershipState {
            node_id: args.node_id,
            replication: args.replication,
            members,
            publish: args.publish,
        };
        state.publish();
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<MembershipMsg>,
        msg: MembershipMsg,
        state: &mut MembershipState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MembershipMsg::Members(reply) => {
                let _ = reply.send(state.members.clone());
            }
            MembershipMsg::Leave(reply) => {
                let id = state.node_id.clone();
                for m in state.members.iter_mut().filter(|m| m.id == id) {
                    m.state = MemberState::Left;
                }
                state.publish();
                let _ = reply.send(());
            }
        }
        Ok(())
    }
}

//! `MembershipActor`: the shell around the SWIM state machine ([`crate::swim::Swim`]).
//! It feeds the machine heartbeat ticks, replies, failures and timers, performs the
//! actions it returns (spawned peer calls, `send_after` timers), and publishes an
//! immutable [`ClusterView`] — members plus the ring built from them — whenever the
//! member list changes.
//!
//! Network waits never stall the mailbox: every peer call runs in a spawned task that
//! casts its result back. Does not own key data.

use crate::metrics::Metrics;
use crate::proto::{Ack, MemberEntry, Ping, PingReq, PingReqReply, WireState};
use crate::ring::{Ring, VIRTUAL_NODES};
use crate::shards::Shards;
use crate::swim::{Action, RemoveError, SeedPeer, Source, Swim, SwimConfig, SwimStats, Timer};
use crate::transport::Wire;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Liveness of a member as this node sees it.
pub type MemberState = WireState;

/// One member as shown on `/cluster/members`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberInfo {
    pub id: String,
    pub address: String,
    pub state: MemberState,
    pub incarnation: u64,
}

impl From<&MemberEntry> for MemberInfo {
    fn from(e: &MemberEntry) -> Self {
        Self {
            id: e.id.clone(),
            address: e.addr.clone(),
            state: e.state,
            incarnation: e.incarnation,
        }
    }
}

/// An immutable snapshot of membership and the ring built from it.
#[derive(Debug, Clone)]
pub struct ClusterView {
    pub self_id: String,
    pub members: Vec<MemberInfo>,
    /// The placement ring: whose copies a key's home owners are.
    pub ring: Ring,
    /// Effective membership changes so far (the membership version).
    pub version: u64,
    /// Since when this node has seen at most half of the members that have not left
    /// (alive or suspect, itself included); `None` while it sees a majority.
    pub minority_since: Option<Instant>,
}

impl ClusterView {
    /// Builds the view. The placement ring holds every member that has not left (dead
    /// ones included: a dead member stays a home owner until it is removed or forgotten
    /// after the dead timeout), or with `sloppy` only the alive and suspect ones.
    pub fn build(
        self_id: &str,
        members: Vec<MemberInfo>,
        replication: usize,
        version: u64,
        sloppy: bool,
    ) -> Self {
        let ring = Ring::new(
            members
                .iter()
                .filter(|m| match m.state {
                    WireState::Alive | WireState::Suspect => true,
                    WireState::Dead => !sloppy,
                    WireState::Left => false,
                })
                .map(|m| m.id.clone()),
            replication,
        );
        Self {
            self_id: self_id.to_owned(),
            members,
            ring,
            version,
            minority_since: None,
        }
    }

    /// Whether member `id` is believed reachable (alive or suspect). Unknown ids are not.
    pub fn is_live(&self, id: &str) -> bool {
        self.members
            .iter()
            .find(|m| m.id == id)
            .is_some_and(|m| matches!(m.state, WireState::Alive | WireState::Suspect))
    }

    /// Whether the reachable members (alive or suspect) are more than half of those that
    /// have not left.
    pub fn has_majority(&self) -> bool {
        let live = self
            .members
            .iter()
            .filter(|m| matches!(m.state, WireState::Alive | WireState::Suspect))
            .count();
        live * 2 > self.members_not_left()
    }

    /// Virtual nodes per member of the ring.
    pub fn virtual_nodes(&self) -> usize {
        VIRTUAL_NODES
    }

    /// The dist address of member `id`.
    pub fn addr_of(&self, id: &str) -> Option<&str> {
        self.members
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.address.as_str())
    }

    /// Members that count towards the replication factor: every member that has not left
    /// (dead ones included, so a node cut off from the rest cannot reach a quorum alone).
    pub fn members_not_left(&self) -> usize {
        self.members
            .iter()
            .filter(|m| m.state != WireState::Left)
            .count()
    }

    /// Counts of members by state: `(alive, suspect, dead, left)`.
    pub fn counts(&self) -> (u64, u64, u64, u64) {
        let c = |s| self.members.iter().filter(|m| m.state == s).count() as u64;
        (
            c(WireState::Alive),
            c(WireState::Suspect),
            c(WireState::Dead),
            c(WireState::Left),
        )
    }
}

/// The view a node starts with: itself, alive.
pub fn initial_view(node_id: &str, advertise: &str, replication: usize) -> ClusterView {
    ClusterView::build(
        node_id,
        vec![MemberInfo {
            id: node_id.to_owned(),
            address: advertise.to_owned(),
            state: WireState::Alive,
            incarnation: 0,
        }],
        replication,
        0,
        false,
    )
}

/// Protocol state shown on `/cluster/heartbeat`.
#[derive(Debug, Clone, Serialize)]
pub struct HeartbeatInfo {
    pub interval_ms: u64,
    pub probe_timeout_ms: u64,
    pub suspect_timeout_ms: u64,
    pub indirect_probe_k: usize,
    pub incarnation: u64,
    pub membership_version: u64,
    pub probes_ok: u64,
    pub probes_failed: u64,
    pub indirect_ok: u64,
    pub indirect_failed: u64,
    pub refuted: u64,
    pub last_probe: Option<LastProbe>,
}

/// The most recent probe.
#[derive(Debug, Clone, Serialize)]
pub struct LastProbe {
    pub seq: u64,
    pub target: String,
    pub acked: bool,
}

/// The sender of a dist message, as its envelope names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    pub id: String,
    pub addr: String,
}

impl Sender {
    fn source(&self) -> Source<'_> {
        Source::Member {
            id: &self.id,
            addr: &self.addr,
        }
    }
}

/// Messages of the membership actor.
pub enum MembershipMsg {
    /// Timer: heartbeat, start the next probe.
    Tick,
    /// A protocol timer fired.
    Timer(Timer),
    /// A peer answered, at `addr`, one of our pings.
    Acked { ack: Ack, addr: String },
    /// A direct probe failed at once.
    ProbeFailed(u64),
    /// A relay answered a ping-req for probe `seq`.
    IndirectReply { seq: u64, reply: PingReqReply },
    /// A peer pinged us (dist listener); answered with our ack. `from` is the sender
    /// as its envelope names it.
    Ping {
        ping: Ping,
        from: Sender,
        reply: RpcReplyPort<Ack>,
    },
    /// A peer asks this node to probe one of its members (SWIM indirect probe);
    /// answered once the target acked or the probe timed out.
    PingReq {
        req: PingReq,
        from: Sender,
        reply: RpcReplyPort<PingReqReply>,
    },
    /// Merge gossip that arrived some other way.
    Merge(Vec<MemberEntry>),
    /// Our full member list, to gossip; answered with it.
    Gossip(RpcReplyPort<Vec<MemberEntry>>),
    /// The member list; answered with it.
    Members(RpcReplyPort<Vec<MemberInfo>>),
    /// Protocol state for `/cluster/heartbeat`; answered with it.
    Heartbeat(RpcReplyPort<HeartbeatInfo>),
    /// This node is leaving (drain); answered once peers were told (or tried).
    Leave(RpcReplyPort<()>),
    /// An operator removes a dead member; answered with its entry as now known.
    Remove {
        id: String,
        reply: RpcReplyPort<Result<MemberInfo, RemoveError>>,
    },
    /// Test hook: panic, so the supervisor restarts the actor.
    #[cfg(feature = "test-hooks")]
    Crash,
}

/// Start-up arguments.
pub struct MembershipArgs {
    pub node_id: String,
    pub advertise: String,
    pub replication: usize,
    pub seeds: Vec<SeedPeer>,
    pub heartbeat: Duration,
    pub swim: SwimConfig,
    pub wire: Wire,
    pub metrics: Arc<Metrics>,
    /// Seed of the probe order; `None` draws one.
    pub rng_seed: Option<u64>,
    /// Where the current view is published; kept across restarts of this actor.
    pub publish: Arc<watch::Sender<Arc<ClusterView>>>,
    /// See [`crate::NodeConfig::sloppy_quorum`].
    pub sloppy_quorum: bool,
    /// The local store: told when a majority is seen, dropped when it went stale.
    pub shards: Shards,
}

/// State: the protocol machine and what the shell needs to do its I/O.
pub struct MembershipState {
    args: MembershipArgs,
    swim: Swim,
    published_version: u64,
    stats: SwimStats,
}

/// The membership actor.
pub struct MembershipActor;

impl MembershipState {
    fn publish_if_changed(&mut self) {
        let version = self.swim.changes();
        let stats = self.swim.stats();
        let m = &self.args.metrics;
        let d = |now: u64, before: u64| now.saturating_sub(before);
        m.heartbeat_success_total
            .fetch_add(d(stats.probes_ok, self.stats.probes_ok), Relaxed);
        m.heartbeat_failure_total
            .fetch_add(d(stats.probes_failed, self.stats.probes_failed), Relaxed);
        m.indirect_probe_success_total
            .fetch_add(d(stats.indirect_ok, self.stats.indirect_ok), Relaxed);
        m.indirect_probe_failure_total.fetch_add(
            d(stats.indirect_failed, self.stats.indirect_failed),
            Relaxed,
        );
        m.indirect_probe_refuted_total
            .fetch_add(d(stats.refuted, self.stats.refuted), Relaxed);
        m.gossip_entries_refused_total
            .fetch_add(d(stats.refused, self.stats.refused), Relaxed);
        self.stats = stats;
        if version == self.published_version {
            return;
        }
        m.membership_changes_total
            .fetch_add(version.saturating_sub(self.published_version), Relaxed);
        self.published_version = version;
        let members: Vec<MemberInfo> = self.swim.entries().iter().map(MemberInfo::from).collect();
        let mut view = ClusterView::build(
            &self.args.node_id,
            members,
            self.args.replication,
            version,
            self.args.sloppy_quorum,
        );
        if !view.has_majority() {
            let before = self.args.publish.borrow().minority_since;
            view.minority_since = Some(before.unwrap_or_else(Instant::now));
        }
        let (alive, suspect, dead, left) = view.counts();
        m.members_alive.store(alive, Relaxed);
        m.members_suspect.store(suspect, Relaxed);
        m.members_dead.store(dead, Relaxed);
        m.members_left.store(left, Relaxed);
        m.membership_minority
            .store(u64::from(view.minority_since.is_some()), Relaxed);
        m.membership_version.store(version, Relaxed);
        m.incarnation.store(self.swim.me().incarnation, Relaxed);
        tracing::info!(
            version,
            alive,
            suspect,
            dead,
            left,
            members = %view.members.iter().map(|m| format!("{}={:?}@{}", m.id, m.state, m.incarnation)).collect::<Vec<_>>().join(","),
            "membership changed"
        );
        self.args.publish.send_replace(Arc::new(view));
    }

    /// On every heartbeat: while this node sees a majority of the members, the store is
    /// told so; if it had not seen one for longer than the tombstone retention (a
    /// partition, a paused process), its data may hold keys deleted meanwhile whose
    /// tombstones are purged, so it is dropped first, and anti-entropy refills the node
    /// from its peers.
    async fn check_contact(&mut self) {
        if !self.swim.has_majority() {
            return;
        }
        let shards = &self.args.shards;
        if shards.stale() {
            match shards.clear().await {
                Ok(n) => {
                    self.args
                        .metrics
                        .stale_records_dropped_total
                        .fetch_add(n, Relaxed);
                    tracing::warn!(
                        records = n,
                        "out of touch with the cluster for longer than the tombstone retention: local data dropped so that no deleted key comes back"
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not drop stale local data; retrying next heartbeat");
                    return;
                }
            }
        }
        shards.saw_majority();
    }

    fn perform(&self, myself: &ActorRef<MembershipMsg>, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Schedule { after, timer } => {
                    myself.send_after(after, move || MembershipMsg::Timer(timer));
                }
                Action::Ping { addr, ping } => {
                    let peers = self.args.wire.clone();
                    let me = myself.clone();
                    let timeout = self.args.swim.probe_timeout;
                    let seq = ping.seq;
                    tokio::spawn(async move {
                        match peers.call(&addr, ping, timeout).await {
                            Ok(ack) => {
                                let _ = me.cast(MembershipMsg::Acked { ack, addr });
                            }
                            Err(e) => {
                                tracing::debug!(%addr, seq, error = %e, "ping failed");
                                if seq != 0 {
                                    let _ = me.cast(MembershipMsg::ProbeFailed(seq));
                                }
                            }
                        }
                    });
                }
                Action::PingReq { relay_addr, req } => {
                    let peers = self.args.wire.clone();
                    let me = myself.clone();
                    let timeout = self.args.swim.indirect_timeout;
                    let seq = req.seq;
                    tokio::spawn(async move {
                        if let Ok(reply) = peers.call(&relay_addr, req, timeout).await {
                            let _ = me.cast(MembershipMsg::IndirectReply { seq, reply });
                        }
                    });
                }
            }
        }
    }

    /// Probes `req.target_id` for a peer, at the address this node knows for it (never
    /// an address the request names: a relay only reaches known members). Unknown or
    /// self targets are answered "not acked" at once.
    fn relay(
        &self,
        myself: &ActorRef<MembershipMsg>,
        req: PingReq,
        reply: RpcReplyPort<PingReqReply>,
    ) {
        let members = self.swim.entries();
        let target = members
            .iter()
            .find(|m| m.id == req.target_id && m.id != self.args.node_id)
            .map(|m| m.addr.clone());
        let Some(addr) = target else {
            let _ = reply.send(PingReqReply {
                acked: false,
                members,
            });
            return;
        };
        let wire = self.args.wire.clone();
        let timeout = self.args.swim.probe_timeout;
        let me = myself.clone();
        let ping = Ping {
            seq: 0,
            members: members.clone(),
        };
        tokio::spawn(async move {
            let acked = match wire.call(&addr, ping, timeout).await {
                Ok(ack) => {
                    // Only an answer from the target itself is an ack of the target.
                    let acked = ack.me.id == req.target_id;
                    let _ = me.cast(MembershipMsg::Acked { ack, addr });
                    acked
                }
                Err(_) => false,
            };
            let _ = reply.send(PingReqReply { acked, members });
        });
    }

    fn heartbeat(&self) -> HeartbeatInfo {
        let s = self.swim.stats();
        HeartbeatInfo {
            interval_ms: self.args.heartbeat.as_millis() as u64,
            probe_timeout_ms: self.args.swim.probe_timeout.as_millis() as u64,
            suspect_timeout_ms: self.args.swim.suspect_timeout.as_millis() as u64,
            indirect_probe_k: self.args.swim.indirect_k,
            incarnation: self.swim.me().incarnation,
            membership_version: self.swim.changes(),
            probes_ok: s.probes_ok,
            probes_failed: s.probes_failed,
            indirect_ok: s.indirect_ok,
            indirect_failed: s.indirect_failed,
            refuted: s.refuted,
            last_probe: self
                .swim
                .current_probe()
                .map(|(seq, target, acked)| LastProbe {
                    seq,
                    target: target.to_owned(),
                    acked,
                }),
        }
    }
}

/// Tells every live peer at once that this node leaves, instead of waiting for gossip.
async fn announce_leave(peers: Wire, entries: Vec<MemberEntry>, me: String, timeout: Duration) {
    let ping = Ping {
        seq: 0,
        members: entries.clone(),
    };
    let calls: Vec<_> = entries
        .into_iter()
        .filter(|m| m.id != me && m.state == WireState::Alive)
        .map(|m| {
            let peers = peers.clone();
            let ping = ping.clone();
            tokio::spawn(async move { peers.call(&m.addr, ping, timeout).await })
        })
        .collect();
    for c in calls {
        let _ = c.await;
    }
}

impl Actor for MembershipActor {
    type Msg = MembershipMsg;
    type State = MembershipState;
    type Arguments = MembershipArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<MembershipMsg>,
        args: MembershipArgs,
    ) -> Result<MembershipState, ActorProcessingErr> {
        let mut swim = Swim::new(
            &args.node_id,
            &args.advertise,
            args.seeds.clone(),
            args.swim.clone(),
            args.rng_seed.unwrap_or_else(rand::random),
        );
        // After a restart of this actor, start from what was last published.
        let previous: Vec<MemberEntry> = args
            .publish
            .borrow()
            .members
            .iter()
            .map(|m| MemberEntry {
                id: m.id.clone(),
                addr: m.address.clone(),
                state: m.state,
                incarnation: m.incarnation,
            })
            .collect();
        let published_version = args.publish.borrow().version;
        // Everything published before, this node's own incarnation and leave included:
        // a restart of this actor neither resets the incarnation nor forgets members.
        let actions = swim.restore(&previous);
        swim.resume_changes(published_version);
        myself.send_interval(args.heartbeat, || MembershipMsg::Tick);
        let mut state = MembershipState {
            args,
            swim,
            published_version,
            stats: SwimStats::default(),
        };
        state.perform(&myself, actions);
        state.publish_if_changed();
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<MembershipMsg>,
        msg: MembershipMsg,
        state: &mut MembershipState,
    ) -> Result<(), ActorProcessingErr> {
        let actions = match msg {
            MembershipMsg::Tick => {
                state.check_contact().await;
                state.swim.tick()
            }
            MembershipMsg::Timer(t) => state.swim.on_timer(t),
            MembershipMsg::Acked { ack, addr } => state.swim.on_ack(ack, &addr),
            MembershipMsg::ProbeFailed(seq) => state.swim.on_probe_failed(seq),
            MembershipMsg::IndirectReply { seq, reply } => {
                state
                    .swim
                    .on_indirect_reply(seq, reply.acked, &reply.members)
            }
            MembershipMsg::Ping { ping, from, reply } => {
                let (ack, actions) = state.swim.on_ping(ping, from.source());
                let _ = reply.send(ack);
                actions
            }
            MembershipMsg::PingReq { req, from, reply } => {
                let actions = state.swim.merge(&req.members, from.source());
                state.relay(&myself, req, reply);
                actions
            }
            MembershipMsg::Merge(entries) => state.swim.merge(&entries, Source::Gossip),
            MembershipMsg::Gossip(reply) => {
                let _ = reply.send(state.swim.entries());
                Vec::new()
            }
            MembershipMsg::Members(reply) => {
                let _ = reply.send(state.swim.entries().iter().map(MemberInfo::from).collect());
                Vec::new()
            }
            MembershipMsg::Heartbeat(reply) => {
                let _ = reply.send(state.heartbeat());
                Vec::new()
            }
            #[cfg(feature = "test-hooks")]
            MembershipMsg::Crash => panic!("test hook: membership actor crashed on purpose"),
            MembershipMsg::Remove { id, reply } => match state.swim.remove(&id) {
                Ok((entry, actions)) => {
                    Metrics::inc(&state.args.metrics.members_removed_total);
                    tracing::warn!(member = %id, "dead member removed by an operator");
                    let _ = reply.send(Ok(MemberInfo::from(&entry)));
                    actions
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                    Vec::new()
                }
            },
            MembershipMsg::Leave(reply) => {
                state.swim.leave();
                state.publish_if_changed();
                let announce = announce_leave(
                    state.args.wire.clone(),
                    state.swim.entries(),
                    state.args.node_id.clone(),
                    state.args.swim.probe_timeout,
                );
                tokio::spawn(async move {
                    announce.await;
                    let _ = reply.send(());
                });
                Vec::new()
            }
        };
        state.perform(&myself, actions);
        state.publish_if_changed();
        Ok(())
    }
}

//! One node's actor system as the HTTP layer sees it: [`NodeConfig`] to start it,
//! [`NodeHandle`] to talk to it. Every method of the handle is a mailbox call (or a read
//! of a snapshot an actor published); the handle holds no cache state of its own.
//!
//! Owns the request paths (coordinating a write or read over a key's owners). Does not
//! own listeners, auth or HTTP encoding.

use crate::anti_entropy::{shared_entries, AeMsg};
use crate::drain::{DrainMsg, DrainReport};
use crate::error::CacheError;
use crate::hint_queue::HintMsg;
use crate::hints::HintLimits;
use crate::hlc::Hlc;
use crate::membership::{initial_view, ClusterView, HeartbeatInfo, MemberInfo, MembershipMsg};
use crate::merkle::{bucket_of, MerkleTree, BUCKETS};
use crate::metrics::Metrics;
use crate::proto::{
    AcceptHints, Ack, AeCompare, AeCompareReply, AeFetch, AeFetchReply, KeyedWrite, Ping, PingReq,
    PingReqReply, Read, Replicate,
};
use crate::quorum::{Consistency, Progress, QuorumTracker};
use crate::rebalancer::RebalanceMsg;
use crate::repair::RepairMsg;
use crate::root::{RootArgs, RootMsg, RootSupervisor};
use crate::shards::Shards;
use crate::swim::{SeedPeer, SwimConfig};
use crate::transport::{Faults, HttpTransport, Peers, Transport};
use crate::types::{now_ms, validate_key, ApplyMode, ApplyOutcome, Stored, Version, Write};
use bytes::Bytes;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorId, ActorRef, RpcReplyPort};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// What the actor system needs to know; built from the process configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: String,
    /// The dist address peers reach this node at.
    pub advertise: String,
    pub replication: usize,
    pub shards: usize,
    pub capacity_items: usize,
    pub capacity_bytes: Option<u64>,
    pub max_value_bytes: u64,
    pub tombstone_retention: Duration,
    pub sweep_interval: Duration,
    pub seeds: Vec<SeedPeer>,
    pub heartbeat: Duration,
    pub swim: SwimConfig,
    /// Sent as a bearer token on every peer call.
    pub auth_token: Option<String>,
    /// How long one replica call may take.
    pub peer_timeout: Duration,
    pub write_consistency: Consistency,
    pub read_consistency: Consistency,
    pub hint_limits: HintLimits,
    pub hint_replay: Duration,
    pub anti_entropy_interval: Duration,
    pub anti_entropy_max_keys: usize,
    pub rebalance_interval: Duration,
    pub rebalance_batch: usize,
    pub rebalance_concurrency: usize,
    /// How long a drain waits for the key handoff.
    pub drain_timeout: Duration,
}

/// A replaceable reference to a supervised actor: the supervisor writes the new
/// reference after a restart, callers read the current one per call.
pub struct ActorSlot<M: ractor::Message>(Arc<RwLock<Option<ActorRef<M>>>>);

impl<M: ractor::Message> Clone for ActorSlot<M> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<M: ractor::Message> Default for ActorSlot<M> {
    fn default() -> Self {
        Self(Arc::new(RwLock::new(None)))
    }
}

impl<M: ractor::Message> ActorSlot<M> {
    /// The current reference, if the actor has started.
    pub fn get(&self) -> Option<ActorRef<M>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set(&self, actor: ActorRef<M>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(actor);
    }

    pub(crate) fn is(&self, id: ActorId) -> bool {
        self.get().is_some_and(|a| a.get_id() == id)
    }

    /// Calls the actor, mapping every messaging failure to [`CacheError::Internal`].
    pub async fn call<T: Send + 'static>(
        &self,
        build: impl FnOnce(RpcReplyPort<T>) -> M,
        timeout: Duration,
    ) -> Result<T, CacheError> {
        let actor = self
            .get()
            .ok_or_else(|| CacheError::Internal("actor not started".into()))?;
        match actor.call(build, Some(timeout)).await {
            Ok(CallResult::Success(v)) => Ok(v),
            Ok(CallResult::Timeout) => Err(CacheError::Internal("actor call timed out".into())),
            _ => Err(CacheError::Internal(
                "actor unavailable (restarting)".into(),
            )),
        }
    }
}

/// What a coordinated write reports back.
#[derive(Debug, Clone)]
pub struct WriteAck {
    pub owners: Vec<String>,
    pub version: Version,
}

/// The handle request handlers use.
#[derive(Clone)]
pub struct NodeHandle {
    pub config: Arc<NodeConfig>,
    pub metrics: Arc<Metrics>,
    pub shards: Shards,
    pub membership: ActorSlot<MembershipMsg>,
    pub drain: ActorSlot<DrainMsg>,
    pub hints: ActorSlot<HintMsg>,
    pub repair: ActorSlot<RepairMsg>,
    pub rebalancer: ActorSlot<RebalanceMsg>,
    pub anti_entropy: ActorSlot<AeMsg>,
    pub hlc: Arc<Hlc>,
    pub peers: Peers,
    /// Link faults (only applied when built with the `test-hooks` feature).
    pub faults: Arc<Faults>,
    view: watch::Receiver<Arc<ClusterView>>,
    draining: watch::Receiver<bool>,
    root: ActorRef<RootMsg>,
}

/// Starts the supervision tree. The returned join handle finishes when the root stops
/// (normally after [`NodeHandle::stop`], or on escalation).
pub async fn start(
    config: NodeConfig,
    metrics: Arc<Metrics>,
) -> Result<(NodeHandle, tokio::task::JoinHandle<()>), CacheError> {
    let (view_tx, view_rx) = watch::channel(Arc::new(initial_view(
        &config.node_id,
        &config.advertise,
        config.replication,
    )));
    let (drain_tx, drain_rx) = watch::channel(false);
    let hlc = Arc::new(Hlc::new());
    let faults = Arc::new(Faults::default());
    let http = HttpTransport::new(config.auth_token.clone())
        .map_err(|e| CacheError::Internal(format!("peer HTTP client: {e}")))?;
    #[cfg(feature = "test-hooks")]
    let transport: Arc<dyn Transport> = Arc::new(crate::transport::FaultyTransport {
        inner: http,
        faults: faults.clone(),
    });
    #[cfg(not(feature = "test-hooks"))]
    let transport: Arc<dyn Transport> = Arc::new(http);
    let peers = Peers::new(transport, &config.node_id, &config.advertise, hlc.clone());
    let shards = Shards::default();
    let membership = ActorSlot::default();
    let drain = ActorSlot::default();
    let hints = ActorSlot::default();
    let repair = ActorSlot::default();
    let rebalancer = ActorSlot::default();
    let anti_entropy = ActorSlot::default();
    let args = RootArgs {
        config: config.clone(),
        metrics: metrics.clone(),
        shards: shards.clone(),
        membership: membership.clone(),
        drain: drain.clone(),
        hints: hints.clone(),
        repair: repair.clone(),
        rebalancer: rebalancer.clone(),
        anti_entropy: anti_entropy.clone(),
        view: Arc::new(view_tx),
        draining: Arc::new(drain_tx),
        peers: peers.clone(),
    };
    let (root, join) = Actor::spawn(None, RootSupervisor, args)
        .await
        .map_err(|e| CacheError::Internal(format!("actor system failed to start: {e}")))?;
    let handle = NodeHandle {
        config: Arc::new(config),
        metrics,
        shards,
        membership,
        drain,
        hints,
        repair,
        rebalancer,
        anti_entropy,
        hlc,
        peers,
        faults,
        view: view_rx,
        draining: drain_rx,
        root,
    };
    Ok((handle, join))
}

const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);

impl NodeHandle {
    /// The latest published membership and ring.
    pub fn view(&self) -> Arc<ClusterView> {
        self.view.borrow().clone()
    }

    /// True once a drain has started (one-way until restart).
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Admission of a client write: refused with [`CacheError::Draining`] once a drain
    /// has started. Handlers call it when a request arrives, so a write whose body was
    /// still streaming when the drain began completes.
    pub fn admit_write(&self) -> Result<(), CacheError> {
        if self.is_draining() {
            Err(CacheError::Draining)
        } else {
            Ok(())
        }
    }

    /// A receiver that changes to `true` when the node starts draining.
    pub fn draining_watch(&self) -> watch::Receiver<bool> {
        self.draining.clone()
    }

    /// The owners of `key` under the current ring.
    pub fn owners(&self, key: &str) -> Vec<String> {
        self.view()
            .ring
            .owners(key)
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// Stores `value` under `key`, expiring `ttl` after now (absolute instant).
    pub async fn put(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
        level: Option<Consistency>,
    ) -> Result<WriteAck, CacheError> {
        validate_key(key).map_err(|e| CacheError::BadRequest(e.to_string()))?;
        if value.len() as u64 > self.config.max_value_bytes {
            return Err(CacheError::PayloadTooLarge {
                size: value.len() as u64,
                limit: self.config.max_value_bytes,
            });
        }
        let now = now_ms();
        let expires_at_ms = ttl.map(|t| now.saturating_add(t.as_millis() as u64));
        self.write(key, Some(value), expires_at_ms, now, level)
            .await
    }

    /// Deletes `key` by writing a versioned tombstone (idempotent).
    pub async fn delete(
        &self,
        key: &str,
        level: Option<Consistency>,
    ) -> Result<WriteAck, CacheError> {
        validate_key(key).map_err(|e| CacheError::BadRequest(e.to_string()))?;
        self.write(key, None, None, now_ms(), level).await
    }

    /// The owners a request goes to: the ring's owners of `key`, or this node alone when
    /// the ring is empty (a lone node that has left the ring while it drains still
    /// finishes the writes it admitted and serves reads from what it holds).
    fn owners_for(&self, view: &ClusterView, key: &str) -> Vec<String> {
        let owners: Vec<String> = view
            .ring
            .owners(key)
            .into_iter()
            .map(str::to_owned)
            .collect();
        if owners.is_empty() {
            vec![self.config.node_id.clone()]
        } else {
            owners
        }
    }

    /// How many owners count towards a consistency level: the replication factor, or
    /// fewer when the cluster has fewer members that have not left. Dead members count,
    /// so a node cut off from the rest cannot reach a quorum on its own.
    fn replicas(&self, view: &ClusterView) -> usize {
        // Before a node has heard from its peers it knows only itself; counting its
        // configured seeds keeps it from taking quorum writes alone.
        let known = view.members_not_left().max(self.config.seeds.len() + 1);
        self.config.replication.min(known).max(1)
    }

    /// Coordinates a write: sends it to every owner in parallel (this node included when
    /// it is one) and answers once the level's acks are in. Replicas that answer later
    /// still apply it.
    async fn write(
        &self,
        key: &str,
        value: Option<Bytes>,
        expires_at_ms: Option<u64>,
        now: u64,
        level: Option<Consistency>,
    ) -> Result<WriteAck, CacheError> {
        let version = Version {
            hlc: self.hlc.now(now),
            origin: crate::types::origin_of(&self.config.node_id),
        };
        let write = Write {
            version,
            value,
            expires_at_ms,
        };
        let view = self.view();
        let owners = self.owners_for(&view, key);
        let level = level.unwrap_or(self.config.write_consistency);
        let needed = level.required(self.replicas(&view));
        let calls = owners
            .iter()
            .map(|o| (o.clone(), self.replicate_to(&view, o, key, write.clone())));
        let answers = self.await_quorum(needed, calls).await?;
        for (_, outcome) in answers {
            if outcome == ApplyOutcome::Stale {
                Metrics::inc(&self.metrics.version_conflicts_total);
            }
        }
        Ok(WriteAck { owners, version })
    }

    /// Runs one call per owner in parallel and collects answers until `needed` of them
    /// succeeded (`Ok` with those answers) or that can no longer happen (the quorum
    /// error). Calls still running carry on in the background.
    async fn await_quorum<T, F>(
        &self,
        needed: usize,
        calls: impl Iterator<Item = (String, F)>,
    ) -> Result<Vec<(String, T)>, CacheError>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, ()>> + Send + 'static,
    {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut asked = 0;
        for (owner, call) in calls {
            asked += 1;
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx.send((owner, call.await));
            });
        }
        drop(tx);
        let mut tracker = QuorumTracker::new(needed, asked);
        let mut answers = Vec::new();
        loop {
            match tracker.progress() {
                Progress::Done => return Ok(answers),
                Progress::Failed => {
                    Metrics::inc(&self.metrics.quorum_failures_total);
                    return Err(CacheError::Quorum {
                        needed: tracker.needed(),
                        got: tracker.acks(),
                    });
                }
                Progress::Pending => match rx.recv().await {
                    Some((owner, Ok(v))) => {
                        answers.push((owner, v));
                        tracker.ack();
                    }
                    Some((_, Err(()))) | None => {
                        tracker.fail();
                    }
                },
            }
        }
    }

    /// One replica write, as a future that owns everything it needs. A failed remote
    /// write is counted; it is not retried here.
    fn replicate_to(
        &self,
        view: &ClusterView,
        owner: &str,
        key: &str,
        write: Write,
    ) -> impl std::future::Future<Output = Result<ApplyOutcome, ()>> + Send + 'static {
        let local = owner == self.config.node_id;
        let shards = self.shards.clone();
        let peers = self.peers.clone();
        let metrics = self.metrics.clone();
        let hints = self.hints.clone();
        let addr = view.addr_of(owner).map(str::to_owned);
        let timeout = self.config.peer_timeout;
        let key = key.to_owned();
        let owner = owner.to_owned();
        async move {
            if local {
                return shards.apply(&key, write).await.map_err(|_| ());
            }
            Metrics::inc(&metrics.forwards_total);
            let kw = KeyedWrite { key, write };
            let result = match addr {
                Some(addr) => {
                    let req = Replicate {
                        writes: vec![kw.clone()],
                        mode: ApplyMode::Normal,
                    };
                    match peers.call(&addr, req, timeout).await {
                        Ok(reply) if reply.outcomes.len() == 1 => Ok(reply.outcomes[0]),
                        Ok(_) => Err("wrong number of outcomes".to_string()),
                        Err(e) => Err(e.to_string()),
                    }
                }
                None => Err("no address".to_string()),
            };
            match result {
                Ok(outcome) => {
                    Metrics::inc(&metrics.forward_acks_total);
                    Ok(outcome)
                }
                Err(e) => {
                    Metrics::inc(&metrics.forward_failures_total);
                    tracing::debug!(peer = %owner, error = %e, "replica write failed; queued as a hint");
                    // Hinted handoff: replayed later with the original version.
                    if let Some(h) = hints.get() {
                        let _ = h.cast(HintMsg::Enqueue {
                            peer: owner,
                            write: kw,
                        });
                    }
                    Err(())
                }
            }
        }
    }

    /// One replica read, as a future that owns everything it needs.
    fn read_from(
        &self,
        view: &ClusterView,
        owner: &str,
        key: &str,
    ) -> impl std::future::Future<Output = Result<Option<Write>, ()>> + Send + 'static {
        let local = owner == self.config.node_id;
        let shards = self.shards.clone();
        let peers = self.peers.clone();
        let metrics = self.metrics.clone();
        let addr = view.addr_of(owner).map(str::to_owned);
        let timeout = self.config.peer_timeout;
        let key = key.to_owned();
        async move {
            if local {
                return shards.read(&key).await.map_err(|_| ());
            }
            let addr = addr.ok_or(())?;
            Metrics::inc(&metrics.forwards_total);
            match peers.call(&addr, Read { key }, timeout).await {
                Ok(reply) => {
                    Metrics::inc(&metrics.forward_acks_total);
                    Ok(reply.record)
                }
                Err(_) => {
                    Metrics::inc(&metrics.forward_failures_total);
                    Err(())
                }
            }
        }
    }

    /// Reads `key` at the given level (default: the configured read level);
    /// [`CacheError::NotFound`] when missing, expired or deleted.
    ///
    /// `one` asks the owners one at a time, this node first when it is an owner, then in
    /// ring order, and returns the first record found (a tombstone ends the search as a
    /// miss). `quorum` and `all` ask every owner in parallel and return the newest record
    /// among the required answers.
    pub async fn get(&self, key: &str, level: Option<Consistency>) -> Result<Stored, CacheError> {
        validate_key(key).map_err(|e| CacheError::BadRequest(e.to_string()))?;
        let view = self.view();
        let mut owners = self.owners_for(&view, key);
        // A draining node still holds its data until the handoff finished: ask it too.
        if self.is_draining() && !owners.contains(&self.config.node_id) {
            owners.push(self.config.node_id.clone());
        }
        let level = level.unwrap_or(self.config.read_consistency);
        let record = if level == Consistency::One {
            if let Some(i) = owners.iter().position(|o| *o == self.config.node_id) {
                let me = owners.remove(i);
                owners.insert(0, me);
            }
            let mut answered = false;
            let mut found = None;
            let mut empty: Vec<&str> = Vec::new();
            for owner in &owners {
                match self.read_from(&view, owner, key).await {
                    Ok(Some(w)) => {
                        found = Some(w);
                        break;
                    }
                    Ok(None) => {
                        answered = true;
                        empty.push(owner);
                    }
                    Err(()) => {}
                }
            }
            if let Some(w) = &found {
                // Owners asked before the hit had nothing: repair them.
                for o in empty {
                    self.read_repair(&view, o, key, w);
                }
            }
            if found.is_none() && !answered {
                Metrics::inc(&self.metrics.quorum_failures_total);
                return Err(CacheError::Quorum { needed: 1, got: 0 });
            }
            found
        } else {
            let needed = level.required(self.replicas(&view));
            let calls = owners
                .iter()
                .map(|o| (o.clone(), self.read_from(&view, o, key)));
            let answers = self.await_quorum(needed, calls).await?;
            let newest: Option<Write> = answers
                .iter()
                .filter_map(|(_, rec)| rec.clone())
                .max_by_key(|w| w.version);
            let answers: Vec<(String, Option<Version>)> = answers
                .into_iter()
                .map(|(o, rec)| (o, rec.map(|w| w.version)))
                .collect();
            if let Some(w) = &newest {
                for (owner, v) in &answers {
                    if v.is_none_or(|v| v < w.version) {
                        self.read_repair(&view, owner, key, w);
                    }
                }
            }
            newest
        };
        match record {
            Some(Write {
                value: Some(value),
                version,
                expires_at_ms,
            }) if expires_at_ms.is_none_or(|t| t > now_ms()) => Ok(Stored {
                value,
                version,
                expires_at_ms,
            }),
            _ => Err(CacheError::NotFound),
        }
    }

    /// Asks the repair actor to push `w` to the stale owner `owner`.
    fn read_repair(&self, view: &ClusterView, owner: &str, key: &str, w: &Write) {
        let addr = if owner == self.config.node_id {
            None
        } else {
            match view.addr_of(owner) {
                Some(a) => Some(a.to_owned()),
                None => return,
            }
        };
        if let Some(r) = self.repair.get() {
            let _ = r.cast(RepairMsg::Repair {
                peer: owner.to_owned(),
                addr,
                key: key.to_owned(),
                write: w.clone(),
            });
        }
    }

    /// Dist side: applies writes sent by a coordinator (or a repair), in order. Every
    /// key is validated before any is applied. A draining node takes none: it is handing
    /// its keys away, and a copy sent to it could leave with it.
    pub async fn apply_replicated(
        &self,
        writes: Vec<KeyedWrite>,
        mode: ApplyMode,
    ) -> Result<Vec<ApplyOutcome>, CacheError> {
        if self.is_draining() {
            return Err(CacheError::Draining);
        }
        for kw in &writes {
            validate_key(&kw.key).map_err(|e| CacheError::BadRequest(e.to_string()))?;
        }
        let mut out = Vec::with_capacity(writes.len());
        for kw in writes {
            out.push(self.shards.apply_mode(&kw.key, kw.write, mode).await?);
        }
        Ok(out)
    }

    /// Dist side: a peer's Merkle leaves over the keys both own; answers with this node's
    /// entries of every bucket that differs.
    pub async fn ae_compare(
        &self,
        from: &str,
        req: AeCompare,
    ) -> Result<AeCompareReply, CacheError> {
        if req.leaves.len() != BUCKETS {
            return Err(CacheError::BadRequest(format!(
                "expected {BUCKETS} Merkle leaves, got {}",
                req.leaves.len()
            )));
        }
        let view = self.view();
        let all = self.shards.versions().await?;
        let shared = shared_entries(&view, &all, &self.config.node_id, from);
        let mine = MerkleTree::build(shared.iter().map(|(k, v)| (k.as_str(), *v)));
        let buckets = mine.diff(&MerkleTree::from_leaves(req.leaves));
        let wanted: std::collections::HashSet<usize> = buckets.iter().copied().collect();
        let entries = shared
            .into_iter()
            .filter(|(k, _)| wanted.contains(&bucket_of(k)))
            .collect();
        Ok(AeCompareReply {
            buckets: buckets.into_iter().map(|b| b as u32).collect(),
            entries,
        })
    }

    /// Dist side: this node's records of `keys`.
    pub async fn ae_fetch(&self, req: AeFetch) -> Result<AeFetchReply, CacheError> {
        for k in &req.keys {
            validate_key(k).map_err(|e| CacheError::BadRequest(e.to_string()))?;
        }
        Ok(AeFetchReply {
            records: self.shards.records(&req.keys).await?,
        })
    }

    /// Dist side: hints handed over by a draining peer. Hints for this node are applied,
    /// the rest queued here.
    pub async fn accept_hints(&self, req: AcceptHints) -> Result<u64, CacheError> {
        for (_, kw) in &req.hints {
            validate_key(&kw.key).map_err(|e| CacheError::BadRequest(e.to_string()))?;
        }
        let mut n = 0;
        for (target, kw) in req.hints {
            if target == self.config.node_id {
                self.shards.apply(&kw.key, kw.write).await?;
            } else if let Some(h) = self.hints.get() {
                let _ = h.cast(HintMsg::Enqueue {
                    peer: target,
                    write: kw,
                });
            }
            n += 1;
        }
        Ok(n)
    }

    /// Dist side: this node's record of `key`.
    pub async fn read_local(&self, key: &str) -> Result<Option<Write>, CacheError> {
        validate_key(key).map_err(|e| CacheError::BadRequest(e.to_string()))?;
        self.shards.read(key).await
    }

    /// Dist side: a SWIM ping from a peer.
    pub async fn on_ping(&self, ping: Ping) -> Result<Ack, CacheError> {
        self.membership
            .call(|reply| MembershipMsg::Ping { ping, reply }, CONTROL_TIMEOUT)
            .await
    }

    /// Dist side: probe `target` for a peer (SWIM indirect probe).
    pub async fn on_ping_req(&self, req: PingReq) -> Result<PingReqReply, CacheError> {
        if let Some(m) = self.membership.get() {
            let _ = m.cast(MembershipMsg::Merge(req.members));
        }
        let members = self
            .membership
            .call(MembershipMsg::Gossip, CONTROL_TIMEOUT)
            .await?;
        let ping = Ping { seq: 0, members };
        let acked = match self
            .peers
            .call(&req.target_addr, ping, self.config.swim.probe_timeout)
            .await
        {
            Ok(ack) => {
                if let Some(m) = self.membership.get() {
                    let _ = m.cast(MembershipMsg::Acked(ack));
                }
                true
            }
            Err(_) => false,
        };
        let members = self
            .membership
            .call(MembershipMsg::Gossip, CONTROL_TIMEOUT)
            .await?;
        Ok(PingReqReply { acked, members })
    }

    /// SWIM state for `/cluster/heartbeat`.
    pub async fn heartbeat(&self) -> Result<HeartbeatInfo, CacheError> {
        self.membership
            .call(MembershipMsg::Heartbeat, CONTROL_TIMEOUT)
            .await
    }

    /// The member list as the membership actor holds it.
    pub async fn members(&self) -> Result<Vec<MemberInfo>, CacheError> {
        self.membership
            .call(MembershipMsg::Members, CONTROL_TIMEOUT)
            .await
    }

    /// Starts (or joins) the drain; returns once its steps are done.
    pub async fn drain(&self) -> Result<DrainReport, CacheError> {
        // The handoff may take up to the drain timeout; leave room for the other steps.
        let timeout = self.config.drain_timeout + CONTROL_TIMEOUT;
        self.drain.call(DrainMsg::Drain, timeout).await
    }

    /// Stops the whole supervision tree and waits for it.
    pub async fn stop(&self) {
        let _ = self
            .root
            .stop_and_wait(Some("shutdown".into()), Some(CONTROL_TIMEOUT))
            .await;
    }
}

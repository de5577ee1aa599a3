//! One node's actor system as the HTTP layer sees it: [`start`] builds the supervision
//! tree, [`NodeHandle`] is the mailbox client handlers use. Every method of the handle
//! is a mailbox call, a call into the [`Coordinator`] or [`DistService`] (mailbox
//! clients themselves), or a read of a snapshot an actor published; the handle holds no
//! cache state of its own and exposes none of its parts.

use crate::config::NodeConfig;
use crate::coordinator::{Coordinator, WriteAck};
use crate::drain::{DrainMsg, DrainReport};
use crate::error::CacheError;
use crate::hint_queue::HintMsg;
use crate::hlc::Hlc;
use crate::keyscan::{merge, KeyFilter, MAX_SCAN_KEYS};
use crate::membership::{
    initial_view, ClusterView, HeartbeatInfo, MemberInfo, MemberState, MembershipMsg,
};
use crate::metrics::Metrics;
use crate::peer::{HintSink, PeerClient, PeerTable};
use crate::proto::KeyScan;
use crate::quorum::Consistency;
use crate::root::{RootArgs, RootMsg, RootSupervisor, Slots};
use crate::service::DistService;
use crate::shards::Shards;
use crate::slot::ActorSlot;
use crate::store::ShardStats;
use crate::transport::{Faults, HttpTransport, Transport, Wire};
use crate::types::Stored;
use bytes::Bytes;
use ractor::{Actor, ActorRef};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The handle request handlers use.
#[derive(Clone)]
pub struct NodeHandle {
    config: Arc<NodeConfig>,
    metrics: Arc<Metrics>,
    coordinator: Coordinator,
    service: DistService,
    shards: Shards,
    membership: ActorSlot<MembershipMsg>,
    drain: ActorSlot<DrainMsg>,
    /// Only the test hook that crashes the hint queue calls it directly.
    #[cfg(feature = "test-hooks")]
    hints: ActorSlot<HintMsg>,
    faults: Arc<Faults>,
    view: watch::Receiver<Arc<ClusterView>>,
    draining: watch::Receiver<bool>,
    root: ActorRef<RootMsg>,
}

/// Starts the supervision tree with the HTTP transport (wrapped in the fault injector
/// when built with `test-hooks`). The returned join handle finishes when the root stops
/// (normally after [`NodeHandle::stop`], or on escalation).
pub async fn start(
    config: NodeConfig,
    metrics: Arc<Metrics>,
) -> Result<(NodeHandle, tokio::task::JoinHandle<()>), CacheError> {
    let faults = Arc::new(Faults::default());
    let http = HttpTransport::new(
        config.auth_token.clone(),
        config.peer_pool_idle,
        config.peer_tls.clone(),
    )
    .map_err(|e| CacheError::Internal(format!("peer HTTP client: {e}")))?;
    #[cfg(feature = "test-hooks")]
    let transport: Arc<dyn Transport> = Arc::new(crate::transport::FaultyTransport {
        inner: http,
        faults: faults.clone(),
    });
    #[cfg(not(feature = "test-hooks"))]
    let transport: Arc<dyn Transport> = Arc::new(http);
    start_with(config, metrics, transport, faults).await
}

/// Starts the supervision tree over any [`Transport`] (the simulator's in-memory one,
/// for instance). `faults` are the rules the dist side checks for incoming calls.
pub async fn start_with(
    config: NodeConfig,
    metrics: Arc<Metrics>,
    transport: Arc<dyn Transport>,
    faults: Arc<Faults>,
) -> Result<(NodeHandle, tokio::task::JoinHandle<()>), CacheError> {
    let config = Arc::new(config);
    let (view_tx, view_rx) = watch::channel(Arc::new(initial_view(
        &config.node_id,
        &config.advertise,
        config.replication,
    )));
    let (drain_tx, drain_rx) = watch::channel(false);
    let hlc = Arc::new(Hlc::new());
    // A node with no peers has no clock to merge before it stamps writes.
    if config
        .seeds
        .iter()
        .all(|s| s.id.as_deref() == Some(config.node_id.as_str()) || s.addr == config.advertise)
    {
        hlc.mark_synced();
    }
    let wire = Wire::new(transport, &config.node_id, &config.advertise, hlc.clone());
    let slots = Slots::default();
    let peer_table = PeerTable::default();
    let hint_sink = {
        let slot = slots.hints.clone();
        HintSink::new(move |peer, write| {
            slot.cast(HintMsg::Enqueue {
                peer: peer.to_owned(),
                write,
            });
        })
    };
    let peers = PeerClient::new(
        peer_table.clone(),
        hint_sink.clone(),
        metrics.clone(),
        config.peer_timeout,
    );
    let shards = Shards::new(
        config.max_value_bytes,
        config.tombstone_retention,
        metrics.clone(),
    );
    let args = RootArgs {
        config: config.clone(),
        metrics: metrics.clone(),
        shards: shards.clone(),
        slots: slots.clone(),
        view: Arc::new(view_tx),
        draining: Arc::new(drain_tx),
        drain_report: Arc::new(watch::channel(None).0),
        wire: wire.clone(),
        peer_table,
        peers: peers.clone(),
        hint_sink,
        hints: crate::hint_queue::shared_hints(config.hint_limits),
    };
    let (root, join) = Actor::spawn(None, RootSupervisor, args)
        .await
        .map_err(|e| CacheError::Internal(format!("actor system failed to start: {e}")))?;
    let coordinator = Coordinator {
        config: config.clone(),
        metrics: metrics.clone(),
        shards: shards.clone(),
        peers,
        hlc: hlc.clone(),
        view: view_rx.clone(),
        draining: drain_rx.clone(),
        repair: slots.repair.clone(),
        started: std::time::Instant::now(),
    };
    let service = DistService {
        me: config.node_id.as_str().into(),
        shards: shards.clone(),
        hints: slots.hints.clone(),
        membership: slots.membership.clone(),
        hlc,
        wire,
        draining: drain_rx.clone(),
        view: view_rx.clone(),
        faults: faults.clone(),
        metrics: metrics.clone(),
        max_value_bytes: config.max_value_bytes,
        ae_permits: Arc::new(tokio::sync::Semaphore::new(
            crate::service::MAX_AE_IN_FLIGHT,
        )),
        scan_permits: Arc::new(tokio::sync::Semaphore::new(
            crate::service::MAX_SCAN_IN_FLIGHT,
        )),
    };
    let handle = NodeHandle {
        config,
        metrics,
        coordinator,
        service,
        shards,
        membership: slots.membership.clone(),
        drain: slots.drain.clone(),
        #[cfg(feature = "test-hooks")]
        hints: slots.hints.clone(),
        faults,
        view: view_rx,
        draining: drain_rx,
        root,
    };
    Ok((handle, join))
}

const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a key scan waits for a peer's part.
const SCAN_TIMEOUT: Duration = Duration::from_secs(10);

/// What [`NodeHandle::browse_keys`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Browse {
    /// Ascending, without duplicates, at most `max`.
    pub keys: Vec<crate::types::Key>,
    /// More keys match than `keys` holds (some node had more than `max`, or the union
    /// did).
    pub truncated: bool,
    /// Members whose keys are missing from the answer: dead, or no answer in time.
    pub partial_nodes: Vec<String>,
}

impl NodeHandle {
    /// The configuration the actor system runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The node's counters and gauges.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The dist-side service (what the dist listener hands peer calls to).
    pub fn dist(&self) -> &DistService {
        &self.service
    }

    /// The latest published membership and ring.
    pub fn view(&self) -> Arc<ClusterView> {
        self.view.borrow().clone()
    }

    /// The published membership and ring, to wait for their next change.
    pub fn view_watch(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.view.clone()
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
        self.coordinator.put(key, value, ttl, level).await
    }

    /// Deletes `key` by writing a versioned tombstone (idempotent).
    pub async fn delete(
        &self,
        key: &str,
        level: Option<Consistency>,
    ) -> Result<WriteAck, CacheError> {
        self.coordinator.delete(key, level).await
    }

    /// Reads `key` at the given level (default: the configured read level).
    pub async fn get(&self, key: &str, level: Option<Consistency>) -> Result<Stored, CacheError> {
        self.coordinator.get(key, level).await
    }

    /// The cluster-wide key browser: the smallest `max` live keys that `q` selects
    /// ([`KeyFilter::parse`]) over this node and every alive peer, ascending
    /// and without duplicates. Each node keeps only its own first `max` keys while it
    /// scans, so memory is bounded by `max` per node whatever the number of keys. Peers
    /// that did not answer in time, and suspect or dead ones (not asked, so that a frozen
    /// node does not hold every scan for the timeout), are listed in `partial_nodes`.
    pub async fn browse_keys(&self, q: &str, max: usize) -> Result<Browse, CacheError> {
        let filter =
            Arc::new(KeyFilter::parse(q).map_err(|e| CacheError::BadRequest(e.to_string()))?);
        if max > MAX_SCAN_KEYS {
            return Err(CacheError::BadRequest(format!(
                "max is at most {MAX_SCAN_KEYS}"
            )));
        }
        // This node's own slot first: an overloaded node answers 503 before it spends its
        // peers' scan slots.
        let permit = self.service.scan_permit()?;
        let view = self.view();
        let mut partial_nodes = Vec::new();
        let mut asked = Vec::new();
        for m in view.members.iter().filter(|m| m.id != view.self_id) {
            match m.state {
                MemberState::Alive => asked.push(m),
                MemberState::Suspect | MemberState::Dead => partial_nodes.push(m.id.clone()),
                MemberState::Left => {}
            }
        }
        let remote = asked.iter().map(|m| {
            let req = KeyScan {
                q: q.to_owned(),
                max: max as u32,
            };
            self.service.wire.call(&m.address, req, SCAN_TIMEOUT)
        });
        let stale = self.service.data_stale();
        let (local, remote) = tokio::join!(
            async {
                if stale {
                    Ok((Vec::new(), 0))
                } else {
                    self.service.scan_local(&filter, max, permit).await
                }
            },
            futures_util::future::join_all(remote)
        );
        if stale {
            partial_nodes.push(view.self_id.clone());
        }
        let (keys, matched) = local?;
        let mut lists = vec![(keys, matched)];
        for (m, reply) in asked.iter().zip(remote) {
            match reply {
                Ok(r)
                    if r.keys.len() <= max
                        && r.keys.iter().all(|k| {
                            crate::types::validate_key(k).is_ok() && filter.matches(k)
                        }) =>
                {
                    lists.push((r.keys, r.matched));
                }
                Ok(_) => {
                    tracing::warn!(peer = %m.id, "a peer answered a key scan with keys it was not asked for; left out");
                    partial_nodes.push(m.id.clone());
                }
                Err(e) => {
                    tracing::debug!(peer = %m.id, error = %e, "a peer did not answer a key scan");
                    partial_nodes.push(m.id.clone());
                }
            }
        }
        let (keys, truncated) = merge(lists, max);
        partial_nodes.sort();
        Ok(Browse {
            keys,
            truncated,
            partial_nodes,
        })
    }

    /// Drops every value this node holds (tombstones stay); the number dropped. Only
    /// this node: the other owners keep their copies, and anti-entropy and read repair
    /// bring this node's share back from them, as after a restart.
    pub async fn clear_local(&self) -> Result<u64, CacheError> {
        self.shards.clear_values().await
    }

    /// Runs the expiry sweep of every shard now instead of at its next tick; returns the
    /// number of shards asked (the sweeps run in their own mailboxes).
    pub fn trigger_expiration(&self) -> usize {
        self.shards.sweep_now()
    }

    /// The local store's counters, all shards.
    pub async fn store_stats(&self) -> Result<ShardStats, CacheError> {
        self.shards.stats().await
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

    /// Removes dead member `id` from the placement ring at once (instead of after the
    /// dead timeout); its keys move to new owners.
    pub async fn remove_member(
        &self,
        id: &str,
    ) -> Result<Result<MemberInfo, crate::swim::RemoveError>, CacheError> {
        let id = id.to_owned();
        self.membership
            .call(|reply| MembershipMsg::Remove { id, reply }, CONTROL_TIMEOUT)
            .await
    }

    /// Starts (or joins) the drain; returns once its steps are done.
    pub async fn drain(&self) -> Result<DrainReport, CacheError> {
        // The handoff may take up to the drain timeout; leave room for the other steps.
        let timeout = self.config.drain_timeout + CONTROL_TIMEOUT;
        self.drain.call(DrainMsg::Drain, timeout).await
    }

    /// Replaces the link-fault rules (honoured only by `test-hooks` builds).
    pub fn set_faults(&self, rules: crate::transport::FaultRules) {
        self.faults.set(rules);
    }

    /// The link-fault rules in force.
    pub fn faults(&self) -> crate::transport::FaultRules {
        self.faults.get()
    }

    /// Test-only: makes the `membership`, `drain` or `hints` actor panic (the supervisor restarts
    /// it). False when there is no such actor.
    #[cfg(feature = "test-hooks")]
    pub fn crash_actor(&self, which: &str) -> bool {
        match which {
            "membership" => self.membership.cast(MembershipMsg::Crash),
            "drain" => self.drain.cast(DrainMsg::Crash),
            "hints" => self.hints.cast(HintMsg::Crash),
            _ => false,
        }
    }

    /// Test-only: makes the shard holding `key` panic. Returns its index.
    #[cfg(feature = "test-hooks")]
    pub fn crash_shard_of(&self, key: &str) -> Option<usize> {
        self.shards.crash_shard_of(key)
    }

    /// Test-only: this node's own record of `key` (no routing, no eviction mark or counter change).
    #[cfg(feature = "test-hooks")]
    pub async fn local_record(&self, key: &str) -> Result<Option<crate::types::Write>, CacheError> {
        Ok(self
            .shards
            .records(std::slice::from_ref(&key.to_owned()))
            .await?
            .pop()
            .flatten())
    }

    /// Stops the whole supervision tree and waits for it.
    pub async fn stop(&self) {
        let _ = self
            .root
            .stop_and_wait(Some("shutdown".into()), Some(CONTROL_TIMEOUT))
            .await;
    }
}

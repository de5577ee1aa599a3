//! The coordinator: what the node that receives a client request does with it. A write
//! is stamped from the node's clock and sent to every owner of the key at once (this
//! node's shard directly, each remote owner through its [`crate::peer::PeerActor`]); the
//! answer goes back as soon as the consistency level's acks are in, and the owners that
//! answer later are not waited for (their peer actor queues a hint if they fail). A read
//! at `one` asks the owners in order of liveness and hedges; `quorum` and `all` ask every
//! owner and return the newest record, repairing the stale owners.
//!
//! No task is spawned per replica: the answers of one request are collected in the
//! request's own task. Owns no state of its own; a mailbox client like the HTTP handlers.

use crate::config::NodeConfig;
use crate::error::{CacheError, OwnerFailure};
use crate::hlc::{Hlc, MAX_DRIFT_MS};
use crate::membership::{ClusterView, MemberState};
use crate::metrics::Metrics;
use crate::peer::PeerClient;
use crate::proto::{Call, CallReply, KeyedWrite, Read, Replicate};
use crate::quorum::{Consistency, Progress, QuorumTracker};
use crate::repair::RepairMsg;
use crate::shards::Shards;
use crate::slot::ActorSlot;
use crate::transport::TransportError;
use crate::types::{now_ms, validate_key, ApplyMode, ApplyOutcome, Stored, Version, Write};
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::Instrument;

/// The span of one replica call (exported with traces only, see [`crate::trace`]).
fn call_span(owner: &str, me: &str, call: &'static str) -> tracing::Span {
    if owner == me {
        tracing::info_span!(target: crate::trace::TARGET, "local.call", call)
    } else {
        tracing::info_span!(target: crate::trace::TARGET, "peer.call", call, peer = %owner)
    }
}

/// What a coordinated write reports back.
#[derive(Debug, Clone)]
pub struct WriteAck {
    pub owners: Vec<String>,
    pub version: Version,
}

/// One owner's answer, as the coordinator collects it.
type Answer<T> = Pin<Box<dyn Future<Output = (String, Result<T, String>)> + Send>>;

/// A record read for a client: its value while it is live; a tombstone or an expired
/// value is a miss.
fn live(w: Write) -> Result<Stored, CacheError> {
    match w {
        Write {
            value: Some(value),
            version,
            expires_at_ms,
        } if expires_at_ms.is_none_or(|t| t > now_ms()) => Ok(Stored {
            value,
            version,
            expires_at_ms,
        }),
        _ => Err(CacheError::NotFound),
    }
}

/// Coordinates client requests; cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    pub(crate) config: Arc<NodeConfig>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) shards: Shards,
    pub(crate) peers: PeerClient,
    pub(crate) hlc: Arc<Hlc>,
    pub(crate) view: watch::Receiver<Arc<ClusterView>>,
    pub(crate) draining: watch::Receiver<bool>,
    pub(crate) repair: ActorSlot<RepairMsg>,
    /// When the node started (the clock gate lifts by itself [`MAX_DRIFT_MS`] later).
    pub(crate) started: Instant,
}

/// How long a client write waits for the clock merge with a peer after start before it
/// is refused with 503 `CLOCK_NOT_SYNCED`.
pub const CLOCK_SYNC_WAIT: Duration = Duration::from_secs(2);

/// Times a write is stamped again after owners answered that they hold a newer version.
pub const MAX_RESTAMPS: usize = 2;

/// Why a `Stale` answer is not an ack.
const STALE: &str = "holds a newer version";

/// Whether a replica's answer to a write acknowledges it: it holds the write's version
/// (applied now or already), not a newer one. (`Skipped` answers repairs only.)
fn acknowledges(outcome: &ApplyOutcome) -> Result<(), &'static str> {
    match outcome {
        ApplyOutcome::Applied | ApplyOutcome::AlreadyCurrent | ApplyOutcome::Skipped => Ok(()),
        ApplyOutcome::Stale => Err(STALE),
    }
}

/// A write that failed only because owners' tombstone budgets are full is reported as
/// that (503 `TOMBSTONES_FULL`, retry later), not as a generic quorum failure.
fn tombstones_full_or(failure: CacheError) -> CacheError {
    let full = CacheError::TombstonesFull.to_string();
    match &failure {
        CacheError::Quorum { failures, .. }
            if !failures.is_empty() && failures.iter().all(|f| f.error.contains(&full)) =>
        {
            CacheError::TombstonesFull
        }
        _ => failure,
    }
}

fn reply_error(e: TransportError) -> String {
    e.to_string()
}

impl Coordinator {
    fn me(&self) -> &str {
        &self.config.node_id
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
        let expires_at_ms = match ttl {
            None => None,
            Some(t) => Some(
                u64::try_from(t.as_millis())
                    .ok()
                    .and_then(|ms| now.checked_add(ms))
                    .ok_or_else(|| CacheError::BadRequest(format!("ttl {t:?} is out of range")))?,
            ),
        };
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
    pub fn owners_for(&self, view: &ClusterView, key: &str) -> Vec<String> {
        let owners: Vec<String> = view
            .ring
            .owners(key)
            .into_iter()
            .map(str::to_owned)
            .collect();
        if owners.is_empty() {
            vec![self.me().to_owned()]
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

    /// Waits (at most [`CLOCK_SYNC_WAIT`]) until this node's clock has merged a peer's
    /// stamp since start, so that its versions are not below ones its peers already
    /// hold. A node without peers, or one that started more than [`MAX_DRIFT_MS`] ago,
    /// does not wait.
    async fn clock_ready(&self) -> Result<(), CacheError> {
        if self.hlc.is_synced() {
            return Ok(());
        }
        let max = Duration::from_millis(MAX_DRIFT_MS);
        let since = self.started.elapsed();
        if since >= max {
            self.hlc.mark_synced();
            return Ok(());
        }
        Metrics::inc(&self.metrics.clock_sync_waits_total);
        tokio::time::timeout(CLOCK_SYNC_WAIT.min(max - since), self.hlc.wait_synced())
            .await
            .map_err(|_| CacheError::ClockNotSynced)
    }

    /// The failure that refuses a write before anything is sent, if there is one: fewer
    /// reachable home owners than `needed`, or (strict quorums, `quorum` and `all`) a
    /// node that has seen only a minority of the cluster for half the dead timeout, after
    /// which the majority may have taken its keys over.
    fn refusal(
        &self,
        view: &ClusterView,
        owners: &[String],
        live: &[String],
        needed: usize,
        level: Consistency,
    ) -> Option<CacheError> {
        let mut failures: Vec<OwnerFailure> = owners
            .iter()
            .filter(|o| !live.contains(o))
            .map(|o| OwnerFailure {
                owner: o.clone(),
                error: "declared dead by this node's failure detector".into(),
            })
            .collect();
        if needed > owners.len() {
            failures.push(OwnerFailure {
                owner: "ring".into(),
                error: format!("only {} owners are in the ring", owners.len()),
            });
        }
        if needed > live.len() {
            return Some(CacheError::Unreachable {
                needed,
                reachable: live.len(),
                failures,
            });
        }
        let fence = self.config.swim.forget_after / 2;
        let fenced = !self.config.sloppy_quorum
            && level != Consistency::One
            && view.minority_since.is_some_and(|t| t.elapsed() >= fence);
        fenced.then(|| CacheError::Unreachable {
            needed,
            reachable: live.len(),
            failures: vec![OwnerFailure {
                owner: "cluster".into(),
                error: format!(
                    "this node has seen at most half of the members for over {fence:?} (half of HYPERCACHE_DEAD_TIMEOUT); the majority may have taken over its keys"
                ),
            }],
        })
    }

    /// The owners of `owners` this node believes reachable (itself included).
    fn live_owners(&self, view: &ClusterView, owners: &[String]) -> Vec<String> {
        owners
            .iter()
            .filter(|o| *o == self.me() || view.is_live(o))
            .cloned()
            .collect()
    }

    /// Sends a write to every reachable home owner at once (this node included when it is
    /// one) and answers once the level's acks are in. Home owners declared dead get the
    /// write as a hint; it never counts towards the level.
    ///
    /// An owner that already holds a newer version answers `Stale`: that is not an ack,
    /// since the write would not be what a later read returns. When stale answers keep
    /// the level from being met, the coordinator reads the newest version from those
    /// owners, merges it into its clock and writes again under a new stamp above it (at
    /// most [`MAX_RESTAMPS`] times). Only a write that enough owners hold at its final
    /// version is acknowledged.
    async fn write(
        &self,
        key: &str,
        value: Option<Bytes>,
        expires_at_ms: Option<u64>,
        now: u64,
        level: Option<Consistency>,
    ) -> Result<WriteAck, CacheError> {
        self.clock_ready().await?;
        let view = self.view.borrow().clone();
        let owners = self.owners_for(&view, key);
        let live = self.live_owners(&view, &owners);
        let level = level.unwrap_or(self.config.write_consistency);
        let needed = level.required(self.replicas(&view));
        if let Some(refused) = self.refusal(&view, &owners, &live, needed, level) {
            // Refused before anything is sent: no owner gets a write that cannot succeed.
            Metrics::inc(&self.metrics.writes_refused_unreachable_total);
            Metrics::inc(&self.metrics.quorum_failures_total);
            return Err(refused);
        }
        let span = tracing::info_span!(
            target: crate::trace::TARGET,
            "coordinator.write",
            owners = live.len(),
            needed,
            delete = value.is_none(),
        );
        let result = self
            .write_to(key, &live, needed, value.clone(), expires_at_ms, now)
            .instrument(span)
            .await;
        // Home owners declared dead get the final version once they are back.
        let version = match &result {
            Ok(v) => Some(*v),
            Err((_, v)) => *v,
        };
        if let Some(version) = version {
            for owner in owners.iter().filter(|o| !live.contains(o)) {
                self.peers.hint(
                    owner,
                    KeyedWrite {
                        key: key.to_owned(),
                        write: Write {
                            version,
                            value: value.clone(),
                            expires_at_ms,
                        },
                    },
                );
            }
        }
        match result {
            Ok(version) => Ok(WriteAck { owners, version }),
            Err((e, _)) => Err(e),
        }
    }

    /// The send-and-restamp loop of [`Self::write`] over the reachable owners `live`:
    /// the acknowledged version, or the error with the last version sent.
    async fn write_to(
        &self,
        key: &str,
        owners: &[String],
        needed: usize,
        value: Option<Bytes>,
        expires_at_ms: Option<u64>,
        now: u64,
    ) -> Result<Version, (CacheError, Option<Version>)> {
        let origin = crate::types::origin_of(self.me());
        let mut version = Version {
            hlc: self.hlc.now(now),
            origin,
        };
        let mut attempt = 0;
        loop {
            let write = Write {
                version,
                value: value.clone(),
                expires_at_ms,
            };
            let answers: FuturesUnordered<Answer<ApplyOutcome>> = owners
                .iter()
                .map(|o| self.replicate_to(o, key, write.clone()))
                .collect();
            let failure = match self.collect_by(needed, answers, acknowledges).await {
                Ok(_) => return Ok(version),
                Err(e) => e,
            };
            let stale: Vec<String> = match &failure {
                CacheError::Quorum { failures, .. } => failures
                    .iter()
                    .filter(|f| f.error == STALE)
                    .map(|f| f.owner.clone())
                    .collect(),
                _ => Vec::new(),
            };
            for _ in &stale {
                Metrics::inc(&self.metrics.version_conflicts_total);
            }
            if stale.is_empty() || attempt == MAX_RESTAMPS {
                Metrics::inc(&self.metrics.quorum_failures_total);
                return Err((tombstones_full_or(failure), Some(version)));
            }
            attempt += 1;
            if let Some(newest) = self.newest_version(key, &stale).await {
                if !self.hlc.observe(newest.hlc, now_ms()) {
                    Metrics::inc(&self.metrics.quorum_failures_total);
                    let e = CacheError::Quorum {
                        needed,
                        got: 0,
                        failures: vec![OwnerFailure {
                            owner: stale.join(","),
                            error: "holds a version more than the allowed clock drift ahead of this node's clock".into(),
                        }],
                    };
                    return Err((e, Some(version)));
                }
            }
            version = Version {
                hlc: self.hlc.now(now_ms()),
                origin,
            };
        }
    }

    /// The newest version any of `owners` holds for `key` (failures are skipped: the
    /// next attempt finds out again).
    async fn newest_version(&self, key: &str, owners: &[String]) -> Option<Version> {
        let reads: FuturesUnordered<Answer<Option<Write>>> =
            owners.iter().map(|o| self.read_from(o, key)).collect();
        reads
            .filter_map(|(_, r)| async move { r.ok().flatten().map(|w| w.version) })
            .fold(None, |max: Option<Version>, v| async move {
                Some(max.map_or(v, |m| m.max(v)))
            })
            .await
    }

    /// Collects answers until `needed` of them succeeded (`Ok` with those answers) or
    /// that can no longer happen (the quorum error, counted). Answers still pending are
    /// dropped: their peer actors finish the calls (and hint failed writes) on their own.
    async fn collect<T>(
        &self,
        needed: usize,
        pending: FuturesUnordered<Answer<T>>,
    ) -> Result<Vec<(String, T)>, CacheError> {
        let r = self.collect_by(needed, pending, |_| Ok(())).await;
        if r.is_err() {
            Metrics::inc(&self.metrics.quorum_failures_total);
        }
        r
    }

    /// [`Self::collect`] where `accept` decides whether a successful answer counts as an
    /// ack (`Err(reason)`: a failure with that reason). Does not count the failure.
    async fn collect_by<T>(
        &self,
        needed: usize,
        mut pending: FuturesUnordered<Answer<T>>,
        accept: impl Fn(&T) -> Result<(), &'static str>,
    ) -> Result<Vec<(String, T)>, CacheError> {
        let mut tracker = QuorumTracker::new(needed, pending.len());
        let mut answers = Vec::new();
        let mut failures = Vec::new();
        loop {
            match tracker.progress() {
                Progress::Done => return Ok(answers),
                Progress::Failed => {
                    return Err(CacheError::Quorum {
                        needed: tracker.needed(),
                        got: tracker.acks(),
                        failures,
                    });
                }
                Progress::Pending => match pending.next().await {
                    Some((owner, Ok(v))) => match accept(&v) {
                        Ok(()) => {
                            answers.push((owner, v));
                            tracker.ack();
                        }
                        Err(reason) => {
                            failures.push(OwnerFailure {
                                owner,
                                error: reason.to_owned(),
                            });
                            tracker.fail();
                        }
                    },
                    Some((owner, Err(e))) => {
                        tracing::debug!(%owner, error = %e, "replica call failed");
                        failures.push(OwnerFailure { owner, error: e });
                        tracker.fail();
                    }
                    None => {
                        tracker.fail();
                    }
                },
            }
        }
    }

    /// One replica write: the local shard, or a call queued on the owner's peer actor.
    fn replicate_to(&self, owner: &str, key: &str, write: Write) -> Answer<ApplyOutcome> {
        let owner = owner.to_owned();
        let span = call_span(&owner, self.me(), "replicate");
        if owner == self.me() {
            let shards = self.shards.clone();
            let key = key.to_owned();
            return Box::pin(
                async move {
                    let r = shards.apply(&key, write).await.map_err(|e| e.to_string());
                    (owner, r)
                }
                .instrument(span),
            );
        }
        Metrics::inc(&self.metrics.forwards_total);
        let call = Call::Replicate(Replicate {
            writes: vec![KeyedWrite {
                key: key.to_owned(),
                write,
            }],
            mode: ApplyMode::Normal,
        });
        let rx = span.in_scope(|| self.peers.send(&owner, call, true));
        Box::pin(
            async move {
                let r = match rx.await {
                    Ok(Ok(CallReply::Replicate(r))) if r.outcomes.len() == 1 => Ok(r.outcomes[0]),
                    Ok(Ok(_)) => Err("peer answered another reply".to_owned()),
                    Ok(Err(e)) => Err(reply_error(e)),
                    Err(_) => Err(reply_error(TransportError::Dropped)),
                };
                (owner, r)
            }
            .instrument(span),
        )
    }

    /// One replica read: the local shard, or a call queued on the owner's peer actor.
    fn read_from(&self, owner: &str, key: &str) -> Answer<Option<Write>> {
        let owner = owner.to_owned();
        let span = call_span(&owner, self.me(), "read");
        if owner == self.me() {
            let shards = self.shards.clone();
            let key = key.to_owned();
            return Box::pin(
                async move {
                    let r = shards.read(&key).await.map_err(|e| e.to_string());
                    (owner, r)
                }
                .instrument(span),
            );
        }
        Metrics::inc(&self.metrics.forwards_total);
        let call = Call::Read(Read {
            key: key.to_owned(),
        });
        let rx = span.in_scope(|| self.peers.send(&owner, call, true));
        Box::pin(
            async move {
                let r = match rx.await {
                    Ok(Ok(CallReply::Read(r))) => Ok(r.record),
                    Ok(Ok(_)) => Err("peer answered another reply".to_owned()),
                    Ok(Err(e)) => Err(reply_error(e)),
                    Err(_) => Err(reply_error(TransportError::Dropped)),
                };
                (owner, r)
            }
            .instrument(span),
        )
    }

    /// The order a `one` read asks owners in: this node first, then alive owners in ring
    /// order, then suspect ones; owners known dead are left out.
    pub fn read_order(&self, view: &ClusterView, owners: Vec<String>) -> Vec<String> {
        let rank = |o: &String| -> Option<u8> {
            if o == self.me() {
                return Some(0);
            }
            match view.members.iter().find(|m| m.id == *o).map(|m| m.state) {
                Some(MemberState::Alive) | None => Some(1),
                Some(MemberState::Suspect) => Some(2),
                Some(MemberState::Dead) | Some(MemberState::Left) => None,
            }
        };
        let mut ranked: Vec<(u8, String)> = owners
            .into_iter()
            .filter_map(|o| rank(&o).map(|r| (r, o)))
            .collect();
        ranked.sort_by_key(|(r, _)| *r);
        ranked.into_iter().map(|(_, o)| o).collect()
    }

    /// Reads `key` at the given level (default: the configured read level);
    /// [`CacheError::NotFound`] when missing, expired or deleted.
    pub async fn get(&self, key: &str, level: Option<Consistency>) -> Result<Stored, CacheError> {
        validate_key(key).map_err(|e| CacheError::BadRequest(e.to_string()))?;
        let view = self.view.borrow().clone();
        let level = level.unwrap_or(self.config.read_consistency);
        // Fast path of a `one` read that this node owns: `read_one` would ask this node
        // first and stop at any record it holds, so a local record is the answer; only a
        // local miss or failure needs the owner list and the other owners.
        let mut local = None;
        if level == Consistency::One {
            let ring = view.ring.owners(key);
            if ring.is_empty() || ring.contains(&self.me()) {
                match self.shards.read(key).await {
                    Ok(Some(w)) => return live(w),
                    other => local = Some(other),
                }
            }
        }
        let mut owners = self.owners_for(&view, key);
        // A draining node still holds its data until the handoff finished: ask it too.
        if *self.draining.borrow() && !owners.iter().any(|o| o == self.me()) {
            owners.push(self.me().to_owned());
        }
        let record = if level == Consistency::One {
            self.read_one(&view, key, owners, local).await?
        } else {
            self.read_many(&view, key, owners, level).await?
        };
        record.map_or(Err(CacheError::NotFound), live)
    }

    /// `one`: asks the owners in [`Self::read_order`] (this node's answer is `local` when
    /// the caller already has it); the next owner is asked as soon as
    /// one answers empty or fails, or when none answered within the hedge delay. The
    /// first record found wins (a tombstone is a miss); owners that answered empty are
    /// repaired.
    async fn read_one(
        &self,
        view: &ClusterView,
        key: &str,
        owners: Vec<String>,
        local: Option<Result<Option<Write>, CacheError>>,
    ) -> Result<Option<Write>, CacheError> {
        let order = self.read_order(view, owners);
        let mut answered = false;
        let mut empty: Vec<String> = Vec::new();
        let mut failures = Vec::new();
        let mut rest = &order[..];
        // This node first, without the machinery of a remote read: a hit here (the
        // common case on a single node and for owners) costs one shard call.
        if order.first().is_some_and(|o| o == self.me()) {
            // `local`: this node's answer, when the caller already asked its shard.
            let answer = match local {
                Some(a) => a,
                None => self.shards.read(key).await,
            };
            match answer {
                Ok(Some(w)) => return Ok(Some(w)),
                Ok(None) => {
                    answered = true;
                    empty.push(self.me().to_owned());
                }
                Err(e) => failures.push(OwnerFailure {
                    owner: self.me().to_owned(),
                    error: e.to_string(),
                }),
            }
            rest = &order[1..];
        }
        let mut next = 0;
        let mut pending: FuturesUnordered<Answer<Option<Write>>> = FuturesUnordered::new();
        let mut found = None;
        // The hedge timer exists only when there is a further owner to hedge to.
        let mut hedge =
            (rest.len() > 1).then(|| Box::pin(tokio::time::sleep(self.config.read_hedge)));
        loop {
            if pending.is_empty() {
                let Some(owner) = rest.get(next) else { break };
                pending.push(self.read_from(owner, key));
                next += 1;
                if let Some(h) = hedge.as_mut() {
                    h.as_mut()
                        .reset(tokio::time::Instant::now() + self.config.read_hedge);
                }
            }
            let more = next < rest.len();
            let timer = async {
                match hedge.as_mut() {
                    Some(h) if more => h.as_mut().await,
                    _ => std::future::pending().await,
                }
            };
            // A hit ends the loop; an empty answer, a failure or the hedge timer asks the
            // next owner at once.
            tokio::select! {
                Some((owner, r)) = pending.next() => match r {
                    Ok(Some(w)) => {
                        found = Some(w);
                        break;
                    }
                    Ok(None) => {
                        answered = true;
                        empty.push(owner);
                    }
                    Err(e) => failures.push(OwnerFailure { owner, error: e }),
                },
                () = timer => Metrics::inc(&self.metrics.read_hedges_total),
            }
            if let Some(o) = rest.get(next) {
                pending.push(self.read_from(o, key));
                next += 1;
                if let Some(h) = hedge.as_mut() {
                    h.as_mut()
                        .reset(tokio::time::Instant::now() + self.config.read_hedge);
                }
            }
        }
        if let Some(w) = &found {
            for o in &empty {
                self.read_repair(view, o, key, w);
            }
        } else if !answered {
            Metrics::inc(&self.metrics.quorum_failures_total);
            return Err(CacheError::Quorum {
                needed: 1,
                got: 0,
                failures,
            });
        }
        Ok(found)
    }

    /// `quorum` and `all`: asks every owner at once and returns the newest record among
    /// the required answers; stale owners are repaired.
    async fn read_many(
        &self,
        view: &ClusterView,
        key: &str,
        owners: Vec<String>,
        level: Consistency,
    ) -> Result<Option<Write>, CacheError> {
        let needed = level.required(self.replicas(view));
        // Owners declared dead are not asked: they could only time out.
        let live = self.live_owners(view, &owners);
        if let Some(refused) = self.refusal(view, &owners, &live, needed, Consistency::One) {
            Metrics::inc(&self.metrics.quorum_failures_total);
            return Err(refused);
        }
        let calls: FuturesUnordered<Answer<Option<Write>>> =
            live.iter().map(|o| self.read_from(o, key)).collect();
        let answers = self.collect(needed, calls).await?;
        let newest: Option<Write> = answers
            .iter()
            .filter_map(|(_, rec)| rec.clone())
            .max_by_key(|w| w.version);
        if let Some(w) = &newest {
            for (owner, rec) in &answers {
                if rec.as_ref().is_none_or(|r| r.version < w.version) {
                    self.read_repair(view, owner, key, w);
                }
            }
        }
        Ok(newest)
    }

    /// Asks the repair actor to push `w` to the stale owner `owner`.
    fn read_repair(&self, view: &ClusterView, owner: &str, key: &str, w: &Write) {
        let local = owner == self.me();
        if !local && view.addr_of(owner).is_none() {
            return;
        }
        self.repair.cast(RepairMsg::Repair {
            peer: owner.to_owned(),
            local,
            key: key.to_owned(),
            write: w.clone(),
        });
    }
}

//! The dist-side service: what this node does when a peer calls it. Bytes in, bytes out:
//! [`DistService::handle`] decodes an enveloped [`Batch`], checks its protocol version
//! and the sender's clock, answers every call (concurrently, each with its own result)
//! and encodes the enveloped [`BatchReply`]. The HTTP dist listener and the in-memory
//! transport of the simulator both call it, so both exercise the same code.
//!
//! Owns no state: every call is a mailbox call to the shards or the membership actor.
//! Does not own listeners, auth or HTTP status codes ([`ServiceError`] says what went
//! wrong; the HTTP layer maps it).

use crate::error::CacheError;
use crate::hint_queue::HintMsg;
use crate::hlc::{Hlc, MAX_DRIFT_MS};
use crate::keyscan::{KeyFilter, MAX_SCAN_KEYS};
use crate::membership::{ClusterView, MembershipMsg, Sender};
use crate::merkle::{check_leaves, differing, listable};
use crate::metrics::Metrics;
use crate::proto::{
    decode_envelope, encode, AcceptHints, AcceptHintsReply, AeCompare, AeCompareReply, AeFetch,
    AeFetchReply, Batch, BatchReply, Call, CallReply, DecodeError, Envelope, ItemError,
    KeyScanReply, ReadReply, ReplicateReply, MAX_BATCH_CALLS,
};
use crate::proto::{WireState, CLOCK_SKEW_CODE};
use crate::shards::Shards;
use crate::slot::ActorSlot;
use crate::swim::{valid_addr, valid_id};
use crate::transport::{Faults, Wire};
use crate::types::{admit, now_ms, validate_key, ApplyMode, ApplyOutcome, Write};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::sync::Semaphore;

/// How long a dist call may wait for the membership actor.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(10);

/// Most keys one anti-entropy fetch may ask for (duplicates are dropped first).
pub const MAX_AE_FETCH_KEYS: usize = 4096;
/// Most key and value bytes one anti-entropy reply carries; a fetch reply stops early
/// (the asker takes the prefix and asks for the rest), a compare reply lists the entries
/// of fewer segments.
pub const MAX_AE_REPLY_BYTES: usize = 8 << 20;
/// Anti-entropy requests (compare or fetch) answered at once; more get `OVERLOADED`.
pub const MAX_AE_IN_FLIGHT: usize = 2;

/// Key scans (a client's or a peer's) answered at once; more get `OVERLOADED`.
pub const MAX_SCAN_IN_FLIGHT: usize = 2;

/// Most calls of each kind one batch may carry; the calls past a cap get an item error.
/// A node's own peer actors stay far below them.
fn per_batch_cap(call: &Call) -> usize {
    match call {
        Call::Replicate(_) | Call::Read(_) => MAX_BATCH_CALLS,
        Call::Ping(_) | Call::PingReq(_) => 8,
        Call::AeCompare(_) | Call::AeFetch(_) => 4,
        Call::AcceptHints(_) => 64,
        Call::Keys(_) => 1,
    }
}

/// Which route a batch arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// [`crate::proto::BATCH_PATH`]: any call.
    Batch,
    /// [`crate::proto::PROBE_PATH`]: SWIM pings only (this route skips the in-flight
    /// bound, so it must not carry work).
    Probe,
}

/// Why a whole request was refused (one bad call inside a good batch is an item error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// Malformed body, too many calls, a clock too far ahead, or a call on the wrong route.
    #[error("{0}")]
    BadRequest(String),
    /// The sender speaks another protocol version.
    #[error("{0}")]
    Version(String),
    /// The sender's clock differs from this node's by more than the allowed drift.
    #[error("{0}")]
    ClockSkew(String),
    /// Test hooks only: the link from the sender is cut.
    #[error("link cut by fault injection")]
    Cut,
}

/// Everything the dist side needs; cheap to clone.
#[derive(Clone)]
pub struct DistService {
    pub(crate) me: Arc<str>,
    pub(crate) shards: Shards,
    pub(crate) hints: ActorSlot<HintMsg>,
    pub(crate) membership: ActorSlot<MembershipMsg>,
    pub(crate) hlc: Arc<Hlc>,
    pub(crate) wire: Wire,
    pub(crate) draining: watch::Receiver<bool>,
    pub(crate) view: watch::Receiver<Arc<ClusterView>>,
    pub(crate) faults: Arc<Faults>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) max_value_bytes: u64,
    /// [`MAX_AE_IN_FLIGHT`] permits.
    pub(crate) ae_permits: Arc<Semaphore>,
    /// [`MAX_SCAN_IN_FLIGHT`] permits.
    pub(crate) scan_permits: Arc<Semaphore>,
}

fn item_error(e: CacheError) -> ItemError {
    let code = match &e {
        CacheError::BadRequest(_) => "BAD_REQUEST",
        CacheError::NotFound => "NOT_FOUND",
        CacheError::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
        CacheError::Draining => "DRAINING",
        CacheError::Quorum { .. } | CacheError::Unreachable { .. } => "QUORUM_FAILED",
        CacheError::ClockNotSynced => "CLOCK_NOT_SYNCED",
        CacheError::Overloaded => "OVERLOADED",
        CacheError::TombstonesFull => "TOMBSTONES_FULL",
        CacheError::Internal(_) => "INTERNAL",
    };
    ItemError {
        code: code.into(),
        message: e.to_string(),
    }
}

/// Index of a call's kind, for per-kind counts.
fn call_index(call: &Call) -> usize {
    match call {
        Call::Replicate(_) => 0,
        Call::Read(_) => 1,
        Call::Ping(_) => 2,
        Call::PingReq(_) => 3,
        Call::AeCompare(_) => 4,
        Call::AeFetch(_) => 5,
        Call::AcceptHints(_) => 6,
        Call::Keys(_) => 7,
    }
}

fn bad_key(e: crate::types::KeyError) -> CacheError {
    CacheError::BadRequest(e.to_string())
}

impl DistService {
    /// Handles one enveloped batch: the encoded, enveloped reply, or why the whole
    /// request is refused (nothing was applied then).
    pub async fn handle(&self, route: Route, body: &[u8]) -> Result<Vec<u8>, ServiceError> {
        let env: Envelope<Batch> = decode_envelope(body).map_err(|e| match e {
            DecodeError::Version { .. } => {
                tracing::warn!(error = %e, "refused a peer call of another protocol version");
                ServiceError::Version(format!("{}: {e}", crate::proto::VERSION_MISMATCH_CODE))
            }
            DecodeError::Malformed(_) => ServiceError::BadRequest(e.to_string()),
        })?;
        if cfg!(feature = "test-hooks") && self.faults.blocks(&env.from_addr) {
            return Err(ServiceError::Cut);
        }
        if env.body.calls.len() > MAX_BATCH_CALLS {
            return Err(ServiceError::BadRequest(format!(
                "a batch carries at most {MAX_BATCH_CALLS} calls, got {}",
                env.body.calls.len()
            )));
        }
        if route == Route::Probe && env.body.calls.iter().any(|c| !matches!(c, Call::Ping(_))) {
            return Err(ServiceError::BadRequest(
                "the probe route takes ping calls only".into(),
            ));
        }
        let now = now_ms();
        if let Some(sent) = env.now_ms {
            let drift = sent.abs_diff(now);
            self.metrics.clock_drift_max_ms.fetch_max(drift, Relaxed);
            if drift > MAX_DRIFT_MS {
                Metrics::inc(&self.metrics.clock_skew_refusals_total);
                tracing::warn!(peer = %env.from, drift_ms = drift, "refused a peer request: the clocks differ by more than the allowed drift");
                return Err(ServiceError::ClockSkew(format!(
                    "{CLOCK_SKEW_CODE}: the sender's clock differs from this node's by {drift} ms (the allowed drift is {MAX_DRIFT_MS} ms); nothing was applied"
                )));
            }
        }
        if !self.hlc.observe(env.hlc, now) {
            Metrics::inc(&self.metrics.clock_skew_refusals_total);
            return Err(ServiceError::ClockSkew(format!(
                "{CLOCK_SKEW_CODE}: the sender's clock is more than {MAX_DRIFT_MS} ms ahead of this node's; nothing was applied"
            )));
        }
        if !valid_id(&env.from) || !valid_addr(&env.from_addr) {
            return Err(ServiceError::BadRequest(
                "the envelope's sender id or address is malformed".into(),
            ));
        }
        let from = Sender {
            id: env.from,
            addr: env.from_addr,
        };
        let results = self
            .handle_batch(&from, env.body.calls, env.body.traces)
            .await;
        Ok(encode(&self.wire.envelope(BatchReply { results })))
    }

    /// Answers every call of a batch, concurrently; one result per call, in order.
    pub async fn handle_batch(
        &self,
        from: &Sender,
        calls: Vec<Call>,
        traces: Vec<(u32, String)>,
    ) -> Vec<Result<CallReply, ItemError>> {
        use tracing::Instrument;
        let mut seen = [0usize; 8];
        // At most one trace per call; out-of-range indexes and malformed values are
        // ignored by `trace::adopt`.
        let mut trace_of: Vec<Option<String>> = Vec::new();
        if !traces.is_empty() {
            trace_of.resize(calls.len(), None);
            for (i, tp) in traces.into_iter().take(calls.len()) {
                if let Some(slot) = trace_of.get_mut(i as usize) {
                    *slot = Some(tp);
                }
            }
        }
        let answers = calls.into_iter().enumerate().map(|(i, c)| {
            let n = &mut seen[call_index(&c)];
            *n += 1;
            let over = *n > per_batch_cap(&c);
            let span = match trace_of.get(i).and_then(Option::as_deref) {
                Some(tp) => {
                    let span = tracing::info_span!(
                        target: crate::trace::TARGET,
                        "dist.call",
                        call = c.kind(),
                        from = %from.id,
                    );
                    crate::trace::adopt(&span, tp);
                    span
                }
                None => tracing::Span::none(),
            };
            async move {
                if over {
                    Metrics::inc(&self.metrics.dist_refused_total);
                    return Err(CacheError::BadRequest(format!(
                        "a batch carries at most {} {} calls",
                        per_batch_cap(&c),
                        c.kind()
                    )));
                }
                self.handle_call(from, c).await
            }
            .instrument(span)
        });
        futures_util::future::join_all(answers)
            .await
            .into_iter()
            .map(|r| r.map_err(item_error))
            .collect()
    }

    async fn handle_call(&self, from: &Sender, call: Call) -> Result<CallReply, CacheError> {
        Ok(match call {
            Call::Replicate(r) => CallReply::Replicate(ReplicateReply {
                outcomes: self.apply_replicated(r.writes, r.mode).await?,
            }),
            Call::Read(r) => {
                validate_key(&r.key).map_err(bad_key)?;
                CallReply::Read(ReadReply {
                    record: self.shards.read(&r.key).await?,
                })
            }
            Call::Ping(ping) => CallReply::Ack(
                self.membership
                    .call(
                        |reply| MembershipMsg::Ping {
                            ping,
                            from: from.clone(),
                            reply,
                        },
                        MEMBERSHIP_TIMEOUT,
                    )
                    .await?,
            ),
            Call::PingReq(req) => CallReply::PingReq(
                self.membership
                    .call(
                        |reply| MembershipMsg::PingReq {
                            req,
                            from: from.clone(),
                            reply,
                        },
                        MEMBERSHIP_TIMEOUT,
                    )
                    .await?,
            ),
            Call::AeCompare(req) => CallReply::AeCompare(self.ae_compare(&from.id, req).await?),
            Call::AeFetch(req) => CallReply::AeFetch(self.ae_fetch(req).await?),
            Call::AcceptHints(req) => CallReply::AcceptHints(AcceptHintsReply {
                accepted: self.accept_hints(req).await?,
            }),
            Call::Keys(req) => {
                let filter = KeyFilter::parse(&req.q).map_err(|e| {
                    Metrics::inc(&self.metrics.dist_refused_total);
                    CacheError::BadRequest(e.to_string())
                })?;
                let max = req.max as usize;
                if max > MAX_SCAN_KEYS {
                    Metrics::inc(&self.metrics.dist_refused_total);
                    return Err(CacheError::BadRequest(format!(
                        "a key scan returns at most {MAX_SCAN_KEYS} keys"
                    )));
                }
                let permit = self.scan_permit()?;
                let (keys, matched) = self.scan_local(&Arc::new(filter), max, permit).await?;
                CallReply::Keys(KeyScanReply { keys, matched })
            }
        })
    }

    /// Applies writes sent by a coordinator (or a repair), in order. Every key is
    /// validated before any is applied. A draining node takes none: it is handing its
    /// keys away, and a copy sent to it could leave with it.
    async fn apply_replicated(
        &self,
        writes: Vec<crate::proto::KeyedWrite>,
        mode: ApplyMode,
    ) -> Result<Vec<ApplyOutcome>, CacheError> {
        if *self.draining.borrow() {
            return Err(CacheError::Draining);
        }
        for kw in &writes {
            validate_key(&kw.key).map_err(bad_key)?;
            self.admit(&kw.write)?;
        }
        let mut out = Vec::with_capacity(writes.len());
        for kw in writes {
            out.push(self.shards.apply_mode(&kw.key, kw.write, mode).await?);
        }
        Ok(out)
    }

    /// A peer's Merkle leaves of the ring segments both own; answers with the segments
    /// that differ and this node's entries of as many of them as fit
    /// [`MAX_AE_REPLY_BYTES`], or `ring_mismatch` when the two rings differ (the asker
    /// skips this node until the views agree).
    ///
    /// The leaves are checked before use: ascending, each segment once, each one both
    /// nodes own, none empty.
    async fn ae_compare(&self, from: &str, req: AeCompare) -> Result<AeCompareReply, CacheError> {
        let Some(fingerprint) = req.ring else {
            return Err(CacheError::BadRequest(
                "an anti-entropy compare without a ring fingerprint (the peer runs an earlier build)"
                    .into(),
            ));
        };
        let view = self.view.borrow().clone();
        let ring = Arc::new(view.ring.clone());
        if fingerprint != ring.fingerprint() {
            Metrics::inc(&self.metrics.anti_entropy_ring_mismatch_total);
            return Ok(AeCompareReply {
                ring_mismatch: true,
                ..AeCompareReply::default()
            });
        }
        let shared = ring.shared_segments(&self.me, from);
        check_leaves(&req.segments, &shared).map_err(|e| {
            Metrics::inc(&self.metrics.dist_refused_total);
            CacheError::BadRequest(e.to_string())
        })?;
        let _permit = self.ae_permit()?;
        let mine = self.shards.leaves(&ring).await?;
        let buckets = differing(&shared, &mine.leaves, &req.segments);
        let listed = listable(&buckets, &mine.leaves, MAX_AE_REPLY_BYTES as u64);
        self.metrics
            .anti_entropy_segments_listed_total
            .fetch_add(listed as u64, Relaxed);
        let listing = self
            .shards
            .segment_entries(&ring, &buckets[..listed], MAX_AE_REPLY_BYTES)
            .await?;
        let complete = buckets[..listed]
            .iter()
            .take_while(|s| listing.complete(**s))
            .count();
        Ok(AeCompareReply {
            complete: complete as u32,
            partial: complete < listed,
            entries: listing
                .entries
                .into_iter()
                .map(|(_, k, v)| (k, v))
                .collect(),
            buckets,
            ring_mismatch: false,
            full_shards: mine.full,
        })
    }

    /// This node's records of `keys`.
    ///
    /// At most [`MAX_AE_FETCH_KEYS`] distinct keys are asked at once; the reply stops
    /// after [`MAX_AE_REPLY_BYTES`] (it then answers a prefix of the keys).
    async fn ae_fetch(&self, req: AeFetch) -> Result<AeFetchReply, CacheError> {
        let distinct: std::collections::HashSet<&str> =
            req.keys.iter().map(String::as_str).collect();
        if distinct.len() != req.keys.len() {
            return Err(CacheError::BadRequest(
                "an anti-entropy fetch names a key twice".into(),
            ));
        }
        if req.keys.len() > MAX_AE_FETCH_KEYS {
            return Err(CacheError::BadRequest(format!(
                "an anti-entropy fetch asks for at most {MAX_AE_FETCH_KEYS} keys, got {}",
                req.keys.len()
            )));
        }
        for k in &req.keys {
            validate_key(k).map_err(bad_key)?;
        }
        let _permit = self.ae_permit()?;
        let mut records = self.shards.records(&req.keys).await?;
        let mut size = 0usize;
        let cut = records.iter().position(|r| {
            size += r
                .as_ref()
                .and_then(|w| w.value.as_ref())
                .map_or(0, |v| v.len())
                + 64;
            size > MAX_AE_REPLY_BYTES
        });
        if let Some(cut) = cut {
            records.truncate(cut.max(1));
        }
        Ok(AeFetchReply { records })
    }

    /// One of the [`MAX_SCAN_IN_FLIGHT`] key scan permits, or `OVERLOADED` (counted).
    pub fn scan_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, CacheError> {
        self.scan_permits.clone().try_acquire_owned().map_err(|_| {
            Metrics::inc(&self.metrics.requests_rejected_overload_total);
            CacheError::Overloaded
        })
    }

    /// True while this node's data is stale (cut off past the tombstone retention): its
    /// store answers nothing, so a scan of it would look like an empty node.
    pub fn data_stale(&self) -> bool {
        self.shards.stale()
    }

    /// This node's part of a key scan, under a permit of [`Self::scan_permit`]: a pass
    /// over every shard. A node whose data is stale refuses (the asker lists it as
    /// missing instead of taking its silence for an empty store).
    pub async fn scan_local(
        &self,
        filter: &Arc<KeyFilter>,
        max: usize,
        _permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<(Vec<crate::types::Key>, u64), CacheError> {
        if self.data_stale() {
            return Err(CacheError::Internal(
                "this node's data is stale (it was cut off longer than the tombstone retention)"
                    .into(),
            ));
        }
        self.shards.scan_keys(filter, max).await
    }

    /// One of the [`MAX_AE_IN_FLIGHT`] permits, or `OVERLOADED`.
    fn ae_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, CacheError> {
        self.ae_permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| CacheError::Overloaded)
    }

    /// Refuses a write a peer sent that this node must not take (counted).
    fn admit(&self, w: &Write) -> Result<(), CacheError> {
        admit(w, self.max_value_bytes, now_ms(), MAX_DRIFT_MS).map_err(|e| {
            Metrics::inc(&self.metrics.dist_refused_total);
            CacheError::BadRequest(e.to_string())
        })
    }

    /// Hints handed over by a draining peer. Hints for this node are applied, the rest
    /// queued here.
    ///
    /// Refused while this node drains (it is handing its own hints away). Every hint is
    /// checked before any is taken: its key, its write, and its target, which must be
    /// this node or a member in the current view that has not left.
    async fn accept_hints(&self, req: AcceptHints) -> Result<u64, CacheError> {
        if *self.draining.borrow() {
            return Err(CacheError::Draining);
        }
        let view = self.view.borrow().clone();
        for (target, kw) in &req.hints {
            validate_key(&kw.key).map_err(bad_key)?;
            self.admit(&kw.write)?;
            let known = **target == *self.me
                || view
                    .members
                    .iter()
                    .any(|m| m.id == *target && m.state != WireState::Left);
            if !known {
                Metrics::inc(&self.metrics.dist_refused_total);
                return Err(CacheError::BadRequest(format!(
                    "hint target {target:?} is not a member of this cluster"
                )));
            }
        }
        let mut n = 0;
        for (target, kw) in req.hints {
            if *target == *self.me {
                self.shards.apply(&kw.key, kw.write).await?;
            } else if !self.hints.cast(HintMsg::Enqueue {
                peer: target,
                write: kw,
            }) {
                return Err(CacheError::Internal(format!(
                    "hint queue unavailable; {n} of the hints were taken"
                )));
            }
            n += 1;
        }
        Ok(n)
    }

    /// This node's record of `key` (used by tests and tools).
    pub async fn read_local(&self, key: &str) -> Result<Option<Write>, CacheError> {
        validate_key(key).map_err(bad_key)?;
        self.shards.read(key).await
    }
}

//! The dist-side service: what this node does when a peer calls it. Bytes in, bytes out:
//! [`DistService::handle`] decodes an enveloped [`Batch`], checks its protocol version
//! and the sender's clock, answers every call (concurrently, each with its own result)
//! and encodes the enveloped [`BatchReply`]. The HTTP dist listener and the in-memory
//! transport of the simulator both call it, so both exercise the same code.
//!
//! Owns no state: every call is a mailbox call to the shards or the membership actor.
//! Does not own listeners, auth or HTTP status codes ([`ServiceError`] says what went
//! wrong; the HTTP layer maps it).

use crate::anti_entropy::shared_entries;
use crate::error::CacheError;
use crate::hint_queue::HintMsg;
use crate::hlc::{Hlc, MAX_DRIFT_MS};
use crate::membership::{ClusterView, MembershipMsg};
use crate::merkle::{bucket_of, MerkleTree, BUCKETS};
use crate::proto::{
    decode_envelope, encode, AcceptHints, AcceptHintsReply, AeCompare, AeCompareReply, AeFetch,
    AeFetchReply, Batch, BatchReply, Call, CallReply, DecodeError, Envelope, ItemError, ReadReply,
    ReplicateReply, MAX_BATCH_CALLS,
};
use crate::shards::Shards;
use crate::slot::ActorSlot;
use crate::transport::{Faults, Wire};
use crate::types::{now_ms, validate_key, ApplyMode, ApplyOutcome, Write};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long a dist call may wait for the membership actor.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(10);

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
}

fn item_error(e: CacheError) -> ItemError {
    let code = match &e {
        CacheError::BadRequest(_) => "BAD_REQUEST",
        CacheError::NotFound => "NOT_FOUND",
        CacheError::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
        CacheError::Draining => "DRAINING",
        CacheError::Quorum { .. } => "QUORUM_FAILED",
        CacheError::Overloaded => "OVERLOADED",
        CacheError::Internal(_) => "INTERNAL",
    };
    ItemError {
        code: code.into(),
        message: e.to_string(),
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
        if !self.hlc.observe(env.hlc, now_ms()) {
            return Err(ServiceError::BadRequest(format!(
                "sender clock is more than {MAX_DRIFT_MS} ms ahead of this node's"
            )));
        }
        let results = self.handle_batch(&env.from, env.body.calls).await;
        Ok(encode(&self.wire.envelope(BatchReply { results })))
    }

    /// Answers every call of a batch, concurrently; one result per call, in order.
    pub async fn handle_batch(
        &self,
        from: &str,
        calls: Vec<Call>,
    ) -> Vec<Result<CallReply, ItemError>> {
        let answers = calls.into_iter().map(|c| self.handle_call(from, c));
        futures_util::future::join_all(answers)
            .await
            .into_iter()
            .map(|r| r.map_err(item_error))
            .collect()
    }

    async fn handle_call(&self, from: &str, call: Call) -> Result<CallReply, CacheError> {
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
                        |reply| MembershipMsg::Ping { ping, reply },
                        MEMBERSHIP_TIMEOUT,
                    )
                    .await?,
            ),
            Call::PingReq(req) => CallReply::PingReq(
                self.membership
                    .call(
                        |reply| MembershipMsg::PingReq { req, reply },
                        MEMBERSHIP_TIMEOUT,
                    )
                    .await?,
            ),
            Call::AeCompare(req) => CallReply::AeCompare(self.ae_compare(from, req).await?),
            Call::AeFetch(req) => CallReply::AeFetch(self.ae_fetch(req).await?),
            Call::AcceptHints(req) => CallReply::AcceptHints(AcceptHintsReply {
                accepted: self.accept_hints(req).await?,
            }),
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
        }
        let mut out = Vec::with_capacity(writes.len());
        for kw in writes {
            out.push(self.shards.apply_mode(&kw.key, kw.write, mode).await?);
        }
        Ok(out)
    }

    /// A peer's Merkle leaves over the keys both own; answers with this node's entries of
    /// every bucket that differs.
    async fn ae_compare(&self, from: &str, req: AeCompare) -> Result<AeCompareReply, CacheError> {
        if req.leaves.len() != BUCKETS {
            return Err(CacheError::BadRequest(format!(
                "expected {BUCKETS} Merkle leaves, got {}",
                req.leaves.len()
            )));
        }
        let view = self.view.borrow().clone();
        let all = self.shards.versions().await?;
        let shared = shared_entries(&view, &all, &self.me, from);
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

    /// This node's records of `keys`.
    async fn ae_fetch(&self, req: AeFetch) -> Result<AeFetchReply, CacheError> {
        for k in &req.keys {
            validate_key(k).map_err(bad_key)?;
        }
        Ok(AeFetchReply {
            records: self.shards.records(&req.keys).await?,
        })
    }

    /// Hints handed over by a draining peer. Hints for this node are applied, the rest
    /// queued here.
    async fn accept_hints(&self, req: AcceptHints) -> Result<u64, CacheError> {
        for (_, kw) in &req.hints {
            validate_key(&kw.key).map_err(bad_key)?;
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

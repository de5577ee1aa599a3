//! `Shards`: the routing table from a key to its `ShardActor`, and the mailbox-client
//! calls every other part of the node uses to reach the local store.
//!
//! Owns only the table of actor references. The root supervisor writes a new reference
//! into it when it restarts a shard; readers take the current one per call.

use crate::error::CacheError;
use crate::hlc::MAX_DRIFT_MS;
use crate::merkle::{Leaf, Listing};
use crate::ring::Ring;
use crate::shard::ShardMsg;
use crate::store::{ApplyError, ShardStats};
use crate::types::{admit, now_ms, ApplyMode, ApplyOutcome, Key, Stored, Version, Write};
use ractor::rpc::CallResult;
use ractor::{ActorRef, RpcReplyPort};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// How long a call to a shard may take before the caller gives up.
pub const SHARD_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Tries per call while a shard is being restarted.
const SHARD_CALL_TRIES: usize = 5;

/// Which shard a key lives in. The seed differs from the ring's so shard and ring
/// placement are independent.
pub fn shard_index(key: &str, shards: usize) -> usize {
    (xxhash_rust::xxh64::xxh64(key.as_bytes(), 0x5eed) % shards as u64) as usize
}

/// Whether the local data may be too old to share: a node out of touch with a majority
/// of the cluster for longer than the tombstone retention may hold keys that were
/// deleted elsewhere and whose tombstones are purged by now; pushed to peers, such a
/// copy would bring the key back.
#[derive(Debug)]
struct Contact {
    start: Instant,
    /// Milliseconds after `start` when a majority was last seen.
    majority_seen_ms: AtomicU64,
    retention: Duration,
}

/// The node's anti-entropy leaves (all shards merged) and which shards are full.
#[derive(Debug, Clone, Default)]
pub struct NodeLeaves {
    pub leaves: HashMap<u32, Leaf>,
    /// Per shard index: one more live item would evict.
    pub full: Vec<bool>,
}

impl NodeLeaves {
    /// True when the shard that would hold `key` is full.
    pub fn full_for(&self, key: &str) -> bool {
        !self.full.is_empty() && self.full[shard_index(key, self.full.len())]
    }
}

/// Cloneable handle to the shard table.
#[derive(Clone)]
pub struct Shards {
    table: Arc<RwLock<Vec<ActorRef<ShardMsg>>>>,
    /// Largest value a write may carry (writes from peers are checked here too).
    max_value_bytes: u64,
    contact: Arc<Contact>,
    /// For `shard_calls_in_flight`.
    metrics: Arc<crate::metrics::Metrics>,
}

/// Counts a shard call in `shard_calls_in_flight` until dropped (answered, timed out or
/// abandoned by its caller).
struct InFlight<'a>(&'a std::sync::atomic::AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shards {
    /// An empty table; the supervisor fills it. `tombstone_retention` bounds how long
    /// the node may be out of touch before its data counts as stale ([`Self::stale`]).
    pub fn new(
        max_value_bytes: u64,
        tombstone_retention: Duration,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        Self {
            metrics,
            table: Arc::default(),
            max_value_bytes,
            contact: Arc::new(Contact {
                start: Instant::now(),
                majority_seen_ms: AtomicU64::new(0),
                retention: tombstone_retention,
            }),
        }
    }

    /// Records that this node sees a majority of the cluster now (membership, every
    /// heartbeat while it does).
    pub fn saw_majority(&self) {
        let ms = self.contact.start.elapsed().as_millis() as u64;
        self.contact
            .majority_seen_ms
            .fetch_max(ms, Ordering::AcqRel);
    }

    /// True when this node has not seen a majority for longer than the tombstone
    /// retention (partitioned away, or its process was paused): its data must reach
    /// neither peers nor clients until membership has dropped it ([`Self::clear`]) on
    /// seeing a majority again. Meanwhile reads of the local store find nothing, and
    /// anti-entropy and rebalance skip their work.
    pub fn stale(&self) -> bool {
        let seen = Duration::from_millis(self.contact.majority_seen_ms.load(Ordering::Acquire));
        self.contact.start.elapsed() > seen + self.contact.retention
    }

    /// Drops every record and tombstone of every shard (counters stay); the number of
    /// records dropped.
    pub async fn clear(&self) -> Result<u64, CacheError> {
        let mut n = 0;
        for i in 0..self.len() {
            n += self.call_index(i, ShardMsg::Clear).await?;
        }
        Ok(n)
    }

    /// Drops every live value of every shard and keeps the tombstones; the number of
    /// values dropped.
    pub async fn clear_values(&self) -> Result<u64, CacheError> {
        let mut n = 0;
        for i in 0..self.len() {
            n += self.call_index(i, ShardMsg::ClearValues).await?;
        }
        Ok(n)
    }

    /// Number of shards.
    pub fn len(&self) -> usize {
        self.table.read().map(|t| t.len()).unwrap_or(0)
    }

    /// True before the supervisor has started any shard.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Installs (or replaces, after a restart) shard `index`.
    pub(crate) fn set(&self, index: usize, actor: ActorRef<ShardMsg>) {
        let mut t = self.table.write().unwrap_or_else(|p| p.into_inner());
        if index < t.len() {
            t[index] = actor;
        } else {
            t.push(actor);
        }
    }

    /// Every shard's actor.
    pub(crate) fn all(&self) -> Vec<ActorRef<ShardMsg>> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn actor_at(&self, index: usize) -> Option<ActorRef<ShardMsg>> {
        self.table
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(index)
            .cloned()
    }

    /// Calls the shard that owns `key`, retrying briefly while it is being restarted.
    async fn call<T: Send + 'static>(
        &self,
        key: &str,
        build: impl FnMut(RpcReplyPort<T>) -> ShardMsg,
    ) -> Result<T, CacheError> {
        // One read of the table finds both the shard and its actor.
        let first = {
            let t = self.table.read().unwrap_or_else(|p| p.into_inner());
            if t.is_empty() {
                return Err(CacheError::Internal("store not started".into()));
            }
            let index = shard_index(key, t.len());
            (index, t[index].clone())
        };
        self.call_from(first.0, Some(first.1), build).await
    }

    async fn call_index<T: Send + 'static>(
        &self,
        index: usize,
        build: impl FnMut(RpcReplyPort<T>) -> ShardMsg,
    ) -> Result<T, CacheError> {
        self.call_from(index, None, build).await
    }

    /// Calls shard `index`, starting with `actor` when the caller already holds it. A
    /// message is built per attempt; builders move what they carry into the first one.
    async fn call_from<T: Send + 'static>(
        &self,
        index: usize,
        mut actor: Option<ActorRef<ShardMsg>>,
        mut build: impl FnMut(RpcReplyPort<T>) -> ShardMsg,
    ) -> Result<T, CacheError> {
        let counter = &self.metrics.shard_calls_in_flight;
        counter.fetch_add(1, Ordering::Relaxed);
        let _in_flight = InFlight(counter);
        for attempt in 0..SHARD_CALL_TRIES {
            let Some(a) = actor.take().or_else(|| self.actor_at(index)) else {
                break;
            };
            match a.call(&mut build, Some(SHARD_CALL_TIMEOUT)).await {
                Ok(CallResult::Success(v)) => return Ok(v),
                Ok(CallResult::Timeout) => {
                    return Err(CacheError::Internal(format!("shard {index} timed out")))
                }
                // The actor died (mailbox closed or reply dropped): wait for the restart.
                Ok(CallResult::SenderError) | Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
                }
            }
        }
        Err(CacheError::Internal(format!("shard {index} is restarting")))
    }

    /// Reads a live value from the local store (nothing while the data is stale).
    pub async fn get(&self, key: &str) -> Result<Option<Stored>, CacheError> {
        if self.stale() {
            return Ok(None);
        }
        let mut k = Some(key.to_owned());
        self.call(key, |reply| ShardMsg::Get {
            key: k.take().unwrap_or_else(|| key.to_owned()),
            reply,
        })
        .await
    }

    /// Reads the local record (live value or tombstone) of `key` (nothing while the data
    /// is stale: a stale copy must reach neither a client nor, by read repair, a peer).
    pub async fn read(&self, key: &str) -> Result<Option<Write>, CacheError> {
        if self.stale() {
            return Ok(None);
        }
        let mut k = Some(key.to_owned());
        self.call(key, |reply| ShardMsg::Read {
            key: k.take().unwrap_or_else(|| key.to_owned()),
            reply,
        })
        .await
    }

    /// Applies a versioned write to the local store.
    pub async fn apply(&self, key: &str, write: Write) -> Result<ApplyOutcome, CacheError> {
        self.apply_mode(key, write, ApplyMode::Normal).await
    }

    /// Applies a versioned write in the given mode.
    pub async fn apply_mode(
        &self,
        key: &str,
        write: Write,
        mode: ApplyMode,
    ) -> Result<ApplyOutcome, CacheError> {
        // Every write reaches the store through here, peers' included: the last line
        // against a version that would pin the key or a value over the limit.
        admit(&write, self.max_value_bytes, now_ms(), MAX_DRIFT_MS)
            .map_err(|e| CacheError::BadRequest(e.to_string()))?;
        let mut first = Some((key.to_owned(), write.clone()));
        self.call(key, |reply| {
            let (key, write) = first
                .take()
                .unwrap_or_else(|| (key.to_owned(), write.clone()));
            ShardMsg::Apply {
                key,
                write,
                mode,
                reply,
            }
        })
        .await?
        .map_err(|e| match e {
            ApplyError::TombstonesFull => CacheError::TombstonesFull,
        })
    }

    /// Every record's key and version, over all shards (none while the data is stale).
    pub async fn versions(&self) -> Result<Vec<(Key, Version)>, CacheError> {
        let mut out = Vec::new();
        if self.stale() {
            return Ok(out);
        }
        for i in 0..self.len() {
            out.extend(self.call_index(i, ShardMsg::Versions).await?);
        }
        Ok(out)
    }

    /// The key browser over every shard: the smallest `max` live keys `filter` selects,
    /// ascending, and how many it selects in all (nothing while the data is stale).
    pub async fn scan_keys(
        &self,
        filter: &Arc<crate::keyscan::KeyFilter>,
        max: usize,
    ) -> Result<(Vec<Key>, u64), CacheError> {
        let mut out = crate::keyscan::Smallest::new(max, crate::keyscan::MAX_SCAN_BYTES);
        if self.stale() {
            return Ok(out.finish());
        }
        for i in 0..self.len() {
            let (keys, matched) = self
                .call_index(i, |reply| ShardMsg::Keys {
                    filter: filter.clone(),
                    max,
                    reply,
                })
                .await?;
            out.absorb(keys, matched);
        }
        Ok(out.finish())
    }

    /// Every shard's anti-entropy leaves for `ring`, merged, and which shards are full.
    pub async fn leaves(&self, ring: &Arc<Ring>) -> Result<NodeLeaves, CacheError> {
        let mut out = NodeLeaves::default();
        for i in 0..self.len() {
            let r = ring.clone();
            let shard = self
                .call_index(i, move |reply| ShardMsg::Leaves {
                    ring: r.clone(),
                    reply,
                })
                .await?;
            for (s, l) in shard.leaves {
                out.leaves.entry(s).or_default().merge(&l);
            }
            out.full.push(shard.full);
        }
        Ok(out)
    }

    /// The `(key, version)` of every record in `segments` (ascending) over all shards,
    /// by segment then key, cut at `max_bytes` (see [`Listing`]).
    pub async fn segment_entries(
        &self,
        ring: &Arc<Ring>,
        segments: &[u32],
        max_bytes: usize,
    ) -> Result<Listing, CacheError> {
        let mut out = Listing::default();
        if segments.is_empty() || self.stale() {
            return Ok(out);
        }
        let segments: Arc<[u32]> = segments.into();
        for i in 0..self.len() {
            let (r, s) = (ring.clone(), segments.clone());
            out.merge(
                self.call_index(i, move |reply| ShardMsg::SegmentEntries {
                    ring: r.clone(),
                    segments: s.clone(),
                    max_bytes,
                    reply,
                })
                .await?,
            );
        }
        out.finish(max_bytes);
        Ok(out)
    }

    /// The raw records of `keys` (any order of shards), in the order asked (none while the
    /// data is stale).
    pub async fn records(&self, keys: &[Key]) -> Result<Vec<Option<Write>>, CacheError> {
        let n = self.len();
        let mut out = vec![None; keys.len()];
        if self.stale() {
            return Ok(out);
        }
        let mut by_shard: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, k) in keys.iter().enumerate() {
            by_shard[shard_index(k, n)].push(i);
        }
        for (shard, idxs) in by_shard
            .into_iter()
            .enumerate()
            .filter(|(_, v)| !v.is_empty())
        {
            let ks: Vec<Key> = idxs.iter().map(|i| keys[*i].clone()).collect();
            let recs = self
                .call_index(shard, move |reply| ShardMsg::Records {
                    keys: ks.clone(),
                    reply,
                })
                .await?;
            for (i, r) in idxs.into_iter().zip(recs) {
                out[i] = r;
            }
        }
        Ok(out)
    }

    /// Drops the local copy of `key` if it is still at `version`.
    pub async fn release(&self, key: &str, version: Version) -> Result<bool, CacheError> {
        let mut k = Some(key.to_owned());
        self.call(key, |reply| ShardMsg::Release {
            key: k.take().unwrap_or_else(|| key.to_owned()),
            version,
            reply,
        })
        .await
    }

    /// Sums every shard's counters.
    pub async fn stats(&self) -> Result<ShardStats, CacheError> {
        let mut total = ShardStats::default();
        for i in 0..self.len() {
            total += self.call_index(i, ShardMsg::Stats).await?;
        }
        Ok(total)
    }

    /// Asks every shard to run its expiry sweep now (as its timer would); returns how
    /// many shards were asked. Does not wait for the sweeps.
    pub fn sweep_now(&self) -> usize {
        (0..self.len())
            .filter_map(|i| self.actor_at(i))
            .filter(|a| a.cast(ShardMsg::Sweep).is_ok())
            .count()
    }

    /// Test-only: makes the shard holding `key` panic. Returns its index.
    #[cfg(feature = "test-hooks")]
    pub fn crash_shard_of(&self, key: &str) -> Option<usize> {
        let index = shard_index(key, self.len());
        let actor = self.actor_at(index)?;
        actor.cast(ShardMsg::Crash).ok()?;
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_index_in_range_and_spread() {
        let mut seen = [0usize; 8];
        for i in 0..8_000 {
            seen[shard_index(&format!("k{i}"), 8)] += 1;
        }
        assert!(seen.iter().all(|c| *c > 800), "{seen:?}");
    }
}

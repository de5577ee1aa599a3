//! `AntiEntropyActor`: every anti-entropy interval, compares this node's data with each
//! peer over the ring segments both own, using Merkle leaves ([`crate::merkle`]), and
//! exchanges only the differing entries, newest version winning in both directions.
//! Tombstones take part like values; absence never deletes.
//!
//! The shards keep their leaves up to date on every change, so a round that finds
//! nothing costs a few hundred leaves per peer, whatever the number of keys; entries are
//! listed (by scanning the shards) only for segments whose leaves differ. A peer whose
//! ring has another fingerprint is skipped for the round (views converge within a few
//! heartbeats).
//!
//! A round runs in a spawned task (one at a time) so the mailbox never waits on the
//! network; it exchanges at most `max_keys` keys per peer and direction, in calls of at
//! most [`AE_CALL_BYTES`] (pushes) or [`MAX_AE_REPLY_BYTES`] (fetch replies), the rest
//! next round. Repairs are applied with [`ApplyMode::Fill`]: a full node does not evict
//! to take back a key it evicted (see docs/architecture.md, "Eviction and repair"), and
//! so a round neither fetches a key this node lacks for a full shard nor pushes a key the
//! peer lacks to a shard the peer reported full. After a round that repaired nothing the
//! next one waits twice as long, up to [`MAX_BACKOFF`] intervals ([`Pacer`]).

use crate::membership::ClusterView;
use crate::merkle::{check_segments, listable, reconcile, wire_leaves, Listing};
use crate::metrics::Metrics;
use crate::peer::PeerClient;
use crate::proto::{AeCompare, AeCompareReply, AeFetch, KeyedWrite, Replicate};
use crate::ring::{key_hash, Ring};
use crate::service::{MAX_AE_FETCH_KEYS, MAX_AE_REPLY_BYTES};
use crate::shards::{shard_index, NodeLeaves, Shards};
use crate::types::{validate_key, ApplyMode, ApplyOutcome, Key, Version};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Keys read from the local shards at once when pushing.
pub const AE_CHUNK: usize = 500;
/// Most key and value bytes of one push call.
pub const AE_CALL_BYTES: usize = 4 << 20;
/// Most bytes of this node's own listing of differing segments per peer and round.
pub const AE_LIST_BYTES: usize = MAX_AE_REPLY_BYTES;
/// Longest wait between rounds, in intervals, after rounds that repaired nothing.
pub const MAX_BACKOFF: u32 = 8;
/// Most shards a peer may report (more: its full-shard flags are ignored).
const MAX_PEER_SHARDS: usize = 1 << 16;

/// Messages of the anti-entropy actor.
pub enum AeMsg {
    /// Timer (every interval): start a round unless one is running or the pacer says
    /// wait.
    Tick,
    /// A round finished.
    RoundDone(RoundReport),
}

/// What one round did.
#[derive(Debug, Clone, Default)]
pub struct RoundReport {
    /// Fingerprint of the ring the round compared with.
    pub ring: u64,
    pub peers: usize,
    pub differing_buckets: usize,
    pub pushed: u64,
    pub pulled: u64,
    pub errors: u64,
    /// Peers skipped because their ring differed.
    pub ring_mismatches: u64,
    /// Keys neither fetched nor pushed because the shard that would hold them is full.
    pub skipped_full: u64,
    /// Differing segments this node listed its entries of.
    pub segments_listed: u64,
    pub took: Duration,
}

impl RoundReport {
    /// Nothing was repaired and nothing stands in the way of the next round finding the
    /// same: no key moved, no call failed, every peer's ring agreed.
    pub fn idle(&self) -> bool {
        self.pushed == 0 && self.pulled == 0 && self.errors == 0 && self.ring_mismatches == 0
    }
}

/// When rounds run: every tick normally; after an idle round the next one waits twice
/// as many ticks as the last, up to [`MAX_BACKOFF`]. A round that repaired or failed,
/// or a ring change seen at a tick, goes back to every tick. Pure: the actor feeds it
/// ticks and reports.
#[derive(Debug, Clone)]
pub struct Pacer {
    factor: u32,
    wait: u32,
    ring: Option<u64>,
}

impl Default for Pacer {
    fn default() -> Self {
        Self {
            factor: 1,
            wait: 0,
            ring: None,
        }
    }
}

impl Pacer {
    /// A tick with the current ring's fingerprint: whether to start a round now.
    pub fn tick(&mut self, ring: u64) -> bool {
        if self.ring.is_some_and(|r| r != ring) {
            self.factor = 1;
            self.wait = 0;
        }
        if self.wait > 0 {
            self.wait -= 1;
            return false;
        }
        true
    }

    /// A round finished.
    pub fn done(&mut self, r: &RoundReport) {
        self.ring = Some(r.ring);
        self.factor = if r.idle() {
            (self.factor * 2).min(MAX_BACKOFF)
        } else {
            1
        };
        self.wait = self.factor - 1;
    }

    /// The interval multiplier now.
    pub fn factor(&self) -> u32 {
        self.factor
    }
}

/// Everything a round needs.
#[derive(Clone)]
pub struct AeContext {
    pub me: String,
    pub shards: Shards,
    pub peers: PeerClient,
    pub view: watch::Receiver<Arc<ClusterView>>,
    pub max_keys: usize,
}

/// Start-up arguments.
pub struct AeArgs {
    pub ctx: AeContext,
    pub interval: Duration,
    pub metrics: Arc<Metrics>,
}

/// State: whether a round runs, and when the next one may.
pub struct AeState {
    running: bool,
    pacer: Pacer,
    args: AeArgs,
}

/// The anti-entropy actor.
pub struct AntiEntropyActor;

/// One round against every peer in the ring.
pub async fn run_round(ctx: AeContext) -> RoundReport {
    let started = Instant::now();
    let view = ctx.view.borrow().clone();
    let ring = Arc::new(view.ring.clone());
    let mut report = RoundReport {
        ring: ring.fingerprint(),
        ..RoundReport::default()
    };
    if !ring.contains(&ctx.me) {
        return report;
    }
    let mine = match ctx.shards.leaves(&ring).await {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(error = %e, "anti-entropy: cannot read the leaves");
            report.errors += 1;
            return report;
        }
    };
    for peer in ring
        .nodes()
        .iter()
        .filter(|p| **p != ctx.me && view.is_live(p))
    {
        report.peers += 1;
        with_peer(&ctx, &ring, &mine, peer, &mut report).await;
    }
    report.took = started.elapsed();
    report
}

/// What a peer's compare reply lets this node do, once checked.
struct PeerDiff {
    /// Segments listed by the peer (a prefix of the differing ones).
    listed: Vec<u32>,
    /// The first `complete` of `listed` are listed in full.
    complete: usize,
}

/// Checks a compare reply against the shared segments (the peer is not trusted).
fn check_reply(reply: &AeCompareReply, shared: &[u32]) -> Result<PeerDiff, String> {
    check_segments(reply.buckets.iter().copied(), shared).map_err(|e| e.to_string())?;
    let complete = reply.complete as usize;
    let listed = complete + usize::from(reply.partial);
    if listed > reply.buckets.len() {
        return Err(format!(
            "{listed} segments listed of {} differing",
            reply.buckets.len()
        ));
    }
    Ok(PeerDiff {
        listed: reply.buckets[..listed].to_vec(),
        complete,
    })
}

fn segment_of(ring: &Ring, key: &str) -> u32 {
    ring.segment_of_hash(key_hash(key)).unwrap_or(0) as u32
}

async fn with_peer(
    ctx: &AeContext,
    ring: &Arc<Ring>,
    mine: &NodeLeaves,
    peer: &str,
    report: &mut RoundReport,
) {
    let shared = ring.shared_segments(&ctx.me, peer);
    if shared.is_empty() {
        return;
    }
    let req = AeCompare {
        leaves: Vec::new(),
        ring: Some(ring.fingerprint()),
        segments: wire_leaves(&shared, &mine.leaves),
    };
    let reply = match ctx.peers.call(peer, req).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "anti-entropy compare failed");
            report.errors += 1;
            return;
        }
    };
    if reply.ring_mismatch {
        report.ring_mismatches += 1;
        return;
    }
    let diff = match check_reply(&reply, &shared) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "anti-entropy: refused a malformed compare reply");
            report.errors += 1;
            return;
        }
    };
    if reply.buckets.is_empty() {
        return;
    }
    report.differing_buckets += reply.buckets.len();
    // This node's entries of (a prefix of) the segments the peer listed.
    let n = listable(&diff.listed, &mine.leaves, AE_LIST_BYTES as u64);
    let segments = &diff.listed[..n];
    report.segments_listed += n as u64;
    let my_listing = match ctx
        .shards
        .segment_entries(ring, segments, AE_LIST_BYTES)
        .await
    {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(error = %e, "anti-entropy: cannot list entries");
            report.errors += 1;
            return;
        }
    };
    let mine_complete = |s: u32| my_listing.complete(s);
    let theirs_complete = |s: u32| diff.listed[..diff.complete].binary_search(&s).is_ok();
    let considered =
        |s: u32| segments.binary_search(&s).is_ok() && my_listing.cut.is_none_or(|c| s <= c);
    let theirs: Vec<(Key, Version)> = reply
        .entries
        .into_iter()
        .filter(|(k, _)| validate_key(k).is_ok() && considered(segment_of(ring, k)))
        .collect();
    let mine_entries = listing_pairs(&my_listing);
    let r = reconcile(&mine_entries, &theirs);
    let their_full = &reply.full_shards;
    let their_full_for = |k: &str| {
        !their_full.is_empty()
            && their_full.len() <= MAX_PEER_SHARDS
            && their_full[shard_index(k, their_full.len())]
    };
    // Keys the peer holds (stale versions, tombstones) go first, missing ones after.
    let mut send = r.send_newer;
    for k in r.send_missing {
        if !theirs_complete(segment_of(ring, &k)) {
            continue;
        }
        if their_full_for(&k) {
            report.skipped_full += 1;
            continue;
        }
        send.push(k);
    }
    let mut fetch = r.fetch_newer;
    for k in r.fetch_missing {
        if !mine_complete(segment_of(ring, &k)) {
            continue;
        }
        if mine.full_for(&k) {
            report.skipped_full += 1;
            continue;
        }
        fetch.push(k);
    }
    send.truncate(ctx.max_keys);
    fetch.truncate(ctx.max_keys);
    push(ctx, peer, &send, report).await;
    pull(ctx, peer, &fetch, report).await;
}

fn listing_pairs(l: &Listing) -> Vec<(Key, Version)> {
    l.entries.iter().map(|(_, k, v)| (k.clone(), *v)).collect()
}

/// Splits writes into calls of at most `max_bytes` of keys and values and
/// `max_keys` writes (a single larger write travels alone).
pub fn byte_batches(
    writes: Vec<KeyedWrite>,
    max_bytes: usize,
    max_keys: usize,
) -> Vec<Vec<KeyedWrite>> {
    let mut out: Vec<Vec<KeyedWrite>> = Vec::new();
    let mut size = 0usize;
    for w in writes {
        let n = w.weight();
        let start_new = match out.last() {
            None => true,
            Some(cur) => !cur.is_empty() && (size + n > max_bytes || cur.len() >= max_keys),
        };
        if start_new {
            out.push(Vec::new());
            size = 0;
        }
        size += n;
        out.last_mut().expect("just pushed").push(w);
    }
    out
}

/// Sends this node's records of `keys` to `peer`, in calls bounded by bytes.
async fn push(ctx: &AeContext, peer: &str, keys: &[Key], report: &mut RoundReport) {
    let mut writes: Vec<KeyedWrite> = Vec::new();
    for chunk in keys.chunks(AE_CHUNK) {
        let Ok(records) = ctx.shards.records(chunk).await else {
            report.errors += 1;
            break;
        };
        writes.extend(chunk.iter().zip(records).filter_map(|(k, r)| {
            r.map(|write| KeyedWrite {
                key: k.clone(),
                write,
            })
        }));
    }
    for writes in byte_batches(writes, AE_CALL_BYTES, MAX_AE_FETCH_KEYS) {
        let n = writes.len() as u64;
        let req = Replicate {
            writes,
            mode: ApplyMode::Fill,
        };
        match ctx.peers.call(peer, req).await {
            Ok(_) => report.pushed += n,
            Err(_) => report.errors += 1,
        }
    }
}

/// Fetches `keys` from `peer` and applies them: up to [`MAX_AE_FETCH_KEYS`] keys a call,
/// the peer answering a prefix of at most [`MAX_AE_REPLY_BYTES`]; the rest is asked next.
async fn pull(ctx: &AeContext, peer: &str, keys: &[Key], report: &mut RoundReport) {
    let mut rest = keys;
    while !rest.is_empty() {
        let ask = &rest[..rest.len().min(MAX_AE_FETCH_KEYS)];
        let req = AeFetch { keys: ask.to_vec() };
        let reply = match ctx.peers.call(peer, req).await {
            Ok(r) if !r.records.is_empty() && r.records.len() <= ask.len() => r,
            _ => {
                report.errors += 1;
                return;
            }
        };
        let got = reply.records.len();
        for (k, rec) in ask.iter().zip(reply.records) {
            if let Some(w) = rec {
                // Only what was taken counts (a full node refuses missing keys).
                if let Ok(ApplyOutcome::Applied) =
                    ctx.shards.apply_mode(k, w, ApplyMode::Fill).await
                {
                    report.pulled += 1;
                }
            }
        }
        rest = &rest[got..];
    }
}

impl Actor for AntiEntropyActor {
    type Msg = AeMsg;
    type State = AeState;
    type Arguments = AeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<AeMsg>,
        args: AeArgs,
    ) -> Result<AeState, ActorProcessingErr> {
        myself.send_interval(args.interval, || AeMsg::Tick);
        Ok(AeState {
            running: false,
            pacer: Pacer::default(),
            args,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<AeMsg>,
        msg: AeMsg,
        state: &mut AeState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AeMsg::Tick => {
                // Stale local data is not compared until membership has dropped it.
                if state.running || state.args.ctx.shards.stale() {
                    return Ok(());
                }
                let ring = state.args.ctx.view.borrow().ring.fingerprint();
                if !state.pacer.tick(ring) {
                    Metrics::inc(&state.args.metrics.anti_entropy_rounds_skipped_total);
                    return Ok(());
                }
                state.running = true;
                let ctx = state.args.ctx.clone();
                tokio::spawn(async move {
                    let report = run_round(ctx).await;
                    let _ = myself.cast(AeMsg::RoundDone(report));
                });
            }
            AeMsg::RoundDone(r) => {
                state.running = false;
                state.pacer.done(&r);
                let m = &state.args.metrics;
                m.anti_entropy_backoff
                    .store(u64::from(state.pacer.factor()), Relaxed);
                m.anti_entropy_ring_mismatch_total
                    .fetch_add(r.ring_mismatches, Relaxed);
                m.anti_entropy_keys_skipped_full_total
                    .fetch_add(r.skipped_full, Relaxed);
                m.anti_entropy_segments_listed_total
                    .fetch_add(r.segments_listed, Relaxed);
                Metrics::inc(&m.anti_entropy_rounds_total);
                m.anti_entropy_keys_pushed_total
                    .fetch_add(r.pushed, Relaxed);
                m.anti_entropy_keys_pulled_total
                    .fetch_add(r.pulled, Relaxed);
                m.anti_entropy_errors_total.fetch_add(r.errors, Relaxed);
                m.anti_entropy_last_duration_ms
                    .store(r.took.as_millis() as u64, Relaxed);
                m.anti_entropy_last_differing_buckets
                    .store(r.differing_buckets as u64, Relaxed);
                if r.pushed + r.pulled > 0 {
                    tracing::info!(pushed = r.pushed, pulled = r.pulled, buckets = r.differing_buckets, took = ?r.took, "anti-entropy repaired keys");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Write;

    fn idle(ring: u64) -> RoundReport {
        RoundReport {
            ring,
            ..RoundReport::default()
        }
    }

    #[test]
    fn idle_rounds_back_off_to_eight_intervals_and_work_resets() {
        let mut p = Pacer::default();
        let mut started = Vec::new();
        for t in 0..40 {
            if p.tick(1) {
                started.push(t);
                p.done(&idle(1));
            }
        }
        // Gaps 2, 4, 8, 8, ...
        assert_eq!(started[..5], [0, 2, 6, 14, 22]);
        assert_eq!(p.factor(), MAX_BACKOFF);
        // A round that repaired goes back to every tick.
        let busy = RoundReport {
            ring: 1,
            pulled: 3,
            ..RoundReport::default()
        };
        while !p.tick(1) {}
        p.done(&busy);
        assert_eq!(p.factor(), 1);
        assert!(p.tick(1));
        // So does a ring change, at the next tick.
        p.done(&idle(1));
        p.done(&idle(1));
        assert!(!p.tick(1));
        assert!(p.tick(2), "a new ring runs at once");
    }

    #[test]
    fn malformed_compare_replies_are_refused() {
        let shared = [2, 5, 9];
        let reply = |buckets: Vec<u32>, complete: u32, partial: bool| AeCompareReply {
            buckets,
            complete,
            partial,
            ..AeCompareReply::default()
        };
        let ok = check_reply(&reply(vec![2, 9], 1, true), &shared).unwrap();
        assert_eq!((ok.listed, ok.complete), (vec![2, 9], 1));
        for bad in [
            reply(vec![9, 2], 0, false),
            reply(vec![2, 2], 0, false),
            reply(vec![3], 0, false),
            reply(vec![2], 2, false),
            reply(vec![2], 1, true),
        ] {
            assert!(check_reply(&bad, &shared).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pushes_are_split_by_bytes_and_count() {
        let kw = |k: &str, n: usize| KeyedWrite {
            key: k.into(),
            write: Write {
                version: Version::default(),
                value: Some(bytes::Bytes::from(vec![0u8; n])),
                expires_at_ms: None,
            },
        };
        let sizes = |b: &Vec<Vec<KeyedWrite>>| b.iter().map(Vec::len).collect::<Vec<_>>();
        let w = vec![kw("a", 600), kw("b", 600), kw("c", 2_000), kw("d", 1)];
        assert_eq!(sizes(&byte_batches(w.clone(), 1_400, 100)), vec![2, 1, 1]);
        assert_eq!(sizes(&byte_batches(w, 1 << 20, 3)), vec![3, 1]);
        assert!(byte_batches(Vec::new(), 10, 10).is_empty());
    }
}

//! `AntiEntropyActor`: every anti-entropy interval, compares this node's data with each
//! peer over the key ranges both own, using Merkle trees ([`crate::merkle`]), and
//! exchanges only the differing entries, newest version winning in both directions.
//! Tombstones take part like values; absence never deletes.
//!
//! A round runs in a spawned task (one at a time) so the mailbox never waits on the
//! network; it exchanges at most `max_keys` keys per peer, the rest next round. Repairs
//! are applied with [`ApplyMode::Fill`]: a full node does not evict to take back a key
//! it evicted (see docs/architecture.md, "Eviction and repair").

use crate::membership::ClusterView;
use crate::merkle::{bucket_of, reconcile, MerkleTree};
use crate::metrics::Metrics;
use crate::peer::PeerClient;
use crate::proto::{chunk_writes, AeCompare, AeFetch, KeyedWrite, Replicate};
use crate::shards::Shards;
use crate::types::{ApplyMode, ApplyOutcome, Key, Version};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Keys per push or fetch call.
pub const AE_CHUNK: usize = 500;

/// Messages of the anti-entropy actor.
pub enum AeMsg {
    /// Timer: start a round unless one is running.
    Tick,
    /// A round finished.
    RoundDone(RoundReport),
}

/// What one round did.
#[derive(Debug, Clone, Default)]
pub struct RoundReport {
    pub peers: usize,
    pub differing_buckets: usize,
    pub pushed: u64,
    pub pulled: u64,
    pub errors: u64,
    pub took: Duration,
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

/// State: whether a round runs.
pub struct AeState {
    running: bool,
    args: AeArgs,
}

/// The anti-entropy actor.
pub struct AntiEntropyActor;

/// `(key, version)` of the local records whose owners include both `me` and `peer`.
pub fn shared_entries(
    view: &ClusterView,
    all: &[(Key, Version)],
    me: &str,
    peer: &str,
) -> Vec<(Key, Version)> {
    all.iter()
        .filter(|(k, _)| {
            let o = view.ring.owners(k);
            o.contains(&me) && o.contains(&peer)
        })
        .cloned()
        .collect()
}

/// One round against every peer in the ring.
pub async fn run_round(ctx: AeContext) -> RoundReport {
    let started = Instant::now();
    let mut report = RoundReport::default();
    let view = ctx.view.borrow().clone();
    if !view.ring.contains(&ctx.me) {
        return report;
    }
    let Ok(all) = ctx.shards.versions().await else {
        report.errors += 1;
        return report;
    };
    // Keep only what this node owns; owners are computed once per key.
    let mine: Vec<(Key, Version, Vec<String>)> = all
        .into_iter()
        .filter_map(|(k, v)| {
            let o: Vec<String> = view
                .ring
                .owners(&k)
                .into_iter()
                .map(str::to_owned)
                .collect();
            o.contains(&ctx.me).then_some((k, v, o))
        })
        .collect();
    for peer in view
        .ring
        .nodes()
        .iter()
        .filter(|p| **p != ctx.me && view.is_live(p))
    {
        report.peers += 1;
        let shared: Vec<(Key, Version)> = mine
            .iter()
            .filter(|(_, _, o)| o.contains(peer))
            .map(|(k, v, _)| (k.clone(), *v))
            .collect();
        let tree = MerkleTree::build(shared.iter().map(|(k, v)| (k.as_str(), *v)));
        let reply = match ctx
            .peers
            .call(
                peer,
                AeCompare {
                    leaves: tree.leaves.clone(),
                },
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "anti-entropy compare failed");
                report.errors += 1;
                continue;
            }
        };
        if reply.buckets.is_empty() {
            continue;
        }
        report.differing_buckets += reply.buckets.len();
        let buckets: HashSet<usize> = reply.buckets.iter().map(|b| *b as usize).collect();
        let mine_in: Vec<(Key, Version)> = shared
            .into_iter()
            .filter(|(k, _)| buckets.contains(&bucket_of(k)))
            .collect();
        let (send, mut fetch) = reconcile(&mine_in, &reply.entries);
        // Keys the peer holds (stale versions, tombstones) go first, missing ones after:
        // a full peer refuses missing keys, and must not starve the updates behind them.
        let theirs: HashSet<&str> = reply.entries.iter().map(|(k, _)| k.as_str()).collect();
        let (mut send, missing): (Vec<Key>, Vec<Key>) =
            send.into_iter().partition(|k| theirs.contains(k.as_str()));
        send.extend(missing);
        send.truncate(ctx.max_keys);
        fetch.truncate(ctx.max_keys);
        for chunk in send.chunks(AE_CHUNK) {
            let Ok(records) = ctx.shards.records(chunk).await else {
                report.errors += 1;
                break;
            };
            let writes: Vec<KeyedWrite> = chunk
                .iter()
                .zip(records)
                .filter_map(|(k, r)| {
                    r.map(|write| KeyedWrite {
                        key: k.clone(),
                        write,
                    })
                })
                .collect();
            for writes in chunk_writes(writes) {
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
        for chunk in fetch.chunks(AE_CHUNK) {
            let req = AeFetch {
                keys: chunk.to_vec(),
            };
            let Ok(reply) = ctx.peers.call(peer, req).await else {
                report.errors += 1;
                break;
            };
            for (k, rec) in chunk.iter().zip(reply.records) {
                if let Some(w) = rec {
                    // Only what was taken counts (a full node refuses missing keys).
                    if let Ok(ApplyOutcome::Applied) =
                        ctx.shards.apply_mode(k, w, ApplyMode::Fill).await
                    {
                        report.pulled += 1;
                    }
                }
            }
        }
    }
    report.took = started.elapsed();
    report
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
                state.running = true;
                let ctx = state.args.ctx.clone();
                tokio::spawn(async move {
                    let report = run_round(ctx).await;
                    let _ = myself.cast(AeMsg::RoundDone(report));
                });
            }
            AeMsg::RoundDone(r) => {
                state.running = false;
                let m = &state.args.metrics;
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

//! History checker: concurrent clients write unique values, delete, and read at QUORUM
//! while a nemesis kills, pauses and partitions one node at a time. At the end no
//! acknowledged write is lost and no deleted key comes back.
//!
//! Every key has one writer (its client), so its history is a sequence. A request that
//! failed or timed out is *ambiguous*: it may or may not have been applied. The final
//! value of a key must be the effect of its last acknowledged operation, or of an
//! ambiguous operation issued after it.

mod common;

use common::*;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `None` is a delete.
type Effect = Option<String>;

#[derive(Default, Debug)]
struct KeyHistory {
    last_acked: Option<Effect>,
    /// Ambiguous operations issued after the last acknowledged one.
    ambiguous: Vec<Effect>,
}

impl KeyHistory {
    fn allowed(&self) -> Vec<Effect> {
        let mut v: Vec<Effect> = self.ambiguous.clone();
        v.push(self.last_acked.clone().unwrap_or(None));
        v
    }
}

#[derive(Default, Debug)]
struct Counts {
    writes_acked: usize,
    deletes_acked: usize,
    ambiguous: usize,
    reads: usize,
    stale_reads: usize,
}

const HEAL: &[(&str, &str)] = &[
    ("REPLICATION", "3"),
    ("HINT_REPLAY", "100ms"),
    ("REBALANCE_INTERVAL", "100ms"),
    ("ANTI_ENTROPY_INTERVAL", "1s"),
];

#[tokio::test]
async fn no_acknowledged_write_lost_no_deleted_key_returns() {
    let mut c = Cluster::start(5, HEAL).await;
    let urls: Vec<String> = c.nodes.iter().map(|n| n.api_url("/v1/cache/")).collect();
    // Index of the node under fault (clients avoid it), or usize::MAX.
    let faulted = Arc::new(AtomicUsize::new(usize::MAX));
    let stop = Arc::new(AtomicBool::new(false));
    let histories: Arc<Mutex<HashMap<String, KeyHistory>>> = Arc::default();
    let counts: Arc<Mutex<Counts>> = Arc::default();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();

    let mut clients = Vec::new();
    for client in 0..4u64 {
        let (urls, faulted, stop, histories, counts, http) = (
            urls.clone(),
            faulted.clone(),
            stop.clone(),
            histories.clone(),
            counts.clone(),
            http.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(client);
            let end = Instant::now() + Duration::from_secs(40);
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) && Instant::now() < end && seq < 3_000 {
                seq += 1;
                let key = format!("c{client}-k{}", rng.random_range(0..40));
                let mut node = rng.random_range(0..urls.len());
                if node == faulted.load(Ordering::Relaxed) {
                    node = (node + 1) % urls.len();
                }
                let url = format!("{}{key}?consistency=quorum", urls[node]);
                let roll = rng.random_range(0..10);
                if roll < 5 {
                    let value = format!("c{client}-s{seq}");
                    let ok = matches!(http.put(&url).body(value.clone()).send().await, Ok(r) if r.status() == 200);
                    let mut h = histories.lock().unwrap();
                    let e = h.entry(key).or_default();
                    let mut cnt = counts.lock().unwrap();
                    if ok {
                        e.last_acked = Some(Some(value));
                        e.ambiguous.clear();
                        cnt.writes_acked += 1;
                    } else {
                        e.ambiguous.push(Some(value));
                        cnt.ambiguous += 1;
                    }
                } else if roll < 6 {
                    let ok = matches!(http.delete(&url).send().await, Ok(r) if r.status() == 200);
                    let mut h = histories.lock().unwrap();
                    let e = h.entry(key).or_default();
                    let mut cnt = counts.lock().unwrap();
                    if ok {
                        e.last_acked = Some(None);
                        e.ambiguous.clear();
                        cnt.deletes_acked += 1;
                    } else {
                        e.ambiguous.push(None);
                        cnt.ambiguous += 1;
                    }
                } else if let Ok(r) = http.get(&url).send().await {
                    let got: Option<Effect> = match r.status().as_u16() {
                        200 => Some(Some(r.text().await.unwrap_or_default())),
                        404 => Some(None),
                        _ => None,
                    };
                    if let Some(got) = got {
                        let h = histories.lock().unwrap();
                        let allowed = h.get(&key).map(|e| e.allowed()).unwrap_or_else(|| vec![None]);
                        let mut cnt = counts.lock().unwrap();
                        cnt.reads += 1;
                        if !allowed.contains(&got) {
                            cnt.stale_reads += 1;
                        }
                    }
                }
            }
        }));
    }

    // The nemesis: one node at a time.
    tokio::time::sleep(Duration::from_secs(1)).await;
    faulted.store(4, Ordering::Relaxed);
    c.node_mut(5).kill9().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.node_mut(5).spawn();
    c.node_mut(5).wait_healthy().await;
    c.wait_members(5, Duration::from_secs(15)).await;
    faulted.store(3, Ordering::Relaxed);
    c.node(4).signal(libc::SIGSTOP);
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.node(4).signal(libc::SIGCONT);
    c.wait_members(5, Duration::from_secs(15)).await;
    faulted.store(2, Ordering::Relaxed);
    c.node(3)
        .set_faults(serde_json::json!({"isolated": true}))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.node(3).set_faults(serde_json::json!({})).await;
    c.wait_members(5, Duration::from_secs(15)).await;
    faulted.store(usize::MAX, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        t.await.unwrap();
    }

    // Let hints and anti-entropy settle, then check every key from every node.
    let histories = histories.lock().unwrap().drain().collect::<Vec<_>>();
    let mut violations = Vec::new();
    for (key, h) in &histories {
        let allowed = h.allowed();
        let check = || async {
            for n in &c.nodes {
                let r = n.get_q(key, "consistency=quorum").await;
                let got: Effect = match r.status().as_u16() {
                    200 => Some(r.text().await.ok()?),
                    404 => None,
                    _ => return None,
                };
                if !allowed.contains(&got) {
                    return None;
                }
            }
            Some(())
        };
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if check().await.is_some() {
                break;
            }
            if Instant::now() > end {
                violations.push(format!("{key}: allowed {allowed:?}"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let cnt = counts.lock().unwrap();
    eprintln!(
        "history: {} keys, {} writes and {} deletes acknowledged, {} ambiguous, {} reads ({} stale during faults), {} violations",
        histories.len(),
        cnt.writes_acked,
        cnt.deletes_acked,
        cnt.ambiguous,
        cnt.reads,
        cnt.stale_reads,
        violations.len()
    );
    assert!(cnt.writes_acked > 100 && cnt.deletes_acked > 10, "{cnt:?}");
    assert!(violations.is_empty(), "lost or resurrected: {violations:?}");
}

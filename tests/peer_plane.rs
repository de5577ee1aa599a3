//! Black-box tests of the peer plane with real processes: a frozen replica under full
//! write load must not make the other nodes' memory grow past the configured peer-queue
//! and hint bounds, and the cluster recovers when it thaws.

mod common;

use common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Resident memory of a process, in bytes (`VmRSS` of /proc/<pid>/status).
fn rss_bytes(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// How long the replica stays frozen (`HYPERCACHE_TEST_FREEZE_SECS`, default 60).
fn freeze_for() -> Duration {
    Duration::from_secs(
        std::env::var("HYPERCACHE_TEST_FREEZE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    )
}

const QUEUE_ITEMS: u64 = 1024;
const QUEUE_BYTES: u64 = 1 << 20;
const HINT_BYTES: u64 = 4 << 20;
const HINTS_PER_PEER: u64 = 20_000;
/// What memory may grow by beyond the bounds above: allocator slack, connection
/// buffers, in-flight batches (pipeline × batch bytes) and per-call bookkeeping.
const SLACK: u64 = 24 << 20;

/// Runs `writers` concurrent PUT loops against `targets` until `stop`; bounded in count.
fn start_load(
    targets: Vec<(String, Option<String>)>,
    writers: usize,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(writers)
        .build()
        .unwrap();
    (0..writers)
        .map(|w| {
            let (base, token) = targets[w % targets.len()].clone();
            let client = client.clone();
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                let value = vec![b'v'; 64];
                for i in 0..2_000_000u64 {
                    if stop.load(Relaxed) {
                        break;
                    }
                    let key = (w as u64 * 7_919 + i) % 5_000;
                    let mut rb = client
                        .put(format!("{base}/v1/cache/load-{key}"))
                        .body(value.clone());
                    if let Some(t) = &token {
                        rb = rb.bearer_auth(t);
                    }
                    match rb.send().await {
                        Ok(r) if r.status() == 200 => ok.fetch_add(1, Relaxed),
                        _ => failed.fetch_add(1, Relaxed),
                    };
                }
            })
        })
        .collect()
}

#[tokio::test]
async fn frozen_replica_under_full_write_load_keeps_memory_bounded() {
    let queue_items = QUEUE_ITEMS.to_string();
    let queue_bytes = QUEUE_BYTES.to_string();
    let hint_bytes = HINT_BYTES.to_string();
    let hints_per_peer = HINTS_PER_PEER.to_string();
    let c = Cluster::start(
        3,
        &[
            ("AUTH_TOKEN", TOKEN),
            ("REPLICATION", "3"),
            // A frozen node stays suspect (in the ring, still sent writes) for the whole
            // test, so its queues on the other nodes are under pressure throughout.
            ("HEARTBEAT", "1s"),
            ("SUSPECT_TIMEOUT", "300s"),
            ("PEER_TIMEOUT", "2s"),
            ("PEER_QUEUE_ITEMS", &queue_items),
            ("PEER_QUEUE_BYTES", &queue_bytes),
            ("HINT_MAX_BYTES", &hint_bytes),
            ("HINT_MAX_PER_PEER", &hints_per_peer),
            ("LOG_LEVEL", "info"),
        ],
    )
    .await;
    let targets: Vec<(String, Option<String>)> = [1, 2]
        .iter()
        .map(|i| (c.node(*i).api_url(""), Some(TOKEN.to_owned())))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = start_load(targets, 16, stop.clone(), ok.clone(), failed.clone());

    // Warm up with every replica healthy: the store fills its 5,000 keys and the
    // allocator reaches its working size. That is the baseline.
    let warm_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < warm_until {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pids = [c.node(1).pid(), c.node(2).pid()];
    let baseline: Vec<u64> = pids.iter().map(|p| rss_bytes(*p)).collect();
    let ok_before = ok.load(Relaxed);
    assert!(ok_before > 1000, "warm-up stored only {ok_before} writes");

    c.node(3).signal(libc::SIGSTOP);
    let frozen_at = Instant::now();
    let mut peak = baseline.clone();
    while frozen_at.elapsed() < freeze_for() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for (i, p) in pids.iter().enumerate() {
            peak[i] = peak[i].max(rss_bytes(*p));
        }
    }
    let ok_frozen = ok.load(Relaxed) - ok_before;
    stop.store(true, Relaxed);
    for t in load {
        let _ = t.await;
    }

    let bound = QUEUE_BYTES + HINT_BYTES + SLACK;
    for (i, n) in [1, 2].iter().enumerate() {
        let m = c.node(*n).mgmt_json("/dist/metrics").await;
        let peer = &m["peers"]["node-3"];
        eprintln!(
            "node-{n}: rss baseline {} MiB, peak {} MiB; queue max {}, overflows {}, hints {} ({} bytes), dropped {}",
            baseline[i] >> 20,
            peak[i] >> 20,
            peer["peer_queue_items_max"],
            peer["peer_overflows"],
            m["hints_pending"],
            m["hints_bytes"],
            m["hints_dropped_total"]
        );
        assert!(
            peer["peer_queue_items_max"].as_u64().unwrap() <= QUEUE_ITEMS,
            "node-{n}: {peer}"
        );
        assert!(
            m["hints_bytes"].as_u64().unwrap() <= HINT_BYTES,
            "node-{n}: {m}"
        );
        assert!(
            peak[i] <= baseline[i] + bound,
            "node-{n}: resident memory grew from {} to {} bytes (bound {} above baseline)",
            baseline[i],
            peak[i],
            bound
        );
    }
    // The load kept being served at quorum by the two healthy nodes.
    assert!(
        ok_frozen > 1000,
        "only {ok_frozen} writes acknowledged while node-3 was frozen ({} failed)",
        failed.load(Relaxed)
    );
    // The queues to node-3 filled and overflowed into hints: the bound was exercised.
    let mut overflows = 0;
    for n in [1, 2] {
        let m = c.node(n).mgmt_json("/dist/metrics").await;
        overflows += m["peer_queue_overflows_total"].as_u64().unwrap();
    }
    assert!(overflows > 0, "the peer queues never overflowed");

    // Thaw: the queues drain, hints replay, node-3 serves the latest data again.
    c.node(3).signal(libc::SIGCONT);
    eventually(
        "hints delivered after the thaw",
        Duration::from_secs(60),
        || async {
            let a = c.node(1).mgmt_json("/dist/metrics").await["hints_pending"].as_u64()?;
            let b = c.node(2).mgmt_json("/dist/metrics").await["hints_pending"].as_u64()?;
            (a + b == 0).then_some(())
        },
    )
    .await;
    assert_eq!(c.node(1).put("after-thaw", "ok").await.status(), 200);
    assert_eq!(c.node(3).get("after-thaw").await.status(), 200);
}

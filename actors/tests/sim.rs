//! The cluster simulator: 3–5 whole nodes (the real actor tree, the real dist service,
//! no sockets and no HTTP) on one in-memory network with seeded faults, on a paused
//! tokio clock. Minutes of cluster time take about a second, and a failing seed replays:
//! each test prints its seed, and `SIM_SEED=<n>` runs that seed again.
//!
//! Every scenario checks the same two things at the end: the cluster converged (every
//! owner of every key written holds the same newest record) and no write acknowledged at
//! `quorum` is lost (each key's newest acknowledged value, or a later one, is what a
//! quorum read returns and what every owner holds).
//!
//! Long mode: `SIM_SEEDS=200 cargo nextest run -p hypercache-actors --release --test sim`
//! runs each scenario over 200 seeds (see docs/architecture.md, "Cluster simulator").

use hypercache_actors::hints::HintLimits;
use hypercache_actors::metrics::Metrics;
use hypercache_actors::proto::{
    encode, Batch, Call, Envelope, MemberEntry, Ping, WireState, PROTOCOL_VERSION,
};
use hypercache_actors::quorum::Consistency;
use hypercache_actors::service::Route;
use hypercache_actors::sim::SimNet;
use hypercache_actors::swim::{SeedPeer, SwimConfig};
use hypercache_actors::transport::Faults;
use hypercache_actors::{start_with, CacheError, NodeConfig, NodeHandle, PeerLimits};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

const RF: usize = 3;

fn addr(id: &str) -> String {
    format!("{id}:7946")
}

fn config(id: &str, seeds: &[&str], seed: u64, limits: PeerLimits) -> NodeConfig {
    NodeConfig {
        node_id: id.to_owned(),
        advertise: addr(id),
        replication: RF,
        shards: 4,
        capacity_items: 1_000_000,
        capacity_bytes: None,
        max_value_bytes: 1 << 20,
        tombstone_retention: Duration::from_secs(3600),
        tombstone_bytes: 64 << 20,
        sweep_interval: Duration::from_secs(1),
        seeds: seeds
            .iter()
            .filter(|s| **s != id)
            .map(|s| SeedPeer {
                id: Some((*s).to_owned()),
                addr: addr(s),
            })
            .collect(),
        heartbeat: Duration::from_millis(100),
        swim: SwimConfig {
            probe_timeout: Duration::from_millis(40),
            indirect_timeout: Duration::from_millis(40),
            suspect_timeout: Duration::from_millis(500),
            forget_after: Duration::from_secs(3600),
            indirect_k: 2,
            max_members: 64,
        },
        auth_token: None,
        peer_tls: None,
        peer_pool_idle: Duration::from_secs(30),
        peer_timeout: Duration::from_millis(500),
        peer_limits: limits,
        read_hedge: Duration::from_millis(20),
        write_consistency: Consistency::Quorum,
        read_consistency: Consistency::One,
        hint_limits: HintLimits {
            max_per_peer: 100_000,
            max_bytes: 64 << 20,
            ttl_ms: 3_600_000,
        },
        hint_replay: Duration::from_millis(100),
        anti_entropy_interval: Duration::from_secs(1),
        anti_entropy_max_keys: 10_000,
        rebalance_interval: Duration::from_millis(100),
        rebalance_batch: 200,
        rebalance_concurrency: 2,
        ownership_sweep: Duration::from_secs(5),
        drain_timeout: Duration::from_secs(10),
        sloppy_quorum: false,
        rng_seed: Some(seed ^ xxhash(id)),
    }
}

fn xxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

struct SimNode {
    handle: NodeHandle,
    metrics: Arc<Metrics>,
}

/// A simulated cluster.
struct Sim {
    seed: u64,
    net: Arc<SimNet>,
    nodes: BTreeMap<String, SimNode>,
    all_ids: Vec<String>,
    limits: PeerLimits,
    rng: StdRng,
    /// Newest acknowledged sequence number per key.
    acked: HashMap<String, u64>,
    next_seq: u64,
}

impl Sim {
    async fn start(seed: u64, n: usize, limits: PeerLimits) -> Sim {
        let mut sim = Sim {
            seed,
            net: SimNet::new(seed),
            nodes: BTreeMap::new(),
            all_ids: (1..=n).map(|i| format!("node-{i}")).collect(),
            limits,
            rng: StdRng::seed_from_u64(seed),
            acked: HashMap::new(),
            next_seq: 1,
        };
        for id in sim.all_ids.clone() {
            sim.boot(&id).await;
        }
        sim.wait_for(
            "every node sees every other alive",
            Duration::from_secs(30),
            |s| s.all_alive(),
        )
        .await;
        sim
    }

    /// Starts (or restarts, empty) the node `id`.
    async fn boot(&mut self, id: &str) {
        let seeds: Vec<&str> = self.all_ids.iter().map(String::as_str).collect();
        let metrics = Arc::new(Metrics::default());
        let (handle, _join) = start_with(
            config(id, &seeds, self.seed, self.limits),
            metrics.clone(),
            self.net.transport(&addr(id)),
            Arc::new(Faults::default()),
        )
        .await
        .expect("node starts");
        self.net.register(&addr(id), handle.dist().clone());
        self.nodes
            .insert(id.to_owned(), SimNode { handle, metrics });
    }

    /// Stops the node `id` at once (its peers see it vanish).
    async fn crash(&mut self, id: &str) {
        self.net.unregister(&addr(id));
        if let Some(n) = self.nodes.remove(id) {
            n.handle.stop().await;
        }
    }

    fn node(&self, id: &str) -> &NodeHandle {
        &self.nodes[id].handle
    }

    fn all_alive(&self) -> bool {
        self.nodes.values().all(|n| {
            let v = n.handle.view();
            self.nodes.keys().all(|id| {
                v.members
                    .iter()
                    .any(|m| m.id == *id && m.state == hypercache_actors::proto::WireState::Alive)
            })
        })
    }

    /// Advances the paused clock until `f` holds, or fails the test at `deadline`
    /// (cluster time).
    async fn wait_for(&mut self, what: &str, deadline: Duration, f: impl Fn(&Sim) -> bool) {
        let end = tokio::time::Instant::now() + deadline;
        while !f(self) {
            if tokio::time::Instant::now() > end {
                panic!(
                    "seed {}: timed out after {deadline:?} waiting for: {what}",
                    self.seed
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn live_ids(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    /// One quorum write of `key` through a random live node; records the ack.
    async fn write(&mut self, key: &str) -> Result<(), CacheError> {
        let ids = self.live_ids();
        let via = ids[self.rng.random_range(0..ids.len())].clone();
        let seq = self.next_seq;
        self.next_seq += 1;
        let r = self
            .node(&via)
            .put(key, seq.to_string().into(), None, Some(Consistency::Quorum))
            .await;
        if r.is_ok() {
            self.acked.insert(key.to_owned(), seq);
        }
        r.map(|_| ())
    }

    /// `n` sequential writes over `keys` keys, 2 ms apart (so the coordinators' clocks,
    /// not their logical counters, order them); returns how many were acknowledged.
    async fn write_many(&mut self, n: usize, keys: usize) -> usize {
        let mut ok = 0;
        for _ in 0..n {
            tokio::time::sleep(Duration::from_millis(2)).await;
            let k = format!("k{}", self.rng.random_range(0..keys));
            if self.write(&k).await.is_ok() {
                ok += 1;
            }
        }
        ok
    }

    /// Every owner of every acknowledged key holds the same record, at least as new as
    /// the acknowledged one (checked against each live node's own view of the owners).
    async fn converged(&self) -> Result<(), String> {
        let ids = self.live_ids();
        let ring0 = self.node(&ids[0]).view().ring.nodes().to_vec();
        for id in &ids {
            if self.node(id).view().ring.nodes() != ring0.as_slice() {
                return Err(format!("{id} sees another ring"));
            }
        }
        let any = self.node(&ids[0]);
        for (key, acked) in &self.acked {
            let owners = any.owners(key);
            let mut seen = None;
            for o in &owners {
                let Some(n) = self.nodes.get(o) else {
                    return Err(format!("owner {o} of {key} is not running"));
                };
                let rec = n
                    .handle
                    .dist()
                    .read_local(key)
                    .await
                    .map_err(|e| e.to_string())?;
                let Some(rec) = rec else {
                    return Err(format!("{o} lacks {key}"));
                };
                let seq: u64 = std::str::from_utf8(rec.value.as_deref().unwrap_or(b"0"))
                    .unwrap()
                    .parse()
                    .unwrap();
                if seq < *acked {
                    return Err(format!("{o} holds {key}={seq}, acknowledged {acked}"));
                }
                match seen {
                    None => seen = Some(rec.version),
                    Some(v) if v != rec.version => {
                        return Err(format!("owners of {key} disagree"));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Waits for convergence, then checks every acknowledged key with a quorum read.
    async fn assert_converged_and_nothing_lost(&mut self, deadline: Duration) {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            match self.converged().await {
                Ok(()) => break,
                Err(e) if tokio::time::Instant::now() > end => {
                    panic!("seed {}: not converged after {deadline:?}: {e}", self.seed)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let ids = self.live_ids();
        for (key, acked) in &self.acked {
            let via = &ids[key.len() % ids.len()];
            let got = self
                .node(via)
                .get(key, Some(Consistency::Quorum))
                .await
                .unwrap_or_else(|e| panic!("seed {}: quorum read of {key}: {e}", self.seed));
            let seq: u64 = std::str::from_utf8(&got.value).unwrap().parse().unwrap();
            assert!(
                seq >= *acked,
                "seed {}: {key} reads {seq}, acknowledged {acked}",
                self.seed
            );
        }
    }

    async fn stop(mut self) {
        for id in self.live_ids() {
            self.crash(&id).await;
        }
    }
}

/// The seeds a scenario runs: `SIM_SEED` alone, else `SIM_SEEDS` consecutive ones from a
/// fixed base (default 2).
fn seeds(base: u64) -> Vec<u64> {
    if let Ok(s) = std::env::var("SIM_SEED") {
        return vec![s.parse().expect("SIM_SEED is a number")];
    }
    let n: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    (0..n).map(|i| base + i).collect()
}

fn default_limits() -> PeerLimits {
    PeerLimits::default()
}

#[tokio::test(start_paused = true)]
async fn writes_and_reads_under_random_loss() {
    for seed in seeds(100) {
        eprintln!("seed {seed}");
        let mut sim = Sim::start(seed, 3, default_limits()).await;
        sim.net.update_faults(|f| {
            f.drop_request = 0.05;
            f.drop_reply = 0.05;
            f.duplicate = 0.05;
            f.delay = (Duration::from_micros(100), Duration::from_millis(5));
        });
        let acked = sim.write_many(300, 60).await;
        assert!(
            acked > 150,
            "seed {seed}: only {acked} of 300 writes acknowledged"
        );
        // Reads at `one` keep working under loss.
        let mut hits = 0;
        for (k, _) in sim.acked.clone() {
            if sim.node("node-1").get(&k, None).await.is_ok() {
                hits += 1;
            }
        }
        assert!(hits > sim.acked.len() / 2, "seed {seed}: {hits} reads hit");
        sim.net.heal();
        sim.assert_converged_and_nothing_lost(Duration::from_secs(60))
            .await;
        sim.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn partition_and_heal() {
    for seed in seeds(200) {
        eprintln!("seed {seed}");
        let mut sim = Sim::start(seed, 5, default_limits()).await;
        sim.write_many(100, 40).await;
        let a = ["node-1:7946", "node-2:7946"];
        let b = ["node-3:7946", "node-4:7946", "node-5:7946"];
        sim.net.partition(&a, &b);
        sim.wait_for(
            "each side sees the other dead",
            Duration::from_secs(30),
            |s| {
                let (v1, v3) = (s.node("node-1").view(), s.node("node-3").view());
                ["node-3", "node-4", "node-5"]
                    .iter()
                    .all(|o| !v1.is_live(o))
                    && ["node-1", "node-2"].iter().all(|o| !v3.is_live(o))
            },
        )
        .await;
        // Writes through either side; whatever was acknowledged must survive the heal.
        sim.write_many(200, 40).await;
        sim.net.heal();
        // Then a one-way cut: node-1 cannot reach node-2, node-2 still reaches node-1.
        sim.net.update_faults(|f| {
            f.cut.insert(("node-1:7946".into(), "node-2:7946".into()));
        });
        sim.write_many(100, 40).await;
        sim.net.heal();
        sim.wait_for("membership healed", Duration::from_secs(60), |s| {
            s.all_alive()
        })
        .await;
        sim.assert_converged_and_nothing_lost(Duration::from_secs(60))
            .await;
        sim.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn reads_at_one_hedge_past_a_slow_owner() {
    for seed in seeds(600) {
        eprintln!("seed {seed}");
        let mut sim = Sim::start(seed, 5, default_limits()).await;
        // Keys node-1 does not own: a read at `one` through node-1 asks a peer first.
        let mut keys = Vec::new();
        for i in 0.. {
            let k = format!("h{i}");
            let owners = sim.node("node-1").owners(&k);
            if !owners.iter().any(|o| o == "node-1") && owners[0] == "node-2" {
                sim.node("node-1")
                    .put(&k, i.to_string().into(), None, Some(Consistency::All))
                    .await
                    .expect("write at all");
                keys.push(k);
            }
            if keys.len() == 10 {
                break;
            }
        }
        // node-2, every key's first owner, freezes: requests to it take 3 s and it sends
        // nothing (so it cannot refute the suspicion either).
        sim.net.update_faults(|f| {
            f.slow.insert("node-2:7946".into(), Duration::from_secs(3));
            for i in [1, 3, 4, 5] {
                f.cut
                    .insert(("node-2:7946".into(), format!("node-{i}:7946")));
            }
        });
        let hedges = |s: &Sim| s.nodes["node-1"].metrics.read_hedges_total.load(Relaxed);
        let before = hedges(&sim);
        for k in &keys {
            let started = tokio::time::Instant::now();
            let got = sim.node("node-1").get(k, Some(Consistency::One)).await;
            assert!(got.is_ok(), "seed {seed}: {k}: {got:?}");
            // The next owner was asked after the hedge delay, not after the 500 ms peer
            // timeout nor the 3 s the frozen owner takes.
            let took = started.elapsed();
            assert!(
                took < Duration::from_millis(100),
                "seed {seed}: read of {k} took {took:?}"
            );
        }
        assert!(hedges(&sim) > before, "seed {seed}: no hedged read counted");
        // Once node-2 is suspected, reads skip it without hedging.
        sim.wait_for(
            "node-2 suspect or dead on node-1",
            Duration::from_secs(10),
            |s| {
                s.node("node-1").view().members.iter().any(|m| {
                    m.id == "node-2" && m.state != hypercache_actors::proto::WireState::Alive
                })
            },
        )
        .await;
        let before = hedges(&sim);
        for k in &keys {
            assert!(sim.node("node-1").get(k, None).await.is_ok());
        }
        assert_eq!(
            hedges(&sim),
            before,
            "seed {seed}: a suspect owner was asked first"
        );
        sim.stop().await;
    }
}

/// Hints queued for a crashed owner survive a restart of the hint queue actor and are
/// delivered when the owner is back.
#[tokio::test(start_paused = true)]
async fn hints_survive_a_restart_of_their_actor() {
    for seed in seeds(900) {
        let mut sim = Sim::start(seed, 3, default_limits()).await;
        sim.crash("node-2").await;
        sim.wait_for(
            "node-2 dead in node-1's view",
            Duration::from_secs(10),
            |s| !s.node("node-1").view().is_live("node-2"),
        )
        .await;
        sim.write_many(40, 40).await;
        let m = &sim.nodes["node-1"].metrics;
        let pending = m.hints_pending.load(Relaxed);
        assert!(pending > 0, "seed {seed}: no hints queued for node-2");
        assert!(sim.node("node-1").crash_actor("hints"));
        sim.wait_for("hint queue restarted", Duration::from_secs(10), |s| {
            s.nodes["node-1"].metrics.actor_restarts_total.load(Relaxed) >= 1
        })
        .await;
        // The restarted actor exports its queue at its first replay tick.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            sim.nodes["node-1"].metrics.hints_pending.load(Relaxed),
            pending,
            "seed {seed}: hints lost in the restart"
        );
        sim.boot("node-2").await;
        sim.wait_for("hints delivered to node-2", Duration::from_secs(60), |s| {
            s.nodes["node-1"].metrics.hints_pending.load(Relaxed) == 0
                && s.nodes["node-1"].metrics.hints_replayed_total.load(Relaxed) >= pending
        })
        .await;
        sim.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn crash_and_restart_of_an_owner() {
    for seed in seeds(300) {
        eprintln!("seed {seed}");
        let mut sim = Sim::start(seed, 3, default_limits()).await;
        sim.write_many(100, 50).await;
        sim.crash("node-2").await;
        // With RF 3 on 3 nodes every key has node-2 as an owner: quorum writes still
        // succeed (2 of 3) and node-2's share goes to hints.
        let acked = sim.write_many(100, 50).await;
        assert_eq!(acked, 100, "seed {seed}: writes failed with one owner down");
        let hinted = sim.nodes["node-1"].metrics.hints_queued_total.load(Relaxed)
            + sim.nodes["node-3"].metrics.hints_queued_total.load(Relaxed);
        assert!(
            hinted > 0,
            "seed {seed}: no hints queued for the crashed owner"
        );
        // Once node-2 is declared dead (it stays a home owner), a write at `all` cannot
        // reach its level: it is refused before any owner gets it.
        sim.wait_for(
            "node-2 dead in node-1's view",
            Duration::from_secs(10),
            |s| !s.node("node-1").view().is_live("node-2"),
        )
        .await;
        assert!(sim.node("node-1").view().ring.contains("node-2"));
        let r = sim
            .node("node-1")
            .put("all-key", "x".into(), None, Some(Consistency::All))
            .await;
        assert!(
            matches!(r, Err(CacheError::Unreachable { reachable: 2, .. })),
            "seed {seed}: {r:?}"
        );
        for id in ["node-1", "node-3"] {
            let rec = sim.node(id).dist().read_local("all-key").await.unwrap();
            assert_eq!(
                rec, None,
                "seed {seed}: {id} holds a write that was refused"
            );
        }
        sim.boot("node-2").await;
        sim.wait_for(
            "node-2 back alive everywhere",
            Duration::from_secs(60),
            |s| s.all_alive(),
        )
        .await;
        sim.write_many(50, 50).await;
        sim.assert_converged_and_nothing_lost(Duration::from_secs(60))
            .await;
        sim.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn join_and_leave_under_writes() {
    for seed in seeds(400) {
        eprintln!("seed {seed}");
        let mut sim = Sim::start(seed, 3, default_limits()).await;
        sim.write_many(150, 100).await;
        // A fourth node joins while writes go on.
        sim.all_ids.push("node-4".into());
        sim.boot("node-4").await;
        sim.write_many(150, 100).await;
        sim.wait_for("node-4 in every ring", Duration::from_secs(30), |s| {
            s.nodes
                .values()
                .all(|n| n.handle.view().ring.contains("node-4"))
        })
        .await;
        sim.assert_converged_and_nothing_lost(Duration::from_secs(60))
            .await;
        // node-2 drains (leaves and hands its keys over) while writes go on.
        let leaving = sim.node("node-2").clone();
        let drain = tokio::spawn(async move { leaving.drain().await });
        let mut ok = 0;
        for i in 0..100 {
            let k = format!("k{}", i % 100);
            let ids: Vec<String> = sim
                .live_ids()
                .into_iter()
                .filter(|i| i != "node-2")
                .collect();
            let via = ids[i % ids.len()].clone();
            let seq = sim.next_seq;
            sim.next_seq += 1;
            if sim
                .node(&via)
                .put(&k, seq.to_string().into(), None, Some(Consistency::Quorum))
                .await
                .is_ok()
            {
                sim.acked.insert(k, seq);
                ok += 1;
            }
        }
        assert!(ok > 50, "seed {seed}: {ok} writes during the drain");
        let report = drain.await.unwrap().expect("drain answers");
        assert!(report.handoff_complete, "seed {seed}: {report:?}");
        sim.crash("node-2").await;
        // node-1 retired its peer actor for the member that left.
        sim.wait_for(
            "node-2's peer actor retired on node-1",
            Duration::from_secs(10),
            |s| {
                !s.nodes["node-1"]
                    .metrics
                    .peers
                    .rows()
                    .iter()
                    .any(|(p, _)| p == "node-2")
            },
        )
        .await;
        sim.assert_converged_and_nothing_lost(Duration::from_secs(60))
            .await;
        sim.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn slow_peer_under_full_write_load_stays_bounded() {
    for seed in seeds(500) {
        eprintln!("seed {seed}");
        let limits = PeerLimits {
            queue_items: 64,
            queue_bytes: 1 << 20,
            batch_items: 16,
            batch_bytes: 64 << 10,
            pipeline: 2,
        };
        let mut sim = Sim::start(seed, 3, limits).await;
        // node-3 answers only after 3 s: every request to it times out (500 ms).
        sim.net.update_faults(|f| {
            f.slow.insert("node-3:7946".into(), Duration::from_secs(3));
            f.delay = (Duration::from_micros(50), Duration::from_micros(500));
        });
        // Full write load: 64 concurrent writers through node-1 and node-2.
        let mut tasks = Vec::new();
        for w in 0..64u64 {
            let via = sim
                .node(if w % 2 == 0 { "node-1" } else { "node-2" })
                .clone();
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..40u64 {
                    let key = format!("w{w}-{}", i % 5);
                    let seq = 1_000_000 + w * 1000 + i;
                    if via
                        .put(
                            &key,
                            seq.to_string().into(),
                            None,
                            Some(Consistency::Quorum),
                        )
                        .await
                        .is_ok()
                    {
                        acked.push((key, seq));
                    }
                }
                acked
            }));
        }
        // While the load runs, the queues to node-3 never pass their bound.
        let mut max_seen = 0;
        while tasks.iter().any(|t| !t.is_finished()) {
            for id in ["node-1", "node-2"] {
                let g = sim.nodes[id].metrics.peers.of("node-3");
                let q = g.queue_items.load(Relaxed);
                assert!(q <= 64, "seed {seed}: queue to node-3 holds {q} calls");
                assert!(g.queue_bytes.load(Relaxed) <= 1 << 20);
                assert!(g.in_flight.load(Relaxed) <= 2);
                max_seen = max_seen.max(q);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut total = 0;
        for t in tasks {
            for (k, seq) in t.await.unwrap() {
                let e = sim.acked.entry(k).or_insert(0);
                *e = (*e).max(seq);
                total += 1;
            }
        }
        assert!(
            total > 2000,
            "seed {seed}: only {total} of 2560 writes acknowledged"
        );
        let m1 = &sim.nodes["node-1"].metrics;
        let m2 = &sim.nodes["node-2"].metrics;
        // Between the two healthy nodes, calls that queued while a request was in flight
        // travelled together.
        let batched = m1.peers.of("node-2").max_batch.load(Relaxed);
        assert!(
            batched > 1,
            "seed {seed}: no batch to node-2 carried more than one call"
        );
        for m in [m1, m2] {
            let high = m.peers.of("node-3").queue_items_max.load(Relaxed);
            assert_eq!(
                high, 64,
                "seed {seed}: queue high-water mark (sampled max {max_seen})"
            );
        }
        let overflow = m1.peer_queue_overflows_total.load(Relaxed)
            + m2.peer_queue_overflows_total.load(Relaxed);
        assert!(overflow > 0, "seed {seed}: the queue never overflowed");
        let hinted = m1.hints_queued_total.load(Relaxed) + m2.hints_queued_total.load(Relaxed);
        assert!(
            hinted >= overflow,
            "seed {seed}: {overflow} overflows but {hinted} hints"
        );
        sim.net.heal();
        sim.wait_for("node-3 alive everywhere", Duration::from_secs(60), |s| {
            s.all_alive()
        })
        .await;
        sim.assert_converged_and_nothing_lost(Duration::from_secs(120))
            .await;
        sim.stop().await;
    }
}

/// Replicas that agree find no differing segment, list no entries, move no key, and back
/// off to one round per 8 intervals.
#[tokio::test(start_paused = true)]
async fn agreeing_replicas_list_nothing_and_back_off() {
    for seed in seeds(800) {
        eprintln!("seed {seed}");
        let mut sim = Sim::start(seed, 3, default_limits()).await;
        sim.write_many(200, 100).await;
        sim.assert_converged_and_nothing_lost(Duration::from_secs(30))
            .await;
        sim.wait_for(
            "every node backed off to 8 intervals",
            Duration::from_secs(120),
            |s| {
                s.nodes
                    .values()
                    .all(|n| n.metrics.anti_entropy_backoff.load(Relaxed) == 8)
            },
        )
        .await;
        let counters = |s: &Sim| -> Vec<[u64; 4]> {
            s.nodes
                .values()
                .map(|n| {
                    let m = &n.metrics;
                    [
                        m.anti_entropy_segments_listed_total.load(Relaxed),
                        m.anti_entropy_keys_pushed_total.load(Relaxed),
                        m.anti_entropy_keys_pulled_total.load(Relaxed),
                        m.anti_entropy_errors_total.load(Relaxed),
                    ]
                })
                .collect()
        };
        let before = counters(&sim);
        let rounds: Vec<u64> = sim
            .nodes
            .values()
            .map(|n| n.metrics.anti_entropy_rounds_total.load(Relaxed))
            .collect();
        sim.wait_for(
            "two more rounds on every node",
            Duration::from_secs(60),
            |s| {
                s.nodes
                    .values()
                    .zip(&rounds)
                    .all(|(n, r)| n.metrics.anti_entropy_rounds_total.load(Relaxed) >= r + 2)
            },
        )
        .await;
        assert_eq!(
            counters(&sim),
            before,
            "seed {seed}: quiet rounds listed or moved keys"
        );
        for n in sim.nodes.values() {
            assert_eq!(
                n.metrics.anti_entropy_last_differing_buckets.load(Relaxed),
                0
            );
            assert!(n.metrics.anti_entropy_rounds_skipped_total.load(Relaxed) > 0);
        }
        sim.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn an_out_of_range_ttl_is_refused_and_changes_nothing() {
    let sim = Sim::start(700, 1, default_limits()).await;
    let n = sim.node("node-1");
    let r = n
        .put("k", "v".into(), Some(Duration::MAX), Some(Consistency::One))
        .await;
    assert!(matches!(r, Err(CacheError::BadRequest(_))), "{r:?}");
    assert_eq!(n.dist().read_local("k").await.unwrap(), None);
    sim.stop().await;
}

/// The membership actor and the drain coordinator keep their state across restarts: a
/// restarted membership actor neither resets its incarnation nor forgets dead members,
/// and a drain coordinator restarted during a drain answers a later drain request with
/// that drain's report once it is done (not at once, as if it had finished).
#[tokio::test(start_paused = true)]
async fn membership_and_drain_survive_restarts_of_their_actors() {
    for seed in seeds(800) {
        let mut sim = Sim::start(seed, 3, default_limits()).await;
        sim.write_many(50, 25).await;
        // node-1 hears it is suspected and refutes, so its incarnation is above 0.
        let rumour = Envelope {
            v: PROTOCOL_VERSION,
            from: "node-2".into(),
            from_addr: addr("node-2"),
            hlc: 0,
            now_ms: None,
            body: Batch {
                calls: vec![Call::Ping(Ping {
                    seq: 0,
                    members: vec![MemberEntry {
                        id: "node-1".into(),
                        addr: addr("node-1"),
                        state: WireState::Suspect,
                        incarnation: 0,
                    }],
                })],
                traces: vec![],
            },
        };
        sim.node("node-1")
            .dist()
            .handle(Route::Probe, &encode(&rumour))
            .await
            .unwrap();
        sim.crash("node-3").await;
        sim.wait_for("node-3 dead on node-1", Duration::from_secs(30), |s| {
            s.node("node-1")
                .view()
                .members
                .iter()
                .any(|m| m.id == "node-3" && m.state == WireState::Dead)
        })
        .await;
        let before = sim.node("node-1").members().await.unwrap();
        let inc = sim.node("node-1").heartbeat().await.unwrap().incarnation;
        assert!(inc >= 1, "seed {seed}: node-1 refuted the rumour");
        assert!(sim.node("node-1").crash_actor("membership"));
        sim.wait_for("membership restarted", Duration::from_secs(10), |s| {
            s.nodes["node-1"].metrics.actor_restarts_total.load(Relaxed) >= 1
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = sim.node("node-1").members().await.unwrap();
        assert_eq!(
            sim.node("node-1").heartbeat().await.unwrap().incarnation,
            inc,
            "seed {seed}"
        );
        let dead = |m: &[hypercache_actors::membership::MemberInfo]| {
            m.iter()
                .any(|x| x.id == "node-3" && x.state == WireState::Dead)
        };
        assert!(dead(&before) && dead(&after), "seed {seed}: {after:?}");

        // A drain whose coordinator crashes right after it started.
        let h = sim.node("node-2").clone();
        let first = tokio::spawn(async move { h.drain().await });
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(sim.node("node-2").crash_actor("drain"));
        sim.wait_for(
            "drain coordinator restarted",
            Duration::from_secs(10),
            |s| s.nodes["node-2"].metrics.actor_restarts_total.load(Relaxed) >= 1,
        )
        .await;
        let again = sim.node("node-2").drain().await.unwrap();
        assert!(!again.started && again.draining, "seed {seed}: {again:?}");
        assert!(
            again.handoff_complete,
            "seed {seed}: answered before the drain finished: {again:?}"
        );
        let _ = first.await;
        sim.stop().await;
    }
}

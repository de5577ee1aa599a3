//! The `dist_dispatch` target's fixture: one real node per process (the whole actor
//! tree, the real [`DistService`]), started once and kept across inputs.
//!
//! The node runs over [`NoNetwork`], a transport whose every call fails at once as
//! unreachable, rather than over the HTTP transport `hypercache_actors::start` uses: fuzzed
//! pings add members with arbitrary addresses, and the node then probes them (and
//! replicates, replays hints, runs anti-entropy); with HTTP that would be DNS look-ups
//! and connections to whatever the fuzzer wrote. Everything on the receiving side (what
//! this target fuzzes) is the same code as in production.

use hypercache_actors::metrics::Metrics;
use hypercache_actors::proto::{decode, decode_envelope, Batch, BatchReply, Envelope};
use hypercache_actors::service::Route;
use hypercache_actors::transport::{BoxFuture, Faults, Transport, TransportError};
use hypercache_actors::{NodeConfig, NodeHandle};
use hypercache_server::config::{Config, PREFIX};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How long one request may take before it is reported as a hang.
pub const HANDLE_TIMEOUT: Duration = Duration::from_secs(3);

/// A transport with no network: every call fails at once.
pub struct NoNetwork;

impl Transport for NoNetwork {
    fn post(
        &self,
        addr: &str,
        _path: &'static str,
        _body: Vec<u8>,
        _timeout: Duration,
    ) -> BoxFuture<Result<Vec<u8>, TransportError>> {
        let addr = addr.to_owned();
        Box::pin(async move {
            Err(TransportError::Unreachable(format!(
                "{addr}: fuzz fixture has no network"
            )))
        })
    }
}

/// A single node: no seeds, replication 1, small bounds, a 1 s heartbeat. Built through
/// the server's own configuration (`Config::from_vars`), so that settings added later
/// get their defaults here too.
pub fn config() -> NodeConfig {
    let vars: HashMap<String, String> = [
        ("NODE_ID", "fuzz-node"),
        ("DIST_ADDR", "127.0.0.1:1"),
        ("REPLICATION", "1"),
        ("WRITE_CONSISTENCY", "one"),
        ("READ_CONSISTENCY", "one"),
        ("SHARDS", "2"),
        ("CAPACITY", "4096"),
        ("CAPACITY_BYTES", "64MiB"),
        ("MAX_VALUE_BYTES", "1MiB"),
        ("HEARTBEAT", "1s"),
        ("SUSPECT_TIMEOUT", "2s"),
        ("DEAD_TIMEOUT", "5s"),
        ("MAX_MEMBERS", "64"),
        ("PEER_TIMEOUT", "500ms"),
        ("PEER_QUEUE_ITEMS", "1024"),
        ("PEER_QUEUE_BYTES", "8MiB"),
        ("PEER_PIPELINE", "2"),
        ("HINT_TTL", "10s"),
        ("HINT_REPLAY", "1s"),
        ("HINT_MAX_PER_PEER", "1024"),
        ("HINT_MAX_BYTES", "8MiB"),
        ("ANTI_ENTROPY_INTERVAL", "1s"),
        ("ANTI_ENTROPY_MAX_KEYS", "1000"),
        ("REBALANCE_INTERVAL", "1s"),
        ("REBALANCE_BATCH", "100"),
        ("REBALANCE_CONCURRENCY", "1"),
        ("DRAIN_TIMEOUT", "1s"),
    ]
    .into_iter()
    .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_owned()))
    .collect();
    let config =
        Config::from_vars(&vars).unwrap_or_else(|e| panic!("fuzz node configuration: {e}"));
    NodeConfig {
        rng_seed: Some(1),
        ..config.node_config()
    }
}

pub struct Fixture {
    pub rt: tokio::runtime::Runtime,
    pub node: NodeHandle,
    root: tokio::task::JoinHandle<()>,
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

/// The node, started on first use.
pub fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let (node, root) = rt
            .block_on(hypercache_actors::start_with(
                config(),
                Arc::new(Metrics::default()),
                Arc::new(NoNetwork),
                Arc::new(Faults::default()),
            ))
            .expect("the node starts");
        Fixture { rt, node, root }
    })
}

/// One input on both routes. Panics on a hang, on a reply that does not decode or does
/// not answer every call, and when the supervision tree has stopped (an escalated
/// failure). A panic inside any actor aborts the process on its own (libfuzzer-sys
/// installs a panic hook that aborts before ractor can catch the unwind).
pub fn run(data: &[u8]) {
    let f = fixture();
    let calls = decode_envelope::<Batch>(data)
        .ok()
        .map(|e| e.body.calls.len());
    for route in [Route::Batch, Route::Probe] {
        let answer = f.rt.block_on(async {
            tokio::time::timeout(HANDLE_TIMEOUT, f.node.dist().handle(route, data)).await
        });
        match answer {
            Err(_) => {
                panic!("DistService::handle({route:?}) did not answer within {HANDLE_TIMEOUT:?}")
            }
            Ok(Err(_refused)) => {}
            Ok(Ok(reply)) => {
                let reply: Envelope<BatchReply> = decode(&reply)
                    .unwrap_or_else(|e| panic!("the reply to {route:?} does not decode: {e}"));
                assert_eq!(
                    Some(reply.body.results.len()),
                    calls,
                    "the reply to {route:?} does not carry one result per call"
                );
            }
        }
    }
    assert!(
        !f.root.is_finished(),
        "the node's supervision tree stopped (an actor failure escalated)"
    );
}

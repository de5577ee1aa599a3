//! Counters, gauges and latency histograms of the node, rendered as JSON for
//! `/dist/metrics` and as Prometheus text for `/metrics`.
//!
//! Owns only atomics: recording never blocks and never allocates. Store counters (hits,
//! misses, evictions, expirations) are not here: the shards own them and the management
//! API adds them to both renderings.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! define_metrics {
    ($( $kind:ident $name:ident : $help:literal ),* $(,)?) => {
        /// Every counter and gauge of the node. Field names are the metric names without
        /// the `hypercache_` prefix.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $( #[doc = $help] pub $name: AtomicU64, )*
            /// Request latency per route.
            pub latency: RouteLatency,
            /// HTTP responses per route and status code.
            pub responses: Responses,
            /// Queue and batch figures per peer (label `peer`).
            pub peers: PeerMetrics,
            /// Hints queued per peer (label `peer`).
            pub hint_backlog: HintBacklog,
        }

        impl Metrics {
            /// `(name, help, kind, value)` for every counter and gauge.
            pub fn snapshot(&self) -> Vec<(&'static str, &'static str, &'static str, u64)> {
                vec![ $( (stringify!($name), $help, stringify!($kind), self.$name.load(Relaxed)) ),* ]
            }
        }
    };
}

define_metrics! {
    counter requests_total: "HTTP requests answered, all listeners.",
    counter requests_rejected_overload_total: "Requests answered 503 OVERLOADED because a listener was at its in-flight bound.",
    counter requests_unauthorized_total: "Requests answered 401.",
    counter requests_forbidden_total: "Requests answered 403 FORBIDDEN: valid credentials without the scope the route needs.",
    counter puts_total: "Client writes that stored a value (HTTP PUT, RESP SET/MSET/EXPIRE), per key.",
    counter gets_total: "Client reads answered, hit or miss (HTTP GET, RESP GET/MGET/EXISTS/TTL), per key.",
    counter deletes_total: "Client deletes that wrote a tombstone (HTTP DELETE, RESP DEL), per key.",
    counter shard_restarts_total: "Shard actors restarted by the root supervisor after a failure.",
    counter actor_restarts_total: "Non-shard actors restarted by the root supervisor after a failure.",
    counter drains_total: "Drains started on this node (0 or 1 until restart).",
    gauge draining: "1 while this node is draining.",
    gauge client_requests_in_flight: "Client API requests being handled now.",
    gauge resp_connections: "Open connections on the RESP listener.",
    counter resp_connections_total: "Connections accepted by the RESP listener.",
    counter resp_connections_refused_total: "RESP connections closed at once: past the connection cap, or refused by protected mode.",
    counter resp_commands_total: "RESP commands answered (any reply).",
    counter resp_command_errors_total: "RESP commands answered with an error reply.",
    counter resp_protocol_errors_total: "RESP connections closed for malformed or oversize frames or a command read timeout.",
    counter forwards_total: "Replica writes and reads sent to peers by this coordinator.",
    counter forward_acks_total: "Peer replica calls that succeeded.",
    counter forward_failures_total: "Peer replica calls that failed (timeout, unreachable, error).",
    counter quorum_failures_total: "Client requests answered 503 QUORUM_FAILED.",
    counter version_conflicts_total: "Replica writes refused because the replica held a newer version.",
    counter heartbeat_success_total: "SWIM direct probes acknowledged.",
    counter heartbeat_failure_total: "SWIM direct probes that failed or timed out.",
    counter indirect_probe_success_total: "SWIM indirect probes that reached the target.",
    counter indirect_probe_failure_total: "SWIM indirect probes that did not reach the target.",
    counter indirect_probe_refuted_total: "Suspicions of this node it refuted by raising its incarnation.",
    counter membership_changes_total: "Effective changes of the member list.",
    gauge membership_version: "Membership version (effective changes since start).",
    gauge incarnation: "This node's SWIM incarnation.",
    gauge members_alive: "Members seen alive (this node included).",
    gauge members_suspect: "Members suspected of failure.",
    gauge members_dead: "Members declared dead (home owners still, unless HYPERCACHE_SLOPPY_QUORUM; out of the ring once removed or forgotten).",
    gauge membership_minority: "1 while this node sees at most half of the members that have not left (it then forgets no dead member).",
    counter members_removed_total: "Dead members removed by an operator (POST /cluster/members/{id}/remove).",
    counter stale_records_dropped_total: "Records dropped because this node was out of touch with a majority for longer than the tombstone retention.",
    counter stranded_copies_total: "Copies found on this node although it does not own their key, planned for hand-off and release.",
    counter writes_refused_unreachable_total: "Client writes refused 503 before anything was applied: too few home owners reachable.",
    counter clock_sync_waits_total: "Client writes that waited for this node to merge clocks with a peer after start.",
    gauge members_left: "Members that left gracefully.",
    counter hints_queued_total: "Failed replica writes and deletes queued for hinted handoff.",
    counter hints_replayed_total: "Hints delivered to their peer.",
    counter hints_expired_total: "Hints dropped after HYPERCACHE_HINT_TTL without delivery.",
    counter hints_dropped_total: "Hints dropped because a queue cap was reached (oldest first).",
    gauge hints_pending: "Hints queued now.",
    gauge hints_bytes: "Bytes held by queued hints.",
    counter read_repairs_total: "Newest versions pushed to stale owners after a read.",
    counter read_repair_failures_total: "Read repairs that did not reach the stale owner (anti-entropy covers them).",
    counter read_repairs_coalesced_total: "Read repairs skipped because the same (peer, key) was in flight or too many were.",
    counter anti_entropy_rounds_total: "Anti-entropy rounds completed.",
    counter anti_entropy_keys_pushed_total: "Keys sent to peers by anti-entropy.",
    counter anti_entropy_keys_pulled_total: "Keys fetched from peers by anti-entropy.",
    counter anti_entropy_errors_total: "Anti-entropy peer calls that failed.",
    gauge anti_entropy_last_duration_ms: "Duration of the last anti-entropy round, in milliseconds.",
    gauge anti_entropy_last_differing_buckets: "Merkle leaves (ring segments) that differed in the last round, all peers.",
    counter anti_entropy_ring_mismatch_total: "Anti-entropy compares skipped because the two nodes' rings differed (counted by both sides).",
    counter anti_entropy_segments_listed_total: "Differing segments whose entries anti-entropy listed by scanning the shards (asked or answered); flat while replicas agree.",
    counter anti_entropy_keys_skipped_full_total: "Keys anti-entropy did not fetch or push because the shard that would hold them is full.",
    counter anti_entropy_rounds_skipped_total: "Anti-entropy ticks skipped while backing off after rounds that found nothing to repair.",
    gauge anti_entropy_backoff: "Anti-entropy interval multiplier now: 1 after a round that repaired, doubled per idle round up to 8.",
    counter rebalance_keys_total: "Keys moved to new owners and acknowledged.",
    counter rebalance_batches_total: "Rebalance batches sent.",
    counter rebalance_throttled_total: "Rebalance scheduling passes (ticks and finished batches) that left keys waiting because HYPERCACHE_REBALANCE_CONCURRENCY batches were in flight.",
    counter rebalance_failures_total: "Keys whose move failed (turned into hints).",
    gauge rebalance_pending: "Keys waiting to be moved.",
    gauge rebalance_last_duration_ms: "Duration of the last completed rebalance, in milliseconds.",
    counter drain_hints_handed_off_total: "Hints delivered or handed to a peer while draining.",
    counter peer_batches_total: "Dist batch requests sent to peers (all peer actors).",
    counter peer_batch_calls_total: "Calls carried by those batches; divided by peer_batches_total it is the mean batch size.",
    counter peer_batch_failures_total: "Dist batch requests that failed as a whole (timeout, unreachable, bad reply).",
    counter peer_queue_overflows_total: "Calls refused because a peer's queue was full (writes among them went to hints).",
    counter peer_calls_expired_total: "Calls that waited in a peer's queue past the peer timeout and were failed unsent.",
    gauge connections_open: "Connections open now, all listeners.",
    counter connections_refused_total: "Connections closed at once because their listener was at its connection cap.",
    counter connections_timed_out_total: "Connections closed for a header read or idle timeout.",
    counter tls_handshake_failures_total: "TLS handshakes that failed or timed out (a client without a valid certificate where one is required, a plain-text client, a wrong CA).",
    counter request_body_timeouts_total: "Requests answered 408 because their body did not arrive within HYPERCACHE_BODY_READ_TIMEOUT.",
    counter requests_protected_mode_total: "Requests from non-loopback addresses refused 403 PROTECTED_MODE.",
    gauge client_buffer_bytes: "Request body bytes the client listener holds in memory now (bounded by HYPERCACHE_CLIENT_BUFFER_BYTES).",
    gauge dist_buffer_bytes: "Request body bytes the dist listener holds in memory now (bounded by HYPERCACHE_DIST_BUFFER_BYTES).",
    counter request_buffer_refused_total: "Requests answered 503 because their listener's buffered-body budget was spent.",
    counter dist_refused_total: "Peer calls or writes refused as invalid: a version too far ahead, an oversize value, an unknown hint target, a call over its per-batch cap.",
    counter gossip_entries_refused_total: "Gossiped member entries ignored: invalid id or address, an incarnation jump, an address change not from the member itself, or the member cap.",
    counter clock_skew_refusals_total: "Peer requests refused before anything was applied because the sender's clock differed from this node's by more than the allowed drift (60 s).",
    gauge clock_drift_max_ms: "Largest difference seen between a peer's wall clock (as its requests carry it) and this node's, in milliseconds.",
    gauge shard_calls_in_flight: "Calls sent to the shard actors and not answered yet, all shards: messages waiting in their mailboxes plus those being handled.",
    counter read_hedges_total: "Reads at `one` that asked a further owner because the first had not answered within HYPERCACHE_READ_HEDGE.",
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }
}

/// Queue and batch figures of one peer actor.
#[derive(Debug, Default)]
pub struct PeerGauges {
    /// Calls queued now.
    pub queue_items: AtomicU64,
    /// Key and value bytes queued now.
    pub queue_bytes: AtomicU64,
    /// Batch requests in flight now.
    pub in_flight: AtomicU64,
    /// Batch requests sent.
    pub batches_total: AtomicU64,
    /// Calls sent in those batches.
    pub calls_total: AtomicU64,
    /// Calls refused because the queue was full.
    pub overflows_total: AtomicU64,
    /// Largest batch sent, in calls.
    pub max_batch: AtomicU64,
    /// Most calls ever queued at once (high-water mark).
    pub queue_items_max: AtomicU64,
}

/// [`PeerGauges`] by peer id; a peer actor registers its own when it starts.
#[derive(Debug, Default)]
pub struct PeerMetrics {
    by_peer: std::sync::RwLock<std::collections::BTreeMap<String, std::sync::Arc<PeerGauges>>>,
}

impl PeerMetrics {
    /// The gauges of `peer`, created on first use (kept across restarts of its actor).
    pub fn of(&self, peer: &str) -> std::sync::Arc<PeerGauges> {
        if let Some(g) = self
            .by_peer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(peer)
        {
            return g.clone();
        }
        self.by_peer
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(peer.to_owned())
            .or_default()
            .clone()
    }

    /// Forgets a peer that left.
    pub fn remove(&self, peer: &str) {
        self.by_peer
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(peer);
    }

    /// `(peer, [(series, value)])` for every peer, series named without the prefix.
    pub fn rows(&self) -> Vec<(String, [(&'static str, u64); 8])> {
        self.by_peer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(p, g)| {
                (
                    p.clone(),
                    [
                        ("peer_queue_items", g.queue_items.load(Relaxed)),
                        ("peer_queue_bytes", g.queue_bytes.load(Relaxed)),
                        ("peer_in_flight", g.in_flight.load(Relaxed)),
                        ("peer_requests", g.batches_total.load(Relaxed)),
                        ("peer_calls", g.calls_total.load(Relaxed)),
                        ("peer_overflows", g.overflows_total.load(Relaxed)),
                        ("peer_max_batch", g.max_batch.load(Relaxed)),
                        ("peer_queue_items_max", g.queue_items_max.load(Relaxed)),
                    ],
                )
            })
            .collect()
    }
}

/// Help text of the per-peer series (label `peer`).
const PEER_SERIES_HELP: [(&str, &str, &str); 8] = [
    (
        "peer_queue_items",
        "gauge",
        "Calls queued for the peer now.",
    ),
    (
        "peer_queue_bytes",
        "gauge",
        "Key and value bytes queued for the peer now.",
    ),
    (
        "peer_in_flight",
        "gauge",
        "Batch requests to the peer in flight now.",
    ),
    (
        "peer_requests",
        "counter",
        "Batch requests sent to the peer.",
    ),
    (
        "peer_calls",
        "counter",
        "Calls sent to the peer in batches.",
    ),
    (
        "peer_overflows",
        "counter",
        "Calls refused because the peer's queue was full.",
    ),
    (
        "peer_max_batch",
        "gauge",
        "Largest batch sent to the peer, in calls.",
    ),
    (
        "peer_queue_items_max",
        "gauge",
        "Most calls queued for the peer at once since start (high-water mark).",
    ),
];

/// Upper bounds of the latency buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Routes whose latency is recorded (label `route`).
pub const ROUTES: [&str; 12] = [
    "cache_get",
    "cache_put",
    "cache_delete",
    "owners",
    "keys",
    "healthz",
    "management",
    "dist",
    "resp_read",
    "resp_write",
    "resp_other",
    "other",
];

/// One latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, seconds: f64) {
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| seconds <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros.fetch_add((seconds * 1e6) as u64, Relaxed);
    }
}

/// The status codes the HTTP listeners answer with, each counted on its own; any other
/// code is counted under `other`.
pub const STATUS_CODES: [u16; 13] = [
    200, 202, 400, 401, 403, 404, 405, 408, 411, 413, 429, 500, 503,
];

/// HTTP responses per route of [`ROUTES`] and status code of [`STATUS_CODES`] (plus
/// `other`): a fixed table, so the label set is bounded whatever clients send.
#[derive(Debug, Default)]
pub struct Responses {
    counts: [[AtomicU64; STATUS_CODES.len() + 1]; ROUTES.len()],
}

impl Responses {
    /// Counts one response of route `ROUTES[route]` (out of range: `other`).
    pub fn record(&self, route: usize, status: u16) {
        let code = STATUS_CODES
            .iter()
            .position(|c| *c == status)
            .unwrap_or(STATUS_CODES.len());
        self.counts[route.min(ROUTES.len() - 1)][code].fetch_add(1, Relaxed);
    }

    /// `(route, code, count)` of every non-zero cell; code `other` for the rest.
    pub fn rows(&self) -> Vec<(&'static str, String, u64)> {
        let mut out = Vec::new();
        for (route, row) in ROUTES.iter().zip(self.counts.iter()) {
            for (i, c) in row.iter().enumerate() {
                let n = c.load(Relaxed);
                if n > 0 {
                    let code = STATUS_CODES
                        .get(i)
                        .map_or("other".to_string(), u16::to_string);
                    out.push((*route, code, n));
                }
            }
        }
        out
    }
}

/// A histogram per route of [`ROUTES`].
#[derive(Debug, Default)]
pub struct RouteLatency {
    routes: [Histogram; ROUTES.len()],
}

impl RouteLatency {
    /// Records one request; unknown route names count under `other`.
    pub fn observe(&self, route: &str, seconds: f64) {
        let i = ROUTES
            .iter()
            .position(|r| *r == route)
            .unwrap_or(ROUTES.len() - 1);
        self.observe_at(i, seconds);
    }

    /// Records one request of route `ROUTES[index]` (out of range: under `other`).
    pub fn observe_at(&self, index: usize, seconds: f64) {
        self.routes[index.min(ROUTES.len() - 1)].observe(seconds);
    }
}

/// The kind of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only ever grows (a cumulative, monotonic sum).
    Counter,
    /// A value now.
    Gauge,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }

    fn parse(kind: &str) -> Self {
        if kind == "counter" {
            Kind::Counter
        } else {
            Kind::Gauge
        }
    }
}

/// A sample value: whole numbers stay exact, ratios and seconds are floats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
}

impl Value {
    pub fn as_f64(self) -> f64 {
        match self {
            Value::Int(v) => v as f64,
            Value::Float(v) => v,
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Float(v) => write!(f, "{v}"),
        }
    }
}

/// One metric family with its samples: what both `/metrics` and the OTLP export read,
/// so the two cannot list different metrics.
#[derive(Debug, Clone)]
pub struct Family {
    /// The full name (`hypercache_…`, or `process_…`).
    pub name: String,
    pub help: &'static str,
    pub kind: Kind,
    /// `(labels, value)` per series.
    pub samples: Vec<(Vec<(&'static str, String)>, Value)>,
}

impl Family {
    /// A family of one unlabelled sample.
    pub fn single(name: String, help: &'static str, kind: Kind, value: Value) -> Self {
        Self {
            name,
            help,
            kind,
            samples: vec![(Vec::new(), value)],
        }
    }

    /// A node figure `hypercache_{name}` from a `(name, help, kind, value)` row.
    pub fn row(name: &str, help: &'static str, kind: &str, value: u64) -> Self {
        Self::single(
            format!("hypercache_{name}"),
            help,
            Kind::parse(kind),
            Value::Int(value),
        )
    }
}

/// One latency histogram series: per-bucket counts (not cumulative, bounds
/// [`LATENCY_BUCKETS`], the overflow bucket last), count and sum in seconds.
#[derive(Debug, Clone)]
pub struct HistogramSeries {
    pub route: &'static str,
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum: f64,
}

/// Name and help of the request latency histogram.
pub const LATENCY_NAME: &str = "hypercache_request_duration_seconds";
pub const LATENCY_HELP: &str = "Request latency by route.";

/// Every family of the node's own instruments (the store's and the process's come from
/// their owners as `extra`).
pub fn families(m: &Metrics) -> Vec<Family> {
    let mut out: Vec<Family> = m
        .snapshot()
        .into_iter()
        .map(|(name, help, kind, value)| Family::row(name, help, kind, value))
        .collect();
    out.push(Family {
        name: "hypercache_http_responses_total".into(),
        help: "HTTP responses by route and status code (codes outside the usual set under code=\"other\").",
        kind: Kind::Counter,
        samples: m
            .responses
            .rows()
            .into_iter()
            .map(|(route, code, n)| (vec![("route", route.to_owned()), ("code", code)], Value::Int(n)))
            .collect(),
    });
    let rows = m.peers.rows();
    for (i, (series, kind, help)) in PEER_SERIES_HELP.iter().enumerate() {
        let suffix = if *kind == "counter" { "_total" } else { "" };
        out.push(Family {
            name: format!("hypercache_{series}{suffix}"),
            help,
            kind: Kind::parse(kind),
            samples: rows
                .iter()
                .map(|(peer, values)| (vec![("peer", peer.clone())], Value::Int(values[i].1)))
                .collect(),
        });
    }
    out.push(Family {
        name: "hypercache_hints_pending_by_peer".into(),
        help: "Hints queued now for each peer (the hinted-handoff backlog).",
        kind: Kind::Gauge,
        samples: m
            .hint_backlog
            .rows()
            .into_iter()
            .map(|(peer, n)| (vec![("peer", peer)], Value::Int(n)))
            .collect(),
    });
    out
}

/// The latency histogram series, one per route.
pub fn latency(m: &Metrics) -> Vec<HistogramSeries> {
    ROUTES
        .iter()
        .zip(m.latency.routes.iter())
        .map(|(route, h)| {
            let mut buckets: Vec<u64> = h.buckets.iter().map(|c| c.load(Relaxed)).collect();
            let counted: u64 = buckets.iter().sum();
            // The atomics are read one by one while requests are recorded: a count read
            // before its bucket moved is raised so that the buckets never exceed it.
            let count = h.count.load(Relaxed).max(counted);
            buckets.push(count - counted);
            HistogramSeries {
                route,
                buckets,
                count,
                sum: h.sum_micros.load(Relaxed) as f64 / 1e6,
            }
        })
        .collect()
}

/// Prometheus text exposition of `families` and the latency histograms.
pub fn render_families(families: &[Family], latency: &[HistogramSeries]) -> String {
    let mut out = String::with_capacity(16 * 1024);
    for f in families {
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.name());
        for (labels, value) in &f.samples {
            out.push_str(&f.name);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {value}");
        }
    }
    let name = LATENCY_NAME;
    let _ = writeln!(out, "# HELP {name} {LATENCY_HELP}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for h in latency {
        let route = h.route;
        let mut cumulative = 0;
        for (b, c) in LATENCY_BUCKETS.iter().zip(h.buckets.iter()) {
            cumulative += c;
            let _ = writeln!(
                out,
                "{name}_bucket{{route=\"{route}\",le=\"{b}\"}} {cumulative}"
            );
        }
        let count = h.count;
        let _ = writeln!(
            out,
            "{name}_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(out, "{name}_sum{{route=\"{route}\"}} {}", h.sum);
        let _ = writeln!(out, "{name}_count{{route=\"{route}\"}} {count}");
    }
    out
}

/// A label value as the text format wants it (backslash, quote and newline escaped).
fn escape_label(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return v.into();
    }
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .into()
}

/// JSON object of every counter and gauge plus `extra`, and per-route request counts.
pub fn render_json(m: &Metrics, extra: &[(&str, &str, &str, u64)]) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for (name, _, _, value) in m.snapshot().iter().chain(extra.iter()) {
        map.insert((*name).to_owned(), (*value).into());
    }
    let mut lat = serde_json::Map::new();
    for (route, h) in ROUTES.iter().zip(m.latency.routes.iter()) {
        let count = h.count.load(Relaxed);
        let sum_us = h.sum_micros.load(Relaxed);
        lat.insert(
            (*route).to_owned(),
            serde_json::json!({"count": count, "sum_micros": sum_us}),
        );
    }
    map.insert("request_latency".into(), lat.into());
    let mut peers = serde_json::Map::new();
    for (peer, values) in m.peers.rows() {
        let mut obj: serde_json::Map<String, serde_json::Value> = values
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).into()))
            .collect();
        obj.insert("hints_pending".into(), m.hint_backlog.of(&peer).into());
        peers.insert(peer, obj.into());
    }
    map.insert("peers".into(), peers.into());
    serde_json::Value::Object(map)
}

/// Hints queued per peer, as the hint queue last exported them.
#[derive(Debug, Default)]
pub struct HintBacklog {
    by_peer: std::sync::RwLock<std::collections::BTreeMap<String, u64>>,
}

impl HintBacklog {
    /// Replaces the figures with `now` (peers not in it have none queued).
    pub fn set<'a>(&self, now: impl Iterator<Item = (&'a str, u64)>) {
        let mut map = self.by_peer.write().unwrap_or_else(|p| p.into_inner());
        map.values_mut().for_each(|v| *v = 0);
        for (peer, n) in now {
            match map.get_mut(peer) {
                Some(v) => *v = n,
                None => {
                    map.insert(peer.to_owned(), n);
                }
            }
        }
        // Peers whose queue emptied are dropped, so the label set follows the queue.
        map.retain(|_, v| *v > 0);
    }

    /// Hints queued for `peer`.
    pub fn of(&self, peer: &str) -> u64 {
        self.by_peer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(peer)
            .copied()
            .unwrap_or(0)
    }

    /// `(peer, hints)` of every peer with hints queued.
    pub fn rows(&self) -> Vec<(String, u64)> {
        self.by_peer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(p, n)| (p.clone(), *n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_prometheus(m: &Metrics, extra: &[(&str, &'static str, &str, u64)]) -> String {
        let mut all = families(m);
        all.extend(extra.iter().map(|(n, h, k, v)| Family::row(n, h, k, *v)));
        render_families(&all, &latency(m))
    }

    #[test]
    fn prometheus_has_every_metric_and_histogram() {
        let m = Metrics::default();
        Metrics::inc(&m.puts_total);
        m.latency.observe("cache_put", 0.0003);
        m.latency.observe("nope", 9.0);
        let text = render_prometheus(&m, &[("items", "Items.", "gauge", 3)]);
        assert!(text.contains("hypercache_puts_total 1"));
        assert!(text.contains("hypercache_items 3"));
        assert!(text.contains(
            "hypercache_request_duration_seconds_bucket{route=\"cache_put\",le=\"0.0005\"} 1"
        ));
        assert!(text.contains("hypercache_request_duration_seconds_count{route=\"other\"} 1"));
        m.peers.of("node-2").queue_items.store(7, Relaxed);
        let text = render_prometheus(&m, &[]);
        assert!(
            text.contains("hypercache_peer_queue_items{peer=\"node-2\"} 7"),
            "{text}"
        );
        assert!(text.contains("hypercache_peer_requests_total{peer=\"node-2\"} 0"));
        // Every family is declared once (a second TYPE line makes Prometheus refuse the
        // whole scrape).
        let mut seen = std::collections::HashSet::new();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split_whitespace().nth(2).unwrap();
            assert!(seen.insert(name.to_owned()), "{name} declared twice");
        }
        let json = render_json(&m, &[]);
        assert_eq!(json["peers"]["node-2"]["peer_queue_items"], 7);
        assert_eq!(json["puts_total"], 1);
        assert_eq!(json["request_latency"]["cache_put"]["count"], 1);
    }
}

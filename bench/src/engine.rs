//! The client engine: a fixed set of keep-alive connections, each with one request in
//! flight, driven through an optional preload phase and a measured phase.
//!
//! Owns sockets, pacing, timeouts and per-connection statistics. It is the same for
//! every protocol: only the [`Codec`] that encodes requests and parses replies differs,
//! so HTTP and RESP numbers come from the same loop and the same clock readings.
//! Does not format results ([`crate::report`]) or parse arguments ([`crate::args`]).
//!
//! Timing rules:
//! - latency is taken from just before the request is written (closed loop) or from the
//!   intended send time (open loop, `rate` set), to the moment the whole reply is parsed;
//! - only requests issued after the warm-up and completed before the end of the measured
//!   window are recorded;
//! - a transport failure or timeout is counted as an error, records no latency, and
//!   closes the connection (it is reopened for the next request).

use crate::args::Workload;
use crate::keys::{push_key, KeySampler};
use crate::proto::{Codec, Op, Outcome, ProtoError, Reply};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Barrier;
use tokio::time::Instant;

/// Highest latency the histograms hold; longer ones are clamped to it.
const MAX_LATENCY: Duration = Duration::from_secs(60);
/// Pause before reconnecting after a failed connect.
const RECONNECT_PAUSE: Duration = Duration::from_millis(20);

/// Everything a run needs, resolved and validated.
#[derive(Debug, Clone)]
pub struct Plan {
    /// One codec per address (the HTTP `Host` header differs).
    pub codecs: Vec<Codec>,
    pub addrs: Vec<SocketAddr>,
    pub connections: usize,
    pub value: Vec<u8>,
    pub key_prefix: Vec<u8>,
    pub keys: u64,
    pub sampler: KeySampler,
    pub workload: Workload,
    pub preload: bool,
    pub preload_only: bool,
    pub warmup: Duration,
    pub duration: Option<Duration>,
    pub ops: Option<u64>,
    pub rate: Option<f64>,
    pub timeout: Duration,
    pub max_time: Duration,
    pub seed: u64,
    pub progress: bool,
}

/// Which phase a result belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseKind {
    Preload,
    Measure,
}

impl PhaseKind {
    fn label(self) -> &'static str {
        match self {
            PhaseKind::Preload => "preload",
            PhaseKind::Measure => "measure",
        }
    }
}

/// Counts and latencies for one op kind.
#[derive(Debug, Clone)]
pub struct OpStats {
    pub ok: u64,
    pub misses: u64,
    pub errors: u64,
    /// Latency in nanoseconds of every reply (successful or not).
    pub latency: Histogram<u64>,
}

impl OpStats {
    fn new() -> Self {
        Self {
            ok: 0,
            misses: 0,
            errors: 0,
            latency: Histogram::new_with_bounds(1, MAX_LATENCY.as_nanos() as u64, 3)
                .expect("static histogram bounds are valid"),
        }
    }

    fn merge(&mut self, o: &OpStats) {
        self.ok += o.ok;
        self.misses += o.misses;
        self.errors += o.errors;
        self.latency
            .add(&o.latency)
            .expect("histograms with equal bounds merge");
    }
}

/// One second of the measured phase (by completion time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Second {
    /// Successful replies (hits, misses, stores).
    pub ok: u64,
    pub errors: u64,
    /// Slowest reply that completed in this second, in nanoseconds.
    pub max_ns: u64,
}

/// The statistics of one phase, first per connection, then merged.
#[derive(Debug, Clone)]
pub struct PhaseStats {
    pub kind: PhaseKind,
    /// Measured window: from the end of the warm-up to the end of the phase.
    pub elapsed: Duration,
    /// Per op kind: get, put, ceiling (indexed by [`op_index`]).
    pub ops: [OpStats; 3],
    /// Errors by kind: `http_503`, `resp_error`, `timeout`, `io`, `closed`, `connect`,
    /// `protocol`.
    pub error_kinds: BTreeMap<String, u64>,
    pub timeline: Vec<Second>,
    /// The generator's own CPU use over the whole phase (warm-up included), when the
    /// platform reports it.
    pub client_cpu: Option<ClientCpu>,
}

/// The generator's own CPU use during a phase, as shares of one CPU: how busy it was,
/// and how long its threads were runnable but waiting for a CPU (contention from other
/// processes). A generator near 1.0 busy is itself the bottleneck.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientCpu {
    pub busy: f64,
    pub runqueue_wait: f64,
}

/// CPU time of this process so far: (ns on a CPU, ns runnable but waiting), summed over
/// its threads from `/proc/self/task/*/schedstat`. `None` where that does not exist.
fn own_cpu_ns() -> Option<(u64, u64)> {
    let mut total = (0u64, 0u64);
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let path = entry.ok()?.path().join("schedstat");
        let Ok(text) = std::fs::read_to_string(path) else {
            continue; // the thread has just exited
        };
        let mut fields = text
            .split_whitespace()
            .map(|f| f.parse::<u64>().unwrap_or(0));
        total.0 += fields.next().unwrap_or(0);
        total.1 += fields.next().unwrap_or(0);
    }
    Some(total)
}

fn client_cpu(
    from: Option<(u64, u64)>,
    to: Option<(u64, u64)>,
    wall: Duration,
) -> Option<ClientCpu> {
    let ((on0, wait0), (on1, wait1)) = (from?, to?);
    let wall = wall.as_nanos() as f64;
    (wall > 0.0).then(|| ClientCpu {
        busy: on1.saturating_sub(on0) as f64 / wall,
        runqueue_wait: wait1.saturating_sub(wait0) as f64 / wall,
    })
}

/// Index of an op in [`PhaseStats::ops`].
pub fn op_index(op: Op) -> usize {
    match op {
        Op::Get => 0,
        Op::Put => 1,
        Op::Ping => 2,
    }
}

impl PhaseStats {
    fn new(kind: PhaseKind) -> Self {
        Self {
            kind,
            elapsed: Duration::ZERO,
            ops: [OpStats::new(), OpStats::new(), OpStats::new()],
            error_kinds: BTreeMap::new(),
            timeline: Vec::new(),
            client_cpu: None,
        }
    }

    fn merge(&mut self, o: &PhaseStats) {
        for (a, b) in self.ops.iter_mut().zip(&o.ops) {
            a.merge(b);
        }
        for (k, v) in &o.error_kinds {
            *self.error_kinds.entry(k.clone()).or_default() += v;
        }
        if self.timeline.len() < o.timeline.len() {
            self.timeline.resize(o.timeline.len(), Second::default());
        }
        for (a, b) in self.timeline.iter_mut().zip(&o.timeline) {
            a.ok += b.ok;
            a.errors += b.errors;
            a.max_ns = a.max_ns.max(b.max_ns);
        }
    }

    /// Successful replies of every op kind.
    pub fn ok(&self) -> u64 {
        self.ops.iter().map(|o| o.ok + o.misses).sum()
    }

    pub fn errors(&self) -> u64 {
        self.ops.iter().map(|o| o.errors).sum()
    }

    /// All op kinds' latencies in one histogram.
    pub fn latency(&self) -> Histogram<u64> {
        let mut h = self.ops[0].latency.clone();
        for o in &self.ops[1..] {
            h.add(&o.latency)
                .expect("histograms with equal bounds merge");
        }
        h
    }

    fn second(&mut self, at: Duration) -> &mut Second {
        let i = at.as_secs() as usize;
        if self.timeline.len() <= i {
            self.timeline.resize(i + 1, Second::default());
        }
        &mut self.timeline[i]
    }

    fn record_error(&mut self, op: Op, kind: &str, since_start: Option<Duration>) {
        self.ops[op_index(op)].errors += 1;
        match self.error_kinds.get_mut(kind) {
            Some(n) => *n += 1,
            None => {
                self.error_kinds.insert(kind.to_owned(), 1);
            }
        }
        if let Some(at) = since_start {
            self.second(at).errors += 1;
        }
    }

    fn record_reply(&mut self, op: Op, outcome: Outcome, latency: Duration, since_start: Duration) {
        let ns = (latency.as_nanos() as u64).min(MAX_LATENCY.as_nanos() as u64);
        let s = &mut self.ops[op_index(op)];
        s.latency.saturating_record(ns);
        let failed = match outcome {
            Outcome::Ok => {
                s.ok += 1;
                false
            }
            Outcome::Miss => {
                s.misses += 1;
                false
            }
            Outcome::Status(code) => {
                self.record_error(op, &format!("http_{code}"), None);
                true
            }
            Outcome::RespError => {
                self.record_error(op, "resp_error", None);
                true
            }
        };
        let sec = self.second(since_start);
        if failed {
            sec.errors += 1;
        } else {
            sec.ok += 1;
        }
        sec.max_ns = sec.max_ns.max(ns);
    }
}

/// What every connection task shares.
struct Shared {
    plan: Plan,
    /// Every connection and the coordinator meet here between phases.
    barrier: Barrier,
    /// Start instant of the current phase, published by the coordinator.
    phase_start: Mutex<Option<(PhaseKind, Instant)>>,
    /// Measured ops handed out so far (for `ops`-bounded runs).
    claimed: AtomicU64,
    /// Replies and errors since the start, for the progress line.
    done: AtomicU64,
    errors: AtomicU64,
    /// No request is started after this instant, whatever the phase.
    hard_deadline: Instant,
}

impl Shared {
    fn phase_start(&self) -> Instant {
        self.phase_start
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|(_, t)| t)
            .expect("coordinator publishes the phase start before releasing the barrier")
    }
}

/// A transport-level failure of one request.
#[derive(Debug)]
enum Failure {
    Connect,
    Io,
    Closed,
    Timeout,
    Protocol(ProtoError),
    /// The phase ended while the request was in flight: neither counted nor recorded.
    PhaseOver,
}

impl Failure {
    fn kind(&self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Io => "io",
            Failure::Closed => "closed",
            Failure::Timeout => "timeout",
            Failure::Protocol(_) => "protocol",
            Failure::PhaseOver => "phase_over",
        }
    }
}

/// One keep-alive connection and its buffers.
struct Conn {
    addr: SocketAddr,
    codec: Codec,
    stream: Option<TcpStream>,
    key_buf: Vec<u8>,
    wbuf: Vec<u8>,
    rbuf: Vec<u8>,
    protocol_errors_logged: u32,
}

impl Conn {
    fn new(addr: SocketAddr, codec: Codec, value_size: usize) -> Self {
        Self {
            addr,
            codec,
            stream: None,
            key_buf: Vec::with_capacity(64),
            wbuf: Vec::with_capacity(value_size + 512),
            rbuf: Vec::with_capacity((value_size + 512).max(16 * 1024)),
            protocol_errors_logged: 0,
        }
    }

    /// Sends `op` on `key` and waits for the whole reply, until `deadline` at most.
    /// `phase_end` turns a deadline hit into [`Failure::PhaseOver`] instead of a timeout.
    async fn request(
        &mut self,
        op: Op,
        key: u64,
        plan: &Plan,
        deadline: Instant,
        phase_end: Instant,
    ) -> Result<Reply, Failure> {
        self.wbuf.clear();
        self.key_buf.clear();
        if op != Op::Ping {
            push_key(&mut self.key_buf, &plan.key_prefix, key);
        }
        self.codec
            .encode(op, &self.key_buf, &plan.value, &mut self.wbuf);
        let result = tokio::time::timeout_at(deadline, self.exchange(op)).await;
        let result = match result {
            Ok(r) => r,
            Err(_) if deadline >= phase_end => Err(Failure::PhaseOver),
            Err(_) => Err(Failure::Timeout),
        };
        match &result {
            Ok(reply) if reply.close => self.stream = None,
            Ok(_) => {}
            Err(f) => {
                if let Failure::Protocol(e) = f {
                    if self.protocol_errors_logged < 3 {
                        self.protocol_errors_logged += 1;
                        eprintln!("protocol error from {}: {e}", self.addr);
                    }
                }
                // The reply may still arrive; the connection cannot be reused.
                self.stream = None;
            }
        }
        result
    }

    async fn exchange(&mut self, op: Op) -> Result<Reply, Failure> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr)
                .await
                .map_err(|_| Failure::Connect)?;
            s.set_nodelay(true).map_err(|_| Failure::Connect)?;
            self.rbuf.clear();
            self.stream = Some(s);
        }
        let stream = self.stream.as_mut().expect("connected above");
        stream
            .write_all(&self.wbuf)
            .await
            .map_err(|_| Failure::Io)?;
        loop {
            if !self.rbuf.is_empty() {
                if let Some(reply) = self
                    .codec
                    .parse(op, &self.rbuf)
                    .map_err(Failure::Protocol)?
                {
                    if reply.consumed == self.rbuf.len() {
                        self.rbuf.clear();
                    } else {
                        self.rbuf.drain(..reply.consumed);
                    }
                    return Ok(reply);
                }
            }
            if self.rbuf.capacity() - self.rbuf.len() < 4096 {
                self.rbuf.reserve(16 * 1024);
            }
            let n = stream
                .read_buf(&mut self.rbuf)
                .await
                .map_err(|_| Failure::Io)?;
            if n == 0 {
                return Err(Failure::Closed);
            }
        }
    }
}

/// Runs the plan: preload (if asked) and the measured phase (unless preload only).
/// Returns the merged statistics of each phase that ran.
pub async fn run(plan: Plan) -> Vec<PhaseStats> {
    let n = plan.connections;
    let hard_deadline = Instant::now() + plan.max_time;
    let mut phases = Vec::new();
    if plan.preload {
        phases.push(PhaseKind::Preload);
    }
    if !plan.preload_only {
        phases.push(PhaseKind::Measure);
    }
    let progress = plan.progress;
    let shared = Arc::new(Shared {
        plan,
        barrier: Barrier::new(n + 1),
        phase_start: Mutex::new(None),
        claimed: AtomicU64::new(0),
        done: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        hard_deadline,
    });
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let shared = shared.clone();
            let phases = phases.clone();
            tokio::spawn(async move { connection_task(i, shared, &phases).await })
        })
        .collect();
    let reporter = progress.then(|| tokio::spawn(progress_task(shared.clone())));
    let mut starts = Vec::new();
    let mut cpu_at_start = Vec::new();
    for kind in &phases {
        // All connections are ready (connected or not) and idle: start the phase.
        shared.barrier.wait().await;
        // No connection runs between the two barrier waits: the counters reset exactly.
        shared.done.store(0, Relaxed);
        shared.errors.store(0, Relaxed);
        let start = Instant::now();
        cpu_at_start.push(own_cpu_ns());
        *shared.phase_start.lock().unwrap_or_else(|p| p.into_inner()) = Some((*kind, start));
        starts.push(start);
        shared.barrier.wait().await;
    }
    let mut per_conn = Vec::with_capacity(n);
    for t in tasks {
        per_conn.push(t.await.expect("connection task does not panic"));
    }
    let finished = Instant::now();
    let cpu_at_end = own_cpu_ns();
    if let Some(r) = reporter {
        r.abort();
        if std::io::stderr().is_terminal() {
            eprintln!();
        }
    }
    let plan = &shared.plan;
    phases
        .iter()
        .enumerate()
        .map(|(i, kind)| {
            let mut merged = PhaseStats::new(*kind);
            for conn in &per_conn {
                merged.merge(&conn[i]);
            }
            let from = match kind {
                PhaseKind::Preload => starts[i],
                PhaseKind::Measure => starts[i] + plan.warmup,
            };
            let until = match (kind, starts.get(i + 1)) {
                (_, Some(next)) => *next,
                (PhaseKind::Measure, None) => match plan.duration {
                    Some(d) => finished.min(from + d),
                    None => finished,
                },
                (PhaseKind::Preload, None) => finished,
            };
            merged.elapsed = until.saturating_duration_since(from);
            let (cpu_to, wall_to) = match starts.get(i + 1) {
                Some(next) => (cpu_at_start[i + 1], *next),
                None => (cpu_at_end, finished),
            };
            merged.client_cpu = client_cpu(
                cpu_at_start[i],
                cpu_to,
                wall_to.saturating_duration_since(starts[i]),
            );
            merged
        })
        .collect()
}

async fn connection_task(
    index: usize,
    shared: Arc<Shared>,
    phases: &[PhaseKind],
) -> Vec<PhaseStats> {
    let plan = &shared.plan;
    let a = index % plan.addrs.len();
    let mut conn = Conn::new(plan.addrs[a], plan.codecs[a].clone(), plan.value.len());
    let mut rng =
        SmallRng::seed_from_u64(plan.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ index as u64);
    let mut out = Vec::new();
    for kind in phases {
        shared.barrier.wait().await;
        shared.barrier.wait().await;
        let start = shared.phase_start();
        let stats = match kind {
            PhaseKind::Preload => preload(index, &shared, &mut conn, start).await,
            PhaseKind::Measure => measure(index, &shared, &mut conn, &mut rng, start).await,
        };
        out.push(stats);
    }
    out
}

/// Writes keys `index, index + connections, ...` once each.
async fn preload(index: usize, shared: &Shared, conn: &mut Conn, start: Instant) -> PhaseStats {
    let plan = &shared.plan;
    let mut stats = PhaseStats::new(PhaseKind::Preload);
    let stop_at = shared.hard_deadline;
    let mut key = index as u64;
    while key < plan.keys {
        let sent = Instant::now();
        if sent >= stop_at {
            break;
        }
        let deadline = (sent + plan.timeout).min(stop_at);
        match conn.request(Op::Put, key, plan, deadline, stop_at).await {
            Ok(reply) => {
                let done = Instant::now();
                stats.record_reply(Op::Put, reply.outcome, done - sent, done - start);
                shared.done.fetch_add(1, Relaxed);
            }
            Err(Failure::PhaseOver) => break,
            Err(f) => {
                stats.record_error(Op::Put, f.kind(), Some(sent - start));
                shared.errors.fetch_add(1, Relaxed);
                if matches!(f, Failure::Connect) {
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                }
            }
        }
        key += plan.connections as u64;
    }
    stats
}

fn pick_op<R: Rng>(workload: Workload, rng: &mut R) -> Op {
    match workload {
        Workload::Get => Op::Get,
        Workload::Put => Op::Put,
        Workload::Ceiling => Op::Ping,
        Workload::Mix { get_ratio } => {
            if rng.random::<f64>() < get_ratio {
                Op::Get
            } else {
                Op::Put
            }
        }
    }
}

async fn measure(
    index: usize,
    shared: &Shared,
    conn: &mut Conn,
    rng: &mut SmallRng,
    start: Instant,
) -> PhaseStats {
    let plan = &shared.plan;
    let mut stats = PhaseStats::new(PhaseKind::Measure);
    let measure_from = start + plan.warmup;
    let stop_at = match plan.duration {
        Some(d) => (measure_from + d).min(shared.hard_deadline),
        None => shared.hard_deadline,
    };
    // Open loop: each connection sends every `interval`, staggered so the connections'
    // sends interleave evenly.
    let interval = plan
        .rate
        .map(|r| Duration::from_secs_f64(plan.connections as f64 / r));
    let mut due = interval.map(|iv| start + iv.mul_f64(index as f64 / plan.connections as f64));
    loop {
        let mut now = Instant::now();
        if let (Some(iv), Some(d)) = (interval, due.as_mut()) {
            if *d >= stop_at {
                break;
            }
            if *d > now {
                tokio::time::sleep_until(*d).await;
            }
            // Latency counts from when the request should have gone out.
            now = *d;
            *d += iv;
        }
        if now >= stop_at {
            break;
        }
        let measuring = now >= measure_from;
        if measuring {
            if let Some(limit) = plan.ops {
                if shared.claimed.fetch_add(1, Relaxed) >= limit {
                    break;
                }
            }
        }
        let op = pick_op(plan.workload, rng);
        let key = plan.sampler.sample(rng);
        // `now` is the intended send time in open loop, the actual one in closed loop.
        let sent = now;
        let deadline = (Instant::now() + plan.timeout).min(stop_at);
        let result = conn.request(op, key, plan, deadline, stop_at).await;
        let done = Instant::now();
        match result {
            Ok(reply) => {
                shared.done.fetch_add(1, Relaxed);
                if measuring && done <= stop_at {
                    stats.record_reply(op, reply.outcome, done - sent, done - measure_from);
                }
            }
            Err(Failure::PhaseOver) => break,
            Err(f) => {
                shared.errors.fetch_add(1, Relaxed);
                if measuring {
                    stats.record_error(op, f.kind(), Some(done - measure_from));
                }
                if matches!(f, Failure::Connect) {
                    tokio::time::sleep(
                        RECONNECT_PAUSE.min(stop_at.saturating_duration_since(done)),
                    )
                    .await;
                }
            }
        }
    }
    stats
}

/// Prints one progress line per second on stderr (rewritten in place on a terminal).
async fn progress_task(shared: Arc<Shared>) {
    let tty = std::io::stderr().is_terminal();
    let mut last: Option<(PhaseKind, u64)> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some((kind, start)) = *shared.phase_start.lock().unwrap_or_else(|p| p.into_inner())
        else {
            continue;
        };
        let done = shared.done.load(Relaxed);
        let errors = shared.errors.load(Relaxed);
        let last_done = match last {
            Some((k, d)) if k == kind => d,
            _ => 0,
        };
        let line = format!(
            "[{:>7} {:>5.1}s] {:>10} replies {:>9}/s  errors {}",
            kind.label(),
            start.elapsed().as_secs_f64(),
            done,
            done.saturating_sub(last_done),
            errors
        );
        last = Some((kind, done));
        let mut err = std::io::stderr().lock();
        let _ = if tty {
            write!(err, "\r{line}  ")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_shares_of_a_phase() {
        let c = client_cpu(
            Some((1_000, 0)),
            Some((500_001_000, 100_000_000)),
            Duration::from_secs(1),
        )
        .unwrap();
        assert!((c.busy - 0.5).abs() < 1e-9 && (c.runqueue_wait - 0.1).abs() < 1e-9);
        assert!(client_cpu(None, Some((1, 1)), Duration::from_secs(1)).is_none());
        assert!(client_cpu(Some((0, 0)), Some((1, 1)), Duration::ZERO).is_none());
    }

    #[test]
    fn replies_and_errors_land_in_their_op_and_second() {
        let mut p = PhaseStats::new(PhaseKind::Measure);
        let ms = Duration::from_millis;
        p.record_reply(Op::Get, Outcome::Ok, ms(1), ms(100));
        p.record_reply(Op::Get, Outcome::Miss, ms(2), ms(1_500));
        p.record_reply(Op::Put, Outcome::Status(503), ms(3), ms(1_600));
        p.record_error(Op::Put, "timeout", Some(ms(2_100)));
        assert_eq!((p.ops[0].ok, p.ops[0].misses, p.ops[0].errors), (1, 1, 0));
        assert_eq!((p.ops[1].ok, p.ops[1].errors), (0, 2));
        assert_eq!(p.ok(), 2);
        assert_eq!(p.errors(), 2);
        assert_eq!(p.error_kinds["http_503"], 1);
        assert_eq!(p.error_kinds["timeout"], 1);
        assert_eq!(p.latency().len(), 3, "a timeout records no latency");
        let t: Vec<(u64, u64)> = p.timeline.iter().map(|s| (s.ok, s.errors)).collect();
        assert_eq!(t, vec![(1, 0), (1, 1), (0, 1)]);
        assert_eq!(p.timeline[1].max_ns, 3_000_000);

        let mut merged = PhaseStats::new(PhaseKind::Measure);
        merged.merge(&p);
        merged.merge(&p);
        assert_eq!((merged.ok(), merged.errors()), (4, 4));
        assert_eq!(merged.timeline[2].errors, 2);
    }
}

//! Turns phase statistics into the two outputs: a JSON document (for scripts and for
//! comparing runs) and a short human-readable table.
//!
//! Pure formatting: no I/O except what the caller does with the returned strings.
//!
//! Throughput counts successful replies only (hits, misses and stored writes) per second
//! of the measured window; errors are reported apart. Latencies are in microseconds and
//! cover every reply, successful or not (transport failures and timeouts have none).

use crate::args::{Args, KeyDist, Protocol, Workload};
use crate::engine::{op_index, PhaseKind, PhaseStats};
use crate::proto::Op;
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

/// The quantiles reported, with their JSON names.
const QUANTILES: [(&str, f64); 4] = [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99_9", 0.999)];

fn us(ns: u64) -> f64 {
    (ns as f64 / 100.0).round() / 10.0
}

/// Latency summary of a histogram, in microseconds.
pub fn latency_json(h: &Histogram<u64>) -> Value {
    let mut m = Map::new();
    for (name, q) in QUANTILES {
        m.insert(name.into(), json!(us(h.value_at_quantile(q))));
    }
    m.insert("max".into(), json!(us(h.max())));
    m.insert("mean".into(), json!(us(h.mean() as u64)));
    Value::Object(m)
}

fn rate(n: u64, p: &PhaseStats) -> f64 {
    let secs = p.elapsed.as_secs_f64();
    if secs > 0.0 {
        (n as f64 / secs * 10.0).round() / 10.0
    } else {
        0.0
    }
}

/// The JSON form of one phase.
pub fn phase_json(p: &PhaseStats) -> Value {
    let mut by_op = Map::new();
    for op in [Op::Get, Op::Put, Op::Ping] {
        let s = &p.ops[op_index(op)];
        if s.ok + s.misses + s.errors == 0 {
            continue;
        }
        by_op.insert(
            op.label().into(),
            json!({
                "ok": s.ok,
                "misses": s.misses,
                "errors": s.errors,
                "ops_per_sec": rate(s.ok + s.misses, p),
                "latency_us": latency_json(&s.latency),
            }),
        );
    }
    let timeline: Vec<Value> = p
        .timeline
        .iter()
        .enumerate()
        .map(|(t, s)| json!({"t": t, "ok": s.ok, "errors": s.errors, "max_us": us(s.max_ns)}))
        .collect();
    json!({
        "elapsed_s": (p.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        "ok": p.ok(),
        "errors": p.errors(),
        "error_kinds": p.error_kinds,
        "ops_per_sec": rate(p.ok(), p),
        "latency_us": latency_json(&p.latency()),
        "by_op": by_op,
        "client_cpu": p.client_cpu.map(|c| json!({
            "busy": (c.busy * 1000.0).round() / 1000.0,
            "runqueue_wait": (c.runqueue_wait * 1000.0).round() / 1000.0,
        })),
        "timeline": timeline,
    })
}

/// The whole JSON document of a run.
pub fn run_json(args: &Args, phases: &[PhaseStats]) -> Value {
    let (workload, get_ratio) = match args.workload {
        Workload::Get => ("get", 1.0),
        Workload::Put => ("put", 0.0),
        Workload::Mix { get_ratio } => ("mix", get_ratio),
        Workload::Ceiling => ("ceiling", 0.0),
    };
    let (dist, zipf_s) = match args.dist {
        KeyDist::Uniform => ("uniform", None),
        KeyDist::Zipf { s } => ("zipf", Some(s)),
    };
    let find = |k: PhaseKind| phases.iter().find(|p| p.kind == k).map(phase_json);
    json!({
        "tool": "hypercache-bench",
        "version": env!("CARGO_PKG_VERSION"),
        "config": {
            "protocol": match args.protocol { Protocol::Http => "http", Protocol::Redis => "redis" },
            "addrs": args.addrs,
            "connections": args.connections,
            "workload": workload,
            "get_ratio": get_ratio,
            "value_size": args.value_size,
            "keys": args.keys,
            "dist": dist,
            "zipf_s": zipf_s,
            "duration_s": args.duration.map(|d| d.as_secs_f64()),
            "ops_limit": args.ops,
            "warmup_s": args.warmup.as_secs_f64(),
            "rate": args.rate,
            "timeout_s": args.timeout.as_secs_f64(),
            "threads": args.threads,
            "seed": args.seed,
            "preload": args.preload,
        },
        "preload": find(PhaseKind::Preload),
        "result": find(PhaseKind::Measure),
    })
}

/// The human-readable summary.
pub fn table(phases: &[PhaseStats]) -> String {
    let mut out = String::new();
    let header = format!(
        "{:<10} {:>10} {:>12} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        "phase/op", "ok", "ops/s", "errors", "p50 us", "p90 us", "p99 us", "p99.9 us", "max us"
    );
    out.push_str(&header);
    for p in phases {
        let name = match p.kind {
            PhaseKind::Preload => "preload",
            PhaseKind::Measure => "total",
        };
        let mut rows = vec![(name.to_owned(), p.ok(), p.errors(), p.latency())];
        let active: Vec<Op> = [Op::Get, Op::Put, Op::Ping]
            .into_iter()
            .filter(|op| {
                let s = &p.ops[op_index(*op)];
                s.ok + s.misses + s.errors > 0
            })
            .collect();
        if p.kind == PhaseKind::Measure && active.len() > 1 {
            for op in active {
                let s = &p.ops[op_index(op)];
                rows.push((
                    format!("  {}", op.label()),
                    s.ok + s.misses,
                    s.errors,
                    s.latency.clone(),
                ));
            }
        }
        for (label, ok, errors, h) in rows {
            out.push_str(&format!(
                "{:<10} {:>10} {:>12.1} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}\n",
                label,
                ok,
                rate(ok, p),
                errors,
                us(h.value_at_quantile(0.5)),
                us(h.value_at_quantile(0.9)),
                us(h.value_at_quantile(0.99)),
                us(h.value_at_quantile(0.999)),
                us(h.max()),
            ));
        }
        let misses: u64 = p.ops.iter().map(|o| o.misses).sum();
        let cpu = p
            .client_cpu
            .map(|c| {
                format!(
                    ", generator CPU {:.0}% (waiting for a CPU {:.0}%)",
                    c.busy * 100.0,
                    c.runqueue_wait * 100.0
                )
            })
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<10} elapsed {:.2}s, misses {}{cpu}{}\n",
            "",
            p.elapsed.as_secs_f64(),
            misses,
            if p.error_kinds.is_empty() {
                String::new()
            } else {
                format!(", errors by kind {:?}", p.error_kinds)
            }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_in_microseconds() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for ns in [10_000u64, 20_000, 30_000, 40_000, 1_000_000] {
            h.record(ns).unwrap();
        }
        let v = latency_json(&h);
        assert_eq!(v["p50"], json!(30.0));
        assert!((v["max"].as_f64().unwrap() - 1000.0).abs() < 1.0, "{v}");
    }
}

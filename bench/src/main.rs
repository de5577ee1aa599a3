//! `hypercache-bench`: a load generator that drives hypercache-server over its HTTP API
//! and Redis over RESP with one client engine, and reports throughput and HDR latency
//! percentiles.
//!
//! Modules:
//! - [`args`]: command line into a validated [`args::Args`];
//! - [`keys`]: key samplers (uniform, Zipfian) and key text;
//! - [`proto`]: request encoders and response parsers (HTTP/1.1, RESP2);
//! - [`engine`]: connections, pacing, timing, statistics;
//! - [`report`]: JSON and table output.
//!
//! Exit codes: 0 after a run with at least one successful reply in each phase that
//! ran, 1 when a phase got none (wrong address, server down), 2 for bad arguments.

mod args;
mod engine;
mod keys;
mod proto;
mod report;

use args::{Command, KeyDist, Protocol};
use engine::Plan;
use keys::KeySampler;
use proto::Codec;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs()
        .map_err(|e| format!("--addr {addr:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("--addr {addr:?}: no address"))
}

fn plan_of(a: &args::Args) -> Result<Plan, String> {
    let addrs = a
        .addrs
        .iter()
        .map(|s| resolve(s))
        .collect::<Result<Vec<_>, _>>()?;
    let codecs = a
        .addrs
        .iter()
        .map(|host| match a.protocol {
            Protocol::Http => Codec::http(host, a.token.as_deref()),
            Protocol::Redis => Codec::Resp,
        })
        .collect();
    // A recognisable, non-constant value: bytes cycling through the alphabet.
    let value = (0..a.value_size).map(|i| b'a' + (i % 26) as u8).collect();
    Ok(Plan {
        codecs,
        addrs,
        connections: a.connections,
        value,
        key_prefix: a.key_prefix.clone().into_bytes(),
        keys: a.keys,
        sampler: match a.dist {
            KeyDist::Uniform => KeySampler::uniform(a.keys),
            KeyDist::Zipf { s } => KeySampler::zipf(a.keys, s),
        },
        workload: a.workload,
        preload: a.preload,
        preload_only: a.preload_only,
        warmup: a.warmup,
        duration: a.duration,
        ops: a.ops,
        rate: a.rate,
        timeout: a.timeout,
        max_time: a.max_time,
        seed: a.seed,
        progress: !a.quiet,
    })
}

fn main() -> ExitCode {
    let a = match args::parse(std::env::args().skip(1)) {
        Ok(Command::Run(a)) => a,
        Ok(Command::Help) => {
            print!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("hypercache-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let plan = match plan_of(&a) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("hypercache-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = if a.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(a.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hypercache-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let phases = runtime.block_on(engine::run(plan));
    let doc = report::run_json(&a, &phases);
    if let Some(path) = &a.json_out {
        let text = serde_json::to_string_pretty(&doc).expect("a JSON value serialises");
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("hypercache-bench: cannot write {path}: {e}");
            return ExitCode::FAILURE;
        }
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("a JSON value serialises")
        );
    } else {
        print!("{}", report::table(&phases));
    }
    if phases.iter().any(|p| p.ok() == 0) {
        eprintln!("hypercache-bench: a phase completed no successful request");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

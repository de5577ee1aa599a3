//! Smoke test: the generator drives a real server for a few hundred operations and
//! reports them. It asserts behaviour (successful replies, no errors, auth honoured),
//! never speed: benchmarks are run by `scripts/bench`, not by the test suite.
//!
//! The hypercache binary is taken from `HYPERCACHE_SERVER_BIN`, else from the workspace's
//! `target/{release,debug}/hypercache-server`; the Redis case needs `redis-server` on the
//! PATH. A missing binary skips its case with a printed reason.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "smoke-token";

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_ports<const N: usize>() -> [u16; N] {
    // Held together so the kernel hands out distinct ports; released right before use.
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

fn server_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HYPERCACHE_SERVER_BIN") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    ["release", "debug"]
        .iter()
        .map(|profile| target.join(profile).join("hypercache-server"))
        .find(|p| p.is_file())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// Polls until `probe` (raw request bytes) gets a reply starting with `expect`.
#[track_caller]
fn wait_ready(port: u16, probe: &[u8], expect: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let mut buf = [0u8; 64];
            if s.write_all(probe).is_ok() {
                if let Ok(n) = s.read(&mut buf) {
                    if buf[..n].starts_with(expect) {
                        return;
                    }
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "server on port {port} never became ready"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the generator with `args`; returns its exit code and its JSON summary.
fn bench(args: &[&str]) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_hypercache-bench"))
        .args(args)
        .args(["--json", "--quiet", "--max-time", "20s"])
        .stderr(Stdio::inherit())
        .output()
        .expect("run hypercache-bench");
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "summary is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.code().unwrap_or(-1), doc)
}

fn n(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("expected a count, got {v}"))
}

#[test]
fn drives_hypercache_over_http_with_a_token() {
    let Some(bin) = server_binary() else {
        println!("skipped: no hypercache-server binary (build it, or set HYPERCACHE_SERVER_BIN)");
        return;
    };
    let [api, mgmt, dist] = free_ports::<3>();
    let _server = Killed(
        Command::new(&bin)
            .env("HYPERCACHE_API_ADDR", format!("127.0.0.1:{api}"))
            .env("HYPERCACHE_MGMT_ADDR", format!("127.0.0.1:{mgmt}"))
            .env("HYPERCACHE_DIST_ADDR", format!("127.0.0.1:{dist}"))
            .env("HYPERCACHE_NODE_ID", "smoke-1")
            .env("HYPERCACHE_AUTH_TOKEN", TOKEN)
            .env("HYPERCACHE_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start hypercache-server"),
    );
    wait_ready(
        api,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HTTP/1.1 200",
    );
    let addr = format!("127.0.0.1:{api}");

    let (code, doc) = bench(&[
        "--addr",
        &addr,
        "--token",
        TOKEN,
        "-c",
        "4",
        "-n",
        "400",
        "-d",
        "10s",
        "-k",
        "64",
        "--preload",
        "-w",
        "mix",
        "--get-ratio",
        "0.5",
        "-s",
        "100",
    ]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(
        n(&doc["preload"]["ok"]),
        64,
        "every key written once: {doc:#}"
    );
    assert_eq!(n(&doc["preload"]["errors"]), 0, "{doc:#}");
    let r = &doc["result"];
    assert_eq!(n(&r["ok"]), 400, "{r:#}");
    assert_eq!(n(&r["errors"]), 0, "{r:#}");
    assert!(n(&r["by_op"]["get"]["ok"]) > 0, "{r:#}");
    assert_eq!(
        n(&r["by_op"]["get"]["misses"]),
        0,
        "preloaded keys are found: {r:#}"
    );
    assert!(n(&r["by_op"]["put"]["ok"]) > 0, "{r:#}");
    assert!(r["latency_us"]["p99"].as_f64().unwrap() > 0.0, "{r:#}");

    // The ceiling route needs no token.
    let (code, doc) = bench(&["--addr", &addr, "-c", "2", "-n", "100", "-w", "ceiling"]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(n(&doc["result"]["by_op"]["ceiling"]["ok"]), 100, "{doc:#}");

    // Without the token every request is refused, counted as an error, and the run fails.
    let (code, doc) = bench(&["--addr", &addr, "-c", "2", "-n", "20", "-w", "get"]);
    assert_eq!(code, 1, "{doc:#}");
    assert_eq!(n(&doc["result"]["ok"]), 0, "{doc:#}");
    assert_eq!(n(&doc["result"]["error_kinds"]["http_401"]), 20, "{doc:#}");
}

#[test]
fn drives_redis_over_resp() {
    if !on_path("redis-server") {
        println!("skipped: redis-server is not installed");
        return;
    }
    let [port] = free_ports::<1>();
    let _redis = Killed(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server"),
    );
    wait_ready(port, b"*1\r\n$4\r\nPING\r\n", b"+PONG");
    let addr = format!("127.0.0.1:{port}");
    let (code, doc) = bench(&[
        "--protocol",
        "redis",
        "--addr",
        &addr,
        "-c",
        "4",
        "-n",
        "400",
        "-d",
        "10s",
        "-k",
        "64",
        "--preload",
        "-w",
        "mix",
        "--get-ratio",
        "0.5",
        "-s",
        "4KiB",
    ]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(n(&doc["preload"]["ok"]), 64, "{doc:#}");
    let r = &doc["result"];
    assert_eq!(n(&r["ok"]), 400, "{r:#}");
    assert_eq!(n(&r["errors"]), 0, "{r:#}");
    assert_eq!(n(&r["by_op"]["get"]["misses"]), 0, "{r:#}");
}

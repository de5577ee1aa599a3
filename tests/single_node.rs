//! Black-box tests of one node: the client and management APIs (SPEC §5, §6), auth
//! (§10), the store (§8), start-up validation (§4) and graceful shutdown (§9).

mod common;

use common::*;
use reqwest::Method;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

async fn text(r: reqwest::Response) -> (u16, String) {
    let s = r.status().as_u16();
    (s, r.text().await.unwrap())
}

#[tokio::test]
async fn client_routes_answer_as_specified() {
    let n = Node::start("n1", &[("AUTH_TOKEN", TOKEN)]).await;

    let (s, body) = text(n.http.get(n.api_url("/healthz")).send().await.unwrap()).await;
    assert_eq!((s, body.as_str()), (200, "ok"));

    let r = n
        .send(Method::PUT, n.api_url("/v1/cache/greeting?ttl=5m"))
        .await;
    assert_eq!(r.status(), 200);
    let put = n.put("greeting?ttl=5m", "hello").await;
    let v: serde_json::Value = put.json().await.unwrap();
    assert_eq!(v["key"], "greeting");
    assert_eq!(v["stored"], true);
    assert_eq!(v["ttl_ms"], 300_000);
    assert_eq!(v["bytes"], 5);
    assert_eq!(v["node"], "n1");
    assert_eq!(v["owners"], serde_json::json!(["n1"]));

    let no_ttl: serde_json::Value = n.put("plain", "x").await.json().await.unwrap();
    assert!(no_ttl.get("ttl_ms").is_none(), "{no_ttl}");

    let r = n.get("greeting").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"hello");

    let (s, b) = text(n.get("missing").await).await;
    assert_error(s, &b, 404, "NOT_FOUND");
    assert_eq!(b, r#"{"error":"key not found","code":"NOT_FOUND"}"#);

    for _ in 0..2 {
        let d: serde_json::Value = n.delete("greeting").await.json().await.unwrap();
        assert_eq!(d["key"], "greeting");
        assert_eq!(d["deleted"], true);
        assert_eq!(d["node"], "n1");
        assert_eq!(d["owners"], serde_json::json!(["n1"]));
    }
    let (s, b) = text(n.get("greeting").await).await;
    assert_error(s, &b, 404, "NOT_FOUND");

    let o: serde_json::Value = n
        .send(Method::GET, n.api_url("/v1/owners/some-key"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        o,
        serde_json::json!({"key": "some-key", "owners": ["n1"], "node": "n1"})
    );

    // Percent-encoded keys are decoded once.
    assert_eq!(n.put("a%2Fb%20c", "enc").await.status(), 200);
    let r = n.get("a%2Fb%20c").await;
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"enc");
    let o: serde_json::Value = n
        .send(Method::GET, n.api_url("/v1/owners/a%2Fb%20c"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(o["key"], "a/b c");
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let n = Node::start("n1", &[("MAX_VALUE_BYTES", "1KiB")]).await;
    let cases: Vec<(Method, String, u16, &str)> = vec![
        (
            Method::PUT,
            "/v1/cache/k?ttl=soon".into(),
            400,
            "BAD_REQUEST",
        ),
        (
            Method::PUT,
            "/v1/cache/k?ttl=-5s".into(),
            400,
            "BAD_REQUEST",
        ),
        (Method::PUT, "/v1/cache/".into(), 400, "BAD_REQUEST"),
        (Method::GET, "/v1/cache/".into(), 400, "BAD_REQUEST"),
        (
            Method::PUT,
            format!("/v1/cache/{}", "k".repeat(1025)),
            400,
            "BAD_REQUEST",
        ),
        (
            Method::GET,
            format!("/v1/cache/{}", "k".repeat(1025)),
            400,
            "BAD_REQUEST",
        ),
        (Method::PUT, "/v1/cache/%FF".into(), 400, "BAD_REQUEST"),
        (Method::GET, "/v1/nope".into(), 404, "NOT_FOUND"),
        (Method::POST, "/v1/cache/k".into(), 405, "BAD_REQUEST"),
    ];
    for (m, path, status, code) in cases {
        let (s, b) = text(n.send(m.clone(), n.api_url(&path)).await).await;
        assert_error(s, &b, status, code);
    }
    let (s, b) = text(n.put("big", vec![0u8; 1025]).await).await;
    assert_error(s, &b, 413, "PAYLOAD_TOO_LARGE");
    // The ttl error names the value.
    let (_, b) = text(n.send(Method::PUT, n.api_url("/v1/cache/k?ttl=soon")).await).await;
    assert!(b.contains("soon"), "{b}");
    // A key of exactly 1024 bytes is fine.
    assert_eq!(n.put(&"k".repeat(1024), "v").await.status(), 200);
    // Nothing but that one key was stored.
    let st = n.stats().await;
    assert_eq!(st["items"], 1, "{st}");
    // Unknown management routes are JSON 404s too.
    let (s, b) = text(n.send(Method::GET, n.mgmt_url("/nope")).await).await;
    assert_error(s, &b, 404, "NOT_FOUND");
}

#[tokio::test]
async fn values_round_trip_byte_exact() {
    let n = Node::start("n1", &[]).await;
    let all: Vec<u8> = (0..=255u8).collect();
    assert_eq!(n.put("all-bytes", all.clone()).await.status(), 200);
    assert_eq!(
        n.get("all-bytes").await.bytes().await.unwrap().as_ref(),
        &all[..]
    );

    assert_eq!(n.put("empty", Vec::new()).await.status(), 200);
    let r = n.get("empty").await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().is_empty());

    let big: Vec<u8> = (0..4 * 1024 * 1024)
        .map(|i: u32| (i * 7 % 251) as u8)
        .collect();
    let r = n.put("big", big.clone()).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["bytes"], 4 * 1024 * 1024);
    assert_eq!(n.get("big").await.bytes().await.unwrap().as_ref(), &big[..]);

    // 4 MiB + 1: refused from the Content-Length, before the body is read.
    let mut c = raw_connect(n.api).await;
    c.write_all(b"PUT /v1/cache/too-big HTTP/1.1\r\nHost: x\r\nContent-Length: 4194305\r\n\r\n")
        .await
        .unwrap();
    let (s, b) = raw_read_response(&mut c).await;
    assert_error(s, &b, 413, "PAYLOAD_TOO_LARGE");
    assert!(b.contains("4194305") && b.contains("4194304"), "{b}");

    // Without Content-Length (chunked), the limit still holds.
    let mut c = raw_connect(n.api).await;
    c.write_all(b"PUT /v1/cache/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let chunk = vec![b'a'; 1024 * 1024];
    for _ in 0..5 {
        let head = format!("{:x}\r\n", chunk.len());
        if c.write_all(head.as_bytes()).await.is_err()
            || c.write_all(&chunk).await.is_err()
            || c.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = c.write_all(b"0\r\n\r\n").await;
    let (s, b) = raw_read_response(&mut c).await;
    assert_error(s, &b, 413, "PAYLOAD_TOO_LARGE");
    let (s, _) = text(n.get("too-big").await).await;
    assert_eq!(s, 404);
    let (s, _) = text(n.get("chunked").await).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn ttl_expires_and_sweep_reclaims() {
    let n = Node::start("n1", &[("SWEEP_INTERVAL", "50ms")]).await;
    assert_eq!(n.put("short?ttl=300ms", "x").await.status(), 200);
    assert_eq!(n.put("unread?ttl=300ms", "x").await.status(), 200);
    assert_eq!(n.put("forever", "x").await.status(), 200);
    assert_eq!(n.get("short").await.status(), 200);
    eventually("short to expire", Duration::from_secs(5), || async {
        (n.get("short").await.status() == 404).then_some(())
    })
    .await;
    // "unread" is never read again: only the sweep can reclaim it.
    let st = eventually("sweep to reclaim", Duration::from_secs(5), || async {
        let st = n.stats().await;
        (st["items"] == 1).then_some(st)
    })
    .await;
    assert!(st["expirations"].as_u64().unwrap() >= 2, "{st}");
    assert_eq!(n.get("forever").await.status(), 200);
}

#[tokio::test]
async fn capacity_is_enforced_by_eviction() {
    let n = Node::start("n1", &[("CAPACITY", "64"), ("SHARDS", "4")]).await;
    for i in 0..128 {
        assert_eq!(
            n.put(&format!("key-{i}"), format!("v{i}")).await.status(),
            200
        );
        if i % 16 == 15 {
            let st = n.stats().await;
            assert!(st["items"].as_u64().unwrap() <= 64, "{st}");
        }
    }
    let st = n.stats().await;
    let items = st["items"].as_u64().unwrap();
    assert!((48..=64).contains(&items), "{st}");
    assert_eq!(st["evictions"].as_u64().unwrap(), 128 - items, "{st}");
    // The most recent write is always there.
    assert_eq!(n.get("key-127").await.status(), 200);
    let m = n.mgmt_json("/dist/metrics").await;
    assert_eq!(m["evictions_total"].as_u64().unwrap(), 128 - items);
}

#[tokio::test]
async fn auth_matrix_on_all_three_listeners() {
    let n = Node::start("n1", &[("AUTH_TOKEN", TOKEN)]).await;
    let protected = vec![
        (Method::GET, n.api_url("/v1/cache/k")),
        (Method::PUT, n.api_url("/v1/cache/k")),
        (Method::DELETE, n.api_url("/v1/cache/k")),
        (Method::GET, n.api_url("/v1/owners/k")),
        (Method::GET, n.api_url("/unknown")),
        (Method::GET, n.mgmt_url("/stats")),
        (Method::GET, n.mgmt_url("/config")),
        (Method::GET, n.mgmt_url("/metrics")),
        (Method::GET, n.mgmt_url("/dist/metrics")),
        (Method::GET, n.mgmt_url("/cluster/members")),
        (Method::GET, n.mgmt_url("/cluster/ring")),
        (Method::POST, n.mgmt_url("/dist/drain")),
        (Method::GET, n.dist_url("/health")),
        (Method::POST, n.dist_url("/dist/drain")),
    ];
    let bad_headers: Vec<Option<String>> = vec![
        None,
        Some("Bearer wrong".into()),
        Some(format!("bearer {TOKEN}")),
        Some(TOKEN.into()),
        Some(format!("Basic {TOKEN}")),
        Some(format!("Bearer {TOKEN}x")),
    ];
    for (m, url) in &protected {
        for h in &bad_headers {
            let mut rb = n.http.request(m.clone(), url);
            if let Some(h) = h {
                rb = rb.header("Authorization", h);
            }
            let (s, b) = text(rb.send().await.unwrap()).await;
            assert_error(s, &b, 401, "UNAUTHORIZED");
        }
    }
    // Open routes need no token.
    assert_eq!(
        n.http
            .get(n.api_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        n.http
            .get(n.mgmt_url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // With the token everything (but drain, which would stop the node) is served.
    for (m, url) in protected.iter().filter(|(_, u)| !u.ends_with("/drain")) {
        let s = n.send(m.clone(), url.clone()).await.status();
        assert_ne!(s, 401, "{m} {url}");
    }
    assert_eq!(
        n.send(Method::GET, n.dist_url("/health")).await.status(),
        200
    );
    // Nothing was written by the refused requests.
    assert_eq!(n.stats().await["items"], 0);
    let m = n.mgmt_json("/dist/metrics").await;
    assert!(
        m["requests_unauthorized_total"].as_u64().unwrap()
            >= (protected.len() * bad_headers.len()) as u64
    );
}

#[tokio::test]
async fn management_routes() {
    let n = Node::start("n1", &[("AUTH_TOKEN", TOKEN), ("REPLICATION", "2")]).await;
    n.put("a", "1").await;
    n.get("a").await;
    n.get("b").await;

    let st = n.stats().await;
    assert_eq!(st["items"], 1);
    assert_eq!(st["bytes"], 2);
    assert_eq!(st["hits"], 1);
    assert_eq!(st["misses"], 1);
    assert_eq!(st["ops"]["put"], 1);
    assert_eq!(st["ops"]["get"], 2);

    let cfg = n.mgmt_json("/config").await;
    assert_eq!(cfg["auth_token"], "[redacted]");
    assert_eq!(cfg["replication"], 2);
    assert!(!cfg.to_string().contains(TOKEN));

    let r = n.send(Method::GET, n.mgmt_url("/metrics")).await;
    assert_eq!(r.status(), 200);
    let prom = r.text().await.unwrap();
    assert!(prom.contains("hypercache_items 1"), "{prom}");
    assert!(prom.contains("hypercache_hits_total 1"));
    assert!(prom.contains("hypercache_request_duration_seconds_count{route=\"cache_put\"} 1"));

    let m = n.mgmt_json("/dist/metrics").await;
    assert_eq!(m["puts_total"], 1);
    assert_eq!(m["items"], 1);

    let members = n.mgmt_json("/cluster/members").await;
    assert_eq!(members["replication"], 2);
    assert!(members["virtualNodes"].as_u64().unwrap() > 0);
    let list = members["members"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], "n1");
    assert_eq!(list[0]["state"], "alive");
    assert_eq!(list[0]["address"], format!("127.0.0.1:{}", n.dist));

    let ring = n.mgmt_json("/cluster/ring").await;
    assert_eq!(ring["nodes"][0]["id"], "n1");

    // Drain through the API: health 503, writes 503 DRAINING, reads keep serving.
    let r = n.send(Method::POST, n.mgmt_url("/dist/drain")).await;
    assert_eq!(r.status(), 202);
    let r = n.http.get(n.mgmt_url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.text().await.unwrap(), "draining");
    let (s, b) = text(n.put("c", "3").await).await;
    assert_error(s, &b, 503, "DRAINING");
    let (s, b) = text(n.delete("a").await).await;
    assert_error(s, &b, 503, "DRAINING");
    assert_eq!(n.get("a").await.status(), 200);
    assert_eq!(n.stats().await["draining"], true);
    let m = n.mgmt_json("/dist/metrics").await;
    assert_eq!(
        (m["drains_total"].clone(), m["draining"].clone()),
        (1.into(), 1.into())
    );
    // Draining again is a no-op.
    let again: serde_json::Value = n
        .send(Method::POST, n.dist_url("/dist/drain"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["started"], false);
}

#[tokio::test]
async fn bad_configuration_exits_2_naming_the_variable() {
    let cases = [
        ("HYPERCACHE_REPLICATION", "abc"),
        ("HYPERCACHE_REPLICATION", "0"),
        ("HYPERCACHE_HEARTBEAT", "soon"),
        ("HYPERCACHE_LOG_LEVEL", "loud"),
        ("HYPERCACHE_CAPACITY", "lots"),
        ("HYPERCACHE_API_ADDR", "localhost"),
        ("HYPERCACHE_SEEDS", "node-2@"),
        ("HYPERCACHE_MAX_VALUE_BYTES", "-1"),
    ];
    for (var, value) in cases {
        let out = std::process::Command::new(binary())
            .env_clear()
            .env(var, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(var) && err.contains(value) && err.contains("expected"),
            "{err}"
        );
    }
}

/// `check-config` reads the environment as start-up does and starts nothing: a valid
/// one prints the effective configuration (tokens redacted) and exits 0, even with its
/// listen addresses taken; an invalid one names every invalid variable and exits 2.
#[test]
fn check_config_prints_the_effective_configuration_or_every_invalid_variable() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = std::process::Command::new(binary())
        .arg("check-config")
        .env_clear()
        .env("HYPERCACHE_NODE_ID", "web-0")
        .env("HYPERCACHE_API_ADDR", format!("127.0.0.1:{port}"))
        .env("HYPERCACHE_AUTH_TOKEN", "s3cret-token")
        .env("HYPERCACHE_REPLICATION", "2")
        .env("HYPERCACHE_SLOPPY_QUORUM", "true")
        .env("HYPERCACHE_TYPO", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("s3cret-token"), "{stdout}");
    let c: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(c["node_id"], "web-0");
    assert_eq!(c["replication"], 2);
    assert_eq!(c["sloppy_quorum"], true);
    assert_eq!(c["auth_token"], "[redacted]");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HYPERCACHE_TYPO"), "{stderr}");

    let out = std::process::Command::new(binary())
        .arg("check-config")
        .env_clear()
        .env("HYPERCACHE_HEARTBEAT", "soon")
        .env("HYPERCACHE_REPLICATION", "zero")
        .env("HYPERCACHE_OIDC_ISSUER", "https://idp.example")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 3, "{stderr}");
    for var in [
        "HYPERCACHE_HEARTBEAT",
        "HYPERCACHE_REPLICATION",
        "HYPERCACHE_OIDC_ISSUER",
    ] {
        assert!(stderr.contains(var), "{var}: {stderr}");
    }
    assert!(!stderr.contains("idp.example"), "{stderr}");
}

#[tokio::test]
async fn listener_that_cannot_bind_is_fatal() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = std::process::Command::new(binary())
        .env_clear()
        .env("HYPERCACHE_API_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("HYPERCACHE_MGMT_ADDR", format!("127.0.0.1:{port}"))
        .env("HYPERCACHE_DIST_ADDR", format!("127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HYPERCACHE_MGMT_ADDR"), "{err}");
}

#[tokio::test]
async fn sigterm_drains_finishes_in_flight_and_exits_0() {
    let mut n = Node::start("n1", &[("DRAIN_LINGER", "1s"), ("SHUTDOWN_GRACE", "10s")]).await;
    n.put("before", "x").await;
    // A slow write: headers and half the body now, the rest after the signal.
    let mut slow = n.start_slow_put("slow", 10, b"hello").await;
    n.signal(libc::SIGTERM);
    n.wait_draining().await;
    // New writes during the drain are refused; reads still work.
    let (s, b) = text(n.put("during", "y").await).await;
    assert_error(s, &b, 503, "DRAINING");
    assert_eq!(n.get("before").await.status(), 200);
    // Wait until the client listener stopped accepting, then finish the slow body.
    eventually(
        "client listener closed",
        Duration::from_secs(10),
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", n.api))
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    slow.write_all(b"world").await.unwrap();
    let (s, b) = raw_read_response(&mut slow).await;
    assert_eq!(s, 200, "{b}");
    assert!(b.contains("\"stored\":true"), "{b}");
    let status = n.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{}", n.logs());
    assert!(n.logs().contains("stopped cleanly"));
}

/// A second signal skips the waits (here a one-minute linger) but still stops cleanly
/// after the drain.
#[tokio::test]
async fn second_signal_skips_the_waits_not_the_drain() {
    let mut n = Node::start("n1", &[("DRAIN_LINGER", "60s")]).await;
    n.signal(libc::SIGTERM);
    n.wait_draining().await;
    n.signal(libc::SIGINT);
    let status = n.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", n.logs());
    let logs = n.logs();
    assert!(logs.contains("second signal"), "{logs}");
    assert!(logs.contains("stopped cleanly"), "{logs}");
}

#[tokio::test]
async fn overload_answers_503_with_retry_after() {
    let n = Node::start("n1", &[("MAX_INFLIGHT", "1")]).await;
    // The slow request holds the only slot.
    let mut slow = n.start_slow_put("slow", 2, b"a").await;
    let r = eventually(
        "a request to be refused",
        Duration::from_secs(5),
        || async {
            let r = n.put("other", "v").await;
            (r.status() == 503).then_some(r)
        },
    )
    .await;
    assert_eq!(r.headers()["retry-after"], "1");
    let b = r.text().await.unwrap();
    assert_error(503, &b, 503, "OVERLOADED");
    slow.write_all(b"b").await.unwrap();
    let (s, _) = raw_read_response(&mut slow).await;
    assert_eq!(s, 200);
    assert_eq!(n.put("other", "v").await.status(), 200);
    assert_eq!(n.get("other").await.status(), 200);
    let m = n.mgmt_json("/dist/metrics").await;
    assert!(m["requests_rejected_overload_total"].as_u64().unwrap() >= 1);
}

#[cfg(feature = "test-hooks")]
#[tokio::test]
async fn crashed_shard_is_restarted_and_node_keeps_serving() {
    let n = Node::start("n1", &[("SHARDS", "4")]).await;
    for i in 0..40 {
        n.put(&format!("k{i}"), "v").await;
    }
    let r: serde_json::Value = n
        .send(Method::POST, n.mgmt_url("/debug/crash-shard/k0"))
        .await
        .json()
        .await
        .unwrap();
    assert!(r["shard"].is_u64(), "{r}");
    eventually("shard restart counted", Duration::from_secs(5), || async {
        let m = n.mgmt_json("/dist/metrics").await;
        (m["shard_restarts_total"] == 1).then_some(())
    })
    .await;
    // The restarted shard came back empty; the others kept their data.
    let st = n.stats().await;
    let items = st["items"].as_u64().unwrap();
    assert!(items > 0 && items < 40, "{st}");
    assert_eq!(n.get("k0").await.status(), 404);
    assert_eq!(n.put("k0", "again").await.status(), 200);
    assert_eq!(n.get("k0").await.bytes().await.unwrap().as_ref(), b"again");
    assert_eq!(
        n.http
            .get(n.api_url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(n.logs().contains("restarting it empty"));
}

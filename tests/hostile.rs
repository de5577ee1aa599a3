//! Hostile and malformed input against real nodes (docs/security.md): protected mode,
//! security settings that cannot be honoured, peer credentials, listener timeouts and
//! connection caps, the lingering 413, and a dist listener that checks what peers tell
//! it. Every test asserts the refusal, that nothing changed, and that the node still
//! serves.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A node listening on every interface.
async fn node_on_all_interfaces(id: &str, env: &[(&str, &str)]) -> Node {
    let (api, mgmt, dist) = (free_port(), free_port(), free_port());
    let mut vars: Vec<(String, String)> = vec![
        ("API_ADDR".into(), format!("0.0.0.0:{api}")),
        ("MGMT_ADDR".into(), format!("0.0.0.0:{mgmt}")),
        ("DIST_ADDR".into(), format!("0.0.0.0:{dist}")),
    ];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Node::start_on(id, &refs, api, mgmt, dist).await
}

/// The process' resident memory in KiB.
fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

async fn metric(n: &Node, name: &str) -> u64 {
    n.mgmt_json("/dist/metrics").await[name]
        .as_u64()
        .unwrap_or_else(|| panic!("metric {name}"))
}

#[tokio::test]
async fn protected_mode_serves_loopback_only_until_a_token_is_set() {
    let ip = non_loopback_ipv4();
    let n = node_on_all_interfaces("pm", &[]).await;
    assert!(
        n.logs().contains("protected mode"),
        "start-up says so:\n{}",
        n.logs()
    );
    let far = reqwest::Client::new();
    let at = |port: u16, path: &str| format!("http://{ip}:{port}{path}");

    let r = far
        .put(at(n.api, "/v1/cache/k"))
        .body("from afar")
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    let b = r.text().await.unwrap();
    assert_error(s, &b, 403, "PROTECTED_MODE");
    assert!(b.contains("HYPERCACHE_AUTH_TOKEN"), "{b}");
    for url in [at(n.mgmt, "/stats"), at(n.mgmt, "/cluster/members")] {
        let r = far.get(&url).send().await.unwrap();
        let s = r.status().as_u16();
        assert_error(s, &r.text().await.unwrap(), 403, "PROTECTED_MODE");
    }
    let r = far.post(at(n.dist, "/dist/drain")).send().await.unwrap();
    let s = r.status().as_u16();
    let b = r.text().await.unwrap();
    assert_error(s, &b, 403, "PROTECTED_MODE");
    assert!(b.contains("HYPERCACHE_PEER_TOKEN"), "{b}");
    // Liveness routes need no token, so protected mode does not hide them.
    let r = far.get(at(n.api, "/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Nothing changed: no key, no drain; loopback is served.
    assert_eq!(n.get("k").await.status(), 404);
    let h = n.http.get(n.mgmt_url("/health")).send().await.unwrap();
    assert_eq!(h.text().await.unwrap(), "ok");
    assert_eq!(n.put("k", "local").await.status(), 200);
    assert!(metric(&n, "requests_protected_mode_total").await >= 4);

    // Switched off: served from anywhere.
    let open = node_on_all_interfaces("open", &[("PROTECTED_MODE", "false")]).await;
    let r = far
        .put(format!("http://{ip}:{}/v1/cache/k", open.api))
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // With a token: 401 without it, 200 with it, from anywhere.
    let t = node_on_all_interfaces("tok", &[("AUTH_TOKEN", TOKEN)]).await;
    let url = format!("http://{ip}:{}/v1/cache/k", t.api);
    let r = far.put(&url).body("v").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = far
        .put(&url)
        .bearer_auth(TOKEN)
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn security_settings_that_cannot_be_honoured_stop_start_up() {
    for var in [
        "HYPERCACHE_AUTH_CONFIG",
        "HYPERCACHE_API_TLS_CERT",
        "HYPERCACHE_API_TLS_KEY",
        "HYPERCACHE_API_TLS_CLIENT_CA",
        "HYPERCACHE_OIDC_ISSUER",
        "HYPERCACHE_OIDC_AUDIENCE",
        "HYPERCACHE_DIST_TLS_CERT",
    ] {
        let out = std::process::Command::new(binary())
            .env_clear()
            .env(var, "/etc/some/file.pem")
            .env("HYPERCACHE_API_ADDR", "127.0.0.1:1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}: {err}");
        assert!(err.contains(var), "{var}: {err}");
        assert!(
            !err.contains("/etc/some/file.pem"),
            "values are not echoed: {err}"
        );
    }
    // Set but empty counts as unset.
    let out = std::process::Command::new(binary())
        .env_clear()
        .env("HYPERCACHE_OIDC_ISSUER", "")
        .env("HYPERCACHE_HEARTBEAT", "nope")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HYPERCACHE_HEARTBEAT"), "{err}");
}

#[tokio::test]
async fn peers_use_their_own_token() {
    let c = Cluster::start(2, &[("AUTH_TOKEN", TOKEN), ("PEER_TOKEN", "peer-secret")]).await;
    c.wait_members(2, Duration::from_secs(10)).await;
    assert_eq!(c.node(1).put("k", "v").await.status(), 200);
    assert_eq!(c.node(2).get("k").await.status(), 200);
    let dist = c.node(1).dist_url("/dist/v2/batch");
    let http = reqwest::Client::new();
    let client_token = http
        .post(&dist)
        .bearer_auth(TOKEN)
        .body(batch(json!([])))
        .send()
        .await
        .unwrap();
    assert_eq!(
        client_token.status(),
        401,
        "the client token is not a peer token"
    );
    let peer_token = http
        .post(&dist)
        .bearer_auth("peer-secret")
        .body(batch(json!([])))
        .send()
        .await
        .unwrap();
    assert_eq!(peer_token.status(), 200);
    let r = http
        .get(c.node(1).mgmt_url("/stats"))
        .bearer_auth("peer-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the peer token is not a client token");
}

/// Reads until the server closes the connection; `true` if it did within `deadline`.
async fn closed_within(s: &mut tokio::net::TcpStream, deadline: Duration) -> bool {
    let end = tokio::time::Instant::now() + deadline;
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(end, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

const TIMERS: &[(&str, &str)] = &[
    ("HEADER_READ_TIMEOUT", "500ms"),
    ("IDLE_TIMEOUT", "1s"),
    ("BODY_READ_TIMEOUT", "1s"),
    ("MAX_CONNECTIONS", "16"),
];

#[tokio::test]
async fn slow_and_silent_clients_are_cut_off() {
    let n = Node::start("timers", TIMERS).await;

    // Silent: closed after the idle timeout.
    let started = Instant::now();
    let mut silent = raw_connect(n.api).await;
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );

    // A head that trickles in, one byte at a time, is cut at the header timeout even
    // though bytes keep arriving.
    let mut slow = raw_connect(n.api).await;
    let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let started = Instant::now();
    let mut cut = false;
    for b in head.iter() {
        if slow.write_all(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cut || closed_within(&mut slow, Duration::from_secs(1)).await);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // A body that stops arriving: 408.
    let mut stalled = raw_connect(n.api).await;
    stalled
        .write_all(
            b"PUT /v1/cache/stall HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789",
        )
        .await
        .unwrap();
    let (s, b) = raw_read_response(&mut stalled).await;
    assert_error(s, &b, 408, "REQUEST_TIMEOUT");
    assert_eq!(n.get("stall").await.status(), 404, "nothing stored");

    // Keep-alive still works within the idle timeout.
    let mut ka = raw_connect(n.api).await;
    for _ in 0..3 {
        ka.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (s, b) = raw_read_response(&mut ka).await;
        assert_eq!((s, b.as_str()), (200, "ok"));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(metric(&n, "connections_timed_out_total").await >= 2);
    assert!(metric(&n, "request_body_timeouts_total").await >= 1);
}

#[tokio::test]
async fn a_connection_flood_is_refused_quickly_and_drains_away() {
    let n = Node::start("flood", TIMERS).await;
    let pid = n.pid();
    // Many half-sent requests: the first 16 hold the client listener's slots until the
    // header timeout; the rest are refused at once with a canned 503.
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..300 {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", n.api)).await {
            let _ = s
                .write_all(b"GET /v1/cache/x HTTP/1.1\r\nHost: x\r\n")
                .await;
            readers.spawn(async move {
                let mut buf = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
                String::from_utf8_lossy(&buf).to_string()
            });
        }
    }
    let mut refused = 0;
    while let Some(r) = readers.join_next().await {
        let text = r.unwrap();
        if text.starts_with("HTTP/1.1 503") && text.contains("OVERLOADED") {
            refused += 1;
        }
    }
    assert!(refused >= 250, "{refused} of 300 refused");
    // The other listeners have their own caps: the node stays manageable and healthy.
    let h = n.http.get(n.mgmt_url("/health")).send().await.unwrap();
    assert_eq!(h.text().await.unwrap(), "ok");
    assert!(metric(&n, "connections_refused_total").await > 0);
    // The held slots are freed by the header timeout: the client API serves again.
    eventually(
        "the client API to serve again",
        Duration::from_secs(10),
        || async {
            let r = n.http.get(n.api_url("/healthz")).send().await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
    assert_eq!(n.put("after-flood", "ok").await.status(), 200);
    assert!(rss_kib(pid) < 200 * 1024, "RSS {} KiB", rss_kib(pid));
}

#[tokio::test]
async fn an_oversize_body_written_whole_still_gets_its_413() {
    let n = Node::start("big", &[("MAX_VALUE_BYTES", "1024")]).await;
    // A client that writes its whole body before reading (Python's http.client does);
    // larger than the socket buffers, so the writes block until the server reads.
    let body = vec![b'x'; 16 << 20];
    let mut s = raw_connect(n.api).await;
    let head = format!(
        "PUT /v1/cache/big HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body).await.expect("the whole body is read");
    let (st, b) = raw_read_response(&mut s).await;
    assert_error(st, &b, 413, "PAYLOAD_TOO_LARGE");
    // Chunked, without a length: the same.
    let mut s = raw_connect(n.api).await;
    s.write_all(b"PUT /v1/cache/big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..4096 {
        s.write_all(b"1000\r\n").await.unwrap();
        s.write_all(&[b'y'; 4096]).await.unwrap();
        s.write_all(b"\r\n").await.unwrap();
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let (st, b) = raw_read_response(&mut s).await;
    assert_error(st, &b, 413, "PAYLOAD_TOO_LARGE");
    // A client that asks first (Expect: 100-continue) gets the 413 without sending.
    let mut s = raw_connect(n.api).await;
    s.write_all(
        b"PUT /v1/cache/big HTTP/1.1\r\nHost: x\r\nContent-Length: 16777216\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let (st, b) = raw_read_response(&mut s).await;
    assert_error(st, &b, 413, "PAYLOAD_TOO_LARGE");
    assert_eq!(n.get("big").await.status(), 404);
}

#[tokio::test]
async fn dist_writes_are_checked_at_every_entry_point() {
    let c = Cluster::start(
        2,
        &[
            ("AUTH_TOKEN", TOKEN),
            ("MAX_VALUE_BYTES", "1024"),
            ("REPLICATION", "2"),
        ],
    )
    .await;
    let n = c.node(1);
    let hour_ahead = now_ms() + 3_600_000;
    let item = |reply: &Value, i: usize| reply["body"]["results"][i].clone();

    // A version an hour ahead would pin the key: refused, nothing stored.
    let (s, reply) = post_dist(
        n,
        "/dist/v2/batch",
        batch(json!([
            {"Replicate": {"writes": [{"key": "pinned", "write": write(hour_ahead, b"evil")}]}},
            {"Replicate": {"writes": [{"key": "huge", "write": write(now_ms(), &[7u8; 2048])}]}},
            {"AcceptHints": {"hints": [["node-9", {"key": "h", "write": write(now_ms(), b"v")}]]}},
            {"AcceptHints": {"hints": [["node-2", {"key": "h2", "write": write(hour_ahead, b"v")}]]}},
            {"AeFetch": {"keys": ["a", "a"]}},
            {"AeFetch": {"keys": (0..5000).map(|i| format!("k{i}")).collect::<Vec<_>>()}},
        ])),
    )
    .await;
    assert_eq!(s, 200, "{reply}");
    for i in 0..6 {
        assert_eq!(
            item(&reply, i)["Err"]["code"],
            "BAD_REQUEST",
            "call {i}: {reply}"
        );
    }
    let msg = item(&reply, 0)["Err"]["message"].to_string();
    assert!(msg.contains("ahead"), "{msg}");
    assert_eq!(n.get("pinned").await.status(), 404);
    assert_eq!(n.get("huge").await.status(), 404);
    let st = n.stats().await;
    assert_eq!(st["items"], 0, "{st}");
    assert_eq!(metric(n, "hints_pending").await, 0);
    // A client write of the key is stored and read back (nothing pinned it).
    assert_eq!(n.put("pinned", "mine").await.status(), 200);
    assert_eq!(n.get("pinned").await.text().await.unwrap(), "mine");
    assert!(metric(n, "dist_refused_total").await >= 4);

    // Per-kind caps in one batch: only 8 ping-reqs are relayed.
    let reqs: Vec<Value> = (0..40)
        .map(|i| json!({"PingReq": {"seq": i, "target_id": "node-2", "target_addr": "x:1", "members": []}}))
        .collect();
    let (s, reply) = post_dist(n, "/dist/v2/batch", batch(Value::Array(reqs))).await;
    assert_eq!(s, 200);
    let results = reply["body"]["results"].as_array().unwrap();
    let refused = results
        .iter()
        .filter(|r| r["Err"]["code"] == "BAD_REQUEST")
        .count();
    assert_eq!(refused, 32, "{reply}");

    // Bodies: the probe route takes 1 MiB at most; a dist body must carry its length.
    let mut conn = raw_connect(n.dist).await;
    conn.write_all(format!("POST /dist/v2/probe HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n", 2 << 20).as_bytes()).await.unwrap();
    let (s, b) = raw_read_response(&mut conn).await;
    assert_error(s, &b, 413, "PAYLOAD_TOO_LARGE");
    let mut conn = raw_connect(n.dist).await;
    conn.write_all(format!("POST /dist/v2/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n").as_bytes()).await.unwrap();
    let (s, _) = raw_read_response(&mut conn).await;
    assert_eq!(s, 411);

    // Hints are not taken by a draining node.
    let r = n
        .send(reqwest::Method::POST, n.mgmt_url("/dist/drain"))
        .await;
    assert!(r.status().is_success());
    n.wait_draining().await;
    let (_, reply) = post_dist(
        n,
        "/dist/v2/batch",
        batch(json!([{"AcceptHints": {"hints": [["node-2", {"key": "h3", "write": write(now_ms(), b"v")}]]}}])),
    )
    .await;
    assert_eq!(item(&reply, 0)["Err"]["code"], "DRAINING", "{reply}");
}

#[tokio::test]
async fn forged_gossip_changes_no_address_and_cannot_kill_a_node() {
    let c = Cluster::start(2, &[("AUTH_TOKEN", TOKEN)]).await;
    c.wait_members(2, Duration::from_secs(10)).await;
    let n = c.node(1);
    let addr_of = |v: &Value, id: &str| {
        v["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .map(|m| (m["address"].clone(), m["state"].clone()))
    };
    let before = n.mgmt_json("/cluster/members").await;
    let node2 = addr_of(&before, "node-2").unwrap();
    let ping = |members: Value| batch(json!([{"Ping": {"seq": 0, "members": members}}]));

    // Someone else claims node-2 moved: the address stays.
    let (s, _) = post_dist(
        n,
        "/dist/v2/probe",
        ping(json!([{"id": "node-2", "addr": "127.0.0.1:9", "state": "alive", "incarnation": 50}])),
    )
    .await;
    assert_eq!(s, 200);
    // node-1 is declared dead at the largest incarnation, and at one past the step.
    for inc in [u64::MAX, 1u64 << 30] {
        let (s, _) = post_dist(
            n,
            "/dist/v2/probe",
            ping(json!([{"id": "node-1", "addr": "x:1", "state": "dead", "incarnation": inc}])),
        )
        .await;
        assert_eq!(s, 200);
    }
    // Malformed entries and a list longer than the member cap are ignored.
    let (s, _) = post_dist(
        n,
        "/dist/v2/probe",
        ping(json!([
            {"id": "evil", "addr": "user@169.254.169.254:80/x", "state": "alive", "incarnation": 0},
            {"id": "", "addr": "a:1", "state": "alive", "incarnation": 0},
            {"id": "bad id", "addr": "a:1", "state": "alive", "incarnation": 0},
        ])),
    )
    .await;
    assert_eq!(s, 200);
    let many: Vec<Value> = (0..2000)
        .map(|i| json!({"id": format!("ghost-{i}"), "addr": "a:1", "state": "alive", "incarnation": 0}))
        .collect();
    let (s, _) = post_dist(n, "/dist/v2/probe", ping(Value::Array(many))).await;
    assert_eq!(s, 200);
    // Other calls are refused on the probe route; an envelope with a malformed sender
    // is refused as a whole.
    let (s, _) = post_dist(n, "/dist/v2/probe", batch(json!([{"Read": {"key": "k"}}]))).await;
    assert_eq!(s, 400);
    let env = json!({"v": 2, "from": "a b", "from_addr": "h/x:1", "hlc": 1, "body": {"calls": []}});
    let (s, _) = post_dist(n, "/dist/v2/batch", rmp_serde::to_vec_named(&env).unwrap()).await;
    assert_eq!(s, 400);

    let after = n.mgmt_json("/cluster/members").await;
    assert_eq!(addr_of(&after, "node-2").unwrap().0, node2.0, "{after}");
    assert_eq!(addr_of(&after, "node-1").unwrap().1, "alive", "{after}");
    assert!(addr_of(&after, "evil").is_none() && addr_of(&after, "ghost-1").is_none());
    let me = n.mgmt_json("/cluster/heartbeat").await;
    assert!(me["incarnation"].as_u64().unwrap() < 1 << 20, "{me}");
    assert!(metric(n, "gossip_entries_refused_total").await >= 2004);
    // The cluster still works.
    c.wait_members(2, Duration::from_secs(10)).await;
    assert_eq!(n.put("k", "v").await.status(), 200);
    assert_eq!(c.node(2).get("k").await.status(), 200);
}

#[tokio::test]
async fn the_dist_buffer_budget_bounds_memory() {
    let n = Node::start(
        "budget",
        &[("AUTH_TOKEN", TOKEN), ("DIST_BUFFER_BYTES", "64MiB")],
    )
    .await;
    let pid = n.pid();
    // A sender that declares 60 MiB and trickles it in holds most of the budget ...
    let mut first = raw_connect(n.dist).await;
    first
        .write_all(format!("POST /dist/v2/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n", 60 << 20).as_bytes())
        .await
        .unwrap();
    first.write_all(&[0u8; 1024]).await.unwrap();
    eventually(
        "the first body to hold the budget",
        Duration::from_secs(5),
        || async { (metric(&n, "dist_buffer_bytes").await == 60 << 20).then_some(()) },
    )
    .await;
    // ... so a second large request is refused at once instead of buffered.
    eventually("the budget to be spent", Duration::from_secs(5), || async {
        let mut second = raw_connect(n.dist).await;
        second
            .write_all(format!("POST /dist/v2/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n", 30 << 20).as_bytes())
            .await
            .ok()?;
        let (s, b) = raw_read_response(&mut second).await;
        (s == 503 && b.contains("OVERLOADED")).then_some(())
    })
    .await;
    assert!(metric(&n, "request_buffer_refused_total").await >= 1);
    drop(first);
    eventually(
        "the budget to be returned",
        Duration::from_secs(5),
        || async { (metric(&n, "dist_buffer_bytes").await == 0).then_some(()) },
    )
    .await;
    assert!(rss_kib(pid) < 200 * 1024, "RSS {} KiB", rss_kib(pid));
    assert_eq!(n.put("k", "v").await.status(), 200);
}

#[tokio::test]
async fn ttls_that_would_wrap_are_refused() {
    let n = Node::start("ttl", &[]).await;
    for ttl in [
        "99999999999999999999h",
        "18446744073709551616ns",
        "9223372036854775807s",
        "101y",
        "1.5e400s",
        "5000000000000000000000000000000000000000000000000000ms",
    ] {
        let r = n.put(&format!("k?ttl={ttl}"), "v").await;
        let s = r.status().as_u16();
        assert_error(s, &r.text().await.unwrap(), 400, "BAD_REQUEST");
    }
    assert_eq!(n.get("k").await.status(), 404, "nothing stored");
    assert_eq!(
        n.put("k?ttl=36500d", "v").await.status(),
        200,
        "the largest ttl"
    );
}

#[tokio::test]
async fn anti_entropy_replies_are_capped() {
    let n = Node::start("ae", &[("AUTH_TOKEN", TOKEN)]).await;
    let big = vec![b'v'; 4 << 20];
    for k in ["a", "b", "c"] {
        assert_eq!(n.put(k, big.clone()).await.status(), 200);
    }
    let r = reqwest::Client::new()
        .post(n.dist_url("/dist/v2/batch"))
        .bearer_auth(TOKEN)
        .body(batch(json!([{"AeFetch": {"keys": ["a", "b", "c"]}}])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    use hypercache_actors::proto::{decode, BatchReply, CallReply, Envelope};
    let reply: Envelope<BatchReply> = decode(&r.bytes().await.unwrap()).unwrap();
    let records = match &reply.body.results[0] {
        Ok(CallReply::AeFetch(f)) => f.records.len(),
        other => panic!("{other:?}"),
    };
    assert_eq!(records, 1, "8 MiB of values at most, the first always");
}

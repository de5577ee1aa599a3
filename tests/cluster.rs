//! Black-box cluster scenarios: several real processes on loopback (SPEC §7).

mod common;

use common::*;
use std::time::{Duration, Instant};

async fn body(r: reqwest::Response) -> (u16, Vec<u8>) {
    let s = r.status().as_u16();
    (s, r.bytes().await.unwrap().to_vec())
}

/// Every node's membership version and member list.
async fn membership_snapshot(c: &Cluster) -> Vec<(serde_json::Value, Vec<(String, String, u64)>)> {
    let mut out = Vec::new();
    for n in &c.nodes {
        let v = n.mgmt_json("/cluster/members").await;
        out.push((v["version"].clone(), n.members().await.unwrap()));
    }
    out
}

#[tokio::test]
async fn write_anywhere_read_everywhere_delete_everywhere() {
    let c = Cluster::start(5, &[("REPLICATION", "3")]).await;
    let value: Vec<u8> = (0..=255u8).rev().collect();
    let r = c.node(1).put("shared", value.clone()).await;
    assert_eq!(r.status(), 200);
    let put: serde_json::Value = r.json().await.unwrap();
    assert_eq!(put["owners"].as_array().unwrap().len(), 3);
    for n in &c.nodes {
        let (s, b) = body(n.get("shared").await).await;
        assert_eq!((s, b), (200, value.clone()), "read on {}", n.id);
        // Every node computes the same owners.
        let o: serde_json::Value = n
            .send(reqwest::Method::GET, n.api_url("/v1/owners/shared"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(o["owners"], put["owners"], "owners on {}", n.id);
    }
    let d: serde_json::Value = c.node(3).delete("shared").await.json().await.unwrap();
    assert_eq!(d["deleted"], true);
    for n in &c.nodes {
        let r = n.get("shared").await;
        let s = r.status().as_u16();
        let b = r.text().await.unwrap();
        assert_error(s, &b, 404, "NOT_FOUND");
    }
    // Quorum reads agree.
    for n in &c.nodes {
        assert_eq!(n.get_q("shared", "consistency=quorum").await.status(), 404);
    }
    let m = c.node(1).mgmt_json("/dist/metrics").await;
    assert!(m["forwards_total"].as_u64().unwrap() >= 2, "{m}");
    assert_eq!(m["members_alive"], 5);
}

#[tokio::test]
async fn kill_9_writes_keep_succeeding_and_restart_rejoins() {
    let mut c = Cluster::start(5, &[("REPLICATION", "3")]).await;
    let killed = Instant::now();
    c.node_mut(5).kill9().await;
    // Immediately after the kill, before failure detection: every write succeeds.
    for i in 0..50 {
        let r = c.node(1).put(&format!("k{i}"), format!("v{i}")).await;
        assert_eq!(r.status(), 200, "write {i}: {}", r.text().await.unwrap());
    }
    for n in c.nodes.iter().take(4) {
        for i in 0..50 {
            let (s, b) = body(n.get(&format!("k{i}")).await).await;
            assert_eq!(
                (s, b),
                (200, format!("v{i}").into_bytes()),
                "k{i} on {}",
                n.id
            );
        }
    }
    // Declared dead by every survivor.
    for n in c.nodes.iter().take(4) {
        eventually(
            &format!("{} to see node-5 dead", n.id),
            Duration::from_secs(10),
            || async { (n.state_of("node-5").await? == "dead").then_some(()) },
        )
        .await;
    }
    let detection = killed.elapsed();
    eprintln!("failure detection took {detection:?}");
    // Restart: it rejoins, alive on every node.
    c.node_mut(5).spawn();
    c.node_mut(5).wait_healthy().await;
    c.wait_members(5, Duration::from_secs(10)).await;
    // No incarnation or membership churn afterwards.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = membership_snapshot(&c).await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            membership_snapshot(&c).await,
            before,
            "membership churned after rejoin"
        );
    }
    // The restarted node serves every key (it routes to owners that hold them).
    for i in 0..50 {
        let (s, b) = body(c.node(5).get(&format!("k{i}")).await).await;
        assert_eq!(
            (s, b),
            (200, format!("v{i}").into_bytes()),
            "k{i} via node-5"
        );
    }
}

#[tokio::test]
async fn sigstop_suspect_then_dead_sigcont_refutes_and_rejoins() {
    let c = Cluster::start(3, &[("SUSPECT_TIMEOUT", "1500ms")]).await;
    let inc_before = c
        .node(1)
        .members()
        .await
        .unwrap()
        .iter()
        .find(|m| m.0 == "node-3")
        .unwrap()
        .2;
    c.node(3).signal(libc::SIGSTOP);
    eventually("node-3 suspect", Duration::from_secs(10), || async {
        (c.node(1).state_of("node-3").await? == "suspect").then_some(())
    })
    .await;
    eventually("node-3 dead", Duration::from_secs(10), || async {
        (c.node(1).state_of("node-3").await? == "dead").then_some(())
    })
    .await;
    let m = c.node(1).mgmt_json("/dist/metrics").await;
    assert!(m["heartbeat_failure_total"].as_u64().unwrap() >= 1, "{m}");
    assert!(
        m["indirect_probe_failure_total"].as_u64().unwrap() >= 1,
        "{m}"
    );
    c.node(3).signal(libc::SIGCONT);
    c.wait_members(3, Duration::from_secs(10)).await;
    let inc_after = c
        .node(1)
        .members()
        .await
        .unwrap()
        .iter()
        .find(|m| m.0 == "node-3")
        .unwrap()
        .2;
    assert!(
        inc_after > inc_before,
        "node-3 refuted with a higher incarnation"
    );
    let m3 = c.node(3).mgmt_json("/dist/metrics").await;
    assert!(
        m3["indirect_probe_refuted_total"].as_u64().unwrap() >= 1,
        "{m3}"
    );
}

#[tokio::test]
async fn isolated_node_loses_quorum_majority_keeps_writing_then_heals() {
    let c = Cluster::start(5, &[("REPLICATION", "3")]).await;
    c.node(5)
        .set_faults(serde_json::json!({"isolated": true}))
        .await;
    for n in c.nodes.iter().take(4) {
        eventually(
            &format!("{} to see node-5 dead", n.id),
            Duration::from_secs(10),
            || async { (n.state_of("node-5").await? == "dead").then_some(()) },
        )
        .await;
    }
    eventually(
        "node-5 to see the others dead",
        Duration::from_secs(10),
        || async {
            let m = c.node(5).members().await?;
            (m.iter().filter(|x| x.1 == "dead").count() == 4).then_some(())
        },
    )
    .await;
    for i in 0..20 {
        let r = c
            .node(1)
            .put_q(&format!("p{i}"), "consistency=quorum", "majority")
            .await;
        assert_eq!(r.status(), 200, "majority write {i}");
        let r = c
            .node(5)
            .put_q(&format!("q{i}"), "consistency=quorum", "minority")
            .await;
        let s = r.status().as_u16();
        let b = r.text().await.unwrap();
        assert_error(s, &b, 503, "QUORUM_FAILED");
        assert!(b.contains("refused before anything was applied"), "{b}");
    }
    let m = c.node(5).mgmt_json("/dist/metrics").await;
    assert!(m["quorum_failures_total"].as_u64().unwrap() >= 20);
    c.node(5).set_faults(serde_json::json!({})).await;
    c.wait_members(5, Duration::from_secs(15)).await;
    for i in 0..20 {
        let (s, b) = body(c.node(5).get(&format!("p{i}")).await).await;
        assert_eq!((s, b), (200, b"majority".to_vec()));
    }
}

#[tokio::test]
async fn healthy_cluster_membership_stays_flat() {
    let c = Cluster::start(3, &[]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = membership_snapshot(&c).await;
    // Ten seconds at a 100 ms heartbeat is about a hundred probes per node.
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(membership_snapshot(&c).await, before, "membership churned");
    }
    let hb = c.node(1).mgmt_json("/cluster/heartbeat").await;
    assert!(hb["probes_ok"].as_u64().unwrap() >= 50, "{hb}");
    assert_eq!(hb["probes_failed"], 0);
}

#[tokio::test]
async fn consistency_levels_per_request() {
    let mut c = Cluster::start(3, &[("REPLICATION", "3")]).await;
    assert_eq!(
        c.node(1).put_q("k", "consistency=all", "v").await.status(),
        200
    );
    let r = c.node(1).put_q("k", "consistency=maybe", "v").await;
    let s = r.status().as_u16();
    assert_error(s, &r.text().await.unwrap(), 400, "BAD_REQUEST");
    c.node_mut(3).kill9().await;
    let r = c.node(1).put_q("k", "consistency=all", "v2").await;
    let s = r.status().as_u16();
    assert_error(s, &r.text().await.unwrap(), 503, "QUORUM_FAILED");
    assert_eq!(
        c.node(1)
            .put_q("k", "consistency=quorum", "v3")
            .await
            .status(),
        200
    );
    assert_eq!(
        c.node(1).put_q("k", "consistency=one", "v4").await.status(),
        200
    );
    let (s, b) = body(c.node(2).get_q("k", "consistency=quorum").await).await;
    assert_eq!((s, b), (200, b"v4".to_vec()));
    let r = c.node(2).get_q("k", "consistency=all").await;
    assert_eq!(r.status(), 503);
}

#[tokio::test]
async fn bad_input_on_the_dist_listener_changes_nothing() {
    let c = Cluster::start(2, &[("AUTH_TOKEN", TOKEN)]).await;
    let n = c.node(1);
    let url = n.dist_url("/dist/v2/batch");
    let raw = reqwest::Client::new();
    let r = raw.post(&url).body(vec![1, 2, 3]).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = raw
        .post(&url)
        .bearer_auth("wrong")
        .body(vec![1, 2, 3])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = raw
        .post(&url)
        .bearer_auth(TOKEN)
        .body(b"garbage, not msgpack".to_vec())
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    assert_error(s, &r.text().await.unwrap(), 400, "BAD_REQUEST");
    // A well-formed envelope of the wrong protocol version.
    let env = serde_json::json!({"v": 99, "from": "x", "from_addr": "x:1", "hlc": 1,
        "body": {"calls": [{"Replicate": {"writes": [{"key": "k", "write": {"version": {"hlc": 1, "origin": 1}, "value": null, "expires_at_ms": null}}]}}]}});
    let bytes = rmp_serde::to_vec_named(&env).unwrap();
    let r = raw
        .post(&url)
        .bearer_auth(TOKEN)
        .body(bytes)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    let b = r.text().await.unwrap();
    assert_error(s, &b, 400, "PROTOCOL_VERSION");
    assert!(b.contains("version 99"), "{b}");
    // A peer of protocol version 1 (one route per call) is refused the same way.
    let r = raw
        .post(n.dist_url("/dist/v1/replicate"))
        .bearer_auth(TOKEN)
        .body(vec![1, 2, 3])
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    let b = r.text().await.unwrap();
    assert_error(s, &b, 400, "PROTOCOL_VERSION");
    // A batch with a bad key: refused item by item; a probe route carrying a write: 400.
    let env = serde_json::json!({"v": 2, "from": "x", "from_addr": "x:1", "hlc": 1,
        "body": {"calls": [{"Replicate": {"writes": [{"key": "", "write": {"version": {"hlc": 1, "origin": 1}, "value": null, "expires_at_ms": null}}]}}]}});
    let bytes = rmp_serde::to_vec_named(&env).unwrap();
    let r = raw
        .post(n.dist_url("/dist/v2/probe"))
        .bearer_auth(TOKEN)
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    assert_error(s, &r.text().await.unwrap(), 400, "BAD_REQUEST");
    let (status, reply) = post_dist(n, "/dist/v2/batch", bytes).await;
    assert_eq!(status, 200);
    assert_eq!(
        reply["body"]["results"][0]["Err"]["code"], "BAD_REQUEST",
        "{reply}"
    );
    // Oversize body, refused from its Content-Length.
    let mut conn = raw_connect(n.dist).await;
    use tokio::io::AsyncWriteExt;
    conn.write_all(format!("POST /dist/v2/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n", 65 << 20).as_bytes()).await.unwrap();
    let (s, b) = raw_read_response(&mut conn).await;
    assert_error(s, &b, 413, "PAYLOAD_TOO_LARGE");
    let r = raw
        .post(n.dist_url("/dist/v2/nope"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = raw.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 405);
    // Nothing was applied and the node still serves.
    assert_eq!(n.stats().await["items"], 0);
    assert_eq!(n.stats().await["tombstones"], 0);
    assert_eq!(n.put("after", "ok").await.status(), 200);
    assert_eq!(c.node(2).get("after").await.status(), 200);
}

/// A ping-req is relayed only to a member the relay knows, at the address it knows for
/// it: the address in the request is never dialled.
#[tokio::test]
async fn ping_req_reaches_only_known_members() {
    let c = Cluster::start(2, &[("AUTH_TOKEN", TOKEN)]).await;
    let bait = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bait_addr = bait.local_addr().unwrap().to_string();
    let ping_req = |target: &str| {
        let env = serde_json::json!({"v": 2, "from": "x", "from_addr": "x:1", "hlc": 1,
            "body": {"calls": [{"PingReq": {"seq": 7, "target_id": target,
                "target_addr": bait_addr, "members": []}}]}});
        rmp_serde::to_vec_named(&env).unwrap()
    };
    for (target, acked) in [("nobody", false), ("node-2", true)] {
        let (status, reply) = post_dist(c.node(1), "/dist/v2/batch", ping_req(target)).await;
        assert_eq!(status, 200);
        assert_eq!(
            reply["body"]["results"][0]["Ok"]["PingReq"]["acked"], acked,
            "{target}: {reply}"
        );
    }
    // The known target was probed at its own address, the unknown one not at all: the
    // address named in the requests never saw a connection.
    let dialled = tokio::time::timeout(Duration::from_millis(300), bait.accept()).await;
    assert!(
        dialled.is_err(),
        "the relay dialled the address a request named"
    );
}

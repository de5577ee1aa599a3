//! Strict quorums (docs/architecture.md, "Quorums"): a key's home owners come from every
//! member that has not left, dead ones included, and only their acknowledgements count.
//! During a partition at most one side holds a quorum of any key's home owners, so no
//! key is acknowledged on both sides; a write that cannot gather its quorum is refused
//! before anything is applied anywhere.

mod common;

use common::*;
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;

const KEYS: usize = 60;

/// Cuts the links between the nodes of `a` and those of `b` (1-based indexes) and waits
/// until each side sees the other dead.
async fn partition(c: &Cluster, a: &[usize], b: &[usize]) {
    c.cut_links(a, b).await;
    for (side, other) in [(a, b), (b, a)] {
        for i in side {
            for j in other {
                let n = c.node(*i);
                let id = format!("node-{j}");
                eventually(
                    &format!("{} to see {id} dead", n.id),
                    Duration::from_secs(15),
                    || async { (n.state_of(&id).await? == "dead").then_some(()) },
                )
                .await;
            }
        }
    }
}

async fn heal(c: &Cluster) {
    for n in &c.nodes {
        n.set_faults(json!({})).await;
    }
    c.wait_members(c.nodes.len(), Duration::from_secs(20)).await;
}

async fn owners(n: &Node, key: &str) -> Vec<String> {
    let r = n
        .send(
            reqwest::Method::GET,
            n.api_url(&format!("/v1/owners/{key}")),
        )
        .await;
    let v: serde_json::Value = r.json().await.unwrap();
    v["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap().to_string())
        .collect()
}

/// How many of `owners` are on the side made of the nodes `side` (1-based indexes).
fn on_side(owners: &[String], side: &[usize]) -> usize {
    let ids: HashSet<String> = side.iter().map(|i| format!("node-{i}")).collect();
    owners.iter().filter(|o| ids.contains(*o)).count()
}

async fn local_value(n: &Node, key: &str) -> Option<String> {
    let v = n.mgmt_json(&format!("/debug/local/{key}")).await;
    v["value"].as_str().map(str::to_owned)
}

/// A 2|3 partition of a 5-node RF 3 cluster: the side holding two of a key's three home
/// owners takes its quorum writes, the other side refuses them before applying anything;
/// no key is acknowledged on both sides, and after healing every key holds the value its
/// side acknowledged.
#[tokio::test]
async fn a_partition_never_acknowledges_a_key_on_both_sides() {
    let c = Cluster::start(5, &[("REPLICATION", "3")]).await;
    let (major, minor) = ([1, 2, 3], [4, 5]);
    let mut homes = Vec::new();
    for i in 0..KEYS {
        homes.push(owners(c.node(1), &format!("s{i}")).await);
    }
    partition(&c, &major, &minor).await;
    // Dead members stay home owners.
    for (i, home) in homes.iter().enumerate() {
        assert_eq!(&owners(c.node(4), &format!("s{i}")).await, home);
    }

    let mut acked_by = Vec::new();
    for (i, home) in homes.iter().enumerate() {
        let key = format!("s{i}");
        let maj = c
            .node(1)
            .put_q(&key, "consistency=quorum", "majority")
            .await;
        let maj_status = maj.status().as_u16();
        let maj_body = maj.text().await.unwrap();
        let min = c
            .node(4)
            .put_q(&key, "consistency=quorum", "minority")
            .await;
        let min_status = min.status().as_u16();
        let min_body = min.text().await.unwrap();
        assert!(
            !(maj_status == 200 && min_status == 200),
            "{key} (home owners {home:?}) acknowledged on both sides"
        );
        let (winner, loser_status, loser_body, losers): (&str, u16, &str, &[usize]) =
            if on_side(home, &minor) >= 2 {
                assert_eq!(min_status, 200, "{key} {home:?}: {min_body}");
                ("minority", maj_status, &maj_body, &major)
            } else {
                assert_eq!(maj_status, 200, "{key} {home:?}: {maj_body}");
                ("majority", min_status, &min_body, &minor)
            };
        assert_error(loser_status, loser_body, 503, "QUORUM_FAILED");
        assert!(
            loser_body.contains("refused before anything was applied"),
            "{key}: {loser_body}"
        );
        // Nothing of the refused write is anywhere on the refusing side.
        for n in losers {
            assert_eq!(
                local_value(c.node(*n), &key).await,
                None,
                "{key} on node-{n}"
            );
        }
        acked_by.push(winner);
    }
    assert!(acked_by.contains(&"minority") && acked_by.contains(&"majority"));
    let m = c.node(4).mgmt_json("/dist/metrics").await;
    assert!(
        m["writes_refused_unreachable_total"].as_u64().unwrap() > 0,
        "{m}"
    );
    assert_eq!(m["membership_minority"], 1, "{m}");

    heal(&c).await;
    for (i, winner) in acked_by.iter().enumerate() {
        let key = format!("s{i}");
        let r = c.node(2).get_q(&key, "consistency=quorum").await;
        assert_eq!(r.status(), 200, "{key}");
        assert_eq!(&r.text().await.unwrap(), winner, "{key}");
    }
}

/// With `HYPERCACHE_SLOPPY_QUORUM=true` each side of a partition builds its ring from
/// the members it reaches: stand-ins take the writes and both sides acknowledge the same
/// keys (the documented cost of availability first).
#[tokio::test]
async fn sloppy_quorums_acknowledge_on_both_sides() {
    let c = Cluster::start(5, &[("REPLICATION", "3"), ("SLOPPY_QUORUM", "true")]).await;
    partition(&c, &[1, 2, 3], &[4, 5]).await;
    for i in 0..10 {
        let key = format!("y{i}");
        assert_eq!(
            c.node(1)
                .put_q(&key, "consistency=quorum", "a")
                .await
                .status(),
            200
        );
        assert_eq!(
            c.node(4)
                .put_q(&key, "consistency=quorum", "b")
                .await
                .status(),
            200
        );
        let on_minority = owners(c.node(4), &key).await;
        assert!(on_minority.iter().all(|o| o == "node-4" || o == "node-5"));
    }
}

/// A dead member stays a home owner (writes to its keys still need the two live owners
/// and queue a hint for it) until an operator removes it; then it leaves the ring on
/// every node.
#[tokio::test]
async fn an_operator_removes_a_dead_member() {
    let mut c = Cluster::start(4, &[("REPLICATION", "3")]).await;
    c.node_mut(4).kill9().await;
    for i in 1..=3 {
        let n = c.node(i);
        eventually(
            &format!("{} to see node-4 dead", n.id),
            Duration::from_secs(15),
            || async { (n.state_of("node-4").await? == "dead").then_some(()) },
        )
        .await;
    }
    let mut home_of_4 = None;
    for i in 0..50 {
        let key = format!("r{i}");
        if owners(c.node(1), &key)
            .await
            .contains(&"node-4".to_string())
        {
            home_of_4 = Some(key);
            break;
        }
    }
    let key = home_of_4.expect("some key has node-4 among its home owners");
    let r = c.node(1).put_q(&key, "consistency=quorum", "v").await;
    assert_eq!(r.status(), 200);
    let m = c.node(1).mgmt_json("/dist/metrics").await;
    assert!(m["hints_pending"].as_u64().unwrap() >= 1, "{m}");

    let remove = |id: &str| {
        let n = c.node(1);
        let url = n.mgmt_url(&format!("/cluster/members/{id}/remove"));
        async move { n.send(reqwest::Method::POST, url).await }
    };
    let r = remove("node-9").await;
    let s = r.status().as_u16();
    assert_error(s, &r.text().await.unwrap(), 404, "NOT_FOUND");
    let r = remove("node-2").await;
    let s = r.status().as_u16();
    assert_error(s, &r.text().await.unwrap(), 409, "CONFLICT");
    let r = remove("node-1").await;
    let s = r.status().as_u16();
    assert_error(s, &r.text().await.unwrap(), 409, "CONFLICT");
    let r = remove("node-4").await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["removed"]["state"], "left", "{v}");

    for i in 1..=3 {
        let n = c.node(i);
        eventually(
            &format!("{} to take node-4 out of the ring", n.id),
            Duration::from_secs(10),
            || async {
                let ring = n.mgmt_json("/cluster/ring").await;
                let nodes: Vec<&str> = ring["nodes"]
                    .as_array()?
                    .iter()
                    .filter_map(|x| x["id"].as_str())
                    .collect();
                (nodes.len() == 3 && !nodes.contains(&"node-4")).then_some(())
            },
        )
        .await;
    }
    assert!(!owners(c.node(2), &key)
        .await
        .contains(&"node-4".to_string()));
    let m = c.node(1).mgmt_json("/dist/metrics").await;
    assert_eq!(m["members_removed_total"], 1, "{m}");
}

/// A node that has peers does not stamp client writes before it has merged clocks with
/// one of them: with every seed unreachable a write is refused with 503
/// `CLOCK_NOT_SYNCED` (and `Retry-After`) and nothing is stored.
#[tokio::test]
async fn a_node_with_peers_stamps_no_write_before_it_heard_from_one() {
    let seed = format!("node-2@127.0.0.1:{}", free_port());
    let n = Node::start(
        "gate",
        &[
            ("AUTH_TOKEN", TOKEN),
            ("REPLICATION", "1"),
            ("SEEDS", &seed),
        ],
    )
    .await;
    let r = n.put_q("k", "consistency=one", "v").await;
    let s = r.status().as_u16();
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_error(s, &r.text().await.unwrap(), 503, "CLOCK_NOT_SYNCED");
    assert_eq!(local_value(&n, "k").await, None);
    let m = n.mgmt_json("/dist/metrics").await;
    assert!(m["clock_sync_waits_total"].as_u64().unwrap() >= 1, "{m}");
}

//! Acknowledged writes are the ones a later read returns: a write answered
//! `stored: true` is held by enough owners at a version no other copy beats
//! (docs/architecture.md, "Write path").

mod common;

use common::*;
use serde_json::json;

/// An owner holds a newer version of the key than the coordinator's clock would stamp
/// (a peer's clock ahead, or this node restarted below stamps its peers pushed it to):
/// the write is stamped again above it instead of being acknowledged as stored while
/// nobody holds it.
#[tokio::test]
async fn a_write_below_a_newer_copy_is_stamped_again_not_lost() {
    let n = Node::start("solo", &[("AUTH_TOKEN", TOKEN), ("REPLICATION", "1")]).await;
    // A copy stamped 30 s ahead (within the allowed drift, so it is accepted).
    let ahead = now_ms() + 30_000;
    let (s, reply) = post_dist(
        &n,
        "/dist/v2/batch",
        batch(
            json!([{"Replicate": {"writes": [{"key": "k", "write": write(ahead, b"planted")}]}}]),
        ),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        reply["body"]["results"][0]["Ok"]["Replicate"]["outcomes"][0], "Applied",
        "{reply}"
    );
    assert_eq!(n.get("k").await.text().await.unwrap(), "planted");

    let r = n.put("k", "mine").await;
    assert_eq!(r.status(), 200);
    let put: serde_json::Value = r.json().await.unwrap();
    assert_eq!(put["stored"], true);
    assert_eq!(
        n.get("k").await.text().await.unwrap(),
        "mine",
        "the acknowledged write is what a read returns"
    );
    // The same for a delete (the clock has merged the first copy's stamp: the second
    // copy is planted further ahead).
    let (s, _) = post_dist(
        &n,
        "/dist/v2/batch",
        batch(
            json!([{"Replicate": {"writes": [{"key": "d", "write": write(ahead + 10_000, b"planted")}]}}]),
        ),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(n.delete("d").await.status(), 200);
    assert_eq!(n.get("d").await.status(), 404);
    let m = n.mgmt_json("/dist/metrics").await;
    assert!(m["version_conflicts_total"].as_u64().unwrap() >= 2, "{m}");
}

/// A peer whose clock differs by more than the allowed drift is refused before anything
/// is applied, with its own code (so the sender neither counts an apply nor queues hints
/// that could never be delivered).
#[tokio::test]
async fn clock_skew_is_refused_before_anything_is_applied() {
    let n = Node::start("skew", &[("AUTH_TOKEN", TOKEN)]).await;
    for offset in [-120_000i64, 120_000] {
        let sender_now = (now_ms() as i64 + offset) as u64;
        let env = json!({"v": 2, "from": "peer", "from_addr": "127.0.0.1:1",
            "hlc": now_ms() << 16, "now_ms": sender_now,
            "body": {"calls": [{"Replicate": {"writes": [{"key": "k", "write": write(now_ms(), b"v")}]}}]}});
        let (s, reply) =
            post_dist(&n, "/dist/v2/batch", rmp_serde::to_vec_named(&env).unwrap()).await;
        assert_eq!(s, 400, "{reply}");
        assert_eq!(reply["code"], "CLOCK_SKEW", "{reply}");
    }
    assert_eq!(n.get("k").await.status(), 404, "nothing applied");
    let m = n.mgmt_json("/dist/metrics").await;
    assert_eq!(m["clock_skew_refusals_total"], 2, "{m}");
    assert!(m["clock_drift_max_ms"].as_u64().unwrap() >= 119_000, "{m}");
    // Within the drift: applied.
    let env = json!({"v": 2, "from": "peer", "from_addr": "127.0.0.1:1",
        "hlc": now_ms() << 16, "now_ms": now_ms() - 5_000,
        "body": {"calls": [{"Replicate": {"writes": [{"key": "k", "write": write(now_ms(), b"v")}]}}]}});
    let (s, _) = post_dist(&n, "/dist/v2/batch", rmp_serde::to_vec_named(&env).unwrap()).await;
    assert_eq!(s, 200);
    assert_eq!(n.get("k").await.status(), 200);
}

/// Deletes are remembered for the tombstone retention whatever the load: past the
/// tombstone budget a delete is refused (and changes nothing) instead of an older
/// tombstone being dropped early.
#[tokio::test]
async fn tombstones_are_kept_for_their_retention_and_a_full_budget_refuses_deletes() {
    let n = Node::start(
        "tomb",
        &[
            ("SHARDS", "1"),
            ("TOMBSTONE_BYTES", "1072"),
            ("CAPACITY", "5"),
        ],
    )
    .await;
    let mut refused = None;
    for i in 0..40 {
        let key = format!("d{i:02}");
        assert_eq!(n.put(&key, "v").await.status(), 200);
        let r = n.delete(&key).await;
        if r.status() == 503 {
            let s = r.status().as_u16();
            assert_error(s, &r.text().await.unwrap(), 503, "TOMBSTONES_FULL");
            refused = Some(i);
            break;
        }
        assert_eq!(r.status(), 200);
    }
    let refused = refused.expect("a delete past the budget is refused");
    // 1072 bytes hold 1072 / (3 + 48) = 21 tombstones of three-byte keys.
    assert_eq!(refused, 21);
    // The refused delete changed nothing; every earlier delete is still remembered,
    // although live writes (capacity 5) have evicted values since.
    assert_eq!(n.get(&format!("d{refused:02}")).await.status(), 200);
    let st = n.stats().await;
    assert_eq!(st["tombstones"], 21, "{st}");
    for i in 0..refused {
        assert_eq!(n.get(&format!("d{i:02}")).await.status(), 404);
    }
    let m = n.mgmt_json("/dist/metrics").await;
    assert_eq!(m["tombstones_refused_total"], 1, "{m}");
    assert_eq!(m["tombstone_bytes"], 21 * 51, "{m}");
}

//! The client API's item routes beyond the raw value (docs/compatibility.md) against
//! real nodes: the JSON item envelope, `HEAD` metadata headers, the batch routes and
//! their bounds, `/v1/me`, and the management routes `/dist/owners` and
//! `/trigger-expiration`.

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

async fn post_json(n: &Node, path: &str, body: &Value) -> (u16, Value) {
    let r = n
        .http
        .post(n.api_url(path))
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| json!({ "raw": text })),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn item_envelope_and_head_carry_the_metadata() {
    let n = Node::start("meta", &[("AUTH_TOKEN", TOKEN)]).await;
    let put = n
        .http
        .put(n.api_url("/v1/cache/greeting?ttl=60s"))
        .bearer_auth(TOKEN)
        .body(vec![0u8, 1, 2, 255])
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);

    // Raw bytes stay the default.
    let raw = n.get("greeting").await;
    assert_eq!(raw.headers()["content-type"], "application/octet-stream");
    assert_eq!(raw.bytes().await.unwrap().to_vec(), vec![0u8, 1, 2, 255]);

    let r = n
        .http
        .get(n.api_url("/v1/cache/greeting"))
        .bearer_auth(TOKEN)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["key"], "greeting");
    assert_eq!(e["value_encoding"], "base64");
    assert_eq!(
        STANDARD.decode(e["value"].as_str().unwrap()).unwrap(),
        vec![0u8, 1, 2, 255]
    );
    let ttl = e["ttl_ms"].as_u64().unwrap();
    assert!(ttl > 50_000 && ttl <= 60_000, "{e}");
    assert!(e["expires_at"].as_str().unwrap().ends_with('Z'), "{e}");
    assert!(e["last_updated"].as_str().unwrap().ends_with('Z'), "{e}");
    assert!(e["version"].as_u64().unwrap() > 0, "{e}");
    assert_eq!(e["origin"], "meta");
    assert_eq!(e["node"], "meta");
    assert_eq!(e["owners"], json!(["meta"]));

    // HEAD: the same facts as headers, no body.
    let h = n.send(Method::HEAD, n.api_url("/v1/cache/greeting")).await;
    assert_eq!(h.status(), 200);
    let hv = |name: &str| {
        h.headers()
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing: {:?}", h.headers()))
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(hv("x-cache-version"), e["version"].to_string());
    assert_eq!(hv("x-cache-origin"), "meta");
    assert_eq!(hv("x-cache-node"), "meta");
    assert_eq!(hv("x-cache-owners"), "meta");
    assert_eq!(hv("x-cache-expires-at"), e["expires_at"].as_str().unwrap());
    assert!(hv("x-cache-ttl-ms").parse::<u64>().unwrap() <= 60_000);
    assert_eq!(
        hv("x-cache-last-updated"),
        e["last_updated"].as_str().unwrap()
    );
    assert!(h.bytes().await.unwrap().is_empty());
    // Without a ttl there are no expiry headers; a miss is a bare 404.
    assert_eq!(n.put("forever", "v").await.status(), 200);
    let h = n.send(Method::HEAD, n.api_url("/v1/cache/forever")).await;
    assert_eq!(h.status(), 200);
    assert!(h.headers().get("x-cache-ttl-ms").is_none());
    assert!(h.headers().get("x-cache-expires-at").is_none());
    let h = n.send(Method::HEAD, n.api_url("/v1/cache/missing")).await;
    assert_eq!(h.status(), 404);
    // Auth applies to HEAD too.
    let h = n
        .http
        .head(n.api_url("/v1/cache/greeting"))
        .send()
        .await
        .unwrap();
    assert_eq!(h.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_answer_per_item_within_their_bounds() {
    let n = Node::start(
        "batch",
        &[("AUTH_TOKEN", TOKEN), ("MAX_VALUE_BYTES", "1024")],
    )
    .await;
    let (s, b) = post_json(
        &n,
        "/v1/cache/batch/put",
        &json!({"items": [
            {"key": "a", "value": "plain text"},
            {"key": "b", "value": STANDARD.encode([0u8, 200, 7]), "value_encoding": "base64", "ttl_ms": 60000},
            {"key": "c", "value": "%%%", "value_encoding": "base64"},
            {"key": "d", "value": "x", "value_encoding": "hex"},
            {"key": "e", "value": "x".repeat(2000)},
            {"key": "", "value": "x"},
            {"key": "f", "value": "x", "ttl_ms": 0},
        ]}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["node"], "batch");
    let r = b["results"].as_array().unwrap();
    assert_eq!(r.len(), 7);
    assert_eq!(r[0]["stored"], true);
    assert_eq!(r[0]["bytes"], 10);
    assert_eq!(r[0]["owners"], json!(["batch"]));
    assert_eq!(r[1]["stored"], true);
    assert_eq!(r[1]["bytes"], 3);
    for (i, code) in [
        (2, "BAD_REQUEST"),
        (3, "BAD_REQUEST"),
        (4, "PAYLOAD_TOO_LARGE"),
        (5, "BAD_REQUEST"),
    ] {
        assert_eq!(r[i]["stored"], false, "{}", r[i]);
        assert_eq!(r[i]["code"], code, "{}", r[i]);
        assert!(r[i]["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    assert_eq!(r[6]["stored"], true);
    // Nothing refused was stored.
    for k in ["c", "d", "e"] {
        assert_eq!(n.get(k).await.status(), 404, "{k}");
    }
    assert_eq!(n.get("a").await.text().await.unwrap(), "plain text");

    let (s, b) = post_json(
        &n,
        "/v1/cache/batch/get",
        &json!({"keys": ["a", "b", "zz", "", "f"]}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let r = b["results"].as_array().unwrap();
    assert_eq!(r[0]["found"], true);
    assert_eq!(
        STANDARD.decode(r[0]["value"].as_str().unwrap()).unwrap(),
        b"plain text"
    );
    assert_eq!(r[0]["value_encoding"], "base64");
    assert!(r[0].get("ttl_ms").is_none(), "{}", r[0]);
    assert_eq!(
        STANDARD.decode(r[1]["value"].as_str().unwrap()).unwrap(),
        vec![0u8, 200, 7]
    );
    assert!(r[1]["ttl_ms"].as_u64().unwrap() <= 60_000);
    assert_eq!(r[1]["origin"], "batch");
    assert_eq!(r[2], json!({"key": "zz", "found": false}));
    assert_eq!(r[3], json!({"key": "", "found": false}));
    assert_eq!(r[4]["found"], true);

    let (s, b) = post_json(
        &n,
        "/v1/cache/batch/delete",
        &json!({"keys": ["a", "never", ""]}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let r = b["results"].as_array().unwrap();
    assert_eq!(r[0]["deleted"], true);
    assert_eq!(r[1]["deleted"], true, "deleting a missing key succeeds");
    assert_eq!(r[2]["deleted"], false);
    assert_eq!(r[2]["code"], "BAD_REQUEST");
    assert_eq!(n.get("a").await.status(), 404);

    // Bounds and malformed bodies: the whole request is refused, nothing changes.
    let many: Vec<String> = (0..1001).map(|i| format!("k{i}")).collect();
    let (s, b) = post_json(&n, "/v1/cache/batch/delete", &json!({"keys": many})).await;
    assert_error(s, &b.to_string(), 400, "BAD_REQUEST");
    assert!(b["error"].as_str().unwrap().contains("1000"), "{b}");
    assert_eq!(
        n.get("b").await.status(),
        200,
        "an over-long batch deleted nothing"
    );
    let (s, b) = post_json(&n, "/v1/cache/batch/get", &json!({"keys": "a"})).await;
    assert_error(s, &b.to_string(), 400, "BAD_REQUEST");
    let (s, b) = post_json(
        &n,
        "/v1/cache/batch/put",
        &json!({"items": [{"key": "x", "value": "v", "extra": 1}]}),
    )
    .await;
    assert_error(s, &b.to_string(), 400, "BAD_REQUEST");
    assert_eq!(n.get("x").await.status(), 404);
    let r = n
        .http
        .post(n.api_url("/v1/cache/batch/put"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(vec![b' '; 33 << 20])
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    assert_error(s, &r.text().await.unwrap(), 413, "PAYLOAD_TOO_LARGE");
    let r = n
        .http
        .post(n.api_url("/v1/cache/batch/get"))
        .json(&json!({"keys": ["b"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "batches need the token");
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_are_coordinated_across_the_cluster() {
    let c = Cluster::start(3, &[("AUTH_TOKEN", TOKEN)]).await;
    let items: Vec<Value> = (0..100)
        .map(|i| json!({"key": format!("bk{i}"), "value": format!("v{i}")}))
        .collect();
    let (s, b) = post_json(c.node(1), "/v1/cache/batch/put", &json!({ "items": items })).await;
    assert_eq!(s, 200, "{b}");
    assert!(b["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["stored"] == true && r["owners"].as_array().unwrap().len() == 3));
    let keys: Vec<String> = (0..100).map(|i| format!("bk{i}")).collect();
    let (s, b) = post_json(c.node(3), "/v1/cache/batch/get", &json!({ "keys": keys })).await;
    assert_eq!(s, 200);
    for (i, r) in b["results"].as_array().unwrap().iter().enumerate() {
        assert_eq!(r["found"], true, "{r}");
        assert_eq!(
            STANDARD.decode(r["value"].as_str().unwrap()).unwrap(),
            format!("v{i}").into_bytes()
        );
        assert_eq!(r["origin"], "node-1", "{r}");
    }
    // Every node holds every key (RF 3 on 3 nodes).
    for i in 1..=3 {
        let st = c.node(i).stats().await;
        assert!(st["items"].as_u64().unwrap() >= 100, "node-{i}: {st}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_routes() {
    let n = Node::start("who", &[("AUTH_TOKEN", TOKEN)]).await;
    let me: Value = n
        .send(Method::GET, n.api_url("/v1/me"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        me,
        json!({"id": "default", "scopes": ["read", "write", "admin"],
               "capabilities": ["cache.read", "cache.write", "cache.admin"]})
    );
    let can: Value = n
        .send(Method::GET, n.api_url("/v1/me/can?capability=cache.write"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(can, json!({"capability": "cache.write", "allowed": true}));
    for q in ["", "?capability=cache.fly", "?capability="] {
        let r = n
            .send(Method::GET, n.api_url(&format!("/v1/me/can{q}")))
            .await;
        let s = r.status().as_u16();
        assert_error(s, &r.text().await.unwrap(), 400, "BAD_REQUEST");
    }
    let r = n.http.get(n.api_url("/v1/me")).send().await.unwrap();
    assert_eq!(r.status(), 401);

    let open = Node::start("anon", &[]).await;
    let me: Value = open
        .http
        .get(open.api_url("/v1/me"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["id"], "anonymous");
}

#[tokio::test(flavor = "multi_thread")]
async fn management_owners_and_trigger_expiration() {
    let n = Node::start("mg", &[("AUTH_TOKEN", TOKEN), ("SWEEP_INTERVAL", "1h")]).await;
    let r = n
        .send(Method::GET, n.mgmt_url("/dist/owners?key=user%3A1"))
        .await;
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b, json!({"key": "user:1", "owners": ["mg"]}));
    let r = n.send(Method::GET, n.mgmt_url("/dist/owners")).await;
    let s = r.status().as_u16();
    assert_error(s, &r.text().await.unwrap(), 400, "BAD_REQUEST");

    // A key past its ttl stays in memory until a sweep; the route runs one now.
    let put = n
        .http
        .put(n.api_url("/v1/cache/short?ttl=50ms"))
        .bearer_auth(TOKEN)
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(
        n.stats().await["items"],
        1,
        "not swept yet (the sweep runs hourly)"
    );
    let r = n
        .send(Method::POST, n.mgmt_url("/trigger-expiration"))
        .await;
    assert_eq!(r.status(), 202);
    eventually(
        "the triggered sweep expires the key",
        Duration::from_secs(5),
        || async {
            let st = n.stats().await;
            (st["items"] == 0 && st["expirations"].as_u64() == Some(1)).then_some(())
        },
    )
    .await;
    let r = n
        .http
        .post(n.mgmt_url("/trigger-expiration"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

async fn browse(n: &Node, query: &str) -> (u16, Value) {
    let r = n
        .http
        .get(n.api_url(&format!("/v1/cache/keys?{query}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn key_list(v: &Value) -> Vec<String> {
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn key_browser_pages_through_the_whole_cluster() {
    // RF 2 on 3 nodes: no node holds every key, so a page needs the merge.
    let mut c = Cluster::start(3, &[("AUTH_TOKEN", TOKEN), ("REPLICATION", "2")]).await;
    let users: Vec<String> = (0..300).map(|i| format!("user:{i:03}")).collect();
    let items: Vec<Value> = users
        .iter()
        .map(|k| json!({"key": k, "value": "v"}))
        .chain((0..50).map(|i| json!({"key": format!("other/{i}"), "value": "v"})))
        .collect();
    let (s, b) = post_json(c.node(1), "/v1/cache/batch/put", &json!({ "items": items })).await;
    assert_eq!(s, 200, "{b}");
    for i in 1..=3 {
        let held = c.node(i).stats().await["items"].as_u64().unwrap();
        assert!(
            held < 350,
            "node-{i} holds every key ({held}); the test needs RF < N"
        );
    }

    // Pages of 100 in key order, from another node than the writer.
    let mut seen = Vec::new();
    let mut cursor = String::from("0");
    loop {
        let (s, page) = browse(c.node(2), &format!("q=user:&limit=100&cursor={cursor}")).await;
        assert_eq!(s, 200, "{page}");
        assert_eq!(page["total_matched"], 300, "{page}");
        assert_eq!(page["truncated"], false);
        assert_eq!(page["node"], "node-2");
        assert!(page.get("partial_nodes").is_none(), "{page}");
        seen.extend(key_list(&page));
        cursor = page["next_cursor"].as_str().unwrap().to_owned();
        if cursor.is_empty() {
            break;
        }
    }
    assert_eq!(seen, users);

    // Globs follow path.Match: `*` stops at '/'.
    let (_, b) = browse(c.node(3), "q=user:1*&limit=500").await;
    assert_eq!(key_list(&b), users[100..200].to_vec());
    let (_, b) = browse(c.node(3), "q=*&limit=500").await;
    assert_eq!(b["total_matched"], 300, "only the keys without '/'");
    let (_, b) = browse(c.node(3), "q=other/*&limit=500").await;
    assert_eq!(b["total_matched"], 50);
    let (_, b) = browse(c.node(3), "q=user:0[0-4]?&limit=500").await;
    assert_eq!(key_list(&b), users[0..50].to_vec());

    // `max` caps the merged set: the smallest keys, flagged as truncated.
    let (_, b) = browse(c.node(1), "q=user:&max=40&limit=1000").await;
    assert_eq!(key_list(&b), users[..40].to_vec());
    assert_eq!(b["truncated"], true);
    assert_eq!(b["total_matched"], 40);
    assert_eq!(b["next_cursor"], "");
    // A cursor past the end is an empty last page.
    let (s, b) = browse(c.node(1), "q=user:&cursor=999").await;
    assert_eq!(
        (s, key_list(&b).len(), b["next_cursor"].clone()),
        (200, 0, json!(""))
    );

    // Bad parameters are 400 and name themselves.
    for (q, word) in [
        ("cursor=-1", "cursor"),
        ("limit=0", "limit"),
        ("max=abc", "max"),
        ("q=user:[0-", "glob"),
    ] {
        let (s, b) = browse(c.node(1), q).await;
        assert_eq!(s, 400, "{q}: {b}");
        assert_eq!(b["code"], "BAD_REQUEST");
        assert!(b["error"].as_str().unwrap().contains(word), "{q}: {b}");
    }

    // Deleted and expired keys are not listed.
    assert_eq!(c.node(1).delete("user:000").await.status(), 200);
    let r = c
        .node(1)
        .http
        .put(c.node(1).api_url("/v1/cache/brief?ttl=1s"))
        .bearer_auth(TOKEN)
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, b) = browse(c.node(2), "q=user:&limit=1").await;
    assert_eq!(key_list(&b), vec!["user:001"]);
    eventually(
        "the expired key leaves the listing",
        Duration::from_secs(10),
        || async {
            let (_, b) = browse(c.node(2), "q=brief").await;
            (b["total_matched"] == 0).then_some(())
        },
    )
    .await;

    // A node that is down is named; the keys it shares with the others are still there.
    c.node_mut(3).kill9().await;
    let b = eventually(
        "node-3 listed as missing",
        Duration::from_secs(30),
        || async {
            let (_, b) = browse(c.node(1), "q=user:&limit=500").await;
            (b["partial_nodes"] == json!(["node-3"])).then_some(b)
        },
    )
    .await;
    assert_eq!(b["total_matched"], 299, "RF 2: every key has a live copy");
}

//! `GET /cluster/events`: the Server-Sent Events stream of the management listener.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// An open event stream and the events read from it so far.
struct Events {
    resp: reqwest::Response,
    buf: String,
}

impl Events {
    async fn open(n: &Node) -> Events {
        let resp = n
            .http
            .get(n.mgmt_url("/cluster/events"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Events {
            resp,
            buf: String::new(),
        }
    }

    /// The next complete event `(name, data)`; `None` when the stream ended.
    async fn next(&mut self) -> Option<(String, serde_json::Value)> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut name = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        name = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).expect("data is one line of JSON"));
                    }
                }
                match (name, data) {
                    (Some(n), Some(d)) => return Some((n, d)),
                    // `retry:` and comments.
                    _ => continue,
                }
            }
            // Only a clean end of the body is the end of the stream; a broken
            // connection is a failure.
            let chunk = self.resp.chunk().await.expect("the stream broke")?;
            self.buf
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
        }
    }

    /// Reads events until `pick` accepts one, within `deadline`.
    async fn until<T>(
        &mut self,
        what: &str,
        deadline: Duration,
        mut pick: impl FnMut(&str, &serde_json::Value) -> Option<T>,
    ) -> T {
        let end = Instant::now() + deadline;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.next()).await {
                Ok(Some((name, data))) => {
                    if let Some(t) = pick(&name, &data) {
                        return t;
                    }
                }
                Ok(None) => panic!("the stream ended while waiting for {what}"),
                Err(_) => panic!("no {what} within {deadline:?}"),
            }
        }
    }
}

fn state_of(members: &serde_json::Value, id: &str) -> Option<String> {
    members["members"]
        .as_array()?
        .iter()
        .find(|m| m["ID"] == id)
        .map(|m| m["State"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn membership_heartbeat_and_a_leaving_node() {
    let mut c = Cluster::start(3, &[]).await;
    let mut ev = Events::open(c.node(1)).await;
    // First the members as they are, in the Go server's shape, and a heartbeat.
    let first = ev
        .until("a members event", Duration::from_secs(5), |n, d| {
            (n == "members").then(|| d.clone())
        })
        .await;
    assert_eq!(first["members"].as_array().unwrap().len(), 3, "{first}");
    for id in ["node-1", "node-2", "node-3"] {
        assert_eq!(state_of(&first, id).as_deref(), Some("alive"), "{first}");
    }
    assert!(
        first["members"][0]["Address"].is_string() && first["members"][0]["Incarnation"].is_u64()
    );
    let hb = ev
        .until("a heartbeat", Duration::from_secs(5), |n, d| {
            (n == "heartbeat").then(|| d.clone())
        })
        .await;
    for k in [
        "heartbeatSuccess",
        "heartbeatFailure",
        "nodesRemoved",
        "readPrimaryPromote",
    ] {
        assert!(hb[k].is_u64(), "{k} in {hb}");
    }

    // A node leaves (SIGTERM drains it): the stream tells.
    c.node_mut(3).signal(libc::SIGTERM);
    ev.until("node-3 leaving", Duration::from_secs(20), |n, d| {
        (n == "members" && matches!(state_of(d, "node-3").as_deref(), Some("left" | "dead")))
            .then_some(())
    })
    .await;
    assert!(c
        .node_mut(3)
        .wait_exit(Duration::from_secs(20))
        .await
        .success());

    // A stream ends when its node stops, and does not hold the stop up.
    let stopping = Instant::now();
    c.node_mut(1).signal(libc::SIGTERM);
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ev.next()).await {
            Ok(None) => break,
            Ok(Some(_)) => continue,
            Err(_) => panic!("the stream did not end with its node"),
        }
    }
    assert!(c
        .node_mut(1)
        .wait_exit(Duration::from_secs(20))
        .await
        .success());
    assert!(
        stopping.elapsed() < Duration::from_secs(15),
        "{:?}",
        stopping.elapsed()
    );
    let logs = c.node(1).logs();
    assert!(
        !logs.contains("did not stop within"),
        "the open stream held the listener's stop up: {logs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_are_bounded_and_need_the_read_scope() {
    let n = Node::start("events-cap", &[("AUTH_TOKEN", TOKEN)]).await;
    let r = n
        .http
        .get(n.mgmt_url("/cluster/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let open = |n: &Node| {
        n.http
            .get(n.mgmt_url("/cluster/events"))
            .bearer_auth(TOKEN)
            .send()
    };
    let mut streams = Vec::new();
    for _ in 0..32 {
        let r = open(&n).await.unwrap();
        assert_eq!(r.status(), 200);
        streams.push(r);
    }
    let r = open(&n).await.unwrap();
    assert_eq!(r.status(), 503);
    assert_error(503, &r.text().await.unwrap(), 503, "OVERLOADED");
    // A reader that goes away gives its place back.
    streams.truncate(31);
    eventually("a freed stream place", Duration::from_secs(10), || async {
        let r = open(&n).await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
}

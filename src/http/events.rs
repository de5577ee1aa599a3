//! `GET /cluster/events`: the cluster as a stream of Server-Sent Events, for dashboards
//! and operators' scripts (the Go server's event names for membership and heartbeat,
//! plus drain, rebalance, hints and anti-entropy).
//!
//! A stream reads only what the node already publishes (the membership view and the
//! metric atomics): it never calls an actor, so any number of readers cost the actors
//! nothing. It wakes on a membership change and once a second; each wake sends the
//! events whose figures changed, and always a `heartbeat`, which also keeps proxies and
//! the listener's idle timeout from closing a quiet stream. A reader that stops reading
//! is closed by the idle timeout once its writes stall. Streams are bounded per node
//! ([`MAX_STREAMS`]) and end when the management listener stops.

use super::AppState;
use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hypercache_actors::membership::ClusterView;
use hypercache_actors::metrics::Metrics;
use serde_json::{json, Value};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, OwnedSemaphorePermit};

/// Event streams one node serves at once; past it `503 OVERLOADED`.
pub const MAX_STREAMS: usize = 32;

/// How often a stream reports, and the longest a changed figure waits to be sent.
const TICK: Duration = Duration::from_secs(1);

/// The reconnect delay a client is told to use (`retry:`), in milliseconds.
const RETRY_MS: u64 = 5000;

/// `GET /cluster/events`.
pub async fn events(axum::extract::State(s): axum::extract::State<AppState>) -> Response {
    let Ok(permit) = s.event_streams.clone().try_acquire_owned() else {
        return super::error::ApiError::from(hypercache_actors::CacheError::Overloaded)
            .into_response();
    };
    let stream = Stream {
        node: s.node.clone(),
        replication: s.config.replication,
        view: s.node.view_watch(),
        stop: s.stop.clone(),
        last: Last::default(),
        first: true,
        view_closed: false,
        _permit: permit,
    };
    let body = futures_util::stream::unfold(stream, |mut st| async move {
        let chunk = st.next().await?;
        Some((Ok::<_, std::convert::Infallible>(chunk), st))
    });
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            // Tells nginx-style proxies not to hold the stream back.
            (
                header::HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// The figures last sent, to send only what changed.
#[derive(Default)]
struct Last {
    members: Option<Value>,
    drain: Option<Value>,
    rebalance: Option<Value>,
    hints: Option<Value>,
    anti_entropy: Option<Value>,
}

struct Stream {
    node: Arc<hypercache_actors::NodeHandle>,
    replication: usize,
    view: watch::Receiver<Arc<ClusterView>>,
    stop: watch::Receiver<bool>,
    last: Last,
    first: bool,
    view_closed: bool,
    _permit: OwnedSemaphorePermit,
}

impl Stream {
    /// The next chunk of events; `None` ends the stream (the listener is stopping).
    async fn next(&mut self) -> Option<Bytes> {
        let mut out = String::new();
        if self.first {
            self.first = false;
            out.push_str(&format!("retry: {RETRY_MS}\n\n"));
            self.changed(&mut out);
            heartbeat(&mut out, self.node.metrics());
            return Some(Bytes::from(out));
        }
        if *self.stop.borrow() {
            return None;
        }
        let membership_changed = tokio::select! {
            _ = tokio::time::sleep(TICK) => false,
            r = self.view.changed(), if !self.view_closed => {
                // The membership actor is gone (the node is stopping): the tick only.
                self.view_closed = r.is_err();
                r.is_ok()
            }
            _ = self.stop.wait_for(|s| *s) => return None,
        };
        self.changed(&mut out);
        if !membership_changed {
            heartbeat(&mut out, self.node.metrics());
        }
        if out.is_empty() {
            // A membership wake that changed nothing shown: a comment keeps the chunk
            // non-empty (an empty chunk would read as the end of the body to some clients).
            out.push_str(": no change\n\n");
        }
        Some(Bytes::from(out))
    }

    /// Appends every event whose figures changed since they were last sent.
    fn changed(&mut self, out: &mut String) {
        let view = self.view.borrow_and_update().clone();
        let m = self.node.metrics();
        let members = members(&view, self.replication);
        send_if_changed(out, "members", members, &mut self.last.members);
        send_if_changed(
            out,
            "drain",
            json!({
                "draining": self.node.is_draining(),
                "hintsHandedOff": get(&m.drain_hints_handed_off_total),
                "rebalancePending": get(&m.rebalance_pending),
                "hintsPending": get(&m.hints_pending),
            }),
            &mut self.last.drain,
        );
        send_if_changed(
            out,
            "rebalance",
            json!({
                "pending": get(&m.rebalance_pending),
                "moved": get(&m.rebalance_keys_total),
                "failed": get(&m.rebalance_failures_total),
                "batches": get(&m.rebalance_batches_total),
                "lastDurationMs": get(&m.rebalance_last_duration_ms),
            }),
            &mut self.last.rebalance,
        );
        send_if_changed(
            out,
            "hints",
            json!({
                "pending": get(&m.hints_pending),
                "bytes": get(&m.hints_bytes),
                "queued": get(&m.hints_queued_total),
                "replayed": get(&m.hints_replayed_total),
                "expired": get(&m.hints_expired_total),
                "dropped": get(&m.hints_dropped_total),
                "perPeer": m.hint_backlog.rows().into_iter().map(|(peer, n)| {
                    json!({"peer": peer, "pending": n})
                }).collect::<Vec<_>>(),
            }),
            &mut self.last.hints,
        );
        send_if_changed(
            out,
            "anti-entropy",
            json!({
                "rounds": get(&m.anti_entropy_rounds_total),
                "keysPushed": get(&m.anti_entropy_keys_pushed_total),
                "keysPulled": get(&m.anti_entropy_keys_pulled_total),
                "errors": get(&m.anti_entropy_errors_total),
                "lastDurationMs": get(&m.anti_entropy_last_duration_ms),
                "lastDifferingBuckets": get(&m.anti_entropy_last_differing_buckets),
            }),
            &mut self.last.anti_entropy,
        );
    }
}

fn get(a: &std::sync::atomic::AtomicU64) -> u64 {
    a.load(Relaxed)
}

/// The `members` event: the Go server's shape (`ID`, `Address`, `State`, `Incarnation`).
fn members(view: &ClusterView, replication: usize) -> Value {
    json!({
        "replication": replication,
        "virtualNodes": view.virtual_nodes(),
        "version": view.version,
        "self": view.self_id,
        "members": view.members.iter().map(|m| json!({
            "ID": m.id,
            "Address": m.address,
            "State": m.state,
            "Incarnation": m.incarnation,
        })).collect::<Vec<_>>(),
    })
}

/// The `heartbeat` event, every second: the Go server's counters (cumulative since
/// start) plus the member counts and the time.
fn heartbeat(out: &mut String, m: &Metrics) {
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    event(
        out,
        "heartbeat",
        &json!({
            "heartbeatSuccess": get(&m.heartbeat_success_total),
            "heartbeatFailure": get(&m.heartbeat_failure_total),
            "nodesRemoved": get(&m.members_removed_total),
            "readPrimaryPromote": get(&m.read_hedges_total),
            "alive": get(&m.members_alive),
            "suspect": get(&m.members_suspect),
            "dead": get(&m.members_dead),
            "time": unix_ms,
        }),
    );
}

fn send_if_changed(out: &mut String, name: &str, now: Value, last: &mut Option<Value>) {
    if last.as_ref() != Some(&now) {
        event(out, name, &now);
        *last = Some(now);
    }
}

/// One event; JSON has no raw newline, so `data:` is one line.
fn event(out: &mut String, name: &str, data: &Value) {
    out.push_str("event: ");
    out.push_str(name);
    out.push_str("\ndata: ");
    out.push_str(&data.to_string());
    out.push_str("\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_one_data_line_and_repeats_only_on_change() {
        let mut out = String::new();
        let mut last = None;
        send_if_changed(
            &mut out,
            "hints",
            json!({"pending": 1, "s": "a\nb"}),
            &mut last,
        );
        send_if_changed(
            &mut out,
            "hints",
            json!({"pending": 1, "s": "a\nb"}),
            &mut last,
        );
        assert_eq!(
            out, "event: hints\ndata: {\"pending\":1,\"s\":\"a\\nb\"}\n\n",
            "one event, newline escaped"
        );
        send_if_changed(&mut out, "hints", json!({"pending": 2}), &mut last);
        assert_eq!(out.matches("event: hints").count(), 2);
    }

    #[test]
    fn heartbeat_carries_the_go_counters() {
        let m = Metrics::default();
        m.heartbeat_success_total.store(5, Relaxed);
        m.members_removed_total.store(1, Relaxed);
        let mut out = String::new();
        heartbeat(&mut out, &m);
        let data = out
            .strip_prefix("event: heartbeat\ndata: ")
            .and_then(|s| s.strip_suffix("\n\n"))
            .expect("one heartbeat event");
        let v: Value = serde_json::from_str(data).expect("JSON data");
        assert_eq!(v["heartbeatSuccess"], 5);
        assert_eq!(v["heartbeatFailure"], 0);
        assert_eq!(v["nodesRemoved"], 1);
        assert!(v["readPrimaryPromote"].is_u64());
    }
}

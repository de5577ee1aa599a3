//! OpenTelemetry export against a real OTLP/HTTP receiver that decodes the official
//! protobuf messages: one PUT with a `traceparent` shows as one trace on every owner;
//! the node's metrics arrive; a receiver that goes away changes nothing for clients or
//! for shutdown.

mod common;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use common::*;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use prost::Message;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Received {
    /// `(service.instance.id, trace id hex, span name, parent span id hex)`.
    spans: Vec<(String, String, String, String)>,
    /// The attributes of every span, `key=value`.
    attributes: Vec<String>,
    /// `(service.instance.id, metric name)`.
    metrics: Vec<(String, String)>,
}

type Shared = Arc<Mutex<Received>>;

fn attr(attrs: &[KeyValue], key: &str) -> String {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            any_value::Value::StringValue(s) => s.clone(),
            other => format!("{other:?}"),
        })
        .unwrap_or_default()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn traces(State(r): State<Shared>, body: Bytes) -> &'static str {
    let req = ExportTraceServiceRequest::decode(body).expect("OTLP trace protobuf");
    let mut r = r.lock().unwrap();
    for rs in req.resource_spans {
        let node = attr(
            &rs.resource.unwrap_or_default().attributes,
            "service.instance.id",
        );
        for ss in rs.scope_spans {
            for s in ss.spans {
                for kv in &s.attributes {
                    r.attributes
                        .push(format!("{}={}", kv.key, attr(&s.attributes, &kv.key)));
                }
                r.spans.push((
                    node.clone(),
                    hex(&s.trace_id),
                    s.name.clone(),
                    hex(&s.parent_span_id),
                ));
            }
        }
    }
    ""
}

async fn metrics(State(r): State<Shared>, body: Bytes) -> &'static str {
    let req = ExportMetricsServiceRequest::decode(body).expect("OTLP metric protobuf");
    let mut r = r.lock().unwrap();
    for rm in req.resource_metrics {
        let node = attr(
            &rm.resource.unwrap_or_default().attributes,
            "service.instance.id",
        );
        for sm in rm.scope_metrics {
            for m in sm.metrics {
                r.metrics.push((node.clone(), m.name));
            }
        }
    }
    ""
}

/// A receiver on a free loopback port; dropping the handle's task stops it.
async fn receiver() -> (u16, Shared, tokio::task::JoinHandle<()>) {
    let shared: Shared = Arc::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/metrics", post(metrics))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, shared, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_put_is_one_trace_across_the_owners_and_metrics_arrive() {
    let (port, got, rx_task) = receiver().await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut c = Cluster::start(
        3,
        &[
            ("REPLICATION", "3"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
        ],
    )
    .await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let n1 = c.node(1);
    let r = n1
        .http
        .put(n1.api_url("/v1/cache/traced-key"))
        .header("traceparent", format!("00-{trace_id}-{parent}-01"))
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Every owner (replication 3: all three nodes) reports spans of that trace.
    eventually(
        "spans of the trace from all three owners",
        Duration::from_secs(20),
        || {
            let got = got.clone();
            async move {
                let r = got.lock().unwrap();
                let nodes: std::collections::BTreeSet<&str> = r
                    .spans
                    .iter()
                    .filter(|s| s.1 == trace_id)
                    .map(|s| s.0.as_str())
                    .collect();
                (nodes.len() == 3).then_some(())
            }
        },
    )
    .await;
    {
        let r = got.lock().unwrap();
        let ours: Vec<_> = r.spans.iter().filter(|s| s.1 == trace_id).collect();
        let root = ours
            .iter()
            .find(|s| s.0 == "node-1" && s.2.starts_with("PUT "))
            .unwrap_or_else(|| panic!("no request span on node-1: {ours:?}"));
        assert_eq!(
            root.3, parent,
            "the incoming traceparent is the request's parent"
        );
        assert!(
            ours.iter().any(|s| s.0 == "node-1" && s.2 == "peer.call"),
            "a span per peer call: {ours:?}"
        );
        for peer in ["node-2", "node-3"] {
            assert!(
                ours.iter().any(|s| s.0 == peer && s.2 == "dist.call"),
                "{peer} handled the replica write in the trace: {ours:?}"
            );
        }
        assert!(
            r.spans.iter().all(|s| !s.2.contains("traced-key")),
            "no key in span names"
        );
        assert!(
            r.attributes.iter().all(|a| !a.contains("traced-key")),
            "no key in span attributes without HYPERCACHE_TRACE_KEYS: {:?}",
            r.attributes
        );
        assert!(r
            .attributes
            .iter()
            .any(|a| a == "http.route=/v1/cache/{key}"));
    }
    // Metrics: the same families /metrics shows, from every node.
    eventually("metrics from every node", Duration::from_secs(20), || {
        let got = got.clone();
        async move {
            let r = got.lock().unwrap();
            let nodes: std::collections::BTreeSet<&str> = r
                .metrics
                .iter()
                .filter(|m| m.1 == "hypercache_puts_total")
                .map(|m| m.0.as_str())
                .collect();
            let histogram = r
                .metrics
                .iter()
                .any(|m| m.1 == "hypercache_request_duration_seconds");
            let process = r
                .metrics
                .iter()
                .any(|m| m.1 == "process_resident_memory_bytes");
            (nodes.len() == 3 && histogram && process).then_some(())
        }
    })
    .await;

    // The receiver goes away: clients are served as before, and a node still stops
    // cleanly and promptly.
    rx_task.abort();
    let _ = rx_task.await;
    let started = Instant::now();
    for i in 0..20 {
        let r = n1
            .http
            .put(n1.api_url(&format!("/v1/cache/after-{i}")))
            .header("traceparent", format!("00-{trace_id}-{parent}-01"))
            .body("v")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "requests slowed by a dead receiver: {:?}",
        started.elapsed()
    );
    let text = n1.prometheus("").await;
    assert!(
        prom_value(&text, "hypercache_otel_metric_exports_total").unwrap() >= 1.0,
        "{text}"
    );
    let node = c.node_mut(3);
    let stopping = Instant::now();
    node.signal(libc::SIGTERM);
    let status = node.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{}", node.logs());
    assert!(
        stopping.elapsed() < Duration::from_secs(15),
        "shutdown held up by a dead receiver: {:?}",
        stopping.elapsed()
    );
}

/// A receiver that accepts connections and reads requests but never answers: the case
/// the export timeouts and the bounded span queue are for.
#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_never_answers_holds_up_neither_requests_nor_shutdown() {
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = hole.local_addr().unwrap().port();
    let _hole = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = hole.accept().await {
            held.push(tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                // Kept open, unanswered, until the test ends.
                std::future::pending::<()>().await;
            }));
        }
    });
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut n = Node::start(
        "otel-hole",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_METRIC_EXPORT_INTERVAL", "100"),
            ("DRAIN_LINGER", "0s"),
        ],
    )
    .await;
    let started = Instant::now();
    for i in 0..200 {
        let r = n
            .http
            .put(n.api_url(&format!("/v1/cache/hole-{i}")))
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .body("v")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "requests slowed by a silent receiver: {:?}",
        started.elapsed()
    );
    let text = n.prometheus("").await;
    assert_eq!(
        prom_value(&text, "hypercache_otel_metric_exports_total"),
        Some(0.0),
        "nothing can have been accepted: {text}"
    );
    assert_eq!(
        prom_value(&text, "hypercache_otel_spans_exported_total"),
        Some(0.0)
    );
    // The exports wait out their 10 s timeout; the shutdown does not.
    let stopping = Instant::now();
    n.signal(libc::SIGTERM);
    let status = n.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{}", n.logs());
    assert!(
        stopping.elapsed() < Duration::from_secs(9),
        "shutdown waited on a silent receiver: {:?}",
        stopping.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_keys_puts_the_key_on_the_request_span() {
    let (port, got, _rx) = receiver().await;
    let endpoint = format!("http://127.0.0.1:{port}");
    let n = Node::start(
        "otel-keys",
        &[
            ("TRACE_KEYS", "true"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ],
    )
    .await;
    assert_eq!(n.put("user%3A42", "v").await.status(), 200);
    eventually(
        "the key on the request span",
        Duration::from_secs(20),
        || {
            let got = got.clone();
            async move {
                let r = got.lock().unwrap();
                r.attributes
                    .iter()
                    .any(|a| a == "hypercache.key=user:42")
                    .then_some(())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_otel_setting_stops_start_up_naming_it() {
    let out = std::process::Command::new(binary())
        .env_clear()
        .env("HYPERCACHE_NODE_ID", "n")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{err}");
}

//! docs/grafana-dashboard.json names only metrics a node exposes: every metric in every
//! query (and in the template variables) is a family of a live node's /metrics.

mod common;

use common::*;
use std::collections::{HashMap, HashSet};

/// The metric names in a PromQL expression: identifiers of this node's namespaces.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_string = false;
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c == '"' {
            in_string = !in_string;
            cur.clear();
            continue;
        }
        if !in_string && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            cur.push(c);
            continue;
        }
        if cur.starts_with("hypercache_") || cur.starts_with("process_") {
            out.push(cur.clone());
        }
        cur.clear();
    }
    out
}

fn collect_exprs(panel: &serde_json::Value, out: &mut Vec<(String, String)>) {
    let title = panel["title"].as_str().unwrap_or("?").to_owned();
    if panel["type"] == "row" {
        for p in panel["panels"].as_array().into_iter().flatten() {
            collect_exprs(p, out);
        }
        return;
    }
    let targets = panel["targets"].as_array().cloned().unwrap_or_default();
    assert!(!targets.is_empty(), "panel {title:?} has no query");
    for t in targets {
        let expr = t["expr"].as_str().unwrap_or_default().to_owned();
        assert!(!expr.is_empty(), "panel {title:?} has an empty query");
        out.push((title.clone(), expr));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_dashboard_query_names_an_existing_metric() {
    let n = Node::start("grafana", &[("AUTH_TOKEN", TOKEN)]).await;
    let text = n.prometheus(TOKEN).await;
    let mut families: HashMap<String, String> = HashMap::new();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut parts = line.split_whitespace().skip(2);
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        assert!(
            families.insert(name.to_owned(), kind.to_owned()).is_none(),
            "{name} is declared twice in /metrics"
        );
    }
    let known = |m: &str| {
        families.contains_key(m)
            || ["_bucket", "_sum", "_count"].iter().any(|s| {
                m.strip_suffix(s)
                    .is_some_and(|base| families.get(base).is_some_and(|k| k == "histogram"))
            })
    };

    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/grafana-dashboard.json"
        ))
        .unwrap(),
    )
    .expect("the dashboard is JSON");
    assert!(doc["uid"].is_string() && doc["title"].is_string());
    let mut exprs = Vec::new();
    for p in doc["panels"].as_array().expect("panels") {
        collect_exprs(p, &mut exprs);
    }
    for v in doc["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(q) = v["definition"].as_str() {
            exprs.push((format!("variable {}", v["name"]), q.to_owned()));
        }
    }
    assert!(exprs.len() >= 20, "only {} queries", exprs.len());
    let ids: Vec<_> = doc["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64())
        .collect();
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "panel ids repeat"
    );
    let mut unknown = Vec::new();
    let mut named = 0;
    for (title, expr) in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{title}: {expr} names no metric");
        for m in names {
            named += 1;
            if !known(&m) {
                unknown.push(format!("{title}: {m}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics the node does not expose: {unknown:#?}"
    );
    assert!(named >= exprs.len());
}

#[test]
fn the_scanner_finds_metrics_and_skips_labels_and_functions() {
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (le) (rate(hypercache_request_duration_seconds_bucket{route="hypercache_x"}[5m]))) / process_open_fds"#
        ),
        vec![
            "hypercache_request_duration_seconds_bucket",
            "process_open_fds"
        ]
    );
}

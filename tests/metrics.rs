//! The Prometheus exposition beyond the node's counters: HTTP responses by route and
//! status code, and the process figures (memory, CPU, file descriptors, start time).

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn responses_by_status_and_process_figures() {
    let n = Node::start("metrics", &[("AUTH_TOKEN", TOKEN)]).await;
    assert_eq!(n.put("k", "v").await.status(), 200);
    assert_eq!(n.get("missing").await.status(), 404);
    assert_eq!(n.get("missing").await.status(), 404);
    let r = n.http.get(n.api_url("/v1/cache/k")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let text = n.prometheus(TOKEN).await;
    let responses = |route: &str, code: &str| {
        prom_value(
            &text,
            &format!("hypercache_http_responses_total{{route=\"{route}\",code=\"{code}\"}}"),
        )
    };
    assert_eq!(responses("cache_put", "200"), Some(1.0), "{text}");
    assert_eq!(responses("cache_get", "404"), Some(2.0), "{text}");
    assert_eq!(responses("cache_get", "401"), Some(1.0), "{text}");
    assert_eq!(
        responses("cache_delete", "200"),
        None,
        "only non-zero cells are listed"
    );
    assert!(
        prom_value(&text, "process_resident_memory_bytes").unwrap() > 1e6,
        "{text}"
    );
    assert!(prom_value(&text, "process_open_fds").unwrap() >= 3.0);
    assert!(
        prom_value(&text, "process_max_fds").unwrap()
            >= prom_value(&text, "process_open_fds").unwrap()
    );
    // Counted in clock ticks (10 ms): a node this young may not have used one yet.
    assert!(prom_value(&text, "process_cpu_seconds_total").unwrap() >= 0.0);
    let start = prom_value(&text, "process_start_time_seconds").unwrap();
    let now = now_ms() as f64 / 1000.0;
    assert!(
        start <= now + 1.0 && start > now - 600.0,
        "{start} vs {now}"
    );
}

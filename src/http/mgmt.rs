//! The management API (SPEC §6): health for load balancers, stats, effective config,
//! metrics (JSON and Prometheus text), cluster membership and ring, and drain.

use super::error::ApiError;
use super::{method_not_allowed, not_found, AppState, Guard, Instrument};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hypercache_actors::metrics::{
    self as m, render_families, render_json, Family, HistogramSeries, Kind, Value,
};
use hypercache_actors::store::ShardStats;
use serde_json::json;
use std::sync::atomic::Ordering::Relaxed;

/// Builds the management router.
pub fn router(state: AppState, guard_state: Guard) -> Router {
    let protected = Router::new()
        .route("/stats", get(stats))
        .route("/config", get(config))
        .route("/metrics", get(prometheus))
        .route("/dist/metrics", get(dist_metrics))
        .route("/cluster/members", get(members))
        .route("/cluster/ring", get(ring))
        .route("/cluster/heartbeat", get(heartbeat))
        .route("/cluster/events", get(super::events::events))
        .route("/cluster/members/{id}/remove", post(remove_member))
        .route("/dist/drain", post(drain))
        .route("/dist/owners", get(dist_owners))
        .route("/trigger-expiration", post(trigger_expiration))
        .route("/clear", post(clear));
    #[cfg(feature = "test-hooks")]
    let protected = protected
        .route("/debug/crash-shard/{key}", post(crash_shard))
        .route("/debug/faults", post(set_faults).get(get_faults))
        .route("/debug/local/{key}", get(local_record));
    let protected = protected
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Instrument::guarded(guard_state));
    let open = Router::new()
        .route("/health", get(health))
        .route("/openapi.yaml", get(openapi))
        .route("/ui", get(super::ui::index))
        .route("/ui/app.js", get(super::ui::app))
        .route("/ui/style.css", get(super::ui::style))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Instrument::open(state.node.clone()));
    open.merge(protected).with_state(state)
}

/// `GET /dist/owners?key=K`: `{"key","owners"}` under the current ring (400 without a
/// valid key).
async fn dist_owners(
    State(s): State<AppState>,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    let pairs = super::client::query_pairs(q.as_deref())?;
    let Some((_, key)) = pairs.iter().find(|(k, _)| k == "key") else {
        return Err(
            hypercache_actors::CacheError::BadRequest("missing cache key: ?key=".into()).into(),
        );
    };
    hypercache_actors::types::validate_key(key)
        .map_err(|e| hypercache_actors::CacheError::BadRequest(e.to_string()))?;
    Ok(Json(json!({ "key": key, "owners": s.node.owners(key) })))
}

/// `POST /trigger-expiration`: every shard runs its expiry sweep now instead of at its
/// next tick; 202 (the sweeps run in the shards' mailboxes).
async fn trigger_expiration(State(s): State<AppState>) -> Response {
    let shards = s.node.trigger_expiration();
    (StatusCode::ACCEPTED, Json(json!({ "shards": shards }))).into_response()
}

/// `POST /clear` (admin scope): drops every value this node holds, keeping tombstones;
/// `{"cleared": n}`. Node-local, as on the Go server: the other owners keep their copies
/// and anti-entropy brings this node's share back from them.
async fn clear(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let cleared = s.node.clear_local().await?;
    tracing::warn!(cleared, "POST /clear dropped every value of this node");
    Ok(Json(json!({ "cleared": cleared })))
}

/// The management API's OpenAPI document (docs/openapi-management.yaml, built in).
pub const OPENAPI: &str = include_str!("../../docs/openapi-management.yaml");

async fn openapi() -> Response {
    super::client::yaml(OPENAPI)
}

/// `200 ok`, or `503 draining` once a drain has started.
pub async fn health(State(s): State<AppState>) -> Response {
    if s.node.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response()
    } else {
        (StatusCode::OK, "ok").into_response()
    }
}

/// Store counters as `(name, help, kind, value)` rows for the metric renderings.
fn store_rows(st: &ShardStats) -> Vec<(&'static str, &'static str, &'static str, u64)> {
    vec![
        ("items", "Live items held by this node.", "gauge", st.items),
        (
            "bytes",
            "Key and value bytes held by this node.",
            "gauge",
            st.bytes,
        ),
        (
            "tombstones",
            "Delete markers held until their retention passes.",
            "gauge",
            st.tombstones,
        ),
        (
            "hits_total",
            "Reads that found a live value.",
            "counter",
            st.hits,
        ),
        (
            "misses_total",
            "Reads that found nothing (or an expired value).",
            "counter",
            st.misses,
        ),
        (
            "evictions_total",
            "Items evicted to stay within capacity.",
            "counter",
            st.evictions,
        ),
        (
            "expirations_total",
            "Items removed because their TTL passed.",
            "counter",
            st.expirations,
        ),
        (
            "writes_applied_total",
            "Writes and deletes applied to the local store.",
            "counter",
            st.writes_applied,
        ),
        (
            "writes_stale_total",
            "Writes ignored because the store held a newer version.",
            "counter",
            st.writes_stale,
        ),
        (
            "tombstones_purged_total",
            "Tombstones removed after their retention.",
            "counter",
            st.tombstones_purged,
        ),
        (
            "tombstones_evicted_total",
            "Expired values dropped without a tombstone because the tombstone budget was full (no tombstone is ever dropped before its retention).",
            "counter",
            st.tombstones_evicted,
        ),
        (
            "tombstone_bytes",
            "Bytes of tombstones held (key bytes plus 48 each), bounded by HYPERCACHE_TOMBSTONE_BYTES.",
            "gauge",
            st.tombstone_bytes,
        ),
        (
            "tombstones_refused_total",
            "Deletes refused (503 TOMBSTONES_FULL) because the tombstone budget was full of tombstones within their retention.",
            "counter",
            st.tombstones_refused,
        ),
        (
            "repair_fills_skipped_total",
            "Repair writes (anti-entropy, read repair) of missing keys refused because the shard was full.",
            "counter",
            st.fills_skipped,
        ),
    ]
}

async fn stats(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let st = s.node.store_stats().await?;
    let m = s.node.metrics();
    Ok(Json(json!({
        "node": s.config.node_id,
        "items": st.items,
        "bytes": st.bytes,
        "capacity": s.config.capacity,
        "tombstones": st.tombstones,
        "hits": st.hits,
        "misses": st.misses,
        "evictions": st.evictions,
        "expirations": st.expirations,
        "ops": {
            "get": m.gets_total.load(Relaxed),
            "put": m.puts_total.load(Relaxed),
            "delete": m.deletes_total.load(Relaxed),
        },
        "draining": s.node.is_draining(),
    })))
}

async fn config(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::to_value(&*s.config).unwrap_or_default())
}

async fn prometheus(State(s): State<AppState>) -> Result<Response, ApiError> {
    let (families, latency) = snapshot(&s.node, &s.config).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        render_families(&families, &latency),
    )
        .into_response())
}

/// Every metric of the node now: its own instruments, the store's counters, capacity
/// and fill, and the process figures. `/metrics` and the OTLP export both read this.
pub async fn snapshot(
    node: &hypercache_actors::NodeHandle,
    config: &crate::config::Config,
) -> Result<(Vec<Family>, Vec<HistogramSeries>), hypercache_actors::CacheError> {
    let st = node.store_stats().await?;
    let metrics = node.metrics();
    let mut families = m::families(metrics);
    families.extend(
        store_rows(&st)
            .into_iter()
            .map(|(n, h, k, v)| Family::row(n, h, k, v)),
    );
    families.extend(capacity(&st, config));
    families.extend(crate::telemetry::families());
    families.extend(crate::process::figures().into_iter().map(|(n, h, k, v)| {
        let kind = if k == "counter" {
            Kind::Counter
        } else {
            Kind::Gauge
        };
        Family::single(n.to_owned(), h, kind, Value::Float(v))
    }));
    Ok((families, m::latency(metrics)))
}

/// Capacity and how full the node is.
fn capacity(st: &ShardStats, config: &crate::config::Config) -> Vec<Family> {
    let items = config.capacity as u64;
    let mut fill = st.items as f64 / items.max(1) as f64;
    let mut out = vec![Family::row(
        "capacity_items",
        "Items this node may hold (HYPERCACHE_CAPACITY).",
        "gauge",
        items,
    )];
    if let Some(bytes) = config.capacity_bytes {
        out.push(Family::row(
            "capacity_bytes",
            "Key and value bytes this node may hold (HYPERCACHE_CAPACITY_BYTES).",
            "gauge",
            bytes,
        ));
        fill = fill.max(st.bytes as f64 / bytes.max(1) as f64);
    }
    out.push(Family::single(
        "hypercache_fill_ratio".into(),
        "How full the node is, 0 to 1: items over HYPERCACHE_CAPACITY, or bytes over HYPERCACHE_CAPACITY_BYTES where that is fuller; near 1, writes evict.",
        Kind::Gauge,
        Value::Float(fill),
    ));
    out
}

async fn dist_metrics(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let st = s.node.store_stats().await?;
    Ok(Json(render_json(s.node.metrics(), &store_rows(&st))))
}

async fn members(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let members = s.node.members().await?;
    let view = s.node.view();
    Ok(Json(json!({
        "replication": s.config.replication,
        "virtualNodes": view.virtual_nodes(),
        "version": view.version,
        "members": members,
    })))
}

async fn heartbeat(State(s): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let hb = s.node.heartbeat().await?;
    Ok(Json(serde_json::to_value(hb).unwrap_or_default()))
}

async fn ring(State(s): State<AppState>) -> Json<serde_json::Value> {
    let view = s.node.view();
    let shares: Vec<_> = view
        .ring
        .primary_shares()
        .into_iter()
        .map(|(id, share)| json!({"id": id, "primaryShare": share}))
        .collect();
    Json(json!({
        "replication": s.config.replication,
        "virtualNodes": view.virtual_nodes(),
        "nodes": shares,
    }))
}

/// `POST /cluster/members/{id}/remove`: takes a dead member out of the placement ring
/// now instead of after `HYPERCACHE_DEAD_TIMEOUT` (its keys move to new owners). 404 for
/// an unknown member, 409 for one that is not dead.
async fn remove_member(
    State(s): State<AppState>,
    path: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use hypercache_actors::swim::RemoveError;
    let axum::extract::Path(id) = path.map_err(|e| {
        hypercache_actors::CacheError::BadRequest(format!("invalid member id: {}", e.body_text()))
    })?;
    match s.node.remove_member(&id).await? {
        Ok(member) => Ok(Json(json!({ "removed": member }))),
        Err(RemoveError::Unknown) => Err(ApiError::UnknownMember(id)),
        Err(RemoveError::NotDead(state)) => Err(ApiError::MemberNotDead {
            id,
            state: format!("{state:?}").to_ascii_lowercase(),
        }),
    }
}

/// `POST /dist/drain`: starts draining (one-way until restart). Also served on the
/// dist listener.
pub async fn drain(
    State(s): State<AppState>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let report = s.node.drain().await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::to_value(report).unwrap_or_default()),
    ))
}

#[cfg(feature = "test-hooks")]
async fn crash_shard(
    State(s): State<AppState>,
    axum::extract::Path(key): axum::extract::Path<String>,
) -> Json<serde_json::Value> {
    Json(json!({ "shard": s.node.crash_shard_of(&key) }))
}

#[cfg(feature = "test-hooks")]
async fn set_faults(
    State(s): State<AppState>,
    Json(rules): Json<hypercache_actors::transport::FaultRules>,
) -> Json<serde_json::Value> {
    s.node.set_faults(rules);
    Json(serde_json::to_value(s.node.faults()).unwrap_or_default())
}

#[cfg(feature = "test-hooks")]
async fn get_faults(State(s): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::to_value(s.node.faults()).unwrap_or_default())
}

/// Test hook: this node's own record of a key (no routing, no eviction mark or counter change).
#[cfg(feature = "test-hooks")]
async fn local_record(
    State(s): State<AppState>,
    axum::extract::Path(key): axum::extract::Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let rec = s.node.local_record(&key).await?;
    Ok(Json(match rec {
        None => json!({"found": false}),
        Some(w) => json!({
            "found": true,
            "hlc": w.version.hlc,
            "origin": w.version.origin,
            "tombstone": w.value.is_none(),
            "value": w.value.map(|v| String::from_utf8_lossy(&v).into_owned()),
            "expires_at_ms": w.expires_at_ms,
        }),
    }))
}

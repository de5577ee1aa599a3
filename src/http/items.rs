//! The client API's item routes beyond the raw value (docs/compatibility.md): an item as
//! JSON with its metadata (`GET /v1/cache/{key}` with `Accept: application/json`), the
//! metadata alone (`HEAD /v1/cache/{key}`), the batch routes
//! (`POST /v1/cache/batch/{get,put,delete}`) and the caller's identity (`GET /v1/me`,
//! `GET /v1/me/can`). Shapes follow the Go hypercache-server's.
//!
//! Like the single-key handlers these only parse, bound and call the [`NodeHandle`];
//! a batch runs its items through the coordinator like single requests, at most
//! [`BATCH_CONCURRENCY`] at once, so the peer actors carry the replica calls of the items
//! that share an owner in the same batch requests.

use super::client::MAX_TTL;
use super::error::{status_and_code, ApiError};
use super::AppState;
use crate::auth::{Identity, Scope};
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use hypercache_actors::types::{now_ms, origin_of, validate_key, Stored};
use hypercache_actors::{CacheError, NodeHandle};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The key browser's page size: default and ceiling (a larger `limit` is clamped, as
/// the Go server does).
pub const KEYS_LIMIT: (usize, usize) = (100, 500);
/// The key browser's cap on the merged key set: default and ceiling (clamped).
pub const KEYS_MAX: (usize, usize) = (10_000, hypercache_actors::keyscan::MAX_SCAN_KEYS);

/// Most items in one batch request (400 past it).
pub const MAX_BATCH_ITEMS: usize = 1000;
/// Most bytes of one batch request body (413 past it).
pub const MAX_BATCH_BODY: u64 = 32 << 20;
/// Items of one batch worked on at once.
pub const BATCH_CONCURRENCY: usize = 32;

/// An item's metadata, as the JSON envelope, the batch results and the `X-Cache-*`
/// headers show it.
#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    /// Time left before it expires, in ms; absent without expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// When it expires (RFC 3339, UTC); absent without expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The version's clock stamp: larger is newer, for this key.
    pub version: u64,
    /// The node that coordinated the write, when it is still a member.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// When the write was coordinated (RFC 3339, UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<String>,
    /// The key's owners under the current ring.
    pub owners: Vec<String>,
}

fn rfc3339(ms: u64) -> String {
    let t = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The metadata of `stored` under `key`, read now.
pub fn meta_of(node: &NodeHandle, key: &str, stored: &Stored) -> Meta {
    let view = node.view();
    let origin = view
        .members
        .iter()
        .map(|m| m.id.as_str())
        .chain(std::iter::once(view.self_id.as_str()))
        .find(|id| origin_of(id) == stored.version.origin)
        .map(str::to_owned);
    let wall_ms = stored.version.hlc >> 16;
    let now = now_ms();
    Meta {
        ttl_ms: stored
            .expires_at_ms
            .map(|t| t.saturating_sub(now))
            .filter(|l| *l > 0),
        expires_at: stored.expires_at_ms.map(rfc3339),
        version: stored.version.hlc,
        origin,
        last_updated: (wall_ms > 0).then(|| rfc3339(wall_ms)),
        owners: node.owners(key),
    }
}

/// `GET /v1/cache/{key}` with `Accept: application/json`.
#[derive(Serialize)]
struct Envelope {
    key: String,
    value: String,
    value_encoding: &'static str,
    #[serde(flatten)]
    meta: Meta,
    node: String,
}

/// True when the request asks for the JSON envelope (as the Go server decides it: the
/// `Accept` header mentions `application/json`).
pub fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.contains("application/json")))
}

/// The JSON envelope of a stored item.
pub fn envelope(s: &AppState, key: String, stored: Stored) -> Response {
    let meta = meta_of(&s.node, &key, &stored);
    Json(Envelope {
        value: STANDARD.encode(&stored.value),
        value_encoding: "base64",
        key,
        meta,
        node: s.config.node_id.clone(),
    })
    .into_response()
}

/// `HEAD /v1/cache/{key}`: 200 with the `X-Cache-*` headers, or a bare 404.
pub async fn head_key(
    State(s): State<AppState>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let key = super::client::key_of(path)?;
    let level = super::client::parse_consistency(&super::client::query_pairs(q.as_deref())?)?;
    hypercache_actors::metrics::Metrics::inc(&s.node.metrics().gets_total);
    let stored = match s.node.get(&key, level).await {
        Ok(st) => st,
        Err(CacheError::NotFound) => return Ok(StatusCode::NOT_FOUND.into_response()),
        Err(e) => return Err(e.into()),
    };
    let meta = meta_of(&s.node, &key, &stored);
    let mut resp = StatusCode::OK.into_response();
    let h = resp.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    set("x-cache-version", meta.version.to_string());
    if let Some(o) = meta.origin {
        set("x-cache-origin", o);
    }
    if let Some(t) = meta.last_updated {
        set("x-cache-last-updated", t);
    }
    if let (Some(ttl), Some(at)) = (meta.ttl_ms, meta.expires_at) {
        set("x-cache-ttl-ms", ttl.to_string());
        set("x-cache-expires-at", at);
    }
    if !meta.owners.is_empty() {
        set("x-cache-owners", meta.owners.join(","));
    }
    set("x-cache-node", s.config.node_id.clone());
    Ok(resp)
}

/// Reads a batch body: at most [`MAX_BATCH_BODY`] bytes (413), valid JSON of `T` (400),
/// at most [`MAX_BATCH_ITEMS`] items (400).
async fn batch_body<T: for<'de> Deserialize<'de>>(
    s: &AppState,
    headers: &HeaderMap,
    body: Body,
    count: impl Fn(&T) -> usize,
) -> Result<T, ApiError> {
    let raw = s
        .client_body
        .read(headers, body, MAX_BATCH_BODY, false)
        .await?;
    let parsed: T = serde_json::from_slice(&raw.bytes)
        .map_err(|e| CacheError::BadRequest(format!("invalid JSON: {e}")))?;
    let n = count(&parsed);
    if n > MAX_BATCH_ITEMS {
        return Err(CacheError::BadRequest(format!(
            "a batch carries at most {MAX_BATCH_ITEMS} items, got {n}"
        ))
        .into());
    }
    Ok(parsed)
}

/// A failed item's `error` and `code`.
fn item_error(e: &CacheError) -> (Option<String>, Option<&'static str>) {
    (Some(e.to_string()), Some(status_and_code(e).1))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysRequest {
    keys: Vec<String>,
}

#[derive(Serialize)]
struct BatchReply<T> {
    results: Vec<T>,
    node: String,
}

#[derive(Serialize)]
struct GetResult {
    key: String,
    found: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_encoding: Option<&'static str>,
    #[serde(flatten)]
    meta: Option<Meta>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
}

/// `POST /v1/cache/batch/get`: `{"keys":[...]}` → a result per key, in order.
pub async fn batch_get(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req: KeysRequest = batch_body(&s, &headers, body, |r: &KeysRequest| r.keys.len()).await?;
    let node: Arc<NodeHandle> = s.node.clone();
    let results: Vec<GetResult> = stream::iter(req.keys)
        .map(move |key| {
            let node = node.clone();
            async move {
                let miss = |key: String| GetResult {
                    key,
                    found: false,
                    value: None,
                    value_encoding: None,
                    meta: None,
                    error: None,
                    code: None,
                };
                if validate_key(&key).is_err() {
                    return miss(key);
                }
                hypercache_actors::metrics::Metrics::inc(&node.metrics().gets_total);
                match node.get(&key, None).await {
                    Ok(st) => GetResult {
                        meta: Some(meta_of(&node, &key, &st)),
                        value: Some(STANDARD.encode(&st.value)),
                        value_encoding: Some("base64"),
                        found: true,
                        key,
                        error: None,
                        code: None,
                    },
                    Err(CacheError::NotFound) => miss(key),
                    Err(e) => {
                        let (error, code) = item_error(&e);
                        GetResult {
                            error,
                            code,
                            ..miss(key)
                        }
                    }
                }
            }
        })
        .buffered(BATCH_CONCURRENCY)
        .collect()
        .await;
    Ok(Json(BatchReply {
        results,
        node: s.config.node_id.clone(),
    })
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutItem {
    key: String,
    value: String,
    #[serde(default)]
    value_encoding: Option<String>,
    #[serde(default)]
    ttl_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutRequest {
    items: Vec<PutItem>,
}

#[derive(Serialize)]
struct PutResult {
    key: String,
    stored: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owners: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
}

/// One batch put item, checked: key, value decoded, ttl; or why it is refused.
fn check_put(
    item: PutItem,
    max_value: u64,
) -> Result<(String, Bytes, Option<Duration>), CacheError> {
    validate_key(&item.key).map_err(|e| CacheError::BadRequest(e.to_string()))?;
    let value = match item.value_encoding.as_deref() {
        None | Some("string") => Bytes::from(item.value.into_bytes()),
        Some("base64") => Bytes::from(
            STANDARD
                .decode(item.value.as_bytes())
                .map_err(|e| CacheError::BadRequest(format!("invalid base64 value: {e}")))?,
        ),
        Some(other) => {
            return Err(CacheError::BadRequest(format!(
                "invalid value_encoding {other:?}: expected string or base64"
            )))
        }
    };
    if value.len() as u64 > max_value {
        return Err(CacheError::PayloadTooLarge {
            size: value.len() as u64,
            limit: max_value,
        });
    }
    let ttl = match item.ttl_ms {
        None | Some(0) => None,
        Some(ms) if Duration::from_millis(ms) > MAX_TTL => {
            return Err(CacheError::BadRequest(format!(
                "invalid ttl_ms {ms}: the largest ttl is 100 years"
            )))
        }
        Some(ms) => Some(Duration::from_millis(ms)),
    };
    Ok((item.key, value, ttl))
}

/// `POST /v1/cache/batch/put`: `{"items":[{"key","value","value_encoding"?,"ttl_ms"?}]}`
/// → a result per item, in order; each item is a write at the configured level.
pub async fn batch_put(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req: PutRequest = batch_body(&s, &headers, body, |r: &PutRequest| r.items.len()).await?;
    let node: Arc<NodeHandle> = s.node.clone();
    let max_value = s.config.max_value_bytes;
    let results: Vec<PutResult> = stream::iter(req.items)
        .map(move |item| {
            let node = node.clone();
            async move {
                let key = item.key.clone();
                let refused = |key: String, e: CacheError| {
                    let (error, code) = item_error(&e);
                    PutResult {
                        key,
                        stored: false,
                        bytes: None,
                        owners: None,
                        error,
                        code,
                    }
                };
                if let Err(e) = node.admit_write() {
                    return refused(key, e);
                }
                let (key, value, ttl) = match check_put(item, max_value) {
                    Ok(c) => c,
                    Err(e) => return refused(key, e),
                };
                let bytes = value.len();
                match node.put(&key, value, ttl, None).await {
                    Ok(ack) => {
                        hypercache_actors::metrics::Metrics::inc(&node.metrics().puts_total);
                        PutResult {
                            key,
                            stored: true,
                            bytes: Some(bytes),
                            owners: Some(ack.owners),
                            error: None,
                            code: None,
                        }
                    }
                    Err(e) => refused(key, e),
                }
            }
        })
        .buffered(BATCH_CONCURRENCY)
        .collect()
        .await;
    Ok(Json(BatchReply {
        results,
        node: s.config.node_id.clone(),
    })
    .into_response())
}

#[derive(Serialize)]
struct DeleteResult {
    key: String,
    deleted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    owners: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
}

/// `POST /v1/cache/batch/delete`: `{"keys":[...]}` → a result per key, in order; each
/// is a tombstone write at the configured level (a key that never existed is deleted).
pub async fn batch_delete(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req: KeysRequest = batch_body(&s, &headers, body, |r: &KeysRequest| r.keys.len()).await?;
    let node: Arc<NodeHandle> = s.node.clone();
    let results: Vec<DeleteResult> = stream::iter(req.keys)
        .map(move |key| {
            let node = node.clone();
            async move {
                let refused = |key: String, e: CacheError| {
                    let (error, code) = item_error(&e);
                    DeleteResult {
                        key,
                        deleted: false,
                        owners: None,
                        error,
                        code,
                    }
                };
                if let Err(e) = validate_key(&key) {
                    return refused(key, CacheError::BadRequest(e.to_string()));
                }
                if let Err(e) = node.admit_write() {
                    return refused(key, e);
                }
                match node.delete(&key, None).await {
                    Ok(ack) => {
                        hypercache_actors::metrics::Metrics::inc(&node.metrics().deletes_total);
                        DeleteResult {
                            key,
                            deleted: true,
                            owners: Some(ack.owners),
                            error: None,
                            code: None,
                        }
                    }
                    Err(e) => refused(key, e),
                }
            }
        })
        .buffered(BATCH_CONCURRENCY)
        .collect()
        .await;
    Ok(Json(BatchReply {
        results,
        node: s.config.node_id.clone(),
    })
    .into_response())
}

/// The caller as the guard resolved it (every guarded route has one).
fn caller(id: Option<axum::Extension<Identity>>) -> Result<Identity, ApiError> {
    id.map(|axum::Extension(i)| i).ok_or_else(|| {
        CacheError::Internal("the request has no identity (the route is not guarded)".into()).into()
    })
}

/// `GET /v1/me`: `{"id", "scopes", "capabilities"}` of the caller.
pub async fn me(id: Option<axum::Extension<Identity>>) -> Result<Response, ApiError> {
    let id = caller(id)?;
    let scopes = id.scopes.list();
    Ok(Json(serde_json::json!({
        "id": &*id.id,
        "scopes": scopes.iter().map(|s| s.name()).collect::<Vec<_>>(),
        "capabilities": scopes.iter().map(|s| s.capability()).collect::<Vec<_>>(),
    }))
    .into_response())
}

/// `GET /v1/me/can?capability=cache.read|cache.write|cache.admin`:
/// `{"capability", "allowed"}` for the caller.
pub async fn can(
    id: Option<axum::Extension<Identity>>,
    RawQuery(q): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = caller(id)?;
    let pairs = super::client::query_pairs(q.as_deref())?;
    let Some((_, cap)) = pairs.iter().find(|(k, _)| k == "capability") else {
        return Err(CacheError::BadRequest("missing 'capability' query parameter".into()).into());
    };
    let Some(scope) = Scope::ALL.into_iter().find(|s| *cap == s.capability()) else {
        return Err(CacheError::BadRequest(format!(
            "unknown capability {cap:?}: expected cache.read, cache.write or cache.admin"
        ))
        .into());
    };
    Ok(Json(
        serde_json::json!({ "capability": cap, "allowed": id.scopes.has(scope) }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_utc_seconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_780_000_000_123), "2026-05-28T20:26:40Z");
    }

    #[test]
    fn put_items_are_checked() {
        let item = |v: &str, enc: Option<&str>, ttl: Option<u64>| PutItem {
            key: "k".into(),
            value: v.into(),
            value_encoding: enc.map(str::to_owned),
            ttl_ms: ttl,
        };
        let (_, v, ttl) = check_put(item("aGk=", Some("base64"), Some(1500)), 100).unwrap();
        assert_eq!(&v[..], b"hi");
        assert_eq!(ttl, Some(Duration::from_millis(1500)));
        let (_, v, ttl) = check_put(item("plain", None, Some(0)), 100).unwrap();
        assert_eq!(&v[..], b"plain");
        assert_eq!(ttl, None);
        assert!(matches!(
            check_put(item("!!", Some("base64"), None), 100),
            Err(CacheError::BadRequest(m)) if m.contains("base64")
        ));
        assert!(matches!(
            check_put(item("x", Some("hex"), None), 100),
            Err(CacheError::BadRequest(m)) if m.contains("value_encoding")
        ));
        assert!(matches!(
            check_put(item("toolong", None, None), 3),
            Err(CacheError::PayloadTooLarge { size: 7, limit: 3 })
        ));
        assert!(check_put(item("x", None, Some(u64::MAX)), 100).is_err());
        let mut bad_key = item("x", None, None);
        bad_key.key = String::new();
        assert!(check_put(bad_key, 100).is_err());
    }
}

/// `GET /v1/cache/keys` reply.
#[derive(Serialize)]
struct KeysPage {
    keys: Vec<String>,
    /// The `cursor` of the next page; `""` on the last one.
    next_cursor: String,
    /// Keys in the merged set (at most `max`).
    total_matched: usize,
    /// More keys match than the merged set holds.
    truncated: bool,
    node: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    partial_nodes: Vec<String>,
}

/// A numeric query parameter: `default` when absent, 400 when it is not a number or is
/// below `min`, clamped to `ceiling`.
fn count_param(
    pairs: &[(String, String)],
    name: &str,
    default: usize,
    min: usize,
    ceiling: usize,
) -> Result<usize, CacheError> {
    let Some((_, raw)) = pairs.iter().find(|(k, _)| k == name) else {
        return Ok(default);
    };
    let what = if min == 0 {
        "a non-negative integer"
    } else {
        "a positive integer"
    };
    match raw.parse::<u64>() {
        Ok(n) if n as u128 >= min as u128 => Ok((n.min(ceiling as u64)) as usize),
        _ => Err(CacheError::BadRequest(format!(
            "invalid {name} {raw:?}: must be {what}"
        ))),
    }
}

/// `GET /v1/cache/keys?q=&cursor=&limit=&max=`: the cluster-wide key browser. Every
/// page repeats the scan (bounded by `max` keys per node) and cuts its page out of the
/// sorted, merged set; `cursor` is the offset into that set.
pub async fn list_keys(
    State(s): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let pairs = super::client::query_pairs(q.as_deref())?;
    let filter = pairs
        .iter()
        .find(|(k, _)| k == "q")
        .map_or("", |(_, v)| v.as_str());
    let cursor = count_param(&pairs, "cursor", 0, 0, usize::MAX)?;
    let limit = count_param(&pairs, "limit", KEYS_LIMIT.0, 1, KEYS_LIMIT.1)?;
    let max = count_param(&pairs, "max", KEYS_MAX.0, 1, KEYS_MAX.1)?;
    let found = s.node.browse_keys(filter, max).await?;
    let total = found.keys.len();
    let start = cursor.min(total);
    let end = start.saturating_add(limit).min(total);
    Ok(Json(KeysPage {
        keys: found.keys[start..end].to_vec(),
        next_cursor: if end < total {
            end.to_string()
        } else {
            String::new()
        },
        total_matched: total,
        truncated: found.truncated,
        node: s.config.node_id.clone(),
        partial_nodes: found.partial_nodes,
    })
    .into_response())
}

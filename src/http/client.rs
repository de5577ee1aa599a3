//! The client API (SPEC §5), wire-compatible with the Go hypercache-server:
//! `/healthz`, `PUT|GET|DELETE /v1/cache/{key}`, `GET /v1/owners/{key}`; the item
//! metadata, batch and identity routes are in [`super::items`].
//!
//! Handlers parse and validate input, then make one call on the [`NodeHandle`]; they
//! keep no state.

use super::error::ApiError;
use super::{items, method_not_allowed, not_found, AppState, Guard, Instrument};
use crate::duration::{parse_duration, DurationError};
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use hypercache_actors::quorum::Consistency;
use hypercache_actors::CacheError;
use serde::Serialize;
use std::time::Duration;

/// Builds the client router.
pub fn router(state: AppState, guard_state: Guard) -> Router {
    let protected = Router::new()
        .route(
            "/v1/cache/{key}",
            get(get_key)
                .head(items::head_key)
                .put(put_key)
                .delete(delete_key),
        )
        .route("/v1/cache/keys", get(items::list_keys))
        .route("/v1/cache/batch/get", post(items::batch_get))
        .route("/v1/cache/batch/put", post(items::batch_put))
        .route("/v1/cache/batch/delete", post(items::batch_delete))
        .route("/v1/me", get(items::me))
        .route("/v1/me/can", get(items::can))
        .route("/v1/cache/", any(empty_key))
        .route("/v1/owners/{key}", get(owners))
        .route("/v1/owners/", any(empty_key))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Instrument::guarded(guard_state));
    let open = Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/openapi.yaml", get(openapi))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Instrument::open(state.node.clone()));
    open.merge(protected).with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

/// The client API's OpenAPI document (docs/openapi.yaml, built into the binary).
pub const OPENAPI: &str = include_str!("../../docs/openapi.yaml");

async fn openapi() -> Response {
    yaml(OPENAPI)
}

/// A YAML document answer.
pub fn yaml(doc: &'static str) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/yaml"),
        )],
        doc,
    )
        .into_response()
}

async fn empty_key() -> ApiError {
    ApiError::Cache(CacheError::BadRequest("key must not be empty".into()))
}

/// Turns the path extractor's result into a key or a JSON 400.
pub(crate) fn key_of(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    match path {
        Ok(Path(k)) => {
            hypercache_actors::types::validate_key(&k)
                .map_err(|e| CacheError::BadRequest(e.to_string()))?;
            Ok(k)
        }
        Err(e) => Err(CacheError::BadRequest(format!("invalid key: {}", e.body_text())).into()),
    }
}

/// Decoded `name=value` pairs of a query string; 400 when a name or value does not
/// decode to UTF-8 (as a key in the path would be).
pub fn query_pairs(q: Option<&str>) -> Result<Vec<(String, String)>, CacheError> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| {
                CacheError::BadRequest(format!(
                    "the query parameter {s:?} is not UTF-8 once percent-decoded"
                ))
            })
    };
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => Ok((decode(k)?, decode(v)?)),
            None => Ok((decode(p)?, String::new())),
        })
        .collect()
}

/// The longest ttl accepted.
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Parses `ttl`: a Go-style or humantime duration; `0` (or absent) means no expiry.
pub fn parse_ttl(q: &[(String, String)]) -> Result<Option<Duration>, CacheError> {
    let Some((_, raw)) = q.iter().find(|(k, _)| k == "ttl") else {
        return Ok(None);
    };
    match parse_duration(raw) {
        Ok(d) if d.is_zero() => Ok(None),
        Ok(d) if d < Duration::from_millis(1) => Err(CacheError::BadRequest(format!(
            "invalid ttl {raw:?}: the smallest ttl is 1ms"
        ))),
        Ok(d) if d > MAX_TTL => Err(CacheError::BadRequest(format!(
            "invalid ttl {raw:?}: the largest ttl is 100 years"
        ))),
        Ok(d) => Ok(Some(d)),
        Err(DurationError::Negative) => Err(CacheError::BadRequest(format!(
            "invalid ttl {raw:?}: ttl must not be negative"
        ))),
        Err(DurationError::Invalid) => Err(CacheError::BadRequest(format!(
            "invalid ttl {raw:?}: expected a duration such as 30s, 5m, 2h30m"
        ))),
    }
}

/// Parses `consistency` (`one`, `quorum`, `all`); absent means the configured default.
pub fn parse_consistency(q: &[(String, String)]) -> Result<Option<Consistency>, CacheError> {
    match q.iter().find(|(k, _)| k == "consistency") {
        None => Ok(None),
        Some((_, v)) => Consistency::parse(v).map(Some).ok_or_else(|| {
            CacheError::BadRequest(format!(
                "invalid consistency {v:?}: expected one, quorum or all"
            ))
        }),
    }
}

#[derive(Serialize)]
struct PutResponse {
    key: String,
    stored: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl_ms: Option<u64>,
    bytes: usize,
    node: String,
    owners: Vec<String>,
}

#[derive(Serialize)]
struct DeleteResponse {
    key: String,
    deleted: bool,
    node: String,
    owners: Vec<String>,
}

#[derive(Serialize)]
struct OwnersResponse {
    key: String,
    owners: Vec<String>,
    node: String,
}

async fn put_key(
    State(s): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = key_of(path)?;
    let pairs = query_pairs(q.as_deref())?;
    let ttl = parse_ttl(&pairs)?;
    let level = parse_consistency(&pairs)?;
    // Checked before the body is read: a write that arrives during a drain is refused
    // at once; one whose body was already streaming when the drain began completes.
    s.node.admit_write()?;
    // A one-chunk body is a slice of the connection's read buffer: stored as is, it would
    // keep that whole buffer alive for as long as the value lives. Copy it out.
    let body = s
        .client_body
        .read(&headers, body, s.config.max_value_bytes, false)
        .await?;
    let value = bytes::Bytes::copy_from_slice(&body.bytes);
    let bytes = value.len();
    let ack = s.node.put(&key, value, ttl, level).await?;
    hypercache_actors::metrics::Metrics::inc(&s.node.metrics().puts_total);
    Ok(Json(PutResponse {
        key,
        stored: true,
        ttl_ms: ttl.map(|t| t.as_millis() as u64),
        bytes,
        node: s.config.node_id.clone(),
        owners: ack.owners,
    })
    .into_response())
}

async fn get_key(
    State(s): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = key_of(path)?;
    let level = parse_consistency(&query_pairs(q.as_deref())?)?;
    hypercache_actors::metrics::Metrics::inc(&s.node.metrics().gets_total);
    let stored = s.node.get(&key, level).await?;
    if items::wants_json(&headers) {
        return Ok(items::envelope(&s, key, stored));
    }
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        )],
        stored.value,
    )
        .into_response())
}

async fn delete_key(
    State(s): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Result<Json<DeleteResponse>, ApiError> {
    let key = key_of(path)?;
    let level = parse_consistency(&query_pairs(q.as_deref())?)?;
    s.node.admit_write()?;
    let ack = s.node.delete(&key, level).await?;
    hypercache_actors::metrics::Metrics::inc(&s.node.metrics().deletes_total);
    Ok(Json(DeleteResponse {
        key,
        deleted: true,
        node: s.config.node_id.clone(),
        owners: ack.owners,
    }))
}

async fn owners(
    State(s): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<OwnersResponse>, ApiError> {
    let key = key_of(path)?;
    Ok(Json(OwnersResponse {
        owners: s.node.owners(&key),
        key,
        node: s.config.node_id.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Vec<(String, String)> {
        query_pairs(Some(s)).unwrap()
    }

    #[test]
    fn ttl_values() {
        assert_eq!(parse_ttl(&q("")).unwrap(), None);
        assert_eq!(
            parse_ttl(&q("ttl=5m")).unwrap(),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            parse_ttl(&q("ttl=2h30m")).unwrap(),
            Some(Duration::from_secs(9_000))
        );
        assert_eq!(parse_ttl(&q("ttl=0")).unwrap(), None);
        let neg = parse_ttl(&q("ttl=-5s")).unwrap_err().to_string();
        assert!(neg.contains("negative") && neg.contains("-5s"), "{neg}");
        assert!(parse_ttl(&q("ttl=1000000h")).is_err());
        let bad = parse_ttl(&q("ttl=soon")).unwrap_err().to_string();
        assert!(bad.contains("\"soon\""), "{bad}");
    }

    #[test]
    fn query_decoding() {
        assert_eq!(
            q("a=1&b=x%20y&c"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), String::new()),
            ]
        );
        assert!(query_pairs(Some("key=%FF")).is_err());
    }
}

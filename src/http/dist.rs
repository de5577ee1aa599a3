//! The dist listener: peer-to-peer traffic. Every route needs the bearer token when one
//! is set. The peer protocol is two routes that take the same enveloped msgpack batch
//! ([`hypercache_actors::proto`]): [`BATCH_PATH`] for every call and [`PROBE_PATH`] for
//! SWIM pings (which skip the in-flight bound). The work is the actor system's
//! [`hypercache_actors::service::DistService`]; this module only reads the body and maps
//! its errors. A body that does not decode is a 400 and changes nothing; one over
//! [`MAX_DIST_BODY`] ([`MAX_PROBE_BODY`] on the probe route) is a 413, one without
//! `Content-Length` a 411, one that would overspend the listener's buffer budget a 503; another protocol version is a 400 with code
//! `PROTOCOL_VERSION`, and so is any call on a route of protocol version 1.

use super::error::{json_error, ApiError};
use super::{method_not_allowed, mgmt, not_found, AppState, Guard, Instrument};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use hypercache_actors::proto::{
    BATCH_PATH, CLOCK_SKEW_CODE, MAX_DIST_BODY, MAX_PROBE_BODY, PROBE_PATH, PROTOCOL_VERSION,
    VERSION_MISMATCH_CODE,
};
use hypercache_actors::service::{Route, ServiceError};
use hypercache_actors::CacheError;

/// Builds the dist router. Unlike the management `/health`, this one is protected: only
/// peers talk to this listener.
pub fn router(state: AppState, guard_state: Guard) -> Router {
    Router::new()
        .route("/health", get(mgmt::health))
        .route("/dist/drain", post(mgmt::drain))
        .route(BATCH_PATH, post(batch))
        .route(PROBE_PATH, post(probe))
        .route("/dist/v1/{*rest}", any(old_version))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Instrument::guarded(guard_state))
        .with_state(state)
}

async fn batch(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    serve(s, Route::Batch, headers, body).await
}

async fn probe(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    serve(s, Route::Probe, headers, body).await
}

/// Reads the body, hands it to the dist service and answers its msgpack reply.
async fn serve(
    s: AppState,
    route: Route,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let limit = match route {
        Route::Batch => MAX_DIST_BODY,
        Route::Probe => MAX_PROBE_BODY,
    };
    let body = s.dist_body.read(&headers, body, limit as u64, true).await?;
    match s.node.dist().handle(route, &body.bytes).await {
        Ok(out) => Ok((
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/msgpack"),
            )],
            out,
        )
            .into_response()),
        Err(ServiceError::BadRequest(m)) => Err(CacheError::BadRequest(m).into()),
        Err(ServiceError::Version(m)) => Ok(version_mismatch(&m)),
        Err(ServiceError::ClockSkew(m)) => {
            Ok(json_error(StatusCode::BAD_REQUEST, CLOCK_SKEW_CODE, &m))
        }
        Err(ServiceError::Cut) => Ok(json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "INTERNAL",
            "link cut by fault injection",
        )),
    }
}

fn version_mismatch(message: &str) -> Response {
    json_error(StatusCode::BAD_REQUEST, VERSION_MISMATCH_CODE, message)
}

/// A peer of protocol version 1 (one route per call) reaches a node of this version:
/// refused with a clear error, and logged, so a mixed-version cluster says why it does
/// not replicate.
async fn old_version(uri: axum::http::Uri) -> Response {
    tracing::warn!(path = %uri.path(), "refused a peer call of protocol version 1; upgrade every node to the same version");
    version_mismatch(&format!(
        "unsupported protocol version 1 ({}); this node speaks {PROTOCOL_VERSION} at {BATCH_PATH}",
        uri.path()
    ))
}

//! The dist listener: peer-to-peer traffic. Every route needs the bearer token when one
//! is set. Peer protocol routes take and answer msgpack envelopes
//! ([`hypercache_actors::proto`]); a body that does not decode is a 400 and changes
//! nothing; one over [`MAX_DIST_BODY`] is a 413.

use super::client::read_body;
use super::error::ApiError;
use super::{guard, method_not_allowed, mgmt, not_found, record_latency, AppState, Guard};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{middleware, Router};
use hypercache_actors::proto::{
    decode_envelope, encode, AcceptHints, AcceptHintsReply, AeCompare, AeFetch, Envelope, Ping,
    PingReq, Read, ReadReply, Replicate, ReplicateReply, Rpc, MAX_DIST_BODY,
};
use hypercache_actors::CacheError;
use std::future::Future;

/// Builds the dist router. Unlike the management `/health`, this one is protected: only
/// peers talk to this listener.
pub fn router(state: AppState, guard_state: Guard) -> Router {
    Router::new()
        .route("/health", get(mgmt::health))
        .route("/dist/drain", post(mgmt::drain))
        .route(Replicate::PATH, post(replicate))
        .route(Read::PATH, post(read))
        .route(Ping::PATH, post(ping))
        .route(PingReq::PATH, post(ping_req))
        .route(AeCompare::PATH, post(ae_compare))
        .route(AeFetch::PATH, post(ae_fetch))
        .route(AcceptHints::PATH, post(accept_hints))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(guard_state, guard))
        .layer(middleware::from_fn_with_state(
            state.node.clone(),
            record_latency,
        ))
        .with_state(state)
}

/// Decodes an enveloped `R`, merges the sender's clock, runs `handle`, and answers the
/// enveloped reply as msgpack.
async fn rpc<R, F, Fut>(
    s: AppState,
    headers: HeaderMap,
    body: Body,
    handle: F,
) -> Result<Response, ApiError>
where
    R: Rpc,
    F: FnOnce(AppState, String, R) -> Fut,
    Fut: Future<Output = Result<R::Reply, CacheError>>,
{
    let bytes = read_body(&headers, body, MAX_DIST_BODY as u64).await?;
    let env: Envelope<R> =
        decode_envelope(&bytes).map_err(|e| CacheError::BadRequest(e.to_string()))?;
    #[cfg(feature = "test-hooks")]
    if s.node.faults.blocks(&env.from_addr) {
        return Ok(super::error::json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "INTERNAL",
            "link cut by fault injection",
        ));
    }
    if !s
        .node
        .hlc
        .observe(env.hlc, hypercache_actors::types::now_ms())
    {
        return Err(CacheError::BadRequest(format!(
            "sender clock is more than {} ms ahead of this node's",
            hypercache_actors::hlc::MAX_DRIFT_MS
        ))
        .into());
    }
    let reply = handle(s.clone(), env.from, env.body).await?;
    let out = encode(&s.node.peers.envelope(reply));
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/msgpack"),
        )],
        out,
    )
        .into_response())
}

async fn replicate(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    rpc::<Replicate, _, _>(s, headers, body, |s, _, req| async move {
        let outcomes = s.node.apply_replicated(req.writes, req.mode).await?;
        Ok(ReplicateReply { outcomes })
    })
    .await
}

async fn read(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    rpc::<Read, _, _>(s, headers, body, |s, _, req| async move {
        Ok(ReadReply {
            record: s.node.read_local(&req.key).await?,
        })
    })
    .await
}

async fn ping(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    rpc::<Ping, _, _>(s, headers, body, |s, _, req| async move {
        s.node.on_ping(req).await
    })
    .await
}

async fn ping_req(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    rpc::<PingReq, _, _>(s, headers, body, |s, _, req| async move {
        s.node.on_ping_req(req).await
    })
    .await
}

async fn ae_compare(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    rpc::<AeCompare, _, _>(s, headers, body, |s, from, req| async move {
        s.node.ae_compare(&from, req).await
    })
    .await
}

async fn ae_fetch(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    rpc::<AeFetch, _, _>(s, headers, body, |s, _, req| async move {
        s.node.ae_fetch(req).await
    })
    .await
}

async fn accept_hints(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    rpc::<AcceptHints, _, _>(s, headers, body, |s, _, req| async move {
        Ok(AcceptHintsReply {
            accepted: s.node.accept_hints(req).await?,
        })
    })
    .await
}

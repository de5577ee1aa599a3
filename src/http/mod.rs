//! The three HTTP listeners (client, management, dist) and what they share: the
//! handler state (mailbox handles only), bearer-token auth, the in-flight bound, latency
//! recording and the JSON error mapping.

pub mod body;
pub mod client;
pub mod dist;
pub mod error;
pub mod mgmt;
pub mod serve;

use crate::config::Config;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use error::ApiError;
use hypercache_actors::{CacheError, NodeHandle};
use std::sync::Arc;
use std::time::Instant;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

/// What every handler gets: the node's mailbox handle and the effective configuration.
/// Behind `Arc`s: axum clones the state for every request.
#[derive(Clone)]
pub struct AppState {
    pub node: Arc<NodeHandle>,
    pub config: Arc<Config>,
    /// Body bounds of the client listener.
    pub client_body: body::BodyLimits,
    /// Body bounds of the dist listener.
    pub dist_body: body::BodyLimits,
}

impl AppState {
    pub fn new(node: Arc<NodeHandle>, config: Arc<Config>) -> Self {
        let metrics = node.metrics().clone();
        Self {
            client_body: body::BodyLimits::new(
                body::Budget::Client,
                config.client_buffer_bytes,
                config.body_read_timeout,
                metrics.clone(),
            ),
            dist_body: body::BodyLimits::new(
                body::Budget::Dist,
                config.dist_buffer_bytes,
                config.body_read_timeout,
                metrics,
            ),
            node,
            config,
        }
    }
}

/// Which listener a guard protects.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Listener {
    Client,
    Management,
    Dist,
}

/// Concurrent SWIM probes the dist listener answers; they skip the in-flight bound, so
/// they have their own.
const MAX_PROBES_IN_FLIGHT: usize = 64;

/// Per-listener guard state: the expected `Authorization` header, protected mode and
/// the in-flight bounds.
#[derive(Clone)]
pub struct Guard {
    expected: Option<Arc<Vec<u8>>>,
    /// With no token: refuse non-loopback clients, naming this variable.
    protected: Option<&'static str>,
    inflight: Arc<Semaphore>,
    probes: Arc<Semaphore>,
    node: Arc<NodeHandle>,
    listener: Listener,
}

/// Keeps the client in-flight gauge while a request is handled.
struct InFlight<'a>(Option<&'a std::sync::atomic::AtomicU64>);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(g) = self.0 {
            g.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

impl Guard {
    /// The client and management listeners take `HYPERCACHE_AUTH_TOKEN`; the dist
    /// listener takes the peer token (`HYPERCACHE_PEER_TOKEN`, by default the same).
    pub fn new(config: &Config, node: Arc<NodeHandle>, listener: Listener) -> Self {
        let (token, var) = match listener {
            Listener::Dist => (&config.peer_token, "HYPERCACHE_PEER_TOKEN"),
            _ => (&config.auth_token, "HYPERCACHE_AUTH_TOKEN"),
        };
        Self {
            listener,
            expected: token
                .as_ref()
                .map(|t| Arc::new(format!("Bearer {t}").into_bytes())),
            protected: (config.protected_mode && token.is_none()).then_some(var),
            inflight: Arc::new(Semaphore::new(config.max_inflight)),
            probes: Arc::new(Semaphore::new(MAX_PROBES_IN_FLIGHT)),
            node,
        }
    }
}

/// True when the request carries exactly `Authorization: Bearer <token>`. The compare is
/// constant-time in the header's content.
pub fn authorized(expected: Option<&[u8]>, got: Option<&[u8]>) -> bool {
    match (expected, got) {
        (None, _) => true,
        (Some(want), Some(got)) => want.ct_eq(got).into(),
        (Some(_), None) => false,
    }
}

/// Middleware for protected routes: bounds in-flight requests (503 OVERLOADED with
/// `Retry-After` past the bound), then checks the bearer token (401 JSON).
pub async fn guard(State(g): State<Guard>, req: Request, next: Next) -> Response {
    if let Some(var) = g.protected {
        let loopback = req
            .extensions()
            .get::<serve::PeerAddr>()
            .is_some_and(serve::PeerAddr::is_loopback);
        if !loopback {
            hypercache_actors::metrics::Metrics::inc(
                &g.node.metrics().requests_protected_mode_total,
            );
            return ApiError::ProtectedMode { var }.into_response();
        }
    }
    // Direct membership probes have their own in-flight bound: a node busy with client
    // traffic must still answer its peers' pings, or they would declare it dead and move
    // its keys away. (Ping-reqs, which make outbound calls, share the listener's bound.)
    let probe =
        g.listener == Listener::Dist && req.uri().path() == hypercache_actors::proto::PROBE_PATH;
    let bound = if probe { &g.probes } else { &g.inflight };
    let permit = bound.clone().try_acquire_owned().ok();
    if permit.is_none() {
        hypercache_actors::metrics::Metrics::inc(
            &g.node.metrics().requests_rejected_overload_total,
        );
        return ApiError::Cache(CacheError::Overloaded).into_response();
    }
    let gauge =
        (g.listener == Listener::Client).then_some(&g.node.metrics().client_requests_in_flight);
    if let Some(c) = gauge {
        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let _in_flight = InFlight(gauge);
    let got = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if !authorized(g.expected.as_deref().map(Vec::as_slice), got) {
        hypercache_actors::metrics::Metrics::inc(&g.node.metrics().requests_unauthorized_total);
        return ApiError::Unauthorized.into_response();
    }
    next.run(req).await
}

/// Middleware: records request latency under a route label.
pub async fn record_latency(
    State(node): State<Arc<NodeHandle>>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = route_label(
        req.method(),
        req.extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str),
    );
    let resp = next.run(req).await;
    hypercache_actors::metrics::Metrics::inc(&node.metrics().requests_total);
    node.metrics()
        .latency
        .observe(route, started.elapsed().as_secs_f64());
    resp
}

fn route_label(method: &Method, path: Option<&str>) -> &'static str {
    match (path, method) {
        (Some("/v1/cache/{key}"), &Method::GET) | (Some("/v1/cache/{key}"), &Method::HEAD) => {
            "cache_get"
        }
        (Some("/v1/cache/{key}"), &Method::PUT) => "cache_put",
        (Some("/v1/cache/{key}"), &Method::DELETE) => "cache_delete",
        (Some("/v1/owners/{key}"), _) => "owners",
        (Some("/healthz"), _) => "healthz",
        (Some(p), _) if p.starts_with("/dist/") && p != "/dist/metrics" && p != "/dist/drain" => {
            "dist"
        }
        (Some(_), _) => "management",
        (None, _) => "other",
    }
}

/// Fallback for unknown routes: 404 JSON.
pub async fn not_found() -> ApiError {
    ApiError::RouteNotFound
}

/// Fallback for a known route with the wrong method: 405 JSON.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_matrix() {
        let want = Some(&b"Bearer t0k"[..]);
        assert!(authorized(None, None));
        assert!(authorized(want, Some(b"Bearer t0k")));
        assert!(!authorized(want, None));
        assert!(!authorized(want, Some(b"bearer t0k")));
        assert!(!authorized(want, Some(b"t0k")));
        assert!(!authorized(want, Some(b"Bearer t0k ")));
        assert!(!authorized(want, Some(b"Bearer wrong")));
    }
}

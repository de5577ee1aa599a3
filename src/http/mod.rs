//! The three HTTP listeners (client, management, dist) and what they share: the
//! handler state (mailbox handles only), bearer-token auth, the in-flight bound, latency
//! recording and the JSON error mapping.

pub mod body;
pub mod client;
pub mod dist;
pub mod error;
pub mod events;
pub mod items;
pub mod mgmt;
pub mod serve;
pub mod ui;

use crate::auth::{self, BasicRefused, Identity, Policy, Resolved, Scope};
use crate::config::Config;
use axum::extract::{MatchedPath, Request};
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use error::ApiError;
use hypercache_actors::metrics::{Metrics, ROUTES};
use hypercache_actors::{CacheError, NodeHandle};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What every handler gets: the node's mailbox handle and the effective configuration.
/// One `Arc`: axum clones the state for every request, so a clone is one atomic
/// increment whatever the state holds.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

/// The contents of [`AppState`].
pub struct AppInner {
    pub node: Arc<NodeHandle>,
    pub config: Arc<Config>,
    /// Body bounds of the client listener.
    pub client_body: body::BodyLimits,
    /// Body bounds of the dist listener.
    pub dist_body: body::BodyLimits,
    /// Permits of the `/cluster/events` streams ([`events::MAX_STREAMS`]).
    pub event_streams: Arc<Semaphore>,
    /// True once the management and dist listeners are stopping: open event streams end.
    pub stop: tokio::sync::watch::Receiver<bool>,
}

impl std::ops::Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl AppState {
    pub fn new(
        node: Arc<NodeHandle>,
        config: Arc<Config>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let metrics = node.metrics().clone();
        Self(Arc::new(AppInner {
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
            event_streams: Arc::new(Semaphore::new(events::MAX_STREAMS)),
            stop,
            node,
            config,
        }))
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

/// Per-listener guard state: who may call (the client and management listeners'
/// [`Policy`], the dist listener's peer token), protected mode and the in-flight bounds.
pub struct Guard {
    /// Dist listener: the expected `Authorization` header (the peer token).
    expected: Option<Vec<u8>>,
    /// Client and management listeners: identities and their scopes.
    policy: Option<Arc<Policy>>,
    /// With no token: refuse non-loopback clients, naming this variable.
    protected: Option<&'static str>,
    inflight: Arc<Semaphore>,
    probes: Arc<Semaphore>,
    node: Arc<NodeHandle>,
    listener: Listener,
}

impl Guard {
    /// The client and management listeners take the identities of
    /// `HYPERCACHE_AUTH_CONFIG`, or `HYPERCACHE_AUTH_TOKEN`; the dist listener takes the
    /// peer token (`HYPERCACHE_PEER_TOKEN`, by default `HYPERCACHE_AUTH_TOKEN`).
    /// `policy` is the one built from the former (ignored by the dist listener).
    pub fn new(
        config: &Config,
        node: Arc<NodeHandle>,
        listener: Listener,
        policy: &Arc<Policy>,
    ) -> Self {
        let (expected, policy, open, var) = match listener {
            Listener::Dist => (
                config
                    .peer_token
                    .as_ref()
                    .map(|t| format!("Bearer {t}").into_bytes()),
                None,
                config.peer_token.is_none(),
                "HYPERCACHE_PEER_TOKEN",
            ),
            _ => (
                None,
                Some(policy.clone()),
                config.auth_token.is_none()
                    && config.auth_config.is_none()
                    && config.oidc.is_none(),
                "HYPERCACHE_AUTH_TOKEN",
            ),
        };
        Self {
            listener,
            expected,
            policy,
            protected: (config.protected_mode && open).then_some(var),
            inflight: Arc::new(Semaphore::new(config.max_inflight)),
            probes: Arc::new(Semaphore::new(MAX_PROBES_IN_FLIGHT)),
            node,
        }
    }

    /// The listener's in-flight bound (the RESP listener shares the client listener's).
    pub fn inflight(&self) -> Arc<Semaphore> {
        self.inflight.clone()
    }

    /// Admits a request to a protected route, or answers it: 403 in protected mode for a
    /// non-loopback client, 503 OVERLOADED (with `Retry-After`) past the in-flight bound,
    /// 401 without valid credentials, 403 FORBIDDEN without the route's scope. The
    /// request gets its [`Identity`] as an extension. What it returns holds the request's
    /// in-flight slot, and the bcrypt check still to make for an HTTP Basic password.
    fn admit(&self, req: &mut Request) -> Result<(Admitted, Option<PendingBasic>), ApiError> {
        let metrics = self.node.metrics();
        if let Some(var) = self.protected {
            let loopback = req
                .extensions()
                .get::<serve::PeerAddr>()
                .is_some_and(serve::PeerAddr::is_loopback);
            if !loopback {
                Metrics::inc(&metrics.requests_protected_mode_total);
                return Err(ApiError::ProtectedMode { var });
            }
        }
        // Direct membership probes have their own in-flight bound: a node busy with client
        // traffic must still answer its peers' pings, or they would declare it dead and
        // move its keys away. (Ping-reqs, which make outbound calls, share the listener's
        // bound.)
        let probe = self.listener == Listener::Dist
            && req.uri().path() == hypercache_actors::proto::PROBE_PATH;
        let bound = if probe { &self.probes } else { &self.inflight };
        let Ok(permit) = bound.clone().try_acquire_owned() else {
            Metrics::inc(&metrics.requests_rejected_overload_total);
            return Err(ApiError::Cache(CacheError::Overloaded));
        };
        let got = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        let mut pending = None;
        match &self.policy {
            None => {
                if !authorized(self.expected.as_deref(), got) {
                    Metrics::inc(&metrics.requests_unauthorized_total);
                    return Err(ApiError::Unauthorized { basic: false });
                }
            }
            Some(policy) => {
                let scope = auth::required_scope(
                    self.listener == Listener::Management,
                    req.method(),
                    req.extensions()
                        .get::<MatchedPath>()
                        .map(MatchedPath::as_str),
                );
                let tls = req.extensions().get::<serve::TlsPeer>();
                let offers_basic = policy.offers_basic(tls.is_some());
                match policy.resolve(got, tls) {
                    Resolved::Known(id) => {
                        check_scope(&id, scope, metrics)?;
                        req.extensions_mut().insert(id);
                    }
                    Resolved::Unknown => {
                        Metrics::inc(&metrics.requests_unauthorized_total);
                        return Err(ApiError::Unauthorized {
                            basic: offers_basic,
                        });
                    }
                    Resolved::Basic { user, password } => {
                        pending = Some(PendingBasic {
                            policy: policy.clone(),
                            user,
                            password,
                            scope,
                        });
                    }
                }
            }
        }
        let gauge = (self.listener == Listener::Client).then(|| {
            metrics
                .client_requests_in_flight
                .fetch_add(1, Ordering::Relaxed);
            self.node.clone()
        });
        Ok((
            Admitted {
                _permit: permit,
                gauge,
            },
            pending,
        ))
    }
}

/// 403 FORBIDDEN (counted) unless `id` holds `scope`.
fn check_scope(id: &Identity, scope: Scope, metrics: &Metrics) -> Result<(), ApiError> {
    if id.scopes.has(scope) {
        return Ok(());
    }
    Metrics::inc(&metrics.requests_forbidden_total);
    Err(ApiError::Forbidden {
        id: id.id.clone(),
        scope: scope.name(),
    })
}

/// An HTTP Basic password still to check with bcrypt before the route runs.
struct PendingBasic {
    policy: Arc<Policy>,
    user: usize,
    password: Vec<u8>,
    scope: Scope,
}

impl PendingBasic {
    /// Checks the password, then runs the route with the identity (or answers 401, 403,
    /// or 503 when bcrypt checks are queued past their wait).
    async fn run<S>(self, node: Arc<NodeHandle>, mut req: Request, mut route: S) -> Response
    where
        S: tower_service::Service<Request, Response = Response, Error = Infallible>,
    {
        let metrics = node.metrics();
        let refused = match self.policy.verify_basic(self.user, self.password).await {
            Ok(id) => match check_scope(&id, self.scope, metrics) {
                Ok(()) => {
                    req.extensions_mut().insert(id);
                    return match route.call(req).await {
                        Ok(r) => r,
                        Err(never) => match never {},
                    };
                }
                Err(e) => e,
            },
            Err(BasicRefused::WrongPassword) => {
                Metrics::inc(&metrics.requests_unauthorized_total);
                ApiError::Unauthorized { basic: true }
            }
            Err(BasicRefused::Busy) => {
                Metrics::inc(&metrics.requests_rejected_overload_total);
                ApiError::Cache(CacheError::Overloaded)
            }
        };
        refused.into_response()
    }
}

/// A request's in-flight slot: the listener's permit, and on the client listener its
/// share of the in-flight gauge. Both are given back on drop.
struct Admitted {
    _permit: OwnedSemaphorePermit,
    gauge: Option<Arc<NodeHandle>>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(node) = &self.gauge {
            node.metrics()
                .client_requests_in_flight
                .fetch_sub(1, Ordering::Relaxed);
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

/// The one layer every route of a listener has: it records the request's latency under
/// its route label and, on protected routes, applies the [`Guard`] first. Hand-written
/// (not two `from_fn` middlewares) so that a request costs no boxed future or cloned
/// `Next` of its own: the guard's checks are synchronous, and the latency is recorded
/// when the route's own future finishes.
#[derive(Clone)]
pub struct Instrument(Arc<InstrumentInner>);

struct InstrumentInner {
    node: Arc<NodeHandle>,
    guard: Option<Guard>,
}

impl Instrument {
    /// For routes without a guard (`/healthz`, `/health`): latency only.
    pub fn open(node: Arc<NodeHandle>) -> Self {
        Self(Arc::new(InstrumentInner { node, guard: None }))
    }

    /// For protected routes: the guard, then latency.
    pub fn guarded(guard: Guard) -> Self {
        Self(Arc::new(InstrumentInner {
            node: guard.node.clone(),
            guard: Some(guard),
        }))
    }
}

impl<S> tower_layer::Layer<S> for Instrument {
    type Service = Instrumented<S>;
    fn layer(&self, inner: S) -> Instrumented<S> {
        Instrumented {
            inner,
            state: self.clone(),
        }
    }
}

/// A route wrapped by [`Instrument`].
#[derive(Clone)]
pub struct Instrumented<S> {
    inner: S,
    state: Instrument,
}

impl<S> tower_service::Service<Request> for Instrumented<S>
where
    S: tower_service::Service<Request, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = InstrumentedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let started = Instant::now();
        let route = route_label(
            req.method(),
            req.extensions()
                .get::<MatchedPath>()
                .map(MatchedPath::as_str),
        );
        let state = self.state.clone();
        let admitted = match &state.0.guard {
            None => Ok((None, None)),
            Some(g) => g.admit(&mut req).map(|(a, p)| (Some(a), p)),
        };
        // Refused requests are not traced: a client without credentials cannot fill the
        // span queue.
        let span = match admitted {
            Ok(_) => request_span(&state, &req, route),
            Err(_) => tracing::Span::none(),
        };
        let step = match admitted {
            Ok((admitted, None)) => Step::Route {
                future: self.inner.call(req),
                _admitted: admitted,
            },
            Ok((admitted, Some(pending))) => Step::Verify {
                future: Box::pin(pending.run(state.0.node.clone(), req, self.inner.clone())),
                _admitted: admitted,
            },
            Err(refused) => Step::Refused {
                response: Some(refused.into_response()),
            },
        };
        InstrumentedFuture {
            step,
            started,
            route,
            state,
            span,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of an [`Instrumented`] route.
    pub struct InstrumentedFuture<F> {
        #[pin]
        step: Step<F>,
        started: Instant,
        route: usize,
        state: Instrument,
        span: tracing::Span,
    }
}

pin_project_lite::pin_project! {
    #[project = StepProj]
    enum Step<F> {
        Route {
            #[pin]
            future: F,
            _admitted: Option<Admitted>,
        },
        Verify {
            future: Pin<Box<dyn Future<Output = Response> + Send>>,
            _admitted: Option<Admitted>,
        },
        Refused {
            response: Option<Response>,
        },
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for InstrumentedFuture<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let response = match this.step.project() {
            StepProj::Route { future, .. } => match future.poll(cx) {
                Poll::Ready(Ok(r)) => r,
                Poll::Pending => return Poll::Pending,
            },
            StepProj::Verify { future, .. } => match future.as_mut().poll(cx) {
                Poll::Ready(r) => r,
                Poll::Pending => return Poll::Pending,
            },
            StepProj::Refused { response } => response.take().unwrap_or_else(|| {
                ApiError::Cache(CacheError::Internal("response polled twice".into()))
                    .into_response()
            }),
        };
        if !this.span.is_disabled() {
            let status = response.status().as_u16();
            this.span.record("http.response.status_code", status);
            if status >= 500 {
                this.span.record("otel.status_code", "ERROR");
            }
        }
        let metrics = this.state.0.node.metrics();
        Metrics::inc(&metrics.requests_total);
        metrics
            .responses
            .record(*this.route, response.status().as_u16());
        metrics
            .latency
            .observe_at(*this.route, this.started.elapsed().as_secs_f64());
        Poll::Ready(Ok(response))
    }
}

/// The span of a client API request, exported with traces (a disabled span otherwise):
/// method, route template and status; the key only with `HYPERCACHE_TRACE_KEYS`, the
/// value never. An incoming W3C `traceparent` becomes its parent.
fn request_span(state: &Instrument, req: &Request, route: usize) -> tracing::Span {
    let client = state
        .0
        .guard
        .as_ref()
        .is_some_and(|g| g.listener == Listener::Client);
    if !client {
        return tracing::Span::none();
    }
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let span = tracing::info_span!(
        target: hypercache_actors::trace::TARGET,
        "http.request",
        otel.name = %format_args!("{} {}", req.method(), path),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %req.method(),
        http.route = path,
        hypercache.route = ROUTES[route.min(ROUTES.len() - 1)],
        http.response.status_code = tracing::field::Empty,
        hypercache.key = tracing::field::Empty,
    );
    if !span.is_disabled() {
        if crate::telemetry::trace_keys() && path.ends_with("/{key}") {
            if let Some(raw) = req.uri().path().rsplit('/').next() {
                let key = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
                span.record("hypercache.key", key.as_ref());
            }
        }
        if let Some(tp) = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
        {
            hypercache_actors::trace::adopt(&span, tp);
        }
    }
    span
}

/// The index in [`ROUTES`] of a request's route label.
fn route_label(method: &Method, path: Option<&str>) -> usize {
    let name = match (path, method) {
        (Some("/v1/cache/{key}"), &Method::GET) | (Some("/v1/cache/{key}"), &Method::HEAD) => {
            "cache_get"
        }
        (Some("/v1/cache/{key}"), &Method::PUT) => "cache_put",
        (Some("/v1/cache/{key}"), &Method::DELETE) => "cache_delete",
        (Some("/v1/cache/batch/get"), _) => "cache_get",
        (Some("/v1/cache/keys"), _) => "keys",
        (Some("/v1/cache/batch/put"), _) => "cache_put",
        (Some("/v1/cache/batch/delete"), _) => "cache_delete",
        (Some("/v1/owners/{key}"), _) => "owners",
        (Some("/healthz"), _) => "healthz",
        (Some("/v1/openapi.yaml"), _) => "other",
        (Some(p), _) if p.starts_with("/v1/") => "other",
        (Some(p), _)
            if p.starts_with("/dist/")
                && !matches!(p, "/dist/metrics" | "/dist/drain" | "/dist/owners") =>
        {
            "dist"
        }
        (Some(_), _) => "management",
        (None, _) => "other",
    };
    ROUTES
        .iter()
        .position(|r| *r == name)
        .unwrap_or(ROUTES.len() - 1)
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

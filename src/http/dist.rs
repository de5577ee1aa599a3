//! The dist listener: peer-to-peer traffic. Every route needs the bearer token when one
//! is set. Today it serves `/health` and `POST /dist/drain`; the peer protocol routes
//! (replication, membership, anti-entropy, handoff) join it.

use super::{guard, method_not_allowed, mgmt, not_found, record_latency, AppState, Guard};
use axum::routing::{get, post};
use axum::{middleware, Router};

/// Builds the dist router. Unlike the management `/health`, this one is protected: only
/// peers talk to this listener.
pub fn router(state: AppState, guard_state: Guard) -> Router {
    Router::new()
        .route("/health", get(mgmt::health))
        .route("/dist/drain", post(mgmt::drain))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(guard_state, guard))
        .layer(middleware::from_fn_with_state(
            state.node.clone(),
            record_latency,
        ))
        .with_state(state)
}

//! The one mapping from errors to HTTP status codes and JSON bodies
//! (`{"error": "<human text>", "code": "<CODE>"}`, SPEC §5).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hypercache_actors::CacheError;
use serde::Serialize;

/// Every error an HTTP handler can answer with.
#[derive(Debug)]
pub enum ApiError {
    Cache(CacheError),
    /// No valid credentials; `basic`: the listener takes HTTP Basic too (offered in
    /// `WWW-Authenticate`).
    Unauthorized {
        basic: bool,
    },
    RouteNotFound,
    MethodNotAllowed,
    /// Valid credentials without the scope the route needs.
    Forbidden {
        id: std::sync::Arc<str>,
        scope: &'static str,
    },
    /// No token is configured for this listener and the request is not from loopback.
    ProtectedMode {
        var: &'static str,
    },
    /// The request body did not arrive within the body read timeout.
    BodyTimeout,
    /// A dist request without `Content-Length`.
    LengthRequired,
    /// `POST /cluster/members/{id}/remove` named a member this node does not know.
    UnknownMember(String),
    /// `POST /cluster/members/{id}/remove` named a member that is not dead.
    MemberNotDead {
        id: String,
        state: String,
    },
}

impl From<CacheError> for ApiError {
    fn from(e: CacheError) -> Self {
        ApiError::Cache(e)
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    code: &'a str,
}

/// Builds a JSON error response.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::to_vec(&Body {
        error: message,
        code,
    })
    .unwrap_or_default();
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// The HTTP status and error code of a cache error: the one mapping, used for whole
/// responses and for the per-item results of batches.
pub fn status_and_code(e: &CacheError) -> (StatusCode, &'static str) {
    match e {
        CacheError::BadRequest(_) => (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
        CacheError::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
        CacheError::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
        CacheError::Draining => (StatusCode::SERVICE_UNAVAILABLE, "DRAINING"),
        CacheError::Quorum { .. } | CacheError::Unreachable { .. } => {
            (StatusCode::SERVICE_UNAVAILABLE, "QUORUM_FAILED")
        }
        CacheError::ClockNotSynced => (StatusCode::SERVICE_UNAVAILABLE, "CLOCK_NOT_SYNCED"),
        CacheError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "OVERLOADED"),
        CacheError::TombstonesFull => (StatusCode::SERVICE_UNAVAILABLE, "TOMBSTONES_FULL"),
        CacheError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Cache(e) => {
                let (status, code) = status_and_code(&e);
                let mut resp = json_error(status, code, &e.to_string());
                if matches!(
                    e,
                    CacheError::Overloaded | CacheError::TombstonesFull | CacheError::ClockNotSynced
                ) {
                    resp.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                }
                resp
            }
            ApiError::Unauthorized { basic } => {
                let mut resp = json_error(
                    StatusCode::UNAUTHORIZED,
                    "UNAUTHORIZED",
                    "missing or invalid credentials (a bearer token, or HTTP Basic where the auth config allows it)",
                );
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                if basic {
                    resp.headers_mut().append(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"hypercache\", charset=\"UTF-8\""),
                    );
                }
                resp
            }
            ApiError::ProtectedMode { var } => json_error(
                StatusCode::FORBIDDEN,
                "PROTECTED_MODE",
                &format!("protected mode: no credentials are configured, so only loopback clients are served; set {var} (and send it as a bearer token){}, or set HYPERCACHE_PROTECTED_MODE=false to serve every address without authentication (unsafe)", if var == "HYPERCACHE_AUTH_TOKEN" { " or HYPERCACHE_AUTH_CONFIG" } else { "" }),
            ),
            ApiError::BodyTimeout => {
                let mut resp = json_error(
                    StatusCode::REQUEST_TIMEOUT,
                    "REQUEST_TIMEOUT",
                    "the request body did not arrive in time",
                );
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                resp
            }
            ApiError::LengthRequired => json_error(
                StatusCode::LENGTH_REQUIRED,
                "BAD_REQUEST",
                "peer requests must carry Content-Length",
            ),
            ApiError::UnknownMember(id) => json_error(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                &format!("no member {id:?} is known to this node"),
            ),
            ApiError::MemberNotDead { id, state } => json_error(
                StatusCode::CONFLICT,
                "CONFLICT",
                &format!("member {id:?} is {state}, not dead: only a dead member can be removed; a live one leaves by draining (POST /dist/drain on it)"),
            ),
            ApiError::Forbidden { id, scope } => json_error(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                &format!("identity {id:?} lacks the {scope:?} scope this route needs"),
            ),
            ApiError::RouteNotFound => {
                json_error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route")
            }
            ApiError::MethodNotAllowed => json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "BAD_REQUEST",
                "method not allowed on this route",
            ),
        }
    }
}

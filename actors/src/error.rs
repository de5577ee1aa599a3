//! The error every actor reply and coordinator call can carry back to a client.
//!
//! Owns the meaning of each failure; the HTTP layer owns the one mapping from these
//! variants to status codes and JSON bodies (`src/http/error.rs`).

/// A failure a client can be told about. Domain errors travel through reply ports as
/// `Result<T, CacheError>`; they never stop an actor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// The request is malformed; the text names the offending input.
    #[error("{0}")]
    BadRequest(String),
    /// The key does not exist, expired, or was deleted.
    #[error("key not found")]
    NotFound,
    /// A body over a configured limit.
    #[error("value is {size} bytes; the limit is {limit} bytes")]
    PayloadTooLarge { size: u64, limit: u64 },
    /// The node is draining and takes no writes.
    #[error("node is draining and accepts no writes; send them to another node")]
    Draining,
    /// Too few replicas acknowledged.
    #[error(
        "quorum not reached: {got} of {needed} required replicas acknowledged; the write may still be applied later by hinted handoff"
    )]
    Quorum { needed: usize, got: usize },
    /// Too much work in flight; the client should retry later.
    #[error("node is overloaded; retry later")]
    Overloaded,
    /// Something inside the node failed (an actor restarting, a timeout).
    #[error("internal error: {0}")]
    Internal(String),
}

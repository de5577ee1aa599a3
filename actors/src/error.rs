//! The error every actor reply and coordinator call can carry back to a client.
//!
//! Owns the meaning of each failure; the HTTP layer owns the one mapping from these
//! variants to status codes and JSON bodies (`src/http/error.rs`).

/// Why one owner did not acknowledge a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerFailure {
    pub owner: String,
    pub error: String,
}

/// ` (node-3: peer call timed out; node-4: ...)`, or nothing when no owner failed.
fn causes(failures: &[OwnerFailure]) -> String {
    if failures.is_empty() {
        return String::new();
    }
    let list: Vec<String> = failures
        .iter()
        .map(|f| format!("{}: {}", f.owner, f.error))
        .collect();
    format!(" ({})", list.join("; "))
}

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
    /// Too few replicas acknowledged; `failures` says which owners failed and why.
    #[error(
        "quorum not reached: {got} of {needed} required replicas acknowledged{}; the write may still be applied later by hinted handoff",
        causes(failures)
    )]
    Quorum {
        needed: usize,
        got: usize,
        failures: Vec<OwnerFailure>,
    },
    /// Refused before anything was sent: fewer of the key's home owners are reachable
    /// than the consistency level needs, so the write could not succeed and was applied
    /// nowhere. `failures` names the unreachable owners.
    #[error(
        "refused before anything was applied: {reachable} of the key's home owners are reachable and {needed} must acknowledge{}",
        causes(failures)
    )]
    Unreachable {
        needed: usize,
        reachable: usize,
        failures: Vec<OwnerFailure>,
    },
    /// The node started recently and has not yet merged its clock with a peer's, so it
    /// does not stamp writes (a version below ones peers hold would lose to them).
    #[error("this node has not yet exchanged clocks with a peer since it started; retry shortly")]
    ClockNotSynced,
    /// Too much work in flight; the client should retry later.
    #[error("node is overloaded; retry later")]
    Overloaded,
    /// A delete needs a tombstone and the tombstone budget is spent by tombstones still
    /// within their retention; the client should retry later.
    #[error("the tombstone budget is full (deletes are remembered for HYPERCACHE_TOMBSTONE_RETENTION); retry later or raise HYPERCACHE_TOMBSTONE_BYTES")]
    TombstonesFull,
    /// Something inside the node failed (an actor restarting, a timeout).
    #[error("internal error: {0}")]
    Internal(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quorum_error_names_the_failed_owners() {
        let e = CacheError::Quorum {
            needed: 2,
            got: 1,
            failures: vec![OwnerFailure {
                owner: "node-3".into(),
                error: "peer call timed out".into(),
            }],
        };
        assert_eq!(
            e.to_string(),
            "quorum not reached: 1 of 2 required replicas acknowledged (node-3: peer call timed out); the write may still be applied later by hinted handoff"
        );
        let e = CacheError::Quorum {
            needed: 1,
            got: 0,
            failures: vec![],
        };
        assert!(e
            .to_string()
            .starts_with("quorum not reached: 0 of 1 required replicas acknowledged;"));
    }
}

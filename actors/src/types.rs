//! Plain data shared by every part of the node: keys, versions, stored entries and the
//! write records that travel between shards and peers.
//!
//! Owns no state and does no I/O. The ordering of [`Version`] is the single
//! last-write-wins rule of the whole system.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// A cache key: non-empty UTF-8, at most [`MAX_KEY_BYTES`] bytes.
pub type Key = String;

/// The longest key accepted, in bytes (SPEC §5).
pub const MAX_KEY_BYTES: usize = 1024;

/// Milliseconds since the Unix epoch on this host's wall clock.
///
/// In `test-hooks` builds the clock is the wall clock read once, advanced by tokio's
/// clock: on a paused tokio clock (the cluster simulator) wall time then moves with
/// simulated time, as it would in a real cluster; elsewhere it is the same as the wall
/// clock up to the monotonic clock's slew.
pub fn now_ms() -> u64 {
    #[cfg(feature = "test-hooks")]
    {
        static START: std::sync::OnceLock<(u64, tokio::time::Instant)> = std::sync::OnceLock::new();
        let (wall, at) = START.get_or_init(|| (system_ms(), tokio::time::Instant::now()));
        wall + at.elapsed().as_millis() as u64
    }
    #[cfg(not(feature = "test-hooks"))]
    {
        system_ms()
    }
}

fn system_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Stable numeric form of a node id, used as the tie-break of a [`Version`].
pub fn origin_of(node_id: &str) -> u64 {
    xxhash_rust::xxh64::xxh64(node_id.as_bytes(), 0)
}

/// Why a key is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key must not be empty")]
    Empty,
    #[error("key is {0} bytes; the limit is {MAX_KEY_BYTES}")]
    TooLong(usize),
}

/// Checks a decoded key against the limits of SPEC §5.
pub fn validate_key(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KeyError::TooLong(key.len()));
    }
    Ok(())
}

/// The version of a write: a hybrid-logical-clock stamp from the coordinator plus the
/// coordinator's origin as tie-break.
///
/// Invariant: ordering is total and identical on every node, so "apply if newer" is a
/// deterministic last-write-wins merge (commutative, associative, idempotent).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Version {
    /// `(wall_ms << 16) | logical`, see [`crate::hlc`].
    pub hlc: u64,
    /// [`origin_of`] the coordinating node.
    pub origin: u64,
}

/// What one write carries to a replica: a value or a tombstone, its version, and the
/// absolute expiry instant (never a duration, so every hop agrees on when it expires).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    pub version: Version,
    /// `None` is a tombstone (a delete).
    #[serde(with = "opt_bytes")]
    pub value: Option<Bytes>,
    /// Absolute expiry in Unix milliseconds; `None` never expires.
    pub expires_at_ms: Option<u64>,
}

impl Write {
    /// True when this write is a delete.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }
}

/// Why a write that came from outside this node is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// Its version's clock is further ahead of this node's clock than the allowed drift:
    /// it would win every later write of the key.
    #[error("version clock is {ahead_ms} ms ahead of this node's clock (the allowed drift is {max_ms} ms)")]
    TooNew { ahead_ms: u64, max_ms: u64 },
    /// Its value is larger than `HYPERCACHE_MAX_VALUE_BYTES`.
    #[error("value of {size} bytes is over the {limit}-byte limit")]
    TooLarge { size: u64, limit: u64 },
}

/// Checks a write from a peer (replica write, repair, hint, handoff, fetched record)
/// before it is applied or queued: its version must not be more than `max_drift_ms`
/// ahead of `now_ms`, and its value at most `max_value_bytes`.
pub fn admit(
    write: &Write,
    max_value_bytes: u64,
    now_ms: u64,
    max_drift_ms: u64,
) -> Result<(), AdmitError> {
    let wall = write.version.hlc >> 16;
    if wall > now_ms.saturating_add(max_drift_ms) {
        return Err(AdmitError::TooNew {
            ahead_ms: wall - now_ms,
            max_ms: max_drift_ms,
        });
    }
    let size = write.value.as_ref().map_or(0, |v| v.len() as u64);
    if size > max_value_bytes {
        return Err(AdmitError::TooLarge {
            size,
            limit: max_value_bytes,
        });
    }
    Ok(())
}

/// A live value as read from a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub value: Bytes,
    pub version: Version,
    pub expires_at_ms: Option<u64>,
}

/// How a replica took a write. `Applied` and `AlreadyCurrent` mean "this replica now
/// holds this version", which is what a quorum counts; `Stale` means it holds a newer
/// one (not an ack: the coordinator stamps the write again above it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApplyOutcome {
    /// The write was newer and replaced what was there.
    Applied,
    /// The replica already held exactly this version.
    AlreadyCurrent,
    /// The replica holds a newer version; the write was ignored.
    Stale,
    /// A repair write (anti-entropy, read repair) for a key the replica does not hold,
    /// refused because the replica is full: evictions are not undone by repairs.
    Skipped,
}

/// How a write is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ApplyMode {
    /// A client write, a hint, a migration: applied last-write-wins, evicting if full.
    #[default]
    Normal,
    /// A repair (anti-entropy, read repair): like `Normal` for a key the replica holds
    /// (or a tombstone), but a missing key is only filled while the shard has room.
    Fill,
}

/// serde helper: `Option<Bytes>` as a msgpack binary (not an array of integers).
mod opt_bytes {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Bytes>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(serde_bytes::Bytes::new(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Bytes>, D::Error> {
        let v: Option<serde_bytes::ByteBuf> = Option::deserialize(d)?;
        Ok(v.map(|b| Bytes::from(b.into_vec())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_limits() {
        assert_eq!(validate_key(""), Err(KeyError::Empty));
        assert!(validate_key("a").is_ok());
        assert!(validate_key(&"k".repeat(MAX_KEY_BYTES)).is_ok());
        assert_eq!(
            validate_key(&"k".repeat(MAX_KEY_BYTES + 1)),
            Err(KeyError::TooLong(MAX_KEY_BYTES + 1))
        );
    }

    #[test]
    fn admission() {
        let w = |wall: u64, n: usize| Write {
            version: Version {
                hlc: wall << 16 | 7,
                origin: 1,
            },
            value: Some(Bytes::from(vec![0u8; n])),
            expires_at_ms: None,
        };
        assert_eq!(admit(&w(1_000, 10), 10, 1_000, 60_000), Ok(()));
        assert_eq!(admit(&w(61_000, 0), 10, 1_000, 60_000), Ok(()));
        assert_eq!(
            admit(&w(61_001, 0), 10, 1_000, 60_000),
            Err(AdmitError::TooNew {
                ahead_ms: 60_001,
                max_ms: 60_000
            })
        );
        assert!(admit(&w(u64::MAX >> 16, 0), 10, u64::MAX, 60_000).is_ok());
        assert_eq!(
            admit(&w(1_000, 11), 10, 1_000, 60_000),
            Err(AdmitError::TooLarge {
                size: 11,
                limit: 10
            })
        );
    }

    #[test]
    fn version_orders_by_clock_then_origin() {
        let a = Version { hlc: 5, origin: 9 };
        let b = Version { hlc: 6, origin: 1 };
        let c = Version { hlc: 6, origin: 2 };
        assert!(a < b && b < c);
    }
}

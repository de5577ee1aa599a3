//! The peer (dist) wire protocol: msgpack bodies with named fields. Every peer call is
//! one item of a [`Batch`] posted to [`BATCH_PATH`]; the [`BatchReply`] carries one
//! result per item, in order. Each request type is bound to its reply type by [`Rpc`],
//! and the whole batch travels in an [`Envelope`] that carries the protocol version,
//! the sender and its clock.
//!
//! Owns encoding and decoding only. Compatibility rule: a node accepts envelopes whose
//! `v` equals [`PROTOCOL_VERSION`]; new optional fields may be added without a bump
//! (unknown fields are ignored, missing optional ones default), anything else bumps it.
//! A node refuses any other version with a 400 whose code is
//! [`VERSION_MISMATCH_CODE`], and the sender logs it (docs/architecture.md, "Rolling
//! upgrades").

use crate::merkle::SegmentLeaf;
use crate::types::{ApplyMode, ApplyOutcome, Key, Version, Write};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Version marker of the peer protocol. Version 1 had one route per request type;
/// version 2 batches every call into [`Batch`].
pub const PROTOCOL_VERSION: u16 = 2;

/// The one route of the peer protocol on the dist listener (POST).
pub const BATCH_PATH: &str = "/dist/v2/batch";

/// The route of SWIM pings: the same envelope and batch, but it carries pings only and
/// skips the listener's in-flight bound, so a busy node still answers its prober.
pub const PROBE_PATH: &str = "/dist/v2/probe";

/// Error code of a refused envelope whose protocol version differs.
pub const VERSION_MISMATCH_CODE: &str = "PROTOCOL_VERSION";

/// Largest dist request body accepted, in bytes (values are at most 4 MiB by default;
/// batches are split to stay under this).
pub const MAX_DIST_BODY: usize = 64 << 20;

/// Largest body accepted on [`PROBE_PATH`] (pings carry member lists only).
pub const MAX_PROBE_BODY: usize = 1 << 20;

/// A request type and its reply type: how it travels as a [`Call`] and comes back as a
/// [`CallReply`].
pub trait Rpc: Send + 'static {
    /// What the peer answers.
    type Reply: Send + 'static;
    /// Wraps the request as a batch item.
    fn into_call(self) -> Call;
    /// Unwraps the reply; `None` when the peer answered with another reply type.
    fn from_reply(reply: CallReply) -> Option<Self::Reply>;
}

/// One request of a [`Batch`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Call {
    Replicate(Replicate),
    Read(Read),
    Ping(Ping),
    PingReq(PingReq),
    AeCompare(AeCompare),
    AeFetch(AeFetch),
    AcceptHints(AcceptHints),
    Keys(KeyScan),
}

impl Call {
    /// A short name for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Call::Replicate(_) => "replicate",
            Call::Read(_) => "read",
            Call::Ping(_) => "ping",
            Call::PingReq(_) => "ping-req",
            Call::AeCompare(_) => "ae-compare",
            Call::AeFetch(_) => "ae-fetch",
            Call::AcceptHints(_) => "accept-hints",
            Call::Keys(_) => "keys",
        }
    }

    /// Bytes of keys and values this call carries (what batch byte bounds count).
    pub fn weight(&self) -> usize {
        const OVERHEAD: usize = 32;
        OVERHEAD
            + match self {
                Call::Replicate(r) => r.writes.iter().map(KeyedWrite::weight).sum(),
                Call::Read(r) => r.key.len(),
                Call::Ping(p) => p.members.len() * 64,
                Call::PingReq(p) => p.members.len() * 64 + p.target_id.len(),
                Call::AeCompare(c) => c.leaves.len() * 8 + c.segments.len() * 24,
                Call::AeFetch(f) => f.keys.iter().map(String::len).sum(),
                Call::AcceptHints(h) => h.hints.iter().map(|(t, w)| t.len() + w.weight()).sum(),
                Call::Keys(k) => k.q.len(),
            }
    }
}

/// The answer to one [`Call`], same variant order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum CallReply {
    Replicate(ReplicateReply),
    Read(ReadReply),
    Ack(Ack),
    PingReq(PingReqReply),
    AeCompare(AeCompareReply),
    AeFetch(AeFetchReply),
    AcceptHints(AcceptHintsReply),
    Keys(KeyScanReply),
}

/// Why the peer refused one item of a batch (the others are unaffected).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ItemError {
    /// One of the client API's error codes (`BAD_REQUEST`, `DRAINING`, `INTERNAL`, ...).
    pub code: String,
    pub message: String,
}

/// Every peer call travels as an item of one of these.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Batch {
    pub calls: Vec<Call>,
    /// The trace context of calls made for a traced client request: `(index of the
    /// call, W3C traceparent)`. Absent when none is traced (and from senders that
    /// predate it); a receiver ignores a malformed value or index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traces: Vec<(u32, String)>,
}

/// A [`Batch`] serialised from borrowed calls (the sender keeps them, to hint the
/// writes of a failed batch); the same bytes as `Batch`.
#[derive(Debug, Serialize)]
pub struct BatchRef<'a> {
    pub calls: &'a [Call],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub traces: &'a [(u32, String)],
}

/// One result per call of a [`Batch`], in order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BatchReply {
    pub results: Vec<Result<CallReply, ItemError>>,
}

/// Most calls a batch may carry; a peer refuses a larger one.
pub const MAX_BATCH_CALLS: usize = 4096;

macro_rules! rpc {
    ($req:ident => $reply:ident, $call:ident, $ret:ident) => {
        impl Rpc for $req {
            type Reply = $reply;
            fn into_call(self) -> Call {
                Call::$call(self)
            }
            fn from_reply(reply: CallReply) -> Option<$reply> {
                match reply {
                    CallReply::$ret(r) => Some(r),
                    _ => None,
                }
            }
        }
    };
}

rpc!(Replicate => ReplicateReply, Replicate, Replicate);
rpc!(Read => ReadReply, Read, Read);
rpc!(Ping => Ack, Ping, Ack);
rpc!(PingReq => PingReqReply, PingReq, PingReq);
rpc!(AeCompare => AeCompareReply, AeCompare, AeCompare);
rpc!(AeFetch => AeFetchReply, AeFetch, AeFetch);
rpc!(AcceptHints => AcceptHintsReply, AcceptHints, AcceptHints);
rpc!(KeyScan => KeyScanReply, Keys, Keys);

/// Every peer message travels in one of these.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope<T> {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub v: u16,
    /// Node id of the sender.
    pub from: String,
    /// Dist address of the sender.
    pub from_addr: String,
    /// The sender's HLC when it sent this; merged by the receiver.
    pub hlc: u64,
    /// The sender's wall clock (Unix ms) when it sent this. A receiver whose own clock
    /// differs by more than the allowed drift refuses the request before applying any
    /// of it (code [`CLOCK_SKEW_CODE`]). Optional: absent from senders that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now_ms: Option<u64>,
    pub body: T,
}

/// Error code of a request refused because the two nodes' clocks differ by more than
/// the allowed drift.
pub const CLOCK_SKEW_CODE: &str = "CLOCK_SKEW";

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("malformed msgpack: {0}")]
    Malformed(String),
    #[error("unsupported protocol version {got}; this node speaks {PROTOCOL_VERSION}")]
    Version { got: u16 },
}

/// Encodes a message with named fields.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serialising plain data structures to a Vec cannot fail.
    rmp_serde::to_vec_named(msg).unwrap_or_default()
}

/// The version field alone (every other field of the envelope is skipped), so that a
/// body of another version is recognised as such even when the rest of it would not
/// decode under this version's types.
#[derive(Deserialize)]
struct VersionOnly {
    v: u16,
}

/// Decodes an envelope and checks its version (first, from the version field alone).
pub fn decode_envelope<T: DeserializeOwned>(bytes: &[u8]) -> Result<Envelope<T>, DecodeError> {
    if let Ok(h) = rmp_serde::from_slice::<VersionOnly>(bytes) {
        if h.v != PROTOCOL_VERSION {
            return Err(DecodeError::Version { got: h.v });
        }
    }
    let env: Envelope<T> =
        rmp_serde::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if env.v != PROTOCOL_VERSION {
        return Err(DecodeError::Version { got: env.v });
    }
    Ok(env)
}

/// Decodes a reply body.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    rmp_serde::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))
}

/// Most value bytes put in one batched call (replication batches, anti-entropy pushes,
/// hint replays, drain handoffs), well under [`MAX_DIST_BODY`].
pub const MAX_BATCH_BYTES: usize = 8 << 20;

/// Splits writes into batches of at most [`MAX_BATCH_BYTES`] of keys and values (a single
/// larger write gets a batch of its own).
pub fn chunk_writes(writes: Vec<KeyedWrite>) -> Vec<Vec<KeyedWrite>> {
    let mut out: Vec<Vec<KeyedWrite>> = Vec::new();
    let mut size = 0usize;
    for w in writes {
        let n = w.weight();
        if out.is_empty() || (size + n > MAX_BATCH_BYTES && !out.last().is_some_and(Vec::is_empty))
        {
            out.push(Vec::new());
            size = 0;
        }
        size += n;
        if let Some(last) = out.last_mut() {
            last.push(w);
        }
    }
    out
}

/// One key's write, as replicated.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyedWrite {
    pub key: Key,
    pub write: Write,
}

impl KeyedWrite {
    /// Key and value bytes (what byte bounds on batches and queues count).
    pub fn weight(&self) -> usize {
        self.key.len() + self.write.value.as_ref().map_or(0, |v| v.len())
    }
}

/// Apply writes (values or tombstones) to the receiver's store, last-write-wins.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Replicate {
    pub writes: Vec<KeyedWrite>,
    /// `Fill` for repairs (anti-entropy, read repair); absent means `Normal`.
    #[serde(default)]
    pub mode: ApplyMode,
}

/// One outcome per write of a [`Replicate`], in order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplicateReply {
    pub outcomes: Vec<ApplyOutcome>,
}

/// Read the receiver's record of a key (live value or tombstone) with its version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Read {
    pub key: Key,
}

/// The record, or `None` when the receiver has nothing for the key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReadReply {
    pub record: Option<Write>,
}

/// Liveness of a member on the wire.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum WireState {
    Alive,
    Suspect,
    Dead,
    Left,
}

/// One member as gossiped.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberEntry {
    pub id: String,
    pub addr: String,
    pub state: WireState,
    pub incarnation: u64,
}

/// A SWIM probe (or a join, when `seq` is 0): the sender's full member list rides along
/// (push), and the [`Ack`] carries the receiver's (pull).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ping {
    pub seq: u64,
    pub members: Vec<MemberEntry>,
}

/// Answer to a [`Ping`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ack {
    pub seq: u64,
    /// The answering node's own entry (how a bare `host:port` seed's id is learnt).
    pub me: MemberEntry,
    pub members: Vec<MemberEntry>,
}

/// Ask the receiver to probe `target` on the sender's behalf (SWIM indirect probe).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PingReq {
    pub seq: u64,
    pub target_id: String,
    pub target_addr: String,
    pub members: Vec<MemberEntry>,
}

/// Whether the relay heard from the target, plus the relay's member list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PingReqReply {
    pub acked: bool,
    pub members: Vec<MemberEntry>,
}

/// Anti-entropy: the sender's Merkle leaves of the ring segments both nodes own
/// ([`crate::merkle`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AeCompare {
    /// Empty. The fixed 1024 hash buckets of earlier builds; kept so that such a node
    /// still decodes a batch holding this call (and refuses the call alone).
    #[serde(default)]
    pub leaves: Vec<u64>,
    /// [`crate::ring::Ring::fingerprint`] of the sender's ring; `None` from earlier builds.
    #[serde(default)]
    pub ring: Option<u64>,
    /// The sender's non-empty leaves of the shared segments, ascending by segment.
    #[serde(default)]
    pub segments: Vec<SegmentLeaf>,
}

/// The receiver's answer to [`AeCompare`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AeCompareReply {
    /// The shared segments whose leaves differ, ascending.
    pub buckets: Vec<u32>,
    /// The receiver's `(key, version)` entries of the listed segments: the first
    /// `complete` of `buckets` in full, then `buckets[complete]` in part when `partial`.
    pub entries: Vec<(Key, Version)>,
    /// The receiver's ring has another fingerprint: nothing was compared.
    #[serde(default)]
    pub ring_mismatch: bool,
    #[serde(default)]
    pub complete: u32,
    #[serde(default)]
    pub partial: bool,
    /// Per shard of the receiver (index `shards::shard_index(key, len)`): whether it is
    /// full and so refuses a repair of a key it lacks.
    #[serde(default)]
    pub full_shards: Vec<bool>,
}

/// Anti-entropy: the receiver's records of `keys`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AeFetch {
    pub keys: Vec<Key>,
}

/// One record (or `None`) per key asked, in order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AeFetchReply {
    pub records: Vec<Option<Write>>,
}

/// Drain handoff: hints a leaving node could not deliver, for the receiver to queue.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AcceptHints {
    /// `(target node id, write)`.
    pub hints: Vec<(String, KeyedWrite)>,
}

/// How many hints were taken.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AcceptHintsReply {
    pub accepted: u64,
}

/// The key browser: the receiver's smallest `max` live keys that `q` selects
/// ([`crate::keyscan::KeyFilter::parse`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyScan {
    pub q: String,
    pub max: u32,
}

/// The answer to [`KeyScan`]: at most `max` keys, ascending, and how many keys the
/// filter selects on the receiver in all.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyScanReply {
    pub keys: Vec<Key>,
    pub matched: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Version;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn arb_write() -> impl Strategy<Value = Write> {
        (
            any::<u64>(),
            any::<u64>(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
            proptest::option::of(any::<u64>()),
        )
            .prop_map(|(hlc, origin, value, exp)| Write {
                version: Version { hlc, origin },
                value: value.map(Bytes::from),
                expires_at_ms: exp,
            })
    }

    fn env<T>(body: T) -> Envelope<T> {
        Envelope {
            v: PROTOCOL_VERSION,
            from: "node-1".into(),
            from_addr: "h:1".into(),
            hlc: 42,
            now_ms: Some(7),
            body,
        }
    }

    proptest! {
        #[test]
        fn replicate_round_trips(writes in proptest::collection::vec(arb_write(), 0..8), key in ".{0,40}") {
            let msg = env(Replicate {
                writes: writes.into_iter().map(|w| KeyedWrite { key: key.clone(), write: w }).collect(),
                mode: ApplyMode::Fill,
            });
            let back: Envelope<Replicate> = decode_envelope(&encode(&msg)).unwrap();
            prop_assert_eq!(back, msg);
        }

        #[test]
        fn read_reply_round_trips(w in proptest::option::of(arb_write())) {
            let msg = ReadReply { record: w };
            prop_assert_eq!(decode::<ReadReply>(&encode(&msg)).unwrap(), msg);
        }

        #[test]
        fn ping_round_trips(seq in any::<u64>(), inc in any::<u64>(), id in "[a-z0-9-]{1,20}") {
            let m = MemberEntry { id, addr: "127.0.0.1:7946".into(), state: WireState::Suspect, incarnation: inc };
            let msg = env(Ping { seq, members: vec![m.clone(), m] });
            let back: Envelope<Ping> = decode_envelope(&encode(&msg)).unwrap();
            prop_assert_eq!(back, msg);
        }

        #[test]
        fn batch_round_trips(writes in proptest::collection::vec(arb_write(), 0..6), key in "[a-z]{1,20}", seq in any::<u64>()) {
            let calls = vec![
                Call::Replicate(Replicate {
                    writes: writes.iter().cloned().map(|w| KeyedWrite { key: key.clone(), write: w }).collect(),
                    mode: ApplyMode::Normal,
                }),
                Call::Read(Read { key: key.clone() }),
                Call::Ping(Ping { seq, members: vec![] }),
                Call::AeFetch(AeFetch { keys: vec![key.clone(), key.clone()] }),
            ];
            let traces = vec![(0, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned())];
            for traces in [vec![], traces] {
                let msg = env(Batch { calls: calls.clone(), traces: traces.clone() });
                // The borrowed form the sender encodes is the same bytes as the owned one.
                prop_assert_eq!(encode(&env(BatchRef { calls: &calls, traces: &traces })), encode(&msg));
                let back: Envelope<Batch> = decode_envelope(&encode(&msg)).unwrap();
                prop_assert_eq!(back, msg);
            }
            let msg = env(Batch { calls: calls.clone(), traces: vec![] });
            let back: Envelope<Batch> = decode_envelope(&encode(&msg)).unwrap();
            prop_assert_eq!(back, msg);
            let reply = env(BatchReply {
                results: vec![
                    Ok(CallReply::Read(ReadReply { record: writes.first().cloned() })),
                    Err(ItemError { code: "BAD_REQUEST".into(), message: key.clone() }),
                ],
            });
            let back: Envelope<BatchReply> = decode(&encode(&reply)).unwrap();
            prop_assert_eq!(back, reply);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_envelope::<Batch>(&bytes);
            let _ = decode::<Envelope<BatchReply>>(&bytes);
            let _ = decode_envelope::<Replicate>(&bytes);
            let _ = decode_envelope::<Ping>(&bytes);
        }
    }

    #[test]
    fn values_are_msgpack_binary_not_arrays() {
        let w = Write {
            version: Version::default(),
            value: Some(Bytes::from_static(&[1, 2, 3])),
            expires_at_ms: None,
        };
        let bytes = encode(&w);
        // 0xc4 = bin8 marker followed by the length 3.
        assert!(bytes.windows(2).any(|p| p == [0xc4, 3]), "{bytes:?}");
    }

    #[test]
    fn chunks_stay_under_the_byte_cap() {
        let big = |k: &str, n: usize| KeyedWrite {
            key: k.into(),
            write: Write {
                version: Version::default(),
                value: Some(Bytes::from(vec![0u8; n])),
                expires_at_ms: None,
            },
        };
        let writes = vec![
            big("a", 3 << 20),
            big("b", 3 << 20),
            big("c", 3 << 20),
            big("d", 20 << 20),
            big("e", 1),
        ];
        let chunks = chunk_writes(writes);
        let keys: Vec<Vec<&str>> = chunks
            .iter()
            .map(|c| c.iter().map(|w| w.key.as_str()).collect())
            .collect();
        assert_eq!(keys, vec![vec!["a", "b"], vec!["c"], vec!["d"], vec!["e"]]);
        assert!(chunk_writes(Vec::new()).is_empty());
    }

    #[test]
    fn each_request_type_maps_to_its_own_reply() {
        let ack = CallReply::Read(ReadReply { record: None });
        assert_eq!(
            Read::from_reply(ack.clone()),
            Some(ReadReply { record: None })
        );
        assert_eq!(Replicate::from_reply(ack), None, "a wrong reply is refused");
        assert_eq!(Read { key: "k".into() }.into_call().kind(), "read");
    }

    #[test]
    fn another_version_is_recognised_even_when_its_body_is_foreign() {
        let body = serde_json::json!({"v": 3, "from": "x", "from_addr": "x:1", "hlc": 1,
            "body": {"calls": [{"SomeFutureCall": {"anything": [1, 2, 3]}}]}});
        let bytes = rmp_serde::to_vec_named(&body).unwrap();
        assert_eq!(
            decode_envelope::<Batch>(&bytes),
            Err(DecodeError::Version { got: 3 })
        );
    }

    #[test]
    fn wrong_version_is_rejected() {
        let mut msg = env(Read { key: "k".into() });
        msg.v = 99;
        assert_eq!(
            decode_envelope::<Read>(&encode(&msg)),
            Err(DecodeError::Version { got: 99 })
        );
    }
}

//! Writes the committed seed corpus, `corpus-seed/<target>/`, and the dictionary of
//! `parse_input`, `dict/parse_input.dict`, from the real types (so the seeds follow the
//! wire format when it changes). Deterministic; files named `crash-*` (kept crashing
//! inputs) are left alone.
//!
//!     cd fuzz && cargo run --example gen_seeds        # or: scripts/fuzz --seeds

use bytes::Bytes;
use hypercache_actors::merkle::SegmentLeaf;
use hypercache_actors::proto::{
    encode, AcceptHints, AcceptHintsReply, Ack, AeCompare, AeCompareReply, AeFetch, AeFetchReply,
    Batch, BatchReply, Call, CallReply, Envelope, ItemError, KeyedWrite, MemberEntry, Ping,
    PingReq, PingReqReply, Read, ReadReply, Replicate, ReplicateReply, WireState, PROTOCOL_VERSION,
};
use hypercache_actors::ring::Ring;
use hypercache_actors::types::{ApplyMode, ApplyOutcome, Version, Write};
use hypercache_fuzz::swim::{ME_ADDR, ME_ID};
use std::fs;
use std::path::{Path, PathBuf};

fn env<T>(body: T) -> Envelope<T> {
    Envelope {
        v: PROTOCOL_VERSION,
        from: "n1".into(),
        from_addr: "n1:7946".into(),
        hlc: 0,
        now_ms: None,
        body,
    }
}

fn write(hlc: u64, value: Option<&'static [u8]>, expires_at_ms: Option<u64>) -> Write {
    Write {
        version: Version { hlc, origin: 7 },
        value: value.map(Bytes::from_static),
        expires_at_ms,
    }
}

fn kw(key: &str, w: Write) -> KeyedWrite {
    KeyedWrite {
        key: key.into(),
        write: w,
    }
}

fn member(id: &str, addr: &str, state: WireState, incarnation: u64) -> MemberEntry {
    MemberEntry {
        id: id.into(),
        addr: addr.into(),
        state,
        incarnation,
    }
}

fn members() -> Vec<MemberEntry> {
    vec![
        member("n1", "n1:7946", WireState::Alive, 0),
        member("n2", "n2:7946", WireState::Suspect, 3),
        member("n3", "n3:7946", WireState::Dead, 1),
        member("n4", "n4:7946", WireState::Left, 2),
    ]
}

fn calls() -> Vec<(&'static str, Call)> {
    vec![
        (
            "replicate",
            Call::Replicate(Replicate {
                writes: vec![
                    kw("k1", write(1 << 16, Some(b"value"), None)),
                    kw("k2", write(2 << 16, None, None)),
                    kw("k3", write(3 << 16, Some(b"expiring"), Some(u64::MAX))),
                ],
                mode: ApplyMode::Normal,
            }),
        ),
        (
            "replicate-fill",
            Call::Replicate(Replicate {
                writes: vec![kw("k1", write(5 << 16, Some(b"repair"), Some(1)))],
                mode: ApplyMode::Fill,
            }),
        ),
        ("read", Call::Read(Read { key: "k1".into() })),
        (
            "ping",
            Call::Ping(Ping {
                seq: 1,
                members: members(),
            }),
        ),
        (
            "ping-join",
            Call::Ping(Ping {
                seq: 0,
                members: vec![member("n1", "n1:7946", WireState::Alive, 0)],
            }),
        ),
        (
            "ping-req",
            Call::PingReq(PingReq {
                seq: 2,
                target_id: "n2".into(),
                target_addr: "n2:7946".into(),
                members: members(),
            }),
        ),
        (
            "ae-compare",
            Call::AeCompare(AeCompare {
                leaves: vec![],
                // The ring of the dist_dispatch node (one node, replication 1).
                ring: Some(Ring::new(["fuzz-node"], 1).fingerprint()),
                segments: (0..8u32)
                    .map(|i| SegmentLeaf {
                        segment: i * 3,
                        hash: u64::from(i) * 0x9e37_79b9,
                        count: u64::from(i) + 1,
                    })
                    .collect(),
            }),
        ),
        (
            "ae-compare-other-ring",
            Call::AeCompare(AeCompare {
                leaves: vec![],
                ring: Some(7),
                segments: vec![],
            }),
        ),
        (
            "ae-fetch",
            Call::AeFetch(AeFetch {
                keys: vec!["k1".into(), "k2".into(), "missing".into()],
            }),
        ),
        (
            "accept-hints",
            Call::AcceptHints(AcceptHints {
                hints: vec![("n2".into(), kw("k9", write(9 << 16, Some(b"hinted"), None)))],
            }),
        ),
    ]
}

fn replies() -> Vec<Result<CallReply, ItemError>> {
    vec![
        Ok(CallReply::Replicate(ReplicateReply {
            outcomes: vec![
                ApplyOutcome::Applied,
                ApplyOutcome::AlreadyCurrent,
                ApplyOutcome::Stale,
            ],
        })),
        Ok(CallReply::Read(ReadReply {
            record: Some(write(1 << 16, Some(b"value"), None)),
        })),
        Ok(CallReply::Read(ReadReply { record: None })),
        Ok(CallReply::Ack(Ack {
            seq: 1,
            me: member("n1", "n1:7946", WireState::Alive, 0),
            members: members(),
        })),
        Ok(CallReply::PingReq(PingReqReply {
            acked: true,
            members: members(),
        })),
        Ok(CallReply::AeCompare(AeCompareReply {
            buckets: vec![0, 17, 1023],
            complete: 1,
            partial: true,
            full_shards: vec![false, true],
            ..AeCompareReply::default()
        })),
        Ok(CallReply::AeCompare(AeCompareReply {
            ring_mismatch: true,
            ..AeCompareReply::default()
        })),
        Ok(CallReply::AeCompare(AeCompareReply {
            buckets: vec![4],
            entries: vec![(
                "k1".into(),
                Version {
                    hlc: 1 << 16,
                    origin: 7,
                },
            )],
            complete: 1,
            ..AeCompareReply::default()
        })),
        Ok(CallReply::AeFetch(AeFetchReply {
            records: vec![Some(write(2 << 16, None, None)), None],
        })),
        Ok(CallReply::AcceptHints(AcceptHintsReply { accepted: 1 })),
        Err(ItemError {
            code: "BAD_REQUEST".into(),
            message: "empty key".into(),
        }),
    ]
}

/// Envelopes a node receives: one per call type, all of them at once, and the edges.
fn batches() -> Vec<(String, Vec<u8>)> {
    let mut out = vec![(
        "batch-empty".to_owned(),
        encode(&env(Batch { calls: vec![], traces: vec![] })),
    )];
    for (name, call) in calls() {
        out.push((
            format!("batch-{name}"),
            encode(&env(Batch { calls: vec![call], traces: vec![] })),
        ));
    }
    out.push((
        "batch-all".into(),
        encode(&env(Batch {
            calls: calls().into_iter().map(|(_, c)| c).collect(),
            traces: vec![
                (0, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
                (99, "not-a-traceparent".into()),
            ],
        })),
    ));
    let bad_keys = Batch {
        calls: vec![
            Call::Read(Read { key: String::new() }),
            Call::Read(Read {
                key: "x".repeat(1025),
            }),
            Call::AeCompare(AeCompare {
                leaves: vec![1, 2],
                ring: None,
                segments: vec![],
            }),
            Call::AeCompare(AeCompare {
                leaves: vec![],
                ring: Some(Ring::new(["fuzz-node"], 1).fingerprint()),
                segments: vec![
                    SegmentLeaf { segment: 5, hash: 1, count: 1 },
                    SegmentLeaf { segment: 5, hash: 1, count: 1 },
                    SegmentLeaf { segment: u32::MAX, hash: 0, count: 0 },
                ],
            }),
        ],
        traces: vec![],
    };
    out.push(("batch-bad-items".into(), encode(&env(bad_keys))));
    let mut old = env(Batch { calls: vec![], traces: vec![] });
    old.v = 1;
    out.push(("batch-version-1".into(), encode(&old)));
    let mut future = env(Batch {
        calls: vec![Call::Read(Read { key: "k1".into() })],
        traces: vec![],
    });
    future.hlc = u64::MAX;
    out.push(("batch-clock-ahead".into(), encode(&future)));
    out
}

fn reply_envelopes() -> Vec<(String, Vec<u8>)> {
    vec![
        (
            "reply-all".into(),
            encode(&env(BatchReply { results: replies() })),
        ),
        (
            "reply-empty".into(),
            encode(&env(BatchReply { results: vec![] })),
        ),
    ]
}

/// Member lists as peers gossip them (what `swim_merge` decodes).
fn member_lists() -> Vec<(String, Vec<u8>)> {
    let lists: Vec<(&str, Vec<MemberEntry>)> = vec![
        ("members-empty", vec![]),
        ("members-mixed", members()),
        (
            "members-alive",
            (1..=5)
                .map(|i| member(&format!("n{i}"), &format!("n{i}:7946"), WireState::Alive, 0))
                .collect(),
        ),
        (
            "members-suspect-me",
            vec![
                member(ME_ID, ME_ADDR, WireState::Suspect, 0),
                member("n1", "n1:7946", WireState::Alive, 1),
            ],
        ),
        (
            "members-dead-me",
            vec![member(ME_ID, ME_ADDR, WireState::Dead, 41)],
        ),
        (
            "members-me-elsewhere",
            vec![member(ME_ID, "elsewhere:1", WireState::Alive, 9)],
        ),
        (
            "members-my-addr",
            vec![member("impostor", ME_ADDR, WireState::Alive, 0)],
        ),
        (
            "members-updates",
            vec![
                member("n1", "n1:7946", WireState::Alive, 0),
                member("n1", "n1:7946", WireState::Suspect, 0),
                member("n1", "n1:7946", WireState::Alive, 1),
                member("n1", "n1:7946", WireState::Dead, 1),
                member("n1", "n1:7946", WireState::Left, 2),
                member("n2", "n2:7946", WireState::Dead, 0),
            ],
        ),
        (
            "members-seed",
            vec![member("seed-node", "seed:7946", WireState::Alive, 0)],
        ),
    ];
    lists
        .into_iter()
        .map(|(n, l)| (n.to_owned(), encode(&l)))
        .collect()
}

/// Inputs of the `arbitrary` op-sequence mode of `swim_merge` (bytes that are not a
/// member list): fixed pseudo-random bytes.
fn op_sequences() -> Vec<(String, Vec<u8>)> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..4)
        .map(|i| {
            let mut bytes: Vec<u8> = (0..256 << i)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                })
                .collect();
            // 0xc1 is never used by msgpack: not a member list, so read as ops.
            bytes[0] = 0xc1;
            (format!("ops-{i}"), bytes)
        })
        .collect()
}

fn texts() -> Vec<(String, Vec<u8>)> {
    let full_config =
        "NODE_ID=node-1\nAPI_ADDR=:8080\nMGMT_ADDR=127.0.0.1:8081\nDIST_ADDR=[::1]:7946\n\
SEEDS=n2@node-2:7946, node-3:7946\nREPLICATION=3\nWRITE_CONSISTENCY=quorum\nREAD_CONSISTENCY=ONE\n\
CAPACITY=100000\nCAPACITY_BYTES=1GiB\nMAX_VALUE_BYTES=4MiB\nSHARDS=16\nAUTH_TOKEN=secret\n\
LOG_LEVEL=debug\nLOG_FORMAT=json\nHEARTBEAT=1s\nINDIRECT_PROBE_K=2\nSUSPECT_TIMEOUT=3s\n\
DEAD_TIMEOUT=1h\nHINT_TTL=30s\nHINT_REPLAY=200ms\nREBALANCE_INTERVAL=250ms\n\
TOMBSTONE_RETENTION=10m\nSWEEP_INTERVAL=1s\nDRAIN_LINGER=0\nSHUTDOWN_GRACE=30s\n\
MAX_INFLIGHT=1024\nPEER_TIMEOUT=2s\nHINT_MAX_PER_PEER=100000\nHINT_MAX_BYTES=64MiB\n\
ANTI_ENTROPY_INTERVAL=10s\nANTI_ENTROPY_MAX_KEYS=10000\nREBALANCE_BATCH=500\n\
REBALANCE_CONCURRENCY=2\nDRAIN_TIMEOUT=1m\nPEER_QUEUE_ITEMS=8192\nPEER_QUEUE_BYTES=64MiB\n\
PEER_BATCH_ITEMS=256\nPEER_BATCH_BYTES=4MiB\nPEER_PIPELINE=4\nREAD_HEDGE=20ms\n";
    let tricky_config = "NODE_ID=a@b\nHEARTBEAT=87600h1ns\nCAPACITY=1\nSHARDS=1024\n\
CAPACITY_BYTES=18446744073709551615\nMAX_VALUE_BYTES=32MiB\nTOMBSTONE_RETENTION=1ms\n\
DIST_ADDR=host:0\nSEEDS=@x:1,,\nLOG_FORMAT=xml\nREPLICATION=65\n";
    let durations = "250ms\n1.5s\n2h30m\n1h0m0.5s\n10us\n10\u{b5}s\n10\u{3bc}s\n0\n-0\n+5s\n-5s\n\
 5 minutes \n1day 2h\n.5s\n5.s\n1..5s\n5\nms\n-abc\n\
340282366920938463463374607431768211455ns\n18446744073709551616s\n0.000000000000000000001h\n\
9999999999999999999999h\n1y\n100years\n";
    let queries = "ttl=1ms&consistency=quorum\nttl=0\nttl=100y&consistency=ALL\nttl=0.0001s\n\
ttl=-1s\nttl=5m&ttl=6m\nconsistency=two\n%zz%ff+&=&&ttl\nttl=1%68\nconsistency=%6fne\n\
ttl=3155760000s\nttl=3155760001s\n";
    let keys = format!(
        "\n{}\n{}\nk\u{e9}y with spaces/and?query\n",
        "k".repeat(1024),
        "k".repeat(1025)
    );
    vec![
        ("config-full".into(), full_config.into()),
        ("config-tricky".into(), tricky_config.into()),
        ("durations".into(), durations.into()),
        ("queries".into(), queries.into()),
        ("keys".into(), keys.into_bytes()),
        (
            "not-utf8".into(),
            b"ttl=\xff\xfe1s\nHEARTBEAT=\xc3(\n".to_vec(),
        ),
    ]
}

/// libFuzzer dictionary of `parse_input`: the variable names (looked up by hash, which
/// comparison tracing cannot see through), units and query names.
fn dictionary() -> String {
    let mut words: Vec<String> = hypercache_server::config::KNOWN
        .iter()
        .map(|n| format!("{n}="))
        .collect();
    for w in [
        "ns",
        "us",
        "\u{b5}s",
        "ms",
        "s",
        "m",
        "h",
        "d",
        "y",
        "min",
        "minutes",
        "day",
        "ttl=",
        "consistency=",
        "one",
        "quorum",
        "all",
        "KiB",
        "MiB",
        "GiB",
        "KB",
        "MB",
        "GB",
        "&",
        "%",
        "@",
        ":",
        "[::1]",
        "json",
        "text",
        "trace",
        "\n",
    ] {
        words.push(w.to_owned());
    }
    let mut out = String::from("# Generated by examples/gen_seeds.rs; do not edit.\n");
    for w in words {
        let escaped: String = w
            .bytes()
            .map(|b| match b {
                b'"' | b'\\' => format!("\\{}", b as char),
                0x20..=0x7e => (b as char).to_string(),
                _ => format!("\\x{b:02X}"),
            })
            .collect();
        out.push_str(&format!("\"{escaped}\"\n"));
    }
    out
}

/// RESP seeds: the first byte is the chunk size less one (see `hypercache_fuzz::resp`).
fn resp_streams() -> Vec<(String, Vec<u8>)> {
    let bulk = |args: &[&[u8]]| {
        let mut v = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            v.extend_from_slice(a);
            v.extend_from_slice(b"\r\n");
        }
        v
    };
    let mut pipeline = bulk(&[b"SET", b"k", b"v", b"EX", b"10", b"NX"]);
    pipeline.extend(bulk(&[b"GET", b"k"]));
    pipeline.extend(bulk(&[b"MSET", b"a", b"1", b"b", b"2"]));
    pipeline.extend(bulk(&[b"MGET", b"a", b"b", b"c"]));
    pipeline.extend(bulk(&[b"DEL", b"a", b"b"]));
    pipeline.extend(bulk(&[b"PEXPIRE", b"k", b"250"]));
    pipeline.extend(bulk(&[b"PTTL", b"k"]));
    pipeline.extend(bulk(&[b"HELLO", b"3", b"AUTH", b"default", b"pw", b"SETNAME", b"x"]));
    pipeline.extend(bulk(&[b"CLIENT", b"SETNAME", b"app"]));
    pipeline.extend(bulk(&[b"COMMAND", b"INFO", b"get"]));
    pipeline.extend(bulk(&[b"INFO", b"keyspace"]));
    let mut out = vec![
        ("pipeline_bytewise".to_string(), [vec![0u8], pipeline.clone()].concat()),
        ("pipeline_chunks".to_string(), [vec![63u8], pipeline].concat()),
        (
            "inline".to_string(),
            b"\x07PING\r\nSET k v\r\n\r\nGET k\nQUIT\r\n".to_vec(),
        ),
        (
            "big_bulk".to_string(),
            [vec![255u8], bulk(&[b"SET", b"k", &[b'x'; 4000]])].concat(),
        ),
    ];
    out.push(("bad_length".to_string(), b"\x10*1\r\n$99999\r\n".to_vec()));
    out
}

fn write_all(dir: &Path, files: Vec<(String, Vec<u8>)>) {
    fs::create_dir_all(dir).expect("create the seed directory");
    for (name, bytes) in files {
        fs::write(dir.join(name), bytes).expect("write a seed");
    }
}

fn main() {
    let root = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf());
    let seeds = root.join("corpus-seed");
    let mut envelope = batches();
    envelope.extend(reply_envelopes());
    write_all(&seeds.join("dist_envelope"), envelope);
    write_all(&seeds.join("dist_dispatch"), batches());
    let mut swim = member_lists();
    swim.extend(op_sequences());
    write_all(&seeds.join("swim_merge"), swim);
    write_all(&seeds.join("parse_input"), texts());
    write_all(&seeds.join("resp_decode"), resp_streams());
    fs::create_dir_all(root.join("dict")).expect("create the dictionary directory");
    fs::write(root.join("dict").join("parse_input.dict"), dictionary())
        .expect("write the dictionary");
    println!("seeds written to {}", seeds.display());
}

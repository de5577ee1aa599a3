//! Resident memory per stored item of [`ShardStore`]: inserts 1,000,000 items (16-byte
//! keys `key:000000012345`, 100-byte values) into 16 stores, as a node with 16 shards
//! holds them, and prints the growth of the process's resident set per item.
//!
//! Linux only (reads `VmRSS` from `/proc/self/status`). Run it in release:
//! `cargo run -p hypercache-actors --release --example store_memory [items]`.

use bytes::Bytes;
use hypercache_actors::store::{ShardLimits, ShardStore};
use hypercache_actors::types::{Version, Write};

const SHARDS: usize = 16;

/// The resident set of this process in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS in /proc/self/status");
    kib * 1024
}

fn main() {
    let items: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("items is a number"))
        .unwrap_or(1_000_000);
    let limits = ShardLimits {
        capacity_items: 2_000_000,
        capacity_bytes: None,
        tombstone_retention_ms: 60_000,
        tombstone_bytes: 64 << 20,
    };
    let before = rss_bytes();
    let mut shards: Vec<ShardStore> = (0..SHARDS).map(|_| ShardStore::new(limits)).collect();
    let payload = [b'v'; 100];
    for i in 0..items {
        let key = format!("key:{i:012}");
        // As the server stores a value: copied into an allocation of its exact size.
        let write = Write {
            version: Version {
                hlc: (i + 1) << 16,
                origin: 1,
            },
            value: Some(Bytes::copy_from_slice(&payload)),
            expires_at_ms: None,
        };
        let shard = xxhash_rust::xxh64::xxh64(key.as_bytes(), 0) as usize % SHARDS;
        shards[shard].apply(&key, &write, 0).expect("applied");
    }
    let after = rss_bytes();
    let held: u64 = shards.iter().map(|s| s.stats().items).sum();
    assert_eq!(held, items, "nothing was evicted");
    let per_item = (after - before) as f64 / items as f64;
    println!(
        "{items} items in {SHARDS} shards: RSS {} MiB -> {} MiB, {per_item:.1} B per item",
        before >> 20,
        after >> 20
    );
    std::hint::black_box(&shards);
}

//! Micro-benchmarks of one shard's store ([`ShardStore`]) at the size of one shard of a
//! node holding a million items in 16 shards: 62,500 entries of 16-byte keys and
//! 100-byte values.
//!
//! `cargo bench -p hypercache-actors --bench store`

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use hypercache_actors::store::{ShardLimits, ShardStore};
use hypercache_actors::types::{Version, Write};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Entries of one shard.
const ENTRIES: u64 = 62_500;
const VALUE: [u8; 100] = [b'v'; 100];

fn key(i: u64) -> String {
    format!("key:{i:012}")
}

fn write(hlc: u64, value: &[u8], expires_at_ms: Option<u64>) -> Write {
    Write {
        version: Version { hlc, origin: 1 },
        value: Some(Bytes::copy_from_slice(value)),
        expires_at_ms,
    }
}

fn limits(capacity_items: usize) -> ShardLimits {
    ShardLimits {
        capacity_items,
        capacity_bytes: None,
        tombstone_retention_ms: u64::MAX / 2,
        tombstone_bytes: u64::MAX,
    }
}

/// A store holding keys `0..n`, each at version `1`.
fn filled(n: u64, capacity_items: usize) -> ShardStore {
    let mut s = ShardStore::new(limits(capacity_items));
    for i in 0..n {
        s.apply(&key(i), &write(1, &VALUE, None), 0).unwrap();
    }
    s
}

/// Times `iters` applies of new keys from `first` on; keys and writes are made
/// beforehand so only the store is timed.
fn time_inserts(s: &mut ShardStore, first: u64, iters: u64) -> Duration {
    let batch: Vec<(String, Write)> = (first..first + iters)
        .map(|i| (key(i), write(2, &VALUE, None)))
        .collect();
    let start = Instant::now();
    for (k, w) in &batch {
        black_box(s.apply(k, w, 0).unwrap());
    }
    start.elapsed()
}

fn writes(c: &mut Criterion) {
    c.bench_function("insert_new_key", |b| {
        b.iter_custom(|iters| {
            let mut s = ShardStore::new(limits(usize::MAX));
            time_inserts(&mut s, 0, iters)
        })
    });
    let mut s = filled(ENTRIES, usize::MAX);
    let mut hlc = 1;
    c.bench_function("overwrite", |b| {
        b.iter_custom(|iters| {
            let batch: Vec<(String, Write)> = (0..iters)
                .map(|i| {
                    hlc += 1;
                    (key(i % ENTRIES), write(hlc, &VALUE, None))
                })
                .collect();
            let start = Instant::now();
            for (k, w) in &batch {
                black_box(s.apply(k, w, 0).unwrap());
            }
            start.elapsed()
        })
    });
    let mut s = filled(ENTRIES, ENTRIES as usize);
    let mut next = ENTRIES;
    c.bench_function("insert_evicting_at_capacity", |b| {
        b.iter_custom(|iters| {
            let d = time_inserts(&mut s, next, iters);
            next += iters;
            d
        })
    });
}

fn reads(c: &mut Criterion) {
    let mut s = filled(ENTRIES, usize::MAX);
    let hits: Vec<String> = (0..ENTRIES).map(key).collect();
    let misses: Vec<String> = (ENTRIES..2 * ENTRIES).map(key).collect();
    let mut i = 0;
    c.bench_function("get_hit", |b| {
        b.iter(|| {
            i = (i + 1) % hits.len();
            black_box(s.get(&hits[i], 0))
        })
    });
    c.bench_function("get_miss", |b| {
        b.iter(|| {
            i = (i + 1) % misses.len();
            black_box(s.get(&misses[i], 0))
        })
    });
    let big = vec![b'v'; 64 << 10];
    for i in 0..1_000 {
        s.apply(&key(i), &write(2, &big, None), 0).unwrap();
    }
    c.bench_function("get_hit_64KiB", |b| {
        b.iter(|| {
            i = (i + 1) % 1_000;
            black_box(s.get(&hits[i], 0))
        })
    });
}

fn sweeps(c: &mut Criterion) {
    const DUE: u64 = 1_000;
    // ENTRIES entries, DUE of them expiring at 100; every sweep expires those DUE
    // (each becomes a tombstone), and they are written again before the next.
    let mut s = filled(ENTRIES, usize::MAX);
    let mut hlc = 1;
    c.bench_function("sweep_1000_due_of_62500", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                hlc += 1;
                for i in 0..DUE {
                    s.apply(&key(i * 7), &write(hlc, &VALUE, Some(100)), 0)
                        .unwrap();
                }
                let start = Instant::now();
                assert_eq!(black_box(s.sweep(100)), DUE);
                total += start.elapsed();
            }
            total
        })
    });
    // Every entry has an expiry time, none is due yet.
    let mut s = ShardStore::new(limits(usize::MAX));
    for i in 0..ENTRIES {
        s.apply(&key(i), &write(1, &VALUE, Some(1_000_000 + i)), 0)
            .unwrap();
    }
    c.bench_function("sweep_none_due_of_62500", |b| {
        b.iter(|| black_box(s.sweep(100)))
    });
}

criterion_group!(benches, writes, reads, sweeps);
criterion_main!(benches);

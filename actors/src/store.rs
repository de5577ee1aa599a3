//! The pure store of one shard: live entries in LRU order, tombstones, capacity and byte
//! limits, expiry, and the counters an operator reads.
//!
//! Owns no clock and no I/O: every call that depends on time takes `now_ms`. The actor in
//! [`crate::shard`] owns one `ShardStore` and feeds it messages and sweep ticks.
//!
//! Invariants:
//! - `apply` is last-write-wins by [`Version`]: a write never replaces a newer version, so
//!   applying any set of writes in any order, with duplicates, ends in the same state.
//! - Live items never exceed `capacity_items`, and live key+value bytes never exceed
//!   `capacity_bytes` (when set): the least recently used entries are evicted first.
//! - An expired entry is never returned; it is removed when read or by `sweep`.
//! - A tombstone is kept until its retention has passed, so an older value cannot
//!   resurrect a deleted key while the tombstone exists. An expired value becomes a
//!   tombstone of its version for the same reason. Tombstones are bounded too: at most
//!   `capacity_items` per shard, the oldest dropped first (counted).

use crate::types::{ApplyMode, ApplyOutcome, Key, Stored, Version, Write};
use bytes::Bytes;
use lru::LruCache;

/// A live entry.
#[derive(Debug, Clone)]
struct Entry {
    value: Bytes,
    version: Version,
    expires_at_ms: Option<u64>,
}

/// A remembered delete.
#[derive(Debug, Clone, Copy)]
struct Tombstone {
    version: Version,
    purge_at_ms: u64,
}

/// Limits of one shard.
#[derive(Debug, Clone, Copy)]
pub struct ShardLimits {
    /// Most live items held.
    pub capacity_items: usize,
    /// Most live key+value bytes held; `None` is unlimited.
    pub capacity_bytes: Option<u64>,
    /// How long a tombstone is kept after it is written.
    pub tombstone_retention_ms: u64,
}

/// Counters and gauges of one shard; summed across shards for `/stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ShardStats {
    pub items: u64,
    pub bytes: u64,
    pub tombstones: u64,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub expirations: u64,
    pub writes_applied: u64,
    pub writes_stale: u64,
    pub tombstones_purged: u64,
    pub fills_skipped: u64,
    pub tombstones_evicted: u64,
}

impl std::ops::AddAssign for ShardStats {
    fn add_assign(&mut self, o: Self) {
        self.items += o.items;
        self.bytes += o.bytes;
        self.tombstones += o.tombstones;
        self.hits += o.hits;
        self.misses += o.misses;
        self.evictions += o.evictions;
        self.expirations += o.expirations;
        self.writes_applied += o.writes_applied;
        self.writes_stale += o.writes_stale;
        self.tombstones_purged += o.tombstones_purged;
        self.fills_skipped += o.fills_skipped;
        self.tombstones_evicted += o.tombstones_evicted;
    }
}

/// One shard's data.
pub struct ShardStore {
    live: LruCache<Key, Entry>,
    tombstones: LruCache<Key, Tombstone>,
    limits: ShardLimits,
    bytes: u64,
    stats: ShardStats,
}

fn entry_bytes(key: &str, value: &Bytes) -> u64 {
    (key.len() + value.len()) as u64
}

fn expired(expires_at_ms: Option<u64>, now_ms: u64) -> bool {
    matches!(expires_at_ms, Some(t) if t <= now_ms)
}

impl ShardStore {
    pub fn new(limits: ShardLimits) -> Self {
        Self {
            live: LruCache::unbounded(),
            tombstones: LruCache::unbounded(),
            limits,
            bytes: 0,
            stats: ShardStats::default(),
        }
    }

    /// Reads a live value, refreshing its LRU position. Counts a hit or a miss; an
    /// expired entry is removed and counted as an expiration and a miss.
    pub fn get(&mut self, key: &str, now_ms: u64) -> Option<Stored> {
        let found = match self.live.get(key) {
            Some(e) if expired(e.expires_at_ms, now_ms) => None,
            Some(e) => {
                self.stats.hits += 1;
                return Some(Stored {
                    value: e.value.clone(),
                    version: e.version,
                    expires_at_ms: e.expires_at_ms,
                });
            }
            None => Some(()),
        };
        if found.is_none() {
            self.expire_to_tombstone(key, now_ms);
        }
        self.stats.misses += 1;
        None
    }

    /// The record this shard holds for `key`: the live value or the tombstone, with its
    /// version. Counts a hit or miss like [`ShardStore::get`] (a tombstone is a miss).
    pub fn get_record(&mut self, key: &str, now_ms: u64) -> Option<Write> {
        if let Some(st) = self.get(key, now_ms) {
            return Some(Write {
                version: st.version,
                value: Some(st.value),
                expires_at_ms: st.expires_at_ms,
            });
        }
        self.tombstones.peek(key).map(|t| Write {
            version: t.version,
            value: None,
            expires_at_ms: None,
        })
    }

    /// The version this shard holds for `key` (live or tombstone), without touching LRU
    /// order or counters.
    pub fn version_of(&self, key: &str) -> Option<Version> {
        self.live
            .peek(key)
            .map(|e| e.version)
            .or_else(|| self.tombstones.peek(key).map(|t| t.version))
    }

    /// True when one more live item would force an eviction.
    pub fn is_full(&self) -> bool {
        self.live.len() >= self.limits.capacity_items
            || matches!(self.limits.capacity_bytes, Some(b) if self.bytes >= b)
    }

    /// Applies a write in the given mode. In [`ApplyMode::Fill`], a value for a key this
    /// shard holds nothing for is refused ([`ApplyOutcome::Skipped`]) while the shard is
    /// full, so anti-entropy and read repair never undo an eviction by evicting another.
    pub fn apply_mode(
        &mut self,
        key: &str,
        write: &Write,
        mode: ApplyMode,
        now_ms: u64,
    ) -> ApplyOutcome {
        if mode == ApplyMode::Fill
            && write.value.is_some()
            && self.version_of(key).is_none()
            && self.is_full()
        {
            self.stats.fills_skipped += 1;
            return ApplyOutcome::Skipped;
        }
        self.apply(key, write, now_ms)
    }

    /// Every key this shard has a record for (live or tombstone) with its version.
    pub fn versions(&self) -> Vec<(Key, Version)> {
        let mut out: Vec<(Key, Version)> = self
            .live
            .iter()
            .map(|(k, e)| (k.clone(), e.version))
            .collect();
        out.extend(self.tombstones.iter().map(|(k, t)| (k.clone(), t.version)));
        out
    }

    /// The raw record of `key` (live value or tombstone) without touching LRU order or
    /// counters; expired values are reported as absent.
    pub fn peek_record(&self, key: &str, now_ms: u64) -> Option<Write> {
        if let Some(e) = self.live.peek(key) {
            if expired(e.expires_at_ms, now_ms) {
                return None;
            }
            return Some(Write {
                version: e.version,
                value: Some(e.value.clone()),
                expires_at_ms: e.expires_at_ms,
            });
        }
        self.tombstones.peek(key).map(|t| Write {
            version: t.version,
            value: None,
            expires_at_ms: None,
        })
    }

    /// Drops this shard's copy of `key` if it still holds exactly `version` (used after
    /// the key's new owners acknowledged it). Returns whether it was dropped.
    pub fn release(&mut self, key: &str, version: Version) -> bool {
        if self.live.peek(key).is_some_and(|e| e.version == version) {
            return self.remove_live(key);
        }
        if self
            .tombstones
            .peek(key)
            .is_some_and(|t| t.version == version)
        {
            return self.tombstones.pop(key).is_some();
        }
        false
    }

    /// Applies a replicated write or delete, last-write-wins.
    pub fn apply(&mut self, key: &str, write: &Write, now_ms: u64) -> ApplyOutcome {
        match self.version_of(key) {
            Some(v) if v > write.version => {
                self.stats.writes_stale += 1;
                return ApplyOutcome::Stale;
            }
            Some(v) if v == write.version => return ApplyOutcome::AlreadyCurrent,
            _ => {}
        }
        self.stats.writes_applied += 1;
        match &write.value {
            // An already expired value reads exactly like a delete; keeping it as a
            // tombstone still blocks older versions.
            Some(value) if !expired(write.expires_at_ms, now_ms) => {
                self.tombstones.pop(key);
                self.insert_live(key, value.clone(), write.version, write.expires_at_ms);
            }
            _ => {
                self.remove_live(key);
                self.put_tombstone(key, write.version, now_ms);
            }
        }
        ApplyOutcome::Applied
    }

    fn insert_live(
        &mut self,
        key: &str,
        value: Bytes,
        version: Version,
        expires_at_ms: Option<u64>,
    ) {
        let size = entry_bytes(key, &value);
        let entry = Entry {
            value,
            version,
            expires_at_ms,
        };
        if let Some(old) = self.live.put(key.to_owned(), entry) {
            self.bytes -= entry_bytes(key, &old.value);
        }
        self.bytes += size;
        self.enforce_limits();
    }

    fn enforce_limits(&mut self) {
        loop {
            let over_items = self.live.len() > self.limits.capacity_items;
            let over_bytes = matches!(self.limits.capacity_bytes, Some(b) if self.bytes > b);
            if !over_items && !over_bytes {
                return;
            }
            match self.live.pop_lru() {
                Some((k, e)) => {
                    self.bytes -= entry_bytes(&k, &e.value);
                    self.stats.evictions += 1;
                }
                None => return,
            }
        }
    }

    /// Turns an expired live entry into a tombstone of the same version, so a replica
    /// that still holds an older value cannot bring it back.
    fn expire_to_tombstone(&mut self, key: &str, now_ms: u64) {
        if let Some(e) = self.live.pop(key) {
            self.bytes -= entry_bytes(key, &e.value);
            self.stats.expirations += 1;
            self.put_tombstone(key, e.version, now_ms);
        }
    }

    fn put_tombstone(&mut self, key: &str, version: Version, now_ms: u64) {
        self.tombstones.put(
            key.to_owned(),
            Tombstone {
                version,
                purge_at_ms: now_ms.saturating_add(self.limits.tombstone_retention_ms),
            },
        );
        while self.tombstones.len() > self.limits.capacity_items.max(1) {
            if self.tombstones.pop_lru().is_some() {
                self.stats.tombstones_evicted += 1;
            }
        }
    }

    fn remove_live(&mut self, key: &str) -> bool {
        match self.live.pop(key) {
            Some(e) => {
                self.bytes -= entry_bytes(key, &e.value);
                true
            }
            None => false,
        }
    }

    /// Removes expired entries and tombstones past retention. Returns how many live
    /// entries expired.
    pub fn sweep(&mut self, now_ms: u64) -> u64 {
        let dead: Vec<Key> = self
            .live
            .iter()
            .filter(|(_, e)| expired(e.expires_at_ms, now_ms))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &dead {
            self.expire_to_tombstone(k, now_ms);
        }
        let old: Vec<Key> = self
            .tombstones
            .iter()
            .filter(|(_, t)| t.purge_at_ms <= now_ms)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &old {
            self.tombstones.pop(k);
        }
        self.stats.tombstones_purged += old.len() as u64;
        dead.len() as u64
    }

    /// Current counters and gauges.
    pub fn stats(&self) -> ShardStats {
        ShardStats {
            items: self.live.len() as u64,
            bytes: self.bytes,
            tombstones: self.tombstones.len() as u64,
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(items: usize) -> ShardLimits {
        ShardLimits {
            capacity_items: items,
            capacity_bytes: None,
            tombstone_retention_ms: 1_000,
        }
    }

    fn w(hlc: u64, value: Option<&str>, exp: Option<u64>) -> Write {
        Write {
            version: Version { hlc, origin: 1 },
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            expires_at_ms: exp,
        }
    }

    #[test]
    fn newer_wins_older_is_stale() {
        let mut s = ShardStore::new(limits(10));
        assert_eq!(
            s.apply("k", &w(2, Some("b"), None), 0),
            ApplyOutcome::Applied
        );
        assert_eq!(s.apply("k", &w(1, Some("a"), None), 0), ApplyOutcome::Stale);
        assert_eq!(
            s.apply("k", &w(2, Some("b"), None), 0),
            ApplyOutcome::AlreadyCurrent
        );
        assert_eq!(s.get("k", 0).unwrap().value, Bytes::from_static(b"b"));
    }

    #[test]
    fn tombstone_blocks_older_value_until_purged() {
        let mut s = ShardStore::new(limits(10));
        s.apply("k", &w(1, Some("a"), None), 0);
        s.apply("k", &w(2, None, None), 0);
        assert!(s.get("k", 0).is_none());
        assert_eq!(
            s.apply("k", &w(1, Some("a"), None), 10),
            ApplyOutcome::Stale
        );
        assert!(s.get("k", 10).is_none());
        assert_eq!(s.stats().tombstones, 1);
        s.sweep(999);
        assert_eq!(s.stats().tombstones, 1);
        s.sweep(1_000);
        assert_eq!(s.stats().tombstones, 0);
        assert_eq!(s.stats().tombstones_purged, 1);
    }

    #[test]
    fn capacity_evicts_least_recently_used() {
        let mut s = ShardStore::new(limits(2));
        s.apply("a", &w(1, Some("1"), None), 0);
        s.apply("b", &w(2, Some("2"), None), 0);
        s.get("a", 0);
        s.apply("c", &w(3, Some("3"), None), 0);
        assert!(s.get("b", 0).is_none());
        assert!(s.get("a", 0).is_some());
        assert!(s.get("c", 0).is_some());
        let st = s.stats();
        assert_eq!((st.items, st.evictions), (2, 1));
    }

    #[test]
    fn byte_limit_evicts_and_tracks_bytes() {
        let mut s = ShardStore::new(ShardLimits {
            capacity_bytes: Some(10),
            ..limits(100)
        });
        s.apply("a", &w(1, Some("1234"), None), 0); // 5 bytes
        s.apply("b", &w(2, Some("1234"), None), 0); // 10 bytes
        assert_eq!(s.stats().bytes, 10);
        s.apply("c", &w(3, Some("1"), None), 0); // 12 > 10: evict a
        let st = s.stats();
        assert_eq!((st.items, st.bytes, st.evictions), (2, 7, 1));
        s.apply("b", &w(4, Some("12"), None), 0); // overwrite shrinks
        assert_eq!(s.stats().bytes, 5);
    }

    #[test]
    fn expired_never_served_and_swept() {
        let mut s = ShardStore::new(limits(10));
        s.apply("a", &w(1, Some("x"), Some(100)), 0);
        s.apply("b", &w(2, Some("y"), Some(100)), 0);
        s.apply("c", &w(3, Some("z"), None), 0);
        assert!(s.get("a", 99).is_some());
        assert!(s.get("a", 100).is_none());
        assert_eq!(s.sweep(100), 1);
        let st = s.stats();
        assert_eq!((st.items, st.expirations), (1, 2));
    }

    #[test]
    fn expiry_leaves_a_tombstone_that_blocks_the_older_value() {
        let mut s = ShardStore::new(limits(10));
        s.apply("a", &w(2, Some("new"), Some(100)), 0);
        assert!(s.get("a", 100).is_none());
        assert_eq!(s.stats().tombstones, 1);
        assert_eq!(
            s.apply("a", &w(1, Some("old"), None), 100),
            ApplyOutcome::Stale
        );
        s.apply("b", &w(2, Some("new"), Some(100)), 0);
        s.sweep(100);
        assert_eq!(
            s.apply("b", &w(1, Some("old"), None), 100),
            ApplyOutcome::Stale
        );
    }

    #[test]
    fn tombstones_are_bounded() {
        let mut s = ShardStore::new(limits(3));
        for i in 0..10u64 {
            s.apply(&format!("k{i}"), &w(i + 1, None, None), 0);
        }
        let st = s.stats();
        assert_eq!((st.tombstones, st.tombstones_evicted), (3, 7));
        // The newest tombstones are the ones kept.
        assert!(s.version_of("k9").is_some() && s.version_of("k0").is_none());
    }

    #[test]
    fn already_expired_write_acts_as_tombstone() {
        let mut s = ShardStore::new(limits(10));
        s.apply("a", &w(1, Some("old"), None), 0);
        assert_eq!(
            s.apply("a", &w(2, Some("x"), Some(5)), 10),
            ApplyOutcome::Applied
        );
        assert!(s.get("a", 10).is_none());
        assert_eq!(
            s.apply("a", &w(1, Some("old"), None), 10),
            ApplyOutcome::Stale
        );
    }

    #[test]
    fn fill_mode_never_evicts_for_a_missing_key() {
        let mut s = ShardStore::new(limits(2));
        s.apply("a", &w(1, Some("1"), None), 0);
        s.apply("b", &w(2, Some("2"), None), 0);
        assert!(s.is_full());
        // A repair of a key it does not hold is refused...
        assert_eq!(
            s.apply_mode("c", &w(3, Some("3"), None), ApplyMode::Fill, 0),
            ApplyOutcome::Skipped
        );
        // ... but a newer version of a key it holds, and any tombstone, apply.
        assert_eq!(
            s.apply_mode("a", &w(4, Some("x"), None), ApplyMode::Fill, 0),
            ApplyOutcome::Applied
        );
        assert_eq!(
            s.apply_mode("z", &w(5, None, None), ApplyMode::Fill, 0),
            ApplyOutcome::Applied
        );
        assert_eq!(s.stats().evictions, 0);
        // A normal write evicts as usual.
        assert_eq!(
            s.apply_mode("c", &w(6, Some("3"), None), ApplyMode::Normal, 0),
            ApplyOutcome::Applied
        );
        assert_eq!(s.stats().evictions, 1);
    }

    #[test]
    fn release_only_the_acknowledged_version() {
        let mut s = ShardStore::new(limits(10));
        s.apply("a", &w(1, Some("1"), None), 0);
        assert!(!s.release("a", Version { hlc: 0, origin: 1 }));
        assert!(s.release("a", Version { hlc: 1, origin: 1 }));
        assert!(s.get("a", 0).is_none());
        assert_eq!(s.versions().len(), 0);
    }

    #[test]
    fn hits_and_misses_counted() {
        let mut s = ShardStore::new(limits(10));
        s.apply("a", &w(1, Some("x"), None), 0);
        s.get("a", 0);
        s.get("nope", 0);
        let st = s.stats();
        assert_eq!((st.hits, st.misses), (1, 1));
    }
}

#[cfg(test)]
mod merge_laws {
    //! Property: applying any set of versioned writes and tombstones, in any order and
    //! with duplicates, ends in the same visible state (commutative, associative,
    //! idempotent last-write-wins).
    use super::*;
    use proptest::prelude::*;

    fn arb_write() -> impl Strategy<Value = (u8, Write)> {
        (
            0u8..4,
            1u64..20,
            0u64..3,
            proptest::option::of(any::<u8>()),
            proptest::option::of(50u64..150),
        )
            .prop_map(|(key, hlc, origin, value, exp)| {
                (
                    key,
                    Write {
                        version: Version { hlc, origin },
                        value: value.map(|b| Bytes::from(vec![b])),
                        expires_at_ms: exp,
                    },
                )
            })
    }

    fn visible(writes: &[(u8, Write)], now: u64) -> Vec<Option<(Bytes, Version)>> {
        let mut s = ShardStore::new(ShardLimits {
            capacity_items: 1_000,
            capacity_bytes: None,
            tombstone_retention_ms: 1_000_000,
        });
        for (k, w) in writes {
            s.apply(&k.to_string(), w, 0);
        }
        (0u8..4)
            .map(|k| s.get(&k.to_string(), now).map(|st| (st.value, st.version)))
            .collect()
    }

    proptest! {
        #[test]
        fn order_and_duplicates_do_not_matter(
            writes in proptest::collection::vec(arb_write(), 0..40),
            seed in any::<u64>(),
            now in 0u64..200,
        ) {
            // Versions are unique per write in a real system: drop accidental clashes
            // that carry different payloads.
            let mut seen = std::collections::HashMap::new();
            let writes: Vec<_> = writes
                .into_iter()
                .filter(|(k, w)| seen.insert((*k, w.version), ()).is_none())
                .collect();
            let expected = visible(&writes, now);
            let mut shuffled = writes.clone();
            shuffled.extend(writes.iter().take(seed as usize % (writes.len() + 1)).cloned());
            use rand::{seq::SliceRandom, SeedableRng};
            shuffled.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
            prop_assert_eq!(visible(&shuffled, now), expected);
        }
    }
}

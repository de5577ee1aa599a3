//! The pure store of one shard: live entries and their eviction order, tombstones,
//! capacity and byte limits, expiry, and the counters an operator reads.
//!
//! Owns no clock and no I/O: every call that depends on time takes `now_ms`. The actor in
//! [`crate::shard`] owns one `ShardStore` and feeds it messages and sweep ticks. Live
//! entries are held compactly by [`table::LiveTable`] (one allocation per entry, a slab
//! of slots, a hash index of slot numbers, a deadline index); tombstones, which are few
//! and purged oldest first, are held in [`Records`].
//!
//! Keys are at most [`crate::types::MAX_KEY_BYTES`] long (every entry point validates
//! them before they reach a shard).
//!
//! Invariants:
//! - `apply` is last-write-wins by [`Version`]: a write never replaces a newer version, so
//!   applying any set of writes in any order, with duplicates, ends in the same state.
//! - Live items never exceed `capacity_items`, and live key+value bytes never exceed
//!   `capacity_bytes` (when set). Past either, entries are evicted one at a time by CLOCK
//!   (second chance), an approximation of least-recently-used order like Redis's sampled
//!   LRU: a read or an overwrite marks an entry used; the eviction hand walks the
//!   entries, unmarking used ones and evicting the first unmarked one (or, after
//!   [`table::SECOND_CHANCE_LIMIT`] unmarked in one eviction, the one under the hand). So
//!   an entry read since the hand last passed it survives the next pass, and a new key
//!   starts unmarked. The entry being written is never evicted to make room for itself
//!   unless it alone is over the limits.
//! - An expired entry is never returned; it is removed when read or by `sweep`, which
//!   walks a deadline index and so does work in proportion to what expires.
//! - A tombstone is kept until its retention has passed, so an older value cannot
//!   resurrect a deleted key while the tombstone exists. An expired value becomes a
//!   tombstone of its version for the same reason. Tombstones have their own byte budget
//!   (`tombstone_bytes`), apart from live entries: live writes never evict them and no
//!   tombstone is dropped before its retention. A delete that would pass the budget (once
//!   tombstones past retention are purged) is refused ([`ApplyError::TombstonesFull`]);
//!   an expired value that finds the budget full is dropped without a tombstone
//!   (counted: every replica expires it at the same instant anyway).
//! - The anti-entropy leaves ([`SegmentLeaves`]) always equal leaves rebuilt from the
//!   records held: every change of a key's version (insert, overwrite, tombstone,
//!   expiry, eviction, release, purge) goes through [`table::LiveTable`] or [`Records`],
//!   the only code that changes them, and updates the leaves.

mod table;

pub use table::INLINE_VALUE_MAX;

use crate::merkle::{Leaf, Listing, SegmentLeaves};
use crate::ring::Ring;
use crate::types::{ApplyMode, ApplyOutcome, Key, Stored, Version, Write};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use table::{LiveTable, Lookup, Slot};

/// A remembered delete.
#[derive(Debug, Clone, Copy)]
struct Tombstone {
    version: Version,
    purge_at_ms: u64,
}

/// A record that carries a version.
trait Versioned {
    fn version(&self) -> Version;
}

impl Versioned for Tombstone {
    fn version(&self) -> Version {
        self.version
    }
}

mod records {
    //! [`Records`], in a module of its own so that nothing else can change its map.
    use super::Versioned;
    use crate::merkle::SegmentLeaves;
    use crate::types::{Key, Version};
    use lru::LruCache;

    /// A map of records in the order they were last put, and the one place that changes
    /// it: every key that appears, goes, or changes version is reported to the leaves
    /// passed in, so they stay equal to leaves rebuilt from the records. Reads go
    /// through [`Records::map`].
    pub(super) struct Records<V> {
        map: LruCache<Key, V>,
    }

    impl<V: Versioned> Records<V> {
        /// The records, read-only.
        pub(super) fn map(&self) -> &LruCache<Key, V> {
            &self.map
        }

        pub(super) fn new() -> Self {
            Self {
                map: LruCache::unbounded(),
            }
        }

        /// Inserts or replaces (and moves to the newest end) `key`; returns the record
        /// it replaced.
        pub(super) fn put(&mut self, leaves: &mut SegmentLeaves, key: &str, rec: V) -> Option<V> {
            let v = rec.version();
            let old = self.map.put(key.to_owned(), rec);
            if let Some(o) = &old {
                leaves.remove(key, o.version());
            }
            leaves.add(key, v);
            old
        }

        pub(super) fn pop(&mut self, leaves: &mut SegmentLeaves, key: &str) -> Option<V> {
            let old = self.map.pop(key)?;
            leaves.remove(key, old.version());
            Some(old)
        }

        /// Removes the oldest record.
        pub(super) fn pop_oldest(&mut self, leaves: &mut SegmentLeaves) -> Option<(Key, V)> {
            let (k, old) = self.map.pop_lru()?;
            leaves.remove(&k, old.version());
            Some((k, old))
        }

        pub(super) fn versions(&self) -> impl Iterator<Item = (&str, Version)> {
            self.map.iter().map(|(k, r)| (k.as_str(), r.version()))
        }
    }
}
use records::Records;

/// Limits of one shard.
#[derive(Debug, Clone, Copy)]
pub struct ShardLimits {
    /// Most live items held.
    pub capacity_items: usize,
    /// Most live key+value bytes held; `None` is unlimited.
    pub capacity_bytes: Option<u64>,
    /// How long a tombstone is kept after it is written.
    pub tombstone_retention_ms: u64,
    /// Most bytes of tombstones held (key bytes plus [`TOMBSTONE_OVERHEAD`] each).
    pub tombstone_bytes: u64,
}

/// What one tombstone costs beyond its key, in the budget's accounting.
pub const TOMBSTONE_OVERHEAD: u64 = 48;

fn tombstone_size(key: &str) -> u64 {
    key.len() as u64 + TOMBSTONE_OVERHEAD
}

/// Why a write was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The delete needs a tombstone and the tombstone budget is spent by tombstones still
    /// within their retention.
    #[error("the tombstone budget is full (deletes are remembered for the tombstone retention); retry later or raise HYPERCACHE_TOMBSTONE_BYTES")]
    TombstonesFull,
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
    /// Bytes of tombstones held (the budget's accounting).
    pub tombstone_bytes: u64,
    /// Deletes refused because the tombstone budget was full.
    pub tombstones_refused: u64,
    /// Live entries that carry an expiry.
    pub expiring: u64,
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
        self.tombstone_bytes += o.tombstone_bytes;
        self.tombstones_refused += o.tombstones_refused;
        self.expiring += o.expiring;
    }
}

/// One shard's data.
pub struct ShardStore {
    live: LiveTable,
    tombstones: Records<Tombstone>,
    leaves: SegmentLeaves,
    limits: ShardLimits,
    bytes: u64,
    tombstone_bytes: u64,
    stats: ShardStats,
}

fn expired(expires_at_ms: Option<u64>, now_ms: u64) -> bool {
    matches!(expires_at_ms, Some(t) if t <= now_ms)
}

/// Every record held, live and tombstone, with its version.
fn all_records<'a>(
    live: &'a LiveTable,
    tombstones: &'a Records<Tombstone>,
) -> impl Iterator<Item = (&'a str, Version)> + 'a {
    live.iter()
        .map(|e| (e.key(), e.version()))
        .chain(tombstones.versions())
}

impl ShardStore {
    pub fn new(limits: ShardLimits) -> Self {
        Self {
            live: LiveTable::new(),
            tombstones: Records::new(),
            leaves: SegmentLeaves::default(),
            limits,
            bytes: 0,
            tombstone_bytes: 0,
            stats: ShardStats::default(),
        }
    }

    /// Drops every record and tombstone (the counters stay); how many records went.
    pub fn clear(&mut self) -> u64 {
        let n = (self.live.len() + self.tombstones.map().len()) as u64;
        self.live = LiveTable::new();
        self.tombstones = Records::new();
        // No records, no leaves: they are rebuilt for the ring the next compare names.
        self.leaves = SegmentLeaves::default();
        self.bytes = 0;
        self.tombstone_bytes = 0;
        n
    }

    /// Drops every live value and keeps the tombstones (so that no delete is undone by a
    /// peer's older copy); the number of values dropped.
    pub fn clear_values(&mut self) -> u64 {
        let n = self.live.len() as u64;
        self.live = LiveTable::new();
        // Rebuilt for the ring the next compare names, from the tombstones alone.
        self.leaves = SegmentLeaves::default();
        self.bytes = 0;
        n
    }

    /// Reads a live value, marking it used for eviction. Counts a hit or a miss; an
    /// expired entry is removed and counted as an expiration and a miss.
    pub fn get(&mut self, key: &str, now_ms: u64) -> Option<Stored> {
        if let Some(slot) = self.live.find(key) {
            let e = self.live.entry(slot);
            let (version, expires_at_ms) = (e.version(), e.expires_at_ms());
            if !expired(expires_at_ms, now_ms) {
                self.live.touch(slot);
                self.stats.hits += 1;
                return Some(Stored {
                    value: self.live.value(slot),
                    version,
                    expires_at_ms,
                });
            }
            self.expire_to_tombstone(key, slot, now_ms);
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
        self.tombstone_record(key)
    }

    fn tombstone_record(&self, key: &str) -> Option<Write> {
        self.tombstones.map().peek(key).map(|t| Write {
            version: t.version,
            value: None,
            expires_at_ms: None,
        })
    }

    /// The version this shard holds for `key` (live or tombstone), without marking it
    /// used or counting.
    pub fn version_of(&self, key: &str) -> Option<Version> {
        match self.live.find(key) {
            Some(slot) => Some(self.live.entry(slot).version()),
            None => self.tombstones.map().peek(key).map(|t| t.version),
        }
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
    ) -> Result<ApplyOutcome, ApplyError> {
        if mode == ApplyMode::Fill
            && write.value.is_some()
            && self.version_of(key).is_none()
            && self.is_full()
        {
            self.stats.fills_skipped += 1;
            return Ok(ApplyOutcome::Skipped);
        }
        self.apply(key, write, now_ms)
    }

    /// Every key this shard has a record for (live or tombstone) with its version.
    pub fn versions(&self) -> Vec<(Key, Version)> {
        all_records(&self.live, &self.tombstones)
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    /// Offers every live, unexpired key `filter` selects to `out` (the key browser); no
    /// entry is marked used.
    pub fn scan_keys(
        &self,
        filter: &crate::keyscan::KeyFilter,
        now_ms: u64,
        out: &mut crate::keyscan::Smallest,
    ) {
        for e in self.live.iter() {
            if !expired(e.expires_at_ms(), now_ms) && filter.matches(e.key()) {
                out.offer(e.key());
            }
        }
    }

    /// The raw record of `key` (live value or tombstone) without marking it used or
    /// counting; expired values are reported as absent.
    pub fn peek_record(&self, key: &str, now_ms: u64) -> Option<Write> {
        if let Some(slot) = self.live.find(key) {
            let e = self.live.entry(slot);
            if expired(e.expires_at_ms(), now_ms) {
                return None;
            }
            return Some(Write {
                version: e.version(),
                value: Some(self.live.value(slot)),
                expires_at_ms: e.expires_at_ms(),
            });
        }
        self.tombstone_record(key)
    }

    /// Drops this shard's copy of `key` if it still holds exactly `version` (used after
    /// the key's new owners acknowledged it). Returns whether it was dropped.
    pub fn release(&mut self, key: &str, version: Version) -> bool {
        if let Some(slot) = self.live.find(key) {
            if self.live.entry(slot).version() != version {
                return false;
            }
            self.remove_live_slot(slot);
            return true;
        }
        if self
            .tombstones
            .map()
            .peek(key)
            .is_some_and(|t| t.version == version)
        {
            return self.pop_tombstone(key);
        }
        false
    }

    /// Applies a replicated write or delete, last-write-wins. A delete (or an already
    /// expired value) that needs a tombstone the budget has no room for changes nothing.
    pub fn apply(
        &mut self,
        key: &str,
        write: &Write,
        now_ms: u64,
    ) -> Result<ApplyOutcome, ApplyError> {
        let at = self.live.lookup(key);
        let held = match at.slot {
            Some(slot) => Some(self.live.entry(slot).version()),
            None => self.tombstones.map().peek(key).map(|t| t.version),
        };
        match held {
            Some(v) if v > write.version => {
                self.stats.writes_stale += 1;
                return Ok(ApplyOutcome::Stale);
            }
            Some(v) if v == write.version => return Ok(ApplyOutcome::AlreadyCurrent),
            _ => {}
        }
        match &write.value {
            // An already expired value reads exactly like a delete; keeping it as a
            // tombstone still blocks older versions.
            Some(value) if !expired(write.expires_at_ms, now_ms) => {
                self.pop_tombstone(key);
                self.insert_live(key, at, value, write.version, write.expires_at_ms);
            }
            _ => {
                if !self.room_for_tombstone(key, now_ms) {
                    self.stats.tombstones_refused += 1;
                    return Err(ApplyError::TombstonesFull);
                }
                if let Some(slot) = at.slot {
                    self.remove_live_slot(slot);
                }
                self.put_tombstone(key, write.version, now_ms);
            }
        }
        self.stats.writes_applied += 1;
        Ok(ApplyOutcome::Applied)
    }

    /// True when a tombstone for `key` fits the budget, after purging tombstones past
    /// their retention (the oldest are first: tombstones are ordered by when they were
    /// written, and all share one retention).
    fn room_for_tombstone(&mut self, key: &str, now_ms: u64) -> bool {
        let replaced = self
            .tombstones
            .map()
            .peek(key)
            .map_or(0, |_| tombstone_size(key));
        let fits = |s: &Self| {
            s.tombstone_bytes - replaced + tombstone_size(key) <= s.limits.tombstone_bytes
        };
        while !fits(self) {
            let oldest_due = self
                .tombstones
                .map()
                .peek_lru()
                .is_some_and(|(k, t)| t.purge_at_ms <= now_ms && k != key);
            if !oldest_due {
                return false;
            }
            if let Some((k, _)) = self.tombstones.pop_oldest(&mut self.leaves) {
                self.tombstone_bytes -= tombstone_size(&k);
                self.stats.tombstones_purged += 1;
            }
        }
        true
    }

    fn pop_tombstone(&mut self, key: &str) -> bool {
        // Most writes meet no tombstone at all: skip hashing the key then.
        if self.tombstones.map().is_empty() {
            return false;
        }
        match self.tombstones.pop(&mut self.leaves, key) {
            Some(_) => {
                self.tombstone_bytes -= tombstone_size(key);
                true
            }
            None => false,
        }
    }

    /// Puts `key`'s value; `at` is its lookup, with no change to live entries since.
    fn insert_live(
        &mut self,
        key: &str,
        at: Lookup,
        value: &Bytes,
        version: Version,
        expires_at_ms: Option<u64>,
    ) {
        let (slot, old) = self
            .live
            .put(&mut self.leaves, key, at, value, version, expires_at_ms);
        if let Some(old) = old {
            self.bytes -= old.bytes;
        }
        self.bytes += (key.len() + value.len()) as u64;
        self.enforce_limits(slot);
    }

    /// Evicts until the live entries are within the limits, sparing `written` (the
    /// entry just written) unless it alone is over them.
    fn enforce_limits(&mut self, written: Slot) {
        loop {
            let over_items = self.live.len() > self.limits.capacity_items;
            let over_bytes = matches!(self.limits.capacity_bytes, Some(b) if self.bytes > b);
            if !over_items && !over_bytes {
                return;
            }
            match self.live.victim(Some(written)) {
                Some(slot) => {
                    self.remove_live_slot(slot);
                    self.stats.evictions += 1;
                }
                None => return,
            }
        }
    }

    /// Turns the expired live entry of `key` (in `slot`) into a tombstone of the same
    /// version, so a replica that still holds an older value cannot bring it back.
    /// (When the tombstone budget has no room, the value is dropped without one.)
    fn expire_to_tombstone(&mut self, key: &str, slot: Slot, now_ms: u64) {
        let version = self.remove_live_slot(slot);
        self.stats.expirations += 1;
        if self.room_for_tombstone(key, now_ms) {
            self.put_tombstone(key, version, now_ms);
        } else {
            self.stats.tombstones_evicted += 1;
        }
    }

    /// Adds (or replaces) the tombstone of `key`; the caller checked the budget.
    fn put_tombstone(&mut self, key: &str, version: Version, now_ms: u64) {
        let old = self.tombstones.put(
            &mut self.leaves,
            key,
            Tombstone {
                version,
                purge_at_ms: now_ms.saturating_add(self.limits.tombstone_retention_ms),
            },
        );
        if old.is_none() {
            self.tombstone_bytes += tombstone_size(key);
        }
    }

    /// Removes the live entry in `slot`; returns its version.
    fn remove_live_slot(&mut self, slot: Slot) -> Version {
        let gone = self.live.remove(&mut self.leaves, slot);
        self.bytes -= gone.bytes;
        gone.version
    }

    /// Removes expired entries and tombstones past retention. Returns how many live
    /// entries expired. Entries are found through the deadline index, so the work is
    /// in proportion to what expires, not to what is held.
    pub fn sweep(&mut self, now_ms: u64) -> u64 {
        let mut expired = 0;
        while let Some(slot) = self.live.first_due(now_ms) {
            let key = self.live.entry(slot).key().to_owned();
            self.expire_to_tombstone(&key, slot, now_ms);
            expired += 1;
        }
        // Tombstones are in the order they were written and share one retention: the
        // ones due are the oldest.
        let mut purged = 0;
        while self
            .tombstones
            .map()
            .peek_lru()
            .is_some_and(|(_, t)| t.purge_at_ms <= now_ms)
        {
            if let Some((k, _)) = self.tombstones.pop_oldest(&mut self.leaves) {
                self.tombstone_bytes -= tombstone_size(&k);
                purged += 1;
            }
        }
        self.stats.tombstones_purged += purged;
        expired
    }

    /// Keeps the leaves for `ring`: rebuilt from the records when they were kept for
    /// another ring (or none), which happens once per ring change.
    fn use_ring(&mut self, ring: &Arc<Ring>) {
        if self.leaves.fingerprint() != Some(ring.fingerprint()) {
            let records = all_records(&self.live, &self.tombstones);
            self.leaves.rebuild(ring.clone(), records);
        }
    }

    /// The anti-entropy leaves of this shard's records for `ring` (non-empty segments).
    pub fn leaves(&mut self, ring: &Arc<Ring>) -> &HashMap<u32, Leaf> {
        self.use_ring(ring);
        self.leaves.leaves()
    }

    /// The `(key, version)` of every record in `segments` (ascending), by segment then
    /// key, cut once the entries pass `max_bytes` ([`crate::merkle::entry_weight`]). Scans the shard:
    /// asked only for segments whose leaves differ.
    pub fn segment_entries(
        &mut self,
        ring: &Arc<Ring>,
        segments: &[u32],
        max_bytes: usize,
    ) -> Listing {
        self.use_ring(ring);
        let mut entries: Vec<(u32, Key, Version)> = Vec::new();
        if !segments.is_empty() {
            for (k, v) in all_records(&self.live, &self.tombstones) {
                if let Some(s) = self.leaves.segment_of(k) {
                    if segments.binary_search(&s).is_ok() {
                        entries.push((s, k.to_owned(), v));
                    }
                }
            }
        }
        let mut listing = Listing { entries, cut: None };
        listing.finish(max_bytes);
        listing
    }

    /// Current counters and gauges.
    pub fn stats(&self) -> ShardStats {
        ShardStats {
            items: self.live.len() as u64,
            bytes: self.bytes,
            tombstones: self.tombstones.map().len() as u64,
            tombstone_bytes: self.tombstone_bytes,
            expiring: self.live.expiring() as u64,
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
            tombstone_bytes: u64::MAX,
        }
    }

    fn ap(s: &mut ShardStore, key: &str, write: &Write, now_ms: u64) -> ApplyOutcome {
        s.apply(key, write, now_ms).expect("applied")
    }

    fn apm(
        s: &mut ShardStore,
        key: &str,
        write: &Write,
        mode: ApplyMode,
        now_ms: u64,
    ) -> ApplyOutcome {
        s.apply_mode(key, write, mode, now_ms).expect("applied")
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
            ap(&mut s, "k", &w(2, Some("b"), None), 0),
            ApplyOutcome::Applied
        );
        assert_eq!(
            ap(&mut s, "k", &w(1, Some("a"), None), 0),
            ApplyOutcome::Stale
        );
        assert_eq!(
            ap(&mut s, "k", &w(2, Some("b"), None), 0),
            ApplyOutcome::AlreadyCurrent
        );
        assert_eq!(s.get("k", 0).unwrap().value, Bytes::from_static(b"b"));
    }

    #[test]
    fn tombstone_blocks_older_value_until_purged() {
        let mut s = ShardStore::new(limits(10));
        ap(&mut s, "k", &w(1, Some("a"), None), 0);
        ap(&mut s, "k", &w(2, None, None), 0);
        assert!(s.get("k", 0).is_none());
        assert_eq!(
            ap(&mut s, "k", &w(1, Some("a"), None), 10),
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
    fn capacity_evicts_an_entry_not_used_since_the_hand_passed() {
        let mut s = ShardStore::new(limits(2));
        ap(&mut s, "a", &w(1, Some("1"), None), 0);
        ap(&mut s, "b", &w(2, Some("2"), None), 0);
        s.get("a", 0);
        // a was read: the hand spends its second chance and takes b.
        ap(&mut s, "c", &w(3, Some("3"), None), 0);
        assert!(s.get("b", 0).is_none());
        assert!(s.get("c", 0).is_some());
        let st = s.stats();
        assert_eq!((st.items, st.evictions), (2, 1));
        // Not read again, a goes next (c was read, and a new key is spared).
        ap(&mut s, "d", &w(4, Some("4"), None), 0);
        assert!(s.version_of("a").is_none());
        assert!(s.version_of("c").is_some() && s.version_of("d").is_some());
    }

    #[test]
    fn the_key_being_written_is_evicted_only_when_it_alone_is_over_the_limits() {
        let mut s = ShardStore::new(ShardLimits {
            capacity_bytes: Some(10),
            ..limits(3)
        });
        for (i, k) in ["a", "b", "c"].iter().enumerate() {
            ap(&mut s, k, &w(i as u64 + 1, Some("1"), None), 0);
        }
        for k in ["a", "b", "c"] {
            s.get(k, 0);
        }
        // Every entry was read; the new one still stays.
        ap(&mut s, "d", &w(9, Some("1"), None), 0);
        assert!(s.version_of("d").is_some());
        assert_eq!(s.stats().items, 3);
        // Ten bytes of key and value: room for it alone, so everything else goes.
        ap(&mut s, "e", &w(10, Some("123456789"), None), 0);
        assert_eq!((s.stats().items, s.stats().bytes), (1, 10));
        // Eleven: nothing is left, and nothing is over the limit.
        ap(&mut s, "f", &w(11, Some("1234567890"), None), 0);
        let st = s.stats();
        assert_eq!((st.items, st.bytes, st.evictions), (0, 0, 6));
    }

    #[test]
    fn the_sweep_follows_deadlines_through_overwrites() {
        let mut s = ShardStore::new(limits(10));
        ap(&mut s, "a", &w(1, Some("x"), Some(100)), 0);
        ap(&mut s, "b", &w(1, Some("x"), Some(200)), 0);
        ap(&mut s, "c", &w(1, Some("x"), Some(300)), 0);
        // a no longer expires; b expires later; c expires sooner.
        ap(&mut s, "a", &w(2, Some("y"), None), 0);
        ap(&mut s, "b", &w(2, Some("y"), Some(400)), 0);
        ap(&mut s, "c", &w(2, Some("y"), Some(50)), 0);
        assert_eq!(s.sweep(49), 0);
        assert_eq!(s.sweep(350), 1);
        assert!(s.version_of("c").is_some(), "a tombstone of its version");
        assert!(s.get("b", 350).is_some() && s.get("a", 350).is_some());
        assert_eq!(s.sweep(u64::MAX - 1), 1);
        assert_eq!(s.stats().items, 1);
        s.live.check();
    }

    #[test]
    fn large_values_read_back_shared_and_count_their_bytes() {
        let mut s = ShardStore::new(limits(10));
        let big = Bytes::from(vec![7u8; INLINE_VALUE_MAX + 1]);
        let write = Write {
            version: Version { hlc: 1, origin: 1 },
            value: Some(big.clone()),
            expires_at_ms: None,
        };
        ap(&mut s, "big", &write, 0);
        let read = s.get("big", 0).unwrap().value;
        assert_eq!((read.as_ptr(), read.len()), (big.as_ptr(), big.len()));
        assert_eq!(s.stats().bytes, 3 + big.len() as u64);
        assert!(s.release("big", write.version));
        assert_eq!(s.stats().bytes, 0);
    }

    #[test]
    fn byte_limit_evicts_and_tracks_bytes() {
        let mut s = ShardStore::new(ShardLimits {
            capacity_bytes: Some(10),
            ..limits(100)
        });
        ap(&mut s, "a", &w(1, Some("1234"), None), 0); // 5 bytes
        ap(&mut s, "b", &w(2, Some("1234"), None), 0); // 10 bytes
        assert_eq!(s.stats().bytes, 10);
        ap(&mut s, "c", &w(3, Some("1"), None), 0); // 12 > 10: evict a
        let st = s.stats();
        assert_eq!((st.items, st.bytes, st.evictions), (2, 7, 1));
        ap(&mut s, "b", &w(4, Some("12"), None), 0); // overwrite shrinks
        assert_eq!(s.stats().bytes, 5);
    }

    #[test]
    fn expired_never_served_and_swept() {
        let mut s = ShardStore::new(limits(10));
        ap(&mut s, "a", &w(1, Some("x"), Some(100)), 0);
        ap(&mut s, "b", &w(2, Some("y"), Some(100)), 0);
        ap(&mut s, "c", &w(3, Some("z"), None), 0);
        assert!(s.get("a", 99).is_some());
        assert!(s.get("a", 100).is_none());
        assert_eq!(s.sweep(100), 1);
        let st = s.stats();
        assert_eq!((st.items, st.expirations), (1, 2));
    }

    #[test]
    fn expiry_leaves_a_tombstone_that_blocks_the_older_value() {
        let mut s = ShardStore::new(limits(10));
        ap(&mut s, "a", &w(2, Some("new"), Some(100)), 0);
        assert!(s.get("a", 100).is_none());
        assert_eq!(s.stats().tombstones, 1);
        assert_eq!(
            ap(&mut s, "a", &w(1, Some("old"), None), 100),
            ApplyOutcome::Stale
        );
        ap(&mut s, "b", &w(2, Some("new"), Some(100)), 0);
        s.sweep(100);
        assert_eq!(
            ap(&mut s, "b", &w(1, Some("old"), None), 100),
            ApplyOutcome::Stale
        );
    }

    /// Room for `n` tombstones of two-byte keys.
    fn budget(n: u64) -> ShardLimits {
        ShardLimits {
            tombstone_bytes: n * (2 + TOMBSTONE_OVERHEAD),
            ..limits(100)
        }
    }

    #[test]
    fn tombstones_have_their_own_budget_and_outlive_live_writes() {
        let mut s = ShardStore::new(ShardLimits {
            capacity_items: 2,
            ..budget(3)
        });
        for i in 0..3u64 {
            ap(&mut s, &format!("d{i}"), &w(i + 1, None, None), 0);
        }
        // Live writes past the item capacity evict live items, never tombstones.
        for i in 0..10u64 {
            ap(&mut s, &format!("l{i}"), &w(100 + i, Some("v"), None), 0);
        }
        let st = s.stats();
        assert_eq!((st.tombstones, st.tombstone_bytes), (3, 3 * 50));
        assert_eq!(st.tombstones_evicted, 0);
        // A fourth delete within retention is refused and changes nothing.
        ap(&mut s, "d9", &w(200, Some("live"), None), 0);
        assert_eq!(
            s.apply("d9", &w(201, None, None), 10),
            Err(ApplyError::TombstonesFull)
        );
        assert_eq!(s.get("d9", 10).unwrap().value, Bytes::from_static(b"live"));
        assert_eq!(s.stats().tombstones_refused, 1);
        // Re-deleting a key that has a tombstone replaces it in place.
        assert_eq!(
            ap(&mut s, "d0", &w(300, None, None), 10),
            ApplyOutcome::Applied
        );
        // Past the retention of the oldest, it makes room; the newer ones stay.
        assert_eq!(
            ap(&mut s, "d9", &w(201, None, None), 1_000),
            ApplyOutcome::Applied
        );
        assert!(
            s.version_of("d1").is_none(),
            "the oldest past retention was purged"
        );
        assert!(s.version_of("d2").is_some() && s.version_of("d0").is_some());
        assert_eq!(s.stats().tombstone_bytes, 3 * 50);
    }

    #[test]
    fn an_expiry_that_finds_the_budget_full_drops_the_value_without_a_tombstone() {
        let mut s = ShardStore::new(budget(1));
        ap(&mut s, "d0", &w(1, None, None), 0);
        ap(&mut s, "e0", &w(2, Some("x"), Some(5)), 0);
        assert!(s.get("e0", 10).is_none());
        let st = s.stats();
        assert_eq!(
            (st.tombstones, st.expirations, st.tombstones_evicted),
            (1, 1, 1)
        );
        assert!(s.version_of("e0").is_none());
    }

    #[test]
    fn already_expired_write_acts_as_tombstone() {
        let mut s = ShardStore::new(limits(10));
        ap(&mut s, "a", &w(1, Some("old"), None), 0);
        assert_eq!(
            ap(&mut s, "a", &w(2, Some("x"), Some(5)), 10),
            ApplyOutcome::Applied
        );
        assert!(s.get("a", 10).is_none());
        assert_eq!(
            ap(&mut s, "a", &w(1, Some("old"), None), 10),
            ApplyOutcome::Stale
        );
    }

    #[test]
    fn fill_mode_never_evicts_for_a_missing_key() {
        let mut s = ShardStore::new(limits(2));
        ap(&mut s, "a", &w(1, Some("1"), None), 0);
        ap(&mut s, "b", &w(2, Some("2"), None), 0);
        assert!(s.is_full());
        // A repair of a key it does not hold is refused...
        assert_eq!(
            apm(&mut s, "c", &w(3, Some("3"), None), ApplyMode::Fill, 0),
            ApplyOutcome::Skipped
        );
        // ... but a newer version of a key it holds, and any tombstone, apply.
        assert_eq!(
            apm(&mut s, "a", &w(4, Some("x"), None), ApplyMode::Fill, 0),
            ApplyOutcome::Applied
        );
        assert_eq!(
            apm(&mut s, "z", &w(5, None, None), ApplyMode::Fill, 0),
            ApplyOutcome::Applied
        );
        assert_eq!(s.stats().evictions, 0);
        // A normal write evicts as usual.
        assert_eq!(
            apm(&mut s, "c", &w(6, Some("3"), None), ApplyMode::Normal, 0),
            ApplyOutcome::Applied
        );
        assert_eq!(s.stats().evictions, 1);
    }

    #[test]
    fn release_only_the_acknowledged_version() {
        let mut s = ShardStore::new(limits(10));
        ap(&mut s, "a", &w(1, Some("1"), None), 0);
        assert!(!s.release("a", Version { hlc: 0, origin: 1 }));
        assert!(s.release("a", Version { hlc: 1, origin: 1 }));
        assert!(s.get("a", 0).is_none());
        assert_eq!(s.versions().len(), 0);
    }

    #[test]
    fn hits_and_misses_counted() {
        let mut s = ShardStore::new(limits(10));
        ap(&mut s, "a", &w(1, Some("x"), None), 0);
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
            tombstone_bytes: u64::MAX,
        });
        for (k, w) in writes {
            s.apply(&k.to_string(), w, 0).expect("applied");
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

#[cfg(test)]
mod leaves_stay_in_step {
    //! Property: after any sequence of mutations (writes, overwrites, deletes, expiry
    //! on read and by sweep, eviction at capacity, release, tombstone purge, a ring
    //! change), the leaves kept incrementally equal leaves rebuilt from the records.
    use super::*;
    use crate::merkle::entry_weight;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Put { key: u8, hlc: u64, ttl: Option<u64> },
        Delete { key: u8, hlc: u64 },
        Fill { key: u8, hlc: u64 },
        Get { key: u8 },
        Release { key: u8 },
        Sweep,
        Tick(u64),
        NewRing,
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..40, 1u64..1_000, proptest::option::of(1u64..50))
                .prop_map(|(key, hlc, ttl)| Op::Put { key, hlc, ttl }),
            2 => (0u8..40, 1u64..1_000).prop_map(|(key, hlc)| Op::Delete { key, hlc }),
            1 => (0u8..40, 1u64..1_000).prop_map(|(key, hlc)| Op::Fill { key, hlc }),
            1 => (0u8..40).prop_map(|key| Op::Get { key }),
            1 => (0u8..40).prop_map(|key| Op::Release { key }),
            1 => Just(Op::Sweep),
            1 => (1u64..40).prop_map(Op::Tick),
            1 => Just(Op::NewRing),
        ]
    }

    fn rebuilt(s: &ShardStore, ring: &Arc<Ring>) -> HashMap<u32, Leaf> {
        let mut l = SegmentLeaves::default();
        l.rebuild(ring.clone(), all_records(&s.live, &s.tombstones));
        l.leaves().clone()
    }

    proptest! {
        #[test]
        fn incremental_leaves_equal_rebuilt_leaves(
            ops in proptest::collection::vec(arb_op(), 0..200),
            items in 1usize..12,
            tomb_budget in 1u64..10,
        ) {
            let rings = [
                Arc::new(Ring::new(["a", "b", "c"], 2)),
                Arc::new(Ring::new(["a", "b", "c", "d"], 2)),
            ];
            let mut which = 0;
            let mut s = ShardStore::new(ShardLimits {
                capacity_items: items,
                capacity_bytes: Some(60),
                tombstone_retention_ms: 30,
                tombstone_bytes: tomb_budget * (2 + TOMBSTONE_OVERHEAD),
            });
            s.leaves(&rings[which]);
            let mut now = 0u64;
            for op in ops {
                let k = |key: u8| format!("{key:02}");
                match op {
                    Op::Put { key, hlc, ttl } => {
                        let w = Write {
                            version: Version { hlc, origin: 1 },
                            value: Some(Bytes::from(vec![b'v'; (hlc % 7) as usize])),
                            expires_at_ms: ttl.map(|t| now + t),
                        };
                        let _ = s.apply(&k(key), &w, now);
                    }
                    Op::Delete { key, hlc } => {
                        let w = Write { version: Version { hlc, origin: 2 }, value: None, expires_at_ms: None };
                        let _ = s.apply(&k(key), &w, now);
                    }
                    Op::Fill { key, hlc } => {
                        let w = Write {
                            version: Version { hlc, origin: 3 },
                            value: Some(Bytes::from_static(b"f")),
                            expires_at_ms: None,
                        };
                        let _ = s.apply_mode(&k(key), &w, ApplyMode::Fill, now);
                    }
                    Op::Get { key } => { let _ = s.get(&k(key), now); }
                    Op::Release { key } => {
                        if let Some(v) = s.version_of(&k(key)) { s.release(&k(key), v); }
                    }
                    Op::Sweep => { s.sweep(now); }
                    Op::Tick(ms) => now += ms,
                    Op::NewRing => {
                        which = 1 - which;
                        s.leaves(&rings[which]);
                    }
                }
                prop_assert_eq!(&s.leaves(&rings[which]).clone(), &rebuilt(&s, &rings[which]));
                s.live.check();
            }
            // Switching rings rebuilds; switching back agrees again.
            let other = &rings[1 - which];
            prop_assert_eq!(&s.leaves(other).clone(), &rebuilt(&s, other));
        }
    }

    #[test]
    fn equal_replicas_list_nothing_and_listings_follow_segments() {
        let ring = Arc::new(Ring::new(["a", "b", "c"], 3));
        let limits = ShardLimits {
            capacity_items: 1_000,
            capacity_bytes: None,
            tombstone_retention_ms: 1_000,
            tombstone_bytes: u64::MAX,
        };
        let (mut a, mut b) = (ShardStore::new(limits), ShardStore::new(limits));
        for i in 0..300u64 {
            let w = Write {
                version: Version {
                    hlc: i + 1,
                    origin: 1,
                },
                value: (i % 5 != 0).then(|| Bytes::from_static(b"x")),
                expires_at_ms: None,
            };
            // Opposite orders: the leaves do not depend on it.
            a.apply(&format!("k{i}"), &w, 0).unwrap();
            b.apply(
                &format!("k{}", 299 - i),
                &Write {
                    version: Version {
                        hlc: 300 - i,
                        origin: 1,
                    },
                    value: ((299 - i) % 5 != 0).then(|| Bytes::from_static(b"x")),
                    expires_at_ms: None,
                },
                0,
            )
            .unwrap();
        }
        let shared: Vec<u32> = (0..ring.segments() as u32).collect();
        let la = a.leaves(&ring).clone();
        let theirs = crate::merkle::wire_leaves(&shared, &b.leaves(&ring).clone());
        assert!(crate::merkle::differing(&shared, &la, &theirs).is_empty());
        // One newer version on b: one segment differs, and its listing holds the key.
        let seg = b.leaves.segment_of("k7").unwrap();
        b.apply(
            "k7",
            &Write {
                version: Version {
                    hlc: 999,
                    origin: 1,
                },
                value: None,
                expires_at_ms: None,
            },
            0,
        )
        .unwrap();
        let theirs = crate::merkle::wire_leaves(&shared, &b.leaves(&ring).clone());
        assert_eq!(crate::merkle::differing(&shared, &la, &theirs), vec![seg]);
        let listing = b.segment_entries(&ring, &[seg], usize::MAX);
        assert!(listing.cut.is_none());
        assert!(listing.entries.iter().all(|(s, _, _)| *s == seg));
        assert!(listing
            .entries
            .iter()
            .any(|(_, k, v)| k == "k7" && v.hlc == 999));
        assert_eq!(listing.entries.len() as u64, b.leaves(&ring)[&seg].count);
        // Cut at a budget: a prefix, marked.
        let (&big, leaf) = b.leaves(&ring).iter().max_by_key(|(_, l)| l.count).unwrap();
        assert!(leaf.count >= 2);
        let all = b.segment_entries(&ring, &[big], usize::MAX);
        let one = entry_weight(&all.entries[0].1);
        let cut = b.segment_entries(&ring, &[big], one);
        assert_eq!((cut.entries.len(), cut.cut), (1, Some(big)));
    }
}

#[cfg(test)]
mod against_a_model {
    //! Property: any sequence of writes (small, at the inline threshold, large), deletes,
    //! repairs, reads, releases, sweeps and clock ticks leaves the store where a plain
    //! reference model is: the same records (value, version, expiry), the same counters
    //! and byte totals, within its limits, and its leaves equal leaves rebuilt from the
    //! records. Which entries an eviction takes is the store's choice (CLOCK); the model
    //! checks how many went, that the entry just written was spared unless it alone is
    //! over the limits, and that eviction stopped as soon as the limits held.
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// Clock units: every expiry instant is `now + ttl * UNIT + key`, so no two keys
    /// expire at the same instant and the order a sweep expires them in (earliest
    /// first) is the model's too, whatever the tombstone budget.
    const UNIT: u64 = 64;
    const KEYS: u8 = 40;

    #[derive(Debug, Clone)]
    enum Rec {
        Live {
            value: Bytes,
            version: Version,
            expires_at_ms: Option<u64>,
        },
        Tomb {
            version: Version,
            purge_at_ms: u64,
            /// When it was put: the oldest is purged first.
            seq: u64,
        },
    }

    struct Model {
        limits: ShardLimits,
        recs: BTreeMap<String, Rec>,
        seq: u64,
        /// The counters (the gauges are computed from `recs`).
        stats: ShardStats,
    }

    impl Model {
        fn version_of(&self, k: &str) -> Option<Version> {
            self.recs.get(k).map(|r| match r {
                Rec::Live { version, .. } | Rec::Tomb { version, .. } => *version,
            })
        }

        fn live(&self) -> impl Iterator<Item = (&String, &Bytes)> {
            self.recs.iter().filter_map(|(k, r)| match r {
                Rec::Live { value, .. } => Some((k, value)),
                Rec::Tomb { .. } => None,
            })
        }

        fn size(&self, k: &str) -> u64 {
            match &self.recs[k] {
                Rec::Live { value, .. } => (k.len() + value.len()) as u64,
                Rec::Tomb { .. } => tombstone_size(k),
            }
        }

        fn gauges(&self) -> ShardStats {
            let tombs: Vec<&String> = self
                .recs
                .iter()
                .filter(|(_, r)| matches!(r, Rec::Tomb { .. }))
                .map(|(k, _)| k)
                .collect();
            ShardStats {
                items: self.live().count() as u64,
                bytes: self.live().map(|(k, _)| self.size(k)).sum(),
                tombstones: tombs.len() as u64,
                tombstone_bytes: tombs.iter().map(|k| tombstone_size(k)).sum(),
                expiring: self
                    .recs
                    .values()
                    .filter(|r| {
                        matches!(
                            r,
                            Rec::Live {
                                expires_at_ms: Some(_),
                                ..
                            }
                        )
                    })
                    .count() as u64,
                ..self.stats
            }
        }

        fn over(&self, items: u64, bytes: u64) -> bool {
            items > self.limits.capacity_items as u64
                || matches!(self.limits.capacity_bytes, Some(b) if bytes > b)
        }

        fn is_full(&self) -> bool {
            let g = self.gauges();
            g.items >= self.limits.capacity_items as u64
                || matches!(self.limits.capacity_bytes, Some(b) if g.bytes >= b)
        }

        fn room_for_tombstone(&mut self, key: &str, now: u64) -> bool {
            loop {
                let g = self.gauges();
                let replaced = match self.recs.get(key) {
                    Some(Rec::Tomb { .. }) => tombstone_size(key),
                    _ => 0,
                };
                if g.tombstone_bytes - replaced + tombstone_size(key) <= self.limits.tombstone_bytes
                {
                    return true;
                }
                let oldest = self
                    .recs
                    .iter()
                    .filter_map(|(k, r)| match r {
                        Rec::Tomb {
                            purge_at_ms, seq, ..
                        } => Some((*seq, *purge_at_ms, k.clone())),
                        Rec::Live { .. } => None,
                    })
                    .min();
                match oldest {
                    Some((_, purge_at, k)) if purge_at <= now && k != key => {
                        self.recs.remove(&k);
                        self.stats.tombstones_purged += 1;
                    }
                    _ => return false,
                }
            }
        }

        fn put_tomb(&mut self, key: &str, version: Version, now: u64) {
            self.seq += 1;
            let purge_at_ms = now.saturating_add(self.limits.tombstone_retention_ms);
            self.recs.insert(
                key.to_owned(),
                Rec::Tomb {
                    version,
                    purge_at_ms,
                    seq: self.seq,
                },
            );
        }

        fn expire(&mut self, key: &str, now: u64) {
            let Some(Rec::Live { version, .. }) = self.recs.remove(key) else {
                unreachable!("only live records expire")
            };
            self.stats.expirations += 1;
            if self.room_for_tombstone(key, now) {
                self.put_tomb(key, version, now);
            } else {
                self.stats.tombstones_evicted += 1;
            }
        }

        /// Applies like the store, without evicting (the caller observes evictions).
        fn apply(
            &mut self,
            key: &str,
            w: &Write,
            mode: ApplyMode,
            now: u64,
        ) -> Result<ApplyOutcome, ApplyError> {
            let held = self.version_of(key);
            if mode == ApplyMode::Fill && w.value.is_some() && held.is_none() && self.is_full() {
                self.stats.fills_skipped += 1;
                return Ok(ApplyOutcome::Skipped);
            }
            match held {
                Some(v) if v > w.version => {
                    self.stats.writes_stale += 1;
                    return Ok(ApplyOutcome::Stale);
                }
                Some(v) if v == w.version => return Ok(ApplyOutcome::AlreadyCurrent),
                _ => {}
            }
            match &w.value {
                Some(value) if !expired(w.expires_at_ms, now) => {
                    self.recs.insert(
                        key.to_owned(),
                        Rec::Live {
                            value: value.clone(),
                            version: w.version,
                            expires_at_ms: w.expires_at_ms,
                        },
                    );
                }
                _ => {
                    if !self.room_for_tombstone(key, now) {
                        self.stats.tombstones_refused += 1;
                        return Err(ApplyError::TombstonesFull);
                    }
                    self.put_tomb(key, w.version, now);
                }
            }
            self.stats.writes_applied += 1;
            Ok(ApplyOutcome::Applied)
        }

        fn get(&mut self, key: &str, now: u64) -> Option<Stored> {
            if let Some(Rec::Live {
                value,
                version,
                expires_at_ms,
            }) = self.recs.get(key)
            {
                if !expired(*expires_at_ms, now) {
                    self.stats.hits += 1;
                    return Some(Stored {
                        value: value.clone(),
                        version: *version,
                        expires_at_ms: *expires_at_ms,
                    });
                }
                self.expire(key, now);
            }
            self.stats.misses += 1;
            None
        }

        fn peek(&self, key: &str, now: u64) -> Option<Write> {
            match self.recs.get(key)? {
                Rec::Live {
                    value,
                    version,
                    expires_at_ms,
                } => (!expired(*expires_at_ms, now)).then(|| Write {
                    version: *version,
                    value: Some(value.clone()),
                    expires_at_ms: *expires_at_ms,
                }),
                Rec::Tomb { version, .. } => Some(Write {
                    version: *version,
                    value: None,
                    expires_at_ms: None,
                }),
            }
        }

        fn sweep(&mut self, now: u64) -> u64 {
            let mut due: Vec<(u64, String)> = self
                .recs
                .iter()
                .filter_map(|(k, r)| match r {
                    Rec::Live {
                        expires_at_ms: Some(t),
                        ..
                    } if *t <= now => Some((*t, k.clone())),
                    _ => None,
                })
                .collect();
            due.sort();
            for (_, k) in &due {
                self.expire(k, now);
            }
            let purge: Vec<String> = self
                .recs
                .iter()
                .filter(|(_, r)| matches!(r, Rec::Tomb { purge_at_ms, .. } if *purge_at_ms <= now))
                .map(|(k, _)| k.clone())
                .collect();
            for k in purge {
                self.recs.remove(&k);
                self.stats.tombstones_purged += 1;
            }
            due.len() as u64
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put {
            key: u8,
            hlc: u64,
            len: usize,
            ttl: Option<u64>,
        },
        Delete {
            key: u8,
            hlc: u64,
        },
        Fill {
            key: u8,
            hlc: u64,
            len: usize,
        },
        Get {
            key: u8,
        },
        Release {
            key: u8,
            exact: bool,
        },
        Sweep,
        Tick(u64),
    }

    fn arb_len() -> impl Strategy<Value = usize> {
        prop_oneof![
            12 => 0usize..12,
            1 => INLINE_VALUE_MAX - 1..INLINE_VALUE_MAX + 2,
            1 => Just(3 * INLINE_VALUE_MAX),
        ]
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..KEYS, 1u64..300, arb_len(), proptest::option::of(0u64..30))
                .prop_map(|(key, hlc, len, ttl)| Op::Put { key, hlc, len, ttl }),
            2 => (0..KEYS, 1u64..300).prop_map(|(key, hlc)| Op::Delete { key, hlc }),
            1 => (0..KEYS, 1u64..300, arb_len()).prop_map(|(key, hlc, len)| Op::Fill { key, hlc, len }),
            3 => (0..KEYS).prop_map(|key| Op::Get { key }),
            1 => (0..KEYS, any::<bool>()).prop_map(|(key, exact)| Op::Release { key, exact }),
            1 => Just(Op::Sweep),
            2 => (1u64..20).prop_map(Op::Tick),
        ]
    }

    fn arb_limits() -> impl Strategy<Value = ShardLimits> {
        (
            1usize..12,
            prop_oneof![
                Just(None),
                (10u64..120).prop_map(Some),
                (2 * INLINE_VALUE_MAX as u64..8 * INLINE_VALUE_MAX as u64).prop_map(Some),
            ],
            prop_oneof![
                (1u64..8).prop_map(|n| n * (3 + TOMBSTONE_OVERHEAD)),
                Just(u64::MAX)
            ],
        )
            .prop_map(
                |(capacity_items, capacity_bytes, tombstone_bytes)| ShardLimits {
                    capacity_items,
                    capacity_bytes,
                    tombstone_retention_ms: 15 * UNIT,
                    tombstone_bytes,
                },
            )
    }

    proptest! {
        #[test]
        fn the_store_follows_the_model(
            ops in proptest::collection::vec(arb_op(), 0..150),
            limits in arb_limits(),
        ) {
            let ring = Arc::new(Ring::new(["a", "b", "c"], 2));
            let mut s = ShardStore::new(limits);
            s.leaves(&ring);
            let mut m = Model { limits, recs: BTreeMap::new(), seq: 0, stats: ShardStats::default() };
            let mut now = 0u64;
            let name = |key: u8| format!("k{key:02}");
            for op in ops {
                let evictions = s.stats().evictions;
                // The key and write of a value, when the op writes one.
                let mut wrote: Option<(String, Write)> = None;
                match op {
                    Op::Put { key, hlc, len, ttl } => {
                        let w = Write {
                            version: Version { hlc, origin: 1 },
                            value: Some(Bytes::from(vec![hlc as u8; len])),
                            expires_at_ms: ttl.map(|t| now + t * UNIT + u64::from(key)),
                        };
                        let got = s.apply(&name(key), &w, now);
                        prop_assert_eq!(got, m.apply(&name(key), &w, ApplyMode::Normal, now));
                        if got == Ok(ApplyOutcome::Applied) && !expired(w.expires_at_ms, now) {
                            wrote = Some((name(key), w));
                        }
                    }
                    Op::Fill { key, hlc, len } => {
                        let w = Write {
                            version: Version { hlc, origin: 3 },
                            value: Some(Bytes::from(vec![hlc as u8; len])),
                            expires_at_ms: None,
                        };
                        let got = s.apply_mode(&name(key), &w, ApplyMode::Fill, now);
                        prop_assert_eq!(got, m.apply(&name(key), &w, ApplyMode::Fill, now));
                        if got == Ok(ApplyOutcome::Applied) {
                            wrote = Some((name(key), w));
                        }
                    }
                    Op::Delete { key, hlc } => {
                        let w = Write { version: Version { hlc, origin: 2 }, value: None, expires_at_ms: None };
                        prop_assert_eq!(
                            s.apply(&name(key), &w, now),
                            m.apply(&name(key), &w, ApplyMode::Normal, now)
                        );
                    }
                    Op::Get { key } => {
                        prop_assert_eq!(s.get(&name(key), now), m.get(&name(key), now));
                    }
                    Op::Release { key, exact } => {
                        if let Some(mut v) = m.version_of(&name(key)) {
                            v.hlc += u64::from(!exact);
                            let released = s.release(&name(key), v);
                            prop_assert_eq!(released, exact);
                            if exact {
                                m.recs.remove(&name(key));
                            }
                        }
                    }
                    Op::Sweep => prop_assert_eq!(s.sweep(now), m.sweep(now)),
                    Op::Tick(units) => now += units * UNIT,
                }
                // Evictions: which entries is the store's choice; the model takes the
                // ones the store no longer holds.
                let evicted = s.stats().evictions - evictions;
                let gone: Vec<String> = m
                    .live()
                    .map(|(k, _)| k.clone())
                    .filter(|k| s.version_of(k).is_none())
                    .collect();
                prop_assert_eq!(gone.len() as u64, evicted, "{:?}", gone);
                if let Some((key, w)) = &wrote {
                    let size = (key.len() + w.value.as_ref().map_or(0, |v| v.len())) as u64;
                    if m.over(1, size) {
                        prop_assert_eq!(s.stats().items, 0, "alone over the limits: all go");
                    } else {
                        prop_assert!(!gone.contains(key), "the entry just written is spared");
                    }
                }
                let sizes: Vec<u64> = gone.iter().map(|k| m.size(k)).collect();
                for k in &gone {
                    m.recs.remove(k);
                }
                m.stats.evictions += evicted;
                let g = m.gauges();
                prop_assert!(
                    sizes.is_empty() || sizes.iter().any(|b| m.over(g.items + 1, g.bytes + b)),
                    "eviction stops once within the limits"
                );
                // The same records, counters and gauges, within the limits.
                prop_assert_eq!(s.stats(), g);
                prop_assert!(!m.over(g.items, g.bytes));
                for key in 0..KEYS {
                    prop_assert_eq!(s.version_of(&name(key)), m.version_of(&name(key)));
                    prop_assert_eq!(s.peek_record(&name(key), now), m.peek(&name(key), now));
                }
                s.live.check();
                let mut rebuilt = SegmentLeaves::default();
                rebuilt.rebuild(ring.clone(), all_records(&s.live, &s.tombstones));
                prop_assert_eq!(s.leaves(&ring), rebuilt.leaves());
            }
        }
    }
}

//! [`LiveTable`]: the live entries of one shard, packed for memory, with the indexes the
//! store needs: by key, by expiry deadline, and a CLOCK hand for eviction.
//!
//! Owns the live side of [`super::ShardStore`] only; tombstones, limits, byte accounting
//! and counters are the store's. Like [`super::records`] for tombstones, this module is
//! the one place that changes live entries, and it reports every key that appears, goes
//! or changes version to the [`SegmentLeaves`] passed in, so the leaves stay equal to
//! leaves rebuilt from the entries.
//!
//! Layout. Each entry is one allocation, a `Box<[u8]>` laid out as
//!
//! | bytes      | field                                              |
//! |------------|----------------------------------------------------|
//! | `0..8`     | `version.hlc` (little-endian)                      |
//! | `8..16`    | `version.origin`                                   |
//! | `16..18`   | key length                                         |
//! | `18`       | flags: [`EXPIRES`], [`LARGE`], [`REFERENCED`]      |
//! | `19..27`   | `expires_at_ms`, present only with [`EXPIRES`]     |
//! | then       | the key, then the value (absent with [`LARGE`])    |
//!
//! so a 16-byte key with a 100-byte value and no expiry takes 135 bytes (one 144-byte
//! malloc chunk). Entries sit in a slab of fixed-size chunks of slots (a slot is 16
//! bytes: the entry's pointer and length); a slot number is stable for the entry's life
//! and freed slots are reused. The key index is a hash table of 4-byte slot numbers,
//! hashed by the key bytes read from the entry.
//!
//! Values over [`INLINE_VALUE_MAX`] are not copied into the entry: they are kept as the
//! [`Bytes`] they arrived in, in a side map by slot, so a read of a large value is a
//! reference-count increment rather than a copy. A read of a small value copies it out.
//!
//! Eviction is CLOCK (second chance): a read or an overwrite sets the entry's
//! [`REFERENCED`] flag; a new key starts without it. [`LiveTable::victim`] moves the
//! hand over the slots, clearing flags, and picks the first entry found without one, or
//! the entry it stands on after [`SECOND_CHANCE_LIMIT`] flags were cleared, so one
//! eviction does bounded work. This approximates least-recently-used order (as Redis's
//! sampled LRU does): an entry read since the hand last passed survives the next pass.
//!
//! Invariants (checked by `LiveTable::check` in tests):
//! - `index` holds exactly the occupied slots, each under the hash of its entry's key;
//!   keys are unique.
//! - `deadlines` holds exactly `(expires_at_ms, slot)` for each entry with [`EXPIRES`].
//! - `large` holds exactly the slots whose entry has [`LARGE`], with its value, which is
//!   longer than [`INLINE_VALUE_MAX`]; other entries hold their value inline.
//! - `len` counts the occupied slots; `free` lists each unoccupied slot below `high`
//!   once; no slot at or above `high` is occupied.

use crate::merkle::SegmentLeaves;
use crate::types::{Version, MAX_KEY_BYTES};
use bytes::Bytes;
use hashbrown::HashTable;
use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasherDefault;

/// The number of an entry's slot in the slab.
pub(super) type Slot = u32;

/// Longest value held inside its entry. Longer values are kept as their [`Bytes`], so a
/// read does not copy them: at 16 KiB the copy a read makes (one allocation and a
/// `memcpy`, about a microsecond) stays small next to the rest of a request, and the
/// side map's per-entry cost (about 60 bytes) is under half a percent of the value.
pub const INLINE_VALUE_MAX: usize = 16 << 10;

/// Slots per slab chunk: the slab grows by 16 KiB at a time, never by doubling.
const CHUNK_SLOTS: usize = 1024;

/// Most [`REFERENCED`] flags one eviction clears before it takes the entry under the
/// hand whatever its flag.
pub(super) const SECOND_CHANCE_LIMIT: usize = 256;

const HLC: usize = 0;
const ORIGIN: usize = 8;
const KEY_LEN: usize = 16;
const FLAGS: usize = 18;
/// Where the optional expiry (or else the key) starts.
const HEADER: usize = 19;
const EXPIRY_LEN: usize = 8;

/// The entry has an expiry time (stored after the fixed header).
const EXPIRES: u8 = 1;
/// The value is in [`LiveTable::large`], not in the entry.
const LARGE: u8 = 2;
/// Read or overwritten since the CLOCK hand last passed.
const REFERENCED: u8 = 4;

type Chunk = Box<[Option<Box<[u8]>>]>;

/// The hasher of the side map of large values, keyed by slot. Slot numbers are dense
/// and chosen by the table, not by clients: a multiplicative spread is enough.
#[derive(Default)]
struct SlotHasher(u64);

impl std::hash::Hasher for SlotHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u32(u32::from(b) ^ (self.0 as u32));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type SlotMap<V> = HashMap<Slot, V, BuildHasherDefault<SlotHasher>>;

fn hash_key(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut w = [0; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// A read-only view of one encoded entry.
#[derive(Clone, Copy)]
pub(super) struct EntryRef<'a>(&'a [u8]);

impl<'a> EntryRef<'a> {
    fn flags(self) -> u8 {
        self.0[FLAGS]
    }

    pub(super) fn version(self) -> Version {
        Version {
            hlc: read_u64(self.0, HLC),
            origin: read_u64(self.0, ORIGIN),
        }
    }

    pub(super) fn expires_at_ms(self) -> Option<u64> {
        (self.flags() & EXPIRES != 0).then(|| read_u64(self.0, HEADER))
    }

    fn key_range(self) -> std::ops::Range<usize> {
        let start = if self.flags() & EXPIRES != 0 {
            HEADER + EXPIRY_LEN
        } else {
            HEADER
        };
        let len = u16::from_le_bytes([self.0[KEY_LEN], self.0[KEY_LEN + 1]]);
        start..start + usize::from(len)
    }

    fn key_bytes(self) -> &'a [u8] {
        &self.0[self.key_range()]
    }

    pub(super) fn key(self) -> &'a str {
        std::str::from_utf8(self.key_bytes()).expect("keys are stored from a &str")
    }

    fn is_large(self) -> bool {
        self.flags() & LARGE != 0
    }

    fn inline_value(self) -> &'a [u8] {
        &self.0[self.key_range().end..]
    }

    #[cfg(test)]
    fn referenced(self) -> bool {
        self.flags() & REFERENCED != 0
    }
}

fn encoded_len(key: &str, inline_value: &[u8], expires_at_ms: Option<u64>) -> usize {
    HEADER + expires_at_ms.map_or(0, |_| EXPIRY_LEN) + key.len() + inline_value.len()
}

/// Writes an entry into `buf`, which is exactly [`encoded_len`] long.
fn encode_into(
    buf: &mut [u8],
    key: &str,
    inline_value: &[u8],
    version: Version,
    expires_at_ms: Option<u64>,
    flags: u8,
) {
    debug_assert!(key.len() <= MAX_KEY_BYTES);
    let key_len = u16::try_from(key.len()).expect("keys are at most MAX_KEY_BYTES long");
    buf[HLC..HLC + 8].copy_from_slice(&version.hlc.to_le_bytes());
    buf[ORIGIN..ORIGIN + 8].copy_from_slice(&version.origin.to_le_bytes());
    buf[KEY_LEN..KEY_LEN + 2].copy_from_slice(&key_len.to_le_bytes());
    let mut at = HEADER;
    buf[FLAGS] = flags;
    if let Some(t) = expires_at_ms {
        buf[FLAGS] |= EXPIRES;
        buf[at..at + EXPIRY_LEN].copy_from_slice(&t.to_le_bytes());
        at += EXPIRY_LEN;
    }
    buf[at..at + key.len()].copy_from_slice(key.as_bytes());
    at += key.len();
    buf[at..].copy_from_slice(inline_value);
}

fn slot_ref(chunks: &[Chunk], slot: Slot) -> Option<&[u8]> {
    let s = slot as usize;
    chunks.get(s / CHUNK_SLOTS)?[s % CHUNK_SLOTS].as_deref()
}

fn slot_mut(chunks: &mut [Chunk], slot: Slot) -> &mut Option<Box<[u8]>> {
    let s = slot as usize;
    &mut chunks[s / CHUNK_SLOTS][s % CHUNK_SLOTS]
}

/// The entry in an occupied slot.
fn entry_at(chunks: &[Chunk], slot: Slot) -> EntryRef<'_> {
    EntryRef(slot_ref(chunks, slot).expect("an occupied slot"))
}

/// The result of [`LiveTable::lookup`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Lookup {
    hash: u64,
    /// The slot of the key's entry, if it has one.
    pub(super) slot: Option<Slot>,
}

/// What an entry that was replaced or removed held, for the store's accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Gone {
    pub(super) version: Version,
    /// Its key and value bytes.
    pub(super) bytes: u64,
}

/// The live entries of one shard (see the module doc).
pub(super) struct LiveTable {
    chunks: Vec<Chunk>,
    /// Slots handed out so far: every occupied or free slot is below it.
    high: Slot,
    free: Vec<Slot>,
    len: usize,
    index: HashTable<Slot>,
    large: SlotMap<Bytes>,
    deadlines: BTreeSet<(u64, Slot)>,
    hand: Slot,
}

impl LiveTable {
    pub(super) fn new() -> Self {
        Self {
            chunks: Vec::new(),
            high: 0,
            free: Vec::new(),
            len: 0,
            index: HashTable::new(),
            large: SlotMap::default(),
            deadlines: BTreeSet::new(),
            hand: 0,
        }
    }

    /// How many entries are held.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Entries that carry an expiry.
    pub(super) fn expiring(&self) -> usize {
        self.deadlines.len()
    }

    /// The slot of `key`'s entry.
    pub(super) fn find(&self, key: &str) -> Option<Slot> {
        self.lookup(key).slot
    }

    /// Where `key` is, for a [`LiveTable::put`] that follows with no other change in
    /// between, so that a write hashes and searches once.
    pub(super) fn lookup(&self, key: &str) -> Lookup {
        let hash = hash_key(key.as_bytes());
        let chunks = &self.chunks;
        let slot = self
            .index
            .find(hash, |&s| entry_at(chunks, s).key_bytes() == key.as_bytes())
            .copied();
        Lookup { hash, slot }
    }

    /// The entry in an occupied `slot`.
    pub(super) fn entry(&self, slot: Slot) -> EntryRef<'_> {
        entry_at(&self.chunks, slot)
    }

    /// The value of the entry in `slot`: a copy of a small value, a shared handle on a
    /// large one.
    pub(super) fn value(&self, slot: Slot) -> Bytes {
        let e = self.entry(slot);
        if e.is_large() {
            self.large[&slot].clone()
        } else {
            Bytes::copy_from_slice(e.inline_value())
        }
    }

    /// Key plus value bytes of the entry in `slot`.
    fn size(&self, slot: Slot) -> u64 {
        let e = self.entry(slot);
        let value = if e.is_large() {
            self.large[&slot].len()
        } else {
            e.inline_value().len()
        };
        (e.key_bytes().len() + value) as u64
    }

    /// Marks the entry in `slot` as used (a read): the CLOCK hand passes it once.
    pub(super) fn touch(&mut self, slot: Slot) {
        if let Some(buf) = slot_mut(&mut self.chunks, slot) {
            buf[FLAGS] |= REFERENCED;
        }
    }

    /// Inserts `key`'s entry, or replaces it in its slot; `at` is `key`'s
    /// [`LiveTable::lookup`] with no change in between. Returns the slot and what was
    /// replaced. A replaced entry is marked used; a new key starts unmarked.
    pub(super) fn put(
        &mut self,
        leaves: &mut SegmentLeaves,
        key: &str,
        at: Lookup,
        value: &Bytes,
        version: Version,
        expires_at_ms: Option<u64>,
    ) -> (Slot, Option<Gone>) {
        debug_assert_eq!(at.slot, self.find(key), "a lookup that is out of date");
        let large = value.len() > INLINE_VALUE_MAX;
        let inline: &[u8] = if large { &[] } else { value };
        let flags = if large { LARGE } else { 0 };
        let need = encoded_len(key, inline, expires_at_ms);
        let (slot, gone) = match at.slot {
            Some(slot) => {
                let old = self.entry(slot);
                let (old_expiry, old_large) = (old.expires_at_ms(), old.is_large());
                let gone = Gone {
                    version: old.version(),
                    bytes: self.size(slot),
                };
                if let Some(t) = old_expiry {
                    self.deadlines.remove(&(t, slot));
                }
                if old_large && !large {
                    self.large.remove(&slot);
                }
                leaves.remove(key, gone.version);
                let buf = slot_mut(&mut self.chunks, slot)
                    .as_mut()
                    .expect("an occupied slot");
                // Same size (a common overwrite): rewritten in place, no allocation.
                if buf.len() != need {
                    *buf = vec![0; need].into_boxed_slice();
                }
                encode_into(buf, key, inline, version, expires_at_ms, flags | REFERENCED);
                (slot, Some(gone))
            }
            None => {
                let mut buf = vec![0; need].into_boxed_slice();
                encode_into(&mut buf, key, inline, version, expires_at_ms, flags);
                let slot = self.alloc_slot(buf);
                let chunks = &self.chunks;
                self.index.insert_unique(at.hash, slot, |&s| {
                    hash_key(entry_at(chunks, s).key_bytes())
                });
                self.len += 1;
                (slot, None)
            }
        };
        if large {
            self.large.insert(slot, value.clone());
        }
        if let Some(t) = expires_at_ms {
            self.deadlines.insert((t, slot));
        }
        leaves.add(key, version);
        (slot, gone)
    }

    fn alloc_slot(&mut self, buf: Box<[u8]>) -> Slot {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                let s = self.high;
                if s as usize == self.chunks.len() * CHUNK_SLOTS {
                    self.chunks
                        .push(std::iter::repeat_with(|| None).take(CHUNK_SLOTS).collect());
                }
                self.high = s.checked_add(1).expect("a shard holds under 2^32 entries");
                s
            }
        };
        *slot_mut(&mut self.chunks, slot) = Some(buf);
        slot
    }

    /// Removes the entry in an occupied `slot`.
    pub(super) fn remove(&mut self, leaves: &mut SegmentLeaves, slot: Slot) -> Gone {
        let buf = slot_mut(&mut self.chunks, slot)
            .take()
            .expect("an occupied slot");
        let e = EntryRef(&buf);
        self.index
            .find_entry(hash_key(e.key_bytes()), |&s| s == slot)
            .expect("every entry is indexed")
            .remove();
        if let Some(t) = e.expires_at_ms() {
            self.deadlines.remove(&(t, slot));
        }
        let value = if e.is_large() {
            self.large.remove(&slot).map_or(0, |v| v.len())
        } else {
            e.inline_value().len()
        };
        let gone = Gone {
            version: e.version(),
            bytes: (e.key_bytes().len() + value) as u64,
        };
        leaves.remove(e.key(), gone.version);
        self.free.push(slot);
        self.len -= 1;
        gone
    }

    /// The entry to evict, by CLOCK: the hand clears [`REFERENCED`] flags until it finds
    /// an entry without one, or has cleared [`SECOND_CHANCE_LIMIT`] of them. Never
    /// `protect` (the entry just written) while another entry is held.
    pub(super) fn victim(&mut self, protect: Option<Slot>) -> Option<Slot> {
        if self.len == 0 {
            return None;
        }
        let mut cleared = 0;
        loop {
            let slot = self.hand;
            self.hand = if slot + 1 >= self.high { 0 } else { slot + 1 };
            let Some(buf) = slot_mut(&mut self.chunks, slot) else {
                continue;
            };
            if protect == Some(slot) && self.len > 1 {
                continue;
            }
            if buf[FLAGS] & REFERENCED != 0 && cleared < SECOND_CHANCE_LIMIT {
                buf[FLAGS] &= !REFERENCED;
                cleared += 1;
                continue;
            }
            return Some(slot);
        }
    }

    /// The entry with the earliest expiry time, if that time is at or before `now_ms`.
    pub(super) fn first_due(&self, now_ms: u64) -> Option<Slot> {
        self.deadlines
            .first()
            .filter(|(t, _)| *t <= now_ms)
            .map(|&(_, s)| s)
    }

    /// Every entry, in slot order.
    pub(super) fn iter(&self) -> impl Iterator<Item = EntryRef<'_>> {
        self.chunks
            .iter()
            .flat_map(|c| c.iter())
            .filter_map(|s| s.as_deref().map(EntryRef))
    }

    /// Panics unless the invariants of the module doc hold.
    #[cfg(test)]
    pub(super) fn check(&self) {
        let mut occupied = 0;
        let mut deadlines = BTreeSet::new();
        let mut large = std::collections::HashSet::new();
        for (i, s) in self.chunks.iter().flat_map(|c| c.iter()).enumerate() {
            let slot = i as Slot;
            let Some(buf) = s else { continue };
            assert!(slot < self.high, "occupied slot {slot} at or past high");
            occupied += 1;
            let e = EntryRef(buf);
            assert_eq!(self.find(e.key()), Some(slot), "index of {:?}", e.key());
            if let Some(t) = e.expires_at_ms() {
                deadlines.insert((t, slot));
            }
            if e.is_large() {
                assert!(self.large[&slot].len() > INLINE_VALUE_MAX);
                assert!(e.inline_value().is_empty());
                large.insert(slot);
            } else {
                assert!(e.inline_value().len() <= INLINE_VALUE_MAX);
            }
        }
        assert_eq!(occupied, self.len);
        assert_eq!(self.index.len(), self.len);
        assert_eq!(deadlines, self.deadlines);
        assert_eq!(large, self.large.keys().copied().collect());
        let free: std::collections::HashSet<Slot> = self.free.iter().copied().collect();
        assert_eq!(free.len(), self.free.len(), "a slot is free twice");
        assert!(free
            .iter()
            .all(|&s| s < self.high && slot_ref(&self.chunks, s).is_none()));
        assert_eq!(free.len() + self.len, self.high as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::Ring;
    use std::sync::Arc;

    /// Looks `key` up and puts it.
    fn put(
        t: &mut LiveTable,
        l: &mut SegmentLeaves,
        key: &str,
        value: &Bytes,
        version: Version,
        expires_at_ms: Option<u64>,
    ) -> (Slot, Option<Gone>) {
        let at = t.lookup(key);
        t.put(l, key, at, value, version, expires_at_ms)
    }

    fn v(hlc: u64) -> Version {
        Version { hlc, origin: 7 }
    }

    fn val(n: usize) -> Bytes {
        Bytes::from((0..n).map(|i| i as u8).collect::<Vec<u8>>())
    }

    /// Leaves kept for a ring, so that adds and removes are tracked.
    fn leaves() -> (SegmentLeaves, Arc<Ring>) {
        let ring = Arc::new(Ring::new(["a", "b"], 2));
        let mut l = SegmentLeaves::default();
        l.rebuild(ring.clone(), std::iter::empty());
        (l, ring)
    }

    #[track_caller]
    fn assert_leaves(t: &LiveTable, l: &SegmentLeaves, ring: &Arc<Ring>) {
        let mut r = SegmentLeaves::default();
        r.rebuild(ring.clone(), t.iter().map(|e| (e.key(), e.version())));
        assert_eq!(l.leaves(), r.leaves());
    }

    #[test]
    fn entries_round_trip_their_fields() {
        let (mut l, ring) = leaves();
        let mut t = LiveTable::new();
        let (a, gone) = put(&mut t, &mut l, "alpha", &val(100), v(1), None);
        assert!(gone.is_none());
        let (b, _) = put(&mut t, &mut l, "β", &Bytes::new(), v(u64::MAX), Some(42));
        let e = t.entry(a);
        assert_eq!(
            (e.key(), e.version(), e.expires_at_ms()),
            ("alpha", v(1), None)
        );
        assert_eq!(t.value(a), val(100));
        assert_eq!(e.0.len(), HEADER + 5 + 100);
        let e = t.entry(b);
        assert_eq!((e.key(), e.version()), ("β", v(u64::MAX)));
        assert_eq!((e.expires_at_ms(), t.value(b)), (Some(42), Bytes::new()));
        assert_eq!(
            (t.find("alpha"), t.find("β"), t.find("gamma")),
            (Some(a), Some(b), None)
        );
        let key = "k".repeat(MAX_KEY_BYTES);
        let (c, _) = put(&mut t, &mut l, &key, &val(3), v(2), None);
        assert_eq!(t.entry(c).key(), key);
        t.check();
        assert_leaves(&t, &l, &ring);
    }

    #[test]
    fn overwrite_keeps_the_slot_and_reports_what_it_replaced() {
        let (mut l, ring) = leaves();
        let mut t = LiveTable::new();
        let (a, _) = put(&mut t, &mut l, "a", &val(10), v(1), Some(5));
        let (same, gone) = put(&mut t, &mut l, "a", &val(10), v(2), None);
        assert_eq!(same, a);
        assert_eq!(
            gone,
            Some(Gone {
                version: v(1),
                bytes: 11
            })
        );
        assert_eq!(t.first_due(u64::MAX), None, "the old deadline went");
        let (_, gone) = put(&mut t, &mut l, "a", &val(3), v(3), Some(9));
        assert_eq!(
            gone,
            Some(Gone {
                version: v(2),
                bytes: 11
            })
        );
        assert_eq!((t.len(), t.first_due(9)), (1, Some(a)));
        t.check();
        assert_leaves(&t, &l, &ring);
    }

    #[test]
    fn freed_slots_are_reused() {
        let (mut l, ring) = leaves();
        let mut t = LiveTable::new();
        let slots: Vec<Slot> = (0..5)
            .map(|i| put(&mut t, &mut l, &format!("k{i}"), &val(1), v(1), None).0)
            .collect();
        assert_eq!(slots, vec![0, 1, 2, 3, 4]);
        assert_eq!(
            t.remove(&mut l, 1),
            Gone {
                version: v(1),
                bytes: 3
            }
        );
        assert_eq!(t.remove(&mut l, 3).version, v(1));
        assert_eq!(t.find("k1"), None);
        let (s, _) = put(&mut t, &mut l, "new", &val(1), v(2), None);
        assert_eq!(s, 3, "the last freed slot first");
        let (s, _) = put(&mut t, &mut l, "newer", &val(1), v(2), None);
        assert_eq!(s, 1);
        let (s, _) = put(&mut t, &mut l, "newest", &val(1), v(2), None);
        assert_eq!(s, 5, "then a new slot");
        assert_eq!(t.len(), 6);
        t.check();
        assert_leaves(&t, &l, &ring);
    }

    #[test]
    fn the_slab_grows_by_chunks() {
        let (mut l, _) = leaves();
        let mut t = LiveTable::new();
        for i in 0..CHUNK_SLOTS + 1 {
            put(&mut t, &mut l, &format!("k{i}"), &val(1), v(1), None);
        }
        assert_eq!(t.chunks.len(), 2);
        assert!(t.chunks.iter().all(|c| c.len() == CHUNK_SLOTS));
        t.check();
    }

    #[test]
    fn large_values_are_shared_not_copied() {
        let (mut l, ring) = leaves();
        let mut t = LiveTable::new();
        let big = val(INLINE_VALUE_MAX + 1);
        let (s, _) = put(&mut t, &mut l, "big", &big, v(1), Some(3));
        assert_eq!(t.entry(s).0.len(), HEADER + EXPIRY_LEN + 3);
        let read = t.value(s);
        assert_eq!(read, big);
        assert_eq!(read.as_ptr(), big.as_ptr(), "the same buffer");
        // At the threshold a value is inline, and a read is a copy.
        let edge = val(INLINE_VALUE_MAX);
        let (e, _) = put(&mut t, &mut l, "edge", &edge, v(1), None);
        assert_ne!(t.value(e).as_ptr(), edge.as_ptr());
        t.check();
        // Large to small and back, then removal: the side map follows.
        assert_eq!(
            put(&mut t, &mut l, "big", &val(2), v(2), None).1,
            Some(Gone {
                version: v(1),
                bytes: 3 + big.len() as u64
            })
        );
        t.check();
        put(&mut t, &mut l, "big", &big, v(3), None);
        t.check();
        assert_eq!(t.remove(&mut l, s).bytes, 3 + big.len() as u64);
        assert!(t.large.is_empty());
        t.check();
        assert_leaves(&t, &l, &ring);
    }

    #[test]
    fn clock_gives_a_used_entry_a_second_chance() {
        let (mut l, _) = leaves();
        let mut t = LiveTable::new();
        for k in ["a", "b", "c"] {
            put(&mut t, &mut l, k, &val(1), v(1), None);
        }
        t.touch(t.find("a").unwrap());
        // a was read: the hand clears its flag and takes b.
        let b = t.victim(None).unwrap();
        assert_eq!(t.entry(b).key(), "b");
        t.remove(&mut l, b);
        assert!(!t.entry(t.find("a").unwrap()).referenced());
        // An overwrite is a use too.
        put(&mut t, &mut l, "c", &val(1), v(2), None);
        let next = t.victim(None).unwrap();
        assert_eq!(t.entry(next).key(), "a", "its second chance is spent");
        t.remove(&mut l, next);
        t.check();
    }

    #[test]
    fn clock_never_takes_the_protected_entry_while_another_is_held() {
        let (mut l, _) = leaves();
        let mut t = LiveTable::new();
        let (a, _) = put(&mut t, &mut l, "a", &val(1), v(1), None);
        let (b, _) = put(&mut t, &mut l, "b", &val(1), v(1), None);
        t.touch(b);
        assert_eq!(t.victim(Some(a)), Some(b));
        t.remove(&mut l, b);
        assert_eq!(t.victim(Some(a)), Some(a), "unless it is the only one");
        t.remove(&mut l, a);
        assert_eq!(t.victim(None), None);
    }

    #[test]
    fn one_eviction_clears_a_bounded_number_of_flags() {
        let (mut l, _) = leaves();
        let mut t = LiveTable::new();
        let n = SECOND_CHANCE_LIMIT + 10;
        for i in 0..n {
            let (s, _) = put(&mut t, &mut l, &format!("k{i}"), &val(1), v(1), None);
            t.touch(s);
        }
        // Every entry was used: the hand gives up after the limit.
        assert_eq!(t.victim(None), Some(SECOND_CHANCE_LIMIT as Slot));
        let referenced = t.iter().filter(|e| e.referenced()).count();
        assert_eq!(referenced, n - SECOND_CHANCE_LIMIT);
    }

    #[test]
    fn deadlines_follow_overwrites_removals_and_evictions() {
        let (mut l, ring) = leaves();
        let mut t = LiveTable::new();
        for (i, k) in ["a", "b", "c", "d"].iter().enumerate() {
            put(&mut t, &mut l, k, &val(1), v(1), Some(10 + i as u64));
        }
        assert_eq!(t.first_due(9), None);
        assert_eq!(t.first_due(10), t.find("a"));
        // Overwritten without expiry, removed, evicted: each leaves the index.
        put(&mut t, &mut l, "a", &val(1), v(2), None);
        let b = t.find("b").unwrap();
        t.remove(&mut l, b);
        let c = t.victim(Some(t.find("d").unwrap())).unwrap();
        assert_eq!(t.entry(c).key(), "c");
        t.remove(&mut l, c);
        t.check();
        assert_eq!(t.first_due(12), None);
        assert_eq!(t.first_due(13), t.find("d"));
        // A reused slot carries its new deadline only.
        let (s, _) = put(&mut t, &mut l, "e", &val(1), v(1), Some(1));
        assert_eq!(s, c);
        assert_eq!(t.first_due(1), Some(s));
        t.check();
        assert_leaves(&t, &l, &ring);
    }
}

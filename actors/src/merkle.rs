//! Merkle leaves over ring segments, for anti-entropy.
//!
//! Pure. The buckets are the ring's segments ([`crate::ring`]): the hash range between
//! two consecutive tokens, whose keys all have the same owners. So two nodes compare
//! exactly the segments both own, and one insert changes one leaf. A leaf is the XOR of
//! [`entry_hash`]`(key, version)` over the segment's records (values and tombstones), with
//! their count: XOR makes the leaf independent of order and lets a store keep it up to
//! date on every change, adding an entry's hash when it appears and XOR-ing it out when
//! it goes ([`SegmentLeaves`]), so nothing is rebuilt per round.
//!
//! The tree has one level: a round sends the leaves of the segments both nodes own (a few
//! hundred per peer on a small cluster, 16 bytes each; empty ones are left out). The peer
//! answers with its `(key, version)` entries of the differing segments only.
//! [`reconcile`] then says which keys each side must send: newest version wins in both
//! directions, and absence on one side is never a delete (only a tombstone, which is a
//! version like any other, deletes).
//!
//! Invariant: the leaves a [`SegmentLeaves`] holds equal
//! [`SegmentLeaves::rebuild`] over the same records, whatever sequence of adds and
//! removes led there (XOR is commutative, associative and self-inverse).

use crate::ring::{key_hash, Ring};
use crate::types::{Key, Version};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use xxhash_rust::xxh64::Xxh64;

/// What one `(key, version)` contributes to its segment's leaf.
pub fn entry_hash(key: &str, v: Version) -> u64 {
    let mut h = Xxh64::new(0);
    h.update(key.as_bytes());
    h.update(&v.hlc.to_le_bytes());
    h.update(&v.origin.to_le_bytes());
    h.digest()
}

/// Bytes one listed `(key, version)` entry counts for in reply budgets.
pub fn entry_weight(key: &str) -> usize {
    key.len() + 24
}

/// The leaf of one segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Leaf {
    /// XOR of the entry hashes.
    pub hash: u64,
    /// Records in the segment.
    pub count: u64,
    /// Sum of the records' key lengths (sizes listings; not compared).
    pub key_bytes: u64,
}

impl Leaf {
    fn add(&mut self, key: &str, v: Version) {
        self.hash ^= entry_hash(key, v);
        self.count += 1;
        self.key_bytes += key.len() as u64;
    }

    fn remove(&mut self, key: &str, v: Version) {
        self.hash ^= entry_hash(key, v);
        self.count = self.count.saturating_sub(1);
        self.key_bytes = self.key_bytes.saturating_sub(key.len() as u64);
    }

    /// Merges another store's leaf of the same segment (records are disjoint).
    pub fn merge(&mut self, o: &Leaf) {
        self.hash ^= o.hash;
        self.count += o.count;
        self.key_bytes += o.key_bytes;
    }

    /// Bytes the listing of this segment's entries takes.
    pub fn listing_bytes(&self) -> u64 {
        self.key_bytes + 24 * self.count
    }

    /// Same content as the peer's leaf (hash and count).
    pub fn matches(&self, o: &SegmentLeaf) -> bool {
        self.hash == o.hash && self.count == o.count
    }
}

/// A leaf on the wire.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct SegmentLeaf {
    pub segment: u32,
    pub hash: u64,
    pub count: u64,
}

/// The leaves of one store, kept up to date on every change of its records.
///
/// Holds the ring it classifies keys with. Before it is given one (a single node, or no
/// anti-entropy round yet) it tracks nothing and costs nothing.
#[derive(Debug, Default)]
pub struct SegmentLeaves {
    ring: Option<Arc<Ring>>,
    leaves: HashMap<u32, Leaf>,
}

impl SegmentLeaves {
    /// The fingerprint of the ring the leaves are kept for, if any.
    pub fn fingerprint(&self) -> Option<u64> {
        self.ring.as_ref().map(|r| r.fingerprint())
    }

    /// The segment of `key` in the current ring.
    pub fn segment_of(&self, key: &str) -> Option<u32> {
        self.ring
            .as_ref()?
            .segment_of_hash(key_hash(key))
            .map(|s| s as u32)
    }

    /// A record `(key, v)` appeared.
    pub fn add(&mut self, key: &str, v: Version) {
        if let Some(s) = self.segment_of(key) {
            self.leaves.entry(s).or_default().add(key, v);
        }
    }

    /// The record `(key, v)` went away (or is about to change version).
    pub fn remove(&mut self, key: &str, v: Version) {
        if let Some(s) = self.segment_of(key) {
            if let Some(l) = self.leaves.get_mut(&s) {
                l.remove(key, v);
                if l.count == 0 {
                    self.leaves.remove(&s);
                }
            }
        }
    }

    /// Starts over for `ring` with these records (once per ring change).
    pub fn rebuild<'a>(
        &mut self,
        ring: Arc<Ring>,
        records: impl IntoIterator<Item = (&'a str, Version)>,
    ) {
        self.ring = Some(ring);
        self.leaves.clear();
        for (k, v) in records {
            self.add(k, v);
        }
    }

    /// The non-empty leaves.
    pub fn leaves(&self) -> &HashMap<u32, Leaf> {
        &self.leaves
    }
}

/// Why a peer's leaves were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeavesError {
    #[error("anti-entropy leaves must name segments in ascending order, each once (segment {0})")]
    Order(u32),
    #[error("anti-entropy leaf of segment {0}, which the two nodes do not both own")]
    NotShared(u32),
    #[error("anti-entropy leaf of segment {0} claims no records")]
    Empty(u32),
}

/// Checks segment numbers from a peer against the segments both nodes own (`shared`,
/// ascending): ascending, no duplicates, every one shared. Bounds their number too (at
/// most one per shared segment).
pub fn check_segments(
    segments: impl IntoIterator<Item = u32>,
    shared: &[u32],
) -> Result<(), LeavesError> {
    let mut prev: Option<u32> = None;
    for s in segments {
        if prev.is_some_and(|p| s <= p) {
            return Err(LeavesError::Order(s));
        }
        prev = Some(s);
        if shared.binary_search(&s).is_err() {
            return Err(LeavesError::NotShared(s));
        }
    }
    Ok(())
}

/// Checks a peer's leaves: [`check_segments`], and none empty.
pub fn check_leaves(theirs: &[SegmentLeaf], shared: &[u32]) -> Result<(), LeavesError> {
    check_segments(theirs.iter().map(|l| l.segment), shared)?;
    match theirs.iter().find(|l| l.count == 0) {
        Some(l) => Err(LeavesError::Empty(l.segment)),
        None => Ok(()),
    }
}

/// This node's leaves of the `shared` segments (ascending), as sent to a peer: the
/// non-empty ones.
pub fn wire_leaves(shared: &[u32], mine: &HashMap<u32, Leaf>) -> Vec<SegmentLeaf> {
    shared
        .iter()
        .filter_map(|s| {
            mine.get(s).map(|l| SegmentLeaf {
                segment: *s,
                hash: l.hash,
                count: l.count,
            })
        })
        .collect()
}

/// The shared segments (ascending) whose leaves differ; a missing leaf is an empty one.
/// `theirs` was checked by [`check_leaves`].
pub fn differing(shared: &[u32], mine: &HashMap<u32, Leaf>, theirs: &[SegmentLeaf]) -> Vec<u32> {
    let theirs: HashMap<u32, &SegmentLeaf> = theirs.iter().map(|l| (l.segment, l)).collect();
    shared
        .iter()
        .copied()
        .filter(|s| match (mine.get(s), theirs.get(s)) {
            (None, None) => false,
            (Some(m), Some(t)) => !m.matches(t),
            _ => true,
        })
        .collect()
}

/// How many of `segments` (in order) to list within `budget` bytes by this side's
/// leaves: at least one (which may then be listed in part).
pub fn listable(segments: &[u32], mine: &HashMap<u32, Leaf>, budget: u64) -> usize {
    let mut used = 0u64;
    let mut n = 0;
    for s in segments {
        used += mine.get(s).map_or(0, Leaf::listing_bytes);
        if used > budget && n > 0 {
            break;
        }
        n += 1;
        if used > budget {
            break;
        }
    }
    n
}

/// What reconciling two listings found, each list sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Keys both hold, this side newer: send.
    pub send_newer: Vec<Key>,
    /// Keys only this side listed: send, if the other side's listing is complete.
    pub send_missing: Vec<Key>,
    /// Keys both hold, the other side newer: fetch.
    pub fetch_newer: Vec<Key>,
    /// Keys only the other side listed: fetch, if this side's listing is complete.
    pub fetch_missing: Vec<Key>,
}

/// Compares both sides' `(key, version)` entries of the differing segments: newest
/// version wins in both directions; a key one side lacks goes to it (absence is never a
/// delete). The caller decides about missing keys (a listing cut short proves nothing
/// about absence; a full shard refuses them).
pub fn reconcile(mine: &[(Key, Version)], theirs: &[(Key, Version)]) -> Reconciled {
    let their_map: HashMap<&str, Version> = theirs.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let my_map: HashMap<&str, Version> = mine.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let mut r = Reconciled::default();
    for (k, v) in &my_map {
        match their_map.get(k) {
            None => r.send_missing.push((*k).to_owned()),
            Some(t) if v > t => r.send_newer.push((*k).to_owned()),
            Some(_) => {}
        }
    }
    for (k, v) in &their_map {
        match my_map.get(k) {
            None => r.fetch_missing.push((*k).to_owned()),
            Some(m) if v > m => r.fetch_newer.push((*k).to_owned()),
            Some(_) => {}
        }
    }
    for l in [
        &mut r.send_newer,
        &mut r.send_missing,
        &mut r.fetch_newer,
        &mut r.fetch_missing,
    ] {
        l.sort();
    }
    r
}

/// The entries of some segments, as a store lists them: sorted by segment then key, and
/// possibly cut short at a byte budget.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// `(segment, key, version)`.
    pub entries: Vec<(u32, Key, Version)>,
    /// The segment where the listing was cut: its entries are listed in part, later
    /// segments not at all. `None`: every segment asked is listed in full.
    pub cut: Option<u32>,
}

impl Listing {
    /// Merges another store's listing of the same segments (disjoint keys).
    pub fn merge(&mut self, o: Listing) {
        self.entries.extend(o.entries);
        self.cut = match (self.cut, o.cut) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// Sorts, drops what lies past the cut, and cuts again so the entries weigh at most
    /// `budget` bytes ([`entry_weight`]).
    pub fn finish(&mut self, budget: usize) {
        self.entries.sort_unstable();
        if let Some(c) = self.cut {
            self.entries.retain(|(s, _, _)| *s <= c);
        }
        let mut used = 0usize;
        let over = self.entries.iter().position(|(_, k, _)| {
            used += entry_weight(k);
            used > budget
        });
        if let Some(i) = over {
            let seg = self.entries[i].0;
            self.cut = Some(self.cut.map_or(seg, |c| c.min(seg)));
            self.entries.truncate(i);
        }
    }

    /// Whether segment `s` (one of those asked) is listed in full.
    pub fn complete(&self, s: u32) -> bool {
        self.cut.is_none_or(|c| s < c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn v(h: u64) -> Version {
        Version { hlc: h, origin: 1 }
    }

    fn ring() -> Arc<Ring> {
        Arc::new(Ring::new(["a", "b", "c", "d"], 2))
    }

    fn leaves(m: &BTreeMap<String, Version>) -> HashMap<u32, Leaf> {
        let mut l = SegmentLeaves::default();
        l.rebuild(ring(), m.iter().map(|(k, v)| (k.as_str(), *v)));
        l.leaves().clone()
    }

    fn in_segments(m: &BTreeMap<String, Version>, segs: &[u32]) -> Vec<(Key, Version)> {
        let r = ring();
        m.iter()
            .filter(|(k, _)| segs.contains(&(r.segment_of_hash(key_hash(k)).unwrap() as u32)))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    #[test]
    fn leaves_are_order_independent_and_track_changes() {
        let r = ring();
        let mut a = SegmentLeaves::default();
        a.rebuild(r.clone(), [("x", v(1)), ("y", v(2))]);
        let mut b = SegmentLeaves::default();
        b.rebuild(r.clone(), [("y", v(2)), ("x", v(1))]);
        assert_eq!(a.leaves(), b.leaves());
        // Overwrite y in place: remove the old version, add the new one.
        b.remove("y", v(2));
        b.add("y", v(3));
        let mut c = SegmentLeaves::default();
        c.rebuild(r, [("x", v(1)), ("y", v(3))]);
        assert_eq!(b.leaves(), c.leaves());
        let y = b.segment_of("y").unwrap();
        assert_ne!(a.leaves()[&y], b.leaves()[&y]);
        // Removing everything leaves nothing (sparse).
        c.remove("x", v(1));
        c.remove("y", v(3));
        assert!(c.leaves().is_empty());
        // Without a ring nothing is tracked.
        let mut none = SegmentLeaves::default();
        none.add("x", v(1));
        assert!(none.leaves().is_empty() && none.fingerprint().is_none());
    }

    #[test]
    fn peer_leaves_are_checked() {
        let shared = [1, 4, 9];
        let l = |segment, count| SegmentLeaf {
            segment,
            hash: 7,
            count,
        };
        assert_eq!(check_leaves(&[l(1, 1), l(9, 2)], &shared), Ok(()));
        assert_eq!(
            check_leaves(&[l(4, 1), l(1, 1)], &shared),
            Err(LeavesError::Order(1))
        );
        assert_eq!(
            check_leaves(&[l(4, 1), l(4, 1)], &shared),
            Err(LeavesError::Order(4))
        );
        assert_eq!(
            check_leaves(&[l(5, 1)], &shared),
            Err(LeavesError::NotShared(5))
        );
        assert_eq!(
            check_leaves(&[l(9, 0)], &shared),
            Err(LeavesError::Empty(9))
        );
    }

    #[test]
    fn listing_fits_the_budget_but_always_takes_one() {
        let mine: HashMap<u32, Leaf> = [
            (
                1,
                Leaf {
                    hash: 1,
                    count: 1,
                    key_bytes: 76,
                },
            ),
            (
                2,
                Leaf {
                    hash: 1,
                    count: 1,
                    key_bytes: 76,
                },
            ),
        ]
        .into();
        assert_eq!(listable(&[1, 2, 3], &mine, 200), 3, "3 is empty here");
        assert_eq!(listable(&[1, 2, 3], &mine, 150), 1);
        assert_eq!(listable(&[1, 2], &mine, 10), 1);
        assert_eq!(listable(&[], &mine, 10), 0);
    }

    #[test]
    fn reconcile_newest_wins_both_ways_and_absence_is_not_delete() {
        let mine = vec![
            ("a".to_string(), v(2)),
            ("b".to_string(), v(1)),
            ("only-mine".to_string(), v(1)),
        ];
        let theirs = vec![
            ("a".to_string(), v(1)),
            ("b".to_string(), v(5)),
            ("only-theirs".to_string(), v(1)),
        ];
        let r = reconcile(&mine, &theirs);
        assert_eq!(r.send_newer, vec!["a".to_string()]);
        assert_eq!(r.send_missing, vec!["only-mine".to_string()]);
        assert_eq!(r.fetch_newer, vec!["b".to_string()]);
        assert_eq!(r.fetch_missing, vec!["only-theirs".to_string()]);
    }

    #[test]
    fn listings_merge_and_cut_at_the_budget() {
        let e = |s: u32, k: &str| (s, k.to_string(), v(1));
        let mut a = Listing {
            entries: vec![e(3, "c"), e(1, "a")],
            cut: None,
        };
        a.merge(Listing {
            entries: vec![e(1, "b"), e(2, "x"), e(5, "z")],
            cut: Some(2),
        });
        a.finish(usize::MAX);
        assert_eq!(a.entries, vec![e(1, "a"), e(1, "b"), e(2, "x")]);
        assert!(a.complete(1) && !a.complete(2) && !a.complete(3));
        // 25 bytes an entry of a one-byte key: two fit in 50.
        a.finish(50);
        assert_eq!(a.entries, vec![e(1, "a"), e(1, "b")]);
        assert_eq!(a.cut, Some(2));
        let mut b = Listing {
            entries: vec![e(1, "a"), e(1, "b")],
            cut: None,
        };
        b.finish(30);
        assert_eq!((b.entries.len(), b.cut), (1, Some(1)));
    }

    proptest! {
        /// Two replicas that exchange the entries of their differing segments end equal,
        /// and the keys exchanged are about the keys that differ.
        #[test]
        fn replicas_that_exchange_diffs_end_equal(
            common in proptest::collection::btree_map("[a-z]{1,8}", 1u64..100, 0..300),
            only_a in proptest::collection::btree_map("[A-Z]{1,8}", 1u64..100, 0..20),
            only_b in proptest::collection::btree_map("[0-9]{1,8}", 1u64..100, 0..20),
            bumps in proptest::collection::vec((any::<prop::sample::Index>(), 100u64..200, any::<bool>()), 0..20),
        ) {
            let mut a: BTreeMap<String, Version> = common.iter().map(|(k, h)| (k.clone(), v(*h))).collect();
            let mut b = a.clone();
            a.extend(only_a.iter().map(|(k, h)| (k.clone(), v(*h))));
            b.extend(only_b.iter().map(|(k, h)| (k.clone(), v(*h))));
            let keys: Vec<String> = common.keys().cloned().collect();
            let mut differing_keys = only_a.len() + only_b.len();
            if !keys.is_empty() {
                let mut bumped = std::collections::HashSet::new();
                for (idx, h, side) in bumps {
                    let k = idx.get(&keys).clone();
                    if bumped.insert(k.clone()) { differing_keys += 1; }
                    if side { a.insert(k, v(h)); } else { b.insert(k, v(h)); }
                }
            }
            let all: Vec<u32> = (0..ring().segments() as u32).collect();
            let lb = leaves(&b);
            let theirs = wire_leaves(&all, &lb);
            prop_assert_eq!(check_leaves(&theirs, &all), Ok(()));
            let segs = differing(&all, &leaves(&a), &theirs);
            let r = reconcile(&in_segments(&a, &segs), &in_segments(&b, &segs));
            let send: Vec<Key> = r.send_newer.into_iter().chain(r.send_missing).collect();
            let fetch: Vec<Key> = r.fetch_newer.into_iter().chain(r.fetch_missing).collect();
            prop_assert!(send.len() + fetch.len() <= differing_keys, "{} exchanged for {} differing", send.len() + fetch.len(), differing_keys);
            for k in send { let x = a[&k]; b.insert(k, x); }
            for k in fetch { let x = b[&k]; a.insert(k, x); }
            // Newest wins: every key ends at the max version either side had.
            prop_assert_eq!(&a, &b);
            prop_assert!(differing(&all, &leaves(&a), &wire_leaves(&all, &leaves(&b))).is_empty());
        }
    }
}

//! Merkle trees over key-hash buckets, for anti-entropy.
//!
//! Pure. Keys are bucketed by the top bits of their ring hash (by hash, never by position
//! in a sorted list, so one insert changes one bucket); a leaf is the XOR of
//! `xxh64(key, version)` over its bucket, a group hashes its leaves, the root hashes the
//! groups. Two replicas compare roots, then groups, then leaves, and exchange the
//! `(key, version)` lists of differing buckets only. [`reconcile`] then says which keys
//! each side must send: newest version wins in both directions, and absence on one side
//! is never a delete (only a tombstone, which is a version like any other, deletes).

use crate::ring::key_hash;
use crate::types::{Key, Version};
use std::collections::HashMap;
use xxhash_rust::xxh64::{xxh64, Xxh64};

/// Leaves of the tree.
pub const BUCKETS: usize = 1024;
/// Leaves per group (the middle level).
pub const GROUP: usize = 32;

/// The bucket of a key.
pub fn bucket_of(key: &str) -> usize {
    (key_hash(key) >> (64 - BUCKETS.trailing_zeros())) as usize
}

fn entry_hash(key: &str, v: Version) -> u64 {
    let mut h = Xxh64::new(0);
    h.update(key.as_bytes());
    h.update(&v.hlc.to_le_bytes());
    h.update(&v.origin.to_le_bytes());
    h.digest()
}

fn hash_slice(xs: &[u64]) -> u64 {
    let bytes: Vec<u8> = xs.iter().flat_map(|x| x.to_le_bytes()).collect();
    xxh64(&bytes, 1)
}

/// A three-level tree: root, `BUCKETS / GROUP` groups, `BUCKETS` leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerkleTree {
    pub leaves: Vec<u64>,
    pub groups: Vec<u64>,
    pub root: u64,
}

impl MerkleTree {
    /// Builds the tree over `(key, version)` entries (any order).
    pub fn build<'a>(entries: impl IntoIterator<Item = (&'a str, Version)>) -> Self {
        let mut leaves = vec![0u64; BUCKETS];
        for (k, v) in entries {
            leaves[bucket_of(k)] ^= entry_hash(k, v);
        }
        Self::from_leaves(leaves)
    }

    /// Rebuilds the upper levels from leaves received from a peer.
    pub fn from_leaves(leaves: Vec<u64>) -> Self {
        let groups: Vec<u64> = leaves.chunks(GROUP).map(hash_slice).collect();
        let root = hash_slice(&groups);
        Self {
            leaves,
            groups,
            root,
        }
    }

    /// Buckets whose leaves differ, found top-down (equal roots: none).
    pub fn diff(&self, other: &MerkleTree) -> Vec<usize> {
        if self.root == other.root || self.leaves.len() != other.leaves.len() {
            return if self.leaves.len() != other.leaves.len() {
                (0..BUCKETS).collect()
            } else {
                Vec::new()
            };
        }
        let mut out = Vec::new();
        for (g, (a, b)) in self.groups.iter().zip(&other.groups).enumerate() {
            if a == b {
                continue;
            }
            for i in g * GROUP..(g + 1) * GROUP {
                if self.leaves[i] != other.leaves[i] {
                    out.push(i);
                }
            }
        }
        out
    }
}

/// Given both sides' entries of the differing buckets: `(to_send, to_fetch)` — keys
/// where this side is newer or the other lacks the key, and keys where the other side is
/// newer or this side lacks it.
pub fn reconcile(mine: &[(Key, Version)], theirs: &[(Key, Version)]) -> (Vec<Key>, Vec<Key>) {
    let their_map: HashMap<&str, Version> = theirs.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let my_map: HashMap<&str, Version> = mine.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let mut send: Vec<Key> = mine
        .iter()
        .filter(|(k, v)| their_map.get(k.as_str()).is_none_or(|t| v > t))
        .map(|(k, _)| k.clone())
        .collect();
    let mut fetch: Vec<Key> = theirs
        .iter()
        .filter(|(k, v)| my_map.get(k.as_str()).is_none_or(|m| v > m))
        .map(|(k, _)| k.clone())
        .collect();
    send.sort();
    fetch.sort();
    (send, fetch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn v(h: u64) -> Version {
        Version { hlc: h, origin: 1 }
    }

    fn tree(m: &BTreeMap<String, Version>) -> MerkleTree {
        MerkleTree::build(m.iter().map(|(k, v)| (k.as_str(), *v)))
    }

    fn in_buckets(m: &BTreeMap<String, Version>, b: &[usize]) -> Vec<(Key, Version)> {
        m.iter()
            .filter(|(k, _)| b.contains(&bucket_of(k)))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    #[test]
    fn equal_sets_have_equal_roots_in_any_order() {
        let a = MerkleTree::build([("x", v(1)), ("y", v(2))]);
        let b = MerkleTree::build([("y", v(2)), ("x", v(1))]);
        assert_eq!(a, b);
        assert!(a.diff(&b).is_empty());
        let c = MerkleTree::build([("y", v(3)), ("x", v(1))]);
        assert_eq!(a.diff(&c), vec![bucket_of("y")]);
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
        let (send, fetch) = reconcile(&mine, &theirs);
        assert_eq!(send, vec!["a".to_string(), "only-mine".to_string()]);
        assert_eq!(fetch, vec!["b".to_string(), "only-theirs".to_string()]);
    }

    proptest! {
        /// Two replicas that exchange Merkle diffs end equal, and the keys exchanged are
        /// about the keys that differ (never more than the differing buckets hold).
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
            let mut differing = only_a.len() + only_b.len();
            if !keys.is_empty() {
                let mut bumped = std::collections::HashSet::new();
                for (idx, h, side) in bumps {
                    let k = idx.get(&keys).clone();
                    if bumped.insert(k.clone()) { differing += 1; }
                    if side { a.insert(k, v(h)); } else { b.insert(k, v(h)); }
                }
            }
            let (ta, tb) = (tree(&a), tree(&b));
            let buckets = ta.diff(&tb);
            let (send, fetch) = reconcile(&in_buckets(&a, &buckets), &in_buckets(&b, &buckets));
            prop_assert!(send.len() + fetch.len() <= differing, "{} exchanged for {} differing", send.len() + fetch.len(), differing);
            for k in send { let x = a[&k]; b.insert(k, x); }
            for k in fetch { let x = b[&k]; a.insert(k, x); }
            // Newest wins: every key ends at the max version either side had.
            prop_assert_eq!(&a, &b);
            prop_assert!(tree(&a).diff(&tree(&b)).is_empty());
        }
    }
}

//! The consistent-hash ring: which nodes own a key.
//!
//! Pure and deterministic: the same member set gives the same owners on every node.
//! Tokens are `xxh64("<node-id>#<i>")` for `i < VIRTUAL_NODES`; a key hashes with
//! `xxh64(key)` and its owners are the first `replication` distinct nodes met walking
//! clockwise from that point. Membership decides which nodes are in the ring (alive and
//! suspect ones); this module only places keys.
//!
//! A *segment* is the hash range `(previous token, token]` that ends at one token
//! (segment 0 also takes the range past the last token, wrapping). Every key of a segment
//! has the same owners, so anti-entropy keeps its Merkle leaves per segment
//! ([`crate::merkle`]). The owners of each segment are computed once, when the ring is
//! built; [`Ring::owners_of_hash`] looks them up. [`Ring::fingerprint`] names the layout
//! (nodes, replication, virtual nodes): two rings with the same fingerprint have the same
//! segments and owners.

use xxhash_rust::xxh64::{xxh64, Xxh64};

/// Virtual nodes per member. 160 keeps every node's share of keys within a few percent
/// of `1/N` for small clusters while the ring stays small (160 tokens a node).
pub const VIRTUAL_NODES: usize = 160;

/// Position of a key on the ring.
pub fn key_hash(key: &str) -> u64 {
    xxh64(key.as_bytes(), 0)
}

fn token(node: &str, i: usize) -> u64 {
    xxh64(format!("{node}#{i}").as_bytes(), 0)
}

/// An immutable ring over a set of node ids.
#[derive(Debug, Clone, Default)]
pub struct Ring {
    /// Sorted `(token, node index)`.
    tokens: Vec<(u64, u32)>,
    nodes: Vec<String>,
    replication: usize,
    /// Owners (node indexes, ring order) of every segment, `owners_per_segment` each:
    /// segment `i` is the one ending at `tokens[i]`.
    segment_owners: Vec<u32>,
    owners_per_segment: usize,
    fingerprint: u64,
}

impl Ring {
    /// Builds the ring. Node order does not matter; duplicates are ignored.
    pub fn new<I, S>(nodes: I, replication: usize) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut nodes: Vec<String> = nodes.into_iter().map(Into::into).collect();
        nodes.sort();
        nodes.dedup();
        let mut tokens = Vec::with_capacity(nodes.len() * VIRTUAL_NODES);
        for (idx, n) in nodes.iter().enumerate() {
            for i in 0..VIRTUAL_NODES {
                tokens.push((token(n, i), idx as u32));
            }
        }
        tokens.sort_unstable();
        let want = replication.min(nodes.len());
        let mut segment_owners: Vec<u32> = Vec::with_capacity(tokens.len() * want);
        for start in 0..tokens.len() {
            let first = segment_owners.len();
            for i in 0..tokens.len() {
                let idx = tokens[(start + i) % tokens.len()].1;
                if !segment_owners[first..].contains(&idx) {
                    segment_owners.push(idx);
                    if segment_owners.len() - first == want {
                        break;
                    }
                }
            }
        }
        let mut fp = Xxh64::new(0x7269_6e67);
        fp.update(&(VIRTUAL_NODES as u64).to_le_bytes());
        fp.update(&(replication as u64).to_le_bytes());
        for n in &nodes {
            fp.update(&(n.len() as u64).to_le_bytes());
            fp.update(n.as_bytes());
        }
        Self {
            tokens,
            nodes,
            replication,
            segment_owners,
            owners_per_segment: want,
            fingerprint: fp.digest(),
        }
    }

    /// Names this layout: equal for rings of the same nodes, replication and virtual
    /// nodes (and then their segments and owners are equal too).
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Number of segments (one per token; 0 for an empty ring).
    pub fn segments(&self) -> usize {
        self.tokens.len()
    }

    /// The segment holding ring position `hash`; `None` for an empty ring.
    pub fn segment_of_hash(&self, hash: u64) -> Option<usize> {
        if self.tokens.is_empty() {
            return None;
        }
        Some(self.tokens.partition_point(|(t, _)| *t < hash) % self.tokens.len())
    }

    /// The owners of segment `seg`, in ring order (empty when out of range).
    pub fn segment_owners(&self, seg: usize) -> Vec<&str> {
        self.owner_indexes(seg)
            .iter()
            .map(|i| self.nodes[*i as usize].as_str())
            .collect()
    }

    fn owner_indexes(&self, seg: usize) -> &[u32] {
        let w = self.owners_per_segment;
        self.segment_owners
            .get(seg * w..(seg + 1) * w)
            .unwrap_or_default()
    }

    /// The segments whose owners include both `a` and `b`, ascending.
    pub fn shared_segments(&self, a: &str, b: &str) -> Vec<u32> {
        let (Some(ia), Some(ib)) = (self.index_of(a), self.index_of(b)) else {
            return Vec::new();
        };
        (0..self.segments())
            .filter(|s| {
                let o = self.owner_indexes(*s);
                o.contains(&ia) && o.contains(&ib)
            })
            .map(|s| s as u32)
            .collect()
    }

    fn index_of(&self, node: &str) -> Option<u32> {
        self.nodes
            .binary_search_by(|n| n.as_str().cmp(node))
            .ok()
            .map(|i| i as u32)
    }

    /// Owners per key asked for (the configured replication factor).
    pub fn replication(&self) -> usize {
        self.replication
    }

    /// Node ids in the ring, sorted.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// True when `node` is in the ring.
    pub fn contains(&self, node: &str) -> bool {
        self.index_of(node).is_some()
    }

    /// The owners of a ring position, in ring order: at most `replication` distinct nodes
    /// (fewer when the ring has fewer nodes).
    pub fn owners_of_hash(&self, hash: u64) -> Vec<&str> {
        self.segment_of_hash(hash)
            .map_or_else(Vec::new, |seg| self.segment_owners(seg))
    }

    /// The owners of `key`, in ring order.
    pub fn owners(&self, key: &str) -> Vec<&str> {
        self.owners_of_hash(key_hash(key))
    }

    /// Each node's share of the hash space for which it is the first owner, in `[0, 1]`.
    pub fn primary_shares(&self) -> Vec<(&str, f64)> {
        let mut share = vec![0u128; self.nodes.len()];
        if self.tokens.is_empty() {
            return Vec::new();
        }
        for (i, (t, idx)) in self.tokens.iter().enumerate() {
            let prev = if i == 0 {
                self.tokens[self.tokens.len() - 1].0
            } else {
                self.tokens[i - 1].0
            };
            // Range (prev, t] belongs to this token; wrapping arithmetic handles the first.
            share[*idx as usize] += t.wrapping_sub(prev) as u128;
        }
        let total = u64::MAX as f64 + 1.0;
        self.nodes
            .iter()
            .zip(share)
            .map(|(n, s)| (n.as_str(), s as f64 / total))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn five() -> Ring {
        Ring::new((1..=5).map(|i| format!("node-{i}")), 3)
    }

    #[test]
    fn deterministic_regardless_of_input_order() {
        let a = five();
        let b = Ring::new((1..=5).rev().map(|i| format!("node-{i}")), 3);
        for i in 0..1_000 {
            let k = format!("key-{i}");
            assert_eq!(a.owners(&k), b.owners(&k));
        }
    }

    #[test]
    fn owners_are_distinct_and_r_long() {
        let r = five();
        for i in 0..1_000 {
            let o = r.owners(&format!("k{i}"));
            assert_eq!(o.len(), 3);
            let mut d = o.clone();
            d.sort();
            d.dedup();
            assert_eq!(d.len(), 3);
        }
    }

    #[test]
    fn fewer_nodes_than_replication() {
        let r = Ring::new(["a", "b"], 3);
        assert_eq!(r.owners("x").len(), 2);
        let r = Ring::new(Vec::<String>::new(), 3);
        assert!(r.owners("x").is_empty());
    }

    #[test]
    fn balanced_within_25_percent() {
        let r = five();
        let mut count: HashMap<&str, usize> = HashMap::new();
        let n = 100_000;
        for i in 0..n {
            *count.entry(r.owners(&format!("key-{i}"))[0]).or_default() += 1;
        }
        let ideal = n as f64 / 5.0;
        for (node, c) in count {
            let dev = (c as f64 - ideal).abs() / ideal;
            assert!(dev <= 0.25, "{node} holds {c} keys, {dev:.2} off");
        }
    }

    #[test]
    fn removing_a_node_moves_only_its_keys() {
        let full = five();
        let less = Ring::new((1..=4).map(|i| format!("node-{i}")), 3);
        for i in 0..2_000 {
            let k = format!("k{i}");
            let before = full.owners(&k);
            let after = less.owners(&k);
            // Every surviving owner stays an owner.
            for o in before.iter().filter(|o| **o != "node-5") {
                assert!(after.contains(o), "{k}: {o} lost ownership");
            }
        }
    }

    /// The owners walk of the original ring: the first `replication` distinct nodes
    /// clockwise from `hash`.
    fn walk(r: &Ring, hash: u64) -> Vec<&str> {
        let want = r.replication.min(r.nodes.len());
        let mut out: Vec<&str> = Vec::new();
        let start = r.tokens.partition_point(|(t, _)| *t < hash);
        for i in 0..r.tokens.len() {
            let n = r.nodes[r.tokens[(start + i) % r.tokens.len()].1 as usize].as_str();
            if out.len() < want && !out.contains(&n) {
                out.push(n);
            }
        }
        out
    }

    #[test]
    fn segments_have_one_owner_set_and_match_the_walk() {
        let r = five();
        assert_eq!(r.segments(), 5 * VIRTUAL_NODES);
        for i in 0..5_000u64 {
            let h = key_hash(&format!("k{i}"));
            let seg = r.segment_of_hash(h).unwrap();
            assert_eq!(r.owners_of_hash(h), walk(&r, h));
            assert_eq!(r.segment_owners(seg), walk(&r, h));
        }
        // Both ends of the hash space, and exact token positions.
        for h in [0, u64::MAX, r.tokens[0].0, r.tokens[7].0, r.tokens[7].0 + 1] {
            assert_eq!(r.owners_of_hash(h), walk(&r, h), "{h}");
        }
        assert_eq!(
            r.segment_of_hash(u64::MAX),
            Some(0),
            "past the last token wraps"
        );
        assert_eq!(Ring::default().segment_of_hash(1), None);
    }

    #[test]
    fn fingerprint_names_the_layout() {
        let a = five();
        let b = Ring::new((1..=5).rev().map(|i| format!("node-{i}")), 3);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(
            a.fingerprint(),
            Ring::new((1..=5).map(|i| format!("node-{i}")), 2).fingerprint()
        );
        assert_ne!(
            a.fingerprint(),
            Ring::new((1..=4).map(|i| format!("node-{i}")), 3).fingerprint()
        );
        // Node ids are length-prefixed: ["ab", "c"] is not ["a", "bc"].
        assert_ne!(
            Ring::new(["ab", "c"], 2).fingerprint(),
            Ring::new(["a", "bc"], 2).fingerprint()
        );
    }

    #[test]
    fn shared_segments_are_those_owned_by_both() {
        let r = five();
        let shared = r.shared_segments("node-1", "node-2");
        assert!(!shared.is_empty());
        for s in 0..r.segments() {
            let o = r.segment_owners(s);
            let both = o.contains(&"node-1") && o.contains(&"node-2");
            assert_eq!(
                both,
                shared.binary_search(&(s as u32)).is_ok(),
                "segment {s}"
            );
        }
        assert!(r.shared_segments("node-1", "stranger").is_empty());
        // With three nodes and RF 3, every segment is shared by every pair.
        let three = Ring::new(["a", "b", "c"], 3);
        assert_eq!(three.shared_segments("a", "c").len(), three.segments());
    }

    #[test]
    fn shares_sum_to_one() {
        let total: f64 = five().primary_shares().iter().map(|(_, s)| s).sum();
        assert!((total - 1.0).abs() < 1e-9);
    }
}

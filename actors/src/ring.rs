//! The consistent-hash ring: which nodes own a key.
//!
//! Pure and deterministic: the same member set gives the same owners on every node.
//! Tokens are `xxh64("<node-id>#<i>")` for `i < VIRTUAL_NODES`; a key hashes with
//! `xxh64(key)` and its owners are the first `replication` distinct nodes met walking
//! clockwise from that point. Membership decides which nodes are in the ring (alive and
//! suspect ones); this module only places keys.

use xxhash_rust::xxh64::xxh64;

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
        Self {
            tokens,
            nodes,
            replication,
        }
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
        self.nodes
            .binary_search_by(|n| n.as_str().cmp(node))
            .is_ok()
    }

    /// The owners of a ring position, in ring order: at most `replication` distinct nodes
    /// (fewer when the ring has fewer nodes).
    pub fn owners_of_hash(&self, hash: u64) -> Vec<&str> {
        let want = self.replication.min(self.nodes.len());
        let mut out: Vec<&str> = Vec::with_capacity(want);
        if want == 0 {
            return out;
        }
        let start = self.tokens.partition_point(|(t, _)| *t < hash);
        for i in 0..self.tokens.len() {
            let (_, idx) = self.tokens[(start + i) % self.tokens.len()];
            let n = self.nodes[idx as usize].as_str();
            if !out.contains(&n) {
                out.push(n);
                if out.len() == want {
                    break;
                }
            }
        }
        out
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

    #[test]
    fn shares_sum_to_one() {
        let total: f64 = five().primary_shares().iter().map(|(_, s)| s).sum();
        assert!((total - 1.0).abs() < 1e-9);
    }
}

//! Rebalance planning: when the ring changes, which local keys go where, and which
//! local copies may be released once the new owners acknowledged them.
//!
//! Pure. Rules, for each key this node holds, with `old` and `new` owner lists:
//! - unchanged owners: nothing moves (a steady ring moves nothing);
//! - this node stays an owner: it sends the key to the owners that are new, but only if
//!   it is the first of the old owners that stays an owner (one sender per key, not R);
//! - this node is no longer an owner: it sends the key to every new owner (they answer
//!   "already current" when they hold it) and releases its copy after all of them
//!   acknowledged.

use crate::ring::Ring;
use crate::types::{Key, Version};

/// One key to move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub key: Key,
    pub version: Version,
    pub to: Vec<String>,
    /// Release the local copy once every target acknowledged.
    pub release: bool,
}

/// Plans the moves of `keys` held by `me` from the `old` ring to the `new` one.
pub fn plan(me: &str, keys: &[(Key, Version)], old: &Ring, new: &Ring) -> Vec<Move> {
    let mut out = Vec::new();
    for (key, version) in keys {
        let o = old.owners(key);
        let n = new.owners(key);
        if o == n {
            continue;
        }
        if !n.contains(&me) {
            let to: Vec<String> = n.iter().map(|s| (*s).to_owned()).collect();
            if !to.is_empty() {
                out.push(Move {
                    key: key.clone(),
                    version: *version,
                    to,
                    release: true,
                });
            }
            continue;
        }
        let sender = o.iter().find(|x| n.contains(x)).copied().unwrap_or(me);
        if sender != me {
            continue;
        }
        let to: Vec<String> = n
            .iter()
            .filter(|x| !o.contains(x) && **x != me)
            .map(|s| (*s).to_owned())
            .collect();
        if !to.is_empty() {
            out.push(Move {
                key: key.clone(),
                version: *version,
                to,
                release: false,
            });
        }
    }
    out
}

/// Copies `me` holds but does not own under `ring` — stranded by a hint replayed to a
/// former owner, a write from a coordinator with an older view, or a release that did
/// not happen: each goes to its owners and is released once they all hold it. Keys
/// whose owners are not all `live` wait for a later sweep. Nothing is planned when `me`
/// is not in the ring (a leaving node hands everything off through its drain).
pub fn stranded(
    me: &str,
    keys: &[(Key, Version)],
    ring: &Ring,
    live: impl Fn(&str) -> bool,
) -> Vec<Move> {
    if !ring.contains(me) {
        return Vec::new();
    }
    keys.iter()
        .filter_map(|(key, version)| {
            let owners = ring.owners(key);
            (!owners.contains(&me) && owners.iter().all(|o| live(o))).then(|| Move {
                key: key.clone(),
                version: *version,
                to: owners.iter().map(|s| (*s).to_owned()).collect(),
                release: true,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn stranded_copies_go_to_their_live_owners_and_are_released() {
        let r = ring(5);
        let ks = keys(300);
        let moves = stranded("node-1", &ks, &r, |_| true);
        let foreign = ks
            .iter()
            .filter(|(k, _)| !r.owners(k).contains(&"node-1"))
            .count();
        assert_eq!(moves.len(), foreign);
        assert!(foreign > 0);
        for m in &moves {
            assert!(m.release);
            assert_eq!(m.to, r.owners(&m.key));
            assert!(!m.to.contains(&"node-1".to_string()));
        }
        // Owners that are not all live: the key waits.
        let waiting = stranded("node-1", &ks, &r, |o| o != "node-2");
        assert!(waiting
            .iter()
            .all(|m| !m.to.contains(&"node-2".to_string())));
        assert!(waiting.len() < moves.len());
        // A node outside the ring (leaving) plans nothing here.
        assert!(stranded("node-9", &ks, &r, |_| true).is_empty());
    }

    fn ring(n: usize) -> Ring {
        Ring::new((1..=n).map(|i| format!("node-{i}")), 3)
    }

    fn keys(n: usize) -> Vec<(Key, Version)> {
        (0..n)
            .map(|i| {
                (
                    format!("k{i}"),
                    Version {
                        hlc: i as u64,
                        origin: 1,
                    },
                )
            })
            .collect()
    }

    /// Every node holds the keys it owns under `r`.
    fn holdings(r: &Ring, ks: &[(Key, Version)]) -> HashMap<String, Vec<(Key, Version)>> {
        let mut h: HashMap<String, Vec<(Key, Version)>> = HashMap::new();
        for kv in ks {
            for o in r.owners(&kv.0) {
                h.entry(o.to_owned()).or_default().push(kv.clone());
            }
        }
        h
    }

    #[test]
    fn steady_ring_moves_nothing() {
        let r = ring(5);
        for (node, ks) in holdings(&r, &keys(1_000)) {
            assert!(plan(&node, &ks, &r, &r).is_empty());
        }
    }

    #[test]
    fn join_sends_each_key_once_to_the_new_node_and_about_half_gain_it() {
        let (old, new) = (ring(5), ring(6));
        let ks = keys(6_000);
        let mut received: HashMap<Key, usize> = HashMap::new();
        for (node, held) in holdings(&old, &ks) {
            for m in plan(&node, &held, &old, &new) {
                if m.release {
                    // The owner that lost the key to node-6 hands it to every new owner.
                    assert!(m.to.contains(&"node-6".to_string()));
                    continue;
                }
                for t in &m.to {
                    assert_eq!(t, "node-6", "only the joiner is a new owner");
                }
                *received.entry(m.key.clone()).or_default() += 1;
            }
        }
        for (k, _) in &ks {
            let gains = new.owners(k).contains(&"node-6");
            assert_eq!(
                received.get(k).copied().unwrap_or(0),
                usize::from(gains),
                "{k}"
            );
        }
        // The joiner becomes an owner of about 3/6 of the keys (it holds R copies' worth).
        let share = received.values().sum::<usize>() as f64 / ks.len() as f64;
        assert!((0.35..0.65).contains(&share), "{share}");
    }

    #[test]
    fn leave_hands_everything_off_and_releases() {
        let old = ring(5);
        let new = Ring::new((1..=4).map(|i| format!("node-{i}")), 3);
        let ks = keys(2_000);
        let held = &holdings(&old, &ks)["node-5"];
        let moves = plan("node-5", held, &old, &new);
        assert_eq!(moves.len(), held.len());
        for m in &moves {
            assert!(m.release);
            assert_eq!(
                m.to,
                new.owners(&m.key)
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn survivors_of_a_death_refill_the_new_third_owner() {
        let old = ring(5);
        let new = Ring::new(["node-1", "node-2", "node-3", "node-4"], 3);
        let ks = keys(2_000);
        let mut sent = 0;
        for (node, held) in holdings(&old, &ks)
            .into_iter()
            .filter(|(n, _)| n != "node-5")
        {
            for m in plan(&node, &held, &old, &new) {
                assert!(!m.release);
                sent += 1;
                let o = old.owners(&m.key);
                assert!(o.contains(&"node-5"), "only keys node-5 owned move");
            }
        }
        let lost: usize = ks
            .iter()
            .filter(|(k, _)| old.owners(k).contains(&"node-5"))
            .count();
        assert_eq!(sent, lost, "one sender per key");
    }
}

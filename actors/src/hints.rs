//! Hint bookkeeping for hinted handoff: replica writes (and deletes) that failed, queued
//! per target peer, bounded in count per peer and in total bytes, kept until their TTL.
//!
//! Pure: every call takes `now_ms`. The [`crate::hint_queue`] actor owns one and does the
//! replay I/O. Invariants: a peer's hints leave in the order they were queued; total
//! bytes never exceed the byte cap and no peer holds more than the count cap after an
//! `enqueue` (the oldest hints are dropped and counted); a hint keeps its original
//! version, so a late replay can never overwrite a newer value.

use crate::proto::KeyedWrite;
use std::collections::{HashMap, VecDeque};

/// Caps and TTL.
#[derive(Debug, Clone, Copy)]
pub struct HintLimits {
    pub max_per_peer: usize,
    pub max_bytes: u64,
    pub ttl_ms: u64,
}

/// One queued write.
#[derive(Debug, Clone, PartialEq)]
pub struct Hint {
    pub seq: u64,
    pub write: KeyedWrite,
    pub queued_at_ms: u64,
    pub bytes: u64,
}

/// Counters, exported as metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HintStats {
    pub queued: u64,
    pub replayed: u64,
    pub expired: u64,
    pub dropped: u64,
}

/// Every peer's queue.
#[derive(Debug)]
pub struct HintQueue {
    limits: HintLimits,
    peers: HashMap<String, VecDeque<Hint>>,
    bytes: u64,
    next_seq: u64,
    stats: HintStats,
}

fn hint_bytes(w: &KeyedWrite) -> u64 {
    // Key, value and a fixed allowance for the version, expiry and queue entry.
    (w.key.len() + w.write.value.as_ref().map_or(0, |v| v.len()) + 64) as u64
}

impl HintQueue {
    pub fn new(limits: HintLimits) -> Self {
        Self {
            limits,
            peers: HashMap::new(),
            bytes: 0,
            next_seq: 1,
            stats: HintStats::default(),
        }
    }

    pub fn stats(&self) -> HintStats {
        self.stats
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Hints held, all peers.
    pub fn len(&self) -> usize {
        self.peers.values().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Peers with hints queued.
    pub fn peers(&self) -> Vec<String> {
        let mut p: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        p.sort();
        p
    }

    /// `(peer, hints queued)` of every peer with hints.
    pub fn backlog(&self) -> impl Iterator<Item = (&str, u64)> {
        self.peers
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(p, q)| (p.as_str(), q.len() as u64))
    }

    /// Hints queued for `peer`.
    pub fn len_for(&self, peer: &str) -> usize {
        self.peers.get(peer).map_or(0, VecDeque::len)
    }

    /// Queues a write for `peer`, dropping the oldest hints past the caps.
    pub fn enqueue(&mut self, peer: &str, write: KeyedWrite, now_ms: u64) {
        let bytes = hint_bytes(&write);
        if bytes > self.limits.max_bytes {
            self.stats.dropped += 1;
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.stats.queued += 1;
        self.bytes += bytes;
        let q = self.peers.entry(peer.to_owned()).or_default();
        q.push_back(Hint {
            seq,
            write,
            queued_at_ms: now_ms,
            bytes,
        });
        while q.len() > self.limits.max_per_peer {
            if let Some(h) = q.pop_front() {
                self.bytes -= h.bytes;
                self.stats.dropped += 1;
            }
        }
        while self.bytes > self.limits.max_bytes {
            // Drop the oldest hint of all peers.
            let oldest = self
                .peers
                .iter()
                .filter_map(|(p, q)| q.front().map(|h| (h.seq, p.clone())))
                .min();
            let Some((_, p)) = oldest else { break };
            if let Some(h) = self.peers.get_mut(&p).and_then(VecDeque::pop_front) {
                self.bytes -= h.bytes;
                self.stats.dropped += 1;
            }
        }
    }

    /// Drops hints older than the TTL; returns how many.
    pub fn expire(&mut self, now_ms: u64) -> u64 {
        let ttl = self.limits.ttl_ms;
        let mut n = 0;
        for q in self.peers.values_mut() {
            while q
                .front()
                .is_some_and(|h| now_ms.saturating_sub(h.queued_at_ms) >= ttl)
            {
                if let Some(h) = q.pop_front() {
                    self.bytes -= h.bytes;
                    n += 1;
                }
            }
        }
        self.peers.retain(|_, q| !q.is_empty());
        self.stats.expired += n;
        n
    }

    /// The oldest `max` hints for `peer`, at most `max_bytes` of them (at least one),
    /// not removed: see [`HintQueue::delivered`].
    pub fn batch(&self, peer: &str, max: usize, max_bytes: u64) -> Vec<Hint> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for h in self.peers.get(peer).into_iter().flatten().take(max) {
            if !out.is_empty() && bytes + h.bytes > max_bytes {
                break;
            }
            bytes += h.bytes;
            out.push(h.clone());
        }
        out
    }

    /// Removes `peer`'s hints up to and including `last_seq` (a delivered batch; hints
    /// dropped or expired meanwhile are simply gone).
    pub fn delivered(&mut self, peer: &str, last_seq: u64) -> u64 {
        let mut n = 0;
        if let Some(q) = self.peers.get_mut(peer) {
            while q.front().is_some_and(|h| h.seq <= last_seq) {
                if let Some(h) = q.pop_front() {
                    self.bytes -= h.bytes;
                    n += 1;
                }
            }
            if q.is_empty() {
                self.peers.remove(peer);
            }
        }
        self.stats.replayed += n;
        n
    }

    /// Removes and returns every hint (drain handoff), as `(peer, write)`.
    pub fn take_all(&mut self) -> Vec<(String, KeyedWrite)> {
        let mut out = Vec::new();
        for (p, q) in self.peers.drain() {
            out.extend(q.into_iter().map(|h| (p.clone(), h.write)));
        }
        self.bytes = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Version, Write};
    use bytes::Bytes;

    fn kw(key: &str, hlc: u64, len: usize) -> KeyedWrite {
        KeyedWrite {
            key: key.into(),
            write: Write {
                version: Version { hlc, origin: 1 },
                value: Some(Bytes::from(vec![7u8; len])),
                expires_at_ms: None,
            },
        }
    }

    fn limits(per_peer: usize, bytes: u64) -> HintLimits {
        HintLimits {
            max_per_peer: per_peer,
            max_bytes: bytes,
            ttl_ms: 1_000,
        }
    }

    #[test]
    fn fifo_per_peer_and_delivery_removes_batch() {
        let mut q = HintQueue::new(limits(100, 1 << 20));
        for i in 0..5 {
            q.enqueue("a", kw(&format!("k{i}"), i, 1), 0);
        }
        q.enqueue("b", kw("x", 9, 1), 0);
        let batch = q.batch("a", 3, u64::MAX);
        assert_eq!(
            batch
                .iter()
                .map(|h| h.write.key.as_str())
                .collect::<Vec<_>>(),
            ["k0", "k1", "k2"]
        );
        assert_eq!(q.delivered("a", batch.last().unwrap().seq), 3);
        assert_eq!(q.len_for("a"), 2);
        assert_eq!(q.batch("a", 10, u64::MAX)[0].write.key, "k3");
        assert_eq!(q.stats().replayed, 3);
        assert_eq!(q.peers(), vec!["a".to_string(), "b".to_string()]);
    }

    #[test]
    fn count_cap_drops_oldest() {
        let mut q = HintQueue::new(limits(3, 1 << 20));
        for i in 0..5 {
            q.enqueue("a", kw(&format!("k{i}"), i, 1), 0);
        }
        assert_eq!(q.len_for("a"), 3);
        assert_eq!(q.batch("a", 1, u64::MAX)[0].write.key, "k2");
        assert_eq!(q.stats().dropped, 2);
        assert_eq!(q.stats().queued, 5);
    }

    #[test]
    fn byte_cap_bounds_memory_across_peers() {
        let mut q = HintQueue::new(limits(1_000, 1_000));
        for i in 0..50 {
            q.enqueue(
                if i % 2 == 0 { "a" } else { "b" },
                kw(&format!("k{i}"), i, 100),
                0,
            );
            assert!(q.bytes() <= 1_000);
        }
        // Each hint is 100 + 3-ish + 64 bytes: five fit.
        assert!(q.len() <= 6 && q.len() >= 5, "{}", q.len());
        assert_eq!(q.stats().dropped as usize, 50 - q.len());
        // The newest survive.
        assert!(q
            .batch("b", 10, u64::MAX)
            .iter()
            .any(|h| h.write.key == "k49"));
    }

    #[test]
    fn batches_respect_the_byte_cap() {
        let mut q = HintQueue::new(limits(100, 1 << 20));
        for i in 0..5 {
            q.enqueue("a", kw(&format!("k{i}"), i, 1_000), 0);
        }
        assert_eq!(q.batch("a", 10, 2_500).len(), 2);
        assert_eq!(q.batch("a", 10, 10).len(), 1, "at least one hint");
    }

    #[test]
    fn expire_after_ttl() {
        let mut q = HintQueue::new(limits(100, 1 << 20));
        q.enqueue("a", kw("old", 1, 1), 0);
        q.enqueue("a", kw("new", 2, 1), 600);
        assert_eq!(q.expire(999), 0);
        assert_eq!(q.expire(1_000), 1);
        assert_eq!(q.batch("a", 10, u64::MAX)[0].write.key, "new");
        assert_eq!(q.expire(1_600), 1);
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
        assert_eq!(q.stats().expired, 2);
    }

    #[test]
    fn delivered_tolerates_drops_in_between() {
        let mut q = HintQueue::new(limits(2, 1 << 20));
        q.enqueue("a", kw("k0", 0, 1), 0);
        q.enqueue("a", kw("k1", 1, 1), 0);
        let batch = q.batch("a", 2, u64::MAX);
        q.enqueue("a", kw("k2", 2, 1), 0); // drops k0 while the batch is in flight
        q.delivered("a", batch.last().unwrap().seq);
        assert_eq!(
            q.batch("a", 10, u64::MAX)
                .iter()
                .map(|h| h.write.key.clone())
                .collect::<Vec<_>>(),
            ["k2"]
        );
    }

    #[test]
    fn take_all_empties() {
        let mut q = HintQueue::new(limits(10, 1 << 20));
        q.enqueue("a", kw("k", 1, 1), 0);
        q.enqueue("b", kw("k", 1, 1), 0);
        assert_eq!(q.take_all().len(), 2);
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
    }
}

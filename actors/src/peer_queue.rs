//! [`PeerQueue`]: the bounded queue of calls waiting for one peer, and the rule that cuts
//! it into batches. Pure: no I/O, no clock of its own (every call takes `now`). The
//! [`crate::peer::PeerActor`] owns one.
//!
//! Invariants: the queue never holds more than `queue_items` entries nor more than
//! `queue_bytes` bytes (a push past either is refused and the entry handed back); a batch
//! holds at most `batch_items` entries and at most `batch_bytes` bytes, except that a
//! single entry larger than `batch_bytes` travels alone; entries leave in the order they
//! came; an entry whose deadline has passed is never put in a batch.

use crate::config::PeerLimits;
use std::collections::VecDeque;
use tokio::time::Instant;

/// One queued entry with its weight (key and value bytes) and its deadline.
#[derive(Debug)]
struct Queued<T> {
    item: T,
    weight: usize,
    deadline: Instant,
}

/// A batch cut from the queue, plus the entries that expired while waiting.
#[derive(Debug)]
pub struct Cut<T> {
    pub batch: Vec<T>,
    pub bytes: usize,
    pub expired: Vec<T>,
}

/// The bounded queue of one peer.
#[derive(Debug)]
pub struct PeerQueue<T> {
    limits: PeerLimits,
    entries: VecDeque<Queued<T>>,
    bytes: usize,
}

impl<T> PeerQueue<T> {
    pub fn new(limits: PeerLimits) -> Self {
        Self {
            limits,
            entries: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Entries queued.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes queued.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// True when a whole batch is waiting (the batch item or byte bound is reached): the
    /// rule for sending another request while one is already in flight, so that extra
    /// pipeline slots carry full batches instead of splitting the queue into small ones.
    pub fn has_full_batch(&self) -> bool {
        self.entries.len() >= self.limits.batch_items || self.bytes >= self.limits.batch_bytes
    }

    /// Queues `item`; `Err(item)` when the queue is full in items or bytes. An entry
    /// heavier than the whole byte bound is taken only into an empty queue, so a
    /// maximal value can still reach its peer.
    pub fn push(&mut self, item: T, weight: usize, deadline: Instant) -> Result<(), T> {
        let full_items = self.entries.len() >= self.limits.queue_items;
        let full_bytes = !self.entries.is_empty() && self.bytes + weight > self.limits.queue_bytes;
        if full_items || full_bytes {
            return Err(item);
        }
        self.bytes += weight;
        self.entries.push_back(Queued {
            item,
            weight,
            deadline,
        });
        Ok(())
    }

    /// Cuts the next batch from the front of the queue. Expired entries met on the way
    /// are returned apart; the batch is empty only when the queue is.
    pub fn cut(&mut self, now: Instant) -> Cut<T> {
        let mut cut = Cut {
            batch: Vec::new(),
            bytes: 0,
            expired: Vec::new(),
        };
        while let Some(front) = self.entries.front() {
            if front.deadline > now && !cut.batch.is_empty() {
                let over_items = cut.batch.len() >= self.limits.batch_items;
                let over_bytes = cut.bytes + front.weight > self.limits.batch_bytes;
                if over_items || over_bytes {
                    break;
                }
            }
            let Some(q) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= q.weight;
            if q.deadline <= now {
                cut.expired.push(q.item);
            } else {
                cut.bytes += q.weight;
                cut.batch.push(q.item);
            }
        }
        cut
    }

    /// Removes every entry (the actor is stopping).
    pub fn take_all(&mut self) -> Vec<T> {
        self.bytes = 0;
        self.entries.drain(..).map(|q| q.item).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> PeerLimits {
        PeerLimits {
            queue_items: 5,
            queue_bytes: 100,
            batch_items: 2,
            batch_bytes: 30,
            pipeline: 1,
        }
    }

    #[test]
    fn bounds_items_and_bytes() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        let mut q = PeerQueue::new(limits());
        for i in 0..5 {
            q.push(i, 10, later).unwrap();
        }
        assert_eq!(q.push(5, 1, later), Err(5), "item bound");
        let mut q = PeerQueue::new(limits());
        q.push(0, 90, later).unwrap();
        assert_eq!(q.push(1, 11, later), Err(1), "byte bound");
        q.push(2, 10, later).unwrap();
        assert_eq!(q.bytes(), 100);
        // A single entry heavier than the whole bound is taken into an empty queue.
        let mut q = PeerQueue::new(limits());
        q.push(9, 500, later).unwrap();
        assert_eq!(q.push(10, 1, later), Err(10));
    }

    #[test]
    fn batches_respect_items_bytes_and_order() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        let mut q = PeerQueue::new(limits());
        for (i, w) in [(0, 10), (1, 10), (2, 25), (3, 40), (4, 1)] {
            q.push(i, w, later).unwrap();
        }
        assert_eq!(q.cut(now).batch, vec![0, 1], "item bound");
        assert_eq!(q.cut(now).batch, vec![2], "byte bound: 25 + 40 > 30");
        assert_eq!(q.cut(now).batch, vec![3], "a heavy entry travels alone");
        let last = q.cut(now);
        assert_eq!((last.batch, last.bytes), (vec![4], 1));
        assert!(q.cut(now).batch.is_empty());
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn a_full_batch_is_recognised() {
        let later = Instant::now() + Duration::from_secs(1);
        let mut q = PeerQueue::new(limits());
        assert!(!q.has_full_batch());
        q.push(0, 1, later).unwrap();
        assert!(!q.has_full_batch());
        q.push(1, 1, later).unwrap();
        assert!(q.has_full_batch(), "item bound");
        let mut q = PeerQueue::new(limits());
        q.push(0, 30, later).unwrap();
        assert!(q.has_full_batch(), "byte bound");
    }

    #[test]
    fn expired_entries_are_never_sent() {
        let now = Instant::now();
        let mut q = PeerQueue::new(limits());
        q.push(0, 10, now).unwrap();
        q.push(1, 10, now + Duration::from_secs(1)).unwrap();
        q.push(2, 10, now).unwrap();
        let cut = q.cut(now);
        assert_eq!(cut.batch, vec![1]);
        assert_eq!(cut.expired, vec![0, 2]);
        assert!(q.is_empty());
        assert_eq!(q.bytes(), 0);
    }
}

//! Hybrid logical clock: the source of every write version on this node.
//!
//! Owns only the last issued stamp. A stamp is `(wall_ms << 16) | logical`; it is strictly
//! increasing on this node, and [`Hlc::observe`] merges every stamp seen in a message from a
//! peer so causally later writes always get larger stamps, whatever the wall-clock skew.
//! Across a restart the clock starts from the wall clock and is pushed forward by the first
//! stamps it observes from peers (see docs/architecture.md, "Versions").

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::Notify;

/// Bits of the stamp that hold the logical counter.
pub const LOGICAL_BITS: u32 = 16;

/// How far ahead of this node's wall clock a peer's stamp may be. A stamp further ahead
/// is refused: merging it would push every later version towards the end of the clock.
pub const MAX_DRIFT_MS: u64 = 60_000;

/// Packs a wall-clock millisecond and a logical counter into one stamp.
pub fn pack(wall_ms: u64, logical: u64) -> u64 {
    (wall_ms << LOGICAL_BITS) | (logical & ((1 << LOGICAL_BITS) - 1))
}

/// The wall-clock part of a stamp, in Unix milliseconds.
pub fn wall_ms(stamp: u64) -> u64 {
    stamp >> LOGICAL_BITS
}

/// The pure step: the next stamp after `last`, given the current wall clock.
/// Always `> last`; equals `pack(now_ms, 0)` when the wall clock is ahead.
pub fn next_stamp(last: u64, now_ms: u64) -> u64 {
    let physical = pack(now_ms, 0);
    if physical > last {
        physical
    } else {
        // Logical overflow carries into the millisecond part, which keeps it monotonic.
        last.saturating_add(1)
    }
}

/// A lock-free shared clock. It is a clock, not cache state: handlers that coordinate a
/// write and the dist listener that receives one both touch it.
#[derive(Debug, Default)]
pub struct Hlc {
    last: AtomicU64,
    /// Set once a peer's stamp was merged (or nothing needs merging: no peers, or the
    /// maximum drift has passed since start); client writes wait for it.
    synced: AtomicBool,
    synced_notify: Notify,
}

impl Hlc {
    pub fn new() -> Self {
        Self::default()
    }

    /// Issues a new stamp, strictly greater than every stamp issued or observed before.
    pub fn now(&self, now_ms: u64) -> u64 {
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = next_stamp(last, now_ms);
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(actual) => last = actual,
            }
        }
    }

    /// Merges a stamp received from a peer; refuses (returns `false`) one whose wall
    /// clock is more than [`MAX_DRIFT_MS`] ahead of `now_ms`.
    pub fn observe(&self, remote: u64, now_ms: u64) -> bool {
        if wall_ms(remote) > now_ms.saturating_add(MAX_DRIFT_MS) {
            return false;
        }
        self.last.fetch_max(remote, Ordering::AcqRel);
        self.mark_synced();
        true
    }

    /// Records that this clock no longer needs a peer's stamp before it issues versions.
    pub fn mark_synced(&self) {
        if !self.synced.swap(true, Ordering::AcqRel) {
            self.synced_notify.notify_waiters();
        }
    }

    /// Whether a peer's stamp was merged since start (or none needs to be).
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Returns once [`Self::is_synced`] holds.
    pub async fn wait_synced(&self) {
        loop {
            let notified = self.synced_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_synced() {
                return;
            }
            notified.await;
        }
    }

    /// The last stamp issued or observed.
    pub fn last(&self) -> u64 {
        self.last.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_when_wall_clock_goes_backwards() {
        let c = Hlc::new();
        let a = c.now(1_000);
        let b = c.now(900);
        let d = c.now(900);
        assert!(a < b && b < d);
        assert_eq!(wall_ms(d), 1_000);
    }

    #[test]
    fn observe_pushes_forward() {
        let c = Hlc::new();
        c.now(1_000);
        assert!(c.observe(pack(5_000, 7), 4_000));
        let n = c.now(1_001);
        assert!(n > pack(5_000, 7));
        assert_eq!(wall_ms(n), 5_000);
    }

    #[test]
    fn far_future_stamps_are_refused() {
        let c = Hlc::new();
        c.now(1_000);
        assert!(!c.observe(pack(1_000 + MAX_DRIFT_MS + 1, 0), 1_000));
        assert!(!c.observe(u64::MAX, 1_000));
        assert_eq!(wall_ms(c.now(1_000)), 1_000);
        assert_eq!(next_stamp(u64::MAX, 0), u64::MAX);
    }

    #[test]
    fn wall_clock_ahead_resets_logical() {
        let c = Hlc::new();
        c.now(1_000);
        c.now(1_000);
        assert_eq!(c.now(2_000), pack(2_000, 0));
    }

    #[test]
    fn monotonic_under_skewed_inputs() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let c = Hlc::new();
        let mut prev = 0;
        for _ in 0..10_000 {
            if rng.random_bool(0.2) {
                c.observe(
                    pack(rng.random_range(0..10_000), rng.random_range(0..100)),
                    10_000,
                );
            }
            let s = c.now(rng.random_range(0..10_000));
            assert!(s > prev);
            prev = s;
        }
    }
}

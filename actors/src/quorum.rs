//! Quorum counting: feed each replica's answer, ask whether the request is done, failed
//! or needs more. Pure; the coordinator in [`crate::node`] owns one per request.

use serde::{Deserialize, Serialize};

/// Consistency level of a read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    One,
    Quorum,
    All,
}

impl Consistency {
    /// Parses `one`, `quorum`, `all` (any case).
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "one" => Some(Self::One),
            "quorum" => Some(Self::Quorum),
            "all" => Some(Self::All),
            _ => None,
        }
    }

    /// Acks required when a key has `replicas` owners that count: 1, ⌊replicas/2⌋+1, or
    /// all of them.
    pub fn required(self, replicas: usize) -> usize {
        match self {
            Consistency::One => 1,
            Consistency::Quorum => replicas / 2 + 1,
            Consistency::All => replicas.max(1),
        }
    }
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Done,
    Failed,
    Pending,
}

/// Counts acks and failures of one request.
#[derive(Debug, Clone)]
pub struct QuorumTracker {
    needed: usize,
    outstanding: usize,
    acks: usize,
}

impl QuorumTracker {
    /// `needed` acks out of `asked` replicas.
    pub fn new(needed: usize, asked: usize) -> Self {
        Self {
            needed,
            outstanding: asked,
            acks: 0,
        }
    }

    pub fn needed(&self) -> usize {
        self.needed
    }

    pub fn acks(&self) -> usize {
        self.acks
    }

    /// Current state without new input.
    pub fn progress(&self) -> Progress {
        if self.acks >= self.needed {
            Progress::Done
        } else if self.acks + self.outstanding < self.needed {
            Progress::Failed
        } else {
            Progress::Pending
        }
    }

    /// One replica acknowledged.
    pub fn ack(&mut self) -> Progress {
        self.outstanding = self.outstanding.saturating_sub(1);
        self.acks += 1;
        self.progress()
    }

    /// One replica failed.
    pub fn fail(&mut self) -> Progress {
        self.outstanding = self.outstanding.saturating_sub(1);
        self.progress()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_acks() {
        assert_eq!(Consistency::Quorum.required(3), 2);
        assert_eq!(Consistency::Quorum.required(5), 3);
        assert_eq!(Consistency::Quorum.required(1), 1);
        assert_eq!(Consistency::All.required(3), 3);
        assert_eq!(Consistency::One.required(3), 1);
        assert_eq!(Consistency::parse("QUORUM"), Some(Consistency::Quorum));
        assert_eq!(Consistency::parse("most"), None);
    }

    #[test]
    fn done_as_soon_as_enough_acks() {
        let mut t = QuorumTracker::new(2, 3);
        assert_eq!(t.progress(), Progress::Pending);
        assert_eq!(t.fail(), Progress::Pending);
        assert_eq!(t.ack(), Progress::Pending);
        assert_eq!(t.ack(), Progress::Done);
    }

    #[test]
    fn fails_as_soon_as_impossible() {
        let mut t = QuorumTracker::new(2, 3);
        assert_eq!(t.fail(), Progress::Pending);
        assert_eq!(t.fail(), Progress::Failed);
        // Too few replicas to ask at all.
        assert_eq!(QuorumTracker::new(2, 1).progress(), Progress::Failed);
    }
}

//! The SWIM membership protocol as a pure state machine.
//!
//! Owns the member list (states, incarnations, addresses), the probe schedule and the
//! protocol statistics. It does no I/O and reads no clock: the actor shell
//! ([`crate::membership`]) feeds it heartbeat ticks, replies, failures and fired timers,
//! and performs the [`Action`]s it returns (send a ping, ask relays, schedule a timer).
//! Timers are data carrying the probe sequence number or incarnation they belong to, so a
//! stale timer is ignored instead of cancelled.
//!
//! Dissemination: every ping, ack and ping-req carries the sender's full member list
//! (push) and every reply carries the receiver's (pull), merged by the precedence rules of
//! [`overrides`]. This sizes messages by cluster size (a few KiB for 100 nodes) and needs
//! no retransmit bookkeeping; merging identical lists changes nothing, so a healthy
//! cluster has no membership churn.
//!
//! Invariants:
//! - Only a node raises its own incarnation, and only to refute a suspicion, a death or a
//!   leave that names its current incarnation (or a later one).
//! - What a message says is checked before it is believed: ids and addresses must be
//!   well-formed ([`valid_id`], [`valid_addr`]); incarnations stay at most
//!   [`MAX_INCARNATION`] and move at most [`MAX_INCARNATION_STEP`] per message; the list
//!   holds at most `max_members`; a known member's address changes only on that member's
//!   own word ([`Source::Member`]); an ack concludes a probe only if it names the probed
//!   member. Anything else is ignored and counted (`SwimStats::refused`).
//! - Successful probes change nothing.
//! - `changes` counts effective changes of the member list (the membership version).

use crate::proto::{Ack, MemberEntry, Ping, PingReq, WireState};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::SeedableRng;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Timings of the protocol.
#[derive(Debug, Clone)]
pub struct SwimConfig {
    /// How long a direct probe may take before relays are asked. `probe_timeout +
    /// indirect_timeout` should stay below the heartbeat: a probe still unanswered when
    /// the next heartbeat starts a new one is concluded as failed.
    pub probe_timeout: Duration,
    /// How long the relays may take before the target is suspected.
    pub indirect_timeout: Duration,
    /// How long a member stays suspect before it is declared dead.
    pub suspect_timeout: Duration,
    /// How long a dead or left member is remembered before it is forgotten.
    pub forget_after: Duration,
    /// Relays asked per failed probe (0 disables indirect probes).
    pub indirect_k: usize,
    /// Most members kept (this node excluded); gossip about further ones is ignored.
    pub max_members: usize,
}

/// The largest incarnation believed. Refuting at it is impossible, so it is far above
/// what refutations reach (one per suspicion) and far below where arithmetic wraps.
pub const MAX_INCARNATION: u64 = 1 << 40;
/// The most an incarnation may rise in one message over what is known here.
pub const MAX_INCARNATION_STEP: u64 = 1 << 20;
/// The longest member id, in bytes.
pub const MAX_ID_BYTES: usize = 128;
/// The longest member address (`host:port`), in bytes.
pub const MAX_ADDR_BYTES: usize = 261;

/// A member id as gossip may carry it: 1 to [`MAX_ID_BYTES`] bytes, printable, without
/// whitespace or the separators `@ , / ?  #` (what `HYPERCACHE_NODE_ID` accepts).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && !id
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "@,/?#".contains(c))
}

/// A dist address as gossip may carry it: `host:port` with a port from 1 to 65535 and a
/// host that is a DNS name, an IPv4 address or a bracketed IPv6 address; nothing that
/// could turn into another URL (no user info, path, query or fragment).
pub fn valid_addr(addr: &str) -> bool {
    if addr.len() > MAX_ADDR_BYTES {
        return false;
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return false;
    };
    let port_ok = !port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
            && !host.starts_with(['.', '-'])
    };
    port_ok && host_ok
}

/// Who vouches for gossiped entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// Relayed gossip: may add members and change states, never the address of a member
    /// known here.
    Gossip,
    /// A message from member `id` itself, sent from (or answered at) `addr`: its own
    /// entry may also change its address.
    Member { id: &'a str, addr: &'a str },
}

/// A seed peer from configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedPeer {
    pub id: Option<String>,
    pub addr: String,
}

/// A timer the shell must fire after a delay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timer {
    /// The direct probe `seq` got no ack in time.
    ProbeTimeout { seq: u64 },
    /// The indirect probes of `seq` got no ack in time.
    IndirectTimeout { seq: u64 },
    /// `id` has been suspect at `incarnation` long enough to be declared dead.
    SuspectTimeout { id: String, incarnation: u64 },
    /// `id`, dead or left at `incarnation`, can be forgotten.
    Forget { id: String, incarnation: u64 },
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send `ping` to `addr`; feed the ack to [`Swim::on_ack`] or the failure to
    /// [`Swim::on_probe_failed`]. `seq` 0 is a join or reconnect ping, not a probe.
    Ping { addr: String, ping: Ping },
    /// Ask the relay at `relay_addr` to probe on our behalf; feed the reply to
    /// [`Swim::on_indirect_reply`].
    PingReq { relay_addr: String, req: PingReq },
    /// Fire `timer` after `after`.
    Schedule { after: Duration, timer: Timer },
}

/// Counters of the protocol, exported as metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SwimStats {
    pub probes_ok: u64,
    pub probes_failed: u64,
    pub indirect_ok: u64,
    pub indirect_failed: u64,
    pub refuted: u64,
    /// Entries ignored by the checks of [`Swim::merge`].
    pub refused: u64,
    pub suspected: u64,
    pub declared_dead: u64,
}

#[derive(Debug, Clone)]
struct Probe {
    seq: u64,
    target: String,
    acked: bool,
    indirect: bool,
    relays: usize,
}

/// Ticks between contacts of seeds that are not (or no longer) alive members.
pub const SEED_RETRY_TICKS: u64 = 5;
/// Ticks between reconnect pings to one dead member (heals partitions).
pub const DEAD_PROBE_TICKS: u64 = 3;

/// Why [`Swim::remove`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveError {
    /// No such member is known.
    Unknown,
    /// The member is in this state, not dead (this node itself is never dead to itself).
    NotDead(WireState),
}

/// Whether update `new` replaces what is known, `old` (same member).
pub fn overrides(new: &MemberEntry, old: &MemberEntry) -> bool {
    use WireState::*;
    match (new.state, old.state) {
        // Only the member itself issues a higher incarnation to say it is alive.
        (Alive, _) => new.incarnation > old.incarnation,
        (Suspect, Alive) => new.incarnation >= old.incarnation,
        (Suspect, _) => new.incarnation > old.incarnation,
        (Dead, Alive | Suspect) => new.incarnation >= old.incarnation,
        (Dead, Dead | Left) => false,
        (Left, Left) => new.incarnation > old.incarnation,
        (Left, _) => new.incarnation >= old.incarnation,
    }
}

/// The membership state machine of one node.
pub struct Swim {
    me: MemberEntry,
    members: BTreeMap<String, MemberEntry>,
    seeds: Vec<SeedPeer>,
    cfg: SwimConfig,
    rng: StdRng,
    seq: u64,
    ticks: u64,
    probe: Option<Probe>,
    order: Vec<String>,
    leaving: bool,
    changes: u64,
    stats: SwimStats,
}

impl Swim {
    pub fn new(id: &str, addr: &str, seeds: Vec<SeedPeer>, cfg: SwimConfig, rng_seed: u64) -> Self {
        Self {
            me: MemberEntry {
                id: id.into(),
                addr: addr.into(),
                state: WireState::Alive,
                incarnation: 0,
            },
            members: BTreeMap::new(),
            seeds: seeds
                .into_iter()
                .filter(|s| s.id.as_deref() != Some(id) && s.addr != addr)
                .collect(),
            cfg,
            rng: StdRng::seed_from_u64(rng_seed),
            seq: 0,
            ticks: 0,
            probe: None,
            order: Vec::new(),
            leaving: false,
            changes: 0,
            stats: SwimStats::default(),
        }
    }

    /// This node's own entry.
    pub fn me(&self) -> &MemberEntry {
        &self.me
    }

    /// Every member including this node, sorted by id.
    pub fn entries(&self) -> Vec<MemberEntry> {
        let mut v: Vec<MemberEntry> = self.members.values().cloned().collect();
        v.push(self.me.clone());
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Takes back a member list this node published before its actor restarted: every
    /// entry as it was (dead and left members included, which gossip alone would not
    /// re-add), and this node's own incarnation and leave. Returns the timers the
    /// entries need. Entries that fail the checks are skipped.
    pub fn restore(&mut self, entries: &[MemberEntry]) -> Vec<Action> {
        let mut out = Vec::new();
        for e in entries {
            if !valid_id(&e.id) || !valid_addr(&e.addr) || e.incarnation > MAX_INCARNATION {
                continue;
            }
            if e.id == self.me.id {
                self.me.incarnation = self.me.incarnation.max(e.incarnation);
                if e.state == WireState::Left {
                    self.leave();
                }
                continue;
            }
            if self.members.len() >= self.cfg.max_members {
                continue;
            }
            self.members.insert(e.id.clone(), e.clone());
            let timer = match e.state {
                WireState::Alive => continue,
                WireState::Suspect => (
                    self.cfg.suspect_timeout,
                    Timer::SuspectTimeout {
                        id: e.id.clone(),
                        incarnation: e.incarnation,
                    },
                ),
                WireState::Dead | WireState::Left => (
                    self.cfg.forget_after,
                    Timer::Forget {
                        id: e.id.clone(),
                        incarnation: e.incarnation,
                    },
                ),
            };
            out.push(Action::Schedule {
                after: timer.0,
                timer: timer.1,
            });
        }
        out
    }

    /// Continues counting from `version` (after a restart of the owning actor).
    pub fn resume_changes(&mut self, version: u64) {
        self.changes = self.changes.max(version);
    }

    /// The membership version: effective changes so far.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    pub fn stats(&self) -> SwimStats {
        self.stats
    }

    /// The member `id`, if known (not this node).
    pub fn member(&self, id: &str) -> Option<&MemberEntry> {
        self.members.get(id)
    }

    /// The current probe's `(seq, target, acked)`.
    pub fn current_probe(&self) -> Option<(u64, &str, bool)> {
        self.probe
            .as_ref()
            .map(|p| (p.seq, p.target.as_str(), p.acked))
    }

    fn ping(&self, seq: u64) -> Ping {
        Ping {
            seq,
            members: self.entries(),
        }
    }

    /// Heartbeat: start the next probe, contact seeds that are not members, and now and
    /// then ping a dead member so a healed partition is noticed.
    pub fn tick(&mut self) -> Vec<Action> {
        self.ticks += 1;
        let mut out = Vec::new();

        // The protocol period of the previous probe is over: no ack means suspect.
        if let Some(p) = self.probe.take() {
            if !p.acked {
                if !p.indirect {
                    self.stats.probes_failed += 1;
                } else if p.relays > 0 {
                    self.stats.indirect_failed += 1;
                }
                out.extend(self.suspect(&p.target));
            }
        }

        let has_live_peer = self
            .members
            .values()
            .any(|m| matches!(m.state, WireState::Alive | WireState::Suspect));
        if !has_live_peer || self.ticks % SEED_RETRY_TICKS == 1 {
            for s in &self.seeds {
                let known_live = self.members.values().any(|m| {
                    (Some(&m.id) == s.id.as_ref() || m.addr == s.addr)
                        && matches!(m.state, WireState::Alive | WireState::Suspect)
                });
                if !known_live {
                    out.push(Action::Ping {
                        addr: s.addr.clone(),
                        ping: self.ping(0),
                    });
                }
            }
        }

        if self.ticks % DEAD_PROBE_TICKS == 0 {
            let dead: Vec<&MemberEntry> = self
                .members
                .values()
                .filter(|m| m.state == WireState::Dead)
                .collect();
            if let Some(m) = dead.choose(&mut self.rng) {
                out.push(Action::Ping {
                    addr: m.addr.clone(),
                    ping: self.ping(0),
                });
            }
        }

        if let Some(target) = self.next_target() {
            self.seq += 1;
            let seq = self.seq;
            let addr = self.members[&target].addr.clone();
            self.probe = Some(Probe {
                seq,
                target,
                acked: false,
                indirect: false,
                relays: 0,
            });
            out.push(Action::Ping {
                addr,
                ping: self.ping(seq),
            });
            out.push(Action::Schedule {
                after: self.cfg.probe_timeout,
                timer: Timer::ProbeTimeout { seq },
            });
        }
        out
    }

    /// Round-robin over a shuffled list of alive and suspect members.
    fn next_target(&mut self) -> Option<String> {
        loop {
            if self.order.is_empty() {
                self.order = self
                    .members
                    .values()
                    .filter(|m| matches!(m.state, WireState::Alive | WireState::Suspect))
                    .map(|m| m.id.clone())
                    .collect();
                if self.order.is_empty() {
                    return None;
                }
                self.order.shuffle(&mut self.rng);
            }
            let id = self.order.pop()?;
            if self
                .members
                .get(&id)
                .is_some_and(|m| matches!(m.state, WireState::Alive | WireState::Suspect))
            {
                return Some(id);
            }
        }
    }

    /// A ping arrived from `source`: merge the sender's list and answer with ours.
    pub fn on_ping(&mut self, ping: Ping, source: Source<'_>) -> (Ack, Vec<Action>) {
        let actions = self.merge(&ping.members, source);
        let ack = Ack {
            seq: ping.seq,
            me: self.me.clone(),
            members: self.entries(),
        };
        (ack, actions)
    }

    /// An ack arrived for the ping `seq` (0: a join or reconnect ping), answered at
    /// `addr` (the address the ping was sent to). It concludes the probe only if it
    /// names the probed member.
    pub fn on_ack(&mut self, ack: Ack, addr: &str) -> Vec<Action> {
        let source = Source::Member {
            id: &ack.me.id,
            addr,
        };
        // One message: the step bound covers the acker's own entry and its list together.
        let mut all = Vec::with_capacity(ack.members.len() + 1);
        all.push(ack.me.clone());
        all.extend(ack.members.iter().cloned());
        let actions = self.merge(&all, source);
        if let Some(p) = self.probe.as_mut() {
            if ack.seq != 0 && p.seq == ack.seq && !p.acked && p.target == ack.me.id {
                p.acked = true;
                self.stats.probes_ok += 1;
            }
        }
        actions
    }

    /// The direct ping `seq` failed at once (connection refused, cut link).
    pub fn on_probe_failed(&mut self, seq: u64) -> Vec<Action> {
        self.start_indirect(seq)
    }

    /// The reply of a relay for probe `seq`.
    pub fn on_indirect_reply(
        &mut self,
        seq: u64,
        acked: bool,
        members: &[MemberEntry],
    ) -> Vec<Action> {
        let actions = self.merge(members, Source::Gossip);
        if let Some(p) = self.probe.as_mut() {
            if acked && p.seq == seq && !p.acked {
                p.acked = true;
                self.stats.indirect_ok += 1;
            }
        }
        actions
    }

    fn start_indirect(&mut self, seq: u64) -> Vec<Action> {
        let Some(p) = self.probe.as_ref() else {
            return Vec::new();
        };
        if p.seq != seq || p.acked || p.indirect {
            return Vec::new();
        }
        self.stats.probes_failed += 1;
        let target = p.target.clone();
        let Some(t) = self.members.get(&target).cloned() else {
            return Vec::new();
        };
        let candidates: Vec<&MemberEntry> = self
            .members
            .values()
            .filter(|m| m.id != target && m.state == WireState::Alive)
            .collect();
        let relays: Vec<String> = candidates
            .choose_multiple(&mut self.rng, self.cfg.indirect_k)
            .map(|m| m.addr.clone())
            .collect();
        let members = self.entries();
        if let Some(p) = self.probe.as_mut() {
            p.indirect = true;
            p.relays = relays.len();
        }
        let mut out: Vec<Action> = relays
            .into_iter()
            .map(|relay_addr| Action::PingReq {
                relay_addr,
                req: PingReq {
                    seq,
                    target_id: t.id.clone(),
                    target_addr: t.addr.clone(),
                    members: members.clone(),
                },
            })
            .collect();
        out.push(Action::Schedule {
            after: self.cfg.indirect_timeout,
            timer: Timer::IndirectTimeout { seq },
        });
        out
    }

    /// A timer fired.
    pub fn on_timer(&mut self, timer: Timer) -> Vec<Action> {
        match timer {
            Timer::ProbeTimeout { seq } => self.start_indirect(seq),
            Timer::IndirectTimeout { seq } => {
                let Some(p) = self.probe.as_ref() else {
                    return Vec::new();
                };
                if p.seq != seq || p.acked {
                    return Vec::new();
                }
                if p.relays > 0 {
                    self.stats.indirect_failed += 1;
                }
                let target = p.target.clone();
                // Concluded: the end of the period must not count it again.
                self.probe = None;
                self.suspect(&target)
            }
            Timer::SuspectTimeout { id, incarnation } => {
                let Some(m) = self.members.get_mut(&id) else {
                    return Vec::new();
                };
                if m.state != WireState::Suspect || m.incarnation != incarnation {
                    return Vec::new();
                }
                m.state = WireState::Dead;
                self.changes += 1;
                self.stats.declared_dead += 1;
                vec![Action::Schedule {
                    after: self.cfg.forget_after,
                    timer: Timer::Forget { id, incarnation },
                }]
            }
            Timer::Forget { id, incarnation } => {
                let Some(m) = self.members.get(&id) else {
                    return Vec::new();
                };
                if m.incarnation != incarnation
                    || !matches!(m.state, WireState::Dead | WireState::Left)
                {
                    return Vec::new();
                }
                if m.state == WireState::Dead && !self.has_majority() {
                    // Forgetting moves the member's keys to new owners. A node that sees
                    // only a minority may be the cut-off side: it keeps the dead member
                    // as a home owner (and so accepts no quorum write the majority
                    // could accept too) and asks again later.
                    return vec![Action::Schedule {
                        after: self.cfg.forget_after,
                        timer: Timer::Forget { id, incarnation },
                    }];
                }
                self.members.remove(&id);
                self.changes += 1;
                Vec::new()
            }
        }
    }

    /// Whether the reachable members (alive or suspect, this node included unless it
    /// left) are more than half of those that have not left.
    pub fn has_majority(&self) -> bool {
        let me = usize::from(!self.leaving);
        let live = self
            .members
            .values()
            .filter(|m| matches!(m.state, WireState::Alive | WireState::Suspect))
            .count();
        let not_left = self
            .members
            .values()
            .filter(|m| m.state != WireState::Left)
            .count();
        (live + me) * 2 > not_left + me
    }

    /// An operator removes dead member `id`: it is marked left at its incarnation (so the
    /// news spreads by gossip and every node takes it out of the ring) and forgotten
    /// later. Only a dead member can be removed; a live one must drain itself.
    pub fn remove(&mut self, id: &str) -> Result<(MemberEntry, Vec<Action>), RemoveError> {
        if id == self.me.id {
            return Err(RemoveError::NotDead(self.me.state));
        }
        let Some(m) = self.members.get_mut(id) else {
            return Err(RemoveError::Unknown);
        };
        match m.state {
            WireState::Dead => {}
            WireState::Left => return Ok((m.clone(), Vec::new())),
            other => return Err(RemoveError::NotDead(other)),
        }
        m.state = WireState::Left;
        self.changes += 1;
        let entry = m.clone();
        let forget = Action::Schedule {
            after: self.cfg.forget_after,
            timer: Timer::Forget {
                id: entry.id.clone(),
                incarnation: entry.incarnation,
            },
        };
        Ok((entry, vec![forget]))
    }

    fn suspect(&mut self, id: &str) -> Vec<Action> {
        let Some(m) = self.members.get_mut(id) else {
            return Vec::new();
        };
        if m.state != WireState::Alive {
            return Vec::new();
        }
        m.state = WireState::Suspect;
        self.changes += 1;
        self.stats.suspected += 1;
        vec![Action::Schedule {
            after: self.cfg.suspect_timeout,
            timer: Timer::SuspectTimeout {
                id: id.to_owned(),
                incarnation: m.incarnation,
            },
        }]
    }

    /// This node leaves: it gossips `left` from now on (one-way).
    pub fn leave(&mut self) {
        if !self.leaving {
            self.leaving = true;
            self.me.state = WireState::Left;
            self.changes += 1;
        }
    }

    /// Merges gossiped entries vouched for by `source`; returns the timers the changes
    /// need. Entries that fail the checks are ignored and counted.
    pub fn merge(&mut self, entries: &[MemberEntry], source: Source<'_>) -> Vec<Action> {
        let mut out = Vec::new();
        if entries.len() > self.cfg.max_members.saturating_add(1) {
            // More members than this node would ever keep: the whole list is suspect.
            self.stats.refused += entries.len() as u64;
            return out;
        }
        let mut start: HashMap<&str, Option<u64>> = HashMap::new();
        for e in entries {
            if !valid_id(&e.id) || !valid_addr(&e.addr) || e.incarnation > MAX_INCARNATION {
                self.stats.refused += 1;
                continue;
            }
            // The step is bounded per message: against what was known before it, so
            // repeated entries of one member cannot climb step by step.
            let known = if e.id == self.me.id {
                Some(self.me.incarnation)
            } else {
                self.members.get(&e.id).map(|m| m.incarnation)
            };
            let ceiling = *start
                .entry(e.id.as_str())
                .or_insert_with(|| known.map(|i| i.saturating_add(MAX_INCARNATION_STEP)));
            if ceiling.is_some_and(|c| e.incarnation > c) {
                self.stats.refused += 1;
                continue;
            }
            if e.id == self.me.id {
                self.merge_about_me(e);
                continue;
            }
            let Some(new) = self.news(e, source) else {
                continue;
            };
            self.members.insert(new.id.clone(), new.clone());
            self.changes += 1;
            match new.state {
                WireState::Suspect => out.push(Action::Schedule {
                    after: self.cfg.suspect_timeout,
                    timer: Timer::SuspectTimeout {
                        id: new.id,
                        incarnation: new.incarnation,
                    },
                }),
                WireState::Dead | WireState::Left => out.push(Action::Schedule {
                    after: self.cfg.forget_after,
                    timer: Timer::Forget {
                        id: new.id,
                        incarnation: new.incarnation,
                    },
                }),
                WireState::Alive => {}
            }
        }
        out
    }

    /// What `e` changes about another member: the entry to keep, or `None`.
    fn news(&mut self, e: &MemberEntry, source: Source<'_>) -> Option<MemberEntry> {
        let Some(old) = self.members.get(&e.id) else {
            // A death or leave of a member never known here (or already forgotten) is
            // not news: adding it back would undo forgetting, cluster-wide.
            if !matches!(e.state, WireState::Alive | WireState::Suspect) {
                return None;
            }
            if self.members.len() >= self.cfg.max_members {
                self.stats.refused += 1;
                return None;
            }
            return Some(e.clone());
        };
        if e.addr == old.addr {
            return overrides(e, old).then(|| e.clone());
        }
        let own_word =
            matches!(source, Source::Member { id, addr } if id == e.id && addr == e.addr);
        if own_word {
            // The member itself says where it is now (a restart on a new address).
            let moved = e.state == WireState::Alive && e.incarnation >= old.incarnation;
            return (moved || overrides(e, old)).then(|| e.clone());
        }
        // Someone else claims the member moved: believe the rest of the news, at the
        // address known here.
        self.stats.refused += 1;
        let at_known = MemberEntry {
            addr: old.addr.clone(),
            ..e.clone()
        };
        overrides(&at_known, old).then_some(at_known)
    }

    fn merge_about_me(&mut self, e: &MemberEntry) {
        if self.leaving {
            // Keep saying we left, at an incarnation nobody can override with an older one.
            if e.incarnation > self.me.incarnation {
                self.me.incarnation = e.incarnation;
            }
            return;
        }
        match e.state {
            WireState::Alive => {
                // After a restart, others may know a later incarnation of us: adopt it.
                if e.incarnation > self.me.incarnation {
                    self.me.incarnation = e.incarnation;
                }
            }
            WireState::Suspect | WireState::Dead | WireState::Left => {
                if e.incarnation >= self.me.incarnation {
                    match e
                        .incarnation
                        .checked_add(1)
                        .filter(|n| *n <= MAX_INCARNATION)
                    {
                        Some(n) => {
                            self.me.incarnation = n;
                            self.stats.refuted += 1;
                            self.changes += 1;
                        }
                        // Cannot happen below MAX_INCARNATION; never wraps.
                        None => self.stats.refused += 1,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SwimConfig {
        SwimConfig {
            probe_timeout: Duration::from_millis(100),
            indirect_timeout: Duration::from_millis(100),
            suspect_timeout: Duration::from_millis(300),
            forget_after: Duration::from_secs(60),
            indirect_k: 2,
            max_members: 64,
        }
    }

    fn entry(id: &str, state: WireState, inc: u64) -> MemberEntry {
        MemberEntry {
            id: id.into(),
            addr: format!("{id}:7946"),
            state,
            incarnation: inc,
        }
    }

    /// A node that knows `a`, `b`, `c` (all alive at incarnation 0).
    fn node() -> Swim {
        node_named("me")
    }

    fn node_named(id: &str) -> Swim {
        let mut s = Swim::new(id, &format!("{id}:7946"), vec![], cfg(), 1);
        s.merge(
            &[
                entry("a", WireState::Alive, 0),
                entry("b", WireState::Alive, 0),
                entry("c", WireState::Alive, 0),
            ],
            Source::Gossip,
        );
        s
    }

    fn probe_of(actions: &[Action]) -> (u64, String) {
        actions
            .iter()
            .find_map(|a| match a {
                Action::Ping { addr, ping } if ping.seq != 0 => {
                    Some((ping.seq, addr.trim_end_matches(":7946").to_string()))
                }
                _ => None,
            })
            .expect("a probe")
    }

    fn ack_from(s: &Swim, id: &str, seq: u64) -> Ack {
        Ack {
            seq,
            me: s.member(id).cloned().unwrap(),
            members: s.entries(),
        }
    }

    #[test]
    fn successful_probes_change_nothing() {
        let mut s = node();
        let before = (s.changes(), s.entries());
        for _ in 0..30 {
            let actions = s.tick();
            let (seq, target) = probe_of(&actions);
            let ack = ack_from(&s, &target, seq);
            s.on_ack(ack, &format!("{target}:7946"));
            s.on_timer(Timer::ProbeTimeout { seq });
        }
        assert_eq!((s.changes(), s.entries()), before);
        assert_eq!(s.stats().probes_ok, 30);
        assert_eq!(s.stats().probes_failed, 0);
    }

    #[test]
    fn every_member_is_probed_round_robin() {
        let mut s = node();
        let mut seen: Vec<String> = (0..3).map(|_| probe_of(&s.tick()).1).collect();
        seen.sort();
        assert_eq!(seen, vec!["a", "b", "c"]);
    }

    #[test]
    fn failed_probe_goes_indirect_then_suspect_then_dead() {
        let mut s = node();
        let (seq, target) = probe_of(&s.tick());
        let actions = s.on_timer(Timer::ProbeTimeout { seq });
        let relays: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::PingReq { relay_addr, req } => {
                    Some((relay_addr.clone(), req.target_id.clone()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(relays.len(), 2);
        assert!(relays
            .iter()
            .all(|(r, t)| *t == target && !r.starts_with(&target)));
        // Relays answer "no ack".
        s.on_indirect_reply(seq, false, &[]);
        let actions = s.on_timer(Timer::IndirectTimeout { seq });
        assert_eq!(s.member(&target).unwrap().state, WireState::Suspect);
        let timer = actions
            .iter()
            .find_map(|a| match a {
                Action::Schedule {
                    timer: t @ Timer::SuspectTimeout { .. },
                    ..
                } => Some(t.clone()),
                _ => None,
            })
            .unwrap();
        s.on_timer(timer);
        assert_eq!(s.member(&target).unwrap().state, WireState::Dead);
        let st = s.stats();
        assert_eq!(
            (
                st.probes_failed,
                st.indirect_failed,
                st.suspected,
                st.declared_dead
            ),
            (1, 1, 1, 1)
        );
    }

    #[test]
    fn unanswered_probe_is_suspected_at_the_next_period() {
        let mut s = node();
        let (_, target) = probe_of(&s.tick());
        // No ack, no timer fired in time: the next heartbeat concludes it.
        s.tick();
        assert_eq!(s.member(&target).unwrap().state, WireState::Suspect);
        assert_eq!(s.stats().probes_failed, 1);
    }

    #[test]
    fn indirect_ack_saves_the_target() {
        let mut s = node();
        let (seq, target) = probe_of(&s.tick());
        s.on_probe_failed(seq);
        s.on_indirect_reply(seq, true, &[]);
        s.on_timer(Timer::IndirectTimeout { seq });
        assert_eq!(s.member(&target).unwrap().state, WireState::Alive);
        assert_eq!(s.stats().indirect_ok, 1);
    }

    #[test]
    fn stale_timers_are_ignored() {
        let mut s = node();
        let (seq1, t1) = probe_of(&s.tick());
        s.on_ack(ack_from(&s, &t1, seq1), &format!("{t1}:7946"));
        let (seq2, t2) = probe_of(&s.tick());
        assert_ne!(seq1, seq2);
        assert!(s.on_timer(Timer::ProbeTimeout { seq: seq1 }).is_empty());
        assert!(s.on_timer(Timer::IndirectTimeout { seq: seq1 }).is_empty());
        // A suspect timeout for an incarnation that was refuted does nothing.
        s.merge(&[entry(&t2, WireState::Suspect, 0)], Source::Gossip);
        s.merge(&[entry(&t2, WireState::Alive, 1)], Source::Gossip);
        s.on_timer(Timer::SuspectTimeout {
            id: t2.clone(),
            incarnation: 0,
        });
        assert_eq!(s.member(&t2).unwrap().state, WireState::Alive);
    }

    #[test]
    fn a_node_refutes_suspicion_of_itself() {
        let mut s = node();
        let before = s.me().incarnation;
        s.merge(&[entry("me", WireState::Suspect, before)], Source::Gossip);
        assert_eq!(s.me().incarnation, before + 1);
        assert_eq!(s.me().state, WireState::Alive);
        assert_eq!(s.stats().refuted, 1);
        // An old suspicion is not refuted again.
        s.merge(&[entry("me", WireState::Suspect, before)], Source::Gossip);
        assert_eq!(s.me().incarnation, before + 1);
        // Others accept the refutation over their suspicion and their death verdict.
        let mut other = node_named("other");
        other.merge(&[entry("me", WireState::Dead, before)], Source::Gossip);
        other.merge(&[s.me().clone()], Source::Gossip);
        assert_eq!(other.member("me").unwrap().state, WireState::Alive);
    }

    #[test]
    fn restarted_node_rejoins_by_refuting_its_death() {
        // The cluster declared "x" dead at incarnation 2; x restarts at incarnation 0.
        let mut cluster = node();
        cluster.merge(&[entry("x", WireState::Alive, 2)], Source::Gossip);
        cluster.merge(&[entry("x", WireState::Dead, 2)], Source::Gossip);
        let mut x = Swim::new(
            "x",
            "x:7946",
            vec![SeedPeer {
                id: None,
                addr: "me:7946".into(),
            }],
            cfg(),
            2,
        );
        // x's join ping reaches the cluster: its alive@0 does not override dead@2 ...
        let join = match &x.tick()[0] {
            Action::Ping { ping, .. } => ping.clone(),
            other => panic!("expected a join ping, got {other:?}"),
        };
        let (ack, _) = cluster.on_ping(join, Source::Gossip);
        assert_eq!(cluster.member("x").unwrap().state, WireState::Dead);
        // ... but the ack tells x it is dead, so x refutes with incarnation 3.
        x.on_ack(ack, "me:7946");
        assert_eq!(x.me().incarnation, 3);
        assert!(
            x.member("me").is_some(),
            "x learnt the seed's id from the ack"
        );
        cluster.merge(&x.entries(), Source::Gossip);
        assert_eq!(cluster.member("x").unwrap().state, WireState::Alive);
        assert_eq!(cluster.member("x").unwrap().incarnation, 3);
    }

    #[test]
    fn precedence_rules() {
        use WireState::*;
        let e = |s, i| entry("n", s, i);
        assert!(overrides(&e(Alive, 1), &e(Alive, 0)));
        assert!(!overrides(&e(Alive, 0), &e(Alive, 0)));
        assert!(overrides(&e(Suspect, 0), &e(Alive, 0)));
        assert!(!overrides(&e(Alive, 0), &e(Suspect, 0)));
        assert!(overrides(&e(Alive, 1), &e(Suspect, 0)));
        assert!(overrides(&e(Dead, 0), &e(Suspect, 0)));
        assert!(!overrides(&e(Suspect, 0), &e(Dead, 0)));
        assert!(overrides(&e(Alive, 1), &e(Dead, 0)));
        assert!(!overrides(&e(Dead, 5), &e(Dead, 0)));
        assert!(overrides(&e(Left, 0), &e(Alive, 0)));
        assert!(overrides(&e(Left, 0), &e(Dead, 0)));
        assert!(overrides(&e(Alive, 1), &e(Left, 0)));
    }

    #[test]
    fn merge_is_order_independent_for_the_final_state() {
        use WireState::*;
        let updates = vec![
            entry("n", Alive, 0),
            entry("n", Suspect, 0),
            entry("n", Alive, 1),
            entry("n", Dead, 1),
            entry("n", Alive, 2),
            entry("n", Suspect, 2),
        ];
        let mut rng = StdRng::seed_from_u64(9);
        let mut reference = node();
        reference.merge(&updates, Source::Gossip);
        let want = reference.member("n").cloned();
        for _ in 0..50 {
            let mut u = updates.clone();
            u.shuffle(&mut rng);
            let mut s = node();
            for x in &u {
                s.merge(std::slice::from_ref(x), Source::Gossip);
            }
            assert_eq!(s.member("n").cloned(), want, "{u:?}");
        }
    }

    #[test]
    fn leaving_is_gossiped_and_not_refuted() {
        let mut s = node();
        s.leave();
        assert_eq!(s.me().state, WireState::Left);
        s.merge(
            &[
                entry("me", WireState::Alive, 0),
                entry("me", WireState::Suspect, 0),
            ],
            Source::Gossip,
        );
        assert_eq!(s.me().state, WireState::Left);
        let mut other = node_named("other");
        other.merge(&[entry("me", WireState::Alive, 0)], Source::Gossip);
        other.merge(&[s.me().clone()], Source::Gossip);
        assert_eq!(other.member("me").unwrap().state, WireState::Left);
    }

    #[test]
    fn seeds_are_contacted_until_joined_and_dead_members_are_retried() {
        let mut s = Swim::new(
            "me",
            "me:7946",
            vec![SeedPeer {
                id: Some("a".into()),
                addr: "a:7946".into(),
            }],
            cfg(),
            3,
        );
        let seed_pings = |acts: &[Action]| {
            acts.iter()
                .filter(|a| matches!(a, Action::Ping { ping, .. } if ping.seq == 0))
                .count()
        };
        assert_eq!(seed_pings(&s.tick()), 1);
        assert_eq!(seed_pings(&s.tick()), 1, "still no live peer: keep trying");
        s.merge(&[entry("a", WireState::Alive, 0)], Source::Gossip);
        let mut joins = 0;
        for _ in 0..10 {
            joins += seed_pings(&s.tick());
        }
        assert_eq!(joins, 0, "a live seed is not re-contacted");
        s.merge(&[entry("a", WireState::Dead, 0)], Source::Gossip);
        let mut retries = 0;
        for _ in 0..6 {
            retries += seed_pings(&s.tick());
        }
        assert!(retries >= 2, "dead members are pinged again ({retries})");
    }

    #[test]
    fn forgotten_after_dead_timeout() {
        let mut s = node();
        let acts = s.merge(&[entry("a", WireState::Dead, 0)], Source::Gossip);
        s.merge(&[entry("never-known", WireState::Dead, 0)], Source::Gossip);
        assert!(
            s.member("never-known").is_none(),
            "unknown deaths are not adopted"
        );
        let t = acts
            .iter()
            .find_map(|a| match a {
                Action::Schedule {
                    timer: t @ Timer::Forget { .. },
                    ..
                } => Some(t.clone()),
                _ => None,
            })
            .unwrap();
        s.on_timer(t);
        assert!(s.member("a").is_none());
        // Gossip of the death from a peer that has not forgotten yet does not bring it back.
        s.merge(&[entry("a", WireState::Dead, 0)], Source::Gossip);
        assert!(s.member("a").is_none());
    }

    #[test]
    fn ids_and_addresses_are_checked() {
        for ok in ["node-1", "a", "pod_7.svc", &"x".repeat(MAX_ID_BYTES)] {
            assert!(valid_id(ok), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "a@b",
            "a,b",
            "a/b",
            "a?b",
            "a#b",
            "a\u{7}b",
            &"x".repeat(MAX_ID_BYTES + 1),
        ] {
            assert!(!valid_id(bad), "{bad:?}");
        }
        for ok in [
            "h:1",
            "127.0.0.1:7946",
            "[::1]:7946",
            "my-host.example.com:65535",
            "a_b:80",
        ] {
            assert!(valid_addr(ok), "{ok}");
        }
        for bad in [
            "", "h", "h:", ":1", "h:0", "h:65536", "h:-1", "h:+1", "user@h:1", "h/x:1", "h:1/x",
            "h?:1", "h#:1", "[::1:1", "[zz]:1", ".h:1", "-h:1", "h h:1", "h:123456",
        ] {
            assert!(!valid_addr(bad), "{bad:?}");
        }
    }

    #[test]
    fn malformed_entries_and_incarnation_jumps_are_refused() {
        let mut s = node();
        let bad = MemberEntry {
            id: "evil".into(),
            addr: "user@10.0.0.1:80".into(),
            state: WireState::Alive,
            incarnation: 0,
        };
        s.merge(&[bad], Source::Gossip);
        assert!(s.member("evil").is_none());
        // A jump past the step about another member, or about this node, is ignored.
        s.merge(
            &[entry("a", WireState::Dead, MAX_INCARNATION_STEP + 1)],
            Source::Gossip,
        );
        assert_eq!(s.member("a").unwrap().state, WireState::Alive);
        s.merge(
            &[entry("me", WireState::Dead, MAX_INCARNATION_STEP + 1)],
            Source::Gossip,
        );
        s.merge(&[entry("me", WireState::Dead, u64::MAX)], Source::Gossip);
        assert_eq!(s.me().incarnation, 0);
        assert_eq!(s.me().state, WireState::Alive);
        assert_eq!(s.stats().refused, 4);
        // Within the step a death is refuted, with checked arithmetic.
        s.merge(&[entry("me", WireState::Dead, 7)], Source::Gossip);
        assert_eq!(s.me().incarnation, 8);
    }

    #[test]
    fn an_address_changes_only_on_the_members_own_word() {
        let mut s = node();
        let moved = MemberEntry {
            addr: "elsewhere:1".into(),
            ..entry("a", WireState::Alive, 3)
        };
        // Relayed: the news (a higher incarnation) is taken, the address is not.
        s.merge(std::slice::from_ref(&moved), Source::Gossip);
        assert_eq!(s.member("a").unwrap().addr, "a:7946");
        assert_eq!(s.member("a").unwrap().incarnation, 3);
        // Another member vouching for it is still not its own word.
        s.merge(
            std::slice::from_ref(&moved),
            Source::Member {
                id: "b",
                addr: "elsewhere:1",
            },
        );
        assert_eq!(s.member("a").unwrap().addr, "a:7946");
        // From the member itself, at that address: taken, even at the same incarnation.
        s.merge(
            std::slice::from_ref(&moved),
            Source::Member {
                id: "a",
                addr: "elsewhere:1",
            },
        );
        assert_eq!(s.member("a").unwrap().addr, "elsewhere:1");
        // An ack is the member's word only at the address that was dialled.
        let ack = Ack {
            seq: 0,
            me: MemberEntry {
                addr: "third:1".into(),
                ..entry("a", WireState::Alive, 3)
            },
            members: vec![],
        };
        s.on_ack(ack.clone(), "elsewhere:1");
        assert_eq!(s.member("a").unwrap().addr, "elsewhere:1");
        s.on_ack(ack, "third:1");
        assert_eq!(s.member("a").unwrap().addr, "third:1");
    }

    #[test]
    fn an_ack_must_name_the_probed_member() {
        let mut s = node();
        let (seq, target) = probe_of(&s.tick());
        let other = ["a", "b", "c"].into_iter().find(|x| *x != target).unwrap();
        s.on_ack(ack_from(&s, other, seq), &format!("{other}:7946"));
        assert_eq!(s.current_probe().map(|p| p.2), Some(false));
        s.on_ack(ack_from(&s, &target, seq), &format!("{target}:7946"));
        assert_eq!(s.current_probe().map(|p| p.2), Some(true));
    }

    #[test]
    fn the_member_list_is_capped() {
        let mut s = Swim::new(
            "me",
            "me:7946",
            vec![],
            SwimConfig {
                max_members: 3,
                ..cfg()
            },
            1,
        );
        let many: Vec<MemberEntry> = (0..5)
            .map(|i| entry(&format!("m{i}"), WireState::Alive, 0))
            .collect();
        // A list longer than the cap (plus the sender) is ignored whole ...
        s.merge(&many, Source::Gossip);
        assert_eq!(s.entries().len(), 1);
        // ... a shorter one fills the list up to the cap.
        s.merge(&many[..4], Source::Gossip);
        assert_eq!(s.entries().len(), 4);
        assert!(s.member("m3").is_none());
    }

    #[test]
    fn a_restored_list_keeps_dead_members_and_this_nodes_incarnation() {
        let mut before = node();
        before.merge(&[entry("a", WireState::Dead, 2)], Source::Gossip);
        before.merge(&[entry("me", WireState::Suspect, 0)], Source::Gossip);
        assert_eq!(before.me().incarnation, 1);
        let published = before.entries();
        let mut after = node_named("me");
        let timers = after.restore(&published);
        assert_eq!(after.me().incarnation, 1, "no reset to 0");
        assert_eq!(after.member("a").unwrap().state, WireState::Dead);
        assert_eq!(after.entries(), published);
        assert!(timers.iter().any(|t| matches!(
            t,
            Action::Schedule {
                timer: Timer::Forget { id, .. },
                ..
            } if id == "a"
        )));
    }

    #[test]
    fn the_incarnation_step_is_per_message() {
        let mut s = node();
        let climb: Vec<MemberEntry> = (1..=4)
            .map(|k| entry("a", WireState::Alive, k * MAX_INCARNATION_STEP))
            .collect();
        s.merge(&climb, Source::Gossip);
        assert_eq!(s.member("a").unwrap().incarnation, MAX_INCARNATION_STEP);
        let me: Vec<MemberEntry> = (1..=4)
            .map(|k| entry("me", WireState::Suspect, k * MAX_INCARNATION_STEP - 1))
            .collect();
        s.merge(&me, Source::Gossip);
        assert_eq!(s.me().incarnation, MAX_INCARNATION_STEP);
    }

    #[test]
    fn a_minority_keeps_dead_members_a_majority_forgets_them() {
        // me + a, b, c: with b and c dead, me and a are 2 of 4, not a majority.
        let mut s = node();
        s.merge(
            &[
                entry("b", WireState::Dead, 0),
                entry("c", WireState::Dead, 0),
            ],
            Source::Gossip,
        );
        assert!(!s.has_majority());
        let forget = Timer::Forget {
            id: "b".into(),
            incarnation: 0,
        };
        let again = s.on_timer(forget.clone());
        assert_eq!(s.member("b").unwrap().state, WireState::Dead, "kept");
        assert!(
            matches!(&again[..], [Action::Schedule { timer, .. }] if *timer == forget),
            "asked again later: {again:?}"
        );
        // c comes back: 3 of 4 alive is a majority, and b is forgotten.
        s.merge(&[entry("c", WireState::Alive, 1)], Source::Gossip);
        assert!(s.has_majority());
        assert!(s.on_timer(forget).is_empty());
        assert!(s.member("b").is_none(), "forgotten");
    }

    #[test]
    fn only_a_dead_member_can_be_removed_and_removal_is_a_leave() {
        let mut s = node();
        assert_eq!(s.remove("nobody").unwrap_err(), RemoveError::Unknown);
        assert_eq!(
            s.remove("a").unwrap_err(),
            RemoveError::NotDead(WireState::Alive)
        );
        assert_eq!(
            s.remove("me").unwrap_err(),
            RemoveError::NotDead(WireState::Alive)
        );
        s.merge(&[entry("a", WireState::Dead, 3)], Source::Gossip);
        let before = s.changes();
        let (e, actions) = s.remove("a").unwrap();
        assert_eq!((e.state, e.incarnation), (WireState::Left, 3));
        assert_eq!(s.changes(), before + 1);
        assert!(matches!(
            &actions[..],
            [Action::Schedule {
                timer: Timer::Forget { .. },
                ..
            }]
        ));
        // Other nodes that hold a dead@3 take the leave from gossip.
        let mut other = node_named("other");
        other.merge(&[entry("a", WireState::Dead, 3)], Source::Gossip);
        other.merge(&s.entries(), Source::Gossip);
        assert_eq!(other.member("a").unwrap().state, WireState::Left);
        // Removing again changes nothing.
        assert!(s.remove("a").unwrap().1.is_empty());
        assert_eq!(s.changes(), before + 1);
    }
}

//! The `swim_merge` target's driver.
//!
//! An input is either
//! - a msgpack `Vec<MemberEntry>` (what peers gossip; the committed seeds are such
//!   lists): it is merged, sent in a ping, in an ack and in a relay reply, and the
//!   timers these schedule are fired over a few heartbeats ([`run_list`]); or
//! - anything else: the bytes are read with `arbitrary` as a sequence of [`Op`]s over a
//!   small pool of member ids and addresses (so updates of one member collide), with
//!   extreme incarnations ([`run_ops`]).
//!
//! After every step [`Checker::step`] asserts what must hold whatever peers send:
//! - this node's own entry keeps its id, address and state (alive, or left after
//!   `leave`); its incarnation never goes down nor past `MAX_INCARNATION`; it is listed
//!   exactly once and never as a member of itself;
//! - the member list stays sorted without duplicate ids, holds at most `max_members`
//!   members, each with a valid id and address and an incarnation of at most
//!   `MAX_INCARNATION`;
//! - a known member's address changes only on that member's own word, and its
//!   incarnation rises by at most `MAX_INCARNATION_STEP` per message;
//! - an ack concludes the probe only if it comes from the probed member;
//! - the change counter never goes down.

use arbitrary::{Arbitrary, Unstructured};
use hypercache_actors::proto::{Ack, MemberEntry, Ping, WireState};
use hypercache_actors::swim::{
    valid_addr, valid_id, Action, Swim, Timer, MAX_INCARNATION, MAX_INCARNATION_STEP,
};
use std::collections::BTreeMap;

/// This node's id and address.
pub const ME_ID: &str = "fuzz-me";
pub const ME_ADDR: &str = "127.0.0.1:17946";
/// Who sends the gossip in list mode.
pub const PEER_ID: &str = "n0";
pub const PEER_ADDR: &str = "n0:7946";

/// Pending timers kept at most (oldest dropped).
const MAX_TIMERS: usize = 4096;
/// Timers fired per round at most.
const MAX_FIRED: usize = 1024;

/// Every call into the `Swim` API: when it changes, only this module does.
pub mod api {
    use super::{ME_ADDR, ME_ID};
    use hypercache_actors::proto::{Ack, MemberEntry, Ping};
    use hypercache_actors::swim::{Action, SeedPeer, Source, Swim, SwimConfig, Timer};
    use std::time::Duration;

    /// Members kept at most: small, so that the bound is reached.
    pub const MAX_MEMBERS: usize = 16;

    pub fn new_swim(rng_seed: u64) -> Swim {
        let cfg = SwimConfig {
            probe_timeout: Duration::from_millis(400),
            indirect_timeout: Duration::from_millis(400),
            suspect_timeout: Duration::from_secs(3),
            forget_after: Duration::from_secs(60),
            indirect_k: 2,
            max_members: MAX_MEMBERS,
        };
        let seeds = vec![
            SeedPeer {
                id: Some("n1".into()),
                addr: "n1:7946".into(),
            },
            SeedPeer {
                id: None,
                addr: "seed:7946".into(),
            },
        ];
        Swim::new(ME_ID, ME_ADDR, seeds, cfg, rng_seed)
    }

    /// Who vouches for gossiped entries: `None` is relayed gossip, `Some((id, addr))`
    /// the member `id` itself, speaking from `addr`.
    pub type From<'a> = Option<(&'a str, &'a str)>;

    fn source<'a>(from: From<'a>) -> Source<'a> {
        match from {
            None => Source::Gossip,
            Some((id, addr)) => Source::Member { id, addr },
        }
    }

    pub fn merge(s: &mut Swim, from: From<'_>, entries: &[MemberEntry]) -> Vec<Action> {
        s.merge(entries, source(from))
    }

    pub fn on_ping(s: &mut Swim, from: From<'_>, ping: Ping) -> (Ack, Vec<Action>) {
        s.on_ping(ping, source(from))
    }

    /// `addr`: where the ping was sent (the acking member vouches for its entry there).
    pub fn on_ack(s: &mut Swim, ack: Ack, addr: &str) -> Vec<Action> {
        s.on_ack(ack, addr)
    }

    pub fn on_indirect_reply(
        s: &mut Swim,
        seq: u64,
        acked: bool,
        members: &[MemberEntry],
    ) -> Vec<Action> {
        s.on_indirect_reply(seq, acked, members)
    }

    pub fn on_probe_failed(s: &mut Swim, seq: u64) -> Vec<Action> {
        s.on_probe_failed(seq)
    }

    pub fn tick(s: &mut Swim) -> Vec<Action> {
        s.tick()
    }

    pub fn on_timer(s: &mut Swim, t: Timer) -> Vec<Action> {
        s.on_timer(t)
    }

    pub fn leave(s: &mut Swim) {
        s.leave()
    }
}

/// What a step may change about known members.
#[derive(Clone, Copy)]
pub enum Allowed<'a> {
    /// Timers, ticks, leaving: no message, so no news about members' addresses.
    Nothing,
    /// One message vouched for by `from` whose entries may each raise an incarnation
    /// (`merges` is how many merges the call makes of it: an ack's own entry and its list).
    Message { from: api::From<'a>, merges: u64 },
}

/// The invariants, checked after every step.
pub struct Checker {
    incarnation: u64,
    changes: u64,
    left: bool,
    /// Members after the previous step: id -> (addr, incarnation).
    members: BTreeMap<String, (String, u64)>,
}

impl Checker {
    pub fn new(s: &Swim) -> Self {
        let mut c = Self {
            incarnation: s.me().incarnation,
            changes: s.changes(),
            left: false,
            members: BTreeMap::new(),
        };
        c.step(s, "new", Allowed::Nothing);
        c
    }

    /// Checks the state after `step` against the previous one and records it.
    pub fn step(&mut self, s: &Swim, step: &str, allowed: Allowed<'_>) {
        let me = s.me();
        assert_eq!(me.id, ME_ID, "after {step}: this node's id changed");
        assert_eq!(
            me.addr, ME_ADDR,
            "after {step}: this node's address changed"
        );
        let want = if self.left {
            WireState::Left
        } else {
            WireState::Alive
        };
        assert_eq!(
            me.state, want,
            "after {step}: this node's own state changed"
        );
        assert!(
            me.incarnation >= self.incarnation,
            "after {step}: own incarnation went down from {} to {}",
            self.incarnation,
            me.incarnation
        );
        assert!(
            me.incarnation <= MAX_INCARNATION,
            "after {step}: own incarnation {} is over MAX_INCARNATION",
            me.incarnation
        );
        assert!(
            s.changes() >= self.changes,
            "after {step}: the membership version went down"
        );
        assert!(
            s.member(ME_ID).is_none(),
            "after {step}: this node is listed as a member of itself"
        );
        let entries = s.entries();
        let mine: Vec<&MemberEntry> = entries.iter().filter(|e| e.id == ME_ID).collect();
        assert_eq!(
            mine.len(),
            1,
            "after {step}: own entry listed {} times",
            mine.len()
        );
        assert_eq!(mine[0], me, "after {step}: entries() disagrees with me()");
        assert!(
            entries.windows(2).all(|w| w[0].id < w[1].id),
            "after {step}: entries() not sorted by id or has duplicate ids"
        );
        assert!(
            entries.len() - 1 <= api::MAX_MEMBERS,
            "after {step}: {} members, over max_members {}",
            entries.len() - 1,
            api::MAX_MEMBERS
        );
        let mut members = BTreeMap::new();
        for e in entries.iter().filter(|e| e.id != ME_ID) {
            assert!(
                valid_id(&e.id),
                "after {step}: member with an invalid id: {e:?}"
            );
            assert!(
                valid_addr(&e.addr),
                "after {step}: member with an invalid address: {e:?}"
            );
            assert!(
                e.incarnation <= MAX_INCARNATION,
                "after {step}: member over MAX_INCARNATION: {e:?}"
            );
            if let Some((addr, inc)) = self.members.get(&e.id) {
                match allowed {
                    Allowed::Nothing => {
                        assert_eq!(&e.addr, addr, "after {step}: {}'s address changed", e.id);
                    }
                    Allowed::Message { from, merges } => {
                        if &e.addr != addr {
                            assert_eq!(
                                from,
                                Some((e.id.as_str(), e.addr.as_str())),
                                "after {step}: {}'s address changed from {addr} to {} on someone else's word",
                                e.id,
                                e.addr
                            );
                        }
                        assert!(
                            e.incarnation <= inc.saturating_add(merges * MAX_INCARNATION_STEP),
                            "after {step}: {}'s incarnation rose from {inc} to {} in one message (at most {merges} x MAX_INCARNATION_STEP)",
                            e.id,
                            e.incarnation
                        );
                    }
                }
            }
            members.insert(e.id.clone(), (e.addr.clone(), e.incarnation));
        }
        self.members = members;
        self.incarnation = me.incarnation;
        self.changes = s.changes();
    }

    pub fn left(&mut self) {
        self.left = true;
    }
}

/// Timers scheduled and not fired yet; the probe sequence numbers seen.
#[derive(Default)]
struct Pending {
    timers: Vec<Timer>,
    last_probe: u64,
}

impl Pending {
    fn absorb(&mut self, s: &Swim, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Schedule { timer, .. } => {
                    if self.timers.len() >= MAX_TIMERS {
                        self.timers.remove(0);
                    }
                    self.timers.push(timer);
                }
                Action::Ping { ping, .. } => {
                    assert!(
                        ping.members.iter().any(|m| m == s.me()),
                        "a ping does not carry this node's own entry"
                    );
                    if ping.seq != 0 {
                        self.last_probe = ping.seq;
                    }
                }
                Action::PingReq { req, .. } => {
                    assert!(
                        req.members.iter().any(|m| m == s.me()),
                        "a ping-req does not carry this node's own entry"
                    );
                }
            }
        }
    }
}

fn ping(s: &mut Swim, c: &mut Checker, p: &mut Pending, from: api::From<'_>, ping: Ping) {
    let seq = ping.seq;
    let (ack, a) = api::on_ping(s, from, ping);
    c.step(s, "on_ping", Allowed::Message { from, merges: 1 });
    assert_eq!(ack.seq, seq, "the ack answers another ping");
    assert_eq!(&ack.me, s.me(), "the ack's own entry is not this node's");
    p.absorb(s, a);
}

fn ack(s: &mut Swim, c: &mut Checker, p: &mut Pending, ack: Ack, addr: &str) {
    let before = s
        .current_probe()
        .map(|(seq, t, acked)| (seq, t.to_owned(), acked));
    let acker = ack.me.id.clone();
    let a = api::on_ack(s, ack, addr);
    let from = Some((acker.as_str(), addr));
    c.step(s, "on_ack", Allowed::Message { from, merges: 2 });
    if let (Some((seq, target, false)), Some((seq2, _, true))) = (before, s.current_probe()) {
        assert!(
            seq == seq2 && target == acker,
            "probe {seq} of {target} concluded by an ack from {acker}"
        );
    }
    p.absorb(s, a);
}

fn merge(s: &mut Swim, c: &mut Checker, p: &mut Pending, from: api::From<'_>, e: &[MemberEntry]) {
    let a = api::merge(s, from, e);
    c.step(s, "merge", Allowed::Message { from, merges: 1 });
    p.absorb(s, a);
}

fn indirect_reply(
    s: &mut Swim,
    c: &mut Checker,
    p: &mut Pending,
    seq: u64,
    acked: bool,
    e: &[MemberEntry],
) {
    let a = api::on_indirect_reply(s, seq, acked, e);
    c.step(
        s,
        "on_indirect_reply",
        Allowed::Message {
            from: None,
            merges: 1,
        },
    );
    p.absorb(s, a);
}

fn timer(s: &mut Swim, c: &mut Checker, p: &mut Pending, t: Timer) {
    let a = api::on_timer(s, t);
    c.step(s, "on_timer", Allowed::Nothing);
    p.absorb(s, a);
}

fn tick(s: &mut Swim, c: &mut Checker, p: &mut Pending) {
    let a = api::tick(s);
    c.step(s, "tick", Allowed::Nothing);
    p.absorb(s, a);
}

fn probe_failed(s: &mut Swim, c: &mut Checker, p: &mut Pending, seq: u64) {
    let a = api::on_probe_failed(s, seq);
    c.step(s, "on_probe_failed", Allowed::Nothing);
    p.absorb(s, a);
}

fn leave(s: &mut Swim, c: &mut Checker) {
    api::leave(s);
    c.left();
    c.step(s, "leave", Allowed::Nothing);
}

/// Fires every pending timer (and the ones they schedule), bounded.
fn fire_all(s: &mut Swim, c: &mut Checker, p: &mut Pending) {
    let mut fired = 0;
    while !p.timers.is_empty() {
        let t = p.timers.remove(0);
        timer(s, c, p, t);
        fired += 1;
        if fired >= MAX_FIRED {
            p.timers.clear();
        }
    }
}

/// List mode: `entries` as peers would gossip them, through every entry point.
pub fn run_list(entries: &[MemberEntry]) {
    let mut s = api::new_swim(1);
    let mut c = Checker::new(&s);
    let mut p = Pending::default();
    let peer = Some((PEER_ID, PEER_ADDR));

    merge(&mut s, &mut c, &mut p, None, entries);
    merge(&mut s, &mut c, &mut p, peer, entries);
    ping(
        &mut s,
        &mut c,
        &mut p,
        peer,
        Ping {
            seq: 7,
            members: entries.to_vec(),
        },
    );
    for round in 0..4 {
        tick(&mut s, &mut c, &mut p);
        let me = entries
            .get(round)
            .cloned()
            .unwrap_or_else(|| s.me().clone());
        let addr = me.addr.clone();
        let a = Ack {
            seq: p.last_probe,
            me,
            members: entries.to_vec(),
        };
        ack(&mut s, &mut c, &mut p, a, &addr);
        if round == 1 {
            let seq = p.last_probe;
            probe_failed(&mut s, &mut c, &mut p, seq);
            indirect_reply(&mut s, &mut c, &mut p, seq, false, entries);
        }
        fire_all(&mut s, &mut c, &mut p);
    }
    leave(&mut s, &mut c);
    merge(&mut s, &mut c, &mut p, None, entries);
    fire_all(&mut s, &mut c, &mut p);
}

/// A member id or address: mostly from a small pool so that entries collide.
#[derive(Debug, Arbitrary)]
pub enum Name {
    Me,
    Pool(u8),
    Raw(String),
}

impl Name {
    fn id(&self) -> String {
        match self {
            Name::Me => ME_ID.into(),
            Name::Pool(n) => format!("n{}", n % 8),
            Name::Raw(s) => s.clone(),
        }
    }

    fn addr(&self) -> String {
        match self {
            Name::Me => ME_ADDR.into(),
            Name::Pool(n) => format!("n{}:7946", n % 8),
            Name::Raw(s) => s.clone(),
        }
    }
}

#[derive(Debug, Arbitrary)]
pub enum State {
    Alive,
    Suspect,
    Dead,
    Left,
}

/// Incarnations: small ones, and values around the bounds the checks use.
#[derive(Debug, Arbitrary)]
pub enum Incarnation {
    Small(u8),
    /// `k * MAX_INCARNATION_STEP + d` for small `k` and `d`.
    Steps(u8, u8),
    /// Around `MAX_INCARNATION`.
    NearMax(u8),
    Max,
    Raw(u64),
}

impl Incarnation {
    fn value(&self) -> u64 {
        match self {
            Incarnation::Small(n) => u64::from(n % 8),
            Incarnation::Steps(k, d) => u64::from(k % 8) * MAX_INCARNATION_STEP + u64::from(d % 4),
            Incarnation::NearMax(d) => MAX_INCARNATION - 2 + u64::from(d % 4),
            Incarnation::Max => u64::MAX,
            Incarnation::Raw(n) => *n,
        }
    }
}

#[derive(Debug, Arbitrary)]
pub struct Entry {
    id: Name,
    addr: Name,
    state: State,
    incarnation: Incarnation,
}

impl Entry {
    pub fn to_wire(&self) -> MemberEntry {
        MemberEntry {
            id: self.id.id(),
            addr: self.addr.addr(),
            state: match self.state {
                State::Alive => WireState::Alive,
                State::Suspect => WireState::Suspect,
                State::Dead => WireState::Dead,
                State::Left => WireState::Left,
            },
            incarnation: self.incarnation.value(),
        }
    }
}

/// Who vouches for a message: relayed gossip, or a member speaking for itself.
#[derive(Debug, Arbitrary)]
pub enum Voucher {
    Gossip,
    Member { id: Name, addr: Name },
}

/// A probe sequence number: the current probe's, a join's, or any.
#[derive(Debug, Arbitrary)]
pub enum Seq {
    Current,
    Join,
    Raw(u64),
}

#[derive(Debug, Arbitrary)]
pub enum Op {
    Merge {
        from: Voucher,
        entries: Vec<Entry>,
    },
    Ping {
        from: Voucher,
        seq: Seq,
        members: Vec<Entry>,
    },
    Ack {
        seq: Seq,
        me: Entry,
        addr: Name,
        members: Vec<Entry>,
    },
    Tick,
    /// Fires the pending timer with this index (modulo their number).
    FireTimer(u16),
    FireAll,
    /// A timer that was never scheduled (or is stale).
    StrayTimer {
        kind: u8,
        seq: Seq,
        id: Name,
        incarnation: Incarnation,
    },
    ProbeFailed(Seq),
    IndirectReply {
        seq: Seq,
        acked: bool,
        members: Vec<Entry>,
    },
    Leave,
}

fn wire(entries: &[Entry]) -> Vec<MemberEntry> {
    entries.iter().map(Entry::to_wire).collect()
}

/// Ops mode: an arbitrary sequence of gossip, replies, heartbeats and timers.
pub fn run_ops(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(rng_seed) = u.arbitrary::<u64>() else {
        return;
    };
    let mut s = api::new_swim(rng_seed);
    let mut c = Checker::new(&s);
    let mut p = Pending::default();
    let seq_of = |seq: &Seq, p: &Pending| match seq {
        Seq::Current => p.last_probe,
        Seq::Join => 0,
        Seq::Raw(n) => *n,
    };
    let Ok(ops) = u.arbitrary_iter::<Op>() else {
        return;
    };
    for op in ops {
        let Ok(op) = op else { break };
        match op {
            Op::Merge { from, entries } => {
                let v = voucher(&from);
                merge(&mut s, &mut c, &mut p, as_from(&v), &wire(&entries));
            }
            Op::Ping { from, seq, members } => {
                let v = voucher(&from);
                let seq = seq_of(&seq, &p);
                let members = wire(&members);
                ping(&mut s, &mut c, &mut p, as_from(&v), Ping { seq, members });
            }
            Op::Ack {
                seq,
                me,
                addr,
                members,
            } => {
                let a = Ack {
                    seq: seq_of(&seq, &p),
                    me: me.to_wire(),
                    members: wire(&members),
                };
                ack(&mut s, &mut c, &mut p, a, &addr.addr());
            }
            Op::Tick => tick(&mut s, &mut c, &mut p),
            Op::FireTimer(i) => {
                if !p.timers.is_empty() {
                    let t = p.timers.remove(usize::from(i) % p.timers.len());
                    timer(&mut s, &mut c, &mut p, t);
                }
            }
            Op::FireAll => fire_all(&mut s, &mut c, &mut p),
            Op::StrayTimer {
                kind,
                seq,
                id,
                incarnation,
            } => {
                let seq = seq_of(&seq, &p);
                let incarnation = incarnation.value();
                let t = match kind % 4 {
                    0 => Timer::ProbeTimeout { seq },
                    1 => Timer::IndirectTimeout { seq },
                    2 => Timer::SuspectTimeout {
                        id: id.id(),
                        incarnation,
                    },
                    _ => Timer::Forget {
                        id: id.id(),
                        incarnation,
                    },
                };
                timer(&mut s, &mut c, &mut p, t);
            }
            Op::ProbeFailed(seq) => {
                let seq = seq_of(&seq, &p);
                probe_failed(&mut s, &mut c, &mut p, seq);
            }
            Op::IndirectReply {
                seq,
                acked,
                members,
            } => {
                let seq = seq_of(&seq, &p);
                indirect_reply(&mut s, &mut c, &mut p, seq, acked, &wire(&members));
            }
            Op::Leave => leave(&mut s, &mut c),
        }
    }
}

fn voucher(v: &Voucher) -> Option<(String, String)> {
    match v {
        Voucher::Gossip => None,
        Voucher::Member { id, addr } => Some((id.id(), addr.addr())),
    }
}

fn as_from(v: &Option<(String, String)>) -> api::From<'_> {
    v.as_ref().map(|(i, a)| (i.as_str(), a.as_str()))
}

/// The target: a msgpack member list if the input is one, an op sequence otherwise.
pub fn run(data: &[u8]) {
    match hypercache_actors::proto::decode::<Vec<MemberEntry>>(data) {
        Ok(entries) => run_list(&entries),
        Err(_) => run_ops(data),
    }
}

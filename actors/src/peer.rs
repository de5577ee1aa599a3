//! `PeerActor`: one per remote member, the only path to that member for data traffic
//! (replica writes and deletes, reads, hint replay, read repair, anti-entropy,
//! rebalance, drain handoff). Membership probes do not pass here: a probe must not wait
//! behind data, so the membership actor sends them through [`Wire`] directly.
//!
//! - **Batching:** calls that arrive while a request is in flight are coalesced into the
//!   next dist request ([`PeerQueue::cut`]: bounded in calls and bytes). A further
//!   request goes out while one is in flight only when a full batch is waiting, up to
//!   `pipeline` in flight. Each call gets its own result.
//! - **Bounds:** the queue is bounded in calls and bytes. A call that finds it full fails
//!   at once with [`TransportError::QueueFull`]; a replica write among them goes to the
//!   hint queue. A call that waited longer than the peer timeout fails unsent.
//! - **Hints:** a replica write sent with `coordinated` that fails for any reason
//!   but a refusal the peer will repeat (bad request, draining) is queued as a hint
//!   here, so the coordinator never waits for the slow replica nor keeps a task for it.
//!
//! Network waits never stall the mailbox: each batch request runs in a spawned task (at
//! most `pipeline` per peer) that answers its calls and casts [`PeerMsg::Sent`] back.
//! [`PeerClient`] is the mailbox client everything else uses.

use crate::config::PeerLimits;
use crate::metrics::{Metrics, PeerGauges};
use crate::peer_queue::PeerQueue;
use crate::proto::{Call, CallReply, KeyedWrite, Rpc};
use crate::transport::{TransportError, Wire};
use crate::types::ApplyMode;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Where a peer actor puts the writes of failed coordinated calls: the hint queue, as
/// the root wires it (this module does not know the hint queue's mailbox, so the two do
/// not import each other).
#[derive(Clone)]
pub struct HintSink(Arc<HintFn>);

/// What a [`HintSink`] calls: `(peer id, write)`.
type HintFn = dyn Fn(&str, KeyedWrite) + Send + Sync;

impl HintSink {
    pub fn new(put: impl Fn(&str, KeyedWrite) + Send + Sync + 'static) -> Self {
        Self(Arc::new(put))
    }

    fn put(&self, peer: &str, write: KeyedWrite) {
        (self.0)(peer, write)
    }
}

/// Where the result of one call goes.
pub type CallResult = Result<CallReply, TransportError>;

/// One call for the peer, with what to do with its result.
pub struct PeerCall {
    pub call: Call,
    /// After this instant the call is failed unsent.
    pub deadline: Instant,
    /// A call of the coordinator (a client's replica write or read): counted in
    /// `forward_acks_total` / `forward_failures_total`, and a failed replica write is
    /// queued as a hint. `false` for traffic whose sender retries by itself (hint
    /// replay, repairs, rebalance, anti-entropy, drain).
    pub coordinated: bool,
    pub reply: Option<oneshot::Sender<CallResult>>,
    /// The W3C `traceparent` of the client request the call is made for, when traces
    /// are exported ([`crate::trace`]).
    pub trace: Option<String>,
}

/// Messages of a peer actor.
pub enum PeerMsg {
    /// Queue a call for the peer; its result goes to the call's reply.
    Call(PeerCall),
    /// A batch request finished (its calls were answered by the request's task).
    Sent,
    /// The member's dist address changed (from the published view).
    Address(String),
    /// The member left the cluster: fail every queued call (without hints: nobody would
    /// replay them) and stop.
    Retire,
}

/// Start-up arguments.
pub struct PeerArgs {
    /// The member's node id.
    pub peer: String,
    /// Its dist address now.
    pub addr: String,
    pub wire: Wire,
    pub limits: PeerLimits,
    /// How long one batch request may take.
    pub timeout: Duration,
    pub hints: HintSink,
    pub metrics: Arc<Metrics>,
}

/// State: the queue, the requests in flight and the arguments.
pub struct PeerState {
    queue: PeerQueue<PeerCall>,
    in_flight: usize,
    gauges: Arc<PeerGauges>,
    args: PeerArgs,
}

/// The peer actor.
pub struct PeerActor;

/// Whether a refusal by the peer is worth a hint (it may succeed later).
fn retryable(e: &TransportError) -> bool {
    match e {
        TransportError::Refused { code, .. } => code == "INTERNAL" || code == "OVERLOADED",
        // A whole request refused for what it is (malformed, unauthorized, unknown route)
        // fails the same way on replay; server errors and throttling may pass later.
        TransportError::Status { status, .. } => *status >= 500 || matches!(status, 408 | 429),
        TransportError::ProtocolVersion(_)
        | TransportError::PeerLeft
        | TransportError::ClockSkew(_) => false,
        TransportError::Unreachable(_)
        | TransportError::Timeout
        | TransportError::Decode(_)
        | TransportError::Cut
        | TransportError::QueueFull
        | TransportError::UnknownPeer(_)
        | TransportError::Dropped => true,
    }
}

/// Queues the writes of a failed replica call as hints for `peer`.
pub fn hint_failed(hints: &HintSink, peer: &str, call: Call) {
    if let Call::Replicate(r) = call {
        if r.mode == ApplyMode::Normal {
            for write in r.writes {
                hints.put(peer, write);
            }
        }
    }
}

/// Answers one call with a failure (and hints it when asked to and worth it).
fn fail(c: PeerCall, e: TransportError, peer: &str, hints: &HintSink, metrics: &Metrics) {
    if c.coordinated {
        Metrics::inc(&metrics.forward_failures_total);
    }
    if c.coordinated && retryable(&e) {
        hint_failed(hints, peer, c.call);
    }
    if let Some(r) = c.reply {
        let _ = r.send(Err(e));
    }
}

impl PeerState {
    fn export(&self) {
        let g = &self.gauges;
        g.queue_items.store(self.queue.len() as u64, Relaxed);
        g.queue_items_max
            .fetch_max(self.queue.len() as u64, Relaxed);
        g.queue_bytes.store(self.queue.bytes() as u64, Relaxed);
        g.in_flight.store(self.in_flight as u64, Relaxed);
    }

    fn enqueue(&mut self, c: PeerCall) {
        let weight = c.call.weight();
        let deadline = c.deadline;
        if let Err(c) = self.queue.push(c, weight, deadline) {
            Metrics::inc(&self.args.metrics.peer_queue_overflows_total);
            Metrics::inc(&self.gauges.overflows_total);
            fail(
                c,
                TransportError::QueueFull,
                &self.args.peer,
                &self.args.hints,
                &self.args.metrics,
            );
        }
    }

    /// Sends batches until `pipeline` requests are in flight or the queue is empty.
    fn pump(&mut self, myself: &ActorRef<PeerMsg>) {
        while self.in_flight < self.args.limits.pipeline.max(1) && !self.queue.is_empty() {
            // With a request in flight, only a full batch earns another one; the rest
            // waits and is coalesced into the next request.
            if self.in_flight > 0 && !self.queue.has_full_batch() {
                break;
            }
            let cut = self.queue.cut(Instant::now());
            for c in cut.expired {
                Metrics::inc(&self.args.metrics.peer_calls_expired_total);
                fail(
                    c,
                    TransportError::Timeout,
                    &self.args.peer,
                    &self.args.hints,
                    &self.args.metrics,
                );
            }
            if cut.batch.is_empty() {
                continue;
            }
            self.in_flight += 1;
            let n = cut.batch.len() as u64;
            Metrics::inc(&self.args.metrics.peer_batches_total);
            self.args
                .metrics
                .peer_batch_calls_total
                .fetch_add(n, Relaxed);
            Metrics::inc(&self.gauges.batches_total);
            self.gauges.calls_total.fetch_add(n, Relaxed);
            self.gauges.max_batch.fetch_max(n, Relaxed);
            let mut traces = Vec::new();
            let (calls, meta): (Vec<Call>, Vec<_>) = cut
                .batch
                .into_iter()
                .enumerate()
                .map(|(i, c)| {
                    if let Some(t) = c.trace {
                        traces.push((i as u32, t));
                    }
                    (c.call, (c.reply, c.coordinated))
                })
                .unzip();
            let wire = self.args.wire.clone();
            let addr = self.args.addr.clone();
            let peer = self.args.peer.clone();
            let hints = self.args.hints.clone();
            let metrics = self.args.metrics.clone();
            let timeout = self.args.timeout;
            let me = myself.clone();
            tokio::spawn(async move {
                let result = wire.send_batch(&addr, &calls, &traces, timeout).await;
                match result {
                    Ok(results) => {
                        for ((call, (reply, hint)), r) in calls.into_iter().zip(meta).zip(results) {
                            let r = r.map_err(|e| TransportError::Refused {
                                code: e.code,
                                message: e.message,
                            });
                            match r {
                                Ok(ok) => {
                                    if hint {
                                        Metrics::inc(&metrics.forward_acks_total);
                                    }
                                    if let Some(reply) = reply {
                                        let _ = reply.send(Ok(ok));
                                    }
                                }
                                Err(e) => {
                                    let c = PeerCall {
                                        call,
                                        deadline: Instant::now(),
                                        coordinated: hint,
                                        reply,
                                        trace: None,
                                    };
                                    fail(c, e, &peer, &hints, &metrics);
                                }
                            }
                        }
                    }
                    Err(e) => {
                        Metrics::inc(&metrics.peer_batch_failures_total);
                        tracing::debug!(%peer, %addr, error = %e, calls = calls.len(), "batch to peer failed");
                        for (call, (reply, hint)) in calls.into_iter().zip(meta) {
                            let c = PeerCall {
                                call,
                                deadline: Instant::now(),
                                coordinated: hint,
                                reply,
                                trace: None,
                            };
                            fail(c, e.clone(), &peer, &hints, &metrics);
                        }
                    }
                }
                let _ = me.cast(PeerMsg::Sent);
            });
        }
        self.export();
    }
}

impl Actor for PeerActor {
    type Msg = PeerMsg;
    type State = PeerState;
    type Arguments = PeerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<PeerMsg>,
        args: PeerArgs,
    ) -> Result<PeerState, ActorProcessingErr> {
        let gauges = args.metrics.peers.of(&args.peer);
        gauges.in_flight.store(0, Relaxed);
        Ok(PeerState {
            queue: PeerQueue::new(args.limits),
            in_flight: 0,
            gauges,
            args,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<PeerMsg>,
        msg: PeerMsg,
        state: &mut PeerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PeerMsg::Call(c) => state.enqueue(c),
            PeerMsg::Sent => state.in_flight = state.in_flight.saturating_sub(1),
            PeerMsg::Retire => {
                for c in state.queue.take_all() {
                    fail(
                        c,
                        TransportError::PeerLeft,
                        &state.args.peer,
                        &state.args.hints,
                        &state.args.metrics,
                    );
                }
                state.export();
                myself.stop(Some("member left".into()));
                return Ok(());
            }
            PeerMsg::Address(addr) => {
                if addr != state.args.addr {
                    tracing::info!(peer = %state.args.peer, from = %state.args.addr, to = %addr, "peer address changed");
                    state.args.addr = addr;
                }
            }
        }
        state.pump(&myself);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<PeerMsg>,
        state: &mut PeerState,
    ) -> Result<(), ActorProcessingErr> {
        for c in state.queue.take_all() {
            fail(
                c,
                TransportError::Dropped,
                &state.args.peer,
                &state.args.hints,
                &state.args.metrics,
            );
        }
        state.export();
        Ok(())
    }
}

/// The table of peer actors by member id; the root supervisor writes it as membership
/// changes, [`PeerClient`]s read it per call.
#[derive(Clone, Default)]
pub struct PeerTable(Arc<RwLock<HashMap<String, ActorRef<PeerMsg>>>>);

impl PeerTable {
    pub fn get(&self, peer: &str) -> Option<ActorRef<PeerMsg>> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(peer)
            .cloned()
    }

    pub(crate) fn insert(&self, peer: &str, actor: ActorRef<PeerMsg>) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer.to_owned(), actor);
    }

    pub(crate) fn remove(&self, peer: &str) -> Option<ActorRef<PeerMsg>> {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(peer)
    }

    /// Ids of every peer with an actor.
    pub fn peers(&self) -> Vec<String> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// The peer whose actor has this id.
    pub(crate) fn peer_of(&self, id: ractor::ActorId) -> Option<String> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(_, a)| a.get_id() == id)
            .map(|(p, _)| p.clone())
    }

    pub(crate) fn all(&self) -> Vec<ActorRef<PeerMsg>> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// The mailbox client of the peer actors: what coordinators, repairs, hint replay,
/// anti-entropy, rebalance and drain use to reach a peer by its id.
#[derive(Clone)]
pub struct PeerClient {
    table: PeerTable,
    hints: HintSink,
    metrics: Arc<Metrics>,
    timeout: Duration,
}

impl PeerClient {
    /// `timeout` bounds how long a call may wait in a queue and then on the wire.
    pub fn new(
        table: PeerTable,
        hints: HintSink,
        metrics: Arc<Metrics>,
        timeout: Duration,
    ) -> Self {
        Self {
            table,
            hints,
            metrics,
            timeout,
        }
    }

    /// Queues `call` for `peer` without waiting; the receiver yields its result. See
    /// [`PeerCall::coordinated`].
    pub fn send(&self, peer: &str, call: Call, coordinated: bool) -> oneshot::Receiver<CallResult> {
        let (tx, rx) = oneshot::channel();
        let c = PeerCall {
            call,
            deadline: Instant::now() + self.timeout,
            coordinated,
            reply: Some(tx),
            // Only a client's calls carry its trace; background traffic starts none.
            trace: if coordinated {
                crate::trace::current()
            } else {
                None
            },
        };
        let Some(actor) = self.table.get(peer) else {
            fail(
                c,
                TransportError::UnknownPeer(peer.to_owned()),
                peer,
                &self.hints,
                &self.metrics,
            );
            return rx;
        };
        if let Err(ractor::MessagingErr::SendErr(PeerMsg::Call(c))) = actor.cast(PeerMsg::Call(c)) {
            fail(c, TransportError::Dropped, peer, &self.hints, &self.metrics);
        }
        rx
    }

    /// Queues `write` as a hint for `peer` (a home owner declared dead), delivered when
    /// it is back.
    pub fn hint(&self, peer: &str, write: KeyedWrite) {
        self.hints.put(peer, write);
    }

    /// Calls `req` on `peer` and waits for its typed reply.
    pub async fn call<R: Rpc>(&self, peer: &str, req: R) -> Result<R::Reply, TransportError> {
        let rx = self.send(peer, req.into_call(), false);
        // The actor answers every call within two timeouts (queue wait, then the wire);
        // the extra bound covers an actor that stops without answering.
        match tokio::time::timeout(self.timeout * 2 + Duration::from_secs(1), rx).await {
            Ok(Ok(r)) => r.and_then(|reply| {
                R::from_reply(reply).ok_or_else(|| {
                    TransportError::Decode("peer answered another reply type".into())
                })
            }),
            Ok(Err(_)) => Err(TransportError::Dropped),
            Err(_) => Err(TransportError::Timeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_that_may_pass_are_hinted() {
        let status = |s| TransportError::Status {
            status: s,
            body: String::new(),
        };
        let refused = |c: &str| TransportError::Refused {
            code: c.into(),
            message: String::new(),
        };
        for e in [
            TransportError::Timeout,
            TransportError::Unreachable("x".into()),
            TransportError::QueueFull,
            TransportError::Dropped,
            status(503),
            status(429),
            refused("INTERNAL"),
            refused("OVERLOADED"),
        ] {
            assert!(retryable(&e), "{e}");
        }
        for e in [
            status(400),
            status(401),
            status(404),
            refused("BAD_REQUEST"),
            refused("DRAINING"),
            TransportError::ProtocolVersion("2 vs 3".into()),
            TransportError::PeerLeft,
        ] {
            assert!(!retryable(&e), "{e}");
        }
    }
}

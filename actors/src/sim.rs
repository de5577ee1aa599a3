//! The in-memory network of the cluster simulator: a [`Transport`] that hands request
//! bytes straight to another node's [`DistService`] in the same process, with seeded
//! faults — loss of requests or replies, duplicates, random delay (so reordering), one-
//! and two-way partitions, and nodes that crash (unregister) and come back.
//!
//! Every random choice comes from one seeded RNG, so a scenario on a paused tokio clock
//! (`#[tokio::test(start_paused = true)]`, single-threaded) replays from its seed. The
//! bytes are the same as on the HTTP transport; only sockets and HTTP are left out.

use crate::service::{DistService, Route, ServiceError};
use crate::transport::{BoxFuture, Transport, TransportError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The fault rules of the whole network.
#[derive(Debug, Clone, Default)]
pub struct SimFaults {
    /// Probability that a request is lost before it arrives.
    pub drop_request: f64,
    /// Probability that a reply is lost after the request was handled.
    pub drop_reply: f64,
    /// Probability that a request is delivered twice (the second reply is discarded).
    pub duplicate: f64,
    /// Extra one-way latency, drawn uniformly from this range for each hop.
    pub delay: (Duration, Duration),
    /// Links cut from the first address to the second (one way).
    pub cut: HashSet<(String, String)>,
    /// Addresses whose requests are answered only after this long (a frozen process).
    pub slow: HashMap<String, Duration>,
}

struct NetState {
    nodes: HashMap<String, DistService>,
    faults: SimFaults,
    rng: StdRng,
}

/// The simulated network; shared by every node of one simulation.
pub struct SimNet {
    state: Mutex<NetState>,
}

/// What the network decided for one request.
struct Plan {
    target: Option<DistService>,
    cut: bool,
    drop_request: bool,
    drop_reply: bool,
    duplicate: bool,
    delay_out: Duration,
    delay_back: Duration,
}

impl SimNet {
    pub fn new(seed: u64) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(NetState {
                nodes: HashMap::new(),
                faults: SimFaults::default(),
                rng: StdRng::seed_from_u64(seed),
            }),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut NetState) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The transport a node at `from` sends through.
    pub fn transport(self: &Arc<Self>, from: &str) -> Arc<dyn Transport> {
        Arc::new(SimTransport {
            net: self.clone(),
            from: from.to_owned(),
        })
    }

    /// Makes the node at `addr` reachable.
    pub fn register(&self, addr: &str, service: DistService) {
        self.with(|s| s.nodes.insert(addr.to_owned(), service));
    }

    /// Makes the node at `addr` unreachable (a crash, as its peers see it).
    pub fn unregister(&self, addr: &str) {
        self.with(|s| s.nodes.remove(addr));
    }

    /// Replaces the fault rules.
    pub fn set_faults(&self, faults: SimFaults) {
        self.with(|s| s.faults = faults);
    }

    /// Changes the fault rules in place.
    pub fn update_faults(&self, f: impl FnOnce(&mut SimFaults)) {
        self.with(|s| f(&mut s.faults));
    }

    /// Cuts every link between the two groups, both ways.
    pub fn partition(&self, a: &[&str], b: &[&str]) {
        self.update_faults(|f| {
            for x in a {
                for y in b {
                    f.cut.insert(((*x).to_owned(), (*y).to_owned()));
                    f.cut.insert(((*y).to_owned(), (*x).to_owned()));
                }
            }
        });
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.set_faults(SimFaults::default());
    }

    fn plan(&self, from: &str, to: &str) -> Plan {
        self.with(|s| {
            let f = &s.faults;
            let (lo, hi) = f.delay;
            let draw = |rng: &mut StdRng| {
                if hi > lo {
                    lo + Duration::from_micros(rng.random_range(0..=(hi - lo).as_micros() as u64))
                } else {
                    lo
                }
            };
            let cut = f.cut.contains(&(from.to_owned(), to.to_owned()));
            let (p_req, p_rep, p_dup) = (f.drop_request, f.drop_reply, f.duplicate);
            let slow = f.slow.get(to).copied().unwrap_or_default();
            let drop_request = s.rng.random_bool(p_req.clamp(0.0, 1.0));
            let drop_reply = s.rng.random_bool(p_rep.clamp(0.0, 1.0));
            let duplicate = s.rng.random_bool(p_dup.clamp(0.0, 1.0));
            let delay_out = draw(&mut s.rng) + slow;
            let delay_back = draw(&mut s.rng);
            Plan {
                target: s.nodes.get(to).cloned(),
                cut,
                drop_request,
                drop_reply,
                duplicate,
                delay_out,
                delay_back,
            }
        })
    }
}

/// One node's end of the simulated network.
struct SimTransport {
    net: Arc<SimNet>,
    from: String,
}

fn route_of(path: &str) -> Route {
    if path == crate::proto::PROBE_PATH {
        Route::Probe
    } else {
        Route::Batch
    }
}

impl Transport for SimTransport {
    fn post(
        &self,
        addr: &str,
        path: &'static str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<Result<Vec<u8>, TransportError>> {
        let plan = self.net.plan(&self.from, addr);
        let addr = addr.to_owned();
        let route = route_of(path);
        let exchange = async move {
            if plan.cut {
                return Err(TransportError::Cut);
            }
            let Some(target) = plan.target else {
                return Err(TransportError::Unreachable(format!("{addr}: no such node")));
            };
            tokio::time::sleep(plan.delay_out).await;
            if plan.drop_request {
                return std::future::pending().await;
            }
            if plan.duplicate {
                let (t, b) = (target.clone(), body.clone());
                tokio::spawn(async move {
                    let _ = t.handle(route, &b).await;
                });
            }
            let reply = target.handle(route, &body).await;
            tokio::time::sleep(plan.delay_back).await;
            if plan.drop_reply {
                return std::future::pending().await;
            }
            reply.map_err(|e| TransportError::Status {
                status: match e {
                    ServiceError::Cut => 503,
                    _ => 400,
                },
                body: e.to_string(),
            })
        };
        Box::pin(async move {
            tokio::time::timeout(timeout, exchange)
                .await
                .unwrap_or(Err(TransportError::Timeout))
        })
    }
}

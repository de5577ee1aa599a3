//! How a node reaches its peers: the [`Transport`] trait (POST bytes to a peer's dist
//! listener), its HTTP implementation over a pooled keep-alive `reqwest` client, a
//! fault-injecting wrapper for tests, and [`Peers`], the typed, enveloped RPC layer every
//! actor uses.
//!
//! Owns connections and encoding. Does not own retries: callers decide (hints, probes).

use crate::hlc::Hlc;
use crate::proto::{decode, encode, Envelope, Rpc, PROTOCOL_VERSION};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Why a peer call failed. Every variant is retryable from the caller's point of view.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TransportError {
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    #[error("peer call timed out")]
    Timeout,
    #[error("peer answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("bad reply from peer: {0}")]
    Decode(String),
    #[error("link cut by fault injection")]
    Cut,
}

impl TransportError {
    fn from_reqwest(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            TransportError::Timeout
        } else {
            TransportError::Unreachable(e.to_string())
        }
    }
}

/// Sends one request body to a peer and returns the reply body.
pub trait Transport: Send + Sync + 'static {
    /// POSTs `body` to `path` on the dist listener at `addr` (`host:port`).
    fn post(
        &self,
        addr: &str,
        path: &'static str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<Result<Vec<u8>, TransportError>>;
}

/// The production transport: HTTP/1.1 with pooled keep-alive connections per peer.
pub struct HttpTransport {
    client: reqwest::Client,
    auth: Option<String>,
}

impl HttpTransport {
    /// `token` is sent as `Authorization: Bearer <token>` on every call. Fails only if
    /// the HTTP client cannot be built (no fall-back to a client without these settings).
    pub fn new(token: Option<String>) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            client,
            auth: token.map(|t| format!("Bearer {t}")),
        })
    }
}

impl Transport for HttpTransport {
    fn post(
        &self,
        addr: &str,
        path: &'static str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<Result<Vec<u8>, TransportError>> {
        let mut req = self
            .client
            .post(format!("http://{addr}{path}"))
            .header("content-type", "application/msgpack")
            .timeout(timeout)
            .body(body);
        if let Some(a) = &self.auth {
            req = req.header("authorization", a);
        }
        Box::pin(async move {
            let resp = req.send().await.map_err(TransportError::from_reqwest)?;
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await.map_err(TransportError::from_reqwest)?;
            if status != 200 {
                return Err(TransportError::Status {
                    status,
                    body: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
                });
            }
            Ok(bytes.to_vec())
        })
    }
}

/// Link faults for tests: which peers this node cannot talk to, both ways.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FaultRules {
    /// Cut every link (this node is partitioned away).
    #[serde(default)]
    pub isolated: bool,
    /// Dist addresses of peers whose links are cut, both directions.
    #[serde(default)]
    pub cut: HashSet<String>,
    /// Extra latency added to every outbound call, in milliseconds.
    #[serde(default)]
    pub delay_ms: u64,
    /// Fraction of outbound calls dropped (0.0 to 1.0).
    #[serde(default)]
    pub drop_rate: f64,
}

/// Shared, changeable fault rules.
#[derive(Debug, Default)]
pub struct Faults {
    rules: RwLock<FaultRules>,
}

impl Faults {
    pub fn set(&self, rules: FaultRules) {
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = rules;
    }

    pub fn get(&self) -> FaultRules {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// True when traffic to or from the peer at `addr` is cut.
    pub fn blocks(&self, addr: &str) -> bool {
        let r = self.rules.read().unwrap_or_else(|p| p.into_inner());
        r.isolated || r.cut.contains(addr)
    }
}

/// Wraps a transport and applies [`Faults`] to every outbound call.
pub struct FaultyTransport<T> {
    pub inner: T,
    pub faults: Arc<Faults>,
}

impl<T: Transport> Transport for FaultyTransport<T> {
    fn post(
        &self,
        addr: &str,
        path: &'static str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<Result<Vec<u8>, TransportError>> {
        let rules = self.faults.get();
        if rules.isolated || rules.cut.contains(addr) {
            return Box::pin(async { Err(TransportError::Cut) });
        }
        if rules.drop_rate > 0.0 && rand::random::<f64>() < rules.drop_rate {
            return Box::pin(async { Err(TransportError::Cut) });
        }
        let call = self.inner.post(addr, path, body, timeout);
        let delay = Duration::from_millis(rules.delay_ms);
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            call.await
        })
    }
}

/// Typed, enveloped calls to peers. Every call stamps the envelope with this node's id,
/// address and clock, and merges the clock of the reply.
#[derive(Clone)]
pub struct Peers {
    transport: Arc<dyn Transport>,
    me: Arc<str>,
    my_addr: Arc<str>,
    hlc: Arc<Hlc>,
}

impl Peers {
    pub fn new(transport: Arc<dyn Transport>, me: &str, my_addr: &str, hlc: Arc<Hlc>) -> Self {
        Self {
            transport,
            me: me.into(),
            my_addr: my_addr.into(),
            hlc,
        }
    }

    /// Wraps a body in this node's envelope.
    pub fn envelope<T>(&self, body: T) -> Envelope<T> {
        Envelope {
            v: PROTOCOL_VERSION,
            from: self.me.to_string(),
            from_addr: self.my_addr.to_string(),
            hlc: self.hlc.last(),
            body,
        }
    }

    /// Calls `req` on the peer at `addr` and returns its typed reply.
    pub async fn call<R: Rpc>(
        &self,
        addr: &str,
        req: R,
        timeout: Duration,
    ) -> Result<R::Reply, TransportError> {
        let body = encode(&self.envelope(req));
        let bytes = self.transport.post(addr, R::PATH, body, timeout).await?;
        let env: Envelope<R::Reply> =
            decode(&bytes).map_err(|e| TransportError::Decode(e.to_string()))?;
        if !self.hlc.observe(env.hlc, crate::types::now_ms()) {
            return Err(TransportError::Decode(
                "peer clock is too far ahead (more than 60 s)".into(),
            ));
        }
        Ok(env.body)
    }
}

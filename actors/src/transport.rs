//! How a node reaches its peers: the [`Transport`] trait (POST bytes to a peer's dist
//! listener), its HTTP implementation over a pooled keep-alive `reqwest` client, a
//! fault-injecting wrapper for tests, and [`Wire`], the enveloped batch layer on top.
//! The in-memory transport of the cluster simulator lives in [`crate::sim`].
//!
//! Owns connections and encoding. Does not own queues, batching or retries: the
//! [`crate::peer::PeerActor`]s and their callers decide (hints, probes).

use crate::hlc::Hlc;
use crate::proto::{
    decode_envelope, encode, BatchRef, BatchReply, Call, CallReply, DecodeError, Envelope,
    ItemError, Rpc, BATCH_PATH, CLOCK_SKEW_CODE, MAX_DIST_BODY, PROBE_PATH, PROTOCOL_VERSION,
    VERSION_MISMATCH_CODE,
};
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
    /// The peer refused this call (the other calls of its batch are unaffected).
    #[error("peer refused the call ({code}): {message}")]
    Refused { code: String, message: String },
    /// The peer speaks another protocol version.
    #[error("protocol version mismatch: {0}")]
    ProtocolVersion(String),
    /// The queue to this peer is full (bounded in items and bytes).
    #[error("queue to peer is full")]
    QueueFull,
    /// No peer actor for this member (not in the member list, or left).
    #[error("no peer actor for {0}")]
    UnknownPeer(String),
    /// The peer actor stopped before answering (restart or shutdown).
    #[error("peer actor stopped before answering")]
    Dropped,
    /// The member left the cluster while the call waited for it.
    #[error("the peer left the cluster")]
    PeerLeft,
    /// The two nodes' clocks differ by more than the allowed drift (fails the same way
    /// until an operator fixes a clock).
    #[error("clock skew with the peer: {0}")]
    ClockSkew(String),
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
    /// `http` or `https`.
    scheme: &'static str,
}

impl HttpTransport {
    /// `token` is sent as `Authorization: Bearer <token>` on every call. Fails only if
    /// the HTTP client cannot be built (no fall-back to a client without these settings).
    ///
    /// `pool_idle` is how long an unused connection is kept: it must stay below the
    /// peers' idle keep-alive timeout, or a request could be sent on a connection the
    /// peer is closing.
    ///
    /// With `tls`, peers are called over HTTPS with that configuration (its roots are
    /// the cluster's CA; it presents this node's certificate).
    pub fn new(
        token: Option<String>,
        pool_idle: Duration,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> Result<Self, reqwest::Error> {
        // reqwest is built with rustls but no default crypto provider: every client it
        // builds (TLS or not) needs a process-wide one. Installing it twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .pool_idle_timeout(pool_idle)
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true);
        let scheme = match tls {
            Some(config) => {
                builder = builder.use_preconfigured_tls((*config).clone());
                "https"
            }
            None => "http",
        };
        Ok(Self {
            client: builder.build()?,
            auth: token.map(|t| format!("Bearer {t}")),
            scheme,
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
            .post(format!("{}://{addr}{path}", self.scheme))
            .header("content-type", "application/msgpack")
            .timeout(timeout)
            .body(body);
        if let Some(a) = &self.auth {
            req = req.header("authorization", a);
        }
        Box::pin(async move {
            let mut resp = req.send().await.map_err(TransportError::from_reqwest)?;
            let status = resp.status().as_u16();
            // A reply is read up to the same cap as a request: a peer cannot make this
            // node buffer without bound.
            if resp
                .content_length()
                .is_some_and(|n| n > MAX_DIST_BODY as u64)
            {
                return Err(TransportError::Decode(format!(
                    "reply of {} bytes is over the {MAX_DIST_BODY}-byte cap",
                    resp.content_length().unwrap_or_default()
                )));
            }
            let mut bytes = Vec::with_capacity(
                resp.content_length()
                    .map_or(0, |n| n as usize)
                    .min(MAX_DIST_BODY),
            );
            while let Some(chunk) = resp.chunk().await.map_err(TransportError::from_reqwest)? {
                if bytes.len() + chunk.len() > MAX_DIST_BODY {
                    return Err(TransportError::Decode(format!(
                        "reply is over the {MAX_DIST_BODY}-byte cap"
                    )));
                }
                bytes.extend_from_slice(&chunk);
            }
            if status != 200 {
                return Err(TransportError::Status {
                    status,
                    body: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
                });
            }
            Ok(bytes)
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

/// The enveloped batch calls every peer message travels in. Every call stamps the
/// envelope with this node's id, address and clock, and merges the clock of the reply.
/// The [`crate::peer::PeerActor`]s send data traffic through it; membership sends its
/// probes through it directly (one call per batch), so a probe never waits behind data.
#[derive(Clone)]
pub struct Wire {
    transport: Arc<dyn Transport>,
    me: Arc<str>,
    my_addr: Arc<str>,
    hlc: Arc<Hlc>,
}

impl Wire {
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
            now_ms: Some(crate::types::now_ms()),
            body,
        }
    }

    /// Sends `calls` to the peer at `addr` as one batch; one result per call, in order.
    pub async fn send_batch(
        &self,
        addr: &str,
        calls: &[Call],
        traces: &[(u32, String)],
        timeout: Duration,
    ) -> Result<Vec<Result<CallReply, ItemError>>, TransportError> {
        let n = calls.len();
        let body = encode(&self.envelope(BatchRef { calls, traces }));
        let path = if calls.iter().all(|c| matches!(c, Call::Ping(_))) {
            PROBE_PATH
        } else {
            BATCH_PATH
        };
        let bytes = match self.transport.post(addr, path, body, timeout).await {
            Err(TransportError::Status { status: 400, body })
                if body.contains(VERSION_MISMATCH_CODE) =>
            {
                tracing::warn!(peer = %addr, reply = %body, "peer speaks another protocol version; its calls fail until both run the same version");
                return Err(TransportError::ProtocolVersion(body));
            }
            Err(TransportError::Status { status: 400, body }) if body.contains(CLOCK_SKEW_CODE) => {
                tracing::warn!(peer = %addr, reply = %body, "peer refused a request: the clocks differ by more than the allowed drift; fix the clocks (NTP)");
                return Err(TransportError::ClockSkew(body));
            }
            other => other?,
        };
        let env: Envelope<BatchReply> = decode_envelope(&bytes).map_err(|e| match e {
            DecodeError::Version { got } => TransportError::ProtocolVersion(format!(
                "peer answered with protocol version {got}"
            )),
            DecodeError::Malformed(m) => TransportError::Decode(m),
        })?;
        if env.body.results.len() != n {
            return Err(TransportError::Decode(format!(
                "peer answered {} results for {n} calls",
                env.body.results.len()
            )));
        }
        if !self.hlc.observe(env.hlc, crate::types::now_ms()) {
            // The peer checks clocks before it applies anything, so this is rare (a
            // peer that predates the check, or a clock stepped between the two).
            return Err(TransportError::ClockSkew(
                "peer clock is too far ahead (more than 60 s)".into(),
            ));
        }
        Ok(env.body.results)
    }

    /// Calls `req` alone on the peer at `addr` and returns its typed reply.
    pub async fn call<R: Rpc>(
        &self,
        addr: &str,
        req: R,
        timeout: Duration,
    ) -> Result<R::Reply, TransportError> {
        let mut results = self
            .send_batch(addr, &[req.into_call()], &[], timeout)
            .await?;
        typed::<R>(
            results
                .pop()
                .ok_or_else(|| TransportError::Decode("empty reply".into()))?,
        )
    }
}

/// Turns one batch result into `R`'s reply type.
pub fn typed<R: Rpc>(result: Result<CallReply, ItemError>) -> Result<R::Reply, TransportError> {
    match result {
        Ok(reply) => R::from_reply(reply)
            .ok_or_else(|| TransportError::Decode("peer answered another reply type".into())),
        Err(e) => Err(TransportError::Refused {
            code: e.code,
            message: e.message,
        }),
    }
}

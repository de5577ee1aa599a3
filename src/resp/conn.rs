//! The RESP listener's accept loop and connections. Each connection is one task that
//! reads commands, runs them one after another (so a pipelined `SET` then `GET` of the
//! same key sees the write) and writes the replies in order, several per write when the
//! client pipelines. It is a mailbox client of the node like the HTTP handlers: every
//! read and write goes through [`NodeHandle`]'s coordinator; the task owns no data.
//!
//! Bounds, shared with the HTTP client listener where a bound is per node:
//! - connections: at most `HYPERCACHE_MAX_CONNECTIONS` on this listener; past it a
//!   connection gets `-ERR max number of clients reached` and is closed;
//! - in flight: a command that touches the cache takes a slot of the client listener's
//!   `HYPERCACHE_MAX_INFLIGHT` bound (`-TRYAGAIN` when none is free);
//! - memory: a connection buffers up to 64 KiB freely; a command larger than that takes
//!   its size from the client listener's buffer budget (`HYPERCACHE_CLIENT_BUFFER_BYTES`)
//!   first, or gets `-ERR OVERLOADED` and is closed; replies are written out every
//!   64 KiB, and one `MGET` reply is capped at [`MAX_REPLY_BYTES`];
//! - time: a connection silent for `HYPERCACHE_IDLE_TIMEOUT` between commands, or whose
//!   replies go unread that long, is closed; a command that has started to arrive must
//!   be complete within `HYPERCACHE_BODY_READ_TIMEOUT`.
//!
//! Malformed input gets `-ERR Protocol error: ...` and the connection is closed; an
//! unknown command or a bad argument gets an error reply and the connection stays.

use super::codec::{Decoder, Limits, Out};
use super::command::{Command, CommandQuery, Refusal, SetCondition, Spec, TABLE};
use crate::auth::{BasicRefused, Identity, Policy, Resolved, Scope};
use crate::config::Config;
use crate::http::body::{BodyLimits, Held};
use crate::http::serve::{PeerAddr, TlsPeer};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use hypercache_actors::metrics::{Metrics, ROUTES};
use hypercache_actors::types::{now_ms, validate_key, Stored, MAX_KEY_BYTES};
use hypercache_actors::{CacheError, NodeHandle};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// Bytes a connection may buffer without taking them from the listener's budget.
const FREE_BUFFER: usize = 64 << 10;
/// Pending replies are written out once they reach this size.
const FLUSH_AT: usize = 64 << 10;
/// Most value bytes one `MGET` reply may carry.
pub const MAX_REPLY_BYTES: usize = 64 << 20;
/// Keys of one multi-key command worked on at once.
const KEY_CONCURRENCY: usize = 32;
/// Smallest whole-command bound, whatever the value limit.
const MIN_COMMAND_BYTES: usize = 64 << 20;

/// Everything the listener's connections share; built once per node.
pub struct RespContext {
    node: Arc<NodeHandle>,
    config: Arc<Config>,
    inflight: Arc<Semaphore>,
    buffers: BodyLimits,
    /// The client listener's identities (AUTH resolves against them).
    policy: Arc<Policy>,
    /// The client API's TLS (`HYPERCACHE_API_TLS_*`), without its ALPN list (RESP
    /// clients do not offer `http/1.1`).
    tls: Option<tokio_rustls::TlsAcceptor>,
    protected: bool,
    limits: Limits,
    started: Instant,
    next_id: AtomicU64,
}

impl RespContext {
    /// `inflight` is the client listener's in-flight bound and `buffers` its buffer
    /// budget: RESP and HTTP clients share both.
    pub fn new(
        node: Arc<NodeHandle>,
        config: Arc<Config>,
        inflight: Arc<Semaphore>,
        buffers: BodyLimits,
        policy: Arc<Policy>,
    ) -> Self {
        let max_bulk = (config.max_value_bytes as usize).max(MAX_KEY_BYTES);
        Self {
            policy,
            tls: config.api_tls.as_ref().map(|t| {
                let mut server = (*t.server).clone();
                server.alpn_protocols.clear();
                tokio_rustls::TlsAcceptor::from(Arc::new(server))
            }),
            protected: config.protected_mode
                && config.auth_token.is_none()
                && config.auth_config.is_none()
                && config.oidc.is_none(),
            limits: Limits {
                max_bulk,
                max_command: MIN_COMMAND_BYTES.max(max_bulk.saturating_add(1 << 20)),
            },
            node,
            config,
            inflight,
            buffers,
            started: Instant::now(),
            next_id: AtomicU64::new(1),
        }
    }

    fn metrics(&self) -> &Metrics {
        self.node.metrics()
    }
}

/// Serves RESP on `listener` until `stop` turns true; then stops accepting, lets the
/// command being run on each connection finish and closes the connections. The task
/// ends when every connection has closed.
pub fn serve(
    listener: TcpListener,
    ctx: Arc<RespContext>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(ctx.config.max_connections));
        let mut conns = JoinSet::new();
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "RESP accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stopped(&mut stop) => break,
            };
            while conns.try_join_next().is_some() {}
            let m = ctx.metrics();
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                Metrics::inc(&m.resp_connections_refused_total);
                if ctx.tls.is_none() {
                    refuse(&stream, MAX_CLIENTS);
                }
                continue;
            };
            if ctx.protected && !PeerAddr(peer).is_loopback() {
                Metrics::inc(&m.resp_connections_refused_total);
                Metrics::inc(&m.requests_protected_mode_total);
                if ctx.tls.is_none() {
                    refuse(&stream, DENIED);
                }
                continue;
            }
            Metrics::inc(&m.resp_connections_total);
            let ctx = ctx.clone();
            let stop = stop.clone();
            let _ = stream.set_nodelay(true);
            conns.spawn(async move {
                let _slot = slot;
                ctx.metrics().resp_connections.fetch_add(1, Relaxed);
                match ctx.tls.clone() {
                    None => Connection::new(&ctx, stream, None).run(stop).await,
                    Some(acceptor) => {
                        let timeout = ctx.config.header_read_timeout;
                        let m = ctx.metrics();
                        match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => {
                                let peer = TlsPeer {
                                    client_cn: crate::tls::client_cn(tls.get_ref().1),
                                };
                                Connection::new(&ctx, tls, Some(peer)).run(stop).await
                            }
                            Ok(Err(e)) => {
                                Metrics::inc(&m.tls_handshake_failures_total);
                                tracing::debug!(%peer, error = %e, "RESP TLS handshake failed");
                            }
                            Err(_) => {
                                Metrics::inc(&m.tls_handshake_failures_total);
                                Metrics::inc(&m.connections_timed_out_total);
                                tracing::debug!(%peer, "RESP TLS handshake timed out");
                            }
                        }
                    }
                }
                ctx.metrics().resp_connections.fetch_sub(1, Relaxed);
            });
        }
        drop(listener);
        while conns.join_next().await.is_some() {}
    })
}

/// Resolves once `stop` is true.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Past the connection cap.
const MAX_CLIENTS: &[u8] = b"-ERR max number of clients reached\r\n";
/// Protected mode, to a client off loopback.
const DENIED: &[u8] = b"-DENIED protected mode: neither HYPERCACHE_AUTH_TOKEN nor HYPERCACHE_AUTH_CONFIG is set, so this listener answers loopback clients only; set one (clients then send AUTH) to serve the network\r\n";

/// Writes one error line without waiting and closes (the connection drops with the
/// stream): a flood past the cap costs no task and no timer, as on the HTTP listeners.
fn refuse(stream: &TcpStream, line: &[u8]) {
    let _ = stream.try_write(line);
}

/// What a command leaves the connection to do.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Close,
}

/// Per-connection state that commands change.
struct Session {
    id: u64,
    /// The connection came over TLS.
    tls: bool,
    /// Who the connection is, once known (at once where anonymous clients are served).
    identity: Option<Identity>,
    name: Option<Bytes>,
}

struct Connection<'a, S> {
    ctx: &'a RespContext,
    /// The socket, or the TLS stream over it (with `HYPERCACHE_API_TLS_*`).
    stream: S,
    out: Out,
    session: Session,
}

/// The reply line for a failed cache call. The first word is the error's kind, as Redis
/// clients expect: `TRYAGAIN` for what a retry may fix soon, `CLUSTERDOWN` for a quorum
/// that was not reached.
fn error_line(e: &CacheError) -> String {
    match e {
        CacheError::BadRequest(m) => format!("ERR {m}"),
        CacheError::PayloadTooLarge { .. } | CacheError::NotFound => format!("ERR {e}"),
        CacheError::Draining
        | CacheError::Overloaded
        | CacheError::ClockNotSynced
        | CacheError::TombstonesFull => format!("TRYAGAIN {e}"),
        CacheError::Quorum { .. } | CacheError::Unreachable { .. } => format!("CLUSTERDOWN {e}"),
        CacheError::Internal(_) => format!("ERR internal error: {e}"),
    }
}

/// A key argument as the cache's key type: UTF-8, 1 to 1024 bytes.
fn key_of(arg: &[u8]) -> Result<&str, String> {
    let k =
        std::str::from_utf8(arg).map_err(|_| "ERR invalid key: keys must be UTF-8".to_string())?;
    validate_key(k).map_err(|e| format!("ERR invalid key: {e}"))?;
    Ok(k)
}

/// The route label a command's latency is recorded under.
fn route_of(cmd: &Command) -> &'static str {
    match cmd {
        Command::Get(_) | Command::MGet(_) | Command::Exists(_) | Command::Ttl { .. } => {
            "resp_read"
        }
        Command::Set { .. } | Command::MSet(_) | Command::Del(_) | Command::Expire { .. } => {
            "resp_write"
        }
        _ => "resp_other",
    }
}

/// True for commands that call into the node (they take an in-flight slot).
fn touches_node(cmd: &Command) -> bool {
    !matches!(route_of(cmd), "resp_other") || matches!(cmd, Command::Info(_) | Command::DbSize)
}

impl<'a, S: AsyncRead + AsyncWrite + Unpin> Connection<'a, S> {
    /// `tls`: what the TLS handshake established (a verified client certificate's CN
    /// can be the connection's identity before any AUTH).
    fn new(ctx: &'a RespContext, stream: S, tls: Option<TlsPeer>) -> Self {
        Self {
            session: Session {
                id: ctx.next_id.fetch_add(1, Relaxed),
                tls: tls.is_some(),
                identity: match ctx.policy.resolve(None, tls.as_ref()) {
                    Resolved::Known(id) => Some(id),
                    _ => None,
                },
                name: None,
            },
            ctx,
            stream,
            out: Out::default(),
        }
    }

    /// Writes the pending replies; `false` when the client is gone or stopped reading
    /// for the idle timeout.
    async fn flush(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let idle = self.ctx.config.idle_timeout;
        let ok = matches!(
            tokio::time::timeout(idle, self.stream.write_all(&self.out.0)).await,
            Ok(Ok(()))
        );
        self.out.0.clear();
        ok
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut decoder = Decoder::new(self.ctx.limits);
        let mut buf = BytesMut::with_capacity(16 << 10);
        let mut held: Option<(usize, Held)> = None;
        // Since when the command now arriving has been arriving.
        let mut arriving: Option<Instant> = None;
        let idle = self.ctx.config.idle_timeout;
        let command_timeout = self.ctx.config.body_read_timeout;
        // One timer per connection, re-armed lazily: when it fires early (there was
        // activity since it was armed) it is moved to the current deadline, so a
        // request costs no timer insertion.
        let mut armed = Instant::now() + idle;
        let mut timer = std::pin::pin!(tokio::time::sleep_until(armed.into()));
        let mut stop_signal = std::pin::pin!(stopped(&mut stop));
        loop {
            let mut ran = false;
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(args)) => {
                        ran = true;
                        if self.command(args).await == Flow::Close {
                            self.flush().await;
                            return;
                        }
                        if self.out.len() >= FLUSH_AT && !self.flush().await {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        Metrics::inc(&self.ctx.metrics().resp_protocol_errors_total);
                        self.out.error(&format!("ERR {e}"));
                        self.flush().await;
                        return;
                    }
                }
            }
            if !self.flush().await {
                return;
            }
            let in_command = decoder.in_command(&buf);
            arriving = match (in_command, ran, arriving) {
                (false, ..) => None,
                (true, true, _) | (true, false, None) => Some(Instant::now()),
                (true, false, since) => since,
            };
            // Memory for the command being read: free up to FREE_BUFFER, then from the
            // listener's budget, taken before the bytes are read.
            let need = decoder.needed().max(buf.len());
            if need > FREE_BUFFER {
                if held.as_ref().is_none_or(|(n, _)| *n < need) {
                    // Give the smaller reservation back before taking the larger one.
                    drop(held.take());
                    match self.ctx.buffers.hold(need as u64) {
                        Some(h) => held = Some((need, h)),
                        None => {
                            self.out.error("ERR OVERLOADED: the node's buffer budget for client requests is spent; retry with backoff");
                            self.flush().await;
                            return;
                        }
                    }
                }
            } else {
                held = None;
            }
            if decoder.needed() > buf.len() {
                buf.reserve(decoder.needed() - buf.len());
            } else if buf.capacity() - buf.len() < 4096 {
                buf.reserve(16 << 10);
            }
            let deadline = match arriving {
                Some(since) => since + command_timeout,
                None => Instant::now() + idle,
            };
            if deadline < armed {
                armed = deadline;
                timer.as_mut().reset(armed.into());
            }
            tokio::select! {
                r = self.stream.read_buf(&mut buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if arriving.is_none() {
                            arriving = Some(Instant::now());
                        }
                    }
                },
                _ = timer.as_mut() => {
                    if Instant::now() < deadline {
                        armed = deadline;
                        timer.as_mut().reset(armed.into());
                        continue;
                    }
                    if arriving.is_some() {
                        Metrics::inc(&self.ctx.metrics().resp_protocol_errors_total);
                        self.out.error("ERR Protocol error: command read timeout");
                        self.flush().await;
                    }
                    return;
                }
                // A stopping node closes connections between commands.
                _ = stop_signal.as_mut(), if !in_command => return,
            }
        }
    }

    /// Runs one command and appends its reply.
    async fn command(&mut self, args: Vec<Bytes>) -> Flow {
        let started = Instant::now();
        let m = self.ctx.metrics();
        Metrics::inc(&m.resp_commands_total);
        let before = self.out.len();
        let parsed = Command::parse(args);
        let cmd = match parsed {
            Ok(c) if self.session.identity.is_some() || c.allowed_before_auth() => c,
            Err(Refusal(line)) if self.session.identity.is_some() => {
                Metrics::inc(&m.resp_command_errors_total);
                self.out.error(&line);
                return Flow::Continue;
            }
            _ => {
                Metrics::inc(&m.resp_command_errors_total);
                Metrics::inc(&m.requests_unauthorized_total);
                self.out.error("NOAUTH Authentication required.");
                return Flow::Continue;
            }
        };
        let route = route_of(&cmd);
        if let Some(line) = self.forbidden(&cmd) {
            Metrics::inc(&m.resp_command_errors_total);
            Metrics::inc(&m.requests_forbidden_total);
            self.out.error(&line);
            return Flow::Continue;
        }
        let mut slot: Option<OwnedSemaphorePermit> = None;
        if touches_node(&cmd) {
            match self.ctx.inflight.clone().try_acquire_owned() {
                Ok(p) => slot = Some(p),
                Err(_) => {
                    Metrics::inc(&m.requests_rejected_overload_total);
                    Metrics::inc(&m.resp_command_errors_total);
                    self.out.error(&error_line(&CacheError::Overloaded));
                    return Flow::Continue;
                }
            }
            m.client_requests_in_flight.fetch_add(1, Relaxed);
        }
        let flow = self.execute(cmd).await;
        if slot.take().is_some() {
            m.client_requests_in_flight.fetch_sub(1, Relaxed);
        }
        if self.out.0.get(before) == Some(&b'-') {
            Metrics::inc(&m.resp_command_errors_total);
        }
        let i = ROUTES
            .iter()
            .position(|r| *r == route)
            .unwrap_or(ROUTES.len() - 1);
        m.latency.observe_at(i, started.elapsed().as_secs_f64());
        flow
    }

    async fn execute(&mut self, cmd: Command) -> Flow {
        match cmd {
            Command::Ping(None) => self.out.simple("PONG"),
            Command::Ping(Some(msg)) | Command::Echo(msg) => self.out.bulk(&msg),
            Command::Auth { user, password } => {
                if let Err(line) = self.authenticate(user.as_deref(), &password).await {
                    self.out.error(&line);
                } else {
                    self.out.simple("OK");
                }
            }
            Command::Hello { proto, auth, name } => self.hello(proto, auth, name).await,
            Command::Select(0) => self.out.simple("OK"),
            Command::Select(_) => self.out.error("ERR DB index is out of range"),
            Command::Quit => {
                self.out.simple("OK");
                return Flow::Close;
            }
            Command::Get(key) => self.get(&key).await.into_reply(&mut self.out),
            Command::Set {
                key,
                value,
                ttl,
                cond,
            } => self
                .set(&key, &value, ttl, cond)
                .await
                .into_reply(&mut self.out),
            Command::Del(keys) => self.del(keys).await.into_reply(&mut self.out),
            Command::Exists(keys) => self.exists(keys).await.into_reply(&mut self.out),
            Command::MGet(keys) => self.mget(keys).await.into_reply(&mut self.out),
            Command::MSet(pairs) => self.mset(pairs).await.into_reply(&mut self.out),
            Command::Expire { key, ttl } => self.expire(&key, ttl).await.into_reply(&mut self.out),
            Command::Ttl { key, millis } => self.ttl(&key, millis).await.into_reply(&mut self.out),
            Command::Info(sections) => self.info(&sections).await.into_reply(&mut self.out),
            Command::DbSize => match self.ctx.node.store_stats().await {
                Ok(s) => self.out.int(s.items as i64),
                Err(e) => self.out.error(&error_line(&e)),
            },
            Command::Command(q) => self.command_info(q),
            Command::ClientSetName(name) => {
                self.session.name = (!name.is_empty()).then_some(name);
                self.out.simple("OK");
            }
            Command::ClientGetName => match &self.session.name {
                Some(n) => self.out.bulk(&n.clone()),
                None => self.out.nil(),
            },
            Command::ClientId => self.out.int(self.session.id as i64),
            Command::ClientSetInfo => self.out.simple("OK"),
        }
        Flow::Continue
    }

    /// The `NOPERM` line for a command the connection's identity lacks the scope of:
    /// reads need `read`, writes `write`, `INFO` and `DBSIZE` `read`.
    fn forbidden(&self, cmd: &Command) -> Option<String> {
        let id = self.session.identity.as_ref()?;
        let scope = match route_of(cmd) {
            "resp_read" => Scope::Read,
            "resp_write" => Scope::Write,
            _ if matches!(cmd, Command::Info(_) | Command::DbSize) => Scope::Read,
            _ => return None,
        };
        (!id.scopes.has(scope)).then(|| {
            format!(
                "NOPERM User {} has no permissions to run the '{}' command (it needs the {} scope)",
                id.id,
                cmd.name(),
                scope.name()
            )
        })
    }

    /// Checks `AUTH [user] password`: without a user name (or as `default`) the password
    /// is a bearer token of the client API; with another user name, an HTTP Basic user of
    /// the auth config (when it allows Basic). Constant-time in tokens; bcrypt off the
    /// async workers.
    async fn authenticate(&mut self, user: Option<&[u8]>, password: &[u8]) -> Result<(), String> {
        let policy = self.ctx.policy.clone();
        if !policy.has_credentials() {
            return Err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?".into());
        }
        let mut found = None;
        if user.is_none_or(|u| u == b"default") {
            found = policy.token(password);
        }
        if found.is_none() {
            if let Some(u) = user {
                found = match policy.user(u, password, self.session.tls) {
                    Resolved::Known(id) => Some(id),
                    Resolved::Basic { user, password } => {
                        match policy.verify_basic(user, password).await {
                            Ok(id) => Some(id),
                            Err(BasicRefused::Busy) => {
                                return Err(error_line(&CacheError::Overloaded));
                            }
                            Err(BasicRefused::WrongPassword) => None,
                        }
                    }
                    Resolved::Unknown => None,
                };
            }
        }
        match found {
            Some(id) => {
                self.session.identity = Some(id);
                Ok(())
            }
            None => {
                Metrics::inc(&self.ctx.metrics().requests_unauthorized_total);
                Err("WRONGPASS invalid username-password pair or user is disabled.".into())
            }
        }
    }

    async fn hello(
        &mut self,
        proto: Option<i64>,
        auth: Option<(Bytes, Bytes)>,
        name: Option<Bytes>,
    ) {
        // RESP3 is not spoken: NOPROTO is the answer clients expect from a RESP2-only
        // server, and they carry on in RESP2.
        if proto.is_some_and(|p| p != 2) {
            self.out
                .error("NOPROTO sorry, this protocol version is not supported.");
            return;
        }
        if let Some((user, password)) = auth {
            if let Err(line) = self.authenticate(Some(&user), &password).await {
                self.out.error(&line);
                return;
            }
        }
        if self.session.identity.is_none() {
            Metrics::inc(&self.ctx.metrics().requests_unauthorized_total);
            self.out.error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
            return;
        }
        if let Some(n) = name {
            if n.iter().any(|b| *b <= b' ' || *b > b'~') {
                self.out.error(
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
                return;
            }
            self.session.name = (!n.is_empty()).then_some(n);
        }
        self.out.array(14);
        for (k, v) in [
            ("server", "hypercache"),
            ("version", env!("CARGO_PKG_VERSION")),
        ] {
            self.out.bulk(k.as_bytes());
            self.out.bulk(v.as_bytes());
        }
        self.out.bulk(b"proto");
        self.out.int(2);
        self.out.bulk(b"id");
        self.out.int(self.session.id as i64);
        for (k, v) in [("mode", "standalone"), ("role", "master")] {
            self.out.bulk(k.as_bytes());
            self.out.bulk(v.as_bytes());
        }
        self.out.bulk(b"modules");
        self.out.array(0);
    }

    async fn read(&self, key: &str) -> Result<Option<Stored>, CacheError> {
        read_key(self.ctx.node.clone(), key.to_owned()).await
    }

    async fn get(&mut self, key: &[u8]) -> Result<(), String> {
        let key = key_of(key)?;
        match self.read(key).await.map_err(|e| error_line(&e))? {
            Some(s) => self.out.bulk(&s.value),
            None => self.out.nil(),
        }
        Ok(())
    }

    async fn set(
        &mut self,
        key: &[u8],
        value: &Bytes,
        ttl: Option<Duration>,
        cond: SetCondition,
    ) -> Result<(), String> {
        let key = key_of(key)?;
        let admit = |e: CacheError| error_line(&e);
        self.ctx.node.admit_write().map_err(admit)?;
        let limit = self.ctx.config.max_value_bytes;
        if value.len() as u64 > limit {
            return Err(error_line(&CacheError::PayloadTooLarge {
                size: value.len() as u64,
                limit,
            }));
        }
        if cond != SetCondition::Always {
            let exists = self.read(key).await.map_err(admit)?.is_some();
            if exists != (cond == SetCondition::IfPresent) {
                self.out.nil();
                return Ok(());
            }
        }
        self.write(key, value, ttl).await.map_err(admit)?;
        self.out.simple("OK");
        Ok(())
    }

    async fn write(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), CacheError> {
        write_key(
            self.ctx.node.clone(),
            key.to_owned(),
            Bytes::copy_from_slice(value),
            ttl,
        )
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        delete_key(self.ctx.node.clone(), key.to_owned()).await
    }

    /// Every key checked before any is touched: one bad key refuses the command.
    fn keys_of(keys: &[Bytes]) -> Result<Vec<String>, String> {
        keys.iter().map(|k| key_of(k).map(str::to_owned)).collect()
    }

    /// `DEL`: the count of keys that existed (as read just before each delete).
    async fn del(&mut self, keys: Vec<Bytes>) -> Result<(), String> {
        let keys = Self::keys_of(&keys)?;
        self.ctx.node.admit_write().map_err(|e| error_line(&e))?;
        let node = self.ctx.node.clone();
        let existed: Vec<bool> = stream::iter(keys)
            .map(move |k| {
                let node = node.clone();
                async move {
                    let existed = read_key(node.clone(), k.clone()).await?.is_some();
                    delete_key(node, k).await?;
                    Ok::<_, CacheError>(existed)
                }
            })
            .buffered(KEY_CONCURRENCY)
            .try_collect()
            .await
            .map_err(|e| error_line(&e))?;
        self.out.int(existed.iter().filter(|e| **e).count() as i64);
        Ok(())
    }

    /// `EXISTS`: how many of the keys exist (a key named twice counts twice).
    async fn exists(&mut self, keys: Vec<Bytes>) -> Result<(), String> {
        let keys = Self::keys_of(&keys)?;
        let node = self.ctx.node.clone();
        let found: Vec<bool> = stream::iter(keys)
            .map(move |k| {
                let node = node.clone();
                async move { read_key(node, k).await.map(|s| s.is_some()) }
            })
            .buffered(KEY_CONCURRENCY)
            .try_collect()
            .await
            .map_err(|e| error_line(&e))?;
        self.out.int(found.iter().filter(|f| **f).count() as i64);
        Ok(())
    }

    /// `MGET`: a value or nil per key, in order; a key that is not a valid cache key
    /// cannot exist and reads as nil.
    async fn mget(&mut self, keys: Vec<Bytes>) -> Result<(), String> {
        let count = keys.len();
        let node = self.ctx.node.clone();
        let mut values = stream::iter(keys)
            .map(move |k| {
                let node = node.clone();
                async move {
                    match key_of(&k) {
                        Ok(k) => read_key(node, k.to_owned())
                            .await
                            .map(|s| s.map(|s| s.value)),
                        Err(_) => Ok(None),
                    }
                }
            })
            .buffered(KEY_CONCURRENCY);
        let mut got = Vec::with_capacity(count);
        let mut bytes = 0usize;
        while let Some(v) = values.next().await {
            let v = v.map_err(|e| error_line(&e))?;
            bytes += v.as_ref().map_or(0, |v| v.len());
            if bytes > MAX_REPLY_BYTES {
                return Err(format!(
                    "ERR reply too large: the values of these {count} keys exceed {MAX_REPLY_BYTES} bytes; ask for fewer keys"
                ));
            }
            got.push(v);
        }
        drop(values);
        self.out.array(got.len());
        for v in got {
            match v {
                Some(v) => self.out.bulk(&v),
                None => self.out.nil(),
            }
            if self.out.len() >= FLUSH_AT && !self.flush().await {
                return Err("ERR client stopped reading".into());
            }
        }
        Ok(())
    }

    /// `MSET`: one coordinated write per key (not atomic across keys: see
    /// docs/resp.md). `OK` only when every write reached its level.
    async fn mset(&mut self, pairs: Vec<(Bytes, Bytes)>) -> Result<(), String> {
        let keys: Vec<Bytes> = pairs.iter().map(|(k, _)| k.clone()).collect();
        let keys = Self::keys_of(&keys)?;
        self.ctx.node.admit_write().map_err(|e| error_line(&e))?;
        let limit = self.ctx.config.max_value_bytes;
        if let Some((_, v)) = pairs.iter().find(|(_, v)| v.len() as u64 > limit) {
            return Err(error_line(&CacheError::PayloadTooLarge {
                size: v.len() as u64,
                limit,
            }));
        }
        let total = pairs.len();
        let node = self.ctx.node.clone();
        let writes = keys
            .into_iter()
            .zip(pairs.into_iter().map(|(_, v)| Bytes::copy_from_slice(&v)));
        let results: Vec<Result<(), CacheError>> = stream::iter(writes)
            .map(move |(k, v)| write_key(node.clone(), k, v, None))
            .buffered(KEY_CONCURRENCY)
            .collect()
            .await;
        let failed = results.iter().filter(|r| r.is_err()).count();
        match results.into_iter().find_map(Result::err) {
            None => self.out.simple("OK"),
            Some(e) => {
                let line = error_line(&e);
                let (kind, msg) = line.split_once(' ').unwrap_or(("ERR", &line));
                self.out.error(&format!(
                    "{kind} {failed} of {total} keys were not written at the required level (the others were); first failure: {msg}"
                ));
            }
        }
        Ok(())
    }

    /// `EXPIRE`/`PEXPIRE`: rewrites the current value with the new ttl (a new version);
    /// a ttl of zero or less deletes the key. 1 when the key existed, else 0.
    async fn expire(&mut self, key: &[u8], ttl: Option<Duration>) -> Result<(), String> {
        let key = key_of(key)?;
        let err = |e: CacheError| error_line(&e);
        self.ctx.node.admit_write().map_err(err)?;
        let Some(current) = self.read(key).await.map_err(err)? else {
            self.out.int(0);
            return Ok(());
        };
        match ttl {
            Some(ttl) => self.write(key, &current.value, Some(ttl)).await,
            None => self.delete(key).await,
        }
        .map_err(err)?;
        self.out.int(1);
        Ok(())
    }

    /// `TTL`/`PTTL`: -2 for a missing key, -1 for one without expiry, else what is left
    /// (seconds rounded to the nearest, as Redis does).
    async fn ttl(&mut self, key: &[u8], millis: bool) -> Result<(), String> {
        let key = key_of(key)?;
        let left = match self.read(key).await.map_err(|e| error_line(&e))? {
            None => -2,
            Some(Stored {
                expires_at_ms: None,
                ..
            }) => -1,
            Some(Stored {
                expires_at_ms: Some(at),
                ..
            }) => {
                let ms = at.saturating_sub(now_ms()) as i64;
                if millis {
                    ms
                } else {
                    (ms + 500) / 1000
                }
            }
        };
        self.out.int(left);
        Ok(())
    }

    fn command_info(&mut self, q: CommandQuery) {
        let entry = |out: &mut Out, spec: &Spec| {
            out.array(6);
            out.bulk(spec.name.as_bytes());
            out.int(spec.arity);
            out.array(spec.flags.len());
            for f in spec.flags {
                out.simple(f);
            }
            out.int(spec.first_key);
            out.int(spec.last_key);
            out.int(spec.step);
        };
        match q {
            CommandQuery::All => {
                self.out.array(TABLE.len());
                for t in TABLE {
                    entry(&mut self.out, t);
                }
            }
            CommandQuery::Count => self.out.int(TABLE.len() as i64),
            CommandQuery::Docs => self.out.array(0),
            CommandQuery::Info(names) => {
                self.out.array(names.len());
                for n in names {
                    match TABLE.iter().find(|t| t.name == n) {
                        Some(t) => entry(&mut self.out, t),
                        None => self.out.nil(),
                    }
                }
            }
        }
    }

    /// `INFO [section ...]`: Redis' field names where one means the same thing here,
    /// our own (`hypercache_*`) for the cluster.
    async fn info(&mut self, sections: &[String]) -> Result<(), String> {
        let stats = self
            .ctx
            .node
            .store_stats()
            .await
            .map_err(|e| error_line(&e))?;
        let m = self.ctx.metrics();
        let c = &self.ctx.config;
        let view = self.ctx.node.view();
        let want = |s: &str| {
            sections.is_empty()
                || sections
                    .iter()
                    .any(|w| w == s || w == "all" || w == "everything" || w == "default")
        };
        let mut text = String::new();
        let mut section = |name: &str, fields: Vec<(&str, String)>| {
            if want(&name.to_ascii_lowercase()) {
                text.push_str(&format!("# {name}\r\n"));
                for (k, v) in fields {
                    text.push_str(&format!("{k}:{v}\r\n"));
                }
                text.push_str("\r\n");
            }
        };
        let port = c.api_addr.port;
        section(
            "Server",
            vec![
                ("hypercache_version", env!("CARGO_PKG_VERSION").into()),
                // The Redis version whose commands this subset follows, for clients
                // that choose features by it.
                ("redis_version", "7.0.0".into()),
                ("redis_mode", "standalone".into()),
                ("os", std::env::consts::OS.into()),
                ("process_id", std::process::id().to_string()),
                ("node_id", c.node_id.clone()),
                ("tcp_port", port.to_string()),
                (
                    "uptime_in_seconds",
                    self.ctx.started.elapsed().as_secs().to_string(),
                ),
            ],
        );
        section(
            "Clients",
            vec![
                (
                    "connected_clients",
                    m.resp_connections.load(Relaxed).to_string(),
                ),
                ("maxclients", c.max_connections.to_string()),
            ],
        );
        section(
            "Memory",
            vec![
                ("used_memory", stats.bytes.to_string()),
                ("used_memory_rss", resident_bytes().to_string()),
                ("maxmemory", c.capacity_bytes.unwrap_or(0).to_string()),
                ("maxmemory_policy", "allkeys-lru".into()),
                ("hypercache_capacity_items", c.capacity.to_string()),
            ],
        );
        section(
            "Stats",
            vec![
                (
                    "total_connections_received",
                    m.resp_connections_total.load(Relaxed).to_string(),
                ),
                (
                    "total_commands_processed",
                    m.resp_commands_total.load(Relaxed).to_string(),
                ),
                (
                    "rejected_connections",
                    m.resp_connections_refused_total.load(Relaxed).to_string(),
                ),
                ("keyspace_hits", stats.hits.to_string()),
                ("keyspace_misses", stats.misses.to_string()),
                ("expired_keys", stats.expirations.to_string()),
                ("evicted_keys", stats.evictions.to_string()),
            ],
        );
        let alive = view
            .members
            .iter()
            .filter(|mb| mb.state == hypercache_actors::membership::MemberState::Alive)
            .count();
        section(
            "Replication",
            vec![
                ("role", "master".into()),
                ("connected_slaves", "0".into()),
                ("hypercache_replication_factor", c.replication.to_string()),
                (
                    "hypercache_write_consistency",
                    format!("{:?}", c.write_consistency).to_ascii_lowercase(),
                ),
                (
                    "hypercache_read_consistency",
                    format!("{:?}", c.read_consistency).to_ascii_lowercase(),
                ),
            ],
        );
        section(
            "Cluster",
            vec![
                // Not Redis Cluster: clients must not send CLUSTER commands or follow
                // MOVED redirections; any node coordinates any key.
                ("cluster_enabled", "0".into()),
                ("hypercache_members", view.members.len().to_string()),
                ("hypercache_members_alive", alive.to_string()),
                ("hypercache_membership_version", view.version.to_string()),
                (
                    "hypercache_draining",
                    u8::from(self.ctx.node.is_draining()).to_string(),
                ),
            ],
        );
        section(
            "Keyspace",
            if stats.items > 0 {
                vec![(
                    "db0",
                    format!("keys={},expires={},avg_ttl=0", stats.items, stats.expiring),
                )]
            } else {
                vec![]
            },
        );
        self.out.bulk(text.as_bytes());
        Ok(())
    }
}

/// Reads `key` at the configured level: `Ok(None)` on a miss.
async fn read_key(node: Arc<NodeHandle>, key: String) -> Result<Option<Stored>, CacheError> {
    Metrics::inc(&node.metrics().gets_total);
    match node.get(&key, None).await {
        Ok(s) => Ok(Some(s)),
        Err(CacheError::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A coordinated write at the configured level. `value` must be its own allocation: a
/// slice of a connection's read buffer would keep that whole buffer alive for as long
/// as the value lives.
async fn write_key(
    node: Arc<NodeHandle>,
    key: String,
    value: Bytes,
    ttl: Option<Duration>,
) -> Result<(), CacheError> {
    node.put(&key, value, ttl, None).await?;
    Metrics::inc(&node.metrics().puts_total);
    Ok(())
}

/// A coordinated delete (a tombstone write) at the configured level.
async fn delete_key(node: Arc<NodeHandle>, key: String) -> Result<(), CacheError> {
    node.delete(&key, None).await?;
    Metrics::inc(&node.metrics().deletes_total);
    Ok(())
}

/// This process' resident memory in bytes (0 where /proc is missing).
fn resident_bytes() -> u64 {
    let page = 4096;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page)
}

/// A command helper's error line becomes the reply.
trait Reply {
    fn into_reply(self, out: &mut Out);
}

impl Reply for Result<(), String> {
    fn into_reply(self, out: &mut Out) {
        if let Err(line) = self {
            out.error(&line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::command::shown;

    #[test]
    fn error_kinds() {
        assert!(error_line(&CacheError::Overloaded).starts_with("TRYAGAIN "));
        assert!(error_line(&CacheError::Draining).starts_with("TRYAGAIN "));
        assert!(error_line(&CacheError::Quorum {
            needed: 2,
            got: 1,
            failures: vec![]
        })
        .starts_with("CLUSTERDOWN "));
        assert!(error_line(&CacheError::BadRequest("x".into())).starts_with("ERR x"));
    }

    #[test]
    fn keys() {
        assert_eq!(key_of(b"user:1").unwrap(), "user:1");
        assert!(key_of(b"").unwrap_err().starts_with("ERR invalid key"));
        assert!(key_of(&[0xff, 0xfe]).unwrap_err().contains("UTF-8"));
        assert!(key_of(&vec![b'k'; MAX_KEY_BYTES + 1]).is_err());
    }

    #[test]
    fn routes_exist() {
        for r in ["resp_read", "resp_write", "resp_other"] {
            assert!(ROUTES.contains(&r), "{r}");
        }
    }

    #[test]
    fn shown_is_safe() {
        assert_eq!(shown(b"a'b\r\n"), "a?b??");
    }
}

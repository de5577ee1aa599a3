//! Serving a router on a TCP listener with the limits a server on an open network needs:
//! a cap on open connections (past it a connection gets a canned 503 and is closed at
//! once), a header read timeout, an idle keep-alive timeout (which also ends a response
//! the client stopped reading), the peer's address for protected mode, and a graceful
//! stop that lets in-flight requests finish.
//!
//! Timeouts are checked by a watchdog per connection that reads three figures its
//! connection keeps up to date: when bytes last moved, since when a request head has
//! been arriving, and how many requests are being handled. The body read timeout is
//! the handlers' (see [`super::body`]): it needs the request's context to answer 408.

use axum::body::Body;
use axum::Router;
use hyper_util::rt::TokioIo;
use hypercache_actors::metrics::Metrics;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// Connection limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once; past it new ones are refused.
    pub max_connections: usize,
    /// From the first byte of a request head to its end.
    pub header_timeout: Duration,
    /// How long a connection may stay silent while no request is being handled.
    pub idle_timeout: Duration,
}

/// The address of the connection a request came on (a request extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

impl PeerAddr {
    /// True for 127.0.0.0/8, `::1` and `::ffff:127.0.0.0/104`.
    pub fn is_loopback(&self) -> bool {
        match self.0.ip() {
            std::net::IpAddr::V4(v4) => v4.is_loopback(),
            std::net::IpAddr::V6(v6) => {
                v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
        }
    }
}

/// A request that came over TLS (a request extension): what the handshake established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPeer {
    /// The subject CN of the client certificate, where the listener verified one.
    pub client_cn: Option<String>,
}

/// What a refused connection receives before it is closed.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 77\r\n\r\n{\"error\":\"too many open connections; retry with backoff\",\"code\":\"OVERLOADED\"}";

/// Figures one connection keeps for its watchdog; times are milliseconds since
/// `epoch`, plus one (0 means "not set").
struct ConnState {
    epoch: Instant,
    last_io: AtomicU64,
    head_since: AtomicU64,
    in_flight: AtomicUsize,
}

impl ConnState {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            last_io: AtomicU64::new(1),
            head_since: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn on_read(&self) {
        let now = self.now();
        self.last_io.store(now, Relaxed);
        // Bytes while no request is being handled: the head of the next one is arriving.
        if self.in_flight.load(Relaxed) == 0 && self.head_since.load(Relaxed) == 0 {
            self.head_since.store(now, Relaxed);
        }
    }

    fn on_write(&self) {
        self.last_io.store(self.now(), Relaxed);
    }

    fn on_request(&self) {
        self.in_flight.fetch_add(1, Relaxed);
        self.head_since.store(0, Relaxed);
    }

    fn on_request_done(&self) {
        self.in_flight.fetch_sub(1, Relaxed);
        self.last_io.store(self.now(), Relaxed);
    }

    /// Why the connection should be closed now, if it should.
    fn expired(&self, limits: &Limits) -> Option<&'static str> {
        let now = self.now();
        let head = self.head_since.load(Relaxed);
        if head != 0 && now.saturating_sub(head) > limits.header_timeout.as_millis() as u64 {
            return Some("header read timeout");
        }
        let idle = now.saturating_sub(self.last_io.load(Relaxed));
        if self.in_flight.load(Relaxed) == 0 && idle > limits.idle_timeout.as_millis() as u64 {
            return Some("idle timeout");
        }
        None
    }
}

/// Counts a request as handled until dropped.
struct Handling(Arc<ConnState>);

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.on_request_done();
    }
}

/// The socket, reporting every read and write to the connection's [`ConnState`].
struct Tracked {
    inner: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.on_read();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.state.on_write();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.state.on_write();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves `router` on `listener` until `stop` turns true; then stops accepting, lets
/// in-flight requests finish and closes idle connections. The task ends when every
/// connection has closed.
pub fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    metrics: Arc<Metrics>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        loop {
            let (stream, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors (or a connection reset before it was
                        // accepted): back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stopped(&mut stop) => break,
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                Metrics::inc(&metrics.connections_refused_total);
                // Best effort, never waits: the connection is closed right after. (A TLS
                // client would not understand plain text: it is just closed.)
                if tls.is_none() {
                    let _ = stream.try_write(REFUSED);
                }
                continue;
            };
            let _ = stream.set_nodelay(true);
            let router = router.clone();
            let metrics = metrics.clone();
            let stop = stop.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                metrics.connections_open.fetch_add(1, Relaxed);
                connection(stream, peer, router, limits, &metrics, tls, stop).await;
                metrics.connections_open.fetch_sub(1, Relaxed);
                drop(slot);
            });
        }
        drop(listener);
        let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
        let _ = slots.acquire_many(all).await;
    })
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Serves one connection until the client closes it, a timeout ends it, or a graceful
/// stop has let its in-flight request finish. With `tls`, the handshake comes first and
/// must finish within the header read timeout.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    metrics: &Metrics,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: watch::Receiver<bool>,
) {
    let state = Arc::new(ConnState::new());
    let tracked = Tracked {
        inner: stream,
        state: state.clone(),
    };
    let Some(acceptor) = tls else {
        let io = TokioIo::new(tracked);
        return run(io, peer, None, router, limits, metrics, state, stop).await;
    };
    let stream = match tokio::time::timeout(limits.header_timeout, acceptor.accept(tracked)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            Metrics::inc(&metrics.tls_handshake_failures_total);
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            Metrics::inc(&metrics.tls_handshake_failures_total);
            Metrics::inc(&metrics.connections_timed_out_total);
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    // The handshake's bytes started the header timer; the first request has not.
    state.head_since.store(0, Relaxed);
    let info = TlsPeer {
        client_cn: crate::tls::client_cn(stream.get_ref().1),
    };
    let io = TokioIo::new(stream);
    run(io, peer, Some(info), router, limits, metrics, state, stop).await
}

/// Serves HTTP/1.1 on an established connection (see [`connection`]).
#[allow(clippy::too_many_arguments)]
async fn run<I>(
    io: I,
    peer: SocketAddr,
    tls: Option<TlsPeer>,
    router: Router,
    limits: Limits,
    metrics: &Metrics,
    state: Arc<ConnState>,
    mut stop: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc_state = state.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        svc_state.on_request();
        let handling = Handling(svc_state.clone());
        req.extensions_mut().insert(PeerAddr(peer));
        if let Some(t) = &tls {
            req.extensions_mut().insert(t.clone());
        }
        let mut router = router.clone();
        async move {
            let _handling = handling;
            tower_service::Service::call(&mut router, req.map(Body::new)).await
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, svc);
    tokio::pin!(conn);
    let period = (limits.header_timeout.min(limits.idle_timeout) / 4)
        .clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut watchdog = tokio::time::interval(period);
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = watchdog.tick() => {
                if let Some(why) = state.expired(&limits) {
                    Metrics::inc(&metrics.connections_timed_out_total);
                    tracing::debug!(%peer, why, "closing connection");
                    // Dropping the connection closes the socket.
                    return;
                }
            }
            _ = stopped(&mut stop), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_connections: 1,
            header_timeout: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(200),
        }
    }

    #[test]
    fn refused_reply_length_matches() {
        let text = std::str::from_utf8(REFUSED).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let _: serde_json::Value = serde_json::from_str(body).unwrap();
    }

    #[test]
    fn loopback_addresses() {
        let p = |s: &str| PeerAddr(s.parse().unwrap());
        assert!(p("127.0.0.1:1").is_loopback());
        assert!(p("127.9.8.7:1").is_loopback());
        assert!(p("[::1]:1").is_loopback());
        assert!(p("[::ffff:127.0.0.1]:1").is_loopback());
        assert!(!p("10.0.0.1:1").is_loopback());
        assert!(!p("[::ffff:10.0.0.1]:1").is_loopback());
        assert!(!p("0.0.0.0:1").is_loopback());
    }

    #[test]
    fn watchdog_rules() {
        let l = limits();
        let s = ConnState::new();
        assert_eq!(s.expired(&l), None);
        // A head that started arriving and never finished.
        s.on_read();
        s.head_since.store(1, Relaxed);
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(s.expired(&l), Some("header read timeout"));
        // A request being handled is never idle, however long it takes.
        s.on_request();
        s.last_io.store(1, Relaxed);
        std::thread::sleep(Duration::from_millis(220));
        assert_eq!(s.expired(&l), None);
        // Once it is done, silence counts again.
        s.on_request_done();
        assert_eq!(s.expired(&l), None);
        s.last_io.store(1, Relaxed);
        assert_eq!(s.expired(&l), Some("idle timeout"));
    }
}

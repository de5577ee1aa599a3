//! `hypercache-server healthcheck`: a liveness probe for container health checks that
//! needs no shell tools. It sends `GET /healthz` to this node's client listener on
//! loopback and exits 0 on `200`, 1 otherwise.
//!
//! With `HYPERCACHE_API_TLS_CERT` set it speaks TLS and accepts only the node's own
//! certificate (it has no CA to check it against, and needs none to talk to itself);
//! with `HYPERCACHE_API_TLS_CLIENT_CA` too it presents that certificate and key as its
//! client certificate, so the node's certificate must then be one the client CA signed.

use crate::config::{parse_listen, PREFIX};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

fn var(name: &str) -> Option<String> {
    std::env::var(format!("{PREFIX}{name}"))
        .ok()
        .filter(|v| !v.trim().is_empty())
}

/// Runs the probe against the port of `HYPERCACHE_API_ADDR` (default 8080).
pub fn run() -> i32 {
    let port = var("API_ADDR")
        .and_then(|v| parse_listen(&v))
        .map(|l| l.port)
        .unwrap_or(8080);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let timeout = Duration::from_secs(2);
    let result = match (var("API_TLS_CERT"), var("API_TLS_KEY")) {
        (Some(cert), Some(key)) => {
            let client_key = var("API_TLS_CLIENT_CA").map(|_| key);
            probe_tls(addr, timeout, &cert, client_key.as_deref())
        }
        _ => probe(addr, timeout),
    };
    match result {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("healthcheck: {e}");
            1
        }
    }
}

const REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

fn ok_status(head: &[u8]) -> bool {
    head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200")
}

fn connect(addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    Ok(s)
}

/// True when `GET /healthz` answers with status 200.
pub fn probe(addr: SocketAddr, timeout: Duration) -> std::io::Result<bool> {
    let mut s = connect(addr, timeout)?;
    s.write_all(REQUEST)?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf)?;
    Ok(ok_status(&buf[..n]))
}

/// As [`probe`], over TLS, trusting only the certificate in `cert` (and presenting it
/// with `client_key` as the client certificate when given).
pub fn probe_tls(
    addr: SocketAddr,
    timeout: Duration,
    cert: &str,
    client_key: Option<&str>,
) -> std::io::Result<bool> {
    let config = crate::tls::pinned_client(cert, client_key).map_err(std::io::Error::other)?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let conn = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, connect(addr, timeout)?);
    tls.write_all(REQUEST)?;
    let mut buf = [0u8; 64];
    let mut n = 0;
    // The head may come in several TLS records.
    while n < 12 {
        match tls.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(ok_status(&buf[..n]))
}

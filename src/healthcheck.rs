//! `hypercache-server healthcheck`: a liveness probe for container health checks that
//! needs no shell tools. It sends `GET /healthz` to this node's client listener on
//! loopback and exits 0 on `200`, 1 otherwise.

use crate::config::{parse_listen, PREFIX};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Runs the probe against the port of `HYPERCACHE_API_ADDR` (default 8080).
pub fn run() -> i32 {
    let port = std::env::var(format!("{PREFIX}API_ADDR"))
        .ok()
        .and_then(|v| parse_listen(&v))
        .map(|l| l.port)
        .unwrap_or(8080);
    match probe(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    ) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("healthcheck: {e}");
            1
        }
    }
}

/// True when `GET /healthz` answers with status 200.
pub fn probe(addr: SocketAddr, timeout: Duration) -> std::io::Result<bool> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf)?;
    let head = String::from_utf8_lossy(&buf[..n]);
    Ok(head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"))
}

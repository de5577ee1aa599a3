//! The RESP listener (docs/resp.md) against real nodes: the real `redis-cli` (Debian's
//! `redis-tools`) on a 3-node cluster sharing data with the HTTP API, pipelining, auth,
//! the listener's limits, and malformed input (bad, random and truncated frames).

mod common;

use common::*;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A node's RESP port, chosen by the test.
fn resp_env(port: u16) -> Vec<(String, String)> {
    vec![("RESP_ADDR".into(), format!("127.0.0.1:{port}"))]
}

/// Runs `redis-cli` against `port` with `commands` on its stdin (one connection, one
/// command per line) and returns its stdout, formatted (`(integer) 1`, `(nil)`,
/// `(error) ...`).
async fn cli(port: u16, token: Option<&str>, commands: &str) -> String {
    let mut cmd = tokio::process::Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "--no-raw"]);
    if let Some(t) = token {
        cmd.args(["--no-auth-warning", "-a", t]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-cli (Debian's redis-tools; scripts/test installs it) must be on PATH");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(commands.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("redis-cli finished")
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lines of a `redis-cli` output.
fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

/// One RESP reply, as a test reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

/// A raw RESP connection.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(port: u16) -> Raw {
        Raw {
            s: TcpStream::connect(("127.0.0.1", port)).await.unwrap(),
            buf: Vec::new(),
        }
    }

    fn encode(args: &[&[u8]]) -> Vec<u8> {
        let mut v = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            v.extend_from_slice(a);
            v.extend_from_slice(b"\r\n");
        }
        v
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
    }

    async fn call(&mut self, args: &[&str]) -> Reply {
        let a: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.send(&Self::encode(&a)).await;
        self.reply().await.expect("a reply")
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        match tokio::time::timeout(Duration::from_secs(20), self.s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => panic!("no reply within 20 s"),
        }
    }

    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let l = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Some(l);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// The next reply; `None` when the server closed the connection.
    async fn reply(&mut self) -> Option<Reply> {
        let l = self.line().await?;
        let (kind, rest) = l.split_at(1);
        Some(match kind {
            "+" => Reply::Simple(rest.into()),
            "-" => Reply::Error(rest.into()),
            ":" => Reply::Int(rest.parse().unwrap()),
            "$" => {
                let n: i64 = rest.parse().unwrap();
                if n < 0 {
                    Reply::Bulk(None)
                } else {
                    while self.buf.len() < n as usize + 2 {
                        assert!(self.fill().await, "closed inside a bulk reply");
                    }
                    let v = self.buf[..n as usize].to_vec();
                    self.buf.drain(..n as usize + 2);
                    Reply::Bulk(Some(v))
                }
            }
            "*" => {
                let n: usize = rest.parse().unwrap();
                let mut items = Vec::new();
                for _ in 0..n {
                    items.push(Box::pin(self.reply()).await.expect("array item"));
                }
                Reply::Array(items)
            }
            other => panic!("not a RESP reply: {other}{rest}"),
        })
    }

    /// True when the server closes the connection (after any replies) within 10 s.
    async fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let end = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = end.saturating_duration_since(std::time::Instant::now());
            match tokio::time::timeout(left, self.s.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

fn bulk(s: &str) -> Reply {
    Reply::Bulk(Some(s.as_bytes().to_vec()))
}

fn is_err(r: &Reply, prefix: &str) -> bool {
    matches!(r, Reply::Error(e) if e.starts_with(prefix))
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_cli_and_http_share_a_three_node_cluster() {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let p = ports.clone();
    let c = Cluster::start_each(3, &[("AUTH_TOKEN", TOKEN)], move |i| resp_env(p[i - 1])).await;
    let t = Some(TOKEN);

    // A SET through node 1 is a quorum write: node 3 serves it over HTTP.
    let out = cli(ports[0], t, "SET greeting hello\n").await;
    assert_eq!(out.trim(), "OK");
    let r = c.node(3).get("greeting").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello");
    // Every owner holds it.
    for i in 1..=3 {
        let rec = c.node(i).mgmt_json("/stats").await;
        assert!(rec["items"].as_u64().unwrap() >= 1, "node-{i}: {rec}");
    }

    // And the other way round: an HTTP PUT on node 2 is read with GET on node 3.
    assert_eq!(
        c.node(2)
            .put("from-http", "bytes\r\nwith crlf")
            .await
            .status(),
        200
    );
    let out = cli(ports[2], t, "GET from-http\n").await;
    assert_eq!(out.trim(), "\"bytes\\r\\nwith crlf\"");

    // Many commands on one connection, replies in order.
    let out = cli(
        ports[1],
        t,
        "PING\nSET k1 v1 EX 100\nTTL k1\nPTTL k1\nSET k1 other NX\nSET nope v XX\nGET nope\n\
         MSET a 1 b 2 c 3\nMGET a b missing c\nEXISTS a b missing a\nDEL a b missing\nEXISTS a b\n\
         EXPIRE c 50\nTTL c\nTTL missing\nSET forever v\nTTL forever\nEXPIRE missing 5\n\
         NOSUCH cmd arg\nSELECT 0\nSELECT 1\nCLIENT SETNAME tester\nCLIENT GETNAME\nDBSIZE\nECHO hi\n",
    )
    .await;
    let l = lines(&out);
    assert_eq!(l[0], "PONG", "{out}");
    assert_eq!(l[1], "OK");
    let ttl: i64 = l[2].strip_prefix("(integer) ").unwrap().parse().unwrap();
    assert!((99..=100).contains(&ttl), "{out}");
    let pttl: i64 = l[3].strip_prefix("(integer) ").unwrap().parse().unwrap();
    assert!((98_000..=100_000).contains(&pttl), "{out}");
    assert_eq!(l[4], "(nil)", "NX on an existing key: {out}");
    assert_eq!(l[5], "(nil)", "XX on a missing key: {out}");
    assert_eq!(l[6], "(nil)");
    assert_eq!(l[7], "OK");
    assert_eq!(
        &l[8..12],
        &["1) \"1\"", "2) \"2\"", "3) (nil)", "4) \"3\""],
        "{out}"
    );
    assert_eq!(
        l[12], "(integer) 3",
        "EXISTS counts a repeated key twice: {out}"
    );
    assert_eq!(
        l[13], "(integer) 2",
        "DEL counts the keys that existed: {out}"
    );
    assert_eq!(l[14], "(integer) 0");
    assert_eq!(l[15], "(integer) 1");
    let ttl: i64 = l[16].strip_prefix("(integer) ").unwrap().parse().unwrap();
    assert!((49..=50).contains(&ttl), "{out}");
    assert_eq!(l[17], "(integer) -2");
    assert_eq!(l[18], "OK");
    assert_eq!(l[19], "(integer) -1");
    assert_eq!(l[20], "(integer) 0");
    assert!(
        l[21].starts_with("(error) ERR unknown command 'NOSUCH'"),
        "{out}"
    );
    assert_eq!(
        l[22], "OK",
        "the connection outlives an unknown command: {out}"
    );
    assert_eq!(l[23], "(error) ERR DB index is out of range");
    assert_eq!(l[24], "OK");
    assert_eq!(l[25], "\"tester\"");
    assert!(l[26].starts_with("(integer) "), "{out}");
    assert_eq!(l[27], "\"hi\"");

    // What RESP wrote, HTTP reads on another node, ttl included.
    let r = c.node(1).get("k1").await;
    assert_eq!(r.text().await.unwrap(), "v1");
    assert_eq!(
        c.node(3).get("a").await.status(),
        404,
        "DEL reached the owners"
    );

    // A short PEXPIRE makes the key disappear everywhere.
    assert_eq!(
        cli(ports[0], t, "PEXPIRE k1 200\n").await.trim(),
        "(integer) 1"
    );
    eventually(
        "k1 expires on every node",
        Duration::from_secs(10),
        || async {
            for i in 1..=3 {
                if c.node(i).get("k1").await.status() != 404 {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    // EXPIRE 0 deletes.
    assert_eq!(
        cli(ports[0], t, "EXPIRE forever 0\n").await.trim(),
        "(integer) 1"
    );
    assert_eq!(c.node(2).get("forever").await.status(), 404);

    // INFO has Redis' sections with this cluster's numbers.
    let info = cli(ports[2], t, "INFO\n").await;
    for want in [
        "# Server",
        "redis_mode:standalone",
        "node_id:node-3",
        "# Clients",
        "# Memory",
        "# Stats",
        "# Replication",
        "hypercache_replication_factor:3",
        "# Cluster",
        "cluster_enabled:0",
        "hypercache_members:3",
        "hypercache_members_alive:3",
        "# Keyspace",
        "db0:keys=",
    ] {
        assert!(info.contains(want), "INFO lacks {want}:\n{info}");
    }
    let only = cli(ports[2], t, "INFO keyspace\n").await;
    assert!(
        only.contains("# Keyspace") && !only.contains("# Server"),
        "{only}"
    );

    // redis-cli's own start-up queries and COMMAND.
    let out = cli(
        ports[0],
        t,
        "COMMAND COUNT\nCOMMAND INFO get\nCOMMAND DOCS\n",
    )
    .await;
    assert!(out.starts_with("(integer) 20"), "{out}");
    assert!(out.contains("\"get\""), "{out}");

    // Auth: a wrong password, no password, HELLO.
    let out = cli(ports[0], Some("wrong"), "GET greeting\n").await;
    assert!(out.contains("NOAUTH") || out.contains("WRONGPASS"), "{out}");
    let out = cli(
        ports[0],
        None,
        "GET greeting\nAUTH nope\nAUTH default test-token\nGET greeting\n",
    )
    .await;
    let l = lines(&out);
    assert_eq!(l[0], "(error) NOAUTH Authentication required.", "{out}");
    assert!(l[1].starts_with("(error) WRONGPASS"), "{out}");
    assert_eq!(l[2], "OK");
    assert_eq!(l[3], "\"hello\"");
    let mut raw = Raw::connect(ports[1]).await;
    assert!(is_err(&raw.call(&["HELLO", "3"]).await, "NOPROTO"));
    assert!(is_err(&raw.call(&["HELLO", "2"]).await, "NOAUTH"));
    match raw
        .call(&["HELLO", "2", "AUTH", "default", TOKEN, "SETNAME", "app"])
        .await
    {
        Reply::Array(items) => {
            assert_eq!(items[0], bulk("server"));
            assert_eq!(items[4], bulk("proto"));
            assert_eq!(items[5], Reply::Int(2));
        }
        other => panic!("HELLO 2: {other:?}"),
    }
    assert_eq!(raw.call(&["CLIENT", "GETNAME"]).await, bulk("app"));
    assert_eq!(raw.call(&["GET", "greeting"]).await, bulk("hello"));

    // Counted in the metrics.
    let m = c.node(1).mgmt_json("/dist/metrics").await;
    assert!(m["resp_commands_total"].as_u64().unwrap() >= 5, "{m}");
    assert!(m["resp_connections_total"].as_u64().unwrap() >= 4, "{m}");
    let text = c.node(2).prometheus(TOKEN).await;
    assert!(
        text.contains("route=\"resp_read\""),
        "latency by RESP route"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_commands_run_in_order() {
    let port = free_port();
    let env = resp_env(port);
    let n = Node::start("pipe", &[(env[0].0.as_str(), env[0].1.as_str())]).await;
    let mut raw = Raw::connect(port).await;
    // 2,000 commands in one write: SET i, then GET i right after it, for 1,000 keys.
    let mut all = Vec::new();
    for i in 0..1000 {
        let k = format!("p{i}");
        let v = format!("value-{i}");
        all.extend(Raw::encode(&[b"SET", k.as_bytes(), v.as_bytes()]));
        all.extend(Raw::encode(&[b"GET", k.as_bytes()]));
    }
    raw.send(&all).await;
    for i in 0..1000 {
        assert_eq!(
            raw.reply().await.unwrap(),
            Reply::Simple("OK".into()),
            "SET {i}"
        );
        assert_eq!(
            raw.reply().await.unwrap(),
            bulk(&format!("value-{i}")),
            "GET {i}"
        );
    }
    // A value can hold any bytes; HTTP reads the same bytes.
    let binary: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    raw.send(&Raw::encode(&[b"SET", b"bin", &binary])).await;
    assert_eq!(raw.reply().await.unwrap(), Reply::Simple("OK".into()));
    let r = n.get("bin").await;
    assert_eq!(r.bytes().await.unwrap().to_vec(), binary);
    assert_eq!(
        raw.call(&["GET", "bin"]).await,
        Reply::Bulk(Some(binary.clone()))
    );
    // QUIT answers OK and closes.
    assert_eq!(raw.call(&["QUIT"]).await, Reply::Simple("OK".into()));
    assert!(raw.closed().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_resp_gets_an_error_and_the_connection_closes() {
    let port = free_port();
    let env = resp_env(port);
    let n = Node::start(
        "bad",
        &[
            (env[0].0.as_str(), env[0].1.as_str()),
            ("MAX_VALUE_BYTES", "1024"),
        ],
    )
    .await;
    for (input, want) in [
        (&b"*abc\r\n"[..], "Protocol error: invalid multibulk length"),
        (b"*1\r\n:12\r\n", "Protocol error: expected '$', got ':'"),
        (
            b"*2\r\n$3\r\nGET\r\n$x\r\n",
            "Protocol error: invalid bulk length",
        ),
        (
            b"*2\r\n$3\r\nGET\r\n$-5\r\n",
            "Protocol error: invalid bulk length",
        ),
        (
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000\r\n",
            "Protocol error: invalid bulk length",
        ),
        (
            b"*1\r\n$4\r\nPINGxx",
            "Protocol error: bulk string not terminated",
        ),
        (b"*99999999\r\n", "Protocol error: invalid multibulk length"),
    ] {
        let mut raw = Raw::connect(port).await;
        // A good command first: its reply still arrives, then the error, then EOF.
        let mut bytes = Raw::encode(&[b"PING"]);
        bytes.extend_from_slice(input);
        raw.send(&bytes).await;
        assert_eq!(raw.reply().await, Some(Reply::Simple("PONG".into())));
        match raw.reply().await {
            Some(Reply::Error(e)) => {
                assert!(e.starts_with(&format!("ERR {want}")), "{input:?}: {e}")
            }
            other => panic!("{input:?}: {other:?}"),
        }
        assert!(raw.closed().await, "{input:?}: the connection is closed");
    }
    // An inline line past 64 KiB.
    let mut raw = Raw::connect(port).await;
    raw.send(&vec![b'A'; 70_000]).await;
    assert!(matches!(raw.reply().await, Some(Reply::Error(e)) if e.contains("too big inline")));
    assert!(raw.closed().await);

    // Random frames (seeded), and every prefix of a valid pipeline: the node answers or
    // closes, never hangs on a complete frame, and keeps serving.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..200 {
        let len = (rand() % 300) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| (rand() % 256) as u8).collect();
        if round % 2 == 0 && !bytes.is_empty() {
            bytes[0] = b'*';
        }
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(&bytes).await.unwrap();
        s.shutdown().await.ok();
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut sink)).await;
    }
    let mut pipeline = Raw::encode(&[b"SET", b"t", b"v"]);
    pipeline.extend(Raw::encode(&[b"GET", b"t"]));
    for cut in 0..pipeline.len() {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(&pipeline[..cut]).await.unwrap();
        drop(s);
    }
    let mut raw = Raw::connect(port).await;
    assert_eq!(
        raw.call(&["SET", "after", "ok"]).await,
        Reply::Simple("OK".into())
    );
    assert_eq!(n.get("after").await.status(), 200);
    let m = n.mgmt_json("/dist/metrics").await;
    assert!(
        m["resp_protocol_errors_total"].as_u64().unwrap() >= 8,
        "{m}"
    );
    assert!(!n.logs().contains("panicked"), "{}", n.logs());
}

#[tokio::test(flavor = "multi_thread")]
async fn resp_listener_limits() {
    let port = free_port();
    let env = resp_env(port);
    let n = Node::start(
        "limits",
        &[
            (env[0].0.as_str(), env[0].1.as_str()),
            ("MAX_CONNECTIONS", "3"),
            ("IDLE_TIMEOUT", "500ms"),
            ("BODY_READ_TIMEOUT", "500ms"),
        ],
    )
    .await;
    // Past the connection cap: an error line and EOF; the others keep working.
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut r = Raw::connect(port).await;
        assert_eq!(r.call(&["PING"]).await, Reply::Simple("PONG".into()));
        open.push(r);
    }
    let mut over = Raw::connect(port).await;
    assert!(
        matches!(over.reply().await, Some(Reply::Error(e)) if e.contains("max number of clients"))
    );
    assert!(over.closed().await);
    // An idle connection is closed after the idle timeout and frees its slot.
    for r in open.iter_mut() {
        assert!(r.closed().await, "idle connections are closed");
    }
    let mut r = Raw::connect(port).await;
    assert_eq!(r.call(&["PING"]).await, Reply::Simple("PONG".into()));
    drop(r);
    // A command that stops half-way is cut after the command read timeout.
    let mut slow = eventually("a free slot", Duration::from_secs(10), || async {
        let mut r = Raw::connect(port).await;
        r.send(&Raw::encode(&[b"PING"])).await;
        (r.reply().await? == Reply::Simple("PONG".into())).then_some(r)
    })
    .await;
    slow.send(b"*2\r\n$3\r\nGET\r\n$5\r\nab").await;
    match slow.reply().await {
        Some(Reply::Error(e)) => assert!(e.contains("command read timeout"), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(slow.closed().await);
    assert!(!n.logs().contains("panicked"));
}

#[tokio::test(flavor = "multi_thread")]
async fn resp_protected_mode_answers_loopback_only() {
    let ip = non_loopback_ipv4();
    let port = free_port();
    let n = Node::start("pm-resp", &[("RESP_ADDR", &format!("0.0.0.0:{port}"))]).await;
    let mut far = Raw {
        s: TcpStream::connect((ip, port)).await.unwrap(),
        buf: Vec::new(),
    };
    match far.reply().await {
        Some(Reply::Error(e)) => {
            assert!(
                e.starts_with("DENIED") && e.contains("HYPERCACHE_AUTH_TOKEN"),
                "{e}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(far.closed().await);
    let mut near = Raw::connect(port).await;
    assert_eq!(
        near.call(&["SET", "k", "v"]).await,
        Reply::Simple("OK".into())
    );
    let m = n.mgmt_json("/dist/metrics").await;
    assert!(
        m["resp_connections_refused_total"].as_u64().unwrap() >= 1,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopping_node_closes_resp_connections_and_refuses_writes_while_draining() {
    let port = free_port();
    let env = resp_env(port);
    let mut n = Node::start(
        "stop",
        &[
            (env[0].0.as_str(), env[0].1.as_str()),
            ("DRAIN_LINGER", "3s"),
        ],
    )
    .await;
    let mut raw = Raw::connect(port).await;
    assert_eq!(
        raw.call(&["SET", "k", "v"]).await,
        Reply::Simple("OK".into())
    );
    n.signal(libc::SIGTERM);
    n.wait_draining().await;
    let r = raw.call(&["SET", "k", "w"]).await;
    assert!(is_err(&r, "TRYAGAIN"), "{r:?}");
    assert_eq!(
        raw.call(&["GET", "k"]).await,
        bulk("v"),
        "reads still served"
    );
    assert!(raw.closed().await, "closed when the client listeners stop");
    let status = n.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{status}");
}

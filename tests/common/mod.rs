//! Black-box harness: starts the real `hypercache-server` binary on free loopback ports
//! and talks to it over HTTP. Every wait polls with a deadline.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "test-token";

/// A free loopback port, picked at random below the kernel's ephemeral range (so
/// outgoing connections of concurrently running tests do not take it) and checked by
/// binding it once.
pub fn free_port() -> u16 {
    loop {
        let port = 20_000 + (rand_u64() % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

/// An IPv4 address of this machine that is not loopback (connections to it from here
/// arrive from a non-loopback address).
pub fn non_loopback_ipv4() -> std::net::Ipv4Addr {
    let mut found = None;
    // SAFETY: getifaddrs fills a list that freeifaddrs releases; only AF_INET entries
    // are read as sockaddr_in.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        assert_eq!(libc::getifaddrs(&mut list), 0, "getifaddrs");
        let mut cur = list;
        while !cur.is_null() {
            let a = (*cur).ifa_addr;
            if !a.is_null() && (*a).sa_family as i32 == libc::AF_INET {
                let sin = &*(a as *const libc::sockaddr_in);
                let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                if !ip.is_loopback() && !ip.is_unspecified() {
                    found = Some(ip);
                    break;
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(list);
    }
    found.expect("this test needs a non-loopback IPv4 address on some interface")
}

/// Polls `f` until it returns `Some` or `deadline` passes.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > end {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A running server process. Killed on drop.
pub struct Node {
    pub child: Option<Child>,
    pub api: u16,
    pub mgmt: u16,
    pub dist: u16,
    pub id: String,
    pub token: Option<String>,
    pub env: HashMap<String, String>,
    pub http: reqwest::Client,
    log_path: std::path::PathBuf,
}

/// reqwest is built with rustls and no default crypto provider (see the transport):
/// a test must install one before it builds an HTTP client. Harmless twice.
pub fn crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_hypercache-server")
}

/// The value of the Prometheus series written exactly as `series` (name and labels) in
/// the exposition `text`.
pub fn prom_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

impl Node {
    /// `GET /metrics` on the management listener with `token`: the exposition text.
    /// `/metrics`, with `token` as bearer (none when empty).
    pub async fn prometheus(&self, token: &str) -> String {
        let req = self.http.get(self.mgmt_url("/metrics"));
        let req = if token.is_empty() {
            req
        } else {
            req.bearer_auth(token)
        };
        req.send().await.unwrap().text().await.unwrap()
    }

    /// Starts a node with `env` (plus loopback listener addresses) and waits until
    /// `/healthz` answers.
    pub async fn start(id: &str, env: &[(&str, &str)]) -> Node {
        Self::start_on(id, env, free_port(), free_port(), free_port()).await
    }

    pub async fn start_on(id: &str, env: &[(&str, &str)], api: u16, mgmt: u16, dist: u16) -> Node {
        crypto_provider();
        let mut vars: HashMap<String, String> = HashMap::new();
        vars.insert("HYPERCACHE_NODE_ID".into(), id.into());
        vars.insert("HYPERCACHE_API_ADDR".into(), format!("127.0.0.1:{api}"));
        vars.insert("HYPERCACHE_MGMT_ADDR".into(), format!("127.0.0.1:{mgmt}"));
        vars.insert("HYPERCACHE_DIST_ADDR".into(), format!("127.0.0.1:{dist}"));
        vars.insert("HYPERCACHE_LOG_LEVEL".into(), "debug".into());
        for (k, v) in env {
            // The OpenTelemetry variables keep their own names.
            if k.starts_with("OTEL_") {
                vars.insert((*k).into(), (*v).into());
            } else {
                vars.insert(format!("HYPERCACHE_{k}"), (*v).into());
            }
        }
        let token = vars
            .get("HYPERCACHE_AUTH_TOKEN")
            .cloned()
            .filter(|t| !t.is_empty());
        let log_path = std::env::temp_dir().join(format!(
            "hypercache-test-{id}-{api}-{}.log",
            std::process::id()
        ));
        let mut node = Node {
            child: None,
            api,
            mgmt,
            dist,
            id: id.into(),
            token,
            env: vars,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            log_path,
        };
        // Another test may have taken a port in between: pick new ones and retry.
        for _ in 0..5 {
            node.spawn();
            if node.wait_healthy_or_bind_error().await {
                return node;
            }
            node.child = None;
            node.api = free_port();
            node.mgmt = free_port();
            node.dist = free_port();
            node.env.insert(
                "HYPERCACHE_API_ADDR".into(),
                format!("127.0.0.1:{}", node.api),
            );
            node.env.insert(
                "HYPERCACHE_MGMT_ADDR".into(),
                format!("127.0.0.1:{}", node.mgmt),
            );
            node.env.insert(
                "HYPERCACHE_DIST_ADDR".into(),
                format!("127.0.0.1:{}", node.dist),
            );
        }
        panic!("{} could not bind its ports", node.id);
    }

    /// Waits until healthy; `false` when the process exited because a port was taken.
    async fn wait_healthy_or_bind_error(&mut self) -> bool {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    if self.logs().contains("Address already in use") {
                        std::fs::write(&self.log_path, "").ok();
                        return false;
                    }
                    panic!(
                        "{} exited during start-up: {status}\n{}",
                        self.id,
                        self.logs()
                    );
                }
            }
            // With TLS on the client API, the management listener's `/health` says it.
            let probe = if self.env.contains_key("HYPERCACHE_API_TLS_CERT") {
                self.mgmt_url("/health")
            } else {
                self.api_url("/healthz")
            };
            if let Ok(r) = self.http.get(probe).send().await {
                if r.status() == 200 {
                    return true;
                }
            }
            if Instant::now() > end {
                panic!("{} did not become healthy\n{}", self.id, self.logs());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// (Re)starts the process with the same ports and environment.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let child = Command::new(binary())
            .env_clear()
            .envs(&self.env)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn hypercache-server");
        self.child = Some(child);
    }

    pub async fn wait_healthy(&mut self) {
        let url = self.api_url("/healthz");
        let http = self.http.clone();
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!(
                        "{} exited during start-up: {status}\n{}",
                        self.id,
                        self.logs()
                    );
                }
            }
            if let Ok(r) = http.get(&url).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            if Instant::now() > end {
                panic!("{} did not become healthy\n{}", self.id, self.logs());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// `kill -9` and wait until the process is gone.
    pub async fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.wait_exit(Duration::from_secs(5)).await;
    }

    /// Waits until `/health` on the management listener answers 503 (draining).
    pub async fn wait_draining(&self) {
        eventually("health 503", Duration::from_secs(5), || async {
            let r = self.http.get(self.mgmt_url("/health")).send().await.ok()?;
            (r.status() == 503).then_some(())
        })
        .await;
    }

    /// Starts a PUT of `key` whose body (`content_length` bytes) arrives slowly: sends the
    /// headers and `first` now and returns the connection, once the server is handling it.
    pub async fn start_slow_put(
        &self,
        key: &str,
        content_length: usize,
        first: &[u8],
    ) -> tokio::net::TcpStream {
        use tokio::io::AsyncWriteExt;
        let mut s = raw_connect(self.api).await;
        let head = format!(
            "PUT /v1/cache/{key} HTTP/1.1\r\nHost: x\r\nContent-Length: {content_length}\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(first).await.unwrap();
        eventually(
            "the slow request to be in flight",
            Duration::from_secs(5),
            || async {
                let m = self.mgmt_json("/dist/metrics").await;
                (m["client_requests_in_flight"].as_u64()? == 1).then_some(())
            },
        )
        .await;
        s
    }

    /// Waits for the process to exit, up to `deadline`.
    pub async fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let end = Instant::now() + deadline;
        loop {
            if let Ok(Some(s)) = self.child.as_mut().expect("running").try_wait() {
                self.child = None;
                return s;
            }
            if Instant::now() > end {
                panic!(
                    "{} did not exit within {deadline:?}\n{}",
                    self.id,
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn api_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.api)
    }

    pub fn mgmt_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.mgmt)
    }

    pub fn dist_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.dist)
    }

    fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    pub async fn put(&self, key: &str, value: impl Into<reqwest::Body>) -> reqwest::Response {
        self.auth(
            self.http
                .put(self.api_url(&format!("/v1/cache/{key}")))
                .body(value),
        )
        .send()
        .await
        .expect("PUT")
    }

    pub async fn get(&self, key: &str) -> reqwest::Response {
        self.auth(self.http.get(self.api_url(&format!("/v1/cache/{key}"))))
            .send()
            .await
            .expect("GET")
    }

    pub async fn delete(&self, key: &str) -> reqwest::Response {
        self.auth(self.http.delete(self.api_url(&format!("/v1/cache/{key}"))))
            .send()
            .await
            .expect("DELETE")
    }

    /// An authenticated request to any URL.
    pub async fn send(&self, method: reqwest::Method, url: String) -> reqwest::Response {
        self.auth(self.http.request(method, url))
            .send()
            .await
            .expect("request")
    }

    pub async fn mgmt_json(&self, path: &str) -> serde_json::Value {
        let r = self.send(reqwest::Method::GET, self.mgmt_url(path)).await;
        assert_eq!(r.status(), 200, "{path}");
        r.json().await.expect("json")
    }

    pub async fn stats(&self) -> serde_json::Value {
        self.mgmt_json("/stats").await
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- log of {} ---\n{}", self.id, self.logs());
        }
        let _ = std::fs::remove_file(&self.log_path);
    }
}

/// Asserts a JSON error body with the given status and code.
#[track_caller]
pub fn assert_error(status: u16, body: &str, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "body: {body}");
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    assert_eq!(v["code"], want_code, "body: {body}");
    assert!(
        v["error"].as_str().is_some_and(|e| !e.is_empty()),
        "body: {body}"
    );
}

/// Sends a raw HTTP request on a fresh connection and returns the stream (to send more).
pub async fn raw_connect(port: u16) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect")
}

/// Reads one HTTP response (headers + content-length body) from a raw stream.
pub async fn raw_read_response(s: &mut tokio::net::TcpStream) -> (u16, String) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk))
            .await
            .expect("response in time")
            .expect("read");
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = &text[..end];
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let status = head
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse()
                    .unwrap_or(0);
                return (status, text[end + 4..end + 4 + len].to_string());
            }
        }
    }
    panic!(
        "connection closed before a full response: {:?}",
        String::from_utf8_lossy(&buf)
    );
}

/// Several nodes on loopback, each seeded with all the others as `id@127.0.0.1:port`.
pub struct Cluster {
    pub nodes: Vec<Node>,
}

/// Fast protocol timings for tests; documented defaults are slower.
pub const FAST: &[(&str, &str)] = &[
    ("HEARTBEAT", "100ms"),
    ("SUSPECT_TIMEOUT", "500ms"),
    ("PEER_TIMEOUT", "500ms"),
    ("DRAIN_LINGER", "0s"),
];

impl Cluster {
    /// Starts `n` nodes `node-1..n` with `env` (on top of [`FAST`]) and waits until every
    /// node sees all `n` alive.
    pub async fn start(n: usize, env: &[(&str, &str)]) -> Cluster {
        Self::start_each(n, env, |_| Vec::new()).await
    }

    /// As [`Cluster::start`], with settings of each node's own on top: `each(i)` for
    /// node `i` (1-based).
    pub async fn start_each(
        n: usize,
        env: &[(&str, &str)],
        each: impl Fn(usize) -> Vec<(String, String)>,
    ) -> Cluster {
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let mut nodes = Vec::new();
        for i in 0..n {
            let seeds: Vec<String> = (0..n)
                .filter(|j| *j != i)
                .map(|j| format!("node-{}@127.0.0.1:{}", j + 1, ports[j].2))
                .collect();
            let seeds = seeds.join(",");
            let mut all: Vec<(&str, &str)> = FAST.to_vec();
            all.extend_from_slice(env);
            all.push(("SEEDS", &seeds));
            let own = each(i + 1);
            all.extend(own.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let (a, m, d) = ports[i];
            nodes.push(Node::start_on(&format!("node-{}", i + 1), &all, a, m, d).await);
        }
        let c = Cluster { nodes };
        // Generous: under a full parallel test run on two cores, five nodes have once
        // needed more than 20 s to see each other alive at the same moment.
        c.wait_members(n, Duration::from_secs(40)).await;
        c
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i - 1]
    }

    pub fn node_mut(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i - 1]
    }

    /// Cuts every link between the nodes of `a` and those of `b` (1-based indexes), both
    /// directions, through the nodes' fault rules (test-hooks build).
    pub async fn cut_links(&self, a: &[usize], b: &[usize]) {
        for (side, other) in [(a, b), (b, a)] {
            let cut: Vec<String> = other
                .iter()
                .map(|i| format!("127.0.0.1:{}", self.node(*i).dist))
                .collect();
            for i in side {
                self.node(*i)
                    .set_faults(serde_json::json!({ "cut": cut }))
                    .await;
            }
        }
    }

    /// Waits until every running node sees exactly `alive` members alive.
    pub async fn wait_members(&self, alive: usize, deadline: Duration) {
        for n in self.nodes.iter().filter(|n| n.child.is_some()) {
            eventually(
                &format!("{} to see {alive} alive", n.id),
                deadline,
                || async {
                    let m = n.members().await?;
                    (m.iter().filter(|x| x.1 == "alive").count() == alive).then_some(())
                },
            )
            .await;
        }
    }
}

impl Node {
    /// `(id, state, incarnation)` of every member this node knows.
    pub async fn members(&self) -> Option<Vec<(String, String, u64)>> {
        let r = self
            .auth(self.http.get(self.mgmt_url("/cluster/members")))
            .send()
            .await
            .ok()?;
        let v: serde_json::Value = r.json().await.ok()?;
        Some(
            v["members"]
                .as_array()?
                .iter()
                .map(|m| {
                    (
                        m["id"].as_str().unwrap_or("").to_string(),
                        m["state"].as_str().unwrap_or("").to_string(),
                        m["incarnation"].as_u64().unwrap_or(0),
                    )
                })
                .collect(),
        )
    }

    /// The state of member `id` as this node sees it.
    pub async fn state_of(&self, id: &str) -> Option<String> {
        self.members()
            .await?
            .into_iter()
            .find(|m| m.0 == id)
            .map(|m| m.1)
    }

    /// Sets link faults (test-hooks build).
    pub async fn set_faults(&self, rules: serde_json::Value) {
        let r = self
            .auth(self.http.post(self.mgmt_url("/debug/faults")).json(&rules))
            .send()
            .await
            .expect("faults");
        assert_eq!(r.status(), 200);
    }

    /// PUT with a query string (`ttl`, `consistency`).
    pub async fn put_q(
        &self,
        key: &str,
        query: &str,
        value: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.auth(
            self.http
                .put(self.api_url(&format!("/v1/cache/{key}?{query}")))
                .body(value),
        )
        .send()
        .await
        .expect("PUT")
    }

    pub async fn get_q(&self, key: &str, query: &str) -> reqwest::Response {
        self.auth(
            self.http
                .get(self.api_url(&format!("/v1/cache/{key}?{query}"))),
        )
        .send()
        .await
        .expect("GET")
    }
}

/// Dist-protocol helpers: hand-made peer calls.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// An enveloped dist batch of `calls`.
pub fn batch(calls: serde_json::Value) -> Vec<u8> {
    let env = serde_json::json!({"v": 2, "from": "probe-tool", "from_addr": "127.0.0.1:1",
        "hlc": now_ms() << 16, "body": {"calls": calls}});
    rmp_serde::to_vec_named(&env).unwrap()
}

/// Posts a batch to `path` on the node's dist listener: status and decoded reply.
pub async fn post_dist(n: &Node, path: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(n.dist_url(path))
        .bearer_auth(n.token.as_deref().unwrap_or(""))
        .body(body)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    let json = r
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let b = r.bytes().await.unwrap();
    let v = if json {
        serde_json::from_slice(&b).ok()
    } else {
        rmp_serde::from_slice(&b).ok()
    };
    (s, v.unwrap_or(serde_json::Value::Null))
}

pub fn write(wall_ms: u64, value: &[u8]) -> serde_json::Value {
    serde_json::json!({"version": {"hlc": wall_ms << 16, "origin": 99}, "value": value, "expires_at_ms": null})
}

//! Identities and scopes (`HYPERCACHE_AUTH_CONFIG`) against a real node: every client
//! and management route × no credentials / a wrong token / each scope alone, HTTP Basic
//! users with bcrypt, `/v1/me`, the RESP listener's AUTH and NOPERM, and start-up
//! refusing a bad file.

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const READER: &str = "reader-token";
const WRITER: &str = "writer-token";
const ADMIN: &str = "admin-token";

fn auth_file(dir: &std::path::Path) -> String {
    let hash = bcrypt::hash("bob-pw", 4).unwrap();
    let text = format!(
        r#"
tokens:
  - {{id: reader, token: "{READER}", scopes: [read]}}
  - {{id: writer, token: "{WRITER}", scopes: [write]}}
  - {{id: admin, token: "{ADMIN}", scopes: [admin]}}
users:
  - {{id: bob, username: bob, password_bcrypt: "{hash}", scopes: [read]}}
allow_anonymous: false
allow_basic_without_tls: true
"#
    );
    let path = dir.join("auth.yaml");
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("hypercache-auth-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Need {
    Public,
    Read,
    Write,
    Admin,
}

/// What each credential is.
#[derive(Clone, Copy, Debug)]
enum Cred {
    None,
    Wrong,
    Token(&'static str, Need),
}

async fn call(n: &Node, mgmt: bool, method: &Method, path: &str, cred: Cred) -> (u16, String) {
    let url = if mgmt {
        n.mgmt_url(path)
    } else {
        n.api_url(path)
    };
    let mut rb = n.http.request(method.clone(), url);
    rb = match cred {
        Cred::None => rb,
        Cred::Wrong => rb.bearer_auth("not-a-token"),
        Cred::Token(t, _) => rb.bearer_auth(t),
    };
    if path.starts_with("/v1/cache/batch/put") {
        rb = rb.json(&json!({"items": [{"key": "m", "value": "v"}]}));
    } else if path.starts_with("/v1/cache/batch/") {
        rb = rb.json(&json!({"keys": ["m"]}));
    } else if *method == Method::PUT {
        rb = rb.body("v");
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_checks_credentials_and_scope() {
    let dir = temp_dir("matrix");
    let file = auth_file(&dir);
    let n = Node::start("auth-matrix", &[("AUTH_CONFIG", &file)]).await;
    let routes: &[(bool, Method, &str, Need)] = &[
        (false, Method::GET, "/healthz", Need::Public),
        (false, Method::GET, "/v1/openapi.yaml", Need::Public),
        (false, Method::PUT, "/v1/cache/m", Need::Write),
        (false, Method::GET, "/v1/cache/m", Need::Read),
        (false, Method::HEAD, "/v1/cache/m", Need::Read),
        (false, Method::DELETE, "/v1/cache/m", Need::Write),
        (false, Method::GET, "/v1/cache/keys", Need::Read),
        (false, Method::GET, "/v1/owners/m", Need::Read),
        (false, Method::GET, "/v1/me", Need::Read),
        (
            false,
            Method::GET,
            "/v1/me/can?capability=cache.write",
            Need::Read,
        ),
        (false, Method::POST, "/v1/cache/batch/get", Need::Read),
        (false, Method::POST, "/v1/cache/batch/put", Need::Write),
        (false, Method::POST, "/v1/cache/batch/delete", Need::Write),
        (true, Method::GET, "/health", Need::Public),
        (true, Method::GET, "/openapi.yaml", Need::Public),
        (true, Method::GET, "/stats", Need::Read),
        (true, Method::GET, "/config", Need::Read),
        (true, Method::GET, "/metrics", Need::Read),
        (true, Method::GET, "/dist/metrics", Need::Read),
        (true, Method::GET, "/cluster/members", Need::Read),
        (true, Method::GET, "/cluster/ring", Need::Read),
        (true, Method::GET, "/cluster/heartbeat", Need::Read),
        (true, Method::GET, "/dist/owners?key=m", Need::Read),
        (true, Method::POST, "/trigger-expiration", Need::Admin),
        (true, Method::POST, "/clear", Need::Admin),
        (
            true,
            Method::POST,
            "/cluster/members/nobody/remove",
            Need::Admin,
        ),
        // Last with the admin token: it drains the node.
        (true, Method::POST, "/dist/drain", Need::Admin),
    ];
    let creds = [
        Cred::None,
        Cred::Wrong,
        Cred::Token(READER, Need::Read),
        Cred::Token(WRITER, Need::Write),
        Cred::Token(ADMIN, Need::Admin),
    ];
    let mut checked = 0;
    for (mgmt, method, path, need) in routes {
        for cred in creds {
            if *path == "/dist/drain" && matches!(cred, Cred::Token(_, Need::Admin)) {
                continue;
            }
            let (status, body) = call(&n, *mgmt, method, path, cred).await;
            let what = format!("{method} {path} with {cred:?}: {status} {body}");
            match (need, cred) {
                (Need::Public, _) => assert_eq!(status, 200, "{what}"),
                (_, Cred::None | Cred::Wrong) => {
                    assert_eq!(status, 401, "{what}");
                    if *method != Method::HEAD {
                        assert!(body.contains("UNAUTHORIZED"), "{what}");
                    }
                }
                (need, Cred::Token(_, has)) if has == *need => {
                    assert!(status != 401 && status != 403, "{what}");
                    assert!(status < 500, "{what}");
                }
                (_, Cred::Token(..)) => {
                    assert_eq!(status, 403, "{what}");
                    if *method != Method::HEAD {
                        let v: Value = serde_json::from_str(&body).unwrap();
                        assert_eq!(v["code"], "FORBIDDEN", "{what}");
                    }
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, routes.len() * creds.len() - 1);
    let m = n.prometheus(READER).await;
    let forbidden = prom_value(&m, "hypercache_requests_forbidden_total")
        .unwrap_or_else(|| panic!("no forbidden counter in {m}"));
    assert!(forbidden >= 40.0, "{forbidden}");

    // The admin token drains the node: the last route of the matrix.
    let (status, body) = call(
        &n,
        true,
        &Method::POST,
        "/dist/drain",
        Cred::Token(ADMIN, Need::Admin),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn identities_basic_users_and_resp() {
    let dir = temp_dir("ids");
    let file = auth_file(&dir);
    let resp_port = free_port();
    let resp_addr = format!("127.0.0.1:{resp_port}");
    let n = Node::start(
        "auth-ids",
        &[("AUTH_CONFIG", &file), ("RESP_ADDR", &resp_addr)],
    )
    .await;
    let me = |cred: String| {
        let n = &n;
        async move {
            let r = n
                .http
                .get(n.api_url("/v1/me"))
                .header("authorization", cred)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (s, v) = me(format!("Bearer {READER}")).await;
    assert_eq!(s, 200);
    assert_eq!(
        v,
        json!({"id": "reader", "scopes": ["read"], "capabilities": ["cache.read"]})
    );
    for (cap, allowed) in [
        ("cache.read", true),
        ("cache.write", false),
        ("cache.admin", false),
    ] {
        let r = n
            .http
            .get(n.api_url(&format!("/v1/me/can?capability={cap}")))
            .bearer_auth(READER)
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        assert_eq!(v, json!({"capability": cap, "allowed": allowed}));
    }

    // HTTP Basic (allowed here without TLS): bcrypt once, then from the cache.
    let basic = |pw: &str| format!("Basic {}", STANDARD.encode(format!("bob:{pw}")));
    let (s, v) = me(basic("bob-pw")).await;
    assert_eq!((s, v["id"].clone()), (200, json!("bob")));
    let (s, _) = me(basic("bob-pw")).await;
    assert_eq!(s, 200);
    let (s, v) = me(basic("wrong")).await;
    assert_eq!((s, v["code"].clone()), (401, json!("UNAUTHORIZED")));
    let r = n
        .http
        .put(n.api_url("/v1/cache/b"))
        .header("authorization", basic("bob-pw"))
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "bob reads only");

    // A write with the writer token, read back with the reader's.
    let r = n
        .http
        .put(n.api_url("/v1/cache/shared"))
        .bearer_auth(WRITER)
        .body("v1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = n
        .http
        .get(n.api_url("/v1/cache/shared"))
        .bearer_auth(READER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "v1");

    // RESP: AUTH with a token gives that identity's scopes; a user and password goes
    // through bcrypt.
    let mut s = tokio::net::TcpStream::connect(&resp_addr).await.unwrap();
    let mut exchange = async |cmd: &str| -> String {
        s.write_all(format!("{cmd}\r\n").as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert!(exchange("GET shared").await.starts_with("-NOAUTH"));
    assert!(exchange("AUTH not-a-token").await.starts_with("-WRONGPASS"));
    assert_eq!(exchange(&format!("AUTH {READER}")).await, "+OK\r\n");
    assert_eq!(exchange("GET shared").await, "$2\r\nv1\r\n");
    let refused = exchange("SET shared v2").await;
    assert!(
        refused.starts_with("-NOPERM") && refused.contains("write"),
        "{refused}"
    );
    assert_eq!(exchange(&format!("AUTH {WRITER}")).await, "+OK\r\n");
    assert_eq!(exchange("SET shared v2").await, "+OK\r\n");
    assert!(exchange("GET shared").await.starts_with("-NOPERM"));
    assert_eq!(exchange("AUTH bob bob-pw").await, "+OK\r\n");
    assert_eq!(exchange("GET shared").await, "$2\r\nv2\r\n");
    assert!(exchange("AUTH bob nope").await.starts_with("-WRONGPASS"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn start_up_refuses_a_bad_auth_file() {
    let dir = temp_dir("bad");
    let run = |text: Option<&str>| {
        let path = dir.join("bad.yaml");
        match text {
            Some(t) => std::fs::write(&path, t).unwrap(),
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
        std::process::Command::new(binary())
            .arg("check-config")
            .env_clear()
            .env("HYPERCACHE_AUTH_CONFIG", &path)
            .output()
            .unwrap()
    };
    for (text, want) in [
        (
            Some("tokens: [{id: a, token: s3cret, scopes: [sudo]}]"),
            "sudo",
        ),
        (
            Some("tokens: [{id: a, tokn: s3cret, scopes: [read]}]"),
            "tokn",
        ),
        (
            Some("users: [{id: u, username: u, password_bcrypt: s3cret, scopes: [read]}]"),
            "bcrypt",
        ),
        (None, "cannot open"),
    ] {
        let out = run(text);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("HYPERCACHE_AUTH_CONFIG") && err.contains(want),
            "{want}: {err}"
        );
        assert!(!err.contains("s3cret"), "{err}");
    }
    let out = run(Some(
        "tokens: [{id: app, token: s3cret, scopes: [read, write]}]",
    ));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["auth_config"]["token_ids"], json!(["app"]));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cret"));
    let _ = std::fs::remove_dir_all(dir);
}

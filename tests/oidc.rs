//! OIDC bearer tokens against a real node and an issuer served by the test on loopback
//! (discovery document and key set): a signed token is an identity with the scopes of
//! its scope claim; expired, foreign, tampered and unsigned tokens are refused; a key
//! added to the issuer's set is picked up; a node whose issuer cannot be read does not
//! start.

mod common;

use axum::routing::get;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const AUDIENCE: &str = "hypercache-test";

/// An EC P-256 signing key and its public JWK.
struct Signer {
    kid: String,
    key: EncodingKey,
    jwk: Value,
}

impl Signer {
    fn new(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate().unwrap();
        let raw = pair.public_key_raw();
        assert_eq!(raw.len(), 65, "an uncompressed P-256 point");
        Self {
            kid: kid.into(),
            key: EncodingKey::from_ec_der(&pair.serialize_der()),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&raw[33..]),
            }),
        }
    }

    fn token(&self, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, claims, &self.key).unwrap()
    }
}

/// Serves `/.well-known/openid-configuration` and `/jwks` (the keys in `keys`).
async fn issuer(keys: Arc<Mutex<Vec<Value>>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let discovery = json!({"issuer": base, "jwks_uri": format!("{base}/jwks")});
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || {
                let d = discovery.clone();
                async move { axum::Json(d) }
            }),
        )
        .route(
            "/jwks",
            get(move || {
                let k = keys.lock().unwrap().clone();
                async move { axum::Json(json!({ "keys": k })) }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

fn claims(iss: &str, sub: &str, scope: Value, exp_in: i64) -> Value {
    let now = now_ms() as i64 / 1000;
    json!({"iss": iss, "aud": AUDIENCE, "sub": sub, "scope": scope, "iat": now, "exp": now + exp_in})
}

async fn with_token(n: &Node, method: reqwest::Method, path: &str, token: &str) -> (u16, Value) {
    let r = n
        .http
        .request(method, n.api_url(path))
        .bearer_auth(token)
        .body("v")
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_tokens_are_identities_and_nothing_else_is() {
    crypto_provider();
    let k1 = Signer::new("k1");
    let keys = Arc::new(Mutex::new(vec![k1.jwk.clone()]));
    let iss = issuer(keys.clone()).await;
    let n = Node::start(
        "oidc",
        &[("OIDC_ISSUER", &iss), ("OIDC_AUDIENCE", AUDIENCE)],
    )
    .await;
    use reqwest::Method;

    let rw = k1.token(&claims(&iss, "svc-a", json!("read write"), 600));
    let (s, v) = with_token(&n, Method::PUT, "/v1/cache/k", &rw).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = with_token(&n, Method::GET, "/v1/me", &rw).await;
    assert_eq!(
        (s, v["id"].clone(), v["scopes"].clone()),
        (200, json!("svc-a"), json!(["read", "write"]))
    );

    // The scope claim as an array; unknown scopes are dropped.
    let ro = k1.token(&claims(&iss, "svc-r", json!(["read", "superuser"]), 600));
    let (s, v) = with_token(&n, Method::GET, "/v1/me", &ro).await;
    assert_eq!((s, v["scopes"].clone()), (200, json!(["read"])));
    let (s, v) = with_token(&n, Method::PUT, "/v1/cache/k", &ro).await;
    assert_eq!((s, v["code"].clone()), (403, json!("FORBIDDEN")));

    // Without a token there is no anonymous access once an issuer is configured.
    let r = n.http.get(n.api_url("/v1/me")).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // Refused: expired, another audience, another issuer, no identity claim, another
    // key under the same kid, a tampered payload, no signature, HMAC with the JWK.
    let expired = k1.token(&claims(&iss, "svc-a", json!("read"), -3600));
    let mut aud = claims(&iss, "svc-a", json!("read"), 600);
    aud["aud"] = json!("someone-else");
    let other_iss = k1.token(&claims("http://127.0.0.1:1", "svc-a", json!("read"), 600));
    let mut nosub = claims(&iss, "svc-a", json!("read"), 600);
    nosub.as_object_mut().unwrap().remove("sub");
    let without = |claim: &str| {
        let mut c = claims(&iss, "svc-a", json!("read"), 600);
        c.as_object_mut().unwrap().remove(claim);
        k1.token(&c)
    };
    let mut numeric_iss = claims(&iss, "svc-a", json!("read"), 600);
    numeric_iss["iss"] = json!(7);
    let forged = Signer::new("k1").token(&claims(&iss, "svc-a", json!("read"), 600));
    let parts: Vec<&str> = rw.split('.').collect();
    let mut body: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    body["sub"] = json!("admin");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(body.to_string()),
        parts[2]
    );
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#),
        parts[1]
    );
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("k1".into());
    let hmac = jsonwebtoken::encode(
        &hs,
        &claims(&iss, "svc-a", json!("read"), 600),
        &EncodingKey::from_secret(k1.jwk["x"].as_str().unwrap().as_bytes()),
    )
    .unwrap();
    for (what, t) in [
        ("expired", expired),
        ("audience", k1.token(&aud)),
        ("issuer", other_iss),
        ("no sub", k1.token(&nosub)),
        ("no aud", without("aud")),
        ("no iss", without("iss")),
        ("no exp", without("exp")),
        ("numeric iss", k1.token(&numeric_iss)),
        ("oversize", format!("{rw}{}", "A".repeat(20_000))),
        ("forged", forged),
        ("tampered", tampered),
        ("unsigned", unsigned),
        ("hmac", hmac),
        ("garbage", "a.b.c".to_string()),
    ] {
        let (s, v) = with_token(&n, Method::GET, "/v1/me", &t).await;
        assert_eq!(
            (s, v["code"].clone()),
            (401, json!("UNAUTHORIZED")),
            "{what}"
        );
    }

    // A key the issuer adds later: the first token under it makes the node fetch the
    // set again, and then it is accepted.
    let k2 = Signer::new("k2");
    keys.lock().unwrap().push(k2.jwk.clone());
    let t2 = k2.token(&claims(&iss, "svc-b", json!("read"), 600));
    eventually(
        "a token under the new key is accepted",
        Duration::from_secs(15),
        || async {
            let (s, v) = with_token(&n, Method::GET, "/v1/me", &t2).await;
            (s == 200 && v["id"] == "svc-b").then_some(())
        },
    )
    .await;
}

#[test]
fn a_node_whose_issuer_cannot_be_read_does_not_start() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    for (issuer, want) in [
        (dead.as_str(), "HYPERCACHE_OIDC_ISSUER"),
        ("http://issuer.example", "https"),
    ] {
        let out = std::process::Command::new(binary())
            .env_clear()
            .env("HYPERCACHE_API_ADDR", format!("127.0.0.1:{}", free_port()))
            .env("HYPERCACHE_MGMT_ADDR", format!("127.0.0.1:{}", free_port()))
            .env("HYPERCACHE_DIST_ADDR", format!("127.0.0.1:{}", free_port()))
            .env("HYPERCACHE_OIDC_ISSUER", issuer)
            .env("HYPERCACHE_OIDC_AUDIENCE", AUDIENCE)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{want}: {err}");
    }
}

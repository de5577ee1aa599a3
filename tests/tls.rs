//! TLS against real nodes, with certificates made at run time (rcgen): the client API
//! with mutual TLS and a client certificate as an identity, the RESP listener over the
//! same TLS, the healthcheck subcommand, a cluster whose peers talk mutual TLS, and
//! start-up refusing incomplete or unusable TLS settings.

mod common;

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A CA and the files of the certificates it signs, in a directory of their own.
struct Pki {
    dir: PathBuf,
    ca: Issuer<'static, KeyPair>,
    ca_pem: String,
}

impl Pki {
    fn new(name: &str) -> Self {
        crypto_provider();
        let dir =
            std::env::temp_dir().join(format!("hypercache-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "test CA");
        let key = KeyPair::generate().unwrap();
        let ca_pem = params.self_signed(&key).unwrap().pem();
        std::fs::write(dir.join("ca.pem"), &ca_pem).unwrap();
        Self {
            dir,
            ca: Issuer::new(params, key),
            ca_pem,
        }
    }

    fn ca_path(&self) -> String {
        self.path("ca.pem")
    }

    fn path(&self, f: &str) -> String {
        self.dir.join(f).to_string_lossy().into_owned()
    }

    /// Issues a certificate for `cn` valid for 127.0.0.1 and localhost, for servers and
    /// clients; returns the paths of its certificate and key.
    fn issue(&self, cn: &str) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (c, k) = (format!("{cn}.pem"), format!("{cn}.key"));
        std::fs::write(self.dir.join(&c), cert.pem()).unwrap();
        std::fs::write(self.dir.join(&k), key.serialize_pem()).unwrap();
        (self.path(&c), self.path(&k))
    }

    /// A rustls client trusting the CA, presenting `client` (cert, key) if given.
    fn client_config(&self, client: Option<(&str, &str)>) -> rustls::ClientConfig {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        match client {
            Some((cert, key)) => b
                .with_client_auth_cert(
                    CertificateDer::pem_file_iter(cert)
                        .unwrap()
                        .map(Result::unwrap)
                        .collect(),
                    PrivateKeyDer::from_pem_file(key).unwrap(),
                )
                .unwrap(),
            None => b.with_no_client_auth(),
        }
    }

    fn http(&self, client: Option<(&str, &str)>) -> reqwest::Client {
        reqwest::Client::builder()
            .use_preconfigured_tls(self.client_config(client))
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn client_api_with_mutual_tls_and_certificate_identities() {
    let pki = Pki::new("client");
    let (server_cert, server_key) = pki.issue("node-1");
    let (app_cert, app_key) = pki.issue("app.internal");
    let (other_cert, other_key) = pki.issue("stranger");
    let hash = bcrypt::hash("bob-pw", 4).unwrap();
    let auth = write(
        &pki.dir,
        "auth.yaml",
        &format!("cert_identities: [{{subject_cn: app.internal, scopes: [read, write]}}]\ntokens: [{{id: ops, token: ops-token, scopes: [read]}}]\nusers: [{{id: bob, username: bob, password_bcrypt: \"{hash}\", scopes: [read]}}]\n"),
    );
    let resp_addr = format!("127.0.0.1:{}", free_port());
    let n = Node::start(
        "tls-client",
        &[
            ("API_TLS_CERT", &server_cert),
            ("API_TLS_KEY", &server_key),
            ("API_TLS_CLIENT_CA", &pki.ca_path()),
            ("AUTH_CONFIG", &auth),
            ("RESP_ADDR", &resp_addr),
        ],
    )
    .await;
    let url = |p: &str| format!("https://127.0.0.1:{}{p}", n.api);

    // The client certificate is the identity: no token needed.
    let app = pki.http(Some((&app_cert, &app_key)));
    let r = app.put(url("/v1/cache/k")).body("v").send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let me: Value = app
        .get(url("/v1/me"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["id"], "app.internal");
    assert_eq!(me["scopes"], json!(["read", "write"]));
    // A bearer token still wins over the certificate; a wrong one is refused.
    let r = app
        .put(url("/v1/cache/k"))
        .bearer_auth("ops-token")
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = app
        .get(url("/v1/me"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A certificate the CA signed but that maps to no identity gets nothing.
    let stranger = pki.http(Some((&other_cert, &other_key)));
    let r = stranger.get(url("/v1/cache/k")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // Without a client certificate, or in plain text, there is no connection.
    assert!(pki.http(None).get(url("/healthz")).send().await.is_err());
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/healthz", n.api))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
    let metrics = n.prometheus("ops-token").await;
    let failures = prom_value(&metrics, "hypercache_tls_handshake_failures_total")
        .unwrap_or_else(|| panic!("no handshake counter in {metrics}"));
    assert!(failures >= 2.0, "{failures}");

    // RESP speaks the same TLS; the certificate's identity holds from the start.
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(pki.client_config(Some((&app_cert, &app_key)))));
    let tcp = tokio::net::TcpStream::connect(&resp_addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut s = connector.connect(name, tcp).await.unwrap();
    s.write_all(b"GET k\r\n").await.unwrap();
    let mut buf = vec![0u8; 64];
    let got = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..got], b"$1\r\nv\r\n");
    // AUTH with a user and password is taken over TLS too.
    s.write_all(b"AUTH bob bob-pw\r\n").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..got], b"+OK\r\n");

    // The healthcheck subcommand speaks TLS to its own node (and presents the node's
    // certificate, which the client CA signed).
    let out = std::process::Command::new(binary())
        .arg("healthcheck")
        .env_clear()
        .env("HYPERCACHE_API_ADDR", format!("127.0.0.1:{}", n.api))
        .env("HYPERCACHE_API_TLS_CERT", &server_cert)
        .env("HYPERCACHE_API_TLS_KEY", &server_key)
        .env("HYPERCACHE_API_TLS_CLIENT_CA", pki.ca_path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // Pinned: another certificate (even one the same CA signed, presented as a valid
    // client certificate) is not this node.
    let out = std::process::Command::new(binary())
        .arg("healthcheck")
        .env_clear()
        .env("HYPERCACHE_API_ADDR", format!("127.0.0.1:{}", n.api))
        .env("HYPERCACHE_API_TLS_CERT", &other_cert)
        .env("HYPERCACHE_API_TLS_KEY", &other_key)
        .env("HYPERCACHE_API_TLS_CLIENT_CA", pki.ca_path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn peers_replicate_over_mutual_tls() {
    let pki = Pki::new("dist");
    let files: Vec<(String, String)> = (1..=3).map(|i| pki.issue(&format!("node-{i}"))).collect();
    let ca = pki.ca_path();
    let c = Cluster::start_each(3, &[("AUTH_TOKEN", TOKEN)], |i| {
        vec![
            ("DIST_TLS_CERT".into(), files[i - 1].0.clone()),
            ("DIST_TLS_KEY".into(), files[i - 1].1.clone()),
            ("DIST_TLS_CA".into(), ca.clone()),
        ]
    })
    .await;
    assert_eq!(c.node(1).put("over-tls", "v").await.status(), 200);
    let r = c.node(3).get("over-tls").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "v");
    for i in 1..=3 {
        let items = c.node(i).stats().await["items"].as_u64().unwrap();
        assert!(items >= 1, "node-{i} holds its replica");
    }
    // The dist listener takes no client without a certificate from the CA, even one
    // with the peer token.
    let url = format!("https://127.0.0.1:{}/health", c.node(1).dist);
    assert!(pki
        .http(None)
        .get(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .is_err());
    let other = Pki::new("dist-other");
    let (oc, ok) = other.issue("intruder");
    let intruder = reqwest::Client::builder()
        .use_preconfigured_tls(pki.client_config(Some((&oc, &ok))))
        .build()
        .unwrap();
    assert!(intruder.get(&url).bearer_auth(TOKEN).send().await.is_err());
    let (pc, pk) = (&files[1].0, &files[1].1);
    let peer = pki.http(Some((pc, pk)));
    let r = peer.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn start_up_refuses_incomplete_or_unusable_tls_settings() {
    let pki = Pki::new("bad");
    let (cert, key) = pki.issue("node-1");
    let junk = write(&pki.dir, "junk.pem", "not a certificate");
    let auth = write(
        &pki.dir,
        "auth.yaml",
        "cert_identities: [{subject_cn: app, scopes: [read]}]\n",
    );
    let check = |env: &[(&str, &str)], var: &str| {
        let mut cmd = std::process::Command::new(binary());
        cmd.arg("check-config").env_clear();
        for (k, v) in env {
            cmd.env(format!("HYPERCACHE_{k}"), v);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{env:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(var), "{var}: {env:?}: {err}");
        assert!(
            !err.contains(&*pki.dir.to_string_lossy()),
            "paths are not echoed: {err}"
        );
    };
    check(&[("API_TLS_CERT", &cert)], "HYPERCACHE_API_TLS_KEY");
    check(&[("API_TLS_KEY", &key)], "HYPERCACHE_API_TLS_CERT");
    check(
        &[("API_TLS_CERT", &junk), ("API_TLS_KEY", &key)],
        "HYPERCACHE_API_TLS_CERT",
    );
    check(
        &[("API_TLS_CERT", &cert), ("API_TLS_KEY", &junk)],
        "HYPERCACHE_API_TLS_KEY",
    );
    check(
        &[
            ("API_TLS_CERT", &cert),
            ("API_TLS_KEY", &key),
            ("API_TLS_CLIENT_CA", &junk),
        ],
        "HYPERCACHE_API_TLS_CLIENT_CA",
    );
    check(
        &[("DIST_TLS_CERT", &cert), ("DIST_TLS_KEY", &key)],
        "HYPERCACHE_DIST_TLS_CA",
    );
    check(&[("MGMT_TLS_CERT", &cert)], "HYPERCACHE_MGMT_TLS_KEY");
    check(&[("AUTH_CONFIG", &auth)], "HYPERCACHE_AUTH_CONFIG");
    check(
        &[
            ("AUTH_CONFIG", &auth),
            ("API_TLS_CERT", &cert),
            ("API_TLS_KEY", &key),
        ],
        "HYPERCACHE_AUTH_CONFIG",
    );
    // Complete settings pass.
    let out = std::process::Command::new(binary())
        .arg("check-config")
        .env_clear()
        .env("HYPERCACHE_AUTH_CONFIG", &auth)
        .env("HYPERCACHE_API_TLS_CERT", &cert)
        .env("HYPERCACHE_API_TLS_KEY", &key)
        .env("HYPERCACHE_API_TLS_CLIENT_CA", pki.ca_path())
        .env("HYPERCACHE_DIST_TLS_CERT", &cert)
        .env("HYPERCACHE_DIST_TLS_KEY", &key)
        .env("HYPERCACHE_DIST_TLS_CA", pki.ca_path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["api_tls"]["cert"], json!(cert));
}

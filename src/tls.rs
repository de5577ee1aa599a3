//! TLS for the listeners and the peer client, with rustls (the `ring` provider; no
//! OpenSSL). Certificates and keys are PEM files named by the configuration; they are
//! read and checked at start-up, so a bad file stops the node (exit 2) instead of
//! failing the first handshake.
//!
//! - Client API: `HYPERCACHE_API_TLS_CERT` / `_KEY`, and `_CLIENT_CA` for mutual TLS
//!   (a client certificate is then required; its subject CN can be an identity of the
//!   auth file's `cert_identities`).
//! - Management API: `HYPERCACHE_MGMT_TLS_CERT` / `_KEY` / `_CLIENT_CA`, the same way.
//! - Dist listener and peer client: `HYPERCACHE_DIST_TLS_CERT` / `_KEY` / `_CA`. Every
//!   node serves its certificate, requires a peer certificate signed by the CA, and calls
//!   its peers over HTTPS presenting the same certificate and trusting only the CA.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::sync::Arc;

/// PEM files of one TLS endpoint, as configured.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TlsFiles {
    pub cert: String,
    pub key: String,
    /// CA bundle that client (or peer) certificates must chain to; `None`: none asked.
    pub ca: Option<String>,
}

/// A checked TLS setting: the files and the rustls configurations built from them.
#[derive(Clone)]
pub struct Tls {
    pub files: TlsFiles,
    pub server: Arc<ServerConfig>,
    /// The peer client's configuration (dist only): trusts `ca`, presents `cert`.
    pub client: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.files.fmt(f)
    }
}

impl serde::Serialize for Tls {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.files.serialize(s)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// Messages name no path: the variable they are reported under says which file.

/// Most bytes read from a configured file (a PEM bundle, the auth file).
pub const MAX_FILE: u64 = 4 << 20;

/// Reads at most [`MAX_FILE`] bytes of `path`; a longer file is an error (so that a
/// setting naming a device or a huge file cannot stall start-up or exhaust memory).
pub fn read_bounded(path: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
    let mut out = Vec::new();
    f.take(MAX_FILE + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("cannot read it: {e}"))?;
    if out.len() as u64 > MAX_FILE {
        return Err(format!("it is larger than {MAX_FILE} bytes"));
    }
    Ok(out)
}

fn certs(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes =
        read_bounded(path).map_err(|e| format!("a readable PEM file of certificates ({e})"))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("a PEM file of certificates; it holds a malformed one ({e})"))?;
    if certs.is_empty() {
        return Err("a PEM file of certificates; it holds none".into());
    }
    Ok(certs)
}

fn key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    let bytes =
        read_bounded(path).map_err(|e| format!("a readable PEM file with a private key ({e})"))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| format!("a PEM file with a private key ({e})"))
}

fn roots(path: &str) -> Result<Arc<RootCertStore>, String> {
    let mut store = RootCertStore::empty();
    for c in certs(path)? {
        store
            .add(c)
            .map_err(|e| format!("a PEM bundle of usable CA certificates ({e})"))?;
    }
    Ok(Arc::new(store))
}

/// Which file of a [`TlsFiles`] an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Cert,
    Key,
    Ca,
}

impl Tls {
    /// Builds a listener's setting (and with `peer`, the peer client's too, which then
    /// needs the CA). Errors say which file is wrong and what is expected of it.
    pub fn load(files: TlsFiles, peer: bool) -> Result<Self, (Part, String)> {
        let chain = certs(&files.cert).map_err(|e| (Part::Cert, e))?;
        let key = key(&files.key).map_err(|e| (Part::Key, e))?;
        let ca = match &files.ca {
            Some(ca) => Some(roots(ca).map_err(|e| (Part::Ca, e))?),
            None => None,
        };
        let other = |e: rustls::Error| (Part::Cert, e.to_string());
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(other)?;
        let builder = match &ca {
            Some(roots) => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
                    .build()
                    .map_err(|e| (Part::Ca, format!("a usable CA bundle ({e})")))?,
            ),
            None => builder.with_no_client_auth(),
        };
        let mut server = builder
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| {
                (
                    Part::Key,
                    format!("the private key of the certificate ({e})"),
                )
            })?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = match (peer, ca) {
            (false, _) => None,
            (true, None) => return Err((Part::Ca, "set: peers verify each other".into())),
            (true, Some(roots)) => Some(Arc::new(
                ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(other)?
                    .with_root_certificates(roots)
                    .with_client_auth_cert(chain, key)
                    .map_err(other)?,
            )),
        };
        Ok(Self {
            files,
            server: Arc::new(server),
            client,
        })
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server.clone())
    }
}

/// The subject common name of a verified client certificate (the leaf), if it has one.
pub fn client_cn(conn: &rustls::ServerConnection) -> Option<String> {
    let leaf = conn.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some(cn)
}

/// A client configuration that accepts exactly the certificate in `cert_path` (the
/// node's own, for `hypercache-server healthcheck` on loopback, which has no CA to
/// verify it against and must not trust anything else). With `client_key`, it presents
/// that certificate and key as its client certificate.
pub fn pinned_client(
    cert_path: &str,
    client_key: Option<&str>,
) -> Result<Arc<ClientConfig>, String> {
    let chain = certs(cert_path)?;
    let leaf = chain[0].clone();
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { leaf }));
    let config = match client_key {
        Some(k) => builder
            .with_client_auth_cert(chain, key(k)?)
            .map_err(|e| e.to_string())?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Accepts only the one certificate it holds, signed by the key of that certificate.
#[derive(Debug)]
struct Pinned {
    leaf: CertificateDer<'static>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.leaf.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "not this node's own certificate".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

//! OIDC bearer tokens (`HYPERCACHE_OIDC_ISSUER`, `_AUDIENCE`, `_IDENTITY_CLAIM`,
//! `_SCOPE_CLAIM`): a JWT signed by the issuer is an identity.
//!
//! At start-up the node reads the issuer's discovery document
//! (`<issuer>/.well-known/openid-configuration`) and its key set (`jwks_uri`); a node
//! that cannot do so does not start. A token is then checked without any network call:
//! its key (by `kid`) from the key set, an asymmetric algorithm the key allows (RS*,
//! PS*, ES*, EdDSA; never `none` or HMAC), `iss`, `aud`, `exp` and `nbf` (60 s of
//! leeway). The identity is the identity claim (a non-empty string); the scopes are the
//! scope claim (a space-separated string or an array), keeping `read`, `write` and
//! `admin`. A token naming a key the set does not hold makes the node fetch the set
//! again, at most once per [`REFRESH_EVERY`]; that token is refused, the next one after
//! the fetch is checked against the new keys.

use crate::auth::{Identity, Scope, Scopes};
use jsonwebtoken::jwk::AlgorithmParameters;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// The OIDC settings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OidcSettings {
    pub issuer: String,
    pub audience: String,
    pub identity_claim: String,
    pub scope_claim: String,
}

/// The shortest time between two fetches of the key set.
pub const REFRESH_EVERY: Duration = Duration::from_secs(60);
/// How long a fetch of the discovery document or key set may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of a discovery document or key set.
const MAX_DOCUMENT: usize = 1 << 20;
/// Most bytes of a token looked at.
const MAX_TOKEN: usize = 16 << 10;

/// A key of the set, with the algorithms it may verify.
struct Key {
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

/// A verifier for one issuer.
pub struct Oidc {
    settings: OidcSettings,
    jwks_uri: String,
    http: reqwest::Client,
    /// By `kid` (`""` for a key without one).
    keys: RwLock<HashMap<String, Arc<Key>>>,
    /// When a key set fetch was last started after start-up (`None`: never, so the first
    /// unknown key fetches at once).
    last_fetch: Mutex<Option<Instant>>,
}

/// Why a token was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Not a JWT of this issuer (any check failed).
    Invalid,
    /// Signed by a key the set does not hold (a fetch may have been started).
    UnknownKey,
}

fn client() -> Result<reqwest::Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .no_proxy()
        .timeout(FETCH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())
}

/// The issuer must be https, or http on a loopback address (a test or a sidecar).
fn check_url(what: &str, url: &str) -> Result<(), String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("{what} {url:?} is not a URL: {e}"))?;
    let host = u
        .host_str()
        .unwrap_or("")
        .trim_start_matches('[')
        .trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match u.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!(
            "{what} {url:?} must be https (plain http only on loopback)"
        )),
    }
}

/// An error with its causes (reqwest's own text does not say whether DNS, the
/// connection, TLS or the timeout failed).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

async fn fetch(http: &reqwest::Client, url: &str) -> Result<serde_json::Value, String> {
    let mut resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {}", chain(&e)))?;
    if !resp.status().is_success() {
        return Err(format!("GET {url}: status {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("GET {url}: {e}"))? {
        if body.len() + chunk.len() > MAX_DOCUMENT {
            return Err(format!("GET {url}: larger than {MAX_DOCUMENT} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not JSON: {e}"))
}

/// The usable keys of a key set: signing keys of an asymmetric type, each with the
/// algorithms its type allows (narrowed to its `alg` when it names one). Each key is
/// read on its own: one this build cannot use (another curve, an encryption key) is
/// skipped, not fatal to the set.
fn keys_of(set: &serde_json::Value) -> HashMap<String, Arc<Key>> {
    use Algorithm::*;
    let mut out = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    let listed = set["keys"].as_array().cloned().unwrap_or_default();
    for raw in listed {
        if raw["use"].as_str().is_some_and(|u| u != "sig") {
            continue;
        }
        let Ok(jwk) = serde_json::from_value::<jsonwebtoken::jwk::Jwk>(raw) else {
            continue;
        };
        let family: Vec<Algorithm> = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => vec![RS256, RS384, RS512, PS256, PS384, PS512],
            AlgorithmParameters::EllipticCurve(_) => vec![ES256, ES384],
            AlgorithmParameters::OctetKeyPair(_) => vec![EdDSA],
            AlgorithmParameters::OctetKey(_) => continue, // HMAC: never
        };
        let algorithms: Vec<Algorithm> = match jwk.common.key_algorithm {
            Some(named) => family
                .into_iter()
                .filter(|a| format!("{a:?}") == format!("{named:?}"))
                .collect(),
            None => family,
        };
        let kid = jwk.common.key_id.clone().unwrap_or_default();
        if !seen.insert(kid.clone()) {
            // Two keys under one kid (or two without one): none of them can be chosen.
            out.remove(&kid);
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        if algorithms.is_empty() {
            continue;
        }
        out.insert(kid, Arc::new(Key { key, algorithms }));
    }
    out
}

impl Oidc {
    /// Reads the discovery document and the key set. The discovery document's `issuer`
    /// must be the configured one.
    pub async fn discover(settings: OidcSettings) -> Result<Arc<Self>, String> {
        check_url("the issuer", &settings.issuer)?;
        let http = client()?;
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            settings.issuer.trim_end_matches('/')
        );
        let doc = fetch(&http, &discovery_url).await?;
        if doc["issuer"].as_str() != Some(settings.issuer.as_str()) {
            return Err(format!(
                "the discovery document names the issuer {}, not {:?}",
                doc["issuer"], settings.issuer
            ));
        }
        let jwks_uri = doc["jwks_uri"]
            .as_str()
            .ok_or("the discovery document has no jwks_uri")?
            .to_owned();
        check_url("the jwks_uri", &jwks_uri)?;
        let oidc = Self {
            settings,
            jwks_uri,
            http,
            keys: RwLock::new(HashMap::new()),
            last_fetch: Mutex::new(None),
        };
        oidc.fetch_keys().await?;
        Ok(Arc::new(oidc))
    }

    async fn fetch_keys(&self) -> Result<usize, String> {
        let set = fetch(&self.http, &self.jwks_uri).await?;
        if !set["keys"].is_array() {
            return Err(format!(
                "the key set at {} has no keys array",
                self.jwks_uri
            ));
        }
        let keys = keys_of(&set);
        if keys.is_empty() {
            return Err(format!(
                "the key set at {} holds no usable (asymmetric) key",
                self.jwks_uri
            ));
        }
        let n = keys.len();
        if let Ok(mut k) = self.keys.write() {
            *k = keys;
        }
        Ok(n)
    }

    /// Fetches the key set again in the background, unless it was fetched less than
    /// [`REFRESH_EVERY`] ago.
    fn refresh_soon(self: &Arc<Self>) {
        let Ok(mut last) = self.last_fetch.lock() else {
            return;
        };
        if last.is_some_and(|t| t.elapsed() < REFRESH_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        let me = self.clone();
        tokio::spawn(async move {
            match me.fetch_keys().await {
                Ok(n) => tracing::info!(keys = n, "OIDC key set fetched again"),
                Err(e) => {
                    tracing::warn!(error = %e, "OIDC key set fetch failed; the keys held stay in use")
                }
            }
        });
    }

    /// Checks a bearer token; the identity it carries.
    pub fn verify(self: &Arc<Self>, token: &str) -> Result<Identity, Refused> {
        if token.len() > MAX_TOKEN || token.split('.').count() != 3 {
            return Err(Refused::Invalid);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Refused::Invalid)?;
        let kid = header.kid.clone().unwrap_or_default();
        let key = self.keys.read().ok().and_then(|k| k.get(&kid).cloned());
        let Some(key) = key else {
            self.refresh_soon();
            return Err(Refused::UnknownKey);
        };
        if !key.algorithms.contains(&header.alg) {
            return Err(Refused::Invalid);
        }
        let mut v = Validation::new(header.alg);
        // Present and matching: the library checks iss and aud only when a token has them.
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.set_issuer(&[&self.settings.issuer]);
        v.set_audience(&[&self.settings.audience]);
        v.validate_nbf = true;
        v.leeway = 60;
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &v)
            .map_err(|_| Refused::Invalid)?;
        let claims = data.claims;
        let id = claims[&self.settings.identity_claim]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or(Refused::Invalid)?;
        let names: Vec<&str> = match &claims[&self.settings.scope_claim] {
            serde_json::Value::String(s) => s.split_whitespace().collect(),
            serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_str()).collect(),
            _ => Vec::new(),
        };
        let scopes: Scopes = names.into_iter().filter_map(Scope::parse).collect();
        Ok(Identity {
            id: id.into(),
            scopes,
        })
    }
}

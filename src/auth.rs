//! Who a client is and what it may do, on the client, management and RESP listeners.
//!
//! Two ways to configure it:
//! - `HYPERCACHE_AUTH_TOKEN` alone: one bearer token, identity `default`, every scope
//!   (no token: identity `anonymous`, every scope, under protected mode's loopback rule);
//! - `HYPERCACHE_AUTH_CONFIG`: a YAML file in the Go server's format ([`AuthConfig`]):
//!   bearer tokens and HTTP Basic users (bcrypt hashes), each with its scopes, and
//!   whether anonymous requests are served.
//!
//! Scopes are `read`, `write` and `admin`, and are not hierarchical: a route needs its
//! own ([`required_scope`]). The peer token of the dist listener is not an identity here.

use crate::config::ConfigError;
use crate::http::serve::TlsPeer;
use axum::http::Method;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

/// A permission a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Read,
    Write,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.name() == s)
    }

    /// The capability name `/v1/me` shows for it (`cache.read`, ...).
    pub fn capability(self) -> String {
        format!("cache.{}", self.name())
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    pub const ALL: Scopes = Scopes(0b111);

    pub fn has(self, s: Scope) -> bool {
        self.0 & s.bit() != 0
    }

    /// In the order read, write, admin.
    pub fn list(self) -> Vec<Scope> {
        Scope::ALL.into_iter().filter(|s| self.has(*s)).collect()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(it: I) -> Self {
        Scopes(it.into_iter().fold(0, |acc, s| acc | s.bit()))
    }
}

/// The caller of a request, as the guard resolved it (a request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub id: Arc<str>,
    pub scopes: Scopes,
}

impl Identity {
    fn new(id: &str, scopes: Scopes) -> Self {
        Self {
            id: id.into(),
            scopes,
        }
    }
}

/// The scope a guarded route needs, from its method and matched path. Routes that are
/// not listed need `read` (so an unknown route is a 401 or 404 to a reader, never more).
pub fn required_scope(management: bool, method: &Method, path: Option<&str>) -> Scope {
    let path = path.unwrap_or("");
    if management {
        return match (method, path) {
            (&Method::POST, "/cluster/members/{id}/remove")
            | (&Method::POST, "/dist/drain")
            | (&Method::POST, "/trigger-expiration")
            | (&Method::POST, "/clear") => Scope::Admin,
            (_, p) if p.starts_with("/debug/") => Scope::Admin,
            _ => Scope::Read,
        };
    }
    match (method, path) {
        (&Method::PUT, "/v1/cache/{key}")
        | (&Method::DELETE, "/v1/cache/{key}")
        | (&Method::POST, "/v1/cache/batch/put")
        | (&Method::POST, "/v1/cache/batch/delete") => Scope::Write,
        _ => Scope::Read,
    }
}

// ---------------------------------------------------------------------------------------
// The auth file.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
    #[serde(default)]
    users: Vec<UserEntry>,
    #[serde(default)]
    cert_identities: Vec<CertEntry>,
    #[serde(default)]
    allow_anonymous: bool,
    #[serde(default)]
    allow_basic_without_tls: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertEntry {
    subject_cn: String,
    scopes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    id: String,
    token: String,
    scopes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    id: String,
    username: String,
    password_bcrypt: String,
    scopes: Vec<String>,
}

/// A bearer token identity.
#[derive(Clone)]
struct Token {
    /// `Bearer <token>`, the whole header value.
    header: Vec<u8>,
    identity: Identity,
}

/// An HTTP Basic identity.
#[derive(Clone)]
struct User {
    username: String,
    hash: String,
    identity: Identity,
}

/// The validated contents of `HYPERCACHE_AUTH_CONFIG`. Its `Debug` shows no secret.
#[derive(Clone)]
pub struct AuthConfig {
    pub path: String,
    tokens: Vec<Token>,
    users: Vec<User>,
    /// Client certificate subject CN → identity (the identity's id is the CN).
    certs: Vec<(String, Identity)>,
    pub allow_anonymous: bool,
    pub allow_basic_without_tls: bool,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("path", &self.path)
            .field("tokens", &self.tokens.len())
            .field("users", &self.users.len())
            .field("cert_identities", &self.certs.len())
            .field("allow_anonymous", &self.allow_anonymous)
            .field("allow_basic_without_tls", &self.allow_basic_without_tls)
            .finish()
    }
}

/// What `/config` shows of the auth file: counts and ids, no secret.
#[derive(serde::Serialize)]
pub struct AuthSummary<'a> {
    path: &'a str,
    token_ids: Vec<&'a str>,
    user_ids: Vec<&'a str>,
    cert_identities: Vec<&'a str>,
    allow_anonymous: bool,
    allow_basic_without_tls: bool,
}

impl AuthConfig {
    /// Reads and validates the file at `path`. Every problem is an error naming the
    /// entry (never a secret): an unknown field, an empty id/token/username, an unknown
    /// or missing scope, a duplicate id or token or username or subject CN, a hash that
    /// is not bcrypt. (That `cert_identities` need a listener with a client CA is
    /// checked with the TLS settings.)
    pub fn load(path: &str) -> Result<Self, String> {
        let bytes =
            crate::tls::read_bounded(path).map_err(|e| format!("a readable YAML file ({e})"))?;
        let text = String::from_utf8(bytes).map_err(|_| "a UTF-8 YAML file".to_string())?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &str, text: &str) -> Result<Self, String> {
        let file: AuthFile = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Yaml))
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(|e| format!("a valid auth file ({})", unquoted(&e.to_string())))?;
        let mut ids = std::collections::HashSet::new();
        let mut check_id = |what: &str, i: usize, id: &str| {
            if id.trim().is_empty() {
                return Err(format!("a valid auth file: {what}[{i}] has an empty id"));
            }
            if !ids.insert(id.to_owned()) {
                return Err(format!(
                    "a valid auth file: {what}[{i}]: the id {id:?} is used twice"
                ));
            }
            Ok(())
        };
        let scopes = |what: &str, i: usize, list: &[String]| -> Result<Scopes, String> {
            if list.is_empty() {
                return Err(format!(
                    "a valid auth file: {what}[{i}] has no scopes (read, write, admin)"
                ));
            }
            list.iter()
                .map(|s| {
                    Scope::parse(s).ok_or_else(|| {
                        format!("a valid auth file: {what}[{i}] has the unknown scope {s:?} (read, write or admin)")
                    })
                })
                .collect()
        };
        let mut tokens: Vec<Token> = Vec::new();
        for (i, t) in file.tokens.iter().enumerate() {
            check_id("tokens", i, &t.id)?;
            if t.token.is_empty() || t.token.trim() != t.token {
                return Err(format!(
                    "a valid auth file: tokens[{i}] ({}) has an empty token or one with spaces around it",
                    t.id
                ));
            }
            let header = format!("Bearer {}", t.token).into_bytes();
            if tokens.iter().any(|o| o.header == header) {
                return Err(format!(
                    "a valid auth file: tokens[{i}] ({}) repeats another entry's token",
                    t.id
                ));
            }
            tokens.push(Token {
                header,
                identity: Identity::new(&t.id, scopes("tokens", i, &t.scopes)?),
            });
        }
        let mut users: Vec<User> = Vec::new();
        for (i, u) in file.users.iter().enumerate() {
            check_id("users", i, &u.id)?;
            if u.username.is_empty() || u.username.contains(':') {
                return Err(format!(
                    "a valid auth file: users[{i}] ({}) needs a username without ':'",
                    u.id
                ));
            }
            if users.iter().any(|o| o.username == u.username) {
                return Err(format!(
                    "a valid auth file: users[{i}] ({}) repeats another entry's username",
                    u.id
                ));
            }
            if u.password_bcrypt.parse::<bcrypt::HashParts>().is_err()
                || !["$2a$", "$2b$", "$2y$"]
                    .iter()
                    .any(|p| u.password_bcrypt.starts_with(p))
            {
                return Err(format!(
                    "a valid auth file: users[{i}] ({}) has a password_bcrypt that is not a bcrypt hash ($2a$, $2b$ or $2y$)",
                    u.id
                ));
            }
            users.push(User {
                username: u.username.clone(),
                hash: u.password_bcrypt.clone(),
                identity: Identity::new(&u.id, scopes("users", i, &u.scopes)?),
            });
        }
        let mut certs: Vec<(String, Identity)> = Vec::new();
        for (i, c) in file.cert_identities.iter().enumerate() {
            if c.subject_cn.trim().is_empty() {
                return Err(format!(
                    "a valid auth file: cert_identities[{i}] has an empty subject_cn"
                ));
            }
            if certs.iter().any(|(cn, _)| *cn == c.subject_cn) {
                return Err(format!(
                    "a valid auth file: cert_identities[{i}] repeats the subject_cn {:?}",
                    c.subject_cn
                ));
            }
            let scopes = scopes("cert_identities", i, &c.scopes)?;
            certs.push((c.subject_cn.clone(), Identity::new(&c.subject_cn, scopes)));
        }
        Ok(Self {
            path: path.to_owned(),
            tokens,
            users,
            certs,
            allow_anonymous: file.allow_anonymous,
            allow_basic_without_tls: file.allow_basic_without_tls,
        })
    }

    /// True when the file maps client certificates to identities.
    pub fn has_cert_identities(&self) -> bool {
        !self.certs.is_empty()
    }

    pub fn summary(&self) -> AuthSummary<'_> {
        AuthSummary {
            path: &self.path,
            token_ids: self.tokens.iter().map(|t| &*t.identity.id).collect(),
            user_ids: self.users.iter().map(|u| &*u.identity.id).collect(),
            cert_identities: self.certs.iter().map(|(cn, _)| cn.as_str()).collect(),
            allow_anonymous: self.allow_anonymous,
            allow_basic_without_tls: self.allow_basic_without_tls,
        }
    }
}

/// `text` with every double-quoted part replaced by `"…"`: a parser's message quotes
/// the value it did not expect, which may be a token or a hash.
fn unquoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, part) in text.split('"').enumerate() {
        out.push_str(if i % 2 == 1 { "\"…\"" } else { part });
    }
    out
}

impl From<String> for ConfigError {
    fn from(message: String) -> Self {
        ConfigError {
            var: "HYPERCACHE_AUTH_CONFIG".into(),
            value: "[not shown]".into(),
            expected: message,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Resolving a request's identity.

/// bcrypt checks run at once per node; a request that finds them all busy gets 503
/// OVERLOADED at once (it does not wait holding its in-flight slot, so a flood of
/// wrong passwords cannot take the slots of other clients).
const BCRYPT_PERMITS: usize = 2;

/// How a listener decides who a request is: from the auth file, or from the single
/// token.
pub struct Policy {
    tokens: Vec<Token>,
    users: Vec<User>,
    certs: Vec<(String, Identity)>,
    /// Served without credentials (every scope), or `None`.
    anonymous: Option<Identity>,
    /// HTTP Basic is looked at on connections without TLS too (the file's
    /// `allow_basic_without_tls`); over TLS it always is.
    basic_without_tls: bool,
    /// Per user, the last password bcrypt accepted, so that a client sending the same
    /// credentials on every request pays bcrypt once.
    verified: Mutex<HashMap<usize, Vec<u8>>>,
    bcrypt: Arc<Semaphore>,
    /// OIDC bearer tokens, checked after the configured tokens.
    oidc: Option<Arc<crate::oidc::Oidc>>,
}

/// What the credentials of a request come to.
pub enum Resolved {
    /// Known now.
    Known(Identity),
    /// No (valid) credentials.
    Unknown,
    /// HTTP Basic of a known user whose password needs a bcrypt check.
    Basic { user: usize, password: Vec<u8> },
}

/// Why a bcrypt check did not admit a request.
pub enum BasicRefused {
    WrongPassword,
    Busy,
}

impl Policy {
    /// The policy of the client and management listeners. Anonymous requests are served
    /// (every scope) only where nothing is configured, or where the auth file says so.
    pub fn new(
        auth: Option<&AuthConfig>,
        token: Option<&str>,
        oidc: Option<Arc<crate::oidc::Oidc>>,
    ) -> Self {
        let everything = |id: &str| Some(Identity::new(id, Scopes::ALL));
        let (tokens, users, certs, anonymous, basic_without_tls) = match auth {
            Some(a) => (
                a.tokens.clone(),
                a.users.clone(),
                a.certs.clone(),
                if a.allow_anonymous {
                    everything("anonymous")
                } else {
                    None
                },
                a.allow_basic_without_tls,
            ),
            None => match token {
                Some(t) => (
                    vec![Token {
                        header: format!("Bearer {t}").into_bytes(),
                        identity: Identity::new("default", Scopes::ALL),
                    }],
                    Vec::new(),
                    Vec::new(),
                    None,
                    false,
                ),
                None => (
                    Vec::new(),
                    Vec::new(),
                    Vec::new(),
                    if oidc.is_some() {
                        None
                    } else {
                        everything("anonymous")
                    },
                    false,
                ),
            },
        };
        Self {
            tokens,
            users,
            certs,
            anonymous,
            basic_without_tls,
            verified: Mutex::new(HashMap::new()),
            bcrypt: Arc::new(Semaphore::new(BCRYPT_PERMITS)),
            oidc,
        }
    }

    /// True when some credentials are configured (a token, a user or an issuer).
    pub fn has_credentials(&self) -> bool {
        !self.tokens.is_empty() || !self.users.is_empty() || self.oidc.is_some()
    }

    /// True when a 401 should offer HTTP Basic (`WWW-Authenticate`).
    pub fn offers_basic(&self, tls: bool) -> bool {
        !self.users.is_empty() && (tls || self.basic_without_tls)
    }

    /// Resolves the `Authorization` header: a bearer token (compared in constant time
    /// with every configured token), then HTTP Basic (over TLS, or where the file allows
    /// it without); without the header, the client certificate's subject CN
    /// (`client_cn`, when the connection's TLS verified one), then anonymous.
    pub fn resolve(&self, header: Option<&[u8]>, tls: Option<&TlsPeer>) -> Resolved {
        if let Some(h) = header {
            let mut found = None;
            for t in &self.tokens {
                if bool::from(t.header.as_slice().ct_eq(h)) && found.is_none() {
                    found = Some(&t.identity);
                }
            }
            if let Some(id) = found {
                return Resolved::Known(id.clone());
            }
            if let (Some(oidc), Some(jwt)) = (&self.oidc, h.strip_prefix(b"Bearer ")) {
                if let Ok(id) = std::str::from_utf8(jwt)
                    .map_err(|_| crate::oidc::Refused::Invalid)
                    .and_then(|t| oidc.verify(t))
                {
                    return Resolved::Known(id);
                }
            }
            if tls.is_some() || self.basic_without_tls {
                if let Some(r) = self.basic_of(h) {
                    return r;
                }
            }
            // Credentials that match nothing are refused, even where anonymous requests
            // are served: a client with a mistyped token learns it at once.
            return Resolved::Unknown;
        }
        let cn = tls.and_then(|t| t.client_cn.as_deref());
        if let Some((_, id)) = cn.and_then(|cn| self.certs.iter().find(|(c, _)| c == cn)) {
            return Resolved::Known(id.clone());
        }
        match &self.anonymous {
            Some(id) => Resolved::Known(id.clone()),
            None => Resolved::Unknown,
        }
    }

    fn basic_of(&self, header: &[u8]) -> Option<Resolved> {
        use base64::Engine;
        let b64 = header.strip_prefix(b"Basic ")?;
        let decoded = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
        let colon = decoded.iter().position(|b| *b == b':')?;
        let (name, password) = (&decoded[..colon], &decoded[colon + 1..]);
        let user = self
            .users
            .iter()
            .position(|u| u.username.as_bytes() == name)?;
        let cached = self
            .verified
            .lock()
            .ok()
            .and_then(|v| {
                v.get(&user)
                    .map(|p| bool::from(p.as_slice().ct_eq(password)))
            })
            .unwrap_or(false);
        Some(if cached {
            Resolved::Known(self.users[user].identity.clone())
        } else {
            Resolved::Basic {
                user,
                password: password.to_vec(),
            }
        })
    }

    /// Checks a Basic password with bcrypt off the async workers, at most
    /// [`BCRYPT_PERMITS`] at once.
    pub async fn verify_basic(
        self: Arc<Self>,
        user: usize,
        password: Vec<u8>,
    ) -> Result<Identity, BasicRefused> {
        let permit = self
            .bcrypt
            .clone()
            .try_acquire_owned()
            .map_err(|_| BasicRefused::Busy)?;
        let hash = self.users[user].hash.clone();
        let pw = password.clone();
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            bcrypt::verify(&pw, &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        if !ok {
            return Err(BasicRefused::WrongPassword);
        }
        if let Ok(mut v) = self.verified.lock() {
            v.insert(user, password);
        }
        Ok(self.users[user].identity.clone())
    }

    /// The identity of a token alone (RESP `AUTH <token>`).
    pub fn token(&self, token: &[u8]) -> Option<Identity> {
        let mut header = b"Bearer ".to_vec();
        header.extend_from_slice(token);
        match self.resolve(Some(&header), None) {
            Resolved::Known(id) => Some(id),
            _ => None,
        }
    }

    /// The Basic user named `username`, when Basic is allowed: over TLS (`tls`), or
    /// where the file allows it without (RESP `AUTH user pass`).
    pub fn user(&self, username: &[u8], password: &[u8], tls: bool) -> Resolved {
        use base64::Engine;
        let mut raw = username.to_vec();
        raw.push(b':');
        raw.extend_from_slice(password);
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        );
        if !tls && !self.basic_without_tls {
            return Resolved::Unknown;
        }
        self.basic_of(header.as_bytes())
            .unwrap_or(Resolved::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
tokens:
  - id: app
    token: "app-secret"
    scopes: [read, write]
  - id: ops
    token: "ops-secret"
    scopes: [admin]
users:
  - id: alice
    username: alice
    password_bcrypt: "HASH"
    scopes: [read]
allow_anonymous: false
allow_basic_without_tls: true
"#;

    fn known(r: Resolved) -> Option<Identity> {
        match r {
            Resolved::Known(i) => Some(i),
            _ => None,
        }
    }

    #[test]
    fn scopes_per_route() {
        assert_eq!(
            required_scope(false, &Method::GET, Some("/v1/cache/{key}")),
            Scope::Read
        );
        assert_eq!(
            required_scope(false, &Method::PUT, Some("/v1/cache/{key}")),
            Scope::Write
        );
        assert_eq!(
            required_scope(false, &Method::POST, Some("/v1/cache/batch/get")),
            Scope::Read
        );
        assert_eq!(
            required_scope(false, &Method::POST, Some("/v1/cache/batch/delete")),
            Scope::Write
        );
        assert_eq!(required_scope(false, &Method::GET, None), Scope::Read);
        assert_eq!(
            required_scope(true, &Method::POST, Some("/clear")),
            Scope::Admin
        );
        assert_eq!(
            required_scope(true, &Method::GET, Some("/stats")),
            Scope::Read
        );
    }

    #[test]
    fn the_file_gives_each_token_its_scopes() {
        let file = FILE.replace("HASH", &bcrypt::hash("pw", 4).unwrap());
        let a = AuthConfig::parse("auth.yaml", &file).unwrap();
        let p = Policy::new(Some(&a), Some("ignored"), None);
        let app = known(p.resolve(Some(b"Bearer app-secret"), None)).unwrap();
        assert_eq!(&*app.id, "app");
        assert_eq!(app.scopes.list(), vec![Scope::Read, Scope::Write]);
        let ops = known(p.resolve(Some(b"Bearer ops-secret"), None)).unwrap();
        assert!(ops.scopes.has(Scope::Admin) && !ops.scopes.has(Scope::Read));
        assert!(known(p.resolve(Some(b"Bearer ignored"), None)).is_none());
        assert!(known(p.resolve(Some(b"bearer app-secret"), None)).is_none());
        assert!(known(p.resolve(None, None)).is_none());
        assert!(!format!("{a:?}").contains("secret"));
    }

    #[tokio::test]
    async fn basic_users_pay_bcrypt_once() {
        use base64::Engine;
        let file = FILE.replace("HASH", &bcrypt::hash("pw", 4).unwrap());
        let a = AuthConfig::parse("auth.yaml", &file).unwrap();
        let p = Arc::new(Policy::new(Some(&a), None, None));
        let header = |pw: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("alice:{pw}"))
            )
        };
        let Resolved::Basic { user, password } = p.resolve(Some(header("wrong").as_bytes()), None)
        else {
            panic!("a known user needs a bcrypt check")
        };
        assert!(p.clone().verify_basic(user, password).await.is_err());
        let Resolved::Basic { user, password } = p.resolve(Some(header("pw").as_bytes()), None)
        else {
            panic!("a known user needs a bcrypt check")
        };
        let id = p.clone().verify_basic(user, password).await.ok().unwrap();
        assert_eq!(&*id.id, "alice");
        // Now known without bcrypt; another password is checked again.
        assert!(known(p.resolve(Some(header("pw").as_bytes()), None)).is_some());
        assert!(matches!(
            p.resolve(Some(header("other").as_bytes()), None),
            Resolved::Basic { .. }
        ));
        assert!(known(p.resolve(Some(b"Basic !!!"), None)).is_none());
    }

    #[test]
    fn single_token_and_open_modes() {
        let p = Policy::new(None, Some("t"), None);
        assert_eq!(
            &*known(p.resolve(Some(b"Bearer t"), None)).unwrap().id,
            "default"
        );
        assert!(known(p.resolve(None, None)).is_none());
        let open = Policy::new(None, None, None);
        assert_eq!(&*known(open.resolve(None, None)).unwrap().id, "anonymous");
        assert!(known(open.resolve(Some(b"Bearer x"), None)).is_none());
    }

    #[test]
    fn bad_files_name_the_problem() {
        let bad = |text: &str, want: &str| {
            let e = AuthConfig::parse("a.yaml", text).unwrap_err();
            assert!(e.contains(want), "{e}");
            assert!(!e.contains("s3cret"), "{e}");
        };
        bad(
            "tokens: [{id: a, token: s3cret, scopes: [read], extra: 1}]",
            "extra",
        );
        bad("tokens: [{id: a, token: s3cret, scopes: [root]}]", "root");
        bad("tokens: [{id: a, token: s3cret, scopes: []}]", "no scopes");
        bad(
            "tokens: [{id: '', token: s3cret, scopes: [read]}]",
            "empty id",
        );
        bad(
            "tokens: [{id: a, token: s3cret, scopes: [read]}, {id: a, token: other, scopes: [read]}]",
            "twice",
        );
        bad(
            "tokens: [{id: a, token: s3cret, scopes: [read]}, {id: b, token: s3cret, scopes: [read]}]",
            "repeats",
        );
        bad(
            "users: [{id: u, username: u, password_bcrypt: s3cret, scopes: [read]}]",
            "bcrypt",
        );
        bad(
            "cert_identities: [{subject_cn: '', scopes: [read]}]",
            "subject_cn",
        );
        bad("allow_everyone: true", "allow_everyone");
        bad("tokens: [\"s3cret\"]", "valid auth file");
    }
}

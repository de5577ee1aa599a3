//! Process configuration: every `HYPERCACHE_*` environment variable, read through the
//! `config` crate, validated into [`Config`].
//!
//! Owns parsing and validation only. An invalid value is a [`ConfigError`] naming the
//! variable, the value and what was expected; `main` prints it and exits with code 2.
//! There is no silent fall-back: a variable that is set must parse.

use crate::duration::{parse_duration, parse_size, DurationError};
use hypercache_actors::proto::{MAX_BATCH_CALLS, MAX_DIST_BODY};
use hypercache_actors::store::TOMBSTONE_OVERHEAD;
use hypercache_actors::types::MAX_KEY_BYTES;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Prefix of every variable.
pub const PREFIX: &str = "HYPERCACHE_";

/// A start-up configuration error: one line for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {var}={value:?}: expected {expected}")]
pub struct ConfigError {
    pub var: String,
    pub value: String,
    pub expected: String,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A listener address as configured: `host:port` or `:port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenAddr {
    /// Empty for the `:port` form.
    pub host: String,
    pub port: u16,
}

impl ListenAddr {
    /// Address to bind: an IP literal binds that IP; a name or `:port` binds every
    /// interface (a name is what peers use to reach us, not what we bind).
    pub fn bind_addr(&self) -> String {
        let ip = self.host.trim_start_matches('[').trim_end_matches(']');
        if ip.parse::<std::net::IpAddr>().is_ok() {
            if ip.contains(':') {
                format!("[{ip}]:{}", self.port)
            } else {
                format!("{ip}:{}", self.port)
            }
        } else {
            format!("0.0.0.0:{}", self.port)
        }
    }

    /// Address to advertise to peers: the host as written, or `fallback_host` for `:port`.
    pub fn advertise(&self, fallback_host: &str) -> String {
        if self.host.is_empty() {
            format!("{fallback_host}:{}", self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// One seed peer: `id@host:port`, or bare `host:port` whose id is learnt from the peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Seed {
    pub id: Option<String>,
    pub address: String,
}

pub use hypercache_actors::quorum::Consistency;

/// The effective configuration. Serialised for `/config` with the token redacted.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub node_id: String,
    pub api_addr: ListenAddr,
    pub mgmt_addr: ListenAddr,
    pub dist_addr: ListenAddr,
    /// The RESP listener's address; `None` (unset or empty) means no RESP listener.
    pub resp_addr: Option<ListenAddr>,
    /// The dist address peers use to reach this node.
    pub advertise: String,
    pub seeds: Vec<Seed>,
    pub replication: usize,
    pub write_consistency: Consistency,
    pub read_consistency: Consistency,
    pub capacity: usize,
    pub capacity_bytes: Option<u64>,
    pub max_value_bytes: u64,
    pub shards: usize,
    #[serde(serialize_with = "redact")]
    pub auth_token: Option<String>,
    /// `HYPERCACHE_AUTH_CONFIG`, read and validated at start-up; `/config` shows its
    /// ids and flags, no secret.
    #[serde(serialize_with = "auth_summary")]
    pub auth_config: Option<Arc<crate::auth::AuthConfig>>,
    /// OIDC bearer tokens (`HYPERCACHE_OIDC_*`); the issuer is read at start-up.
    pub oidc: Option<crate::oidc::OidcSettings>,
    /// TLS of the client API (and the RESP listener); `/config` shows the file paths.
    pub api_tls: Option<crate::tls::Tls>,
    /// TLS of the management API.
    pub mgmt_tls: Option<crate::tls::Tls>,
    /// TLS of the dist listener and the peer client (mutual, against the CA).
    pub dist_tls: Option<crate::tls::Tls>,
    pub log_level: String,
    pub log_format: LogFormat,
    /// Exported request spans carry the key (`hypercache.key`); off by default, since
    /// keys can be personal data. Values are never exported.
    pub trace_keys: bool,
    #[serde(with = "ms")]
    pub heartbeat: Duration,
    pub indirect_probe_k: usize,
    #[serde(with = "ms")]
    pub suspect_timeout: Duration,
    #[serde(with = "ms")]
    pub dead_timeout: Duration,
    #[serde(with = "ms")]
    pub peer_timeout: Duration,
    pub peer_queue_items: usize,
    pub peer_queue_bytes: u64,
    pub peer_batch_items: usize,
    pub peer_batch_bytes: u64,
    pub peer_pipeline: usize,
    #[serde(with = "ms")]
    pub read_hedge: Duration,
    #[serde(with = "ms")]
    pub hint_ttl: Duration,
    #[serde(with = "ms")]
    pub hint_replay: Duration,
    pub hint_max_per_peer: usize,
    pub hint_max_bytes: u64,
    #[serde(with = "ms")]
    pub anti_entropy_interval: Duration,
    pub anti_entropy_max_keys: usize,
    #[serde(with = "ms")]
    pub rebalance_interval: Duration,
    #[serde(with = "ms")]
    pub ownership_sweep_interval: Duration,
    pub rebalance_batch: usize,
    pub rebalance_concurrency: usize,
    #[serde(with = "ms")]
    pub drain_timeout: Duration,
    #[serde(with = "ms")]
    pub tombstone_retention: Duration,
    pub tombstone_bytes: u64,
    #[serde(with = "ms")]
    pub sweep_interval: Duration,
    #[serde(with = "ms")]
    pub drain_linger: Duration,
    #[serde(with = "ms")]
    pub shutdown_grace: Duration,
    pub max_inflight: usize,
    /// With no token for a listener, refuse its protected routes to non-loopback peers.
    pub protected_mode: bool,
    pub sloppy_quorum: bool,
    /// What the dist listener accepts and what peers send (defaults to the auth token).
    #[serde(serialize_with = "redact")]
    pub peer_token: Option<String>,
    #[serde(with = "ms")]
    pub header_read_timeout: Duration,
    #[serde(with = "ms")]
    pub body_read_timeout: Duration,
    #[serde(with = "ms")]
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub mgmt_max_connections: usize,
    pub dist_max_connections: usize,
    pub client_buffer_bytes: u64,
    pub dist_buffer_bytes: u64,
    pub max_members: usize,
}

fn auth_summary<S: serde::Serializer>(
    a: &Option<Arc<crate::auth::AuthConfig>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::Serialize;
    a.as_ref().map(|a| a.summary()).serialize(s)
}

fn redact<S: serde::Serializer>(t: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if t.is_some() { "[redacted]" } else { "" })
}

mod ms {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

/// Checks `vars` as start-up does and reports every invalid variable, not only the
/// first: each one found is set aside (its default takes its place) and the check runs
/// again, at most once per known setting. An error about a variable that is not set (a
/// default that conflicts with another setting) ends the search. `Ok` with the effective
/// configuration when nothing is wrong.
pub fn check_all(vars: &HashMap<String, String>) -> Result<Config, Vec<ConfigError>> {
    let mut vars = vars.clone();
    let mut errors: Vec<ConfigError> = Vec::new();
    for _ in 0..=KNOWN.len() {
        match Config::from_vars(&vars) {
            Ok(c) if errors.is_empty() => return Ok(c),
            Ok(_) => break,
            Err(e) => {
                let set = vars.remove(&e.var).is_some();
                if !errors.iter().any(|x| x.var == e.var) {
                    errors.push(e);
                }
                if !set {
                    break;
                }
            }
        }
    }
    Err(errors)
}

/// Reads the `HYPERCACHE_*` variables of the process environment through `config`.
pub fn env_vars() -> HashMap<String, String> {
    let source = config::Config::builder()
        .add_source(config::Environment::with_prefix("HYPERCACHE").prefix_separator("_"))
        .build();
    let mut out = HashMap::new();
    if let Ok(c) = source {
        if let Ok(map) = c.try_deserialize::<HashMap<String, String>>() {
            for (k, v) in map {
                out.insert(format!("{PREFIX}{}", k.to_ascii_uppercase()), v);
            }
        }
    }
    out
}

/// Every variable this program reads, without the prefix.
pub const KNOWN: &[&str] = &[
    "NODE_ID",
    "API_ADDR",
    "MGMT_ADDR",
    "DIST_ADDR",
    "RESP_ADDR",
    "SEEDS",
    "REPLICATION",
    "WRITE_CONSISTENCY",
    "READ_CONSISTENCY",
    "CAPACITY",
    "CAPACITY_BYTES",
    "MAX_VALUE_BYTES",
    "SHARDS",
    "AUTH_TOKEN",
    "AUTH_CONFIG",
    "OIDC_ISSUER",
    "OIDC_AUDIENCE",
    "OIDC_IDENTITY_CLAIM",
    "OIDC_SCOPE_CLAIM",
    "API_TLS_CERT",
    "API_TLS_KEY",
    "API_TLS_CLIENT_CA",
    "MGMT_TLS_CERT",
    "MGMT_TLS_KEY",
    "MGMT_TLS_CLIENT_CA",
    "DIST_TLS_CERT",
    "DIST_TLS_KEY",
    "DIST_TLS_CA",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "TRACE_KEYS",
    "HEARTBEAT",
    "INDIRECT_PROBE_K",
    "SUSPECT_TIMEOUT",
    "DEAD_TIMEOUT",
    "HINT_TTL",
    "HINT_REPLAY",
    "REBALANCE_INTERVAL",
    "TOMBSTONE_RETENTION",
    "SWEEP_INTERVAL",
    "DRAIN_LINGER",
    "SHUTDOWN_GRACE",
    "MAX_INFLIGHT",
    "PEER_TIMEOUT",
    "HINT_MAX_PER_PEER",
    "HINT_MAX_BYTES",
    "ANTI_ENTROPY_INTERVAL",
    "ANTI_ENTROPY_MAX_KEYS",
    "REBALANCE_BATCH",
    "REBALANCE_CONCURRENCY",
    "DRAIN_TIMEOUT",
    "PEER_QUEUE_ITEMS",
    "PEER_QUEUE_BYTES",
    "PEER_BATCH_ITEMS",
    "PEER_BATCH_BYTES",
    "PEER_PIPELINE",
    "READ_HEDGE",
    "PROTECTED_MODE",
    "PEER_TOKEN",
    "HEADER_READ_TIMEOUT",
    "BODY_READ_TIMEOUT",
    "IDLE_TIMEOUT",
    "MAX_CONNECTIONS",
    "MGMT_MAX_CONNECTIONS",
    "DIST_MAX_CONNECTIONS",
    "CLIENT_BUFFER_BYTES",
    "DIST_BUFFER_BYTES",
    "MAX_MEMBERS",
    "TOMBSTONE_BYTES",
    "SLOPPY_QUORUM",
    "OWNERSHIP_SWEEP_INTERVAL",
];

/// Words that make an unknown `HYPERCACHE_*` variable security-relevant: such a variable
/// stops start-up instead of being warned about, whatever its name.
const SECURITY_WORDS: &[&str] = &["TLS", "OIDC", "AUTH", "TOKEN", "CERT", "SECRET", "PASSWORD"];

/// How long the management and dist listeners get to stop at the end of a shutdown.
pub const LISTENER_STOP: Duration = Duration::from_secs(5);

/// The longest duration any setting takes: every deadline computed from a setting
/// (`now + timeout`, sums of timeouts) stays far from overflowing.
pub const MAX_CONFIG_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

struct Reader<'a> {
    vars: &'a HashMap<String, String>,
}

impl Reader<'_> {
    fn raw(&self, name: &str) -> Option<(String, String)> {
        let var = format!("{PREFIX}{name}");
        self.vars.get(&var).map(|v| (var, v.clone()))
    }

    fn err(var: &str, value: &str, expected: &str) -> ConfigError {
        ConfigError {
            var: var.into(),
            value: value.into(),
            expected: expected.into(),
        }
    }

    /// The error for setting `name`: its full variable name, its value as set (empty
    /// when the default was in force) and what was expected.
    fn invalid(&self, name: &str, expected: &str) -> ConfigError {
        let (var, v) = self
            .raw(name)
            .unwrap_or_else(|| (format!("{PREFIX}{name}"), String::new()));
        Self::err(&var, &v, expected)
    }

    /// A non-empty setting's value.
    fn set(&self, name: &str) -> Option<String> {
        self.raw(name)
            .map(|(_, v)| v)
            .filter(|v| !v.trim().is_empty())
    }

    /// The TLS setting `<prefix>_CERT` / `_KEY` / `<ca>`: none when all are unset; an
    /// error naming the variable when only some are set or a file is unusable. `peer`:
    /// the dist setting, whose CA is required (it verifies peers both ways).
    fn tls(
        &self,
        prefix: &str,
        ca: &str,
        peer: bool,
    ) -> Result<Option<crate::tls::Tls>, ConfigError> {
        let (cert_var, key_var, ca_var) = (
            format!("{prefix}_CERT"),
            format!("{prefix}_KEY"),
            format!("{prefix}_{ca}"),
        );
        let (cert, key, ca) = (self.set(&cert_var), self.set(&key_var), self.set(&ca_var));
        // File paths are not echoed, as no security setting's value is.
        let err = |name: &str, expected: &str| {
            Self::err(&format!("{PREFIX}{name}"), "[not shown]", expected)
        };
        let files = match (cert, key, ca) {
            (None, None, None) => return Ok(None),
            (Some(cert), Some(key), ca) => crate::tls::TlsFiles { cert, key, ca },
            (None, None, Some(_)) => {
                return Err(err(
                    &ca_var,
                    &format!("set with {PREFIX}{cert_var} and {PREFIX}{key_var} (the listener's own certificate and key)"),
                ))
            }
            // Each error names a variable that is set, so that `check_all` can take it
            // out and go on to the next problem.
            (None, _, _) => {
                return Err(err(
                    &key_var,
                    &format!("set together with {PREFIX}{cert_var} (the PEM certificate chain of this key)"),
                ))
            }
            (Some(_), None, _) => {
                return Err(err(
                    &cert_var,
                    &format!("set together with {PREFIX}{key_var} (the PEM private key of this certificate)"),
                ))
            }
        };
        if peer && files.ca.is_none() {
            return Err(err(
                &cert_var,
                &format!("set together with {PREFIX}{ca_var} (a PEM CA bundle: peers verify each other's certificates both ways)"),
            ));
        }
        crate::tls::Tls::load(files, peer)
            .map(Some)
            .map_err(|(part, e)| {
                let name = match part {
                    crate::tls::Part::Cert => &cert_var,
                    crate::tls::Part::Key => &key_var,
                    crate::tls::Part::Ca => &ca_var,
                };
                err(name, &e)
            })
    }

    fn string(&self, name: &str, default: &str) -> String {
        self.raw(name)
            .map(|(_, v)| v)
            .unwrap_or_else(|| default.into())
    }

    fn number(
        &self,
        name: &str,
        default: usize,
        min: usize,
        max: usize,
    ) -> Result<usize, ConfigError> {
        match self.raw(name) {
            None => Ok(default),
            Some((var, v)) => match v.trim().parse::<usize>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(Self::err(
                    &var,
                    &v,
                    &format!("a whole number from {min} to {max}"),
                )),
            },
        }
    }

    fn duration(
        &self,
        name: &str,
        default: Duration,
        min: Duration,
    ) -> Result<Duration, ConfigError> {
        match self.raw(name) {
            None => Ok(default),
            Some((var, v)) => match parse_duration(&v) {
                Ok(d) if d > MAX_CONFIG_DURATION => Err(Self::err(
                    &var,
                    &v,
                    "a duration of at most 10 years (timers and deadlines are computed from it)",
                )),
                Ok(d) if d >= min => Ok(d),
                Ok(_) => Err(Self::err(
                    &var,
                    &v,
                    &format!("a duration of at least {}", humantime::format_duration(min)),
                )),
                Err(DurationError::Negative) => Err(Self::err(&var, &v, "a positive duration")),
                Err(DurationError::Invalid) => {
                    Err(Self::err(&var, &v, "a duration such as 250ms, 1s, 2h30m"))
                }
            },
        }
    }

    fn boolean(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.raw(name) {
            None => Ok(default),
            Some((var, v)) => match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(Self::err(&var, &v, "true or false")),
            },
        }
    }

    fn size(&self, name: &str, default: Option<u64>) -> Result<Option<u64>, ConfigError> {
        match self.raw(name) {
            None => Ok(default),
            Some((var, v)) => match parse_size(&v) {
                Some(n) if n > 0 => Ok(Some(n)),
                _ => Err(Self::err(
                    &var,
                    &v,
                    "a positive byte size such as 4194304, 4MiB, 512MB",
                )),
            },
        }
    }

    fn addr(&self, name: &str, default: &str) -> Result<ListenAddr, ConfigError> {
        let (var, v) = self
            .raw(name)
            .unwrap_or_else(|| (format!("{PREFIX}{name}"), default.into()));
        parse_listen(&v)
            .ok_or_else(|| Self::err(&var, &v, "host:port or :port with a port from 1 to 65535"))
    }

    fn consistency(&self, name: &str, default: Consistency) -> Result<Consistency, ConfigError> {
        match self.raw(name) {
            None => Ok(default),
            Some((var, v)) => Consistency::parse(v.trim())
                .ok_or_else(|| Self::err(&var, &v, "one, quorum or all")),
        }
    }
}

/// Parses `host:port` or `:port` (IPv6 hosts in brackets).
pub fn parse_listen(v: &str) -> Option<ListenAddr> {
    let v = v.trim();
    let (host, port) = v.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    if host.contains(char::is_whitespace) || (host.contains(':') && !host.starts_with('[')) {
        return None;
    }
    Some(ListenAddr {
        host: host.to_owned(),
        port,
    })
}

/// Parses one seed: `id@host:port` or `host:port`.
pub fn parse_seed(s: &str) -> Option<Seed> {
    let s = s.trim();
    let (id, addr) = match s.split_once('@') {
        Some((id, addr)) if !id.is_empty() => (Some(id.to_owned()), addr),
        Some(_) => return None,
        None => (None, s),
    };
    let l = parse_listen(addr)?;
    let address = format!("{}:{}", l.host, l.port);
    let id_ok = id.as_deref().is_none_or(hypercache_actors::swim::valid_id);
    if l.host.is_empty() || !id_ok || !hypercache_actors::swim::valid_addr(&address) {
        return None;
    }
    Some(Seed { id, address })
}

/// The machine's hostname, the default node id.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is valid for buf.len() bytes; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        if let Ok(s) = std::str::from_utf8(&buf[..end]) {
            if !s.is_empty() {
                return s.to_owned();
            }
        }
    }
    "localhost".into()
}

impl Config {
    /// Validates a set of `HYPERCACHE_*` variables (full names) into a configuration.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Config, ConfigError> {
        let r = Reader { vars };
        Self::refuse_unsupported_security(vars)?;
        let host = hostname();
        let node_id = r.string("NODE_ID", &host).trim().to_owned();
        if !hypercache_actors::swim::valid_id(&node_id) {
            return Err(Reader::err(
                "HYPERCACHE_NODE_ID",
                &node_id,
                "an id of 1 to 128 bytes without spaces, control characters or any of @ , / ? #",
            ));
        }
        let api_addr = r.addr("API_ADDR", ":8080")?;
        let mgmt_addr = r.addr("MGMT_ADDR", ":8081")?;
        let dist_addr = r.addr("DIST_ADDR", ":7946")?;
        let resp_addr = match r.raw("RESP_ADDR") {
            Some((_, v)) if v.trim().is_empty() => None,
            Some(_) => Some(r.addr("RESP_ADDR", "")?),
            None => None,
        };
        let advertise = dist_addr.advertise(&host);
        if !hypercache_actors::swim::valid_addr(&advertise) {
            let (var, v) = r
                .raw("DIST_ADDR")
                .unwrap_or_else(|| ("HYPERCACHE_DIST_ADDR".into(), advertise.clone()));
            return Err(Reader::err(
                &var,
                &v,
                "an address peers can dial: host:port with a DNS name, an IPv4 address or a bracketed IPv6 address (with :port alone, the hostname is used)",
            ));
        }
        let mut seeds = Vec::new();
        if let Some((var, v)) = r.raw("SEEDS") {
            for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                seeds.push(parse_seed(part).ok_or_else(|| {
                    Reader::err(
                        &var,
                        &v,
                        &format!("a comma list of id@host:port or host:port (bad entry {part:?})"),
                    )
                })?);
            }
        }
        let replication = r.number("REPLICATION", 3, 1, 64)?;
        let capacity = r.number("CAPACITY", 100_000, 1, usize::MAX)?;
        let shards = r.number("SHARDS", 16, 1, 1024)?;
        if capacity < shards {
            return Err(r.invalid(
                "CAPACITY",
                &format!("at least HYPERCACHE_SHARDS ({shards}) items"),
            ));
        }
        let capacity_bytes = r.size("CAPACITY_BYTES", None)?;
        let max_value_bytes = r.size("MAX_VALUE_BYTES", Some(4 << 20))?.unwrap_or(4 << 20);
        if max_value_bytes > 32 << 20 {
            return Err(r.invalid(
                "MAX_VALUE_BYTES",
                "at most 32MiB (a value travels between nodes in one request)",
            ));
        }
        if let Some(cb) = capacity_bytes {
            if cb / (shards as u64) < max_value_bytes + 1024 {
                return Err(r.invalid("CAPACITY_BYTES", &format!(
                    "room for one largest item per shard: at least {} bytes ({shards} shards x (HYPERCACHE_MAX_VALUE_BYTES + 1 KiB key))",
                    (shards as u64) * (max_value_bytes + 1024)
                )));
            }
        }
        let peer_batch_bytes = r
            .size("PEER_BATCH_BYTES", Some(4 << 20))?
            .unwrap_or(4 << 20);
        if peer_batch_bytes > 32 << 20 {
            return Err(r.invalid("PEER_BATCH_BYTES", "at most 32MiB (a batch travels in one dist request, whose body is capped at 64MiB)"));
        }
        let auth_token = r
            .raw("AUTH_TOKEN")
            .map(|(_, v)| v)
            .filter(|t| !t.is_empty());
        let api_tls = r.tls("API_TLS", "CLIENT_CA", false)?;
        let mgmt_tls = r.tls("MGMT_TLS", "CLIENT_CA", false)?;
        let dist_tls = r.tls("DIST_TLS", "CA", true)?;
        let auth_config = match r.raw("AUTH_CONFIG").filter(|(_, v)| !v.trim().is_empty()) {
            Some((_, path)) => Some(Arc::new(crate::auth::AuthConfig::load(&path)?)),
            None => None,
        };
        if auth_config
            .as_ref()
            .is_some_and(|a| a.has_cert_identities())
            && api_tls.as_ref().is_none_or(|t| t.files.ca.is_none())
            && mgmt_tls.as_ref().is_none_or(|t| t.files.ca.is_none())
        {
            return Err(Reader::err(
                "HYPERCACHE_AUTH_CONFIG",
                "[not shown]",
                "cert_identities only with a listener that verifies client certificates: set HYPERCACHE_API_TLS_CLIENT_CA (or HYPERCACHE_MGMT_TLS_CLIENT_CA), or remove them",
            ));
        }
        let oidc = match (r.set("OIDC_ISSUER"), r.set("OIDC_AUDIENCE")) {
            (None, None) => {
                // A claim setting without an issuer would be ignored: refuse it.
                for claim in ["OIDC_IDENTITY_CLAIM", "OIDC_SCOPE_CLAIM"] {
                    if r.set(claim).is_some() {
                        return Err(r.invalid(
                                claim,
                                "unset, or set with HYPERCACHE_OIDC_ISSUER and HYPERCACHE_OIDC_AUDIENCE (it only applies to their tokens)",
                            ));
                    }
                }
                None
            }
            (Some(issuer), Some(audience)) => Some(crate::oidc::OidcSettings {
                issuer,
                audience,
                identity_claim: r.set("OIDC_IDENTITY_CLAIM").unwrap_or_else(|| "sub".into()),
                scope_claim: r.set("OIDC_SCOPE_CLAIM").unwrap_or_else(|| "scope".into()),
            }),
            // Each names the variable that is set (so `check_all` goes on past it) and
            // does not echo it.
            (None, Some(_)) => {
                return Err(Reader::err(
                    "HYPERCACHE_OIDC_AUDIENCE",
                    "[not shown]",
                    "set together with HYPERCACHE_OIDC_ISSUER (the issuer URL)",
                ))
            }
            (Some(_), None) => {
                return Err(Reader::err(
                    "HYPERCACHE_OIDC_ISSUER",
                    "[not shown]",
                    "set together with HYPERCACHE_OIDC_AUDIENCE (the audience tokens must name)",
                ))
            }
        };
        let peer_token = r
            .raw("PEER_TOKEN")
            .map(|(_, v)| v)
            .filter(|t| !t.is_empty())
            .or_else(|| auth_token.clone());
        let client_buffer_bytes = r
            .size("CLIENT_BUFFER_BYTES", Some(256 << 20))?
            .unwrap_or(256 << 20);
        if client_buffer_bytes < max_value_bytes || client_buffer_bytes > u32::MAX as u64 {
            return Err(r.invalid(
                "CLIENT_BUFFER_BYTES",
                "at least HYPERCACHE_MAX_VALUE_BYTES (one largest value must fit) and below 4GiB",
            ));
        }
        let dist_buffer_bytes = r
            .size("DIST_BUFFER_BYTES", Some(256 << 20))?
            .unwrap_or(256 << 20);
        if dist_buffer_bytes < MAX_DIST_BODY as u64 || dist_buffer_bytes > u32::MAX as u64 {
            return Err(r.invalid(
                "DIST_BUFFER_BYTES",
                "at least 64MiB (one largest peer request must fit) and below 4GiB",
            ));
        }
        let log_level = r.string("LOG_LEVEL", "info").to_ascii_lowercase();
        if !["trace", "debug", "info", "warn", "error"].contains(&log_level.as_str()) {
            return Err(r.invalid("LOG_LEVEL", "one of debug, info, warn, error (or trace)"));
        }
        let log_format = match r.string("LOG_FORMAT", "text").to_ascii_lowercase().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => {
                return Err(r.invalid("LOG_FORMAT", "text or json"));
            }
        };
        let ms = Duration::from_millis;
        let heartbeat = r.duration("HEARTBEAT", ms(1_000), ms(10))?;
        let hint_ttl = r.duration("HINT_TTL", ms(30_000), ms(1))?;
        let tombstone_retention = r.duration("TOMBSTONE_RETENTION", ms(600_000), ms(1))?;
        let anti_entropy_interval = r.duration("ANTI_ENTROPY_INTERVAL", ms(10_000), ms(10))?;
        if tombstone_retention <= hint_ttl + anti_entropy_interval {
            let (var, v) = r
                .raw("TOMBSTONE_RETENTION")
                .unwrap_or_else(|| ("HYPERCACHE_TOMBSTONE_RETENTION".into(), "10m".into()));
            return Err(Reader::err(
                &var,
                &v,
                "a retention longer than HYPERCACHE_HINT_TTL + HYPERCACHE_ANTI_ENTROPY_INTERVAL",
            ));
        }
        let tombstone_bytes = r
            .size("TOMBSTONE_BYTES", Some(64 << 20))?
            .unwrap_or(64 << 20);
        let one_per_shard = shards as u64 * (MAX_KEY_BYTES as u64 + TOMBSTONE_OVERHEAD);
        if tombstone_bytes < one_per_shard {
            return Err(r.invalid("TOMBSTONE_BYTES", &format!("room for one tombstone of the longest key per shard: at least {one_per_shard} bytes")));
        }
        Ok(Config {
            node_id,
            api_addr,
            mgmt_addr,
            dist_addr,
            resp_addr,
            advertise,
            seeds,
            replication,
            write_consistency: r.consistency("WRITE_CONSISTENCY", Consistency::Quorum)?,
            read_consistency: r.consistency("READ_CONSISTENCY", Consistency::One)?,
            capacity,
            capacity_bytes,
            max_value_bytes,
            shards,
            auth_token,
            auth_config,
            oidc,
            api_tls,
            mgmt_tls,
            dist_tls,
            log_level,
            log_format,
            trace_keys: r.boolean("TRACE_KEYS", false)?,
            heartbeat,
            indirect_probe_k: r.number("INDIRECT_PROBE_K", 2, 0, 16)?,
            suspect_timeout: r.duration("SUSPECT_TIMEOUT", heartbeat * 3, ms(10))?,
            dead_timeout: r.duration("DEAD_TIMEOUT", ms(3_600_000), ms(10))?,
            peer_timeout: r.duration("PEER_TIMEOUT", ms(2_000), ms(1))?,
            peer_queue_items: r.number("PEER_QUEUE_ITEMS", 8192, 1, 1 << 24)?,
            peer_queue_bytes: r
                .size("PEER_QUEUE_BYTES", Some(64 << 20))?
                .unwrap_or(64 << 20),
            peer_batch_items: r.number("PEER_BATCH_ITEMS", 256, 1, MAX_BATCH_CALLS)?,
            peer_batch_bytes,
            peer_pipeline: r.number("PEER_PIPELINE", 4, 1, 64)?,
            read_hedge: r.duration("READ_HEDGE", ms(20), ms(1))?,
            hint_ttl,
            hint_replay: r.duration("HINT_REPLAY", ms(200), ms(1))?,
            rebalance_interval: r.duration("REBALANCE_INTERVAL", ms(250), ms(1))?,
            ownership_sweep_interval: r.duration(
                "OWNERSHIP_SWEEP_INTERVAL",
                ms(60_000),
                ms(100),
            )?,
            hint_max_per_peer: r.number("HINT_MAX_PER_PEER", 100_000, 1, usize::MAX)?,
            hint_max_bytes: r
                .size("HINT_MAX_BYTES", Some(64 << 20))?
                .unwrap_or(64 << 20),
            anti_entropy_interval,
            anti_entropy_max_keys: r.number("ANTI_ENTROPY_MAX_KEYS", 10_000, 1, usize::MAX)?,
            rebalance_batch: r.number("REBALANCE_BATCH", 500, 1, 100_000)?,
            rebalance_concurrency: r.number("REBALANCE_CONCURRENCY", 2, 1, 64)?,
            drain_timeout: r.duration("DRAIN_TIMEOUT", ms(15_000), ms(1))?,
            tombstone_retention,
            tombstone_bytes,
            sweep_interval: r.duration("SWEEP_INTERVAL", ms(1_000), ms(1))?,
            drain_linger: r.duration("DRAIN_LINGER", ms(2_000), Duration::ZERO)?,
            shutdown_grace: r.duration("SHUTDOWN_GRACE", ms(5_000), Duration::ZERO)?,
            max_inflight: r.number("MAX_INFLIGHT", 1024, 1, 1 << 20)?,
            protected_mode: r.boolean("PROTECTED_MODE", true)?,
            sloppy_quorum: r.boolean("SLOPPY_QUORUM", false)?,
            peer_token,
            header_read_timeout: r.duration("HEADER_READ_TIMEOUT", ms(10_000), ms(100))?,
            body_read_timeout: r.duration("BODY_READ_TIMEOUT", ms(30_000), ms(100))?,
            idle_timeout: r.duration("IDLE_TIMEOUT", ms(60_000), ms(100))?,
            max_connections: r.number("MAX_CONNECTIONS", 4096, 1, 1 << 20)?,
            mgmt_max_connections: r.number("MGMT_MAX_CONNECTIONS", 256, 1, 1 << 20)?,
            dist_max_connections: r.number("DIST_MAX_CONNECTIONS", 1024, 1, 1 << 20)?,
            client_buffer_bytes,
            dist_buffer_bytes,
            max_members: r.number("MAX_MEMBERS", 1024, 1, 65_536)?,
        })
    }

    /// The longest a shutdown takes from the first signal to exit: drain, linger, the
    /// client listener's grace, the other listeners' stop. With the defaults (15 s + 2 s
    /// + 5 s + 5 s) it fits Kubernetes' default `terminationGracePeriodSeconds` of 30.
    pub fn shutdown_budget(&self) -> Duration {
        self.drain_timeout + self.drain_linger + self.shutdown_grace + LISTENER_STOP
    }

    /// Exit-2 error for the first security-relevant variable this version cannot honour
    /// (an empty value counts as unset).
    fn refuse_unsupported_security(vars: &HashMap<String, String>) -> Result<(), ConfigError> {
        let mut names: Vec<&String> = vars
            .iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(k, _)| k)
            .filter(|k| {
                let Some(n) = k.strip_prefix(PREFIX) else {
                    return false;
                };
                !KNOWN.contains(&n) && SECURITY_WORDS.iter().any(|w| n.contains(w))
            })
            .collect();
        names.sort();
        match names.first() {
            None => Ok(()),
            Some(var) => Err(Reader::err(
                var,
                "[not shown]",
                "unset: this version does not know it (a misspelt or unsupported security setting; see docs/security.md), and running without the protection it asks for would be unsafe",
            )),
        }
    }

    /// Names of `HYPERCACHE_*` variables that are set but unknown (typos). They are
    /// warned about, not fatal: orchestrators inject variables with this prefix.
    pub fn unknown_vars(vars: &HashMap<String, String>) -> Vec<String> {
        let mut out: Vec<String> = vars
            .keys()
            .filter(|k| !KNOWN.iter().any(|n| format!("{PREFIX}{n}") == **k))
            .cloned()
            .collect();
        out.sort();
        out
    }

    /// The actor-system part of the configuration.
    pub fn node_config(&self) -> hypercache_actors::NodeConfig {
        hypercache_actors::NodeConfig {
            node_id: self.node_id.clone(),
            advertise: self.advertise.clone(),
            replication: self.replication,
            shards: self.shards,
            capacity_items: self.capacity,
            capacity_bytes: self.capacity_bytes,
            max_value_bytes: self.max_value_bytes,
            tombstone_retention: self.tombstone_retention,
            tombstone_bytes: self.tombstone_bytes,
            sweep_interval: self.sweep_interval,
            seeds: self
                .seeds
                .iter()
                .map(|s| hypercache_actors::swim::SeedPeer {
                    id: s.id.clone(),
                    addr: s.address.clone(),
                })
                .collect(),
            heartbeat: self.heartbeat,
            swim: hypercache_actors::swim::SwimConfig {
                probe_timeout: self.heartbeat * 2 / 5,
                indirect_timeout: self.heartbeat * 2 / 5,
                suspect_timeout: self.suspect_timeout,
                forget_after: self.dead_timeout,
                indirect_k: self.indirect_probe_k,
                max_members: self.max_members,
            },
            auth_token: self.peer_token.clone(),
            peer_tls: self.dist_tls.as_ref().and_then(|t| t.client.clone()),
            peer_pool_idle: (self.idle_timeout / 2).min(Duration::from_secs(30)),
            peer_timeout: self.peer_timeout,
            peer_limits: hypercache_actors::PeerLimits {
                queue_items: self.peer_queue_items,
                queue_bytes: usize::try_from(self.peer_queue_bytes).unwrap_or(usize::MAX),
                batch_items: self.peer_batch_items,
                batch_bytes: usize::try_from(self.peer_batch_bytes).unwrap_or(usize::MAX),
                pipeline: self.peer_pipeline,
            },
            read_hedge: self.read_hedge,
            sloppy_quorum: self.sloppy_quorum,
            rng_seed: None,
            write_consistency: self.write_consistency,
            read_consistency: self.read_consistency,
            hint_limits: hypercache_actors::hints::HintLimits {
                max_per_peer: self.hint_max_per_peer,
                max_bytes: self.hint_max_bytes,
                ttl_ms: self.hint_ttl.as_millis() as u64,
            },
            hint_replay: self.hint_replay,
            anti_entropy_interval: self.anti_entropy_interval,
            anti_entropy_max_keys: self.anti_entropy_max_keys,
            rebalance_interval: self.rebalance_interval,
            ownership_sweep: self.ownership_sweep_interval,
            rebalance_batch: self.rebalance_batch,
            rebalance_concurrency: self.rebalance_concurrency,
            drain_timeout: self.drain_timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
            .collect()
    }

    #[test]
    fn check_all_names_every_invalid_variable_once() {
        let bad = vars(&[
            ("HEARTBEAT", "soon"),
            ("REPLICATION", "0"),
            ("AUTH_CONFIG", "x.yaml"),
        ]);
        let errs = check_all(&bad).unwrap_err();
        let mut names: Vec<&str> = errs.iter().map(|e| e.var.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "HYPERCACHE_AUTH_CONFIG",
                "HYPERCACHE_HEARTBEAT",
                "HYPERCACHE_REPLICATION"
            ]
        );
        assert!(errs.iter().all(|e| !e.to_string().contains("x.yaml")));
        assert!(check_all(&vars(&[])).is_ok());
    }

    #[test]
    fn durations_past_ten_years_are_refused() {
        let e = fails(&[("DRAIN_TIMEOUT", "5124095576030431h")], "DRAIN_TIMEOUT");
        assert!(e.to_string().contains("at most 10 years"), "{e}");
        fails(&[("READ_HEDGE", "20000000h")], "READ_HEDGE");
        assert!(Config::from_vars(&vars(&[("DRAIN_TIMEOUT", "87000h")])).is_ok());
    }

    #[track_caller]
    fn fails(pairs: &[(&str, &str)], var: &str) -> ConfigError {
        let e = Config::from_vars(&vars(pairs)).expect_err("should fail");
        assert_eq!(e.var, format!("{PREFIX}{var}"), "{e}");
        e
    }

    #[test]
    fn defaults() {
        let c = Config::from_vars(&HashMap::new()).unwrap();
        assert_eq!(c.replication, 3);
        assert_eq!(c.capacity, 100_000);
        assert_eq!(
            c.api_addr,
            ListenAddr {
                host: String::new(),
                port: 8080
            }
        );
        assert_eq!(c.heartbeat, Duration::from_secs(1));
        assert_eq!(c.max_value_bytes, 4 << 20);
        assert_eq!(c.write_consistency, Consistency::Quorum);
        assert_eq!(c.read_consistency, Consistency::One);
        assert!(c.auth_token.is_none());
        assert!(c.protected_mode);
        assert!(c.peer_token.is_none());
        assert_eq!(c.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.max_members, 1024);
    }

    #[test]
    fn security_settings_and_tokens() {
        fails(&[("OIDC_SCOPE_CLAIM", "roles")], "OIDC_SCOPE_CLAIM");
        let e = fails(&[("OIDC_ISSUER", "https://idp.example")], "OIDC_ISSUER");
        assert!(!e.to_string().contains("idp.example"), "{e}");
        for var in ["ADMIN_PASSWORD", "API_TLS_PASSPHRASE"] {
            let e = fails(&[(var, "x")], var);
            assert_eq!(e.value, "[not shown]");
        }
        // Known security settings: checked, their values (file paths) not shown.
        for (var, named) in [
            ("API_TLS_CERT", "API_TLS_CERT"),
            ("DIST_TLS_KEY", "DIST_TLS_KEY"),
            ("MGMT_TLS_CLIENT_CA", "MGMT_TLS_CLIENT_CA"),
            ("AUTH_CONFIG", "AUTH_CONFIG"),
        ] {
            let e = fails(&[(var, "x")], named);
            assert_eq!(e.value, "[not shown]");
        }
        // Empty counts as unset; known token variables are not refused.
        let c = Config::from_vars(&vars(&[("OIDC_ISSUER", ""), ("AUTH_TOKEN", "t")])).unwrap();
        assert_eq!(
            c.peer_token.as_deref(),
            Some("t"),
            "the peer token defaults to the auth token"
        );
        let c = Config::from_vars(&vars(&[("AUTH_TOKEN", "t"), ("PEER_TOKEN", "p")])).unwrap();
        assert_eq!(
            (c.auth_token.as_deref(), c.peer_token.as_deref()),
            (Some("t"), Some("p"))
        );
        assert_eq!(
            c.node_config().auth_token.as_deref(),
            Some("p"),
            "peers send the peer token"
        );
        fails(&[("PROTECTED_MODE", "maybe")], "PROTECTED_MODE");
        fails(&[("DIST_BUFFER_BYTES", "1MiB")], "DIST_BUFFER_BYTES");
        fails(&[("CLIENT_BUFFER_BYTES", "1KiB")], "CLIENT_BUFFER_BYTES");
        fails(&[("MAX_CONNECTIONS", "0")], "MAX_CONNECTIONS");
        fails(&[("NODE_ID", "a/b")], "NODE_ID");
        fails(&[("DIST_ADDR", "bad/host:7946")], "DIST_ADDR");
        fails(&[("SEEDS", "n1@user@h:1")], "SEEDS");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = fails(&[("REPLICATION", "abc")], "REPLICATION");
        assert!(e.to_string().contains("\"abc\""), "{e}");
        fails(&[("REPLICATION", "0")], "REPLICATION");
        fails(&[("HEARTBEAT", "soon")], "HEARTBEAT");
        fails(&[("HEARTBEAT", "-1s")], "HEARTBEAT");
        fails(&[("LOG_LEVEL", "loud")], "LOG_LEVEL");
        fails(&[("LOG_FORMAT", "xml")], "LOG_FORMAT");
        fails(&[("API_ADDR", "nope")], "API_ADDR");
        fails(&[("API_ADDR", ":0")], "API_ADDR");
        fails(&[("SEEDS", "a@b")], "SEEDS");
        fails(&[("SEEDS", "@h:1")], "SEEDS");
        fails(&[("CAPACITY", "-5")], "CAPACITY");
        fails(&[("CAPACITY", "4"), ("SHARDS", "8")], "CAPACITY");
        fails(&[("MAX_VALUE_BYTES", "big")], "MAX_VALUE_BYTES");
        fails(&[("MAX_VALUE_BYTES", "64MiB")], "MAX_VALUE_BYTES");
        fails(&[("CAPACITY_BYTES", "1KiB")], "CAPACITY_BYTES");
        fails(&[("WRITE_CONSISTENCY", "most")], "WRITE_CONSISTENCY");
        fails(&[("TOMBSTONE_RETENTION", "10s")], "TOMBSTONE_RETENTION");
        fails(&[("NODE_ID", "a b")], "NODE_ID");
    }

    #[test]
    fn parses_everything() {
        let c = Config::from_vars(&vars(&[
            ("NODE_ID", "node-1"),
            ("DIST_ADDR", "hypercache-1:7946"),
            ("SEEDS", "node-2@hypercache-2:7946, 10.0.0.3:7946"),
            ("HEARTBEAT", "250ms"),
            ("HINT_TTL", "2h30m"),
            ("TOMBSTONE_RETENTION", "3h"),
            ("MAX_VALUE_BYTES", "1MiB"),
            ("AUTH_TOKEN", "s3cret"),
            ("LOG_LEVEL", "DEBUG"),
        ]))
        .unwrap();
        assert_eq!(c.advertise, "hypercache-1:7946");
        assert_eq!(c.dist_addr.bind_addr(), "0.0.0.0:7946");
        assert_eq!(
            c.seeds,
            vec![
                Seed {
                    id: Some("node-2".into()),
                    address: "hypercache-2:7946".into()
                },
                Seed {
                    id: None,
                    address: "10.0.0.3:7946".into()
                },
            ]
        );
        assert_eq!(c.hint_ttl, Duration::from_secs(9_000));
        assert_eq!(c.max_value_bytes, 1 << 20);
        assert_eq!(c.log_level, "debug");
        let shown = serde_json::to_value(&c).unwrap();
        assert_eq!(shown["auth_token"], "[redacted]");
        assert!(!shown.to_string().contains("s3cret"));
    }

    #[test]
    fn bind_addresses() {
        assert_eq!(
            parse_listen("127.0.0.1:9").unwrap().bind_addr(),
            "127.0.0.1:9"
        );
        assert_eq!(parse_listen(":9").unwrap().bind_addr(), "0.0.0.0:9");
        assert_eq!(parse_listen("[::1]:9").unwrap().bind_addr(), "[::1]:9");
        assert_eq!(parse_listen(":9").unwrap().advertise("h"), "h:9");
    }

    #[test]
    fn unknown_variables_listed() {
        let v = vars(&[("REPLICATON", "3"), ("REPLICATION", "3")]);
        assert_eq!(
            Config::unknown_vars(&v),
            vec!["HYPERCACHE_REPLICATON".to_string()]
        );
    }
}

//! hypercache-server: one cache node. This crate is the process shell around the actor
//! system (`hypercache-actors`): configuration, the three HTTP listeners, auth, error
//! mapping, logging, and the shutdown sequence.

pub mod auth;
pub mod config;
pub mod duration;
pub mod healthcheck;
pub mod http;
pub mod logging;
pub mod oidc;
pub mod process;
pub mod resp;
pub mod telemetry;
pub mod tls;

use config::{Config, ListenAddr};
use http::serve::serve;
use http::{AppState, Guard, Listener};
use hypercache_actors::metrics::Metrics;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Why the process stops with a non-zero code.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A listener could not bind (exit code 1).
    #[error("cannot listen on {var}={addr}: {source}")]
    Bind {
        var: &'static str,
        addr: String,
        source: std::io::Error,
    },
    /// The OIDC issuer's discovery document or key set could not be read (exit code 1).
    #[error("HYPERCACHE_OIDC_ISSUER: {0}")]
    Oidc(String),
    /// The OpenTelemetry export could not start (exit code 1).
    #[error("OpenTelemetry export: {0}")]
    Telemetry(String),
    /// The actor system failed to start or escalated a failure (exit code 1).
    #[error("actor system: {0}")]
    Actors(String),
}

async fn bind(addr: &ListenAddr, var: &'static str) -> Result<TcpListener, RunError> {
    let a = addr.bind_addr();
    TcpListener::bind(&a)
        .await
        .map_err(|source| RunError::Bind {
            var,
            addr: a,
            source,
        })
}

/// The process' SIGTERM and SIGINT streams. Installed before any listener serves, so a
/// signal that arrives while the node starts is a shutdown request, not the default
/// action (an immediate exit).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        Self {
            term: signal(SignalKind::terminate()).expect("install SIGTERM handler"),
            int: signal(SignalKind::interrupt()).expect("install SIGINT handler"),
        }
    }

    /// Resolves at the next SIGTERM or SIGINT; returns the signal's name.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Raises the soft limit on open files to the hard limit (as Go and most servers do) and
/// returns the limit now in force.
fn raise_open_files_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lim is a valid rlimit for getrlimit/setrlimit to read and write.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

/// Runs a node until it is told to stop; `Ok` means a clean shutdown (exit 0).
pub async fn run(
    config: Config,
    telemetry: Option<Arc<telemetry::Telemetry>>,
) -> Result<(), RunError> {
    // The issuer first: a node that cannot check tokens starts nothing (no listener, no
    // peer contact).
    let oidc = match &config.oidc {
        Some(settings) => Some(
            oidc::Oidc::discover(settings.clone())
                .await
                .map_err(RunError::Oidc)?,
        ),
        None => None,
    };
    let mut signals = Signals::install();
    let config = Arc::new(config);
    let api = bind(&config.api_addr, "HYPERCACHE_API_ADDR").await?;
    let mgmt = bind(&config.mgmt_addr, "HYPERCACHE_MGMT_ADDR").await?;
    let dist = bind(&config.dist_addr, "HYPERCACHE_DIST_ADDR").await?;
    let resp = match &config.resp_addr {
        Some(a) => Some(bind(a, "HYPERCACHE_RESP_ADDR").await?),
        None => None,
    };
    let client_credentials =
        config.auth_token.is_some() || config.auth_config.is_some() || config.oidc.is_some();
    match (client_credentials, config.peer_token.is_some(), config.protected_mode) {
        (true, true, _) => {}
        (_, _, true) => tracing::warn!(
            "protected mode: the client credentials (HYPERCACHE_AUTH_TOKEN or HYPERCACHE_AUTH_CONFIG) or the peer token (HYPERCACHE_PEER_TOKEN, by default HYPERCACHE_AUTH_TOKEN) are not set, so the listeners without them answer loopback clients only (403 PROTECTED_MODE to any other address); set them to serve the network"
        ),
        (_, _, false) => tracing::warn!(
            "HYPERCACHE_PROTECTED_MODE=false and a token is not set: the listeners without a token are open to anyone who can reach them"
        ),
    }
    let open_files = raise_open_files_limit();
    let resp_cap = if resp.is_some() {
        config.max_connections
    } else {
        0
    };
    let caps = (config.max_connections
        + resp_cap
        + config.mgmt_max_connections
        + config.dist_max_connections) as u64;
    if open_files != 0 && caps + 256 > open_files {
        tracing::warn!(
            open_files,
            connection_caps = caps,
            "the connection caps (HYPERCACHE_MAX_CONNECTIONS, HYPERCACHE_MGMT_MAX_CONNECTIONS, HYPERCACHE_DIST_MAX_CONNECTIONS) exceed the open-file limit: accepts can fail with EMFILE before a cap is reached; raise the limit (ulimit -n) or lower the caps"
        );
    }
    let limits = |max_connections| http::serve::Limits {
        max_connections,
        header_timeout: config.header_read_timeout,
        idle_timeout: config.idle_timeout,
    };

    let metrics = Arc::new(Metrics::default());
    let (node, mut root_done) = hypercache_actors::start(config.node_config(), metrics)
        .await
        .map_err(|e| RunError::Actors(e.to_string()))?;
    let node = Arc::new(node);
    let (stop_client_tx, stop_client) = watch::channel(false);
    let (stop_rest_tx, stop_rest) = watch::channel(false);
    let state = AppState::new(node.clone(), config.clone(), stop_rest.clone());
    if let Some(t) = &telemetry {
        t.push_metrics(node.clone(), config.clone())
            .map_err(RunError::Telemetry)?;
    }
    let metrics = node.metrics().clone();
    // One policy for the client, management and RESP listeners: they share the
    // identities, the bcrypt bound and the cache of checked Basic passwords.
    let policy = Arc::new(auth::Policy::new(
        config.auth_config.as_deref(),
        config.auth_token.as_deref(),
        oidc,
    ));
    let client_guard = Guard::new(&config, node.clone(), Listener::Client, &policy);
    let resp_srv = resp.map(|listener| {
        let ctx = resp::RespContext::new(
            node.clone(),
            config.clone(),
            client_guard.inflight(),
            state.client_body.clone(),
            policy.clone(),
        );
        resp::serve(listener, Arc::new(ctx), stop_client.clone())
    });
    let client = serve(
        api,
        http::client::router(state.clone(), client_guard),
        limits(config.max_connections),
        metrics.clone(),
        config.api_tls.as_ref().map(tls::Tls::acceptor),
        stop_client,
    );
    let mgmt_srv = serve(
        mgmt,
        http::mgmt::router(
            state.clone(),
            Guard::new(&config, node.clone(), Listener::Management, &policy),
        ),
        limits(config.mgmt_max_connections),
        metrics.clone(),
        config.mgmt_tls.as_ref().map(tls::Tls::acceptor),
        stop_rest.clone(),
    );
    let dist_srv = serve(
        dist,
        http::dist::router(
            state,
            Guard::new(&config, node.clone(), Listener::Dist, &policy),
        ),
        limits(config.dist_max_connections),
        metrics,
        config.dist_tls.as_ref().map(tls::Tls::acceptor),
        stop_rest,
    );
    tracing::info!(
        api = %config.api_addr.bind_addr(),
        mgmt = %config.mgmt_addr.bind_addr(),
        dist = %config.dist_addr.bind_addr(),
        resp = %config.resp_addr.as_ref().map_or("off".into(), |a| a.bind_addr()),
        advertise = %config.advertise,
        "node started"
    );

    let signal = tokio::select! {
        s = signals.next() => s,
        _ = &mut root_done => {
            return Err(RunError::Actors("the supervision tree stopped unexpectedly".into()));
        }
    };
    // A second signal skips the waits (linger, grace) but never the key handoff, which
    // is bounded by HYPERCACHE_DRAIN_TIMEOUT; a third exits at once.
    let (hurry_tx, hurry) = watch::channel(false);
    tokio::spawn(async move {
        let s = signals.next().await;
        tracing::warn!(signal = s, "second signal: skipping the waits; the key handoff still completes (a third signal exits at once)");
        let _ = hurry_tx.send(true);
        let s = signals.next().await;
        tracing::warn!(signal = s, "third signal: exiting immediately");
        std::process::exit(130);
    });
    tracing::info!(
        signal,
        budget = ?config.shutdown_budget(),
        "shutdown: draining"
    );
    let hurried = || {
        let mut h = hurry.clone();
        async move {
            let _ = h.wait_for(|h| *h).await;
        }
    };

    // 1. Drain: health 503, writes 503 DRAINING, hand keys and hints over, leave the ring.
    if let Err(e) = node.drain().await {
        tracing::warn!(error = %e, "drain did not complete; continuing shutdown");
    }
    // Let load balancers see /health 503 while the listener still answers.
    tokio::select! {
        _ = tokio::time::sleep(config.drain_linger) => {}
        _ = hurried() => {}
    }

    // 2. Stop the client listeners (HTTP and RESP); in-flight requests get up to the
    // grace period.
    let _ = stop_client_tx.send(true);
    let clients = async {
        let _ = client.await;
        if let Some(r) = resp_srv {
            let _ = r.await;
        }
    };
    tokio::select! {
        r = tokio::time::timeout(config.shutdown_grace, clients) => match r {
            Ok(_) => tracing::info!("client listener stopped"),
            Err(_) => {
                tracing::warn!(grace = ?config.shutdown_grace, "in-flight client requests outlived the grace period")
            }
        },
        _ = hurried() => tracing::warn!("not waiting for in-flight client requests"),
    }

    // 3. The last metric push (bounded), then stop the supervision tree, then the
    // management and dist listeners.
    if let Some(t) = telemetry.clone() {
        let _ = tokio::task::spawn_blocking(move || t.stop_metrics()).await;
    }
    node.stop().await;
    let _ = stop_rest_tx.send(true);
    let rest = async {
        let _ = mgmt_srv.await;
        let _ = dist_srv.await;
    };
    if tokio::time::timeout(config::LISTENER_STOP, rest)
        .await
        .is_err()
    {
        tracing::warn!("management or dist listener did not stop within 5s");
    }
    // 4. The last spans, within their own bound (a dead collector costs at most that).
    if let Some(t) = telemetry {
        let _ = tokio::task::spawn_blocking(move || t.shutdown()).await;
    }
    tracing::info!("stopped cleanly");
    Ok(())
}

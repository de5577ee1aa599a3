//! hypercache-server: one cache node. This crate is the process shell around the actor
//! system (`hypercache-actors`): configuration, the three HTTP listeners, auth, error
//! mapping, logging, and the shutdown sequence.

pub mod config;
pub mod duration;
pub mod healthcheck;
pub mod http;
pub mod logging;

use config::{Config, ListenAddr};
use http::{AppState, Guard, Listener};
use hypercache_actors::metrics::Metrics;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;
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

/// Serves `router` on `listener` until `stop` turns true; in-flight requests finish.
fn serve(
    listener: TcpListener,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    tokio::spawn(
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .into_future(),
    )
}

/// Runs a node until it is told to stop; `Ok` means a clean shutdown (exit 0).
pub async fn run(config: Config) -> Result<(), RunError> {
    let mut signals = Signals::install();
    let config = Arc::new(config);
    let api = bind(&config.api_addr, "HYPERCACHE_API_ADDR").await?;
    let mgmt = bind(&config.mgmt_addr, "HYPERCACHE_MGMT_ADDR").await?;
    let dist = bind(&config.dist_addr, "HYPERCACHE_DIST_ADDR").await?;
    if config.auth_token.is_none() {
        tracing::warn!("HYPERCACHE_AUTH_TOKEN is not set: all three listeners are open to anyone who can reach them");
    }

    let metrics = Arc::new(Metrics::default());
    let (node, mut root_done) = hypercache_actors::start(config.node_config(), metrics)
        .await
        .map_err(|e| RunError::Actors(e.to_string()))?;
    let node = Arc::new(node);
    let state = AppState {
        node: node.clone(),
        config: config.clone(),
    };
    let (stop_client_tx, stop_client) = watch::channel(false);
    let (stop_rest_tx, stop_rest) = watch::channel(false);
    let client = serve(
        api,
        http::client::router(
            state.clone(),
            Guard::new(&config, node.clone(), Listener::Client),
        ),
        stop_client,
    );
    let mgmt_srv = serve(
        mgmt,
        http::mgmt::router(
            state.clone(),
            Guard::new(&config, node.clone(), Listener::Management),
        ),
        stop_rest.clone(),
    );
    let dist_srv = serve(
        dist,
        http::dist::router(state, Guard::new(&config, node.clone(), Listener::Dist)),
        stop_rest,
    );
    tracing::info!(
        api = %config.api_addr.bind_addr(),
        mgmt = %config.mgmt_addr.bind_addr(),
        dist = %config.dist_addr.bind_addr(),
        advertise = %config.advertise,
        "node started"
    );

    let signal = tokio::select! {
        s = signals.next() => s,
        _ = &mut root_done => {
            return Err(RunError::Actors("the supervision tree stopped unexpectedly".into()));
        }
    };
    // A second signal exits at once.
    tokio::spawn(async move {
        let s = signals.next().await;
        tracing::warn!(signal = s, "second signal: exiting immediately");
        std::process::exit(130);
    });
    tracing::info!(signal, "shutdown: draining");

    // 1. Drain: health 503, writes 503 DRAINING, leave the ring.
    if let Err(e) = node.drain().await {
        tracing::warn!(error = %e, "drain did not complete; continuing shutdown");
    }
    // Let load balancers see /health 503 while the listener still answers.
    tokio::time::sleep(config.drain_linger).await;

    // 2. Stop the client listener; in-flight requests get up to the grace period.
    let _ = stop_client_tx.send(true);
    match tokio::time::timeout(config.shutdown_grace, client).await {
        Ok(_) => tracing::info!("client listener stopped"),
        Err(_) => {
            tracing::warn!(grace = ?config.shutdown_grace, "in-flight client requests outlived the grace period")
        }
    }

    // 3. Stop the supervision tree, then the management and dist listeners.
    node.stop().await;
    let _ = stop_rest_tx.send(true);
    let rest = async {
        let _ = mgmt_srv.await;
        let _ = dist_srv.await;
    };
    if tokio::time::timeout(Duration::from_secs(5), rest)
        .await
        .is_err()
    {
        tracing::warn!("management or dist listener did not stop within 5s");
    }
    tracing::info!("stopped cleanly");
    Ok(())
}

//! The `hypercache-server` binary: read the configuration (exit 2 on a bad value),
//! install logging, run the node until it is stopped. `healthcheck` probes a running node.

use hypercache_server::config::Config;
use std::process::ExitCode;

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("healthcheck") => return ExitCode::from(hypercache_server::healthcheck::run() as u8),
        Some("--version") | Some("version") => {
            println!("hypercache-server {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("hypercache-server: unknown argument {other:?}; configuration is read from HYPERCACHE_* environment variables (subcommands: healthcheck, version)");
            return ExitCode::from(2);
        }
    }
    let vars = hypercache_server::config::env_vars();
    let config = match Config::from_vars(&vars) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hypercache-server: {e}");
            return ExitCode::from(2);
        }
    };
    hypercache_server::logging::init(&config);
    for var in Config::unknown_vars(&vars) {
        tracing::warn!(%var, "unknown HYPERCACHE_ variable ignored (typo?)");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hypercache-server: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(hypercache_server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("hypercache-server: {e}");
            ExitCode::from(1)
        }
    }
}

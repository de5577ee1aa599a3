//! The `hypercache-server` binary: read the configuration (exit 2 on a bad value),
//! install logging, run the node until it is stopped.

use hypercache_server::config::Config;
use std::process::ExitCode;

fn main() -> ExitCode {
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

//! The `hypercache-server` binary: read the configuration (exit 2 on a bad value),
//! install logging, run the node until it is stopped. `healthcheck` probes a running node;
//! `check-config` checks the configuration without starting anything.

use hypercache_server::config::Config;
use std::process::ExitCode;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("healthcheck") => return ExitCode::from(hypercache_server::healthcheck::run() as u8),
        Some("check-config") => return check_config(),
        Some("--version") | Some("version") => {
            println!("hypercache-server {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("hypercache-server: unknown argument {other:?}; configuration is read from HYPERCACHE_* environment variables (subcommands: check-config, healthcheck, version)");
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
    let otel_vars: std::collections::HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("OTEL_"))
        .collect();
    let otel = match hypercache_server::telemetry::Settings::from_vars(&otel_vars, &config.node_id)
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hypercache-server: {e}");
            return ExitCode::from(2);
        }
    };
    let (telemetry, layer) = match otel.map(hypercache_server::telemetry::Telemetry::start) {
        None => (None, None),
        Some(Ok((t, layer))) => (Some(t), layer),
        Some(Err(e)) => {
            eprintln!("hypercache-server: {e}");
            return ExitCode::from(1);
        }
    };
    hypercache_server::telemetry::set_trace_keys(config.trace_keys);
    hypercache_server::logging::init(&config, layer);
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
    match runtime.block_on(hypercache_server::run(config, telemetry)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("hypercache-server: {e}");
            ExitCode::from(1)
        }
    }
}

/// `check-config`: reads the environment exactly as start-up does, without binding or
/// starting anything. Valid: prints the effective configuration as JSON (tokens shown as
/// `[redacted]`) and exits 0. Invalid: one line per invalid variable on stderr, exit 2.
/// Unknown `HYPERCACHE_*` variables are warned about on stderr, as at start-up.
fn check_config() -> ExitCode {
    let vars = hypercache_server::config::env_vars();
    let checked = hypercache_server::config::check_all(&vars);
    let invalid: Vec<&str> = match &checked {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.var.as_str()).collect(),
    };
    for var in Config::unknown_vars(&vars) {
        if !invalid.contains(&var.as_str()) {
            eprintln!("hypercache-server: warning: unknown variable {var} is ignored (typo?)");
        }
    }
    let otel_vars: std::collections::HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("OTEL_"))
        .collect();
    let node_id = checked
        .as_ref()
        .map_or(String::new(), |c| c.node_id.clone());
    let checked = match (
        checked,
        hypercache_server::telemetry::Settings::from_vars(&otel_vars, &node_id),
    ) {
        (Ok(c), Ok(_)) => Ok(c),
        (Ok(_), Err(e)) => Err(vec![e]),
        (Err(mut errors), Err(e)) => {
            errors.push(e);
            Err(errors)
        }
        (Err(errors), Ok(_)) => Err(errors),
    };
    match checked {
        Ok(config) => match serde_json::to_string_pretty(&config) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hypercache-server: cannot print the configuration: {e}");
                ExitCode::from(1)
            }
        },
        Err(errors) => {
            for e in errors {
                eprintln!("hypercache-server: {e}");
            }
            ExitCode::from(2)
        }
    }
}

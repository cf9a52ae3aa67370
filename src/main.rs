//! The `loadbalancer` command: read flags and the config file, start logging, start the balancer
//! (and the demo backends with `--demo`), then wait for signals: SIGINT and SIGTERM drain and
//! exit, SIGHUP reloads the configuration.

use std::process::ExitCode;

use loadbalancer::{config, logging, Balancer};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cli = match config::parse_args(args.clone()) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("loadbalancer: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.help {
        print!("{}", config::USAGE);
        return ExitCode::SUCCESS;
    }
    logging::init();
    // Like nginx and HAProxy: the soft limit (often 1024) would cap the connections long before
    // the system does.
    match loadbalancer::http::limits::raise_descriptor_limit() {
        Ok((before, after)) if after > before => {
            log::debug!("descriptor limit raised from {before} to {after}")
        }
        Ok(_) => {}
        Err(e) => log::warn!("cannot raise the descriptor limit: {e}"),
    }
    if let Some(file) = &cli.config.source {
        log::info!("config from {}", file.display());
    }
    let mut signals = match Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let demo = if cli.demo {
        match start_demo(&cli.config) {
            Ok(d) => d,
            Err(e) => {
                log::error!("{e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        Vec::new()
    };
    // A reload reads the file again and applies the same flags on top, so flags keep winning.
    let loader: loadbalancer::ConfigLoader =
        Box::new(move || config::parse_args(args.clone()).map(|c| c.config));
    let running = match Balancer::start_with_loader(cli.config, Some(loader)) {
        Ok(r) => r,
        Err(e) => {
            log::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    for signal in signals.forever() {
        match signal {
            SIGHUP => running.request_reload(),
            _ => break,
        }
    }
    let drained = running.shutdown();
    drop(demo);
    if drained {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Starts a demo backend for every configured backend on localhost:8081..: `serverN` on port
/// 8080 + N.
#[cfg(feature = "demo")]
fn start_demo(config: &loadbalancer::Config) -> Result<Vec<servers::DemoServer>, String> {
    let mut started = Vec::new();
    for b in &config.backends {
        let local = matches!(b.host.as_str(), "localhost" | "127.0.0.1" | "::1");
        if !local || b.port <= 8080 {
            log::warn!("--demo: not starting a demo server for {}", b.url);
            continue;
        }
        let name = format!("server{}", b.port - 8080);
        let addr = format!("127.0.0.1:{}", b.port);
        let server = servers::spawn(&name, &addr, servers::Behaviour::default())
            .map_err(|e| format!("--demo: cannot start {name} on {addr}: {e}"))?;
        log::info!("demo backend {name} on {}", server.addr());
        started.push(server);
    }
    Ok(started)
}

#[cfg(not(feature = "demo"))]
fn start_demo(_: &loadbalancer::Config) -> Result<Vec<()>, String> {
    Err("--demo needs the `demo` feature (on by default)".into())
}

//! The `loadbalancer` command: read flags and the config file, start logging, start the balancer
//! (and the demo backends with `--demo`), then wait for signals.
//!
//! Signals: SIGHUP reloads the configuration; SIGUSR1 opens the log files again (after logrotate
//! renamed them). The first SIGINT or SIGTERM drains (stop accepting, let requests in flight
//! finish, up to `drain_timeout`) and exits 0, also when the drain timeout cut requests off (that
//! is logged as a warning: the shutdown itself went as configured). A second SIGINT or SIGTERM
//! during the drain exits at once with status 130.
//!
//! Log lines are written by a thread of their own: every way out of `main` first waits (a
//! moment at most) for the lines logged so far to be written.
//!
//! Exit statuses: 0 after a shutdown or for `--help`, `--version` and a valid `--check`; 1 when
//! the balancer cannot start; 2 for a bad flag or configuration; 130 for a second signal.

use std::process::ExitCode;
use std::sync::mpsc;
use std::thread;

use loadbalancer::{config, logging, startup, supervise, Balancer};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

/// Exit status when a second SIGINT/SIGTERM cuts the drain short (128 + SIGINT, as shells do).
const EXIT_INTERRUPTED: u8 = 130;

/// What the main thread waits for once the balancer runs.
enum Event {
    Signal(i32),
    /// The drain finished; true when every request finished in time.
    Drained(bool),
}

fn main() -> ExitCode {
    let status = run();
    logging::flush();
    status
}

fn run() -> ExitCode {
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
    if cli.version {
        println!("{}", config::version());
        return ExitCode::SUCCESS;
    }
    if cli.check {
        return check(&cli);
    }
    logging::init();
    supervise::inject_from_env();
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
    if cli.default_backends {
        startup::warn_default_backends(&cli.config);
    }
    let mut signals = match Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR1]) {
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
    let backends = cli.config.backends.clone();
    let connect_timeout = cli.config.timeouts.connect;
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
    startup::announce_dashboard(&running);
    if let Err(e) = startup::probe_backends(backends, connect_timeout) {
        log::warn!("cannot probe the backends: {e}");
    }

    let (events, next) = mpsc::channel();
    let forward = events.clone();
    let spawned = thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            // Without this thread SIGTERM would not drain: a panic here ends the process.
            let listened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                for signal in signals.forever() {
                    supervise::check_point(supervise::Thread::Signals);
                    if forward.send(Event::Signal(signal)).is_err() {
                        return;
                    }
                }
            }));
            if let Err(panic) = listened {
                supervise::fatal(supervise::Thread::Signals, &*panic);
            }
        });
    if let Err(e) = spawned {
        log::error!("cannot start the signal thread: {e}");
        return ExitCode::FAILURE;
    }
    let mut running = Some(running);
    for event in next {
        match event {
            Event::Signal(SIGHUP) => {
                if let Some(r) = &running {
                    r.request_reload_because("SIGHUP received");
                }
            }
            Event::Signal(SIGUSR1) => {
                log::info!("SIGUSR1 received: reopening the log files");
                logging::reopen();
            }
            Event::Signal(signal) => match running.take() {
                Some(r) => {
                    log::info!(
                        "{} received: draining; send it again to exit at once",
                        signal_name(signal)
                    );
                    let events = events.clone();
                    thread::spawn(move || {
                        let _ = events.send(Event::Drained(r.shutdown()));
                    });
                }
                None => {
                    log::warn!(
                        "second {}: exiting at once, requests still in flight are cut off",
                        signal_name(signal)
                    );
                    logging::flush();
                    std::process::exit(EXIT_INTERRUPTED.into());
                }
            },
            Event::Drained(drained) => {
                if !drained {
                    log::warn!("the drain timeout ran out: requests still in flight were cut off");
                }
                break;
            }
        }
    }
    drop(demo);
    ExitCode::SUCCESS
}

/// `--check`: like `nginx -t`, the configuration as it would run, on stdout; nothing is bound.
/// With a `shared` line, also whether Redis answers (a Redis refusing the password fails it).
fn check(cli: &config::Cli) -> ExitCode {
    let from = cli.config.source.as_ref().map_or_else(
        || "built-in defaults and flags".to_string(),
        |f| format!("{} and flags", f.display()),
    );
    println!("# effective configuration ({from})");
    if cli.default_backends {
        println!("# no backend configured: these are the built-in default backends");
    }
    print!("{}", cli.config);
    match startup::check_shared(&cli.config) {
        Ok(said) => {
            if let Some(said) = said {
                eprintln!("loadbalancer: {said}");
            }
        }
        Err(e) => {
            eprintln!("loadbalancer: {e}");
            return ExitCode::from(2);
        }
    }
    eprintln!("loadbalancer: configuration ok");
    ExitCode::SUCCESS
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

/// Starts a demo backend for every configured backend on this machine, whatever its port:
/// `serverN` for the Nth backend (see [`startup::demo_servers`]). One that cannot start (its port
/// is taken, most often by the same server started on its own, which then answers instead) is
/// skipped with the reason, as a backend elsewhere is.
#[cfg(feature = "demo")]
fn start_demo(config: &loadbalancer::Config) -> Result<Vec<servers::DemoServer>, String> {
    let mut started = Vec::new();
    for plan in startup::demo_servers(&config.backends) {
        let plan = match plan {
            Ok(plan) => plan,
            Err(why) => {
                log::warn!("{why}");
                continue;
            }
        };
        let addr = plan.addr.to_string();
        // spawn logs `serverN: listening on ADDR`, as the standalone server does.
        match servers::spawn(&plan.name, &addr, servers::Behaviour::default()) {
            Ok(server) => started.push(server),
            Err(e) => {
                let why = match e.kind() {
                    std::io::ErrorKind::AddrInUse => format!(
                        "port {} is in use (a server already listening there answers instead)",
                        plan.addr.port()
                    ),
                    std::io::ErrorKind::PermissionDenied => format!(
                        "port {} needs privileges this process does not have",
                        plan.addr.port()
                    ),
                    _ => e.to_string(),
                };
                log::warn!("--demo: not starting a demo server for {}: {why}", plan.url);
            }
        }
    }
    Ok(started)
}

#[cfg(not(feature = "demo"))]
fn start_demo(_: &loadbalancer::Config) -> Result<Vec<()>, String> {
    Err("--demo needs the `demo` feature (on by default)".into())
}

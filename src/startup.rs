//! What the `loadbalancer` command says around start-up, so that an operator sees at once what
//! is running and what is wrong: a warning when the built-in default backends are used or when
//! no backend answers, and the dashboard's address. (A port already taken gets its hint where
//! it is bound, in `lib.rs`.)
//!
//! None of this changes how the balancer works; [`crate::Balancer::start`] does not call it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::thread;
use std::time::Duration;

use crate::config::{BackendConfig, Config, DEFAULT_CONFIG_FILE};
use crate::Running;

/// Longest a start-up probe waits for one backend to accept a TCP connection (or the connect
/// timeout, when that is shorter). Probes run in the background, so this never delays start-up.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Warns that the built-in backends `localhost:8081..8083` are in use because neither a config
/// file nor `--backend` named any: easy to miss, and they rarely exist outside the demo.
pub fn warn_default_backends(config: &Config) {
    let names: Vec<String> = config.backends.iter().map(BackendConfig::name).collect();
    let names = names.join(", ");
    match &config.source {
        Some(file) => log::warn!(
            "{} lists no backend: using the built-in default backends {names}",
            file.display()
        ),
        None => log::warn!(
            "no config file (./{DEFAULT_CONFIG_FILE} not found, no --config) and no --backend: \
             using the built-in defaults, backends {names}"
        ),
    }
}

/// Logs where the dashboard is: `dashboard: http://127.0.0.1:9090/`. With a token it says that
/// `?token=` is needed, without printing the secret.
pub fn announce_dashboard(running: &Running) {
    let Some(addr) = running.admin_addr() else {
        return;
    };
    // A wildcard address is not one a browser can open; loopback reaches it from this host.
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let url = format!("http://{}/", SocketAddr::new(ip, addr.port()));
    if running.config().admin_token.is_some() {
        log::info!("dashboard: {url}?token=... (the admin token is required)");
    } else {
        log::info!("dashboard: {url}");
    }
}

/// Tries a TCP connection to every backend on a background thread and warns about those that
/// do not accept one, so a typo in a port or a backend that is not started shows at start-up
/// rather than as the first client's 502. Returns the thread, which tests may join.
pub fn probe_backends(
    backends: Vec<BackendConfig>,
    timeout: Duration,
) -> std::io::Result<thread::JoinHandle<()>> {
    let timeout = timeout.min(PROBE_TIMEOUT);
    thread::Builder::new()
        .name("startup-probe".into())
        .spawn(move || {
            let silent: Vec<String> = thread::scope(|s| {
                let probes: Vec<_> = backends
                    .iter()
                    .map(|b| s.spawn(move || probe(b, timeout).err()))
                    .collect();
                probes
                    .into_iter()
                    .zip(&backends)
                    .filter_map(|(p, b)| {
                        let why = p.join().ok().flatten()?;
                        Some(format!("{} ({why})", b.name()))
                    })
                    .collect()
            });
            if silent.len() == backends.len() {
                log::warn!(
                    "no backend answers: {}; requests will fail until one does",
                    silent.join(", ")
                );
            } else if !silent.is_empty() {
                log::warn!("backends not answering at start-up: {}", silent.join(", "));
            }
        })
}

/// One TCP connection to `backend`, on any of its addresses.
fn probe(backend: &BackendConfig, timeout: Duration) -> Result<(), String> {
    let addrs: Vec<SocketAddr> = (backend.host.as_str(), backend.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve: {e}"))?
        .collect();
    let mut last = "no address".to_string();
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(_) => return Ok(()),
            Err(e) => last = e.kind().to_string(),
        }
    }
    Err(last)
}

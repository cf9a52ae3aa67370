//! What the `loadbalancer` command says around start-up, so that an operator sees at once what
//! is running and what is wrong: a warning when the built-in default backends are used or when
//! no backend answers, and the dashboard's address (a port already taken gets its hint where
//! it is bound, in `lib.rs`); and which demo servers `--demo` starts ([`demo_servers`]).
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

/// What `--check` says of the `shared` line's Redis: `Ok` with a line saying it answers, or that
/// it does not (not an error: the balancer would start with its fallback); `Err` when it refuses
/// the credentials, naming the line (`FILE:LINE: shared: ...`). Nothing when there is no
/// `shared` line. Waits at most about two `connect_timeout=`s.
pub fn check_shared(config: &Config) -> Result<Option<String>, String> {
    let Some(shared) = &config.filter.shared else {
        return Ok(None);
    };
    let url = shared.redacted_url();
    match crate::filter::shared::probe(shared) {
        Ok(rtt) => Ok(Some(format!(
            "shared: Redis at {url} answers (PING in {:.1} ms)",
            rtt.as_secs_f64() * 1000.0
        ))),
        Err(crate::filter::shared::Problem::Auth(why)) => {
            Err(crate::start::auth_error(shared, &why))
        }
        Err(p) => Ok(Some(format!(
            "shared: Redis at {url} does not answer ({}): the balancer would start with \
             fallback={} and use Redis once it answers",
            p.text(),
            shared.fallback.name()
        ))),
    }
}

/// A demo server that `--demo` starts for one configured backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoServerPlan {
    /// `serverN` for the Nth backend of the list, as its greeting and log lines say.
    pub name: String,
    /// Where it listens: the backend's port on the backend's loopback address (127.0.0.1 for
    /// `localhost`).
    pub addr: SocketAddr,
    /// The backend's URL.
    pub url: String,
}

/// What `--demo` starts: a demo server for every backend on this machine, whatever its port,
/// named `serverN` for the Nth backend of the list (with the default backends, `server1` on
/// 8081 to `server3` on 8083, the names of the standalone binaries). A backend elsewhere gets
/// `Err` with the line that says why it has none: `--demo: not starting a demo server for URL:
/// REASON`.
pub fn demo_servers(backends: &[BackendConfig]) -> Vec<Result<DemoServerPlan, String>> {
    backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let ip: Option<IpAddr> = if b.host.eq_ignore_ascii_case("localhost") {
                Some(Ipv4Addr::LOCALHOST.into())
            } else {
                b.host.parse().ok()
            };
            match ip {
                Some(ip) if ip.is_loopback() => Ok(DemoServerPlan {
                    name: format!("server{}", i + 1),
                    addr: SocketAddr::new(ip, b.port),
                    url: b.url.clone(),
                }),
                // A demo server listens on loopback, so only a loopback backend reaches one;
                // this machine's other names and addresses are not worth guessing.
                _ => Err(format!(
                    "--demo: not starting a demo server for {}: {} is not on this machine (a \
                     demo server listens on loopback: localhost, 127.0.0.1 or ::1)",
                    b.url, b.host
                )),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_servers_for_loopback_backends_on_any_port_named_by_position() {
        let backends: Vec<BackendConfig> = [
            "http://localhost:18081",
            "http://10.0.0.7:8081",
            "http://127.0.0.2:80",
            "http://[::1]:7000",
            "http://example.com:8083",
        ]
        .iter()
        .map(|u| BackendConfig::parse(u, 1).unwrap())
        .collect();
        let plans = demo_servers(&backends);
        let started: Vec<(String, String)> = plans
            .iter()
            .flatten()
            .map(|p| (p.name.clone(), p.addr.to_string()))
            .collect();
        let started: Vec<(&str, &str)> = started
            .iter()
            .map(|(n, a)| (n.as_str(), a.as_str()))
            .collect();
        assert_eq!(
            started,
            [
                ("server1", "127.0.0.1:18081"),
                ("server3", "127.0.0.2:80"),
                ("server4", "[::1]:7000")
            ]
        );
        assert_eq!(
            plans[1].as_ref().unwrap_err(),
            "--demo: not starting a demo server for http://10.0.0.7:8081: 10.0.0.7 is not on \
             this machine (a demo server listens on loopback: localhost, 127.0.0.1 or ::1)"
        );
        assert!(plans[4]
            .as_ref()
            .unwrap_err()
            .contains("example.com is not on this machine"));
    }
}

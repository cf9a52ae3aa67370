//! The balancer, in-process, its test configurations, and its admin listener's `/status`.

use std::net::SocketAddr;
use std::time::Duration;

use loadbalancer::config::BackendConfig;
use loadbalancer::{Balancer, Config, Running};

use super::{free_port, Backend, Client, Headers};

/// A balancer running in the test process; shut down (drained) on drop.
pub struct Lb {
    running: Option<Running>,
    pub addr: SocketAddr,
}

/// The configuration the tests start from: loopback, port 0, no admin listener, no access log,
/// and nothing that sends the backends requests of its own (health checks) or skews the
/// distribution (slow start).
pub fn test_config(backends: &[(&Backend, u32)]) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        admin: None,
        access_log: false,
        drain_timeout: Duration::from_secs(3),
        slow_start: Duration::ZERO,
        backends: backends
            .iter()
            .map(|(b, w)| BackendConfig::parse(&b.url(), *w).unwrap())
            .collect(),
        ..Config::default()
    };
    config.health.enabled = false;
    config
}

/// The admin listener on, on `127.0.0.1:0`.
pub fn admin_on(c: &mut Config) {
    c.admin = Some("127.0.0.1:0".into());
}

/// Health checks on: every `interval`, each with `timeout`; `rise` passes in a row bring a
/// backend back, `fall` failures in a row mark it down.
pub fn health_checks(c: &mut Config, interval: Duration, timeout: Duration, rise: u32, fall: u32) {
    c.health.enabled = true;
    c.health.interval = interval;
    c.health.timeout = timeout;
    c.health.rise = rise;
    c.health.fall = fall;
}

/// Health checks every 100 ms, for tests that watch a backend go down and come back. A generous
/// timeout (1 s) and two failures to fall, so that a busy machine (Chromium is heavy) cannot make
/// a healthy backend look down; a backend answering 503 still falls within about 200 ms.
pub fn fast_health(c: &mut Config) {
    health_checks(c, Duration::from_millis(100), Duration::from_secs(1), 1, 2);
}

/// A backend URL on loopback where nothing listens (a port bound, then released).
pub fn dead_backend_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// `GET /status` on the admin listener at `addr`: 200, JSON, parsed.
pub fn admin_status(addr: SocketAddr) -> serde_json::Value {
    let r = Client::connect(addr)
        .request("GET /status HTTP/1.1\r\nHost: admin.test\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("/status is not JSON ({e}): {}", r.text()))
}

/// The entry of the backend named `name` (`host:port`) in a `/status` document, if listed.
pub fn listed<'a>(status: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    status["backends"]
        .as_array()
        .expect("backends array")
        .iter()
        .find(|b| b["name"] == name)
}

impl Lb {
    /// Starts a balancer over `backends` (with weights) after `tweak` adjusted the config.
    pub fn start(backends: &[(&Backend, u32)], tweak: impl FnOnce(&mut Config)) -> Lb {
        let mut config = test_config(backends);
        tweak(&mut config);
        Lb::with_config(config)
    }

    pub fn with_config(config: Config) -> Lb {
        let running = Balancer::start(config).expect("start balancer");
        let addr = running.addr();
        assert!(addr.ip().is_loopback(), "balancer bound {addr}");
        Lb {
            running: Some(running),
            addr,
        }
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    /// Graceful shutdown; true when it drained in time.
    pub fn shutdown(mut self) -> bool {
        self.running.take().unwrap().shutdown()
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown();
        }
    }
}

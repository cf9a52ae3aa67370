//! The balancer, in-process.

use std::net::SocketAddr;
use std::time::Duration;

use loadbalancer::config::BackendConfig;
use loadbalancer::{Balancer, Config, Running};

use super::Backend;

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

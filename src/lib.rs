//! loadbalancer: a synchronous HTTP/1.1 load balancer built from threads and channels.
//!
//! ```no_run
//! let config = loadbalancer::Config::default();
//! let running = loadbalancer::Balancer::start(config).expect("start");
//! println!("listening on {}", running.addr());
//! running.shutdown();
//! ```
//!
//! See `DESIGN.md`'s module map: [`config`] reads settings, [`pool`] picks backends by smooth
//! weighted round-robin, [`proxy`] forwards one request, [`server`] is the tiny_http front end.

pub mod backend;
pub mod breaker;
pub mod clock;
pub mod config;
pub mod filter;
pub mod health;
pub mod logging;
pub mod maintenance;
pub mod pool;
pub mod proxy;
pub mod resolver;
pub mod retry;
pub mod server;
pub mod transport;
pub mod weights;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub use config::Config;

use parking_lot::RwLock;

use backend::{Backend, Resilience};
use clock::{Clock, SystemClock};
use filter::Filter;
use maintenance::{Maintainer, Maintenance, MaintenanceSettings};
use pool::Pool;
use proxy::{Proxy, ProxySettings};
use retry::RetryBudget;
use server::{Front, FrontSettings};

/// Starts balancers.
#[derive(Debug)]
pub struct Balancer;

impl Balancer {
    /// Binds the listener and starts the workers for `config`. Returns once the balancer accepts
    /// requests.
    pub fn start(config: Config) -> io::Result<Running> {
        config.validate().map_err(io::Error::other)?;
        let backends = config
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                Arc::new(Backend::with_policy(
                    i as u64,
                    b,
                    &config.breaker,
                    &config.health,
                ))
            })
            .collect();
        let pool = Arc::new(Pool::new(backends));
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let resilience = Arc::new(Resilience::new(Arc::clone(&clock)));
        let settings = ProxySettings {
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
            retries: config.retries,
            failure_statuses: config.breaker.failure_statuses.clone(),
            idle_connections: config.workers.max(16),
        };
        let proxy = Arc::new(Proxy::new(
            Arc::clone(&pool),
            resilience.clone(),
            resilience,
            RetryBudget::new(config.retry_budget_percent),
            settings,
        ));
        let front = Front::start(
            &config.listen,
            proxy,
            FrontSettings {
                workers: config.workers,
                queue: config.queue,
                access_log: Arc::new(AtomicBool::new(config.access_log)),
                filter: Arc::new(Filter::new(config.filter.clone())),
            },
        )?;
        for b in pool.backends() {
            log::info!("backend {} weight {}", b.name, b.weight());
        }
        let settings = Arc::new(RwLock::new(MaintenanceSettings {
            health: config.health.clone(),
            slow_start: config.slow_start,
        }));
        let maintenance = Maintenance::start(Maintainer::new(Arc::clone(&pool), settings), clock)?;
        Ok(Running {
            front,
            pool,
            config,
            _maintenance: maintenance,
        })
    }
}

/// A running balancer.
pub struct Running {
    front: Front,
    pool: Arc<Pool>,
    config: Config,
    _maintenance: Maintenance,
}

impl Running {
    /// The address clients connect to (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.front.addr()
    }

    /// The server pool.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Requests waiting for a worker.
    pub fn queue_depth(&self) -> usize {
        self.front.queue_depth()
    }

    /// Graceful shutdown: stop accepting, finish queued and in-flight requests (up to the
    /// configured drain timeout), stop. Returns true when everything finished in time.
    pub fn shutdown(self) -> bool {
        let drain = self.config.drain_timeout;
        log::info!("shutting down: draining for up to {drain:?}");
        let drained = self.front.shutdown(drain);
        log::info!("stopped");
        drained
    }
}

//! loadbalancer: a synchronous HTTP/1.1 load balancer built from threads and channels.
//!
//! ```no_run
//! let config = loadbalancer::Config::default();
//! let running = loadbalancer::Balancer::start(config).expect("start");
//! println!("listening on {}", running.addr());
//! running.shutdown();
//! ```
//!
//! See `DESIGN.md`'s module map: [`config`] reads settings, [`balance`] picks backends by smooth
//! weighted round-robin, [`proxy`] forwards one request, [`http`] is the front end (a poller
//! thread and a worker pool) and [`server`] connects the two.

pub mod admin;
pub mod balance;
pub mod clock;
pub mod config;
pub mod filter;
pub mod http;
pub mod logging;
pub mod maintenance;
pub mod metrics;
pub mod percent;
pub mod proxy;
pub mod resolver;
pub mod server;
pub mod startup;
pub mod supervise;
pub mod transport;
pub mod yielding;

// The paths these modules had before they moved into `balance/`, so that code written against
// them keeps compiling.
pub use balance::{breaker, health, retry, weights};

/// One backend under its former path: [`balance::backend`], and the [`balance::resilience`]
/// adapter that lived beside it.
pub mod backend {
    pub use crate::balance::backend::*;
    pub use crate::balance::resilience::Resilience;
}

/// The server pool under its former path: [`balance::selection`], and the
/// [`Availability`](balance::Availability) seam it defined.
pub mod pool {
    pub use crate::balance::selection::*;
    pub use crate::balance::{AlwaysAvailable, Availability};
}

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

pub use config::Config;

use parking_lot::{Mutex, RwLock};

use balance::backend::Backend;
use balance::resilience::Resilience;
use balance::retry::RetryBudget;
use balance::selection::Pool;
use clock::{Clock, SystemClock};
use filter::Filter;
use http::limits::{default_max_connections, descriptor_limit};
use maintenance::{Maintainer, Maintenance, MaintenanceSettings};
use metrics::Metrics;
use proxy::{Proxy, ProxySettings};
use server::{AdminPages, Balancing, ADMIN_WORKERS};

/// Starts balancers.
#[derive(Debug)]
pub struct Balancer;

/// Produces a fresh [`Config`] for a reload: the command line re-reads its file and re-applies
/// its flags; a library user's balancer re-reads `config.source`.
pub type ConfigLoader = Box<dyn Fn() -> Result<Config, config::ConfigError> + Send + Sync>;

/// The state every part of a running balancer shares: what the admin pages show and what a
/// reload changes.
pub struct Shared {
    /// The backends and the smooth WRR.
    pub pool: Arc<Pool>,
    /// Balancer-wide counters.
    pub metrics: Arc<Metrics>,
    /// Request filtering.
    pub filter: Arc<Filter>,
    /// The forwarding engine.
    pub proxy: Arc<Proxy>,
    /// What the maintenance thread reads each tick.
    pub maintenance: Arc<RwLock<MaintenanceSettings>>,
    /// Whether the access log is on.
    pub access_log: Arc<AtomicBool>,
    /// A graceful shutdown has begun (the admin `/health` then answers 503).
    pub draining: AtomicBool,
    /// The configuration in force.
    pub config: RwLock<Config>,
    /// Requests waiting for a worker (set once the front end runs).
    pub queue_depth: RwLock<Option<Box<dyn Fn() -> usize + Send + Sync>>>,
    /// What the buffers between clients and workers hold.
    pub buffers: Arc<http::Buffers>,
    /// What the front end's workers and poller are doing.
    pub front: Arc<http::Gauges>,
    /// The threads the balancer needs, each with a function that tells whether it runs: the
    /// admin `/health` answers 503 while one does not.
    pub threads: RwLock<Vec<(&'static str, supervise::Alive)>>,
    clock: Arc<dyn Clock>,
    next_id: AtomicU64,
    loader: Option<ConfigLoader>,
    /// Serialises reloads (SIGHUP and the file watch may ask at the same time).
    reloading: Mutex<()>,
}

fn proxy_settings(config: &Config) -> ProxySettings {
    ProxySettings {
        connect_timeout: config.connect_timeout,
        response_timeout: config.response_timeout,
        retries: config.retries,
        retry_timeouts: config.retry_timeouts,
        failure_statuses: config.breaker.failure_statuses.clone(),
        idle_connections: config.workers.max(16),
        max_request_head: config.max_head,
    }
}

impl Shared {
    /// The current time of the balancer's clock.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Requests waiting for a worker now.
    pub fn queue_depth(&self) -> usize {
        self.queue_depth.read().as_ref().map_or(0, |f| f())
    }

    /// Loads the configuration again (file and flags) and applies it. An invalid configuration
    /// is refused and the running one stays; the error names file, line and problem.
    pub fn reload(&self) -> Result<(), String> {
        let _one_at_a_time = self.reloading.lock();
        let Some(loader) = &self.loader else {
            return Err("no configuration file to reload".into());
        };
        let config = loader().map_err(|e| e.to_string())?;
        self.apply(config);
        Ok(())
    }

    /// Applies `new` without dropping a request: backends that stay keep their stats and
    /// state (weight and policy updated), new ones join with slow start, removed ones leave the
    /// pool (requests in flight to them finish). Listen address, workers, queue size and the
    /// admin address need a restart; a change to them is logged and otherwise ignored.
    pub fn apply(&self, mut new: Config) {
        let now = self.now();
        let mut current = self.config.write();
        for (what, changed) in [
            ("listen", new.listen != current.listen),
            ("workers", new.workers != current.workers),
            ("queue", new.queue != current.queue),
            (
                "timeouts client=, head=, body= or queue=",
                (
                    new.client_timeout,
                    new.head_timeout,
                    new.body_timeout,
                    new.queue_timeout,
                ) != (
                    current.client_timeout,
                    current.head_timeout,
                    current.body_timeout,
                    current.queue_timeout,
                ),
            ),
            (
                "request_buffering",
                new.request_buffering != current.request_buffering,
            ),
            ("buffers", new.buffers != current.buffers),
            (
                "limits max_request_line=, max_head=, max_headers= or max_connections=",
                (
                    new.max_request_line,
                    new.max_head,
                    new.max_headers,
                    new.max_connections,
                ) != (
                    current.max_request_line,
                    current.max_head,
                    current.max_headers,
                    current.max_connections,
                ),
            ),
            (
                "admin",
                new.admin != current.admin || new.admin_token != current.admin_token,
            ),
        ] {
            if changed {
                log::warn!("reload: a change of {what} needs a restart; keeping the running one");
            }
        }
        new.listen = current.listen.clone();
        new.workers = current.workers;
        new.queue = current.queue;
        new.client_timeout = current.client_timeout;
        new.head_timeout = current.head_timeout;
        new.queue_timeout = current.queue_timeout;
        new.body_timeout = current.body_timeout;
        new.request_buffering = current.request_buffering;
        new.buffers = current.buffers.clone();
        new.max_request_line = current.max_request_line;
        new.max_head = current.max_head;
        new.max_headers = current.max_headers;
        new.max_connections = current.max_connections;
        new.admin = current.admin.clone();
        new.admin_token = current.admin_token.clone();

        let old = self.pool.backends();
        let mut backends = Vec::with_capacity(new.backends.len());
        for b in &new.backends {
            match old.iter().find(|o| o.url == b.url) {
                Some(kept) => {
                    if kept.weight() != b.weight {
                        log::info!(
                            "reload: backend {} weight {} -> {}",
                            kept.name,
                            kept.weight(),
                            b.weight
                        );
                    }
                    kept.set_policy(&new.breaker, &new.health, b.weight);
                    backends.push(Arc::clone(kept));
                }
                None => {
                    let id = self.next_id.fetch_add(1, Relaxed);
                    let added = Arc::new(Backend::with_policy(id, b, &new.breaker, &new.health));
                    if !new.slow_start.is_zero() {
                        added.join(now);
                    }
                    log::info!(
                        "reload: backend {} added with weight {}",
                        added.name,
                        b.weight
                    );
                    backends.push(added);
                }
            }
        }
        for o in &old {
            if !backends.iter().any(|b| b.id == o.id) {
                log::info!("reload: backend {} removed", o.name);
            }
        }
        self.pool.set_backends(backends);
        // Give new backends their slow-start weight now rather than at the next tick.
        maintenance::update_weights(&self.pool.backends(), now, new.slow_start);
        self.proxy
            .reconfigure(proxy_settings(&new), new.retry_budget_percent);
        self.filter.reconfigure(new.filter.clone());
        self.access_log.store(new.access_log, Relaxed);
        *self.maintenance.write() = MaintenanceSettings {
            health: new.health.clone(),
            slow_start: new.slow_start,
            watch: new.source.clone(),
        };
        *current = new;
        log::info!("configuration reloaded");
    }
}

impl maintenance::Reload for Shared {
    fn reload(&self) -> Result<(), String> {
        Shared::reload(self)
    }
}

impl Balancer {
    /// Binds the listener and starts the workers for `config`. Returns once the balancer accepts
    /// requests. Reloads re-read `config.source`, if set.
    pub fn start(config: Config) -> io::Result<Running> {
        let loader: Option<ConfigLoader> = config
            .source
            .clone()
            .map(|path| Box::new(move || Config::from_file(&path)) as ConfigLoader);
        Self::start_with_loader(config, loader)
    }

    /// [`Balancer::start`] with an explicit way to load the configuration again on reload.
    pub fn start_with_loader(config: Config, loader: Option<ConfigLoader>) -> io::Result<Running> {
        config.validate().map_err(io::Error::other)?;
        let backends: Vec<Arc<Backend>> = config
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
        let next_id = AtomicU64::new(backends.len() as u64);
        let pool = Arc::new(Pool::new(backends));
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let resilience = Arc::new(Resilience::new(Arc::clone(&clock)));
        let metrics = Arc::new(Metrics::default());
        let proxy = Arc::new(Proxy::new(
            Arc::clone(&pool),
            resilience.clone(),
            resilience,
            RetryBudget::new(config.retry_budget_percent),
            proxy_settings(&config),
        ));
        let shared = Arc::new(Shared {
            pool: Arc::clone(&pool),
            metrics: Arc::clone(&metrics),
            filter: Arc::new(Filter::new(config.filter.clone())),
            proxy: Arc::clone(&proxy),
            maintenance: Arc::new(RwLock::new(MaintenanceSettings {
                health: config.health.clone(),
                slow_start: config.slow_start,
                watch: config.source.clone(),
            })),
            access_log: Arc::new(AtomicBool::new(config.access_log)),
            draining: AtomicBool::new(false),
            config: RwLock::new(config.clone()),
            queue_depth: RwLock::new(None),
            buffers: http::Buffers::new(config.buffers.clone()),
            front: Arc::new(http::Gauges::default()),
            threads: RwLock::new(Vec::new()),
            clock: Arc::clone(&clock),
            next_id,
            loader,
            reloading: Mutex::new(()),
        });
        let limits = front_limits(&config);
        let balancing = Balancing {
            proxy,
            filter: Arc::clone(&shared.filter),
            metrics: Arc::clone(&metrics),
            access_log: Arc::clone(&shared.access_log),
        };
        let front = http::Server::start(
            bind(&config.listen, "")?,
            config.workers,
            limits,
            Arc::clone(&shared.buffers),
            Arc::clone(&shared.front),
            "worker",
            Arc::new(balancing),
        )?;
        *shared.queue_depth.write() = Some(front.queue_depth_fn());
        shared.threads.write().push(("poller", front.alive_fn()));
        log::info!(
            "listening on {} with {} workers, up to {} connections",
            front.addr(),
            config.workers,
            limits.max_connections
        );
        for b in pool.backends() {
            log::info!("backend {} weight {}", b.name, b.weight());
        }
        let admin = match &config.admin {
            Some(addr) => {
                let pages = AdminPages {
                    shared: Arc::clone(&shared),
                };
                let limits = http::Limits {
                    max_connections: ADMIN_CONNECTIONS,
                    ..limits
                };
                let server = http::Server::start(
                    bind(addr, "admin ")?,
                    ADMIN_WORKERS,
                    limits,
                    Arc::clone(&shared.buffers),
                    Arc::new(http::Gauges::default()),
                    "admin",
                    Arc::new(pages),
                )?;
                log::info!("admin listening on {}", server.addr());
                Some(server)
            }
            None => None,
        };
        let maintainer = Maintainer::new(
            Arc::clone(&pool),
            Arc::clone(&metrics),
            Arc::clone(&shared.maintenance),
        )
        .with_reload(Arc::clone(&shared) as Arc<dyn maintenance::Reload>);
        let maintenance = Maintenance::start(maintainer, clock)?;
        shared
            .threads
            .write()
            .push(("maintenance", maintenance.alive_fn()));
        Ok(Running {
            front,
            shared,
            admin,
            maintenance,
        })
    }
}

/// Most connections to the admin listener at once. 256.
const ADMIN_CONNECTIONS: usize = 256;

/// How long a shutdown waits for admin requests in flight. 1 s.
const ADMIN_DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Binds `addr` for `what` (`""` or `"admin "`). An address in use gets a hint naming the flag
/// to change.
fn bind(addr: &str, what: &str) -> io::Result<TcpListener> {
    http::bind(addr).map_err(|e| {
        let problem = if e.kind() == io::ErrorKind::AddrInUse {
            let flag = if what.is_empty() {
                "--listen"
            } else {
                "--admin"
            };
            format!(
                "address in use: is another balancer running? choose another port with {flag} ADDR"
            )
        } else {
            e.to_string()
        };
        io::Error::new(
            e.kind(),
            format!("cannot listen on {what}{addr}: {problem}"),
        )
    })
}

/// The front end's limits from `config`.
pub fn front_limits(config: &Config) -> http::Limits {
    http::Limits {
        max_request_line: config.max_request_line,
        max_head: config.max_head,
        max_headers: config.max_headers,
        head_timeout: config.head_timeout,
        client_timeout: config.client_timeout,
        queue_timeout: config.queue_timeout,
        body_timeout: config.body_timeout,
        request_buffering: config.request_buffering,
        max_queue: config.queue,
        max_connections: config
            .max_connections
            .unwrap_or_else(|| default_max_connections(descriptor_limit(), config.workers)),
    }
}

/// A running balancer.
pub struct Running {
    front: http::Server,
    shared: Arc<Shared>,
    admin: Option<http::Server>,
    maintenance: Maintenance,
}

impl Running {
    /// The address clients connect to (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.front.addr()
    }

    /// The admin listener's address, when it runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.addr())
    }

    /// The server pool.
    pub fn pool(&self) -> &Arc<Pool> {
        &self.shared.pool
    }

    /// The state shared by all parts of the balancer.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// A copy of the configuration in force.
    pub fn config(&self) -> Config {
        self.shared.config.read().clone()
    }

    /// Requests waiting for a worker.
    pub fn queue_depth(&self) -> usize {
        self.front.queue_depth()
    }

    /// Asks the maintenance thread to reload the configuration (what SIGHUP does). The result is
    /// logged.
    pub fn request_reload(&self) {
        self.maintenance.request_reload();
    }

    /// Applies `config` at once, as a reload would.
    pub fn apply(&self, config: Config) {
        self.shared.apply(config);
    }

    /// Graceful shutdown: stop accepting, finish queued and in-flight requests (up to the
    /// configured drain timeout), stop. Returns true when everything finished in time.
    pub fn shutdown(self) -> bool {
        let drain = self.shared.config.read().drain_timeout;
        log::info!("shutting down: draining for up to {drain:?}");
        self.shared.draining.store(true, Relaxed);
        drop(self.maintenance);
        let drained = self.front.shutdown(drain);
        if let Some(a) = self.admin {
            a.shutdown(ADMIN_DRAIN);
        }
        log::info!("stopped");
        drained
    }
}

//! Starting a balancer: the pool and its backends, the forwarding engine, the front end (the
//! poller and the workers), the admin listener and the maintenance thread, wired together.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};

use crate::balance::backend::Backend;
use crate::balance::resilience::Resilience;
use crate::balance::retry::RetryBudget;
use crate::balance::selection::Pool;
use crate::clock::{Clock, SystemClock};
use crate::config::shared::SharedConfig;
use crate::filter::shared::{self, BanSink, Problem, SharedLimits};
use crate::filter::Filter;
use crate::http::limits::{default_max_connections, descriptor_limit};
use crate::logging::{self, AccessLog};
use crate::maintenance::{self, Maintainer, Maintenance, MaintenanceSettings};
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::reload::proxy_settings;
use crate::server::{AdminPages, Balancing, ADMIN_WORKERS};
use crate::state::{ConfigLoader, Shared};
use crate::{http, Config};

/// Starts balancers.
#[derive(Debug)]
pub struct Balancer;

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
            RetryBudget::new(config.retries.budget_percent, Arc::clone(&clock)),
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
            access_log: Arc::new(AccessLog::new(
                config.access_log,
                config.access_log_path.as_deref(),
                config.access_log_format,
            )?),
            explain: Arc::new(AtomicBool::new(config.explain)),
            decisions: Arc::default(),
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
        if let Some(store) = &config.filter.shared {
            start_shared(&shared.filter, store)?;
        }
        let limits = front_limits(&config);
        let balancing = Balancing {
            proxy,
            filter: Arc::clone(&shared.filter),
            metrics: Arc::clone(&metrics),
            access_log: Arc::clone(&shared.access_log),
            explain: Arc::clone(&shared.explain),
            decisions: Arc::clone(&shared.decisions),
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

/// Starts the shared store of the `shared` line and gives it to the filter; the bans it learns
/// go to the filter's ban table. A Redis that refuses the credentials is a configuration error
/// (named by the line); one that does not answer is not: the balancer starts with its fallback
/// and comes to Redis when it answers.
fn start_shared(filter: &Arc<Filter>, config: &SharedConfig) -> io::Result<()> {
    if let Err(Problem::Auth(why)) = shared::probe(config) {
        return Err(io::Error::other(auth_error(config, &why)));
    }
    let weak = Arc::downgrade(filter);
    let on_ban: BanSink = Arc::new(move |client, left| {
        if let Some(filter) = weak.upgrade() {
            filter.adopt_ban(client, left, Instant::now());
        }
    });
    filter.attach_shared(SharedLimits::start(config, on_ban)?);
    log::info!(
        "shared limits in Redis at {} (fallback={})",
        config.redacted_url(),
        config.fallback.name()
    );
    Ok(())
}

/// `FILE:LINE: shared: Redis at URL refused the credentials: WHY` (the password hidden).
pub fn auth_error(config: &SharedConfig, why: &str) -> String {
    let at = config
        .at
        .as_deref()
        .map_or(String::new(), |at| format!("{at}: "));
    format!(
        "{at}shared: Redis at {} refused the credentials: {why}",
        config.redacted_url()
    )
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

/// The front end's limits from `config`: its timeouts, its head limits, how it buffers.
pub fn front_limits(config: &Config) -> http::Limits {
    let (t, l) = (&config.timeouts, &config.limits);
    http::Limits {
        max_request_line: l.max_request_line,
        max_head: l.max_head,
        max_headers: l.max_headers,
        head_timeout: t.head,
        client_timeout: t.client,
        queue_timeout: t.queue,
        body_timeout: t.body,
        request_buffering: config.request_buffering,
        max_queue: config.queue,
        max_connections: l
            .max_connections
            .unwrap_or_else(|| default_max_connections(descriptor_limit(), config.workers)),
        tunnel_timeout: t.tunnel,
        max_tunnels: l.tunnels,
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
    /// logged, after `reloading the configuration: reload requested`.
    pub fn request_reload(&self) {
        self.request_reload_because("reload requested");
    }

    /// [`Running::request_reload`], saying `why` in the log line instead: the command passes
    /// `SIGHUP received`.
    pub fn request_reload_because(&self, why: &'static str) {
        self.maintenance.request_reload(why);
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
        self.shared.filter.stop_shared();
        if let Some(a) = self.admin {
            a.shutdown(ADMIN_DRAIN);
        }
        log::info!("stopped");
        // The last lines (and the access log's) reach their sinks before the caller exits.
        logging::flush();
        drained
    }
}

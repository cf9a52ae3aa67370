//! The state every part of a running balancer shares: the pool, the counters, the filter, the
//! forwarding engine and the configuration in force. The admin pages read it; a reload
//! (`reload.rs`) changes it.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};

use crate::balance::selection::Pool;
use crate::clock::Clock;
use crate::explain::Decisions;
use crate::filter::Filter;
use crate::logging::AccessLog;
use crate::maintenance::MaintenanceSettings;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::{config, http, supervise, Config};

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
    /// The access log: on or off, its format and sink.
    pub access_log: Arc<AccessLog>,
    /// Whether decisions are explained (`explain on`).
    pub explain: Arc<AtomicBool>,
    /// The last explained decisions, for the dashboard.
    pub decisions: Arc<Decisions>,
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
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) next_id: AtomicU64,
    pub(crate) loader: Option<ConfigLoader>,
    /// Serialises reloads (SIGHUP and the file watch may ask at the same time).
    pub(crate) reloading: Mutex<()>,
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
}

//! One backend: its address, its configured weight, and live counters that workers update without
//! taking a lock.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::config::BackendConfig;

/// One upstream server. Shared by the pool, the workers and the maintenance thread through an
/// `Arc`; everything that changes while requests flow is an atomic.
#[derive(Debug)]
pub struct Backend {
    /// Stable id within this balancer's lifetime (survives reloads).
    pub id: u64,
    /// `host:port`, used in logs, status and metrics.
    pub name: String,
    /// Base URL, e.g. `http://localhost:8081`.
    pub url: String,
    /// Configured base weight (1..=1000). Changes on reload.
    weight: AtomicU32,
    /// The weight the smooth WRR uses now. Equal to `weight` unless something lowers it.
    effective_weight: AtomicU32,
    /// Counters and gauges for status and metrics.
    pub stats: BackendStats,
}

/// Live counters of one backend. All monotonic except `in_flight`.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Requests sent (each attempt counts once).
    pub requests: AtomicU64,
    /// Attempts that failed (transport error, timeout, or a failure status).
    pub failures: AtomicU64,
    /// Requests being forwarded right now.
    pub in_flight: AtomicU64,
    /// Response body bytes relayed to clients.
    pub bytes_out: AtomicU64,
}

impl Backend {
    /// A backend for `config`, with id `id`.
    pub fn new(id: u64, config: &BackendConfig) -> Backend {
        Backend {
            id,
            name: config.name(),
            url: config.url.clone(),
            weight: AtomicU32::new(config.weight),
            effective_weight: AtomicU32::new(config.weight),
            stats: BackendStats::default(),
        }
    }

    /// The configured weight.
    pub fn weight(&self) -> u32 {
        self.weight.load(Relaxed)
    }

    /// Sets the configured weight (reload).
    pub fn set_weight(&self, w: u32) {
        self.weight.store(w, Relaxed);
    }

    /// The weight the selection uses right now.
    pub fn effective_weight(&self) -> u32 {
        self.effective_weight.load(Relaxed)
    }

    /// Sets the weight the selection uses (the dynamic-weight computation does this).
    pub fn set_effective_weight(&self, w: u32) {
        self.effective_weight.store(w, Relaxed);
    }

    /// Marks the start of one attempt; the guard ends it when dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.stats.requests.fetch_add(1, Relaxed);
        self.stats.in_flight.fetch_add(1, Relaxed);
        InFlight(Arc::clone(self))
    }
}

/// Keeps a backend's in-flight gauge up while a request is being forwarded.
#[derive(Debug)]
pub struct InFlight(Arc<Backend>);

impl InFlight {
    /// The backend this attempt went to.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.stats.in_flight.fetch_sub(1, Relaxed);
    }
}

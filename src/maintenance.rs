//! The maintenance thread: the one place where time moves the balancer's state.
//!
//! Every tick (100 ms) it turns open breakers whose cooldown is over half-open, starts the health
//! checks that are due, applies the results of finished checks, and recomputes every backend's
//! effective weight (see `weights.rs`). Each check runs on its own short-lived thread and reports
//! back over a channel, so a slow or dead backend cannot delay the checks of the others, nor the
//! breaker and weight updates.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};
use parking_lot::RwLock;

use crate::balance::backend::Backend;
use crate::balance::health;
use crate::balance::selection::Pool;
use crate::balance::weights;
use crate::clock::Clock;
use crate::config::HealthConfig;
use crate::metrics::Metrics;
use crate::supervise::{self, Thread};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// How often the maintenance thread wakes. 100 ms.
pub const TICK: Duration = Duration::from_millis(100);

/// Settings the maintenance thread reads each tick (a reload replaces them).
#[derive(Clone, Debug)]
pub struct MaintenanceSettings {
    /// Active health checks.
    pub health: HealthConfig,
    /// Slow-start ramp.
    pub slow_start: Duration,
    /// A config file whose modification time is watched: a change triggers a reload.
    pub watch: Option<PathBuf>,
}

/// Reloads the configuration (implemented by the balancer's shared state).
pub trait Reload: Send + Sync {
    /// Loads and applies the configuration again; an error leaves the running one in force.
    fn reload(&self) -> Result<(), String>;
}

/// How often the watched config file's modification time is looked at. 1 s.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// One maintenance step, separated from the thread so tests can drive it with a manual clock.
pub struct Maintainer {
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    settings: Arc<RwLock<MaintenanceSettings>>,
    agent: ureq::Agent,
    next_check: HashMap<u64, Instant>,
    checking: HashSet<u64>,
    results_tx: Sender<(u64, health::Outcome)>,
    results: Receiver<(u64, health::Outcome)>,
    reload: Option<Arc<dyn Reload>>,
    /// Reload requests, each with why it was asked for (`SIGHUP received`).
    reload_requests: Receiver<&'static str>,
    reload_tx: Sender<&'static str>,
    /// The watched file's modification time last seen, and when it was last looked at.
    watched: Option<(Option<SystemTime>, Instant)>,
}

impl Maintainer {
    /// A maintainer of `pool`'s backends.
    pub fn new(
        pool: Arc<Pool>,
        metrics: Arc<Metrics>,
        settings: Arc<RwLock<MaintenanceSettings>>,
    ) -> Maintainer {
        let (results_tx, results) = unbounded();
        let (reload_tx, reload_requests) = bounded(1);
        Maintainer {
            pool,
            metrics,
            settings,
            agent: health::probe_agent(),
            next_check: HashMap::new(),
            checking: HashSet::new(),
            results_tx,
            results,
            reload: None,
            reload_requests,
            reload_tx,
            watched: None,
        }
    }

    /// Lets this maintainer reload the configuration: when asked, and when the watched file
    /// changes.
    pub fn with_reload(mut self, reload: Arc<dyn Reload>) -> Maintainer {
        self.reload = Some(reload);
        self
    }

    /// Reloads if asked to, or if the watched file's modification time changed.
    fn maybe_reload(&mut self, watch: Option<&Path>, now: Instant) {
        let Some(reload) = &self.reload else { return };
        let mut why = self.reload_requests.try_recv().ok();
        if let Some(path) = watch {
            let look = self
                .watched
                .is_none_or(|(_, at)| now.saturating_duration_since(at) >= WATCH_INTERVAL);
            if look {
                let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
                if let Some((seen, _)) = self.watched {
                    if seen != mtime && mtime.is_some() && why.is_none() {
                        why = Some("the config file changed");
                    }
                }
                self.watched = Some((mtime, now));
            }
        }
        if let Some(why) = why {
            log::info!("reloading the configuration: {why}");
            if let Err(e) = reload.reload() {
                log::error!("reload refused, the running configuration stays: {e}");
            }
        }
    }

    /// One step at `now`: breaker timeouts, health checks, weights.
    pub fn step(&mut self, now: Instant) {
        let watch = self.settings.read().watch.clone();
        self.maybe_reload(watch.as_deref(), now);
        let settings = self.settings.read().clone();
        let backends = self.pool.backends();
        for (id, outcome) in self.results.try_iter() {
            self.checking.remove(&id);
            if let Some(b) = backends.iter().find(|b| b.id == id) {
                b.record_check(&outcome, now);
            }
        }
        for b in &backends {
            b.tick(now);
        }
        if settings.health.enabled {
            for b in &backends {
                self.maybe_check(b, &settings.health, now);
            }
        }
        update_weights(&backends, now, settings.slow_start);
        self.metrics.sample(&backends, now);
        // Forget backends that a reload removed.
        self.next_check
            .retain(|id, _| backends.iter().any(|b| b.id == *id));
    }

    fn maybe_check(&mut self, backend: &Arc<Backend>, health: &HealthConfig, now: Instant) {
        let due = self.next_check.get(&backend.id).is_none_or(|t| now >= *t);
        if !due || self.checking.contains(&backend.id) {
            return;
        }
        self.next_check.insert(backend.id, now + health.interval);
        self.checking.insert(backend.id);
        let agent = self.agent.clone();
        let url = format!("{}{}", backend.url, health.path);
        let timeout = health.timeout;
        let tx = self.results_tx.clone();
        let id = backend.id;
        let spawned = thread::Builder::new()
            .name(format!("check-{}", backend.name))
            .spawn(move || {
                // A check that panics still reports, as failed: its backend must not stay
                // `checking`, never to be checked again.
                let outcome = catch_unwind(AssertUnwindSafe(|| {
                    supervise::check_point(Thread::HealthCheck);
                    health::probe(&agent, &url, timeout)
                }))
                .unwrap_or_else(|panic| {
                    supervise::survived(Thread::HealthCheck, "in a health check", &*panic);
                    health::Outcome::Failed("the check panicked".into())
                });
                let _ = tx.send((id, outcome));
            });
        if let Err(e) = spawned {
            log::error!("cannot start a health check thread: {e}");
            self.checking.remove(&backend.id);
        }
    }
}

/// Recomputes every backend's effective weight, logging the changes that matter (see
/// [`weights::WeightLog`]). The latency reference is the fastest available backend with a
/// measurement.
pub fn update_weights(backends: &[Arc<Backend>], now: Instant, slow_start: Duration) {
    for b in backends {
        b.fold_tick();
    }
    let inputs: Vec<_> = backends
        .iter()
        .map(|b| (b, b.weight_inputs(now, slow_start)))
        .collect();
    let fastest = inputs
        .iter()
        .filter(|(b, _)| b.is_available())
        .filter_map(|(_, i)| i.latency_ms)
        .min_by(f64::total_cmp);
    for (b, i) in &inputs {
        b.apply_weighing(&weights::weigh(i, fastest, slow_start), now);
    }
}

/// The running maintenance thread.
pub struct Maintenance {
    stop: Sender<()>,
    reload: Sender<&'static str>,
    thread: Option<JoinHandle<()>>,
    alive: Arc<AtomicBool>,
}

/// Sets its flag to false when dropped: at the end of the thread that holds it, however it ends.
struct Alive(Arc<AtomicBool>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.store(false, Relaxed);
    }
}

impl Maintenance {
    /// Starts the thread, stepping `maintainer` every [`TICK`] with `clock`'s time.
    pub fn start(mut maintainer: Maintainer, clock: Arc<dyn Clock>) -> std::io::Result<Self> {
        let (stop, stopped) = bounded::<()>(1);
        let reload = maintainer.reload_tx.clone();
        let alive = Arc::new(AtomicBool::new(true));
        let flag = Alive(Arc::clone(&alive));
        let thread = thread::Builder::new()
            .name("maintenance".into())
            .spawn(move || loop {
                let _alive = &flag;
                let stepped = catch_unwind(AssertUnwindSafe(|| {
                    supervise::check_point(Thread::Maintenance);
                    maintainer.step(clock.now())
                }));
                if let Err(panic) = stepped {
                    supervise::survived(Thread::Maintenance, "in a maintenance tick", &*panic);
                }
                match stopped.recv_timeout(TICK) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            })?;
        Ok(Maintenance {
            stop,
            reload,
            thread: Some(thread),
            alive,
        })
    }

    /// A function that tells whether the thread runs, for readiness.
    pub fn alive_fn(&self) -> supervise::Alive {
        let alive = Arc::clone(&self.alive);
        Box::new(move || alive.load(Relaxed))
    }

    /// Asks for a reload at the next tick; `why` is said in the log line (`reloading the
    /// configuration: SIGHUP received`). Several requests before it runs are one, with the
    /// first one's reason.
    pub fn request_reload(&self, why: &'static str) {
        let _ = self.reload.try_send(why);
    }
}

impl Drop for Maintenance {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendConfig;

    fn pool_of(n: u64, health: &HealthConfig) -> Arc<Pool> {
        Arc::new(Pool::new(
            (0..n)
                .map(|i| {
                    let c =
                        BackendConfig::parse(&format!("http://127.0.0.1:{}", 1 + i), 1).unwrap();
                    Arc::new(Backend::with_policy(i, &c, &Default::default(), health))
                })
                .collect(),
        ))
    }

    #[test]
    fn one_stall_among_many_fast_answers_keeps_the_weight() {
        let pool = pool_of(2, &HealthConfig::default());
        let bs = pool.backends();
        let t0 = Instant::now();
        for _ in 0..10 {
            for b in &bs {
                for _ in 0..30 {
                    b.record(true, Duration::from_millis(1), t0);
                }
            }
            bs[1].record(true, Duration::from_millis(80), t0);
            update_weights(&bs, t0, Duration::from_secs(10));
            let w: Vec<u32> = bs.iter().map(|b| b.effective_weight()).collect();
            assert_eq!(w, [100, 100]);
        }
    }

    #[test]
    fn weights_follow_latency_and_failures() {
        let pool = pool_of(3, &HealthConfig::default());
        let bs = pool.backends();
        let t0 = Instant::now();
        for _ in 0..20 {
            bs[0].record(true, Duration::from_millis(2), t0);
            bs[1].record(true, Duration::from_millis(3), t0);
            bs[2].record(true, Duration::from_millis(52), t0);
        }
        update_weights(&bs, t0, Duration::from_secs(10));
        let w: Vec<u32> = bs.iter().map(|b| b.effective_weight()).collect();
        assert_eq!(w[..2], [100, 100]);
        assert!(w[2] <= 8, "slow backend loses most of its share: {w:?}");
        // Recovery takes a few ticks: each tick's mean moves the average 30 % of the way.
        let mut ticks = 0;
        while bs[2].effective_weight() < 100 {
            for _ in 0..20 {
                bs[2].record(true, Duration::from_millis(2), t0);
            }
            update_weights(&bs, t0, Duration::from_secs(10));
            ticks += 1;
        }
        // 52 ms -> 37 -> 26.5 -> 19.2 -> 14.005: a hair over the 14 ms band, weight 99.9 -> 100.
        assert_eq!(ticks, 4);
    }

    #[test]
    fn checks_are_started_on_schedule_and_results_applied() {
        // Port 1 on loopback refuses connections at once.
        let health = HealthConfig {
            fall: 1,
            ..HealthConfig::default()
        };
        let pool = pool_of(1, &health);
        let settings = Arc::new(RwLock::new(MaintenanceSettings {
            health,
            slow_start: Duration::from_secs(10),
            watch: None,
        }));
        let mut m = Maintainer::new(Arc::clone(&pool), Arc::default(), settings);
        let t0 = Instant::now();
        m.step(t0);
        assert!(m.checking.contains(&0));
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.backends()[0].is_healthy() {
            assert!(
                Instant::now() < deadline,
                "the failed check was never applied"
            );
            m.step(t0 + Duration::from_millis(100));
            thread::yield_now();
        }
        assert_eq!(m.next_check[&0], t0 + Duration::from_secs(2));
    }
}

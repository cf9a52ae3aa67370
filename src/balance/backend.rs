//! One backend: who it is (id, name, URL), its configured and effective weight, its counters,
//! and the state that the breaker, health checks and dynamic weights keep about it.
//!
//! Each concept's state and rules live in that concept's file: the [`Breaker`] and its lock-free
//! [`Mirror`] in `breaker.rs`, [`Health`] in `health.rs`, the [`TickSamples`] and
//! [`Measurements`] behind the effective weight in `weights.rs`. What is left here is what ties
//! them together, under one lock so that a status page sees them consistent:
//!
//! - a breaker that closes again (its trial succeeded) starts slow start and forgets the failure
//!   average;
//! - health checks that see the backend come back reset its breaker, forget its averages and
//!   start slow start;
//! - going out (health checks fail, the breaker opens) ends a ramp in progress, and nothing is
//!   logged about the weight of a backend that is out (see [`WeightLog`]);
//! - either one can say why the backend is out (`last_error`, shown on the status page).
//!
//! The hot path stays cheap: a pick reads two atomics (`healthy`, breaker closed) and only takes
//! the backend's lock when the breaker is not closed; a success while all is well takes no lock
//! either. Every state change is logged once, here, with its reason.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::breaker::{self, Breaker, Mirror};
use super::health::{self, Health};
use super::weights::{
    self, Factors, Inputs, Measurements, TickSamples, Weighing, WeightLog, WeightNews,
};
use crate::config::{format_duration, BackendConfig, BreakerConfig, HealthConfig};

/// One upstream server. Shared by the pool, the workers and the maintenance thread through an
/// `Arc`.
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
    /// The weight the smooth WRR uses now, in units of [`weights::SCALE`] (the low 32 bits), and
    /// the [`Factors`] behind it ([`Factors::pack`], the high 32): one atomic, so that an
    /// explanation never pairs a weight with another tick's reasons.
    effective: AtomicU64,
    /// Counters and gauges for status and metrics.
    pub stats: BackendStats,
    /// Mirror of the health state for lock-free picks.
    healthy: AtomicBool,
    /// Mirror of the breaker for lock-free picks and successes.
    breaker: Mirror,
    /// This tick's outcomes, summed without a lock by the workers and folded into the averages
    /// by the maintenance thread (see [`Backend::fold_tick`]).
    tick: TickSamples,
    live: Mutex<Live>,
}

/// What the backend's lock guards.
#[derive(Debug)]
struct Live {
    breaker: Breaker,
    health: Health,
    measured: Measurements,
    /// Which weight changes were logged, so the next ones are logged only when they matter.
    weight_log: WeightLog,
    /// Why the backend is out, for status.
    last_error: Option<String>,
}

/// Live counters of one backend. All monotonic except `in_flight`.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Attempts sent (retries count once per backend tried).
    pub requests: AtomicU64,
    /// Attempts that failed (transport error, timeout, or a failure status).
    pub failures: AtomicU64,
    /// Requests being forwarded right now.
    pub in_flight: AtomicU64,
    /// Response body bytes relayed to clients (a tunnel's, when it ends).
    pub bytes_out: AtomicU64,
    /// Tunnels (WebSockets) open to this backend now. A tunnel counts from its 101 to its end,
    /// also after a reload removed the backend.
    pub tunnels: AtomicU64,
}

/// A consistent view of one backend for status pages and metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Backend id.
    pub id: u64,
    /// `host:port`.
    pub name: String,
    /// Base URL.
    pub url: String,
    /// `healthy`, `unhealthy`, `open`, `half-open` or `slow-start`.
    pub state: &'static str,
    /// Health checks pass.
    pub healthy: bool,
    /// `closed`, `open` or `half-open`.
    pub breaker: &'static str,
    /// Configured weight.
    pub weight: u32,
    /// Effective weight in units of the configured weight (configured 1 at full = 1.0).
    pub effective_weight: f64,
    /// Latency EWMA (time to response head) in ms, if measured.
    pub latency_ms: Option<f64>,
    /// Failure-rate EWMA, 0..=1.
    pub failure_rate: f64,
    /// In-flight requests.
    pub in_flight: u64,
    /// Attempts sent.
    pub requests: u64,
    /// Attempts failed.
    pub failures: u64,
    /// Response body bytes relayed.
    pub bytes_out: u64,
    /// Tunnels open now.
    pub tunnels: u64,
    /// Last reason the backend failed a check or a request, if any.
    pub last_error: Option<String>,
}

impl Backend {
    /// A healthy backend with a closed breaker, not ramping (backends present at start take
    /// traffic at once, as in HAProxy).
    pub fn new(id: u64, config: &BackendConfig) -> Backend {
        Self::with_policy(
            id,
            config,
            &BreakerConfig::default(),
            &HealthConfig::default(),
        )
    }

    /// [`Backend::new`] with explicit breaker and health settings.
    pub fn with_policy(
        id: u64,
        config: &BackendConfig,
        breaker: &BreakerConfig,
        health: &HealthConfig,
    ) -> Backend {
        Backend {
            id,
            name: config.name(),
            url: config.url.clone(),
            weight: AtomicU32::new(config.weight),
            effective: AtomicU64::new(pack(config.weight * weights::SCALE, Factors::NONE)),
            stats: BackendStats::default(),
            healthy: AtomicBool::new(true),
            breaker: Mirror::default(),
            tick: TickSamples::default(),
            live: Mutex::new(Live {
                breaker: Breaker::new(breaker.clone()),
                health: Health::new(health.rise, health.fall),
                measured: Measurements::default(),
                weight_log: WeightLog::default(),
                last_error: None,
            }),
        }
    }

    /// The configured weight.
    pub fn weight(&self) -> u32 {
        self.weight.load(Relaxed)
    }

    /// The weight the selection uses right now, in units of [`weights::SCALE`].
    pub fn effective_weight(&self) -> u32 {
        self.effective.load(Relaxed) as u32
    }

    /// The effective weight and the factors that made it, read together.
    pub fn effective(&self) -> (u32, Factors) {
        let both = self.effective.load(Relaxed);
        (both as u32, Factors::unpack((both >> 32) as u32))
    }

    /// Sets the effective weight directly (tests), with no reason known.
    pub fn set_effective_weight(&self, w: u32) {
        self.set_effective(w, Factors::NONE);
    }

    /// Sets the effective weight and the factors that made it (the weight computation).
    pub fn set_effective(&self, w: u32, factors: Factors) {
        self.effective.store(pack(w, factors), Relaxed);
    }

    /// Sets the effective weight a tick's `weighing` gave, and logs the change at info when it
    /// matters (see [`WeightLog`]: slow start beginning or ending, a move of a step, at most a
    /// line a second). Returns the line logged, if any.
    pub fn apply_weighing(&self, weighing: &Weighing, now: Instant) -> Option<String> {
        self.set_effective(weighing.effective, weighing.factors);
        let available = self.is_available();
        let news = self
            .live
            .lock()
            .weight_log
            .observe(weighing, available, now)?;
        let percent = |share: f64| format!("{:.0}%", share * 100.0);
        let share = percent(weighing.share());
        let weight = weighing.inputs.weight;
        let reasons = weighing.reasons();
        let why = if reasons.is_empty() {
            String::new()
        } else {
            format!(": {reasons}")
        };
        let line = match news {
            WeightNews::RampBegan => format!(
                "backend {}: slow start: effective weight {share} of weight {weight}, full in {}",
                self.name,
                format_duration(weighing.slow_start)
            ),
            WeightNews::RampEnded => format!(
                "backend {}: slow start over: effective weight {share} of weight {weight}{why}",
                self.name
            ),
            WeightNews::Moved { from } => format!(
                "backend {}: effective weight {} -> {share} of weight {weight}{why}",
                self.name,
                percent(from)
            ),
        };
        log::info!("{line}");
        Some(line)
    }

    /// True when health checks pass (or are off).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    /// Marks the start of one attempt; the guard ends it when dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.stats.requests.fetch_add(1, Relaxed);
        self.stats.in_flight.fetch_add(1, Relaxed);
        InFlight(Arc::clone(self))
    }

    /// May this backend take a request now? Healthy, and the breaker closed or offering its
    /// half-open trial (which this takes).
    pub fn admit(&self) -> bool {
        if !self.healthy.load(Relaxed) {
            return false;
        }
        self.breaker.admits().unwrap_or_else(|| {
            let mut live = self.live.lock();
            let admitted = live.breaker.admit();
            self.breaker.update(&live.breaker);
            admitted
        })
    }

    /// True while the breaker is half-open: a request admitted now holds the trial slot.
    pub fn in_trial(&self) -> bool {
        self.breaker.is_half_open()
    }

    /// Gives back the half-open trial slot an attempt took but never used (see
    /// [`Breaker::release_trial`]).
    pub fn release_trial(&self) {
        let mut live = self.live.lock();
        live.breaker.release_trial();
        self.breaker.update(&live.breaker);
    }

    /// Records one attempt's outcome: latency and failure averages, and the breaker. The common
    /// case, a success while all is well, takes no lock.
    pub fn record(&self, success: bool, latency: Duration, now: Instant) {
        if success {
            self.tick.success(latency);
            if self.breaker.is_quiet() {
                return;
            }
        } else {
            self.tick.failure();
        }
        let mut live = self.live.lock();
        let failures_before = live.breaker.failures();
        let was_half_open = matches!(live.breaker.state(), breaker::State::HalfOpen { .. });
        let transition = if success {
            live.breaker.on_success()
        } else {
            live.last_error = Some("request failed".into());
            live.breaker.on_failure(now)
        };
        match transition {
            Some(breaker::Transition::Opened(cooldown)) => {
                // Out: a ramp in progress ends here, and the trial that closes the breaker
                // starts a new one.
                live.measured.leave();
                if was_half_open {
                    log::warn!(
                        "backend {}: breaker open for {cooldown:?}: the trial request failed",
                        self.name
                    );
                } else {
                    log::warn!(
                        "backend {}: breaker open for {cooldown:?}: {} consecutive failures",
                        self.name,
                        failures_before + 1
                    );
                }
            }
            Some(breaker::Transition::Closed) => {
                live.measured.join(now);
                live.measured.forget_failures();
                log::info!(
                    "backend {}: breaker closed: trial request succeeded",
                    self.name
                );
            }
            Some(breaker::Transition::HalfOpened) | None => {}
        }
        self.breaker.update(&live.breaker);
    }

    /// Records one health check result.
    pub fn record_check(&self, outcome: &health::Outcome, now: Instant) {
        let mut live = self.live.lock();
        let passed = matches!(outcome, health::Outcome::Passed(_));
        if let health::Outcome::Failed(reason) = outcome {
            live.last_error = Some(format!("health check: {reason}"));
        }
        match live.health.observe(passed) {
            Some(health::Transition::Down) => {
                self.healthy.store(false, Relaxed);
                // Out: a ramp in progress ends here; coming back starts a new one.
                live.measured.leave();
                log::warn!(
                    "backend {}: unhealthy ({})",
                    self.name,
                    live.last_error.as_deref().unwrap_or("health check failed")
                );
            }
            Some(health::Transition::Up) => {
                self.healthy.store(true, Relaxed);
                // Fresh evidence that the backend is back: forget the breaker's backoff and
                // the old averages, and ramp it up.
                live.breaker.reset();
                self.breaker.update(&live.breaker);
                live.measured.restart(now);
                self.tick.take();
                live.last_error = None;
                log::info!("backend {}: healthy again, slow start begins", self.name);
            }
            None => {}
        }
    }

    /// Advances time: an open breaker whose cooldown is over turns half-open.
    pub fn tick(&self, now: Instant) {
        let mut live = self.live.lock();
        if let Some(breaker::Transition::HalfOpened) = live.breaker.tick(now) {
            log::info!(
                "backend {}: breaker half-open, admitting one trial request",
                self.name
            );
        }
        self.breaker.update(&live.breaker);
    }

    /// Starts slow start now (a backend added by a reload).
    pub fn join(&self, now: Instant) {
        self.live.lock().measured.join(now);
    }

    /// Applies new breaker and health settings (reload), keeping state.
    pub fn set_policy(&self, breaker: &BreakerConfig, health: &HealthConfig, weight: u32) {
        self.weight.store(weight, Relaxed);
        let mut live = self.live.lock();
        live.breaker.set_config(breaker.clone());
        live.health.set_thresholds(health.rise, health.fall);
    }

    /// Folds the last tick's outcomes into the averages (see [`Measurements::fold`]). The
    /// maintenance thread calls this once per tick.
    pub fn fold_tick(&self) {
        let tick = self.tick.take();
        // An idle backend's tick has nothing to fold: no need for the lock.
        if !tick.is_empty() {
            self.live.lock().measured.fold(tick);
        }
    }

    /// The inputs of the weight formula now.
    pub fn weight_inputs(&self, now: Instant, slow_start: Duration) -> Inputs {
        self.live
            .lock()
            .measured
            .inputs(self.weight(), now, slow_start)
    }

    /// True when the backend can take traffic (healthy, breaker not open).
    pub fn is_available(&self) -> bool {
        self.is_healthy() && !self.breaker.is_open()
    }

    /// Why the backend cannot take a request at `now`, if it cannot: for an explanation, after
    /// [`Backend::admit`] said no. Takes the backend's lock, so the hot path never calls it.
    pub fn why_unavailable(&self, now: Instant) -> Option<Unavailable> {
        if !self.is_healthy() {
            return Some(Unavailable::Unhealthy);
        }
        match self.live.lock().breaker.state() {
            breaker::State::Closed => None,
            breaker::State::Open { until } => Some(Unavailable::BreakerOpen {
                left: until.saturating_duration_since(now),
            }),
            breaker::State::HalfOpen { .. } => Some(Unavailable::TrialTaken),
        }
    }

    /// A consistent view for status and metrics.
    pub fn snapshot(&self, now: Instant, slow_start: Duration) -> Snapshot {
        let inputs = self.weight_inputs(now, slow_start);
        let live = self.live.lock();
        let breaker = live.breaker.state().name();
        let healthy = live.health.is_healthy();
        let state = if !healthy {
            "unhealthy"
        } else if breaker != "closed" {
            breaker
        } else if inputs.since_join.is_some() {
            "slow-start"
        } else {
            "healthy"
        };
        Snapshot {
            id: self.id,
            name: self.name.clone(),
            url: self.url.clone(),
            state,
            healthy,
            breaker,
            weight: self.weight(),
            effective_weight: f64::from(self.effective_weight()) / f64::from(weights::SCALE),
            // Before the first tick has folded them in, show the samples taken so far.
            latency_ms: live
                .measured
                .latency_ms()
                .or_else(|| self.tick.mean_latency_ms()),
            failure_rate: live.measured.failure_rate(),
            in_flight: self.stats.in_flight.load(Relaxed),
            requests: self.stats.requests.load(Relaxed),
            failures: self.stats.failures.load(Relaxed),
            bytes_out: self.stats.bytes_out.load(Relaxed),
            tunnels: self.stats.tunnels.load(Relaxed),
            last_error: live.last_error.clone(),
        }
    }
}

/// Why a backend could not take a request ([`Backend::why_unavailable`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// Its health checks fail.
    Unhealthy,
    /// Its breaker is open for `left` more.
    BreakerOpen {
        /// Time until the breaker turns half-open.
        left: Duration,
    },
    /// Its breaker is half-open and the one trial request is already in flight.
    TrialTaken,
}

/// The effective weight and its factors as [`Backend`] keeps them.
fn pack(w: u32, factors: Factors) -> u64 {
    u64::from(w) | u64::from(factors.pack()) << 32
}

/// Keeps a backend's in-flight gauge up while a request is being forwarded. It lives beside the
/// counter it keeps: [`Backend::begin`] makes it.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> Backend {
        let c = BackendConfig::parse("http://a:1", 2).unwrap();
        Backend::new(0, &c)
    }

    #[test]
    fn breaker_opening_takes_it_out_and_trial_brings_it_back() {
        let b = backend();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(b.admit());
            b.record(false, Duration::from_millis(1), t0);
        }
        assert!(!b.admit() && !b.is_available());
        b.tick(t0 + Duration::from_secs(10));
        assert!(b.admit(), "half-open trial");
        assert!(!b.admit(), "one trial only");
        b.record(true, Duration::from_millis(1), t0 + Duration::from_secs(10));
        assert!(b.admit() && b.admit());
        let s = b.snapshot(t0 + Duration::from_secs(11), Duration::from_secs(10));
        assert_eq!(s.state, "slow-start");
    }

    #[test]
    fn weight_changes_that_matter_are_logged_with_their_reasons() {
        use crate::clock::{Clock, ManualClock};
        let b = backend();
        let clock = ManualClock::new();
        let ramp = Duration::from_secs(5);
        // One maintenance tick: fold the samples, weigh against a fastest backend of 2 ms.
        let tick = |latency_ms: Option<u64>| {
            clock.advance(Duration::from_millis(100));
            if let Some(ms) = latency_ms {
                b.record(true, Duration::from_millis(ms), clock.now());
            }
            b.fold_tick();
            let inputs = b.weight_inputs(clock.now(), ramp);
            b.apply_weighing(&weights::weigh(&inputs, Some(2.0), ramp), clock.now())
        };
        assert_eq!(tick(Some(2)), None, "full weight: nothing to say");
        // Slowing to 60 ms: the average climbs over a few ticks (2 -> 19.4 -> 31.6 ...). The
        // first step is logged at once, the rest a second later, where the weight has settled.
        let lines: Vec<String> = (0..30).filter_map(|_| tick(Some(60))).collect();
        assert_eq!(
            lines,
            [
                "backend a:1: effective weight 100% -> 52% of weight 2: latency 19.4 ms over the \
                 14.0 ms band (x0.52)",
                "backend a:1: effective weight 52% -> 6% of weight 2: latency 58.9 ms over the \
                 14.0 ms band (x0.06)"
            ]
        );
        // Down and back up: the ramp begins and ends, each said once.
        let fail = health::Outcome::Failed("refused".into());
        for _ in 0..3 {
            b.record_check(&fail, clock.now());
        }
        for _ in 0..2 {
            b.record_check(&health::Outcome::Passed(200), clock.now());
        }
        assert_eq!(
            tick(None).as_deref(),
            Some("backend a:1: slow start: effective weight 10% of weight 2, full in 5s")
        );
        let ramp_lines: Vec<String> = (0..60).filter_map(|_| tick(None)).collect();
        assert_eq!(
            ramp_lines.last().map(String::as_str),
            Some("backend a:1: slow start over: effective weight 100% of weight 2")
        );
        // A 5 s ramp climbs 18 points a second: a line a second at most.
        assert!((4..=6).contains(&ramp_lines.len()), "{ramp_lines:#?}");
    }

    /// One maintenance tick of `b` on `clock`, a 5 s ramp and no other backend: breaker
    /// timeouts, the tick's samples folded, the weight; returns the line logged, if any.
    fn tick(b: &Backend, clock: &crate::clock::ManualClock) -> Option<String> {
        use crate::clock::Clock;
        let ramp = Duration::from_secs(5);
        clock.advance(Duration::from_millis(100));
        b.tick(clock.now());
        b.fold_tick();
        let inputs = b.weight_inputs(clock.now(), ramp);
        b.apply_weighing(&weights::weigh(&inputs, None, ramp), clock.now())
    }

    /// A backend that joins (a reload added it while its process does not run yet), says so,
    /// and fails its first 5 requests: its breaker opens.
    fn joined_and_failing() -> (Backend, crate::clock::ManualClock) {
        use crate::clock::{Clock, ManualClock};
        let b = backend();
        let clock = ManualClock::new();
        b.join(clock.now());
        assert_eq!(
            tick(&b, &clock).as_deref(),
            Some("backend a:1: slow start: effective weight 10% of weight 2, full in 5s")
        );
        for _ in 0..5 {
            b.record(false, Duration::ZERO, clock.now());
        }
        assert!(!b.is_available());
        (b, clock)
    }

    #[test]
    fn a_backend_that_goes_out_while_ramping_says_nothing_until_it_is_back() {
        use crate::clock::Clock;
        let (b, clock) = joined_and_failing();
        let tick = || tick(&b, &clock);
        // The health checks take it out too.
        let fail = health::Outcome::Failed("refused".into());
        for _ in 0..3 {
            b.record_check(&fail, clock.now());
        }
        assert!(!b.is_available());
        // Out for longer than the ramp: no line about a ramp or a weight nobody is sent to (it
        // used to say `slow start over: effective weight 5% ...: failure rate 100%` here).
        let while_out: Vec<String> = (0..100).filter_map(|_| tick()).collect();
        assert_eq!(while_out, Vec::<String>::new());
        // Back: the ramp begins again, and its first line says so.
        for _ in 0..2 {
            b.record_check(&health::Outcome::Passed(200), clock.now());
        }
        let back: Vec<String> = (0..60).filter_map(|_| tick()).collect();
        assert_eq!(
            back.first().map(String::as_str),
            Some("backend a:1: slow start: effective weight 10% of weight 2, full in 5s")
        );
        assert_eq!(
            back.last().map(String::as_str),
            Some("backend a:1: slow start over: effective weight 100% of weight 2")
        );
    }

    #[test]
    fn a_breaker_that_opens_mid_ramp_ends_the_ramp_quietly() {
        use crate::clock::Clock;
        let (b, clock) = joined_and_failing();
        let tick = || tick(&b, &clock);
        // Open for 10 s, longer than the ramp: nothing is said about a backend that is out.
        let while_open: Vec<String> = (0..99).filter_map(|_| tick()).collect();
        assert_eq!(while_open, Vec::<String>::new());
        // Half-open after 10 s: the trial succeeds, the breaker closes, and a new ramp begins.
        let half_open: Vec<String> = (0..2).filter_map(|_| tick()).collect();
        assert!(b.admit(), "the trial");
        b.record(true, Duration::from_millis(1), clock.now());
        let lines: Vec<String> = half_open.into_iter().chain(tick()).collect();
        assert_eq!(
            lines.last().map(String::as_str),
            Some("backend a:1: slow start: effective weight 10% of weight 2, full in 5s"),
            "{lines:#?}"
        );
        assert!(
            lines.iter().all(|l| !l.contains("slow start over")),
            "{lines:#?}"
        );
    }

    #[test]
    fn health_down_and_up_resets_breaker_and_starts_slow_start() {
        let b = backend();
        let t0 = Instant::now();
        let fail = health::Outcome::Failed("refused".into());
        for _ in 0..5 {
            b.record(false, Duration::ZERO, t0);
        }
        for _ in 0..3 {
            b.record_check(&fail, t0);
        }
        assert!(!b.is_healthy() && !b.admit());
        let s = b.snapshot(t0, Duration::from_secs(10));
        assert_eq!((s.state, s.breaker), ("unhealthy", "open"));
        assert_eq!(s.last_error.as_deref(), Some("health check: refused"));
        b.record_check(&health::Outcome::Passed(200), t0);
        b.record_check(&health::Outcome::Passed(200), t0);
        assert!(b.admit(), "healthy again and breaker reset");
        let i = b.weight_inputs(t0 + Duration::from_secs(5), Duration::from_secs(10));
        assert_eq!(i.since_join, Some(Duration::from_secs(5)));
        assert_eq!(
            weights::effective_weight(&i, None, Duration::from_secs(10)),
            100,
            "weight 2 at half ramp"
        );
    }
}

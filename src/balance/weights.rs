//! Dynamic weights: the effective weight the smooth WRR uses, derived from the configured weight
//! and what the balancer measures.
//!
//! ```text
//! effective = weight × SCALE × max(MIN_FACTOR, latency × failures × slow_start)
//!
//! latency    = 1                      when ewma ≤ band,   band = 2 × fastest + 10 ms
//!            = (band / ewma)²         otherwise
//! failures   = (1 − failure_rate)²    failure_rate: EWMA of each tick's share of failed attempts
//! slow_start = max(0.1, time since (re)joining / slow_start)   (1 when not ramping)
//! ```
//!
//! - Backends that perform alike sit inside the band, so every factor is exactly 1 and they keep
//!   exactly their configured ratios: scaling all weights by `SCALE` leaves nginx's sequence
//!   unchanged.
//! - The band is relative to the fastest available backend (so a pool that slows down as a whole
//!   keeps its ratios) plus 10 ms (so sub-millisecond jitter is not mistaken for slowness).
//! - Squaring makes a slow backend lose most of its share quickly; `MIN_FACTOR` keeps it from
//!   reaching zero while it is available, so it still gets a trickle of requests and its
//!   recovery is measured: its share comes back as soon as its EWMA re-enters the band.
//!
//! Worked example: three backends of weight 1 with latency EWMAs of 2 ms, 3 ms and 52 ms, no
//! failures. The fastest is 2 ms, so the band is 14 ms: the first two keep 1 × 100 = 100; the
//! third gets (14 / 52)² = 0.072 → 7. Its share falls from 33 % to 7 / 207 = 3.4 %. If it also
//! failed a quarter of its requests, 0.072 × (1 − 0.25)² = 0.041 is under the 5 % floor, so it
//! keeps 5. A backend that has
//! just come back with slow start 10 s has 25 after 2.5 s, and its full 100 after 10 s.
//!
//! Where the inputs come from: workers add each attempt's outcome to the backend's
//! [`TickSamples`] (atomics, no lock); once per tick the maintenance thread folds them into the
//! backend's [`Measurements`] (the two EWMAs and when slow start began) and computes the
//! effective weight with [`weigh`].
//!
//! What the log says: a change that matters, at most once a second per backend ([`WeightLog`]),
//! with the factors that make it:
//!
//! ```text
//! backend localhost:8082: effective weight 100% -> 7% of weight 1: latency 52.0 ms over the 14.0 ms band (x0.07)
//! backend localhost:8082: slow start: effective weight 10% of weight 1, full in 5s
//! backend localhost:8082: slow start over: effective weight 100% of weight 1
//! ```

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Effective weights are the configured weight times this, so factors below 1 stay whole numbers.
pub const SCALE: u32 = 100;

/// The smallest share of its weight an available backend keeps. 5 %.
pub const MIN_FACTOR: f64 = 0.05;

/// Slow start begins at this fraction of the weight. 10 %.
pub const SLOW_START_FLOOR: f64 = 0.1;

/// Latency within `RELATIVE_BAND × fastest + ABSOLUTE_BAND_MS` counts as "alike".
pub const RELATIVE_BAND: f64 = 2.0;

/// See [`RELATIVE_BAND`]. 10 ms.
pub const ABSOLUTE_BAND_MS: f64 = 10.0;

/// Smoothing of the latency EWMA: each tick's mean moves it this fraction of the way.
pub const LATENCY_ALPHA: f64 = 0.3;

/// Smoothing of the failure-rate EWMA: each tick's failure share moves it this fraction.
pub const FAILURE_ALPHA: f64 = 0.2;

/// An exponentially weighted moving average.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ewma {
    value: Option<f64>,
}

impl Ewma {
    /// Adds a sample; the first sample is taken as it is.
    pub fn add(&mut self, sample: f64, alpha: f64) {
        self.value = Some(match self.value {
            None => sample,
            Some(v) => v + alpha * (sample - v),
        });
    }

    /// The average, if any sample was added.
    pub fn get(&self) -> Option<f64> {
        self.value
    }

    /// An average that starts at `value`, as if it had been measured.
    pub fn at(value: f64) -> Ewma {
        Ewma { value: Some(value) }
    }
}

/// What the formula needs about one backend.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Inputs {
    /// Configured weight.
    pub weight: u32,
    /// Latency EWMA in milliseconds, if measured.
    pub latency_ms: Option<f64>,
    /// Failure-rate EWMA, 0..=1.
    pub failure_rate: f64,
    /// Time since the backend (re)joined, if it is ramping up.
    pub since_join: Option<Duration>,
}

/// The latency factor for `latency_ms` when the fastest available backend has `fastest_ms`.
pub fn latency_factor(latency_ms: Option<f64>, fastest_ms: Option<f64>) -> f64 {
    let (Some(l), Some(f)) = (latency_ms, fastest_ms) else {
        return 1.0;
    };
    let band = RELATIVE_BAND * f + ABSOLUTE_BAND_MS;
    if l <= band {
        1.0
    } else {
        (band / l).powi(2)
    }
}

/// The slow-start factor `since_join` into a ramp of `slow_start`.
pub fn slow_start_factor(since_join: Option<Duration>, slow_start: Duration) -> f64 {
    match since_join {
        Some(t) if t < slow_start => {
            (t.as_secs_f64() / slow_start.as_secs_f64()).max(SLOW_START_FLOOR)
        }
        _ => 1.0,
    }
}

/// The three factors of the formula for one backend: kept beside its effective weight so that
/// an explanation (`X-Balancer-Explain`) can say why that weight differs from the configured one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Factors {
    /// `(band / ewma)²`, or 1 inside the band.
    pub latency: f64,
    /// `(1 − failure_rate)²`.
    pub failures: f64,
    /// The slow-start ramp, 1 when not ramping.
    pub slow_start: f64,
}

impl Factors {
    /// Every factor 1: the backend gets its configured weight.
    pub const NONE: Factors = Factors {
        latency: 1.0,
        failures: 1.0,
        slow_start: 1.0,
    };

    /// The factors of `inputs` (see the module documentation).
    pub fn of(inputs: &Inputs, fastest_ms: Option<f64>, slow_start: Duration) -> Factors {
        Factors {
            latency: latency_factor(inputs.latency_ms, fastest_ms),
            failures: (1.0 - inputs.failure_rate.clamp(0.0, 1.0)).powi(2),
            slow_start: slow_start_factor(inputs.since_join, slow_start),
        }
    }

    /// Their product before the floor: below [`MIN_FACTOR`], the floor decides.
    pub fn product(&self) -> f64 {
        self.latency * self.failures * self.slow_start
    }

    /// The effective weight for a configured `weight`: `weight × SCALE × max(MIN_FACTOR,
    /// product)`, never below 1.
    pub fn apply(&self, weight: u32) -> u32 {
        let full = f64::from(weight) * f64::from(SCALE);
        ((full * self.product().max(MIN_FACTOR)).round() as u32).max(1)
    }

    /// The three factors in per mille (0..=1000), 10 bits each, so that they fit beside the
    /// weight in one atomic (see `Backend`).
    pub fn pack(&self) -> u32 {
        let per_mille = |f: f64| (f.clamp(0.0, 1.0) * 1000.0).round() as u32;
        per_mille(self.latency) | per_mille(self.failures) << 10 | per_mille(self.slow_start) << 20
    }

    /// What [`Factors::pack`] packed, to the nearest per mille.
    pub fn unpack(bits: u32) -> Factors {
        let factor = |shift: u32| f64::from((bits >> shift) & 0x3ff) / 1000.0;
        Factors {
            latency: factor(0),
            failures: factor(10),
            slow_start: factor(20),
        }
    }
}

/// The effective weight of a backend (see the module documentation). Never below 1.
pub fn effective_weight(inputs: &Inputs, fastest_ms: Option<f64>, slow_start: Duration) -> u32 {
    weigh(inputs, fastest_ms, slow_start).effective
}

/// The formula applied to one backend, with what went into it: the effective weight, and what a
/// log line needs to say why it is what it is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Weighing {
    /// The inputs.
    pub inputs: Inputs,
    /// The latency band, `RELATIVE_BAND × fastest + ABSOLUTE_BAND_MS`, when there is a fastest
    /// backend to measure against.
    pub band_ms: Option<f64>,
    /// The slow-start ramp's length.
    pub slow_start: Duration,
    /// The three factors.
    pub factors: Factors,
    /// The effective weight, in units of [`SCALE`].
    pub effective: u32,
}

/// Applies the formula to `inputs`: see the module documentation.
pub fn weigh(inputs: &Inputs, fastest_ms: Option<f64>, slow_start: Duration) -> Weighing {
    let factors = Factors::of(inputs, fastest_ms, slow_start);
    Weighing {
        inputs: *inputs,
        band_ms: fastest_ms.map(|f| RELATIVE_BAND * f + ABSOLUTE_BAND_MS),
        slow_start,
        factors,
        effective: factors.apply(inputs.weight),
    }
}

impl Weighing {
    /// The effective weight as a share of the configured one: 1.0 at full weight.
    pub fn share(&self) -> f64 {
        f64::from(self.effective) / (f64::from(self.inputs.weight.max(1)) * f64::from(SCALE))
    }

    /// True while slow start ramps the backend up.
    pub fn ramping(&self) -> bool {
        self.inputs.since_join.is_some()
    }

    /// Why the weight is below full, factor by factor (the ones below 1 only): `latency 52.0 ms
    /// over the 14.0 ms band (x0.07)`. Empty at full weight.
    pub fn reasons(&self) -> String {
        let mut reasons = Vec::new();
        if self.factors.latency < 1.0 {
            let latency = self.inputs.latency_ms.unwrap_or_default();
            let band = self.band_ms.unwrap_or_default();
            reasons.push(format!(
                "latency {latency:.1} ms over the {band:.1} ms band (x{:.2})",
                self.factors.latency
            ));
        }
        if self.factors.failures < 1.0 {
            reasons.push(format!(
                "failure rate {:.0}% (x{:.2})",
                self.inputs.failure_rate * 100.0,
                self.factors.failures
            ));
        }
        if self.factors.slow_start < 1.0 {
            let since = self.inputs.since_join.unwrap_or_default();
            reasons.push(format!(
                "slow start {:.1}s of {:.1}s (x{:.2})",
                since.as_secs_f64(),
                self.slow_start.as_secs_f64(),
                self.factors.slow_start
            ));
        }
        if self.factors.product() < MIN_FACTOR {
            reasons.push(format!("kept at the {:.0}% floor", MIN_FACTOR * 100.0));
        }
        reasons.join(", ")
    }
}

/// A change of the effective weight worth a log line: one step is this share of the configured
/// weight. 10 %.
pub const LOG_STEP: f64 = 0.1;

/// At most one line about a backend's weight this often, the beginning and end of slow start
/// excepted. 1 s.
pub const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Which changes of one backend's effective weight are worth a log line. The weight is
/// recomputed 10 times a second and moves a little almost every time; a line per change would
/// drown the log, and no line at all would hide the dynamic weights from a learner watching
/// it. So a line is written when:
///
/// - slow start begins or ends;
/// - the share (effective / configured weight) has moved a [`LOG_STEP`] or more from the one
///   last logged, or has come back to full or down to the floor, and the last line about this
///   backend is [`LOG_INTERVAL`] old.
///
/// Measured from the share last logged, not from fixed steps, so a weight that jitters around
/// 50 % writes nothing; a change held back by the interval is logged on a later tick.
///
/// Nothing is said while the backend is out (unhealthy, breaker open): no request is sent to
/// it, so its weight is nobody's news, and a line such as `slow start over` would read as if it
/// were back. What changed while it was out is said once it is back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WeightLog {
    /// The share last logged; 1.0 (full) before any line.
    logged: f64,
    /// When that line was written.
    at: Option<Instant>,
    /// Slow start was ramping at the last look.
    ramping: bool,
}

impl Default for WeightLog {
    fn default() -> Self {
        WeightLog {
            logged: 1.0,
            at: None,
            ramping: false,
        }
    }
}

/// What a [`WeightLog`] finds worth a line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WeightNews {
    /// Slow start began.
    RampBegan,
    /// Slow start ended.
    RampEnded,
    /// The share moved from the one last logged, `from`.
    Moved {
        /// The share last logged.
        from: f64,
    },
}

impl WeightLog {
    /// Looks at this tick's `weighing` at `now`, of a backend that can take requests
    /// (`available`) or not: the news worth a line, if any.
    pub fn observe(
        &mut self,
        weighing: &Weighing,
        available: bool,
        now: Instant,
    ) -> Option<WeightNews> {
        let share = weighing.share();
        let ramping = weighing.ramping();
        let news = if !available {
            // Nobody's news; `ramping` is still followed below, so that a backend that comes
            // back is compared with what it is then, not with a ramp it left.
            None
        } else if ramping != self.ramping {
            Some(if ramping {
                WeightNews::RampBegan
            } else {
                WeightNews::RampEnded
            })
        } else {
            let due = self
                .at
                .is_none_or(|at| now.saturating_duration_since(at) >= LOG_INTERVAL);
            // A hair under a step still counts: shares are ratios of whole numbers.
            let stepped = (share - self.logged).abs() >= LOG_STEP - 1e-9;
            let at_bound = share != self.logged && (share >= 1.0 || share <= MIN_FACTOR);
            (due && (stepped || at_bound)).then_some(WeightNews::Moved { from: self.logged })
        };
        self.ramping = ramping;
        if news.is_some() {
            self.logged = share;
            self.at = Some(now);
        }
        news
    }
}

/// One backend's outcomes during the current tick, summed without a lock by the workers.
#[derive(Debug, Default)]
pub struct TickSamples {
    /// Sum of successful attempts' latencies, in microseconds.
    latency_us: AtomicU64,
    /// Successful attempts.
    ok: AtomicU64,
    /// Failed attempts.
    failed: AtomicU64,
}

/// One tick's outcomes, as [`TickSamples::take`] hands them over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tick {
    /// Sum of successful attempts' latencies, in microseconds.
    pub latency_us: u64,
    /// Successful attempts.
    pub ok: u64,
    /// Failed attempts.
    pub failed: u64,
}

impl Tick {
    /// True when the tick saw no attempt.
    pub fn is_empty(&self) -> bool {
        self.ok + self.failed == 0
    }
}

impl TickSamples {
    /// Counts a successful attempt whose answer head came after `latency`.
    pub fn success(&self, latency: Duration) {
        let us = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        self.latency_us.fetch_add(us, Relaxed);
        self.ok.fetch_add(1, Relaxed);
    }

    /// Counts a failed attempt.
    pub fn failure(&self) {
        self.failed.fetch_add(1, Relaxed);
    }

    /// Takes the tick's outcomes and starts a new tick.
    pub fn take(&self) -> Tick {
        Tick {
            latency_us: self.latency_us.swap(0, Relaxed),
            ok: self.ok.swap(0, Relaxed),
            failed: self.failed.swap(0, Relaxed),
        }
    }

    /// The mean latency of this tick's successes so far, in ms: what status shows before a tick
    /// has been folded into the average.
    pub fn mean_latency_ms(&self) -> Option<f64> {
        let ok = self.ok.load(Relaxed);
        let sum = self.latency_us.load(Relaxed);
        (ok > 0).then(|| sum as f64 / 1000.0 / ok as f64)
    }
}

/// What the formula knows about one backend between ticks: its latency and failure-rate averages,
/// and when its slow start began. Starts unmeasured and not ramping.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Measurements {
    latency: Ewma,
    failure_rate: Ewma,
    /// When the backend last (re)joined, while slow start may still be ramping it.
    joined: Option<Instant>,
}

impl Measurements {
    /// Folds one tick's outcomes into the averages, each as one sample: the mean latency of its
    /// successes (the first one taken as it is) and the share of its attempts that failed (from
    /// 0, the failure rate of a backend not yet measured). Averaging per tick first keeps one
    /// stall (a descheduled worker, a GC pause) among many fast answers from moving the average
    /// much, so backends that perform alike stay alike; a backend that is really slower moves it
    /// tick after tick. A tick without attempts changes nothing.
    pub fn fold(&mut self, tick: Tick) {
        if tick.is_empty() {
            return;
        }
        if tick.ok > 0 {
            let mean_ms = tick.latency_us as f64 / 1000.0 / tick.ok as f64;
            self.latency.add(mean_ms, LATENCY_ALPHA);
        }
        // The failure average starts at 0, where `failure_rate` already puts it: a backend is
        // presumed well until it fails, as health checks presume it healthy. Taken as it is, a
        // first tick of failures would be a failure rate of 100 % and the 5 % floor, which at
        // 1 request in 41 takes a minute to leave, and before the breaker has seen enough
        // failures to open.
        let failed = tick.failed as f64 / (tick.ok + tick.failed) as f64;
        if self.failure_rate.get().is_none() {
            self.failure_rate = Ewma::at(0.0);
        }
        self.failure_rate.add(failed, FAILURE_ALPHA);
    }

    /// The inputs of the formula at `now` for a backend of configured `weight`. A ramp that has
    /// lasted `slow_start` is over and is forgotten.
    pub fn inputs(&mut self, weight: u32, now: Instant, slow_start: Duration) -> Inputs {
        let since_join = self.joined.map(|j| now.saturating_duration_since(j));
        if since_join.is_some_and(|s| s >= slow_start) {
            self.joined = None;
        }
        Inputs {
            weight,
            latency_ms: self.latency.get(),
            failure_rate: self.failure_rate(),
            since_join: since_join.filter(|s| *s < slow_start),
        }
    }

    /// Starts slow start at `now`.
    pub fn join(&mut self, now: Instant) {
        self.joined = Some(now);
    }

    /// Ends slow start early: the backend is out (health checks fail, its breaker opened).
    /// Whatever brings it back starts a new ramp (see `Backend`), so a ramp never runs, nor
    /// ends, while nobody is sent to the backend.
    pub fn leave(&mut self) {
        self.joined = None;
    }

    /// Forgets the failure average: the failures it counted are over (a breaker closed again).
    pub fn forget_failures(&mut self) {
        self.failure_rate = Ewma::default();
    }

    /// Forgets both averages and starts slow start at `now`: the backend is back after being
    /// down, and what was measured before describes a backend that no longer is.
    pub fn restart(&mut self, now: Instant) {
        *self = Measurements {
            joined: Some(now),
            ..Measurements::default()
        };
    }

    /// The latency average in ms, if measured.
    pub fn latency_ms(&self) -> Option<f64> {
        self.latency.get()
    }

    /// The failure-rate average, 0..=1; 0 until measured.
    pub fn failure_rate(&self) -> f64 {
        self.failure_rate.get().unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(latency: f64, failures: f64) -> Inputs {
        Inputs {
            weight: 1,
            latency_ms: Some(latency),
            failure_rate: failures,
            since_join: None,
        }
    }

    const RAMP: Duration = Duration::from_secs(10);

    #[test]
    fn the_worked_example() {
        let fastest = Some(2.0);
        assert_eq!(effective_weight(&inputs(2.0, 0.0), fastest, RAMP), 100);
        assert_eq!(effective_weight(&inputs(3.0, 0.0), fastest, RAMP), 100);
        assert_eq!(effective_weight(&inputs(52.0, 0.0), fastest, RAMP), 7);
        assert_eq!(effective_weight(&inputs(52.0, 0.25), fastest, RAMP), 5);
        assert_eq!(effective_weight(&inputs(20.0, 0.25), fastest, RAMP), 28);
        let ramping = Inputs {
            since_join: Some(Duration::from_millis(2500)),
            ..inputs(2.0, 0.0)
        };
        assert_eq!(effective_weight(&ramping, fastest, RAMP), 25);
    }

    #[test]
    fn alike_backends_keep_exact_weights() {
        for (w, l) in [(5, 0.4), (1, 0.9), (1, 6.0)] {
            let i = Inputs {
                weight: w,
                ..inputs(l, 0.0)
            };
            assert_eq!(effective_weight(&i, Some(0.4), RAMP), w * SCALE);
        }
        let unmeasured = Inputs {
            latency_ms: None,
            ..inputs(0.0, 0.0)
        };
        assert_eq!(effective_weight(&unmeasured, Some(1.0), RAMP), 100);
    }

    #[test]
    fn never_zero_while_available() {
        assert_eq!(effective_weight(&inputs(10_000.0, 1.0), Some(1.0), RAMP), 5);
        let tiny = Inputs {
            since_join: Some(Duration::ZERO),
            ..inputs(10_000.0, 1.0)
        };
        assert_eq!(effective_weight(&tiny, Some(1.0), RAMP), 5);
    }

    #[test]
    fn slow_start_ramps_linearly_from_a_floor() {
        let f = |ms| slow_start_factor(Some(Duration::from_millis(ms)), RAMP);
        assert_eq!(f(0), 0.1);
        assert_eq!(f(5000), 0.5);
        assert_eq!(f(10_000), 1.0);
        assert_eq!(slow_start_factor(Some(Duration::ZERO), Duration::ZERO), 1.0);
        assert_eq!(slow_start_factor(None, RAMP), 1.0);
    }

    #[test]
    fn a_tick_is_one_sample_and_a_restart_ramps() {
        let samples = TickSamples::default();
        let mut m = Measurements::default();
        m.fold(samples.take());
        assert_eq!(m, Measurements::default(), "an empty tick changes nothing");
        samples.success(Duration::from_millis(2));
        samples.success(Duration::from_millis(4));
        samples.failure();
        samples.failure();
        assert_eq!(samples.mean_latency_ms(), Some(3.0));
        m.fold(samples.take());
        // Half of the tick failed: the failure average moves from 0 a fifth of the way there.
        assert_eq!((m.latency_ms(), m.failure_rate()), (Some(3.0), 0.1));
        assert!(samples.take().is_empty());
        let t0 = Instant::now();
        m.restart(t0);
        let half = m.inputs(2, t0 + RAMP / 2, RAMP);
        let expected = Inputs {
            weight: 2,
            latency_ms: None,
            failure_rate: 0.0,
            since_join: Some(RAMP / 2),
        };
        assert_eq!(half, expected);
        assert_eq!(m.inputs(2, t0 + RAMP, RAMP).since_join, None);
        assert_eq!(
            m.inputs(2, t0, RAMP).since_join,
            None,
            "a ramp over is over"
        );
    }

    #[test]
    fn a_first_tick_of_failures_moves_the_failure_rate_a_fifth_of_the_way() {
        // A backend failing from its first request (or its first after coming back) keeps 64 %
        // of its weight after one tick, so it is still picked and its breaker sees the failures;
        // taken as it was, that tick said 100 % and kept it at the floor.
        let samples = TickSamples::default();
        let mut m = Measurements::default();
        samples.failure();
        m.fold(samples.take());
        assert_eq!(m.failure_rate(), 0.2);
        let now = Instant::now();
        let inputs = m.inputs(1, now, RAMP);
        assert_eq!(effective_weight(&inputs, None, RAMP), 64);
        m.forget_failures();
        samples.failure();
        m.fold(samples.take());
        assert_eq!(
            m.failure_rate(),
            0.2,
            "after the failures are forgotten too"
        );
    }

    #[test]
    fn factors_pack_into_per_mille_and_explain_the_worked_example() {
        let f = Factors::of(&inputs(52.0, 0.25), Some(2.0), RAMP);
        assert_eq!(f.apply(1), 5, "under the floor");
        let back = Factors::unpack(f.pack());
        assert_eq!(
            (back.latency, back.failures, back.slow_start),
            (0.072, 0.563, 1.0)
        );
        assert_eq!(Factors::unpack(Factors::NONE.pack()), Factors::NONE);
    }

    #[test]
    fn weighing_says_why() {
        let slow = weigh(&inputs(52.0, 0.25), Some(2.0), RAMP);
        assert_eq!((slow.effective, slow.share()), (5, 0.05));
        assert_eq!(
            slow.reasons(),
            "latency 52.0 ms over the 14.0 ms band (x0.07), failure rate 25% (x0.56), \
             kept at the 5% floor"
        );
        let ramping = Inputs {
            since_join: Some(Duration::from_millis(2500)),
            ..inputs(2.0, 0.0)
        };
        let w = weigh(&ramping, Some(2.0), RAMP);
        assert!(w.ramping());
        assert_eq!(w.reasons(), "slow start 2.5s of 10.0s (x0.25)");
        assert_eq!(weigh(&inputs(2.0, 0.0), Some(2.0), RAMP).reasons(), "");
    }

    /// A weighing of weight 1 at `latency` ms against a fastest of 2 ms (band 14 ms), ramping
    /// `since_join` into [`RAMP`] when given.
    fn at(latency: f64, since_join: Option<Duration>) -> Weighing {
        let i = Inputs {
            since_join,
            ..inputs(latency, 0.0)
        };
        weigh(&i, Some(2.0), RAMP)
    }

    #[test]
    fn the_weight_log_keeps_to_steps_and_a_line_a_second() {
        use crate::clock::{Clock, ManualClock};
        let clock = ManualClock::new();
        let tick = Duration::from_millis(100);
        let mut log = WeightLog::default();
        let mut look = |w: Weighing| {
            clock.advance(tick);
            log.observe(&w, true, clock.now())
        };
        // Alike backends at full weight: nothing to say, tick after tick.
        for _ in 0..20 {
            assert_eq!(look(at(2.0, None)), None);
        }
        // 20 ms: (14/20)² = 0.49, a move of 51 points: one line.
        assert_eq!(look(at(20.0, None)), Some(WeightNews::Moved { from: 1.0 }));
        // Within a step of the 49 % logged (40 % .. 58 %): nothing, however long.
        for latency in [21.0, 19.0, 22.0, 18.5, 20.0].repeat(4) {
            assert_eq!(look(at(latency, None)), None, "{latency}");
        }
        // 52 ms (7 %) is a step away; logged at once, the last line being 2 s old.
        assert_eq!(look(at(52.0, None)), Some(WeightNews::Moved { from: 0.49 }));
        // Back to full at once: held back until a second has passed since that line...
        for _ in 0..9 {
            assert_eq!(look(at(2.0, None)), None);
        }
        // ...then logged.
        assert_eq!(look(at(2.0, None)), Some(WeightNews::Moved { from: 0.07 }));

        // Slow start: its beginning and end are logged whatever the interval; the ramp's steps
        // at most once a second (a 10 s ramp climbs 10 points a second).
        assert_eq!(
            look(at(2.0, Some(Duration::ZERO))),
            Some(WeightNews::RampBegan)
        );
        let mut lines = 0;
        for t in 1..100 {
            let news = look(at(2.0, Some(Duration::from_millis(t * 100))));
            assert!(
                matches!(news, None | Some(WeightNews::Moved { .. })),
                "{news:?}"
            );
            lines += usize::from(news.is_some());
        }
        assert!((8..=10).contains(&lines), "{lines} lines in a 10 s ramp");
        assert_eq!(look(at(2.0, None)), Some(WeightNews::RampEnded));
        assert_eq!(look(at(2.0, None)), None);
    }

    #[test]
    fn ewma() {
        let mut e = Ewma::default();
        assert_eq!(e.get(), None);
        e.add(10.0, 0.3);
        assert_eq!(e.get(), Some(10.0));
        e.add(20.0, 0.5);
        assert_eq!(e.get(), Some(15.0));
    }
}

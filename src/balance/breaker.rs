//! The circuit breaker of one backend, fed by live traffic.
//!
//! ```text
//!            N consecutive failures                  cooldown over (maintenance thread)
//!   Closed ─────────────────────────▶ Open ───────────────────────────────▶ HalfOpen
//!     ▲                                 ▲                                     │
//!     │          trial succeeded        │ trial failed: re-open, cooldown ×2  │
//!     └─────────────────────────────────┴─────────────────────────────────────┘
//! ```
//!
//! - **Closed**: requests flow; consecutive failures are counted and any success resets the count.
//! - **Open**: the backend gets no requests for the cooldown (default 10 s).
//! - **Half-open**: one trial request at a time is admitted. Its success closes the breaker and
//!   resets the cooldown; its failure opens it again for twice the previous cooldown, up to
//!   `max_cooldown` (default 5 min).
//!
//! Worked example, defaults (5 failures, 10 s, cap 5 min): failures at t=0..4 s open the breaker
//! at t=4 until t=14; the trial at t=14 fails, so it is open until t=34 (20 s); the next trial
//! fails too: open until t=74 (40 s); the next one succeeds: closed, and the next opening would
//! again last 10 s.
//!
//! The state machine is pure: every method takes `now`, so tests drive it with exact instants.
//! [`Mirror`] copies its state into atomics, so that a pick can read it without a lock.

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::config::BreakerConfig;

/// Where the breaker is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Requests flow.
    Closed,
    /// No requests until the instant.
    Open {
        /// When the breaker turns half-open.
        until: Instant,
    },
    /// One trial at a time; `trial` is true while one is in flight.
    HalfOpen {
        /// A trial request is in flight.
        trial: bool,
    },
}

impl State {
    /// `closed`, `open` or `half-open`, as status pages and metrics show it.
    pub fn name(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open { .. } => "open",
            State::HalfOpen { .. } => "half-open",
        }
    }
}

/// A state change, reported once so it can be logged once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Closed or half-open → open, for this long.
    Opened(Duration),
    /// Open → half-open.
    HalfOpened,
    /// Half-open → closed.
    Closed,
}

/// One backend's breaker. See the module documentation.
#[derive(Clone, Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: State,
    failures: u32,
    /// Openings since the breaker was last closed: the cooldown doubles with each.
    reopenings: u32,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Breaker {
        Breaker {
            config,
            state: State::Closed,
            failures: 0,
            reopenings: 0,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Consecutive failures counted while closed.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Replaces the settings (reload); the state is kept.
    pub fn set_config(&mut self, config: BreakerConfig) {
        self.config = config;
    }

    /// The cooldown for the next opening: `cooldown × 2^reopenings`, capped.
    fn cooldown(&self) -> Duration {
        let factor = 1u32
            .checked_shl(self.reopenings.min(31))
            .unwrap_or(u32::MAX);
        self.config
            .cooldown
            .checked_mul(factor)
            .unwrap_or(self.config.max_cooldown)
            .min(self.config.max_cooldown)
    }

    fn open(&mut self, now: Instant) -> Transition {
        let cooldown = self.cooldown();
        self.state = State::Open {
            until: now + cooldown,
        };
        self.reopenings = self.reopenings.saturating_add(1);
        self.failures = 0;
        Transition::Opened(cooldown)
    }

    /// May a request go to this backend now? In half-open this takes the single trial slot.
    pub fn admit(&mut self) -> bool {
        match self.state {
            State::Closed => true,
            State::Open { .. } => false,
            State::HalfOpen { trial: true } => false,
            State::HalfOpen { trial: false } => {
                self.state = State::HalfOpen { trial: true };
                true
            }
        }
    }

    /// Gives the half-open trial slot back without an outcome: the trial request never reached
    /// the backend (its client left first), so it proves nothing either way.
    pub fn release_trial(&mut self) {
        if self.state == (State::HalfOpen { trial: true }) {
            self.state = State::HalfOpen { trial: false };
        }
    }

    /// Records a successful request.
    pub fn on_success(&mut self) -> Option<Transition> {
        self.failures = 0;
        match self.state {
            State::HalfOpen { .. } => {
                self.state = State::Closed;
                self.reopenings = 0;
                Some(Transition::Closed)
            }
            _ => None,
        }
    }

    /// Records a failed request.
    pub fn on_failure(&mut self, now: Instant) -> Option<Transition> {
        match self.state {
            State::Closed => {
                self.failures += 1;
                (self.failures >= self.config.failures).then(|| self.open(now))
            }
            State::HalfOpen { .. } => Some(self.open(now)),
            // Requests admitted before the breaker opened may still finish and fail.
            State::Open { .. } => None,
        }
    }

    /// Advances time: an open breaker whose cooldown is over turns half-open.
    pub fn tick(&mut self, now: Instant) -> Option<Transition> {
        match self.state {
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen { trial: false };
                Some(Transition::HalfOpened)
            }
            _ => None,
        }
    }

    /// Closes the breaker and forgets its history, e.g. when health checks see the backend come
    /// back after being down. Reports `Closed` if it was not closed.
    pub fn reset(&mut self) -> Option<Transition> {
        let was_closed = self.state == State::Closed;
        self.state = State::Closed;
        self.failures = 0;
        self.reopenings = 0;
        (!was_closed).then_some(Transition::Closed)
    }
}

/// A breaker's state where a pick can read it without the lock that guards the [`Breaker`]: the
/// owner copies the breaker here after every change, under that lock. A pick then takes the lock
/// only for a half-open breaker (to take the trial slot), and a success while all is well takes
/// none. Starts closed with no failure, like [`Breaker::new`].
#[derive(Debug, Default)]
pub struct Mirror {
    /// [`CLOSED`], [`OPEN`] or [`HALF_OPEN`].
    state: AtomicU8,
    /// The breaker's consecutive failures.
    failures: AtomicU32,
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

impl Mirror {
    /// Copies `breaker`'s state and failure count.
    pub fn update(&self, breaker: &Breaker) {
        let state = match breaker.state() {
            State::Closed => CLOSED,
            State::Open { .. } => OPEN,
            State::HalfOpen { .. } => HALF_OPEN,
        };
        self.state.store(state, Relaxed);
        self.failures.store(breaker.failures(), Relaxed);
    }

    /// What a pick can decide from the mirror alone: `Some(true)` when closed, `Some(false)` when
    /// open, `None` when half-open: only [`Breaker::admit`], under the lock, may hand out the
    /// single trial slot.
    pub fn admits(&self) -> Option<bool> {
        match self.state.load(Relaxed) {
            CLOSED => Some(true),
            OPEN => Some(false),
            _ => None,
        }
    }

    /// True while the breaker is open.
    pub fn is_open(&self) -> bool {
        self.state.load(Relaxed) == OPEN
    }

    /// True while the breaker is half-open.
    pub fn is_half_open(&self) -> bool {
        self.state.load(Relaxed) == HALF_OPEN
    }

    /// Closed with no failure counted: a success would change nothing, so it needs no lock.
    pub fn is_quiet(&self) -> bool {
        self.state.load(Relaxed) == CLOSED && self.failures.load(Relaxed) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> (Breaker, Instant) {
        (Breaker::new(BreakerConfig::default()), Instant::now())
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn opens_after_consecutive_failures_only() {
        let (mut b, t0) = breaker();
        for _ in 0..4 {
            assert_eq!(b.on_failure(t0), None);
        }
        assert_eq!(b.on_success(), None);
        for _ in 0..4 {
            assert_eq!(b.on_failure(t0), None);
        }
        assert_eq!(b.on_failure(t0), Some(Transition::Opened(10 * S)));
        assert_eq!(b.state(), State::Open { until: t0 + 10 * S });
        assert!(!b.admit());
        assert_eq!(
            b.on_failure(t0),
            None,
            "late failures while open change nothing"
        );
    }

    #[test]
    fn half_open_admits_one_trial_and_closes_on_success() {
        let (mut b, t0) = breaker();
        for _ in 0..5 {
            b.on_failure(t0);
        }
        assert_eq!(b.tick(t0 + 9 * S), None);
        assert_eq!(b.tick(t0 + 10 * S), Some(Transition::HalfOpened));
        assert!(b.admit());
        assert!(!b.admit(), "only one trial at a time");
        assert_eq!(b.on_success(), Some(Transition::Closed));
        assert!(b.admit() && b.admit());
    }

    #[test]
    fn cooldown_doubles_on_reopen_up_to_the_cap_and_resets_on_close() {
        let (mut b, t0) = breaker();
        for _ in 0..5 {
            b.on_failure(t0);
        }
        let mut now = t0;
        let mut seen = Vec::new();
        for _ in 0..7 {
            let State::Open { until } = b.state() else {
                panic!("open expected")
            };
            seen.push((until - now).as_secs());
            now = until;
            b.tick(now);
            assert!(b.admit());
            b.on_failure(now);
        }
        assert_eq!(seen, [10, 20, 40, 80, 160, 300, 300]);
        let State::Open { until } = b.state() else {
            panic!()
        };
        b.tick(until);
        b.admit();
        assert_eq!(b.on_success(), Some(Transition::Closed));
        for _ in 0..5 {
            b.on_failure(until);
        }
        assert_eq!(
            b.state(),
            State::Open {
                until: until + 10 * S
            }
        );
    }

    #[test]
    fn the_mirror_follows_the_breaker() {
        let (mut b, t0) = breaker();
        let m = Mirror::default();
        m.update(&b);
        assert_eq!(m.admits(), Some(true));
        assert!(m.is_quiet());
        b.on_failure(t0);
        m.update(&b);
        assert_eq!(m.admits(), Some(true));
        assert!(!m.is_quiet(), "a failure is counted");
        for _ in 0..4 {
            b.on_failure(t0);
        }
        m.update(&b);
        assert_eq!(m.admits(), Some(false));
        assert!(m.is_open());
        b.tick(t0 + 10 * S);
        m.update(&b);
        assert_eq!(m.admits(), None, "only the breaker hands out the trial");
        assert!(m.is_half_open());
    }

    #[test]
    fn reset_closes() {
        let (mut b, t0) = breaker();
        assert_eq!(b.reset(), None);
        for _ in 0..5 {
            b.on_failure(t0);
        }
        assert_eq!(b.reset(), Some(Transition::Closed));
        assert_eq!(b.state(), State::Closed);
    }
}

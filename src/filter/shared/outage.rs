//! When Redis is away: failed calls counted in a row, the fallback entered after
//! [`FAILURES_TO_FALLBACK`] of them, and probes with back-off until Redis answers again. Pure
//! state driven by the instants it is given, so that the tests drive it exactly; the Redis
//! thread (store.rs) makes the calls and the logs.
//!
//! Worked example (3 failures, first probe after 100 ms, at most 500 ms between probes): calls
//! fail at t=0, 5 and 10 ms. The first two make the thread connect again at once; the third
//! puts the balancer in its fallback at 10 ms, with a probe due at 110 ms. Probes fail at 110,
//! 310 and 710 ms (waits of 200 and 400 ms after them) and at 1210 ms (the wait is capped at
//! 500 ms); the probe at 1710 ms answers: back after 1.7 s, and the next failure counts from 1
//! again.

use std::time::{Duration, Instant};

/// Failed calls in a row that put the balancer in its fallback. 3.
pub const FAILURES_TO_FALLBACK: u32 = 3;

/// The first probe after falling back. 100 ms.
pub const FIRST_PROBE: Duration = Duration::from_millis(100);

/// The longest wait between probes. 500 ms: back within a second of Redis answering again.
pub const MAX_PROBE: Duration = Duration::from_millis(500);

/// What to do after a failed call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AfterFailure {
    /// Connect again at once.
    Reconnect,
    /// Stop asking Redis: the fallback decides. `first`: the balancer was not in its fallback
    /// before (the caller logs it once).
    FallBack { first: bool },
}

/// The state of an outage (see the module documentation).
#[derive(Debug)]
pub(super) struct Outage {
    /// Failed calls in a row.
    failures: u32,
    /// When the fallback began, while in it.
    down_since: Option<Instant>,
    /// When the next probe is due, and the wait after it if it fails.
    probe: (Instant, Duration),
}

impl Outage {
    /// No failure yet; a probe due at `now` (used if the first connection fails).
    pub fn new(now: Instant) -> Outage {
        Outage {
            failures: 0,
            down_since: None,
            probe: (now, FIRST_PROBE),
        }
    }

    /// A call was answered: the failures in a row start again from zero.
    pub fn answered(&mut self) {
        self.failures = 0;
    }

    /// A call failed at `now`.
    pub fn failed(&mut self, now: Instant) -> AfterFailure {
        self.failures += 1;
        if self.failures < FAILURES_TO_FALLBACK {
            return AfterFailure::Reconnect;
        }
        AfterFailure::FallBack {
            first: self.fall_back(now),
        }
    }

    /// Enters the fallback at `now` (or stays in it), the next probe after [`FIRST_PROBE`].
    /// True when it was not in it before.
    pub fn fall_back(&mut self, now: Instant) -> bool {
        self.probe = (now + FIRST_PROBE, FIRST_PROBE);
        if self.down_since.is_some() {
            return false;
        }
        self.down_since = Some(now);
        true
    }

    /// When the next probe is due.
    pub fn next_probe(&self) -> Instant {
        self.probe.0
    }

    /// A probe failed at `now`: the next one after twice the last wait, at most [`MAX_PROBE`].
    /// True when this enters the fallback (a connection lost while not in it).
    pub fn probe_failed(&mut self, now: Instant) -> bool {
        let first = self.down_since.is_none() && self.fall_back(now);
        let wait = (self.probe.1 * 2).min(MAX_PROBE);
        self.probe = (now + wait, wait);
        first
    }

    /// A probe (a new connection) answered at `now`: how long the fallback lasted, if the
    /// balancer was in it.
    pub fn recovered(&mut self, now: Instant) -> Option<Duration> {
        self.failures = 0;
        let since = self.down_since.take()?;
        Some(now.saturating_duration_since(since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worked_example() {
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        let mut o = Outage::new(t);
        assert_eq!(o.failed(ms(0)), AfterFailure::Reconnect);
        assert_eq!(o.failed(ms(5)), AfterFailure::Reconnect);
        assert_eq!(o.failed(ms(10)), AfterFailure::FallBack { first: true });
        assert_eq!(o.next_probe(), ms(110));
        for (at, next) in [(110, 310), (310, 710), (710, 1210), (1210, 1710)] {
            assert!(!o.probe_failed(ms(at)), "already in the fallback");
            assert_eq!(o.next_probe(), ms(next), "after the probe at {at} ms");
        }
        assert_eq!(o.recovered(ms(1710)), Some(Duration::from_millis(1700)));
        assert_eq!(
            o.failed(ms(2000)),
            AfterFailure::Reconnect,
            "counted from 1"
        );
    }

    #[test]
    fn an_answer_resets_the_count_and_a_failure_in_the_fallback_is_not_logged_again() {
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        let mut o = Outage::new(t);
        o.failed(ms(0));
        o.failed(ms(1));
        o.answered();
        assert_eq!(o.failed(ms(2)), AfterFailure::Reconnect);
        assert_eq!(o.failed(ms(3)), AfterFailure::Reconnect);
        assert_eq!(o.failed(ms(4)), AfterFailure::FallBack { first: true });
        // A connection made by a probe that fails while being set up: still the same outage,
        // and the probes start again from the first wait.
        o.probe_failed(ms(104));
        assert_eq!(o.failed(ms(310)), AfterFailure::FallBack { first: false });
        assert_eq!(o.next_probe(), ms(410));
    }

    #[test]
    fn a_first_connection_that_fails_enters_the_fallback_and_one_that_answers_was_never_down() {
        let t = Instant::now();
        let mut o = Outage::new(t);
        assert_eq!(o.next_probe(), t, "a lost connection is probed at once");
        assert!(o.probe_failed(t), "the fallback begins");
        assert_eq!(o.next_probe(), t + Duration::from_millis(200));
        let mut o = Outage::new(t);
        assert_eq!(o.recovered(t), None, "no fallback to come back from");
    }
}

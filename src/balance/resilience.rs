//! The adapter between the backends' state and the code that asks about it: [`Resilience`] is
//! the [`Availability`] the pool consults during a pick and the [`Observer`] the proxy tells after
//! each attempt. It holds nothing but a clock: the state itself lives in each [`Backend`].
//!
//! One attempt, as it flows through:
//!
//! ```text
//! Pool::pick ─▶ Resilience::admit ─▶ Backend::admit       healthy? breaker closed, or its
//!                                                         half-open trial slot free (taken)?
//! the proxy sends the request
//! Observer::record ─▶ Backend::record(…, clock.now())     breaker counts, weights sample
//!   or, when nothing reached the backend (the client left mid-upload):
//! Availability::release ─▶ Backend::release_trial         the trial slot is free again
//! ```
//!
//! Why an adapter rather than implementing the traits on [`Backend`]: a backend takes the time
//! as an argument (`now`), so its tests drive it with exact instants; the adapter supplies the
//! time from the balancer's [`Clock`], the system clock in production and a
//! [`ManualClock`](crate::clock::ManualClock) in tests.

use std::sync::Arc;
use std::time::Duration;

use super::backend::{Backend, Unavailable};
use super::{Availability, Observer};
use crate::clock::Clock;

/// Connects the pool and the proxy to the backends' own state: a backend is available when it
/// [admits](Backend::admit) a request, and every attempt's outcome is
/// [recorded](Backend::record) with the clock's time.
pub struct Resilience {
    clock: Arc<dyn Clock>,
}

impl Resilience {
    /// Resilience driven by `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Resilience {
        Resilience { clock }
    }
}

impl Availability for Resilience {
    fn admit(&self, backend: &Backend) -> bool {
        backend.admit()
    }

    fn release(&self, backend: &Backend) {
        backend.release_trial();
    }

    fn why_not(&self, backend: &Backend) -> Option<Unavailable> {
        backend.why_unavailable(self.clock.now())
    }
}

impl Observer for Resilience {
    fn record(&self, backend: &Backend, success: bool, latency: Duration) {
        backend.record(success, latency, self.clock.now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendConfig;

    #[test]
    fn resilience_records_with_its_clock() {
        use crate::clock::ManualClock;
        let clock = Arc::new(ManualClock::new());
        let r = Resilience::new(clock.clone());
        let b = Backend::new(0, &BackendConfig::parse("http://a:1", 2).unwrap());
        for _ in 0..5 {
            assert!(r.admit(&b));
            r.record(&b, false, Duration::from_millis(3));
        }
        assert!(!r.admit(&b), "open for the 10 s cooldown");
        clock.advance(Duration::from_millis(9_999));
        b.tick(clock.now());
        assert!(!r.admit(&b));
        clock.advance(Duration::from_millis(1));
        b.tick(clock.now());
        assert!(r.admit(&b), "half-open exactly at 10 s");
        r.record(&b, true, Duration::from_millis(3));
        let s = b.snapshot(clock.now(), Duration::from_secs(10));
        assert_eq!((s.breaker, s.state), ("closed", "slow-start"));
    }
}

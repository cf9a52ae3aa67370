//! The retry budget: retries may be at most a fixed fraction of requests, so a sick pool is not
//! hit with a retry storm (the idea of Envoy's and Linkerd's retry budgets).
//!
//! It is a token bucket counted in requests, not in time: every request deposits `percent / 100`
//! of a retry, every retry withdraws one whole retry, and the balance is capped. The bucket
//! starts with [`RESERVE`] retries so that a quiet balancer can still retry its first failures.
//!
//! Worked example with the default 20 %: the bucket starts at 10 retries. A burst of failures
//! spends them; after that, each run of 5 requests earns one more retry, so in a long outage at
//! most 1 request in 5 is retried, whatever the traffic.

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

/// Retries available to a fresh balancer, and the cap of the balance (in whole retries).
pub const RESERVE: i64 = 10;

const UNIT: i64 = 1000;

/// A lock-free retry budget. See the module documentation.
#[derive(Debug)]
pub struct RetryBudget {
    per_request: AtomicI64,
    balance: AtomicI64,
}

impl RetryBudget {
    /// A budget where retries may be `percent` % of requests (0 turns retries off).
    pub fn new(percent: u32) -> RetryBudget {
        RetryBudget {
            per_request: AtomicI64::new(Self::share(percent)),
            balance: AtomicI64::new(if percent == 0 { 0 } else { RESERVE * UNIT }),
        }
    }

    fn share(percent: u32) -> i64 {
        i64::from(percent.min(100)) * UNIT / 100
    }

    /// Changes the percentage (reload); the balance is kept.
    pub fn set_percent(&self, percent: u32) {
        self.per_request.store(Self::share(percent), Relaxed);
        if percent == 0 {
            self.balance.store(0, Relaxed);
        }
    }

    /// Records one incoming request: it earns its share of a retry.
    pub fn deposit(&self) {
        let cap = RESERVE * UNIT;
        let share = self.per_request.load(Relaxed);
        let _ = self.balance.fetch_update(Relaxed, Relaxed, |b| {
            (b < cap).then(|| (b + share).min(cap))
        });
    }

    /// Takes one retry from the budget; false when there is none left.
    pub fn withdraw(&self) -> bool {
        self.balance
            .fetch_update(Relaxed, Relaxed, |b| (b >= UNIT).then(|| b - UNIT))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_then_fraction_of_requests() {
        let b = RetryBudget::new(20);
        for _ in 0..RESERVE {
            assert!(b.withdraw());
        }
        assert!(!b.withdraw());
        for _ in 0..4 {
            b.deposit();
        }
        assert!(!b.withdraw(), "4 requests earn 0.8 of a retry");
        b.deposit();
        assert!(b.withdraw(), "the fifth completes one retry");
        assert!(!b.withdraw());
    }

    #[test]
    fn balance_is_capped_and_zero_disables() {
        let b = RetryBudget::new(100);
        for _ in 0..1000 {
            b.deposit();
        }
        let taken = (0..1000).filter(|_| b.withdraw()).count();
        assert_eq!(taken as i64, RESERVE);
        let off = RetryBudget::new(0);
        off.deposit();
        assert!(!off.withdraw());
    }
}

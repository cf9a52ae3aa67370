//! The retry budget: retries may be at most a share of the recent requests, so that a sick pool
//! is not hit with a retry storm, while a healthy pool that loses one backend can still retry
//! every request that backend held (Finagle's `RetryBudget`; Envoy and Linkerd bound retries the
//! same way).
//!
//! The rule: in the window, the current second and the nine before it ([`WINDOW_SECONDS`]),
//! retries may be at most `percent` % of the requests that arrived in the window, plus a floor of
//! [`FLOOR_PER_SECOND`] a second (100 a window), so that a quiet balancer can retry too:
//!
//! ```text
//! balance = 100 + percent/100 × requests in the window − retries in the window
//! ```
//!
//! A retry is allowed while the balance is at least 1. Retries stay in the window as long as
//! requests do, so a retry spent now is given back ten seconds later, when it leaves.
//!
//! Worked example with the default 20 %:
//!
//! | when | window holds | balance |
//! | --- | --- | --- |
//! | steady 300 requests a second, no failure | 3 000 requests | 100 + 600 = 700 |
//! | a backend dies holding 60 requests: all 60 retried at once | 3 000 requests, 60 retries | 640 |
//! | every backend fails, still 300 requests a second | 3 000 requests, 700 retries | 0 |
//! | a quiet balancer: no request for 10 s | nothing | 100 |
//!
//! In the outage the pool gets at most 700 retries for every 3 000 requests of any 10 s (23 %:
//! 20 % plus the 10 a second), not the 6 000 that `retries 2` alone would allow; each second
//! after the first ten, the 70 retries leaving the window are spent again on that second's 300
//! requests. (The budget this replaces was a bucket capped at 10 retries: it answered 50 of the
//! 60 requests of the dying backend with 502.)
//!
//! A reload changes the percentage for the requests already in the window too: from 20 % to 50 %
//! with 3 000 requests and 60 retries in the window, the balance goes from 640 to 1 540 at once;
//! back to 20 %, to 640. `budget=0%` turns retries off, floor included.
//!
//! How it is kept, lock-free: each second of the window has a slot, one atomic word holding
//! which second it counts and how many requests arrived in it. A request adds one to the slot of
//! its second with one compare-and-swap; when the slot still holds the second ten seconds before,
//! that count is replaced: it has left the window. Retries are counted the same way in slots of
//! their own, and also in one total, so that taking a retry is one compare-and-swap on that total
//! and two workers can never both take the last one.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::clock::Clock;

/// Seconds in the window. 10 (Finagle's default TTL).
pub const WINDOW_SECONDS: u64 = 10;

/// Retries allowed per second of the window whatever the traffic. 10 (Finagle's default).
pub const FLOOR_PER_SECOND: u64 = 10;

/// Retries allowed in any window whatever the traffic: [`FLOOR_PER_SECOND`] ×
/// [`WINDOW_SECONDS`] = 100.
pub const FLOOR: u64 = FLOOR_PER_SECOND * WINDOW_SECONDS;

const SLOTS: usize = WINDOW_SECONDS as usize;

/// The refusal code (`reason=` in the access log) of a request whose retry the budget refused.
pub const EXHAUSTED: &str = "retry_budget_exhausted";

/// What the budget holds now, for `/status` (serialised, its `retry_budget` object) and
/// `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct BudgetState {
    /// `budget=`: retries allowed, as a percentage of the window's requests.
    pub percent: u32,
    /// Retries that may be made now.
    pub balance: u64,
    /// Requests that arrived in the window.
    #[serde(rename = "window_requests")]
    pub requests: u64,
    /// Retries made in the window.
    #[serde(rename = "window_retries")]
    pub retries: u64,
    /// Requests refused a retry for lack of budget, since the start.
    pub refused: u64,
}

/// A lock-free retry budget over a sliding window of 10 s. See the module documentation.
pub struct RetryBudget {
    clock: Arc<dyn Clock>,
    /// Second 0 of the slots.
    origin: Instant,
    percent: AtomicU32,
    requests: Seconds,
    retries: Seconds,
    /// The retries in `retries`' slots (and those about to be added to them): one word, so that
    /// taking a retry is one compare-and-swap. Never less than the sum of the slots.
    retries_total: AtomicU64,
    refused: AtomicU64,
}

impl RetryBudget {
    /// A budget where retries may be `percent` % of the window's requests plus [`FLOOR`] (0 turns
    /// retries off), reading the time from `clock`.
    pub fn new(percent: u32, clock: Arc<dyn Clock>) -> RetryBudget {
        RetryBudget {
            origin: clock.now(),
            clock,
            percent: AtomicU32::new(percent.min(100)),
            requests: Seconds::default(),
            retries: Seconds::default(),
            retries_total: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Changes the percentage (reload). The window is kept: the new percentage applies to the
    /// requests already in it.
    pub fn set_percent(&self, percent: u32) {
        self.percent.store(percent.min(100), Ordering::Relaxed);
    }

    /// Records one incoming request. The hot path: a clock read and one compare-and-swap.
    pub fn deposit(&self) {
        // Requests have no total to keep in step: the order of these counts does not matter.
        let _ = self.requests.add(self.second(), Ordering::Relaxed);
    }

    /// Takes one retry from the budget; false (and counted as refused) when there is none left.
    pub fn withdraw(&self) -> bool {
        let second = self.second();
        let percent = u64::from(self.percent.load(Ordering::Relaxed));
        if percent > 0 {
            self.expire_retries(second);
            // In hundredths of a retry, so that the sum is exact.
            let earned = FLOOR * 100 + percent * self.requests.sum(second);
            let taken = self
                .retries_total
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                    ((r + 1) * 100 <= earned).then_some(r + 1)
                })
                .is_ok();
            if taken {
                // The total counts the retry first, so it is never less than the slots' sum.
                match self.retries.add(second, Ordering::AcqRel) {
                    Ok(left) => self.retries_left(left),
                    // Ten seconds went by since `second`: the retry has already left the window.
                    Err(()) => self.retries_left(1),
                }
                return true;
            }
        }
        self.refused.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// What the budget holds now.
    pub fn state(&self) -> BudgetState {
        let second = self.second();
        self.expire_retries(second);
        let percent = self.percent.load(Ordering::Relaxed);
        let requests = self.requests.sum(second);
        let retries = self.retries_total.load(Ordering::Acquire);
        let earned = FLOOR * 100 + u64::from(percent) * requests;
        BudgetState {
            percent,
            requests,
            retries,
            balance: if percent == 0 {
                0
            } else {
                earned.saturating_sub(retries * 100) / 100
            },
            refused: self.refused.load(Ordering::Relaxed),
        }
    }

    /// The clock's second since the budget was made (saturating after 136 years).
    fn second(&self) -> u32 {
        let secs = self
            .clock
            .now()
            .saturating_duration_since(self.origin)
            .as_secs();
        u32::try_from(secs).unwrap_or(u32::MAX)
    }

    /// Takes the retries of seconds that have left the window out of the total.
    fn expire_retries(&self, second: u32) {
        self.retries_left(self.retries.expire(second));
    }

    fn retries_left(&self, n: u64) {
        if n > 0 {
            self.retries_total.fetch_sub(n, Ordering::AcqRel);
        }
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RetryBudget").field(&self.state()).finish()
    }
}

/// One count per second of the window, each in a word: the second in the high 32 bits, the
/// count in the low 32 (at most 4 billion a second; it saturates there).
#[derive(Debug, Default)]
struct Seconds([AtomicU64; SLOTS]);

fn pack(second: u32, count: u32) -> u64 {
    (u64::from(second) << 32) | u64::from(count)
}

fn unpack(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

/// Whether a count of `second` is still in the window at `now`. A second later than `now` (read
/// by another thread a moment later) is in it.
fn in_window(second: u32, now: u32) -> bool {
    u64::from(second) + WINDOW_SECONDS > u64::from(now)
}

impl Seconds {
    /// Adds one to the count of `second`. Ok with the count it replaced, which had left the
    /// window (0 when the slot already counted `second`); Err when the slot already counts a
    /// later second, so that this one has left the window itself.
    fn add(&self, second: u32, order: Ordering) -> Result<u64, ()> {
        let slot = &self.0[second as usize % SLOTS];
        let mut replaced = 0;
        slot.fetch_update(order, Ordering::Relaxed, |word| {
            let (counts, n) = unpack(word);
            replaced = 0;
            if counts == second {
                Some(pack(second, n.saturating_add(1)))
            } else if counts < second {
                replaced = n;
                Some(pack(second, 1))
            } else {
                None
            }
        })
        .map(|_| u64::from(replaced))
        .map_err(|_| ())
    }

    /// The counts still in the window at `now`.
    fn sum(&self, now: u32) -> u64 {
        self.0
            .iter()
            .map(|slot| unpack(slot.load(Ordering::Acquire)))
            .filter(|(second, _)| in_window(*second, now))
            .map(|(_, n)| u64::from(n))
            .sum()
    }

    /// Empties the slots whose second has left the window at `now`; returns what they held.
    fn expire(&self, now: u32) -> u64 {
        let mut gone = 0;
        for slot in &self.0 {
            let emptied = slot.fetch_update(Ordering::AcqRel, Ordering::Acquire, |word| {
                let (second, n) = unpack(word);
                (n > 0 && !in_window(second, now)).then(|| pack(second, 0))
            });
            if let Ok(word) = emptied {
                gone += u64::from(unpack(word).1);
            }
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::time::Duration;

    fn budget(percent: u32) -> (RetryBudget, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new());
        (RetryBudget::new(percent, clock.clone()), clock)
    }

    fn deposits(b: &RetryBudget, n: usize) {
        (0..n).for_each(|_| b.deposit());
    }

    /// Withdraws until refused; returns how many were taken.
    fn drain(b: &RetryBudget) -> u64 {
        (0..).take_while(|_| b.withdraw()).count() as u64
    }

    #[test]
    fn floor_then_a_share_of_the_requests() {
        let (b, _) = budget(20);
        assert_eq!(b.state().balance, FLOOR);
        assert_eq!(drain(&b), 100, "a quiet balancer may retry 100 times");
        deposits(&b, 4);
        assert!(!b.withdraw(), "4 requests earn 0.8 of a retry");
        b.deposit();
        assert!(b.withdraw(), "the fifth completes one retry");
        assert!(!b.withdraw());
        let s = b.state();
        assert_eq!((s.requests, s.retries, s.balance), (5, 101, 0));
        assert_eq!(s.refused, 3, "every refusal is counted");
    }

    #[test]
    fn a_burst_spends_what_the_window_earned() {
        // 3 000 requests in the window at 20 %: 100 + 600 retries, all available at once.
        let (b, clock) = budget(20);
        for _ in 0..10 {
            deposits(&b, 300);
            clock.advance(Duration::from_millis(999));
        }
        assert_eq!(b.state().balance, 700);
        assert_eq!(drain(&b), 700);
    }

    #[test]
    fn the_window_slides() {
        let (b, clock) = budget(20);
        deposits(&b, 1000); // second 0: 200 retries earned
        clock.advance(Duration::from_secs(5));
        deposits(&b, 500); // second 5: 100 more
        assert_eq!(b.state().balance, 400);
        clock.advance(Duration::from_millis(4999)); // 9.999 s: second 0 is still in the window
        assert_eq!(b.state().balance, 400);
        clock.advance(Duration::from_millis(1)); // 10 s: second 0 has left it
        let s = b.state();
        assert_eq!((s.requests, s.balance), (500, 200));
        clock.advance(Duration::from_secs(5)); // 15 s: second 5 too
        assert_eq!(b.state().balance, FLOOR);
        assert_eq!(b.state().requests, 0);
    }

    #[test]
    fn the_floor_refills_as_retries_leave_the_window() {
        let (b, clock) = budget(20);
        // No traffic at all: 10 retries a second for ten seconds spend the floor.
        for _ in 0..10 {
            for _ in 0..10 {
                assert!(b.withdraw());
            }
            clock.advance(Duration::from_secs(1));
        }
        // At 10 s the retries of second 0 have left the window: 10 more, and no more.
        assert_eq!(drain(&b), 10);
        clock.advance(Duration::from_millis(999));
        assert!(!b.withdraw());
        clock.advance(Duration::from_millis(1));
        assert_eq!(drain(&b), 10, "second 1's retries left at 11 s");
        // A quiet spell of a whole window gives the whole floor back.
        clock.advance(Duration::from_secs(10));
        assert_eq!(b.state().retries, 0);
        assert_eq!(drain(&b), 100);
    }

    /// Every backend fails for a minute: each request wants two retries. In every window, and over
    /// the whole minute, retries stay within 20 % of the requests plus the floor.
    #[test]
    fn an_outage_is_bounded_by_the_share_and_the_floor() {
        let (b, clock) = budget(20);
        let (mut requests, mut retries) = ([0u64; 60], [0u64; 60]);
        for second in 0..60 {
            for _ in 0..100 {
                // 100 steps of 10 ms, 3 requests each.
                for _ in 0..3 {
                    b.deposit();
                    requests[second] += 1;
                    for _ in 0..2 {
                        if !b.withdraw() {
                            break;
                        }
                        retries[second] += 1;
                    }
                }
                clock.advance(Duration::from_millis(10));
            }
        }
        for end in 10..=60 {
            let window = end - 10..end;
            let (n, r): (u64, u64) = (
                requests[window.clone()].iter().sum(),
                retries[window].iter().sum(),
            );
            assert!(
                r <= n / 5 + FLOOR,
                "seconds {}..{end}: {r} retries for {n} requests",
                end - 10
            );
        }
        let (n, r): (u64, u64) = (requests.iter().sum(), retries.iter().sum());
        assert_eq!(n, 18_000);
        assert!(r <= n / 5 + 6 * FLOOR, "{r} retries for {n} requests");
        assert!(r >= n / 5, "the budget is spent, not stuck: {r}");
    }

    #[test]
    fn a_reload_keeps_the_window_and_applies_the_new_share_to_it() {
        let (b, _) = budget(20);
        deposits(&b, 3000);
        for _ in 0..60 {
            assert!(b.withdraw());
        }
        assert_eq!(b.state().balance, 640);
        b.set_percent(50);
        assert_eq!(b.state().balance, 1540, "100 + 1 500 - 60");
        b.set_percent(0);
        assert_eq!(b.state().balance, 0);
        assert!(!b.withdraw(), "0 % turns retries off, floor included");
        b.set_percent(20);
        assert_eq!(b.state().balance, 640, "the window was kept");
        // Lowered below what was already spent: no retry until enough leave the window.
        assert_eq!(drain(&b), 640);
        b.set_percent(10);
        let s = b.state();
        assert_eq!((s.retries, s.balance), (700, 0));
        assert!(!b.withdraw());
        b.set_percent(250);
        assert_eq!(b.state().percent, 100, "at most 100 %");
    }

    #[test]
    fn a_slot_skipped_for_a_whole_window_is_not_counted() {
        let (b, clock) = budget(100);
        deposits(&b, 50); // second 0
        clock.advance(Duration::from_secs(25)); // second 25 reuses slot 5; slot 0 is stale
        assert_eq!(b.state().requests, 0);
        assert!(b.withdraw());
        clock.advance(Duration::from_secs(5)); // second 30 reuses slot 0: 50 replaced
        b.deposit();
        assert_eq!(b.state().requests, 1);
    }

    #[test]
    fn concurrent_workers_never_take_more_than_the_balance() {
        let (b, _) = budget(20);
        deposits(&b, 500); // 100 + 100
        let taken: u64 = std::thread::scope(|s| {
            let workers: Vec<_> = (0..8).map(|_| s.spawn(|| drain(&b))).collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(taken, 200);
        assert_eq!(b.state().refused, 8);
    }
}

//! What the Redis thread tells the rest of the balancer: whether checks may go to Redis now
//! (read by the poller for every shared check: one atomic load), whether the balancer is in
//! its fallback, the last error, and the round trips (counted by result, timed in a histogram
//! for `/metrics` and in a ring of the last [`RECENT_RTTS`] for the p50 and p99 of `/status`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::Mutex;

use crate::config::shared::{Fallback, SharedConfig};

/// Upper bounds (seconds) of the round-trip histogram's buckets; `+Inf` is implied.
pub const RTT_BUCKETS: [f64; 11] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
];

/// Round trips kept for the percentiles. 1024.
pub const RECENT_RTTS: usize = 1024;

/// How a round trip to Redis ended, the `result` label of `lb_shared_calls_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallResult {
    /// Redis answered.
    Ok,
    /// No answer within `timeout=` (or `connect_timeout=` for a connection): unknown whether
    /// Redis ran it.
    Timeout,
    /// The connection failed or Redis answered with an error.
    Error,
}

const RESULTS: [&str; 3] = ["ok", "timeout", "error"];

#[derive(Debug)]
struct Rtt {
    buckets: [u64; RTT_BUCKETS.len() + 1],
    sum: Duration,
    recent: VecDeque<Duration>,
}

/// The shared store's state, written by its threads, read by the filter and the admin pages.
#[derive(Debug)]
pub struct SharedStatus {
    redis: String,
    fallback: Fallback,
    /// Connected, script loaded, not in the fallback: the poller sends checks.
    ready: AtomicBool,
    connected: AtomicBool,
    in_fallback: AtomicBool,
    /// Instances sharing the limits (for the local fallback's rate / N).
    instances: AtomicU32,
    calls: [AtomicU64; RESULTS.len()],
    rtt: Mutex<Rtt>,
    last_error: Mutex<Option<String>>,
}

impl SharedStatus {
    /// Not connected yet, not in the fallback; `instances` from the config (1 for auto until
    /// the heartbeats say).
    pub fn new(config: &SharedConfig) -> SharedStatus {
        let instances = match config.instances {
            crate::config::shared::Instances::Fixed(n) => n,
            crate::config::shared::Instances::Auto => 1,
        };
        SharedStatus {
            redis: config.redacted_url(),
            fallback: config.fallback,
            ready: AtomicBool::new(false),
            connected: AtomicBool::new(false),
            in_fallback: AtomicBool::new(false),
            instances: AtomicU32::new(instances),
            calls: Default::default(),
            rtt: Mutex::new(Rtt {
                buckets: [0; RTT_BUCKETS.len() + 1],
                sum: Duration::ZERO,
                recent: VecDeque::with_capacity(RECENT_RTTS),
            }),
            last_error: Mutex::new(None),
        }
    }

    /// True when shared checks go to Redis now.
    pub fn ready(&self) -> bool {
        self.ready.load(Relaxed)
    }

    /// True while the balancer limits with its fallback (after repeated failures).
    pub fn in_fallback(&self) -> bool {
        self.in_fallback.load(Relaxed)
    }

    /// The `fallback=` of the `shared` line.
    pub fn fallback(&self) -> Fallback {
        self.fallback
    }

    /// Balancers sharing the limits, at least 1.
    pub fn instances(&self) -> u32 {
        self.instances.load(Relaxed).max(1)
    }

    pub(super) fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Relaxed);
    }

    pub(super) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Relaxed);
    }

    pub(super) fn set_fallback(&self, on: bool) {
        self.in_fallback.store(on, Relaxed);
    }

    pub(super) fn set_instances(&self, n: u32) {
        self.instances.store(n.max(1), Relaxed);
    }

    pub(super) fn set_error(&self, error: String) {
        *self.last_error.lock() = Some(error);
    }

    /// Counts a round trip that ended with `result` after `rtt`.
    pub(super) fn record(&self, result: CallResult, rtt: Duration) {
        self.calls[result as usize].fetch_add(1, Relaxed);
        if result != CallResult::Ok {
            return;
        }
        let secs = rtt.as_secs_f64();
        let bucket = RTT_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(RTT_BUCKETS.len());
        let mut r = self.rtt.lock();
        r.buckets[bucket] += 1;
        r.sum += rtt;
        if r.recent.len() == RECENT_RTTS {
            r.recent.pop_front();
        }
        r.recent.push_back(rtt);
    }

    /// The state for `/status` and `/metrics`.
    pub fn stats(&self) -> SharedStats {
        let (buckets, sum, mut recent) = {
            let r = self.rtt.lock();
            let recent: Vec<Duration> = r.recent.iter().copied().collect();
            (r.buckets, r.sum, recent)
        };
        recent.sort_unstable();
        let pct = |p: f64| -> Option<f64> {
            let last = recent.len().checked_sub(1)?;
            let at = ((last as f64) * p).round() as usize;
            Some(recent[at].as_secs_f64() * 1000.0)
        };
        let mut cumulative = 0;
        let rtt_buckets = buckets
            .iter()
            .enumerate()
            .map(|(i, n)| {
                cumulative += n;
                (
                    RTT_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY),
                    cumulative,
                )
            })
            .collect();
        SharedStats {
            redis: self.redis.clone(),
            connected: self.connected.load(Relaxed),
            fallback: self.in_fallback(),
            fallback_mode: self.fallback.name(),
            instances: self.instances(),
            last_error: self.last_error.lock().clone(),
            rtt_p50_ms: pct(0.5),
            rtt_p99_ms: pct(0.99),
            calls: RESULTS
                .iter()
                .zip(&self.calls)
                .map(|(r, n)| (*r, n.load(Relaxed)))
                .collect(),
            rtt_buckets,
            rtt_sum: sum.as_secs_f64(),
            rtt_count: cumulative,
        }
    }
}

/// The shared store as `/status` and `/metrics` show it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SharedStats {
    /// The Redis URL, the password hidden.
    pub redis: String,
    /// A connection to Redis is open.
    pub connected: bool,
    /// The balancer limits with its fallback now.
    pub fallback: bool,
    /// The `fallback=` of the `shared` line: `local`, `open` or `closed`.
    pub fallback_mode: &'static str,
    /// Balancers sharing the limits (the local fallback divides by it).
    pub instances: u32,
    /// The last thing that went wrong, if anything has.
    pub last_error: Option<String>,
    /// Median round trip of the last [`RECENT_RTTS`] answered calls, ms.
    pub rtt_p50_ms: Option<f64>,
    /// 99th percentile of the same, ms.
    pub rtt_p99_ms: Option<f64>,
    /// Round trips by result (`ok`, `timeout`, `error`).
    pub calls: Vec<(&'static str, u64)>,
    /// Cumulative round-trip histogram of answered calls `(le seconds, count)`, the last `+Inf`.
    pub rtt_buckets: Vec<(f64, u64)>,
    /// Sum of the answered round trips, seconds.
    pub rtt_sum: f64,
    /// Answered round trips.
    pub rtt_count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_by_result_histogram_and_percentiles() {
        let config =
            SharedConfig::parse(&["redis=redis://:secret@127.0.0.1:1/0", "instances=3"]).unwrap();
        let s = SharedStatus::new(&config);
        assert_eq!(s.instances(), 3);
        for ms in 1..=100u64 {
            s.record(CallResult::Ok, Duration::from_micros(ms * 10));
        }
        s.record(CallResult::Timeout, Duration::from_millis(5));
        let stats = s.stats();
        assert_eq!(stats.redis, "redis://:********@127.0.0.1:1/0");
        assert_eq!(stats.calls, vec![("ok", 100), ("timeout", 1), ("error", 0)]);
        assert_eq!(stats.rtt_count, 100);
        assert_eq!(stats.rtt_buckets.last(), Some(&(f64::INFINITY, 100)));
        assert_eq!(stats.rtt_buckets[0], (0.0001, 10));
        assert_eq!(stats.rtt_p50_ms, Some(0.51));
        assert_eq!(stats.rtt_p99_ms, Some(0.99));
    }
}

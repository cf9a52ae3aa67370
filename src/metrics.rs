//! Balancer-wide counters: responses by status, a request-duration histogram, retries and
//! rejections, plus a one-minute window of each backend's share of traffic. Workers and
//! the poller update atomics only; the maintenance thread samples the window once a second.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::balance::backend::Backend;
use crate::http::TunnelEnd;

/// Upper bounds (seconds) of the request-duration histogram buckets, Prometheus style
/// (`le`); a last `+Inf` bucket is implied.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Why the balancer answered a request itself without asking a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The queue of requests waiting for a worker was full (`queue N`; 503).
    QueueFull,
    /// The request waited longer than `timeouts queue=` for a worker (503).
    QueueTimeout,
    /// Shutting down (503).
    ShuttingDown,
    /// The request's head, framing or shape was refused (400, 405, 414, 431, 505).
    BadRequest,
    /// The request head did not arrive within `timeouts head=` (408).
    HeadTimeout,
    /// No backend was available (503).
    NoBackend,
    /// The request body did not arrive within `timeouts body=` (408).
    BodyTimeout,
    /// The buffers had no room for the request body (503).
    BufferFull,
    /// An upgrade past `limits tunnels=` (503).
    TunnelLimit,
}

impl Rejection {
    /// Every reason, in a stable order.
    pub const ALL: [Rejection; 9] = [
        Rejection::QueueFull,
        Rejection::QueueTimeout,
        Rejection::ShuttingDown,
        Rejection::BadRequest,
        Rejection::HeadTimeout,
        Rejection::NoBackend,
        Rejection::BodyTimeout,
        Rejection::BufferFull,
        Rejection::TunnelLimit,
    ];

    /// The label used in status and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Rejection::QueueFull => "queue_full",
            Rejection::QueueTimeout => "queue_timeout",
            Rejection::ShuttingDown => "shutting_down",
            Rejection::BadRequest => "bad_request",
            Rejection::HeadTimeout => "head_timeout",
            Rejection::NoBackend => "no_backend",
            Rejection::BodyTimeout => "body_timeout",
            Rejection::BufferFull => "buffer_full",
            Rejection::TunnelLimit => "tunnel_limit",
        }
    }
}

/// The label of how a tunnel ended, in metrics and the access log: `client`, `backend` (the
/// front end's peer), `idle`, `shutdown` or `error`.
pub fn tunnel_end_label(how: TunnelEnd) -> &'static str {
    match how {
        TunnelEnd::Client => "client",
        TunnelEnd::Peer => "backend",
        TunnelEnd::Idle => "idle",
        TunnelEnd::Shutdown => "shutdown",
        TunnelEnd::Error => "error",
    }
}

/// How long the traffic-share window is. 60 s.
pub const SHARE_WINDOW: Duration = Duration::from_secs(60);

/// One sample of the share window: when, and each backend's `(id, attempts so far)`.
type Sample = (Instant, Vec<(u64, u64)>);

/// Global counters. See the module documentation.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    /// Responses sent, indexed by status - 100 (statuses 100..=599).
    by_status: Vec<AtomicU64>,
    /// Histogram counts per bucket of [`DURATION_BUCKETS`], plus `+Inf`.
    duration_buckets: Vec<AtomicU64>,
    /// Sum of request durations in microseconds.
    duration_sum_us: AtomicU64,
    /// Extra attempts made on another backend.
    retries: AtomicU64,
    rejections: [AtomicU64; Rejection::ALL.len()],
    /// Samples of (time, per-backend (id, requests)) once a second, for the share window.
    window: Mutex<VecDeque<Sample>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            by_status: (100..600).map(|_| AtomicU64::new(0)).collect(),
            duration_buckets: (0..=DURATION_BUCKETS.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            duration_sum_us: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            rejections: Default::default(),
            window: Mutex::new(VecDeque::new()),
        }
    }
}

impl Metrics {
    /// Records one finished request: its status and duration.
    pub fn record_response(&self, status: u16, duration: Duration) {
        if let Some(c) = self.by_status.get(usize::from(status).wrapping_sub(100)) {
            c.fetch_add(1, Relaxed);
        }
        let secs = duration.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(DURATION_BUCKETS.len());
        self.duration_buckets[bucket].fetch_add(1, Relaxed);
        self.duration_sum_us.fetch_add(
            duration.as_micros().min(u128::from(u64::MAX)) as u64,
            Relaxed,
        );
    }

    /// Records `n` retries.
    pub fn record_retries(&self, n: u32) {
        if n > 0 {
            self.retries.fetch_add(u64::from(n), Relaxed);
        }
    }

    /// Records a request the balancer answered itself.
    pub fn record_rejection(&self, why: Rejection) {
        self.rejections[why as usize].fetch_add(1, Relaxed);
    }

    /// Time since the balancer started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// `(status, count)` for every status seen.
    pub fn responses_by_status(&self) -> Vec<(u16, u64)> {
        self.by_status
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let n = c.load(Relaxed);
                (n > 0).then_some((i as u16 + 100, n))
            })
            .collect()
    }

    /// Total responses sent.
    pub fn responses_total(&self) -> u64 {
        self.by_status.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// Cumulative histogram: `(le, count)` per bucket, the last one `+Inf` as `f64::INFINITY`;
    /// plus the sum in seconds and the count.
    pub fn duration_histogram(&self) -> (Vec<(f64, u64)>, f64, u64) {
        let mut cumulative = 0;
        let mut out = Vec::with_capacity(self.duration_buckets.len());
        for (i, c) in self.duration_buckets.iter().enumerate() {
            cumulative += c.load(Relaxed);
            let le = DURATION_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
            out.push((le, cumulative));
        }
        let sum = self.duration_sum_us.load(Relaxed) as f64 / 1e6;
        (out, sum, cumulative)
    }

    /// Retries made.
    pub fn retries(&self) -> u64 {
        self.retries.load(Relaxed)
    }

    /// `(reason label, count)` for every rejection reason.
    pub fn rejections(&self) -> Vec<(&'static str, u64)> {
        Rejection::ALL
            .iter()
            .map(|r| (r.label(), self.rejections[*r as usize].load(Relaxed)))
            .collect()
    }

    /// Takes a sample of every backend's request counter (the maintenance thread calls this
    /// about once a second) and drops samples older than the window.
    pub fn sample(&self, backends: &[Arc<Backend>], now: Instant) {
        let counts = backends
            .iter()
            .map(|b| (b.id, b.stats.requests.load(Relaxed)))
            .collect();
        let mut w = self.window.lock();
        if w.back()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) < Duration::from_secs(1))
        {
            return;
        }
        w.push_back((now, counts));
        while w.len() > 2
            && w.front()
                .is_some_and(|(t, _)| now.saturating_duration_since(*t) > SHARE_WINDOW)
        {
            w.pop_front();
        }
    }

    /// Each backend's share (0..=1) of the attempts in the last minute, and the balancer's
    /// request rate over the same window (attempts per second). Backends not sampled get 0.
    pub fn shares(&self, backends: &[Arc<Backend>]) -> (Vec<(u64, f64)>, f64) {
        let w = self.window.lock();
        let (Some((t0, first)), Some((t1, _))) = (w.front(), w.back()) else {
            return (backends.iter().map(|b| (b.id, 0.0)).collect(), 0.0);
        };
        let deltas: Vec<(u64, u64)> = backends
            .iter()
            .map(|b| {
                let before = first
                    .iter()
                    .find(|(id, _)| *id == b.id)
                    .map_or(0, |(_, n)| *n);
                (b.id, b.stats.requests.load(Relaxed).saturating_sub(before))
            })
            .collect();
        let total: u64 = deltas.iter().map(|(_, d)| d).sum();
        let secs = t1.saturating_duration_since(*t0).as_secs_f64().max(1.0);
        let shares = deltas
            .into_iter()
            .map(|(id, d)| {
                (
                    id,
                    if total == 0 {
                        0.0
                    } else {
                        d as f64 / total as f64
                    },
                )
            })
            .collect();
        (shares, total as f64 / secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendConfig;

    #[test]
    fn statuses_histogram_and_rejections() {
        let m = Metrics::default();
        m.record_response(200, Duration::from_micros(500));
        m.record_response(200, Duration::from_millis(30));
        m.record_response(503, Duration::from_secs(20));
        m.record_response(42, Duration::ZERO); // out of range: ignored, never a panic
        m.record_rejection(Rejection::QueueTimeout);
        m.record_retries(2);
        assert_eq!(m.responses_by_status(), [(200, 2), (503, 1)]);
        let (buckets, sum, count) = m.duration_histogram();
        assert_eq!(buckets[0], (0.001, 2), "42 counted in the histogram only");
        assert_eq!(buckets[5], (0.05, 3));
        assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, 4));
        assert_eq!(count, 4);
        assert!((sum - 20.0305).abs() < 1e-6);
        assert_eq!(m.rejections()[1], ("queue_timeout", 1));
        assert_eq!(m.retries(), 2);
    }

    #[test]
    fn shares_over_the_window() {
        let m = Metrics::default();
        let bs: Vec<Arc<Backend>> = (0..2)
            .map(|i| {
                Arc::new(Backend::new(
                    i,
                    &BackendConfig::parse(&format!("http://h:{}", i + 1), 1).unwrap(),
                ))
            })
            .collect();
        let t0 = Instant::now();
        m.sample(&bs, t0);
        for _ in 0..3 {
            drop(bs[0].begin());
        }
        drop(bs[1].begin());
        m.sample(&bs, t0 + Duration::from_secs(2));
        let (shares, rate) = m.shares(&bs);
        assert_eq!(shares, [(0, 0.75), (1, 0.25)]);
        assert_eq!(rate, 2.0);
    }
}

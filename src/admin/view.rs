//! The [`View`]: everything the admin pages show, taken from the balancer's shared state at one
//! moment, so that `/status` and `/metrics` each describe a single instant and are written from
//! plain data (which is also what their tests build by hand).

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::balance::backend::Snapshot;
use crate::balance::retry::BudgetState;
use crate::explain::Decision;
use crate::filter::shared::SharedStats;
use crate::Shared;

/// Everything the admin pages show, taken at one moment.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// Time since the balancer started.
    pub uptime: Duration,
    /// Attempts per second over the share window (the last minute).
    pub requests_per_s: f64,
    /// Requests waiting for a worker.
    pub queue_depth: usize,
    /// What the front end's workers and poller are doing.
    pub front: crate::http::FrontStats,
    /// What the buffers between clients and workers hold.
    pub buffers: crate::http::BufferStats,
    /// Panics caught (or fatal) since start, by thread kind.
    pub panics: Vec<(&'static str, u64)>,
    /// Log lines dropped since start, by why (`queue_full`, `write_failed`).
    pub log_lines_dropped: Vec<(&'static str, u64)>,
    /// `(status, count)` for every status sent.
    pub responses: Vec<(u16, u64)>,
    /// Cumulative request-duration buckets `(le seconds, count)`, the last one `+Inf`.
    pub duration_buckets: Vec<(f64, u64)>,
    /// Sum of request durations, seconds.
    pub duration_sum: f64,
    /// Requests timed.
    pub duration_count: u64,
    /// Retries made.
    pub retries: u64,
    /// The retry budget now: its window, balance and refusals.
    pub retry_budget: BudgetState,
    /// Requests the balancer answered itself, by reason.
    pub rejections: Vec<(&'static str, u64)>,
    /// Requests the filter refused, by reason.
    pub refused: Vec<(&'static str, u64)>,
    /// Clients banned now, with seconds left.
    pub bans: Vec<(IpAddr, u64)>,
    /// Every backend, in pool order, with its share (0..=1) of the last minute's attempts.
    pub backends: Vec<(Snapshot, f64)>,
    /// Whether decisions are explained now (`explain on`).
    pub explain: bool,
    /// The last explained decisions, newest first.
    pub decisions: Vec<Decision>,
    /// The shared store (`shared` line), when there is one.
    pub shared: Option<SharedStats>,
}

impl View {
    /// Takes the view of `shared` now.
    pub fn collect(shared: &Shared) -> View {
        let now = shared.now();
        let slow_start = shared.maintenance.read().slow_start;
        let backends = shared.pool.backends();
        let (shares, requests_per_s) = shared.metrics.shares(&backends);
        let backends = backends
            .iter()
            .map(|b| {
                let share = shares
                    .iter()
                    .find(|(id, _)| *id == b.id)
                    .map_or(0.0, |(_, s)| *s);
                (b.snapshot(now, slow_start), share)
            })
            .collect();
        let (duration_buckets, duration_sum, duration_count) = shared.metrics.duration_histogram();
        let filter = shared.filter.stats(now);
        View {
            uptime: shared.metrics.uptime(),
            requests_per_s,
            queue_depth: shared.queue_depth(),
            front: shared.front.stats(),
            buffers: shared.buffers.stats(),
            panics: crate::supervise::panics(),
            log_lines_dropped: log_lines_dropped(crate::logging::dropped()),
            responses: shared.metrics.responses_by_status(),
            duration_buckets,
            duration_sum,
            duration_count,
            retries: shared.metrics.retries(),
            retry_budget: shared.proxy.retry_budget().state(),
            rejections: shared.metrics.rejections(),
            refused: filter.refused,
            bans: filter.bans,
            backends,
            explain: shared.explain.load(Relaxed),
            decisions: shared.decisions.recent(),
            shared: shared.filter.shared_stats(),
        }
    }
}

/// The dropped-line counts by reason, as both pages label them.
fn log_lines_dropped(d: crate::logging::Dropped) -> Vec<(&'static str, u64)> {
    vec![
        ("queue_full", d.queue_full),
        ("write_failed", d.write_failed),
    ]
}

/// `x` rounded to `digits` decimals (non-finite values pass through): both pages show measured
/// values this way, so that they agree and carry no meaningless digits.
pub(super) fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    let r = (x * m).round() / m;
    if r.is_finite() {
        r
    } else {
        x
    }
}

/// Views made by hand, for the tests of the pages.
#[cfg(test)]
pub(super) mod fixtures {
    use super::*;

    fn snapshot(name: &str) -> Snapshot {
        Snapshot {
            id: 7,
            name: name.into(),
            url: format!("http://{name}"),
            state: "healthy",
            healthy: true,
            breaker: "closed",
            weight: 2,
            effective_weight: 1.5,
            latency_ms: None,
            failure_rate: 0.0,
            in_flight: 1,
            requests: 10,
            failures: 2,
            bytes_out: 300,
            tunnels: 2,
            last_error: Some("health check: \"bad\"\n\u{1}<x>".into()),
        }
    }

    /// A view with a value of every kind: strings to escape, numbers that are not finite.
    pub(in crate::admin) fn view() -> View {
        View {
            uptime: Duration::from_millis(1500),
            requests_per_s: f64::NAN,
            queue_depth: 3,
            front: crate::http::FrontStats {
                workers_busy: 2,
                answers_flushing: 4,
                ..Default::default()
            },
            buffers: crate::http::BufferStats {
                file_bytes: 4096,
                ..Default::default()
            },
            panics: vec![("worker", 1)],
            log_lines_dropped: vec![("queue_full", 7), ("write_failed", 0)],
            responses: vec![(200, 5), (503, 1)],
            duration_buckets: vec![(0.1, 4), (f64::INFINITY, 6)],
            duration_sum: 0.25,
            duration_count: 6,
            retries: 1,
            retry_budget: BudgetState {
                percent: 20,
                requests: 30,
                retries: 1,
                balance: 105,
                refused: 2,
            },
            rejections: vec![("queue_timeout", 2)],
            refused: vec![("denied", 1), ("rate_limited", 0)],
            bans: vec![("192.0.2.7".parse().unwrap(), 12)],
            backends: vec![(snapshot("a\"b\\c\nd:1"), f64::INFINITY)],
            explain: true,
            decisions: vec![Decision {
                at_ms: 1_700_000_000_000,
                method: "GET".into(),
                target: "/<x>\"".into(),
                status: 200,
                line: "pick=a:1; cw=a:1:1>0".into(),
            }],
            shared: Some(SharedStats {
                redis: "redis://:********@127.0.0.1:6379/0".into(),
                connected: false,
                fallback: true,
                fallback_mode: "local",
                instances: 2,
                last_error: Some("no answer in time \"x\"".into()),
                rtt_p50_ms: Some(0.25),
                rtt_p99_ms: None,
                calls: vec![("ok", 7), ("timeout", 3), ("error", 0)],
                rtt_buckets: vec![(0.001, 7), (f64::INFINITY, 7)],
                rtt_sum: 0.002,
                rtt_count: 7,
            }),
        }
    }
}

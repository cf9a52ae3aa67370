//! What the front end is doing now, for status pages: busy workers, the connections that wait
//! on a slow client rather than on a worker, the tunnels it relays, and how long the poller's
//! longest loop took.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Counters of one front end, updated by its poller and workers (see [`FrontStats`]).
#[derive(Debug, Default)]
pub struct Gauges {
    pub(crate) workers_busy: AtomicUsize,
    pub(crate) bodies: AtomicUsize,
    pub(crate) flushing: AtomicUsize,
    pub(crate) backpressure: AtomicU64,
    pub(crate) stalled: AtomicU64,
    /// Microseconds: see [`FrontStats::poller_longest_iteration_us`].
    pub(crate) poller_longest: AtomicU64,
    /// Tunnels open, or reserved by a handler about to open one.
    pub(crate) tunnels: AtomicUsize,
    /// Tunnels ended, by [`TunnelEnd::ALL`](super::TunnelEnd::ALL).
    pub(crate) tunnels_ended: [AtomicU64; 5],
    pub(crate) tunnel_bytes_up: AtomicU64,
    pub(crate) tunnel_bytes_down: AtomicU64,
}

/// A snapshot of [`Gauges`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrontStats {
    /// Workers answering a request now.
    pub workers_busy: usize,
    /// Connections whose request body the poller is reading into a buffer.
    pub bodies_buffering: usize,
    /// Connections whose answer the poller is finishing from a buffer (a slow reader).
    pub answers_flushing: usize,
    /// Times a worker had to wait for a client because the buffers were full, since start.
    pub backpressure_waits: u64,
    /// Clients closed because they took nothing of an answer for `timeouts client=`.
    pub stalled_readers_closed: u64,
    /// The longest pass of the poller's loop over its events and timers in about the last
    /// minute, in microseconds (the wait for events not counted). Every client waits while it
    /// runs: a stall here (a slow disk under a temporary file, a blocked log) shows up here
    /// instead of silently.
    pub poller_longest_iteration_us: u64,
    /// Tunnels open now (including those whose 101 is on its way to the client).
    pub tunnels_open: usize,
    /// Tunnels ended since start, by how, in the order of
    /// [`TunnelEnd::ALL`](super::TunnelEnd::ALL).
    pub tunnels_ended: [u64; 5],
    /// Bytes tunnels read from clients (for the peers), since start.
    pub tunnel_bytes_up: u64,
    /// Bytes tunnels read from peers (for the clients), since start.
    pub tunnel_bytes_down: u64,
}

impl Gauges {
    /// A snapshot.
    pub fn stats(&self) -> FrontStats {
        FrontStats {
            workers_busy: self.workers_busy.load(Relaxed),
            bodies_buffering: self.bodies.load(Relaxed),
            answers_flushing: self.flushing.load(Relaxed),
            backpressure_waits: self.backpressure.load(Relaxed),
            stalled_readers_closed: self.stalled.load(Relaxed),
            poller_longest_iteration_us: self.poller_longest.load(Relaxed),
            tunnels_open: self.tunnels.load(Relaxed),
            tunnels_ended: self.tunnels_ended.each_ref().map(|n| n.load(Relaxed)),
            tunnel_bytes_up: self.tunnel_bytes_up.load(Relaxed),
            tunnel_bytes_down: self.tunnel_bytes_down.load(Relaxed),
        }
    }
}

/// The longest of some durations over a sliding window of about a minute: six buckets of ten
/// seconds, the oldest dropped as time moves on. Worked example: passes of 3 ms at t=5 s and
/// 1 ms at t=30 s give 3 ms until the bucket of t=5 s leaves the window (at t=60 s), then 1 ms
/// until the bucket of t=30 s leaves (at t=90 s), then 0.
#[derive(Debug)]
pub(crate) struct LongestInWindow {
    buckets: [Duration; BUCKETS],
    /// When the current bucket (`buckets[current]`) began.
    started: Instant,
    current: usize,
}

const BUCKETS: usize = 6;
const BUCKET: Duration = Duration::from_secs(10);

impl LongestInWindow {
    pub fn new(now: Instant) -> LongestInWindow {
        LongestInWindow {
            buckets: [Duration::ZERO; BUCKETS],
            started: now,
            current: 0,
        }
    }

    /// Records `took` at `now`; returns the longest in the window.
    pub fn record(&mut self, took: Duration, now: Instant) -> Duration {
        let mut moved = 0;
        while now.duration_since(self.started) >= BUCKET && moved < BUCKETS {
            self.current = (self.current + 1) % BUCKETS;
            self.buckets[self.current] = Duration::ZERO;
            self.started += BUCKET;
            moved += 1;
        }
        if now.duration_since(self.started) >= BUCKET {
            // Idle for longer than the window: start afresh.
            self.started = now;
        }
        let b = &mut self.buckets[self.current];
        *b = (*b).max(took);
        self.buckets.iter().copied().max().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worked_example() {
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        let ms = Duration::from_millis;
        let mut w = LongestInWindow::new(t0);
        assert_eq!(w.record(ms(3), at(5)), ms(3));
        assert_eq!(w.record(ms(1), at(30)), ms(3));
        assert_eq!(w.record(ms(0), at(59)), ms(3));
        assert_eq!(w.record(ms(0), at(60)), ms(1));
        assert_eq!(w.record(ms(0), at(89)), ms(1));
        assert_eq!(w.record(ms(0), at(90)), ms(0));
        assert_eq!(w.record(ms(2), at(10_000)), ms(2), "after a long idle");
    }
}

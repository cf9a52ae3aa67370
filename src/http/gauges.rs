//! What the front end is doing now, for status pages: busy workers, and the connections that
//! wait on a slow client rather than on a worker.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Counters of one front end, updated by its poller and workers (see [`FrontStats`]).
#[derive(Debug, Default)]
pub struct Gauges {
    pub(crate) workers_busy: AtomicUsize,
    pub(crate) bodies: AtomicUsize,
    pub(crate) flushing: AtomicUsize,
    pub(crate) backpressure: AtomicU64,
    pub(crate) stalled: AtomicU64,
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
        }
    }
}

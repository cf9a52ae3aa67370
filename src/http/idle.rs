//! Idle workers: which sleep, and when one is woken.
//!
//! A worker that finds the queue empty goes to sleep, and waking it again costs two context
//! switches (its sleep and its wake-up) on top of the one a request needs anyway, the worker's
//! wait for its backend. Under load that doubled the switches per request: with more workers than
//! requests in flight, every worker emptied the queue, slept, and was woken for the next request.
//!
//! So a sleeping worker is woken only when it is needed:
//! - at once when no worker is awake (a job would otherwise wait for nobody);
//! - when the oldest waiting job has waited [`WAKE_AFTER`] and no worker was woken in that time:
//!   the workers awake (busy with backends, or about to look at the queue) are not keeping up.
//!
//! Under a steady load the workers awake then find a job waiting whenever they finish one, and
//! none of them sleeps: a request costs the one switch of its backend wait. The number of workers
//! awake adapts: one more every [`WAKE_AFTER`] while jobs wait longer than that, one fewer each
//! time a worker finds the queue empty. A slow backend holding every awake worker delays a new
//! job by [`WAKE_AFTER`] at most before another worker takes it.
//!
//! The worker that slept last is woken first (a stack): its stack and the data it touched are
//! still in the CPU's cache, and the workers at the bottom of the stack stay asleep, costing
//! nothing.
//!
//! Worked example, 64 workers, 50 keep-alive clients, one fast backend: at first one worker is
//! woken for the first job; as jobs arrive faster than it answers them, the oldest waits 1 ms
//! and a second is woken, a millisecond later a third... until the queue's oldest job waits
//! less than 1 ms. From then on each worker awake finds the next job waiting as it finishes one,
//! and the others sleep: a request costs the switch of its backend wait and a share of the
//! poller's (1.27 switches per request measured, against 2.0 when every worker waited on the
//! channel with crossbeam's spinning and yielding and each backend read yielded before it slept).
//!
//! A worker goes to sleep in two steps so that no job is missed: it puts itself on the stack,
//! then looks at the queue once more; a job that came in between is taken by it (it takes itself
//! off the stack again), and a job that comes later finds it on the stack.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long the oldest waiting job waits for a worker already awake before a sleeping one is
/// woken; and at least how long between two such wake-ups. 1 ms: many times what a worker takes
/// for a request to a nearby backend, so that a steady load is served by the workers awake, and
/// far below what a client notices. Measured under `wrk -c50` against one nginx (context
/// switches per request, CPU per request): 200 µs kept too many workers awake (1.46, 33.6 µs),
/// 1 ms 1.27 and 26.4 µs, 2 ms and 5 ms too few (1.65 and 1.98: requests waited behind busy
/// workers long enough to be preempted).
pub const WAKE_AFTER: Duration = Duration::from_millis(1);

/// The sleeping workers (see the module documentation).
pub(crate) struct Idle {
    /// Sleeping workers, the most recent last: `(worker number, its thread)`.
    sleeping: Mutex<Vec<(usize, Thread)>>,
    /// `sleeping.len()`, readable without the lock.
    asleep: AtomicUsize,
    /// Workers in all.
    workers: usize,
    /// When a worker was last woken for a job that waited (the poller's alone).
    last_wake: Mutex<Option<Instant>>,
}

impl Idle {
    /// No worker asleep yet, of `workers`.
    pub fn new(workers: usize) -> Idle {
        Idle {
            sleeping: Mutex::new(Vec::with_capacity(workers)),
            asleep: AtomicUsize::new(0),
            workers,
            last_wake: Mutex::new(None),
        }
    }

    /// Workers asleep now.
    pub fn asleep(&self) -> usize {
        self.asleep.load(SeqCst)
    }

    /// Called by the poller after it queued a job: wakes a worker if none is awake.
    pub fn job_queued(&self) {
        if self.asleep() == self.workers {
            self.wake_one();
        }
    }

    /// When the poller should wake a worker for jobs that wait, the oldest since `oldest`: `None`
    /// when no worker sleeps.
    pub fn wake_due(&self, oldest: Instant) -> Option<Instant> {
        if self.asleep() == 0 {
            return None;
        }
        let due = oldest + WAKE_AFTER;
        Some(match *self.last_wake.lock() {
            Some(last) => due.max(last + WAKE_AFTER),
            None => due,
        })
    }

    /// Called by the poller when the oldest job has waited since `oldest`: wakes one worker if
    /// it is due (see [`Idle::wake_due`]).
    pub fn waited(&self, oldest: Instant, now: Instant) {
        if self.wake_due(oldest).is_some_and(|due| due <= now) {
            *self.last_wake.lock() = Some(now);
            self.wake_one();
        }
    }

    /// Wakes the worker that slept last, if any.
    fn wake_one(&self) {
        let woken = {
            let mut sleeping = self.sleeping.lock();
            let woken = sleeping.pop();
            if woken.is_some() {
                self.asleep.fetch_sub(1, SeqCst);
            }
            woken
        };
        if let Some((_, thread)) = woken {
            thread.unpark();
        }
    }

    /// Wakes every worker (the server stops: they find the queue closed).
    pub fn wake_all(&self) {
        let all: Vec<(usize, Thread)> = {
            let mut sleeping = self.sleeping.lock();
            self.asleep.store(0, SeqCst);
            sleeping.drain(..).collect()
        };
        for (_, thread) in all {
            thread.unpark();
        }
    }

    /// Worker `me` found no job: it sleeps until woken, unless `job_waiting` says a job came
    /// while it was lying down. May return without being woken (a spurious wake-up): the
    /// caller looks at the queue again either way.
    pub fn sleep(&self, me: usize, job_waiting: impl Fn() -> bool) {
        {
            let mut sleeping = self.sleeping.lock();
            sleeping.push((me, thread::current()));
            self.asleep.fetch_add(1, SeqCst);
        }
        if job_waiting() {
            let mut sleeping = self.sleeping.lock();
            if let Some(at) = sleeping.iter().rposition(|(id, _)| *id == me) {
                sleeping.remove(at);
                self.asleep.fetch_sub(1, SeqCst);
                return;
            }
            // Already taken off the stack by a waker: its unpark is on its way, and the park
            // below returns at once.
        }
        thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_job_wakes_a_worker_only_when_none_is_awake() {
        let idle = Idle::new(2);
        idle.job_queued();
        assert_eq!(idle.asleep(), 0, "nobody to wake");
        let idle = Arc::new(idle);
        let sleeper = |me| {
            let idle = Arc::clone(&idle);
            thread::spawn(move || idle.sleep(me, || false))
        };
        let (a, b) = (sleeper(0), sleeper(1));
        while idle.asleep() < 2 {
            thread::yield_now();
        }
        idle.job_queued();
        assert_eq!(idle.asleep(), 1, "one woken: none was awake");
        idle.job_queued();
        assert_eq!(idle.asleep(), 1, "one is awake now: the job waits for it");
        idle.wake_all();
        a.join().unwrap();
        b.join().unwrap();
    }

    #[test]
    fn a_waiting_job_wakes_one_more_worker_at_most_every_wake_after() {
        let idle = Arc::new(Idle::new(3));
        let sleepers: Vec<_> = (0..2)
            .map(|me| {
                let idle = Arc::clone(&idle);
                thread::spawn(move || idle.sleep(me, || false))
            })
            .collect();
        while idle.asleep() < 2 {
            thread::yield_now();
        }
        let t0 = Instant::now();
        assert_eq!(idle.wake_due(t0), Some(t0 + WAKE_AFTER));
        idle.waited(t0, t0 + WAKE_AFTER / 2);
        assert_eq!(idle.asleep(), 2, "not waited long enough");
        idle.waited(t0, t0 + WAKE_AFTER);
        assert_eq!(idle.asleep(), 1);
        // The same old job: the next worker only WAKE_AFTER after the last wake-up.
        let later = t0 + WAKE_AFTER + WAKE_AFTER / 2;
        idle.waited(t0, later);
        assert_eq!(idle.asleep(), 1);
        assert_eq!(idle.wake_due(t0), Some(t0 + 2 * WAKE_AFTER));
        idle.waited(t0, t0 + 2 * WAKE_AFTER);
        assert_eq!(idle.asleep(), 0);
        assert_eq!(idle.wake_due(t0), None, "nobody left asleep");
        for s in sleepers {
            s.join().unwrap();
        }
    }

    #[test]
    fn a_worker_lying_down_as_a_job_comes_takes_it() {
        let idle = Idle::new(1);
        // The job came between the empty look and the push: the second look sees it.
        idle.sleep(0, || true);
        assert_eq!(idle.asleep(), 0);
    }
}

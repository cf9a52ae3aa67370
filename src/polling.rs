//! Looking a few more times before going to sleep (see [`poll_yielding`]).

use std::thread;

/// How many times [`poll_yielding`] looks. 4.
pub const LOOKS_BEFORE_SLEEP: usize = 4;

/// Calls `look` up to [`LOOKS_BEFORE_SLEEP`] times, yielding the CPU before each call after the
/// first, and returns the first `Some`. The caller sleeps (a blocking call) only on `None`.
///
/// Why: a thread that sleeps has to be woken by the kernel, and on the small virtual machines
/// this balancer is measured on that is the dearest thing it does. `perf bench sched pipe`
/// there takes 17 µs per round trip between two threads on one CPU and 121 µs across two,
/// where a yield with other work waiting is one switch and with none is a plain system call.
/// crossbeam's channels wait the same way (spin, then yield, then sleep), which is why the
/// workers' wait for a job was already cheap. Used where the balancer waits for something that
/// usually comes within microseconds under load:
/// - the acceptor waiting for tiny_http's next request (`server.rs`),
/// - a worker waiting for a backend's answer (`transport.rs`).
///
/// Measured under `wrk -c50` against three nginx backends (2 cores): voluntary context switches
/// per request went from 0.59 to 0.00 in the acceptor and from 1.18 to 0.27 in the workers, and
/// CPU per request fell by about 13 % (median of 8 alternating runs; README, Performance).
///
/// Example: the acceptor finds tiny_http's queue empty and yields; a connection thread parses
/// a request and queues it; the acceptor's second look takes it. Had nothing come by the fourth
/// look, the acceptor would block in `recv` as before: an idle balancer makes four extra
/// system calls per wait, not a busy loop.
pub fn poll_yielding<T>(mut look: impl FnMut() -> Option<T>) -> Option<T> {
    for i in 0..LOOKS_BEFORE_SLEEP {
        if i > 0 {
            thread::yield_now();
        }
        if let Some(found) = look() {
            return Some(found);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_at_most_four_times_and_stops_at_the_first_find() {
        let mut calls = 0;
        assert_eq!(
            poll_yielding(|| -> Option<()> {
                calls += 1;
                None
            }),
            None
        );
        assert_eq!(calls, LOOKS_BEFORE_SLEEP);

        let mut calls = 0;
        let found = poll_yielding(|| {
            calls += 1;
            (calls == 2).then_some("second")
        });
        assert_eq!((found, calls), (Some("second"), 2));
    }
}

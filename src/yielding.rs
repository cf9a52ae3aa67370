//! Looking a few more times, yielding, before going to sleep (see [`poll_yielding`]).

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
/// workers' wait for a job was already cheap. Used where a worker waits for something that
/// usually comes within microseconds under load: a backend's answer (`transport.rs`).
///
/// Measured under `wrk -c50` against three nginx backends (2 cores): voluntary context switches
/// per request in the workers went from 1.18 to 0.27, and CPU per request fell by about 13 %
/// (median of 8 alternating runs; docs/PERFORMANCE.md).
///
/// Example: a worker has sent a request to a backend nearby and finds nothing to read yet; it
/// yields, the backend answers, and the second look reads the answer. Had nothing come by the
/// fourth look, the worker would block in `recv`: an idle wait costs four extra system calls,
/// not a busy loop.
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

//! The response timeout is the longest a client waits for an answer's head: a backend that took
//! the request and stays silent gets the client a 504 after one response timeout, and the request
//! is not sent to another backend, unless `retries ... retry_timeouts=on` asks for that.

use std::time::{Duration, Instant};

use crate::support::{self, Backend, Lb};

const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends one GET through a balancer over `[silent, answering]` (a fresh pool with equal weights
/// picks the first backend first); returns the status, body and time taken.
fn get_through(silent: &Backend, live: &Backend, retry_timeouts: bool) -> (u16, String, Duration) {
    let lb = Lb::start(&[(silent, 1), (live, 1)], |c| {
        c.timeouts.response = RESPONSE_TIMEOUT;
        c.retries.on_timeout = retry_timeouts;
        c.drain_timeout = Duration::from_millis(100);
    });
    let started = Instant::now();
    let r = support::get(lb.addr, "/report");
    (r.status, r.text(), started.elapsed())
}

#[test]
fn a_silent_backend_gets_the_client_a_504_after_one_response_timeout_without_retry() {
    let (silent, live) = (Backend::silent(), Backend::answering("live"));
    let (status, body, took) = get_through(&silent, &live, false);
    assert_eq!(status, 504, "{body}");
    assert!(
        took >= RESPONSE_TIMEOUT - Duration::from_millis(50) && took < Duration::from_millis(1900),
        "504 after {took:?}: expected one response timeout ({RESPONSE_TIMEOUT:?}), not one per backend"
    );
    assert_eq!(silent.count(), 1, "the silent backend got the request once");
    assert_eq!(
        live.count(),
        0,
        "the request was not sent to another backend"
    );
}

#[test]
fn retry_timeouts_on_sends_the_request_to_another_backend_after_a_timeout() {
    let (silent, live) = (Backend::silent(), Backend::answering("live"));
    let (status, body, took) = get_through(&silent, &live, true);
    assert_eq!((status, body.as_str()), (200, "live"));
    assert!(
        took >= RESPONSE_TIMEOUT - Duration::from_millis(50),
        "answered after {took:?}: the retry must come after the first backend's timeout"
    );
    assert_eq!((silent.count(), live.count()), (1, 1));
}

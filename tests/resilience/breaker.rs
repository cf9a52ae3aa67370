//! Resilience, measured with real backends: the circuit breaker ejects a backend that answers 503
//! to everything after N consecutive failures (clients see at most N + 1 of its 503s), and retries
//! follow the rule "a request that reached a backend is retried only if it is idempotent and its
//! body was not consumed; one that never reached a backend may be retried whatever its method".
//!
//! More in `health.rs` (kill, restart, slow start, no backend available) and `weights.rs`
//! (latency-driven weights, exact ratios under load).

use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use crate::support::{note, serial, test_config, Backend, Lb, LogCapture, Session};

/// One backend of three answers 503 to everything; a sequential client sends 200 GETs. With a
/// cooldown far longer than the test, the breaker never turns half-open, so exactly the N
/// failures that open it reach the client (the 503 is the backend's answer and is passed through,
/// not retried).
fn eject_after(failures: Option<u32>) {
    let logs = LogCapture::install();
    let mark = logs.mark();
    let (nodes, mut config) = crate::three_backends();
    nodes[1].set_failing(true);
    if let Some(n) = failures {
        config.breaker.failures = n;
    }
    let n = config.breaker.failures;
    config.breaker.cooldown = Duration::from_secs(60);
    let lb = Lb::with_config(config);
    let b = lb.running().pool().backends()[1].clone();

    let mut session = Session::new(lb.addr);
    let mut errors: Vec<(usize, u16, String)> = Vec::new();
    let mut opened_after: Option<usize> = None;
    let mut answers = [0usize; 3];
    for i in 0..200 {
        let r = session
            .get(&format!("/e/{i}"))
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        if r.status == 200 {
            let k = ["a", "b", "c"].iter().position(|x| x.as_bytes() == r.body);
            answers[k.expect("answer from a node")] += 1;
        } else {
            errors.push((i, r.status, r.text()));
        }
        if opened_after.is_none() && b.snapshot(Instant::now(), Duration::ZERO).breaker == "open" {
            opened_after = Some(i + 1);
        }
    }
    let s = b.snapshot(Instant::now(), Duration::ZERO);
    note(format!(
        "503 backend, breaker failures={n}: client saw {} errors {:?}; breaker open after request \
         {opened_after:?}; b received {} requests; answers a/b/c {answers:?}; b state {} breaker {}",
        errors.len(),
        errors.iter().map(|(i, s, _)| (*i, *s)).collect::<Vec<_>>(),
        nodes[1].count_except_health(),
        s.state,
        s.breaker
    ));

    assert!(
        errors
            .iter()
            .all(|(_, status, text)| *status == 503 && text == "b"),
        "the errors are b's own 503s, passed through: {errors:?}"
    );
    assert!(
        errors.len() <= n as usize + 1,
        "clients saw {} errors, more than N + 1 = {}",
        errors.len(),
        n + 1
    );
    assert!(
        errors.len() >= n as usize,
        "the breaker opens after N = {n} consecutive failures, not before: {} errors",
        errors.len()
    );
    assert_eq!(s.breaker, "open", "{s:?}");
    assert_eq!(
        nodes[1].count_except_health(),
        errors.len(),
        "b gets nothing once ejected"
    );
    assert_eq!(
        answers[0] + answers[2],
        200 - errors.len(),
        "everything else answered by a and c"
    );
    let opened = logs.matching(mark, &[&nodes[1].lb_name(), "breaker open"]);
    assert_eq!(opened.len(), 1, "the opening is logged once: {opened:#?}");
}

#[test]
fn a_backend_answering_503_is_ejected_after_5_failures_and_clients_see_at_most_6_errors() {
    let _serial = serial();
    eject_after(None);
}

#[test]
fn the_ejection_threshold_follows_the_breaker_setting() {
    let _serial = serial();
    eject_after(Some(2));
}

const POST: &str = "POST /orders HTTP/1.1\r\nHost: lb.test\r\nContent-Type: text/plain\r\n\
                    Content-Length: 11\r\n\r\nhello world";

#[test]
fn a_post_whose_backend_drops_the_connection_after_the_body_is_not_retried() {
    let _serial = serial();
    let dropping = Backend::named("dropping");
    dropping.set_dropping(true);
    let live = Backend::named("live");
    // Equal weights, a fresh pool: the first pick is the first backend.
    let lb = Lb::with_config(test_config(&[(&dropping, 1), (&live, 1)]));
    let mut session = Session::new(lb.addr);
    let r = session.call(POST).expect("an answer");
    note(format!(
        "POST to a backend that drops after the body: {} {:?}; dropping saw {:?}, live saw {:?}",
        r.status,
        r.text(),
        dropping.seen(),
        live.seen()
    ));
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(
        dropping.count_except_health(),
        1,
        "the POST reached the first backend once"
    );
    assert_eq!(
        live.count_except_health(),
        0,
        "the POST was not sent again to the other backend"
    );
}

#[test]
fn a_get_whose_backend_drops_the_connection_is_retried_on_another() {
    let _serial = serial();
    let dropping = Backend::named("dropping");
    dropping.set_dropping(true);
    let live = Backend::named("live");
    let lb = Lb::with_config(test_config(&[(&dropping, 1), (&live, 1)]));
    let r = Session::new(lb.addr).get("/idempotent").expect("an answer");
    assert_eq!((r.status, r.text().as_str()), (200, "live"));
    assert_eq!(
        (dropping.count_except_health(), live.count_except_health()),
        (1, 1)
    );
}

#[test]
fn a_post_whose_backend_refuses_the_connection_is_retried_on_another() {
    let _serial = serial();
    let dead = Backend::named("dead");
    dead.kill();
    let live = Backend::named("live");
    let lb = Lb::with_config(test_config(&[(&dead, 1), (&live, 1)]));
    let mut session = Session::new(lb.addr);
    let started = Instant::now();
    let r = session.call(POST).expect("an answer");
    note(format!(
        "POST to a refusing backend: {} {:?} in {:?}; live saw {:?}",
        r.status,
        r.text(),
        started.elapsed(),
        live.seen()
    ));
    assert_eq!((r.status, r.text().as_str()), (200, "live"));
    assert_eq!(
        live.seen(),
        ["POST /orders"],
        "the live backend got the POST once"
    );
    let attempts: Vec<u64> = lb
        .running()
        .pool()
        .backends()
        .iter()
        .map(|b| b.stats.requests.load(SeqCst))
        .collect();
    assert_eq!(
        attempts,
        [1, 1],
        "one attempt at the dead backend, then the live one"
    );
}

//! The retry budget, measured with real backends: a backend killed under load, with dozens of
//! requests in flight to it, costs no request (the budget is sized by the traffic of the last
//! 10 s, not a fixed reserve); and in an outage where every backend fails, retries stay within
//! `budget=` % of the requests plus the floor of 100 per 10 s, and every request refused a retry
//! says so in the access log and in `/metrics`.

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use crate::support::{health_checks, note, serial, wait_until, Lb, Traffic};

/// Clients of the kill test: each keeps one request in flight on its keep-alive connection.
const CLIENTS: usize = 100;

/// What every backend waits before it answers, so that a third of the clients' requests are
/// in flight to each backend at any moment, and the killed one takes about 33 down with it.
const BACKEND_DELAY: Duration = Duration::from_millis(50);

/// 100 keep-alive clients on three backends; one backend is killed (its listener and every open
/// connection closed at once) while about a third of the requests are in flight to it. Every
/// one of those is a GET that got no answer, so every one is retried on another backend: no
/// client sees a failure. Before the budget was sized by traffic, it held at most 10 retries
/// and the other requests in flight were answered 502.
#[test]
fn a_backend_killed_under_load_costs_no_request() {
    let _serial = serial();
    let (nodes, mut config) = crate::three_backends();
    for n in &nodes {
        n.set_delay(BACKEND_DELAY);
    }
    // A worker per client: every request is in flight to a backend, none waits in the queue.
    config.workers = 2 * CLIENTS;
    health_checks(
        &mut config,
        Duration::from_millis(500),
        Duration::from_secs(1),
        2,
        3,
    );
    let lb = Lb::with_config(config);
    let shared = lb.running().shared();
    let b = lb.running().pool().backends()[1].clone();
    let traffic = Traffic::start(lb.addr, CLIENTS, &["a", "b", "c"], 100);
    let answered = || traffic.totals().iter().sum::<u64>();

    // The load is on once every client has been answered a few times.
    wait_until("500 answers", Duration::from_secs(60), || answered() >= 500);
    wait_until(
        "a third of the clients in flight to b",
        Duration::from_secs(30),
        || b.stats.in_flight.load(SeqCst) >= CLIENTS as u64 / 4,
    );
    let in_flight = b.stats.in_flight.load(SeqCst);
    let retries_before = shared.metrics.retries();
    nodes[1].kill();
    let killed_at = answered();
    wait_until(
        "1 000 answers after the kill",
        Duration::from_secs(60),
        || answered() >= killed_at + 1000,
    );
    let retries = shared.metrics.retries() - retries_before;
    let seen = traffic.stop();
    note(format!(
        "kill under load: {in_flight} requests in flight to b, {retries} retried, answers a/b/c \
         {:?}, {} failed: {:?}",
        seen.totals,
        seen.failures.len(),
        seen.failures.iter().take(5).collect::<Vec<_>>()
    ));
    assert!(
        seen.failures.is_empty(),
        "{} of {} requests failed after the kill of a backend holding {in_flight}: {:?}",
        seen.failures.len(),
        seen.totals.iter().sum::<u64>() + seen.failures.len() as u64,
        seen.failures.iter().take(10).collect::<Vec<_>>()
    );
    assert!(
        retries > 10,
        "the kill took more requests than a reserve of 10 would retry: {retries} retries"
    );
}

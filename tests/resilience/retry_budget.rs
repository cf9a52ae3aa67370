//! The retry budget, measured with real backends: a backend killed under load, with dozens of
//! requests in flight to it, costs no request (the budget is sized by the traffic of the last
//! 10 s, not a fixed reserve); and in an outage where every backend fails, retries stay within
//! `budget=` % of the requests plus the floor of 100 per 10 s, and every request refused a retry
//! says so in the access log and in `/metrics`.

use std::sync::atomic::Ordering::SeqCst;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{
    admin_on, admin_status, health_checks, note, serial, wait_until, Client, Lb, LogCapture,
    Session, Traffic,
};

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

/// Requests of the outage test, sent by `OUTAGE_CLIENTS` keep-alive clients.
const OUTAGE_REQUESTS: u64 = 600;
const OUTAGE_CLIENTS: u64 = 6;

/// One counter of the `/metrics` text: the value of the sample line starting with `name`.
fn sample(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{metrics}"))
}

/// Every backend closes each connection without an answer (and their breakers never open, so
/// that every request reaches one): each of 600 GETs would be tried on all three, 1 200 retries
/// in all. The budget allows 20 % of the requests in the window plus the floor of 100: at most
/// 220. Each request it refused a retry is logged with `reason=retry_budget_exhausted` and
/// counted in `lb_retries_refused_total{why="budget"}`; `/status` shows the balance spent, and
/// what a reload to `budget=50%` makes of it.
#[test]
fn in_an_outage_retries_stay_within_the_budget() {
    let _serial = serial();
    let logs = LogCapture::install();
    let mark = logs.mark();
    // Backends of our own that close every connection unanswered, rather than ports nothing
    // listens on: another process on the machine could bind a released port.
    let (nodes, mut config) = crate::three_backends();
    for n in &nodes {
        n.set_dropping(true);
    }
    config.breaker.failures = 1_000_000;
    config.access_log = true;
    admin_on(&mut config);
    assert_eq!(
        (config.retries.count, config.retries.budget_percent),
        (2, 20),
        "the defaults"
    );
    let lb = Lb::with_config(config);
    let admin = lb.running().admin_addr().unwrap();

    let started = Instant::now();
    let statuses: Vec<u16> = thread::scope(|s| {
        let clients: Vec<_> = (0..OUTAGE_CLIENTS)
            .map(|c| {
                s.spawn(move || {
                    let mut session = Session::new(lb.addr);
                    (0..OUTAGE_REQUESTS / OUTAGE_CLIENTS)
                        .map(|i| session.get(&format!("/o/{c}/{i}")).unwrap().status)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    let took = started.elapsed();
    assert!(statuses.iter().all(|s| *s == 502), "{statuses:?}");
    // A worker counts and logs a request after its answer is on its way: wait for the last line.
    let lines = || logs.matching(mark, &[" GET /o/", " 502 "]);
    wait_until(
        "an access line per request",
        Duration::from_secs(10),
        || lines().len() as u64 >= OUTAGE_REQUESTS,
    );

    let metrics = Client::connect(admin)
        .request("GET /metrics HTTP/1.1\r\nHost: admin.test\r\nConnection: close\r\n\r\n")
        .text();
    let retries = sample(&metrics, "lb_retries_total");
    let refused = sample(&metrics, "lb_retries_refused_total{why=\"budget\"}");
    let n = OUTAGE_REQUESTS;
    assert_eq!(sample(&metrics, "lb_responses_total{code=\"502\"}"), n);
    // Every request was tried on one backend after another until the budget or the backends ran
    // out. Over a time within one window (10 s), retries stay within 20 % + the floor; over a
    // longer one (a very slow machine), each request is in at most two windows of the ones that
    // cover the time.
    let bound = if took < Duration::from_secs(9) {
        n / 5 + 100
    } else {
        2 * n / 5 + 100 * took.as_secs().div_ceil(9)
    };
    note(format!(
        "outage: {n} requests in {took:?}, {retries} retries (bound {bound}), {refused} refused \
         by the budget"
    ));
    assert!(retries <= bound, "{retries} retries for {n} requests");
    assert!(retries >= n / 5, "the budget was spent: {retries} retries");
    assert!(refused > 0 && refused <= n, "{refused} refused");

    // The access log: every request once, its retries in `attempts=`, the budget's refusals by
    // name.
    let lines = lines();
    assert_eq!(lines.len() as u64, n, "one access line per request");
    let attempts = |l: &str| -> u64 {
        l.split_whitespace()
            .find_map(|w| w.strip_prefix("attempts=")?.parse().ok())
            .unwrap_or(1)
    };
    let logged_retries: u64 = lines.iter().map(|l| attempts(l) - 1).sum();
    assert_eq!(logged_retries, retries, "the log and /metrics agree");
    let exhausted = lines
        .iter()
        .filter(|l| l.contains(" reason=retry_budget_exhausted"))
        .count() as u64;
    assert_eq!(exhausted, refused, "{:?}", &lines[lines.len() - 3..]);

    let budget = &admin_status(admin)["retry_budget"];
    note(format!("/status retry_budget: {budget}"));
    assert_eq!(budget["percent"], 20);
    assert_eq!(budget["refused"].as_u64(), Some(refused));
    // Every request is still in the window while less than 9 s went by since the first.
    let in_one_window = || started.elapsed() < Duration::from_secs(9);
    if in_one_window() {
        assert_eq!(budget["window_requests"].as_u64(), Some(n));
        assert_eq!(budget["window_retries"].as_u64(), Some(retries));
        assert_eq!(budget["balance"], 0, "spent");
    }

    // A reload to `budget=50%` keeps the window: its 600 requests now earn 300 retries, of which
    // the outage spent 220 (less the floor's 100).
    let mut config = lb.running().config();
    config.retries.budget_percent = 50;
    lb.running().apply(config);
    let budget = &admin_status(admin)["retry_budget"];
    note(format!("after a reload to 50 %: {budget}"));
    assert_eq!(budget["percent"], 50);
    if in_one_window() {
        assert_eq!(budget["balance"].as_u64(), Some(100 + n / 2 - retries));
    }
}

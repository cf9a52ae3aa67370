//! Resilience, measured with real backends: a backend killed under traffic (no request fails, its
//! breaker opens, health checks mark it down), the same backend restarted (back within
//! `interval × rise` plus a second, then ramped up by slow start), and the answer when no backend
//! is available at all (503 + Retry-After at once).
//!
//! Health checks run every 200 ms with a 200 ms timeout, rise 2, fall 3, so that all of this takes
//! seconds. The tests of this file run one at a time ([`serial`]).

use std::time::{Duration, Instant};

use crate::support::{
    self, health_checks, note, poll, serial, test_config, Backend, Headers, Lb, LogCapture, Session,
};

const INTERVAL: Duration = Duration::from_millis(200);
const RISE: u32 = 2;
const FALL: u32 = 3;
const TIMEOUT: Duration = Duration::from_millis(200);

#[test]
fn killing_one_of_three_backends_fails_no_request_opens_its_breaker_and_health_marks_it_down() {
    let _serial = serial();
    let logs = LogCapture::install();
    let mark = logs.mark();
    let (nodes, mut config) = crate::three_backends();
    health_checks(&mut config, INTERVAL, TIMEOUT, RISE, FALL);
    let failures_to_open = config.breaker.failures;
    assert_eq!(failures_to_open, 5, "the default breaker threshold");
    let lb = Lb::with_config(config);
    let b = lb.running().pool().backends()[1].clone();
    let snapshot = || b.snapshot(Instant::now(), Duration::ZERO);

    let mut session = Session::new(lb.addr);
    let mut failed: Vec<String> = Vec::new();
    let mut answered = [0u64; 3];
    let mut send = |i: u64, failed: &mut Vec<String>, answered: &mut [u64; 3]| match session
        .get(&format!("/k/{i}"))
    {
        Ok(r) if r.status == 200 => {
            let k = ["a", "b", "c"].iter().position(|n| n.as_bytes() == r.body);
            answered[k.expect("answer from a node")] += 1;
        }
        Ok(r) => failed.push(format!("request {i}: {} {:?}", r.status, r.text())),
        Err(e) => failed.push(format!("request {i}: {e}")),
    };
    for i in 0..30 {
        send(i, &mut failed, &mut answered);
    }
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(
        answered,
        [10, 10, 10],
        "all three in rotation before the kill"
    );

    let attempts_before = b.stats.requests.load(std::sync::atomic::Ordering::SeqCst);
    nodes[1].kill();
    let killed = Instant::now();
    let mut breaker_opened: Option<Duration> = None;
    let mut marked_down: Option<Duration> = None;
    let mut sent = 0u64;
    // Sequential GETs: at least 300, and on until health checks have marked b down.
    while sent < 300 || marked_down.is_none() {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "b not marked down 10 s after the kill: {:?}",
            snapshot()
        );
        send(100 + sent, &mut failed, &mut answered);
        sent += 1;
        let s = snapshot();
        if s.breaker == "open" && breaker_opened.is_none() {
            breaker_opened = Some(killed.elapsed());
        }
        if !s.healthy && marked_down.is_none() {
            marked_down = Some(killed.elapsed());
        }
    }
    // And a few more once it is down: it gets no attempt at all.
    let attempts_when_down = b.stats.requests.load(std::sync::atomic::Ordering::SeqCst);
    for i in 0..50 {
        send(10_000 + i, &mut failed, &mut answered);
    }
    let attempts_after = b.stats.requests.load(std::sync::atomic::Ordering::SeqCst);
    let s = snapshot();
    note(format!(
        "kill: {sent} sequential GETs after the kill, {} failed; breaker open after {breaker_opened:?}, \
         marked down after {marked_down:?}; attempts to b after the kill: {}; b: state {} breaker {} \
         last_error {:?}",
        failed.len(),
        attempts_after - attempts_before,
        s.state,
        s.breaker,
        s.last_error
    ));

    assert!(
        failed.is_empty(),
        "{} of {sent} GETs failed after the kill: {failed:?}",
        failed.len()
    );
    assert!(breaker_opened.is_some(), "b's breaker never opened: {s:?}");
    let down = marked_down.unwrap();
    let bound = INTERVAL * FALL + Duration::from_secs(1);
    assert!(
        down <= bound,
        "health checks marked b down {down:?} after the kill, more than interval × fall + 1 s = {bound:?}"
    );
    assert_eq!((s.state, s.healthy), ("unhealthy", false), "{s:?}");
    assert_eq!(
        attempts_after, attempts_when_down,
        "no attempt goes to a backend marked down"
    );
    assert!(
        attempts_after - attempts_before <= u64::from(failures_to_open),
        "the breaker stops attempts after {failures_to_open} failures, yet b got {} attempts",
        attempts_after - attempts_before
    );
    assert_eq!(answered[1], 10, "b answered nothing after the kill");

    // Each state change is logged once.
    let name = nodes[1].lb_name();
    let opened = logs.matching(mark, &[&name, "breaker open"]);
    let unhealthy = logs.matching(mark, &[&name, ": unhealthy"]);
    assert_eq!(opened.len(), 1, "breaker opening logged once: {opened:#?}");
    assert_eq!(
        unhealthy.len(),
        1,
        "marked down logged once: {unhealthy:#?}"
    );
    for other in [&nodes[0], &nodes[2]] {
        assert!(
            logs.matching(mark, &[&other.lb_name()])
                .iter()
                .all(|l| !l.starts_with("WARN")),
            "no warning about the live backends"
        );
    }
}

#[test]
fn a_restarted_backend_is_back_within_interval_times_rise_and_ramps_up_by_slow_start() {
    let _serial = serial();
    let logs = LogCapture::install();
    let mark = logs.mark();
    const SLOW_START: Duration = Duration::from_secs(2);
    let (nodes, mut config) = crate::three_backends();
    health_checks(&mut config, INTERVAL, TIMEOUT, RISE, FALL);
    config.slow_start = SLOW_START;
    let lb = Lb::with_config(config);
    let b = lb.running().pool().backends()[1].clone();
    let who = |r: &support::Response| {
        ["a", "b", "c"]
            .iter()
            .position(|n| n.as_bytes() == r.body)
            .unwrap_or_else(|| panic!("unexpected answer {} {:?}", r.status, r.text()))
    };
    let mut session = Session::new(lb.addr);
    let mut request = |i: u64| {
        let r = session
            .get(&format!("/r/{i}"))
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        who(&r)
    };
    for i in 0..30 {
        request(i);
    }
    assert_eq!(
        b.effective_weight(),
        100,
        "a backend present at start does not ramp"
    );

    nodes[1].kill();
    let mut i = 100;
    poll("b marked down", Duration::from_secs(5), || {
        i += 1;
        request(i);
        (!b.is_healthy()).then_some(())
    });

    nodes[1].restart();
    let restarted = Instant::now();
    // Back in rotation: the first request b answers. Sequential GETs meanwhile, all 200.
    // `up` is when b was first seen healthy (the slow-start clock starts just before).
    let mut up: Option<Instant> = None;
    let note_up = |up: &mut Option<Instant>| {
        if up.is_none() && b.is_healthy() {
            *up = Some(Instant::now());
        }
    };
    poll("b back in rotation", Duration::from_secs(10), || {
        i += 1;
        note_up(&mut up);
        let k = request(i);
        note_up(&mut up);
        (k == 1).then_some(())
    });
    let back = restarted.elapsed();
    let up = up.expect("b answers only once healthy");
    let healthy_at = up - restarted;
    let bound = INTERVAL * RISE + Duration::from_secs(1);

    // The ramp: sequential GETs for the slow-start period and a bit more, noting who answered
    // and b's effective weight (100 = its full configured weight of 1) over time.
    let mut answers: Vec<(Duration, usize)> = Vec::new();
    let mut weights: Vec<(Duration, u32)> = Vec::new();
    let mut full_at: Option<Duration> = None;
    while up.elapsed() < SLOW_START + Duration::from_millis(1200) {
        i += 1;
        let k = request(i);
        let t = up.elapsed();
        answers.push((t, k));
        let w = b.effective_weight();
        if weights.last().is_none_or(|&(_, last)| last != w) {
            weights.push((t, w));
        }
        if w == 100 && full_at.is_none() {
            full_at = Some(t);
        }
    }
    let count = |from: Duration, to: Duration| {
        let mut c = [0usize; 3];
        for &(t, k) in &answers {
            if t >= from && t < to {
                c[k] += 1;
            }
        }
        c
    };
    let first_second = count(Duration::ZERO, Duration::from_secs(1));
    let after_ramp = count(SLOW_START, Duration::MAX);
    note(format!(
        "restart: healthy after {healthy_at:?}, b answered again after {back:?} (bound {bound:?}); \
         weight steps (ms, weight): {:?}; full at {full_at:?}; answers a/b/c in the first second \
         {first_second:?}, after the ramp {after_ramp:?}",
        weights
            .iter()
            .map(|(t, w)| (t.as_millis(), *w))
            .collect::<Vec<_>>()
    ));

    assert!(
        back <= bound,
        "b back in rotation {back:?} after the restart, more than interval × rise + 1 s = {bound:?}"
    );
    // It starts low...
    let early_min = weights
        .iter()
        .filter(|(t, _)| *t < Duration::from_millis(500))
        .map(|&(_, w)| w)
        .min()
        .unwrap();
    assert!(
        early_min <= 30,
        "b's effective weight in the first 0.5 s after rejoining should be ≤ 30 % of full, \
         was at least {early_min}: {weights:?}"
    );
    // ...rises, not at once...
    let early_max = weights
        .iter()
        .filter(|(t, _)| *t < SLOW_START / 2)
        .map(|&(_, w)| w)
        .max()
        .unwrap();
    assert!(
        early_max < 100,
        "b at full weight before half of the slow-start period: {weights:?}"
    );
    // ...and never more than the ramp allows: at most 100 × (time since rejoining) / slow start
    // (with the 10 % floor; 100 ms of slack for the lag between the balancer's clock and ours).
    // It may be lower: latency counts too.
    let ceiling = |t: Duration| {
        let ramp = (t + Duration::from_millis(100)).as_secs_f64() / SLOW_START.as_secs_f64();
        (100.0 * ramp.clamp(0.1, 1.0)).round() as u32 + 1
    };
    let over: Vec<_> = weights.iter().filter(|&&(t, w)| w > ceiling(t)).collect();
    assert!(
        over.is_empty(),
        "b's weight above the slow-start ramp at {over:?}; all steps {weights:?}"
    );
    // ...and reaches full weight at the end of the ramp.
    let full = full_at.expect("b never reached full weight");
    assert!(
        full <= SLOW_START + Duration::from_secs(1),
        "b at full weight only {full:?} after rejoining (slow start {SLOW_START:?}): {weights:?}"
    );
    assert!(
        first_second[1] * 2 < first_second[0].min(first_second[2]),
        "b's share in the first second of the ramp should be clearly below the others': \
         a/b/c = {first_second:?}"
    );
    let name = nodes[1].lb_name();
    assert_eq!(
        logs.matching(mark, &[&name, "healthy again"]).len(),
        1,
        "coming back is logged once"
    );
    assert_eq!(logs.matching(mark, &[&name, ": unhealthy"]).len(), 1);
}

#[test]
fn all_backends_marked_down_by_health_checks_get_503_with_retry_after_at_once() {
    let _serial = serial();
    let nodes = [Backend::named("a"), Backend::named("b")];
    let mut config = test_config(&[(&nodes[0], 1), (&nodes[1], 1)]);
    health_checks(&mut config, INTERVAL, TIMEOUT, RISE, FALL);
    let connect_timeout = config.timeouts.connect;
    let lb = Lb::with_config(config);
    let r = support::get(lb.addr, "/before");
    assert_eq!(r.status, 200, "{}", r.text());
    let before = nodes[0].count_except_health() + nodes[1].count_except_health();

    // Both keep listening and would answer requests; only their health checks fail.
    for n in &nodes {
        n.set_healthy(false);
    }
    let backends = lb.running().pool().backends();
    let (_, took) = poll("both marked down", Duration::from_secs(5), || {
        backends.iter().all(|b| !b.is_healthy()).then_some(())
    });

    let mut timings = Vec::new();
    for i in 0..5 {
        let started = Instant::now();
        let r = support::get(lb.addr, &format!("/none/{i}"));
        let elapsed = started.elapsed();
        timings.push(elapsed);
        assert_eq!(r.status, 503, "request {i}: {}", r.text());
        let retry_after = r.header("retry-after");
        assert!(
            retry_after.is_some_and(|v| v.trim().parse::<u32>().is_ok_and(|s| s >= 1)),
            "503 without a valid Retry-After: {:?}",
            r.headers
        );
        assert!(
            elapsed < connect_timeout / 4,
            "503 took {elapsed:?}; connect timeout {connect_timeout:?}"
        );
    }
    note(format!(
        "all unhealthy: marked down after {took:?}; 503 + Retry-After in {timings:?}"
    ));
    assert_eq!(
        nodes[0].count_except_health() + nodes[1].count_except_health(),
        before,
        "no request reached a backend marked down"
    );
}

#[test]
fn all_backends_refusing_connections_answer_502_then_503_quickly() {
    let _serial = serial();
    // Health checks off: the balancer still tries the backends, and each refuses at once.
    let nodes = [Backend::named("a"), Backend::named("b")];
    let config = test_config(&[(&nodes[0], 1), (&nodes[1], 1)]);
    let connect_timeout = config.timeouts.connect;
    for n in &nodes {
        n.kill();
    }
    let lb = Lb::with_config(config);
    let mut seen = Vec::new();
    for i in 0..10 {
        let started = Instant::now();
        let r = support::get(lb.addr, &format!("/dead/{i}"));
        let elapsed = started.elapsed();
        seen.push((
            r.status,
            r.header("retry-after").map(str::to_string),
            elapsed,
        ));
        assert!(
            r.status == 502 || r.status == 503,
            "request {i}: {} {}",
            r.status,
            r.text()
        );
        if r.status == 503 {
            assert!(
                r.has_header("retry-after"),
                "503 without Retry-After: {:?}",
                r.headers
            );
        }
        assert!(
            elapsed < connect_timeout / 4,
            "request {i} took {elapsed:?}; connect timeout {connect_timeout:?}"
        );
    }
    note(format!(
        "all refusing: (status, Retry-After, time) {seen:?}"
    ));
    // Each request tries both (a retry), so both breakers open within the first five requests;
    // from then on the pick finds no backend: 503 + Retry-After without any attempt.
    assert_eq!(seen[0].0, 502, "{seen:?}");
    assert!(
        seen[5..].iter().all(|(s, ra, _)| *s == 503 && ra.is_some()),
        "once every breaker is open: 503 + Retry-After; {seen:?}"
    );
    let backends = lb.running().pool().backends();
    for b in &backends {
        let s = b.snapshot(Instant::now(), Duration::ZERO);
        assert_eq!(s.breaker, "open", "{s:?}");
    }
}

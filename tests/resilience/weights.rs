//! Dynamic weights under concurrent load, with real backends: a backend that turns 50 ms slower
//! loses its share (below 15 % within 5 s) and regains it when it is fast again (30 % or more
//! within 15 s); backends that perform alike keep exactly their configured ratios.
//!
//! Shares are measured over a sliding window of the most recent answers; every backend answers
//! with its own name. The tests of this file run one at a time ([`serial`]).

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{note, poll, serial, test_config, Backend, Lb, Session, Traffic};

/// Answers in the sliding window.
const WINDOW: usize = 300;

#[test]
fn a_backend_50ms_slower_loses_its_share_within_5s_and_regains_it_within_15s() {
    let _serial = serial();
    let nodes = [
        Backend::named("a"),
        Backend::named("b"),
        Backend::named("c"),
    ];
    let lb = Lb::with_config(test_config(&[
        (&nodes[0], 1),
        (&nodes[1], 1),
        (&nodes[2], 1),
    ]));
    let b = lb.running().pool().backends()[1].clone();
    let traffic = Traffic::start(lb.addr, 8, &["a", "b", "c"], WINDOW);

    // Alike: a third each.
    let (baseline, _) = poll("a full window", Duration::from_secs(10), || {
        traffic.share(1)
    });

    // b turns 50 ms slower.
    nodes[1].set_delay(Duration::from_millis(50));
    let slowed = Instant::now();
    let mut low_weight = u32::MAX;
    let (share_slow, fell_in) = poll("b's share below 15 %", Duration::from_secs(20), || {
        low_weight = low_weight.min(b.effective_weight());
        traffic.share(1).filter(|s| *s < 0.15)
    });
    // It stays low while slow, but never reaches zero: b keeps getting a trickle of requests,
    // which is how its recovery is seen.
    let during = traffic.totals()[1];
    let mut max_share_while_slow: f64 = 0.0;
    let hold = Instant::now();
    while hold.elapsed() < Duration::from_secs(1) {
        max_share_while_slow = max_share_while_slow.max(traffic.share(1).unwrap());
        low_weight = low_weight.min(b.effective_weight());
        thread::sleep(Duration::from_millis(20));
    }
    let trickle = traffic.totals()[1] - during;
    let slow_snapshot = b.snapshot(Instant::now(), Duration::ZERO);

    // b is fast again.
    nodes[1].set_delay(Duration::from_millis(0));
    let recovered = Instant::now();
    let (share_fast, back_in) = poll("b's share back to 30 %", Duration::from_secs(30), || {
        traffic.share(1).filter(|s| *s >= 0.30)
    });
    // Latency is averaged per 100 ms tick, so the weight reaches its full value a few ticks
    // after the share has come back; it must get there within the same 15 s.
    let (weight_after, _) = poll("b's full weight", Duration::from_secs(30), || {
        let w = b.effective_weight();
        (w == 100 || recovered.elapsed() > Duration::from_secs(15)).then_some(w)
    });
    let full_in = recovered.elapsed();
    let seen = traffic.stop();
    note(format!(
        "slow backend: baseline share {baseline:.3}; slowed → share {share_slow:.3} after {fell_in:?} \
         (max {max_share_while_slow:.3} over the next second, {trickle} answers from b meanwhile, \
         lowest effective weight {low_weight}, b latency EWMA {:?} ms); fast again → share \
         {share_fast:.3} after {back_in:?}, effective weight {weight_after}; totals {:?}; \
         {} failures; total time {:?}",
        slow_snapshot.latency_ms,
        seen.totals,
        seen.failures.len(),
        slowed.elapsed()
    ));

    assert!(
        seen.failures.is_empty(),
        "failed requests: {:?}",
        seen.failures
    );
    assert!(
        (0.2..=0.5).contains(&baseline),
        "alike backends share alike: b had {baseline:.3}"
    );
    assert!(
        fell_in <= Duration::from_secs(5),
        "b's share fell below 15 % only after {fell_in:?} (limit 5 s)"
    );
    assert!(
        max_share_while_slow < 0.15,
        "b's share went back up to {max_share_while_slow:.3} while still slow"
    );
    assert!(trickle > 0, "a slow backend still gets some requests");
    assert!(
        back_in <= Duration::from_secs(15),
        "b's share was back to 30 % only after {back_in:?} (limit 15 s)"
    );
    assert_eq!(
        weight_after, 100,
        "b's full weight once fast again (after {full_in:?}, limit 15 s)"
    );
}

#[test]
fn alike_backends_under_concurrent_load_split_exactly_3_2_1() {
    let _serial = serial();
    const CLIENTS: usize = 6;
    const EACH: usize = 100;
    let nodes = Arc::new([
        Backend::named("a"),
        Backend::named("b"),
        Backend::named("c"),
    ]);
    let lb = Lb::with_config(test_config(&[
        (&nodes[0], 3),
        (&nodes[1], 2),
        (&nodes[2], 1),
    ]));
    let addr = lb.addr;
    // Watches the effective weights while the clients run: any departure from 300/200/100 is
    // recorded with the latency EWMAs that caused it, to explain a count that is not exact.
    let done = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (done, backends) = (Arc::clone(&done), lb.running().pool().backends());
        thread::spawn(move || {
            let start = Instant::now();
            let mut departures: Vec<String> = Vec::new();
            let mut last: Vec<u32> = vec![300, 200, 100];
            while !done.load(SeqCst) {
                let w: Vec<u32> = backends.iter().map(|b| b.effective_weight()).collect();
                if w != last {
                    let lat: Vec<String> = backends
                        .iter()
                        .map(|b| {
                            let l = b.snapshot(Instant::now(), Duration::ZERO).latency_ms;
                            l.map_or("-".into(), |l| format!("{l:.1}"))
                        })
                        .collect();
                    departures.push(format!(
                        "{} ms: weights {w:?}, latency EWMAs {lat:?} ms",
                        start.elapsed().as_millis()
                    ));
                    last = w;
                }
                thread::sleep(Duration::from_millis(1));
            }
            departures
        })
    };
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            thread::spawn(move || {
                let mut session = Session::new(addr);
                let mut counts = [0usize; 3];
                for i in 0..EACH {
                    let r = session
                        .get(&format!("/w/{c}/{i}"))
                        .unwrap_or_else(|e| panic!("client {c} request {i}: {e}"));
                    assert_eq!(r.status, 200, "client {c} request {i}: {}", r.text());
                    let k = ["a", "b", "c"]
                        .iter()
                        .position(|n| n.as_bytes() == r.body)
                        .expect("answer from a node");
                    counts[k] += 1;
                }
                counts
            })
        })
        .collect();
    let mut counts = [0usize; 3];
    for c in clients {
        for (total, n) in counts.iter_mut().zip(c.join().unwrap()) {
            *total += n;
        }
    }
    let took = started.elapsed();
    done.store(true, SeqCst);
    let departures = monitor.join().unwrap();
    let at_backends: Vec<usize> = nodes.iter().map(|n| n.count_except_health()).collect();
    let weights: Vec<u32> = lb
        .running()
        .pool()
        .backends()
        .iter()
        .map(|b| b.effective_weight())
        .collect();
    let latencies: Vec<Option<f64>> = lb
        .running()
        .pool()
        .backends()
        .iter()
        .map(|b| b.snapshot(Instant::now(), Duration::ZERO).latency_ms)
        .collect();
    note(format!(
        "3:2:1 with {CLIENTS} clients: answers {counts:?}, at the backends {at_backends:?}, \
         effective weights after {weights:?}, latency EWMAs {latencies:?} ms, in {took:?}"
    ));
    assert_eq!(
        counts,
        [300, 200, 100],
        "answers per backend; effective weights during the run: {departures:#?}"
    );
    assert_eq!(at_backends, [300, 200, 100], "requests per backend");
}

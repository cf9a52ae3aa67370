//! Throughput and latency through the balancer versus straight to a backend, in one run.
//!
//! ```text
//! cargo bench --bench throughput            # defaults: 3 rounds, 5 s each, 50 connections
//! ROUNDS=5 SECS=10 CONNS=50 cargo bench --bench throughput
//! ```
//!
//! Three demo backends (servers/) and the balancer run in this process; a load generator with
//! `CONNS` keep-alive connections sends `GET /` for `SECS` seconds, first straight to one backend,
//! then through the balancer, `ROUNDS` times. It prints req/s, p50 and p99 for each phase and the
//! median ratio. Both phases share the same machine and the same moment, so the ratio is what to
//! compare across machines; the absolute numbers are not.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use loadbalancer::config::BackendConfig;
use loadbalancer::{Balancer, Config};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Phase {
    rps: f64,
    p50: Duration,
    p99: Duration,
    errors: u64,
}

/// One keep-alive client: sends requests until `stop`, recording each latency.
fn client(addr: SocketAddr, stop: Arc<AtomicBool>) -> (Vec<Duration>, u64) {
    let mut latencies = Vec::with_capacity(100_000);
    let mut errors = 0;
    'connect: while !stop.load(Relaxed) {
        let Ok(stream) = TcpStream::connect(addr) else {
            errors += 1;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let mut writer = stream.try_clone().expect("clone");
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        while !stop.load(Relaxed) {
            let start = Instant::now();
            if writer
                .write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
                .is_err()
            {
                errors += 1;
                continue 'connect;
            }
            let mut length = 0usize;
            let mut status_ok = false;
            let mut first = true;
            loop {
                line.clear();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => {
                        errors += 1;
                        continue 'connect;
                    }
                    Ok(_) => {}
                }
                if first {
                    status_ok = line.starts_with("HTTP/1.1 200");
                    first = false;
                } else if line == "\r\n" {
                    break;
                } else if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                errors += 1;
                continue 'connect;
            }
            if status_ok {
                latencies.push(start.elapsed());
            } else {
                errors += 1;
            }
        }
    }
    (latencies, errors)
}

fn run_phase(addr: SocketAddr, conns: u64, secs: u64) -> Phase {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let clients: Vec<_> = (0..conns)
        .map(|_| {
            let stop = Arc::clone(&stop);
            thread::spawn(move || client(addr, stop))
        })
        .collect();
    thread::sleep(Duration::from_secs(secs));
    stop.store(true, Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    for c in clients {
        let (l, e) = c.join().expect("client thread");
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Phase {
        rps: all.len() as f64 / elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
        errors,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds = env("ROUNDS", 3);
    let secs = env("SECS", 5);
    let conns = env("CONNS", 50);
    let backends: Vec<servers::DemoServer> = (1..=3)
        .map(|i| {
            servers::spawn(
                &format!("server{i}"),
                "127.0.0.1:0",
                servers::Behaviour::default(),
            )
            .expect("demo backend")
        })
        .collect();
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        admin: None,
        access_log: false,
        backends: backends
            .iter()
            .map(|b| BackendConfig::parse(&format!("http://{}", b.addr()), 1).expect("url"))
            .collect(),
        ..Config::default()
    };
    config.workers = env("WORKERS", config.workers as u64) as usize;
    let lb = Balancer::start(config).expect("balancer");
    let direct = backends[0].addr();
    println!("{rounds} rounds x {secs}s, {conns} keep-alive connections, GET / (small JSON)");
    println!(
        "{:<10} {:>10} {:>10} {:>10} {:>8}",
        "phase", "req/s", "p50", "p99", "errors"
    );
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let d = run_phase(direct, conns, secs);
        let b = run_phase(lb.addr(), conns, secs);
        for (name, p) in [("direct", &d), ("balancer", &b)] {
            println!(
                "{:<10} {:>10.0} {:>10.2?} {:>10.2?} {:>8}  (round {round})",
                name, p.rps, p.p50, p.p99, p.errors
            );
        }
        ratios.push(b.rps / d.rps);
    }
    println!(
        "median throughput ratio balancer/direct: {:.2} (rounds: {})",
        median(ratios.clone()),
        ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    lb.shutdown();
}

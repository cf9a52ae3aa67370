//! The floor of a worker's cost: what one blocking request to a backend costs a thread that does
//! nothing else, measured the way benches/cost.sh measures the balancer (CPU time and context
//! switches of the process per request). No poller, no channel, no client: each thread keeps one
//! keep-alive connection to the backend and sends the next request when the answer is in.
//!
//! ```text
//! URL=http://127.0.0.1:18181/ C=50 D=5 MODE=raw  cargo bench --bench floor   # std only: write, blocking read
//! URL=http://127.0.0.1:18181/ C=50 D=5 MODE=ureq cargo bench --bench floor   # the same through a ureq agent per thread
//! ```
//!
//! `raw` is the least a blocking worker can pay: one `sendto`, one blocking `recvfrom` (the
//! thread sleeps until the backend answers: a context switch), nothing else. `ureq` adds what the
//! library costs per request, configured as the balancer's agents are. The difference between
//! the balancer's figures and `ureq`'s is what the front end (poller, hand-offs, the answer to the
//! client) costs. docs/PERFORMANCE.md has the figures.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// CPU ticks (user, system) of this process, all threads.
fn cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    (f[11].parse().unwrap(), f[12].parse().unwrap())
}

/// Voluntary and involuntary context switches of this process's threads.
fn switches() -> (u64, u64) {
    let (mut v, mut n) = (0, 0);
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        for line in status.lines() {
            let num = |l: &str| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap();
            if line.starts_with("voluntary_ctxt_switches") {
                v += num(line);
            } else if line.starts_with("nonvoluntary_ctxt_switches") {
                n += num(line);
            }
        }
    }
    (v, n)
}

/// One request on `stream` and its answer, read by its Content-Length.
fn raw_request(stream: &mut TcpStream, request: &[u8], buf: &mut [u8]) -> bool {
    if stream.write_all(request).is_err() {
        return false;
    }
    let mut have = 0;
    loop {
        match stream.read(&mut buf[have..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => have += n,
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(len)) = response.parse(&buf[..have]) {
            let body = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| {
                    std::str::from_utf8(h.value)
                        .ok()?
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
                .unwrap_or(0);
            if have >= len + body {
                return true;
            }
        }
    }
}

fn main() {
    let url = env("URL", "http://127.0.0.1:18181/");
    let clients: usize = env("C", "50").parse().unwrap();
    let seconds: u64 = env("D", "5").parse().unwrap();
    let mode = env("MODE", "raw");
    let authority = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let request = format!("GET / HTTP/1.1\r\nHost: {authority}\r\n\r\n").into_bytes();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, done, measuring) = (stop.clone(), done.clone(), measuring.clone());
            let (url, authority, request, mode) = (
                url.clone(),
                authority.clone(),
                request.clone(),
                mode.clone(),
            );
            thread::spawn(move || {
                let count = || {
                    if measuring.load(Relaxed) {
                        done.fetch_add(1, Relaxed);
                    }
                };
                if mode == "ureq" {
                    let agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .max_redirects(0)
                        .max_idle_connections(1)
                        .max_idle_connections_per_host(1)
                        .build()
                        .new_agent();
                    let mut buf = Vec::new();
                    while !stop.load(Relaxed) {
                        let mut response = agent.get(&url).call().expect("request");
                        buf.clear();
                        response
                            .body_mut()
                            .as_reader()
                            .read_to_end(&mut buf)
                            .unwrap();
                        count();
                    }
                } else {
                    let mut stream = TcpStream::connect(&authority).expect("connect");
                    stream.set_nodelay(true).unwrap();
                    let mut buf = vec![0u8; 64 << 10];
                    while !stop.load(Relaxed) && raw_request(&mut stream, &request, &mut buf) {
                        count();
                    }
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_secs(1));
    let (u0, s0) = cpu_ticks();
    let (v0, n0) = switches();
    let started = Instant::now();
    measuring.store(true, Relaxed);
    thread::sleep(Duration::from_secs(seconds));
    measuring.store(false, Relaxed);
    let (u1, s1) = cpu_ticks();
    let (v1, n1) = switches();
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let n = done.load(Relaxed).max(1) as f64;
    // SAFETY: sysconf(3) with a valid name.
    let tick = 1e6 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    println!(
        "mode {mode} C={clients}: {:.0} req/s; per request: user {:.2} us, sys {:.2} us, \
         switches voluntary {:.3} involuntary {:.3}",
        n / elapsed,
        (u1 - u0) as f64 * tick / n,
        (s1 - s0) as f64 * tick / n,
        (v1 - v0) as f64 / n,
        (n1 - n0) as f64 / n
    );
}

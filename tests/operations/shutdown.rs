//! Graceful shutdown of the binary: SIGTERM lets in-flight requests finish, then the process
//! exits 0 and stops accepting connections; a drain cut off by its timeout still exits 0; a
//! second SIGINT during the drain exits at once with 130.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::support::{self, reply, wait_until, Backend, BodyEnd, Client, Headers, LbProcess};

const IN_FLIGHT: usize = 20;

fn body_for(i: usize) -> Vec<u8> {
    format!("answer {i} ").repeat(2000).into_bytes()
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let backend = Backend::start(|r, out| {
        // A backend that takes about a second per request.
        thread::sleep(Duration::from_secs(1));
        let i: usize = r.target.trim_start_matches("/slow/").parse().unwrap();
        reply(out, 200, &[("Content-Type", "text/plain")], &body_for(i))
    });
    let mut lb = LbProcess::spawn(&[backend.url()], &[]);
    let addr = lb.addr;

    let (tx, rx) = mpsc::channel();
    let clients: Vec<_> = (0..IN_FLIGHT)
        .map(|i| {
            let tx = tx.clone();
            thread::spawn(move || {
                let r = Client::connect(addr)
                    .request(&format!("GET /slow/{i} HTTP/1.1\r\nHost: h.test\r\n\r\n"));
                tx.send((i, r)).unwrap();
            })
        })
        .collect();
    wait_until(
        "the backend to hold all 20 requests",
        Duration::from_secs(10),
        || backend.count() == IN_FLIGHT,
    );
    lb.signal("TERM");

    for _ in 0..IN_FLIGHT {
        let (i, r) = rx
            .recv_timeout(Duration::from_secs(15))
            .expect("every in-flight request is answered");
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        // In flight when the drain began, yet told that the connection closes after it.
        assert_eq!(r.header("connection"), Some("close"), "request {i}");
        assert_eq!(
            r.end,
            BodyEnd::Complete(body_for(i).len() as u64),
            "request {i}"
        );
        assert!(r.body == body_for(i), "request {i}: body differs");
    }
    for c in clients {
        c.join().unwrap();
    }
    let status = lb.wait_exit(Duration::from_secs(15));
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status}; stderr:\n{}",
        lb.stderr()
    );
    assert!(
        support::refuses_connections(addr),
        "new connections must be refused once the balancer has exited"
    );
    assert_eq!(backend.count(), IN_FLIGHT);
}

#[test]
fn sigint_on_an_idle_balancer_exits_zero_at_once() {
    let backend = Backend::answering("ok");
    let mut lb = LbProcess::spawn(&[backend.url()], &[]);
    let r = support::get(lb.addr, "/");
    assert_eq!(r.status, 200);
    lb.signal("INT");
    let status = lb.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "stderr:\n{}", lb.stderr());
    assert!(support::refuses_connections(lb.addr));
}

/// Sends one request on its own thread, so it is in flight while the test goes on.
fn request_in_background(addr: std::net::SocketAddr) {
    thread::spawn(move || {
        let _ = Client::connect(addr).request("GET /held HTTP/1.1\r\nHost: h.test\r\n\r\n");
    });
}

#[test]
fn a_drain_cut_off_by_its_timeout_still_exits_zero_with_a_warning() {
    let backend = Backend::silent();
    let mut lb = LbProcess::spawn(&[backend.url()], &["drain_timeout 500ms"]);
    request_in_background(lb.addr);
    wait_until(
        "the backend to hold the request",
        Duration::from_secs(10),
        || backend.count() == 1,
    );
    lb.signal("TERM");
    let status = lb.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "stderr:\n{}", lb.stderr());
    assert!(
        lb.stderr().contains("drain timeout ran out"),
        "stderr:\n{}",
        lb.stderr()
    );
}

#[test]
fn a_second_sigint_during_the_drain_exits_at_once_with_130() {
    let backend = Backend::silent();
    let mut lb = LbProcess::spawn(&[backend.url()], &["drain_timeout 60s"]);
    let addr = lb.addr;
    request_in_background(addr);
    wait_until(
        "the backend to hold the request",
        Duration::from_secs(10),
        || backend.count() == 1,
    );
    lb.signal("INT");
    // The drain has begun once the listener is closed; only then is the next SIGINT a second one.
    wait_until("the drain to begin", Duration::from_secs(10), || {
        support::refuses_connections(addr)
    });
    let started = std::time::Instant::now();
    lb.signal("INT");
    let status = lb.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(130), "stderr:\n{}", lb.stderr());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "exit took {:?} after the second SIGINT (the drain timeout is 60 s)",
        started.elapsed()
    );
    assert!(
        lb.stderr().contains("second SIGINT"),
        "stderr:\n{}",
        lb.stderr()
    );
}

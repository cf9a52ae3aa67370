//! Descriptors and threads: clients that declare a huge body and vanish leave nothing behind,
//! running out of descriptors (`EMFILE`) pauses accepting without hurting the connections the
//! balancer has, which it serves on; it accepts again once descriptors are free; and at start
//! the balancer raises its soft descriptor limit to the hard one.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::{self, allow_descriptors, wait_until, Backend, Client, LbProcess};

#[test]
fn clients_that_declare_a_huge_body_and_vanish_leave_no_descriptor_or_thread() {
    const CLIENTS: usize = 1_000;
    let backend = Backend::answering("ok");
    let lb = LbProcess::spawn(&[backend.url()], &[]);
    // One request first, so that the backend connection pool is warm in both counts, and the
    // start-up probe of the backends done, so that its thread and socket are in neither.
    assert_eq!(support::get(lb.addr, "/warm").status, 200);
    wait_until("the start-up probe to end", Duration::from_secs(10), || {
        !lb.thread_names()
            .iter()
            .any(|n| n.starts_with("startup-probe"))
    });
    let (fds, threads) = (lb.open_descriptors(), lb.threads());

    for i in 0..CLIENTS {
        let mut s = TcpStream::connect(lb.addr).unwrap();
        let _ = s.write_all(
            format!(
                "POST /upload/{i} HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000000\r\n\r\nsome"
            )
            .as_bytes(),
        );
        // Gone, 2 GB short.
        drop(s);
    }
    wait_until(
        "descriptors and threads back to their counts before the clients",
        Duration::from_secs(20),
        || lb.open_descriptors() <= fds && lb.threads() == threads,
    );
    // And the balancer still serves.
    assert_eq!(support::get(lb.addr, "/after").status, 200);
}

#[test]
fn out_of_descriptors_it_serves_what_it_has_and_accepts_again_later() {
    const LIMIT: u64 = 256;
    const FLOOD: usize = 400;
    if !allow_descriptors(2 * FLOOD as u64 + 200, "out_of_descriptors") {
        return;
    }
    let backend = Backend::answering("ok");
    // More connections allowed than descriptors, so that accept itself runs out.
    let lb = LbProcess::spawn_with(
        &[backend.url()],
        &["limits max_connections=5000"],
        Some((LIMIT, LIMIT)),
    );
    let mut first = Client::connect(lb.addr);
    let r = first.request("GET /before HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200);

    let flood: Vec<TcpStream> = (0..FLOOD)
        .map(|_| TcpStream::connect(lb.addr).expect("the kernel queues what is not accepted"))
        .collect();
    wait_until(
        "the balancer to log that it ran out of descriptors",
        Duration::from_secs(10),
        || lb.stderr().contains("Too many open files"),
    );
    // It keeps serving the connection it has (over its pooled backend connection).
    let r = first.request("GET /during HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200);

    // Descriptors free up: the connections waiting in the accept queue are taken and served.
    let (mut kept, mut closed) = (Vec::new(), Vec::new());
    for (i, s) in flood.into_iter().enumerate() {
        if i % 4 == 0 {
            kept.push(s);
        } else {
            closed.push(s);
        }
    }
    drop(closed);
    let last = kept
        .last_mut()
        .expect("a connection from the end of the flood");
    last.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    last.write_all(b"GET /late HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    last.read_to_end(&mut answer).unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(support::get(lb.addr, "/new").status, 200);
    let stderr = lb.stderr();
    assert!(
        stderr.matches("Too many open files").count() <= 3,
        "the warning is not repeated for every attempt:\n{stderr}"
    );
}

#[test]
fn the_soft_descriptor_limit_is_raised_to_the_hard_limit_at_start() {
    let backend = Backend::answering("ok");
    // As a default shell leaves it: a low soft limit under a higher hard one.
    let lb = LbProcess::spawn_with(&[backend.url()], &[], Some((512, 4096)));
    assert_eq!(lb.descriptor_limit(), (4096, 4096));
}

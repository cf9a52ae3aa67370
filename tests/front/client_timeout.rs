//! Client connections have a timeout (`timeouts client=`): an idle keep-alive connection, a
//! client that stops in the middle of its headers or body, cannot hold a thread forever.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::{Backend, Lb};

/// Reads until the balancer closes the connection; returns what arrived and how long it took.
fn read_until_closed(mut s: TcpStream, limit: Duration) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, started.elapsed()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (got, started.elapsed())
            }
            Err(e) => panic!("connection still open after {:?}: {e}", started.elapsed()),
        }
    }
}

fn lb_with_client_timeout(backend: &Backend) -> Lb {
    Lb::start(&[(backend, 1)], |c| {
        c.timeouts.client = Duration::from_secs(1)
    })
}

#[test]
fn an_idle_connection_is_closed_after_the_client_timeout() {
    let backend = Backend::answering("ok");
    let lb = lb_with_client_timeout(&backend);
    let s = TcpStream::connect(lb.addr).unwrap();
    let (got, took) = read_until_closed(s, Duration::from_secs(10));
    assert!(got.is_empty(), "nothing was asked, nothing answered");
    assert!(
        took >= Duration::from_millis(900),
        "closed too early: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "closed too late: {took:?}");
    assert_eq!(backend.count(), 0);
}

#[test]
fn a_client_that_stops_mid_body_gets_an_error_and_the_connection_closes() {
    let backend = Backend::answering("ok");
    let lb = lb_with_client_timeout(&backend);
    let mut s = TcpStream::connect(lb.addr).unwrap();
    // 2 KiB promised, 10 bytes sent: the poller buffers the body, and a pause of a client
    // timeout ends it with 408 (nothing reaches the backend).
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 2048\r\n\r\n0123456789")
        .unwrap();
    let (got, took) = read_until_closed(s, Duration::from_secs(10));
    let text = String::from_utf8_lossy(&got);
    assert!(took < Duration::from_secs(5), "closed too late: {took:?}");
    assert!(
        text.starts_with("HTTP/1.1 408"),
        "unexpected answer: {text}"
    );
    assert_eq!(backend.count(), 0);
}

#[test]
fn a_keep_alive_connection_serves_requests_until_it_goes_idle() {
    let backend = Backend::answering("ok");
    let lb = lb_with_client_timeout(&backend);
    let mut s = TcpStream::connect(lb.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..3 {
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    }
    let (_, took) = read_until_closed(s, Duration::from_secs(10));
    assert!(
        took < Duration::from_secs(5),
        "idle keep-alive not closed: {took:?}"
    );
    assert_eq!(backend.count(), 3);
}

#[test]
fn new_connections_are_accepted_after_a_long_idle_period() {
    // The client timeout is set on the listening socket, where it also bounds accept(): the
    // balancer must keep accepting after more than a timeout without any new connection.
    let backend = Backend::answering("ok");
    let lb = lb_with_client_timeout(&backend);
    // Idling is what this test is about, so it waits on purpose, for 2.5 client timeouts.
    std::thread::sleep(Duration::from_millis(2500));
    let mut s = TcpStream::connect(lb.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

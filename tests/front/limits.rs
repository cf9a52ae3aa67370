//! The front end's limits on request heads: a request line over 8 KiB gets 414, a head over
//! 16 KiB or with more than 100 fields 431, a head not complete within `timeouts head=` 408, a
//! NUL, bare CR or folded header line 400. Each refusal closes the connection, and the bytes
//! that follow it are never read as a request: the backend sees nothing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::{Backend, Client, Headers, Lb};

/// What a client sees when it sends `raw` and reads until the balancer closes: the status of
/// the first answer, and everything that came.
fn refused(lb: &Lb, raw: &[u8]) -> (u16, String) {
    let mut client = Client::connect(lb.addr);
    client.send(raw);
    let rest = client.rest_until_closed(Duration::from_secs(10));
    let text = String::from_utf8_lossy(&rest).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no answer, got {text:?}"));
    (status, text)
}

/// A request smuggled behind a refused one: if it were read, the backend would see it.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n";

fn assert_refused(lb: &Lb, backend: &Backend, raw: &str, status: u16, reason: &str) {
    let (got, text) = refused(lb, format!("{raw}{SMUGGLED}").as_bytes());
    assert_eq!(got, status, "{text}");
    assert!(text.contains("Connection: close"), "{text}");
    assert!(text.contains(reason), "reason {reason:?} not in {text:?}");
    assert_eq!(
        text.matches("HTTP/1.1 ").count(),
        1,
        "only one answer: the bytes after a refusal are not a request: {text}"
    );
    assert_eq!(backend.count(), 0, "nothing reached the backend");
}

#[test]
fn heads_over_the_limits_are_refused_and_the_connection_closed() {
    let backend = Backend::answering("ok");
    let lb = Lb::start(&[(&backend, 1)], |_| {});

    let long_target = format!("/{}", "a".repeat(9000));
    let raw = format!("GET {long_target} HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_refused(&lb, &backend, &raw, 414, "request line too long");

    let big = "b".repeat(17 << 10);
    let raw = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n");
    assert_refused(&lb, &backend, &raw, 431, "request head too large");

    let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
    let raw = format!("GET / HTTP/1.1\r\nHost: t\r\n{many}\r\n");
    assert_refused(&lb, &backend, &raw, 431, "too many header fields");

    let bad = [
        (
            "GET / HTTP/1.1\r\nHost: t\r\nX-Nul: a\0b\r\n\r\n",
            "header value",
        ),
        (
            "GET / HTTP/1.1\r\nHost: t\r\nX-Cr: a\rb\r\n\r\n",
            "header value",
        ),
        (
            "GET / HTTP/1.1\r\nHost: t\r\nX-Fold: a\r\n b\r\n\r\n",
            "folded",
        ),
        (
            "GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "Content-Length",
        ),
    ];
    for (raw, reason) in bad {
        assert_refused(&lb, &backend, raw, 400, reason);
    }

    // Just under the limits, the same shapes pass, and arrive whole.
    let fits = format!("/{}", "a".repeat(8000));
    let value = "v".repeat(7000);
    let r = Client::connect(lb.addr).request(&format!(
        "GET {fits} HTTP/1.1\r\nHost: t\r\nX-Large: {value}\r\nConnection: close\r\n\r\n"
    ));
    assert_eq!(r.status, 200);
    let got = backend.only_request();
    assert_eq!(got.target, fits);
    assert_eq!(got.header("x-large"), Some(value.as_str()));
    // 98 + Host + Connection = 100 fields.
    let many: String = (0..98).map(|i| format!("X-{i}: v\r\n")).collect();
    let r = Client::connect(lb.addr).request(&format!(
        "GET / HTTP/1.1\r\nHost: t\r\n{many}Connection: close\r\n\r\n"
    ));
    assert_eq!(r.status, 200);
    assert_eq!(backend.count(), 2);
}

#[test]
fn an_endless_header_is_refused_before_it_ends() {
    // The old front end read a 200 MB header line whole. Now the answer comes once the limit
    // is passed, with the client still sending.
    let backend = Backend::answering("ok");
    let lb = Lb::start(&[(&backend, 1)], |_| {});
    let mut s = TcpStream::connect(lb.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: ")
        .unwrap();
    let chunk = vec![b'x'; 64 << 10];
    let mut sent = 0usize;
    // Write until the balancer refuses (the write fails) or 8 MiB went, whichever first.
    while sent < 8 << 20 {
        match s.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 431"),
        "after {sent} bytes: {text:?}"
    );
    assert_eq!(backend.count(), 0);
}

#[test]
fn a_head_that_takes_too_long_gets_408() {
    let backend = Backend::answering("ok");
    let lb = Lb::start(&[(&backend, 1)], |c| {
        c.timeouts.head = Duration::from_secs(1);
    });
    let mut client = Client::connect(lb.addr);
    let started = Instant::now();
    // A slow client: part of the head, then a byte now and then, never the end.
    client.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n");
    let trickle = std::thread::spawn({
        let mut w = client.writer().try_clone().unwrap();
        move || {
            for _ in 0..40 {
                std::thread::sleep(Duration::from_millis(50));
                if w.write_all(b"X").is_err() {
                    return;
                }
            }
        }
    });
    let r = client.read_response("GET");
    let took = started.elapsed();
    assert_eq!(r.status, 408, "{}", r.text());
    assert_eq!(r.header("connection"), Some("close"));
    assert!(took >= Duration::from_millis(900), "408 after {took:?}");
    assert!(took < Duration::from_secs(3), "408 after {took:?}");
    trickle.join().unwrap();
    assert_eq!(backend.count(), 0);
}

#[test]
fn limits_are_configurable() {
    let backend = Backend::answering("ok");
    let lb = Lb::start(&[(&backend, 1)], |c| {
        c.limits.max_request_line = 256;
        c.limits.max_head = 1024;
        c.limits.max_headers = 5;
    });
    let status = |raw: String| refused(&lb, raw.as_bytes()).0;
    let target = format!("/{}", "a".repeat(300));
    assert_eq!(
        status(format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n")),
        414
    );
    let value = "v".repeat(1100);
    assert_eq!(
        status(format!("GET / HTTP/1.1\r\nHost: t\r\nX: {value}\r\n\r\n")),
        431
    );
    let five: String = (0..5).map(|i| format!("X-{i}: v\r\n")).collect();
    assert_eq!(
        status(format!("GET / HTTP/1.1\r\nHost: t\r\n{five}\r\n")),
        431
    );
    let r = Client::connect(lb.addr)
        .request("GET / HTTP/1.1\r\nHost: t\r\nX-1: v\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200);
}

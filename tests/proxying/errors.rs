//! The balancer's own errors: 502 when no backend can be reached, 504 when a backend is too slow,
//! 400 for requests that could be smuggled (never forwarded), and a closed connection, never a
//! complete-looking response, when a backend dies mid-body.

use std::io::Write;
use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{
    self, dead_backend_url, reply, write_chunk, Backend, BodyEnd, Client, Headers, Lb, Response,
};
use loadbalancer::config::BackendConfig;

fn assert_own_error(r: &Response, status: u16) {
    assert_eq!(r.status, status, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|v| v.starts_with("text/plain")),
        "{:?}",
        r.headers
    );
    let text = r.text();
    assert!(
        !text.trim().is_empty() && text.len() < 200 && text.is_ascii(),
        "short plain-text reason expected, got {text:?}"
    );
}

#[test]
fn bad_gateway_when_the_only_backend_is_down() {
    let mut config = support::test_config(&[]);
    config.backends = vec![BackendConfig::parse(&dead_backend_url(), 1).unwrap()];
    let lb = Lb::with_config(config);
    let r = support::get(lb.addr, "/anything");
    assert_own_error(&r, 502);
    assert!(matches!(r.end, BodyEnd::Complete(_)));
}

#[test]
fn bad_gateway_naming_the_cause_when_the_backend_host_does_not_resolve() {
    // `.invalid` never resolves (RFC 6761), with or without a network.
    let mut config = support::test_config(&[]);
    config.backends = vec![BackendConfig::parse("http://no-such-backend.invalid:8081", 1).unwrap()];
    let lb = Lb::with_config(config);
    let r = support::get(lb.addr, "/anything");
    assert_own_error(&r, 502);
    assert_eq!(r.text().trim(), "backend host name does not resolve");

    // Nothing was sent, so even a POST is retried on a backend that resolves.
    let good = Backend::answering("good");
    let mut config = support::test_config(&[(&good, 1)]);
    config.backends.insert(
        0,
        BackendConfig::parse("http://no-such-backend.invalid:8081", 1).unwrap(),
    );
    let lb = Lb::with_config(config);
    for _ in 0..4 {
        let r = Client::connect(lb.addr).request(
            "POST /p HTTP/1.1\r\nHost: lb.test\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        );
        assert_eq!((r.status, r.text()), (200, "good".to_string()));
    }
}

#[test]
fn gateway_timeout_when_the_backend_is_slower_than_the_response_timeout() {
    let backend = Backend::start(|_, out| {
        thread::sleep(Duration::from_secs(2));
        reply(out, 200, &[], b"too late")
    });
    let lb = Lb::start(&[(&backend, 1)], |c| {
        c.timeouts.response = Duration::from_millis(300);
        c.drain_timeout = Duration::from_millis(100);
    });
    let started = Instant::now();
    let r = support::get(lb.addr, "/slow");
    let took = started.elapsed();
    assert_own_error(&r, 504);
    assert!(
        took < Duration::from_millis(1500),
        "504 took {took:?}: it must come from the 300ms response timeout, well before the backend's 2s"
    );
    assert!(
        took >= Duration::from_millis(250),
        "504 after only {took:?}"
    );
}

/// What happened to a request the balancer should refuse.
struct Refused {
    response: Response,
    /// Bytes the client received after the refusal, before the connection closed.
    after: Vec<u8>,
    /// Request targets the backend received (besides the sentinel).
    forwarded: Vec<String>,
}

/// Sends `raw` to a balancer with one worker, reads the answer and everything after it until the
/// balancer closes the connection, then sends a sentinel request on a new connection and waits
/// for the backend to see it. With one worker and a FIFO queue, anything the refused bytes made
/// the balancer forward reaches the backend before the sentinel.
fn refused(raw: &[u8]) -> Refused {
    let backend = Backend::answering("forwarded!");
    let lb = Lb::start(&[(&backend, 1)], |c| c.workers = 1);
    let mut client = Client::connect(lb.addr);
    client.send(raw);
    let response = client.read_response("POST");
    let after = client.rest_until_closed(Duration::from_secs(5));
    let sentinel = support::get(lb.addr, "/sentinel");
    assert_eq!(sentinel.status, 200);
    let forwarded = backend
        .requests()
        .into_iter()
        .map(|r| r.target)
        .filter(|t| t != "/sentinel")
        .collect();
    Refused {
        response,
        after,
        forwarded,
    }
}

/// Asserts the refusal: 400 with a reason, nothing forwarded, and the connection closed right
/// after the answer (the unread body must never be parsed as a request).
fn assert_refused(raw: &[u8]) {
    let what = String::from_utf8_lossy(raw).into_owned();
    let r = refused(raw);
    assert_own_error(&r.response, 400);
    assert!(
        r.forwarded.is_empty(),
        "the backend received {:?} after the balancer refused {what:?}",
        r.forwarded
    );
    assert!(
        r.after.is_empty(),
        "after refusing {what:?} the balancer went on parsing the connection and sent {:?}",
        String::from_utf8_lossy(&r.after)
    );
}

#[test]
fn content_length_with_transfer_encoding_is_refused_and_not_forwarded() {
    // The classic smuggling shape: by one framing the body is empty, by the other it holds a
    // second request.
    assert_refused(
        b"POST /a HTTP/1.1\r\nHost: h.test\r\nContent-Length: 45\r\nTransfer-Encoding: chunked\r\n\r\n\
0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h.test\r\n\r\n",
    );
}

#[test]
fn transfer_encoding_with_content_length_cannot_smuggle_a_request() {
    // Transfer-Encoding first, and a body that is a whole request by itself.
    assert_refused(
        b"POST /b HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n\
GET /smuggled HTTP/1.1\r\nHost: h.test\r\n\r\n",
    );
}

#[test]
fn content_length_with_transfer_encoding_and_a_plain_body_is_refused() {
    let r = refused(
        b"POST /c HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert_own_error(&r.response, 400);
    assert!(r.forwarded.is_empty(), "forwarded {:?}", r.forwarded);
}

#[test]
fn invalid_content_length_is_refused_and_not_forwarded() {
    for value in ["abc", "-5", "+5", "5, 6", "1e3", "99999999999999999999999"] {
        let raw =
            format!("POST /d HTTP/1.1\r\nHost: h.test\r\nContent-Length: {value}\r\n\r\nhello");
        let r = refused(raw.as_bytes());
        assert_own_error(&r.response, 400);
        assert!(
            r.forwarded.is_empty(),
            "Content-Length {value:?}: the backend received {:?}",
            r.forwarded
        );
    }
    // Two different Content-Length lines.
    let r = refused(
        b"POST /e HTTP/1.1\r\nHost: h.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    );
    assert_own_error(&r.response, 400);
    assert!(r.forwarded.is_empty(), "forwarded {:?}", r.forwarded);
}

#[test]
fn a_body_behind_an_invalid_content_length_is_never_parsed_as_a_request() {
    assert_refused(
        b"POST /f HTTP/1.1\r\nHost: h.test\r\nContent-Length: abc\r\n\r\n\
GET /smuggled HTTP/1.1\r\nHost: h.test\r\n\r\n",
    );
}

/// Reads a response whose body the backend cuts short; returns it (body kept).
fn cut_short(handler: fn(&mut std::net::TcpStream) -> std::io::Result<()>) -> Response {
    let backend = Backend::start(move |_, out| handler(out));
    let lb = Lb::start(&[(&backend, 1)], |_| {});
    let mut client = Client::connect(lb.addr);
    client.send(b"GET /cut HTTP/1.1\r\nHost: h.test\r\n\r\n");
    let mut body = Vec::new();
    let r = client
        .try_read_response_into("GET", &mut |p| body.extend_from_slice(p))
        .expect("the balancer must close the connection, not leave it hanging");
    let Some(mut r) = r else {
        // Closed before any head: nothing complete-looking was sent either.
        return Response {
            status: 0,
            headers: Vec::new(),
            raw_head: Vec::new(),
            body,
            end: BodyEnd::Truncated(0),
        };
    };
    r.body = body;
    r
}

#[test]
fn backend_closing_mid_body_closes_the_client_connection() {
    let r = cut_short(|out| {
        out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")?;
        out.write_all(&[b'x'; 1000])?;
        out.flush()?;
        out.shutdown(Shutdown::Both)
    });
    assert!(
        matches!(r.end, BodyEnd::Truncated(n) if n < 1_000_000),
        "the client got a complete-looking response: status {} end {:?}",
        r.status,
        r.end
    );
    if r.status != 0 {
        assert_eq!(r.status, 200);
        assert_eq!(r.header_values("content-length"), ["1000000"]);
        assert!(r.body.iter().all(|&b| b == b'x'));
    }
    assert!(r.body.len() <= 1000, "{} bytes", r.body.len());
}

#[test]
fn backend_closing_mid_chunked_body_never_sends_the_last_chunk() {
    let r = cut_short(|out| {
        out.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")?;
        for _ in 0..3 {
            write_chunk(out, &[b'y'; 1024])?;
        }
        // Half of a fourth chunk, then the connection dies.
        out.write_all(b"400\r\n")?;
        out.write_all(&[b'y'; 512])?;
        out.flush()?;
        out.shutdown(Shutdown::Both)
    });
    assert!(
        matches!(r.end, BodyEnd::Truncated(_)),
        "the client received the terminating 0-chunk: status {} end {:?}",
        r.status,
        r.end
    );
    assert!(r.body.iter().all(|&b| b == b'y'));
    assert!(r.body.len() < 4 * 1024, "{} bytes", r.body.len());
}

#[test]
fn an_incomplete_backend_head_is_a_bad_gateway() {
    let backend = Backend::start(|_, out| {
        out.write_all(b"HTTP/1.1 200 OK\r\nContent-Le")?;
        out.shutdown(Shutdown::Both)
    });
    let lb = Lb::start(&[(&backend, 1)], |c| c.retries.count = 0);
    let r = support::get(lb.addr, "/broken");
    assert_own_error(&r, 502);
}

//! What a backend receives: the request passes through transparently except for the hop-by-hop
//! headers, which are removed, and the X-Forwarded-* headers, which are added.

use crate::support::{reply, Backend, Client, Headers, Lb, Received};

/// A backend that answers 200 "ok" to everything, behind a balancer with only that backend.
fn setup() -> (Backend, Lb) {
    let backend = Backend::answering("ok");
    let lb = Lb::start(&[(&backend, 1)], |_| {});
    (backend, lb)
}

/// Sends `raw` on a fresh connection, expects 200 "ok", and returns what the backend received.
fn forwarded(raw: &str) -> Received {
    let (backend, lb) = setup();
    let mut client = Client::connect(lb.addr);
    let r = client.request(raw);
    assert_eq!((r.status, r.text().as_str()), (200, "ok"), "{raw:?}");
    backend.only_request()
}

fn names(r: &Received) -> Vec<String> {
    r.headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .collect()
}

#[test]
fn hop_by_hop_headers_are_removed_and_forwarding_headers_added() {
    let got = forwarded(
        "GET /hop HTTP/1.1\r\n\
         Host: example.test:1234\r\n\
         Connection: keep-alive, X-Hop\r\n\
         Keep-Alive: timeout=5, max=100\r\n\
         X-Hop: must not pass\r\n\
         TE: trailers\r\n\
         Upgrade: websocket\r\n\
         Proxy-Authorization: Basic dXNlcjpwYXNz\r\n\
         Proxy-Connection: keep-alive\r\n\
         Trailer: X-Checksum\r\n\
         X-Forwarded-For: 192.0.2.1\r\n\
         X-Forwarded-Proto: https\r\n\
         X-End-To-End: kept\r\n\
         \r\n",
    );
    let head = String::from_utf8_lossy(&got.raw_head).into_owned();
    for hop in [
        "connection",
        "keep-alive",
        "x-hop",
        "te",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
        "trailer",
    ] {
        assert!(
            !got.has_header(hop),
            "hop-by-hop header {hop} reached the backend:\n{head}"
        );
    }
    assert!(!head.contains("must not pass"), "{head}");
    assert_eq!(got.header_values("x-end-to-end"), ["kept"], "{head}");
    assert_eq!(
        got.header_values("x-forwarded-for"),
        ["192.0.2.1, 127.0.0.1"],
        "client address appended to the incoming chain:\n{head}"
    );
    assert_eq!(got.header_values("x-forwarded-proto"), ["http"], "{head}");
    assert_eq!(
        got.header_values("x-forwarded-host"),
        ["example.test:1234"],
        "{head}"
    );
    assert_eq!(got.header_values("host"), ["example.test:1234"], "{head}");
}

#[test]
fn forwarded_for_is_set_when_the_client_sent_none() {
    let got = forwarded("GET / HTTP/1.1\r\nHost: h.test\r\n\r\n");
    assert_eq!(got.header_values("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(got.header_values("x-forwarded-proto"), ["http"]);
    assert_eq!(got.header_values("x-forwarded-host"), ["h.test"]);
}

#[test]
fn host_is_kept_byte_for_byte() {
    for host in [
        "example.test:1234",
        "Example.TEST",
        "127.0.0.1:9",
        "[::1]:8080",
    ] {
        let got = forwarded(&format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n"));
        let line = format!("\r\nhost: {}\r\n", host.to_ascii_lowercase());
        let head = String::from_utf8_lossy(&got.raw_head).into_owned();
        assert_eq!(got.header_values("host"), [host], "{head}");
        assert!(head.to_ascii_lowercase().contains(&line), "{head}");
    }
}

#[test]
fn repeated_headers_are_kept_in_order() {
    let got = forwarded(
        "GET / HTTP/1.1\r\n\
         Host: h.test\r\n\
         X-Multi: one\r\n\
         Cookie: a=1\r\n\
         X-Multi: two\r\n\
         Cookie: b=2\r\n\
         X-Multi: three, four\r\n\
         \r\n",
    );
    let head = String::from_utf8_lossy(&got.raw_head).into_owned();
    assert_eq!(
        got.header_values("x-multi"),
        ["one", "two", "three, four"],
        "{head}"
    );
    assert_eq!(got.header_values("cookie"), ["a=1", "b=2"], "{head}");
    // Host comes first as the client sent it; the forwarding headers are added after the
    // client's own.
    let names = names(&got);
    assert_eq!(names.first().map(String::as_str), Some("host"), "{head}");
    let xff = names.iter().position(|n| n == "x-forwarded-for").unwrap();
    let last_client = names
        .iter()
        .rposition(|n| n == "x-multi" || n == "cookie")
        .unwrap();
    assert!(last_client < xff, "{head}");
}

#[test]
fn request_target_is_kept_byte_for_byte() {
    for target in [
        "/a/b%20c/?q=1&q=2&x=%2F",
        "/p;param=1/~user/!$&'()*+,;=:@/%7e%7E?k=v&k=w&empty=&=x&y=a/b?c",
        "//double//slash/./dot/../dotdot",
        "/%E2%82%AC/%zz-not-an-escape/?%",
        "/?",
    ] {
        let got = forwarded(&format!("GET {target} HTTP/1.1\r\nHost: h.test\r\n\r\n"));
        assert_eq!(got.method, "GET");
        assert_eq!(got.target, target, "request target changed on the way");
        assert_eq!(got.version, "HTTP/1.1");
    }
}

/// The asterisk form (RFC 9112 section 3.2.4) is legal for OPTIONS, and the balancer accepts it
/// (`check_request` lets it through), so it must reach the backend as `OPTIONS *`.
#[test]
fn options_asterisk_reaches_the_backend_as_is() {
    let backend = Backend::start(|r, out| {
        let body = format!("{} {}", r.method, r.target);
        reply(out, 200, &[], body.as_bytes())
    });
    let lb = Lb::start(&[(&backend, 1)], |_| {});
    let mut client = Client::connect(lb.addr);
    let r = client.request("OPTIONS * HTTP/1.1\r\nHost: h.test\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "OPTIONS *"));
    let got = backend.only_request();
    assert_eq!(got.version, "HTTP/1.1");
    assert_eq!(got.header_values("host"), ["h.test"]);
}

#[test]
fn methods_are_kept_including_non_standard_ones() {
    let backend = Backend::start(|r, out| {
        let body = format!("{} {}", r.method, r.body.len());
        reply(out, 200, &[], body.as_bytes())
    });
    let lb = Lb::start(&[(&backend, 1)], |_| {});
    let mut client = Client::connect(lb.addr);
    let methods = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "PROPFIND", "PURGE", "MKCOL",
    ];
    for m in methods {
        let r = client.request(&format!(
            "{m} /m HTTP/1.1\r\nHost: h.test\r\nContent-Length: 4\r\n\r\nbody"
        ));
        assert_eq!((r.status, r.text()), (200, format!("{m} 4")), "{m}");
    }
    let seen: Vec<String> = backend.requests().into_iter().map(|r| r.method).collect();
    assert_eq!(seen, methods);
    for r in backend.requests() {
        assert_eq!(r.body, b"body");
        assert_eq!(r.header_values("content-length"), ["4"]);
    }
}

#[test]
fn a_request_body_with_content_length_arrives_intact() {
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let (backend, lb) = setup();
    let mut client = Client::connect(lb.addr);
    let mut raw = format!(
        "POST /up HTTP/1.1\r\nHost: h.test\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    client.send(&raw);
    assert_eq!(client.read_response("POST").status, 200);
    let got = backend.only_request();
    assert_eq!(got.body, body);
    assert_eq!(got.header_values("content-length"), ["100000"]);
    assert!(!got.has_header("transfer-encoding"));
    assert_eq!(
        got.header_values("content-type"),
        ["application/octet-stream"]
    );
}

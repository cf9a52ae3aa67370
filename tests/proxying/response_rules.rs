//! What a client receives: the backend's answer passes through unchanged (statuses, repeated
//! headers, compressed bodies, redirects) except for hop-by-hop headers, and bodiless answers
//! (HEAD, 204, 304) stay bodiless.

use std::io::Read;

use crate::support::{reply, reply_chunked, Backend, BodyEnd, Client, Headers, Lb, Response};
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

const TEXT: &str = "The quick brown fox jumps over the lazy dog. ";

fn gzipped() -> Vec<u8> {
    use std::io::Write;
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(TEXT.repeat(200).as_bytes()).unwrap();
    enc.finish().unwrap()
}

/// One backend whose answer depends on the path, behind a balancer.
fn setup() -> (Backend, Lb) {
    let backend = Backend::start(|r, out| match r.target.as_str() {
        "/404" => reply(out, 404, &[("Content-Type", "text/plain")], b"no such page"),
        "/500" => reply(
            out,
            500,
            &[("Content-Type", "text/plain")],
            b"backend broke",
        ),
        "/503" => reply(
            out,
            503,
            &[("Content-Type", "text/plain"), ("Retry-After", "17")],
            b"backend's own maintenance page",
        ),
        "/cookies" => reply(
            out,
            200,
            &[
                ("Set-Cookie", "a=1; Path=/"),
                ("Set-Cookie", "b=2; HttpOnly"),
            ],
            b"two cookies",
        ),
        "/gzip" => reply(
            out,
            200,
            &[
                ("Content-Type", "text/plain"),
                ("Content-Encoding", "gzip"),
                ("Vary", "Accept-Encoding"),
            ],
            &gzipped(),
        ),
        "/redirect" => reply(out, 302, &[("Location", "/elsewhere")], b"moved"),
        "/head" => {
            // A HEAD answer: the length of the body a GET would get, and no body.
            assert_eq!(r.method, "HEAD");
            out_write(
                out,
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12345\r\n\r\n",
            )
        }
        "/204" => out_write(out, b"HTTP/1.1 204 No Content\r\nX-Status: none\r\n\r\n"),
        "/304" => out_write(
            out,
            b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nCache-Control: max-age=60\r\n\r\n",
        ),
        "/hop" => {
            let answer = reply(
                out,
                200,
                &[
                    ("Connection", "close, X-Hop-Resp"),
                    ("X-Hop-Resp", "1"),
                    ("Keep-Alive", "timeout=5, max=100"),
                    ("Proxy-Authenticate", "Basic realm=\"proxy\""),
                    ("Proxy-Connection", "close"),
                    ("Upgrade", "h2c"),
                    ("Trailer", "X-Checksum"),
                    ("X-End-To-End", "kept"),
                ],
                b"hop",
            );
            // It said `Connection: close`, so it closes.
            let _ = out.shutdown(std::net::Shutdown::Both);
            answer
        }
        "/server-date" => reply(
            out,
            200,
            &[
                ("Server", "test-backend/1.0"),
                ("Date", "Tue, 01 Jan 2030 00:00:00 GMT"),
            ],
            b"dated",
        ),
        "/chunked" => reply_chunked(
            out,
            200,
            &[("Content-Type", "text/plain")],
            &[b"first,", b"second,", &[b'z'; 70_000], b"last"],
        ),
        "/until-close" => {
            // No Content-Length, no Transfer-Encoding: the body ends when the connection does.
            out_write(out, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")?;
            out_write(out, &[b'w'; 50_000])?;
            out.shutdown(std::net::Shutdown::Both)
        }
        _ => reply(out, 200, &[], b"ok"),
    });
    let lb = Lb::start(&[(&backend, 1)], |_| {});
    (backend, lb)
}

fn out_write(out: &mut std::net::TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    out.write_all(bytes)
}

fn fetch(lb: &Lb, method: &str, target: &str) -> Response {
    Client::connect(lb.addr).request(&format!(
        "{method} {target} HTTP/1.1\r\nHost: h.test\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n"
    ))
}

#[test]
fn backend_statuses_and_bodies_pass_through() {
    let (_backend, lb) = setup();
    for (target, status, body) in [
        ("/404", 404, "no such page"),
        ("/500", 500, "backend broke"),
        ("/503", 503, "backend's own maintenance page"),
    ] {
        let r = fetch(&lb, "GET", target);
        assert_eq!((r.status, r.text().as_str()), (status, body), "{target}");
        assert_eq!(r.header("content-type"), Some("text/plain"), "{target}");
    }
    let r = fetch(&lb, "GET", "/503");
    assert_eq!(
        r.header_values("retry-after"),
        ["17"],
        "the backend's Retry-After"
    );
}

#[test]
fn two_set_cookie_headers_both_arrive() {
    let (_backend, lb) = setup();
    let r = fetch(&lb, "GET", "/cookies");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header_values("set-cookie"),
        ["a=1; Path=/", "b=2; HttpOnly"],
        "{}",
        String::from_utf8_lossy(&r.raw_head)
    );
}

#[test]
fn gzip_body_arrives_byte_identical_and_still_compressed() {
    let (backend, lb) = setup();
    let r = fetch(&lb, "GET", "/gzip");
    let expected = gzipped();
    assert_eq!(r.status, 200);
    assert_eq!(r.header_values("content-encoding"), ["gzip"]);
    assert_eq!(
        r.header_values("content-length"),
        [expected.len().to_string()]
    );
    assert!(!r.has_header("transfer-encoding"));
    assert_eq!(
        r.body, expected,
        "body re-encoded or decompressed on the way"
    );
    let mut plain = String::new();
    GzDecoder::new(&r.body[..])
        .read_to_string(&mut plain)
        .unwrap();
    assert_eq!(plain, TEXT.repeat(200));
    // The client's Accept-Encoding reached the backend unchanged.
    assert_eq!(
        backend.only_request().header_values("accept-encoding"),
        ["gzip"]
    );
}

#[test]
fn redirects_are_passed_through_not_followed() {
    let (backend, lb) = setup();
    let r = fetch(&lb, "GET", "/redirect");
    assert_eq!((r.status, r.text().as_str()), (302, "moved"));
    assert_eq!(r.header_values("location"), ["/elsewhere"]);
    let got = backend.only_request();
    assert_eq!(got.target, "/redirect");
}

/// After a bodiless answer, a second request on the same connection must get a well-formed
/// answer: any stray body bytes would be parsed as its status line.
fn bodiless(lb: &Lb, method: &str, target: &str) -> Response {
    let mut client = Client::connect(lb.addr);
    let first = client.request(&format!(
        "{method} {target} HTTP/1.1\r\nHost: h.test\r\n\r\n"
    ));
    assert!(first.body.is_empty());
    let second = client.request("GET /after HTTP/1.1\r\nHost: h.test\r\n\r\n");
    assert_eq!(
        (second.status, second.text().as_str()),
        (200, "ok"),
        "the answer after {method} {target}"
    );
    first
}

#[test]
fn head_gets_content_length_but_no_body() {
    let (backend, lb) = setup();
    let r = bodiless(&lb, "HEAD", "/head");
    assert_eq!(r.status, 200);
    assert_eq!(r.header_values("content-length"), ["12345"]);
    assert!(!r.has_header("transfer-encoding"));
    assert_eq!(backend.requests()[0].method, "HEAD");
}

#[test]
fn no_content_and_not_modified_have_no_body() {
    let (_backend, lb) = setup();
    let r = bodiless(&lb, "GET", "/204");
    assert_eq!(r.status, 204);
    assert_eq!(r.header_values("x-status"), ["none"]);
    assert!(
        !r.has_header("transfer-encoding"),
        "{}",
        String::from_utf8_lossy(&r.raw_head)
    );
    // (RFC 9112 allows Transfer-Encoding on a 304, so only the absence of a body is checked.)
    let r = bodiless(&lb, "GET", "/304");
    assert_eq!(r.status, 304);
    assert_eq!(r.header_values("etag"), ["\"v1\""]);
    assert_eq!(r.header_values("cache-control"), ["max-age=60"]);
}

#[test]
fn backend_server_and_date_headers_pass_through_once() {
    let (_backend, lb) = setup();
    let r = fetch(&lb, "GET", "/server-date");
    let head = String::from_utf8_lossy(&r.raw_head).into_owned();
    assert_eq!(r.header_values("server"), ["test-backend/1.0"], "{head}");
    assert_eq!(
        r.header_values("date"),
        ["Tue, 01 Jan 2030 00:00:00 GMT"],
        "{head}"
    );
}

#[test]
fn hop_by_hop_response_headers_are_removed() {
    let (_backend, lb) = setup();
    let mut client = Client::connect(lb.addr);
    let r = client.request("GET /hop HTTP/1.1\r\nHost: h.test\r\n\r\n");
    let head = String::from_utf8_lossy(&r.raw_head).into_owned();
    assert_eq!((r.status, r.text().as_str()), (200, "hop"));
    for hop in [
        "x-hop-resp",
        "keep-alive",
        "proxy-authenticate",
        "proxy-connection",
        "upgrade",
        "trailer",
    ] {
        assert!(!r.has_header(hop), "{hop} reached the client:\n{head}");
    }
    for v in r.header_values("connection") {
        assert!(!v.to_ascii_lowercase().contains("x-hop-resp"), "{head}");
    }
    assert_eq!(r.header_values("x-end-to-end"), ["kept"], "{head}");
    // The backend closing its connection is not the client's business: the client's connection
    // stays usable.
    let again = client.request("GET /again HTTP/1.1\r\nHost: h.test\r\n\r\n");
    assert_eq!((again.status, again.text().as_str()), (200, "ok"));
}

fn chunked_body() -> Vec<u8> {
    let mut body = b"first,second,".to_vec();
    body.extend_from_slice(&[b'z'; 70_000]);
    body.extend_from_slice(b"last");
    body
}

#[test]
fn a_chunked_backend_body_arrives_complete() {
    let (_backend, lb) = setup();
    let mut client = Client::connect(lb.addr);
    let r = client.request("GET /chunked HTTP/1.1\r\nHost: h.test\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.end, BodyEnd::Complete(chunked_body().len() as u64));
    assert!(r.body == chunked_body(), "chunked body changed on the way");
    // The connection is still good for the next request.
    let again = client.request("GET /again HTTP/1.1\r\nHost: h.test\r\n\r\n");
    assert_eq!((again.status, again.text().as_str()), (200, "ok"));
}

#[test]
fn a_close_delimited_backend_body_arrives_complete() {
    let (_backend, lb) = setup();
    let mut client = Client::connect(lb.addr);
    let r = client.request("GET /until-close HTTP/1.1\r\nHost: h.test\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.end, BodyEnd::Complete(50_000), "{:?}", r.headers);
    assert!(r.body.iter().all(|&b| b == b'w'));
}

/// One row of the response-side conformance table: the `Content-Length` lines a backend sends
/// with the 5-byte body `hello`, and what the client must get.
struct LengthRow {
    /// The RFC section the outcome follows.
    rfc: &'static str,
    /// The backend's `Content-Length` lines, each `Content-Length: <value>`.
    values: &'static [&'static str],
    /// `Some(n)`: relayed, framed with a `Content-Length` of `n`; `None`: 502, and the backend
    /// connection that sent it is never used again.
    relayed: Option<u64>,
}

fn length_rows() -> Vec<LengthRow> {
    let row = |rfc, values, relayed| LengthRow {
        rfc,
        values,
        relayed,
    };
    vec![
        row("RFC 9110 §8.6 (1*DIGIT)", &["5"], Some(5)),
        row("RFC 9110 §8.6 (leading zeros are digits)", &["05"], Some(5)),
        row("RFC 9110 §5.6.3 (SP and HTAB are OWS)", &["\t5 "], Some(5)),
        row(
            "RFC 9110 §8.6 (a list of identical values may be taken as one)",
            &["5, 5"],
            Some(5),
        ),
        row(
            "RFC 9110 §5.3 (two lines are one list: identical values)",
            &["5", "5"],
            Some(5),
        ),
        row("RFC 9110 §8.6 (1*DIGIT: no sign)", &["+5"], None),
        row("RFC 9110 §8.6 (1*DIGIT: no minus)", &["-5"], None),
        row("RFC 9110 §8.6 (1*DIGIT: no hex)", &["0x5"], None),
        row("RFC 9110 §8.6 (1*DIGIT: no space inside)", &["5 5"], None),
        row("RFC 9110 §8.6 (1*DIGIT: no parameters)", &["5;ext"], None),
        row("RFC 9110 §8.6 (1*DIGIT: not empty)", &[""], None),
        row(
            "RFC 9110 §8.6 (differing values in a list)",
            &["5, 6"],
            None,
        ),
        row(
            "RFC 9110 §8.6 (differing values on two lines)",
            &["5", "6"],
            None,
        ),
        row("RFC 9110 §8.6 (an empty list element)", &["5,"], None),
        row(
            "RFC 9110 §8.6 (anticipate overflow: 2^64 is refused, not wrapped)",
            &["18446744073709551616"],
            None,
        ),
        row(
            "RFC 9110 §5.6.3 (OWS is SP / HTAB only: U+00A0 before a length)",
            &["\u{a0}5"],
            None,
        ),
        row(
            "RFC 9110 §5.6.3 (U+0085 after a length)",
            &["5\u{85}"],
            None,
        ),
    ]
}

#[test]
fn a_backend_content_length_is_digits_only_else_502_and_its_connection_is_not_reused() {
    use std::sync::{Arc, Mutex};
    // Every request the backend received: its target and the balancer's port it came from.
    let seen: Arc<Mutex<Vec<(String, u16)>>> = Arc::default();
    let rows = length_rows();
    let values: Vec<&'static [&'static str]> = rows.iter().map(|r| r.values).collect();
    let backend = {
        let seen = Arc::clone(&seen);
        Backend::start(move |r, out| {
            let port = out.peer_addr().map(|a| a.port()).unwrap_or(0);
            seen.lock().unwrap().push((r.target.clone(), port));
            let Some(i) = r
                .target
                .strip_prefix("/cl/")
                .and_then(|i| i.parse::<usize>().ok())
            else {
                return reply(out, 200, &[], b"ok");
            };
            let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
            for v in values[i] {
                head.extend_from_slice(format!("Content-Length: {v}\r\n").as_bytes());
            }
            head.extend_from_slice(b"\r\nhello");
            // The connection stays open, as a keep-alive backend's would.
            out_write(out, &head)
        })
    };
    let lb = Lb::start(&[(&backend, 1)], |_| {});
    for (i, row) in rows.iter().enumerate() {
        let what = format!("{:?} [{}]", row.values, row.rfc);
        let mut client = Client::connect(lb.addr);
        let r = client.request(&format!("GET /cl/{i} HTTP/1.1\r\nHost: h.test\r\n\r\n"));
        match row.relayed {
            Some(n) => {
                assert_eq!((r.status, r.text().as_str()), (200, "hello"), "{what}");
                assert_eq!(r.header_values("content-length"), [n.to_string()], "{what}");
            }
            None => {
                assert_eq!(r.status, 502, "{what}: {}", r.text());
                assert!(!r.text().trim().is_empty(), "{what}: no reason");
            }
        }
        // The client's connection is good for the next request either way.
        let again = client.request(&format!("GET /after/{i} HTTP/1.1\r\nHost: h.test\r\n\r\n"));
        assert_eq!((again.status, again.text().as_str()), (200, "ok"), "{what}");
    }
    // A backend connection that sent a malformed length carried nothing after it: what follows
    // on it could be anything (the body was framed in a way nobody can know).
    let seen = seen.lock().unwrap().clone();
    for (i, row) in rows.iter().enumerate() {
        if row.relayed.is_some() {
            continue;
        }
        let target = format!("/cl/{i}");
        let port = seen.iter().find(|(t, _)| *t == target).expect("sent").1;
        let later: Vec<&String> = seen
            .iter()
            .skip_while(|(t, _)| *t != target)
            .skip(1)
            .filter(|(_, p)| *p == port)
            .map(|(t, _)| t)
            .collect();
        assert!(later.is_empty(), "{:?}: reused for {later:?}", row.values);
    }
}

//! HTTP/1.1 conformance of the front end, as a table: each row sends raw request bytes to a
//! running balancer in front of a test backend and states the outcome the RFC rule it cites
//! asks for: our status, whether the connection stays open, and what reached the backend.
//!
//! The rows are mostly request-smuggling shapes: a request that a proxy and a backend could
//! frame differently must be refused before any of it is forwarded, and its connection closed
//! so that no leftover byte is read as a request. A connection kept open is checked with a
//! second request on it, which must get its own answer.
//!
//! Rows run one after another against one balancer; each has a marker in its target
//! (`/r01`...) so that what the backend received can be told apart.

use std::process::Command;
use std::time::Duration;

use crate::support::{self, dead_backend_url, reply, Backend, Client, Headers, Lb, Received};

/// What becomes of the client's connection after the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum After {
    /// Still open: a second request on it gets its own answer.
    Kept,
    /// Closed by the balancer after the answer, with nothing else sent.
    Closed,
}

/// What reached the backend.
enum Reached {
    /// Nothing at all.
    Nothing,
    /// One complete request.
    Got {
        /// Its request line, e.g. `GET /r01 HTTP/1.1`.
        line: &'static str,
        /// Its (decoded) body.
        body: &'static [u8],
        /// Byte strings its head must contain (ASCII compared without regard to case: the
        /// HTTP library sends header names in lower case).
        has: &'static [&'static [u8]],
        /// Byte strings its head must not contain (compared the same way).
        lacks: &'static [&'static [u8]],
    },
}

/// One row of the table.
struct Row {
    /// Marker in the row's target, e.g. `/r01`.
    mark: &'static str,
    /// The RFC section the outcome follows.
    rfc: &'static str,
    /// The raw request.
    request: Vec<u8>,
    /// Our answer's status (the backend answers 200 with the target it saw).
    status: u16,
    after: After,
    reached: Reached,
}

fn row(
    mark: &'static str,
    rfc: &'static str,
    request: impl AsRef<[u8]>,
    status: u16,
    after: After,
    reached: Reached,
) -> Row {
    Row {
        mark,
        rfc,
        request: request.as_ref().to_vec(),
        status,
        after,
        reached,
    }
}

/// The answer of a row refused by the front end: 400, connection closed, nothing forwarded.
fn refused(mark: &'static str, rfc: &'static str, request: impl AsRef<[u8]>) -> Row {
    row(mark, rfc, request, 400, After::Closed, Reached::Nothing)
}

fn got(line: &'static str, body: &'static [u8], has: &'static [&'static [u8]]) -> Reached {
    Reached::Got {
        line,
        body,
        has,
        lacks: &[],
    }
}

use After::{Closed, Kept};

fn table() -> Vec<Row> {
    vec![
        // --- Content-Length and Transfer-Encoding together (request smuggling, CL.TE / TE.CL)
        refused(
            "/r01",
            "RFC 9112 §6.1 (CL+TE: reject or ignore CL, and close)",
            "POST /r01 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        refused(
            "/r02",
            "RFC 9112 §6.1 (TE+CL, the other order)",
            "POST /r02 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        ),
        // --- Transfer-Encoding values
        refused(
            "/r03",
            "RFC 9112 §6.3 (chunked not the final coding → 400, close)",
            "POST /r03 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        ),
        refused(
            "/r04",
            "RFC 9112 §6.3 (chunked not the final coding → 400, close)",
            "POST /r04 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        ),
        row(
            "/r05",
            "RFC 9110 §5.6.3 (HTAB is OWS)",
            "POST /r05 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\tchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            200,
            Kept,
            // Buffered, then forwarded with its length (the poller decodes chunked bodies).
            Reached::Got {
                line: "POST /r05 HTTP/1.1",
                body: b"hello",
                has: &[b"\r\ncontent-length: 5\r\n"],
                lacks: &[b"transfer-encoding"],
            },
        ),
        refused(
            "/r06",
            "RFC 9112 §6.3 (two TE fields are `chunked, chunked`: chunked twice)",
            "POST /r06 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        refused(
            "/r07",
            "RFC 9112 §6.1 (Transfer-Encoding in HTTP/1.0: framing is faulty, close)",
            "POST /r07 HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        // --- Field syntax
        refused(
            "/r08",
            "RFC 9112 §2.2 (whitespace before the first field line: reject)",
            "GET /r08 HTTP/1.1\r\n Transfer-Encoding: chunked\r\nHost: t\r\n\r\n",
        ),
        refused(
            "/r09",
            "RFC 9112 §5.2 (obs-fold: reject with 400 or unfold)",
            "GET /r09 HTTP/1.1\r\nHost: t\r\nX-Folded: a\r\n b\r\n\r\n",
        ),
        refused(
            "/r10",
            "RFC 9110 §5.5 (NUL in a field value: reject)",
            "GET /r10 HTTP/1.1\r\nHost: t\r\nX-Nul: a\0b\r\n\r\n",
        ),
        row(
            "/r11",
            "RFC 9110 §5.5 (obs-text in a field value passes through)",
            b"GET /r11 HTTP/1.1\r\nHost: t\r\nX-Latin1: caf\xe9 \xff\r\n\r\n",
            200,
            Kept,
            got("GET /r11 HTTP/1.1", b"", &[b"\r\nx-latin1: caf\xe9 \xff\r\n"]),
        ),
        // --- Content-Length values
        row(
            "/r12",
            "RFC 9110 §8.6 (a list of identical values may be taken as one)",
            "POST /r12 HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nhello",
            200,
            Kept,
            Reached::Got {
                line: "POST /r12 HTTP/1.1",
                body: b"hello",
                has: &[b"\r\ncontent-length: 5\r\n"],
                lacks: &[b"5, 5"],
            },
        ),
        refused(
            "/r13",
            "RFC 9110 §8.6 (Content-Length = 1*DIGIT: no sign)",
            "POST /r13 HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello",
        ),
        refused(
            "/r14",
            "RFC 9110 §8.6 (1*DIGIT: no hex)",
            "POST /r14 HTTP/1.1\r\nHost: t\r\nContent-Length: 0x5\r\n\r\nhello",
        ),
        refused(
            "/r15",
            "RFC 9110 §8.6 (1*DIGIT: no parameters)",
            "POST /r15 HTTP/1.1\r\nHost: t\r\nContent-Length: 5;ext\r\n\r\nhello",
        ),
        refused(
            "/r16",
            "RFC 9110 §8.6 (anticipate overflow: 2^64 is refused, not wrapped)",
            "POST /r16 HTTP/1.1\r\nHost: t\r\nContent-Length: 18446744073709551616\r\n\r\nhello",
        ),
        // --- Unicode whitespace is not OWS: `str::trim` would read these as valid
        refused(
            "/r17",
            "RFC 9110 §5.6.3 (OWS is SP / HTAB only: U+3000 before chunked)",
            "POST /r17 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: \u{3000}chunked\r\n\r\n0\r\n\r\n",
        ),
        refused(
            "/r18",
            "RFC 9110 §5.6.3 (U+00A0 after chunked)",
            "POST /r18 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\u{a0}\r\n\r\n0\r\n\r\n",
        ),
        refused(
            "/r19",
            "RFC 9110 §5.6.3 (U+200A before a length)",
            "POST /r19 HTTP/1.1\r\nHost: t\r\nContent-Length: \u{200a}5\r\n\r\nhello",
        ),
        refused(
            "/r20",
            "RFC 9110 §5.6.3 (U+0085 after a length)",
            "POST /r20 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\u{85}\r\n\r\nhello",
        ),
        // --- Chunked bodies
        row(
            "/r21",
            "RFC 9112 §7.1 (bare LF ends no chunk line: CRLF only)",
            "POST /r21 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
            400,
            Closed,
            Reached::Nothing,
        ),
        row(
            "/r22",
            "RFC 9112 §7.1 (bare LF after chunk data)",
            "POST /r22 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n",
            400,
            Closed,
            Reached::Nothing,
        ),
        row(
            "/r23",
            "RFC 9112 §7.1 (chunk-size = 1*HEXDIG: leading zeros are digits)",
            "POST /r23 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
             0000000000000000000005\r\nhello\r\n0\r\n\r\n",
            200,
            Kept,
            got("POST /r23 HTTP/1.1", b"hello", &[]),
        ),
        // --- Request targets and Host
        row(
            "/r24",
            "RFC 9112 §3.2.2 (absolute form accepted; its authority is the Host)",
            "GET http://lb.test/r24?q=1 HTTP/1.1\r\n\r\n",
            200,
            Kept,
            got("GET /r24?q=1 HTTP/1.1", b"", &[b"\r\nhost: lb.test\r\n"]),
        ),
        row(
            "/r25",
            "RFC 9112 §3.2.2 (absolute form with a body, Host the same)",
            "POST http://LB.test:8080/r25 HTTP/1.1\r\nHost: lb.test:8080\r\nContent-Length: 5\r\n\r\nhello",
            200,
            Kept,
            got("POST /r25 HTTP/1.1", b"hello", &[b"\r\nhost: lb.test:8080\r\n"]),
        ),
        refused(
            "/r26",
            "RFC 9112 §3.2.2 (a client sends Host identical to the target's authority)",
            "GET http://a.test/r26 HTTP/1.1\r\nHost: b.test\r\n\r\n",
        ),
        refused(
            "/r27",
            "RFC 9110 §4.2.2 (https:// is not for us: a plain-text hop would lose its security)",
            "GET https://lb.test/r27 HTTP/1.1\r\nHost: lb.test\r\n\r\n",
        ),
        refused(
            "/r28",
            "RFC 9112 §3.2 (more than one Host → 400)",
            "GET /r28 HTTP/1.1\r\nHost: t\r\nHost: t\r\n\r\n",
        ),
        row(
            "/r29",
            "RFC 9110 §9.3.6 (CONNECT: no tunnels here; its body is unread, so close)",
            "CONNECT lb.test:443 HTTP/1.1\r\nHost: lb.test:443\r\nX-Mark: /r29\r\nContent-Length: 5\r\n\r\nhello",
            405,
            Closed,
            Reached::Nothing,
        ),
        row(
            "/r30",
            "RFC 9112 §3.2.4 (asterisk form, OPTIONS only, forwarded as is)",
            "OPTIONS * HTTP/1.1\r\nHost: t\r\nX-Mark: /r30\r\n\r\n",
            200,
            Kept,
            got("OPTIONS * HTTP/1.1", b"", &[b"\r\nx-mark: /r30\r\n"]),
        ),
        row(
            "/r31",
            "RFC 9112 §3.2.4 (OPTIONS of an empty absolute path → OPTIONS * at the origin)",
            "OPTIONS http://lb.test HTTP/1.1\r\nX-Mark: /r31\r\n\r\n",
            200,
            Kept,
            got("OPTIONS * HTTP/1.1", b"", &[b"\r\nx-mark: /r31\r\n"]),
        ),
        row(
            "/r32",
            "RFC 9112 §3.2.4 (asterisk form for a method other than OPTIONS; no body, so kept)",
            "GET * HTTP/1.1\r\nHost: t\r\nX-Mark: /r32\r\n\r\n",
            400,
            Kept,
            Reached::Nothing,
        ),
        row(
            "/r33",
            "RFC 9112 §3.2.2 (the path of an absolute target is the path: deny_path applies)",
            "GET http://lb.test/r33/admin HTTP/1.1\r\n\r\n",
            403,
            Kept,
            Reached::Nothing,
        ),
        // --- Host values: uri-host [ ":" port ] (RFC 9110 §7.2, RFC 3986 §3.2.2, §3.2.3)
        refused(
            "/r34",
            "RFC 9112 §3.2 (a Host with an invalid value → 400: a space)",
            "GET /r34 HTTP/1.1\r\nHost: a b\r\n\r\n",
        ),
        refused(
            "/r35",
            "RFC 9112 §3.2 (invalid Host: `/` is no reg-name character)",
            "GET /r35 HTTP/1.1\r\nHost: a/b\r\n\r\n",
        ),
        refused(
            "/r36",
            "RFC 9112 §3.2 (invalid Host: an IP-literal without its `]`)",
            "GET /r36 HTTP/1.1\r\nHost: [::1\r\n\r\n",
        ),
        refused(
            "/r37",
            "RFC 9112 §3.2 (invalid Host: port = *DIGIT)",
            "GET /r37 HTTP/1.1\r\nHost: a:b\r\n\r\n",
        ),
        refused(
            "/r38",
            "RFC 9112 §3.2 (invalid Host: user info is no part of it)",
            "GET /r38 HTTP/1.1\r\nHost: u@a\r\n\r\n",
        ),
        refused(
            "/r39",
            "RFC 9110 §4.2.1 (a port and no host: an http authority has a host)",
            "GET /r39 HTTP/1.1\r\nHost: :80\r\n\r\n",
        ),
        row(
            "/r40",
            "RFC 3986 §3.2.2 (an IPv6 literal with a port)",
            "GET /r40 HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
            200,
            Kept,
            got("GET /r40 HTTP/1.1", b"", &[b"\r\nhost: [::1]:8080\r\n"]),
        ),
        row(
            "/r41",
            "RFC 9112 §3.2 (an empty Host: the target has no authority)",
            "GET /r41 HTTP/1.1\r\nHost:\r\n\r\n",
            200,
            Kept,
            got("GET /r41 HTTP/1.1", b"", &[b"\r\nhost: \r\n"]),
        ),
    ]
}

/// The requests the backend received that belong to the row with `mark` (in the target, or
/// in an `X-Mark` header for asterisk-form rows).
fn of_row(backend: &Backend, mark: &str) -> Vec<Received> {
    let ours = |r: &Received| r.target.starts_with(mark) || r.header("x-mark") == Some(mark);
    backend.requests().into_iter().filter(ours).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    let haystack = haystack.to_ascii_lowercase();
    let needle = needle.to_ascii_lowercase();
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn check_row(lb: &Lb, backend: &Backend, row: &Row) {
    let what = format!("{} [{}]", row.mark, row.rfc);
    eprintln!("row {what}");
    let mut client = Client::connect(lb.addr);
    client.send(&row.request);
    let method = String::from_utf8_lossy(&row.request)
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_string();
    let answer = client.read_response(&method);
    assert_eq!(answer.status, row.status, "{what}: {}", answer.text());
    if row.status >= 400 {
        // Our own answers carry a short plain-text reason.
        assert!(!answer.text().trim().is_empty(), "{what}: no reason");
    }
    match row.after {
        After::Closed => {
            let rest = client.rest_until_closed(Duration::from_secs(5));
            assert!(
                rest.is_empty(),
                "{what}: more after the answer: {:?}",
                String::from_utf8_lossy(&rest)
            );
        }
        After::Kept => {
            let next = format!("{}-next", row.mark);
            let r = client.request(&format!("GET {next} HTTP/1.1\r\nHost: t\r\n\r\n"));
            assert_eq!((r.status, r.text()), (200, next), "{what}: second request");
        }
    }
    let seen = of_row(backend, row.mark);
    let seen: Vec<&Received> = seen
        .iter()
        .filter(|r| !r.target.ends_with("-next"))
        .collect();
    match &row.reached {
        Reached::Nothing => assert!(seen.is_empty(), "{what}: forwarded {seen:#?}"),
        Reached::Got {
            line,
            body,
            has,
            lacks,
        } => {
            assert_eq!(seen.len(), 1, "{what}: {seen:#?}");
            let got = seen[0];
            let head = String::from_utf8_lossy(&got.raw_head);
            assert_eq!(
                format!("{} {} {}", got.method, got.target, got.version),
                *line,
                "{what}"
            );
            assert!(got.body_complete, "{what}");
            assert_eq!(got.body, *body, "{what}");
            assert_eq!(answer.text(), got.target, "{what}: the backend's answer");
            for h in has.iter() {
                assert!(contains(&got.raw_head, h), "{what}: no {h:?} in {head}");
            }
            for h in lacks.iter() {
                assert!(!contains(&got.raw_head, h), "{what}: {h:?} in {head}");
            }
        }
    }
}

/// A backend that answers 200 with the target it saw, and an obs-text header.
fn echo() -> Backend {
    Backend::start(|r, out| {
        let mut answer = Vec::new();
        answer.extend_from_slice(b"HTTP/1.1 200 OK\r\nX-Back: caf\xe9 \xff\r\nContent-Length: ");
        answer.extend_from_slice(format!("{}\r\n\r\n{}", r.target.len(), r.target).as_bytes());
        std::io::Write::write_all(out, &answer)
    })
}

#[test]
fn the_conformance_table() {
    let backend = echo();
    let lb = Lb::start(&[(&backend, 1)], |c| {
        c.filter.deny_paths = vec!["/r33/admin".into()];
    });
    let rows = table();
    for row in &rows {
        check_row(&lb, &backend, row);
    }
    // A request refused on the poller never reaches a worker, so nothing can arrive late; the
    // streamed-body rows may have sent a head, never a whole request. Checked again after all
    // rows, with every connection to the balancer closed.
    for row in rows.iter() {
        let seen = of_row(&backend, row.mark);
        let complete = seen
            .iter()
            .filter(|r| r.body_complete && !r.target.ends_with("-next"))
            .count();
        let expected = usize::from(matches!(row.reached, Reached::Got { .. }));
        assert_eq!(complete, expected, "{}: {seen:#?}", row.mark);
    }
}

#[test]
fn obs_text_in_a_backend_answer_reaches_the_client_unchanged() {
    let backend = echo();
    let lb = Lb::start(&[(&backend, 1)], |_| {});
    let mut client = Client::connect(lb.addr);
    let r = client.request("GET /back HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "/back"));
    assert!(
        contains(&r.raw_head, b"\r\nx-back: caf\xe9 \xff\r\n"),
        "{:?}",
        String::from_utf8_lossy(&r.raw_head)
    );
}

#[test]
fn curl_can_use_the_balancer_as_its_proxy() {
    let backend = Backend::start(|r, out| reply(out, 200, &[], r.target.as_bytes()));
    let lb = Lb::start(&[(&backend, 1)], |_| {});
    // curl sends `GET http://ADDR/x?y=1 HTTP/1.1` with `Host: ADDR` and `Proxy-Connection`.
    let proxy = format!("http://{}", lb.addr);
    let url = format!("{proxy}/x?y=1");
    let out = match Command::new("curl")
        .args(["-sS", "--max-time", "10", "-x", &proxy, &url])
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!("curl_can_use_the_balancer_as_its_proxy: skipped, no curl ({e})");
            return;
        }
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "/x?y=1");
    let got = backend.only_request();
    assert_eq!(got.target, "/x?y=1");
    assert_eq!(got.header("host"), Some(lb.addr.to_string().as_str()));
    assert!(!got.has_header("proxy-connection"), "hop-by-hop");
}

#[test]
fn refusals_the_balancer_can_decide_come_before_100_continue() {
    // RFC 9110 §10.1.1: a server that will refuse a request anyway answers before the body is
    // sent, so the client never sends it.
    let backend = echo();
    let lb = Lb::start(&[(&backend, 1)], |c| {
        c.filter.max_body = Some(1000);
        c.filter.deny_paths = vec!["/private".into()];
    });
    for (request, status) in [
        (
            "PUT /big HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\nExpect: 100-continue\r\n\r\n",
            413,
        ),
        (
            "PUT /private HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n",
            403,
        ),
    ] {
        let mut client = Client::connect(lb.addr);
        client.send(request.as_bytes());
        let r = client.read_response("PUT");
        assert!(
            r.raw_head.starts_with(format!("HTTP/1.1 {status} ").as_bytes()),
            "no 100 Continue before the refusal: {}",
            String::from_utf8_lossy(&r.raw_head)
        );
    }
    // With no backend to take it, 503 before the body too.
    let dead = Lb::start(&[(&backend, 1)], |c| {
        c.backends[0] = loadbalancer::config::BackendConfig::parse(&dead_backend_url(), 1).unwrap();
        c.health.enabled = true;
        c.health.interval = Duration::from_millis(100);
        c.health.timeout = Duration::from_millis(100);
        c.health.fall = 1;
    });
    support::wait_until("the backend marked down", Duration::from_secs(10), || {
        dead.running()
            .pool()
            .backends()
            .iter()
            .all(|b| !b.is_available())
    });
    let mut client = Client::connect(dead.addr);
    client
        .send(b"PUT /up HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n");
    let r = client.read_response("PUT");
    assert!(
        r.raw_head.starts_with(b"HTTP/1.1 503 "),
        "{}",
        String::from_utf8_lossy(&r.raw_head)
    );
    // An acceptable upload is told to go on, and then answered.
    let mut client = Client::connect(lb.addr);
    client
        .send(b"PUT /ok HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
    let r = client.read_response("PUT");
    assert_eq!(r.status, 100, "the interim answer first");
    client.send(b"data");
    assert_eq!(client.read_response("PUT").status, 200);
}

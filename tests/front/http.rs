//! HTTP/1.1 connection handling by the front end: pipelined requests are answered in order,
//! HTTP/1.0 clients get answers they can read (closing when they did not ask to keep the
//! connection, and when the length is unknown), `Expect: 100-continue` is answered before the
//! body is read, and a refused request without a body keeps its connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::{self, reply, reply_chunked, Backend, BodyEnd, Client, Headers, Lb};

/// A backend that answers with the target and the request body: `GET /a` → `/a:`.
fn echo() -> Backend {
    Backend::start(|r, out| {
        let mut body = format!("{}:", r.target).into_bytes();
        body.extend_from_slice(&r.body);
        if r.target.starts_with("/chunked") {
            reply_chunked(out, 200, &[], &[&body[..]])
        } else {
            reply(out, 200, &[], &body)
        }
    })
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let backend = echo();
    let lb = Lb::start(&[(&backend, 1)], |_| {});
    let mut client = Client::connect(lb.addr);
    // Three requests in one write, a body in the middle one, the last one closing.
    client.send(
        b"GET /p/1 HTTP/1.1\r\nHost: t\r\n\r\n\
          POST /p/2 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello\
          GET /p/3 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let texts: Vec<String> = ["GET", "POST", "GET"]
        .iter()
        .map(|m| client.read_response(m).text())
        .collect();
    assert_eq!(texts, ["/p/1:", "/p/2:hello", "/p/3:"]);
    assert!(client.rest_until_closed(Duration::from_secs(5)).is_empty());
    let seen: Vec<String> = backend
        .requests()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(seen, ["/p/1", "/p/2", "/p/3"]);
}

#[test]
fn a_request_split_across_many_writes_is_read_whole() {
    let backend = echo();
    let lb = Lb::start(&[(&backend, 1)], |_| {});
    let mut client = Client::connect(lb.addr);
    let raw = b"POST /split HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc";
    for byte in raw {
        client.send(&[*byte]);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(client.read_response("POST").text(), "/split:abc");
}

/// Sends `raw` on a new connection and returns everything until the balancer closes it.
fn until_closed(lb: &Lb, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(lb.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(raw).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got)
        .expect("the balancer closes the connection");
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn http10_clients_get_answers_they_can_read() {
    let backend = echo();
    let lb = Lb::start(&[(&backend, 1)], |_| {});

    // No keep-alive asked for: the answer says close, and the connection closes.
    let text = until_closed(&lb, b"GET /old HTTP/1.0\r\n\r\n");
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\n/old:"), "{text}");

    // An unknown length (the backend answers chunked): no chunked encoding for an HTTP/1.0
    // client; the body ends with the connection.
    let text = until_closed(
        &lb,
        b"GET /chunked HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    );
    assert!(
        !text.to_ascii_lowercase().contains("transfer-encoding"),
        "{text}"
    );
    assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\n/chunked:"), "{text}");

    // Keep-alive asked for and the length known: the connection stays for the next request.
    let s = TcpStream::connect(lb.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut writer = s;
    for i in 0..2 {
        writer
            .write_all(format!("GET /ka/{i} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").as_bytes())
            .unwrap();
        let head = support::read_head(&mut reader).unwrap().expect("an answer");
        assert!(head.start_line.starts_with("HTTP/1.1 200"), "{head:?}");
        let lookup = |n: &str| {
            head.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        assert_eq!(lookup("connection").as_deref(), Some("keep-alive"));
        let len: usize = lookup("content-length").unwrap().parse().unwrap();
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        assert_eq!(body, format!("/ka/{i}:").as_bytes());
    }
    assert_eq!(backend.count(), 4);
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let backend = echo();
    let lb = Lb::start(&[(&backend, 1)], |_| {});
    let s = TcpStream::connect(lb.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut writer = s;
    writer
        .write_all(
            b"PUT /up HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
        )
        .unwrap();
    // The client waits for the interim answer before it sends the body.
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "HTTP/1.1 100 Continue\r\n");
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "\r\n");
    writer.write_all(b"data").unwrap();
    let head = support::read_head(&mut reader).unwrap().unwrap();
    assert!(head.start_line.starts_with("HTTP/1.1 200"), "{head:?}");
    let got = backend.only_request();
    assert_eq!(got.body, b"data");
    assert!(
        !got.has_header("expect"),
        "the balancer answered the expectation itself"
    );
}

#[test]
fn a_refused_request_without_a_body_keeps_its_connection() {
    let backend = echo();
    let lb = Lb::start(&[(&backend, 1)], |c| {
        c.filter.deny_paths = vec!["/private".into()];
    });
    let mut client = Client::connect(lb.addr);
    let r = client.request("GET /private HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 403);
    assert!(!r.has_header("connection"), "kept open: {:?}", r.headers);
    let r = client.request("GET /public HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (200, "/public:"));

    // With a body the balancer did not read, the connection closes after the refusal.
    let mut client = Client::connect(lb.addr);
    let r = client.request("POST /private HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nGET /");
    assert_eq!(r.status, 403);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(client.rest_until_closed(Duration::from_secs(5)).is_empty());
    assert_eq!(backend.count(), 1);
}

#[test]
fn a_backend_body_failing_before_its_first_byte_is_a_bad_gateway() {
    // The backend promises 10 bytes and closes at once: the client gets our 502, not a
    // truncated 200.
    let backend = Backend::start(|_, out| {
        out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")?;
        out.shutdown(std::net::Shutdown::Both)
    });
    let lb = Lb::start(&[(&backend, 1)], |_| {});
    let r = support::get(lb.addr, "/short");
    // The answer's head goes out with its first body bytes, so nothing was sent yet.
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(r.end, BodyEnd::Complete(r.body.len() as u64));
    assert!(r.text().contains("backend failed"), "{}", r.text());
}

//! Mutated requests against the running balancer: each of a few valid requests with one byte
//! replaced by a byte that matters to HTTP framing, at every position. Whatever arrives, the
//! client gets well-formed answers or a closed connection, within a deadline, never a 500 (a
//! panic caught in a worker), and the balancer goes on serving. The parser and the chunked
//! decoder get many more random cases in `src/http/fuzz.rs`.

use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::support::{self, read_body, read_head, Backend, Framing, Lb};

const SEEDS: &[&str] = &[
    "GET /a?b=c HTTP/1.1\r\nHost: t\r\nX-A: 1\r\n\r\n",
    "POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
    "PUT /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "GET /1 HTTP/1.1\r\nHost: t\r\n\r\nGET /2 HTTP/1.1\r\nHost: t\r\n\r\n",
];

const SPECIAL: &[u8] = b"\0\r\n :";

/// Sends `raw`, closes our sending side, and reads until the balancer closes. Returns the
/// statuses of the answers, checking each is well formed.
fn statuses(addr: SocketAddr, raw: &[u8]) -> Vec<u16> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // A refusal can close the connection before everything is written: that is fine.
    let _ = s.write_all(raw);
    let _ = s.shutdown(Shutdown::Write);
    let mut got = Vec::new();
    if let Err(e) = s.read_to_end(&mut got) {
        assert_ne!(
            e.kind(),
            std::io::ErrorKind::WouldBlock,
            "no end within 10 s for {raw:?}"
        );
    }
    let mut reader = BufReader::new(&got[..]);
    let mut out = Vec::new();
    while let Some(head) = read_head(&mut reader)
        .unwrap_or_else(|e| panic!("malformed answer to {raw:?}: {e}: {got:?}"))
    {
        let status: u16 = head
            .start_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|r| r.get(..3))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {:?}", head.start_line));
        let header = |name: &str| {
            head.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let framing = match (header("content-length"), header("transfer-encoding")) {
            (Some(n), None) => Framing::Length(n.parse().expect("numeric length")),
            (None, Some(_)) => Framing::Chunked,
            (None, None) if status == 204 || status == 304 => Framing::None,
            (None, None) => Framing::UntilClose,
            (Some(_), Some(_)) => panic!("both framings in {head:?}"),
        };
        read_body(&mut reader, framing, &mut |_| {}).unwrap();
        out.push(status);
    }
    out
}

#[test]
fn mutated_requests_get_answers_or_a_close_never_a_hang_or_a_panic() {
    let backend = Backend::answering("ok");
    let lb = Lb::start(&[(&backend, 1)], |c| {
        c.timeouts.head = Duration::from_secs(2);
        c.timeouts.client = Duration::from_secs(2);
    });
    let started = Instant::now();
    let mut cases = 0;
    for seed in SEEDS {
        let seed = seed.as_bytes();
        for at in 0..seed.len() {
            for &byte in SPECIAL {
                if seed[at] == byte {
                    continue;
                }
                let mut raw = seed.to_vec();
                raw[at] = byte;
                for status in statuses(lb.addr, &raw) {
                    assert!(
                        status != 500 && (200..600).contains(&status),
                        "status {status} for {:?}",
                        String::from_utf8_lossy(&raw)
                    );
                }
                cases += 1;
            }
        }
    }
    assert!(cases > 500, "{cases} cases");
    // Still serving, and not slowed down by what it went through.
    let r = support::get(lb.addr, "/after");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    eprintln!("{cases} mutated requests in {:?}", started.elapsed());
}

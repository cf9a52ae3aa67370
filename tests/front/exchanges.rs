//! Every exchange ends: pipelined requests are each answered as soon as the one before is out
//! (none lost, none waiting on a timer), timers fire at their deadlines, a backend that stops
//! reading an upload costs a 504 after `timeouts send=` and frees its worker, and an answer cut
//! off by its backend reaches the client as a reset, never as a clean end.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use loadbalancer::http::{
    BufferLimits, Buffers, Exchange, Handler, Limits, Refusal, RefusalCause, Request, RequestHead,
    Server,
};

use crate::support::{self, reply, Backend, BodyEnd, Client, Lb};

/// Three backends that answer with their name, the target and the body's length: `b:/p/3:1000`.
fn echoes() -> [Backend; 3] {
    ["a", "b", "c"].map(|name| {
        Backend::start(move |r, out| {
            if r.is_health_check() {
                return reply(out, 200, &[], b"ok");
            }
            let body = format!("{name}:{}:{}", r.target, r.body_len);
            reply(out, 200, &[], body.as_bytes())
        })
    })
}

/// A balancer over `backends` with health checks on (every 100 ms), as the reproduction.
fn balancer(backends: &[Backend]) -> Lb {
    let weighted: Vec<(&Backend, u32)> = backends.iter().map(|b| (b, 1)).collect();
    Lb::start(&weighted, |c| {
        support::health_checks(c, Duration::from_millis(100), Duration::from_secs(1), 1, 2)
    })
}

/// The target an echo answered for: `b:/p/3:1000` → `/p/3`, and the body length it saw.
fn echoed(text: &str) -> (String, u64) {
    let mut parts = text.splitn(3, ':');
    let _name = parts.next();
    let target = parts.next().unwrap_or_default().to_string();
    let len = parts
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX);
    (target, len)
}

#[test]
fn twenty_pipelined_gets_are_answered_at_once_not_on_a_timer() {
    let backends = echoes();
    let lb = balancer(&backends);
    let mut client = Client::connect(lb.addr);
    // Warm up the connections to the backends, so that the timing is the front end's.
    for _ in 0..6 {
        let r = client.request("GET /warm HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(r.status, 200);
    }
    let raw: String = (0..20)
        .map(|i| format!("GET /echo?i={i} HTTP/1.1\r\nHost: t\r\n\r\n"))
        .collect();
    let started = Instant::now();
    client.send(raw.as_bytes());
    for i in 0..20 {
        let r = client.read_response("GET");
        assert_eq!(echoed(&r.text()).0, format!("/echo?i={i}"), "in order");
    }
    let took = started.elapsed();
    // HAProxy and nginx take 10-14 ms for these; each answer used to wait for a 100 ms tick.
    assert!(
        took < Duration::from_millis(100),
        "20 pipelined GETs took {took:?}"
    );
}

#[test]
fn a_post_and_a_get_in_one_write_are_both_answered_every_time() {
    let backends = echoes();
    let lb = balancer(&backends);
    let mut client = Client::connect(lb.addr);
    let body = vec![b'x'; 1000];
    for round in 0..20 {
        let mut raw =
            format!("POST /post/{round} HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n")
                .into_bytes();
        raw.extend_from_slice(&body);
        raw.extend_from_slice(format!("GET /get/{round} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        client.send(&raw);
        let post = client.read_response("POST");
        assert_eq!(echoed(&post.text()), (format!("/post/{round}"), 1000));
        let get = client.read_response("GET");
        assert_eq!(
            echoed(&get.text()),
            (format!("/get/{round}"), 0),
            "round {round}"
        );
    }
}

#[test]
fn a_thousand_pipelined_requests_with_bodies_are_answered_in_order() {
    let backends = echoes();
    let lb = balancer(&backends);
    let mut client = Client::connect(lb.addr);
    let mut raw = Vec::new();
    for i in 0..1000 {
        if i % 2 == 0 {
            raw.extend_from_slice(format!("GET /p/{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        } else {
            let len = 1 + i % 1500;
            let head = format!("POST /p/{i} HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n");
            raw.extend_from_slice(head.as_bytes());
            raw.extend(std::iter::repeat_n(b'y', len));
        }
    }
    let started = Instant::now();
    // Written on its own thread: the balancer answers while the client is still sending.
    let mut writer = client.writer().try_clone().unwrap();
    let sending = thread::spawn(move || writer.write_all(&raw));
    for i in 0..1000 {
        let method = if i % 2 == 0 { "GET" } else { "POST" };
        let r = client.read_response(method);
        let want = if i % 2 == 0 { 0 } else { 1 + i % 1500 } as u64;
        assert_eq!(echoed(&r.text()), (format!("/p/{i}"), want), "answer {i}");
    }
    sending.join().unwrap().unwrap();
    let took = started.elapsed();
    // A release build takes well under a second; the bound leaves room for a debug build on a
    // busy machine. Waiting on a 100 ms timer per request took 100 s.
    assert!(
        took < Duration::from_secs(10),
        "1000 pipelined requests took {took:?}"
    );
    let served: usize = backends.iter().map(|b| b.count_except_health()).sum();
    assert_eq!(served, 1000);
}

#[test]
fn head_timeouts_fire_at_their_deadlines_not_on_a_tick() {
    let backends = echoes();
    let lb = Lb::start(&[(&backends[0], 1)], |c| {
        c.timeouts.head = Duration::from_millis(300);
    });
    // Five clients start a head 25 ms apart: each gets its 408 300 ms after its first byte. A
    // pass over the connections every 100 ms would be up to 100 ms late for some of them.
    let clients: Vec<_> = (0..5)
        .map(|i| {
            let addr = lb.addr;
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(25 * i));
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let sent = Instant::now();
                s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").unwrap();
                let mut got = [0u8; 12];
                s.read_exact(&mut got).unwrap();
                (sent.elapsed(), got)
            })
        })
        .collect();
    for c in clients {
        let (took, got) = c.join().unwrap();
        assert_eq!(&got, b"HTTP/1.1 408");
        assert!(
            took >= Duration::from_millis(295) && took < Duration::from_millis(360),
            "408 after {took:?}, the deadline was 300 ms"
        );
    }
}

/// A backend that reads request heads and never reads a body: its receive window (kept small)
/// fills, and a balancer writing an upload to it blocks, as behind a frozen process whose kernel
/// still accepts. Requests without a body are answered at once. Notes when each upload's head
/// arrived.
fn stops_reading_uploads() -> (std::net::SocketAddr, Arc<Mutex<Vec<Instant>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    support::set_receive_buffer(listener.as_raw_fd(), 4096).unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let counter = Arc::clone(&held);
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let held = Arc::clone(&counter);
            thread::spawn(move || serve_until_an_upload(stream, &held));
        }
    });
    (addr, held)
}

fn serve_until_an_upload(mut stream: TcpStream, held: &Mutex<Vec<Instant>>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        head.clear();
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
        if text.contains("content-length") || text.contains("transfer-encoding") {
            held.lock().unwrap().push(Instant::now());
            // Never read the body; keep the connection until the balancer gives up on it.
            let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
            thread::sleep(Duration::from_secs(60));
            return;
        }
        if reply(&mut stream, 200, &[], b"served").is_err() {
            return;
        }
    }
}

#[test]
fn an_upload_to_a_backend_that_stops_reading_gets_504_and_frees_the_worker() {
    let (addr, held) = stops_reading_uploads();
    let url = format!("http://{addr}");
    let send = Duration::from_secs(1);
    let lb = Lb::with_config({
        let mut c = support::test_config(&[]);
        c.backends = vec![loadbalancer::config::BackendConfig::parse(&url, 1).unwrap()];
        c.workers = 2;
        c.timeouts.send = Some(send);
        c.admin = Some("127.0.0.1:0".into());
        c
    });
    // Two uploads of 8 MiB at once: one per worker.
    let uploads: Vec<_> = (0..2)
        .map(|i| {
            let addr = lb.addr;
            thread::spawn(move || {
                let mut client = Client::connect(addr);
                let len = 8 << 20;
                let head =
                    format!("POST /up/{i} HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n");
                client.send(head.as_bytes());
                client.writer().write_all(&vec![b'z'; len]).unwrap();
                let r = client.read_response("POST");
                (r, Instant::now())
            })
        })
        .collect();
    let answers: Vec<_> = uploads.into_iter().map(|u| u.join().unwrap()).collect();
    let heads = held.lock().unwrap().clone();
    assert_eq!(heads.len(), 2, "both uploads reached the backend");
    // From the backend's first byte (the body is sent after the poller buffered it all).
    let began = heads.iter().min().copied().unwrap();
    for (r, at) in answers {
        assert_eq!(r.status, 504, "{}", r.text());
        assert_eq!(r.end, BodyEnd::Complete(r.body.len() as u64));
        let took = at.duration_since(began);
        assert!(
            took < send + Duration::from_secs(1),
            "504 {took:?} after the upload began, with timeouts send={send:?}"
        );
    }
    // Both workers are free again: requests without a body are served.
    for _ in 0..4 {
        let r = support::get(lb.addr, "/after");
        assert_eq!((r.status, r.text().as_str()), (200, "served"));
    }
    let status = support::admin_status(lb.running().admin_addr().unwrap());
    let failures = status["backends"][0]["failures"].as_u64();
    assert_eq!(
        failures,
        Some(2),
        "each timed-out upload counts against the backend"
    );
}

/// A backend that answers with a body delimited by the end of the connection, then breaks the
/// connection with a reset after `sent` bytes of it.
fn resets_mid_body(sent: usize) -> Backend {
    Backend::start(move |_, out| {
        out.write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n")?;
        out.write_all(&vec![b'r'; sent])?;
        out.flush()?;
        thread::sleep(Duration::from_millis(50));
        support::reset_on_close(out);
        // The connection closes when the handler fails: with a reset, by the linger above.
        Err(std::io::Error::other("reset"))
    })
}

/// Reads everything until the connection ends: the bytes, and whether it ended with a reset.
fn read_to_end_or_reset(s: &mut TcpStream) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (mut got, mut buf) = (Vec::new(), [0u8; 16 << 10]);
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, false),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (got, true),
            Err(e) => panic!("reading the answer: {e}"),
        }
    }
}

#[test]
fn an_answer_cut_off_by_its_backend_ends_with_a_reset_not_a_clean_end() {
    let backend = resets_mid_body(100_000);
    let lb = Lb::start(&[(&backend, 1)], |_| {});
    // An HTTP/1.0 client: its answer ends with the connection, so only a reset can tell it that
    // the body was cut off.
    let mut s = TcpStream::connect(lb.addr).unwrap();
    s.write_all(b"GET /cut HTTP/1.0\r\n\r\n").unwrap();
    let (got, reset) = read_to_end_or_reset(&mut s);
    assert!(got.starts_with(b"HTTP/1.1 200"), "the head went out first");
    assert!(
        reset,
        "a clean end after {} bytes: the client takes it as whole",
        got.len()
    );

    // An HTTP/1.1 client gets it chunked: never the last chunk, and a reset.
    let mut s = TcpStream::connect(lb.addr).unwrap();
    s.write_all(b"GET /cut HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let (got, reset) = read_to_end_or_reset(&mut s);
    assert!(reset, "no reset");
    assert!(!got.ends_with(b"0\r\n\r\n"), "the last chunk was written");
}

/// A front end whose handler panics when told of a queue timeout: one worker, a queue timeout
/// of 200 ms, and `/slow` holding the worker for 600 ms.
struct PanicsOnQueueTimeout;

impl Handler for PanicsOnQueueTimeout {
    fn handle(&self, request: &Request, exchange: &mut Exchange<'_>) {
        if request.head.target == "/slow" {
            thread::sleep(Duration::from_millis(600));
        }
        let _ = exchange.respond(200, [], Some(2), &mut &b"ok"[..]);
    }

    fn refused(
        &self,
        _: SocketAddr,
        _: Option<&RequestHead>,
        _: &Refusal,
        why: RefusalCause,
        _: Duration,
    ) {
        if why == RefusalCause::QueueTimeout {
            panic!("the handler's own code panicked while told of a queue timeout");
        }
    }
}

#[test]
fn a_handler_panicking_on_a_refusal_costs_neither_the_poller_nor_a_worker() {
    let limits = Limits {
        queue_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let server = Server::start(
        TcpListener::bind("127.0.0.1:0").unwrap(),
        1,
        limits,
        Buffers::new(BufferLimits::default()),
        Arc::default(),
        "panicky",
        Arc::new(PanicsOnQueueTimeout),
    )
    .unwrap();
    let addr = server.addr();
    for round in 0..2 {
        let slow = thread::spawn(move || support::get(addr, "/slow").status);
        thread::sleep(Duration::from_millis(50));
        // Waits behind /slow longer than the queue timeout: whoever answers it (the poller's
        // timer, or the worker taking it) tells the handler, which panics.
        let queued = support::get(addr, "/queued");
        assert_eq!(queued.status, 503, "round {round}");
        assert_eq!(slow.join().unwrap(), 200);
        // The one worker is still there.
        assert_eq!(support::get(addr, "/after").text(), "ok", "round {round}");
    }
    assert!(server.shutdown(Duration::from_secs(2)));
}

#[test]
fn requests_pipelined_before_the_client_stops_sending_are_all_answered() {
    let backends = echoes();
    let lb = balancer(&backends);
    let mut s = TcpStream::connect(lb.addr).unwrap();
    let raw: String = (0..3)
        .map(|i| format!("GET /last/{i} HTTP/1.1\r\nHost: t\r\n\r\n"))
        .collect();
    s.write_all(raw.as_bytes()).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let (got, reset) = read_to_end_or_reset(&mut s);
    assert!(!reset);
    let text = String::from_utf8_lossy(&got);
    for i in 0..3 {
        assert!(
            text.contains(&format!(":/last/{i}:")),
            "answer {i} missing: {text}"
        );
    }
}

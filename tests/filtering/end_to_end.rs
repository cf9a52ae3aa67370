//! Request filtering end to end: a real balancer in front of a tiny backend that records what it
//! receives, driven by raw HTTP/1.1 over `TcpStream`.
//!
//! All test clients connect from 127.0.0.1, so different clients are simulated with
//! `trusted_proxies 127.0.0.1/32` and distinct `X-Forwarded-For` values.
//! Everything binds 127.0.0.1:0; every wait has a deadline.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use loadbalancer::config::BackendConfig;
use loadbalancer::{Balancer, Config, Running};

const IO_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// A backend that records requests
// ---------------------------------------------------------------------------------------------

/// One request as the backend saw it (head complete; body read as far as it came).
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    target: String,
    forwarded_for: Option<String>,
}

/// A keep-alive HTTP/1.1 backend on 127.0.0.1:0 answering `200 ok` to everything, recording
/// every request head it reads. Stops on drop.
struct Backend {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl Backend {
    fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(SeqCst) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    let seen = Arc::clone(&seen);
                    thread::spawn(move || serve(conn, &seen));
                }
            })
        };
        Backend {
            addr,
            seen,
            stop,
            accept: Some(accept),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests seen whose target starts with `prefix`.
    fn seen(&self, prefix: &str) -> Vec<Seen> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|s| s.target.starts_with(prefix))
            .cloned()
            .collect()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Serves one backend connection until the peer closes it or sends something we cannot parse.
fn serve(conn: TcpStream, seen: &Mutex<Vec<Seen>>) {
    conn.set_read_timeout(Some(IO_TIMEOUT)).ok();
    let mut out = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    loop {
        let Some((start, headers)) = read_head(&mut r) else {
            return;
        };
        let mut parts = start.split(' ');
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        seen.lock().unwrap().push(Seen {
            method,
            target,
            forwarded_for: header("x-forwarded-for"),
        });
        let chunked = header("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let length: u64 = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let body_ok = if chunked {
            skip_chunked(&mut r)
        } else {
            std::io::copy(&mut (&mut r).take(length), &mut std::io::sink()).ok() == Some(length)
        };
        if !body_ok {
            return;
        }
        let answer =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";
        if out.write_all(answer).is_err() {
            return;
        }
    }
}

/// Reads a message head: the start line and the headers. `None` at the end of the stream.
fn read_head(r: &mut impl BufRead) -> Option<(String, Vec<(String, String)>)> {
    let mut start = String::new();
    if r.read_line(&mut start).ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Some((start.trim_end().to_string(), headers))
}

/// Reads and discards a chunked body; false when it ends early or is malformed.
fn skip_chunked(r: &mut impl BufRead) -> bool {
    loop {
        let mut size = String::new();
        if r.read_line(&mut size).unwrap_or(0) == 0 {
            return false;
        }
        let hex = size.trim().split(';').next().unwrap_or_default();
        let Ok(n) = u64::from_str_radix(hex, 16) else {
            return false;
        };
        if n == 0 {
            // trailers up to the blank line
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return false;
                }
                if line.trim().is_empty() {
                    return true;
                }
            }
        }
        if std::io::copy(&mut r.take(n + 2), &mut std::io::sink()).ok() != Some(n + 2) {
            return false;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The balancer and a raw client
// ---------------------------------------------------------------------------------------------

/// Starts a balancer on 127.0.0.1:0 in front of `backend`, with the filtering settings in
/// `filtering` (config file lines).
fn balancer(backend: &Backend, filtering: &str) -> Running {
    let text = format!(
        "health off\nslow_start off\naccess_log off\nworkers 4\ndrain_timeout 2s\n{filtering}"
    );
    let parsed = Config::parse(&text, "test").unwrap_or_else(|e| panic!("{e}"));
    let config = Config {
        listen: "127.0.0.1:0".into(),
        admin: None,
        backends: vec![BackendConfig::parse(&backend.url(), 1).unwrap()],
        ..parsed
    };
    Balancer::start(config).expect("balancer starts")
}

/// Stops a balancer; nothing is in flight, so the drain must finish (well within the test
/// config's short `drain_timeout`).
fn stop(lb: Running) {
    assert!(lb.shutdown(), "drained");
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Writes `raw` on a fresh connection and reads one response (body by Content-Length).
fn exchange(addr: SocketAddr, raw: &[u8]) -> Response {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(raw).expect("write request");
    let mut r = BufReader::new(s);
    let (start, headers) = read_head(&mut r).expect("a response head");
    let status = start
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {start:?}"));
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .expect("our answers have a Content-Length");
    let mut body = vec![0; length];
    r.read_exact(&mut body).expect("the whole body");
    Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// A GET with `Connection: close` and optional extra header lines.
fn get(addr: SocketAddr, target: &str, extra: &str) -> Response {
    let raw = format!("GET {target} HTTP/1.1\r\nHost: test\r\n{extra}Connection: close\r\n\r\n");
    exchange(addr, raw.as_bytes())
}

/// A GET on behalf of client `ip` (the balancer trusts 127.0.0.1 as a proxy).
fn get_as(addr: SocketAddr, ip: &str, target: &str) -> Response {
    get(addr, target, &format!("X-Forwarded-For: {ip}\r\n"))
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn a_flooding_client_is_rate_limited_then_banned_while_another_sees_no_errors() {
    let backend = Backend::start();
    let lb = balancer(
        &backend,
        "trusted_proxies 127.0.0.1/32\nrate_limit rate=1/s burst=10\nban after=3 window=1m duration=10m\n",
    );
    let addr = lb.addr();
    const FLOODER: &str = "198.51.100.1";
    const CALM: &str = "198.51.100.2";

    // The calm client sends fewer requests than its burst, in parallel with the flood.
    let calm = thread::spawn(move || {
        (0..8)
            .map(|i| get_as(addr, CALM, &format!("/calm/{i}")))
            .map(|r| (r.status, r.body))
            .collect::<Vec<_>>()
    });
    let flood: Vec<Response> = (0..40)
        .map(|i| get_as(addr, FLOODER, &format!("/flood/{i}")))
        .collect();
    let calm = calm.join().unwrap();

    assert!(
        calm.iter().all(|(status, _)| *status == 200),
        "the calm client saw errors: {calm:?}"
    );
    let calm_seen = backend.seen("/calm/");
    assert_eq!(calm_seen.len(), 8);
    assert!(calm_seen
        .iter()
        .all(|s| s.forwarded_for.as_deref() == Some("198.51.100.2, 127.0.0.1")));

    let statuses: Vec<u16> = flood.iter().map(|r| r.status).collect();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(ok >= 10, "the burst is allowed: {statuses:?}");
    // exactly `after` rate-limit answers, then the ban: the 4th refusal and everything after it
    let limited: Vec<&Response> = flood.iter().filter(|r| r.status == 429).collect();
    assert_eq!(limited.len(), 3, "{statuses:?}");
    for r in &limited {
        assert_eq!(r.body, "rate limited\n");
        let retry: u32 = r
            .header("retry-after")
            .expect("429 has Retry-After")
            .parse()
            .unwrap();
        assert!((1..=2).contains(&retry), "Retry-After {retry}");
    }
    let first_ban = statuses
        .iter()
        .position(|s| *s == 403)
        .expect("the flooder is banned");
    assert!(
        flood[first_ban..]
            .iter()
            .all(|r| r.status == 403 && r.body == "banned\n"),
        "{statuses:?}"
    );
    assert!(first_ban < 20, "{statuses:?}");
    // refused requests never reached the backend
    assert_eq!(backend.seen("/flood/").len(), ok);

    // The ban is visible, and it survives a reload.
    let filter = Arc::clone(&lb.shared().filter);
    let stats = filter.stats(Instant::now());
    assert_eq!(stats.bans.len(), 1);
    assert_eq!(
        stats.bans[0].0,
        "198.51.100.1".parse::<std::net::IpAddr>().unwrap()
    );
    assert!((590..=600).contains(&stats.bans[0].1), "{:?}", stats.bans);
    let count = |reason: &str| stats.refused.iter().find(|(r, _)| *r == reason).unwrap().1;
    assert_eq!(count("rate_limited"), 3);
    assert_eq!(count("banned") as usize, 40 - ok - 3);

    let mut reloaded = lb.config();
    reloaded.filter = Config::parse("trusted_proxies 127.0.0.1/32\n", "reload")
        .unwrap()
        .filter;
    lb.apply(reloaded);
    assert_eq!(get_as(addr, FLOODER, "/flood/after-reload").status, 403);
    assert_eq!(get_as(addr, CALM, "/calm/after-reload").status, 200);
    stop(lb);
}

#[test]
fn denied_clients_get_403_and_never_reach_the_backend() {
    let backend = Backend::start();
    let lb = balancer(
        &backend,
        "trusted_proxies 127.0.0.1/32\ndeny 203.0.113.0/24 2001:db8::/32\n",
    );
    let r = get_as(lb.addr(), "203.0.113.9", "/denied/1");
    assert_eq!((r.status, r.body.as_str()), (403, "access denied\n"));
    let r = get_as(lb.addr(), "2001:db8::7", "/denied/2");
    assert_eq!(r.status, 403);
    // a right-most untrusted entry decides: the left one is whatever the client claimed
    let r = get_as(lb.addr(), "192.0.2.1, 203.0.113.9", "/denied/3");
    assert_eq!(r.status, 403);
    let r = get_as(lb.addr(), "203.0.113.9, 192.0.2.1", "/allowed/1");
    assert_eq!(r.status, 200);
    // without the header the (trusted) peer is the client
    assert_eq!(get(lb.addr(), "/allowed/2", "").status, 200);
    assert!(backend.seen("/denied/").is_empty());
    assert_eq!(backend.seen("/allowed/").len(), 2);
    stop(lb);

    // the TCP peer itself, no proxies involved; and an allow list that leaves it out
    for rule in ["deny 127.0.0.0/8\n", "allow 10.0.0.0/8 ::1\n"] {
        let lb = balancer(&backend, rule);
        let r = get(lb.addr(), "/peer-denied", "X-Forwarded-For: 10.0.0.1\r\n");
        assert_eq!(r.status, 403, "{rule}");
        stop(lb);
    }
    assert!(backend.seen("/peer-denied").is_empty());
}

#[test]
fn a_declared_body_over_max_body_gets_413_before_anything_is_forwarded() {
    let backend = Backend::start();
    let lb = balancer(&backend, "limits max_body=1KiB\n");
    // Only the head is sent: the answer must come without the body being read.
    let raw =
        "POST /big HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n";
    let r = exchange(lb.addr(), raw.as_bytes());
    assert_eq!(
        (r.status, r.body.as_str()),
        (413, "request body too large\n")
    );
    // a body at the limit passes
    let raw = format!(
        "POST /small HTTP/1.1\r\nHost: test\r\nContent-Length: 1024\r\nConnection: close\r\n\r\n{}",
        "x".repeat(1024)
    );
    assert_eq!(exchange(lb.addr(), raw.as_bytes()).status, 200);
    assert!(backend.seen("/big").is_empty());
    let small = backend.seen("/small");
    assert_eq!((small.len(), small[0].method.as_str()), (1, "POST"));
    stop(lb);
}

#[test]
fn a_chunked_body_over_max_body_gets_413() {
    let backend = Backend::start();
    let lb = balancer(&backend, "limits max_body=1KiB\n");
    let chunk = format!("3e8\r\n{}\r\n", "y".repeat(1000));
    let raw = format!(
        "POST /chunked-big HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{}0\r\n\r\n",
        chunk.repeat(4)
    );
    let r = exchange(lb.addr(), raw.as_bytes());
    assert_eq!(r.status, 413);
    // a small chunked body passes
    let raw = format!(
        "POST /chunked-small HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunk}0\r\n\r\n"
    );
    assert_eq!(exchange(lb.addr(), raw.as_bytes()).status, 200);
    stop(lb);
}

#[test]
fn request_rules_method_path_and_target_length() {
    let backend = Backend::start();
    let lb = balancer(
        &backend,
        // The request line may be longer than the front end's default 8 KiB here, so that the
        // filter's own target limit is what refuses.
        "deny_method TRACE CONNECT\ndeny_path /.git /admin\nlimits max_target=8KiB max_request_line=16KiB\n",
    );
    let addr = lb.addr();
    let trace = exchange(
        addr,
        b"TRACE /rules/trace HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        (trace.status, trace.body.as_str()),
        (405, "method not allowed\n")
    );

    let git = get(addr, "/.git/config", "");
    assert_eq!((git.status, git.body.as_str()), (403, "path not allowed\n"));
    assert_eq!(get(addr, "/%2egit/config", "").status, 403);
    assert_eq!(get(addr, "/admin", "").status, 403);
    assert_eq!(get(addr, "/admin/users?x=1", "").status, 403);
    assert_eq!(get(addr, "/administrator", "").status, 200);

    let long = format!("/rules/long?{}", "a".repeat(9000 - "/rules/long?".len()));
    assert_eq!(long.len(), 9000);
    let r = get(addr, &long, "");
    assert_eq!(
        (r.status, r.body.as_str()),
        (414, "request target too long\n")
    );
    let fits = format!("/rules/fits?{}", "a".repeat(8192 - "/rules/fits?".len()));
    assert_eq!(get(addr, &fits, "").status, 200);

    assert!(backend.seen("/rules/trace").is_empty());
    assert!(backend.seen("/rules/long").is_empty());
    assert!(backend.seen("/.git").is_empty() && backend.seen("/%2egit").is_empty());
    assert_eq!(backend.seen("/admin").len(), 1); // /administrator
    assert_eq!(backend.seen("/rules/fits").len(), 1);

    let stats = lb.shared().filter.stats(Instant::now());
    let count = |reason: &str| stats.refused.iter().find(|(r, _)| *r == reason).unwrap().1;
    assert_eq!(
        (count("method"), count("path"), count("target_too_long")),
        (1, 4, 1)
    );
    stop(lb);
}

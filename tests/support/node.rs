//! Helpers for the resilience tests (tests/resilience/), on top of the rest of this module.
//!
//! - [`Node`]: a backend that can be killed (its listener closed, so connections are refused, and
//!   its open connections shut) and restarted **on the same port**, steered at runtime through
//!   shared atomics ([`Controls`]): a delay, "answer 503 to everything", "health check fails",
//!   "drop the connection after reading the body". Every answer's body is the node's name, so a
//!   client knows who answered.
//! - [`Traffic`]: client threads sending GETs continuously over keep-alive connections, recording
//!   which node answered each request in a sliding window.
//! - [`serial`]: the timing-sensitive tests of one binary run one at a time (2 cores).
//! - [`LogCapture`]: a `log` logger for the test process, to check that state changes are logged
//!   once.
//!
//! Everything is on loopback, port 0 (a restart re-binds the port the node first got); waits poll
//! against deadlines.
use std::collections::{HashMap, VecDeque};
use std::io::{BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use loadbalancer::config::BackendConfig;
use loadbalancer::Config;

use crate::support::{
    self as common, read_body, read_head, reply, Client, Framing, Headers, Response,
};

/// Serialises the tests of one test binary: shares and timings are measured on 2 cores, so two
/// load tests must not run at once.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runtime controls of a [`Node`], shared with its handler threads.
#[derive(Debug, Default)]
pub struct Controls {
    /// Delay before every answer (not health checks), in ms.
    pub delay_ms: AtomicU64,
    /// Answer `503` to every request (not health checks).
    pub fail_503: AtomicBool,
    /// Health checks (`GET /health`) fail with 503 when this is false.
    pub health_bad: AtomicBool,
    /// Read the request (and its body), then close the connection without answering.
    pub drop_after_body: AtomicBool,
    /// Requests other than health checks, counted once their body was read.
    pub requests: AtomicU64,
    /// Health checks received.
    pub health_checks: AtomicU64,
    /// `METHOD target` of every request other than health checks.
    pub seen: Mutex<Vec<String>>,
}

struct Listening {
    stop: Arc<AtomicBool>,
    accept: JoinHandle<()>,
    conns: Arc<Mutex<HashMap<u64, TcpStream>>>,
}

/// A restartable backend. See the module documentation.
pub struct Node {
    pub name: String,
    port: u16,
    pub ctl: Arc<Controls>,
    listening: Mutex<Option<Listening>>,
}

impl Node {
    /// A node on a fresh loopback port, answering `200` with `name`.
    pub fn start(name: &str) -> Node {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind node");
        let port = listener.local_addr().unwrap().port();
        let node = Node {
            name: name.to_string(),
            port,
            ctl: Arc::new(Controls::default()),
            listening: Mutex::new(None),
        };
        node.serve(listener);
        node
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The backend's name as the balancer logs and reports it (`host:port`).
    pub fn lb_name(&self) -> String {
        self.addr().to_string()
    }

    pub fn requests(&self) -> u64 {
        self.ctl.requests.load(SeqCst)
    }

    pub fn is_running(&self) -> bool {
        self.listening.lock().unwrap().is_some()
    }

    fn serve(&self, listener: TcpListener) {
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<HashMap<u64, TcpStream>>> = Arc::default();
        let accept = {
            let (stop, conns, ctl, name) = (
                Arc::clone(&stop),
                Arc::clone(&conns),
                Arc::clone(&self.ctl),
                self.name.clone(),
            );
            thread::spawn(move || {
                let mut next_id = 0u64;
                for stream in listener.incoming() {
                    if stop.load(SeqCst) {
                        return; // drops the listener: connections are refused from now on
                    }
                    let Ok(stream) = stream else { continue };
                    let id = next_id;
                    next_id += 1;
                    if let Ok(clone) = stream.try_clone() {
                        conns.lock().unwrap().insert(id, clone);
                    }
                    let (stop, conns, ctl, name) = (
                        Arc::clone(&stop),
                        Arc::clone(&conns),
                        Arc::clone(&ctl),
                        name.clone(),
                    );
                    thread::spawn(move || {
                        serve_connection(stream, &stop, &ctl, &name);
                        conns.lock().unwrap().remove(&id);
                    });
                }
            })
        };
        *self.listening.lock().unwrap() = Some(Listening {
            stop,
            accept,
            conns,
        });
    }

    /// Kills the node: the listening socket is closed (new connections are refused) and every
    /// open connection is shut down. Returns once the port refuses connections.
    pub fn kill(&self) {
        let Some(l) = self.listening.lock().unwrap().take() else {
            return;
        };
        l.stop.store(true, SeqCst);
        // Wake the accept loop so it sees `stop` and drops the listener.
        let _ = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(1));
        let _ = l.accept.join();
        for (_, c) in l.conns.lock().unwrap().drain() {
            let _ = c.shutdown(Shutdown::Both);
        }
        common::wait_until(
            "the killed node to refuse connections",
            Duration::from_secs(5),
            || common::refuses_connections(self.addr()),
        );
    }

    /// Restarts a killed node on the same port (retrying the bind briefly while the port is
    /// transiently unavailable).
    pub fn restart(&self) {
        assert!(!self.is_running(), "{} is running", self.name);
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(self.addr()) {
                Ok(l) => break l,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "cannot re-bind {}: {e}",
                        self.addr()
                    );
                    thread::sleep(Duration::from_millis(10));
                }
            }
        };
        self.serve(listener);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.is_running() {
            self.kill();
        }
    }
}

fn serve_connection(stream: TcpStream, stop: &AtomicBool, ctl: &Controls, name: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut out = stream;
    loop {
        let head = match read_head(&mut reader) {
            Ok(Some(h)) => h,
            _ => return,
        };
        let mut words = head.start_line.split(' ');
        let method = words.next().unwrap_or_default().to_string();
        let target = words.next().unwrap_or_default().to_string();
        let value = |n: &str| {
            head.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.to_ascii_lowercase())
        };
        let framing = if value("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            Framing::Chunked
        } else {
            match value("content-length").and_then(|v| v.trim().parse::<u64>().ok()) {
                Some(0) | None => Framing::None,
                Some(n) => Framing::Length(n),
            }
        };
        if !matches!(
            read_body(&mut reader, framing, &mut |_| {}),
            Ok(common::BodyEnd::Complete(_))
        ) {
            return;
        }
        if stop.load(SeqCst) {
            // Killed while this connection was being set up: it is as dead as the listener.
            let _ = out.shutdown(Shutdown::Both);
            return;
        }
        let close = value("connection").is_some_and(|v| v.contains("close"));
        let result = if target.starts_with("/health") {
            ctl.health_checks.fetch_add(1, SeqCst);
            if ctl.health_bad.load(SeqCst) {
                reply(&mut out, 503, &[], b"unhealthy")
            } else {
                reply(&mut out, 200, &[], b"ok")
            }
        } else {
            ctl.seen.lock().unwrap().push(format!("{method} {target}"));
            ctl.requests.fetch_add(1, SeqCst);
            if ctl.drop_after_body.load(SeqCst) {
                let _ = out.shutdown(Shutdown::Both);
                return;
            }
            let delay = ctl.delay_ms.load(SeqCst);
            if delay > 0 {
                thread::sleep(Duration::from_millis(delay));
            }
            let status = if ctl.fail_503.load(SeqCst) { 503 } else { 200 };
            reply(
                &mut out,
                status,
                &[("Content-Type", "text/plain")],
                name.as_bytes(),
            )
        };
        if result.is_err() || out.flush().is_err() {
            return;
        }
        if close {
            let _ = out.shutdown(Shutdown::Write);
            return;
        }
    }
}

/// A test config (loopback, port 0, no admin, health checks and slow start off) over `nodes`
/// with `weights`.
pub fn config_for(nodes: &[(&Node, u32)]) -> Config {
    let mut config = common::test_config(&[]);
    config.backends = nodes
        .iter()
        .map(|(n, w)| BackendConfig::parse(&n.url(), *w).unwrap())
        .collect();
    config
}

/// A keep-alive client that reconnects when the balancer closes the connection after an answer.
/// A request that gets no answer at all is an `Err`.
pub struct Session {
    addr: SocketAddr,
    client: Option<Client>,
}

impl Session {
    pub fn new(addr: SocketAddr) -> Session {
        Session { addr, client: None }
    }
}

/// Sends one request on `session` and returns the response with its body, or why none came.
pub fn call(session: &mut Session, raw: &str) -> Result<Response, String> {
    let method = raw.split(' ').next().unwrap_or_default().to_string();
    let client = session
        .client
        .get_or_insert_with(|| Client::connect(session.addr));
    if let Err(e) = client.writer().write_all(raw.as_bytes()) {
        session.client = None;
        return Err(format!("write error: {e}"));
    }
    let mut body = Vec::new();
    let result = client.try_read_response_into(&method, &mut |p| body.extend_from_slice(p));
    match result {
        Ok(Some(mut r)) => {
            r.body = body;
            let closing = r
                .header_values("connection")
                .iter()
                .any(|v| v.eq_ignore_ascii_case("close"));
            if closing || !matches!(r.end, common::BodyEnd::Complete(_)) {
                session.client = None;
            }
            Ok(r)
        }
        Ok(None) => {
            session.client = None;
            Err("connection closed without an answer".into())
        }
        Err(e) => {
            session.client = None;
            Err(format!("read error: {e}"))
        }
    }
}

/// `GET target` on `session`.
pub fn get(session: &mut Session, target: &str) -> Result<Response, String> {
    call(
        session,
        &format!("GET {target} HTTP/1.1\r\nHost: lb.test\r\n\r\n"),
    )
}

/// What continuous [`Traffic`] has seen.
#[derive(Debug, Default)]
pub struct Seen {
    /// The most recent answers, newest last: index of the node that answered (by body), or
    /// `usize::MAX` for anything else.
    pub window: VecDeque<usize>,
    /// Answers per node since the start.
    pub totals: Vec<u64>,
    /// Requests without a 200 from a known node, with what happened.
    pub failures: Vec<String>,
}

/// Client threads sending `GET`s continuously until dropped.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pub seen: Arc<Mutex<Seen>>,
    window: usize,
}

impl Traffic {
    /// Starts `clients` threads against `addr`; `names` are the node names, in the order used for
    /// indices; the sliding window keeps the last `window` answers.
    pub fn start(addr: SocketAddr, clients: usize, names: &[&str], window: usize) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen {
            totals: vec![0; names.len()],
            ..Seen::default()
        }));
        let names: Arc<Vec<String>> = Arc::new(names.iter().map(|s| s.to_string()).collect());
        let threads = (0..clients)
            .map(|c| {
                let (stop, seen, names) =
                    (Arc::clone(&stop), Arc::clone(&seen), Arc::clone(&names));
                thread::spawn(move || {
                    let mut session = Session::new(addr);
                    let mut i = 0u64;
                    while !stop.load(SeqCst) {
                        i += 1;
                        let r = get(&mut session, &format!("/load/{c}/{i}"));
                        let who = match &r {
                            Ok(r) if r.status == 200 => {
                                names.iter().position(|n| n.as_bytes() == r.body.as_slice())
                            }
                            _ => None,
                        };
                        let mut s = seen.lock().unwrap();
                        match who {
                            Some(k) => {
                                s.totals[k] += 1;
                                s.window.push_back(k);
                            }
                            None => {
                                s.window.push_back(usize::MAX);
                                s.failures.push(match r {
                                    Ok(r) => format!("{} {:?}", r.status, r.text()),
                                    Err(e) => e,
                                });
                            }
                        }
                        while s.window.len() > window {
                            s.window.pop_front();
                        }
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            threads,
            seen,
            window,
        }
    }

    /// Share of node `k` among the last `window` answers, once the window is full.
    pub fn share(&self, k: usize) -> Option<f64> {
        let s = self.seen.lock().unwrap();
        (s.window.len() >= self.window)
            .then(|| s.window.iter().filter(|&&w| w == k).count() as f64 / s.window.len() as f64)
    }

    /// Forgets the window (the next share needs a full window of new answers).
    pub fn clear_window(&self) {
        self.seen.lock().unwrap().window.clear();
    }

    pub fn totals(&self) -> Vec<u64> {
        self.seen.lock().unwrap().totals.clone()
    }

    pub fn failures(&self) -> Vec<String> {
        self.seen.lock().unwrap().failures.clone()
    }

    /// Stops the clients and waits for them.
    pub fn stop(mut self) -> Seen {
        self.halt();
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    fn halt(&mut self) {
        self.stop.store(true, SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Polls `cond` (which may do work, e.g. send a request) until it returns `Some`, failing with
/// `what` after `timeout`. Returns the value and the time it took.
pub fn poll<T>(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> Option<T>,
) -> (T, Duration) {
    let start = Instant::now();
    loop {
        if let Some(v) = cond() {
            return (v, start.elapsed());
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// A logger for the test process that keeps every message of the balancer's crate.
pub struct LogCapture {
    lines: Mutex<Vec<String>>,
}

impl log::Log for LogCapture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.target().starts_with("loadbalancer")
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            self.lines
                .lock()
                .unwrap()
                .push(format!("{} {}", record.level(), record.args()));
        }
    }

    fn flush(&self) {}
}

impl LogCapture {
    /// Installs the capture (once per process) and returns it.
    pub fn install() -> &'static LogCapture {
        static CAPTURE: OnceLock<&'static LogCapture> = OnceLock::new();
        CAPTURE.get_or_init(|| {
            let c: &'static LogCapture = Box::leak(Box::new(LogCapture {
                lines: Mutex::new(Vec::new()),
            }));
            log::set_logger(c).expect("no other logger in this test binary");
            log::set_max_level(log::LevelFilter::Info);
            c
        })
    }

    /// A position in the log: [`LogCapture::matching`] looks only at lines logged after it.
    pub fn mark(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// Lines logged since `mark` that contain every one of `parts`.
    pub fn matching(&self, mark: usize, parts: &[&str]) -> Vec<String> {
        self.lines.lock().unwrap()[mark..]
            .iter()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .cloned()
            .collect()
    }
}

/// Writes a line to stderr for the test report (shown with `--nocapture`, or on failure).
pub fn note(msg: impl AsRef<str>) {
    eprintln!("    [resilience] {}", msg.as_ref());
}

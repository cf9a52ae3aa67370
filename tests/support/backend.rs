//! The one test backend: a programmable HTTP/1.1 server on a raw `TcpListener` on loopback.
//!
//! It records every request (the exact head bytes, the headers with repeats and order kept, the
//! body's length, SHA-256 and first bytes) and lets a handler answer with arbitrary raw bytes:
//! fixed or chunked bodies, huge generated bodies, delays, a connection closed mid-body.
//! [`Backend::named`] is a ready-made handler steered at run time (health, delay, 503s, dropped
//! connections), and any backend can be killed (its port refuses connections) and restarted on
//! the same port.

use std::collections::HashMap;
use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::wire::{read_body, read_head, reply, request_framing, BodyEnd, Framing, Headers};
use super::{hex, refuses_connections, wait_until, BUF, KEEP_BODY};

/// One request as the backend received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    /// The request target exactly as on the wire.
    pub target: String,
    pub version: String,
    /// Header lines in the order received, repeats kept.
    pub headers: Vec<(String, String)>,
    /// The exact head bytes (request line, header lines, blank line).
    pub raw_head: Vec<u8>,
    /// How the balancer framed the body.
    pub framing: Framing,
    /// The first [`KEEP_BODY`] bytes of the (decoded) body.
    pub body: Vec<u8>,
    /// Body length after chunked decoding.
    pub body_len: u64,
    /// SHA-256 (hex) of the whole decoded body.
    pub body_sha256: String,
    /// Whether the body arrived complete by its framing.
    pub body_complete: bool,
}

impl Headers for Received {
    fn header_list(&self) -> &[(String, String)] {
        &self.headers
    }
}

impl Received {
    /// A health check of the balancer's (`GET /health...`).
    pub fn is_health_check(&self) -> bool {
        self.target.starts_with("/health")
    }
}

/// Answers one request by writing raw bytes to the connection. To close the connection (for
/// instance mid-body), shut the stream down; otherwise the backend reads the next request on it.
pub type Handler = dyn Fn(&Received, &mut TcpStream) -> io::Result<()> + Send + Sync;

/// The run-time switches of a [`Backend::named`] backend.
#[derive(Debug, Default)]
struct Controls {
    /// Delay before every answer but a health check's, in ms.
    delay_ms: AtomicU64,
    /// Answer `503` to every request but health checks.
    fail_503: AtomicBool,
    /// Health checks fail (503).
    health_bad: AtomicBool,
    /// Read the request and its body, then close the connection without answering.
    drop_after_body: AtomicBool,
}

struct Shared {
    received: Mutex<Vec<Received>>,
    /// Requests received, health checks included.
    count: AtomicUsize,
    /// Requests received other than health checks.
    count_except_health: AtomicUsize,
    controls: Arc<Controls>,
    handler: Box<Handler>,
}

/// The listening side of a running backend: stopped by [`Backend::kill`] and on drop.
struct Listening {
    stop: Arc<AtomicBool>,
    accept: JoinHandle<()>,
    /// The open connections (a clone of each), to shut them down on a kill.
    conns: Arc<Mutex<HashMap<u64, TcpStream>>>,
}

/// A test backend on `127.0.0.1:0`. Stops accepting and closes its connections on drop.
pub struct Backend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    listening: Mutex<Option<Listening>>,
}

impl Backend {
    /// Starts a backend that answers every request with `handler`.
    pub fn start(
        handler: impl Fn(&Received, &mut TcpStream) -> io::Result<()> + Send + Sync + 'static,
    ) -> Backend {
        Backend::with_controls(Arc::default(), Box::new(handler))
    }

    fn with_controls(controls: Arc<Controls>, handler: Box<Handler>) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let addr = listener.local_addr().unwrap();
        let backend = Backend {
            addr,
            shared: Arc::new(Shared {
                received: Mutex::new(Vec::new()),
                count: AtomicUsize::new(0),
                count_except_health: AtomicUsize::new(0),
                controls,
                handler,
            }),
            listening: Mutex::new(None),
        };
        backend.serve(listener);
        backend
    }

    /// A backend that answers `200` with `body` (and a Content-Length) to everything.
    pub fn answering(body: &'static str) -> Backend {
        Backend::start(move |_, out| {
            reply(out, 200, &[("Content-Type", "text/plain")], body.as_bytes())
        })
    }

    /// A backend that answers `200` with its `name` (text/plain) to every request, so that a
    /// client knows who answered, and can be steered while it runs: [`Backend::set_healthy`],
    /// [`Backend::set_delay`], [`Backend::set_failing`], [`Backend::set_dropping`]. Health checks
    /// (`GET /health...`) get `200 ok`, or `503` while unhealthy, at once; a target starting with
    /// `/missing` gets `404`.
    pub fn named(name: &str) -> Backend {
        let controls = Arc::new(Controls::default());
        let ctl = Arc::clone(&controls);
        let name = name.to_string();
        Backend::with_controls(
            controls,
            Box::new(move |r, out| answer_as(&name, &ctl, r, out)),
        )
    }

    /// A backend that reads each request and never answers; its handler returns when the
    /// balancer gives up and closes the connection.
    pub fn silent() -> Backend {
        Backend::start(|_, out| {
            let _ = out.read(&mut [0u8; 1]);
            Ok(())
        })
    }

    /// [`Backend::named`]: health checks pass (the start) or fail with 503.
    pub fn set_healthy(&self, healthy: bool) {
        self.shared.controls.health_bad.store(!healthy, SeqCst);
    }

    /// [`Backend::named`]: waits `delay` before every answer but a health check's.
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap();
        self.shared.controls.delay_ms.store(ms, SeqCst);
    }

    /// [`Backend::named`]: answers `503` (still with its name) to every request but health checks.
    pub fn set_failing(&self, failing: bool) {
        self.shared.controls.fail_503.store(failing, SeqCst);
    }

    /// [`Backend::named`]: reads each request and its body, then closes the connection without
    /// answering (health checks are still answered).
    pub fn set_dropping(&self, dropping: bool) {
        self.shared.controls.drop_after_body.store(dropping, SeqCst);
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The backend's name as the balancer logs and reports it (`host:port`).
    pub fn lb_name(&self) -> String {
        self.addr.to_string()
    }

    /// Requests received so far, health checks included (counted once the whole request body
    /// was read, before the handler answers).
    pub fn count(&self) -> usize {
        self.shared.count.load(SeqCst)
    }

    /// Requests received so far other than health checks.
    pub fn count_except_health(&self) -> usize {
        self.shared.count_except_health.load(SeqCst)
    }

    /// Copies of the requests received so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// The requests received so far whose target starts with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<Received> {
        let all = self.shared.received.lock().unwrap();
        all.iter()
            .filter(|r| r.target.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// `METHOD target` of every request received but health checks, in arrival order.
    pub fn seen(&self) -> Vec<String> {
        let all = self.shared.received.lock().unwrap();
        all.iter()
            .filter(|r| !r.is_health_check())
            .map(|r| format!("{} {}", r.method, r.target))
            .collect()
    }

    /// The only request received; panics when there were none or several.
    pub fn only_request(&self) -> Received {
        let all = self.requests();
        assert_eq!(
            all.len(),
            1,
            "expected exactly one request at the backend, got {:#?}",
            all.iter()
                .map(|r| format!("{} {}", r.method, r.target))
                .collect::<Vec<_>>()
        );
        all.into_iter().next().unwrap()
    }

    pub fn is_running(&self) -> bool {
        self.listening.lock().unwrap().is_some()
    }

    /// Kills the backend: the listening socket is closed (new connections are refused) and every
    /// open connection is shut down. Returns once the port refuses connections.
    pub fn kill(&self) {
        if self.stop_listening() {
            wait_until(
                "the killed backend to refuse connections",
                Duration::from_secs(5),
                || refuses_connections(self.addr),
            );
        }
    }

    /// Restarts a killed backend on the same port (retrying the bind briefly while the port is
    /// transiently unavailable). What it received before is kept.
    pub fn restart(&self) {
        assert!(!self.is_running(), "{} is running", self.addr);
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "cannot re-bind {}: {e}",
                        self.addr
                    );
                    thread::sleep(Duration::from_millis(10));
                }
            }
        };
        self.serve(listener);
    }

    fn serve(&self, listener: TcpListener) {
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<HashMap<u64, TcpStream>>> = Arc::default();
        let accept = {
            let (stop, conns, shared) = (
                Arc::clone(&stop),
                Arc::clone(&conns),
                Arc::clone(&self.shared),
            );
            thread::spawn(move || {
                for (id, stream) in (0u64..).zip(listener.incoming()) {
                    if stop.load(SeqCst) {
                        return; // drops the listener: connections are refused from now on
                    }
                    let Ok(stream) = stream else { continue };
                    if let Ok(clone) = stream.try_clone() {
                        conns.lock().unwrap().insert(id, clone);
                    }
                    let (stop, conns, shared) =
                        (Arc::clone(&stop), Arc::clone(&conns), Arc::clone(&shared));
                    thread::spawn(move || {
                        serve_connection(stream, &shared, &stop);
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

    /// Stops accepting and shuts every open connection down; false when it was not running.
    fn stop_listening(&self) -> bool {
        let Some(l) = self.listening.lock().unwrap().take() else {
            return false;
        };
        l.stop.store(true, SeqCst);
        // Wake the accept loop so it sees `stop` and drops the listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let _ = l.accept.join();
        for (_, c) in l.conns.lock().unwrap().drain() {
            let _ = c.shutdown(Shutdown::Both);
        }
        true
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop_listening();
    }
}

fn serve_connection(stream: TcpStream, shared: &Shared, stop: &AtomicBool) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::with_capacity(BUF, read_half);
    let mut out = stream;
    loop {
        let head = match read_head(&mut reader) {
            Ok(Some(h)) => h,
            _ => return,
        };
        if stop.load(SeqCst) {
            // Killed while this connection was being set up: it is as dead as the listener.
            let _ = out.shutdown(Shutdown::Both);
            return;
        }
        let mut words = head.start_line.splitn(3, ' ');
        let method = words.next().unwrap_or_default().to_string();
        let target = words.next().unwrap_or_default().to_string();
        let version = words.next().unwrap_or_default().to_string();
        let framing = request_framing(&head.headers);
        let mut body = Vec::new();
        let mut hasher = Sha256::new();
        let end = match read_body(&mut reader, framing, &mut |piece| {
            hasher.update(piece);
            let room = KEEP_BODY.saturating_sub(body.len());
            body.extend_from_slice(&piece[..piece.len().min(room)]);
        }) {
            Ok(end) => end,
            Err(_) => return,
        };
        let request = Received {
            method,
            target,
            version,
            headers: head.headers,
            raw_head: head.raw,
            framing,
            body,
            body_len: end.bytes(),
            body_sha256: hex(&hasher.finalize()),
            body_complete: matches!(end, BodyEnd::Complete(_)),
        };
        shared.received.lock().unwrap().push(request.clone());
        if !request.is_health_check() {
            shared.count_except_health.fetch_add(1, SeqCst);
        }
        shared.count.fetch_add(1, SeqCst);
        if !request.body_complete {
            return;
        }
        if (shared.handler)(&request, &mut out).is_err() {
            return;
        }
        let _ = out.flush();
        let close = request
            .header_values("connection")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("close"));
        if close {
            let _ = out.shutdown(Shutdown::Write);
            return;
        }
    }
}

/// [`Backend::named`]'s answers.
fn answer_as(name: &str, ctl: &Controls, r: &Received, out: &mut TcpStream) -> io::Result<()> {
    if r.is_health_check() {
        return if ctl.health_bad.load(SeqCst) {
            reply(out, 503, &[], b"unhealthy")
        } else {
            reply(out, 200, &[], b"ok")
        };
    }
    if ctl.drop_after_body.load(SeqCst) {
        let _ = out.shutdown(Shutdown::Both);
        return Err(io::Error::other("dropped after the body, as asked"));
    }
    let delay = ctl.delay_ms.load(SeqCst);
    if delay > 0 {
        thread::sleep(Duration::from_millis(delay));
    }
    if r.target.starts_with("/missing") {
        return reply(out, 404, &[], b"not here\n");
    }
    let status = if ctl.fail_503.load(SeqCst) { 503 } else { 200 };
    reply(
        out,
        status,
        &[("Content-Type", "text/plain")],
        name.as_bytes(),
    )
}

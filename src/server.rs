//! The front end: tiny_http accepts requests, one acceptor thread hands them to a bounded
//! crossbeam channel, and a fixed pool of workers forwards them. This is the only file that knows
//! tiny_http.
//!
//! ```text
//! tiny_http (accept + one thread per connection) ─▶ acceptor ─▶ bounded channel ─▶ N workers
//!                                                      │ full? 503 + Retry-After at once
//! ```
//!
//! The acceptor does only cheap work (framing checks, the queue), so a flood costs no worker.
//! Graceful shutdown closes the listening socket, answers requests that still arrive on open
//! connections with 503, lets the workers finish what is queued and in flight, and gives up
//! after the drain timeout.

use std::cell::Cell;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use parking_lot::Mutex;

use crate::admin::{AdminRequest, AdminResponse};
use crate::filter::Filter;
use crate::logging::{self, AccessEntry};
use crate::metrics::{Metrics, Rejection};
use crate::polling::poll_yielding;
use crate::proxy::{check_request, Forwarded, Framing, Proxy, Refusal, RequestHead};
use crate::sockets::{abort_connection, set_client_options, shutdown_socket, ConnId};
use crate::watchdog;

/// Front-end settings.
#[derive(Clone, Debug)]
pub struct FrontSettings {
    /// Worker threads. Default 64.
    pub workers: usize,
    /// Channel capacity between acceptor and workers. Default 1024.
    pub queue: usize,
    /// Read and write timeout of client connections. Default 60 s.
    pub client_timeout: Duration,
    /// Write an access-log line per request. Default on.
    pub access_log: Arc<AtomicBool>,
    /// Request filtering, applied by the acceptor.
    pub filter: Arc<Filter>,
    /// Balancer-wide counters.
    pub metrics: Arc<Metrics>,
}

/// An unread request body larger than this is never handed back to tiny_http: its drop code
/// allocates a buffer the size of the unread remainder, which for a client that declared a huge
/// `Content-Length` and went away would exhaust memory. Such connections are closed and their
/// request leaked instead (README, "Limits").
const SAFE_UNREAD_BODY: u64 = 1 << 30;

/// A response body without a declared length is relayed to HTTP/1.0 clients (and clients that
/// ask for `TE: identity`) by buffering it, because they cannot take chunked encoding; this caps
/// that buffer.
const MAX_BUFFERED_BODY: u64 = 64 << 20;

struct Job {
    request: tiny_http::Request,
    head: RequestHead,
    framing: Framing,
    received: Instant,
}

/// The running front end.
pub struct Front {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    finished: Arc<AtomicBool>,
    server: Arc<Mutex<Arc<tiny_http::Server>>>,
    listener: TcpListener,
    acceptor: Option<JoinHandle<()>>,
    done: Receiver<()>,
    workers: Vec<JoinHandle<()>>,
    queue: Sender<Job>,
    waiting: Receiver<Job>,
}

impl Front {
    /// Binds `listen`, starts the acceptor and `settings.workers` workers forwarding through
    /// `proxy`.
    pub fn start(listen: &str, proxy: Arc<Proxy>, settings: FrontSettings) -> io::Result<Front> {
        let listener = TcpListener::bind(listen)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {listen}: {e}")))?;
        let addr = listener.local_addr()?;
        set_client_options(&listener, settings.client_timeout)?;
        // The client timeout also bounds tiny_http's accept(); the watchdog connects at least this
        // often so that it never expires.
        let keep_accepting = settings.client_timeout / 2;
        let server = Arc::new(Mutex::new(Arc::new(new_tiny(&listener)?)));
        let (tx, rx) = bounded::<Job>(settings.queue);
        let (done_tx, done) = bounded::<()>(0);
        let stopping = Arc::new(AtomicBool::new(false));
        let finished = Arc::new(AtomicBool::new(false));
        let poisoned = Arc::new(Poisoned::default());

        let workers = (0..settings.workers)
            .map(|i| {
                let rx = rx.clone();
                let proxy = Arc::clone(&proxy);
                let access = Arc::clone(&settings.access_log);
                let filter = Arc::clone(&settings.filter);
                let metrics = Arc::clone(&settings.metrics);
                let poisoned = Arc::clone(&poisoned);
                let done_tx = done_tx.clone();
                thread::Builder::new()
                    .name(format!("worker-{i}"))
                    .spawn(move || {
                        let _done = done_tx;
                        for job in rx {
                            let port = addr.port();
                            let ctx = WorkerCtx {
                                proxy: &proxy,
                                filter: &filter,
                                metrics: &metrics,
                                poisoned: &poisoned,
                                access_log: &access,
                                local_port: port,
                            };
                            let work = || handle(job, &ctx);
                            if catch_unwind(AssertUnwindSafe(work)).is_err() {
                                log::error!("a worker caught a panic; the request was dropped");
                            }
                        }
                    })
            })
            .collect::<io::Result<Vec<_>>>()?;

        let acceptor = {
            let server = Arc::clone(&server);
            let stopping = Arc::clone(&stopping);
            let finished = Arc::clone(&finished);
            let listener = listener.try_clone()?;
            let tx = tx.clone();
            let filter = Arc::clone(&settings.filter);
            let ctx = AcceptCtx {
                tx: Some(tx),
                filter,
                metrics: Arc::clone(&settings.metrics),
                poisoned: Arc::clone(&poisoned),
                local_port: addr.port(),
            };
            thread::Builder::new()
                .name("acceptor".into())
                .spawn(move || accept_loop(server, listener, ctx, stopping, finished))?
        };
        {
            let stopping = Arc::clone(&stopping);
            let target = if addr.ip().is_unspecified() {
                let lo: std::net::IpAddr = match addr {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                };
                SocketAddr::new(lo, addr.port())
            } else {
                addr
            };
            thread::Builder::new()
                .name("watchdog".into())
                .spawn(move || watchdog::run(target, keep_accepting, stopping))?;
        }
        log::info!("listening on {addr} with {} workers", settings.workers);
        Ok(Front {
            addr,
            stopping,
            finished,
            server,
            listener,
            acceptor: Some(acceptor),
            done,
            workers,
            queue: tx,
            waiting: rx,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests waiting for a worker.
    pub fn queue_depth(&self) -> usize {
        self.queue.len()
    }

    /// A function that tells the queue depth, for status pages.
    pub fn queue_depth_fn(&self) -> Box<dyn Fn() -> usize + Send + Sync> {
        // A receiver, not a sender: holding a sender would keep the workers from ever seeing
        // the channel close at shutdown.
        let queue = self.waiting.clone();
        Box::new(move || queue.len())
    }

    /// Stops taking requests and waits up to `drain` for queued and in-flight ones. Returns true
    /// when everything finished in time.
    pub fn shutdown(mut self, drain: Duration) -> bool {
        self.stopping.store(true, SeqCst);
        // Closing the listening socket refuses new connections at once; tiny_http's accept
        // thread sees the error and ends.
        shutdown_socket(&self.listener);
        self.server.lock().unblock();
        // The acceptor holds the channel's other sender; once both are gone the workers finish
        // the queue and exit.
        drop(std::mem::replace(&mut self.queue, bounded(0).0));
        let deadline = Instant::now() + drain;
        let drained = matches!(
            self.done.recv_deadline(deadline),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected)
        );
        if drained {
            for w in self.workers.drain(..) {
                let _ = w.join();
            }
        } else {
            log::warn!("drain timeout of {drain:?} reached with requests still in flight");
        }
        self.finished.store(true, SeqCst);
        self.server.lock().unblock();
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        drained
    }
}

fn new_tiny(listener: &TcpListener) -> io::Result<tiny_http::Server> {
    tiny_http::Server::from_listener(listener.try_clone()?, None)
        .map_err(|e| io::Error::other(e.to_string()))
}

/// What the acceptor needs to dispatch a request.
struct AcceptCtx {
    /// The channel to the workers; `None` once shutdown began.
    tx: Option<Sender<Job>>,
    filter: Arc<Filter>,
    metrics: Arc<Metrics>,
    poisoned: Arc<Poisoned>,
    local_port: u16,
}

/// What a worker needs to handle a request.
struct WorkerCtx<'a> {
    proxy: &'a Proxy,
    filter: &'a Filter,
    metrics: &'a Metrics,
    poisoned: &'a Poisoned,
    access_log: &'a AtomicBool,
    local_port: u16,
}

fn accept_loop(
    server: Arc<Mutex<Arc<tiny_http::Server>>>,
    listener: TcpListener,
    mut ctx: AcceptCtx,
    stopping: Arc<AtomicBool>,
    finished: Arc<AtomicBool>,
) {
    // tiny_http servers replaced after an accept failure. Their connection threads still deliver
    // requests from connections opened before, so their queues are still read.
    let mut retired: Vec<Arc<tiny_http::Server>> = Vec::new();
    loop {
        let current = Arc::clone(&server.lock());
        for old in &retired {
            while let Ok(Some(request)) = old.try_recv() {
                dispatch(request, &ctx);
            }
        }
        if stopping.load(SeqCst) {
            // Dropping our sender lets the workers finish once the queue is empty; requests still
            // arriving on open connections get 503 until shutdown says we are done.
            ctx.tx = None;
            if finished.load(SeqCst) {
                return;
            }
            if let Ok(Some(request)) = current.recv_timeout(Duration::from_millis(100)) {
                dispatch(request, &ctx);
            }
            continue;
        }
        let next = if retired.is_empty() {
            // Under load the next request is usually queued within microseconds.
            let early = poll_yielding(|| match current.try_recv() {
                Ok(None) => None,
                found_or_error => Some(found_or_error),
            });
            early.unwrap_or_else(|| current.recv().map(Some))
        } else {
            current.recv_timeout(Duration::from_millis(20))
        };
        match next {
            Ok(Some(request)) => dispatch(request, &ctx),
            Ok(None) => {}
            Err(_) if stopping.load(SeqCst) => continue,
            Err(e) => {
                // tiny_http's accept thread ends on the first accept error (for example too many
                // open files). Start a fresh one on the same socket after a short pause.
                log::error!("accept failed: {e}; restarting the listener in 100ms");
                thread::sleep(Duration::from_millis(100));
                match new_tiny(&listener) {
                    Ok(s) => {
                        retired.push(current);
                        *server.lock() = Arc::new(s);
                    }
                    Err(e) => log::error!("cannot restart the listener: {e}"),
                }
            }
        }
    }
}

fn dispatch(request: tiny_http::Request, ctx: &AcceptCtx) {
    if request
        .remote_addr()
        .is_some_and(|peer| ctx.poisoned.contains(peer))
    {
        log::debug!("dropped bytes that followed a refused request on a closed connection");
        return;
    }
    let head = head_of(&request);
    let conn = request.remote_addr().map(|peer| ConnId {
        peer: *peer,
        local_port: ctx.local_port,
    });
    let framing = match check_request(&head) {
        Ok(f) => f,
        Err(refusal) => {
            // The body, if any, cannot be trusted to be where the headers say: never read it,
            // close the connection after the answer.
            ctx.metrics.record_rejection(Rejection::BadRequest);
            ctx.metrics.record_response(refusal.status, Duration::ZERO);
            let may_have_body = head.header("content-length").is_some()
                || head.header("transfer-encoding").is_some();
            let remaining = if may_have_body { None } else { Some(0) };
            refuse(request, &head, &refusal, conn, remaining, &ctx.poisoned);
            return;
        }
    };
    if let Err(refusal) = ctx.filter.check(&head, framing, Instant::now()) {
        ctx.metrics.record_response(refusal.status, Duration::ZERO);
        refuse(
            request,
            &head,
            &refusal,
            conn,
            unread(framing, 0),
            &ctx.poisoned,
        );
        return;
    }
    let Some(tx) = ctx.tx.as_ref() else {
        ctx.metrics.record_rejection(Rejection::ShuttingDown);
        ctx.metrics.record_response(503, Duration::ZERO);
        let r = Refusal::retry_after(503, "shutting down", 1);
        refuse(request, &head, &r, conn, unread(framing, 0), &ctx.poisoned);
        return;
    };
    let job = Job {
        request,
        head,
        framing,
        received: Instant::now(),
    };
    let (job, why, reason) = match tx.try_send(job) {
        Ok(()) => return,
        Err(TrySendError::Full(job)) => (job, Rejection::QueueFull, "server busy"),
        Err(TrySendError::Disconnected(job)) => (job, Rejection::ShuttingDown, "shutting down"),
    };
    ctx.metrics.record_rejection(why);
    ctx.metrics.record_response(503, Duration::ZERO);
    let r = Refusal::retry_after(503, reason, 1);
    let remaining = unread(job.framing, 0);
    refuse(job.request, &job.head, &r, conn, remaining, &ctx.poisoned);
}

/// Bytes of the request body not read yet (`None` when unknown: chunked).
fn unread(framing: Framing, read: u64) -> Option<u64> {
    match framing {
        Framing::None => Some(0),
        Framing::Length(n) => Some(n.saturating_sub(read)),
        Framing::Chunked => None,
    }
}

fn head_of(request: &tiny_http::Request) -> RequestHead {
    RequestHead {
        method: request.method().as_str().to_string(),
        target: request.url().to_string(),
        http10: *request.http_version() == tiny_http::HTTPVersion(1, 0),
        headers: request
            .headers()
            .iter()
            .map(|h| {
                (
                    h.field.as_str().as_str().to_string(),
                    h.value.as_str().to_string(),
                )
            })
            .collect(),
        client: request
            .remote_addr()
            .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |a| a.ip()),
    }
}

fn handle(job: Job, ctx: &WorkerCtx<'_>) {
    let Job {
        mut request,
        head,
        framing,
        received,
    } = job;
    let conn = request.remote_addr().map(|peer| ConnId {
        peer: *peer,
        local_port: ctx.local_port,
    });
    let result = ctx
        .proxy
        .forward(&head, framing, request.as_reader(), ctx.filter.max_body());
    let (status, backend, bytes) = match result {
        Ok(fwd) => {
            ctx.metrics.record_retries(fwd.attempts.saturating_sub(1));
            let status = fwd.status;
            let backend = fwd.backend().name.clone();
            let bytes = relay(request, &head, fwd, conn);
            (status, backend, bytes)
        }
        Err(failed) => {
            ctx.metrics
                .record_retries(failed.attempts.saturating_sub(1));
            if failed.attempts == 0 {
                ctx.metrics.record_rejection(Rejection::NoBackend);
            }
            if failed.refusal.status == 413 {
                ctx.filter.note_body_too_large();
            }
            let backend = failed.backend.map_or("-".to_string(), |b| b.name.clone());
            let remaining = if failed.body_done {
                Some(0)
            } else {
                unread(framing, failed.body_read)
            };
            refuse(
                request,
                &head,
                &failed.refusal,
                conn,
                remaining,
                ctx.poisoned,
            );
            (
                failed.refusal.status,
                backend,
                failed.refusal.reason.len() as u64 + 1,
            )
        }
    };
    ctx.metrics.record_response(status, received.elapsed());
    if ctx.access_log.load(Relaxed) {
        logging::access(&AccessEntry {
            client: head.client,
            method: &head.method,
            target: &head.target,
            status,
            backend: &backend,
            duration: received.elapsed(),
            bytes,
        });
    }
}

/// Sends the backend's answer to the client, streaming the body. Returns body bytes sent.
fn relay(
    request: tiny_http::Request,
    head: &RequestHead,
    fwd: Forwarded,
    conn: Option<ConnId>,
) -> u64 {
    let headers: Vec<tiny_http::Header> = fwd
        .headers
        .end_to_end()
        .filter_map(|(k, v)| {
            let h = tiny_http::Header::from_bytes(k.as_bytes(), v).ok();
            if h.is_none() {
                log::warn!("dropped a response header tiny_http cannot send: {k}");
            }
            h
        })
        .collect();
    // Without a length, HTTP/1.0 clients and `TE: identity` make tiny_http buffer the body.
    let buffered = fwd.content_length.is_none()
        && (head.http10
            || head
                .header("te")
                .is_some_and(|v| v.to_ascii_lowercase().contains("identity")));
    let sent = Rc::new(Cell::new(0u64));
    let body = Relay {
        inner: fwd.body,
        sent: Rc::clone(&sent),
        limit: buffered.then_some(MAX_BUFFERED_BODY),
        conn,
        in_flight: fwd.in_flight,
    };
    let length = fwd.content_length.and_then(|n| usize::try_from(n).ok());
    let response = tiny_http::Response::new(
        tiny_http::StatusCode(fwd.status),
        headers,
        body,
        length,
        None,
    )
    .with_chunked_threshold(usize::MAX);
    if let Err(e) = request.respond(response) {
        log::debug!("relaying the response failed: {e}");
    }
    sent.get()
}

/// Streams a backend body to tiny_http. If the backend fails mid-body, the client connection is
/// shut down before tiny_http can finish the message, so a truncated body is never passed off as
/// complete (a chunked one would otherwise get its final chunk).
struct Relay {
    inner: Box<dyn Read + Send>,
    sent: Rc<Cell<u64>>,
    limit: Option<u64>,
    conn: Option<ConnId>,
    in_flight: crate::backend::InFlight,
}

impl Read for Relay {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let result = match self.limit {
            Some(limit) if self.sent.get() >= limit => Err(io::Error::other(
                "response without length too large to buffer for this client",
            )),
            _ => self.inner.read(buf),
        };
        match result {
            Ok(n) => {
                let backend = self.in_flight.backend();
                backend.stats.bytes_out.fetch_add(n as u64, Relaxed);
                self.sent.set(self.sent.get() + n as u64);
                Ok(n)
            }
            Err(e) => {
                log::warn!("backend body failed after {} bytes: {e}", self.sent.get());
                if let Some(conn) = self.conn {
                    abort_connection(conn, None);
                }
                Err(e)
            }
        }
    }
}

/// Connections the balancer has closed because of a request body it did not read. tiny_http
/// may still parse bytes it had buffered from them as further requests; those are dropped.
/// Entries are keyed by the client's address and port, which stay unique while the connection
/// lives, and forgotten after [`POISON_TTL`].
#[derive(Debug, Default)]
struct Poisoned {
    len: std::sync::atomic::AtomicUsize,
    peers: Mutex<std::collections::HashMap<SocketAddr, Instant>>,
}

/// How long a closed connection's address is remembered. 60 s.
const POISON_TTL: Duration = Duration::from_secs(60);

/// Most addresses remembered; older ones are dropped first when full.
const POISON_CAP: usize = 65_536;

impl Poisoned {
    fn add(&self, peer: SocketAddr) {
        let now = Instant::now();
        let mut peers = self.peers.lock();
        if peers.len() >= POISON_CAP {
            peers.retain(|_, t| now.saturating_duration_since(*t) < POISON_TTL);
            if peers.len() >= POISON_CAP {
                peers.clear();
            }
        }
        peers.insert(peer, now);
        self.len.store(peers.len(), SeqCst);
    }

    /// True when `peer`'s connection was closed by us (cheap when nothing ever was).
    fn contains(&self, peer: &SocketAddr) -> bool {
        if self.len.load(Relaxed) == 0 {
            return false;
        }
        let mut peers = self.peers.lock();
        let hit = peers.get(peer).is_some_and(|t| t.elapsed() < POISON_TTL);
        if !hit && peers.len() > 1024 {
            peers.retain(|_, t| t.elapsed() < POISON_TTL);
            self.len.store(peers.len(), SeqCst);
        }
        hit
    }
}

/// Answers with one of our own refusals. `remaining` is how much request body is still unread
/// (`None` when unknown: chunked).
///
/// When body may be left unread, the connection must not be used again: the leftover bytes could
/// be parsed as a request (request smuggling). The answer is then written straight to the socket,
/// the socket is shut down, and the connection is remembered as closed so anything tiny_http
/// still parses from its buffer is dropped.
fn refuse(
    request: tiny_http::Request,
    head: &RequestHead,
    refusal: &Refusal,
    conn: Option<ConnId>,
    remaining: Option<u64>,
    poisoned: &Poisoned,
) {
    let body = format!("{}\n", refusal.reason);
    let retry_after = refusal
        .retry_after
        .map(|s| format!("Retry-After: {s}\r\n"))
        .unwrap_or_default();
    match conn {
        Some(conn) if remaining != Some(0) => {
            poisoned.add(conn.peer);
            let wire = format!(
                "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\n{retry_after}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                refusal.status,
                reason_phrase(refusal.status),
                body.len(),
            );
            abort_connection(conn, Some(wire.as_bytes()));
            if remaining.is_some_and(|r| r > SAFE_UNREAD_BODY) {
                // See SAFE_UNREAD_BODY: dropping this request could exhaust memory, so it is
                // leaked, and with it a tiny_http connection thread.
                log::warn!(
                    "{} {}: leaking a connection with more than {SAFE_UNREAD_BODY} bytes of unread body",
                    head.client,
                    head.method
                );
                std::mem::forget(request);
            }
        }
        _ => {
            let mut response = tiny_http::Response::from_string(body)
                .with_status_code(refusal.status)
                .with_header(
                    tiny_http::Header::from_bytes("Content-Type", "text/plain; charset=utf-8")
                        .expect("static header"),
                );
            if let Some(s) = refusal.retry_after {
                response = response.with_header(
                    tiny_http::Header::from_bytes("Retry-After", s.to_string()).expect("digits"),
                );
            }
            let _ = request.respond(response);
        }
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        429 => "Too Many Requests",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// The admin listener: a second, small tiny_http server whose requests are answered by a
/// handler (see `admin.rs`) on two threads.
pub struct AdminServer {
    addr: SocketAddr,
    server: Arc<tiny_http::Server>,
    threads: Vec<JoinHandle<()>>,
}

/// Threads answering admin requests.
const ADMIN_THREADS: usize = 2;

impl AdminServer {
    /// Binds `addr` and answers every request with `handler`.
    pub fn start(
        addr: &str,
        handler: Arc<dyn Fn(&AdminRequest) -> AdminResponse + Send + Sync>,
    ) -> io::Result<AdminServer> {
        let listener = TcpListener::bind(addr)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on admin {addr}: {e}")))?;
        let bound = listener.local_addr()?;
        let server = Arc::new(new_tiny(&listener)?);
        let threads = (0..ADMIN_THREADS)
            .map(|i| {
                let server = Arc::clone(&server);
                let handler = Arc::clone(&handler);
                thread::Builder::new()
                    .name(format!("admin-{i}"))
                    .spawn(move || {
                        while let Ok(request) = server.recv() {
                            let req = AdminRequest {
                                method: request.method().as_str().to_string(),
                                target: request.url().to_string(),
                                authorization: request
                                    .headers()
                                    .iter()
                                    .find(|h| h.field.equiv("Authorization"))
                                    .map(|h| h.value.as_str().to_string()),
                            };
                            let answer = catch_unwind(AssertUnwindSafe(|| handler(&req)))
                                .unwrap_or_else(|_| AdminResponse::text(500, "internal error"));
                            let mut response = tiny_http::Response::from_data(answer.body)
                                .with_status_code(answer.status);
                            for (k, v) in [("Content-Type", answer.content_type)]
                                .into_iter()
                                .chain(answer.headers.iter().map(|(k, v)| (*k, v.as_str())))
                            {
                                if let Ok(h) = tiny_http::Header::from_bytes(k, v) {
                                    response.add_header(h);
                                }
                            }
                            let _ = request.respond(response);
                        }
                    })
            })
            .collect::<io::Result<Vec<_>>>()?;
        drop(listener);
        log::info!("admin listening on {bound}");
        Ok(AdminServer {
            addr: bound,
            server,
            threads,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops answering and joins the threads.
    pub fn stop(self) {
        for _ in &self.threads {
            self.server.unblock();
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

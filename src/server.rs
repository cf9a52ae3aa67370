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
use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use parking_lot::Mutex;

use crate::filter::Filter;
use crate::logging::{self, AccessEntry};
use crate::proxy::{check_request, Forwarded, Framing, Proxy, Refusal, RequestHead};

/// Front-end settings.
#[derive(Clone, Debug)]
pub struct FrontSettings {
    /// Worker threads. Default 64.
    pub workers: usize,
    /// Channel capacity between acceptor and workers. Default 1024.
    pub queue: usize,
    /// Write an access-log line per request. Default on.
    pub access_log: Arc<AtomicBool>,
    /// Request filtering, applied by the acceptor.
    pub filter: Arc<Filter>,
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

/// Identifies a client connection well enough to find its socket: the peer address and the
/// local (listening) port.
#[derive(Clone, Copy, Debug)]
struct ConnId {
    peer: SocketAddr,
    local_port: u16,
}

/// How often the watchdog checks that tiny_http serves new connections promptly. 100 ms.
const WATCHDOG_INTERVAL: Duration = Duration::from_millis(100);

/// Most kicks the watchdog makes in one round. Each one hands a connection waiting for a thread
/// to a new one.
const WATCHDOG_MAX_KICKS: usize = 256;

/// Works around a race in tiny_http 0.12's connection thread pool.
///
/// tiny_http gives every client connection a thread from a pool. When several connections arrive
/// at once, the pool can count a thread as idle that it has already woken for an earlier
/// connection, and queue the new connection instead of starting a thread for it. Since a
/// keep-alive connection holds its thread until the client closes it, the queued connection may
/// then wait indefinitely.
///
/// The watchdog detects and clears this from outside: it connects to the listener and closes its
/// sending side at once. A healthy pool answers that with an immediate close. If the answer does
/// not come, the kick is queued behind waiting connections, so the watchdog kicks again: each new
/// kick finds no idle thread, makes tiny_http start one, and that thread then takes the oldest
/// waiting connection. It stops when every kick has been answered, i.e. the queue is empty.
fn watchdog(target: SocketAddr, stopping: Arc<AtomicBool>) {
    while !stopping.load(SeqCst) {
        thread::sleep(WATCHDOG_INTERVAL);
        let mut waiting: Vec<TcpStream> = Vec::new();
        let mut kicks = 0;
        while kicks < WATCHDOG_MAX_KICKS && !stopping.load(SeqCst) {
            match TcpStream::connect_timeout(&target, Duration::from_millis(200)) {
                Ok(s) => {
                    let _ = s.shutdown(Shutdown::Write);
                    let _ = s.set_read_timeout(Some(Duration::from_millis(2)));
                    waiting.push(s);
                    kicks += 1;
                }
                Err(e) => {
                    log::debug!("watchdog cannot connect to {target}: {e}");
                    break;
                }
            }
            waiting.retain(|s| !answered(s));
            if waiting.is_empty() {
                break;
            }
        }
        if kicks > 1 {
            log::info!(
                "tiny_http had connections waiting for a thread: started {} more",
                kicks - 1
            );
        }
    }
}

/// True once tiny_http closed the watchdog's connection (or it failed).
fn answered(mut s: &TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        // Any answer, data or the close, means a thread has taken the connection.
        Ok(_n) => true,
        Err(e) => !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
    }
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
}

impl Front {
    /// Binds `listen`, starts the acceptor and `settings.workers` workers forwarding through
    /// `proxy`.
    pub fn start(listen: &str, proxy: Arc<Proxy>, settings: FrontSettings) -> io::Result<Front> {
        let listener = TcpListener::bind(listen)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {listen}: {e}")))?;
        let addr = listener.local_addr()?;
        let server = Arc::new(Mutex::new(Arc::new(new_tiny(&listener)?)));
        let (tx, rx) = bounded::<Job>(settings.queue);
        let (done_tx, done) = bounded::<()>(0);
        let stopping = Arc::new(AtomicBool::new(false));
        let finished = Arc::new(AtomicBool::new(false));

        let workers = (0..settings.workers)
            .map(|i| {
                let rx = rx.clone();
                let proxy = Arc::clone(&proxy);
                let access = Arc::clone(&settings.access_log);
                let filter = Arc::clone(&settings.filter);
                let done_tx = done_tx.clone();
                thread::Builder::new()
                    .name(format!("worker-{i}"))
                    .spawn(move || {
                        let _done = done_tx;
                        for job in rx {
                            let port = addr.port();
                            let work = || handle(job, &proxy, &filter, &access, port);
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
                .spawn(move || watchdog(target, stopping))?;
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
    local_port: u16,
}

fn accept_loop(
    server: Arc<Mutex<Arc<tiny_http::Server>>>,
    listener: TcpListener,
    mut ctx: AcceptCtx,
    stopping: Arc<AtomicBool>,
    finished: Arc<AtomicBool>,
) {
    loop {
        let current = Arc::clone(&server.lock());
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
        match current.recv() {
            Ok(request) => dispatch(request, &ctx),
            Err(_) if stopping.load(SeqCst) => continue,
            Err(e) => {
                // tiny_http's accept thread ends on the first accept error (for example too many
                // open files). Start a fresh one on the same socket after a short pause.
                log::error!("accept failed: {e}; restarting the listener in 100ms");
                thread::sleep(Duration::from_millis(100));
                match new_tiny(&listener) {
                    Ok(s) => *server.lock() = Arc::new(s),
                    Err(e) => log::error!("cannot restart the listener: {e}"),
                }
            }
        }
    }
}

fn dispatch(request: tiny_http::Request, ctx: &AcceptCtx) {
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
            let may_have_body = head.header("content-length").is_some()
                || head.header("transfer-encoding").is_some();
            refuse(
                request,
                &head,
                &refusal,
                may_have_body.then_some(conn).flatten(),
                None,
            );
            return;
        }
    };
    if let Err(refusal) = ctx.filter.check(&head, framing, Instant::now()) {
        refuse(request, &head, &refusal, conn, unread(framing, 0));
        return;
    }
    let Some(tx) = ctx.tx.as_ref() else {
        let r = Refusal::retry_after(503, "shutting down", 1);
        refuse(request, &head, &r, conn, unread(framing, 0));
        return;
    };
    let job = Job {
        request,
        head,
        framing,
        received: Instant::now(),
    };
    match tx.try_send(job) {
        Ok(()) => {}
        Err(TrySendError::Full(job)) => {
            let r = Refusal::retry_after(503, "server busy", 1);
            refuse(job.request, &job.head, &r, conn, unread(job.framing, 0));
        }
        Err(TrySendError::Disconnected(job)) => {
            let r = Refusal::retry_after(503, "shutting down", 1);
            refuse(job.request, &job.head, &r, conn, unread(job.framing, 0));
        }
    }
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

fn handle(job: Job, proxy: &Proxy, filter: &Filter, access_log: &AtomicBool, local_port: u16) {
    let Job {
        mut request,
        head,
        framing,
        received,
    } = job;
    let conn = request.remote_addr().map(|peer| ConnId {
        peer: *peer,
        local_port,
    });
    let result = proxy.forward(&head, framing, request.as_reader(), filter.max_body());
    let (status, backend, bytes) = match result {
        Ok(fwd) => {
            let status = fwd.status;
            let backend = fwd.backend().name.clone();
            let bytes = relay(request, &head, fwd, conn);
            (status, backend, bytes)
        }
        Err(failed) => {
            let backend = failed.backend.map_or("-".to_string(), |b| b.name.clone());
            let remaining = if failed.body_done {
                Some(0)
            } else {
                unread(framing, failed.body_read)
            };
            refuse(request, &head, &failed.refusal, conn, remaining);
            (
                failed.refusal.status,
                backend,
                failed.refusal.reason.len() as u64 + 1,
            )
        }
    };
    if access_log.load(Relaxed) {
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
        .iter()
        .filter_map(|(k, v)| {
            let h = tiny_http::Header::from_bytes(k.as_bytes(), v.as_slice()).ok();
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

/// Answers with one of our own refusals. `remaining` is how much request body is still unread
/// (`None` when unknown); when anything may be unread and `conn` is known, the connection is
/// closed after the answer so the leftover body is never parsed as a request.
fn refuse(
    request: tiny_http::Request,
    head: &RequestHead,
    refusal: &Refusal,
    conn: Option<ConnId>,
    remaining: Option<u64>,
) {
    let body = format!("{}\n", refusal.reason);
    let mut response = tiny_http::Response::from_string(body.clone())
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
    let leftover = remaining != Some(0);
    match (conn, leftover) {
        (Some(conn), true) if remaining.is_none_or(|r| r > SAFE_UNREAD_BODY) => {
            // Write the answer straight to the socket and never drop the request (see
            // SAFE_UNREAD_BODY). This leaks its connection thread, so it is logged.
            let wire = format!(
                "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                refusal.status,
                reason_phrase(refusal.status),
                body.len(),
                body
            );
            if remaining.is_none() {
                // Chunked: tiny_http's decoder does not allocate on drop, so a normal answer and
                // a close are safe.
                let _ = request.respond(response);
                abort_connection(conn, None);
                return;
            }
            log::warn!(
                "{} {}: closing a connection with more than {SAFE_UNREAD_BODY} bytes of unread body",
                head.client,
                head.method
            );
            abort_connection(conn, Some(wire.as_bytes()));
            std::mem::forget(request);
        }
        (Some(conn), true) => {
            let _ = request.respond(response);
            abort_connection(conn, None);
        }
        _ => {
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

/// Shuts down a listening socket so that tiny_http's accept thread stops and new connections are
/// refused, while our handle keeps the descriptor valid.
fn shutdown_socket(listener: &TcpListener) {
    #[cfg(unix)]
    {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: the descriptor is owned by `listener`, which outlives this call; ManuallyDrop
        // keeps the temporary TcpStream from closing it. shutdown(2) on a listening socket only
        // stops it accepting.
        let s = ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(listener.as_raw_fd()) });
        let _ = s.shutdown(Shutdown::Both);
    }
}

/// Closes a client connection that tiny_http owns, optionally writing `last_words` first.
///
/// tiny_http has no way to close a connection from a handler, and keeps reading the next request
/// from it after a failed response. On Linux the socket is found among the process's descriptors
/// by its peer address and local port and shut down; tiny_http then sees the end of the stream
/// and drops the connection. Elsewhere this does nothing.
fn abort_connection(conn: ConnId, last_words: Option<&[u8]>) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::FromRawFd;
        let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
            return;
        };
        for entry in dir.flatten() {
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let is_socket = std::fs::read_link(entry.path())
                .map(|p| p.to_string_lossy().starts_with("socket:"))
                .unwrap_or(false);
            if !is_socket {
                continue;
            }
            // SAFETY: `fd` is an open socket of this process (checked just above); ManuallyDrop
            // keeps the temporary TcpStream from closing it, and we only query addresses, write
            // and shut down, which cannot invalidate the descriptor for its owner.
            let mut s = ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(fd) });
            let matches = s.peer_addr().is_ok_and(|p| p == conn.peer)
                && s.local_addr().is_ok_and(|l| l.port() == conn.local_port);
            if matches {
                if let Some(bytes) = last_words {
                    let _ = s.write_all(bytes);
                }
                let _ = s.shutdown(Shutdown::Both);
                return;
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (conn, last_words);
}

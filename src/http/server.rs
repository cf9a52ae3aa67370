//! Starting and stopping a server, and the worker threads.
//!
//! A worker takes a complete request (its head, its buffered body and its connection) from the
//! channel, lets the handler answer it, and hands the connection back to the poller: with what
//! the client has not taken of the answer yet, for the poller to finish, and with whatever the
//! client sent after the request (pipelining), for the poller to read as the next request. So
//! every request, first or pipelined, is admitted in one place, the poller.
//!
//! Graceful shutdown ([`Server::shutdown`]): the poller closes the listening socket (new
//! connections are refused) and every idle connection, and stops queueing; the workers answer
//! what is queued and in flight, each answer saying `Connection: close`, and the poller
//! finishes the answers slow clients have not taken; after the drain timeout the server stops
//! waiting for them.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{
    fence, AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst,
};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};

use crate::supervise::{self, Thread};
use polling::Poller;

use super::connection::Conn;
use super::exchange::{Exchange, Fate, BUF_SIZE};
use super::gauges::Gauges;
use super::limits::Limits;
use super::poller::{self, PollerThread};
use super::spool::{Buffers, Spool};
use super::write::{self, AnswerTo, Refusal};
use super::{Handler, Notify, Refused, Request};

/// A request queued for a worker, with its connection and, when the poller buffered it, its
/// body.
pub(crate) struct Job {
    pub conn: Box<Conn>,
    pub request: Request,
    pub body: Option<Spool>,
}

/// A connection a worker is done with.
pub(crate) enum Returned {
    /// Waiting for the next request.
    Idle(Box<Conn>),
    /// Our side is finished; drop what the client still sends until it closes.
    Linger(Box<Conn>),
    /// The client has not taken all of the answer: the poller writes out `out`, then treats
    /// the connection as `then` says.
    Flush {
        conn: Box<Conn>,
        out: Spool,
        then: Fate,
        notify: Notify,
    },
    /// Closed by the worker; the poller frees its slot (the key).
    Closed(usize),
}

/// What the poller and the workers share.
pub(crate) struct Shared {
    pub handler: Arc<dyn Handler>,
    pub limits: Limits,
    pub buffers: Arc<Buffers>,
    pub gauges: Arc<Gauges>,
    pub poller: Arc<Poller>,
    /// Graceful shutdown has begun.
    pub stopping: AtomicBool,
    /// The poller thread runs (false once it has returned).
    pub poller_alive: AtomicBool,
    /// The drain is over: the poller exits.
    pub finished: AtomicBool,
    /// Jobs taken from the channel so far (by workers, or by the poller for a queue timeout).
    pub taken: AtomicU64,
    /// Connections the poller has seen readable while a worker still had them (see
    /// `give_back`).
    pub awaited: AtomicUsize,
    pub returns: Sender<Returned>,
}

/// Connections the kernel may hold, complete, before the poller accepts them. 4096; Linux
/// caps it at `net.core.somaxconn` (4096 by default since 5.4). Rust's own default, 128, makes
/// a burst of new connections wait for SYN retransmits (a second or more).
pub const BACKLOG: i32 = 4096;

/// Binds a listening socket on `addr` with a [`BACKLOG`]-deep accept queue.
pub fn bind(addr: &str) -> io::Result<TcpListener> {
    let listener = TcpListener::bind(addr)?;
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: listen(2) on a descriptor `listener` owns; calling it again on a listening
        // socket only changes the backlog.
        if unsafe { libc::listen(listener.as_raw_fd(), BACKLOG) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(listener)
}

/// A running HTTP server (see the module documentation).
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    poller: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
    done: Receiver<()>,
    queue: Receiver<Box<Job>>,
}

impl Server {
    /// Serves `listener` with `workers` worker threads (named `{name}-N`, the poller
    /// `{name}-poller`), answering requests with `handler` within `limits`, holding what slow
    /// clients have not sent or taken in spools counted in `buffers`, and counting in `gauges`.
    pub fn start(
        listener: TcpListener,
        workers: usize,
        limits: Limits,
        buffers: Arc<Buffers>,
        gauges: Arc<Gauges>,
        name: &str,
        handler: Arc<dyn Handler>,
    ) -> io::Result<Server> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let poller = Arc::new(Poller::new()?);
        // By default one slot per connection: each has at most one request queued, so the
        // channel is never full, and the queue is bounded by the connection limit.
        let capacity = limits.max_queue.unwrap_or(limits.max_connections).max(1);
        let (jobs, queue) = bounded::<Box<Job>>(capacity);
        let (returns, returned) = unbounded();
        let (done_tx, done) = bounded::<()>(0);
        let shared = Arc::new(Shared {
            handler,
            limits,
            buffers,
            gauges,
            poller,
            stopping: AtomicBool::new(false),
            poller_alive: AtomicBool::new(true),
            finished: AtomicBool::new(false),
            taken: AtomicU64::new(0),
            awaited: AtomicUsize::new(0),
            returns,
        });
        let workers = (0..workers.max(1))
            .map(|i| {
                let queue = queue.clone();
                let shared = Arc::clone(&shared);
                let done = done_tx.clone();
                thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || {
                        let _done = done;
                        work(&queue, &shared);
                    })
            })
            .collect::<io::Result<Vec<_>>>()?;
        let state =
            PollerThread::new(listener, Arc::clone(&shared), jobs, queue.clone(), returned)?;
        let alive = Arc::clone(&shared);
        let poller = thread::Builder::new()
            .name(format!("{name}-poller"))
            .spawn(move || {
                // The poller's state is every connection's: after an unexpected panic it cannot
                // be trusted, so the process ends and its supervisor starts a fresh one.
                if let Err(panic) = catch_unwind(AssertUnwindSafe(|| poller::run(state))) {
                    supervise::fatal(Thread::Poller, &*panic);
                }
                alive.poller_alive.store(false, SeqCst);
            })?;
        Ok(Server {
            addr,
            shared,
            poller: Some(poller),
            workers,
            done,
            queue,
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A function that tells whether the poller thread runs, for readiness: false if it has
    /// ended while the server was not stopping.
    pub fn alive_fn(&self) -> supervise::Alive {
        let shared = Arc::clone(&self.shared);
        Box::new(move || shared.poller_alive.load(SeqCst) || shared.stopping.load(SeqCst))
    }

    /// A function that tells how many requests wait for a worker, for status pages.
    pub fn queue_depth_fn(&self) -> Box<dyn Fn() -> usize + Send + Sync> {
        // A receiver, not a sender: a sender would keep the workers from ever seeing the
        // channel close at shutdown.
        let queue = self.queue.clone();
        Box::new(move || queue.len())
    }

    /// Requests waiting for a worker now.
    pub fn queue_depth(&self) -> usize {
        self.queue.len()
    }

    /// Stops taking requests and waits up to `drain` for the queued and in-flight ones. True
    /// when everything finished in time.
    pub fn shutdown(mut self, drain: Duration) -> bool {
        self.stop(drain, true)
    }

    fn stop(&mut self, drain: Duration, warn: bool) -> bool {
        self.shared.stopping.store(true, SeqCst);
        let _ = self.shared.poller.notify();
        let deadline = Instant::now() + drain;
        let mut drained = matches!(
            self.done.recv_deadline(deadline),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected)
        );
        if drained {
            for w in self.workers.drain(..) {
                let _ = w.join();
            }
            // The poller ends by itself once slow clients have taken their answers.
            let _ = self.shared.poller.notify();
            while self.poller.as_ref().is_some_and(|p| !p.is_finished()) {
                if Instant::now() >= deadline {
                    drained = false;
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
        if !drained && warn {
            log::warn!("drain timeout of {drain:?} reached with requests still in flight");
        }
        self.shared.finished.store(true, SeqCst);
        let _ = self.shared.poller.notify();
        if let Some(p) = self.poller.take() {
            let _ = p.join();
        }
        drained
    }
}

impl Drop for Server {
    /// A server dropped without [`Server::shutdown`] stops at once: the listener closes and the
    /// threads end as soon as they are free.
    fn drop(&mut self) {
        if self.poller.is_some() {
            self.stop(Duration::ZERO, false);
        }
    }
}

/// A worker: answers jobs until the channel closes.
fn work(queue: &Receiver<Box<Job>>, shared: &Shared) {
    let mut buf = Vec::with_capacity(BUF_SIZE);
    for job in queue.iter() {
        shared.taken.fetch_add(1, Relaxed);
        let Job {
            conn,
            request,
            body,
        } = *job;
        if request.received.elapsed() >= shared.limits.queue_timeout {
            refuse_queued(shared, conn, &request);
            continue;
        }
        shared.gauges.workers_busy.fetch_add(1, Relaxed);
        let key = conn.key;
        let served = catch_unwind(AssertUnwindSafe(|| {
            serve(shared, conn, request, body, &mut buf)
        }));
        shared.gauges.workers_busy.fetch_sub(1, Relaxed);
        if let Err(panic) = served {
            // The connection was dropped (closed) in the unwinding: its slot is free again.
            supervise::survived(Thread::Worker, "serving a request", &*panic);
            let _ = shared.returns.send(Returned::Closed(key));
        }
    }
}

/// Answers 503 to a request that waited too long for a worker, and closes its connection.
pub(crate) fn queue_timeout() -> Refusal {
    Refusal::retry_after(503, "no worker free in time (queue timeout)", 1).coded("queue_timeout")
}

fn refuse_queued(shared: &Shared, conn: Box<Conn>, request: &Request) {
    let refusal = queue_timeout();
    let why = Refused::QueueTimeout;
    let waited = request.received.elapsed();
    shared
        .handler
        .refused(conn.peer, Some(&request.head), &refusal, why, waited);
    let (bytes, _) = write::refusal_bytes(&refusal, closing(Some(&request.head)));
    let fate = if conn.try_write_all(&bytes) {
        Fate::Close
    } else {
        Fate::Abort
    };
    give_back(shared, conn, fate, None, None);
}

/// How a refusal that closes the connection is written for `head` (when it was parsed).
pub(crate) fn closing(head: Option<&super::RequestHead>) -> AnswerTo {
    AnswerTo {
        head_request: head.is_some_and(|h| h.method == "HEAD"),
        http10: head.is_some_and(|h| h.http10),
        keep_alive: false,
    }
}

/// Answers `request`, then gives the connection back to the poller (or closes it).
fn serve(
    shared: &Shared,
    mut conn: Box<Conn>,
    request: Request,
    body: Option<Spool>,
    buf: &mut Vec<u8>,
) {
    supervise::check_point(Thread::Worker);
    let keep_alive = !shared.stopping.load(Relaxed);
    let head = &request.head;
    let mut ex = Exchange::new(
        &mut conn,
        &request,
        body,
        keep_alive,
        buf,
        &shared.buffers,
        &shared.gauges,
    );
    let handled = catch_unwind(AssertUnwindSafe(|| {
        shared.handler.handle(&request, &mut ex)
    }));
    if handled.is_err() {
        log::error!("the handler panicked on {} {}", head.method, head.target);
    }
    if !ex.answered() {
        ex.refuse(&Refusal::new(500, "internal error").coded("panic"));
    }
    let (fate, out, on_delivered) = ex.finish();
    give_back(shared, conn, fate.unwrap_or(Fate::Abort), out, on_delivered);
}

/// Hands a connection back to the poller: to finish writing `out`, to wait for its next
/// request, to linger before closing, or closed here. `on_delivered` is told how the answer
/// ended: now, or by the poller once it has written `out`.
fn give_back(
    shared: &Shared,
    conn: Box<Conn>,
    fate: Fate,
    out: Option<Spool>,
    on_delivered: Option<super::OnDelivered>,
) {
    let out = out.filter(|o| !o.is_empty());
    let mut notify = Notify::new(on_delivered, out.as_ref().map_or(0, Spool::len));
    notify.failed = fate == Fate::Abort;
    let returned = match (fate, out) {
        (Fate::Abort, _) => {
            let key = conn.key;
            drop(conn);
            let _ = shared.returns.send(Returned::Closed(key));
            return;
        }
        (then, Some(out)) => Returned::Flush {
            conn,
            out,
            then,
            notify,
        },
        (Fate::KeepAlive, None) => Returned::Idle(conn),
        (Fate::Close, None) => {
            conn.shutdown_write();
            Returned::Linger(conn)
        }
    };
    let rearmed = match &returned {
        Returned::Idle(c) | Returned::Linger(c) => c.rearm(),
        Returned::Flush { conn, .. } => conn.rearm_writable(),
        Returned::Closed(_) => unreachable!("handled above"),
    };
    // Rearmed before it is handed over: an event that comes first finds its slot busy and is
    // remembered there until the connection arrives (see poller.rs).
    if rearmed.is_err() {
        let key = match &returned {
            Returned::Idle(c) | Returned::Linger(c) => c.key,
            Returned::Flush { conn, .. } => conn.key,
            Returned::Closed(key) => *key,
        };
        drop(returned);
        let _ = shared.returns.send(Returned::Closed(key));
        return;
    }
    // If the poller is gone (the drain ended), the connection is simply dropped.
    let _ = shared.returns.send(returned);
    // The poller looks at the returned connections before it handles events, not after: if
    // the client's next request arrived between our re-arming and our sending, the poller may
    // have seen the event, found the slot busy and gone to sleep. It counts such slots in
    // `awaited` before it looks at the returned connections a last time, and we look at the
    // count after sending; with a fence on each side, at least one of us sees the other, and
    // a sleeping poller is woken only then.
    fence(SeqCst);
    if shared.awaited.load(SeqCst) > 0 {
        let _ = shared.poller.notify();
    }
}

//! Starting and stopping a server: the listening socket, the poller thread, the worker
//! threads (`worker.rs`), and the channel between them (`handoff.rs`).
//!
//! Graceful shutdown ([`Server::shutdown`]): the poller closes the listening socket (new
//! connections are refused) and every idle connection, and stops queueing; the workers answer
//! what is queued and in flight, each answer started from then on saying `Connection: close`
//! (one whose head was already out closes after it), and the poller finishes the answers slow
//! clients have not taken; after the drain timeout the server stops waiting for them.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver};

use crate::supervise::{self, Thread};

use super::epoll::Epoll;
use super::gauges::Gauges;
use super::handoff::{Front, Job};
use super::idle::Idle;
use super::limits::Limits;
use super::poller::{self, PollerThread};
use super::spool::Buffers;
use super::worker::work;
use super::Handler;

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
    shared: Arc<Front>,
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
        let poller = Arc::new(Epoll::new()?);
        // By default one slot per connection: each has at most one request queued, so the
        // channel is never full, and the queue is bounded by the connection limit.
        let capacity = limits.max_queue.unwrap_or(limits.max_connections).max(1);
        let (jobs, queue) = bounded::<Box<Job>>(capacity);
        let (closed_tx, closed) = unbounded();
        let (done_tx, done) = bounded::<()>(0);
        let shared = Arc::new(Front {
            handler,
            limits,
            buffers,
            gauges,
            poller,
            stopping: AtomicBool::new(false),
            poller_alive: AtomicBool::new(true),
            finished: AtomicBool::new(false),
            taken: AtomicU64::new(0),
            idle: Idle::new(workers.max(1)),
            closed: closed_tx,
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
                        work(i, &queue, &shared);
                    })
            })
            .collect::<io::Result<Vec<_>>>()?;
        let state = PollerThread::new(listener, Arc::clone(&shared), jobs, queue.clone(), closed)?;
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
        self.shared.idle.wake_all();
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

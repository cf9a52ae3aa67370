//! A worker thread: it takes a complete request from the channel, lets the handler answer it
//! with ordinary blocking code (a worker may wait on a backend, never on a client: what the
//! client does not take at once waits in a spool), and hands the connection back to the poller
//! through its mailbox (see `handoff.rs`), with whatever of the answer is left to write and
//! whatever the client sent behind the request; or, when the answer switched protocols, hands
//! it and the peer socket over as a tunnel (`tunnel.rs`).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;

use crossbeam_channel::{Receiver, TryRecvError};

use crate::supervise::{self, Thread};

use super::connection::Conn;
use super::exchange::{Exchange, Fate, BUF_SIZE};
use super::handoff::{closing, queue_timeout, Front, Job, Mailbox, Returned};
use super::spool::Spool;
use super::tunnel;
use super::write::{self, Refusal};
use super::{Notify, OnDelivered, Refused, Request};

/// Worker number `me`: answers jobs until the channel closes, sleeping when there is none
/// (see `idle.rs` for when it is woken).
pub(crate) fn work(me: usize, queue: &Receiver<Box<Job>>, shared: &Front) {
    let mut buf = Vec::with_capacity(BUF_SIZE);
    loop {
        let job = match queue.try_recv() {
            Ok(job) => job,
            Err(TryRecvError::Empty) if shared.stopping.load(Relaxed) => {
                // The poller is about to close the queue: wait for that, not for a wake-up.
                std::thread::sleep(std::time::Duration::from_millis(1));
                continue;
            }
            Err(TryRecvError::Empty) => {
                let stopping = || shared.stopping.load(Relaxed);
                shared.idle.sleep(me, || !queue.is_empty() || stopping());
                continue;
            }
            Err(TryRecvError::Disconnected) => return,
        };
        shared.taken.fetch_add(1, Relaxed);
        let key = job.conn.key;
        shared.gauges.workers_busy.fetch_add(1, Relaxed);
        // Whatever the handler or the hand-back does, a panic costs the request, never the
        // worker: its connection was dropped (closed) in the unwinding, and its slot is freed.
        let served = catch_unwind(AssertUnwindSafe(|| serve(shared, job, &mut buf)));
        shared.gauges.workers_busy.fetch_sub(1, Relaxed);
        if let Err(panic) = served {
            supervise::survived(Thread::Worker, "serving a request", &*panic);
            shared.closed(key);
        }
    }
}

/// Answers a job (or refuses it when it waited too long), then gives the connection back.
fn serve(shared: &Front, job: Box<Job>, buf: &mut Vec<u8>) {
    let Job {
        mut conn,
        request,
        body,
        mailbox,
    } = *job;
    if request.received.elapsed() >= shared.limits.queue_timeout {
        return refuse_queued(shared, conn, &request, &mailbox);
    }
    supervise::check_point(Thread::Worker);
    let head = &request.head;
    let mut ex = Exchange::new(&mut conn, &request, body, buf, shared);
    let handled = catch_unwind(AssertUnwindSafe(|| {
        shared.handler.handle(&request, &mut ex)
    }));
    if handled.is_err() {
        log::error!("the handler panicked on {} {}", head.method, head.target);
    }
    if !ex.answered() {
        ex.refuse(&Refusal::new(500, "internal error").coded("panic"));
    }
    let finished = ex.finish();
    if let Some(tunnel) = finished.tunnel {
        return tunnel::hand_over(shared, conn, &mailbox, *tunnel);
    }
    let fate = finished.fate.unwrap_or(Fate::Abort);
    give_back(
        shared,
        conn,
        &mailbox,
        fate,
        finished.out,
        finished.on_delivered,
    );
}

fn refuse_queued(shared: &Front, conn: Box<Conn>, request: &Request, mailbox: &Mailbox) {
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
    give_back(shared, conn, mailbox, fate, None, None);
}

/// Hands a connection back to the poller: to finish writing `out`, to wait for its next
/// request, or to linger before closing; or closes it here, with a reset, when the answer was
/// cut off. `on_delivered` is told how the answer ended: now, or by the poller once it has
/// written `out`.
fn give_back(
    shared: &Front,
    conn: Box<Conn>,
    mailbox: &Mailbox,
    fate: Fate,
    out: Option<Spool>,
    on_delivered: Option<OnDelivered>,
) {
    let out = out.filter(|o| !o.is_empty());
    let mut notify = Notify::new(on_delivered, out.as_ref().map_or(0, Spool::len));
    // A connection that was to stay open closes once the drain has begun: its answer is
    // complete, and no new request would be served.
    let fate = match fate {
        Fate::KeepAlive if shared.stopping.load(Relaxed) => Fate::Close,
        fate => fate,
    };
    let key = conn.key;
    let mut conn = conn;
    // The poller times what follows (idle, lingering, flushing) from now.
    conn.idle_since = std::time::Instant::now();
    let (returned, writable) = match (fate, out) {
        (Fate::Abort, _) => {
            notify.failed = true;
            // A reset, not a FIN: a client must never take a cut-off answer for a whole one.
            conn.reset();
            drop(conn);
            return shared.closed(key);
        }
        (then, Some(out)) => {
            let flush = Returned::Flush {
                conn,
                out,
                then,
                notify,
            };
            (flush, true)
        }
        (Fate::KeepAlive, None) => {
            let pipelined = !conn.unread().is_empty();
            (Returned::Idle(conn), pipelined)
        }
        (Fate::Close, None) => {
            conn.shutdown_write();
            (Returned::Linger(conn), false)
        }
    };
    if let Err(returned) = mailbox.put(returned, writable) {
        if let Returned::Flush { mut notify, .. } = returned {
            notify.failed = true;
        }
        shared.closed(key);
    }
}

//! A worker thread: it takes a complete request from the channel, lets the handler answer it
//! with ordinary blocking code (a worker may wait on a backend, never on a client: what the
//! client does not take at once waits in a spool), and hands the connection back to the poller,
//! with whatever of the answer is left to write and whatever the client sent behind the request.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{fence, Ordering::Relaxed, Ordering::SeqCst};

use crossbeam_channel::Receiver;

use crate::supervise::{self, Thread};

use super::connection::Conn;
use super::exchange::{Exchange, Fate, BUF_SIZE};
use super::handoff::{closing, queue_timeout, Front, Job, Returned};
use super::spool::Spool;
use super::write::{self, Refusal};
use super::{Notify, OnDelivered, Refused, Request};

/// A worker: answers jobs until the channel closes.
pub(crate) fn work(queue: &Receiver<Box<Job>>, shared: &Front) {
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

fn refuse_queued(shared: &Front, conn: Box<Conn>, request: &Request) {
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

/// Answers `request`, then gives the connection back to the poller (or closes it).
fn serve(
    shared: &Front,
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
    shared: &Front,
    conn: Box<Conn>,
    fate: Fate,
    out: Option<Spool>,
    on_delivered: Option<OnDelivered>,
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

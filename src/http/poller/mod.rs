//! The poller thread: it accepts connections, owns them while they wait on their client, reads
//! request heads and bodies as their bytes arrive, and hands complete requests to the workers.
//! This file holds the slots and what an event does to each; beside it, one concept each:
//! `accept.rs` (new connections), `heads.rs` (request heads and admission), `body.rs` (request
//! bodies), `queue.rs` (the queue to the workers) and `deadlines.rs` (what expires, and when the
//! poller wakes up without an event).
//!
//! Every connection has a slot; its key in `epoll` is the slot's index plus one (0 is the
//! listener). A slot is one of:
//!
//! | slot | meaning | leaves it when |
//! | --- | --- | --- |
//! | `Idle` | waiting for a request head, or the rest of one | a head is complete (→ `Busy`), a limit or timeout refuses it (→ `Lingering`), the client closes or idles out (→ free) |
//! | `Body` | its head is admitted; its body is being read into a spool | the body is complete (→ `Busy`), too large (413), too slow (`timeouts body=`, 408) or the client leaves (→ free) |
//! | `Busy` | queued for a worker, or with one | the worker leaves it in the slot's mailbox (→ `Idle`, `Flushing` or `Lingering`) or closes it (→ free) |
//! | `Flushing` | the worker is done, the client has not taken all of the answer | the answer is out (→ `Idle`, or `Lingering`), or the client took nothing for `timeouts client=` (→ free) |
//! | `Lingering` | our last answer is sent; the client's bytes are dropped | the client closes, or after [`LINGER`](super::LINGER) (→ free) |
//! | `Tunnel` | the answer switched protocols: bytes are relayed to and from a peer socket (`tunnel.rs`) | both sides are done, one fails, silence for `timeouts tunnel=`, or the drain ends (→ free) |
//! | `Parked` | the handler deferred its admission (`defer.rs`); the connection is not read | the handler's note comes, or its deadline passes (→ as after an admission: `Body`, `Busy`, `Lingering`, or the next request), or a graceful shutdown begins (503) |
//!
//! Connections are registered in oneshot mode: after an event the poller hears nothing more of
//! a connection until someone re-arms it. A worker re-arms a connection after leaving it in the
//! slot's mailbox (`handoff.rs`), so the event that follows finds it there. A tunnel's peer
//! socket is registered under its client's key with [`PEER_KEY`](super::tunnel::PEER_KEY) set.
//!
//! **Timers** (`timers.rs`): each slot has one pending check, never later than its deadline: an
//! `Idle` connection with part of a head gets 408 at `timeouts head=`; one without any is closed
//! after `timeouts client=`; a `Body` gets 408 at `timeouts body=`, or after `timeouts client=`
//! without a byte; a `Flushing` answer is given up after `timeouts client=` without progress; a
//! `Lingering` connection is closed after [`LINGER`](super::LINGER); a `Tunnel` after `timeouts
//! tunnel=` without a byte either way (see `tunnel.rs`); a `Parked` request is resumed without a
//! note at the deadline its handler gave (a few milliseconds). A `Busy` slot is looked at
//! every [`BUSY_CHECK`] at most, so that a connection a worker left in the mailbox is timed from
//! then on even if no event comes. The queue has a deadline too: its oldest request gets 503 when
//! it has waited `timeouts queue=` (workers check this as well when they take a job, but when
//! every worker is stuck on a slow backend, only the poller is there to do it). The poller sleeps
//! until the earliest of these, so each fires at its time.
//!
//! At the connection limit, or when `accept` fails for lack of descriptors (`EMFILE`), the
//! listener is not re-armed: new connections wait in the kernel's accept queue. It is re-armed
//! when a connection closes, and after an `EMFILE` at the latest after [`ACCEPT_PAUSE`].

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use polling::Event;

use super::epoll::Ready;

use crate::supervise::{self, Thread};

use super::connection::Conn;
use super::defer::{Admission, Defer, Parked, Settled};
use super::exchange::{expects_continue, Fate};
use super::gauges::LongestInWindow;
use super::handoff::{closing, queue_timeout, Front, Job, Mailbox, Returned};
use super::parse::{parse_head, Framing, Parsed};
use super::spool::Spool;
use super::timers::{is_current, Check, Timers};
use super::tunnel::{self, Tunnel, TunnelEnd};
use super::waiting::{too_large, too_large_for_buffers, Flush, Upload};
use super::write::{self, AnswerTo, Refusal};
use super::{Note, RefusalCause, Request, RequestHead, LINGER};

mod accept;
mod body;
mod deadlines;
mod heads;
mod queue;

/// How long accepting pauses after `accept` failed for lack of descriptors or memory. 100 ms.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Longest between two looks at a slot whose connection is with a worker. 1 s: a connection a
/// worker leaves in the mailbox is timed from then on, and no timeout that starts there is
/// shorter (`timeouts client=` is at least 1 s; [`LINGER`] is 5 s).
pub const BUSY_CHECK: Duration = Duration::from_secs(1);

/// Bytes read from a socket per event. 16 KiB.
const READ_SIZE: usize = 16 << 10;

/// The key of the listener; connection keys are slot indexes plus one.
const LISTENER: usize = 0;

enum Slot {
    Free,
    Idle(Box<Conn>),
    Body(Box<Upload>),
    Busy,
    Flushing(Box<Flush>),
    Lingering { conn: Box<Conn>, until: Instant },
    Tunnel(Box<Tunnel>),
    Parked(Box<Parked>),
}

/// A slot, its timer and its mailbox.
struct Entry {
    slot: Slot,
    check: Check,
    mailbox: Arc<Mailbox>,
}

/// The poller thread's state (see the module documentation).
pub(crate) struct PollerThread {
    shared: Arc<Front>,
    listener: Option<TcpListener>,
    listener_armed: bool,
    accept_paused_until: Option<Instant>,
    last_accept_warning: Option<Instant>,
    entries: Vec<Entry>,
    free: Vec<usize>,
    open: usize,
    timers: Timers,
    jobs: Option<Sender<Box<Job>>>,
    queue: Receiver<Box<Job>>,
    closed: Receiver<usize>,
    /// Deferred admissions settled by the handler's other threads (see `defer.rs`).
    settled: Receiver<Settled>,
    settled_tx: Sender<Settled>,
    /// Admissions asked so far: each deferral's parking number.
    parkings: u64,
    /// `(sequence number, queued at)` of the jobs sent, oldest first, until they are taken.
    queued: VecDeque<(u64, Instant)>,
    sent: u64,
    scratch: Vec<u8>,
    stopping: bool,
    longest: LongestInWindow,
}

impl PollerThread {
    pub fn new(
        listener: TcpListener,
        shared: Arc<Front>,
        jobs: Sender<Box<Job>>,
        queue: Receiver<Box<Job>>,
        closed: Receiver<usize>,
    ) -> io::Result<PollerThread> {
        // SAFETY: the listener is deleted from the poller before it is dropped (begin_stop,
        // and Drop below).
        unsafe { shared.poller.add(&listener, Event::readable(LISTENER))? };
        let (settled_tx, settled) = crossbeam_channel::unbounded();
        Ok(PollerThread {
            shared,
            listener: Some(listener),
            listener_armed: true,
            accept_paused_until: None,
            last_accept_warning: None,
            entries: Vec::new(),
            free: Vec::new(),
            open: 0,
            timers: Timers::default(),
            jobs: Some(jobs),
            queue,
            closed,
            settled,
            settled_tx,
            parkings: 0,
            queued: VecDeque::new(),
            sent: 0,
            scratch: vec![0; READ_SIZE],
            stopping: false,
            longest: LongestInWindow::new(Instant::now()),
        })
    }
}

impl Drop for PollerThread {
    fn drop(&mut self) {
        if let Some(l) = self.listener.take() {
            let _ = self.shared.poller.delete(&l);
        }
        // The drain is over: tunnels still open are closed, and told so.
        for entry in &mut self.entries {
            if let Slot::Tunnel(t) = &mut entry.slot {
                t.end(TunnelEnd::Shutdown);
            }
        }
    }
}

/// Runs the poller until the server has stopped.
pub(crate) fn run(mut p: PollerThread) {
    let mut ready = Ready::default();
    loop {
        supervise::check_point(Thread::Poller);
        let timeout = p
            .next_deadline()
            .map(|at| at.saturating_duration_since(Instant::now()));
        if let Err(e) = p.shared.poller.wait(&mut ready, timeout) {
            log::error!("poller: {e}");
            std::thread::sleep(Duration::from_millis(10));
        }
        let now = Instant::now();
        p.take_closed();
        p.take_settled(now);
        for &key in &ready.keys {
            p.on_event(key, now);
        }
        p.expire(now);
        if p.shared.stopping.load(SeqCst) && !p.stopping {
            p.begin_stop(now);
        }
        if p.stopping && (p.open == 0 || p.shared.finished.load(SeqCst)) {
            return;
        }
        let longest = p.longest.record(now.elapsed(), now);
        let us = longest.as_micros().min(u64::MAX as u128) as u64;
        p.shared.gauges.poller_longest.store(us, Relaxed);
    }
}
impl PollerThread {
    fn on_event(&mut self, key: usize, now: Instant) {
        if key == LISTENER {
            self.listener_armed = false;
            return self.accept(now);
        }
        // Either socket of a tunnel: the slot is its client's.
        let idx = tunnel::client_key(key) - 1;
        if idx >= self.entries.len() {
            return;
        }
        if matches!(self.entries[idx].slot, Slot::Busy) {
            // The event a worker armed when it left the connection in the mailbox.
            let Some(returned) = self.entries[idx].mailbox.take() else {
                return;
            };
            self.install(idx, returned);
        }
        match self.take_slot(idx) {
            Slot::Idle(conn) => self.read_head(idx, conn, now),
            Slot::Body(up) => self.read_body(idx, up, now),
            Slot::Flushing(f) => self.flush(idx, f, now),
            Slot::Lingering { conn, until } => self.discard(idx, conn, until),
            Slot::Tunnel(t) => self.relay(idx, t, now),
            other => self.put(idx, other),
        }
    }

    /// Relays what a tunnel's sockets have for each other; frees the slot once it has ended.
    fn relay(&mut self, idx: usize, mut t: Box<Tunnel>, now: Instant) {
        if t.relay(&mut self.scratch, now).is_some() {
            return self.end_tunnel(idx, t, None);
        }
        if t.arm().is_err() {
            return self.end_tunnel(idx, t, Some(TunnelEnd::Error));
        }
        self.put(idx, Slot::Tunnel(t));
    }

    /// Closes a tunnel (told it ended `how`, unless it knows already) and frees its slot.
    fn end_tunnel(&mut self, idx: usize, mut t: Box<Tunnel>, how: Option<TunnelEnd>) {
        if let Some(how) = how {
            t.end(how);
        }
        drop(t);
        self.free_slot(idx);
    }

    /// Puts what a worker left in the mailbox into the slot, as the state it says, timed from
    /// when the worker left it (`idle_since`).
    fn install(&mut self, idx: usize, returned: Returned) {
        let slot = match returned {
            Returned::Idle(conn) if self.stopping => return self.close(idx, conn),
            Returned::Linger(conn) if self.stopping => return self.close(idx, conn),
            Returned::Idle(mut conn) => {
                if !conn.unread().is_empty() {
                    // The client sent its next request behind the last (pipelining).
                    conn.head_started = Some(conn.idle_since);
                }
                Slot::Idle(conn)
            }
            Returned::Linger(conn) => Slot::Lingering {
                until: conn.idle_since + LINGER,
                conn,
            },
            Returned::Flush {
                conn,
                out,
                then,
                notify,
            } => Slot::Flushing(Box::new(Flush {
                progress: conn.idle_since,
                conn,
                out,
                then,
                notify,
            })),
            // A tunnel opened during the drain gets the rest of it, as the others do.
            Returned::Tunnel(t) => Slot::Tunnel(t),
        };
        self.put(idx, slot);
    }

    /// Takes whatever a slot holds, marking the slot busy.
    fn take_slot(&mut self, idx: usize) -> Slot {
        let slot = std::mem::replace(&mut self.entries[idx].slot, Slot::Busy);
        let gauges = &self.shared.gauges;
        match &slot {
            Slot::Body(_) => gauges.bodies.fetch_sub(1, Relaxed),
            Slot::Flushing(_) => gauges.flushing.fetch_sub(1, Relaxed),
            _ => 0,
        };
        slot
    }

    /// Sets a slot's state, and makes sure it is checked by its deadline.
    fn put(&mut self, idx: usize, slot: Slot) {
        let gauges = &self.shared.gauges;
        match &slot {
            Slot::Body(_) => gauges.bodies.fetch_add(1, Relaxed),
            Slot::Flushing(_) => gauges.flushing.fetch_add(1, Relaxed),
            _ => 0,
        };
        let entry = &mut self.entries[idx];
        entry.slot = slot;
        if let Some(at) = deadline(&entry.slot, &self.shared.limits) {
            self.timers.schedule(idx, &mut entry.check, at);
        }
    }

    /// Writes what a slow client can take now of the answer it has not taken yet.
    fn flush(&mut self, idx: usize, mut f: Box<Flush>, now: Instant) {
        let mut socket = f.conn.socket();
        match f.out.drain_into(&mut socket, &mut self.scratch) {
            Err(_) => {
                f.notify.failed = true;
                return self.close(idx, f.conn);
            }
            Ok(n) if n > 0 => f.progress = now,
            Ok(_) => {}
        }
        f.notify.untaken = f.out.len();
        if f.out.is_empty() {
            let Flush { mut conn, then, .. } = *f;
            return match then {
                Fate::KeepAlive => {
                    conn.idle_since = now;
                    self.resume(idx, conn, now)
                }
                Fate::Close | Fate::Abort => self.linger(idx, conn, now),
            };
        }
        if f.conn.rearm_writable().is_err() {
            f.notify.failed = true;
            return self.close(idx, f.conn);
        }
        self.put(idx, Slot::Flushing(f));
    }

    /// A connection that may carry another request: read what the client already sent behind
    /// the last one (pipelining), or wait for it.
    fn resume(&mut self, idx: usize, mut conn: Box<Conn>, now: Instant) {
        if self.stopping {
            return self.close(idx, conn);
        }
        if conn.unread().is_empty() {
            return self.idle(idx, conn);
        }
        conn.head_started = Some(now);
        self.process(idx, conn, now)
    }

    /// Tells the handler of an answer the front end gives by itself, and how long the client
    /// had waited for it (since `since`).
    fn tell(
        &self,
        conn: &Conn,
        head: Option<&RequestHead>,
        refusal: &Refusal,
        why: RefusalCause,
        since: Option<Instant>,
        now: Instant,
    ) {
        let waited = since.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        let handler = &self.shared.handler;
        // The handler's code, on the poller: its panic costs the line, not every connection.
        let told = catch_unwind(AssertUnwindSafe(|| {
            handler.refused(conn.peer, head, refusal, why, waited)
        }));
        if let Err(panic) = told {
            supervise::survived(Thread::Admission, "telling of a refusal", &*panic);
        }
    }

    /// Writes `refusal` (without waiting: a client that does not take a few hundred bytes is
    /// dropped), then closes the connection lingeringly.
    fn refuse(
        &mut self,
        idx: usize,
        conn: Box<Conn>,
        refusal: &Refusal,
        to: AnswerTo,
        now: Instant,
    ) {
        let (bytes, _) = write::refusal_bytes(refusal, to);
        if conn.try_write_all(&bytes) {
            self.linger(idx, conn, now);
        } else {
            self.close(idx, conn);
        }
    }

    /// Puts a connection back to wait for bytes.
    fn idle(&mut self, idx: usize, conn: Box<Conn>) {
        if conn.client_done || conn.rearm().is_err() {
            return self.close(idx, conn);
        }
        self.put(idx, Slot::Idle(conn));
    }

    /// Stops sending on a connection and drops what the client still sends until it closes.
    fn linger(&mut self, idx: usize, mut conn: Box<Conn>, now: Instant) {
        conn.shutdown_write();
        let unread = conn.unread().len();
        conn.consume_unread(unread);
        if conn.rearm().is_err() {
            return self.close(idx, conn);
        }
        let until = now + LINGER;
        self.put(idx, Slot::Lingering { conn, until });
    }

    /// Reads and drops what a lingering connection sent; closes it at its end.
    fn discard(&mut self, idx: usize, conn: Box<Conn>, until: Instant) {
        let mut ended = false;
        // A few reads per event, so that one fast sender cannot hold the poller; if it is still
        // sending, the next event comes at once.
        for _ in 0..4 {
            match conn.read_raw(&mut self.scratch) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    ended = true;
                    break;
                }
            }
        }
        if ended || conn.rearm().is_err() {
            return self.close(idx, conn);
        }
        self.put(idx, Slot::Lingering { conn, until });
    }

    /// Closes a connection and frees its slot.
    fn close(&mut self, idx: usize, conn: Box<Conn>) {
        drop(conn);
        self.free_slot(idx);
    }

    fn free_slot(&mut self, idx: usize) {
        let entry = &mut self.entries[idx];
        if matches!(entry.slot, Slot::Free) {
            return;
        }
        entry.slot = Slot::Free;
        entry.check.reset();
        self.free.push(idx);
        self.open -= 1;
        // Room again: a listener paused at the limit or for lack of descriptors resumes.
        self.accept_paused_until = None;
        self.arm_listener();
    }

    /// Frees the slots whose connections workers closed.
    fn take_closed(&mut self) {
        while let Ok(key) = self.closed.try_recv() {
            let idx = key - 1;
            // A connection closed by a worker has nothing in its mailbox; the slot is `Busy`.
            if matches!(self.entries[idx].slot, Slot::Busy) {
                self.free_slot(idx);
            }
        }
    }

    /// Graceful shutdown begins: no new connections, no new requests; idle connections (those
    /// a worker left in a mailbox too) close at once; bodies being read are dropped; requests
    /// whose admission is deferred are answered 503 at once, without waiting for their note.
    fn begin_stop(&mut self, now: Instant) {
        self.stopping = true;
        if let Some(l) = self.listener.take() {
            let _ = self.shared.poller.delete(&l);
        }
        // Without a sender, the workers end once the queue is empty.
        self.jobs = None;
        self.shared.idle.wake_all();
        for idx in 0..self.entries.len() {
            if matches!(self.entries[idx].slot, Slot::Busy) {
                if let Some(returned) = self.entries[idx].mailbox.take() {
                    self.install(idx, returned);
                }
            }
            match self.entries[idx].slot {
                Slot::Idle(_) | Slot::Lingering { .. } | Slot::Body(_) | Slot::Parked(_) => {}
                _ => continue,
            }
            match self.take_slot(idx) {
                Slot::Idle(conn) | Slot::Lingering { conn, .. } => self.close(idx, conn),
                Slot::Body(up) => self.close(idx, up.conn),
                Slot::Parked(p) => self.refuse_stopping(idx, p.conn, &p.request.head, p.since, now),
                other => self.put(idx, other),
            }
        }
    }
}

/// When `slot` expires, if it can (a `Busy` slot's connection is with a worker, which has
/// deadlines of its own).
fn deadline(slot: &Slot, limits: &super::Limits) -> Option<Instant> {
    match slot {
        Slot::Idle(conn) => Some(match conn.head_started {
            Some(t) => t + limits.head_timeout,
            None => conn.idle_since + limits.client_timeout,
        }),
        Slot::Body(up) => {
            Some((up.started + limits.body_timeout).min(up.last_read + limits.client_timeout))
        }
        Slot::Flushing(f) => Some(f.progress + limits.client_timeout),
        Slot::Lingering { until, .. } => Some(*until),
        Slot::Tunnel(t) => Some(t.deadline(limits)),
        Slot::Parked(p) => Some(p.until),
        Slot::Free | Slot::Busy => None,
    }
}

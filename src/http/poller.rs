//! The poller thread: it accepts connections, owns them while they are idle, reads request
//! heads as their bytes arrive, and hands complete requests to the workers.
//!
//! Every connection has a slot; its key in `epoll` is the slot's index plus one (0 is the
//! listener). A slot is one of:
//!
//! | slot | meaning | leaves it when |
//! | --- | --- | --- |
//! | `Idle` | waiting for a request head, or the rest of one | a head is complete (→ `Busy`), a limit or timeout refuses it (→ `Lingering`), the client closes or idles out (→ free) |
//! | `Body` | its head is admitted; its body is being read into a spool | the body is complete (→ `Busy`), too large (413), too slow (`timeouts body=`, 408) or the client leaves (→ free) |
//! | `Busy` | queued for a worker, or with one | the worker gives it back (→ `Idle`, `Flushing` or `Lingering`) or closes it (→ free) |
//! | `Flushing` | the worker is done, the client has not taken all of the answer | the answer is out (→ `Idle`, or `Lingering`), or the client took nothing for `timeouts client=` (→ free) |
//! | `Lingering` | our last answer is sent; the client's bytes are dropped | the client closes, or after [`LINGER`](super::LINGER) (→ free) |
//! | `Parked` | the handler deferred its admission (defer.rs); the connection is not read | the handler's note comes, or its deadline passes (→ as after an admission: `Body`, `Busy`, `Lingering`, or the next request) |
//!
//! Connections are registered in oneshot mode: after an event the poller hears nothing more of
//! a connection until someone re-arms it. A worker re-arms a connection just before it hands
//! it back, so an event can arrive while the slot is still `Busy`; the slot remembers it and
//! the connection is read as soon as it arrives.
//!
//! Timeouts are checked every [`TICK`] by one pass over the slots: an `Idle` connection with
//! part of a head for longer than `timeouts head=` gets 408; one without any for longer than
//! `timeouts client=` is closed. A `Parked` request is resumed without a note at its deadline
//! itself, not at the next tick: the deadlines of parked requests are kept in a heap and the
//! poller waits no longer than the earliest (a deferral's deadline is a few milliseconds). The same tick answers 503 to requests that have waited in the
//! channel longer than `timeouts queue=`: workers check this too when they take a job, but
//! when every worker is stuck on a slow backend, only the poller is there to do it.
//!
//! At the connection limit, or when `accept` fails for lack of descriptors (`EMFILE`), the
//! listener is not re-armed: new connections wait in the kernel's accept queue. It is re-armed
//! when a connection closes, and after an `EMFILE` at the latest after [`ACCEPT_PAUSE`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{fence, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::supervise::{self, Thread};
use polling::{Event, Events};

use super::connection::Conn;
use super::defer::{Admission, Defer, Parked, Settled};
use super::exchange::{expects_continue, Fate};
use super::handoff::{closing, queue_timeout, Front, Job, Returned};
use super::parse::{parse_head, Framing, Parsed};
use super::spool::Spool;
use super::waiting::{too_large, too_large_for_buffers, Flush, Upload};
use super::write::{self, AnswerTo, Refusal};
use super::{Refused, Request, LINGER};

/// How often timeouts are checked. 100 ms.
pub const TICK: Duration = Duration::from_millis(100);

/// How long accepting pauses after `accept` failed for lack of descriptors or memory. 100 ms.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Most connections accepted per listener event, so that a flood of new connections cannot
/// starve the ones already open. 64.
const ACCEPT_BATCH: usize = 64;

/// Bytes read from a socket per event. 16 KiB.
const READ_SIZE: usize = 16 << 10;

/// How often the same accept problem is logged at most. 10 s.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The key of the listener; connection keys are slot indexes plus one.
const LISTENER: usize = 0;

enum Slot {
    Free,
    Idle(Box<Conn>),
    Body(Box<Upload>),
    Busy { readable: bool },
    Flushing(Box<Flush>),
    Lingering { conn: Box<Conn>, until: Instant },
    Parked(Box<Parked>),
}

/// The poller thread's state (see the module documentation).
pub(crate) struct PollerThread {
    shared: Arc<Front>,
    listener: Option<TcpListener>,
    listener_armed: bool,
    accept_paused_until: Option<Instant>,
    last_accept_warning: Option<Instant>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    open: usize,
    jobs: Option<Sender<Box<Job>>>,
    queue: Receiver<Box<Job>>,
    returned: Receiver<Returned>,
    /// Deferred admissions settled by the handler's other threads (see defer.rs).
    settled: Receiver<Settled>,
    settled_tx: Sender<Settled>,
    /// Admissions asked so far: each deferral's parking number.
    parkings: u64,
    /// `(deadline, slot, parking)` of the parked requests, earliest first (an entry whose
    /// request was resumed already is dropped when it comes up).
    deadlines: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    /// `(sequence number, queued at)` of the jobs sent, oldest first, until they are taken.
    queued: VecDeque<(u64, Instant)>,
    sent: u64,
    scratch: Vec<u8>,
    next_tick: Instant,
    stopping: bool,
}

impl PollerThread {
    pub fn new(
        listener: TcpListener,
        shared: Arc<Front>,
        jobs: Sender<Box<Job>>,
        queue: Receiver<Box<Job>>,
        returned: Receiver<Returned>,
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
            slots: Vec::new(),
            free: Vec::new(),
            open: 0,
            jobs: Some(jobs),
            queue,
            returned,
            settled,
            settled_tx,
            parkings: 0,
            deadlines: BinaryHeap::new(),
            queued: VecDeque::new(),
            sent: 0,
            scratch: vec![0; READ_SIZE],
            next_tick: Instant::now() + TICK,
            stopping: false,
        })
    }
}

impl Drop for PollerThread {
    fn drop(&mut self) {
        if let Some(l) = self.listener.take() {
            let _ = self.shared.poller.delete(&l);
        }
    }
}

/// Runs the poller until the server has stopped.
pub(crate) fn run(mut p: PollerThread) {
    let mut events = Events::new();
    loop {
        events.clear();
        let wait = p.deadlines.peek().map_or(TICK, |Reverse((at, ..))| {
            at.saturating_duration_since(Instant::now()).min(TICK)
        });
        if let Err(e) = p.shared.poller.wait(&mut events, Some(wait)) {
            log::error!("poller: {e}");
            std::thread::sleep(TICK);
        }
        supervise::check_point(Thread::Poller);
        let now = Instant::now();
        p.take_returned(now);
        p.take_settled(now);
        p.expire_parked(now);
        let awaited = p.shared.awaited.load(Relaxed);
        for ev in events.iter() {
            p.on_event(ev.key, now);
        }
        if p.shared.awaited.load(Relaxed) > awaited {
            // A connection was readable while still with a worker that is handing it back: look
            // once more now that the count is published (see `give_back` in server.rs).
            fence(SeqCst);
            p.take_returned(now);
        }
        if now >= p.next_tick {
            p.tick(now);
            p.next_tick = now + TICK;
        }
        if p.shared.stopping.load(SeqCst) && !p.stopping {
            p.begin_stop();
        }
        if p.stopping && (p.open == 0 || p.shared.finished.load(SeqCst)) {
            return;
        }
    }
}

fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

impl PollerThread {
    fn on_event(&mut self, key: usize, now: Instant) {
        if key == LISTENER {
            self.listener_armed = false;
            return self.accept(now);
        }
        let idx = key - 1;
        match self.slots.get_mut(idx) {
            Some(Slot::Busy { readable }) => {
                if !*readable {
                    *readable = true;
                    self.shared.awaited.fetch_add(1, SeqCst);
                }
            }
            Some(Slot::Idle(_)) => {
                if let Some(conn) = self.take(idx) {
                    self.read_head(idx, conn, now);
                }
            }
            Some(Slot::Body(_)) => {
                if let Slot::Body(up) = self.take_slot(idx) {
                    self.read_body(idx, up, now);
                }
            }
            Some(Slot::Flushing(_)) => {
                if let Slot::Flushing(f) = self.take_slot(idx) {
                    self.flush(idx, f, now);
                }
            }
            Some(Slot::Lingering { .. }) => self.discard(idx),
            // Not armed while parked: nothing to hear.
            Some(Slot::Free | Slot::Parked(_)) | None => {}
        }
    }

    /// Takes whatever a slot holds, marking the slot busy.
    fn take_slot(&mut self, idx: usize) -> Slot {
        std::mem::replace(&mut self.slots[idx], Slot::Busy { readable: false })
    }

    /// Takes an idle connection out of its slot, marking the slot busy.
    fn take(&mut self, idx: usize) -> Option<Box<Conn>> {
        match self.take_slot(idx) {
            Slot::Idle(conn) => Some(conn),
            other => {
                self.slots[idx] = other;
                None
            }
        }
    }

    fn accept(&mut self, now: Instant) {
        for _ in 0..ACCEPT_BATCH {
            let max = self.shared.limits.max_connections;
            if self.open >= max {
                self.warn_accept(now, || {
                    format!(
                        "connection limit of {max} reached: new connections wait until one \
                         closes (limits max_connections=)"
                    )
                });
                return;
            }
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.add(stream, peer, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if is_out_of_descriptors(&e) => {
                    let open = self.open;
                    self.warn_accept(now, || {
                        format!(
                            "cannot accept a connection: {e}; serving the {} open ones and \
                             retrying as descriptors free up (raise `ulimit -n`, or lower \
                             limits max_connections=)",
                            open
                        )
                    });
                    self.accept_paused_until = Some(now + ACCEPT_PAUSE);
                    return;
                }
                Err(e) => log::debug!("accept: {e}"),
            }
        }
        self.arm_listener();
    }

    fn warn_accept(&mut self, now: Instant, message: impl FnOnce() -> String) {
        if self
            .last_accept_warning
            .is_none_or(|t| now.duration_since(t) >= WARN_EVERY)
        {
            self.last_accept_warning = Some(now);
            log::warn!("{}", message());
        }
    }

    fn arm_listener(&mut self) {
        if self.listener_armed
            || self.accept_paused_until.is_some()
            || self.open >= self.shared.limits.max_connections
        {
            return;
        }
        if let Some(l) = &self.listener {
            match self.shared.poller.modify(l, Event::readable(LISTENER)) {
                Ok(()) => self.listener_armed = true,
                Err(e) => log::error!("poller: cannot watch the listener: {e}"),
            }
        }
    }

    fn add(&mut self, stream: TcpStream, peer: SocketAddr, now: Instant) {
        let idx = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot::Free);
            self.slots.len() - 1
        });
        let io_timeout = self.shared.limits.client_timeout;
        match Conn::register(stream, peer, idx + 1, &self.shared.poller, io_timeout, now) {
            Ok(conn) => {
                self.slots[idx] = Slot::Idle(Box::new(conn));
                self.open += 1;
            }
            Err(e) => {
                log::debug!("cannot register a connection from {peer}: {e}");
                self.free.push(idx);
            }
        }
    }

    /// Reads what arrived on an idle connection and looks for a complete head.
    fn read_head(&mut self, idx: usize, mut conn: Box<Conn>, now: Instant) {
        match conn.read_available(&mut self.scratch) {
            Ok(0) => self.close(idx, conn),
            Ok(_) => {
                conn.head_started.get_or_insert(now);
                self.process(idx, conn, now);
            }
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted =>
            {
                self.idle(idx, conn)
            }
            Err(_) => self.close(idx, conn),
        }
    }

    /// Acts on the bytes an idle connection has: waits for more, refuses, or queues the request.
    fn process(&mut self, idx: usize, mut conn: Box<Conn>, now: Instant) {
        loop {
            let parsed = parse_head(
                conn.unread(),
                conn.scanned,
                conn.peer.ip(),
                &self.shared.limits,
            );
            let (head, framing, len) = match parsed {
                Ok(Parsed::Partial) => {
                    conn.scanned = conn.unread().len();
                    return self.idle(idx, conn);
                }
                Err(refusal) => {
                    let since = conn.head_started;
                    self.tell(&conn, None, &refusal, Refused::Malformed, since, now);
                    return self.refuse(idx, conn, &refusal, closing(None), now);
                }
                Ok(Parsed::Complete { head, framing, len }) => (head, framing, len),
            };
            conn.consume_unread(len);
            conn.scanned = 0;
            let since = conn.head_started.take();
            if self.stopping {
                let refusal = Refusal::retry_after(503, "shutting down", 1).coded("shutting_down");
                let why = Refused::ShuttingDown;
                self.tell(&conn, Some(&head), &refusal, why, since, now);
                return self.refuse(idx, conn, &refusal, closing(Some(&head)), now);
            }
            let admission = self.admit(idx, &head, framing);
            let verdict = match admission {
                Admission::Admit => Ok(()),
                Admission::Refuse(refusal) => Err(refusal),
                Admission::Later { within } => {
                    return self.park(idx, conn, head, framing, since, within, now);
                }
            };
            match self.admitted(idx, conn, head, framing, since, now, verdict, now) {
                Some(next) => conn = next,
                None => return,
            }
        }
    }

    /// Asks the handler to admit a request (a panic in it refuses the request with 500).
    fn admit(&mut self, idx: usize, head: &super::RequestHead, framing: Framing) -> Admission {
        self.parkings += 1;
        let defer = Defer {
            to: &self.settled_tx,
            poller: &self.shared.poller,
            key: idx + 1,
            parking: self.parkings,
        };
        let handler = &self.shared.handler;
        catch_unwind(AssertUnwindSafe(|| {
            supervise::check_point(Thread::Admission);
            handler.admit(head, framing, &defer)
        }))
        .unwrap_or_else(|panic| {
            supervise::survived(Thread::Admission, "in the admission checks", &*panic);
            Admission::Refuse(Refusal::new(500, "internal error").coded("panic"))
        })
    }

    /// Goes on with a request once its admission is decided: refused, its answer is written
    /// (and the connection is returned when it may carry the next request, which the caller
    /// reads); admitted, its body is read or it is queued. `received` is when its head was
    /// complete.
    #[allow(clippy::too_many_arguments)]
    fn admitted(
        &mut self,
        idx: usize,
        mut conn: Box<Conn>,
        head: super::RequestHead,
        framing: Framing,
        since: Option<Instant>,
        received: Instant,
        verdict: Result<(), Refusal>,
        now: Instant,
    ) -> Option<Box<Conn>> {
        if let Err(refusal) = verdict {
            let why = Refused::Admission;
            self.tell(&conn, Some(&head), &refusal, why, since, now);
            let to = AnswerTo {
                keep_alive: framing == super::Framing::None && head.wants_keep_alive(),
                ..closing(Some(&head))
            };
            let (bytes, persistence) = write::refusal_bytes(&refusal, to);
            if !conn.try_write_all(&bytes) {
                self.close(idx, conn);
                return None;
            }
            if !persistence.keeps_open() {
                self.linger(idx, conn, now);
                return None;
            }
            conn.idle_since = now;
            if !conn.unread().is_empty() {
                conn.head_started = Some(now);
            }
            return Some(conn);
        }
        let request = Request {
            head,
            framing,
            received,
        };
        if framing != Framing::None && self.shared.limits.request_buffering {
            self.start_body(idx, conn, request, now);
        } else {
            self.dispatch(idx, conn, request, None, now);
        }
        None
    }

    /// Keeps a request whose admission the handler deferred until its note comes (or `within`
    /// has passed). The connection is not read meanwhile: what the client sends next waits.
    #[allow(clippy::too_many_arguments)]
    fn park(
        &mut self,
        idx: usize,
        conn: Box<Conn>,
        head: super::RequestHead,
        framing: Framing,
        since: Option<Instant>,
        within: Duration,
        now: Instant,
    ) {
        self.slots[idx] = Slot::Parked(Box::new(Parked {
            conn,
            head,
            framing,
            since,
            received: now,
            parking: self.parkings,
        }));
        self.deadlines
            .push(Reverse((now + within, idx, self.parkings)));
    }

    /// Resumes without a note the parked requests whose deadline has come.
    fn expire_parked(&mut self, now: Instant) {
        while let Some(Reverse((at, idx, parking))) = self.deadlines.peek().copied() {
            if at > now {
                return;
            }
            self.deadlines.pop();
            let current =
                matches!(&self.slots.get(idx), Some(Slot::Parked(p)) if p.parking == parking);
            if current {
                self.unpark(idx, None, now);
            }
        }
    }

    /// Resumes the parked requests whose notes have come.
    fn take_settled(&mut self, now: Instant) {
        while let Ok((key, parking, note)) = self.settled.try_recv() {
            let idx = key - 1;
            let current =
                matches!(&self.slots.get(idx), Some(Slot::Parked(p)) if p.parking == parking);
            if current {
                self.unpark(idx, note, now);
            }
        }
    }

    /// Asks the handler for the verdict on the request parked in `idx` (with its note, or
    /// `None` when none came in time), and goes on with it.
    fn unpark(&mut self, idx: usize, note: Option<super::Note>, now: Instant) {
        let Slot::Parked(parked) = self.take_slot(idx) else {
            return;
        };
        let Parked {
            conn,
            head,
            framing,
            since,
            received,
            ..
        } = *parked;
        let handler = &self.shared.handler;
        let verdict = catch_unwind(AssertUnwindSafe(|| {
            supervise::check_point(Thread::Admission);
            handler.resume(&head, framing, note)
        }))
        .unwrap_or_else(|panic| {
            supervise::survived(Thread::Admission, "in the admission checks", &*panic);
            Err(Refusal::new(500, "internal error").coded("panic"))
        });
        if let Some(conn) = self.admitted(idx, conn, head, framing, since, received, verdict, now) {
            self.resume(idx, conn, now);
        }
    }

    /// Begins reading an admitted request's body into a spool: says `100 Continue` if the
    /// client waits for it (every refusal the balancer can decide alone has been made by now),
    /// takes what already arrived, and waits for the rest.
    fn start_body(&mut self, idx: usize, mut conn: Box<Conn>, request: Request, now: Instant) {
        let max = self.shared.handler.max_body().unwrap_or(u64::MAX);
        let room = self.shared.buffers.limits().temp_file;
        if let Framing::Length(n) = request.framing {
            if n > max || n > room {
                let (refusal, why) = if n > max {
                    too_large()
                } else {
                    too_large_for_buffers()
                };
                let head = Some(&request.head);
                self.tell(&conn, head, &refusal, why, Some(request.received), now);
                return self.refuse(idx, conn, &refusal, closing(head), now);
            }
        }
        if conn.unread().is_empty()
            && expects_continue(&request.head)
            && !conn.try_write_all(write::CONTINUE)
        {
            return self.close(idx, conn);
        }
        let first = conn.take_unread();
        let spool = Spool::new(&self.shared.buffers);
        let up = Box::new(Upload::new(conn, request, spool, max, now));
        if let Some(up) = self.body_bytes(idx, up, &first, now) {
            self.wait_body(idx, up);
        }
    }

    /// Puts an upload back to wait for more of its body.
    fn wait_body(&mut self, idx: usize, up: Box<Upload>) {
        if up.conn.rearm().is_err() {
            return self.close(idx, up.conn);
        }
        self.slots[idx] = Slot::Body(up);
    }

    /// Reads what arrived of a body.
    fn read_body(&mut self, idx: usize, up: Box<Upload>, now: Instant) {
        // A few reads per event, so that one fast sender cannot hold the poller; if it is
        // still sending, the next event comes at once.
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut up = Some(up);
        for _ in 0..4 {
            let Some(u) = up.take() else { break };
            match u.conn.read_raw(&mut scratch) {
                Ok(0) => {
                    let gone = Refusal::new(400, "client closed inside the request body");
                    let head = Some(&u.request.head);
                    let since = Some(u.started);
                    self.tell(
                        &u.conn,
                        head,
                        &gone.coded("client_aborted"),
                        Refused::ClientGone,
                        since,
                        now,
                    );
                    self.close(idx, u.conn);
                }
                Ok(n) => {
                    let mut u = u;
                    u.last_read = now;
                    up = self.body_bytes(idx, u, &scratch[..n], now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    up = Some(u);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => up = Some(u),
                Err(_) => self.close(idx, u.conn),
            }
        }
        self.scratch = scratch;
        if let Some(u) = up {
            self.wait_body(idx, u);
        }
    }

    /// Takes `data` into the body. Returns the upload when it wants more (its slot is for the
    /// caller to set); otherwise the request has been queued or refused.
    fn body_bytes(
        &mut self,
        idx: usize,
        mut up: Box<Upload>,
        data: &[u8],
        now: Instant,
    ) -> Option<Box<Upload>> {
        match up.take(data) {
            Err((refusal, why)) => {
                let head = Some(&up.request.head);
                self.tell(&up.conn, head, &refusal, why, Some(up.started), now);
                self.refuse(idx, up.conn, &refusal, closing(head), now);
                None
            }
            Ok(used) if up.done() => {
                let (conn, request, spool) = up.finish(&data[used..], now);
                self.dispatch(idx, conn, request, Some(spool), now);
                None
            }
            Ok(_) => Some(up),
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
        self.slots[idx] = Slot::Flushing(f);
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

    fn dispatch(
        &mut self,
        idx: usize,
        conn: Box<Conn>,
        request: Request,
        body: Option<Spool>,
        now: Instant,
    ) {
        let job = Box::new(Job {
            conn,
            request,
            body,
        });
        let Some(jobs) = &self.jobs else {
            return self.refuse_job(idx, *job, Refused::ShuttingDown, now);
        };
        match jobs.try_send(job) {
            Ok(()) => {
                self.slots[idx] = Slot::Busy { readable: false };
                self.queued.push_back((self.sent, now));
                self.sent += 1;
            }
            Err(TrySendError::Full(job)) => self.refuse_job(idx, *job, Refused::QueueFull, now),
            Err(TrySendError::Disconnected(job)) => {
                self.refuse_job(idx, *job, Refused::ShuttingDown, now)
            }
        }
    }

    /// Answers 503 to a request that cannot wait for a worker (`why`: the queue is full, or the
    /// server is stopping) or waited too long.
    fn refuse_job(&mut self, idx: usize, job: Job, why: Refused, now: Instant) {
        let Job { conn, request, .. } = job;
        let refusal = match why {
            Refused::QueueTimeout => queue_timeout(),
            Refused::QueueFull => Refusal::retry_after(503, "server busy", 1).coded("queue_full"),
            _ => Refusal::retry_after(503, "shutting down", 1).coded("shutting_down"),
        };
        let head = Some(&request.head);
        self.tell(&conn, head, &refusal, why, Some(request.received), now);
        self.refuse(idx, conn, &refusal, closing(head), now);
    }

    /// Tells the handler of an answer the front end gives by itself, and how long the client
    /// had waited for it (since `since`).
    fn tell(
        &self,
        conn: &Conn,
        head: Option<&super::RequestHead>,
        refusal: &Refusal,
        why: Refused,
        since: Option<Instant>,
        now: Instant,
    ) {
        let waited = since.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.shared
            .handler
            .refused(conn.peer, head, refusal, why, waited);
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
        if conn.rearm().is_err() {
            return self.close(idx, conn);
        }
        self.slots[idx] = Slot::Idle(conn);
    }

    /// Stops sending on a connection and drops what the client still sends until it closes.
    fn linger(&mut self, idx: usize, mut conn: Box<Conn>, now: Instant) {
        conn.shutdown_write();
        let unread = conn.unread().len();
        conn.consume_unread(unread);
        if conn.rearm().is_err() {
            return self.close(idx, conn);
        }
        self.slots[idx] = Slot::Lingering {
            conn,
            until: now + LINGER,
        };
    }

    /// Reads and drops what a lingering connection sent; closes it at its end.
    fn discard(&mut self, idx: usize) {
        let Slot::Lingering { conn, .. } = &self.slots[idx] else {
            return;
        };
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
            if let Slot::Lingering { conn, .. } =
                std::mem::replace(&mut self.slots[idx], Slot::Busy { readable: false })
            {
                self.close(idx, conn);
            }
        }
    }

    /// Closes a connection and frees its slot.
    fn close(&mut self, idx: usize, conn: Box<Conn>) {
        drop(conn);
        self.free_slot(idx);
    }

    fn free_slot(&mut self, idx: usize) {
        self.slots[idx] = Slot::Free;
        self.free.push(idx);
        self.open -= 1;
        // Room again: a listener paused at the limit or for lack of descriptors resumes.
        self.accept_paused_until = None;
        self.arm_listener();
    }

    /// Takes back the connections workers are done with.
    fn take_returned(&mut self, now: Instant) {
        while let Ok(returned) = self.returned.try_recv() {
            let idx = match &returned {
                Returned::Idle(c) | Returned::Linger(c) => c.key - 1,
                Returned::Flush { conn, .. } => conn.key - 1,
                Returned::Closed(key) => key - 1,
            };
            let event_waiting = matches!(self.slots[idx], Slot::Busy { readable: true });
            if event_waiting {
                self.shared.awaited.fetch_sub(1, SeqCst);
            }
            match returned {
                Returned::Closed(_) => self.free_slot(idx),
                Returned::Idle(conn) if self.stopping => self.close(idx, conn),
                Returned::Idle(mut conn) => {
                    conn.idle_since = now;
                    if event_waiting {
                        self.read_head(idx, conn, now);
                    } else if !conn.unread().is_empty() {
                        // The client sent its next request behind the last (pipelining).
                        self.resume(idx, conn, now);
                    } else {
                        self.slots[idx] = Slot::Idle(conn);
                    }
                }
                Returned::Flush {
                    conn,
                    out,
                    then,
                    notify,
                } => {
                    let f = Box::new(Flush {
                        conn,
                        out,
                        then,
                        progress: now,
                        notify,
                    });
                    if event_waiting {
                        self.flush(idx, f, now);
                    } else {
                        self.slots[idx] = Slot::Flushing(f);
                    }
                }
                Returned::Linger(conn) if self.stopping => self.close(idx, conn),
                Returned::Linger(conn) => {
                    self.slots[idx] = Slot::Lingering {
                        conn,
                        until: now + LINGER,
                    };
                    if event_waiting {
                        self.discard(idx);
                    }
                }
            }
        }
    }

    /// Timeouts (see the module documentation), and accepting again after a pause.
    fn tick(&mut self, now: Instant) {
        let limits = self.shared.limits;
        let (mut bodies, mut flushing) = (0, 0);
        for idx in 0..self.slots.len() {
            let expired = match &self.slots[idx] {
                Slot::Idle(conn) => match conn.head_started {
                    Some(t) => now.duration_since(t) >= limits.head_timeout,
                    None => now.duration_since(conn.idle_since) >= limits.client_timeout,
                },
                Slot::Body(up) => {
                    bodies += 1;
                    now.duration_since(up.started) >= limits.body_timeout
                        || now.duration_since(up.last_read) >= limits.client_timeout
                }
                Slot::Flushing(f) => {
                    flushing += 1;
                    now.duration_since(f.progress) >= limits.client_timeout
                }
                Slot::Lingering { until, .. } => now >= *until,
                Slot::Free | Slot::Busy { .. } | Slot::Parked(_) => false,
            };
            if !expired {
                continue;
            }
            match self.take_slot(idx) {
                Slot::Idle(conn) if conn.head_started.is_some() => {
                    let refusal = Refusal::new(408, "request head not received in time")
                        .coded("head_timeout");
                    let (why, since) = (Refused::HeadTimeout, conn.head_started);
                    self.tell(&conn, None, &refusal, why, since, now);
                    self.refuse(idx, conn, &refusal, closing(None), now);
                }
                Slot::Body(up) => {
                    let refusal = Refusal::new(408, "request body not received in time")
                        .coded("body_timeout");
                    let head = Some(&up.request.head);
                    let why = Refused::BodyTimeout;
                    self.tell(&up.conn, head, &refusal, why, Some(up.started), now);
                    self.refuse(idx, up.conn, &refusal, closing(head), now);
                }
                Slot::Flushing(mut f) => {
                    f.notify.failed = true;
                    log::debug!(
                        "{} took nothing of its answer for {:?}: closed with {} bytes untaken",
                        f.conn.peer,
                        limits.client_timeout,
                        f.out.len()
                    );
                    self.shared.gauges.stalled.fetch_add(1, Relaxed);
                    self.close(idx, f.conn);
                }
                Slot::Idle(conn) | Slot::Lingering { conn, .. } => self.close(idx, conn),
                other => self.slots[idx] = other,
            }
        }
        self.shared.gauges.bodies.store(bodies, Relaxed);
        self.shared.gauges.flushing.store(flushing, Relaxed);
        self.reap_queue(now);
        if self.accept_paused_until.is_some_and(|t| now >= t) {
            self.accept_paused_until = None;
            self.arm_listener();
        }
    }

    /// Answers 503 to the requests at the front of the queue that have waited longer than the
    /// queue timeout (the queue is FIFO, so they are the oldest).
    fn reap_queue(&mut self, now: Instant) {
        let timeout = self.shared.limits.queue_timeout;
        loop {
            let taken = self.shared.taken.load(SeqCst);
            while self.queued.front().is_some_and(|(seq, _)| *seq < taken) {
                self.queued.pop_front();
            }
            match self.queued.front() {
                Some((_, at)) if now.duration_since(*at) >= timeout => {}
                _ => return,
            }
            let Ok(job) = self.queue.try_recv() else {
                return;
            };
            self.shared.taken.fetch_add(1, Relaxed);
            let idx = job.conn.key - 1;
            if now.duration_since(job.request.received) >= timeout {
                self.refuse_job(idx, *job, Refused::QueueTimeout, now);
                continue;
            }
            // A worker took the expired one first: this one goes back, at the end.
            let received = job.request.received;
            match &self.jobs {
                Some(jobs) => match jobs.try_send(job) {
                    Ok(()) => {
                        self.queued.push_back((self.sent, received));
                        self.sent += 1;
                    }
                    Err(TrySendError::Full(job)) => {
                        self.refuse_job(idx, *job, Refused::QueueFull, now)
                    }
                    Err(TrySendError::Disconnected(job)) => {
                        self.refuse_job(idx, *job, Refused::ShuttingDown, now)
                    }
                },
                None => self.refuse_job(idx, *job, Refused::ShuttingDown, now),
            }
        }
    }

    fn begin_stop(&mut self) {
        self.stopping = true;
        if let Some(l) = self.listener.take() {
            let _ = self.shared.poller.delete(&l);
        }
        // Without a sender, the workers end once the queue is empty.
        self.jobs = None;
        for idx in 0..self.slots.len() {
            match self.slots[idx] {
                Slot::Idle(_) | Slot::Lingering { .. } | Slot::Body(_) => {}
                _ => continue,
            }
            match self.take_slot(idx) {
                Slot::Idle(conn) | Slot::Lingering { conn, .. } => self.close(idx, conn),
                Slot::Body(up) => self.close(idx, up.conn),
                other => self.slots[idx] = other,
            }
        }
    }
}

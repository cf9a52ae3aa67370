//! Request heads: reading what an idle connection sent, parsing it, asking the handler to admit
//! the request (at once, or later: a parked request, `defer.rs`), and what follows admission:
//! a refusal, reading the body, or queueing the request for a worker.

use super::*;

impl PollerThread {
    /// Reads what arrived on an idle connection and looks for a complete head.
    pub(super) fn read_head(&mut self, idx: usize, mut conn: Box<Conn>, now: Instant) {
        let read = if conn.client_done {
            Ok(0)
        } else {
            conn.read_available(&mut self.scratch)
        };
        match read {
            // The client is done sending: what it pipelined before is still answered.
            Ok(0) if !conn.unread().is_empty() => {
                conn.client_done = true;
                self.process(idx, conn, now)
            }
            Ok(0) => self.close(idx, conn),
            Ok(_) => {
                conn.head_started.get_or_insert(now);
                self.process(idx, conn, now);
            }
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::Interrupted =>
            {
                // Nothing new from the client, but the request it pipelined behind the last one
                // may be waiting in the buffer: the worker armed a writable event to say so.
                if conn.unread().is_empty() {
                    self.idle(idx, conn)
                } else {
                    self.process(idx, conn, now)
                }
            }
            Err(_) => self.close(idx, conn),
        }
    }

    /// Acts on the bytes an idle connection has: waits for more, refuses, or queues the request.
    pub(super) fn process(&mut self, idx: usize, mut conn: Box<Conn>, now: Instant) {
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
                    self.tell(&conn, None, &refusal, RefusalCause::Malformed, since, now);
                    return self.refuse(idx, conn, &refusal, closing(None), now);
                }
                Ok(Parsed::Complete { head, framing, len }) => (head, framing, len),
            };
            conn.consume_unread(len);
            conn.scanned = 0;
            let since = conn.head_started.take();
            if self.stopping {
                return self.refuse_stopping(idx, conn, &head, since, now);
            }
            let request = Request {
                head,
                framing,
                received: now,
            };
            let verdict = match self.admit(idx, &request) {
                Admission::Admit => Ok(()),
                Admission::Refuse(refusal) => Err(refusal),
                Admission::Later { within } => {
                    return self.park(idx, conn, request, since, within);
                }
            };
            match self.admitted(idx, conn, request, since, verdict, now) {
                Some(next) => conn = next,
                None => return,
            }
        }
    }

    /// Asks the handler to admit a request (a panic in it refuses the request with 500).
    pub(super) fn admit(&mut self, idx: usize, request: &Request) -> Admission {
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
            handler.admit(&request.head, request.framing, &defer)
        }))
        .unwrap_or_else(|panic| {
            supervise::survived(Thread::Admission, "in the admission checks", &*panic);
            Admission::Refuse(Refusal::new(500, "internal error").coded("panic"))
        })
    }

    /// Goes on with a request once its admission is decided: refused, its answer is written,
    /// and the connection is given back when it may carry the next request (the caller reads
    /// it); admitted, its body is read or it is queued.
    pub(super) fn admitted(
        &mut self,
        idx: usize,
        mut conn: Box<Conn>,
        request: Request,
        since: Option<Instant>,
        verdict: Result<(), Refusal>,
        now: Instant,
    ) -> Option<Box<Conn>> {
        if let Err(refusal) = verdict {
            let (head, framing) = (&request.head, request.framing);
            let why = RefusalCause::Admission;
            self.tell(&conn, Some(head), &refusal, why, since, now);
            let to = AnswerTo {
                keep_alive: framing == Framing::None && head.wants_keep_alive(),
                ..closing(Some(head))
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
        if request.framing != Framing::None && self.shared.limits.request_buffering {
            self.start_body(idx, conn, request, now);
        } else {
            self.dispatch(idx, conn, request, None, now);
        }
        None
    }

    /// Keeps a request whose admission the handler deferred until its note comes, or `within`
    /// has passed (its slot's timer). The connection is not read meanwhile: what the client
    /// sends next waits in the kernel.
    pub(super) fn park(
        &mut self,
        idx: usize,
        conn: Box<Conn>,
        request: Request,
        since: Option<Instant>,
        within: Duration,
    ) {
        let parked = Parked {
            conn,
            until: request.received + within,
            request,
            since,
            parking: self.parkings,
        };
        self.put(idx, Slot::Parked(Box::new(parked)));
    }

    /// Resumes the parked requests whose notes have come; a note for a request resumed already
    /// (or for an earlier parking of the slot) is dropped.
    pub(super) fn take_settled(&mut self, now: Instant) {
        while let Ok((key, parking, note)) = self.settled.try_recv() {
            let idx = key - 1;
            match self.entries.get(idx).map(|e| &e.slot) {
                Some(Slot::Parked(p)) if p.parking == parking => {}
                _ => continue,
            }
            if let Slot::Parked(parked) = self.take_slot(idx) {
                self.unpark(idx, *parked, note, now);
            }
        }
    }

    /// Asks the handler for the verdict on a parked request (with its note, or `None` when none
    /// came in time or its handle was dropped), and goes on with it.
    pub(super) fn unpark(&mut self, idx: usize, parked: Parked, note: Option<Note>, now: Instant) {
        let Parked {
            conn,
            request,
            since,
            ..
        } = parked;
        let handler = &self.shared.handler;
        let verdict = catch_unwind(AssertUnwindSafe(|| {
            supervise::check_point(Thread::Admission);
            handler.resume(&request.head, request.framing, note)
        }))
        .unwrap_or_else(|panic| {
            supervise::survived(Thread::Admission, "in the admission checks", &*panic);
            Err(Refusal::new(500, "internal error").coded("panic"))
        });
        if let Some(conn) = self.admitted(idx, conn, request, since, verdict, now) {
            self.resume(idx, conn, now);
        }
    }
}

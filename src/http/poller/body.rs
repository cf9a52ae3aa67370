//! Request bodies: an admitted request's body read into a spool as it arrives (`waiting.rs`
//! holds the upload), refused past its limits, queued once whole.

use super::*;

impl PollerThread {
    /// Begins reading an admitted request's body into a spool: says `100 Continue` if the
    /// client waits for it (every refusal the balancer can decide alone has been made by now),
    /// takes what already arrived, and waits for the rest.
    pub(super) fn start_body(
        &mut self,
        idx: usize,
        mut conn: Box<Conn>,
        request: Request,
        now: Instant,
    ) {
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
    pub(super) fn wait_body(&mut self, idx: usize, up: Box<Upload>) {
        if up.conn.rearm().is_err() {
            return self.close(idx, up.conn);
        }
        self.put(idx, Slot::Body(up));
    }

    /// Reads what arrived of a body.
    pub(super) fn read_body(&mut self, idx: usize, up: Box<Upload>, now: Instant) {
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
                        RefusalCause::ClientGone,
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
    pub(super) fn body_bytes(
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
}

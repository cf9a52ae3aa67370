//! Deadlines: when the poller must wake up without an event, and what expires then (the
//! timers of `timers.rs`, the queue's oldest request, an accept pause, a sleeping worker to wake).

use super::*;

impl PollerThread {
    /// When the poller must wake up next without an event: the earliest timer, the queue's
    /// oldest request's timeout, the end of an accept pause.
    pub(super) fn next_deadline(&mut self) -> Option<Instant> {
        self.forget_taken();
        let oldest = self.queued.front().map(|(_, at)| *at);
        let queue = oldest.map(|at| at + self.shared.limits.queue_timeout);
        let wake = oldest.and_then(|at| self.shared.idle.wake_due(at));
        [self.timers.next(), queue, wake, self.accept_paused_until]
            .into_iter()
            .flatten()
            .min()
    }

    /// Acts on what is due by `now`: slots whose check is due, requests that waited too long
    /// for a worker, the end of an accept pause.
    pub(super) fn expire(&mut self, now: Instant) {
        while let Some((idx, generation, due)) = self.timers.pop(now) {
            let Some(entry) = self.entries.get_mut(idx) else {
                continue;
            };
            if !is_current(&mut entry.check, generation, due) {
                continue;
            }
            if matches!(entry.slot, Slot::Busy) {
                if let Some(returned) = entry.mailbox.take() {
                    // Its event is armed and will come; from now on it is timed as what it is.
                    self.install(idx, returned);
                    continue;
                }
            }
            match deadline(&self.entries[idx].slot, &self.shared.limits) {
                Some(at) if at <= now => self.time_out(idx, now),
                Some(at) => self.timers.schedule(idx, &mut self.entries[idx].check, at),
                None if matches!(self.entries[idx].slot, Slot::Busy) => {
                    let at = now + BUSY_CHECK;
                    self.timers.schedule(idx, &mut self.entries[idx].check, at);
                }
                None => {}
            }
        }
        self.reap_queue(now);
        if let Some((_, oldest)) = self.queued.front() {
            self.shared.idle.waited(*oldest, now);
        }
        if self.accept_paused_until.is_some_and(|t| now >= t) {
            self.accept_paused_until = None;
            self.arm_listener();
        }
    }

    /// Ends a connection whose deadline has passed (see the module documentation).
    pub(super) fn time_out(&mut self, idx: usize, now: Instant) {
        let limits = self.shared.limits;
        match self.take_slot(idx) {
            Slot::Idle(conn) if conn.head_started.is_some() => {
                let refusal =
                    Refusal::new(408, "request head not received in time").coded("head_timeout");
                let (why, since) = (RefusalCause::HeadTimeout, conn.head_started);
                self.tell(&conn, None, &refusal, why, since, now);
                self.refuse(idx, conn, &refusal, closing(None), now);
            }
            Slot::Body(up) => {
                let refusal =
                    Refusal::new(408, "request body not received in time").coded("body_timeout");
                let head = Some(&up.request.head);
                let why = RefusalCause::BodyTimeout;
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
            Slot::Tunnel(t) => self.end_tunnel(idx, t, Some(TunnelEnd::Idle)),
            // No note in time: the handler decides without one.
            Slot::Parked(parked) => self.unpark(idx, *parked, None, now),
            other => self.put(idx, other),
        }
    }
}

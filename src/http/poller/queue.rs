//! The queue to the workers: sending a complete request, refusing one that cannot wait (the queue
//! is full, the server is stopping) or waited too long (`timeouts queue=`), and waking a sleeping
//! worker when one is needed (`idle.rs`).

use super::*;

/// The answer to a request the server will not take because it is stopping.
fn shutting_down() -> Refusal {
    Refusal::retry_after(503, "shutting down", 1).coded("shutting_down")
}

impl PollerThread {
    pub(super) fn dispatch(
        &mut self,
        idx: usize,
        conn: Box<Conn>,
        request: Request,
        body: Option<Spool>,
        now: Instant,
    ) {
        let mailbox = Arc::clone(&self.entries[idx].mailbox);
        let job = Box::new(Job {
            conn,
            request,
            body,
            mailbox,
        });
        if self.send_job(idx, job, now, now) {
            self.shared.idle.job_queued();
            self.put(idx, Slot::Busy);
            let entry = &mut self.entries[idx];
            self.timers
                .schedule(idx, &mut entry.check, now + BUSY_CHECK);
        }
    }

    /// Puts `job` in the queue for the workers, noting it as queued at `queued_at` (for the
    /// queue timeout); true when it is there. Else it is answered 503: the queue is full, or
    /// the server is stopping.
    pub(super) fn send_job(
        &mut self,
        idx: usize,
        job: Box<Job>,
        queued_at: Instant,
        now: Instant,
    ) -> bool {
        let (job, why) = match &self.jobs {
            Some(jobs) => match jobs.try_send(job) {
                Ok(()) => {
                    self.queued.push_back((self.sent, queued_at));
                    self.sent += 1;
                    return true;
                }
                Err(TrySendError::Full(job)) => (job, RefusalCause::QueueFull),
                Err(TrySendError::Disconnected(job)) => (job, RefusalCause::ShuttingDown),
            },
            None => (job, RefusalCause::ShuttingDown),
        };
        self.refuse_job(idx, *job, why, now);
        false
    }

    /// Answers 503 to a request that cannot wait for a worker (`why`: the queue is full, or the
    /// server is stopping) or waited too long.
    pub(super) fn refuse_job(&mut self, idx: usize, job: Job, why: RefusalCause, now: Instant) {
        let Job { conn, request, .. } = job;
        let refusal = match why {
            RefusalCause::QueueTimeout => queue_timeout(),
            RefusalCause::QueueFull => {
                Refusal::retry_after(503, "server busy", 1).coded("queue_full")
            }
            _ => shutting_down(),
        };
        let head = Some(&request.head);
        self.tell(&conn, head, &refusal, why, Some(request.received), now);
        self.refuse(idx, conn, &refusal, closing(head), now);
    }

    /// Answers 503 to a request (its head complete, since `since`) that the server will not
    /// take because it is stopping.
    pub(super) fn refuse_stopping(
        &mut self,
        idx: usize,
        conn: Box<Conn>,
        head: &RequestHead,
        since: Option<Instant>,
        now: Instant,
    ) {
        let (refusal, why) = (shutting_down(), RefusalCause::ShuttingDown);
        self.tell(&conn, Some(head), &refusal, why, since, now);
        self.refuse(idx, conn, &refusal, closing(Some(head)), now);
    }

    /// Drops the queue entries of jobs a worker has taken (the queue is FIFO: the oldest).
    pub(super) fn forget_taken(&mut self) {
        let taken = self.shared.taken.load(SeqCst);
        while self.queued.front().is_some_and(|(seq, _)| *seq < taken) {
            self.queued.pop_front();
        }
    }

    /// Answers 503 to the requests at the front of the queue that have waited longer than the
    /// queue timeout (the queue is FIFO, so they are the oldest).
    pub(super) fn reap_queue(&mut self, now: Instant) {
        let timeout = self.shared.limits.queue_timeout;
        loop {
            self.forget_taken();
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
                self.refuse_job(idx, *job, RefusalCause::QueueTimeout, now);
                continue;
            }
            // A worker took the expired one first: this one goes back, at the end.
            let received = job.request.received;
            self.send_job(idx, job, received, now);
        }
    }
}

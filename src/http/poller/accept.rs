//! Accepting connections: at most a batch per listener event, a slot for each, and no more while
//! the connection limit is reached or descriptors run out (the listener is then not re-armed:
//! new connections wait in the kernel's accept queue; see the poller's module documentation).

use super::*;

/// Most connections accepted per listener event, so that a flood of new connections cannot
/// starve the ones already open. 64.
const ACCEPT_BATCH: usize = 64;

/// How often the same accept problem is logged at most. 10 s.
const WARN_EVERY: Duration = Duration::from_secs(10);

fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

impl PollerThread {
    pub(super) fn accept(&mut self, now: Instant) {
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

    pub(super) fn warn_accept(&mut self, now: Instant, message: impl FnOnce() -> String) {
        if self
            .last_accept_warning
            .is_none_or(|t| now.duration_since(t) >= WARN_EVERY)
        {
            self.last_accept_warning = Some(now);
            log::warn!("{}", message());
        }
    }

    pub(super) fn arm_listener(&mut self) {
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

    pub(super) fn add(&mut self, stream: TcpStream, peer: SocketAddr, now: Instant) {
        let idx = self.free.pop().unwrap_or_else(|| {
            self.entries.push(Entry {
                slot: Slot::Free,
                check: Check::default(),
                mailbox: Arc::default(),
            });
            self.entries.len() - 1
        });
        let io_timeout = self.shared.limits.client_timeout;
        match Conn::register(stream, peer, idx + 1, &self.shared.poller, io_timeout, now) {
            Ok(conn) => {
                self.open += 1;
                self.put(idx, Slot::Idle(Box::new(conn)));
            }
            Err(e) => {
                log::debug!("cannot register a connection from {peer}: {e}");
                self.free.push(idx);
            }
        }
    }
}

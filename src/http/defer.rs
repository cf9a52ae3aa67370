//! Deciding admission later: a [`Handler::admit`](super::Handler::admit) that cannot decide at
//! once (it must ask another thread, which may wait on a network store) answers
//! [`Admission::Later`], having taken a [`Deferred`] from the [`Defer`] it was given. The poller
//! parks the request and goes on with every other connection; the other thread settles the
//! [`Deferred`] with a [`Note`], which wakes the poller (`Epoll::notify`), and the poller asks
//! [`Handler::resume`](super::Handler::resume), on its own thread, to turn the note into the
//! verdict. The request then goes on exactly as if `admit` had given that verdict.
//!
//! ```text
//! poller: admit(head, framing, defer) ── Later { within } ──▶ slot Parked (not read, not queued)
//!            │ defer.handle(): a Deferred (slot key + parking number + channel + notify)
//!            ▼
//! other thread: deferred.settle(note) ──▶ channel + epoll.notify()
//!            ▼
//! poller: resume(head, framing, Some(note)) ──▶ Ok: read the body / queue it; Err: answer it
//! ```
//!
//! Nothing waits without a bound: a parked request is resumed with no note (`None`) when
//! `within` has passed (its slot's timer, `timers.rs`, as every other deadline of the poller),
//! and a [`Deferred`] dropped without being settled (its thread panicked, say) settles itself
//! with `None` at once. A request parked when a graceful shutdown begins is answered 503 at
//! once. A note that comes after its request was resumed or answered, or after the connection
//! closed and its slot was reused, is recognised by its parking number and dropped.

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use super::connection::Conn;
use super::epoll::Epoll;
use super::write::Refusal;
use super::Request;
use crossbeam_channel::Sender;

/// What a deferred admission was settled with: whatever the handler's other thread found, for
/// [`Handler::resume`](super::Handler::resume) to read back (it knows the type it sent).
pub type Note = Box<dyn Any + Send>;

/// What [`Handler::admit`](super::Handler::admit) decided about a request.
#[derive(Debug)]
pub enum Admission {
    /// It goes on: its body is read, then it waits for a worker.
    Admit,
    /// It is answered with this refusal.
    Refuse(Refusal),
    /// Not decided yet: the handler took a [`Deferred`] from the [`Defer`] and will settle it.
    /// If nothing has come `within` this long, the poller resumes the request without a note.
    Later {
        /// How long the poller waits for the note at most (a safety net: the handler's own
        /// deadline should be shorter).
        within: std::time::Duration,
    },
}

impl From<Result<(), Refusal>> for Admission {
    fn from(verdict: Result<(), Refusal>) -> Admission {
        match verdict {
            Ok(()) => Admission::Admit,
            Err(refusal) => Admission::Refuse(refusal),
        }
    }
}

/// A settled admission on its way back to the poller: the slot's key, the parking number, the
/// note (`None`: dropped unsettled).
pub(crate) type Settled = (usize, u64, Option<Note>);

/// Given to [`Handler::admit`](super::Handler::admit): the way to a [`Deferred`] for the request
/// being admitted. Making one costs an `Arc` clone, so only a handler that defers pays it.
pub struct Defer<'a> {
    pub(crate) to: &'a Sender<Settled>,
    pub(crate) poller: &'a Arc<Epoll>,
    pub(crate) key: usize,
    pub(crate) parking: u64,
}

impl Defer<'_> {
    /// The handle that settles this request's admission, from any thread. Take it only when
    /// answering [`Admission::Later`]: a handle taken for a request admitted or refused at once
    /// is ignored when it settles.
    pub fn handle(&self) -> Deferred {
        Deferred {
            to: Some(self.to.clone()),
            poller: Arc::clone(self.poller),
            key: self.key,
            parking: self.parking,
        }
    }
}

/// Settles one deferred admission (see the module documentation). Dropped unsettled, it settles
/// with no note.
pub struct Deferred {
    to: Option<Sender<Settled>>,
    poller: Arc<Epoll>,
    key: usize,
    parking: u64,
}

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deferred")
            .field("key", &self.key)
            .field("parking", &self.parking)
            .finish()
    }
}

impl Deferred {
    /// Sends `note` to the poller and wakes it; the poller hands it to
    /// [`Handler::resume`](super::Handler::resume).
    pub fn settle(mut self, note: Note) {
        self.send(Some(note));
    }

    fn send(&mut self, note: Option<Note>) {
        if let Some(to) = self.to.take() {
            // The poller may be gone (the server stopped): then nobody waits for the answer.
            if to.send((self.key, self.parking, note)).is_ok() {
                let _ = self.poller.notify();
            }
        }
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        self.send(None);
    }
}

/// A request whose admission is deferred, as its slot keeps it.
pub(super) struct Parked {
    pub conn: Box<Conn>,
    pub request: Request,
    /// When the head began to arrive (for the waits the handler is told of).
    pub since: Option<Instant>,
    /// When it is resumed without a note if none has come: its head's arrival plus the
    /// `within` of [`Admission::Later`].
    pub until: Instant,
    /// Which parking this is: a note for an earlier one of the same slot is dropped.
    pub parking: u64,
}

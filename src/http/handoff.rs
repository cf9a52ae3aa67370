//! What passes between the poller and the workers: a complete request with its connection
//! (a [`Job`], through the channel), a connection a worker is done with ([`Returned`], back to
//! the poller), and the state both sides read ([`Front`]). Kept apart from both, so that the
//! poller and the workers depend on it and not on each other.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::Arc;

use crossbeam_channel::Sender;
use polling::Poller;

use super::connection::Conn;
use super::exchange::Fate;
use super::gauges::Gauges;
use super::limits::Limits;
use super::spool::{Buffers, Spool};
use super::write::{AnswerTo, Refusal};
use super::{Handler, Notify, Request, RequestHead};

/// A request queued for a worker, with its connection and, when the poller buffered it, its
/// body.
pub(crate) struct Job {
    pub conn: Box<Conn>,
    pub request: Request,
    pub body: Option<Spool>,
}

/// A connection a worker is done with.
pub(crate) enum Returned {
    /// Waiting for the next request.
    Idle(Box<Conn>),
    /// Our side is finished; drop what the client still sends until it closes.
    Linger(Box<Conn>),
    /// The client has not taken all of the answer: the poller writes out `out`, then treats
    /// the connection as `then` says.
    Flush {
        conn: Box<Conn>,
        out: Spool,
        then: Fate,
        notify: Notify,
    },
    /// Closed by the worker; the poller frees its slot (the key).
    Closed(usize),
}

/// What the poller and the workers share.
pub(crate) struct Front {
    pub handler: Arc<dyn Handler>,
    pub limits: Limits,
    pub buffers: Arc<Buffers>,
    pub gauges: Arc<Gauges>,
    pub poller: Arc<Poller>,
    /// Graceful shutdown has begun.
    pub stopping: AtomicBool,
    /// The poller thread runs (false once it has returned).
    pub poller_alive: AtomicBool,
    /// The drain is over: the poller exits.
    pub finished: AtomicBool,
    /// Jobs taken from the channel so far (by workers, or by the poller for a queue timeout).
    pub taken: AtomicU64,
    /// Connections the poller has seen readable while a worker still had them (see
    /// `give_back`).
    pub awaited: AtomicUsize,
    pub returns: Sender<Returned>,
}

/// Answers 503 to a request that waited too long for a worker, and closes its connection.
pub(crate) fn queue_timeout() -> Refusal {
    Refusal::retry_after(503, "no worker free in time (queue timeout)", 1).coded("queue_timeout")
}

/// How a refusal that closes the connection is written for `head` (when it was parsed).
pub(crate) fn closing(head: Option<&RequestHead>) -> AnswerTo {
    AnswerTo {
        head_request: head.is_some_and(|h| h.method == "HEAD"),
        http10: head.is_some_and(|h| h.http10),
        keep_alive: false,
    }
}

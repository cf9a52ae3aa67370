//! What passes between the poller and the workers: a complete request with its connection
//! (a [`Job`], through the channel), a connection a worker is done with ([`Returned`], left in
//! the connection's [`Mailbox`]), and the state both sides read ([`Front`]). Kept apart from both,
//! so that the poller and the workers depend on it and not on each other.
//!
//! **The hand-back.** A worker done with a connection puts it in the connection's mailbox, then
//! re-arms the socket in the poller's `epoll` itself (oneshot: `epoll_ctl` is safe from any
//! thread). No channel message and no wake-up of the poller: the poller hears of the connection
//! when its next event comes, and finds it in the mailbox. The order matters: the connection is in
//! the mailbox before any event can report it. The event the worker arms is one that will come:
//! readable for an idle connection (the next request), writable for an answer the client has not
//! taken yet, and writable too for an idle connection whose next request is already buffered
//! (pipelining): the socket is writable at once, so the poller looks at once, and no request
//! waits for a timer.
//!
//! | worker is done, and | left in the mailbox | armed for |
//! | --- | --- | --- |
//! | the answer is out, keep-alive | `Idle` | readable (writable if a next request is buffered) |
//! | the client has not taken it all | `Flush` | writable |
//! | the answer said `Connection: close` | `Linger` | readable |
//! | the answer switched protocols (101) | `Tunnel`, with the peer socket | both sockets, as the tunnel needs (`tunnel.rs`) |
//! | the answer was cut off | nothing: closed with a reset, the slot freed through `closed` | |

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use crossbeam_channel::Sender;
use parking_lot::Mutex;

use super::connection::Conn;
use super::epoll::Epoll;
use super::exchange::Fate;
use super::gauges::Gauges;
use super::idle::Idle;
use super::limits::Limits;
use super::spool::{Buffers, Spool};
use super::tunnel::Tunnel;
use super::write::{AnswerTo, Refusal};
use super::{Handler, Notify, Request, RequestHead};

/// A request queued for a worker, with its connection, its body when the poller buffered it,
/// and where to leave the connection when the worker is done.
pub(crate) struct Job {
    pub conn: Box<Conn>,
    pub request: Request,
    pub body: Option<Spool>,
    pub mailbox: Arc<Mailbox>,
}

/// A connection a worker is done with.
pub(crate) enum Returned {
    /// Waiting for the next request (which may be buffered already).
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
    /// The answer switched protocols: the poller relays the tunnel to the peer.
    Tunnel(Box<Tunnel>),
}

impl Returned {
    /// Asks the poller to report the connection when it is readable, or `writable`; a tunnel
    /// when either of its sockets can make progress.
    fn arm(&self, writable: bool) -> std::io::Result<()> {
        let conn = match self {
            Returned::Idle(c) | Returned::Linger(c) => c,
            Returned::Flush { conn, .. } => conn,
            Returned::Tunnel(tunnel) => return tunnel.arm(),
        };
        if writable {
            conn.rearm_writable()
        } else {
            conn.rearm()
        }
    }
}

/// Where a worker leaves a connection for the poller (see the module documentation). One per
/// slot, made once and reused by every connection the slot holds.
#[derive(Default)]
pub(crate) struct Mailbox(Mutex<Option<Returned>>);

impl Mailbox {
    /// Leaves `returned` and arms its socket for `writable` (else readable) while holding the
    /// mailbox, so that the poller, which takes the mailbox when the event comes, can neither
    /// miss the connection nor close it under the call. Gives the connection back if the socket
    /// cannot be armed.
    pub fn put(&self, returned: Returned, writable: bool) -> Result<(), Returned> {
        let mut slot = self.0.lock();
        match returned.arm(writable) {
            Ok(()) => {
                *slot = Some(returned);
                Ok(())
            }
            Err(_) => Err(returned),
        }
    }

    /// Takes what a worker left, if anything.
    pub fn take(&self) -> Option<Returned> {
        self.0.lock().take()
    }
}

/// What the poller and the workers share.
pub(crate) struct Front {
    pub handler: Arc<dyn Handler>,
    pub limits: Limits,
    pub buffers: Arc<Buffers>,
    pub gauges: Arc<Gauges>,
    pub poller: Arc<Epoll>,
    /// Graceful shutdown has begun.
    pub stopping: AtomicBool,
    /// The poller thread runs (false once it has returned).
    pub poller_alive: AtomicBool,
    /// The drain is over: the poller exits.
    pub finished: AtomicBool,
    /// Jobs taken from the channel so far (by workers, or by the poller for a queue timeout).
    pub taken: AtomicU64,
    /// The sleeping workers, and when one is woken.
    pub idle: Idle,
    /// Slots whose connection a worker closed (an answer cut off, a panic): the poller frees
    /// them when woken.
    pub closed: Sender<usize>,
}

impl Front {
    /// Tells the poller that a worker closed the connection of slot `key - 1`.
    pub fn closed(&self, key: usize) {
        let _ = self.closed.send(key);
        let _ = self.poller.notify();
    }
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

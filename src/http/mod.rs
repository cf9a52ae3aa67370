//! The HTTP/1.1 front end: a small synchronous server in the Tomcat NIO / Jetty shape. It knows
//! nothing of backends; a [`Handler`] decides what a request gets.
//!
//! ```text
//!  clients ──▶ poller thread (epoll via `polling`): it alone waits on clients
//!               accepts; owns every idle connection; reads request heads without blocking;
//!               enforces the head limits and timeouts (414, 431, 400, 408);
//!               Handler::admit (cheap checks, e.g. filtering) ─ refused? answer at once
//!                  (or "later": the request is parked until another thread settles it, defer.rs)
//!               reads the body into a spool (memory, then a temporary file; 413, 408)
//!                  │ complete request (head + body) + its connection
//!                  ▼
//!               bounded crossbeam channel (one slot per possible connection)
//!                  │ waited longer than `timeouts queue=`? → 503
//!                  ▼
//!               worker threads (fixed pool): Handler::handle forwards the request and writes
//!               the answer without waiting on the client: what it does not take at once goes
//!               to the connection's outgoing spool
//!                  │ the connection, with what is left to write, left in its slot's mailbox;
//!                  │ the worker re-arms the socket, and the event that follows wakes the poller
//!                  │ (after a 101, the connection and the peer socket together: a tunnel)
//!                  ▼
//!               poller: finishes the answer as the client takes it, then reads the next request
//!               (at once when it is already buffered: pipelining); relays tunnels both ways
//! ```
//!
//! Files, in reading order: `server.rs` (start and stop), `poller/` (the poller thread: its slots and events in `mod.rs`, then `accept.rs`, `heads.rs`, `body.rs`, `queue.rs` and `deadlines.rs`),
//! `epoll.rs` (what it waits on), `timers.rs` (each connection's deadline, so that the poller
//! sleeps until the next one), `waiting.rs` (an upload still arriving, an answer still being
//! taken), `defer.rs` (an admission decided later, on another thread), `handoff.rs` (what passes
//! between the poller and the workers, and how a worker hands a connection back), `worker.rs` (a
//! worker thread), `idle.rs` (which workers sleep, and when one is woken), `exchange.rs` (one
//! request and its answer on a worker), `tunnel.rs` (a connection after `101 Switching Protocols`,
//! relayed by the poller), `connection.rs` (one socket and its buffer); [`parse`] (heads and
//! framing), [`fields`] (the `Content-Length` and `Host` grammar, also used for backends' answers),
//! [`chunked`] (request bodies), [`spool`] (the buffers between clients and workers),
//! [`write`](mod@write) (answers), [`limits`], [`gauges`].
//!
//! Every refusal by the front end itself closes the connection after the answer, so bytes that
//! follow a refused request are never read as a request. A closing connection is closed
//! lingeringly: our side stops sending, and what the client still sends is read and dropped
//! until it closes (at most [`LINGER`]), so that the answer is not lost to a reset.

pub mod chunked;
mod connection;
mod defer;
mod epoll;
mod exchange;
pub mod fields;
#[cfg(test)]
mod fuzz;
pub mod gauges;
mod handoff;
mod idle;
pub mod limits;
pub mod parse;
mod poller;
mod server;
pub mod spool;
mod timers;
mod tunnel;
mod waiting;
mod worker;
pub mod write;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use defer::{Admission, Defer, Deferred, Note};
pub use exchange::{Body, Exchange, SendError};
pub use gauges::{FrontStats, Gauges};
pub use limits::Limits;
pub use parse::{Framing, RequestHead};
pub use server::{bind, Server, BACKLOG};
pub use spool::{BufferLimits, BufferStats, Buffers};
pub use tunnel::{OnTunnelEnd, TunnelEnd, TunnelEnded, MAX_TUNNELS, TUNNEL_TIMEOUT};
pub use write::Refusal;

/// How long a closing connection is read and dropped, waiting for the client to close. 5 s
/// (nginx's `lingering_timeout`).
pub const LINGER: Duration = Duration::from_secs(5);

/// A complete request as a worker gets it.
#[derive(Debug)]
pub struct Request {
    /// The head.
    pub head: RequestHead,
    /// How its body is delimited.
    pub framing: Framing,
    /// When its head was complete.
    pub received: Instant,
}

/// How an answer ended, told to the callback given to [`Exchange::when_delivered`]: at once
/// when the worker wrote it all, or when the poller has finished writing what the client was
/// slow to take (or has given up on the client).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// The client took the whole answer.
    pub complete: bool,
    /// Bytes of the answer as written (head and chunk framing included) that the client did not
    /// take.
    pub untaken: u64,
}

/// A callback told how an answer ended (see [`Delivered`]).
pub type OnDelivered = Box<dyn FnOnce(Delivered) + Send>;

/// Calls an [`OnDelivered`] exactly once: with what is left untaken when it is dropped, so that
/// no path that ends an answer can forget to tell.
pub(crate) struct Notify {
    callback: Option<OnDelivered>,
    /// Bytes not taken by the client so far.
    pub untaken: u64,
    /// The connection failed or was given up: the answer is incomplete whatever is left.
    pub failed: bool,
}

impl Notify {
    pub(crate) fn new(callback: Option<OnDelivered>, untaken: u64) -> Notify {
        Notify {
            callback,
            untaken,
            failed: false,
        }
    }
}

impl Drop for Notify {
    fn drop(&mut self) {
        if let Some(callback) = self.callback.take() {
            let delivered = Delivered {
                complete: !self.failed && self.untaken == 0,
                untaken: self.untaken,
            };
            tell_handler("telling how an answer ended", || callback(delivered));
        }
    }
}

/// Runs a callback of the handler's (`doing` what, for the log): it runs on the poller or a
/// worker, and its panic is its own, not theirs. Wherever it ran, the panic is counted as the
/// handler's code outside `handle` ([`Thread::Admission`](crate::supervise::Thread::Admission),
/// label `admission`), not as the poller's or the worker's.
pub(crate) fn tell_handler(doing: &str, callback: impl FnOnce()) {
    let told = std::panic::catch_unwind(std::panic::AssertUnwindSafe(callback));
    if let Err(panic) = told {
        crate::supervise::survived(crate::supervise::Thread::Admission, doing, &*panic);
    }
}

/// Why the front end answered a request itself (with a [`Refusal`]) or dropped it, told to
/// [`Handler::refused`] for its counters and logs. The words for a refusal are in the crate's
/// documentation ("Refusals: the words").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalCause {
    /// The head broke a rule or a limit (400, 414, 431, 505).
    Malformed,
    /// The head did not arrive within `timeouts head=` (408).
    HeadTimeout,
    /// The queue of requests waiting for a worker was full (503).
    QueueFull,
    /// The request waited longer than `timeouts queue=` for a worker (503).
    QueueTimeout,
    /// The body did not arrive within `timeouts body=` (408).
    BodyTimeout,
    /// The body is larger than [`Handler::max_body`] or than the buffers can hold (413).
    BodyTooLarge,
    /// The buffers' disk total is reached, or the disk failed (503).
    NoBufferRoom,
    /// The server is stopping (503).
    ShuttingDown,
    /// [`Handler::admit`] refused it.
    Admission,
    /// The client closed its connection inside the request body: nothing is sent (there is no
    /// one to send it to), but the request is told, so that it is logged.
    ClientGone,
}

/// What a server does with requests.
pub trait Handler: Send + Sync + 'static {
    /// Decides, on the poller thread, whether a complete request may wait for a worker. It
    /// runs for every request, so it must be cheap and must not block. A decision that needs
    /// another thread (a network store) answers [`Admission::Later`] with a handle from `defer`
    /// (see [`Defer`]); the poller then calls [`Handler::resume`]. Default: admit all.
    fn admit(&self, head: &RequestHead, framing: Framing, defer: &Defer<'_>) -> Admission {
        let _ = (head, framing, defer);
        Admission::Admit
    }

    /// Decides, on the poller thread, on a request whose admission [`Handler::admit`] deferred:
    /// with the [`Note`] its [`Deferred`] was settled with, or `None` when none came in time (or
    /// the handle was dropped unsettled). Must be as cheap as `admit`. Default: admit.
    fn resume(
        &self,
        head: &RequestHead,
        framing: Framing,
        note: Option<Note>,
    ) -> Result<(), Refusal> {
        let _ = (head, framing, note);
        Ok(())
    }

    /// The largest request body to accept, checked while the poller buffers it (413 past it).
    /// Default: no limit but the buffers'.
    fn max_body(&self) -> Option<u64> {
        None
    }

    /// Answers one request, on a worker thread: read the body from `exchange` if needed, then
    /// call [`Exchange::respond`] or [`Exchange::refuse`] once. A handler that answers nothing
    /// (or panics) leaves the client a 500.
    fn handle(&self, request: &Request, exchange: &mut Exchange<'_>);

    /// Told of every answer the front end gives by itself, and of every refusal by `admit`, for
    /// counters and logs: the client, the request's head when it was parsed, the answer, why,
    /// and how long the client had waited for it (from the first byte of its request, or from
    /// the end of its head for a queued request). Default: nothing.
    fn refused(
        &self,
        peer: SocketAddr,
        head: Option<&RequestHead>,
        refusal: &Refusal,
        why: RefusalCause,
        waited: Duration,
    ) {
        let _ = (peer, head, refusal, why, waited);
    }
}

//! How forwarding ends: what [`Proxy::forward`](super::Proxy::forward) returns, a backend's
//! answer to relay ([`Forwarded`]) or what to tell the client instead ([`Failed`]), and how one
//! attempt ends, which decides whether another backend may be tried.

use std::io::{self, Read};
use std::sync::Arc;

use super::headers::ResponseHeaders;
use super::upgrade::Upgraded;
use crate::balance::backend::{Backend, InFlight};
use crate::http::fields::BadLength;
use crate::http::Refusal;

/// A backend's answer, ready to be relayed. The body streams from the backend.
pub struct Forwarded {
    /// The backend's status.
    pub status: u16,
    /// The backend's headers; [`ResponseHeaders::end_to_end`] gives the ones to pass on.
    pub headers: ResponseHeaders,
    /// The body's length when the backend declared one.
    pub content_length: Option<u64>,
    /// The body.
    pub body: Box<dyn Read + Send>,
    /// Keeps the backend's in-flight gauge until the body has been relayed.
    pub in_flight: InFlight,
    /// Attempts made (1 when the first backend answered).
    pub attempts: u32,
    /// The backends tried, in order, the one that answered last, when there was more than one
    /// attempt (else empty).
    pub via: Vec<Arc<Backend>>,
    /// The backend switched protocols (101) for an upgrade request: its side of the tunnel.
    /// Boxed: every other answer carries `None`, and stays small to move.
    pub upgraded: Option<Box<Upgraded>>,
}

impl Forwarded {
    /// The backend that answered.
    pub fn backend(&self) -> &Arc<Backend> {
        self.in_flight.backend()
    }
}

/// A failed forward: what to tell the client, and which backend failed last (if any).
#[derive(Debug)]
pub struct Failed {
    /// What the client gets.
    pub refusal: Refusal,
    /// The backend of the last attempt.
    pub backend: Option<Arc<Backend>>,
    /// Attempts made.
    pub attempts: u32,
    /// The backends tried, in order, when there was more than one attempt (else empty).
    pub via: Vec<Arc<Backend>>,
    /// The client's request body could not be read completely (the client is gone or lied).
    pub client_fault: bool,
    /// Request body bytes read from the client.
    pub body_read: u64,
    /// The request body was read to its end (or there was none).
    pub body_done: bool,
}

/// A backend's answer to one attempt.
pub(super) struct Answer {
    pub status: u16,
    pub headers: ResponseHeaders,
    pub content_length: Option<u64>,
    pub body: Box<dyn Read + Send>,
    pub upgraded: Option<Box<Upgraded>>,
}

/// How an attempt failed.
pub(super) enum AttemptError {
    /// The request itself cannot be sent (a target or header the HTTP library refuses): the
    /// client's fault, not the backend's.
    Invalid(Refusal),
    /// The request never reached the backend (resolve or connect failed): safe to retry.
    NotSent(Refusal),
    /// The request may have reached the backend.
    Sent(Refusal),
    /// The request was sent and the backend did not answer in time: retried only when
    /// [`super::ProxySettings::retry_timeouts`] is on, as the time is already spent.
    TimedOut(Refusal),
}

/// Maps a ureq error to what the client sees, and whether the request may have been sent.
pub(super) fn classify(error: ureq::Error) -> AttemptError {
    use io::ErrorKind::*;
    use ureq::Error as E;
    use ureq::Timeout as T;
    match error {
        E::Timeout(T::Connect | T::Resolve) => AttemptError::NotSent(
            Refusal::new(504, "backend connect timed out").coded("connect_timeout"),
        ),
        E::Timeout(T::PerWrite | T::SendRequest | T::SendBody) => AttemptError::TimedOut(
            Refusal::new(504, "backend did not take the request in time").coded("send_timeout"),
        ),
        E::Timeout(_) => {
            AttemptError::TimedOut(Refusal::new(504, "backend timed out").coded("backend_timeout"))
        }
        E::BadUri(_) | E::Http(_) => AttemptError::Invalid(Refusal::new(400, "malformed request")),
        E::HostNotFound => AttemptError::NotSent(
            Refusal::new(502, "backend host name does not resolve").coded("backend_unresolved"),
        ),
        E::ConnectionFailed => AttemptError::NotSent(
            Refusal::new(502, "backend unreachable").coded("backend_unreachable"),
        ),
        E::Io(e)
            if matches!(
                e.kind(),
                ConnectionRefused | AddrNotAvailable | HostUnreachable | NetworkUnreachable
            ) =>
        {
            AttemptError::NotSent(
                Refusal::new(502, "backend unreachable").coded("backend_unreachable"),
            )
        }
        E::Io(_) => AttemptError::Sent(
            Refusal::new(502, "connection to backend failed").coded("backend_failed"),
        ),
        _ => AttemptError::Sent(
            Refusal::new(502, "invalid answer from backend").coded("backend_invalid"),
        ),
    }
}

/// What the client gets for a backend answer whose `Content-Length` is malformed: 502.
pub(super) fn invalid_length(bad: BadLength) -> Refusal {
    let reason = match bad {
        BadLength::Invalid => "invalid Content-Length from backend",
        BadLength::Conflicting => "conflicting Content-Length from backend",
    };
    Refusal::new(502, reason).coded("backend_invalid")
}

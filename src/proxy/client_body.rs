//! The client's request body on its way to a backend. Reading it for the HTTP library, this
//! wrapper notes whether any of it was read (after which a request is no longer safe to send
//! again), whether it was too large, and whether the client broke off, so that a client's fault
//! is never blamed on a backend.

use std::io::{self, Read};
use std::sync::Arc;

use super::outcome::Failed;
use crate::balance::backend::Backend;
use crate::http::{Framing, Refusal};

/// Reads the client's body for ureq while remembering whether anything was read and whether the
/// client failed, so that a client's error is never blamed on a backend.
pub(super) struct ClientBody<'a> {
    inner: &'a mut dyn Read,
    /// Bytes read so far: a request whose body was read is not sent again.
    pub read: u64,
    /// The length the client announced (`Content-Length`), if any.
    expected: Option<u64>,
    /// The most the filter lets through (`max_body`), if any.
    limit: Option<u64>,
    /// The client failed: it closed early or its connection broke.
    pub failed: bool,
    /// The body went past `limit`.
    pub too_large: bool,
    /// The body was read to its end (or there was none).
    done: bool,
}

impl Read for ClientBody<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.limit.is_some_and(|l| self.read > l) {
            self.too_large = true;
            return Err(io::Error::other("request body over the size limit"));
        }
        match self.inner.read(buf) {
            Ok(0) if self.expected.is_some_and(|e| self.read < e) && !buf.is_empty() => {
                self.failed = true;
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "client closed before sending the whole body",
                ))
            }
            Ok(n) => {
                self.read += n as u64;
                self.done |= n == 0 && !buf.is_empty();
                Ok(n)
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }
}

impl<'a> ClientBody<'a> {
    /// Wraps the client's body `inner`, framed as `framing`, cut off past `limit` bytes.
    pub(super) fn new(inner: &'a mut dyn Read, framing: Framing, limit: Option<u64>) -> Self {
        let expected = match framing {
            Framing::Length(n) => Some(n),
            _ => None,
        };
        ClientBody {
            inner,
            read: 0,
            expected,
            limit,
            failed: false,
            too_large: false,
            done: framing == Framing::None,
        }
    }

    /// The [`Failed`] for `refusal` after `attempts` attempts, the last to `backend`, telling what
    /// became of the client's body. `via` (the backends tried, kept only for a retried request)
    /// is taken, with `backend` last.
    pub(super) fn failure(
        &self,
        refusal: Refusal,
        backend: Option<Arc<Backend>>,
        attempts: u32,
        via: &mut Vec<Arc<Backend>>,
    ) -> Failed {
        let mut via = std::mem::take(via);
        if let Some(b) = backend.as_ref().filter(|_| !via.is_empty()) {
            if !via.last().is_some_and(|l| Arc::ptr_eq(l, b)) {
                via.push(Arc::clone(b));
            }
        }
        Failed {
            refusal,
            backend,
            attempts,
            via,
            client_fault: self.failed,
            body_read: self.read,
            body_done: self.done,
        }
    }
}

//! One request and its answer, on a worker: the request body as a reader, and the answer
//! written with the framing [`write`](super::write) chooses.
//!
//! The body reader delimits the body by its framing (a length, or chunks decoded by
//! [`ChunkedDecoder`]), sends `100 Continue` before the first read when the client asked for
//! it, and remembers whether the body was read to its end: only then may the connection carry
//! another request. The answer is streamed from any `Read` in pieces of the worker's buffer;
//! the head goes out in the same system call as the first piece (`writev`).

use std::io::{self, Read};

use super::chunked::ChunkedDecoder;
use super::connection::Conn;
use super::parse::{Framing, RequestHead};
use super::write::{self, AnswerTo, BodyFraming, Refusal};

/// Why an answer could not be sent whole.
#[derive(Debug)]
pub struct SendError {
    /// Body bytes sent before it failed.
    pub bytes: u64,
    /// True when the body's source failed (the client then gets a cut-off answer on a closed
    /// connection, never one passed off as complete); false when the client did.
    pub source_failed: bool,
    /// True when the source failed before anything was written: the caller may still answer
    /// with an error of its own.
    pub nothing_sent: bool,
    /// What went wrong.
    pub error: io::Error,
}

/// What is known of the request body.
#[derive(Debug)]
struct BodyState {
    framing: Framing,
    /// Bytes left (`Framing::Length`).
    left: u64,
    chunked: ChunkedDecoder,
    /// `Expect: 100-continue` not answered yet.
    continue_pending: bool,
    /// Read to its end (or there was none).
    done: bool,
}

/// What happened to the connection once the exchange is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    /// It may carry the next request.
    KeepAlive,
    /// Answered with `Connection: close`: close it lingeringly.
    Close,
    /// The answer was cut off: close it at once.
    Abort,
}

/// One request's answer in the making (see the module documentation).
pub struct Exchange<'a> {
    conn: &'a mut Conn,
    body: BodyState,
    to: AnswerTo,
    buf: &'a mut Vec<u8>,
    fate: Option<Fate>,
}

/// The request body: reads end at its end, `Ok(0)`. An early end from the client, a bad chunk
/// or a client timeout is an error.
pub struct Body<'e, 'a> {
    exchange: &'e mut Exchange<'a>,
}

impl<'a> Exchange<'a> {
    pub(crate) fn new(
        conn: &'a mut Conn,
        head: &RequestHead,
        framing: Framing,
        keep_alive: bool,
        buf: &'a mut Vec<u8>,
    ) -> Exchange<'a> {
        let continue_pending = framing != Framing::None
            && !head.http10
            && head
                .header("expect")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"));
        Exchange {
            conn,
            body: BodyState {
                framing,
                left: match framing {
                    Framing::Length(n) => n,
                    _ => 0,
                },
                chunked: ChunkedDecoder::new(),
                continue_pending,
                done: framing == Framing::None,
            },
            to: AnswerTo {
                head_request: head.method == "HEAD",
                http10: head.http10,
                keep_alive: keep_alive && head.wants_keep_alive(),
            },
            buf,
            fate: None,
        }
    }

    /// The request body.
    pub fn body(&mut self) -> Body<'_, 'a> {
        Body { exchange: self }
    }

    /// True once an answer has been started.
    pub fn answered(&self) -> bool {
        self.fate.is_some()
    }

    /// The answer as the worker should treat the connection afterwards; `None` if there was
    /// none.
    pub(crate) fn fate(&self) -> Option<Fate> {
        self.fate
    }

    /// What the answer is for: the connection may stay open only if the request body has been
    /// read to its end, so that nothing of it can be taken for a request.
    fn answer_to(&self) -> AnswerTo {
        AnswerTo {
            keep_alive: self.to.keep_alive && self.body.done,
            ..self.to
        }
    }

    /// Sends an answer: `status`, end-to-end `headers` (the framing and connection headers are
    /// added here), and the body from `body`, which has `length` bytes when known. Returns the
    /// body bytes sent. Call once.
    pub fn respond<'h>(
        &mut self,
        status: u16,
        headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
        length: Option<u64>,
        body: &mut dyn Read,
    ) -> Result<u64, SendError> {
        let (framing, persistence) = write::plan(status, length, self.answer_to());
        let mut head = Vec::with_capacity(512);
        write::write_head(&mut head, status, headers, framing, length, persistence);
        self.fate = Some(Fate::Abort);
        let result = self.stream(&head, framing, body);
        if result.is_ok() {
            self.fate = Some(if persistence.keeps_open() {
                Fate::KeepAlive
            } else {
                Fate::Close
            });
        }
        result
    }

    /// Sends our own short answer for `refusal`. Errors writing it are the client's and only
    /// end the exchange.
    pub fn refuse(&mut self, refusal: &Refusal) {
        let (bytes, persistence) = write::refusal_bytes(refusal, self.answer_to());
        self.fate = Some(match self.conn.write_all(&bytes) {
            Ok(()) if persistence.keeps_open() => Fate::KeepAlive,
            Ok(()) => Fate::Close,
            Err(_) => Fate::Abort,
        });
    }

    /// Writes `head` and the body; see [`Exchange::respond`].
    fn stream(
        &mut self,
        head: &[u8],
        framing: BodyFraming,
        body: &mut dyn Read,
    ) -> Result<u64, SendError> {
        let failed = |bytes: u64, source_failed: bool, nothing_sent: bool, error| SendError {
            bytes,
            source_failed,
            nothing_sent,
            error,
        };
        if framing == BodyFraming::None {
            // Let the source see its (empty) end, so that a backend connection behind it can go
            // back to its pool.
            let _ = body.read(&mut [0u8; 1]);
            return self
                .conn
                .write_all(head)
                .map(|()| 0)
                .map_err(|e| failed(0, false, false, e));
        }
        if self.buf.len() < BUF_SIZE {
            self.buf.resize(BUF_SIZE, 0);
        }
        let total = match framing {
            BodyFraming::Length(n) => Some(n),
            _ => None,
        };
        let mut head_pending = true;
        let mut sent: u64 = 0;
        loop {
            let want = match total {
                Some(t) => (t - sent).min(BUF_SIZE as u64) as usize,
                None => BUF_SIZE,
            };
            let n = if want == 0 {
                0
            } else {
                loop {
                    match body.read(&mut self.buf[..want]) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(failed(sent, true, head_pending, e)),
                        Ok(n) => break n,
                    }
                }
            };
            if n == 0 {
                if total.is_some_and(|t| sent < t) {
                    let e = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the body ended before its Content-Length",
                    );
                    return Err(failed(sent, true, head_pending, e));
                }
                if total.is_some() {
                    // As above: the source's end lets its connection be reused.
                    let _ = body.read(&mut [0u8; 1]);
                }
                let last: &[u8] = match framing {
                    BodyFraming::Chunked => write::LAST_CHUNK,
                    _ => b"",
                };
                let start: &[u8] = if head_pending { head } else { b"" };
                self.conn
                    .write_all_vectored(&[start, last])
                    .map_err(|e| failed(sent, false, false, e))?;
                return Ok(sent);
            }
            let chunk_line;
            let (prefix, suffix): (&[u8], &[u8]) = if framing == BodyFraming::Chunked {
                chunk_line = write::chunk_header(n);
                (chunk_line.as_bytes(), b"\r\n")
            } else {
                (b"", b"")
            };
            let start: &[u8] = if head_pending { head } else { b"" };
            let data = &self.buf[..n];
            let result = self.conn.write_all_vectored(&[start, prefix, data, suffix]);
            result.map_err(|e| failed(sent, false, false, e))?;
            head_pending = false;
            sent += n as u64;
        }
    }
}

/// Size of the worker's buffer for answer bodies. 64 KiB.
pub(crate) const BUF_SIZE: usize = 64 << 10;

impl Read for Body<'_, '_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let Exchange { conn, body, .. } = &mut *self.exchange;
        if body.done || out.is_empty() {
            return Ok(0);
        }
        if body.continue_pending {
            body.continue_pending = false;
            conn.write_all(write::CONTINUE)?;
        }
        let n = match body.framing {
            Framing::None => 0,
            Framing::Length(_) => {
                let want = out.len().min(body.left.min(usize::MAX as u64) as usize);
                let n = conn.read(&mut out[..want])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "client closed before sending the whole body",
                    ));
                }
                body.left -= n as u64;
                n
            }
            Framing::Chunked => body.chunked.read(&mut **conn, out)?,
        };
        body.done = match body.framing {
            Framing::None => true,
            Framing::Length(_) => body.left == 0,
            Framing::Chunked => body.chunked.is_done(),
        };
        Ok(n)
    }
}

//! One request and its answer, on a worker: the request body as a reader, and the answer
//! written with the framing [`write`](super::write) chooses.
//!
//! The body is usually in a [`Spool`] already: the poller read it before the request was
//! queued. With `request_buffering off` the reader takes it from the client as it arrives,
//! delimited by its framing (a length, or chunks decoded by [`ChunkedDecoder`]), sends
//! `100 Continue` before the first read when the client asked for it, and remembers whether the
//! body was read to its end: only then may the connection carry another request.
//!
//! The answer is streamed from any `Read` in pieces of the worker's buffer; the head goes out
//! in the same system call as the first piece (`writev`). Every write is non-blocking: what the
//! client does not take at once goes to the connection's outgoing spool, which is offered to
//! the client again before each new piece, so a client that keeps up gets the answer piece by
//! piece as the backend sends it, and one that does not costs a buffer, not this worker. The
//! poller finishes the spool after the worker has moved on. Only when the buffers are full
//! does the worker wait for the client ([`Spool::push`] fails): then it writes directly, with
//! the client timeout, as a server without buffers would.
//!
//! An answer may also switch protocols ([`Exchange::switch_protocols`]): the 101 head goes out
//! the same way (what the client does not take waits in the tunnel's buffer instead of a
//! spool), and the connection becomes a tunnel the poller relays (`tunnel.rs`).

use std::io::{self, Read};

use std::net::TcpStream;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::chunked::ChunkedDecoder;
use super::connection::Conn;
use super::gauges::Gauges;
use super::handoff::Front;
use super::parse::{Framing, RequestHead};
use super::spool::{Buffers, Spool};
use super::tunnel::{self, Ender, OnTunnelEnd, TunnelEnd, TunnelStart};
use super::write::{self, AnswerTo, BodyFraming, Persistence, Refusal};
use super::{OnDelivered, Request};

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

/// Where the request body comes from.
#[derive(Debug)]
enum BodySource {
    /// Read by the poller already; `pos` bytes of it have been read here.
    Buffered { spool: Spool, pos: u64 },
    /// Read from the client as the handler asks (`request_buffering off`).
    Streaming(BodyState),
}

/// What is known of a request body read from the client.
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
    body: BodySource,
    to: AnswerTo,
    /// What the poller and the workers share: once it is stopping, answers say
    /// `Connection: close`; its buffers hold what the client does not take at once.
    front: &'a Front,
    buf: &'a mut Vec<u8>,
    /// What the client has not taken yet; made on first need.
    out: Option<Spool>,
    fate: Option<Fate>,
    on_delivered: Option<OnDelivered>,
    /// A tunnel is counted for this exchange ([`Exchange::reserve_tunnel`]).
    tunnel_reserved: bool,
    /// The protocol was switched: the tunnel to hand to the poller.
    tunnel: Option<Box<TunnelStart>>,
}

/// What an exchange leaves for the worker (see [`Exchange::finish`]).
pub(crate) struct Finished {
    /// What to do with the connection; `None` if nothing was answered.
    pub fate: Option<Fate>,
    /// What of the answer the client has not taken yet.
    pub out: Option<Spool>,
    /// Who to tell when it has.
    pub on_delivered: Option<OnDelivered>,
    /// The protocol was switched: the connection is a tunnel now.
    pub tunnel: Option<Box<TunnelStart>>,
}

/// The request body: reads end at its end, `Ok(0)`. An early end from the client, a bad chunk
/// or a client timeout is an error.
pub struct Body<'e, 'a> {
    exchange: &'e mut Exchange<'a>,
}

impl<'a> Exchange<'a> {
    /// An exchange on `conn` for `request`. `body` is the body the poller buffered (`None` when
    /// it is to be read from the client, as the request's framing says); what the client does
    /// not take at once goes to a spool counted in `front`'s buffers. Once `front` is stopping,
    /// the answer closes the connection.
    pub(crate) fn new(
        conn: &'a mut Conn,
        request: &Request,
        body: Option<Spool>,
        buf: &'a mut Vec<u8>,
        front: &'a Front,
    ) -> Exchange<'a> {
        let (head, framing) = (&request.head, request.framing);
        let body = match body {
            Some(spool) => BodySource::Buffered { spool, pos: 0 },
            None => BodySource::Streaming(BodyState {
                framing,
                left: match framing {
                    Framing::Length(n) => n,
                    _ => 0,
                },
                chunked: ChunkedDecoder::new(),
                continue_pending: framing != Framing::None && expects_continue(head),
                done: framing == Framing::None,
            }),
        };
        Exchange {
            conn,
            body,
            to: AnswerTo {
                head_request: head.method == "HEAD",
                http10: head.http10,
                keep_alive: head.wants_keep_alive(),
            },
            front,
            buf,
            out: None,
            fate: None,
            on_delivered: None,
            tunnel_reserved: false,
            tunnel: None,
        }
    }

    /// The request body.
    pub fn body(&mut self) -> Body<'_, 'a> {
        Body { exchange: self }
    }

    /// True once an answer has been started.
    pub fn answered(&self) -> bool {
        self.fate.is_some() || self.tunnel.is_some()
    }

    /// Bytes of the answer the client has not taken yet: the poller will finish them after
    /// the handler returns.
    pub fn untaken(&self) -> u64 {
        self.out.as_ref().map_or(0, Spool::len)
    }

    /// Asks to be told how the answer ended once it has (see [`Delivered`](super::Delivered)): what the client
    /// has not taken yet may still be lost when it leaves.
    pub fn when_delivered(&mut self, callback: OnDelivered) {
        self.on_delivered = Some(callback);
    }

    /// Ends the exchange: what the worker should do with the connection, what of the answer
    /// the client has not taken yet, who to tell when it has, or the tunnel it became. A
    /// tunnel reserved and not opened is given back.
    pub(crate) fn finish(self) -> Finished {
        if self.tunnel_reserved {
            self.front.gauges.tunnels.fetch_sub(1, Relaxed);
        }
        Finished {
            fate: self.fate,
            out: self.out,
            on_delivered: self.on_delivered,
            tunnel: self.tunnel,
        }
    }

    /// What the answer is for: the connection may stay open only if the request body has been
    /// read to its end, so that nothing of it can be taken for a request, and while the server
    /// is not stopping (read as the answer starts, so that one in flight when the drain begins
    /// says `Connection: close` too).
    fn answer_to(&self) -> AnswerTo {
        let body_done = match &self.body {
            BodySource::Buffered { .. } => true,
            BodySource::Streaming(state) => state.done,
        };
        AnswerTo {
            keep_alive: self.to.keep_alive && body_done && !self.front.stopping.load(Relaxed),
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
        let sent = self.send(&[&bytes]);
        self.fate = Some(match sent {
            Ok(()) if persistence.keeps_open() => Fate::KeepAlive,
            Ok(()) => Fate::Close,
            Err(_) => Fate::Abort,
        });
    }

    /// Counts a tunnel this exchange is about to open, under `limits tunnels=`: call it before
    /// asking the peer to switch protocols, so that a request past the limit costs no peer
    /// connection. `Err` is the answer to give instead, 503 with `Retry-After`: the limit is
    /// reached (code `tunnel_limit`), or the server is stopping (`shutting_down`: a graceful
    /// shutdown opens no new tunnel). The count is given back if no tunnel is opened.
    pub fn reserve_tunnel(&mut self) -> Result<(), Refusal> {
        if self.front.stopping.load(Relaxed) {
            return Err(Refusal::retry_after(503, "shutting down", 1).coded("shutting_down"));
        }
        if !self.tunnel_reserved {
            let max = self.front.limits.max_tunnels;
            if !tunnel::reserve(&self.front.gauges, max) {
                let reason = format!("too many tunnels open ({max}, limits tunnels=)");
                return Err(Refusal::retry_after(503, reason, 1).coded("tunnel_limit"));
            }
            self.tunnel_reserved = true;
        }
        Ok(())
    }

    /// Answers `101 Switching Protocols` to `upgrade` (the protocol, e.g. `websocket`) with
    /// end-to-end `headers` (`Upgrade` and `Connection: upgrade` are added here), and makes the
    /// connection a tunnel to `peer`, which the poller relays once the handler returns (see
    /// `tunnel.rs`). `from_peer` are the bytes the peer sent behind its own 101 head: the client
    /// gets them first. The head is written without waiting: what the client does not take at
    /// once waits in the tunnel's buffer. `on_end` is told how the tunnel ended, exactly once;
    /// when the client has left before the head (`Err`), at once, as [`TunnelEnd::Client`]. The
    /// tunnel counts against `limits tunnels=` (reserved by [`Exchange::reserve_tunnel`], or
    /// counted now). Call once, instead of [`Exchange::respond`].
    pub fn switch_protocols<'h>(
        &mut self,
        upgrade: &'h [u8],
        headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
        peer: TcpStream,
        from_peer: &[u8],
        on_end: OnTunnelEnd,
    ) -> Result<(), SendError> {
        if !std::mem::take(&mut self.tunnel_reserved) {
            self.front.gauges.tunnels.fetch_add(1, Relaxed);
        }
        let mut ender = Ender::new(on_end, Arc::clone(&self.front.gauges));
        ender.read(false, from_peer.len());
        let mut out = Vec::with_capacity(256 + from_peer.len());
        let switching: [(&str, &[u8]); 2] = [("Upgrade", upgrade), ("Connection", b"upgrade")];
        let headers = headers.into_iter().chain(switching);
        write::write_head(
            &mut out,
            101,
            headers,
            BodyFraming::None,
            None,
            Persistence::KeepAlive,
        );
        out.extend_from_slice(from_peer);
        match self.conn.try_write_vectored(&[&out]) {
            Ok(n) => {
                out.drain(..n);
                let to_client = out;
                self.tunnel = Some(Box::new(TunnelStart {
                    peer,
                    to_client,
                    ender,
                }));
                Ok(())
            }
            Err(error) => {
                ender.how = TunnelEnd::Client;
                self.fate = Some(Fate::Abort);
                Err(SendError {
                    bytes: 0,
                    source_failed: false,
                    nothing_sent: false,
                    error,
                })
            }
        }
    }

    /// [`send`] on this exchange's connection.
    fn send(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        let (buffers, gauges) = (&self.front.buffers, &self.front.gauges);
        send(self.conn, &mut self.out, buffers, gauges, parts)
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
                .send(&[head])
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
            if let Some(out) = self.out.as_mut().filter(|o| !o.is_empty()) {
                // Offer the client what it has not taken yet, before more is added behind it.
                let mut socket = self.conn.socket();
                out.drain_into(&mut socket, self.buf)
                    .map_err(|e| failed(sent, false, false, e))?;
            }
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
                self.send(&[start, last])
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
            let parts = [start, prefix, data, suffix];
            let (buffers, gauges) = (&self.front.buffers, &self.front.gauges);
            let result = send(self.conn, &mut self.out, buffers, gauges, &parts);
            result.map_err(|e| failed(sent, false, false, e))?;
            head_pending = false;
            sent += n as u64;
        }
    }
}

/// Size of the worker's buffer for answer bodies. 64 KiB.
pub(crate) const BUF_SIZE: usize = 64 << 10;

/// True when the client asked for `100 Continue` before it sends its body.
pub(crate) fn expects_continue(head: &RequestHead) -> bool {
    !head.http10
        && head
            .header("expect")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
}

/// Writes `parts` to the client without waiting: what the socket takes now goes at once (only
/// when nothing older waits in `out`, to keep the order), the rest into `out`, a spool made on
/// first need (most answers never need one). When `out` is full, the worker waits for the
/// client after all: it writes out what `out` holds, then the rest, each write waiting up to
/// the client timeout.
fn send(
    conn: &Conn,
    out: &mut Option<Spool>,
    buffers: &Arc<Buffers>,
    gauges: &Gauges,
    parts: &[&[u8]],
) -> io::Result<()> {
    let mut skip = if out.as_ref().is_none_or(Spool::is_empty) {
        conn.try_write_vectored(parts)?
    } else {
        0
    };
    for part in parts {
        if skip >= part.len() {
            skip -= part.len();
            continue;
        }
        let rest = &part[skip..];
        skip = 0;
        let out = out.get_or_insert_with(|| Spool::new(buffers));
        if out.push(rest).is_err() {
            gauges.backpressure.fetch_add(1, Relaxed);
            let mut scratch = [0u8; 16 << 10];
            while !out.is_empty() {
                conn.wait_writable()?;
                out.drain_into(&mut conn.socket(), &mut scratch)?;
            }
            conn.write_all(rest)?;
        }
    }
    Ok(())
}

impl Read for Body<'_, '_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let Exchange { conn, body, .. } = &mut *self.exchange;
        let body = match body {
            BodySource::Buffered { spool, pos } => {
                let n = spool.read_at(*pos, out)?;
                *pos += n as u64;
                return Ok(n);
            }
            BodySource::Streaming(state) => state,
        };
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

//! An upgrade request's one exchange with a backend (a WebSocket handshake, say), on a
//! connection of its own rather than through ureq.
//!
//! **Why not ureq.** After a `101 Switching Protocols` the connection carries the new protocol,
//! so the balancer needs the socket itself. ureq 3.5 cannot give it: its protocol layer
//! (ureq-proto, `client/recvresp.rs`) marks a connection that answered 101 as not to be reused
//! (`CloseReason::ProtocolSwitch`) and returns the head, but a `Response`'s body has no way
//! back to the transport, which is closed when the body is dropped. So this file owns the
//! exchange: a fresh TCP connection (never pooled: it becomes the tunnel, or is closed after
//! the answer), the request head written with the send timeout, the answer's head read within
//! the response timeout and parsed by httparse. Requests that are not upgrades stay on ureq.
//!
//! **The answer.** A 101 must name in `Upgrade` a protocol the client asked for (anything else
//! is a 502); the socket and the bytes the backend sent behind the head become the tunnel
//! ([`Upgraded`]). Any other answer is relayed as a normal one: its body is read by its framing
//! (a length, chunks decoded by the front end's [`ChunkedDecoder`], or up to the close), and the
//! connection is closed after it. Interim answers (100, 103) before it are skipped.

use std::io::{self, BufReader, Cursor, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::headers::{protocol_name, tokens, HeaderPair, ResponseHeaders};
use super::outcome::{classify, invalid_length, Answer, AttemptError};
use super::transport::connect_within;
use crate::balance::backend::Backend;
use crate::http::chunked::ChunkedDecoder;
use crate::http::fields::content_length;
use crate::http::{Refusal, RequestHead};

/// The largest answer head read from a backend. 64 KiB, as for ureq's answers.
const MAX_ANSWER_HEAD: usize = 64 << 10;

/// Most header fields in an answer head. 128.
const MAX_ANSWER_FIELDS: usize = 128;

/// A backend connection that switched protocols (answered 101): the tunnel's backend side.
#[derive(Debug)]
pub struct Upgraded {
    /// The connection to the backend.
    pub stream: TcpStream,
    /// What the backend sent behind its 101 head (the first bytes of the new protocol).
    pub leftover: Vec<u8>,
    /// The backend's `Upgrade` value: the protocol switched to.
    pub protocol: Vec<u8>,
}

/// The timeouts of the exchange, from the proxy's settings.
#[derive(Clone, Copy, Debug)]
pub(super) struct Timeouts {
    pub connect: Duration,
    pub send: Duration,
    pub response: Duration,
}

/// Sends an upgrade request (`head`, with the forwarding `headers`, which carry `Upgrade:
/// protocols`) to `backend` on a new connection and reads its answer's head (see the module
/// documentation).
pub(super) fn attempt(
    backend: &Backend,
    head: &RequestHead,
    headers: &[HeaderPair<'_>],
    protocols: &[u8],
    timeouts: Timeouts,
) -> Result<Answer, AttemptError> {
    let addrs = backend.name.to_socket_addrs().map_err(|_| {
        let refusal = Refusal::new(502, "backend host name does not resolve");
        AttemptError::NotSent(refusal.coded("backend_unresolved"))
    })?;
    let stream = connect_within(addrs, timeouts.connect).map_err(|e| match e {
        // Each tunnel holds two descriptors: running out is ours to answer, not the backend's
        // failure (its breaker hears nothing of it).
        ureq::Error::Io(io) if matches!(io.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
            log::warn!("cannot open a connection for an upgrade: {io}");
            let refusal = Refusal::retry_after(503, "out of file descriptors", 1);
            AttemptError::Invalid(refusal.coded("no_descriptors"))
        }
        e => classify(e),
    })?;
    let _ = stream.set_nodelay(true);
    send_head(&stream, head, headers, timeouts.send)?;
    let (status, fields, mut buf) = read_answer_head(&stream, timeouts.response)?;
    let headers = ResponseHeaders::new(fields);
    if status == 101 {
        let protocol = headers.values("upgrade").next().unwrap_or_default();
        let asked =
            |name: &[u8]| tokens(protocols).any(|t| protocol_name(t).eq_ignore_ascii_case(name));
        if tokens(protocol).next().is_none() || !tokens(protocol).all(|t| asked(protocol_name(t))) {
            return Err(invalid("backend switched to a protocol not asked for"));
        }
        let protocol = protocol.to_vec();
        return Ok(Answer {
            status,
            headers,
            content_length: None,
            body: Box::new(io::empty()),
            upgraded: Some(Box::new(Upgraded {
                stream,
                leftover: buf,
                protocol,
            })),
        });
    }
    let chunked = headers
        .values("transfer-encoding")
        .last()
        .is_some_and(|te| {
            tokens(te)
                .last()
                .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
        });
    let length = content_length(headers.values("content-length"))
        .map_err(|bad| AttemptError::Sent(invalid_length(bad)))?
        .filter(|_| !chunked);
    let framing = if head.method == "HEAD" || status == 204 || status == 304 {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked(ChunkedDecoder::new())
    } else {
        length.map_or(Framing::UntilClose, Framing::Length)
    };
    let _ = stream.set_read_timeout(Some(timeouts.response));
    let body = AnswerBody {
        from: BufReader::new(Cursor::new(std::mem::take(&mut buf)).chain(stream)),
        framing,
    };
    Ok(Answer {
        status,
        headers,
        content_length: length,
        body: Box::new(body),
        upgraded: None,
    })
}

/// Writes the request head within the send timeout.
fn send_head(
    mut stream: &TcpStream,
    head: &RequestHead,
    headers: &[HeaderPair<'_>],
    timeout: Duration,
) -> Result<(), AttemptError> {
    let mut out = Vec::with_capacity(1024);
    for part in [head.method.as_bytes(), b" ", head.target.as_bytes()] {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        for part in [name.as_bytes(), b": ", value, b"\r\n"] {
            out.extend_from_slice(part);
        }
    }
    out.extend_from_slice(b"\r\n");
    let _ = stream.set_write_timeout(Some(timeout));
    stream.write_all(&out).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            classify(ureq::Error::Timeout(ureq::Timeout::SendRequest))
        }
        _ => classify(ureq::Error::Io(e)),
    })
}

/// Reads the answer's head within `timeout`, skipping interim answers other than 101: the
/// status, the fields, and the bytes that came behind the head.
fn read_answer_head(
    mut stream: &TcpStream,
    timeout: Duration,
) -> Result<(u16, ureq::http::HeaderMap, Vec<u8>), AttemptError> {
    let deadline = Instant::now() + timeout;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((status, fields, len)) = parse_answer_head(&buf)? {
            if status == 101 || !(100..200).contains(&status) {
                buf.drain(..len);
                return Ok((status, fields, buf));
            }
            buf.drain(..len);
            continue;
        }
        if buf.len() > MAX_ANSWER_HEAD {
            return Err(invalid("answer head too large"));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let timed_out = || classify(ureq::Error::Timeout(ureq::Timeout::RecvResponse));
        if left.is_zero() {
            return Err(timed_out());
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut chunk) {
            Ok(0) => {
                let refusal = Refusal::new(502, "backend closed the connection before answering");
                return Err(AttemptError::Sent(refusal.coded("backend_failed")));
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(timed_out())
            }
            Err(e) => return Err(classify(ureq::Error::Io(e))),
        }
    }
}

/// A complete answer head at the start of `buf`: status, fields and length; `None` while
/// partial.
fn parse_answer_head(
    buf: &[u8],
) -> Result<Option<(u16, ureq::http::HeaderMap, usize)>, AttemptError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_ANSWER_FIELDS];
    let mut response = httparse::Response::new(&mut fields);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(invalid(&format!("malformed answer head: {e}"))),
    };
    let mut map = ureq::http::HeaderMap::with_capacity(response.headers.len());
    for field in response.headers.iter() {
        let name = ureq::http::HeaderName::from_bytes(field.name.as_bytes());
        let value = ureq::http::HeaderValue::from_bytes(field.value);
        match (name, value) {
            (Ok(name), Ok(value)) => {
                map.append(name, value);
            }
            _ => return Err(invalid("malformed header in the answer")),
        }
    }
    Ok(Some((response.code.unwrap_or_default(), map, len)))
}

/// A 502 for an answer the balancer cannot relay: the backend got the request.
fn invalid(reason: &str) -> AttemptError {
    log::debug!("upgrade: invalid answer from backend: {reason}");
    AttemptError::Sent(Refusal::new(502, "invalid answer from backend").coded("backend_invalid"))
}

/// How the body of an answer that did not switch protocols ends.
enum Framing {
    /// This many bytes are left.
    Length(u64),
    /// Chunked: decoded as it is read.
    Chunked(ChunkedDecoder),
    /// Up to the backend's FIN (a reset is an error, never the end).
    UntilClose,
}

/// The body of an answer that did not switch protocols, read from what came behind the head
/// and then from the connection, which closes when the body is dropped.
struct AnswerBody {
    from: BufReader<io::Chain<Cursor<Vec<u8>>, TcpStream>>,
    framing: Framing,
}

impl Read for AnswerBody {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match &mut self.framing {
            Framing::Length(0) => Ok(0),
            Framing::Length(left) => {
                let want = out.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                let n = self.from.read(&mut out[..want])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the backend closed before the end of its body",
                    ));
                }
                *left -= n as u64;
                Ok(n)
            }
            Framing::Chunked(decoder) => decoder.read(&mut self.from, out),
            Framing::UntilClose => self.from.read(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A connection whose far side writes `answer` at once and then keeps the socket open.
    fn answered_with(answer: &'static [u8]) -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut theirs, _) = listener.accept().unwrap();
        theirs.write_all(answer).unwrap();
        (ours, theirs)
    }

    fn code(e: AttemptError) -> &'static str {
        match e {
            AttemptError::Invalid(r)
            | AttemptError::NotSent(r)
            | AttemptError::Sent(r)
            | AttemptError::TimedOut(r) => r.code,
        }
    }

    #[test]
    fn interim_answers_are_skipped_and_the_bytes_behind_a_101_kept() {
        let (ours, _theirs) = answered_with(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\n\
              Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x02hi",
        );
        let (status, fields, rest) = read_answer_head(&ours, Duration::from_secs(5))
            .ok()
            .unwrap();
        assert_eq!(status, 101);
        assert_eq!(fields.get("upgrade").unwrap(), "websocket");
        assert_eq!(rest, b"\x81\x02hi");
    }

    #[test]
    fn a_silent_closed_or_malformed_backend_is_an_error_of_its_kind() {
        let (ours, _theirs) = answered_with(b"HTTP/1.1 101 Switch");
        let e = read_answer_head(&ours, Duration::from_millis(50))
            .err()
            .unwrap();
        assert_eq!(code(e), "backend_timeout");
        let (ours, theirs) = answered_with(b"HTTP/1.1 101 Switch");
        drop(theirs);
        let e = read_answer_head(&ours, Duration::from_secs(5))
            .err()
            .unwrap();
        assert_eq!(code(e), "backend_failed");
        let (ours, _theirs) = answered_with(b"HTTP/1.1 abc\r\n\r\n");
        let e = read_answer_head(&ours, Duration::from_secs(5))
            .err()
            .unwrap();
        assert_eq!(code(e), "backend_invalid");
    }
}

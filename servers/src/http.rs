//! The HTTP/1.1 a demo server speaks: read a request head, skip its body, write an answer. (Why
//! the demo servers speak it themselves rather than through an HTTP server library: the crate's
//! documentation, in lib.rs.)
//!
//! Parsing is httparse's, as in the balancer: this file only frames. What it does is the least
//! a well-behaved HTTP/1.1 server does, nothing more:
//!
//! - keep-alive: an HTTP/1.1 connection stays open unless the client sends `Connection: close`;
//!   an HTTP/1.0 one only when it asks with `Connection: keep-alive`;
//! - request bodies, with a `Content-Length` or chunked, are read and dropped (no demo endpoint
//!   reads one), after `100 Continue` when the client waits for it;
//! - `HEAD` gets the head of the answer `GET` would get;
//! - a head that cannot be read is answered 400 (431 when too large, 505 for another HTTP
//!   version), and the connection is closed: where the next request would start is unknown.

use std::io::{self, BufRead, Read, Write};

/// The largest request head read: request line and header lines together. 16 KiB.
pub const MAX_HEAD: usize = 16 << 10;

/// The most header fields a request head may have. 100, as the balancer's default.
const MAX_HEADERS: usize = 100;

/// The longest line of a chunked body's framing (a chunk size or a trailer). 4 KiB.
const MAX_CHUNK_LINE: usize = 4 << 10;

/// A request head, as far as a demo server cares.
#[derive(Debug, PartialEq)]
pub struct Head {
    /// `GET`, `HEAD`, `POST`...
    pub method: String,
    /// The request target, e.g. `/control?delay=50ms`.
    pub target: String,
    /// The body that follows the head.
    pub body: Body,
    /// The client sent HTTP/1.0: keep-alive must be announced to it.
    pub http10: bool,
    /// The connection may carry another request after this one's answer.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before it sends its body.
    pub expects_continue: bool,
    /// The client asks to switch to WebSocket (RFC 6455 §4.1: `Connection: upgrade`, `Upgrade:
    /// websocket`, `Sec-WebSocket-Version: 13`, a GET without a body): its
    /// `Sec-WebSocket-Key`.
    pub websocket_key: Option<String>,
}

/// How the body after a head is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Why no request could be read.
#[derive(Debug)]
pub enum HeadError {
    /// The connection failed or ended inside a head: nobody to answer.
    Io(io::Error),
    /// Not a request this server reads: answer this status and reason, then close.
    Bad(u16, &'static str),
}

impl From<io::Error> for HeadError {
    fn from(e: io::Error) -> Self {
        HeadError::Io(e)
    }
}

/// What [`read_line`] found.
enum Line {
    /// A line, appended to the buffer with its line end.
    Read,
    /// The connection ended before the line's first byte.
    Ended,
    /// More bytes than the budget left without a line end.
    TooLong,
}

/// Reads one line ending in LF into `line`, counting its bytes against `budget`. A connection
/// that ends inside a line is an error.
fn read_line<R: BufRead + ?Sized>(
    r: &mut R,
    budget: &mut usize,
    line: &mut Vec<u8>,
) -> io::Result<Line> {
    let start = line.len();
    // One byte more than the budget tells a line that is too long from one that just fits.
    r.take(*budget as u64 + 1).read_until(b'\n', line)?;
    let read = line.len() - start;
    if read == 0 {
        Ok(Line::Ended)
    } else if line.ends_with(b"\n") {
        *budget -= read;
        Ok(Line::Read)
    } else if read > *budget {
        Ok(Line::TooLong)
    } else {
        Err(io::ErrorKind::UnexpectedEof.into())
    }
}

/// True for a line that is only its line end.
fn is_empty_line(line: &[u8]) -> bool {
    line == b"\n" || line == b"\r\n"
}

/// Reads the bytes of the next request head, up to and with the empty line that ends it, and
/// leaves what follows in `r`. Empty lines before the request line are skipped (RFC 9112 §2.2).
fn read_head_bytes(r: &mut impl BufRead) -> Result<Option<Vec<u8>>, HeadError> {
    let mut budget = MAX_HEAD;
    let mut raw = Vec::new();
    loop {
        let start = raw.len();
        match read_line(r, &mut budget, &mut raw)? {
            Line::Ended if raw.is_empty() => return Ok(None),
            Line::Ended => return Err(HeadError::Io(io::ErrorKind::UnexpectedEof.into())),
            Line::TooLong => return Err(HeadError::Bad(431, "request head too large")),
            Line::Read if !is_empty_line(&raw[start..]) => {}
            Line::Read if start > 0 => return Ok(Some(raw)),
            Line::Read => raw.clear(),
        }
    }
}

/// What httparse's refusal of a head is answered with.
fn refusal(e: httparse::Error) -> HeadError {
    use httparse::Error as E;
    HeadError::Bad(
        match e {
            E::Version => 505,
            E::TooManyHeaders => 431,
            _ => 400,
        },
        match e {
            E::Version => "only HTTP/1.0 and 1.1",
            E::TooManyHeaders => "too many header fields",
            E::HeaderName => "malformed header name",
            E::HeaderValue => "malformed header value",
            _ => "malformed request line",
        },
    )
}

/// Reads the next request head. `Ok(None)`: the client closed the connection between requests,
/// the normal end of a keep-alive connection.
pub fn read_head(r: &mut impl BufRead) -> Result<Option<Head>, HeadError> {
    let Some(raw) = read_head_bytes(r)? else {
        return Ok(None);
    };
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    match request.parse(&raw) {
        Ok(httparse::Status::Complete(_)) => {}
        // The empty line that ends a head was read: httparse has all of it.
        Ok(httparse::Status::Partial) => return Err(HeadError::Bad(400, "malformed head")),
        Err(e) => return Err(refusal(e)),
    }
    let fields = Fields::read(request.headers)?;
    // Both framings at once is how requests are smuggled (RFC 9112 §6.1): refuse it.
    let body = match (fields.length, fields.chunked) {
        (Some(_), true) => {
            return Err(HeadError::Bad(
                400,
                "both Content-Length and Transfer-Encoding",
            ))
        }
        (Some(n), false) if n > 0 => Body::Length(n),
        (_, true) => Body::Chunked,
        _ => Body::None,
    };
    let http10 = request.version == Some(0);
    let method = request.method.unwrap_or_default();
    let websocket = fields.connection_upgrade
        && fields.upgrade_websocket
        && fields.websocket_version.as_deref() == Some("13")
        && method == "GET"
        && body == Body::None
        && !http10;
    let keep_alive = if http10 {
        fields.keep_alive && !fields.close
    } else {
        !fields.close
    };
    Ok(Some(Head {
        method: method.to_string(),
        target: request.path.unwrap_or_default().to_string(),
        body,
        http10,
        keep_alive,
        expects_continue: fields.expects_continue && body != Body::None,
        websocket_key: fields.websocket_key.filter(|_| websocket),
    }))
}

/// What the header fields of a head say about its body and its connection.
#[derive(Debug, Default)]
struct Fields {
    /// `Content-Length`.
    length: Option<u64>,
    /// `Transfer-Encoding: chunked`.
    chunked: bool,
    /// `Connection: close`.
    close: bool,
    /// `Connection: keep-alive`.
    keep_alive: bool,
    /// `Expect: 100-continue`.
    expects_continue: bool,
    /// `Connection: upgrade`.
    connection_upgrade: bool,
    /// `Upgrade: websocket`.
    upgrade_websocket: bool,
    /// `Sec-WebSocket-Key`.
    websocket_key: Option<String>,
    /// `Sec-WebSocket-Version`.
    websocket_version: Option<String>,
}

impl Fields {
    fn read(fields: &[httparse::Header<'_>]) -> Result<Fields, HeadError> {
        let bad = |why| HeadError::Bad(400, why);
        let mut seen = Fields::default();
        for field in fields {
            let value = String::from_utf8_lossy(field.value);
            let value = value.trim_matches([' ', '\t']);
            match field.name.to_ascii_lowercase().as_str() {
                "content-length" => {
                    let n = value
                        .parse::<u64>()
                        .ok()
                        .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
                        .ok_or(bad("bad Content-Length"))?;
                    if seen.length.is_some_and(|l| l != n) {
                        return Err(bad("conflicting Content-Length"));
                    }
                    seen.length = Some(n);
                }
                "transfer-encoding" => {
                    let last = value.rsplit(',').next().unwrap_or("").trim();
                    if !last.eq_ignore_ascii_case("chunked") {
                        return Err(bad("unsupported Transfer-Encoding"));
                    }
                    seen.chunked = true;
                }
                "connection" => {
                    for token in value.split(',').map(str::trim) {
                        seen.close |= token.eq_ignore_ascii_case("close");
                        seen.keep_alive |= token.eq_ignore_ascii_case("keep-alive");
                        seen.connection_upgrade |= token.eq_ignore_ascii_case("upgrade");
                    }
                }
                "upgrade" => {
                    seen.upgrade_websocket |= value
                        .split(',')
                        .any(|p| p.trim().eq_ignore_ascii_case("websocket"));
                }
                "sec-websocket-key" => seen.websocket_key = Some(value.to_string()),
                "sec-websocket-version" => seen.websocket_version = Some(value.to_string()),
                "expect" => seen.expects_continue = value.eq_ignore_ascii_case("100-continue"),
                _ => {}
            }
        }
        Ok(seen)
    }
}

/// Reads and drops a request body framed as `body`. An error means the connection cannot be
/// used any more (the body broke off, or its chunked framing is wrong).
pub fn skip_body(r: &mut impl BufRead, body: Body) -> io::Result<()> {
    match body {
        Body::None => Ok(()),
        Body::Length(n) => skip(r, n),
        Body::Chunked => loop {
            let size = match httparse::parse_chunk_size(&chunk_line(r)?) {
                Ok(httparse::Status::Complete((_, size))) => size,
                _ => return Err(invalid("bad chunk size")),
            };
            if size == 0 {
                // Trailer lines, up to the empty line that ends the body.
                while !is_empty_line(&chunk_line(r)?) {}
                return Ok(());
            }
            skip(r, size)?;
            if !is_empty_line(&chunk_line(r)?) {
                return Err(invalid("chunk not followed by CRLF"));
            }
        },
    }
}

/// Reads and drops `n` bytes.
fn skip(r: &mut impl Read, n: u64) -> io::Result<()> {
    if io::copy(&mut r.take(n), &mut io::sink())? < n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

/// One line of a chunked body's framing, with its line end.
fn chunk_line(r: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let (mut line, mut budget) = (Vec::new(), MAX_CHUNK_LINE);
    match read_line(r, &mut budget, &mut line)? {
        Line::Read => Ok(line),
        Line::Ended => Err(io::ErrorKind::UnexpectedEof.into()),
        Line::TooLong => Err(invalid("chunk line too long")),
    }
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

/// The reason phrase of the statuses a demo server sends.
fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Tells a client waiting with `Expect: 100-continue` to send its body.
pub fn write_continue(w: &mut impl Write) -> io::Result<()> {
    w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    w.flush()
}

/// One answer to write.
#[derive(Debug)]
pub struct Answer<'a> {
    /// The status.
    pub status: u16,
    /// The `Content-Type`.
    pub content_type: &'a str,
    /// The whole body; its length is announced as `Content-Length`.
    pub body: &'a [u8],
    /// The head only (an answer to `HEAD`).
    pub head_only: bool,
    /// `Connection: keep-alive` (for an HTTP/1.0 client), `Connection: close`, or nothing (the
    /// HTTP/1.1 default, keep-alive).
    pub connection: Option<&'static str>,
    /// Send only the first half of the body, although the head announces all of it: the
    /// caller then closes the connection.
    pub cut: bool,
}

/// Writes `answer` and flushes it.
pub fn write_answer(w: &mut impl Write, answer: &Answer<'_>) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
        answer.status,
        reason(answer.status),
        answer.content_type,
        answer.body.len()
    );
    if let Some(connection) = answer.connection {
        out.push_str("Connection: ");
        out.push_str(connection);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    if !answer.head_only {
        let sent = if answer.cut {
            answer.body.len() / 2
        } else {
            answer.body.len()
        };
        out.extend_from_slice(&answer.body[..sent]);
    }
    // One write for head and body: a small answer leaves in one packet.
    w.write_all(&out)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Option<Head>, HeadError> {
        read_head(&mut raw.as_bytes())
    }

    #[test]
    fn reads_heads_and_their_framing() {
        let h = head("GET /a?b HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.method.as_str(), h.target.as_str()), ("GET", "/a?b"));
        assert_eq!((h.body, h.keep_alive, h.http10), (Body::None, true, false));

        let h = head("\r\nPOST / HTTP/1.1\nContent-Length: 5\nConnection: close\n\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.body, h.keep_alive), (Body::Length(5), false));

        let h =
            head("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!((h.body, h.expects_continue), (Body::Chunked, true));

        let h = head("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(h.http10 && !h.keep_alive);
        let h = head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.http10 && h.keep_alive);

        assert!(head("").unwrap().is_none(), "closed between requests");
        assert!(matches!(
            head("GET / HTTP/1.1\r\nHost"),
            Err(HeadError::Io(_))
        ));
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        let many = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "X: y\r\n".repeat(MAX_HEADERS + 1)
        );
        let cases = [
            ("GET /\r\n\r\n", 400),
            ("GET / HTTP/1.1 x\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\n\r\n", 505),
            ("GET / HTTP/1.1\r\nno colon\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            (
                "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", 400),
            (huge.as_str(), 431),
            (many.as_str(), 431),
        ];
        for (raw, status) in cases {
            match head(raw) {
                Err(HeadError::Bad(s, _)) => assert_eq!(s, status, "{raw:?}"),
                other => panic!("{raw:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn skips_bodies_and_leaves_the_next_request() {
        let mut r = "helloGET".as_bytes();
        skip_body(&mut r, Body::Length(5)).unwrap();
        assert_eq!(r, b"GET");

        let mut r = "5;ext=1\r\nhello\r\n3\r\nabc\r\n0\r\nTrailer: x\r\n\r\nGET".as_bytes();
        skip_body(&mut r, Body::Chunked).unwrap();
        assert_eq!(r, b"GET");

        assert!(skip_body(&mut "abc".as_bytes(), Body::Length(5)).is_err());
        assert!(skip_body(&mut "zz\r\n".as_bytes(), Body::Chunked).is_err());
        assert!(skip_body(&mut "3\r\nabcX\r\n".as_bytes(), Body::Chunked).is_err());
    }

    #[test]
    fn writes_answers_whole_cut_or_head_only() {
        let answer = |head_only, cut| {
            let mut out = Vec::new();
            let a = Answer {
                status: 200,
                content_type: "text/plain",
                body: b"abcdef",
                head_only,
                connection: Some("close"),
                cut,
            };
            write_answer(&mut out, &a).unwrap();
            String::from_utf8(out).unwrap()
        };
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\
                    Connection: close\r\n\r\n";
        assert_eq!(answer(false, false), format!("{head}abcdef"));
        assert_eq!(answer(false, true), format!("{head}abc"));
        assert_eq!(answer(true, false), head);
    }
}

//! Writing answers: the status line and headers, how the body is framed, whether the connection
//! stays open, and our own short error answers ([`Refusal`]).
//!
//! Framing of an answer (RFC 9112 §6.3), given what the handler knows:
//!
//! | answer | framing |
//! | --- | --- |
//! | to HEAD, or status 1xx, 204, 304 | no body; `Content-Length` passed on when given (not for 1xx/204) |
//! | length known | `Content-Length` |
//! | length unknown, HTTP/1.1 client | `Transfer-Encoding: chunked` |
//! | length unknown, HTTP/1.0 client | the body ends when the connection closes |
//!
//! The connection stays open when the client wants it to (see
//! [`RequestHead::wants_keep_alive`](super::RequestHead::wants_keep_alive)), the answer's end
//! can be found without a close, and the server is not stopping; otherwise the answer says
//! `Connection: close`. An HTTP/1.0 client that asked for keep-alive gets
//! `Connection: keep-alive`.

use crate::decimal::push_num;

/// An answer the front end or the balancer gives itself: status, a short plain-text reason,
/// maybe `Retry-After`, and a short token for the access log (`reason=cl_te`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status.
    pub status: u16,
    /// Short reason, sent as the plain-text body.
    pub reason: String,
    /// Seconds for a `Retry-After` header (429 and 503).
    pub retry_after: Option<u32>,
    /// The reason as one lowercase word for logs and counters, e.g. `cl_te` or
    /// `queue_timeout`. Default: one for the status (see [`Refusal::new`]).
    pub code: &'static str,
    /// One more header the answer carries (the balancer's `X-Balancer-Explain`). Default none.
    /// Boxed: most refusals carry none, and should stay small to move around.
    pub header: Option<Box<(&'static str, String)>>,
}

impl Refusal {
    /// A refusal without `Retry-After`, its code the status's: `bad_request` (400),
    /// `forbidden` (403), `method` (405), `timeout` (408), `too_large` (413), `uri_too_long`
    /// (414), `rate_limited` (429), `head_too_large` (431), `internal` (500), `bad_gateway`
    /// (502), `unavailable` (503), `gateway_timeout` (504), `version` (505), else `refused`.
    pub fn new(status: u16, reason: impl Into<String>) -> Refusal {
        let code = match status {
            400 => "bad_request",
            403 => "forbidden",
            405 => "method",
            408 => "timeout",
            413 => "too_large",
            414 => "uri_too_long",
            429 => "rate_limited",
            431 => "head_too_large",
            500 => "internal",
            502 => "bad_gateway",
            503 => "unavailable",
            504 => "gateway_timeout",
            505 => "version",
            _ => "refused",
        };
        Refusal {
            status,
            reason: reason.into(),
            retry_after: None,
            code,
            header: None,
        }
    }

    /// The same refusal with a more precise `code`.
    pub fn coded(self, code: &'static str) -> Refusal {
        Refusal { code, ..self }
    }

    /// A refusal with `Retry-After: seconds`.
    pub fn retry_after(status: u16, reason: impl Into<String>, seconds: u32) -> Refusal {
        Refusal {
            retry_after: Some(seconds),
            ..Refusal::new(status, reason)
        }
    }
}

/// How an answer's body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (HEAD, 1xx, 204, 304).
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// The body ends when the connection closes (HTTP/1.0 clients, length unknown).
    UntilClose,
}

/// What to write about the connection in an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// It closes after this answer: `Connection: close`.
    Close,
    /// It stays open, HTTP/1.1 (the default; nothing written).
    KeepAlive,
    /// It stays open for an HTTP/1.0 client that asked: `Connection: keep-alive`.
    KeepAlive10,
}

impl Persistence {
    /// True unless the connection closes after the answer.
    pub fn keeps_open(self) -> bool {
        self != Persistence::Close
    }
}

/// What the writer needs to know about the request an answer is for.
#[derive(Clone, Copy, Debug)]
pub struct AnswerTo {
    /// The request was HEAD.
    pub head_request: bool,
    /// The client speaks HTTP/1.0.
    pub http10: bool,
    /// The client lets the connection stay open and the server will keep it.
    pub keep_alive: bool,
}

/// How an answer with `status` and body `length` (when known) is framed for the request
/// `to`, and whether the connection stays open after it.
pub fn plan(status: u16, length: Option<u64>, to: AnswerTo) -> (BodyFraming, Persistence) {
    let framing = if to.head_request || status < 200 || status == 204 || status == 304 {
        BodyFraming::None
    } else {
        match length {
            Some(n) => BodyFraming::Length(n),
            None if to.http10 => BodyFraming::UntilClose,
            None => BodyFraming::Chunked,
        }
    };
    let persistence = match (
        to.keep_alive && framing != BodyFraming::UntilClose,
        to.http10,
    ) {
        (false, _) => Persistence::Close,
        (true, false) => Persistence::KeepAlive,
        (true, true) => Persistence::KeepAlive10,
    };
    (framing, persistence)
}

/// Appends the status line and headers of an answer to `out`: `headers` as given, then the
/// framing and connection headers this module owns. `length` is the body length to announce
/// for bodiless answers that carry one (HEAD, 304).
pub fn write_head<'a>(
    out: &mut Vec<u8>,
    status: u16,
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    framing: BodyFraming,
    length: Option<u64>,
    persistence: Persistence,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_num(out, status.into(), 3);
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    let length = match framing {
        BodyFraming::Length(n) => Some(n),
        BodyFraming::None if status >= 200 && status != 204 => length,
        BodyFraming::Chunked => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
            None
        }
        BodyFraming::None | BodyFraming::UntilClose => None,
    };
    if let Some(n) = length {
        out.extend_from_slice(b"Content-Length: ");
        push_num(out, n, 1);
        out.extend_from_slice(b"\r\n");
    }
    match persistence {
        Persistence::Close => out.extend_from_slice(b"Connection: close\r\n"),
        Persistence::KeepAlive10 => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        Persistence::KeepAlive => {}
    }
    out.extend_from_slice(b"\r\n");
}

/// Our own answer for `refusal`, as bytes: a plain-text body with the reason (none for HEAD),
/// `Retry-After` when set.
pub fn refusal_bytes(refusal: &Refusal, to: AnswerTo) -> (Vec<u8>, Persistence) {
    let body = format!("{}\n", refusal.reason);
    let (framing, persistence) = plan(refusal.status, Some(body.len() as u64), to);
    let retry = refusal.retry_after.map(|s| s.to_string());
    let mut headers: Vec<(&str, &[u8])> = vec![("Content-Type", b"text/plain; charset=utf-8")];
    if let Some(s) = &retry {
        headers.push(("Retry-After", s.as_bytes()));
    }
    if let Some((name, value)) = refusal.header.as_deref() {
        headers.push((name, value.as_bytes()));
    }
    let mut out = Vec::with_capacity(160 + body.len());
    write_head(
        &mut out,
        refusal.status,
        headers,
        framing,
        Some(body.len() as u64),
        persistence,
    );
    if framing != BodyFraming::None {
        out.extend_from_slice(body.as_bytes());
    }
    (out, persistence)
}

/// The start of one chunk of `len` bytes: its size in hex and a line end.
pub fn chunk_header(len: usize) -> String {
    format!("{len:x}\r\n")
}

/// The last chunk, with no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The interim answer to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The reason phrase for `status` (RFC 9110 §15); an empty string for unknown codes, which is
/// allowed.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        205 => "Reset Content",
        206 => "Partial Content",
        300 => "Multiple Choices",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET11: AnswerTo = AnswerTo {
        head_request: false,
        http10: false,
        keep_alive: true,
    };

    #[test]
    fn framing_follows_method_status_length_and_version() {
        use BodyFraming::{Chunked, Length, UntilClose};
        use Persistence::*;
        assert_eq!(plan(200, Some(5), GET11), (Length(5), KeepAlive));
        assert_eq!(plan(200, None, GET11), (Chunked, KeepAlive));
        for status in [204, 304, 101] {
            assert_eq!(plan(status, Some(5), GET11).0, BodyFraming::None);
        }
        let head = AnswerTo {
            head_request: true,
            ..GET11
        };
        assert_eq!(plan(200, Some(5), head), (BodyFraming::None, KeepAlive));
        let old = AnswerTo {
            http10: true,
            ..GET11
        };
        assert_eq!(plan(200, None, old), (UntilClose, Close));
        assert_eq!(plan(200, Some(3), old), (Length(3), KeepAlive10));
        let closing = AnswerTo {
            keep_alive: false,
            ..GET11
        };
        assert_eq!(plan(200, Some(3), closing), (Length(3), Close));
    }

    #[test]
    fn a_refusal_is_a_complete_plain_text_answer() {
        let (bytes, p) = refusal_bytes(&Refusal::retry_after(503, "busy", 1), GET11);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Retry-After: 1\r\nContent-Length: 5\r\n\r\nbusy\n"
        );
        assert_eq!(p, Persistence::KeepAlive);
        let head = AnswerTo {
            head_request: true,
            keep_alive: false,
            ..GET11
        };
        let (bytes, _) = refusal_bytes(&Refusal::new(403, "no"), head);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 3\r\nConnection: close\r\n\r\n"
        );
    }
}

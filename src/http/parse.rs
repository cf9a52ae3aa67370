//! Reading a request head: where it ends, whether it is within the [`Limits`], and what it says
//! ([`RequestHead`]), with the message-framing rules of RFC 9112 that decide where its body ends
//! ([`Framing`]).
//!
//! The poller calls [`find_head_end`] on every arrival of bytes, looking only at the new ones,
//! so a client that sends its head a byte at a time costs linear work; the head is parsed (by
//! `httparse`) once, when it is complete.
//!
//! Refused, each with the connection closed afterwards (see [`crate::http`]):
//! - request line over `max_request_line` → 414; head over `max_head` or more than
//!   `max_headers` fields → 431;
//! - anything `httparse` rejects → 400: a NUL or other control character in a header value, a
//!   bare CR, obsolete line folding (a header line starting with a space), a malformed request
//!   line or header name; a version other than HTTP/1.0 and 1.1 → 505;
//! - no `Host` on HTTP/1.1, more than one, or one whose value is not `host[:port]` (the grammar
//!   is in `fields.rs`) → 400 (RFC 9112 §3.2);
//! - an absolute-form target (RFC 9112 §3.2.2) of a scheme other than `http`, with user info,
//!   no host or an invalid one, or whose authority is not the `Host` sent with it → 400;
//! - request smuggling shapes: both `Content-Length` and `Transfer-Encoding`, a transfer coding
//!   other than a single `chunked`, `Transfer-Encoding` on HTTP/1.0, an invalid or conflicting
//!   `Content-Length` → 400 (RFC 9112 §6.1, §6.3). These two headers are read as bytes with
//!   only SP and HTAB as whitespace around values (RFC 9110 §5.6.3): a backend that trimmed
//!   other (Unicode) whitespace would read `\u{3000}chunked` differently from one that did not.
//!
//! Header values are kept as bytes: obs-text (bytes 0x80 to 0xFF, e.g. Latin-1) is allowed in
//! a field value (RFC 9110 §5.5) and passes through to the backend unchanged.

use std::net::IpAddr;

use super::fields::{content_length, is_valid_host, trim_ows, BadLength};
use super::limits::Limits;
use super::write::Refusal;

/// Header fields parsed without an allocation for their table: up to 128 (`limits
/// max_headers=` allows up to 1000; beyond 128 the table is allocated).
const FIELDS_ON_STACK: usize = 128;

/// A parsed request head: the parts of a request that the balancer looks at and forwards.
/// Header names keep the client's spelling.
#[derive(Clone, Debug)]
pub struct RequestHead {
    /// Method, e.g. `GET`.
    pub method: String,
    /// Request target, e.g. `/a/b?x=1`: exactly as the client sent it, except that an
    /// absolute-form target (`http://host/a/b?x=1`) is rewritten to its origin form, so that
    /// filters, the access log and the backend all see the path.
    pub target: String,
    /// True for an HTTP/1.0 request.
    pub http10: bool,
    /// Headers in the order received, repeated ones repeated. Values are the bytes received
    /// (without the whitespace around them), which may include obs-text (0x80 to 0xFF); use
    /// [`RequestHead::header`] for a value as text.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The client's address (the TCP peer).
    pub client: IpAddr,
}

impl RequestHead {
    /// All values of header `name` (case-insensitive), in order, as the bytes received.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of header `name`, as the bytes received.
    pub fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of header `name` as text; `None` also when that value is not UTF-8
    /// (Latin-1 obs-text, say): the headers the balancer reads as text (`Expect`,
    /// `Authorization`) hold no such bytes when they are valid.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_bytes(name)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The target's path: everything before `?` or `#` (`*` for `OPTIONS *`). The one place
    /// the target is split: the filter and the admin pages read it here. (An absolute-form
    /// target was rewritten to its path when the head was parsed.)
    pub fn path(&self) -> &str {
        let end = self.target.find(['?', '#']).unwrap_or(self.target.len());
        &self.target[..end]
    }

    /// The target's query, after `?` and before any `#`, when there is one.
    pub fn query(&self) -> Option<&str> {
        let (_, rest) = self.target.split_once('?')?;
        Some(rest.split('#').next().unwrap_or(rest))
    }

    /// True when a `Connection` header lists `token` (case-insensitive).
    pub fn connection_has(&self, token: &str) -> bool {
        self.header_values("connection")
            .flat_map(|v| v.split(|&b| b == b','))
            .any(|t| trim_ows(t).eq_ignore_ascii_case(token.as_bytes()))
    }

    /// True when the client lets the connection stay open after this exchange: HTTP/1.1
    /// unless it sent `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`.
    pub fn wants_keep_alive(&self) -> bool {
        if self.http10 {
            self.connection_has("keep-alive")
        } else {
            !self.connection_has("close")
        }
    }
}

/// How the request body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// `Content-Length: n` (n > 0).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// What the bytes received so far hold.
#[derive(Debug)]
pub enum Parsed {
    /// A complete head, `len` bytes long; the body (if any) follows it.
    Complete {
        /// The head.
        head: RequestHead,
        /// How its body is delimited.
        framing: Framing,
        /// Bytes of the head, including its empty line.
        len: usize,
    },
    /// The head is not complete yet.
    Partial,
}

/// The index just after the empty line that ends a head in `buf`, looking for it only from
/// `from` on (minus the three bytes a line end split across reads can take). Accepts `\r\n`
/// and bare `\n` line ends, as RFC 9112 §2.2 allows.
pub fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    let mut i = start;
    while let Some(at) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + at;
        match buf.get(nl + 1..nl + 3) {
            Some([b'\r', b'\n']) => return Some(nl + 3),
            _ if buf.get(nl + 1) == Some(&b'\n') => return Some(nl + 2),
            _ => i = nl + 1,
        }
    }
    None
}

/// Looks at the bytes a client has sent: a complete head is parsed and checked; an incomplete
/// one is checked against the size limits, so that an endless request line or header is
/// refused as soon as it is too long rather than read to its end. `scanned` is how many bytes
/// of `buf` an earlier call has already looked at.
pub fn parse_head(
    buf: &[u8],
    scanned: usize,
    client: IpAddr,
    limits: &Limits,
) -> Result<Parsed, Refusal> {
    // Empty lines before the request line are skipped (RFC 9112 §2.2), so they never count as
    // the end of a head.
    let skip = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    let found = find_head_end(&buf[skip..], scanned.saturating_sub(skip)).map(|end| skip + end);
    let Some(end) = found else {
        let rest = &buf[skip..];
        // `contains` on bytes is a memchr: cheap even for a client that sends its line a byte at
        // a time.
        let line_done = rest[..rest.len().min(limits.max_request_line + 2)].contains(&b'\n');
        if !line_done && rest.len() > limits.max_request_line + 1 {
            return Err(Refusal::new(414, "request line too long").coded("line_too_long"));
        }
        if buf.len() > limits.max_head {
            return Err(Refusal::new(431, "request head too large"));
        }
        return Ok(Parsed::Partial);
    };
    if end > limits.max_head {
        return Err(Refusal::new(431, "request head too large"));
    }
    // Room for the fields on the stack for the usual limits, so that a head costs no
    // allocation of a field table (with the default limit of 100 it was a 3.2 KiB one).
    let mut on_stack = [httparse::EMPTY_HEADER; FIELDS_ON_STACK];
    let mut on_heap = Vec::new();
    let fields = if limits.max_headers <= FIELDS_ON_STACK {
        &mut on_stack[..limits.max_headers]
    } else {
        on_heap.resize(limits.max_headers, httparse::EMPTY_HEADER);
        &mut on_heap[..]
    };
    let mut request = httparse::Request::new(fields);
    let len = match request.parse(&buf[..end]) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(e) => return Err(refusal_for(e)),
    };
    let line = request_line_len(&buf[..len]);
    if line > limits.max_request_line {
        return Err(Refusal::new(414, "request line too long").coded("line_too_long"));
    }
    // httparse has refused control characters in values (all but HTAB) and trimmed the SP and
    // HTAB around them; obs-text it allows, as RFC 9110 §5.5 does.
    let headers = request
        .headers
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect();
    let mut head = RequestHead {
        method: request.method.unwrap_or_default().to_string(),
        target: request.path.unwrap_or_default().to_string(),
        http10: request.version == Some(0),
        headers,
        client,
    };
    absolute_to_origin(&mut head)?;
    let framing = framing(&head)?;
    Ok(Parsed::Complete { head, framing, len })
}

/// Length of the request line (without its line end), skipping the empty lines before it.
fn request_line_len(head: &[u8]) -> usize {
    let start = head
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(head.len());
    let line = &head[start..];
    let end = line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
    end - usize::from(end > 0 && line[end - 1] == b'\r')
}

fn refusal_for(e: httparse::Error) -> Refusal {
    use httparse::Error as E;
    match e {
        E::TooManyHeaders => Refusal::new(431, "too many header fields").coded("too_many_headers"),
        E::Version => Refusal::new(505, "HTTP version not supported"),
        E::HeaderName => {
            Refusal::new(400, "invalid header name or folded header line").coded("bad_header")
        }
        E::HeaderValue => {
            Refusal::new(400, "invalid character in a header value").coded("bad_header")
        }
        E::NewLine => Refusal::new(400, "invalid line ending").coded("bad_line_end"),
        E::Token => Refusal::new(400, "invalid method or request target").coded("bad_request_line"),
        E::Status => Refusal::new(400, "malformed request line").coded("bad_request_line"),
    }
}

/// Rewrites an absolute-form target (`http://host:port/path?q`, RFC 9112 §3.2.2, which a
/// server must accept) to origin form (`/path?q`; `/` for an empty path), and makes its
/// authority the request's `Host`: added when the client sent none, and a `Host` that names
/// another authority is refused (RFC 9112 §3.2.2: a client sends the same in both). An
/// `OPTIONS` of an empty path and no query becomes `OPTIONS *` (RFC 9112 §3.2.4). Targets
/// that are not in absolute form, and `CONNECT`'s authority form, are left to
/// `admission::check_request`.
fn absolute_to_origin(head: &mut RequestHead) -> Result<(), Refusal> {
    let bad = |reason: String| Err(Refusal::new(400, reason).coded("bad_target"));
    if head.target.starts_with('/') || head.method.eq_ignore_ascii_case("CONNECT") {
        return Ok(());
    }
    let Some((scheme, rest)) = head.target.split_once("://") else {
        return Ok(());
    };
    let is_scheme = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !is_scheme {
        return Ok(());
    }
    if !scheme.eq_ignore_ascii_case("http") {
        // https:// would be a request meant for a TLS origin reaching us in clear text; others
        // are not HTTP at all.
        return bad(format!(
            "unsupported scheme {scheme}:// in the request target"
        ));
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.contains('@') {
        // RFC 9110 §4.2.4: user info in an http URI is to be treated as an error.
        return bad("user info in the request target".into());
    }
    if authority.is_empty() || authority.starts_with(':') {
        return bad("no host in the request target".into());
    }
    if !is_valid_host(authority.as_bytes()) {
        return bad("invalid host in the request target".into());
    }
    let hosts: Vec<&[u8]> = head.header_values("host").collect();
    match hosts[..] {
        [] => head
            .headers
            .insert(0, ("Host".to_string(), authority.as_bytes().to_vec())),
        [host] if !same_authority(authority.as_bytes(), host) => {
            return bad("Host header differs from the request target's host".into());
        }
        // One equal Host is kept as sent; several are refused by `framing`.
        _ => {}
    }
    head.target = if path.is_empty() && head.method == "OPTIONS" {
        "*".to_string()
    } else if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    Ok(())
}

/// True when two authorities (`host[:port]`) name the same origin: the host compared without
/// regard to case, and a port of 80 (or an empty one) the same as none (RFC 9110 §4.2.3).
fn same_authority(a: &[u8], b: &[u8]) -> bool {
    fn without_default_port(a: &[u8]) -> &[u8] {
        a.strip_suffix(b":80")
            .or_else(|| a.strip_suffix(b":"))
            .unwrap_or(a)
    }
    without_default_port(a).eq_ignore_ascii_case(without_default_port(b))
}

/// The body's framing, and the head rules that protect it: exactly one `Host` on HTTP/1.1, a
/// valid one on any version, and no shape a proxy and a backend could read differently
/// (request smuggling).
pub fn framing(head: &RequestHead) -> Result<Framing, Refusal> {
    let bad = |reason: &str, code| Err(Refusal::new(400, reason).coded(code));
    let mut hosts = head.header_values("host");
    let (host, another) = (hosts.next(), hosts.next());
    if another.is_some() || (host.is_none() && !head.http10) {
        return bad("exactly one Host header is required", "bad_host");
    }
    if host.is_some_and(|h| !is_valid_host(h)) {
        return bad("invalid Host header: not host[:port]", "bad_host");
    }
    let te: Vec<&[u8]> = head.header_values("transfer-encoding").collect();
    let lengths: Vec<&[u8]> = head.header_values("content-length").collect();
    if !te.is_empty() {
        if !lengths.is_empty() {
            return bad("both Content-Length and Transfer-Encoding", "cl_te");
        }
        if te.len() != 1 || !trim_ows(te[0]).eq_ignore_ascii_case(b"chunked") {
            return bad("unsupported Transfer-Encoding", "bad_te");
        }
        if head.http10 {
            return bad("Transfer-Encoding in an HTTP/1.0 request", "te_http10");
        }
        return Ok(Framing::Chunked);
    }
    Ok(match content_length(lengths) {
        Err(BadLength::Invalid) => return bad("invalid Content-Length", "bad_cl"),
        Err(BadLength::Conflicting) => return bad("conflicting Content-Length values", "bad_cl"),
        Ok(None | Some(0)) => Framing::None,
        Ok(Some(n)) => Framing::Length(n),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn parse(raw: &str) -> Result<Parsed, Refusal> {
        parse_head(
            raw.as_bytes(),
            0,
            Ipv4Addr::LOCALHOST.into(),
            &Limits::default(),
        )
    }

    fn status(raw: &str) -> u16 {
        match parse(raw) {
            Err(r) => r.status,
            Ok(Parsed::Partial) => 0,
            Ok(Parsed::Complete { .. }) => 200,
        }
    }

    #[test]
    fn a_complete_head_is_parsed_with_its_framing() {
        let raw = "GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-a: 2\r\n\r\nBODY";
        let Ok(Parsed::Complete { head, framing, len }) = parse(raw) else {
            panic!("not complete");
        };
        assert_eq!(
            (head.method.as_str(), head.target.as_str()),
            ("GET", "/a?b=1")
        );
        assert!(!head.http10);
        assert_eq!(head.header_values("X-A").collect::<Vec<_>>(), [b"1", b"2"]);
        assert_eq!(framing, Framing::None);
        assert_eq!(&raw[len..], "BODY");
    }

    #[test]
    fn partial_heads_wait_and_bare_lf_line_ends_are_accepted() {
        assert_eq!(status("GET / HTTP/1.1\r\nHost: x\r\n"), 0);
        assert_eq!(status("GET / HTTP/1.1\nHost: x\n\n"), 200);
        assert_eq!(status("\r\n"), 0);
        assert_eq!(status("\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
        assert_eq!(status("\n\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
        assert_eq!(status("\r\n\r\n"), 0);
    }

    #[test]
    fn the_end_is_found_across_reads() {
        let raw = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        for split in 0..raw.len() {
            let found = find_head_end(raw, split);
            assert_eq!(found, Some(raw.len()), "after a read ending at {split}");
        }
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: x\r\n", 0), None);
    }

    #[test]
    fn limits_give_414_and_431() {
        let long_target = "/".repeat(9000);
        assert_eq!(
            status(&format!("GET {long_target} HTTP/1.1\r\nHost: x\r\n\r\n")),
            414
        );
        // Refused before the line ends.
        assert_eq!(status(&format!("GET {long_target}")), 414);
        let big = "a".repeat(17 << 10);
        assert_eq!(
            status(&format!(
                "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n"
            )),
            431
        );
        assert_eq!(
            status(&format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}")),
            431
        );
        let many: String = (0..100).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            status(&format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n")),
            431
        );
        let just: String = (0..99).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            status(&format!("GET / HTTP/1.1\r\nHost: x\r\n{just}\r\n")),
            200
        );
    }

    #[test]
    fn bad_bytes_and_folding_give_400() {
        assert_eq!(status("GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n"), 400);
        assert_eq!(
            status("GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n"),
            400
        );
        assert_eq!(
            status("GET / HTTP/1.1\r\nHost: x\r\nX: a\x7fb\r\n\r\n"),
            400
        );
        assert_eq!(
            status("GET / HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n"),
            400
        );
        assert_eq!(status("GET / HTTP/2.0\r\nHost: x\r\n\r\n"), 505);
        assert_eq!(status("G@T / HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    }

    #[test]
    fn obs_text_values_are_kept_as_bytes() {
        let latin1 = b"GET / HTTP/1.1\r\nHost: x\r\nX: caf\xe9 \xff\r\nY:\t\xc3\xa9\t\r\n\r\n";
        let parsed = parse_head(latin1, 0, Ipv4Addr::LOCALHOST.into(), &Limits::default());
        let Ok(Parsed::Complete { head, .. }) = parsed else {
            panic!("{parsed:?}");
        };
        assert_eq!(head.header_bytes("x"), Some(&b"caf\xe9 \xff"[..]));
        // Not UTF-8: no text value, but the bytes are there.
        assert_eq!(head.header("x"), None);
        assert_eq!(head.header("y"), Some("é"));
    }

    fn target_and_host(raw: &str) -> Result<(String, Vec<String>), u16> {
        match parse(raw) {
            Ok(Parsed::Complete { head, .. }) => {
                let hosts = head
                    .header_values("host")
                    .map(|h| String::from_utf8_lossy(h).into_owned())
                    .collect();
                Ok((head.target, hosts))
            }
            Ok(Parsed::Partial) => panic!("partial"),
            Err(r) => Err(r.status),
        }
    }

    #[test]
    fn absolute_form_becomes_origin_form_with_its_host() {
        let ok = |target: &str, host: &str, want: &str| {
            let raw = format!("GET {target} HTTP/1.1\r\n{host}\r\n");
            let (t, hosts) = target_and_host(&raw).unwrap_or_else(|s| panic!("{raw:?}: {s}"));
            assert_eq!(t, want, "{raw:?}");
            hosts
        };
        assert_eq!(ok("http://a.test:81/p?q=1", "", "/p?q=1"), ["a.test:81"]);
        assert_eq!(ok("HTTP://a.test", "", "/"), ["a.test"]);
        assert_eq!(ok("http://a.test?q", "", "/?q"), ["a.test"]);
        assert_eq!(ok("http://[::1]:8080/x", "", "/x"), ["[::1]:8080"]);
        // A Host naming the same authority is kept as the client sent it.
        assert_eq!(ok("http://A.test/x", "Host: a.TEST\r\n", "/x"), ["a.TEST"]);
        assert_eq!(
            ok("http://a.test:80/x", "Host: a.test\r\n", "/x"),
            ["a.test"]
        );
        assert_eq!(
            ok("http://a.test/x", "Host: a.test:80\r\n", "/x"),
            ["a.test:80"]
        );
        // Origin form is untouched.
        assert_eq!(ok("/http://a/x", "Host: h\r\n", "/http://a/x"), ["h"]);
        // OPTIONS of an empty path is about the server: the asterisk form (RFC 9112 §3.2.4).
        let raw = "OPTIONS http://a.test HTTP/1.1\r\n\r\n";
        assert_eq!(target_and_host(raw).unwrap().0, "*");
        let raw = "OPTIONS http://a.test/ HTTP/1.1\r\n\r\n";
        assert_eq!(target_and_host(raw).unwrap().0, "/");
        // HTTP/1.0 takes the host from the target too.
        let raw = "GET http://a.test/x HTTP/1.0\r\n\r\n";
        assert_eq!(target_and_host(raw).unwrap().1, ["a.test"]);
        // CONNECT's authority form, and targets that are no URL, are left to check_request.
        let raw = "CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n";
        assert_eq!(target_and_host(raw).unwrap().0, "a.test:443");
        let raw = "GET a.test:80 HTTP/1.1\r\nHost: a.test\r\n\r\n";
        assert_eq!(target_and_host(raw).unwrap().0, "a.test:80");

        for bad in [
            "GET http://a.test/x HTTP/1.1\r\nHost: b.test\r\n\r\n",
            "GET http://a.test:81/x HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "GET http://a.test/x HTTP/1.1\r\nHost: a.test\r\nHost: a.test\r\n\r\n",
            "GET https://a.test/x HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "GET ftp://a.test/x HTTP/1.1\r\n\r\n",
            "GET http://u:p@a.test/x HTTP/1.1\r\n\r\n",
            "GET http:///x HTTP/1.1\r\n\r\n",
            "GET http://:80/x HTTP/1.1\r\n\r\n",
            "GET http://a\"b/x HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(target_and_host(bad), Err(400), "{bad:?}");
        }
        let Err(r) = parse("GET https://a.test/ HTTP/1.1\r\n\r\n") else {
            panic!("accepted");
        };
        assert!(r.reason.contains("https://"), "{}", r.reason);
    }

    #[test]
    fn framing_rules() {
        let f = |extra: &str, v: &str| match parse(&format!("POST / HTTP/{v}\r\n{extra}\r\n")) {
            Ok(Parsed::Complete { framing, .. }) => Ok(framing),
            Err(r) => Err(r.status),
            Ok(Parsed::Partial) => panic!("partial"),
        };
        assert_eq!(
            f("Host: x\r\nContent-Length: 5\r\n", "1.1"),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            f("Host: x\r\nContent-Length: 5, 5\r\n", "1.1"),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            f("Host: x\r\nContent-Length: 0\r\n", "1.1"),
            Ok(Framing::None)
        );
        assert_eq!(
            f("Host: x\r\nTransfer-Encoding: chunked\r\n", "1.1"),
            Ok(Framing::Chunked)
        );
        assert_eq!(f("Content-Length: 5\r\n", "1.0"), Ok(Framing::Length(5)));
        for bad in [
            "Host: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "Host: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n",
            "Host: x\r\nContent-Length: +5\r\n",
            "Host: x\r\nContent-Length: -5\r\n",
            "Host: x\r\nContent-Length: 99999999999999999999999\r\n",
            "Host: x\r\nContent-Length: 0x5\r\n",
            "Host: x\r\nTransfer-Encoding: gzip, chunked\r\n",
            "Host: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "Content-Length: 5\r\n",
            "Host: x\r\nHost: y\r\n",
            "Host: x\r\nContent-Length: 5;ext\r\n",
            "Host: x\r\nContent-Length: 5, 6\r\n",
            "Host: x\r\nContent-Length: 5,\r\n",
            "Host: x\r\nContent-Length: 18446744073709551616\r\n",
            "Host: x\r\nTransfer-Encoding: xchunked\r\n",
            "Host: x\r\nTransfer-Encoding: chunked, identity\r\n",
            // Unicode whitespace is not OWS (RFC 9110 §5.6.3): str::trim would take it away.
            "Host: x\r\nTransfer-Encoding: \u{3000}chunked\r\n",
            "Host: x\r\nTransfer-Encoding: chunked\u{a0}\r\n",
            "Host: x\r\nContent-Length: \u{200a}5\r\n",
            "Host: x\r\nContent-Length: 5\u{85}\r\n",
            "Host: x\r\nContent-Length: 5\u{85}, 5\r\n",
            "Host: x\r\nContent-Length: \u{663}\r\n",
        ] {
            assert_eq!(f(bad, "1.1"), Err(400), "{bad:?}");
        }
        // SP and HTAB are OWS, around a value and around list elements.
        assert_eq!(
            f("Host: x\r\nTransfer-Encoding:\tchunked \t\r\n", "1.1"),
            Ok(Framing::Chunked)
        );
        assert_eq!(
            f("Host: x\r\nContent-Length: 5 ,\t5\r\n", "1.1"),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            f("Host: x\r\nContent-Length: 18446744073709551615\r\n", "1.1"),
            Ok(Framing::Length(u64::MAX))
        );
        assert_eq!(f("Transfer-Encoding: chunked\r\n", "1.0"), Err(400));
    }

    #[test]
    fn an_invalid_host_is_refused_an_empty_one_is_not() {
        let code =
            |raw: &[u8]| match parse_head(raw, 0, Ipv4Addr::LOCALHOST.into(), &Limits::default()) {
                Err(r) => Some((r.status, r.code)),
                Ok(_) => None,
            };
        for host in ["a b", "a/b", "[::1", "a:b", "u@a", ":80", "a%zz"] {
            let raw = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            assert_eq!(code(raw.as_bytes()), Some((400, "bad_host")), "{host:?}");
            // HTTP/1.0 needs no Host, but one it sends must be valid.
            let raw = format!("GET / HTTP/1.0\r\nHost: {host}\r\n\r\n");
            assert_eq!(code(raw.as_bytes()), Some((400, "bad_host")), "{host:?}");
        }
        assert_eq!(
            code(b"GET / HTTP/1.1\r\nHost: caf\xe9\r\n\r\n"),
            Some((400, "bad_host"))
        );
        for host in ["", "a.test:8080", "[::1]:80", "127.0.0.1"] {
            let raw = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            assert_eq!(code(raw.as_bytes()), None, "{host:?}");
        }
        // The authority of an absolute-form target follows the same grammar.
        for target in ["http://a:b/", "http://[::1/", "http://a%zz/"] {
            let raw = format!("GET {target} HTTP/1.1\r\n\r\n");
            assert_eq!(code(raw.as_bytes()), Some((400, "bad_target")), "{target}");
        }
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        let head = |v: &str, extra: &str| match parse(&format!(
            "GET / HTTP/{v}\r\nHost: x\r\n{extra}\r\n"
        )) {
            Ok(Parsed::Complete { head, .. }) => head,
            other => panic!("{other:?}"),
        };
        assert!(head("1.1", "").wants_keep_alive());
        assert!(!head("1.1", "Connection: Close\r\n").wants_keep_alive());
        assert!(!head("1.0", "").wants_keep_alive());
        assert!(head("1.0", "Connection: keep-alive\r\n").wants_keep_alive());
    }
}

//! HTTP/1.1 messages on the wire, for both sides: reading a head and a body (requests at the
//! backend, responses at the client), and writing answers (a backend's handlers).

use std::io::{self, BufRead, Write};

/// A parsed message head: the raw bytes as received, the start line, and the header lines in
/// order (names as spelled on the wire, values trimmed).
#[derive(Clone, Debug)]
pub struct Head {
    pub raw: Vec<u8>,
    pub start_line: String,
    pub headers: Vec<(String, String)>,
}

impl Headers for Head {
    fn header_list(&self) -> &[(String, String)] {
        &self.headers
    }
}

/// Header lookups over `(name, value)` lists; names compare case-insensitively.
pub trait Headers {
    fn header_list(&self) -> &[(String, String)];

    /// All values of `name`, in the order received.
    fn header_values(&self, name: &str) -> Vec<&str> {
        self.header_list()
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first value of `name`.
    fn header(&self, name: &str) -> Option<&str> {
        self.header_values(name).first().copied()
    }

    /// True when `name` is present at all.
    fn has_header(&self, name: &str) -> bool {
        !self.header_values(name).is_empty()
    }
}

/// Reads one message head up to the blank line. `Ok(None)` on a clean end of stream before the
/// first byte (the peer closed an idle connection).
pub fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut raw = Vec::new();
    let mut start_line: Option<String> = None;
    let mut headers = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            if raw.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "stream ended inside a message head: {:?}",
                    String::from_utf8_lossy(&raw)
                ),
            ));
        }
        raw.extend_from_slice(&line);
        if raw.len() > 1 << 20 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = String::from_utf8_lossy(text.strip_suffix(b"\r").unwrap_or(text));
        if start_line.is_none() {
            start_line = Some(text.into_owned());
            continue;
        }
        if text.is_empty() {
            break;
        }
        let (name, value) = text.split_once(':').ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad header line {text:?}"),
            )
        })?;
        headers.push((name.to_string(), value.trim().to_string()));
    }
    Ok(Some(Head {
        raw,
        start_line: start_line.unwrap_or_default(),
        headers,
    }))
}

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    /// A response without length: the body runs until the connection closes.
    UntilClose,
}

/// How reading a body ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyEnd {
    /// The body was complete by its framing (for chunked: the last chunk arrived). Holds the
    /// body bytes read.
    Complete(u64),
    /// The connection ended (or failed) before the framing said the body was done. Holds the
    /// body bytes read.
    Truncated(u64),
}

impl BodyEnd {
    pub fn bytes(self) -> u64 {
        match self {
            BodyEnd::Complete(n) | BodyEnd::Truncated(n) => n,
        }
    }
}

/// Reads a body with `framing`, handing every piece to `sink`. A timeout is an error (the peer
/// neither finished nor closed); an end of stream or reset before the end is `Truncated`.
pub fn read_body(
    r: &mut impl BufRead,
    framing: Framing,
    sink: &mut dyn FnMut(&[u8]),
) -> io::Result<BodyEnd> {
    let mut got = 0u64;
    let result = read_body_inner(r, framing, sink, &mut got);
    match result {
        Ok(true) => Ok(BodyEnd::Complete(got)),
        Ok(false) => Ok(BodyEnd::Truncated(got)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ) =>
        {
            Err(e)
        }
        Err(_) => Ok(BodyEnd::Truncated(got)),
    }
}

/// Returns Ok(true) when complete, Ok(false) on a premature end of stream.
fn read_body_inner(
    r: &mut impl BufRead,
    framing: Framing,
    sink: &mut dyn FnMut(&[u8]),
    got: &mut u64,
) -> io::Result<bool> {
    match framing {
        Framing::None => Ok(true),
        Framing::Length(n) => copy_exact(r, n, sink, got),
        Framing::UntilClose => loop {
            let buf = r.fill_buf()?;
            if buf.is_empty() {
                return Ok(true);
            }
            let n = buf.len();
            sink(buf);
            *got += n as u64;
            r.consume(n);
        },
        Framing::Chunked => loop {
            let mut line = Vec::new();
            if r.read_until(b'\n', &mut line)? == 0 || !line.ends_with(b"\n") {
                return Ok(false);
            }
            let text = String::from_utf8_lossy(&line);
            let size_text = text.trim_end().split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size_text, 16).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad chunk size line {text:?}"),
                )
            })?;
            if size == 0 {
                // Trailer section, up to the blank line.
                loop {
                    line.clear();
                    if r.read_until(b'\n', &mut line)? == 0 || !line.ends_with(b"\n") {
                        return Ok(false);
                    }
                    if line == b"\r\n" || line == b"\n" {
                        return Ok(true);
                    }
                }
            }
            if !copy_exact(r, size, sink, got)? {
                return Ok(false);
            }
            let mut crlf = [0u8; 2];
            match r.read_exact(&mut crlf) {
                Ok(()) if &crlf == b"\r\n" => {}
                Ok(()) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "chunk not followed by CRLF",
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
                Err(e) => return Err(e),
            }
        },
    }
}

fn copy_exact(
    r: &mut impl BufRead,
    mut n: u64,
    sink: &mut dyn FnMut(&[u8]),
    got: &mut u64,
) -> io::Result<bool> {
    while n > 0 {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(false);
        }
        let take = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
        sink(&buf[..take]);
        r.consume(take);
        n -= take as u64;
        *got += take as u64;
    }
    Ok(true)
}

/// How a request body is framed by its headers.
pub(super) fn request_framing(headers: &[(String, String)]) -> Framing {
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    if find("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        return Framing::Chunked;
    }
    match find("content-length").and_then(|v| v.trim().parse::<u64>().ok()) {
        Some(0) | None => Framing::None,
        Some(n) => Framing::Length(n),
    }
}

/// The standard reason phrase for the statuses the tests use.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Whatever",
    }
}

/// Writes a status line and `headers` exactly as given.
pub fn write_head(out: &mut impl Write, status: u16, headers: &[(&str, &str)]) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())
}

/// Writes a whole response: `headers` as given plus a `Content-Length` for `body` unless the
/// headers already frame the message, then `body`.
pub fn reply(
    out: &mut impl Write,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<()> {
    let framed = headers.iter().any(|(k, _)| {
        k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding")
    });
    let length = body.len().to_string();
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    if !framed {
        all.push(("Content-Length", &length));
    }
    let mut bytes = Vec::new();
    write_head(&mut bytes, status, &all)?;
    bytes.extend_from_slice(body);
    out.write_all(&bytes)
}

/// Writes one chunk of a chunked body.
pub fn write_chunk(out: &mut impl Write, data: &[u8]) -> io::Result<()> {
    let mut bytes = format!("{:x}\r\n", data.len()).into_bytes();
    bytes.extend_from_slice(data);
    bytes.extend_from_slice(b"\r\n");
    out.write_all(&bytes)
}

/// Writes a chunked response: head with `Transfer-Encoding: chunked`, the chunks, the last chunk.
pub fn reply_chunked(
    out: &mut impl Write,
    status: u16,
    headers: &[(&str, &str)],
    chunks: &[&[u8]],
) -> io::Result<()> {
    let mut all = headers.to_vec();
    all.push(("Transfer-Encoding", "chunked"));
    write_head(out, status, &all)?;
    for c in chunks {
        write_chunk(out, c)?;
    }
    out.write_all(b"0\r\n\r\n")
}

//! Shared helpers for the integration tests.
//!
//! - [`Backend`]: a programmable HTTP/1.1 backend on a raw `TcpListener`. It records the exact
//!   request head bytes, the parsed headers (repeats and order kept) and the body (its length,
//!   SHA-256 and first bytes), then lets a handler answer with arbitrary raw bytes: fixed or
//!   chunked bodies, huge generated bodies, delays, or a connection closed mid-body.
//! - [`Client`]: writes raw request bytes over a `TcpStream` and parses the answer itself
//!   (status, headers with repeats, body by `Content-Length` or chunked decoding), reporting a
//!   body cut short instead of hiding it.
//! - [`Pattern`]: a deterministic data stream generated piece by piece, so neither side ever
//!   holds a large body in memory.
//! - [`Lb`] runs the balancer in-process on `127.0.0.1:0`; [`LbProcess`] runs the built binary.
//!
//! Everything binds loopback only, and every wait polls against a deadline.
#![allow(dead_code)] // each test file uses a different part of this module

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use loadbalancer::config::BackendConfig;
use loadbalancer::{Balancer, Config, Running};
use sha2::{Digest, Sha256};

/// Read/write timeout on every test socket: a hang fails the test instead of blocking it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Buffer size for bulk transfers.
const BUF: usize = 256 * 1024;

/// A backend keeps this many leading body bytes of each request (it hashes all of them).
pub const KEEP_BODY: usize = 1 << 20;

/// Polls `cond` every few milliseconds until it holds; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// Message parsing shared by the backend (requests) and the client (responses)
// ---------------------------------------------------------------------------------------------

/// A parsed message head: the raw bytes as received, the start line, and the header lines in
/// order (names as spelled on the wire, values trimmed).
#[derive(Clone, Debug)]
pub struct Head {
    pub raw: Vec<u8>,
    pub start_line: String,
    pub headers: Vec<(String, String)>,
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

// ---------------------------------------------------------------------------------------------
// The programmable backend
// ---------------------------------------------------------------------------------------------

/// One request as the backend received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    /// The request target exactly as on the wire.
    pub target: String,
    pub version: String,
    /// Header lines in the order received, repeats kept.
    pub headers: Vec<(String, String)>,
    /// The exact head bytes (request line, header lines, blank line).
    pub raw_head: Vec<u8>,
    /// How the balancer framed the body.
    pub framing: Framing,
    /// The first [`KEEP_BODY`] bytes of the (decoded) body.
    pub body: Vec<u8>,
    /// Body length after chunked decoding.
    pub body_len: u64,
    /// SHA-256 (hex) of the whole decoded body.
    pub body_sha256: String,
    /// Whether the body arrived complete by its framing.
    pub body_complete: bool,
}

impl Headers for Received {
    fn header_list(&self) -> &[(String, String)] {
        &self.headers
    }
}

/// Answers one request by writing raw bytes to the connection. To close the connection (for
/// instance mid-body), shut the stream down; otherwise the backend reads the next request on it.
pub type Handler = dyn Fn(&Received, &mut TcpStream) -> io::Result<()> + Send + Sync;

struct Shared {
    stop: AtomicBool,
    received: Mutex<Vec<Received>>,
    count: AtomicUsize,
    conns: Mutex<Vec<TcpStream>>,
    handler: Box<Handler>,
}

/// A test backend on `127.0.0.1:0`. Stops accepting and closes its connections on drop.
pub struct Backend {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Backend {
    /// Starts a backend that answers every request with `handler`.
    pub fn start(
        handler: impl Fn(&Received, &mut TcpStream) -> io::Result<()> + Send + Sync + 'static,
    ) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            received: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
            conns: Mutex::new(Vec::new()),
            handler: Box::new(handler),
        });
        let accept = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if shared.stop.load(SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    if let Ok(clone) = stream.try_clone() {
                        shared.conns.lock().unwrap().push(clone);
                    }
                    let shared = Arc::clone(&shared);
                    thread::spawn(move || serve_connection(stream, &shared));
                }
            })
        };
        Backend {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// A backend that answers `200` with `body` (and a Content-Length) to everything.
    pub fn answering(body: &'static str) -> Backend {
        Backend::start(move |_, out| {
            reply(out, 200, &[("Content-Type", "text/plain")], body.as_bytes())
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far (counted once the whole request body was read, before the
    /// handler answers).
    pub fn count(&self) -> usize {
        self.shared.count.load(SeqCst)
    }

    /// Copies of the requests received so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// The only request received; panics when there were none or several.
    pub fn only_request(&self) -> Received {
        let all = self.requests();
        assert_eq!(
            all.len(),
            1,
            "expected exactly one request at the backend, got {:#?}",
            all.iter()
                .map(|r| format!("{} {}", r.method, r.target))
                .collect::<Vec<_>>()
        );
        all.into_iter().next().unwrap()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for c in self.shared.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

fn serve_connection(stream: TcpStream, shared: &Shared) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::with_capacity(BUF, read_half);
    let mut out = stream;
    loop {
        let head = match read_head(&mut reader) {
            Ok(Some(h)) => h,
            _ => return,
        };
        if shared.stop.load(SeqCst) {
            return;
        }
        let mut words = head.start_line.splitn(3, ' ');
        let method = words.next().unwrap_or_default().to_string();
        let target = words.next().unwrap_or_default().to_string();
        let version = words.next().unwrap_or_default().to_string();
        let framing = request_framing(&head.headers);
        let mut body = Vec::new();
        let mut hasher = Sha256::new();
        let end = match read_body(&mut reader, framing, &mut |piece| {
            hasher.update(piece);
            let room = KEEP_BODY.saturating_sub(body.len());
            body.extend_from_slice(&piece[..piece.len().min(room)]);
        }) {
            Ok(end) => end,
            Err(_) => return,
        };
        let request = Received {
            method,
            target,
            version,
            headers: head.headers,
            raw_head: head.raw,
            framing,
            body,
            body_len: end.bytes(),
            body_sha256: hex(&hasher.finalize()),
            body_complete: matches!(end, BodyEnd::Complete(_)),
        };
        shared.received.lock().unwrap().push(request.clone());
        shared.count.fetch_add(1, SeqCst);
        if !request.body_complete {
            return;
        }
        if (shared.handler)(&request, &mut out).is_err() {
            return;
        }
        let _ = out.flush();
        let close = request
            .header_values("connection")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("close"));
        if close {
            let _ = out.shutdown(Shutdown::Write);
            return;
        }
    }
}

fn request_framing(headers: &[(String, String)]) -> Framing {
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

// ---------------------------------------------------------------------------------------------
// Deterministic data
// ---------------------------------------------------------------------------------------------

/// Size of one generated piece.
pub const SEGMENT: usize = 256 * 1024;

/// A deterministic pseudo-random byte stream of a given length, produced one [`SEGMENT`] at a
/// time from a small seed table (memory use is a few hundred KiB whatever the length). Every
/// segment starts with its own index, so lost, repeated or reordered segments change the hash.
pub struct Pattern {
    table: Vec<u8>,
    segment: Vec<u8>,
    index: u64,
    remaining: u64,
}

impl Pattern {
    pub fn new(len: u64, seed: u64) -> Pattern {
        let mut x = seed | 1;
        let mut table = Vec::with_capacity(2 * SEGMENT);
        while table.len() < 2 * SEGMENT {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            table.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        Pattern {
            table,
            segment: vec![0; SEGMENT],
            index: 0,
            remaining: len,
        }
    }

    /// The next piece, or `None` at the end.
    pub fn next_piece(&mut self) -> Option<&[u8]> {
        if self.remaining == 0 {
            return None;
        }
        let offset = (self.index.wrapping_mul(40_503) % SEGMENT as u64) as usize;
        self.segment
            .copy_from_slice(&self.table[offset..offset + SEGMENT]);
        self.segment[..8].copy_from_slice(&self.index.to_le_bytes());
        self.index += 1;
        let n = self.remaining.min(SEGMENT as u64) as usize;
        self.remaining -= n as u64;
        Some(&self.segment[..n])
    }

    /// Writes the rest of the stream to `out`; returns the SHA-256 (hex) of what was written.
    pub fn write_to(mut self, out: &mut impl Write) -> io::Result<String> {
        let mut hasher = Sha256::new();
        while let Some(piece) = self.next_piece() {
            hasher.update(piece);
            out.write_all(piece)?;
        }
        Ok(hex(&hasher.finalize()))
    }
}

// ---------------------------------------------------------------------------------------------
// The raw client
// ---------------------------------------------------------------------------------------------

/// A response as the client received it.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub raw_head: Vec<u8>,
    /// The decoded body (empty when it was handed to a sink instead).
    pub body: Vec<u8>,
    pub end: BodyEnd,
}

impl Headers for Response {
    fn header_list(&self) -> &[(String, String)] {
        &self.headers
    }
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One client connection that speaks raw bytes.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            reader: BufReader::with_capacity(BUF, stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    /// Writes raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write request");
    }

    /// The write half, for streaming a large body.
    pub fn writer(&mut self) -> &mut TcpStream {
        &mut self.writer
    }

    /// Reads one response to a `method` request, keeping its body. Panics if the connection
    /// closes before a head arrives.
    pub fn read_response(&mut self, method: &str) -> Response {
        let mut body = Vec::new();
        let mut response = self.read_response_into(method, &mut |p| body.extend_from_slice(p));
        response.body = body;
        response
    }

    /// Reads one response, handing its body to `sink` instead of keeping it.
    pub fn read_response_into(&mut self, method: &str, sink: &mut dyn FnMut(&[u8])) -> Response {
        self.try_read_response_into(method, sink)
            .expect("read response")
            .expect("connection closed before a response head")
    }

    /// Like [`Client::read_response_into`], but `Ok(None)` when the connection closed before
    /// any response byte.
    pub fn try_read_response_into(
        &mut self,
        method: &str,
        sink: &mut dyn FnMut(&[u8]),
    ) -> io::Result<Option<Response>> {
        let Some(head) = read_head(&mut self.reader)? else {
            return Ok(None);
        };
        let status: u16 = head
            .start_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad status line {:?}", head.start_line),
                )
            })?;
        assert!(
            head.start_line.starts_with("HTTP/1.1 "),
            "status line {:?}",
            head.start_line
        );
        let headers = head.headers;
        let lookup = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let framing = if method == "HEAD" || status < 200 || status == 204 || status == 304 {
            Framing::None
        } else if lookup("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            Framing::Chunked
        } else if let Some(n) = lookup("content-length") {
            Framing::Length(n.trim().parse().expect("numeric Content-Length"))
        } else {
            Framing::UntilClose
        };
        let end = read_body(&mut self.reader, framing, sink)?;
        Ok(Some(Response {
            status,
            headers,
            raw_head: head.raw,
            body: Vec::new(),
            end,
        }))
    }

    /// Sends `raw` and reads the response (the method is the first word of `raw`).
    pub fn request(&mut self, raw: &str) -> Response {
        self.send(raw.as_bytes());
        let method = raw.split(' ').next().unwrap_or_default().to_string();
        self.read_response(&method)
    }

    /// Reads whatever else arrives until the peer closes the connection (end of stream or
    /// reset). Panics if it is still open after `timeout`.
    pub fn rest_until_closed(&mut self, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        let mut rest = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "connection still open after {timeout:?}; received {:?}",
                String::from_utf8_lossy(&rest)
            );
            self.reader.get_ref().set_read_timeout(Some(left)).unwrap();
            match self.reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => rest.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                    ) => {}
                Err(_) => break,
            }
        }
        self.reader
            .get_ref()
            .set_read_timeout(Some(IO_TIMEOUT))
            .unwrap();
        rest
    }
}

/// One `GET target` on a fresh connection (`Connection: close`).
pub fn get(addr: SocketAddr, target: &str) -> Response {
    Client::connect(addr).request(&format!(
        "GET {target} HTTP/1.1\r\nHost: lb.test\r\nConnection: close\r\n\r\n"
    ))
}

// ---------------------------------------------------------------------------------------------
// The balancer, in-process
// ---------------------------------------------------------------------------------------------

/// A balancer running in the test process; shut down (drained) on drop.
pub struct Lb {
    running: Option<Running>,
    pub addr: SocketAddr,
}

/// The configuration the tests start from: loopback, port 0, no admin listener, no access log,
/// and nothing that sends the backends requests of its own (health checks) or skews the
/// distribution (slow start).
pub fn test_config(backends: &[(&Backend, u32)]) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        admin: None,
        access_log: false,
        drain_timeout: Duration::from_secs(3),
        slow_start: Duration::ZERO,
        backends: backends
            .iter()
            .map(|(b, w)| BackendConfig::parse(&b.url(), *w).unwrap())
            .collect(),
        ..Config::default()
    };
    config.health.enabled = false;
    config
}

impl Lb {
    /// Starts a balancer over `backends` (with weights) after `tweak` adjusted the config.
    pub fn start(backends: &[(&Backend, u32)], tweak: impl FnOnce(&mut Config)) -> Lb {
        let mut config = test_config(backends);
        tweak(&mut config);
        Lb::with_config(config)
    }

    pub fn with_config(config: Config) -> Lb {
        let running = Balancer::start(config).expect("start balancer");
        let addr = running.addr();
        assert!(addr.ip().is_loopback(), "balancer bound {addr}");
        Lb {
            running: Some(running),
            addr,
        }
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().unwrap()
    }

    /// Graceful shutdown; true when it drained in time.
    pub fn shutdown(mut self) -> bool {
        self.running.take().unwrap().shutdown()
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown();
        }
    }
}

/// Raises this test process's descriptor limit to at least `needed` (up to the hard limit).
/// False, with a visible note on stderr, when the hard limit is lower: the caller skips.
pub fn allow_descriptors(needed: u64, test: &str) -> bool {
    let _ = loadbalancer::http::limits::raise_descriptor_limit();
    let have = loadbalancer::http::limits::descriptor_limit();
    if have >= needed {
        return true;
    }
    // Written past libtest's capture, so that a skip is never silent.
    let _ = writeln!(
        io::stderr(),
        "SKIPPED {test}: needs {needed} open descriptors, the hard limit is {have} (ulimit -Hn)"
    );
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs {needed} descriptors under CI, the limit is {have}"
    );
    false
}

/// Binds and releases a port on loopback, for the binary (which does not report the port it
/// bound). Callers retry if another process takes it in between.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A new empty directory under the system temp dir; removed by [`TempDir`]'s drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "lbtest-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// True when a TCP connection to `addr` is refused (nothing listening).
pub fn refuses_connections(addr: SocketAddr) -> bool {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(_) => false,
        Err(e) => e.kind() == io::ErrorKind::ConnectionRefused,
    }
}

/// The built `loadbalancer` binary as a child process, on a free loopback port.
pub struct LbProcess {
    child: Child,
    pub addr: SocketAddr,
    dir: TempDir,
}

/// Starts the balancer binary in `dir` with `--config conf`, `--listen 127.0.0.1:PORT` on a free
/// port, `--admin off` and `extra` flags, stderr to `dir/stderr`, and waits until it accepts
/// connections. A start that fails (most likely the port was taken between choosing and binding
/// it) is retried on another port, five times at most.
pub fn spawn_binary(
    dir: &Path,
    conf: &Path,
    extra: &[String],
    rust_log: &str,
) -> (Child, SocketAddr) {
    spawn_binary_with(dir, conf, extra, rust_log, None)
}

/// [`spawn_binary`], with the child's descriptor limit set to `nofile` (soft, hard) when given,
/// as `ulimit -Sn` and `ulimit -Hn` would.
pub fn spawn_binary_with(
    dir: &Path,
    conf: &Path,
    extra: &[String],
    rust_log: &str,
    nofile: Option<(u64, u64)>,
) -> (Child, SocketAddr) {
    use std::os::unix::process::CommandExt;
    for attempt in 0.. {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let stderr = std::fs::File::create(dir.join("stderr")).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_loadbalancer"));
        if let Some((soft, hard)) = nofile {
            // SAFETY: only setrlimit, which is async-signal-safe, runs between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: soft,
                        rlim_max: hard,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command
            .current_dir(dir)
            .arg("--config")
            .arg(conf)
            .args(["--listen", &addr.to_string(), "--admin", "off"])
            .args(extra)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn loadbalancer");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let err = std::fs::read_to_string(dir.join("stderr")).unwrap_or_default();
                assert!(attempt < 5, "loadbalancer exited with {status}: {err}");
                break;
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return (child, addr);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("loadbalancer did not start listening on {addr}");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
    unreachable!()
}

impl LbProcess {
    /// Starts the binary with `--config` (a file with `config_lines` plus `health off`,
    /// `slow_start off`, `access_log off`), `--listen 127.0.0.1:PORT`, `--admin off` and one
    /// `--backend` per URL, in an empty working directory so no `./loadbalancer.conf` is read.
    /// Returns once it accepts connections.
    pub fn spawn(backends: &[String], config_lines: &[&str]) -> LbProcess {
        LbProcess::spawn_with(backends, config_lines, None)
    }

    /// [`LbProcess::spawn`] with the child's descriptor limit set to `nofile` (soft, hard).
    pub fn spawn_with(
        backends: &[String],
        config_lines: &[&str],
        nofile: Option<(u64, u64)>,
    ) -> LbProcess {
        LbProcess::start(backends, config_lines, nofile, false)
    }

    /// [`LbProcess::spawn`] with the access log on, at `RUST_LOG=info`: its lines are in
    /// [`LbProcess::stderr`].
    pub fn spawn_logging(backends: &[String], config_lines: &[&str]) -> LbProcess {
        LbProcess::start(backends, config_lines, None, true)
    }

    fn start(
        backends: &[String],
        config_lines: &[&str],
        nofile: Option<(u64, u64)>,
        access_log: bool,
    ) -> LbProcess {
        let dir = TempDir::new("bin");
        let conf = dir.path().join("test.conf");
        let log = if access_log { "on" } else { "off" };
        let mut text = format!("health off\nslow_start off\naccess_log {log}\n");
        for l in config_lines {
            text.push_str(l);
            text.push('\n');
        }
        std::fs::write(&conf, text).unwrap();
        let args: Vec<String> = backends
            .iter()
            .flat_map(|b| ["--backend".to_string(), b.clone()])
            .collect();
        let level = if access_log { "info" } else { "warn" };
        let (child, addr) = spawn_binary_with(dir.path(), &conf, &args, level, nofile);
        LbProcess { child, addr, dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A `kB` field of /proc/PID/status, in KiB.
    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/PID/status"))
    }

    /// Peak resident set size so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    /// Resident set size now (VmRSS), in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// Descriptors the process has open now.
    pub fn open_descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// The process's descriptor limit `(soft, hard)`, from /proc/PID/limits.
    pub fn descriptor_limit(&self) -> (u64, u64) {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.pid())).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("Max open files in /proc/PID/limits");
        let numbers: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        (numbers[0], numbers[1])
    }

    /// Threads the process has now.
    pub fn threads(&self) -> usize {
        self.thread_names().len()
    }

    /// The names of the process's threads now.
    pub fn thread_names(&self) -> Vec<String> {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return Vec::new();
        };
        tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
            .map(|name| name.trim().to_string())
            .collect()
    }

    /// Sends a signal by name (`TERM`, `INT`) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "loadbalancer still running after {timeout:?}; stderr: {}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// Waits up to 10 s for an access-log line that contains every one of `parts`; returns it.
    pub fn access_line(&self, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.stderr();
            let found = log
                .lines()
                .filter(|l| l.contains(" access: "))
                .find(|l| parts.iter().all(|p| l.contains(p)));
            if let Some(line) = found {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no access-log line with {parts:?} in:\n{log}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LbProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs the binary with `args` in `dir` to completion (killed after `timeout`); returns its exit
/// status, stdout and stderr.
pub fn run_binary(args: &[&str], dir: &Path, timeout: Duration) -> (ExitStatus, String, String) {
    let out_path = dir.join("run.stdout");
    let err_path = dir.join("run.stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadbalancer"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn loadbalancer");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("loadbalancer {args:?} still running after {timeout:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    (
        status,
        std::fs::read_to_string(out_path).unwrap(),
        std::fs::read_to_string(err_path).unwrap(),
    )
}

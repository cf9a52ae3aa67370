//! The raw client: writes request bytes over a `TcpStream` and parses the answer itself.

use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::wire::{read_body, read_head, BodyEnd, Framing, Headers};
use super::{BUF, IO_TIMEOUT};

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

/// A keep-alive client that reconnects when the balancer closes the connection after an answer.
/// A request that gets no answer at all is an `Err`.
pub struct Session {
    addr: SocketAddr,
    client: Option<Client>,
}

impl Session {
    pub fn new(addr: SocketAddr) -> Session {
        Session { addr, client: None }
    }

    /// Sends one request and returns the response with its body, or why none came.
    pub fn call(&mut self, raw: &str) -> Result<Response, String> {
        let method = raw.split(' ').next().unwrap_or_default().to_string();
        let addr = self.addr;
        let client = self.client.get_or_insert_with(|| Client::connect(addr));
        if let Err(e) = client.writer().write_all(raw.as_bytes()) {
            self.client = None;
            return Err(format!("write error: {e}"));
        }
        let mut body = Vec::new();
        let result = client.try_read_response_into(&method, &mut |p| body.extend_from_slice(p));
        match result {
            Ok(Some(mut r)) => {
                r.body = body;
                let closing = r
                    .header_values("connection")
                    .iter()
                    .any(|v| v.eq_ignore_ascii_case("close"));
                if closing || !matches!(r.end, BodyEnd::Complete(_)) {
                    self.client = None;
                }
                Ok(r)
            }
            Ok(None) => {
                self.client = None;
                Err("connection closed without an answer".into())
            }
            Err(e) => {
                self.client = None;
                Err(format!("read error: {e}"))
            }
        }
    }

    /// `GET target`.
    pub fn get(&mut self, target: &str) -> Result<Response, String> {
        self.call(&format!("GET {target} HTTP/1.1\r\nHost: lb.test\r\n\r\n"))
    }
}

//! The programmable test backend on a raw `TcpListener` on loopback. It records the exact
//! request head bytes, the parsed headers (repeats and order kept) and the body (its length,
//! SHA-256 and first bytes), then lets a handler answer with arbitrary raw bytes: fixed or
//! chunked bodies, huge generated bodies, delays, or a connection closed mid-body.

use std::io::{self, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::wire::{read_body, read_head, reply, request_framing, BodyEnd, Framing, Headers};
use super::{hex, BUF, KEEP_BODY};

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

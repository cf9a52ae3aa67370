//! A backend that switches protocols: [`UpgradeBackend`] reads request heads on loopback, answers
//! plain requests `200 plain` (recording their heads, so a test sees which headers arrived), and
//! hands each connection that asks to upgrade to a handler of the test's, which answers the 101
//! itself and then owns the socket: [`UpgradeBackend::websocket_echo`] is a real RFC 6455 echo
//! (tungstenite) recording the close codes it saw; raw handlers relay, sink or echo bytes.
//! And the client's side: [`ws_connect`] (a tungstenite client through the balancer) and
//! [`raw_upgrade`] (a handshake on a plain socket).

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::Role;
use tungstenite::{Message, WebSocket};

use super::wire::{read_head, reply, Head, Headers};
use super::IO_TIMEOUT;

/// Handles one upgrade request: its head, the socket, the bytes read past the head, and what
/// the backend has seen (to record in). It writes the 101 (see [`switching`]) and whatever
/// follows.
pub type OnUpgrade = dyn Fn(&Head, TcpStream, Vec<u8>, &Seen) + Send + Sync;

/// What an [`UpgradeBackend`] has seen.
#[derive(Default)]
pub struct Seen {
    /// Heads of the plain (not upgraded) requests.
    pub plain: Mutex<Vec<Head>>,
    /// Upgrade requests handed to the handler.
    pub upgrades: AtomicUsize,
    /// Close codes of the WebSocket close frames received (`websocket_echo`), `None` for a close
    /// without a code.
    pub close_codes: Mutex<Vec<Option<u16>>>,
    /// Connections whose handler has returned.
    pub ended: AtomicUsize,
}

/// A backend that switches protocols (see the module documentation). Stops on drop.
pub struct UpgradeBackend {
    addr: SocketAddr,
    pub seen: Arc<Seen>,
    stop: Arc<AtomicBool>,
    /// A clone of each open connection, to kill them; dropped when the connection ends.
    conns: Arc<Mutex<HashMap<u64, TcpStream>>>,
}

impl UpgradeBackend {
    /// Starts a backend whose upgrade requests go to `on_upgrade`.
    pub fn start(
        on_upgrade: impl Fn(&Head, TcpStream, Vec<u8>, &Seen) + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let backend = UpgradeBackend {
            addr,
            seen: Arc::default(),
            stop: Arc::default(),
            conns: Arc::default(),
        };
        let on_upgrade: Arc<OnUpgrade> = Arc::new(on_upgrade);
        let (seen, stop, conns) = (
            Arc::clone(&backend.seen),
            Arc::clone(&backend.stop),
            Arc::clone(&backend.conns),
        );
        thread::spawn(move || {
            for (id, stream) in (0u64..).zip(listener.incoming()) {
                if stop.load(SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                if let Ok(clone) = stream.try_clone() {
                    conns.lock().unwrap().insert(id, clone);
                }
                let (seen, on_upgrade) = (Arc::clone(&seen), Arc::clone(&on_upgrade));
                let conns = Arc::clone(&conns);
                thread::spawn(move || {
                    serve(stream, &seen, &*on_upgrade);
                    // The last descriptor of the connection: closing it sends the FIN.
                    conns.lock().unwrap().remove(&id);
                    seen.ended.fetch_add(1, SeqCst);
                });
            }
        });
        backend
    }

    /// A WebSocket echo: text and binary messages come back as they came; pings are answered;
    /// the close codes are recorded in [`Seen::close_codes`].
    pub fn websocket_echo() -> Self {
        UpgradeBackend::start(|head, mut stream, read_ahead, seen| {
            if stream.write_all(switching(head).as_bytes()).is_err() {
                return;
            }
            let mut ws = WebSocket::from_partially_read(stream, read_ahead, Role::Server, None);
            loop {
                let echo = match ws.read() {
                    Ok(m @ (Message::Text(_) | Message::Binary(_))) => m,
                    Ok(Message::Close(frame)) => {
                        let code = frame.map(|f| u16::from(f.code));
                        seen.close_codes.lock().unwrap().push(code);
                        continue;
                    }
                    Ok(_) => continue,
                    Err(_) => return,
                };
                if ws.send(echo).is_err() {
                    return;
                }
            }
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every connection is shut down at once, as when the backend process dies.
    pub fn kill_connections(&self) {
        for c in self.conns.lock().unwrap().values() {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for UpgradeBackend {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        self.kill_connections();
    }
}

/// Serves one connection: plain requests one after the other, until one asks to upgrade.
fn serve(stream: TcpStream, seen: &Seen, on_upgrade: &OnUpgrade) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let Ok(Some(head)) = read_head(&mut reader) else {
            return;
        };
        let upgrading = head.has_header("upgrade")
            && head
                .header_values("connection")
                .iter()
                .any(|v| v.to_ascii_lowercase().contains("upgrade"));
        if upgrading {
            seen.upgrades.fetch_add(1, SeqCst);
            let read_ahead = reader.buffer().to_vec();
            return on_upgrade(&head, out, read_ahead, seen);
        }
        seen.plain.lock().unwrap().push(head);
        if reply(&mut out, 200, &[("Content-Type", "text/plain")], b"plain").is_err() {
            return;
        }
    }
}

/// The 101 head that answers `head`: `Upgrade` as asked, and `Sec-WebSocket-Accept` for its
/// `Sec-WebSocket-Key` when it has one.
pub fn switching(head: &Head) -> String {
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: {}\r\nConnection: Upgrade\r\n",
        head.header("upgrade").unwrap_or("websocket")
    );
    if let Some(key) = head.header("sec-websocket-key") {
        out.push_str(&format!(
            "Sec-WebSocket-Accept: {}\r\n",
            derive_accept_key(key.as_bytes())
        ));
    }
    out.push_str("\r\n");
    out
}

/// A WebSocket client connected through the balancer at `addr` to `path`, with read and write
/// timeouts on its socket.
pub fn ws_connect(addr: SocketAddr, path: &str) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let url = format!("ws://{addr}{path}");
    let (ws, response) = tungstenite::client::client(url, stream)
        .unwrap_or_else(|e| panic!("WebSocket handshake through the balancer failed: {e}"));
    assert_eq!(response.status(), 101);
    ws
}

/// Sends `text` and returns the text that comes back.
pub fn ws_echo(ws: &mut WebSocket<TcpStream>, text: &str) -> String {
    ws.send(Message::text(text)).unwrap();
    loop {
        match ws.read().unwrap() {
            Message::Text(t) => return t.to_string(),
            Message::Pong(_) | Message::Ping(_) => {}
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// The request head of a WebSocket handshake for `path` (fixed key, as in RFC 6455 §1.3).
pub fn handshake(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
}

/// Opens a connection to `addr`, writes `request` (a handshake, and maybe bytes behind it), and
/// reads the answer's head. Returns the head's text, the bytes read past it, and the socket.
pub fn raw_upgrade(addr: SocketAddr, request: &[u8]) -> (String, Vec<u8>, TcpStream) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.write_all(request).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let n = reader.read_until(b'\n', &mut head).unwrap();
        assert!(
            n > 0,
            "closed inside the answer head: {:?}",
            String::from_utf8_lossy(&head)
        );
    }
    let rest = reader.buffer().to_vec();
    (String::from_utf8(head).unwrap(), rest, stream)
}

/// Reads until `want` bytes have arrived after `have` (or fails after the socket's timeout).
pub fn read_at_least(stream: &mut TcpStream, mut have: Vec<u8>, want: usize) -> Vec<u8> {
    let mut buf = [0u8; 4096];
    while have.len() < want {
        match stream.read(&mut buf) {
            Ok(0) => panic!("closed after {:?}", String::from_utf8_lossy(&have)),
            Ok(n) => have.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read: {e} after {:?}", String::from_utf8_lossy(&have)),
        }
    }
    have
}

/// Reads to the end of the stream; the error that ended it instead, if one did.
pub fn read_to_end(stream: &mut TcpStream) -> (Vec<u8>, Option<io::Error>) {
    let mut all = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (all, None),
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) => return (all, Some(e)),
        }
    }
}

//! `/ws`: a WebSocket echo (RFC 6455), through `tungstenite`. Every text or binary message comes
//! back prefixed with the server's name (`server1: hello`), so a client behind the balancer sees
//! which backend holds its tunnel. Pings are answered with pongs and a close is answered with a
//! close, by tungstenite.
//!
//! The handshake is answered from the head `http.rs` has already read (tungstenite's own
//! handshake would read the head again): `Sec-WebSocket-Accept` is the client's key through
//! [`derive_accept_key`], and the bytes the client sent behind its head (its first frames,
//! perhaps) are handed to [`WebSocket::from_partially_read`].

use std::io::{self, Write};
use std::net::TcpStream;

use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::Role;
use tungstenite::{Message, WebSocket};

/// Answers the handshake whose `Sec-WebSocket-Key` is `key`, then echoes messages on `stream`
/// until the client closes (or the server stops: its connections are shut down). `read_ahead`
/// are the bytes read past the head. Runs on the connection's own thread.
pub fn echo(mut stream: TcpStream, read_ahead: Vec<u8>, key: &str, name: &str) -> io::Result<()> {
    let accept = derive_accept_key(key.as_bytes());
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(head.as_bytes())?;
    let peer = stream.peer_addr()?;
    log::info!("{name}: WebSocket open to {peer}");
    let mut ws = WebSocket::from_partially_read(stream, read_ahead, Role::Server, None);
    let prefix = format!("{name}: ");
    loop {
        let answer = match ws.read() {
            Ok(Message::Text(text)) => Message::text(format!("{prefix}{text}")),
            Ok(Message::Binary(data)) => {
                let mut echoed = Vec::with_capacity(prefix.len() + data.len());
                echoed.extend_from_slice(prefix.as_bytes());
                echoed.extend_from_slice(&data);
                Message::binary(echoed)
            }
            Ok(Message::Close(frame)) => {
                let code = frame.map_or("none".to_string(), |f| u16::from(f.code).to_string());
                log::info!("{name}: WebSocket to {peer} closed by the client (code {code})");
                // tungstenite has queued the close reply; reading on sends it and ends.
                continue;
            }
            // Pongs to pings are queued by tungstenite and go out with the next write or read.
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                return Ok(())
            }
            Err(e) => {
                log::info!("{name}: WebSocket to {peer} ended: {e}");
                return Ok(());
            }
        };
        if let Err(e) = ws.send(answer) {
            log::info!("{name}: WebSocket to {peer} ended: {e}");
            return Ok(());
        }
    }
}

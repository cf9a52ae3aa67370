//! Tunnels: after a `101 Switching Protocols` (a WebSocket, say) the connection is no longer
//! HTTP, and the poller relays its bytes both ways between the client and the peer socket the
//! handler handed over, until both are done. A tunnel may last hours; it holds two descriptors
//! and two small buffers, never a thread.
//!
//! **The hand-over.** A handler that got a 101 from its peer calls
//! [`Exchange::switch_protocols`](super::Exchange::switch_protocols) with the peer socket and
//! the bytes the peer sent behind its 101 head. The exchange writes the 101 head without
//! waiting (what the client does not take at once waits in the tunnel's buffer, ahead of the
//! peer's bytes), and the worker hands both sockets to the poller through the slot's mailbox
//! (`handoff.rs`): the worker is free at once. The peer socket is registered in the poller's
//! `epoll` under the slot's key with [`PEER_KEY`] set, so that an event of either socket finds
//! the same slot. The bytes the client sent behind its upgrade request go to the peer first.
//!
//! **The relay.** Each direction has a buffer of at most `buffers memory=` (64 KiB). On an event
//! of either socket the poller moves what it can: it offers each buffer to its destination,
//! then reads the source into the destination directly, keeping in the buffer only what the
//! destination did not take. A side whose buffer is full is not read (backpressure: the
//! sender's TCP window closes, as if it talked to a slow reader directly). A buffer that
//! empties is freed, so an idle tunnel holds no buffer memory.
//!
//! **The end.** A side that sends FIN has its half-close passed on (`shutdown(Write)` of the
//! other side, once its buffer is out); the tunnel ends when both directions are done. A reset
//! (or any failure) of either side ends it at once, and the other side gets a reset too, so
//! that it never takes a broken tunnel for a finished one. With no byte in either direction
//! for `timeouts tunnel=` (1 h) the tunnel is closed; once half-closed, after `timeouts
//! client=` (60 s), as HAProxy's `timeout client-fin`. The handler's callback is told how it
//! ended ([`TunnelEnd`]) and the bytes read from each side.
//!
//! Worked example, `buffers memory=64KiB`: a peer sends 200 KiB to a client that reads slowly.
//! The poller reads 16 KiB, the client takes 10 KiB: 6 KiB stay in the buffer. The next reads
//! fill the buffer to 64 KiB; from then on the peer is not read (only the client's socket is
//! watched for room), and the peer's kernel buffers fill until its writes block. As the client
//! takes bytes the buffer drains, and reading the peer resumes.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use polling::Event;

use super::connection::{reset, Conn};
use super::epoll::Epoll;
use super::gauges::Gauges;
use super::handoff::{Front, Mailbox, Returned};
use super::limits::Limits;

/// The bit set in the `epoll` key of a tunnel's peer socket: the rest of the key is its client's
/// (the slot's index plus one), so an event of either socket finds the slot.
pub(crate) const PEER_KEY: usize = 1 << (usize::BITS - 1);

/// The client's key (the slot's index plus one) for an `epoll` key of either socket.
pub(crate) fn client_key(key: usize) -> usize {
    key & !PEER_KEY
}

/// Reads from one side per event and direction at most: one fast tunnel cannot hold the poller;
/// if there is more, the next event comes at once. 4.
const READS_PER_EVENT: usize = 4;

/// How a tunnel ended, told to its callback (see [`Exchange::switch_protocols`]).
///
/// [`Exchange::switch_protocols`]: super::Exchange::switch_protocols
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelEnd {
    /// The client closed it (its FIN came first, or it reset the connection).
    Client,
    /// The peer closed it (for the balancer: the backend).
    Peer,
    /// Nothing moved either way for `timeouts tunnel=` (or `timeouts client=` once half-closed).
    Idle,
    /// The drain of a graceful shutdown was over.
    Shutdown,
    /// A failure other than a reset, or the tunnel could not be set up.
    Error,
}

impl TunnelEnd {
    /// Every end, in a stable order (the order of [`FrontStats::tunnels_ended`]).
    ///
    /// [`FrontStats::tunnels_ended`]: super::FrontStats::tunnels_ended
    pub const ALL: [TunnelEnd; 5] = [
        TunnelEnd::Client,
        TunnelEnd::Peer,
        TunnelEnd::Idle,
        TunnelEnd::Shutdown,
        TunnelEnd::Error,
    ];
}

/// A tunnel that has ended: how, and the bytes read from each side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelEnded {
    /// How it ended.
    pub how: TunnelEnd,
    /// Bytes read from the client (for the peer), including those that came behind the
    /// upgrade request.
    pub up: u64,
    /// Bytes read from the peer (for the client), including those that came behind its 101
    /// head (the head itself not counted).
    pub down: u64,
}

/// A callback told how a tunnel ended, exactly once.
pub type OnTunnelEnd = Box<dyn FnOnce(TunnelEnded) + Send>;

/// Counts one tunnel (open, or reserved by a handler that is about to open it) in
/// [`Gauges`], under a limit. Returns false, counting nothing, when `max` are counted already.
pub(crate) fn reserve(gauges: &Gauges, max: usize) -> bool {
    gauges
        .tunnels
        .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
        .is_ok()
}

/// What a tunnel owes when it ends: the handler's callback (called exactly once, also when the
/// tunnel is dropped), the gauges' count of open tunnels and of their ends, and the bytes read.
pub(crate) struct Ender {
    callback: Option<OnTunnelEnd>,
    gauges: Arc<Gauges>,
    /// How it ended; until told otherwise, `Error` (a tunnel dropped unexpectedly).
    pub how: TunnelEnd,
    up: u64,
    down: u64,
}

impl Ender {
    /// Takes over the count of one tunnel already counted in `gauges` (see [`reserve`]).
    pub fn new(callback: OnTunnelEnd, gauges: Arc<Gauges>) -> Ender {
        Ender {
            callback: Some(callback),
            gauges,
            how: TunnelEnd::Error,
            up: 0,
            down: 0,
        }
    }

    /// Counts `n` bytes read from the client (`up`) or from the peer.
    pub fn read(&mut self, up: bool, n: usize) {
        let n = n as u64;
        let (mine, total) = if up {
            (&mut self.up, &self.gauges.tunnel_bytes_up)
        } else {
            (&mut self.down, &self.gauges.tunnel_bytes_down)
        };
        *mine += n;
        total.fetch_add(n, Relaxed);
    }
}

impl Drop for Ender {
    fn drop(&mut self) {
        self.gauges.tunnels.fetch_sub(1, Relaxed);
        let index = TunnelEnd::ALL.iter().position(|h| *h == self.how);
        self.gauges.tunnels_ended[index.unwrap_or(0)].fetch_add(1, Relaxed);
        if let Some(callback) = self.callback.take() {
            let ended = TunnelEnded {
                how: self.how,
                up: self.up,
                down: self.down,
            };
            super::tell_handler("telling how a tunnel ended", || callback(ended));
        }
    }
}

/// What an exchange hands to the worker for a tunnel: the peer socket, what is to go to the
/// client first (the rest of the 101 head, the peer's bytes behind it), and the end to tell.
pub(crate) struct TunnelStart {
    pub peer: TcpStream,
    pub to_client: Vec<u8>,
    pub ender: Ender,
}

/// Hands a connection whose exchange switched protocols to the poller as a tunnel (see the
/// module documentation); or closes both sockets with a reset when that fails.
pub(crate) fn hand_over(shared: &Front, conn: Box<Conn>, mailbox: &Mailbox, start: TunnelStart) {
    let key = conn.key;
    let capacity = shared.buffers.limits().memory;
    match Tunnel::new(conn, start, &shared.poller, capacity) {
        Ok(tunnel) => {
            if let Err(returned) = mailbox.put(Returned::Tunnel(tunnel), false) {
                if let Returned::Tunnel(mut tunnel) = returned {
                    tunnel.abort(TunnelEnd::Error);
                }
                shared.closed(key);
            }
        }
        Err(e) => {
            log::warn!("cannot relay a tunnel: {e}");
            shared.closed(key);
        }
    }
}

/// One direction of a tunnel: the bytes read from its source that its destination has not
/// taken yet (`buf[pos..]`), and how far its end has come.
#[derive(Default)]
struct Pipe {
    buf: Vec<u8>,
    pos: usize,
    /// The source sent FIN.
    eof: bool,
    /// The FIN was passed on: the destination's writing side is shut.
    shut: bool,
}

impl Pipe {
    fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos >= self.buf.len() {
            // An idle tunnel holds no buffer.
            self.buf = Vec::new();
            self.pos = 0;
        }
    }

    fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }
}

/// The peer socket, registered with the poller under the client's key with [`PEER_KEY`] set;
/// removed from it when dropped, before the socket closes.
struct Peer {
    stream: TcpStream,
    poller: Arc<Epoll>,
    key: usize,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.poller.delete(&self.stream);
    }
}

/// Which socket of a tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Client,
    Peer,
}

/// A tunnel the poller relays (see the module documentation).
pub(crate) struct Tunnel {
    client: Box<Conn>,
    peer: Peer,
    /// Client to peer.
    up: Pipe,
    /// Peer to client.
    down: Pipe,
    /// Most bytes a direction buffers.
    capacity: usize,
    /// When a byte last arrived from either side.
    last_active: Instant,
    /// Whose FIN came first, once one has.
    first_fin: Option<Side>,
    ender: Ender,
}

impl Tunnel {
    /// A tunnel between `client` and `start`'s peer, which is registered with `poller` (not
    /// armed yet: [`Tunnel::arm`]). What the client sent behind its request goes to the peer
    /// first. Each direction buffers at most `capacity` bytes.
    fn new(
        mut client: Box<Conn>,
        start: TunnelStart,
        poller: &Arc<Epoll>,
        capacity: usize,
    ) -> io::Result<Box<Tunnel>> {
        let TunnelStart {
            peer,
            to_client,
            mut ender,
        } = start;
        let key = client.key | PEER_KEY;
        let registered = peer
            .set_nonblocking(true)
            .and_then(|()| peer.set_nodelay(true))
            // SAFETY: `Peer`'s Drop deletes the socket from the poller before the socket closes.
            .and_then(|()| unsafe { poller.add(&peer, Event::none(key)) });
        if let Err(e) = registered {
            // The client got a 101: a reset tells it the tunnel broke, a FIN would not.
            client.reset();
            reset(&peer);
            return Err(e);
        }
        let from_client = client.take_unread();
        ender.read(true, from_client.len());
        let mut up = Pipe::default();
        up.push(&from_client);
        let mut down = Pipe::default();
        down.push(&to_client);
        Ok(Box::new(Tunnel {
            last_active: Instant::now(),
            client,
            peer: Peer {
                stream: peer,
                poller: Arc::clone(poller),
                key,
            },
            up,
            down,
            capacity,
            first_fin: None,
            ender,
        }))
    }

    /// Asks the poller to report either socket when it can make progress: readable while its
    /// direction has room (and it has not sent FIN), writable while bytes wait for it.
    pub fn arm(&self) -> io::Result<()> {
        let room = |p: &Pipe| !p.eof && p.pending().len() < self.capacity;
        let waiting = |p: &Pipe| !p.pending().is_empty();
        self.client.watch(room(&self.up), waiting(&self.down))?;
        let peer = Event::new(self.peer.key, room(&self.down), waiting(&self.up));
        self.peer.poller.modify(&self.peer.stream, peer)
    }

    /// When the tunnel is closed for silence: `timeouts tunnel=` after the last byte, or
    /// `timeouts client=` once one side has sent FIN.
    pub fn deadline(&self, limits: &Limits) -> Instant {
        let idle = match self.first_fin {
            Some(_) => limits.tunnel_timeout.min(limits.client_timeout),
            None => limits.tunnel_timeout,
        };
        self.last_active + idle
    }

    /// Moves what can be moved both ways now. `Some` when the tunnel has ended: both
    /// directions are done, or a side failed (the other side is then reset).
    pub fn relay(&mut self, scratch: &mut [u8], now: Instant) -> Option<TunnelEnd> {
        for _ in 0..READS_PER_EVENT {
            let moved = match (
                self.step(true, scratch, now),
                self.step(false, scratch, now),
            ) {
                (Ok(a), Ok(b)) => a || b,
                (Err(how), _) | (_, Err(how)) => {
                    self.abort(how);
                    return Some(how);
                }
            };
            if !moved {
                break;
            }
        }
        if self.up.shut && self.down.shut {
            let how = match self.first_fin {
                Some(Side::Peer) => TunnelEnd::Peer,
                _ => TunnelEnd::Client,
            };
            self.ender.how = how;
            return Some(how);
        }
        None
    }

    /// Ends the tunnel abruptly as `how`: both sockets are closed with a reset, so that neither
    /// side takes what it got for the whole stream.
    pub fn abort(&mut self, how: TunnelEnd) {
        self.ender.how = how;
        self.client.reset();
        reset(&self.peer.stream);
    }

    /// Ends the tunnel as `how` with an orderly close (FIN) of both sockets when it is dropped:
    /// silence, or the end of the drain.
    pub fn end(&mut self, how: TunnelEnd) {
        self.ender.how = how;
    }

    /// One direction (`up`: client to peer): offer the buffer to the destination, pass a FIN
    /// on, then read the source once. True when something was read (or its end).
    fn step(&mut self, up: bool, scratch: &mut [u8], now: Instant) -> Result<bool, TunnelEnd> {
        let (pipe, src, dst, src_side, dst_side) = if up {
            let (s, d) = (self.client.socket(), &self.peer.stream);
            (&mut self.up, s, d, Side::Client, Side::Peer)
        } else {
            let (s, d) = (&self.peer.stream, self.client.socket());
            (&mut self.down, s, d, Side::Peer, Side::Client)
        };
        if !pipe.pending().is_empty() {
            let n = write_some(dst, pipe.pending()).map_err(|e| ended_by(dst_side, &e))?;
            pipe.consume(n);
        }
        if pipe.eof && !pipe.shut && pipe.pending().is_empty() {
            let _ = dst.shutdown(Shutdown::Write);
            pipe.shut = true;
        }
        let room = self.capacity.saturating_sub(pipe.pending().len());
        if pipe.eof || room == 0 {
            return Ok(false);
        }
        let want = room.min(scratch.len());
        let n = match read_some(src, &mut scratch[..want]) {
            Ok(Some(n)) => n,
            Ok(None) => return Ok(false),
            Err(e) => return Err(ended_by(src_side, &e)),
        };
        if n == 0 {
            pipe.eof = true;
            self.first_fin.get_or_insert(src_side);
            if pipe.pending().is_empty() {
                let _ = dst.shutdown(Shutdown::Write);
                pipe.shut = true;
            }
            return Ok(true);
        }
        self.last_active = now;
        self.ender.read(up, n);
        let data = &scratch[..n];
        let taken = if pipe.pending().is_empty() {
            write_some(dst, data).map_err(|e| ended_by(dst_side, &e))?
        } else {
            0
        };
        pipe.push(&data[taken..]);
        Ok(true)
    }
}

/// One non-blocking read: `None` when nothing has arrived.
fn read_some(mut src: &TcpStream, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        match src.read(buf) {
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Writes what `dst` takes of `data` now; 0 when it takes nothing.
fn write_some(mut dst: &TcpStream, data: &[u8]) -> io::Result<usize> {
    loop {
        match dst.write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// How a tunnel ends when an operation on `side` fails with `e`: a reset or a closed pipe is
/// that side's doing; anything else is an error.
fn ended_by(side: Side, e: &io::Error) -> TunnelEnd {
    use io::ErrorKind::*;
    match (e.kind(), side) {
        (ConnectionReset | ConnectionAborted | BrokenPipe, Side::Client) => TunnelEnd::Client,
        (ConnectionReset | ConnectionAborted | BrokenPipe, Side::Peer) => TunnelEnd::Peer,
        _ => {
            log::debug!("tunnel: {side:?} failed: {e}");
            TunnelEnd::Error
        }
    }
}

/// How long a tunnel may be silent by default: `timeouts tunnel=`. 1 h (HAProxy's docs suggest
/// `timeout tunnel 1h` for WebSockets).
pub const TUNNEL_TIMEOUT: Duration = Duration::from_secs(3600);

/// Most tunnels open at once by default: `limits tunnels=`. 10 000.
pub const MAX_TUNNELS: usize = 10_000;

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::Mutex;

    /// Two ends of a loopback connection.
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (a, b)
    }

    /// Relays until `done` holds (or fails after 5 s).
    fn relay_until(t: &mut Tunnel, mut done: impl FnMut(&mut Tunnel) -> bool) -> Option<TunnelEnd> {
        let mut scratch = vec![0u8; 16 << 10];
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let end = t.relay(&mut scratch, Instant::now());
            if end.is_some() || done(t) {
                return end;
            }
            assert!(Instant::now() < deadline, "the tunnel made no progress");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn bytes_flow_both_ways_a_fin_is_passed_on_and_the_end_is_told_once() {
        let poller = Arc::new(Epoll::new().unwrap());
        let (mut client, client_side) = pair();
        let (peer_side, mut peer) = pair();
        let addr = client_side.peer_addr().unwrap();
        let now = Instant::now();
        let mut conn =
            Conn::register(client_side, addr, 7, &poller, Duration::from_secs(1), now).unwrap();
        // What the client sent behind its request, and what the peer sent behind its 101.
        conn.put_back(b"early up ");
        let told: Arc<Mutex<Vec<TunnelEnded>>> = Arc::default();
        let noted = Arc::clone(&told);
        let gauges = Arc::new(Gauges::default());
        assert!(
            reserve(&gauges, 1) && !reserve(&gauges, 1),
            "a limit of one"
        );
        let mut ender = Ender::new(
            Box::new(move |e| noted.lock().unwrap().push(e)),
            gauges.clone(),
        );
        ender.read(false, b"early down ".len());
        let start = Box::new(TunnelStart {
            peer: peer_side,
            to_client: b"HTTP/1.1 101 Switching Protocols\r\n\r\nearly down ".to_vec(),
            ender,
        });
        let mut t = Tunnel::new(Box::new(conn), *start, &poller, 64 << 10).unwrap();
        t.arm().unwrap();
        client.write_all(b"up").unwrap();
        peer.write_all(b"down").unwrap();
        let mut up = Vec::new();
        let mut down = Vec::new();
        relay_until(&mut t, |_| {
            let mut buf = [0u8; 256];
            peer.set_nonblocking(true).unwrap();
            client.set_nonblocking(true).unwrap();
            if let Ok(n) = peer.read(&mut buf) {
                up.extend_from_slice(&buf[..n]);
            }
            if let Ok(n) = client.read(&mut buf) {
                down.extend_from_slice(&buf[..n]);
            }
            up.len() == 11 && down.len() == 51
        });
        assert_eq!(up, b"early up up");
        assert_eq!(
            down,
            b"HTTP/1.1 101 Switching Protocols\r\n\r\nearly down down"
        );
        let limits = Limits::default();
        assert_eq!(t.deadline(&limits), t.last_active + limits.tunnel_timeout);

        // The client is done sending: the peer hears the FIN, and may still answer.
        client.shutdown(Shutdown::Write).unwrap();
        peer.set_nonblocking(false).unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut fin = [0u8; 1];
        let mut heard = None;
        relay_until(&mut t, |_| {
            heard = peer.read(&mut fin).ok();
            heard.is_some()
        });
        assert_eq!(heard, Some(0), "the FIN passed on");
        assert_eq!(t.deadline(&limits), t.last_active + limits.client_timeout);
        peer.write_all(b"last").unwrap();
        peer.shutdown(Shutdown::Write).unwrap();
        let end = relay_until(&mut t, |_| false);
        assert_eq!(end, Some(TunnelEnd::Client), "the client's FIN came first");
        drop(t);
        let told = told.lock().unwrap();
        assert_eq!(
            told[..],
            [TunnelEnded {
                how: TunnelEnd::Client,
                up: 11,
                down: 19,
            }]
        );
        let stats = gauges.tunnels.load(Relaxed);
        assert_eq!((stats, gauges.tunnels_ended[0].load(Relaxed)), (0, 1));
    }
}

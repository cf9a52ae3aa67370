//! One client connection: its socket, the bytes received and not yet used, and reads and writes
//! with timeouts.
//!
//! The socket is non-blocking for its whole life. The poller reads and writes it only when
//! `epoll` says it is ready. A worker never waits on it, with two exceptions that are
//! configuration choices: `request_buffering off` (the worker reads the body as it arrives) and
//! full buffers (the worker writes what the client will take); there it waits in `poll(2)` on
//! this one socket, with the client timeout. So no system call is spent switching between
//! blocking and non-blocking mode, and every wait has a deadline.
//!
//! A connection stays registered with the poller from accept to close, in oneshot mode: after
//! the poller has seen it readable it reports nothing more until [`Conn::rearm`]. Dropping a
//! `Conn` removes it from the poller before the socket closes, which `polling` requires.

use std::io::{self, BufRead, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use polling::Event;

use super::epoll::Epoll;

/// Bytes read from the socket at a time by a worker. 16 KiB.
const READ_SIZE: usize = 16 << 10;

/// A client connection (see the module documentation).
pub(crate) struct Conn {
    stream: TcpStream,
    /// The client's address.
    pub peer: SocketAddr,
    /// Bytes received; `buf[pos..]` are not used yet.
    buf: Vec<u8>,
    pos: usize,
    /// Of `buf[pos..]`, how many bytes were already searched for the end of a head.
    pub scanned: usize,
    /// When the first byte of the head being received arrived.
    pub head_started: Option<Instant>,
    /// When the connection last became idle (accepted, or given back after an answer).
    pub idle_since: Instant,
    /// The client has finished sending (its end of the stream came after requests it
    /// pipelined): those are answered, then the connection closes instead of waiting for more.
    pub client_done: bool,
    /// The poller's key for this connection.
    pub key: usize,
    /// How long a worker's read or write may wait.
    pub io_timeout: Duration,
    poller: Arc<Epoll>,
}

impl Conn {
    /// Registers an accepted socket with `poller` under `key` (readable, oneshot).
    pub fn register(
        stream: TcpStream,
        peer: SocketAddr,
        key: usize,
        poller: &Arc<Epoll>,
        io_timeout: Duration,
        now: Instant,
    ) -> io::Result<Conn> {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        // SAFETY: `Conn`'s Drop deletes the socket from the poller before the socket closes.
        unsafe { poller.add(&stream, Event::readable(key))? };
        Ok(Conn {
            stream,
            peer,
            buf: Vec::new(),
            pos: 0,
            scanned: 0,
            head_started: None,
            idle_since: now,
            client_done: false,
            key,
            io_timeout,
            poller: Arc::clone(poller),
        })
    }

    /// Asks the poller to report this connection when it is next readable (or at once if it
    /// already is).
    pub fn rearm(&self) -> io::Result<()> {
        self.poller.modify(&self.stream, Event::readable(self.key))
    }

    /// Asks the poller to report this connection when it can take more of an answer.
    pub fn rearm_writable(&self) -> io::Result<()> {
        self.poller.modify(&self.stream, Event::writable(self.key))
    }

    /// Asks the poller to report this connection when it is `readable` and/or `writable` (a
    /// tunnel's client side); neither still reports an error or a hang-up.
    pub fn watch(&self, readable: bool, writable: bool) -> io::Result<()> {
        let event = Event::new(self.key, readable, writable);
        self.poller.modify(&self.stream, event)
    }

    /// The socket, for non-blocking writes (`&TcpStream` is a `Write`).
    pub fn socket(&self) -> &TcpStream {
        &self.stream
    }

    /// Puts bytes read past the end of a request body back in front of the unread ones: they
    /// are the start of what the client sent next.
    pub fn put_back(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut rest = bytes.to_vec();
        rest.extend_from_slice(self.unread());
        self.buf = rest;
        self.pos = 0;
    }

    /// The bytes received and not used yet.
    pub fn unread(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Takes the unread bytes out.
    pub fn take_unread(&mut self) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.drain(..self.pos);
        self.pos = 0;
        self.scanned = 0;
        buf
    }

    /// Marks `n` unread bytes as used.
    pub fn consume_unread(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
        self.scanned = self.scanned.saturating_sub(n);
        if self.pos == self.buf.len() {
            // Idle connections keep no buffer: ten thousand of them cost no memory here.
            self.buf = Vec::new();
            self.pos = 0;
        }
    }

    /// One non-blocking read into `scratch`, whose bytes are appended to the unread ones.
    /// `Ok(0)` is the end of the stream; `WouldBlock` means nothing has arrived.
    pub fn read_available(&mut self, scratch: &mut [u8]) -> io::Result<usize> {
        let n = (&self.stream).read(scratch)?;
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(&scratch[..n]);
        Ok(n)
    }

    /// One non-blocking read into `scratch`, past the unread bytes: a request body the poller
    /// buffers, or bytes dropped in a lingering close. `Ok(0)` is the end of the stream;
    /// `WouldBlock` means nothing has arrived.
    pub fn read_raw(&self, scratch: &mut [u8]) -> io::Result<usize> {
        (&self.stream).read(scratch)
    }

    /// Waits up to the io timeout for `events` (`libc::POLLIN` or `POLLOUT`) on the socket.
    fn wait_for(&self, events: libc::c_short) -> io::Result<()> {
        let mut pfd = libc::pollfd {
            fd: self.stream.as_raw_fd(),
            events,
            revents: 0,
        };
        let ms = self.io_timeout.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        loop {
            // SAFETY: `pfd` is one valid pollfd for the duration of the call.
            let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
            match ready {
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client timeout: the client sent nothing or took nothing in time",
                    ))
                }
                n if n > 0 => return Ok(()),
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Reads from the socket into `out`, waiting up to the io timeout for bytes.
    fn read_socket(&self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            match (&self.stream).read(out) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait_for(libc::POLLIN)?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                result => return result,
            }
        }
    }

    /// Waits up to the io timeout until the socket can take more bytes.
    pub fn wait_writable(&self) -> io::Result<()> {
        self.wait_for(libc::POLLOUT)
    }

    /// Writes what of `parts` the socket takes now (`writev`), without waiting; returns how many
    /// bytes went.
    pub fn try_write_vectored(&self, parts: &[&[u8]]) -> io::Result<usize> {
        let mut slices: Vec<IoSlice<'_>> = parts
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| IoSlice::new(p))
            .collect();
        let mut slices = &mut slices[..];
        let mut sent = 0;
        while !slices.is_empty() {
            match (&self.stream).write_vectored(slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    sent += n;
                    IoSlice::advance_slices(&mut slices, n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(sent)
    }

    /// Writes all of `data`, waiting up to the io timeout each time the socket is full.
    pub fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        loop {
            data = &data[self.try_write_vectored(&[data])?..];
            if data.is_empty() {
                return Ok(());
            }
            self.wait_writable()?;
        }
    }

    /// Writes what fits into the socket now, without waiting. True when all of `data` went.
    pub fn try_write_all(&self, data: &[u8]) -> bool {
        self.try_write_vectored(&[data])
            .is_ok_and(|n| n == data.len())
    }

    /// Stops sending (our side of the connection is finished) while still receiving.
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Makes closing this connection send a reset (RST) instead of an orderly end (FIN), as for
    /// an answer cut off: a client reading a body that ends when the connection does (no
    /// length, HTTP/1.0) would take a FIN for the end of a whole answer. See [`reset`].
    pub fn reset(&self) {
        reset(&self.stream);
    }
}

/// Makes closing `stream` send a reset (RST) instead of an orderly end (FIN): `SO_LINGER` with a
/// zero timeout.
pub(crate) fn reset(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt(2) on a descriptor `stream` owns, reading `linger` for the size given.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

impl Read for Conn {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.buf.len() {
            let n = out.len().min(self.buf.len() - self.pos);
            out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.consume_unread(n);
            return Ok(n);
        }
        self.read_socket(out)
    }
}

impl BufRead for Conn {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.buf.len() {
            let mut buf = std::mem::take(&mut self.buf);
            buf.resize(READ_SIZE, 0);
            self.pos = 0;
            let result = self.read_socket(&mut buf);
            self.buf = buf;
            let n = match result {
                Ok(n) => n,
                Err(e) => {
                    self.buf = Vec::new();
                    return Err(e);
                }
            };
            self.buf.truncate(n);
        }
        Ok(&self.buf[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.consume_unread(n);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let _ = self.poller.delete(&self.stream);
    }
}

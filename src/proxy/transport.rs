//! The TCP transport to backends: what ureq's own `TcpTransport` does, minus system calls that
//! do nothing for a proxy.
//!
//! **Probing.** ureq asks a connection whether it is still open twice per request: when it goes
//! back to the pool right after a response, and again when it is taken out for the next request.
//! Only the second can catch what matters, a backend that closed an idle connection or sent
//! bytes nobody asked for, so the first is answered "open" without looking. The second is one
//! `recv(MSG_PEEK | MSG_DONTWAIT)` where ureq makes three calls (non-blocking mode on, a read,
//! non-blocking mode off).
//!
//! **Socket timeouts.** ureq passes the time left until the request's deadline, which differs on
//! every read; setting it would cost a `setsockopt` each time. Rounding it up to
//! [`TIMEOUT_GRANULARITY`] makes consecutive values equal, and the call is skipped when the value
//! has not changed. A timeout then fires at most 10 ms late.
//!
//! **Resets.** A reset by the backend is reported to ureq as an error of another kind (see
//! `is_reset`), so that a body delimited by the connection's end is never taken as whole when
//! the backend broke off.
//!
//! **Waiting for the answer.** A blocking read: the worker sleeps until the backend answers.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, ShutdownHandle, Transport,
};
use ureq::Timeout;

/// Socket timeouts are rounded up to a multiple of this. 10 ms.
pub const TIMEOUT_GRANULARITY: Duration = Duration::from_millis(10);

/// `timeout` rounded up to [`TIMEOUT_GRANULARITY`]; `None` when it never happens.
fn coarse(timeout: &NextTimeout) -> Option<Duration> {
    let d = *timeout.not_zero()?;
    let step = TIMEOUT_GRANULARITY.as_nanos();
    let rounded = d.as_nanos().div_ceil(step) * step;
    Some(Duration::from_nanos(rounded.min(u64::MAX as u128) as u64))
}

/// Fails with the timeout when `timeout` has run out; otherwise gives the socket the timeout
/// rounded by [`coarse`] through `set`, unless that is the value already set (`current`).
fn apply_timeout(
    timeout: &NextTimeout,
    current: &mut Option<Duration>,
    set: impl FnOnce(Option<Duration>) -> io::Result<()>,
) -> Result<(), ureq::Error> {
    if timeout.after.is_zero() {
        return Err(ureq::Error::Timeout(timeout.reason));
    }
    let wanted = coarse(timeout);
    if wanted != *current {
        set(wanted)?;
        *current = wanted;
    }
    Ok(())
}

/// Connects to backends over plain TCP, making [`BackendTransport`]s.
#[derive(Debug, Default)]
pub struct BackendConnector;

impl Connector<()> for BackendConnector {
    type Out = BackendTransport;

    fn connect(
        &self,
        details: &ConnectionDetails,
        _chained: Option<()>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let config = details.config;
        let stream = connect(details.addrs.iter().copied(), &details.timeout)?;
        if config.no_delay() {
            stream.set_nodelay(true)?;
        }
        let stream = Arc::new(stream);
        (details.register_shutdown)(Arc::downgrade(&stream) as Weak<dyn ShutdownHandle>)?;
        Ok(Some(BackendTransport {
            stream,
            buffers: LazyBuffers::new(config.input_buffer_size(), config.output_buffer_size()),
            read_timeout: None,
            write_timeout: None,
            used: false,
        }))
    }
}

/// Connects to the first of `addrs` that answers within `timeout` in all: the upgrade
/// exchange's connection (`upgrade.rs`), made the way the agents make theirs.
pub(super) fn connect_within(
    addrs: impl Iterator<Item = SocketAddr>,
    timeout: Duration,
) -> Result<TcpStream, ureq::Error> {
    let timeout = NextTimeout {
        after: ureq::unversioned::transport::time::Duration::Exact(timeout),
        reason: Timeout::Connect,
        per_read: None,
        per_write: None,
    };
    connect(addrs, &timeout)
}

/// Tries each address in turn within the connect timeout.
fn connect(
    addrs: impl Iterator<Item = SocketAddr>,
    timeout: &NextTimeout,
) -> Result<TcpStream, ureq::Error> {
    let deadline = timeout.not_zero().map(|t| std::time::Instant::now() + *t);
    let mut last = None;
    for addr in addrs {
        let attempt = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(ureq::Error::Timeout(Timeout::Connect));
                }
                TcpStream::connect_timeout(&addr, left)
            }
            None => TcpStream::connect(addr),
        };
        match attempt {
            Ok(stream) => return Ok(stream),
            Err(e) if is_timeout(&e) => last = Some(ureq::Error::Timeout(Timeout::Connect)),
            Err(e) => last = Some(ureq::Error::Io(e)),
        }
    }
    Err(last.unwrap_or_else(|| {
        ureq::Error::Io(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "no address to connect to",
        ))
    }))
}

/// A reset by the backend. ureq takes a reset while it reads a body for the body's end, which is
/// right for nothing: a body delimited by the connection's end ends with a FIN, and a reset
/// means the backend failed. So a reset reaches ureq as another error, and the answer is cut
/// off (the client gets a reset too) rather than passed off as whole.
fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
    )
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// One connection to a backend (see the module documentation for how it differs from ureq's).
pub struct BackendTransport {
    /// Shared (weakly) with the agent, which shuts it down on `Agent::shutdown`.
    stream: Arc<TcpStream>,
    buffers: LazyBuffers,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    /// Set by any I/O; the next liveness question is answered "open" without probing.
    used: bool,
}

impl fmt::Debug for BackendTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendTransport")
            .field("peer", &self.stream.peer_addr().ok())
            .finish()
    }
}

impl BackendTransport {
    /// Reads into the input buffer, sleeping until the backend's answer comes: the one context
    /// switch a request needs. (Looking a few times first, yielding in between, saved switches
    /// when workers slept between requests too, and cost a `sched_yield` and a `recvfrom` per
    /// look; see docs/PERFORMANCE.md.)
    fn read_some(&mut self) -> io::Result<usize> {
        loop {
            match (&*self.stream).read(self.buffers.input_append_buf()) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                result => return result,
            }
        }
    }
}

/// recv(2) with `flags`.
fn recv(stream: &TcpStream, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: the pointer and length describe `buf`, which outlives the call; the descriptor
    // is owned by `stream`, which is borrowed for the call.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

impl Transport for BackendTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.used = true;
        let mut timeout = timeout.for_write();
        // The whole buffer (at most the output buffer's size, 32 KiB) must go within the
        // timeout: a socket timeout alone restarts at each partial write, and a backend that
        // stopped reading still takes a few bytes a second as its window is probed, which would
        // stretch the wait without bound.
        let deadline = timeout.not_zero().map(|t| Instant::now() + *t);
        let mut output = &self.buffers.output()[..amount];
        while !output.is_empty() {
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                timeout.after = ureq::unversioned::transport::time::Duration::Exact(left);
            }
            apply_timeout(&timeout, &mut self.write_timeout, |t| {
                self.stream.set_write_timeout(t)
            })?;
            match (&*self.stream).write(output) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                Ok(n) => output = &output[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Err(ureq::Error::Timeout(timeout.reason)),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.used = true;
        let timeout = timeout.for_read();
        apply_timeout(&timeout, &mut self.read_timeout, |t| {
            self.stream.set_read_timeout(t)
        })?;
        match self.read_some() {
            Ok(n) => {
                self.buffers.input_appended(n);
                Ok(n > 0)
            }
            Err(e) if is_timeout(&e) => Err(ureq::Error::Timeout(timeout.reason)),
            Err(e) if is_reset(&e) => Err(io::Error::other(format!("backend reset: {e}")).into()),
            Err(e) => Err(e.into()),
        }
    }

    fn is_open(&mut self) -> bool {
        if std::mem::take(&mut self.used) {
            return true;
        }
        // Open means nothing to read yet: bytes are garbage the backend should not have sent,
        // and end of stream or an error means it is gone.
        let mut byte = [0u8];
        matches!(
            recv(&self.stream, &mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock
        )
    }

    fn is_tls(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;
    use ureq::unversioned::transport::time::Duration as UreqDuration;

    fn next(after: Duration) -> NextTimeout {
        NextTimeout {
            after: UreqDuration::Exact(after),
            reason: Timeout::RecvResponse,
            per_read: None,
            per_write: None,
        }
    }

    #[test]
    fn timeouts_round_up_to_the_granularity() {
        let ms =
            |ms: u64, us: u64| coarse(&next(Duration::from_millis(ms) + Duration::from_micros(us)));
        assert_eq!(ms(29_999, 1), Some(Duration::from_secs(30)));
        assert_eq!(ms(29_990, 900), Some(Duration::from_secs(30)));
        assert_eq!(ms(300, 0), Some(Duration::from_millis(300)));
        assert_eq!(ms(0, 1), Some(Duration::from_millis(10)));
    }

    fn transport(stream: TcpStream) -> BackendTransport {
        BackendTransport {
            stream: Arc::new(stream),
            buffers: LazyBuffers::new(1024, 1024),
            read_timeout: None,
            write_timeout: None,
            used: false,
        }
    }

    #[test]
    fn a_connection_is_open_until_the_peer_closes_or_sends_unasked() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut theirs, _) = listener.accept().unwrap();
        let mut t = transport(ours);
        assert!(t.is_open());
        theirs.write_all(b"x").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while t.is_open() {
            assert!(
                std::time::Instant::now() < deadline,
                "unasked bytes not seen"
            );
            thread::sleep(Duration::from_millis(1));
        }

        let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (theirs, _) = listener.accept().unwrap();
        let mut t = transport(ours);
        drop(theirs);
        while t.is_open() {
            assert!(std::time::Instant::now() < deadline, "close not seen");
            thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn reads_wait_for_the_answer_and_time_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut theirs, _) = listener.accept().unwrap();
        let mut t = transport(ours);
        let err = t.await_input(next(Duration::from_millis(30))).unwrap_err();
        assert!(
            matches!(err, ureq::Error::Timeout(Timeout::RecvResponse)),
            "{err:?}"
        );
        let writer = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            theirs.write_all(b"HTTP/1.1 200 OK\r\n").unwrap();
            theirs
        });
        assert!(t.await_input(next(Duration::from_secs(5))).unwrap());
        assert_eq!(t.buffers().input(), b"HTTP/1.1 200 OK\r\n");
        drop(writer.join().unwrap());
        assert!(
            !t.await_input(next(Duration::from_secs(5))).unwrap(),
            "end of stream"
        );
    }
}

//! The support module of every integration test binary: each `tests/<area>/main.rs` has
//! `#[path = "../support/mod.rs"] mod support;`, and its test modules `use crate::support::...`.
//!
//! - [`Backend`] (backend.rs): the one programmable HTTP/1.1 test backend on a raw
//!   `TcpListener`. It records every request and answers with a handler's raw bytes;
//!   [`Backend::named`] answers its name and is steered at run time (health, delay, 503s,
//!   dropped connections); any backend can be killed and restarted on its port.
//! - [`Client`] (client.rs): writes raw request bytes over a `TcpStream` and parses the answer
//!   itself (status, headers with repeats, body by `Content-Length` or chunked decoding),
//!   reporting a body cut short instead of hiding it.
//! - wire.rs: reading and writing HTTP/1.1 heads and bodies, for both sides.
//! - [`Pattern`] (data.rs): a deterministic data stream generated piece by piece, so neither
//!   side ever holds a large body in memory.
//! - [`Lb`] (balancer.rs) runs the balancer in-process on `127.0.0.1:0`; [`LbProcess`]
//!   (process.rs) runs the built binary.
//! - [`Traffic`], [`poll`], [`serial`], [`LogCapture`] (traffic.rs): continuous load and what
//!   the resilience tests measure with.
//! - [`UpgradeBackend`] (upgrade.rs): a backend that switches protocols (a WebSocket echo, or
//!   raw bytes), and the client's side of a WebSocket ([`ws_connect`]) or a raw upgrade.
//! - [`Redis`] (redis_server.rs): a real `redis-server` on a free port, for shared limits;
//!   skipped with a note where it is not installed, a failure under CI.
//!
//! Everything binds loopback only, and every wait polls against a deadline.
#![allow(dead_code, unused_imports)] // each test binary uses a different part of this module

mod backend;
mod balancer;
mod client;
mod data;
mod process;
mod redis_server;
mod traffic;
mod upgrade;
mod wire;

pub use backend::*;
pub use balancer::*;
pub use client::*;
pub use data::*;
pub use process::*;
pub use redis_server::*;
pub use traffic::*;
pub use upgrade::*;
pub use wire::*;

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

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

/// Binds and releases a port on loopback, for the binary (which does not report the port it
/// bound). Callers retry if another process takes it in between.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Gives the socket `fd` a receive buffer of `size` bytes (the kernel doubles it for its own
/// bookkeeping), fixed: the kernel does not grow it as it grows a default one. Set on a listener,
/// its accepted sockets inherit it.
pub fn set_receive_buffer(fd: std::os::fd::RawFd, size: libc::c_int) -> std::io::Result<()> {
    // SAFETY: setsockopt(2) on a descriptor the caller owns, reading `size` for its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Makes closing `stream` send a reset (RST) instead of a FIN: `SO_LINGER` with a zero timeout.
pub fn reset_on_close(stream: &impl std::os::fd::AsRawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt(2) on a descriptor the caller owns, reading `linger` for its size.
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

/// True when a TCP connection to `addr` is refused (nothing listening).
pub fn refuses_connections(addr: SocketAddr) -> bool {
    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(_) => false,
        Err(e) => e.kind() == io::ErrorKind::ConnectionRefused,
    }
}

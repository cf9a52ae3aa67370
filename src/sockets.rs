//! What tiny_http does not let a handler do with its sockets, done from outside on the socket
//! descriptors: client timeouts, closing the listener, closing one client connection.
//!
//! Each function borrows a descriptor it does not own through a `ManuallyDrop<TcpStream>`, so
//! the owner's descriptor is never closed here; the `unsafe` blocks say why each use is sound.

use std::collections::HashSet;
use std::io::{self, Write};
use std::mem::ManuallyDrop;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// Identifies a client connection well enough to find its socket: the peer address and the
/// local (listening) port.
#[derive(Clone, Copy, Debug)]
pub struct ConnId {
    /// The client's address and port.
    pub peer: SocketAddr,
    /// Our listening port.
    pub local_port: u16,
}

/// Gives every client connection a read and write timeout, and turns off Nagle's algorithm
/// (`TCP_NODELAY`) on it. Linux copies these options from a listening socket to every connection
/// it accepts, so they are set once, here, since tiny_http sets none.
///
/// Timeouts: without them an idle keep-alive client, a client that trickles its headers or body,
/// or one that stops reading our answer would hold its thread (and a worker) forever. The same
/// timeout also bounds tiny_http's `accept`; the watchdog connects at least every half timeout so
/// that it never expires (and if it did, the acceptor starts tiny_http again).
///
/// `TCP_NODELAY`: tiny_http writes an answer in pieces (its buffer holds 1 KiB). With Nagle's
/// algorithm the last small piece waits for the client's acknowledgement of the earlier ones,
/// which a client delays by up to 40 ms: a 4 KiB answer took 44 ms (p50, peerbench `BODY=4096`)
/// instead of 6. nginx and HAProxy set it on client connections too.
pub fn set_client_options(listener: &TcpListener, timeout: Duration) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: as in shutdown_socket: the descriptor stays owned by `listener`.
        let s = ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(listener.as_raw_fd()) });
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        s.set_nodelay(true)?;
    }
    #[cfg(not(unix))]
    let _ = (listener, timeout);
    Ok(())
}

/// Shuts down a listening socket so that tiny_http's accept thread stops and new connections are
/// refused, while our handle keeps the descriptor valid.
pub fn shutdown_socket(listener: &TcpListener) {
    #[cfg(unix)]
    {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: the descriptor is owned by `listener`, which outlives this call; ManuallyDrop
        // keeps the temporary TcpStream from closing it. shutdown(2) on a listening socket only
        // stops it accepting.
        let s = ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(listener.as_raw_fd()) });
        let _ = s.shutdown(Shutdown::Both);
    }
}

/// Closes a client connection that tiny_http owns, optionally writing `last_words` first.
///
/// tiny_http has no way to close a connection from a handler, and keeps reading the next request
/// from it after a failed response. On Linux the socket is found among the process's descriptors
/// by its peer address and local port and shut down; tiny_http then sees the end of the stream
/// and drops the connection. Elsewhere this does nothing.
pub fn abort_connection(conn: ConnId, last_words: Option<&[u8]>) {
    for_each_connection(conn.local_port, |s, peer| {
        if peer != conn.peer {
            return true;
        }
        if let Some(bytes) = last_words {
            let _ = s.write_all(bytes);
        }
        let _ = s.shutdown(Shutdown::Both);
        false
    });
}

/// The peers of this process's connections on `local_port` that have bytes received by the
/// kernel and not yet read (Linux; empty elsewhere).
///
/// Asks each socket (`ioctl(FIONREAD)`) rather than reading `/proc/net/tcp`: that file walks the
/// kernel's whole connection hash table, 10 ms of CPU per read on a host with 262 144 buckets,
/// where this costs a few system calls per open descriptor.
pub fn unread_connections(local_port: u16) -> HashSet<SocketAddr> {
    let mut found = HashSet::new();
    #[cfg(target_os = "linux")]
    for_each_connection(local_port, |s, peer| {
        use std::os::fd::AsRawFd;
        let mut unread: libc::c_int = 0;
        // SAFETY: FIONREAD writes one c_int through the pointer, which points at `unread`; the
        // descriptor is a socket this process has open (see for_each_connection).
        let ok = unsafe { libc::ioctl(s.as_raw_fd(), libc::FIONREAD, &mut unread) } == 0;
        if ok && unread > 0 {
            found.insert(peer);
        }
        true
    });
    #[cfg(not(target_os = "linux"))]
    let _ = local_port;
    found
}

/// Calls `each` with every connected TCP socket of this process whose local port is
/// `local_port`, and its peer address, until `each` returns false. Linux only (it lists
/// `/proc/self/fd`); does nothing elsewhere.
fn for_each_connection(local_port: u16, mut each: impl FnMut(&mut TcpStream, SocketAddr) -> bool) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::FromRawFd;
        let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
            return;
        };
        for entry in dir.flatten() {
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            // SAFETY: `fd` is a descriptor this process has open; ManuallyDrop keeps the
            // temporary TcpStream from closing it, and callers only query, write and shut down,
            // which cannot invalidate the descriptor for its owner. A descriptor that is not a TCP
            // socket fails getsockname(2) (ENOTSOCK) and is skipped before anything else.
            let mut s = ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(fd) });
            if !s.local_addr().is_ok_and(|l| l.port() == local_port) {
                continue;
            }
            let Ok(peer) = s.peer_addr() else {
                continue;
            };
            if !each(&mut s, peer) {
                return;
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (local_port, &mut each);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn accepted_connections_inherit_the_listeners_options() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        set_client_options(&listener, Duration::from_secs(7)).unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(accepted.nodelay().unwrap());
        assert_eq!(
            accepted.read_timeout().unwrap(),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            accepted.write_timeout().unwrap(),
            Some(Duration::from_secs(7))
        );
    }
}

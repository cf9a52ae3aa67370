//! Why the demo servers own their connections instead of serving through tiny_http, the HTTP
//! server the project's design names for them: what tiny_http 0.12 (the current release) does
//! where a demo server needs something else. The balancer keeps its connections to a backend
//! open (keep-alive), so every case is a keep-alive connection.
//!
//! 1. `drop` wants an answer cut mid-body and the connection closed. A tiny_http handler can
//!    only answer with a body reader that fails half-way: the connection stays open, and a
//!    small answer does not even leave tiny_http's write buffer. The client (the balancer)
//!    would wait for the rest until its response timeout, then count a timeout, not a cut.
//! 2. `refuse` wants the port to refuse connections, as a dead backend's does, and the
//!    connections already open to close. Dropping tiny_http's `Server` does the first; the open
//!    connections stay, and a request on one is read and never answered (it waits in the
//!    dropped server's queue), which the balancer sees as a timeout, not as a dead backend.
//! 3. tiny_http gives each connection a thread from a pool that counts a thread woken for one
//!    connection as still free for the next: of a burst of keep-alive connections, some wait
//!    until another connection closes. The demo servers used to connect to themselves every
//!    100 ms to free them (`git show 39c5377`).
//!
//! A handler never sees its connection, so no handler code can fix 1 or 2. If one of these tests
//! starts failing after a tiny_http upgrade, the reason to own the connections may be gone.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use tiny_http::{Response, Server};

/// How long a connection is watched for an answer or a close that does not come. Generous for
/// a loaded machine: a local answer takes well under a millisecond.
const WATCH: Duration = Duration::from_secs(1);

/// Starts a tiny_http server on a free port, with `workers` threads answering each request
/// with `answer` until [`Server::unblock`] releases them.
fn serve(
    workers: usize,
    answer: impl Fn(tiny_http::Request) + Send + Sync + 'static,
) -> (Arc<Server>, SocketAddr) {
    let server = Arc::new(Server::http("127.0.0.1:0").expect("bind"));
    let addr = server.server_addr().to_ip().expect("a TCP address");
    let answer = Arc::new(answer);
    for _ in 0..workers {
        let (server, answer) = (Arc::clone(&server), Arc::clone(&answer));
        thread::spawn(move || {
            while let Ok(request) = server.recv() {
                answer(request);
            }
        });
    }
    (server, addr)
}

/// What arrives on `stream` within [`WATCH`]: the bytes, and whether the connection ended.
fn watch(stream: &mut TcpStream) -> (Vec<u8>, bool) {
    stream.set_read_timeout(Some(WATCH)).unwrap();
    let (mut got, mut buf) = (Vec::new(), [0u8; 4096]);
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return (got, false)
            }
            Err(_) => return (got, true),
        }
    }
}

/// Asserts that the client on `stream` is left waiting: no byte of an answer, and no close.
fn assert_left_waiting(stream: &mut TcpStream) {
    let (got, closed) = watch(stream);
    assert!(
        got.is_empty() && !closed,
        "tiny_http sent {} bytes; closed: {closed}",
        got.len()
    );
}

/// A body reader that gives `left` bytes of `x`, then fails, as a cut answer would.
struct FailsHalfWay {
    left: usize,
}

impl Read for FailsHalfWay {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::other("cut on purpose"));
        }
        let n = buf.len().min(self.left);
        buf[..n].fill(b'x');
        self.left -= n;
        Ok(n)
    }
}

#[test]
fn a_body_reader_that_fails_neither_sends_the_half_nor_closes_the_connection() {
    let (_server, addr) = serve(1, |request| {
        let body = FailsHalfWay { left: 30 };
        // Content-Length 60, as `drop` announces; never chunked.
        let response = Response::new(200.into(), Vec::new(), body, Some(60), None)
            .with_chunked_threshold(usize::MAX);
        assert!(request.respond(response).is_err(), "the reader's error");
    });
    let mut keep_alive = TcpStream::connect(addr).unwrap();
    write!(keep_alive, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_left_waiting(&mut keep_alive);

    // Only a client that asked to close gets the cut, then the end of the connection.
    let mut closing = TcpStream::connect(addr).unwrap();
    write!(closing, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
    let (got, closed) = watch(&mut closing);
    assert!(closed && got.ends_with(&[b'x'; 30]) && !got.ends_with(&[b'x'; 31]));
}

#[test]
fn dropping_the_server_refuses_new_connections_and_strands_open_ones() {
    let (server, addr) = serve(1, |request| {
        let _ = request.respond(Response::from_string("hello"));
    });
    let mut open = TcpStream::connect(addr).unwrap();
    write!(open, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (got, _) = watch(&mut open);
    assert!(got.ends_with(b"hello"), "{}", String::from_utf8_lossy(&got));

    // The worker's `recv` returns, and it lets go of the server; then the last handle goes.
    server.unblock();
    drop(server);
    // The accept thread ends on its own connection from `drop`: wait for the port to close.
    let refused = (0..100).any(|_| {
        thread::sleep(Duration::from_millis(10));
        TcpStream::connect(addr).is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused)
    });
    assert!(refused, "the port still accepts connections");

    write!(open, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_left_waiting(&mut open);
}

#[test]
fn its_pool_leaves_some_of_a_burst_of_keep_alive_connections_unserved() {
    const BURST: usize = 8;
    // A burst is a race, and one may come out right: try a few.
    let stranded = (0..10).any(|_| {
        let (_server, addr) = serve(BURST, |request| {
            let _ = request.respond(Response::from_string("hello"));
        });
        let start = Arc::new(Barrier::new(BURST));
        let clients: Vec<_> = (0..BURST)
            .map(|_| {
                let start = Arc::clone(&start);
                thread::spawn(move || {
                    start.wait();
                    let mut stream = TcpStream::connect(addr).unwrap();
                    write!(stream, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                    let (got, _) = watch(&mut stream);
                    // Kept open until every client has looked, as a balancer's pool keeps it.
                    (!got.is_empty(), stream)
                })
            })
            .collect();
        let answered: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        answered.iter().any(|(answered, _)| !answered)
    });
    assert!(stranded, "every burst was served");
}

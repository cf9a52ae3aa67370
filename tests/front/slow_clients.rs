//! Slow clients hold buffers, not workers: the poller reads request bodies before a worker sees
//! them and finishes answers a client is slow to take, so slow uploads ("slow POST") and clients
//! that read nothing ("slow read") cost a buffer and a descriptor each, never a thread.
//!
//! A stalled reader must really stall the balancer's writes: this kernel lets a send buffer grow
//! to 4 MiB, so the stalled clients here shrink their receive buffer (`SO_RCVBUF`) before they
//! connect and ask for answers of 4 MiB, and the tests check that the poller is finishing those
//! answers (they did not fit in the sockets).
//!
//! A reader that takes a long stream at about the backend's pace never lets the answer's buffer
//! drain completely; 1 GiB through it must still leave the balancer's memory bounded.
//!
//! `SLOW_CLIENTS=1000 cargo test --release --test front slow_clients::attack -- --nocapture`
//! runs the attack at the full size (1 000 of each) and prints the figures.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{
    self, reply, wait_until, write_head, Backend, Client, Headers, Lb, LbProcess, Pattern, TempDir,
};
use loadbalancer::http::{BufferStats, FrontStats};

/// The size of the answer the stalled readers ask for. 4 MiB.
const BIG: usize = 4 << 20;

/// A backend: `/big` answers [`BIG`] bytes at once, `/stream` five pieces 200 ms apart, anything
/// else a short text; a request body is read and its length and SHA-256 answered.
fn backend() -> Backend {
    let big: Arc<Vec<u8>> = Arc::new((0..BIG).map(|i| (i % 251) as u8).collect());
    Backend::start(move |r, out| match r.target.as_str() {
        "/big" => reply(out, 200, &[], &big),
        "/stream" => {
            write_head(out, 200, &[("Transfer-Encoding", "chunked")])?;
            for i in 0..5 {
                if i > 0 {
                    thread::sleep(Duration::from_millis(200));
                }
                support::write_chunk(out, format!("piece {i}\n").as_bytes())?;
                out.flush()?;
            }
            out.write_all(b"0\r\n\r\n")
        }
        _ => {
            let body = format!("{} {}", r.body_len, r.body_sha256);
            reply(out, 200, &[], body.as_bytes())
        }
    })
}

/// Connects to `addr` with a 4 KiB receive buffer, so that the balancer's writes stall as soon as
/// the client stops reading.
fn small_window(addr: SocketAddr) -> TcpStream {
    window(addr, 4096)
}

/// Connects to `addr` with a receive buffer of `size` bytes (the kernel doubles it for its own
/// bookkeeping), fixed: the kernel does not grow it as it would grow a default one.
fn window(addr: SocketAddr, size: libc::c_int) -> TcpStream {
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only: {addr}")
    };
    // SAFETY: plain socket calls on a descriptor this function owns until it hands it to
    // TcpStream, which then owns it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        support::set_receive_buffer(fd, size).expect("SO_RCVBUF");
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*v4.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    }
}

/// A client that asks `addr` for `/big` ([`BIG`] bytes) through a small window and reads
/// nothing of it: the balancer's writes to it stall.
fn stalled_reader(addr: SocketAddr) -> TcpStream {
    let mut s = small_window(addr);
    s.write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    s
}

/// The front end's counters and the buffers' of an in-process balancer.
fn stats(lb: &Lb) -> (FrontStats, BufferStats) {
    let shared = lb.running().shared();
    (shared.front.stats(), shared.buffers.stats())
}

/// `n` slow uploads and `n` stalled readers against `lb`; then sequential GETs on new
/// connections, each of which must succeed within `within`. Returns the slowest GET.
fn attack(lb: &Lb, n: usize, gets: usize, within: Duration) -> Duration {
    let started = Instant::now();
    // Slow uploads: 100 000 bytes announced, one byte a second sent.
    let mut uploads: Vec<TcpStream> = (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(lb.addr).unwrap();
            s.write_all(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\nx")
                .unwrap();
            s
        })
        .collect();
    let trickling = Arc::new(AtomicBool::new(true));
    let trickle = {
        let trickling = Arc::clone(&trickling);
        let mut streams: Vec<TcpStream> = uploads.iter().map(|s| s.try_clone().unwrap()).collect();
        thread::spawn(move || {
            while trickling.load(SeqCst) {
                for s in &mut streams {
                    let _ = s.write_all(b"x");
                }
                for _ in 0..10 {
                    if !trickling.load(SeqCst) {
                        break;
                    }
                    thread::sleep(Duration::from_millis(100));
                }
            }
        })
    };
    wait_until(
        "every slow upload buffering",
        Duration::from_secs(60),
        || stats(lb).0.bodies_buffering >= n,
    );
    // Stalled readers: a 4 MiB answer each, of which they read nothing. In batches: each answer
    // takes a worker a moment to fetch, and on a busy machine a thousand at once would wait
    // longer than `timeouts queue=` before the attack is even in place.
    let mut readers: Vec<TcpStream> = Vec::new();
    while readers.len() < n {
        for _ in 0..25.min(n - readers.len()) {
            readers.push(stalled_reader(lb.addr));
        }
        let opened = readers.len();
        wait_until(
            "the stalled answers with the poller",
            Duration::from_secs(60),
            || stats(lb).0.answers_flushing >= opened,
        );
    }
    let (front, buffers) = stats(lb);
    eprintln!(
        "{n} slow uploads and {n} stalled readers set up in {:?}: {front:?} {buffers:?}",
        started.elapsed()
    );
    assert!(
        buffers.file_bytes > 0,
        "the stalled answers spilled to files"
    );

    let mut slowest = Duration::ZERO;
    let mut busiest = 0;
    for i in 0..gets {
        let t = Instant::now();
        let r = support::get(lb.addr, &format!("/normal/{i}"));
        let took = t.elapsed();
        assert_eq!(r.status, 200, "GET {i}: {}", r.text());
        assert!(took < within, "GET {i} took {took:?}");
        slowest = slowest.max(took);
        busiest = busiest.max(stats(lb).0.workers_busy);
    }
    let workers = lb.running().config().workers;
    assert!(
        busiest < workers,
        "workers busy reached the pool size ({busiest} of {workers})"
    );
    eprintln!("{gets} normal GETs: slowest {slowest:?}; workers busy at most {busiest}");

    trickling.store(false, SeqCst);
    trickle.join().unwrap();
    uploads.clear();
    drop(readers);
    // Clients that vanish give every buffer back.
    wait_until("buffers given back", Duration::from_secs(30), || {
        let (front, buffers) = stats(lb);
        front.bodies_buffering == 0
            && front.answers_flushing == 0
            && buffers.memory_bytes == 0
            && buffers.file_bytes == 0
    });
    slowest
}

fn lb_for_attack(backend: &Backend, temp: &TempDir) -> Lb {
    Lb::start(&[(backend, 1)], |c| {
        c.workers = 8;
        c.buffers.temp_dir = temp.path().to_path_buf();
    })
}

#[test]
fn attack_of_slow_uploads_and_stalled_readers_holds_no_worker() {
    let n: usize = std::env::var("SLOW_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    if !support::allow_descriptors(4 * n as u64 + 256, "attack") {
        return;
    }
    let backend = backend();
    let temp = TempDir::new("attack");
    let lb = lb_for_attack(&backend, &temp);
    attack(&lb, n, 50, Duration::from_secs(1));
    assert_eq!(
        std::fs::read_dir(temp.path()).unwrap().count(),
        0,
        "temporary files have no name"
    );
}

#[test]
fn with_request_buffering_off_slow_uploads_hold_the_workers() {
    // The trade-off `request_buffering off` makes, and proof that the attack above is real: as
    // many slow uploads as workers leave none for anyone else.
    let backend = backend();
    let lb = Lb::start(&[(&backend, 1)], |c| {
        c.workers = 4;
        c.request_buffering = false;
        c.timeouts.queue = Duration::from_millis(500);
    });
    let uploads: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(lb.addr).unwrap();
            s.write_all(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\nx")
                .unwrap();
            s
        })
        .collect();
    wait_until("every worker held", Duration::from_secs(10), || {
        stats(&lb).0.workers_busy == 4
    });
    let r = support::get(lb.addr, "/normal");
    assert_eq!(r.status, 503, "{}", r.text());
    drop(uploads);
}

#[test]
fn a_streamed_answer_reaches_the_client_piece_by_piece() {
    let backend = backend();
    let lb = Lb::start(&[(&backend, 1)], |_| {});
    let mut client = Client::connect(lb.addr);
    let started = Instant::now();
    client.send(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut arrivals = Vec::new();
    let r = client.read_response_into("GET", &mut |piece| {
        arrivals.push((started.elapsed(), piece.to_vec()));
    });
    assert_eq!(r.status, 200);
    let body: Vec<u8> = arrivals.iter().flat_map(|(_, p)| p.clone()).collect();
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "piece 0\npiece 1\npiece 2\npiece 3\npiece 4\n"
    );
    let (first, _) = arrivals.first().expect("a piece");
    let (last, _) = arrivals.last().unwrap();
    assert!(
        *first < Duration::from_millis(300),
        "first piece at {first:?}"
    );
    assert!(
        *last - *first >= Duration::from_millis(600),
        "held back: first at {first:?}, last at {last:?}"
    );
}

#[test]
fn a_body_slower_than_the_body_timeout_gets_408() {
    let backend = backend();
    let lb = Lb::start(&[(&backend, 1)], |c| {
        c.timeouts.body = Duration::from_secs(1);
    });
    let mut s = TcpStream::connect(lb.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n")
        .unwrap();
    let started = Instant::now();
    // A byte every 100 ms: never idle for the client timeout, but 100 bytes take 10 s.
    let mut writer = s.try_clone().unwrap();
    let trickle = thread::spawn(move || {
        for _ in 0..100 {
            if writer.write_all(b"x").is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("Connection: close"), "{text}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(backend.count(), 0);
    trickle.join().unwrap();
}

#[test]
fn a_body_over_max_body_gets_413_announced_or_chunked() {
    let backend = backend();
    let lb = Lb::start(&[(&backend, 1)], |c| {
        c.filter.max_body = Some(1000);
    });
    // Announced: refused before anything of the body is read, and before `100 Continue`.
    let mut client = Client::connect(lb.addr);
    client.send(
        b"PUT /up HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\nExpect: 100-continue\r\n\r\n",
    );
    let r = client.read_response("PUT");
    assert_eq!(r.status, 413, "{}", r.text());
    // Chunked: refused when it passes the limit.
    let mut client = Client::connect(lb.addr);
    let chunk = "y".repeat(600);
    client.send(
        format!(
            "PUT /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
             258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
        )
        .as_bytes(),
    );
    let r = client.read_response("PUT");
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.header("connection"), Some("close"));
    // Within the limit, chunked arrives decoded, with its length.
    let mut client = Client::connect(lb.addr);
    client.send(
        format!(
            "PUT /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n{chunk}\r\n0\r\n\r\n"
        )
        .as_bytes(),
    );
    let r = client.read_response("PUT");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        format!("600 {}", support::sha256_hex(chunk.as_bytes()))
    );
    let got = backend.only_request();
    assert_eq!(got.header_values("content-length"), ["600"]);
}

#[test]
fn with_the_buffers_full_a_worker_waits_for_its_client_and_nothing_is_lost() {
    // No room for files at all: a stalled reader's answer cannot be spooled, so its worker
    // writes it out as the client takes it (and a larger upload gets 503).
    let backend = backend();
    let temp = TempDir::new("full");
    let lb = Lb::start(&[(&backend, 1)], |c| {
        c.workers = 2;
        c.buffers.memory = 16 << 10;
        c.buffers.temp_dir = temp.path().to_path_buf();
        c.buffers.temp_total = 0;
    });
    let mut reader = stalled_reader(lb.addr);
    wait_until(
        "the worker waiting on its client",
        Duration::from_secs(10),
        || {
            let (front, _) = stats(&lb);
            front.backpressure_waits > 0 && front.workers_busy == 1
        },
    );
    // The other worker still serves.
    assert_eq!(support::get(lb.addr, "/normal").status, 200);
    // An upload larger than memory finds no room: 503, and the client may retry.
    let mut client = Client::connect(lb.addr);
    let body = vec![b'u'; 100_000];
    let mut raw = b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n".to_vec();
    raw.extend_from_slice(&body);
    client.send(&raw);
    let r = client.read_response("POST");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.has_header("retry-after"));
    // The stalled reader reads at last: the whole answer, byte for byte.
    reader
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let head_end = loop {
        let n = reader.read(&mut buf).unwrap();
        assert!(n > 0, "closed early");
        got.extend_from_slice(&buf[..n]);
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    while got.len() < head_end + BIG {
        let n = reader.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {} body bytes", got.len() - head_end);
        got.extend_from_slice(&buf[..n]);
    }
    let expected: Vec<u8> = (0..BIG).map(|i| (i % 251) as u8).collect();
    assert!(got[head_end..] == expected[..], "the answer changed");
    wait_until("the worker free again", Duration::from_secs(10), || {
        stats(&lb).0.workers_busy == 0
    });
}

#[test]
fn no_temporary_file_is_left_after_clients_leave_or_kill_9() {
    let backend = backend();
    let temp = TempDir::new("spill");
    let dir = temp.path().display().to_string();
    let mut lb = LbProcess::spawn(
        &[backend.url()],
        &[&format!("buffers memory=16KiB temp_dir={dir}")],
    );
    // Stalled readers make the balancer spill their answers to temporary files.
    let readers: Vec<TcpStream> = (0..4).map(|_| stalled_reader(lb.addr)).collect();
    let in_temp = |lb: &LbProcess| -> usize {
        let fds = format!("/proc/{}/fd", lb.pid());
        std::fs::read_dir(fds)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| std::fs::read_link(e.path()).ok())
                    .filter(|t| t.to_string_lossy().starts_with(&dir))
                    .count()
            })
            .unwrap_or(0)
    };
    wait_until("answers spilled to files", Duration::from_secs(20), || {
        in_temp(&lb) >= 4
    });
    assert_eq!(std::fs::read_dir(temp.path()).unwrap().count(), 0);
    // A normal upload through a file too, while they wait.
    let mut client = Client::connect(lb.addr);
    let mut raw = b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n".to_vec();
    let sent = {
        let mut body = Vec::new();
        let digest = Pattern::new(1_000_000, 3).write_to(&mut body).unwrap();
        raw.extend_from_slice(&body);
        digest
    };
    client.send(&raw);
    let r = client.read_response("POST");
    assert_eq!(r.text(), format!("1000000 {sent}"));
    drop(readers);
    wait_until(
        "files closed after the clients left",
        Duration::from_secs(20),
        || in_temp(&lb) == 0,
    );
    // kill -9 while files are open: nothing is left either.
    let readers: Vec<TcpStream> = (0..2).map(|_| stalled_reader(lb.addr)).collect();
    wait_until("answers spilled again", Duration::from_secs(20), || {
        in_temp(&lb) >= 2
    });
    lb.signal("KILL");
    lb.wait_exit(Duration::from_secs(10));
    assert_eq!(std::fs::read_dir(temp.path()).unwrap().count(), 0);
    drop(readers);
}

/// The largest send buffer the kernel grows a socket's to (`net.ipv4.tcp_wmem`, third field).
fn tcp_wmem_max() -> u64 {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|t| t.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20)
}

/// The backend's end of a close-delimited answer, written by a test in step with the client:
/// [`PacedBody::keep_ahead`] keeps it `ahead` bytes in front of what the client has read.
struct PacedBody {
    to: Option<TcpStream>,
    pattern: Pattern,
    sent: u64,
    ahead: u64,
}

impl PacedBody {
    /// Writes pieces of the pattern until `ahead` bytes are in front of `got`; after the last
    /// one, shuts the connection down, which ends the body.
    fn keep_ahead(&mut self, got: u64) {
        while self.sent < got + self.ahead {
            let Some(to) = self.to.as_mut() else { return };
            let Some(piece) = self.pattern.next_piece() else {
                let _ = to.shutdown(std::net::Shutdown::Write);
                self.to = None;
                return;
            };
            to.write_all(piece).expect("write to the balancer");
            self.sent += piece.len() as u64;
        }
    }
}

/// What a client should read: a [`Pattern`], compared piece by piece (cheaper than hashing
/// both ends of a long stream).
struct Expected {
    pattern: Pattern,
    piece: Vec<u8>,
    at: usize,
}

impl Expected {
    fn new(pattern: Pattern) -> Expected {
        Expected {
            pattern,
            piece: Vec::new(),
            at: 0,
        }
    }

    /// True when `data` is what comes next in the pattern.
    fn matches(&mut self, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            if self.at == self.piece.len() {
                let Some(next) = self.pattern.next_piece() else {
                    return false;
                };
                self.piece.clear();
                self.piece.extend_from_slice(next);
                self.at = 0;
            }
            let n = data.len().min(self.piece.len() - self.at);
            if data[..n] != self.piece[self.at..self.at + n] {
                return false;
            }
            self.at += n;
            data = &data[n..];
        }
        true
    }
}

/// Reads an answer's head from `client`: the head, and the body bytes read with it.
fn read_raw_head(client: &mut TcpStream) -> (Vec<u8>, Vec<u8>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = client.read(&mut buf).expect("read the head");
        assert!(n > 0, "closed before the head ended");
        got.extend_from_slice(&buf[..n]);
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let body = got.split_off(at + 4);
            return (got, body);
        }
    }
}

#[test]
fn a_reader_at_the_backends_pace_keeps_a_1_gib_stream_in_bounded_memory() {
    // A client that reads a long streamed answer at about the pace the backend sends it: the
    // answer's spool in the balancer always holds some of it (it never drains completely), and
    // what went through it must not stay allocated. The test paces both ends itself:
    // - the backend stays `ahead` bytes in front of what the client has read: more than the
    //   kernel's buffers between the balancer and the client hold (the balancer's send buffer
    //   grows up to tcp_wmem's maximum; the client's receive buffer is fixed at 64 KiB), so the
    //   rest is in the spool, whose memory part is sized to hold it all (no temporary file);
    // - the client reads at `RATE`, well below what the balancer relays in a debug build
    //   (about 400 MiB/s here), so that the balancer keeps up with the backend and the bytes
    //   in flight are in its spool rather than unread in its socket from the backend.
    const MIB: u64 = 1 << 20;
    const TOTAL: u64 = 1 << 30;
    const RATE: f64 = 128.0 * MIB as f64; // bytes per second
    let ahead = tcp_wmem_max() + 2 * MIB;
    let memory_kib = (ahead + 2 * MIB) >> 10;
    // Growth of the balancer's resident memory allowed: the spool's memory part, and room for
    // allocator noise; far below the 1 GiB that goes through.
    let bound_kib = memory_kib + 24 * 1024;

    // The backend sends the head of a close-delimited answer (no length, no chunks), then hands
    // its end of the connection to the test.
    let (to_test, from_backend) = mpsc::channel::<TcpStream>();
    let backend = Backend::start(move |_, out| {
        out.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
        to_test.send(out.try_clone()?).expect("the test waits");
        Err(std::io::Error::other("handed over to the test"))
    });
    let lb = LbProcess::spawn(
        &[backend.url()],
        &[&format!("buffers memory={memory_kib}KiB")],
    );
    let baseline = lb.peak_rss_kib();
    let mut client = window(lb.addr, 64 << 10);
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // HTTP/1.0: the answer comes unframed, so what the client reads is the body byte for byte.
    client.write_all(b"GET /stream HTTP/1.0\r\n\r\n").unwrap();
    let to = from_backend.recv_timeout(Duration::from_secs(10));
    let mut body = PacedBody {
        to: Some(to.expect("the request reached the backend")),
        pattern: Pattern::new(TOTAL, 21),
        sent: 0,
        ahead,
    };
    body.keep_ahead(0);

    let started = Instant::now();
    let (head, first) = read_raw_head(&mut client);
    assert!(head.starts_with(b"HTTP/1.1 200 "), "{head:?}");
    let mut expected = Expected::new(Pattern::new(TOTAL, 21));
    assert!(expected.matches(&first), "the answer changed at its start");
    let mut got = first.len() as u64;
    let mut buf = vec![0u8; 64 << 10];
    let mut next_check = 0u64;
    loop {
        body.keep_ahead(got);
        if got >= next_check {
            next_check += 16 * MIB;
            let grown = lb.rss_kib().saturating_sub(baseline);
            assert!(
                grown < bound_kib,
                "after {} MiB of the answer the balancer has grown by {grown} KiB (bound \
                 {bound_kib} KiB): its spool keeps what went through it",
                got / MIB
            );
        }
        let due = Duration::from_secs_f64(got as f64 / RATE);
        if let Some(early) = due.checked_sub(started.elapsed()) {
            thread::sleep(early);
        }
        let n = client.read(&mut buf).expect("read the answer");
        if n == 0 {
            break;
        }
        assert!(
            expected.matches(&buf[..n]),
            "the answer changed after {got} bytes"
        );
        got += n as u64;
    }
    let took = started.elapsed();
    assert_eq!(got, TOTAL, "the whole answer");
    let grown = lb.peak_rss_kib().saturating_sub(baseline);
    eprintln!(
        "1 GiB at the reader's pace in {took:?}, {ahead} bytes ahead; balancer VmHWM grew by \
         {grown} KiB (bound {bound_kib} KiB)"
    );
    assert!(grown < bound_kib, "VmHWM grew by {grown} KiB");
}

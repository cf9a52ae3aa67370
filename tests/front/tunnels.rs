//! Tunnels are the poller's, not the workers': hundreds of idle WebSockets leave every worker
//! free for normal requests; 50 MiB each way pass byte for byte in bounded memory; and every
//! way a tunnel ends is passed on: a backend that dies, a client that vanishes, silence for
//! `timeouts tunnel=`, a half-close, the end of a graceful shutdown's drain. A reload that
//! removes the backend leaves its tunnels running. A tunnel's access-log line is written when
//! it ends.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use loadbalancer::config::BackendConfig;
use loadbalancer::http::{FrontStats, TunnelEnd};
use loadbalancer::Config;
use sha2::{Digest, Sha256};

use crate::support::{self, *};

/// A balancer in front of `backends`, after `tweak`.
fn lb_for(backends: &[&UpgradeBackend], tweak: impl FnOnce(&mut Config)) -> Lb {
    let mut config = test_config(&[]);
    config.backends = backends
        .iter()
        .map(|b| BackendConfig::parse(&b.url(), 1).unwrap())
        .collect();
    tweak(&mut config);
    Lb::with_config(config)
}

fn stats(lb: &Lb) -> FrontStats {
    lb.running().shared().front.stats()
}

/// Tunnels that ended as `how`.
fn ended(stats: &FrontStats, how: TunnelEnd) -> u64 {
    let at = TunnelEnd::ALL.iter().position(|h| *h == how).unwrap();
    stats.tunnels_ended[at]
}

/// Reads messages until the tunnel ends; returns the error that ended it, failing the test if
/// it was the read timeout (nothing came to end it).
fn read_until_closed(ws: &mut tungstenite::WebSocket<TcpStream>) -> tungstenite::Error {
    let error = loop {
        match ws.read() {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    let timed_out = matches!(&error, tungstenite::Error::Io(e)
        if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut));
    assert!(!timed_out, "the client heard nothing: {error}");
    error
}

/// A backend that answers the upgrade, then echoes every byte until the client's FIN, then
/// closes.
fn raw_echo() -> UpgradeBackend {
    UpgradeBackend::start(|head, mut stream, read_ahead, _| {
        let _ = stream.write_all(switching(head).as_bytes());
        let _ = stream.write_all(&read_ahead);
        let _ = io::copy(&mut stream.try_clone().unwrap(), &mut stream);
    })
}

#[test]
fn three_hundred_idle_tunnels_hold_no_worker() {
    if !allow_descriptors(4096, "three_hundred_idle_tunnels_hold_no_worker") {
        return;
    }
    let backend = UpgradeBackend::websocket_echo();
    let lb = lb_for(&[&backend], |c| c.workers = 8);
    let mut tunnels: Vec<_> = (0..300)
        .map(|i| ws_connect(lb.addr, &format!("/chat/{i}")))
        .collect();
    for (i, ws) in tunnels.iter_mut().enumerate() {
        assert_eq!(ws_echo(ws, &format!("hello {i}")), format!("hello {i}"));
    }
    let open = stats(&lb);
    assert_eq!((open.tunnels_open, open.workers_busy), (300, 0), "{open:?}");

    // A normal client meanwhile: 300 GETs, each on a connection of its own.
    let mut took: Vec<Duration> = (0..300)
        .map(|i| {
            let t = Instant::now();
            let r = support::get(lb.addr, &format!("/normal/{i}"));
            assert_eq!((r.status, r.text().as_str()), (200, "plain"), "GET {i}");
            t.elapsed()
        })
        .collect();
    took.sort();
    let p99 = took[took.len() * 99 / 100];
    eprintln!(
        "300 GETs beside 300 idle tunnels: p50 {:?}, p99 {p99:?}, max {:?}",
        took[took.len() / 2],
        took[took.len() - 1]
    );
    assert!(p99 < Duration::from_millis(100), "p99 {p99:?}");

    for (i, ws) in tunnels.iter_mut().enumerate() {
        assert_eq!(ws_echo(ws, &format!("still {i}")), format!("still {i}"));
    }
    assert_eq!(
        backend
            .seen
            .upgrades
            .load(std::sync::atomic::Ordering::SeqCst),
        300
    );
}

/// SHA-256 (hex) and length of everything read from `stream` to its end, after `first`.
fn hash_to_end(first: &[u8], stream: &mut TcpStream) -> (String, u64) {
    let mut hasher = Sha256::new();
    hasher.update(first);
    let mut total = first.len() as u64;
    let mut buf = vec![0u8; 256 << 10];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                total += n as u64;
            }
            Err(e) => panic!("read failed after {total} bytes: {e}"),
        }
    }
    (hex(&hasher.finalize()), total)
}

#[test]
fn fifty_mib_each_way_at_once_arrive_byte_exact_in_bounded_memory() {
    const SIZE: u64 = 50 << 20;
    // The backend sends its 50 MiB while it reads the client's, then closes its side.
    let received: Arc<Mutex<Option<(String, u64)>>> = Arc::default();
    let got = Arc::clone(&received);
    let backend = UpgradeBackend::start(move |head, mut stream, read_ahead, _| {
        stream.write_all(switching(head).as_bytes()).unwrap();
        let mut writer = stream.try_clone().unwrap();
        let sender = thread::spawn(move || {
            let sent = Pattern::new(SIZE, 2).write_to(&mut writer);
            let _ = writer.shutdown(Shutdown::Write);
            sent
        });
        *got.lock().unwrap() = Some(hash_to_end(&read_ahead, &mut stream));
        sender.join().unwrap().unwrap();
    });
    let lb = LbProcess::spawn(&[backend.url()], &["workers 8"]);
    let before = lb.rss_kib();

    let (head, rest, mut stream) = raw_upgrade(lb.addr, handshake("/bulk").as_bytes());
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let mut writer = stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        let sent = Pattern::new(SIZE, 1).write_to(&mut writer);
        let _ = writer.shutdown(Shutdown::Write);
        sent
    });
    let started = Instant::now();
    let (down_hash, down) = hash_to_end(&rest, &mut stream);
    let up_hash = sender.join().unwrap().unwrap();
    wait_until(
        "the backend to read to the end",
        Duration::from_secs(30),
        || received.lock().unwrap().is_some(),
    );
    let took = started.elapsed();
    let (backend_hash, up) = received.lock().unwrap().clone().unwrap();
    let expected_down = Pattern::new(SIZE, 2).write_to(&mut io::sink()).unwrap();
    assert_eq!((down, up), (SIZE, SIZE));
    assert_eq!(
        down_hash, expected_down,
        "the backend's 50 MiB changed on the way"
    );
    assert_eq!(
        backend_hash, up_hash,
        "the client's 50 MiB changed on the way"
    );
    let growth_kib = lb.peak_rss_kib().saturating_sub(before);
    eprintln!("100 MiB through one tunnel in {took:?}; RSS {before} KiB, growth {growth_kib} KiB");
    assert!(growth_kib < 32 << 10, "RSS grew by {growth_kib} KiB");
}

#[test]
fn a_backend_that_dies_mid_tunnel_ends_the_clients_within_a_second() {
    let backend = UpgradeBackend::websocket_echo();
    let lb = lb_for(&[&backend], |_| {});
    let mut ws = ws_connect(lb.addr, "/chat");
    assert_eq!(ws_echo(&mut ws, "before"), "before");
    let t = Instant::now();
    backend.kill_connections();
    read_until_closed(&mut ws);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(1), "the end took {took:?}");
    drop(ws);
    wait_until("the tunnel to end", Duration::from_secs(5), || {
        stats(&lb).tunnels_open == 0
    });
    assert_eq!(ended(&stats(&lb), TunnelEnd::Peer), 1);
}

#[test]
fn a_client_that_vanishes_gets_its_backend_connection_closed() {
    // The backend notes when its side of the tunnel ends (a FIN or a reset).
    let closed: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let noted = Arc::clone(&closed);
    let backend = UpgradeBackend::start(move |head, mut stream, _, _| {
        stream.write_all(switching(head).as_bytes()).unwrap();
        let _ = read_to_end(&mut stream);
        noted.lock().unwrap().push(Instant::now());
    });
    let lb = lb_for(&[&backend], |_| {});
    for (i, reset) in [false, true].into_iter().enumerate() {
        let (head, _, stream) = raw_upgrade(lb.addr, handshake("/gone").as_bytes());
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        if reset {
            // Closing sends a reset, as a crashed machine's stack would later.
            reset_on_close(&stream);
        }
        let t = Instant::now();
        drop(stream);
        wait_until(
            "the backend's connection to close",
            Duration::from_secs(5),
            || closed.lock().unwrap().len() > i,
        );
        let took = closed.lock().unwrap()[i] - t;
        assert!(
            took < Duration::from_secs(1),
            "reset {reset}: took {took:?}"
        );
    }
    wait_until("both tunnels to end", Duration::from_secs(5), || {
        stats(&lb).tunnels_open == 0
    });
    assert_eq!(ended(&stats(&lb), TunnelEnd::Client), 2);
}

#[test]
fn a_silent_tunnel_is_closed_after_timeouts_tunnel_and_a_busy_one_is_not() {
    let backend = UpgradeBackend::websocket_echo();
    let lb = lb_for(&[&backend], |c| c.timeouts.tunnel = Duration::from_secs(2));
    let mut silent = ws_connect(lb.addr, "/silent");
    let mut busy = ws_connect(lb.addr, "/busy");
    assert_eq!(ws_echo(&mut silent, "once"), "once");
    let last = Instant::now();
    // The busy one talks every 200 ms for twice the timeout: a tenth of it, so that a loaded
    // machine's pauses cannot pass for silence.
    let talker = thread::spawn(move || {
        for i in 0..20 {
            assert_eq!(ws_echo(&mut busy, &format!("{i}")), format!("{i}"));
            thread::sleep(Duration::from_millis(200));
        }
        busy
    });
    read_until_closed(&mut silent);
    let after = last.elapsed();
    assert!(
        (Duration::from_millis(1900)..Duration::from_secs(6)).contains(&after),
        "closed {after:?} after its last message"
    );
    let mut busy = talker.join().unwrap();
    assert_eq!(ws_echo(&mut busy, "still here"), "still here");
    assert_eq!(ended(&stats(&lb), TunnelEnd::Idle), 1);
}

#[test]
fn a_half_close_is_passed_on_both_ways() {
    // The backend reads to the client's FIN, then answers and closes its side.
    let backend = UpgradeBackend::start(|head, mut stream, read_ahead, _| {
        stream.write_all(switching(head).as_bytes()).unwrap();
        let (mut all, error) = read_to_end(&mut stream);
        assert!(error.is_none(), "{error:?}");
        all.splice(0..0, read_ahead);
        let answer = format!("got {} bytes: {}", all.len(), String::from_utf8_lossy(&all));
        stream.write_all(answer.as_bytes()).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
    });
    let lb = lb_for(&[&backend], |_| {});
    let (head, rest, mut stream) = raw_upgrade(lb.addr, handshake("/half").as_bytes());
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    stream.write_all(b"abc").unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let (mut answer, error) = read_to_end(&mut stream);
    assert!(error.is_none(), "{error:?}");
    answer.splice(0..0, rest);
    assert_eq!(String::from_utf8_lossy(&answer), "got 3 bytes: abc");
    wait_until("the tunnel to end", Duration::from_secs(5), || {
        stats(&lb).tunnels_open == 0
    });
    assert_eq!(ended(&stats(&lb), TunnelEnd::Client), 1);
}

#[test]
fn a_graceful_shutdown_gives_open_tunnels_the_drain_then_closes_them() {
    let backend = UpgradeBackend::websocket_echo();
    let lb = lb_for(&[&backend], |c| c.drain_timeout = Duration::from_secs(1));
    let (addr, front) = (lb.addr, Arc::clone(&lb.running().shared().front));
    let mut ws = ws_connect(addr, "/chat");
    assert_eq!(ws_echo(&mut ws, "before"), "before");
    let started = Instant::now();
    let shutdown = thread::spawn(move || lb.shutdown());
    wait_until("the listener to close", Duration::from_secs(5), || {
        refuses_connections(addr)
    });
    assert_eq!(ws_echo(&mut ws, "during the drain"), "during the drain");
    read_until_closed(&mut ws);
    let after = started.elapsed();
    assert!(after < Duration::from_secs(5), "closed after {after:?}");
    assert!(!shutdown.join().unwrap(), "a tunnel was cut: not drained");
    let at = TunnelEnd::ALL
        .iter()
        .position(|h| *h == TunnelEnd::Shutdown);
    assert_eq!(front.stats().tunnels_ended[at.unwrap()], 1);
}

#[test]
fn a_reload_that_removes_the_backend_leaves_its_tunnel_open() {
    let (a, b) = (
        UpgradeBackend::websocket_echo(),
        UpgradeBackend::websocket_echo(),
    );
    let lb = lb_for(&[&a, &b], |_| {});
    let mut ws = ws_connect(lb.addr, "/chat");
    let upgrades = |x: &UpgradeBackend| x.seen.upgrades.load(std::sync::atomic::Ordering::SeqCst);
    let (holder, other) = if upgrades(&a) == 1 {
        (&a, &b)
    } else {
        (&b, &a)
    };
    let mut config = lb.running().config();
    config.backends = vec![BackendConfig::parse(&other.url(), 1).unwrap()];
    lb.running().apply(config);
    assert_eq!(lb.running().pool().backends().len(), 1);
    assert_eq!(ws_echo(&mut ws, "after the reload"), "after the reload");
    assert_eq!((upgrades(holder), stats(&lb).tunnels_open), (1, 1));
}

#[test]
fn a_tunnel_is_logged_when_it_ends_with_its_bytes_each_way_and_how() {
    let backend = raw_echo();
    let lb = LbProcess::spawn_logging(&[backend.url()], &[]);
    let (head, rest, mut stream) = raw_upgrade(lb.addr, handshake("/logged").as_bytes());
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    stream.write_all(b"four").unwrap();
    let echoed = read_at_least(&mut stream, rest, 4);
    assert_eq!(echoed, b"four");
    stream.shutdown(Shutdown::Write).unwrap();
    let (rest, error) = read_to_end(&mut stream);
    assert!(rest.is_empty() && error.is_none(), "{rest:?} {error:?}");
    let name = backend.url().trim_start_matches("http://").to_string();
    let line = lb.access_line(&["GET /logged 101", &name, "up=4 down=4 end=client"]);
    assert!(line.contains("ms 4 "), "{line}");
}

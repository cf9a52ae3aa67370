//! WebSockets through the balancer, with a real client (tungstenite) and a real echo backend:
//! frames both ways, a large message, ping/pong, the close handshake; bytes that come right
//! behind the handshake on either side; and the requests that are not tunnelled: a backend
//! that answers something else (relayed as usual), another protocol or `upgrade off` (served as
//! plain HTTP), `CONNECT` (405), past `limits tunnels=` (503).

use std::io::Write;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use loadbalancer::config::BackendConfig;
use loadbalancer::Config;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

use crate::support::*;

/// A balancer in front of `backend` only, after `tweak`.
fn lb_for(backend: &UpgradeBackend, tweak: impl FnOnce(&mut Config)) -> Lb {
    let mut config = test_config(&[]);
    config.backends = vec![BackendConfig::parse(&backend.url(), 1).unwrap()];
    tweak(&mut config);
    Lb::with_config(config)
}

fn open_tunnels(lb: &Lb) -> usize {
    lb.running().shared().front.stats().tunnels_open
}

#[test]
fn a_websocket_client_talks_to_its_backend_through_the_balancer() {
    let backend = UpgradeBackend::websocket_echo();
    let lb = lb_for(&backend, |_| {});
    let mut ws = ws_connect(lb.addr, "/chat");
    assert_eq!(ws_echo(&mut ws, "hello"), "hello");

    ws.send(Message::binary(vec![0u8, 1, 2, 255])).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(vec![0u8, 1, 2, 255]));

    // A 1 MiB message: 16 reads of the balancer's buffer, both ways.
    let big: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).unwrap();
    match ws.read().unwrap() {
        Message::Binary(got) => assert!(got[..] == big[..], "the 1 MiB message changed"),
        other => panic!("expected the 1 MiB message back, got {other:?}"),
    }

    // tungstenite's backend answers a ping with a pong carrying the same bytes.
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .unwrap();
    match ws.read().unwrap() {
        Message::Pong(data) => assert_eq!(&data[..], b"are you there"),
        other => panic!("expected the pong, got {other:?}"),
    }
    assert_eq!(open_tunnels(&lb), 1);

    // The close handshake: the backend sees our code, we see its close, and the tunnel ends.
    ws.close(Some(CloseFrame {
        code: CloseCode::Library(4001),
        reason: "bye".into(),
    }))
    .unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Library(4001)),
            Ok(other) => panic!("expected the backend's close, got {other:?}"),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("the close handshake failed: {e}"),
        }
    }
    assert_eq!(*backend.seen.close_codes.lock().unwrap(), [Some(4001)]);
    // The backend closed the TCP connection first (RFC 6455 §7.1.1); once we close ours too,
    // both directions are done.
    drop(ws);
    wait_until("the tunnel to end", Duration::from_secs(5), || {
        open_tunnels(&lb) == 0
    });
    let stats = lb.running().shared().front.stats();
    assert!(
        stats.tunnel_bytes_up > 1 << 20 && stats.tunnel_bytes_down > 1 << 20,
        "{stats:?}"
    );
}

#[test]
fn bytes_right_behind_the_handshake_are_relayed_both_ways() {
    // The backend answers its 101 and its first bytes in one write, then echoes.
    let backend = UpgradeBackend::start(|head, mut stream, read_ahead, _| {
        let mut first = switching(head).into_bytes();
        first.extend_from_slice(b"[from the backend]");
        stream.write_all(&first).unwrap();
        stream.write_all(&read_ahead).unwrap();
        let _ = std::io::copy(&mut stream.try_clone().unwrap(), &mut stream);
    });
    let lb = lb_for(&backend, |_| {});
    // The client's first bytes come in the same write as its handshake.
    let mut request = handshake("/raw").into_bytes();
    request.extend_from_slice(b"[from the client]");
    let (head, rest, mut stream) = raw_upgrade(lb.addr, &request);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("\r\nupgrade: websocket\r\n"), "{head}");
    assert!(lower.contains("\r\nconnection: upgrade\r\n"), "{head}");
    let want = b"[from the backend][from the client]";
    let got = read_at_least(&mut stream, rest, want.len());
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
}

#[test]
fn an_answer_other_than_101_is_relayed_as_a_normal_answer() {
    // The backend refuses the upgrade with a chunked body, or switches to what nobody asked.
    let backend = UpgradeBackend::start(|head, mut stream, _, _| {
        let answer: &[u8] = if head.start_line.contains("/refused") {
            b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nnot f\r\n9\r\nor you!\r\n\r\n0\r\n\r\n"
        } else {
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n"
        };
        let _ = stream.write_all(answer);
    });
    let lb = lb_for(&backend, |_| {});
    let r = Client::connect(lb.addr).request(&handshake("/refused"));
    assert_eq!((r.status, r.text().as_str()), (403, "not for you!\r\n"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    let r = Client::connect(lb.addr).request(&handshake("/other"));
    assert_eq!(r.status, 502, "{}", r.text());
    // The reservations are given back as the workers finish (just after the answers went).
    wait_until("no tunnel counted", Duration::from_secs(5), || {
        open_tunnels(&lb) == 0
    });
}

#[test]
fn upgrades_to_other_protocols_or_with_upgrade_off_are_served_as_plain_http() {
    let backend = UpgradeBackend::websocket_echo();
    let plain = |lb: &Lb, upgrade: &str| {
        let r = Client::connect(lb.addr).request(&format!(
            "GET /x HTTP/1.1\r\nHost: test\r\nConnection: Upgrade, HTTP2-Settings\r\n\
             Upgrade: {upgrade}\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        ));
        assert_eq!((r.status, r.text().as_str()), (200, "plain"), "{upgrade}");
        assert!(!r.has_header("upgrade"));
    };
    let lb = lb_for(&backend, |_| {});
    plain(&lb, "h2c");
    // With websocket off, the same handshake is a plain GET.
    let off = lb_for(&backend, |c| c.upgrade.clear());
    plain(&off, "websocket");
    assert_eq!(backend.seen.upgrades.load(SeqCst), 0);
    for head in backend.seen.plain.lock().unwrap().iter() {
        // Hop-by-hop, and what `Connection` named: none of it reached the backend.
        for name in ["upgrade", "connection", "http2-settings"] {
            assert!(!head.has_header(name), "{name} forwarded: {head:?}");
        }
    }
    assert_eq!(backend.seen.plain.lock().unwrap().len(), 2);
}

#[test]
fn connect_is_refused_with_405() {
    let backend = UpgradeBackend::websocket_echo();
    let lb = lb_for(&backend, |_| {});
    let r = Client::connect(lb.addr)
        .request("CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n");
    assert_eq!(r.status, 405);
    assert!(backend.seen.plain.lock().unwrap().is_empty());
}

#[test]
fn past_limits_tunnels_an_upgrade_gets_503_and_no_backend_sees_it() {
    let backend = UpgradeBackend::websocket_echo();
    let lb = lb_for(&backend, |c| c.limits.tunnels = 2);
    let mut first = ws_connect(lb.addr, "/a");
    let _second = ws_connect(lb.addr, "/b");
    let r = Client::connect(lb.addr).request(&handshake("/c"));
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(r.text().contains("limits tunnels="), "{}", r.text());
    assert_eq!(backend.seen.upgrades.load(SeqCst), 2);
    // One ends: there is room again.
    first.close(None).unwrap();
    while first.read().is_ok() {}
    drop(first);
    wait_until("the first tunnel to end", Duration::from_secs(5), || {
        lb.running().shared().front.stats().tunnels_open < 2
    });
    let mut third = ws_connect(lb.addr, "/c");
    assert_eq!(ws_echo(&mut third, "room again"), "room again");
    let metrics = lb.running().shared().metrics.rejections();
    assert!(metrics.contains(&("tunnel_limit", 1)), "{metrics:?}");
}

//! Request filtering end to end: a real balancer in front of a backend that records what it
//! receives, driven by raw HTTP/1.1 over `TcpStream`.
//!
//! All test clients connect from 127.0.0.1, so different clients are simulated with
//! `trusted_proxies 127.0.0.1/32` and distinct `X-Forwarded-For` values.
//! Everything binds 127.0.0.1:0; every wait has a deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use loadbalancer::Config;

use crate::support::{test_config, Backend, Client, Headers, Lb, Response};

/// Starts a balancer on 127.0.0.1:0 in front of `backend`, with the filtering settings in
/// `filtering` (config file lines).
fn balancer(backend: &Backend, filtering: &str) -> Lb {
    let text = format!(
        "health off\nslow_start off\naccess_log off\nworkers 4\ndrain_timeout 2s\n{filtering}"
    );
    let parsed = Config::parse(&text, "test").unwrap_or_else(|e| panic!("{e}"));
    Lb::with_config(Config {
        listen: "127.0.0.1:0".into(),
        admin: None,
        backends: test_config(&[(backend, 1)]).backends,
        ..parsed
    })
}

/// Stops a balancer; nothing is in flight, so the drain must finish (well within the test
/// config's short `drain_timeout`).
fn stop(lb: Lb) {
    assert!(lb.shutdown(), "drained");
}

/// Writes `raw` on a fresh connection and reads one response.
fn exchange(addr: SocketAddr, raw: &str) -> Response {
    let r = Client::connect(addr).request(raw);
    assert!(
        r.has_header("content-length"),
        "our answers have a Content-Length: {:?}",
        r.headers
    );
    r
}

/// A GET with `Connection: close` and optional extra header lines.
fn get(addr: SocketAddr, target: &str, extra: &str) -> Response {
    let raw = format!("GET {target} HTTP/1.1\r\nHost: test\r\n{extra}Connection: close\r\n\r\n");
    exchange(addr, &raw)
}

/// A GET on behalf of client `ip` (the balancer trusts 127.0.0.1 as a proxy).
fn get_as(addr: SocketAddr, ip: &str, target: &str) -> Response {
    get(addr, target, &format!("X-Forwarded-For: {ip}\r\n"))
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn a_flooding_client_is_rate_limited_then_banned_while_another_sees_no_errors() {
    let backend = Backend::answering("ok\n");
    let lb = balancer(
        &backend,
        "trusted_proxies 127.0.0.1/32\nrate_limit rate=1/s burst=10\nban after=3 window=1m duration=10m\n",
    );
    let addr = lb.addr;
    const FLOODER: &str = "198.51.100.1";
    const CALM: &str = "198.51.100.2";

    // The calm client sends fewer requests than its burst, in parallel with the flood.
    let calm = thread::spawn(move || {
        (0..8)
            .map(|i| get_as(addr, CALM, &format!("/calm/{i}")))
            .map(|r| (r.status, r.text()))
            .collect::<Vec<_>>()
    });
    let flood: Vec<Response> = (0..40)
        .map(|i| get_as(addr, FLOODER, &format!("/flood/{i}")))
        .collect();
    let calm = calm.join().unwrap();

    assert!(
        calm.iter().all(|(status, _)| *status == 200),
        "the calm client saw errors: {calm:?}"
    );
    let calm_seen = backend.requests_to("/calm/");
    assert_eq!(calm_seen.len(), 8);
    assert!(calm_seen
        .iter()
        .all(|s| s.header("x-forwarded-for") == Some("198.51.100.2, 127.0.0.1")));

    let statuses: Vec<u16> = flood.iter().map(|r| r.status).collect();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(ok >= 10, "the burst is allowed: {statuses:?}");
    // exactly `after` rate-limit answers, then the ban: the 4th refusal and everything after it
    let limited: Vec<&Response> = flood.iter().filter(|r| r.status == 429).collect();
    assert_eq!(limited.len(), 3, "{statuses:?}");
    for r in &limited {
        assert_eq!(r.text(), "rate limited\n");
        let retry: u32 = r
            .header("retry-after")
            .expect("429 has Retry-After")
            .parse()
            .unwrap();
        assert!((1..=2).contains(&retry), "Retry-After {retry}");
    }
    let first_ban = statuses
        .iter()
        .position(|s| *s == 403)
        .expect("the flooder is banned");
    assert!(
        flood[first_ban..]
            .iter()
            .all(|r| r.status == 403 && r.text() == "banned\n"),
        "{statuses:?}"
    );
    assert!(first_ban < 20, "{statuses:?}");
    // refused requests never reached the backend
    assert_eq!(backend.requests_to("/flood/").len(), ok);

    // The ban is visible, and it survives a reload.
    let filter = Arc::clone(&lb.running().shared().filter);
    let stats = filter.stats(Instant::now());
    assert_eq!(stats.bans.len(), 1);
    assert_eq!(
        stats.bans[0].0,
        "198.51.100.1".parse::<std::net::IpAddr>().unwrap()
    );
    assert!((590..=600).contains(&stats.bans[0].1), "{:?}", stats.bans);
    let count = |reason: &str| stats.refused.iter().find(|(r, _)| *r == reason).unwrap().1;
    assert_eq!(count("rate_limited"), 3);
    assert_eq!(count("banned") as usize, 40 - ok - 3);

    let mut reloaded = lb.running().config();
    reloaded.filter = Config::parse("trusted_proxies 127.0.0.1/32\n", "reload")
        .unwrap()
        .filter;
    lb.running().apply(reloaded);
    assert_eq!(get_as(addr, FLOODER, "/flood/after-reload").status, 403);
    assert_eq!(get_as(addr, CALM, "/calm/after-reload").status, 200);
    stop(lb);
}

#[test]
fn denied_clients_get_403_and_never_reach_the_backend() {
    let backend = Backend::answering("ok\n");
    let lb = balancer(
        &backend,
        "trusted_proxies 127.0.0.1/32\ndeny 203.0.113.0/24 2001:db8::/32\n",
    );
    let r = get_as(lb.addr, "203.0.113.9", "/denied/1");
    assert_eq!((r.status, r.text().as_str()), (403, "access denied\n"));
    let r = get_as(lb.addr, "2001:db8::7", "/denied/2");
    assert_eq!(r.status, 403);
    // a right-most untrusted entry decides: the left one is whatever the client claimed
    let r = get_as(lb.addr, "192.0.2.1, 203.0.113.9", "/denied/3");
    assert_eq!(r.status, 403);
    let r = get_as(lb.addr, "203.0.113.9, 192.0.2.1", "/allowed/1");
    assert_eq!(r.status, 200);
    // without the header the (trusted) peer is the client
    assert_eq!(get(lb.addr, "/allowed/2", "").status, 200);
    assert!(backend.requests_to("/denied/").is_empty());
    assert_eq!(backend.requests_to("/allowed/").len(), 2);
    stop(lb);

    // the TCP peer itself, no proxies involved; and an allow list that leaves it out
    for rule in ["deny 127.0.0.0/8\n", "allow 10.0.0.0/8 ::1\n"] {
        let lb = balancer(&backend, rule);
        let r = get(lb.addr, "/peer-denied", "X-Forwarded-For: 10.0.0.1\r\n");
        assert_eq!(r.status, 403, "{rule}");
        stop(lb);
    }
    assert!(backend.requests_to("/peer-denied").is_empty());
}

#[test]
fn a_declared_body_over_max_body_gets_413_before_anything_is_forwarded() {
    let backend = Backend::answering("ok\n");
    let lb = balancer(&backend, "limits max_body=1KiB\n");
    // Only the head is sent: the answer must come without the body being read.
    let raw =
        "POST /big HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\nConnection: close\r\n\r\n";
    let r = exchange(lb.addr, raw);
    assert_eq!(
        (r.status, r.text().as_str()),
        (413, "request body too large\n")
    );
    // a body at the limit passes
    let raw = format!(
        "POST /small HTTP/1.1\r\nHost: test\r\nContent-Length: 1024\r\nConnection: close\r\n\r\n{}",
        "x".repeat(1024)
    );
    assert_eq!(exchange(lb.addr, &raw).status, 200);
    assert!(backend.requests_to("/big").is_empty());
    let small = backend.requests_to("/small");
    assert_eq!((small.len(), small[0].method.as_str()), (1, "POST"));
    stop(lb);
}

#[test]
fn a_chunked_body_over_max_body_gets_413() {
    let backend = Backend::answering("ok\n");
    let lb = balancer(&backend, "limits max_body=1KiB\n");
    let chunk = format!("3e8\r\n{}\r\n", "y".repeat(1000));
    let raw = format!(
        "POST /chunked-big HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{}0\r\n\r\n",
        chunk.repeat(4)
    );
    let r = exchange(lb.addr, &raw);
    assert_eq!(r.status, 413);
    // a small chunked body passes
    let raw = format!(
        "POST /chunked-small HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunk}0\r\n\r\n"
    );
    assert_eq!(exchange(lb.addr, &raw).status, 200);
    stop(lb);
}

#[test]
fn request_rules_method_path_and_target_length() {
    let backend = Backend::answering("ok\n");
    let lb = balancer(
        &backend,
        // The request line may be longer than the front end's default 8 KiB here, so that the
        // filter's own target limit is what refuses.
        "deny_method TRACE CONNECT\ndeny_path /.git /admin\nlimits max_target=8KiB max_request_line=16KiB\n",
    );
    let addr = lb.addr;
    let trace = exchange(
        addr,
        "TRACE /rules/trace HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        (trace.status, trace.text().as_str()),
        (405, "method not allowed\n")
    );

    let git = get(addr, "/.git/config", "");
    assert_eq!(
        (git.status, git.text().as_str()),
        (403, "path not allowed\n")
    );
    assert_eq!(get(addr, "/%2egit/config", "").status, 403);
    assert_eq!(get(addr, "/admin", "").status, 403);
    assert_eq!(get(addr, "/admin/users?x=1", "").status, 403);
    assert_eq!(get(addr, "/administrator", "").status, 200);

    let long = format!("/rules/long?{}", "a".repeat(9000 - "/rules/long?".len()));
    assert_eq!(long.len(), 9000);
    let r = get(addr, &long, "");
    assert_eq!(
        (r.status, r.text().as_str()),
        (414, "request target too long\n")
    );
    let fits = format!("/rules/fits?{}", "a".repeat(8192 - "/rules/fits?".len()));
    assert_eq!(get(addr, &fits, "").status, 200);

    assert!(backend.requests_to("/rules/trace").is_empty());
    assert!(backend.requests_to("/rules/long").is_empty());
    assert!(backend.requests_to("/.git").is_empty() && backend.requests_to("/%2egit").is_empty());
    assert_eq!(backend.requests_to("/admin").len(), 1); // /administrator
    assert_eq!(backend.requests_to("/rules/fits").len(), 1);

    let stats = lb.running().shared().filter.stats(Instant::now());
    let count = |reason: &str| stats.refused.iter().find(|(r, _)| *r == reason).unwrap().1;
    assert_eq!(
        (count("method"), count("path"), count("target_too_long")),
        (1, 4, 1)
    );
    stop(lb);
}

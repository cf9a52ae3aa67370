use super::testing::*;
use super::*;

// ---- no settings --------------------------------------------------------------------------

#[test]
fn no_settings_filter_nothing() {
    let f = Filter::default();
    let t = Instant::now();
    assert!(!f.active.load(Ordering::Relaxed));
    let h = req(
        "10.0.0.1",
        "TRACE",
        &format!("/{}", "a".repeat(100_000)),
        &[],
    );
    assert_eq!(status(&f, &h, Framing::Length(u64::MAX - 1), t).0, 200);
    assert_eq!(f.max_body(), None);
    let s = f.stats(t);
    assert!(s.refused.iter().all(|(_, n)| *n == 0));
    assert_eq!(s.refused.len(), 8);
    assert!(s.bans.is_empty());
}

// ---- request rules ------------------------------------------------------------------------

#[test]
fn methods_targets_and_bodies() {
    let f = Filter::new(cfg(
        "deny_method TRACE CONNECT\nlimits max_target=16B max_body=1KiB\n",
    ));
    let t = Instant::now();
    assert_eq!(code(&f, &req("10.0.0.1", "TRACE", "/", &[]), t), 405);
    assert_eq!(code(&f, &req("10.0.0.1", "trace", "/", &[]), t), 405);
    assert_eq!(code(&f, &req("10.0.0.1", "TRACEX", "/", &[]), t), 200);
    assert_eq!(code(&f, &get("10.0.0.1", "/0123456789abcde"), t), 200); // 16 bytes
    assert_eq!(code(&f, &get("10.0.0.1", "/0123456789abcdef"), t), 414); // 17 bytes
    let post = req("10.0.0.1", "POST", "/", &[]);
    assert_eq!(status(&f, &post, Framing::Length(1024), t).0, 200);
    assert_eq!(status(&f, &post, Framing::Length(1025), t).0, 413);
    // chunked bodies are left to the streaming check
    assert_eq!(status(&f, &post, Framing::Chunked, t).0, 200);
    assert_eq!(f.max_body(), Some(1024));
    f.note_body_too_large();
    let s = f.stats(t);
    assert_eq!(
        s.refused,
        vec![
            ("denied", 0),
            ("banned", 0),
            ("method", 2),
            ("target_too_long", 1),
            ("path", 0),
            ("body_too_large", 2),
            ("rate_limited", 0),
            ("shared_unavailable", 0)
        ]
    );
}

#[test]
fn checks_run_in_order() {
    let f = Filter::new(cfg("\
deny 192.0.2.0/24
rate_limit rate=1/m burst=1
ban after=1 window=1m duration=1m
deny_method TRACE
limits max_target=32B max_body=10B
deny_path /admin
"));
    let t = Instant::now();
    let long = format!("/admin/{}", "x".repeat(40));
    let post = |client: &str, method: &str, target: &str, len: u64| {
        status(
            &f,
            &req(client, method, target, &[]),
            Framing::Length(len),
            t,
        )
        .0
    };
    // denied beats everything
    assert_eq!(post("192.0.2.1", "TRACE", &long, 100), 403);
    assert_eq!(refused(&f, t, "denied"), 1);
    // method beats target length, path and body size
    assert_eq!(post("10.0.0.1", "TRACE", &long, 100), 405);
    // target length beats path
    assert_eq!(post("10.0.0.1", "POST", &long, 100), 414);
    // path beats body size
    assert_eq!(post("10.0.0.1", "POST", "/admin", 100), 403);
    assert_eq!(refused(&f, t, "path"), 1);
    // body size beats the rate limit, and refused requests take no token
    assert_eq!(post("10.0.0.1", "POST", "/", 100), 413);
    assert_eq!(post("10.0.0.1", "POST", "/", 1), 200);
    // now the bucket is empty: rate limit, then a ban (after=1: the second refusal)
    assert_eq!(post("10.0.0.1", "POST", "/", 1), 429);
    assert_eq!(post("10.0.0.1", "POST", "/", 1), 403);
    // banned beats method, target, path and body
    assert_eq!(post("10.0.0.1", "TRACE", &long, 100), 403);
    let s = f.stats(t);
    assert_eq!(
        s.refused,
        vec![
            ("denied", 1),
            ("banned", 2),
            ("method", 1),
            ("target_too_long", 1),
            ("path", 1),
            ("body_too_large", 1),
            ("rate_limited", 1),
            ("shared_unavailable", 0)
        ]
    );
    assert_eq!(s.bans, vec![(ip("10.0.0.1"), 60)]);
}

//! Shared limits (`shared=on`) against a real `redis-server` started by the test on a free
//! port: several balancers, one limit; bans that travel; Redis paused, continued, killed and
//! restarted; configurations Redis refuses. Skipped with a note where `redis-server` is not
//! installed (a failure under CI).
//!
//! Clients are told apart with `X-Forwarded-For` behind `trusted_proxies 127.0.0.1/32`.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use loadbalancer::Config;

use crate::support::{
    admin_status, run_binary, serial, test_config, wait_until, Backend, Client, Headers, Lb,
    LbProcess, Redis, Response, Session, TempDir,
};

/// A balancer in this process in front of `backend`, with the config lines `lines`, the admin
/// listener on and `explain on`.
fn balancer(backend: &Backend, lines: &str) -> Lb {
    let text = format!(
        "health off\nslow_start off\naccess_log off\nworkers 4\ndrain_timeout 2s\nexplain on\n\
         trusted_proxies 127.0.0.1/32\n{lines}"
    );
    let parsed = Config::parse(&text, "test.conf").unwrap_or_else(|e| panic!("{e}"));
    Lb::with_config(Config {
        listen: "127.0.0.1:0".into(),
        admin: Some("127.0.0.1:0".into()),
        backends: test_config(&[(backend, 1)]).backends,
        ..parsed
    })
}

/// A GET for client `ip`, asking for the explanation.
fn get_as(addr: SocketAddr, ip: &str, target: &str) -> Response {
    Client::connect(addr).request(&format!(
        "GET {target} HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: {ip}\r\nX-Balancer-Explain: 1\r\n\
         Connection: close\r\n\r\n"
    ))
}

/// The clients banned in `lb`'s own ban table (what it refuses without asking Redis).
fn banned(lb: &Lb) -> Vec<IpAddr> {
    let filter = &lb.running().shared().filter;
    filter
        .stats(Instant::now())
        .bans
        .iter()
        .map(|(ip, _)| *ip)
        .collect()
}

/// `/status`'s `shared` object.
fn shared_status(lb: &Lb) -> serde_json::Value {
    admin_status(lb.running().admin_addr().unwrap())["shared"].clone()
}

/// One client (one address) sending to `a` and `b` in turn, over three connections to each,
/// as fast as it can for `for_`: the 200s, the requests sent, and the time from the first
/// request sent to the last.
fn alternate(a: SocketAddr, b: SocketAddr, for_: Duration) -> (usize, usize, Duration) {
    let started = Instant::now();
    let threads: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(move || {
                let mut sessions = [Session::new(a), Session::new(b)];
                let (mut accepted, mut sent, mut first, mut last) = (0, 0, None, started);
                while started.elapsed() < for_ {
                    last = Instant::now();
                    first.get_or_insert(last);
                    let r = sessions[sent % 2].get("/limited").expect("an answer");
                    assert!(matches!(r.status, 200 | 429), "{}", r.status);
                    accepted += usize::from(r.status == 200);
                    sent += 1;
                }
                (accepted, sent, first.unwrap_or(started), last)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let first = results.iter().map(|r| r.2).min().unwrap();
    let last = results.iter().map(|r| r.3).max().unwrap();
    let accepted = results.iter().map(|r| r.0).sum();
    (accepted, results.iter().map(|r| r.1).sum(), last - first)
}

/// What one `rate=10/s burst=10` bucket admits over `window`: the burst, then 10 a second.
fn admitted_by_one_bucket(window: Duration) -> f64 {
    10.0 + 10.0 * window.as_secs_f64()
}

#[test]
fn two_balancer_processes_share_one_rate_limit_and_without_shared_double_it() {
    let Some(redis) = Redis::start("two_balancer_processes_share_one_rate_limit", &[]) else {
        return;
    };
    let _serial = serial();
    let backend = Backend::answering("ok\n");
    // A generous timeout: on a busy machine a 5 ms one would send some checks to the fallback.
    let shared = format!("shared redis={} timeout=200ms", redis.url(None));
    let run = |lines: &[&str]| {
        let a = LbProcess::spawn(&[backend.url()], lines);
        let b = LbProcess::spawn(&[backend.url()], lines);
        alternate(a.addr, b.addr, Duration::from_secs(3))
    };
    // burst + rate × t = 10 + 10/s × 3 s = 40 (t measured: from the first request to the last),
    // within 10 %.
    let (accepted, sent, window) = run(&[&shared, "rate_limit rate=10/s burst=10 shared=on"]);
    assert!(
        sent > 120,
        "the client sent only {sent}: the limit was not tested"
    );
    let expected = admitted_by_one_bucket(window);
    let within = |n: usize, x: f64| (n as f64 - x).abs() <= x * 0.1;
    assert!(
        within(accepted, expected),
        "shared: {accepted} of {sent}, {expected:.1} expected"
    );
    // Each balancer on its own lets through its own burst + rate × t: twice as many.
    let (accepted, sent, window) = run(&["rate_limit rate=10/s burst=10"]);
    let expected = 2.0 * admitted_by_one_bucket(window);
    assert!(
        within(accepted, expected),
        "local: {accepted} of {sent}, {expected:.1} expected"
    );
}

#[test]
fn a_ban_made_on_one_balancer_refuses_on_another_within_100ms_and_on_one_started_later() {
    let Some(redis) = Redis::start("bans_travel", &[]) else {
        return;
    };
    let _serial = serial();
    let backend = Backend::answering("ok\n");
    let lines = format!(
        "shared redis={} timeout=200ms\nrate_limit rate=1/m burst=1 shared=on\n\
         ban after=1 window=1m duration=10m shared=on\n",
        redis.url(None)
    );
    let (a, b) = (balancer(&backend, &lines), balancer(&backend, &lines));
    wait_until("both subscribed", Duration::from_secs(5), || {
        let subs: (String, u32) = redis.command(&["PUBSUB", "NUMSUB", "lb:bans"]);
        subs.1 == 2
    });
    const X: &str = "198.51.100.7";
    let x: IpAddr = X.parse().unwrap();
    assert_eq!(get_as(a.addr, X, "/a").status, 200);
    let r = get_as(a.addr, X, "/a");
    assert_eq!(r.status, 429);
    let explained = r.header("x-balancer-explain").unwrap_or_default();
    assert!(explained.contains("limit=shared"), "{explained}");
    assert_eq!(
        get_as(a.addr, X, "/a").status,
        403,
        "the second refusal bans"
    );
    let banned_at = Instant::now();
    wait_until("the ban on b", Duration::from_secs(2), || {
        banned(&b).contains(&x)
    });
    let took = banned_at.elapsed();
    assert!(
        took < Duration::from_millis(100),
        "the ban took {took:?} to reach b"
    );
    assert_eq!(get_as(b.addr, X, "/b").status, 403);
    assert!(backend.requests_to("/b").is_empty());
    assert_eq!(get_as(b.addr, "198.51.100.8", "/b").status, 200);
    // A balancer started later reads the bans at once: no request of X needed.
    let c = balancer(&backend, &lines);
    wait_until("the ban on c", Duration::from_secs(2), || {
        banned(&c).contains(&x)
    });
    assert_eq!(get_as(c.addr, X, "/c").status, 403);
    assert!(backend.requests_to("/c").is_empty());
}

/// Sends `n` requests from new clients (so that none is answered from the near-cache), each
/// right after the same request to a path no shared rule covers (`/free/`): the longest that a
/// shared request took beyond its unshared twin (what waiting on Redis added, the machine's
/// load cancelled out as far as two neighbouring requests share it), and the explanation of the
/// last.
fn new_clients(lb: &Lb, n: usize, from: &mut u32) -> (Duration, String) {
    let mut longest = Duration::ZERO;
    let mut explained = String::new();
    for _ in 0..n {
        *from += 1;
        let ip = format!(
            "10.{}.{}.{}",
            *from >> 16 & 255,
            *from >> 8 & 255,
            *from & 255
        );
        let started = Instant::now();
        assert_eq!(get_as(lb.addr, &ip, "/free/").status, 200);
        let free = started.elapsed();
        let started = Instant::now();
        let r = get_as(lb.addr, &ip, "/new");
        longest = longest.max(started.elapsed().saturating_sub(free));
        assert_eq!(r.status, 200);
        explained = r
            .header("x-balancer-explain")
            .unwrap_or_default()
            .to_string();
    }
    (longest, explained)
}

#[test]
fn redis_paused_falls_back_at_once_and_comes_back_and_a_restart_reloads_script_and_bans() {
    let Some(mut redis) = Redis::start("redis_paused_and_lost", &[]) else {
        return;
    };
    let _serial = serial();
    let backend = Backend::answering("ok\n");
    let lines = format!(
        "shared redis={} timeout=5ms\nrate_limit rate=1000/s burst=1000 shared=on\n\
         rate_limit rate=1000/s path=/free\n",
        redis.url(None)
    );
    let lb = balancer(&backend, &lines);
    let mut from = 0;
    let (_, explained) = new_clients(&lb, 30, &mut from);
    assert!(explained.contains("limit=shared"), "{explained}");
    let status = shared_status(&lb);
    assert_eq!(
        (status["connected"].as_bool(), status["fallback"].as_bool()),
        (Some(true), Some(false))
    );
    assert!(status["rtt_p50_ms"].as_f64().is_some(), "{status}");

    // Paused: the first checks wait for the 5 ms timeout, no longer; then the fallback. A
    // loaded machine can hold up any one request by milliseconds, so a pause whose longest wait
    // is over the bound is tried again, up to three pauses: a wait the balancer causes (a missed
    // deadline, the Redis thread's coarse socket timeout) comes back in every pause.
    let bound = Duration::from_millis(10);
    let mut longest = Vec::new();
    for _ in 0..3 {
        redis.pause();
        longest.push(new_clients(&lb, 10, &mut from).0);
        if longest.last() <= Some(&bound) {
            break;
        }
        redis.resume();
        wait_until("shared again", Duration::from_secs(3), || {
            let status = shared_status(&lb);
            status["connected"] == true && status["fallback"] == false
        });
    }
    assert!(
        longest.last() <= Some(&bound),
        "a shared check added {longest:?} in each pause: more than timeout 5 ms + 5 ms"
    );
    wait_until("the fallback", Duration::from_secs(3), || {
        shared_status(&lb)["fallback"] == true
    });
    let status = shared_status(&lb);
    assert_eq!(status["connected"], false);
    assert!(status["last_error"].is_string(), "{status}");
    let (_, explained) = new_clients(&lb, 1, &mut from);
    assert!(explained.contains("limit=local-fallback"), "{explained}");

    // Continued: back to shared within a second.
    redis.resume();
    let resumed = Instant::now();
    wait_until("shared again", Duration::from_secs(3), || {
        shared_status(&lb)["fallback"] == false
    });
    assert!(
        resumed.elapsed() < Duration::from_secs(1),
        "back after {:?}",
        resumed.elapsed()
    );
    let (_, explained) = new_clients(&lb, 1, &mut from);
    assert!(explained.contains("limit=shared"), "{explained}");

    // The script flushed (as after a restart): loaded again, and the check still answered by
    // Redis, not by the fallback.
    let sha = loadbalancer::filter::shared::script_sha();
    redis.command::<()>(&["SCRIPT", "FLUSH"]);
    let errors = |lb: &Lb| shared_status(lb)["calls"]["error"].as_u64().unwrap();
    let errors_before = errors(&lb);
    new_clients(&lb, 1, &mut from);
    wait_until("the script loaded again", Duration::from_secs(3), || {
        redis.command::<Vec<u8>>(&["SCRIPT", "EXISTS", &sha]) == [1]
    });
    assert_eq!(errors(&lb), errors_before);

    // Killed and restarted: the fallback, then shared again with the script loaded.
    redis.restart();
    wait_until("shared after the restart", Duration::from_secs(5), || {
        new_clients(&lb, 1, &mut from);
        shared_status(&lb)["connected"] == true && shared_status(&lb)["fallback"] == false
    });
    let exists: Vec<u8> = redis.command(&["SCRIPT", "EXISTS", &sha]);
    assert_eq!(exists, vec![1]);
    // A ban written to the sorted set without being published (as one made while this
    // balancer's connections were down) is read at the next reconnection.
    let (now_s, now_us): (u64, u64) = redis.command(&["TIME"]);
    let end = (now_s + 600) * 1_000_000 + now_us;
    redis.command::<()>(&["ZADD", "lb:bans", &end.to_string(), "203.0.113.9"]);
    redis.command::<()>(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    let y: IpAddr = "203.0.113.9".parse().unwrap();
    wait_until("the ban read again", Duration::from_secs(5), || {
        banned(&lb).contains(&y)
    });
    // The password-less URL is shown as is; /status never shows a password (see the next test).
    assert_eq!(shared_status(&lb)["redis"], redis.url(None));
}

#[test]
fn a_wrong_password_or_a_url_that_is_not_redis_is_a_config_error_naming_the_line() {
    let Some(redis) = Redis::start("shared_bad_config", &["--requirepass", "right-one"]) else {
        return;
    };
    let dir = TempDir::new("shared-conf");
    let conf = dir.path().join("lb.conf");
    // connect_timeout=2s: a loaded machine must not turn "refused the credentials" into "does
    // not answer" (the check waits for Redis's PING for about two of them).
    let check = |shared_line: &str| {
        let text =
            format!("backend http://127.0.0.1:9\nrate_limit rate=5/s shared=on\n{shared_line}\n");
        std::fs::write(&conf, text).unwrap();
        let conf = conf.to_str().unwrap();
        run_binary(
            &["--check", "--config", conf],
            dir.path(),
            Duration::from_secs(20),
        )
    };
    let wrong = format!(
        "shared redis={} connect_timeout=2s",
        redis.url(Some("wrong-one"))
    );
    let (status, out, err) = check(&wrong);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("lb.conf:3: shared: Redis at redis://:********@127.0.0.1:")
            && err.contains("refused the credentials"),
        "{err}"
    );
    assert!(
        !err.contains("wrong-one") && !out.contains("wrong-one"),
        "{out}{err}"
    );
    let (status, _, err) = check("shared redis=http://127.0.0.1:6379/0");
    assert_eq!(status.code(), Some(2));
    assert!(
        err.contains("lb.conf:3: shared: the Redis URL must start with redis://, not http://"),
        "{err}"
    );
    let right = format!(
        "shared redis={} connect_timeout=2s",
        redis.url(Some("right-one"))
    );
    let (status, out, err) = check(&right);
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("answers (PING in"), "{err}");
    assert!(
        out.contains("redis=redis://:********@") && !out.contains("right-one"),
        "{out}"
    );
    // Running with the right password: the log names Redis, never the password.
    let backend = Backend::answering("ok\n");
    let shared = format!("shared redis={}", redis.url(Some("right-one")));
    let lb = LbProcess::spawn_logging(&[backend.url()], &[&shared]);
    let line = lb.wait_log("shared limits in Redis at redis://:********@127.0.0.1:", 1);
    assert!(!lb.stderr().contains("right-one"), "{line}");
    drop(lb);
    // Starting, not only checking, with the wrong password fails the same way.
    std::fs::write(
        &conf,
        format!(
            "backend http://127.0.0.1:9\nshared redis={} connect_timeout=2s\n",
            redis.url(Some("nope"))
        ),
    )
    .unwrap();
    let conf = conf.to_str().unwrap();
    let (status, _, err) = run_binary(
        &[
            "--config",
            conf,
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "off",
        ],
        dir.path(),
        Duration::from_secs(20),
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("lb.conf:2: shared: Redis at") && !err.contains("nope"),
        "{err}"
    );
}

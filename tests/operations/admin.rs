//! The admin listener: `/status` JSON, `/metrics` Prometheus text, tokens, routes and methods,
//! against an in-process balancer with its admin listener on `127.0.0.1:0`.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use crate::support::{
    self, admin_on, admin_status, fast_health, listed, reply, wait_until, Backend, Client, Headers,
    Lb, Response,
};
use loadbalancer::{Balancer, Config};

fn admin_addr(lb: &Lb) -> SocketAddr {
    lb.running().admin_addr().expect("admin listener runs")
}

/// `method target` on the admin listener with extra header lines (each ending in CRLF).
fn admin(addr: SocketAddr, method: &str, target: &str, extra: &str) -> Response {
    Client::connect(addr).request(&format!(
        "{method} {target} HTTP/1.1\r\nHost: admin.test\r\n{extra}Connection: close\r\n\r\n"
    ))
}

fn send_traffic(lb: &Lb, n: usize) {
    for _ in 0..n {
        let r = support::get(lb.addr, "/work");
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

fn backend_json<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    listed(status, name).unwrap_or_else(|| panic!("no backend {name} in {status}"))
}

#[test]
fn status_json_has_the_documented_fields_and_shows_a_backend_going_down() {
    let a = Backend::named("a");
    let b = Backend::named("b");
    let lb = Lb::start(&[(&a, 1), (&b, 1)], |c| {
        admin_on(c);
        fast_health(c);
    });
    let addr = admin_addr(&lb);
    assert!(addr.ip().is_loopback());
    send_traffic(&lb, 10);

    // A worker counts a response after it has finished sending it, so the client can read the
    // last one a moment before it is counted.
    support::wait_until("10 responses counted", Duration::from_secs(5), || {
        admin_status(addr)["responses_total"].as_u64() >= Some(10)
    });
    let s = admin_status(addr);
    for field in ["uptime_s", "requests_per_s", "queue_depth", "retries"] {
        assert!(s[field].is_number(), "{field} in {s}");
    }
    // The poller's longest pass in the last minute: it ran, and nothing held it for long.
    let longest = s["front"]["poller_longest_iteration_us"].as_u64().unwrap();
    assert!(longest > 0 && longest < 1_000_000, "{longest} µs");
    assert!(s["responses_total"].as_u64().unwrap() >= 10);
    assert!(s["responses"]["200"].as_u64().unwrap() >= 10, "{s}");
    for reason in ["queue_full", "shutting_down", "bad_request", "no_backend"] {
        assert_eq!(s["rejections"][reason], 0, "{s}");
    }
    assert!(s["filter"]["refused"].is_object(), "{s}");
    assert!(s["filter"]["bans"].as_array().unwrap().is_empty(), "{s}");
    assert!(s["request_duration"]["count"].as_u64().unwrap() >= 10);
    let backends = s["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 2);
    let mut total = 0;
    for (i, (be, listed)) in [&a, &b].iter().zip(backends).enumerate() {
        let name = be.addr().to_string();
        assert_eq!(listed["id"], i as u64);
        assert_eq!(listed["name"], name.as_str());
        assert_eq!(listed["url"], be.url().as_str());
        assert_eq!(listed["state"], "healthy");
        assert_eq!(listed["healthy"], true);
        assert_eq!(listed["breaker"], "closed");
        assert_eq!(listed["weight"], 1);
        assert!(listed["effective_weight"].as_f64().unwrap() > 0.0);
        assert!(listed["latency_ms"].as_f64().unwrap() >= 0.0, "{listed}");
        assert_eq!(listed["failure_rate"], 0.0);
        assert_eq!(listed["in_flight"], 0);
        assert_eq!(listed["failures"], 0);
        assert!(listed["bytes_out"].as_u64().unwrap() > 0);
        assert!(listed["share"].is_number());
        assert!(listed["last_error"].is_null());
        total += listed["requests"].as_u64().unwrap();
    }
    assert_eq!(total, 10, "every request counted once: {s}");

    // B's health check starts failing: /status shows it unhealthy, with the reason.
    b.set_healthy(false);
    let b_name = b.addr().to_string();
    wait_until("b unhealthy in /status", Duration::from_secs(5), || {
        backend_json(&admin_status(addr), &b_name)["state"] == "unhealthy"
    });
    let s = admin_status(addr);
    let listed = backend_json(&s, &b_name);
    assert_eq!(listed["healthy"], false);
    assert!(
        listed["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("health check")),
        "{listed}"
    );
    assert_eq!(
        backend_json(&s, &a.addr().to_string())["state"],
        "healthy",
        "a is unaffected"
    );

    // And back.
    b.set_healthy(true);
    wait_until("b healthy again", Duration::from_secs(5), || {
        backend_json(&admin_status(addr), &b_name)["healthy"] == true
    });
}

// ---------------------------------------------------------------------------------------------
// A small validating parser of the Prometheus text format 0.0.4
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Family {
    kind: String,
    help: bool,
    /// `(sample name, labels, value)` in order.
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Parses `{k="v",...}` (the text after the metric name) into labels and the rest of the line.
fn parse_labels(s: &str, line: &str) -> (BTreeMap<String, String>, String) {
    let mut labels = BTreeMap::new();
    let Some(mut rest) = s.strip_prefix('{') else {
        return (labels, s.to_string());
    };
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return (labels, after.to_string());
        }
        let eq = rest
            .find('=')
            .unwrap_or_else(|| panic!("label without = in {line:?}"));
        let name = &rest[..eq];
        assert!(
            valid_label_name(name),
            "bad label name {name:?} in {line:?}"
        );
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .unwrap_or_else(|| panic!("label value not quoted in {line:?}"));
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => panic!("bad escape {other:?} in {line:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, '\n')) => panic!("raw newline in label value in {line:?}"),
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        };
        assert!(
            labels.insert(name.to_string(), value).is_none(),
            "label {name} twice in {line:?}"
        );
        rest = &rest[end + 1..];
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else {
            assert!(rest.starts_with('}'), "expected , or }} in {line:?}");
        }
    }
}

/// The family a sample belongs to: its own name, or a histogram's base name.
fn family_of<'a>(name: &'a str, families: &HashMap<String, Family>) -> &'a str {
    if families.contains_key(name) {
        return name;
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if families.get(base).is_some_and(|f| f.kind == "histogram") {
                return base;
            }
        }
    }
    name
}

/// Parses and validates a whole exposition; panics on anything malformed.
fn parse_prometheus(text: &str) -> HashMap<String, Family> {
    let mut families: HashMap<String, Family> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            let what = words.next().unwrap();
            if what != "HELP" && what != "TYPE" {
                continue; // a plain comment
            }
            let name = words
                .next()
                .unwrap_or_else(|| panic!("no name in {line:?}"));
            assert!(valid_name(name), "bad metric name {name:?}");
            let rest = words.next().unwrap_or("");
            let f = families.entry(name.to_string()).or_default();
            assert!(
                f.samples.is_empty(),
                "{what} for {name} after its samples: {line:?}"
            );
            if !order.contains(&name.to_string()) {
                order.push(name.to_string());
            }
            if what == "HELP" {
                assert!(!f.help, "two HELP lines for {name}");
                assert!(!rest.is_empty(), "empty HELP for {name}");
                f.help = true;
            } else {
                assert!(f.kind.is_empty(), "two TYPE lines for {name}");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&rest),
                    "bad TYPE {rest:?} for {name}"
                );
                f.kind = rest.to_string();
            }
            continue;
        }
        assert!(!line.starts_with('#'), "bad comment line {line:?}");
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let name = &line[..name_end];
        assert!(valid_name(name), "bad metric name {name:?} in {line:?}");
        let (labels, rest) = parse_labels(&line[name_end..], line);
        let value_text = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("no space before the value in {line:?}"));
        let value_text = value_text.split(' ').next().unwrap(); // an optional timestamp may follow
        let value = parse_value(value_text).unwrap_or_else(|| panic!("bad value in {line:?}"));
        let family = family_of(name, &families).to_string();
        let f = families
            .get_mut(&family)
            .unwrap_or_else(|| panic!("sample {line:?} before its HELP and TYPE"));
        assert!(
            f.help && !f.kind.is_empty(),
            "{family}: HELP and TYPE first"
        );
        assert_eq!(
            order.last(),
            Some(&family),
            "samples of {family} are not grouped together"
        );
        if f.kind == "counter" {
            assert!(value >= 0.0, "negative counter {line:?}");
            assert!(
                name.ends_with("_total"),
                "counter {name} should end in _total"
            );
        }
        if f.kind == "histogram" {
            assert!(
                name != family,
                "a histogram's samples are _bucket/_sum/_count"
            );
        }
        f.samples.push((name.to_string(), labels, value));
    }
    for (name, f) in &families {
        assert!(f.help && !f.kind.is_empty(), "{name} lacks HELP or TYPE");
        if f.kind == "histogram" {
            check_histogram(name, f);
        }
    }
    families
}

fn check_histogram(name: &str, f: &Family) {
    let buckets: Vec<(f64, f64)> = f
        .samples
        .iter()
        .filter(|(n, _, _)| *n == format!("{name}_bucket"))
        .map(|(_, labels, v)| {
            let le = labels
                .get("le")
                .unwrap_or_else(|| panic!("{name}_bucket without le"));
            (parse_value(le).expect("numeric le"), *v)
        })
        .collect();
    assert!(!buckets.is_empty(), "{name} has no buckets");
    for w in buckets.windows(2) {
        assert!(w[0].0 < w[1].0, "{name}: le not increasing: {buckets:?}");
        assert!(
            w[0].1 <= w[1].1,
            "{name}: buckets not cumulative: {buckets:?}"
        );
    }
    let last = buckets.last().unwrap();
    assert_eq!(last.0, f64::INFINITY, "{name}: the last bucket is +Inf");
    let one = |suffix: &str| {
        let all: Vec<f64> = f
            .samples
            .iter()
            .filter(|(n, _, _)| *n == format!("{name}{suffix}"))
            .map(|(_, _, v)| *v)
            .collect();
        assert_eq!(all.len(), 1, "{name}{suffix} once");
        all[0]
    };
    assert_eq!(last.1, one("_count"), "{name}: +Inf bucket equals _count");
    assert!(one("_sum") >= 0.0);
}

/// The value of `name` with exactly `labels`.
fn sample(families: &HashMap<String, Family>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    families
        .values()
        .flat_map(|f| &f.samples)
        .find(|(n, l, _)| n == name && *l == want)
        .map(|(_, _, v)| *v)
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
}

fn metrics(addr: SocketAddr) -> HashMap<String, Family> {
    let r = admin(addr, "GET", "/metrics", "");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        r.header("content-type")
    );
    parse_prometheus(&r.text())
}

#[test]
fn metrics_are_valid_prometheus_text_and_counters_grow_with_traffic() {
    let a = Backend::named("a");
    let b = Backend::named("b");
    let lb = Lb::start(&[(&a, 1), (&b, 3)], admin_on);
    let addr = admin_addr(&lb);
    let (na, nb) = (a.addr().to_string(), b.addr().to_string());

    let before = metrics(addr);
    for family in [
        "lb_backend_requests_total",
        "lb_backend_failures_total",
        "lb_backend_in_flight",
        "lb_backend_bytes_out_total",
        "lb_backend_weight",
        "lb_backend_effective_weight",
        "lb_backend_latency_ewma_seconds",
        "lb_backend_failure_rate",
        "lb_backend_healthy",
        "lb_backend_breaker_state",
        "lb_backend_share",
        "lb_responses_total",
        "lb_request_duration_seconds",
        "lb_retries_total",
        "lb_rejections_total",
        "lb_filtered_total",
        "lb_queue_depth",
        "lb_poller_longest_iteration_seconds",
        "lb_bans_active",
        "lb_requests_per_second",
        "lb_uptime_seconds",
    ] {
        assert!(before.contains_key(family), "family {family} missing");
    }
    assert_eq!(before["lb_request_duration_seconds"].kind, "histogram");
    assert_eq!(before["lb_backend_requests_total"].kind, "counter");
    assert_eq!(before["lb_queue_depth"].kind, "gauge");
    assert_eq!(
        sample(&before, "lb_backend_weight", &[("backend", &nb)]),
        3.0
    );
    assert_eq!(
        sample(&before, "lb_backend_healthy", &[("backend", &na)]),
        1.0
    );
    assert_eq!(
        sample(&before, "lb_backend_breaker_state", &[("backend", &na)]),
        0.0
    );
    assert_eq!(
        sample(&before, "lb_rejections_total", &[("reason", "queue_full")]),
        0.0
    );
    let requests = |m: &HashMap<String, Family>, name: &str| {
        sample(m, "lb_backend_requests_total", &[("backend", name)])
    };
    assert_eq!(requests(&before, &na) + requests(&before, &nb), 0.0);
    let count0 = sample(&before, "lb_request_duration_seconds_count", &[]);

    send_traffic(&lb, 8);
    // A worker counts a response after it has finished sending it: wait for the last one.
    support::wait_until("8 responses counted", Duration::from_secs(5), || {
        sample(&metrics(addr), "lb_request_duration_seconds_count", &[]) >= count0 + 8.0
    });
    let after = metrics(addr);
    // Weights 1:3 give 2 and 6 while latencies stay alike; allow for a latency hiccup on a
    // busy machine shifting the effective weights, but every attempt is counted once.
    assert_eq!(requests(&after, &na) + requests(&after, &nb), 8.0);
    assert!(requests(&after, &nb) > requests(&after, &na));
    assert_eq!(
        sample(&after, "lb_responses_total", &[("code", "200")]),
        8.0
    );
    assert_eq!(
        sample(&after, "lb_request_duration_seconds_count", &[]),
        count0 + 8.0
    );
    assert!(sample(&after, "lb_backend_bytes_out_total", &[("backend", &nb)]) >= 6.0);
    assert!(
        sample(
            &after,
            "lb_backend_latency_ewma_seconds",
            &[("backend", &na)]
        ) >= 0.0
    );
    assert!(sample(&after, "lb_uptime_seconds", &[]) >= sample(&before, "lb_uptime_seconds", &[]));

    send_traffic(&lb, 4);
    let later = metrics(addr);
    assert_eq!(
        requests(&later, &na) + requests(&later, &nb),
        12.0,
        "counters keep increasing"
    );
}

#[test]
fn the_parser_refuses_malformed_exposition() {
    let ok = "# HELP x_total X.\n# TYPE x_total counter\nx_total{a=\"q\\\"\\\\\\n\"} 1\n";
    assert_eq!(parse_prometheus(ok)["x_total"].samples[0].1["a"], "q\"\\\n");
    for bad in [
        "x_total 1\n",                                              // no HELP/TYPE
        "# HELP x X.\n# TYPE x gauge\nx{a=\"b} 1\n",                // unterminated
        "# HELP x X.\n# TYPE x gauge\n9x 1\n",                      // bad name
        "# HELP x X.\n# TYPE x gauge\nx one\n",                     // bad value
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", // no +Inf
    ] {
        let result = std::panic::catch_unwind(|| parse_prometheus(bad));
        assert!(result.is_err(), "accepted {bad:?}");
    }
}

#[test]
fn a_token_is_required_when_configured() {
    let a = Backend::named("a");
    let lb = Lb::start(&[(&a, 1)], |c| {
        admin_on(c);
        c.admin_token = Some("s3cret".into());
    });
    let addr = admin_addr(&lb);
    for path in ["/", "/status", "/metrics", "/nope"] {
        let r = admin(addr, "GET", path, "");
        assert_eq!(r.status, 401, "{path} without a token");
        assert!(
            r.header("www-authenticate")
                .is_some_and(|v| v.starts_with("Bearer")),
            "{:?}",
            r.headers
        );
        assert!(!r.text().contains("backends"), "no data leaks");
    }
    let r = admin(addr, "GET", "/status", "Authorization: Bearer wrong\r\n");
    assert_eq!(r.status, 401);
    let r = admin(addr, "GET", "/status", "Authorization: Bearer s3cret\r\n");
    assert_eq!(r.status, 200);
    serde_json::from_slice::<serde_json::Value>(&r.body).expect("JSON");
    let r = admin(addr, "GET", "/metrics", "Authorization: Bearer s3cret\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(admin(addr, "GET", "/status?token=s3cret", "").status, 200);
    assert_eq!(admin(addr, "GET", "/status?token=s3cre", "").status, 401);
    let page = admin(addr, "GET", "/?token=s3cret", "");
    assert_eq!(page.status, 200);
    assert!(
        page.text().contains("encodeURIComponent(token)"),
        "the page passes its token on to /status"
    );
}

#[test]
fn off_loopback_the_admin_listener_needs_a_token() {
    let a = Backend::answering("a");
    // Refused without a token: by the parser, and by Balancer::start.
    let text = format!("admin 0.0.0.0:0\nbackend {}\n", a.url());
    let err = Config::parse(&text, "lb.conf").unwrap_err().to_string();
    assert!(err.contains("token"), "{err}");
    let mut config = support::test_config(&[(&a, 1)]);
    config.admin = Some("0.0.0.0:0".into());
    let err = Balancer::start(config)
        .err()
        .expect("refused without a token")
        .to_string();
    assert!(err.contains("token"), "{err}");

    // Allowed with one; a request (over loopback) without the token gets 401.
    let text = format!("admin 0.0.0.0:0 token=s3cret\nbackend {}\n", a.url());
    let parsed = Config::parse(&text, "lb.conf").expect("a token makes it valid");
    assert_eq!(parsed.admin_token.as_deref(), Some("s3cret"));
    let lb = Lb::start(&[(&a, 1)], |c| {
        c.admin = Some("0.0.0.0:0".into());
        c.admin_token = Some("s3cret".into());
    });
    let bound = admin_addr(&lb);
    assert!(bound.ip().is_unspecified(), "{bound}");
    let local: SocketAddr = format!("127.0.0.1:{}", bound.port()).parse().unwrap();
    assert_eq!(admin(local, "GET", "/status", "").status, 401);
    assert_eq!(admin(local, "GET", "/", "").status, 401);
    assert_eq!(
        admin(local, "GET", "/status", "Authorization: Bearer s3cret\r\n").status,
        200
    );
}

#[test]
fn routes_methods_and_the_dashboard_page() {
    let a = Backend::answering("a");
    let lb = Lb::start(&[(&a, 1)], admin_on);
    let addr = admin_addr(&lb);

    let page = admin(addr, "GET", "/", "");
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/html")));
    let csp = page.header("content-security-policy").expect("a CSP");
    assert!(csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"));
    let html = page.text();
    assert!(html.contains("/status") && html.contains("textContent"));
    assert!(
        !html.contains("innerHTML"),
        "data goes into the DOM as text only"
    );
    for external in ["http://", "https://", "//cdn", "src=\"//"] {
        assert!(!html.contains(external), "the page refers to {external}");
    }

    let head = admin(addr, "HEAD", "/status", "");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(admin(addr, "GET", "/nope", "").status, 404);
    assert_eq!(admin(addr, "GET", "/status/extra", "").status, 404);
    for method in ["POST", "PUT", "DELETE"] {
        let r = admin(addr, method, "/status", "Content-Length: 0\r\n");
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
    }
    // The admin port is not the proxy port.
    assert_ne!(addr, lb.addr);
    assert_eq!(a.count(), 0, "admin requests never reach a backend");
    assert!(TcpStream::connect(addr).is_ok());
}

#[test]
fn health_tells_whether_the_balancer_can_serve_and_needs_no_token() {
    let a = Backend::named("a");
    let lb = Lb::start(&[(&a, 1)], |c| {
        admin_on(c);
        fast_health(c);
        c.admin_token = Some("s3cret".into());
    });
    let addr = admin_addr(&lb);
    let r = admin(addr, "GET", "/health", "");
    assert_eq!((r.status, r.text().as_str()), (200, "ok\n"));
    assert_eq!(admin(addr, "HEAD", "/health", "").status, 200);
    // The exemption is for /health alone.
    assert_eq!(admin(addr, "GET", "/status", "").status, 401);

    a.set_healthy(false);
    wait_until(
        "/health to answer 503 once the only backend is down",
        Duration::from_secs(10),
        || admin(addr, "GET", "/health", "").status == 503,
    );
    let r = admin(addr, "GET", "/health", "");
    assert!(r.text().contains("none of the 1 backends"), "{}", r.text());
    assert!(!r.text().contains("s3cret"));

    a.set_healthy(true);
    wait_until(
        "/health to answer 200 again once the backend is back",
        Duration::from_secs(10),
        || admin(addr, "GET", "/health", "").status == 200,
    );
}

#[test]
fn health_answers_503_while_the_balancer_drains() {
    // A backend that holds its one request until told, so that the drain lasts.
    let release = Arc::new(AtomicBool::new(false));
    let held = Arc::clone(&release);
    let slow = Backend::start(move |_, out| {
        while !held.load(SeqCst) {
            std::thread::sleep(Duration::from_millis(5));
        }
        reply(out, 200, &[], b"done")
    });
    let lb = Lb::start(&[(&slow, 1)], admin_on);
    let addr = admin_addr(&lb);
    let client_addr = lb.addr;
    let client = std::thread::spawn(move || support::get(client_addr, "/held"));
    wait_until(
        "the backend to hold the request",
        Duration::from_secs(10),
        || slow.count() == 1,
    );
    assert_eq!(admin(addr, "GET", "/health", "").status, 200);
    let stopping = std::thread::spawn(move || lb.shutdown());
    wait_until(
        "/health to answer 503 during the drain",
        Duration::from_secs(10),
        || {
            let r = admin(addr, "GET", "/health", "");
            r.status == 503 && r.text().contains("shutting down")
        },
    );
    release.store(true, SeqCst);
    assert_eq!(client.join().unwrap().status, 200);
    assert!(stopping.join().unwrap(), "drained");
}

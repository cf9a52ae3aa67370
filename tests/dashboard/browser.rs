//! The dashboard in a real browser: headless Chromium loads `/`, lets its JavaScript fetch
//! `/status`, and dumps the DOM, which must show one row per backend with live data, a
//! backend's row turning unhealthy when its health checks fail, and, with `explain on`, the
//! Decisions panel following the requests.
//!
//! Needs Debian's `chromium` at /usr/bin/chromium. Without it the tests fail when `CI` is set
//! (`.ci/run` sets it) and are skipped otherwise, each with a `SKIPPED dashboard::browser::NAME`
//! line that `cargo test` shows.
//!
//! `screenshot` takes the README's picture on every run and checks what it shows;
//! `UPDATE_SCREENSHOT=1 cargo test --test dashboard screenshot` also rewrites
//! tests/screenshots/dashboard.png with it.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::png::{self, rgb};
use crate::support::{
    self, admin_on, admin_status, fast_health, listed, wait_until, Backend, Lb, TempDir,
};
use loadbalancer::Config;

const CHROMIUM: &str = "/usr/bin/chromium";

/// True when Chromium is there. Otherwise fails under CI, or writes a visible skip line for
/// `test` and asks the caller to skip.
fn have_chromium(test: &str) -> bool {
    let ci = std::env::var_os("CI").is_some();
    chromium_or_skip(Path::new(CHROMIUM), test, ci, &mut std::io::stderr())
}

/// [`have_chromium`] for a given path, CI setting and output. libtest captures `eprintln!` (and
/// shows it only for failing tests), so the skip is written to the real stderr instead, where
/// `cargo test` shows it among the test results.
fn chromium_or_skip(chromium: &Path, test: &str, ci: bool, out: &mut dyn Write) -> bool {
    if chromium.exists() {
        return true;
    }
    assert!(
        !ci,
        "{} is missing: CI must install Debian's chromium package",
        chromium.display()
    );
    let _ = writeln!(
        out,
        "SKIPPED dashboard::browser::{test}: {} not found (apt-get install chromium)",
        chromium.display()
    );
    false
}

#[test]
fn a_missing_chromium_is_a_visible_skip_and_fails_under_ci() {
    let missing = Path::new("/nonexistent/chromium");
    let mut out = Vec::new();
    assert!(!chromium_or_skip(missing, "some_test", false, &mut out));
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "SKIPPED dashboard::browser::some_test: /nonexistent/chromium not found (apt-get install chromium)\n"
    );
    let under_ci =
        std::panic::catch_unwind(|| chromium_or_skip(missing, "some_test", true, &mut Vec::new()));
    assert!(under_ci.is_err(), "a missing Chromium must fail under CI");
}

/// Runs headless Chromium on `url` with `extra` arguments, in its own process group with a
/// fresh profile; returns its stdout. Killed (the whole group) if it runs over a minute.
fn chromium(extra: &[&str], url: &str) -> String {
    use std::os::unix::process::CommandExt;
    let dir = TempDir::new("chromium");
    let profile = dir.path().join("profile");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut child = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .current_dir(dir.path())
        .env("HOME", dir.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .process_group(0)
        .spawn()
        .expect("start chromium");
    let pgid = child.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    // Whatever Chromium left behind in its own process group goes too.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("chromium ran over a minute; stderr:\n{stderr}"));
    assert!(status.success(), "chromium exited with {status}:\n{stderr}");
    std::fs::read_to_string(&out_path).unwrap()
}

/// The DOM of `url` after the page's scripts ran for a few (virtual) seconds.
fn dump_dom(url: &str) -> String {
    let dom = chromium(&["--virtual-time-budget=2000", "--dump-dom"], url);
    assert!(dom.contains("</html>"), "no DOM dumped: {dom:?}");
    dom
}

/// The `<tr>` of `backend` in the dumped DOM.
fn row<'a>(dom: &'a str, backend: &str) -> &'a str {
    tr(dom, &format!("data-backend=\"{backend}\""))
}

/// The `<tr>` of the `i`th decision (0: the newest) in the dumped DOM.
fn decision(dom: &str, i: usize) -> &str {
    tr(dom, &format!("data-decision=\"{i}\""))
}

/// The first `<tr>` with `attribute` in the dumped DOM.
fn tr<'a>(dom: &'a str, attribute: &str) -> &'a str {
    let start = dom
        .find(&format!("<tr {attribute}"))
        .unwrap_or_else(|| panic!("no row with {attribute} in the DOM:\n{dom}"));
    let end = dom[start..].find("</tr>").expect("row end") + start;
    &dom[start..end]
}

/// The text of the cell `field` of a row (numbers lose their thousands separators).
fn field(row: &str, field: &str) -> String {
    let marker = format!("data-field=\"{field}\"");
    let at = row
        .find(&marker)
        .unwrap_or_else(|| panic!("no {field} cell in {row}"));
    let start = row[at..].find('>').unwrap() + at + 1;
    let end = row[start..].find("</td>").unwrap() + start;
    // Strip nested tags, keep the text (with the entities the DOM dump writes decoded).
    let mut text = String::new();
    let mut in_tag = false;
    for ch in row[start..end].chars() {
        match ch {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.replace("&gt;", ">")
        .replace("&lt;", "<")
        .replace("&amp;", "&")
}

fn number(row: &str, name: &str) -> u64 {
    let text = field(row, name).replace(',', "");
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number: {text:?} in {row}"))
}

fn tweak(c: &mut Config) {
    admin_on(c);
    fast_health(c);
}

fn state_of(status: &serde_json::Value, name: &str) -> String {
    listed(status, name)
        .map(|b| b["state"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

fn send(lb: &Lb, n: usize, target: &str) {
    for _ in 0..n {
        let r = support::get(lb.addr, target);
        assert!(r.status < 500, "{}: {}", r.status, r.text());
    }
}

#[test]
fn the_dashboard_shows_live_backend_rows_in_a_real_browser() {
    if !have_chromium("the_dashboard_shows_live_backend_rows_in_a_real_browser") {
        return;
    }
    let backends = [
        Backend::named("a"),
        Backend::named("b"),
        Backend::named("c"),
    ];
    let names: Vec<String> = backends.iter().map(|b| b.addr().to_string()).collect();
    let lb = Lb::start(
        &[(&backends[0], 1), (&backends[1], 1), (&backends[2], 2)],
        tweak,
    );
    let admin = lb.running().admin_addr().unwrap();
    send(&lb, 40, "/");
    let url = format!("http://{admin}/");

    let s = admin_status(admin);
    let dom = dump_dom(&url);
    assert!(!dom.contains("loading…"), "the rows were rendered");
    assert!(
        dom.contains("class=\"live on\""),
        "the page reached /status"
    );
    for (i, name) in names.iter().enumerate() {
        let r = row(&dom, name);
        let listed = &s["backends"][i];
        assert!(r.contains("data-state=\"healthy\""), "{r}");
        assert_eq!(field(r, "state"), "healthy");
        assert!(field(r, "name").contains(&format!("http://{name}")), "{r}");
        let requests = number(r, "requests");
        assert!(requests > 0, "{r}");
        assert_eq!(requests, listed["requests"].as_u64().unwrap(), "{r}");
        assert_eq!(number(r, "failures"), 0);
        assert!(field(r, "effective_weight").contains(&format!("/ {}", listed["weight"])));
        assert!(field(r, "share").ends_with('%'), "{r}");
    }
    assert!(dom.contains("id=\"responses\">40<"), "totals shown");
    assert!(
        dom.contains("data-code=\"200\""),
        "responses by status shown"
    );
    assert!(
        dom.contains("explain is off"),
        "the Decisions panel says why it is empty"
    );

    // C's health check fails: once /status says so, a fresh page shows it.
    backends[2].set_healthy(false);
    wait_until("c unhealthy", Duration::from_secs(5), || {
        state_of(&admin_status(admin), &names[2]) == "unhealthy"
    });
    let dom = dump_dom(&url);
    let r = row(&dom, &names[2]);
    assert!(r.contains("data-state=\"unhealthy\""), "{r}");
    assert_eq!(field(r, "state"), "unhealthy");
    assert!(field(r, "last_error").contains("health check"), "{r}");
    for name in &names[..2] {
        assert_eq!(field(row(&dom, name), "state"), "healthy");
    }
}

#[test]
fn the_decisions_panel_follows_the_requests() {
    if !have_chromium("the_decisions_panel_follows_the_requests") {
        return;
    }
    let a = Backend::named("a");
    let b = Backend::named("b");
    let lb = Lb::start(&[(&a, 2), (&b, 1)], |c| {
        admin_on(c);
        c.explain = true;
    });
    let admin = lb.running().admin_addr().unwrap();
    let url = format!("http://{admin}/");
    // A decision is kept once its answer is on its way: the worker may still be at it.
    let kept = |n: usize| {
        wait_until("the decisions kept", Duration::from_secs(5), || {
            admin_status(admin)["decisions"].as_array().unwrap().len() == n
        })
    };
    // One at a time: a decision is kept when its answer goes out, so a request answered while
    // the one before it is still being kept could take its place in the ring.
    for n in 1..=3 {
        send(&lb, 1, "/first");
        kept(n);
    }
    let dom = dump_dom(&url);
    let newest = decision(&dom, 0);
    assert_eq!(field(newest, "request"), "GET /first");
    assert_eq!(field(newest, "status"), "200");
    // The third pick of a 2:1 pool (a b a): a's score 3 beats b's 0, and a keeps 3 - 3 = 0;
    // the line is the one a client that asked would have got.
    let (a, b) = (a.lb_name(), b.lb_name());
    assert_eq!(
        field(newest, "line"),
        format!("pick={a}; cw={a}:3>0,{b}:0>0; ew={a}:2,{b}:1")
    );
    assert!(dom.contains("data-decision=\"2\""), "all three shown");
    assert!(!dom.contains("data-decision=\"3\""), "and only them");

    send(&lb, 2, "/second");
    kept(5);
    let dom = dump_dom(&url);
    assert_eq!(field(decision(&dom, 0), "request"), "GET /second");
    assert_eq!(field(decision(&dom, 2), "request"), "GET /first");
    assert!(dom.contains("data-decision=\"4\""), "five now");
}

#[test]
fn the_dashboard_passes_its_token_on_to_status() {
    if !have_chromium("the_dashboard_passes_its_token_on_to_status") {
        return;
    }
    let a = Backend::answering("a");
    let lb = Lb::start(&[(&a, 1)], |c| {
        c.admin = Some("127.0.0.1:0".into());
        c.admin_token = Some("s3 cr&t".into());
    });
    send(&lb, 3, "/");
    let admin = lb.running().admin_addr().unwrap();
    let dom = dump_dom(&format!("http://{admin}/?token=s3%20cr%26t"));
    assert_eq!(number(row(&dom, &a.addr().to_string()), "requests"), 3);
}

/// The size of the screenshot, as asked of Chromium.
const SHOT_SIZE: (usize, usize) = (1200, 800);

/// The README's picture, taken on every run: three backends, one slow (so its effective weight
/// drops), one failing its health checks, some traffic. The picture must have the size asked
/// for and show the dashboard drawn with its data: the page's dark header, the green dot that
/// says the page reached `/status`, the tinted row of a backend that is down, and the many
/// colours of text (a blank or error page has a handful). `UPDATE_SCREENSHOT=1` also writes it
/// to tests/screenshots/dashboard.png.
#[test]
fn screenshot() {
    if !have_chromium("screenshot") {
        return;
    }
    let fast = Backend::named("fast");
    fast.set_delay(Duration::from_millis(2));
    let slow = Backend::named("slow");
    slow.set_delay(Duration::from_millis(60));
    let down = Backend::named("down");
    down.set_delay(Duration::from_millis(2));
    let lb = Lb::start(&[(&fast, 2), (&slow, 1), (&down, 1)], |c| {
        tweak(c);
        c.workers = 16;
    });
    let admin = lb.running().admin_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (stop, addr) = (Arc::clone(&stop), lb.addr);
            thread::spawn(move || {
                let mut n = 0;
                while !stop.load(SeqCst) && n < 5000 {
                    let target = if n % 25 == 7 { "/missing" } else { "/" };
                    let _ = support::get(addr, &format!("{target}?c={i}"));
                    n += 1;
                }
            })
        })
        .collect();
    wait_until("some traffic", Duration::from_secs(10), || {
        admin_status(admin)["responses_total"].as_u64().unwrap() >= 300
    });
    down.set_healthy(false);
    wait_until("down unhealthy", Duration::from_secs(5), || {
        state_of(&admin_status(admin), &down.addr().to_string()) == "unhealthy"
    });
    wait_until("slow loses weight", Duration::from_secs(10), || {
        let s = admin_status(admin);
        s["backends"][1]["effective_weight"].as_f64().unwrap() < 0.5
    });
    let dir = TempDir::new("shot");
    let shot = dir.path().join("dashboard.png");
    chromium(
        &[
            "--virtual-time-budget=3000",
            "--hide-scrollbars",
            &format!("--window-size={},{}", SHOT_SIZE.0, SHOT_SIZE.1),
            &format!("--screenshot={}", shot.display()),
        ],
        &format!("http://{admin}/"),
    );
    stop.store(true, SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let png = std::fs::read(&shot).expect("screenshot written");
    let image = png::decode(&png);
    let (header, live_dot, down_row) = (rgb("#1d2733"), rgb("#3ccf6a"), rgb("#fffafa"));
    let counts = format!(
        "{}x{}, {} colours; header {:?} at (5, 5); {} live-dot pixels, {} down-row pixels",
        image.width,
        image.height,
        image.colours(),
        image.pixel(5, 5),
        image.count(live_dot),
        image.count(down_row)
    );
    eprintln!("screenshot: {counts}");
    assert_eq!((image.width, image.height), SHOT_SIZE, "{counts}");
    assert_eq!(image.pixel(5, 5), header, "the page's header: {counts}");
    assert!(image.colours() >= 200, "text drawn: {counts}");
    assert!(
        image.count(live_dot) >= 10,
        "the page reached /status: {counts}"
    );
    assert!(
        image.count(down_row) >= 1000,
        "the down backend's row is drawn as down: {counts}"
    );

    if std::env::var("UPDATE_SCREENSHOT").as_deref() == Ok("1") {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/screenshots/dashboard.png");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &png).unwrap();
        eprintln!("wrote {}", path.display());
    }
}

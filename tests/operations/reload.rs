//! Configuration reload under load: backends join and leave, an invalid file is refused, and not
//! one request fails meanwhile. One test runs the real binary and reloads it with SIGHUP and with
//! the config file watch; one runs the balancer in-process and uses `request_reload`, `apply`,
//! `Shared::reload` and the watch.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use crate::support::{self, admin_status, wait_until, Backend, Lb, LbProcess, TempDir};
use loadbalancer::Config;

/// Settings every test config starts with: no health checks, a quiet log, few workers.
const BASE: &str = "health off\naccess_log off\nworkers 8\nretries 2\n";

// ---------------------------------------------------------------------------------------------
// A client that sends requests one after another and records every answer
// ---------------------------------------------------------------------------------------------

/// The outcome of one request: status and body, or what went wrong.
type Outcome = Result<(u16, String), String>;

/// One `GET` on a fresh connection, read to the end.
fn one_request(addr: SocketAddr) -> Outcome {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /reload HTTP/1.1\r\nHost: lb.test\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("incomplete response {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in {text:?}"))?;
    Ok((status, body.to_string()))
}

/// Requests sent continuously, sequentially, from a background thread, until [`Traffic::finish`]
/// (or a safety limit of 60 s).
struct Traffic {
    stop: Arc<AtomicBool>,
    results: Arc<Mutex<Vec<Outcome>>>,
    thread: Option<JoinHandle<()>>,
}

impl Traffic {
    fn start(addr: SocketAddr) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let results = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, results) = (Arc::clone(&stop), Arc::clone(&results));
            thread::spawn(move || {
                let limit = Instant::now() + Duration::from_secs(60);
                while !stop.load(SeqCst) && Instant::now() < limit {
                    let outcome = one_request(addr);
                    results.lock().unwrap().push(outcome);
                }
            })
        };
        Traffic {
            stop,
            results,
            thread: Some(thread),
        }
    }

    fn done(&self) -> usize {
        self.results.lock().unwrap().len()
    }

    /// Waits until `n` more requests have completed.
    fn wait_more(&self, n: usize) {
        let target = self.done() + n;
        wait_until(
            &format!("{n} more requests"),
            Duration::from_secs(10),
            || self.done() >= target,
        );
    }

    /// Stops the client and checks that every request got a 200 from one of `bodies`.
    fn finish(mut self, bodies: &[&str]) -> usize {
        self.stop.store(true, SeqCst);
        self.thread.take().unwrap().join().expect("client thread");
        let results = self.results.lock().unwrap();
        let bad: Vec<(usize, &Outcome)> = results
            .iter()
            .enumerate()
            .filter(|(_, r)| !matches!(r, Ok((200, body)) if bodies.contains(&body.as_str())))
            .collect();
        assert!(
            bad.is_empty(),
            "{} of {} requests failed, first ones: {:?}",
            bad.len(),
            results.len(),
            &bad[..bad.len().min(5)]
        );
        results.len()
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Config files
// ---------------------------------------------------------------------------------------------

fn config_text(extra: &str, backends: &[&Backend]) -> String {
    let mut text = format!("{BASE}{extra}");
    for b in backends {
        text.push_str(&format!("backend {} weight=1\n", b.url()));
    }
    text
}

/// How the file's modification time moves when it is rewritten.
#[derive(Clone, Copy, PartialEq)]
enum Mtime {
    /// Kept as it was: only an explicit reload (SIGHUP, `request_reload`) picks the change up.
    Keep,
    /// Moved forward by a second: the maintenance thread's watch notices it.
    Bump,
}

/// Replaces `path` atomically (write a temporary file, set its mtime, rename), so a reload
/// never reads half a file.
fn write_config(path: &Path, text: &str, mtime: Mtime) {
    let old = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| SystemTime::now());
    let new = match mtime {
        Mtime::Keep => old,
        Mtime::Bump => old.max(SystemTime::now()) + Duration::from_secs(1),
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_modified(new)
        .unwrap();
    std::fs::rename(&tmp, path).unwrap();
    assert_eq!(
        std::fs::metadata(path).unwrap().modified().unwrap(),
        new,
        "mtime as intended"
    );
}

/// The 1-based line of `needle` in `text`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn the_binary_reloads_under_load_on_sighup_and_on_a_file_change() {
    let a = Backend::answering("A");
    let b = Backend::answering("B");
    let c = Backend::answering("C");
    let extra = "slow_start off\n";
    let mut lb = LbProcess::with_config_file(&config_text(extra, &[&a, &b]), &[], "info");
    let traffic = Traffic::start(lb.addr);
    traffic.wait_more(20);
    assert_eq!(c.count(), 0);

    // 1. Add C and send SIGHUP. The file's mtime is kept, so only the signal can reload it.
    write_config(&lb.conf(), &config_text(extra, &[&a, &b, &c]), Mtime::Keep);
    lb.signal("HUP");
    wait_until("traffic at C after SIGHUP", Duration::from_secs(5), || {
        c.count() > 0
    });
    lb.wait_log("reloading the configuration: SIGHUP received", 1);
    lb.wait_log(&format!("backend {} added", c.addr()), 1);

    // 2. Remove A by editing the file only: the watch reloads it.
    write_config(&lb.conf(), &config_text(extra, &[&b, &c]), Mtime::Bump);
    lb.wait_log(&format!("backend {} removed", a.addr()), 1);
    lb.wait_log("reloading the configuration: the config file changed", 1);
    // The client is sequential: once a request that started after the removal has finished,
    // nothing more can be on its way to A.
    traffic.wait_more(3);
    let a_after = a.count();
    let (b_before, c_before) = (b.count(), c.count());
    traffic.wait_more(60);
    assert_eq!(a.count(), a_after, "A got requests after its removal");
    assert!(b.count() > b_before && c.count() > c_before);

    // 3. An invalid file is refused, by the watch and by SIGHUP; the balancer keeps serving
    //    with the configuration it had.
    let invalid = config_text(extra, &[&b, &c]).replace("workers 8", "workers zero");
    let bad_line = line_of(&invalid, "workers zero");
    write_config(&lb.conf(), &invalid, Mtime::Bump);
    let located = format!("test.conf:{bad_line}: workers");
    lb.wait_log(&located, 1);
    lb.wait_log("reload refused, the running configuration stays", 1);
    lb.signal("HUP");
    lb.wait_log(&located, 2);
    traffic.wait_more(30);
    assert_eq!(a.count(), a_after, "the refused file changed nothing");

    // 4. A valid file again, with A back.
    write_config(&lb.conf(), &config_text(extra, &[&a, &b, &c]), Mtime::Bump);
    wait_until("A back in rotation", Duration::from_secs(5), || {
        a.count() > a_after
    });
    traffic.wait_more(30);

    let total = traffic.finish(&["A", "B", "C"]);
    assert!(total >= 150, "only {total} requests");
    let log = lb.stderr();
    assert!(!log.contains("panicked"), "{log}");
    lb.signal("TERM");
    let status = lb.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit {status}: {}", lb.stderr());
}

// ---------------------------------------------------------------------------------------------
// In-process
// ---------------------------------------------------------------------------------------------

/// `b`'s entry in a `/status` document, if listed.
fn listed(status: &serde_json::Value, b: &Backend) -> Option<serde_json::Value> {
    support::listed(status, &b.lb_name()).cloned()
}

#[test]
fn in_process_reloads_via_request_reload_apply_and_the_watch() {
    let a = Backend::answering("A");
    let b = Backend::answering("B");
    let c = Backend::answering("C");
    let dir = TempDir::new("reload-inproc");
    let path = dir.path().join("test.conf");
    let extra = "listen 127.0.0.1:0\nadmin 127.0.0.1:0\nslow_start 2s\n";
    write_config(&path, &config_text(extra, &[&a, &b]), Mtime::Keep);
    let lb = Lb::with_config(Config::from_file(&path).expect("valid file"));
    let admin = lb.running().admin_addr().expect("admin on");
    let a_id = listed(&admin_status(admin), &a).expect("A listed")["id"].clone();
    let traffic = Traffic::start(lb.addr);
    traffic.wait_more(20);

    // 1. C joins on request_reload (what SIGHUP does), in slow start first.
    write_config(&path, &config_text(extra, &[&a, &b, &c]), Mtime::Keep);
    lb.running().request_reload();
    wait_until("C listed", Duration::from_secs(5), || {
        listed(&admin_status(admin), &c).is_some()
    });
    let joined = listed(&admin_status(admin), &c).unwrap();
    assert_eq!(joined["state"], "slow-start", "{joined}");
    // The maintenance thread recomputes effective weights right after a reload it runs.
    wait_until("C ramping up", Duration::from_secs(1), || {
        listed(&admin_status(admin), &c).unwrap()["effective_weight"]
            .as_f64()
            .unwrap()
            < 1.0
    });
    wait_until("traffic at C", Duration::from_secs(5), || c.count() > 0);
    wait_until("C at full weight", Duration::from_secs(6), || {
        listed(&admin_status(admin), &c).unwrap()["state"] == "healthy"
    });

    // 2. A leaves on apply(): at once, as far as new requests go.
    write_config(&path, &config_text(extra, &[&b, &c]), Mtime::Keep);
    lb.running()
        .apply(Config::from_file(&path).expect("valid file"));
    traffic.wait_more(3);
    let a_after = a.count();
    traffic.wait_more(60);
    assert_eq!(a.count(), a_after, "A got requests after its removal");
    assert!(listed(&admin_status(admin), &a).is_none());

    // 3. An invalid file is refused with its file:line, and nothing changes.
    let invalid = config_text(extra, &[&b]).replace("workers 8", "workers zero");
    write_config(&path, &invalid, Mtime::Keep);
    let err = lb
        .running()
        .shared()
        .reload()
        .expect_err("invalid file refused");
    let located = format!("{}:{}:", path.display(), line_of(&invalid, "workers zero"));
    assert!(err.starts_with(&located), "{err} (expected {located}...)");
    assert!(err.contains("workers"), "{err}");
    assert!(listed(&admin_status(admin), &c).is_some(), "C still there");
    traffic.wait_more(20);

    // 4. A valid file again, picked up by the watch alone: A comes back as a new backend.
    write_config(&path, &config_text(extra, &[&a, &b, &c]), Mtime::Bump);
    wait_until("A back", Duration::from_secs(5), || {
        listed(&admin_status(admin), &a).is_some()
    });
    let back = listed(&admin_status(admin), &a).unwrap();
    assert_ne!(back["id"], a_id, "a re-added backend starts afresh");
    wait_until("traffic at A again", Duration::from_secs(5), || {
        a.count() > a_after
    });

    let total = traffic.finish(&["A", "B", "C"]);
    assert!(total >= 100, "only {total} requests");
    assert_eq!(lb.running().config().workers, 8);
}

/// A reload moves the access log to another file and format; a path that cannot be opened keeps
/// the running one.
#[test]
fn a_reload_changes_the_access_logs_path_and_format() {
    use loadbalancer::logging::AccessFormat;
    let a = Backend::answering("A");
    let logs = TempDir::new("reload-log");
    let (first, second) = (
        logs.path().join("first.log"),
        logs.path().join("second.log"),
    );
    let mut config = support::test_config(&[(&a, 1)]);
    config.access_log = true;
    config.access_log_path = Some(first.clone());
    let lb = Lb::with_config(config.clone());
    assert_eq!(support::get(lb.addr, "/one").status, 200);
    support::wait_for_line(&first, " access: 127.0.0.1 GET /one 200 ", 1);

    config.access_log_path = Some(second.clone());
    config.access_log_format = AccessFormat::Json;
    lb.running().apply(config.clone());
    assert_eq!(support::get(lb.addr, "/two").status, 200);
    let line = support::wait_for_line(&second, "\"target\":\"/two\"", 1);
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["status"], 200);
    assert!(!std::fs::read_to_string(&first).unwrap().contains("/two"));

    config.access_log_path = Some(logs.path().join("missing/dir/third.log"));
    lb.running().apply(config);
    assert_eq!(lb.running().config().access_log_path, Some(second.clone()));
    assert_eq!(support::get(lb.addr, "/three").status, 200);
    support::wait_for_line(&second, "\"target\":\"/three\"", 1);
}

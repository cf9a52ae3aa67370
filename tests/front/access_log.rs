//! The access log tells what happened: a refusal names its reason, a queue timeout shows how
//! long the client waited, a retry shows the backends tried, and an answer the client did not
//! take in full is marked `aborted` with the bytes it was sent. Lines go to a file in nginx's
//! `combined` or in JSON when asked; the file is reopened on SIGUSR1; and a stderr nobody reads
//! costs lines, never a stalled balancer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use crate::support::{self, reply, Backend, Client, LbProcess, TempDir};

/// The duration field of an access-log line, in milliseconds.
fn duration_ms(line: &str) -> f64 {
    let field = line
        .split_whitespace()
        .find(|w| w.ends_with("ms"))
        .unwrap_or_else(|| panic!("no duration in {line}"));
    field.trim_end_matches("ms").parse().unwrap()
}

/// The bytes field: the one after the duration.
fn bytes(line: &str) -> u64 {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| w.ends_with("ms")).unwrap();
    words[at + 1].parse().unwrap()
}

#[test]
fn a_refusal_names_its_reason() {
    let backend = Backend::answering("ok");
    let lb = LbProcess::spawn_logging(&[backend.url()], &[]);
    let mut client = Client::connect(lb.addr);
    client.send(
        b"POST /smuggle HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert_eq!(client.read_response("POST").status, 400);
    let line = lb.access_line(&[" 400 ", "reason=cl_te"]);
    assert!(line.contains(" - - 400 - "), "{line}");
    // A head that never ends.
    let mut s = TcpStream::connect(lb.addr).unwrap();
    s.write_all(format!("GET /{} HTTP/1.1\r\n", "a".repeat(9000)).as_bytes())
        .unwrap();
    lb.access_line(&[" 414 ", "reason=line_too_long"]);
    assert_eq!(backend.count(), 0);
}

#[test]
fn a_queue_timeout_shows_the_wait() {
    let backend = Backend::start(|r, out| {
        if r.target == "/slow" {
            thread::sleep(Duration::from_secs(3));
        }
        reply(out, 200, &[], b"ok")
    });
    let lb = LbProcess::spawn_logging(&[backend.url()], &["workers 1", "timeouts queue=1s"]);
    let slow = thread::spawn({
        let addr = lb.addr;
        move || support::get(addr, "/slow").status
    });
    support::wait_until("the worker busy", Duration::from_secs(10), || {
        backend.count() == 1
    });
    let r = support::get(lb.addr, "/waiting");
    assert_eq!(r.status, 503);
    let line = lb.access_line(&["/waiting 503", "reason=queue_timeout"]);
    let waited = duration_ms(&line);
    assert!(
        (1000.0..2900.0).contains(&waited),
        "the line says the client waited {waited} ms: {line}"
    );
    assert_eq!(slow.join().unwrap(), 200);
}

#[test]
fn a_retry_shows_its_attempts() {
    let backend = Backend::answering("ok");
    let dead = format!("http://127.0.0.1:{} weight=2", support::free_port());
    let lb = LbProcess::spawn_logging(&[dead, backend.url()], &[]);
    assert_eq!(support::get(lb.addr, "/again").status, 200);
    let line = lb.access_line(&["/again 200", "attempts=2 via="]);
    let via = line.split("via=").nth(1).unwrap();
    let b = backend.url().trim_start_matches("http://").to_string();
    assert!(via.ends_with(&b), "{line}");
}

#[test]
fn a_download_the_client_left_is_marked_aborted() {
    const SIZE: usize = 64 << 20;
    let backend = Backend::start(|_, out| {
        let len = SIZE.to_string();
        support::write_head(out, 200, &[("Content-Length", &len)])?;
        let piece = vec![b'd'; 1 << 20];
        for _ in 0..SIZE >> 20 {
            out.write_all(&piece)?;
        }
        Ok(())
    });
    let lb = LbProcess::spawn_logging(&[backend.url()], &[]);
    let mut s = TcpStream::connect(lb.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut got = 0;
    let mut buf = vec![0u8; 64 << 10];
    while got < 5 << 20 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        got += n;
    }
    drop(s);
    let line = lb.access_line(&["/big 200", "aborted"]);
    let sent = bytes(&line);
    assert!(
        sent >= 5 << 20 && sent < SIZE as u64,
        "the line says {sent} bytes: {line}"
    );
    // A download taken whole is not marked.
    let r = support::get(lb.addr, "/whole");
    assert_eq!(r.body.len(), SIZE);
    let line = lb.access_line(&["/whole 200"]);
    assert!(!line.contains("aborted"), "{line}");
    assert_eq!(bytes(&line), SIZE as u64);
}

#[test]
fn an_upload_the_client_left_is_logged_aborted() {
    let backend = Backend::answering("ok");
    let lb = LbProcess::spawn_logging(&[backend.url()], &[]);
    let mut s = TcpStream::connect(lb.addr).unwrap();
    s.write_all(b"POST /half HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789")
        .unwrap();
    drop(s);
    let line = lb.access_line(&["/half 400", "reason=client_aborted", "aborted"]);
    assert_eq!(bytes(&line), 0, "{line}");
    assert_eq!(backend.count(), 0);
}

/// The value of the sample `name` (with its labels) on the admin listener's `/metrics`.
fn metric(admin: SocketAddr, name: &str) -> f64 {
    let page = support::get(admin, "/metrics").text();
    page.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{page}"))
}

/// Sends one request on a connection of its own; the answer's status, within `wait`.
fn status_within(addr: SocketAddr, target: &str, wait: Duration) -> Result<u16, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(
        format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)
        .map_err(|e| format!("no answer within {wait:?}: {e}"))?;
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not a status line: {:?}", String::from_utf8_lossy(&head)))
}

/// A stderr that is a pipe nobody reads (a stalled `docker logs`, journald under pressure): its
/// 64 KiB fill after about 500 lines. Lines are then dropped and counted; neither the poller
/// (which logs the refusals) nor a worker ever waits on it.
#[test]
fn a_stderr_nobody_reads_stalls_nothing() {
    const FLOOD: usize = 10_000;
    const CLIENTS: usize = 4;
    let backend = Backend::answering("ok");
    let admin: SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .unwrap();
    let conf = format!(
        "health off\nslow_start off\nrate_limit rate=1/m burst=1 path=/flood\nbackend {}\n",
        backend.url()
    );
    let lb = LbProcess::with_unread_stderr(&conf, &["--admin", &admin.to_string()], "info");
    let refused = std::sync::atomic::AtomicUsize::new(0);
    thread::scope(|s| {
        for c in 0..CLIENTS {
            let (refused, addr) = (&refused, lb.addr);
            s.spawn(move || {
                for i in 0..FLOOD / CLIENTS {
                    let status = status_within(addr, "/flood", Duration::from_secs(5))
                        .unwrap_or_else(|e| panic!("client {c}, request {i} of the flood: {e}"));
                    if status == 429 {
                        refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert!(
        refused.into_inner() >= FLOOD - 1,
        "every /flood but the first is refused"
    );
    // Forwarded requests (their lines come from the workers) still answer promptly.
    for i in 0..20 {
        let status = status_within(lb.addr, &format!("/ok/{i}"), Duration::from_secs(2));
        assert_eq!(status, Ok(200), "request {i} after the flood");
    }
    assert!(metric(admin, "lb_log_lines_dropped_total{reason=\"queue_full\"}") > 0.0);
    let status = support::admin_status(admin);
    assert!(
        status["log_lines_dropped"]["queue_full"].as_u64() > Some(0),
        "{status}"
    );
}

/// logrotate renames the file and sends SIGUSR1: the earlier lines stay in the renamed file, the
/// later ones go to a new file at the configured path.
#[test]
fn a_renamed_log_file_is_reopened_on_sigusr1() {
    let backend = Backend::answering("ok");
    let logs = TempDir::new("rotate");
    let path = logs.path().join("access.log");
    let conf = format!(
        "health off\naccess_log path={}\nbackend {}\n",
        path.display(),
        backend.url()
    );
    let lb = LbProcess::with_config_file(&conf, &[], "info");
    assert_eq!(support::get(lb.addr, "/before").status, 200);
    support::wait_for_line(&path, "GET /before 200", 1);
    let rotated = logs.path().join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    lb.signal("USR1");
    lb.wait_log("reopened the log file", 1);
    assert_eq!(support::get(lb.addr, "/after").status, 200);
    let line = support::wait_for_line(&path, "GET /after 200", 1);
    assert!(
        line.contains(" INFO  access: 127.0.0.1 GET /after 200 "),
        "{line}"
    );
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(
        old.contains("GET /before 200") && !old.contains("/after"),
        "{old}"
    );
    assert!(!std::fs::read_to_string(&path).unwrap().contains("/before"));
    // The other log lines stay on stderr.
    assert!(!lb.stderr().contains(" access: "), "{}", lb.stderr());
}

/// A known request, logged in `combined` and in `json`.
#[test]
fn combined_and_json_lines_for_a_known_request() {
    let backend = Backend::answering("hello");
    let name = backend.url().trim_start_matches("http://").to_string();
    let request = "GET /known?x=1 HTTP/1.1\r\nHost: t\r\nReferer: http://ref.test/page\r\n\
                   User-Agent: test \"agent\"/1.0\r\nConnection: close\r\n\r\n";
    let logs = TempDir::new("formats");
    for format in ["combined", "json"] {
        let path = logs.path().join(format!("{format}.log"));
        let conf = format!(
            "health off\naccess_log on path={} format={format}\nbackend {}\n",
            path.display(),
            backend.url()
        );
        let lb = LbProcess::with_config_file(&conf, &[], "warn");
        assert_eq!(Client::connect(lb.addr).request(request).status, 200);
        let line = support::wait_for_line(&path, "/known", 1);
        if format == "combined" {
            // 127.0.0.1 - - [06/Dec/2026:20:24:22 +0000] "GET ..." 200 5 "ref" "agent"
            let (start, rest) = line.split_once(" [").unwrap();
            assert_eq!(start, "127.0.0.1 - -");
            let (time, rest) = rest.split_once("] ").unwrap();
            assert_eq!(time.len(), "06/Dec/2026:20:24:22 +0000".len(), "{line}");
            assert!(
                time.ends_with(" +0000") && time.as_bytes()[2] == b'/',
                "{line}"
            );
            assert_eq!(
                rest,
                "\"GET /known?x=1 HTTP/1.1\" 200 5 \"http://ref.test/page\" \
                 \"test \\x22agent\\x22/1.0\""
            );
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let time = v["time"].as_str().unwrap();
        assert!(time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T');
        assert!(
            v["duration_ms"].as_f64().is_some_and(|d| d >= 0.0),
            "{line}"
        );
        let mut fields = v.as_object().unwrap().clone();
        fields.remove("time");
        fields.remove("duration_ms");
        assert_eq!(
            serde_json::Value::Object(fields),
            serde_json::json!({
                "client": "127.0.0.1", "method": "GET", "target": "/known?x=1",
                "protocol": "HTTP/1.1", "status": 200, "bytes": 5, "backend": name,
                "attempts": 1, "via": null, "reason": null, "aborted": false,
                "referer": "http://ref.test/page", "user_agent": "test \"agent\"/1.0",
                "tunnel": null
            })
        );
    }
}

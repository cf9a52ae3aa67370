//! The access log tells what happened: a refusal names its reason, a queue timeout shows how
//! long the client waited, a retry shows the backends tried, and an answer the client did not
//! take in full is marked `aborted` with the bytes it was sent.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use crate::support::{self, reply, Backend, Client, LbProcess};

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

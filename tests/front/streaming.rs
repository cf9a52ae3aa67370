//! Large bodies pass through the balancer binary in bounded memory, byte-exact both ways: a
//! 200 MiB download, a 50 MiB upload and a 20 MiB chunked upload (the poller buffers uploads, in
//! memory and then in a temporary file; answers a client is slower to take than the backend is
//! to send spill the same way). Peak RSS (VmHWM) of the child process is the memory bound.

use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::support::{self, reply, write_head, Backend, Client, Headers, LbProcess, Pattern};
use sha2::{Digest, Sha256};

const MIB: u64 = 1 << 20;
/// Peak RSS allowed for the balancer process while it relays 200 MiB or 50 MiB, in KiB. Measured:
/// about 6.5 MiB in a debug build (6 MiB idle), so this leaves room for allocator noise while
/// catching any buffering of a large part of a body.
const RSS_BOUND_KIB: u64 = 32 * 1024;

const DOWNLOAD: u64 = 200 * MIB;
const UPLOAD: u64 = 50 * MIB;
const CHUNKED_UPLOAD: u64 = 20 * MIB;

#[test]
fn download_200_mib_streams_byte_exact_in_bounded_memory() {
    let sent_digest = Arc::new(Mutex::new(None::<String>));
    let backend = {
        let sent_digest = Arc::clone(&sent_digest);
        Backend::start(move |_, out| {
            let len = DOWNLOAD.to_string();
            write_head(
                out,
                200,
                &[
                    ("Content-Type", "application/octet-stream"),
                    ("Content-Length", &len),
                ],
            )?;
            let digest = Pattern::new(DOWNLOAD, 42).write_to(out)?;
            *sent_digest.lock().unwrap() = Some(digest);
            Ok(())
        })
    };
    let lb = LbProcess::spawn(&[backend.url()], &[]);
    let baseline = lb.peak_rss_kib();

    let mut client = Client::connect(lb.addr);
    client.send(b"GET /download HTTP/1.1\r\nHost: h.test\r\n\r\n");
    let mut hasher = Sha256::new();
    let started = std::time::Instant::now();
    let r = client.read_response_into("GET", &mut |piece| hasher.update(piece));
    let took = started.elapsed();
    let received = support::hex(&hasher.finalize());

    assert_eq!(r.status, 200);
    assert_eq!(r.header_values("content-length"), [DOWNLOAD.to_string()]);
    assert_eq!(r.end, support::BodyEnd::Complete(DOWNLOAD));
    let sent = sent_digest
        .lock()
        .unwrap()
        .clone()
        .expect("backend finished sending");
    assert_eq!(received, sent, "SHA-256 of the download differs");

    let peak = lb.peak_rss_kib();
    eprintln!(
        "download {} MiB in {took:?} ({:.0} MiB/s); balancer VmHWM {} KiB before, {} KiB after",
        DOWNLOAD / MIB,
        DOWNLOAD as f64 / MIB as f64 / took.as_secs_f64(),
        baseline,
        peak
    );
    assert!(
        peak < RSS_BOUND_KIB,
        "balancer peak RSS {peak} KiB after a {} MiB download (bound {RSS_BOUND_KIB} KiB)",
        DOWNLOAD / MIB
    );
}

#[test]
fn upload_50_mib_streams_byte_exact_in_bounded_memory() {
    let backend = Backend::start(|r, out| {
        let body = format!("{} {}", r.body_len, r.body_sha256);
        reply(out, 200, &[], body.as_bytes())
    });
    let lb = LbProcess::spawn(&[backend.url()], &[]);
    let baseline = lb.peak_rss_kib();

    let mut client = Client::connect(lb.addr);
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: h.test\r\nContent-Type: application/octet-stream\r\nContent-Length: {UPLOAD}\r\n\r\n"
    );
    let started = std::time::Instant::now();
    client.send(head.as_bytes());
    let sent = Pattern::new(UPLOAD, 7)
        .write_to(client.writer())
        .expect("upload");
    client.writer().flush().unwrap();
    let r = client.read_response("POST");
    let took = started.elapsed();

    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        format!("{UPLOAD} {sent}"),
        "length and SHA-256 at the backend"
    );
    let got = backend.only_request();
    assert_eq!(got.header_values("content-length"), [UPLOAD.to_string()]);
    assert!(!got.has_header("transfer-encoding"));

    let peak = lb.peak_rss_kib();
    eprintln!(
        "upload {} MiB in {took:?}; balancer VmHWM {} KiB before, {} KiB after",
        UPLOAD / MIB,
        baseline,
        peak
    );
    assert!(
        peak < RSS_BOUND_KIB,
        "balancer peak RSS {peak} KiB after a {} MiB upload (bound {RSS_BOUND_KIB} KiB)",
        UPLOAD / MIB
    );
}

#[test]
fn chunked_upload_arrives_intact() {
    let backend = Backend::start(|r, out| {
        let body = format!("{} {}", r.body_len, r.body_sha256);
        reply(out, 200, &[], body.as_bytes())
    });
    let lb = LbProcess::spawn(&[backend.url()], &[]);

    // Chunks of awkward sizes, including a one-byte chunk and one bigger than a typical buffer.
    let sizes = [1usize, 10, 4096, 100_000, 3, 65_536, 7];
    let mut body = Vec::new();
    let mut raw =
        b"PUT /chunked HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for (n, size) in sizes.iter().enumerate() {
        let chunk: Vec<u8> = (0..*size).map(|i| (i * 31 + n * 7) as u8).collect();
        raw.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        raw.extend_from_slice(&chunk);
        raw.extend_from_slice(b"\r\n");
        body.extend_from_slice(&chunk);
    }
    raw.extend_from_slice(b"0\r\n\r\n");

    let mut client = Client::connect(lb.addr);
    client.send(&raw);
    let r = client.read_response("PUT");
    assert_eq!(r.status, 200, "{}", r.text());
    let expected = format!("{} {}", body.len(), support::sha256_hex(&body));
    assert_eq!(r.text(), expected);
    let got = backend.only_request();
    assert_eq!(got.body, body, "chunked body changed on the way");
    assert!(
        !(got.has_header("content-length") && got.has_header("transfer-encoding")),
        "the balancer itself sent both framings: {:?}",
        got.headers
    );
}

#[test]
fn chunked_upload_of_20_mib_arrives_byte_exact_in_bounded_memory() {
    let backend = Backend::start(|r, out| {
        let body = format!("{} {}", r.body_len, r.body_sha256);
        reply(out, 200, &[], body.as_bytes())
    });
    let lb = LbProcess::spawn(&[backend.url()], &[]);
    let mut client = Client::connect(lb.addr);
    client.send(b"POST /chunked HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n");
    // The pattern's segments, each cut into chunks of uneven sizes.
    let mut pattern = Pattern::new(CHUNKED_UPLOAD, 11);
    let mut hasher = Sha256::new();
    let mut cut = 0usize;
    while let Some(piece) = pattern.next_piece() {
        hasher.update(piece);
        let mut rest = piece;
        while !rest.is_empty() {
            cut = (cut * 7 + 13_001) % 90_000 + 1;
            let n = cut.min(rest.len());
            let w = client.writer();
            write!(w, "{n:x}\r\n").unwrap();
            w.write_all(&rest[..n]).unwrap();
            w.write_all(b"\r\n").unwrap();
            rest = &rest[n..];
        }
    }
    client.writer().write_all(b"0\r\n\r\n").unwrap();
    let r = client.read_response("POST");
    let sent = support::hex(&hasher.finalize());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), format!("{CHUNKED_UPLOAD} {sent}"));
    // Buffered whole, it reaches the backend with its length.
    let got = backend.only_request();
    assert_eq!(
        got.header_values("content-length"),
        [CHUNKED_UPLOAD.to_string()]
    );
    let peak = lb.peak_rss_kib();
    assert!(
        peak < RSS_BOUND_KIB,
        "balancer peak RSS {peak} KiB after a {} MiB chunked upload (bound {RSS_BOUND_KIB} KiB)",
        CHUNKED_UPLOAD / MIB
    );
}

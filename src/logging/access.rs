//! The access log: one line per finished request, in the format and to the sink configured
//! (`access_log on|off path=FILE format=plain|combined|json`).
//!
//! | sink | what reaches it | filtered by `RUST_LOG` |
//! | --- | --- | --- |
//! | stderr (no `path=`) | access lines, as log records on target `access`, among the other log lines | yes: `RUST_LOG=info,access=off` hides them |
//! | a file (`path=`) | access lines only; every other log line stays on stderr | no: `access_log on\|off` alone decides |
//!
//! Either way a line is formatted on the thread that finished the request, into a buffer from
//! the writer's pool, and written by the log writer thread (`writer.rs`): neither the poller nor
//! a worker ever waits on the sink. A library user who installed a `log` logger of their own
//! (no [`super::init`]) gets the stderr lines as `log` records on target `access`.

use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use log::Level;
use parking_lot::RwLock;

use super::format;
use super::time::Utc;
use super::writer::{self, LogFile, To};

/// The log target of access-log lines on stderr.
pub const TARGET: &str = "access";

/// The shape of an access-log line (see `logging/format.rs` for an example of each).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AccessFormat {
    /// The balancer's own line, after the usual time, level and target (the default).
    #[default]
    Plain,
    /// nginx's `combined` (Apache's Combined Log Format), for the tools that read it.
    Combined,
    /// One JSON object per line.
    Json,
}

impl AccessFormat {
    /// Every format, by its name in the config file.
    pub const ALL: [(&'static str, AccessFormat); 3] = [
        ("plain", AccessFormat::Plain),
        ("combined", AccessFormat::Combined),
        ("json", AccessFormat::Json),
    ];

    /// The format called `name`.
    pub fn parse(name: &str) -> Option<AccessFormat> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    /// Its name in the config file.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("plain", |(n, _)| n)
    }
}

/// One finished request, as the access log reports it.
#[derive(Debug)]
pub struct AccessEntry<'a> {
    /// Client address.
    pub client: IpAddr,
    /// The request, once its head was read (`None` for a refusal before that: a head timeout,
    /// a head too large).
    pub request: Option<RequestLine<'a>>,
    /// Status sent to the client.
    pub status: u16,
    /// Backend that answered (`None` when none did).
    pub backend: Option<&'a str>,
    /// Time from the request's arrival to the end of the response.
    pub duration: Duration,
    /// Response body bytes the client took.
    pub bytes: u64,
    /// Attempts made (more than one when the request was retried on another backend).
    pub attempts: u32,
    /// The backends tried, in order, joined by `>` (logged when there was more than one).
    pub via: &'a str,
    /// Why the balancer answered itself (a short code such as `queue_timeout`), if it did.
    pub reason: Option<&'a str>,
    /// The client left before it had taken the whole answer.
    pub aborted: bool,
    /// For a tunnel (status 101), logged when it ends: bytes each way and how it ended.
    pub tunnel: Option<TunnelTotals<'a>>,
}

/// A tunnel's part of its access-log line: `up=N down=N end=HOW`.
#[derive(Debug, serde::Serialize)]
pub struct TunnelTotals<'a> {
    /// Bytes from the client to the backend.
    pub up: u64,
    /// Bytes from the backend to the client.
    pub down: u64,
    /// How it ended: `client`, `backend`, `idle`, `shutdown` or `error`.
    pub end: &'a str,
}

/// What the access log reads of a request's head.
#[derive(Debug)]
pub struct RequestLine<'a> {
    /// Method, e.g. `GET`.
    pub method: &'a str,
    /// Target, e.g. `/a?b`.
    pub target: &'a str,
    /// An HTTP/1.0 request (else 1.1).
    pub http10: bool,
    /// The head's fields (the `combined` and `json` formats read Referer and User-Agent).
    pub headers: &'a [(String, Vec<u8>)],
}

impl RequestLine<'_> {
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub fn protocol(&self) -> &'static str {
        if self.http10 {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        }
    }

    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// A balancer's access log: on or off, its format, its sink. A reload changes all three
/// ([`AccessLog::configure`]).
pub struct AccessLog {
    on: AtomicBool,
    sink: RwLock<Sink>,
}

struct Sink {
    format: AccessFormat,
    /// `None`: stderr.
    file: Option<Arc<LogFile>>,
}

impl AccessLog {
    /// An access log, `on` or not, to the file at `path` (opened now: the error names it) or
    /// to stderr, in `format`.
    pub fn new(on: bool, path: Option<&Path>, format: AccessFormat) -> io::Result<AccessLog> {
        let log = AccessLog {
            on: AtomicBool::new(on),
            sink: RwLock::new(Sink { format, file: None }),
        };
        log.configure(on, path, format)?;
        Ok(log)
    }

    /// Applies new settings. A new `path` is opened first: when it cannot be, nothing changes
    /// and the error names the file.
    pub fn configure(&self, on: bool, path: Option<&Path>, format: AccessFormat) -> io::Result<()> {
        let current = self.sink.read().file.clone();
        let file = match (current, path) {
            (Some(f), Some(p)) if f.path() == p => Some(f),
            (_, Some(p)) => Some(LogFile::open(p).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("access_log: cannot open {}: {e}", p.display()),
                )
            })?),
            (_, None) => None,
        };
        *self.sink.write() = Sink { format, file };
        self.on.store(on, Relaxed);
        Ok(())
    }

    /// Whether a line written now would go anywhere: the log is on, and its sink is a file or
    /// `RUST_LOG` shows target `access`. Lets a caller skip the work of an entry.
    pub fn enabled(&self) -> bool {
        self.on.load(Relaxed)
            && (self.sink.read().file.is_some() || log::log_enabled!(target: TARGET, Level::Info))
    }

    /// Writes the line for `e`, if [`AccessLog::enabled`]. Never blocks: the line is queued
    /// for the log writer thread (or dropped and counted when its queue is full).
    pub fn write(&self, e: &AccessEntry<'_>) {
        if !self.on.load(Relaxed) {
            return;
        }
        let sink = self.sink.read();
        let to = match &sink.file {
            Some(f) => To::File(Arc::clone(f)),
            None if !log::log_enabled!(target: TARGET, Level::Info) => return,
            None if !super::installed() => return through_log(sink.format, e),
            None => To::Stderr,
        };
        let mut line = writer::buffer();
        render(&mut line, sink.format, e);
        drop(sink);
        writer::deliver(to, line);
    }
}

/// The whole line for `e` in `format`, newline included.
fn render(line: &mut Vec<u8>, format: AccessFormat, e: &AccessEntry<'_>) {
    let time = Utc::now();
    match format {
        AccessFormat::Plain => {
            format::prefix(line, time, Level::Info, TARGET);
            format::plain(line, e);
        }
        AccessFormat::Combined => format::combined(line, time, e),
        AccessFormat::Json => format::json(line, time, e),
    }
}

/// Hands the line to someone else's `log` logger, as a record on target `access` (its own
/// time and level stand before it, so the plain line goes without them).
fn through_log(format: AccessFormat, e: &AccessEntry<'_>) {
    let mut line = Vec::with_capacity(256);
    match format {
        AccessFormat::Plain => format::plain(&mut line, e),
        other => render(&mut line, other, e),
    }
    let text = String::from_utf8_lossy(&line);
    log::info!(target: TARGET, "{}", text.trim_end());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_name() {
        for (name, format) in AccessFormat::ALL {
            assert_eq!(AccessFormat::parse(name), Some(format));
            assert_eq!(format.name(), name);
        }
        assert_eq!(AccessFormat::parse("common"), None);
    }

    #[test]
    fn a_file_gets_every_line_and_a_bad_path_is_named() {
        let dir = std::env::temp_dir().join(format!("lb-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("access.log");
        let _ = std::fs::remove_file(&path);
        let log = AccessLog::new(true, Some(&path), AccessFormat::Combined).unwrap();
        assert!(log.enabled(), "a file ignores RUST_LOG");
        let headers = [];
        log.write(&AccessEntry {
            client: "192.0.2.7".parse().unwrap(),
            request: Some(RequestLine {
                method: "GET",
                target: "/x",
                http10: false,
                headers: &headers,
            }),
            status: 204,
            backend: None,
            duration: Duration::ZERO,
            bytes: 0,
            attempts: 1,
            via: "",
            reason: None,
            aborted: false,
            tunnel: None,
        });
        assert!(super::super::flush());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.ends_with("\"GET /x HTTP/1.1\" 204 0 \"-\" \"-\"\n"),
            "{text}"
        );
        let missing = dir.join("no/such/dir/access.log");
        let e = log
            .configure(true, Some(&missing), AccessFormat::Plain)
            .unwrap_err();
        assert!(e.to_string().contains("no/such/dir/access.log"), "{e}");
        // Nothing changed: still the file, still combined.
        assert_eq!(log.sink.read().format, AccessFormat::Combined);
        log.configure(false, None, AccessFormat::Plain).unwrap();
        assert!(!log.enabled());
    }
}

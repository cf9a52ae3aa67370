//! Logging: one format for every line, one thread that writes them all, and the access log.
//!
//! Lines look like `2026-11-25T17:13:08.123Z INFO  loadbalancer::server: message`: time (UTC,
//! milliseconds), level, target, message. `RUST_LOG` chooses what is shown (default `info`, the
//! syntax of env_logger, which still does the filtering); the access log uses the target
//! `access`, so `RUST_LOG=info,access=off` hides it on stderr too.
//!
//! No thread but the log writer ever writes a log line: the poller and the workers format theirs
//! into a reused buffer and queue it (`writer.rs`), so that a stderr nobody reads, or a slow
//! disk, costs lines (dropped and counted, `lb_log_lines_dropped_total`), never a stalled
//! balancer.
//!
//! Files: `writer.rs` the writer thread and its queue; `access.rs` the access log (its entry,
//! sink and format); `format.rs` the shapes of a line; `time.rs` the UTC calendar time they
//! print.

pub mod access;
mod format;
pub mod time;
mod writer;

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

pub use access::{AccessEntry, AccessFormat, AccessLog, RequestLine, TunnelTotals};
pub use writer::{Dropped, QUEUE_BYTES, QUEUE_LINES, TICK};

/// How long [`flush`] waits for the writer: 2 s (a stderr nobody reads never drains).
pub const FLUSH_WAIT: Duration = Duration::from_secs(2);

static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Starts logging to stderr through the log writer thread, filtered by `RUST_LOG` (default
/// `info`). Safe to call more than once (later calls do nothing), which tests rely on.
pub fn init() {
    let env = env_logger::Env::default().default_filter_or("info");
    let filter = env_logger::Builder::from_env(env).build();
    let max = filter.filter();
    if log::set_boxed_logger(Box::new(Logger { filter })).is_ok() {
        log::set_max_level(max);
        INSTALLED.store(true, Relaxed);
    }
}

/// Whether [`init`] installed this module's logger (else stderr access lines go to whatever
/// `log` logger there is).
fn installed() -> bool {
    INSTALLED.load(Relaxed)
}

/// Waits until every line logged so far is written, up to [`FLUSH_WAIT`]. False when the time
/// ran out (the sink does not take them) or there is no writer.
pub fn flush() -> bool {
    writer::running().is_some_and(|w| w.flush(FLUSH_WAIT))
}

/// Opens every log file again at its path (SIGUSR1, after logrotate renamed them). The writer
/// thread does it on its next pass, after writing out what it holds for the old files.
pub fn reopen() {
    if let Some(w) = writer::running() {
        w.reopen();
    }
}

/// Log lines lost since start, by why.
pub fn dropped() -> Dropped {
    writer::running().map_or_else(Dropped::default, writer::Writer::dropped)
}

/// The `log` logger [`init`] installs: env_logger's filter, this module's format, the writer
/// thread's queue.
struct Logger {
    filter: env_logger::Logger,
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.filter.matches(record) {
            return;
        }
        use std::io::Write;
        let mut line = writer::buffer();
        format::prefix(&mut line, time::Utc::now(), record.level(), record.target());
        let _ = writeln!(line, "{}", record.args());
        writer::deliver(writer::To::Stderr, line);
    }

    fn flush(&self) {
        flush();
    }
}

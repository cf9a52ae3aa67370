//! The log writer: one thread that writes every log line, so that no other thread ever waits on
//! a log's pipe or disk.
//!
//! ```text
//! poller, workers, maintenance ...        log-writer thread
//!   take a line buffer (pool) ─┐          wakes every 100 ms while lines come (or at once
//!   format the line into it    │            when 256 wait, or on the first line after a
//!   send: bounded queue ───────┴────────▶   quiet spell), drains the queue into one batch
//!     full (8192 lines or 4 MiB):           per sink, writes each batch, gives the line
//!     the line is dropped and counted       buffers back to the pool
//! ```
//!
//! A sender never blocks: when the queue is full the line is dropped and counted
//! ([`Dropped::queue_full`], `lb_log_lines_dropped_total{reason="queue_full"}`), so a stderr pipe
//! nobody reads (a stalled `docker logs`, journald under pressure) costs lines, never the poller.
//! A write that fails (EPIPE, a full disk) drops the lines it could not write and counts them
//! ([`Dropped::write_failed`]); the next batch tries again, so the writer neither spins nor
//! gives up. A batch is a plain `Vec<u8>` rather than a `BufWriter` so that a failed write knows
//! how many lines it lost.
//!
//! Example: at 30 000 lines a second the writer wakes about 120 times a second (every 256
//! lines), and each wake makes one `write(2)` of about 30 KiB per sink; the senders' cost is a
//! buffer from the pool, the formatting and one queue slot, no allocation and no system call.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, OnceLock, Weak};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use parking_lot::{Condvar, Mutex};

use crate::supervise;

/// Most lines waiting for the writer: 8192, a quarter of a second at the fastest rate measured
/// (33 000 requests a second), so that a writer kept off the CPU for a moment loses nothing.
pub const QUEUE_LINES: usize = 8192;

/// Most bytes waiting for the writer: 4 MiB, so that long lines (an 8 KiB target, a long
/// User-Agent) cannot make the queue large.
pub const QUEUE_BYTES: usize = 4 << 20;

/// How often a writer that has lines coming writes them out: every 100 ms.
pub const TICK: Duration = Duration::from_millis(100);

/// How long a writer with nothing to do sleeps unless a line wakes it: 1 s.
const IDLE: Duration = Duration::from_secs(1);

/// Lines waiting that wake the writer before its tick: 256.
const WAKE_AT: usize = 256;

/// Line buffers kept for reuse: 1024.
const POOL: usize = 1024;

/// A new line buffer's capacity: 256 bytes, more than most access-log lines take.
const LINE: usize = 256;

/// A line buffer that grew beyond this (a rare long line) is freed rather than kept: 2 KiB.
const LINE_KEPT: usize = 2048;

/// A batch is written once it holds this much, without waiting for the queue to be drained:
/// 64 KiB.
const BATCH: usize = 64 << 10;

/// Where a line goes.
#[derive(Clone)]
pub enum To {
    /// The process's standard error.
    Stderr,
    /// A log file (the access log's `path=`).
    File(Arc<LogFile>),
}

impl To {
    fn is(&self, other: &To) -> bool {
        match (self, other) {
            (To::Stderr, To::Stderr) => true,
            (To::File(a), To::File(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Writes `bytes` now, on the calling thread: what the writer does with a batch, and the
    /// last resort when there is no writer thread.
    fn write_now(&self, bytes: &[u8]) -> Result<(), Lost> {
        match self {
            To::Stderr => write_counting(&mut io::stderr().lock(), bytes),
            To::File(file) => write_counting(&mut *file.file.lock(), bytes),
        }
    }
}

/// A log file, opened for appending (created if missing), and opened again at the same path
/// on [`Writer::reopen`] (SIGUSR1), after logrotate has renamed it.
pub struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
    /// Whether the last write failed (so that failing and recovering are each logged once).
    failing: AtomicBool,
}

impl LogFile {
    /// Opens `path` for appending, creating it if needed.
    pub fn open(path: &Path) -> io::Result<Arc<LogFile>> {
        let file = Arc::new(LogFile {
            path: path.to_path_buf(),
            file: Mutex::new(open_append(path)?),
            failing: AtomicBool::new(false),
        });
        let mut files = FILES.lock();
        files.retain(|f| f.strong_count() > 0);
        files.push(Arc::downgrade(&file));
        Ok(file)
    }

    /// The path it was opened at.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Every log file open, so that a reopen finds them all.
static FILES: Mutex<Vec<Weak<LogFile>>> = Mutex::new(Vec::new());

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Lines lost since start, by why.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    /// The queue to the writer was full (the sink is slower than the lines come, or stalled).
    pub queue_full: u64,
    /// The sink refused them (EPIPE, a full disk), or the writer panicked holding them.
    pub write_failed: u64,
}

/// Lines a failed write did not get out, and why.
struct Lost {
    error: io::Error,
    lines: u64,
}

/// One line on its way to the writer.
struct Line {
    to: To,
    text: Vec<u8>,
}

/// The sending side of the log writer, and the state it shares with the writer thread.
pub struct Writer {
    queue: Sender<Line>,
    pool: (Sender<Vec<u8>>, Receiver<Vec<u8>>),
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    /// The writer is in its long sleep: the next line wakes it.
    idle: AtomicBool,
    thread: OnceLock<Thread>,
    reopens: AtomicU64,
    flushes: Mutex<Flushes>,
    flushed: Condvar,
    queue_full: AtomicU64,
    write_failed: AtomicU64,
}

#[derive(Default)]
struct Flushes {
    asked: u64,
    done: u64,
    /// `done` when a flush last timed out: until the writer finishes a pass, the next flush
    /// returns at once instead of waiting again on a sink that does not take lines.
    stuck_at: Option<u64>,
}

static WRITER: OnceLock<Option<&'static Writer>> = OnceLock::new();

/// The process's log writer if it was started (by a first line).
pub fn running() -> Option<&'static Writer> {
    WRITER.get().copied().flatten()
}

/// The process's log writer, started on first use; `None` if its thread could not be started
/// (lines are then written on the calling thread: see [`deliver`]).
pub fn global() -> Option<&'static Writer> {
    *WRITER.get_or_init(|| {
        let (writer, queue) = Writer::new(QUEUE_LINES, QUEUE_BYTES);
        let writer: &'static Writer = Box::leak(Box::new(writer));
        match thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || writer.run(&queue))
        {
            Ok(handle) => {
                let _ = writer.thread.set(handle.thread().clone());
                Some(writer)
            }
            Err(e) => {
                let _ = writeln!(
                    io::stderr(),
                    "loadbalancer: cannot start the log writer thread ({e}): logging directly"
                );
                None
            }
        }
    })
}

/// Sends `text` to `to` through the process's writer, or writes it now if there is none.
pub fn deliver(to: To, text: Vec<u8>) {
    match global() {
        Some(w) => w.send(to, text),
        None => {
            let _ = to.write_now(&text);
        }
    }
}

/// A line buffer: from the writer's pool when there is one.
pub fn buffer() -> Vec<u8> {
    global().map_or_else(|| Vec::with_capacity(LINE), Writer::buffer)
}

impl Writer {
    /// A writer whose queue holds `lines` lines and `bytes` bytes, and the queue's receiving end
    /// for [`Writer::run`] (tests drive [`Writer::pass`] themselves).
    fn new(lines: usize, bytes: usize) -> (Writer, Receiver<Line>) {
        let (queue, receiver) = bounded(lines);
        let writer = Writer {
            queue,
            pool: bounded(POOL),
            queued_bytes: AtomicUsize::new(0),
            max_bytes: bytes,
            idle: AtomicBool::new(false),
            thread: OnceLock::new(),
            reopens: AtomicU64::new(0),
            flushes: Mutex::new(Flushes::default()),
            flushed: Condvar::new(),
            queue_full: AtomicU64::new(0),
            write_failed: AtomicU64::new(0),
        };
        (writer, receiver)
    }

    /// An empty line buffer, reused when one is free.
    pub fn buffer(&self) -> Vec<u8> {
        self.pool
            .1
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(LINE))
    }

    /// Queues `text` (one or more whole lines) for `to`, or drops and counts it when the queue
    /// is full. Never blocks.
    pub fn send(&self, to: To, text: Vec<u8>) {
        let len = text.len();
        if self.queued_bytes.fetch_add(len, Relaxed) + len > self.max_bytes {
            self.queued_bytes.fetch_sub(len, Relaxed);
            return self.drop_full(text);
        }
        match self.queue.try_send(Line { to, text }) {
            Ok(()) => {
                // SeqCst pairs with the writer's store before its long sleep: either it sees
                // this line in the queue, or this sees it idle and wakes it.
                if self.queue.len() >= WAKE_AT
                    || self.idle.load(SeqCst) && self.idle.swap(false, SeqCst)
                {
                    self.wake();
                }
            }
            Err(TrySendError::Full(line) | TrySendError::Disconnected(line)) => {
                self.queued_bytes.fetch_sub(len, Relaxed);
                self.drop_full(line.text);
            }
        }
    }

    fn drop_full(&self, text: Vec<u8>) {
        self.queue_full.fetch_add(1, Relaxed);
        self.recycle(text);
        self.wake();
    }

    fn recycle(&self, mut text: Vec<u8>) {
        if text.capacity() <= LINE_KEPT {
            text.clear();
            let _ = self.pool.0.try_send(text);
        }
    }

    fn wake(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }

    /// Lines lost since start.
    pub fn dropped(&self) -> Dropped {
        Dropped {
            queue_full: self.queue_full.load(Relaxed),
            write_failed: self.write_failed.load(Relaxed),
        }
    }

    /// Asks the writer to open every log file again at its path (SIGUSR1), after writing out
    /// what it holds for the old ones.
    pub fn reopen(&self) {
        self.reopens.fetch_add(1, SeqCst);
        self.wake();
    }

    /// Waits until every line sent before the call is written (or lost), up to `wait`. False
    /// when the time ran out: the writer is stuck on its sink, or this is the writer itself.
    pub fn flush(&self, wait: Duration) -> bool {
        if self
            .thread
            .get()
            .is_none_or(|t| t.id() == thread::current().id())
        {
            return false;
        }
        let deadline = Instant::now() + wait;
        let mut f = self.flushes.lock();
        if f.stuck_at == Some(f.done) {
            return false;
        }
        f.asked += 1;
        let want = f.asked;
        self.wake();
        while f.done < want {
            if self.flushed.wait_until(&mut f, deadline).timed_out() {
                f.stuck_at = Some(f.done);
                return false;
            }
        }
        true
    }

    /// The writer thread: passes forever, surviving a panic in any of them (the lines it held
    /// are counted as lost, the panic is logged and counted, the next pass starts afresh).
    fn run(&self, queue: &Receiver<Line>) {
        let mut out = Batches::default();
        loop {
            let pass = catch_unwind(AssertUnwindSafe(|| {
                self.sleep(queue, out.busy);
                self.pass(queue, &mut out);
            }));
            if let Err(panic) = pass {
                let lost: u64 = out.batches.iter().map(|b| b.lines).sum();
                self.write_failed.fetch_add(lost, Relaxed);
                out.batches.clear();
                supervise::survived(supervise::Thread::LogWriter, "writing log lines", &*panic);
            }
        }
    }

    /// Sleeps until the next pass: a tick while lines come, else until a line (or a flush or
    /// reopen) wakes it, at most [`IDLE`].
    fn sleep(&self, queue: &Receiver<Line>, busy: bool) {
        if busy {
            thread::park_timeout(TICK);
            return;
        }
        self.idle.store(true, SeqCst);
        if queue.is_empty() {
            thread::park_timeout(IDLE);
        }
        self.idle.store(false, SeqCst);
    }

    /// One pass: everything queued is batched per sink and written; then log files are opened
    /// again if asked, and flushes asked before the pass began are answered.
    fn pass(&self, queue: &Receiver<Line>, out: &mut Batches) {
        supervise::check_point(supervise::Thread::LogWriter);
        let asked = self.flushes.lock().asked;
        let reopens = self.reopens.load(SeqCst);
        let mut taken = 0;
        while taken < QUEUE_LINES {
            let Ok(line) = queue.try_recv() else { break };
            self.queued_bytes.fetch_sub(line.text.len(), Relaxed);
            out.push(line, self);
            taken += 1;
        }
        out.write_all(self);
        out.busy = taken > 0;
        if reopens != out.reopened {
            out.reopened = reopens;
            self.reopen_files();
        }
        let mut f = self.flushes.lock();
        if f.done < asked {
            f.done = asked;
            self.flushed.notify_all();
        }
    }

    fn reopen_files(&self) {
        let files: Vec<Arc<LogFile>> = {
            let mut files = FILES.lock();
            files.retain(|f| f.strong_count() > 0);
            files.iter().filter_map(Weak::upgrade).collect()
        };
        for file in files {
            match open_append(&file.path) {
                Ok(new) => {
                    *file.file.lock() = new;
                    log::info!("reopened the log file {}", file.path.display());
                }
                Err(e) => log::warn!(
                    "cannot reopen the log file {}: {e}; still writing to the file opened before",
                    file.path.display()
                ),
            }
        }
    }

    /// Counts what a failed write lost, and says when a file starts or stops failing (a
    /// failing stderr cannot be told about).
    fn wrote(&self, to: &To, result: Result<(), Lost>) {
        let file = match to {
            To::File(f) => Some(f),
            To::Stderr => None,
        };
        match result {
            Ok(()) => {
                if let Some(f) = file.filter(|f| f.failing.swap(false, Relaxed)) {
                    log::info!("writing to the log file {} again", f.path.display());
                }
            }
            Err(lost) => {
                self.write_failed.fetch_add(lost.lines, Relaxed);
                if let Some(f) = file.filter(|f| !f.failing.swap(true, Relaxed)) {
                    log::warn!(
                        "cannot write to the log file {}: {}; its lines are dropped (counted in \
                         lb_log_lines_dropped_total) until a write succeeds",
                        f.path.display(),
                        lost.error
                    );
                }
            }
        }
    }
}

/// The lines of one pass, one batch per sink.
#[derive(Default)]
struct Batches {
    batches: Vec<Batch>,
    /// The last pass had lines: sleep a tick, not until woken.
    busy: bool,
    /// The reopen requests already carried out.
    reopened: u64,
}

struct Batch {
    to: To,
    bytes: Vec<u8>,
    /// Messages in `bytes` (a message is one line, but for the rare log message with a newline
    /// of its own): what a panic loses.
    lines: u64,
}

impl Batches {
    fn push(&mut self, line: Line, w: &Writer) {
        let at = match self.batches.iter().position(|b| b.to.is(&line.to)) {
            Some(at) => at,
            None => {
                self.batches.push(Batch {
                    to: line.to,
                    bytes: Vec::with_capacity(BATCH),
                    lines: 0,
                });
                self.batches.len() - 1
            }
        };
        let batch = &mut self.batches[at];
        batch.bytes.extend_from_slice(&line.text);
        batch.lines += 1;
        w.recycle(line.text);
        if batch.bytes.len() >= BATCH {
            batch.write(w);
        }
    }

    /// Writes every batch; forgets the files nobody else holds any more (a stopped balancer's).
    fn write_all(&mut self, w: &Writer) {
        for batch in &mut self.batches {
            batch.write(w);
        }
        self.batches
            .retain(|b| !matches!(&b.to, To::File(f) if Arc::strong_count(f) == 1));
    }
}

impl Batch {
    fn write(&mut self, w: &Writer) {
        if self.bytes.is_empty() {
            return;
        }
        w.wrote(&self.to, self.to.write_now(&self.bytes));
        self.bytes.clear();
        self.lines = 0;
    }
}

/// Writes all of `bytes`; on an error, the lines not wholly written are lost.
fn write_counting(out: &mut impl Write, bytes: &[u8]) -> Result<(), Lost> {
    let mut at = 0;
    while at < bytes.len() {
        let error = match out.write(&bytes[at..]) {
            Ok(0) => io::Error::from(io::ErrorKind::WriteZero),
            Ok(n) => {
                at += n;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => e,
        };
        let lines = bytes[at..].iter().filter(|&&b| b == b'\n').count() as u64;
        return Err(Lost { error, lines });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> Vec<u8> {
        format!("{text}\n").into_bytes()
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lb-writer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        path
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (w, queue) = Writer::new(4, 1 << 20);
        let file = LogFile::open(&temp("full.log")).unwrap();
        for i in 0..10 {
            w.send(To::File(Arc::clone(&file)), line(&format!("line {i}")));
        }
        assert_eq!(
            w.dropped(),
            Dropped {
                queue_full: 6,
                write_failed: 0
            }
        );
        w.pass(&queue, &mut Batches::default());
        let text = std::fs::read_to_string(file.path()).unwrap();
        assert_eq!(text, "line 0\nline 1\nline 2\nline 3\n");
        // Room again.
        w.send(To::File(Arc::clone(&file)), line("line 10"));
        w.pass(&queue, &mut Batches::default());
        assert!(std::fs::read_to_string(file.path())
            .unwrap()
            .ends_with("line 3\nline 10\n"));
        assert_eq!(w.dropped().queue_full, 6);
    }

    #[test]
    fn the_byte_bound_drops_long_lines() {
        let (w, queue) = Writer::new(100, 64);
        let file = LogFile::open(&temp("bytes.log")).unwrap();
        w.send(To::File(Arc::clone(&file)), line(&"a".repeat(40)));
        w.send(To::File(Arc::clone(&file)), line(&"b".repeat(40)));
        w.send(To::File(Arc::clone(&file)), line("short"));
        assert_eq!(w.dropped().queue_full, 1);
        w.pass(&queue, &mut Batches::default());
        let text = std::fs::read_to_string(file.path()).unwrap();
        assert_eq!(text, format!("{}\nshort\n", "a".repeat(40)));
        assert_eq!(
            w.queued_bytes.load(Relaxed),
            0,
            "every byte taken is given back"
        );
    }

    #[test]
    fn a_failing_sink_drops_and_counts_and_is_tried_again() {
        let (w, queue) = Writer::new(100, 1 << 20);
        // Writes to /dev/full fail with ENOSPC, as on a full disk.
        let full = LogFile::open(Path::new("/dev/full")).unwrap();
        let mut out = Batches::default();
        for i in 0..3 {
            w.send(To::File(Arc::clone(&full)), line(&format!("line {i}")));
        }
        w.pass(&queue, &mut out);
        assert_eq!(
            w.dropped(),
            Dropped {
                queue_full: 0,
                write_failed: 3
            }
        );
        assert!(full.failing.load(Relaxed));
        w.send(To::File(Arc::clone(&full)), line("again"));
        w.pass(&queue, &mut out);
        assert_eq!(w.dropped().write_failed, 4, "each pass tries again");
    }

    #[test]
    fn a_partial_write_loses_only_the_lines_not_written() {
        /// Takes `room` bytes, then fails.
        struct Short(usize);
        impl Write for Short {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::from(io::ErrorKind::BrokenPipe));
                }
                let n = buf.len().min(self.0);
                self.0 -= n;
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let lost = write_counting(&mut Short(9), b"line 1\nline 2\nline 3\n").unwrap_err();
        assert_eq!(
            (lost.lines, lost.error.kind()),
            (2, io::ErrorKind::BrokenPipe)
        );
        assert!(write_counting(&mut Short(100), b"a\nb\n").is_ok());
    }

    #[test]
    fn buffers_are_reused() {
        let (w, queue) = Writer::new(100, 1 << 20);
        let file = LogFile::open(&temp("pool.log")).unwrap();
        let mut text = w.buffer();
        text.extend_from_slice(b"one\n");
        let at = text.as_ptr();
        w.send(To::File(Arc::clone(&file)), text);
        w.pass(&queue, &mut Batches::default());
        let again = w.buffer();
        assert_eq!(again.as_ptr(), at, "the pool gave the same buffer back");
        assert!(again.is_empty());
    }
}

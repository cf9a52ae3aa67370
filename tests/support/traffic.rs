//! What the resilience tests measure with:
//!
//! - [`Traffic`]: client threads sending GETs continuously over keep-alive connections, recording
//!   which [`Backend::named`](super::Backend::named) backend answered each request in a sliding
//!   window.
//! - [`poll`]: waits for a condition and tells how long it took.
//! - [`serial`]: the timing-sensitive tests of one binary run one at a time (2 cores).
//! - [`LogCapture`]: a `log` logger for the test process, to check that state changes are logged
//!   once.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::Session;

/// Serialises the tests of one test binary: shares and timings are measured on 2 cores, so two
/// load tests must not run at once.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// What continuous [`Traffic`] has seen.
#[derive(Debug, Default)]
pub struct Seen {
    /// The most recent answers, newest last: index of the node that answered (by body), or
    /// `usize::MAX` for anything else.
    pub window: VecDeque<usize>,
    /// Answers per node since the start.
    pub totals: Vec<u64>,
    /// Requests without a 200 from a known node, with what happened.
    pub failures: Vec<String>,
}

/// Client threads sending `GET`s continuously until dropped.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pub seen: Arc<Mutex<Seen>>,
    window: usize,
}

impl Traffic {
    /// Starts `clients` threads against `addr`; `names` are the node names, in the order used for
    /// indices; the sliding window keeps the last `window` answers.
    pub fn start(addr: SocketAddr, clients: usize, names: &[&str], window: usize) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen {
            totals: vec![0; names.len()],
            ..Seen::default()
        }));
        let names: Arc<Vec<String>> = Arc::new(names.iter().map(|s| s.to_string()).collect());
        let threads = (0..clients)
            .map(|c| {
                let (stop, seen, names) =
                    (Arc::clone(&stop), Arc::clone(&seen), Arc::clone(&names));
                thread::spawn(move || {
                    let mut session = Session::new(addr);
                    let mut i = 0u64;
                    while !stop.load(SeqCst) {
                        i += 1;
                        let r = session.get(&format!("/load/{c}/{i}"));
                        let who = match &r {
                            Ok(r) if r.status == 200 => {
                                names.iter().position(|n| n.as_bytes() == r.body.as_slice())
                            }
                            _ => None,
                        };
                        let mut s = seen.lock().unwrap();
                        match who {
                            Some(k) => {
                                s.totals[k] += 1;
                                s.window.push_back(k);
                            }
                            None => {
                                s.window.push_back(usize::MAX);
                                s.failures.push(match r {
                                    Ok(r) => format!("{} {:?}", r.status, r.text()),
                                    Err(e) => e,
                                });
                            }
                        }
                        while s.window.len() > window {
                            s.window.pop_front();
                        }
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            threads,
            seen,
            window,
        }
    }

    /// Share of node `k` among the last `window` answers, once the window is full.
    pub fn share(&self, k: usize) -> Option<f64> {
        let s = self.seen.lock().unwrap();
        (s.window.len() >= self.window)
            .then(|| s.window.iter().filter(|&&w| w == k).count() as f64 / s.window.len() as f64)
    }

    /// Forgets the window (the next share needs a full window of new answers).
    pub fn clear_window(&self) {
        self.seen.lock().unwrap().window.clear();
    }

    pub fn totals(&self) -> Vec<u64> {
        self.seen.lock().unwrap().totals.clone()
    }

    pub fn failures(&self) -> Vec<String> {
        self.seen.lock().unwrap().failures.clone()
    }

    /// Stops the clients and waits for them.
    pub fn stop(mut self) -> Seen {
        self.halt();
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    fn halt(&mut self) {
        self.stop.store(true, SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Polls `cond` (which may do work, e.g. send a request) until it returns `Some`, failing with
/// `what` after `timeout`. Returns the value and the time it took.
pub fn poll<T>(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> Option<T>,
) -> (T, Duration) {
    let start = Instant::now();
    loop {
        if let Some(v) = cond() {
            return (v, start.elapsed());
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// A logger for the test process that keeps every message of the balancer's crate, and its
/// access-log lines (target `access`, written only when the test turns `access_log` on).
pub struct LogCapture {
    lines: Mutex<Vec<String>>,
}

impl log::Log for LogCapture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.target().starts_with("loadbalancer") || m.target() == "access"
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            self.lines
                .lock()
                .unwrap()
                .push(format!("{} {}", record.level(), record.args()));
        }
    }

    fn flush(&self) {}
}

impl LogCapture {
    /// Installs the capture (once per process) and returns it.
    pub fn install() -> &'static LogCapture {
        static CAPTURE: OnceLock<&'static LogCapture> = OnceLock::new();
        CAPTURE.get_or_init(|| {
            let c: &'static LogCapture = Box::leak(Box::new(LogCapture {
                lines: Mutex::new(Vec::new()),
            }));
            log::set_logger(c).expect("no other logger in this test binary");
            log::set_max_level(log::LevelFilter::Info);
            c
        })
    }

    /// A position in the log: [`LogCapture::matching`] looks only at lines logged after it.
    pub fn mark(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// Lines logged since `mark` that contain every one of `parts`.
    pub fn matching(&self, mark: usize, parts: &[&str]) -> Vec<String> {
        self.lines.lock().unwrap()[mark..]
            .iter()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .cloned()
            .collect()
    }
}

/// Writes a line to stderr for the test report (shown with `--nocapture`, or on failure).
pub fn note(msg: impl AsRef<str>) {
    eprintln!("    [resilience] {}", msg.as_ref());
}

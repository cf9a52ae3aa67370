//! Supervision: what happens when a long-lived thread panics. Each thread either survives a
//! panic, with its state left consistent, or takes the process down so that its supervisor
//! (systemd's `Restart=`) starts a fresh one. A thread that dies quietly while the process
//! stays up, and `/health` says 200, is the one outcome not allowed.
//!
//! | thread | on a panic | why |
//! | --- | --- | --- |
//! | worker | survives: the request gets 500 (or its connection closes), the worker takes the next | a panic belongs to one request; the worker holds nothing else |
//! | poller, in the handler's admission checks | survives: that request gets 500 | the checks (the filter) run on client input; the poller's own state is untouched |
//! | poller, anywhere else | exits the process (status 70) | every connection's state lives in the poller: after an unexpected panic none of it can be trusted, and a balancer that accepts nothing must not look alive |
//! | maintenance | survives: the next tick runs | each tick starts again from the pool's state |
//! | health check | survives: the check counts as failed and the backend is checked again at its next interval | the check is one probe, its result one message |
//! | signals | exits the process (status 70) | without it, SIGTERM would no longer drain |
//! | log writer | survives: the lines it held are counted as dropped, the next pass runs | each pass starts from the queue; a writer gone would leave the process without logs |
//! | redis, redis-bans (`shared`) | survive: the loop starts again with a fresh connection; checks in flight are decided by the fallback | the state is Redis's; a connection is cheap to make again |
//!
//! Every panic is logged with the thread's name and counted (`lb_thread_panics_total` in
//! `/metrics`). [`inject`] makes the next pass of a thread panic, so that the tests can prove
//! each row of the table.

use std::any::Any;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

/// The kinds of long-lived work, for counting and for [`inject`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Thread {
    /// A worker, outside the handler (which has a catch of its own).
    Worker,
    /// The poller's admission checks (`Handler::admit`).
    Admission,
    /// The poller itself.
    Poller,
    /// The maintenance thread's tick.
    Maintenance,
    /// One health check.
    HealthCheck,
    /// The signal-handling thread.
    Signals,
    /// The log writer (`logging/writer.rs`).
    LogWriter,
    /// The shared store's threads (`redis`, `redis-bans`).
    SharedStore,
}

impl Thread {
    /// Every kind, in a stable order.
    pub const ALL: [Thread; 8] = [
        Thread::Worker,
        Thread::Admission,
        Thread::Poller,
        Thread::Maintenance,
        Thread::HealthCheck,
        Thread::Signals,
        Thread::LogWriter,
        Thread::SharedStore,
    ];

    /// The label in logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Thread::Worker => "worker",
            Thread::Admission => "admission",
            Thread::Poller => "poller",
            Thread::Maintenance => "maintenance",
            Thread::HealthCheck => "health_check",
            Thread::Signals => "signals",
            Thread::LogWriter => "log_writer",
            Thread::SharedStore => "redis",
        }
    }

    fn bit(self) -> u32 {
        1 << self as u32
    }
}

/// Tells whether a thread runs (readiness: the admin `/health` answers 503 while one does not).
pub type Alive = Box<dyn Fn() -> bool + Send + Sync>;

/// The exit status of a process taken down by a panic: 70, `EX_SOFTWARE` in sysexits.h.
pub const EXIT_PANIC: i32 = 70;

static PANICS: [AtomicU64; Thread::ALL.len()] = [const { AtomicU64::new(0) }; Thread::ALL.len()];
static INJECTED: AtomicU32 = AtomicU32::new(0);

/// Panics caught or fatal since start, by kind.
pub fn panics() -> Vec<(&'static str, u64)> {
    Thread::ALL
        .iter()
        .map(|t| (t.label(), PANICS[*t as usize].load(Relaxed)))
        .collect()
}

/// The text of a panic's payload.
pub fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

fn this_thread() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .to_string()
}

/// Records a panic a thread survives: logged with the thread's name and `what` it was doing,
/// and counted.
pub fn survived(kind: Thread, what: &str, payload: &(dyn Any + Send)) {
    PANICS[kind as usize].fetch_add(1, Relaxed);
    log::error!(
        "thread {} panicked {what}: {}; it carries on",
        this_thread(),
        message(payload)
    );
}

/// Records a panic the process cannot survive, and exits with [`EXIT_PANIC`] once the log lines
/// so far are written (or a short wait for them ran out).
pub fn fatal(kind: Thread, payload: &(dyn Any + Send)) -> ! {
    PANICS[kind as usize].fetch_add(1, Relaxed);
    log::error!(
        "thread {} panicked: {}; exiting (status {EXIT_PANIC}) so that a supervisor restarts \
         the balancer",
        this_thread(),
        message(payload)
    );
    log::logger().flush();
    std::process::exit(EXIT_PANIC)
}

/// Makes the next pass of a `kind` thread through its check point panic. A test hook: it costs
/// the threads one relaxed load per pass.
#[doc(hidden)]
pub fn inject(kind: Thread) {
    INJECTED.fetch_or(kind.bit(), Relaxed);
}

/// Panics if [`inject`] asked this `kind` to (once).
#[doc(hidden)]
pub fn check_point(kind: Thread) {
    if INJECTED.load(Relaxed) & kind.bit() != 0
        && INJECTED.fetch_and(!kind.bit(), Relaxed) & kind.bit() != 0
    {
        panic!("injected panic ({})", kind.label());
    }
}

/// Reads `LOADBALANCER_INJECT_PANIC` (kinds by label, comma-separated) in debug builds, so that
/// the tests can make the binary's threads panic; release builds ignore it.
pub fn inject_from_env() {
    if !cfg!(debug_assertions) {
        return;
    }
    let Ok(kinds) = std::env::var("LOADBALANCER_INJECT_PANIC") else {
        return;
    };
    for label in kinds.split(',') {
        if let Some(kind) = Thread::ALL.iter().find(|t| t.label() == label.trim()) {
            inject(*kind);
        }
    }
}

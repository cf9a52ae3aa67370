//! Logging: one env_logger format for every line, and the access-log line.
//!
//! Lines look like `2026-11-25T17:13:08.123Z INFO  loadbalancer::server: message`: time (UTC,
//! milliseconds), level, target, message. `RUST_LOG` chooses what is shown (default `info`); the
//! access log uses the target `access`, so `RUST_LOG=info,access=off` hides it too.

pub mod time;

use std::io::Write;
use std::net::IpAddr;
use std::time::Duration;

/// Starts logging to stderr. Safe to call more than once (later calls do nothing), which tests
/// rely on.
pub fn init() {
    let env = env_logger::Env::default().default_filter_or("info");
    let _ = env_logger::Builder::from_env(env)
        .format(|buf, record| {
            writeln!(
                buf,
                "{} {:<5} {}: {}",
                buf.timestamp_millis(),
                record.level(),
                record.target(),
                record.args()
            )
        })
        .try_init();
}

/// One finished request, as the access log reports it.
#[derive(Debug)]
pub struct AccessEntry<'a> {
    /// Client address.
    pub client: IpAddr,
    /// Request method.
    pub method: &'a str,
    /// Request target.
    pub target: &'a str,
    /// Status sent to the client.
    pub status: u16,
    /// Backend that answered (`-` when none did).
    pub backend: &'a str,
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
}

/// Writes the access-log line for `e` at info level on target `access`:
/// `client method target status backend duration bytes`, then what applies of
/// `attempts=N via=a>b`, `reason=CODE` and `aborted`.
pub fn access(e: &AccessEntry<'_>) {
    let mut extra = String::new();
    if e.attempts > 1 {
        extra = format!(" attempts={} via={}", e.attempts, e.via);
    }
    if let Some(reason) = e.reason {
        extra.push_str(" reason=");
        extra.push_str(reason);
    }
    if e.aborted {
        extra.push_str(" aborted");
    }
    log::info!(
        target: "access",
        "{} {} {} {} {} {:.1}ms {}{}",
        e.client,
        e.method,
        e.target,
        e.status,
        e.backend,
        e.duration.as_secs_f64() * 1000.0,
        e.bytes,
        extra
    );
}

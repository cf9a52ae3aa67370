//! What the front end accepts from a client, and for how long it waits: the limits that keep one
//! client (or ten thousand) from taking more than its share of memory, descriptors or workers.
//!
//! | limit | default | answer | anchor |
//! | --- | --- | --- | --- |
//! | request line | 8 KiB | 414 | nginx `large_client_header_buffers 4 8k` |
//! | whole head (request line and headers) | 16 KiB | 431 | HAProxy `tune.bufsize 16384` |
//! | header fields | 100 | 431 | Apache `LimitRequestFields 100`, HAProxy `tune.http.maxhdr 101` |
//! | time from a head's first byte to its end | 10 s | 408 | HAProxy `timeout http-request` |
//! | idle connection, or a stalled body read or answer write | 60 s | close | nginx `keepalive_timeout 75s`, `client_body_timeout 60s` |
//! | time from a body's first byte to its end, when the poller buffers it | 60 s | 408 | nginx `client_body_timeout 60s` (there between two reads) |
//! | time a complete request waits for a worker | 5 s | 503 | HAProxy `timeout queue` |
//! | requests waiting for a worker | one per connection | 503 | HAProxy `maxqueue` (off by default) |
//! | open client connections | descriptor limit minus a reserve, at most 100 000 | accept pauses | HAProxy `maxconn` (derived from `ulimit -n`) |
//! | silence in both directions of a tunnel | 1 h | close | HAProxy `timeout tunnel` (its docs suggest 1h for WebSockets) |
//! | open tunnels | 10 000 | 503 to the upgrade | HAProxy `maxconn` (a tunnel is a connection there) |

use std::time::Duration;

/// The front end's limits. [`Limits::default`] gives the defaults in the module table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line (method, target and version, without the line end). Longer: 414.
    /// Default 8 KiB.
    pub max_request_line: usize,
    /// Largest request head: request line, header fields and the empty line. Larger: 431.
    /// Default 16 KiB.
    pub max_head: usize,
    /// Most header fields in one head. More: 431. Default 100.
    pub max_headers: usize,
    /// Longest time from the first byte of a request head to its end. Slower: 408. Default 10 s.
    pub head_timeout: Duration,
    /// Longest a connection may wait for the first byte of a request (a new connection or an
    /// idle keep-alive one), and longest one read of a request body or one write of an answer
    /// may wait. The idle connection is closed; a stalled body or answer ends the exchange.
    /// Default 60 s.
    pub client_timeout: Duration,
    /// Longest from the end of a request's head to the end of its body, while the poller
    /// buffers it (`request_buffering on`); slower gets 408 and a close. Default 60 s.
    pub body_timeout: Duration,
    /// The poller reads every request body into a buffer before a worker sees the request
    /// (true, the default), so a slow upload holds no worker; false streams the body through a
    /// worker as it arrives, which a few hundred slow clients can hold all workers with.
    pub request_buffering: bool,
    /// Longest a complete request waits in the queue for a worker; then 503 with
    /// `Retry-After`. Default 5 s.
    pub queue_timeout: Duration,
    /// Most requests waiting for a worker; beyond that, 503 at once. `None` (the default): as
    /// many as there are connections, so requests wait up to `queue_timeout` instead.
    pub max_queue: Option<usize>,
    /// Most client connections open at once; while at the limit, new connections wait in the
    /// kernel's accept queue. Default: [`default_max_connections`].
    pub max_connections: usize,
    /// Longest a tunnel (after `101 Switching Protocols`) may pass no byte in either direction;
    /// then both sides are closed. Default 1 h ([`TUNNEL_TIMEOUT`](super::TUNNEL_TIMEOUT)).
    pub tunnel_timeout: Duration,
    /// Most tunnels open at once; a handler asking for one more gets a 503 to answer
    /// ([`Exchange::reserve_tunnel`](super::Exchange::reserve_tunnel)). Default 10 000
    /// ([`MAX_TUNNELS`](super::MAX_TUNNELS)).
    pub max_tunnels: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_line: 8 << 10,
            max_head: 16 << 10,
            max_headers: 100,
            head_timeout: Duration::from_secs(10),
            client_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            request_buffering: true,
            queue_timeout: Duration::from_secs(5),
            max_queue: None,
            max_connections: MAX_CONNECTIONS_CAP,
            tunnel_timeout: super::TUNNEL_TIMEOUT,
            max_tunnels: super::MAX_TUNNELS,
        }
    }
}

/// The largest default for [`Limits::max_connections`]. 100 000.
pub const MAX_CONNECTIONS_CAP: usize = 100_000;

/// The default connection limit for a process allowed `descriptors` open files with `workers`
/// worker threads: the descriptors minus a reserve for the connections to backends (two per
/// worker: one in use, one idle in the pool) and 64 for everything else (listeners, the poller,
/// health checks, logs), at least 16 and at most [`MAX_CONNECTIONS_CAP`].
///
/// Example: `ulimit -n 20000` and 64 workers give 20000 − 128 − 64 = 19 808 connections;
/// `ulimit -n 1048576` gives 100 000.
pub fn default_max_connections(descriptors: u64, workers: usize) -> usize {
    let reserve = 2 * workers as u64 + 64;
    descriptors
        .saturating_sub(reserve)
        .clamp(16, MAX_CONNECTIONS_CAP as u64) as usize
}

/// The process's soft limit on open descriptors (`RLIMIT_NOFILE`); `u64::MAX` when unlimited
/// or unknown.
pub fn descriptor_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through the pointer, which points at `limit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return u64::MAX;
    }
    limit.rlim_cur
}

/// Raises the soft limit on open descriptors to the hard limit, as HAProxy and nginx do at
/// start: the default soft limit (often 1024) would cap the connections far below what the
/// system allows. Returns `(before, after)`.
pub fn raise_descriptor_limit() -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as in descriptor_limit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads one rlimit through the pointer, which points at `limit`.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((before, limit.rlim_cur))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_limit_follows_the_descriptor_limit() {
        assert_eq!(default_max_connections(20_000, 64), 19_808);
        assert_eq!(default_max_connections(1 << 20, 64), MAX_CONNECTIONS_CAP);
        assert_eq!(default_max_connections(256, 64), 64);
        assert_eq!(default_max_connections(100, 64), 16);
    }
}

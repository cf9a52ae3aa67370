//! Configuration: the line-based config file and the command-line flags, turned into one validated
//! [`Config`].
//!
//! The file has one setting per line, `#` starts a comment, and a setting is a key followed by
//! words, most of them `name=value` pairs (the same shape as HAProxy's and nginx's own files, so no
//! parser dependency is needed):
//!
//! ```text
//! listen    0.0.0.0:8080
//! workers   64
//! timeouts  connect=2s response=30s send=30s
//! backend   http://localhost:8081 weight=5
//! ```
//!
//! Every problem is reported as `file:line: problem` (see [`ConfigError`]). Flags override the file;
//! `--backend` on the command line replaces the file's backends.

//!
//! Files: this one holds the settings themselves ([`Config`] and its parts) and the rules no
//! single line can check; `words.rs` reads and writes durations, sizes and the like; `file.rs`
//! is the file's grammar; `display.rs` writes a configuration back in it (`--check`); `cli.rs`
//! reads the command line.

pub mod cidr;
mod cli;
mod display;
mod file;
pub mod filter;
pub mod shared;
mod words;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::http::{BufferLimits, Limits};
use crate::logging::AccessFormat;
use filter::FilterConfig;

pub use cli::{parse_args, parse_args_in, version, Cli, USAGE};
pub use display::HIDDEN_TOKEN;
pub use words::{check_addr, format_duration, format_size, parse_duration, parse_size};

/// The config file read when `--config` is not given, if it exists in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "loadbalancer.conf";

/// One backend as configured: where it is and its base weight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendConfig {
    /// Base URL without a trailing slash, e.g. `http://localhost:8081`.
    pub url: String,
    /// Host part of the URL (a name or an IP literal; IPv6 without brackets).
    pub host: String,
    /// TCP port; 80 when the URL names none.
    pub port: u16,
    /// Base weight for the smooth weighted round-robin, 1..=1000. Default 1.
    pub weight: u32,
}

impl BackendConfig {
    /// Parses `http://host[:port]` plus a weight. Only plain `http` is supported: the balancer
    /// terminates client connections and speaks HTTP/1.1 to backends on a trusted network.
    pub fn parse(url: &str, weight: u32) -> Result<BackendConfig, String> {
        if let Some(rest) = url.strip_prefix("https://") {
            return Err(format!(
                "backend URL {url:?}: TLS backends are not supported: use http://{rest} if the \
                 backend also speaks plain HTTP, or put a TLS terminator in front of it (stunnel, \
                 nginx) and list that terminator's http:// address"
            ));
        }
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("backend URL {url:?} must start with http://"))?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() {
            return Err(format!("backend URL {url:?} has no host"));
        }
        if authority.contains('/') || authority.contains('?') || authority.contains('#') {
            return Err(format!(
                "backend URL {url:?} must not have a path: requests keep their own path"
            ));
        }
        if authority.contains('@') {
            return Err(format!("backend URL {url:?} must not contain user info"));
        }
        let (host, port) = split_host_port(authority)
            .ok_or_else(|| format!("backend URL {url:?} has a bad host or port"))?;
        if !(1..=1000).contains(&weight) {
            return Err(format!("weight {weight} is out of range 1..1000"));
        }
        let url = if authority.starts_with('[') {
            format!("http://[{host}]:{port}")
        } else {
            format!("http://{host}:{port}")
        };
        Ok(BackendConfig {
            url,
            host,
            port,
            weight,
        })
    }

    /// `host:port`, the name used in logs, status and metrics.
    pub fn name(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }
}

fn split_host_port(authority: &str) -> Option<(String, u16)> {
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => 80,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().ok()?),
        None => (authority, 80),
    };
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_');
    (valid && port != 0).then(|| (host.to_string(), port))
}

/// Active health checks (`health` key). Defaults: HAProxy's `inter 2s rise 2 fall 3` with GET /health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthConfig {
    /// Checks are on unless `health off`. Default on.
    pub enabled: bool,
    /// Path requested with GET. Default `/health`.
    pub path: String,
    /// Time between checks of one backend. Default 2 s.
    pub interval: Duration,
    /// A check slower than this fails. Default 1 s.
    pub timeout: Duration,
    /// Consecutive passes to become healthy. Default 2.
    pub rise: u32,
    /// Consecutive failures to become unhealthy. Default 3.
    pub fall: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            enabled: true,
            path: "/health".into(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
        }
    }
}

/// Circuit breaker (`breaker` key). Defaults: Envoy's `consecutive_5xx 5`, nginx's `fail_timeout 10s`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker. Default 5.
    pub failures: u32,
    /// First open period; doubles on each re-open. Default 10 s.
    pub cooldown: Duration,
    /// Cap for the doubling cooldown. Default 5 min.
    pub max_cooldown: Duration,
    /// Backend statuses that count as failures, besides transport errors and timeouts.
    /// Default 502, 503, 504.
    pub failure_statuses: Vec<u16>,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: 5,
            cooldown: Duration::from_secs(10),
            max_cooldown: Duration::from_secs(300),
            failure_statuses: vec![502, 503, 504],
        }
    }
}

/// The `timeouts` line: how long each wait may last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// `connect=`: opening a TCP connection to a backend. Default 2 s.
    pub connect: Duration,
    /// `response=`: a backend's response head, and each read of its body. Default 30 s.
    pub response: Duration,
    /// `send=`: each write of a request (head or body) to a backend; a backend that takes
    /// nothing for this long gets the request 504 and counts as failed. `None` (the default):
    /// the response timeout, as nginx's `proxy_send_timeout` and HAProxy's `timeout server`
    /// cover both directions.
    pub send: Option<Duration>,
    /// `client=`: a connection waiting for the first byte of a request (new or idle keep-alive),
    /// a request body pausing, a client taking nothing of an answer. Default 60 s.
    pub client: Duration,
    /// `head=`: from the first byte of a request head to its end; slower gets 408. Default 10 s
    /// (HAProxy `timeout http-request`).
    pub head: Duration,
    /// `body=`: from the end of a request's head to the end of its body while the poller
    /// buffers it; slower gets 408. Default 60 s.
    pub body: Duration,
    /// `queue=`: a complete request waiting for a worker; then 503. Default 5 s (HAProxy
    /// `timeout queue`).
    pub queue: Duration,
    /// `tunnel=`: a tunnel (a WebSocket, after `101 Switching Protocols`) passing no byte in
    /// either direction; then both sides are closed. Default 1 h (HAProxy `timeout tunnel`).
    pub tunnel: Duration,
}

impl Timeouts {
    /// The send timeout in force: `send=`, or the response timeout when it is not set.
    pub fn send_timeout(&self) -> Duration {
        self.send.unwrap_or(self.response)
    }
}

/// The front end's words of the `limits` line: how large a request head may be, and how many
/// connections may be open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadLimits {
    /// `max_request_line=`: longer gets 414. Default 8 KiB.
    pub max_request_line: usize,
    /// `max_head=`: larger gets 431. Default 16 KiB.
    pub max_head: usize,
    /// `max_headers=`: more fields get 431. Default 100.
    pub max_headers: usize,
    /// `max_connections=`: most client connections at once; `None` derives it from the
    /// descriptor limit (see [`crate::http::limits::default_max_connections`]).
    pub max_connections: Option<usize>,
    /// `tunnels=`: most tunnels (WebSockets) open at once; an upgrade past it gets 503 with
    /// `Retry-After`. Default 10 000.
    pub tunnels: usize,
}

/// The `retries` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retries {
    /// Extra attempts on other backends when that is safe. Default 2.
    pub count: u32,
    /// `budget=`: retries allowed, as a percentage of the requests of the last 10 s, besides a
    /// floor of 100 per 10 s; 0 turns retries off (see `balance/retry.rs`). Default 20.
    pub budget_percent: u32,
    /// `retry_timeouts=on`: retry an idempotent request on another backend after one timed out
    /// holding it. Default off, so a client waits at most one response timeout for an answer's
    /// head.
    pub on_timeout: bool,
}

/// The whole validated configuration. [`Config::default`] is what `cargo run` uses with no file.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Where clients connect. Default `0.0.0.0:8080`.
    pub listen: String,
    /// Admin listener (dashboard, status, metrics); `None` when `admin off`. Default `127.0.0.1:9090`.
    pub admin: Option<String>,
    /// Bearer token the admin listener requires; mandatory when it is bound off loopback.
    pub admin_token: Option<String>,
    /// Worker threads that forward requests. Default 64.
    pub workers: usize,
    /// Most requests waiting for a worker; beyond that, 503 at once. `None` (the default): one
    /// per connection, so a request waits up to `timeouts queue=` instead.
    pub queue: Option<usize>,
    /// The `timeouts` line.
    pub timeouts: Timeouts,
    /// The front end's part of the `limits` line (the filter's part is in [`Config::filter`]).
    pub limits: HeadLimits,
    /// `request_buffering on|off`: the poller reads each request body before a worker sees the
    /// request (on, the default), or a worker streams it from the client (off: a slow client
    /// then holds a worker). Like nginx's `proxy_request_buffering`.
    pub request_buffering: bool,
    /// `buffers memory= memory_total= temp_dir= temp_file= temp_total=`: what the buffers
    /// between clients and workers may hold (see [`BufferLimits`]).
    pub buffers: BufferLimits,
    /// The `retries` line.
    pub retries: Retries,
    /// `upgrade allow=websocket,...`: the protocols a client may switch to through the
    /// balancer (`Upgrade` tokens, compared without regard to case); `upgrade off` (empty):
    /// none. A request asking for another protocol is served as plain HTTP/1.1 (its `Upgrade`
    /// is removed as hop-by-hop). Default `websocket`.
    pub upgrade: Vec<String>,
    /// Active health checks.
    pub health: HealthConfig,
    /// Circuit breaker.
    pub breaker: BreakerConfig,
    /// Ramp-up time after a backend (re)joins; zero turns it off. Default 10 s.
    pub slow_start: Duration,
    /// `access_log on|off`: one line per request. Default on.
    pub access_log: bool,
    /// `access_log path=FILE`: the access log's file (absolute; reopened on SIGUSR1). `None`
    /// (the default): stderr, as log records on target `access`.
    pub access_log_path: Option<PathBuf>,
    /// `access_log format=plain|combined|json`. Default plain.
    pub access_log_format: AccessFormat,
    /// `explain on|off`: answer a request that carries `X-Balancer-Explain: 1` with a header of
    /// the same name saying why it went where it went, and keep the last decisions for the
    /// dashboard (see `src/explain.rs`). It shows backend names, weights and breaker states
    /// to clients. Default off; `--demo` turns it on.
    pub explain: bool,
    /// How long a graceful shutdown waits for in-flight requests. Default 10 s.
    pub drain_timeout: Duration,
    /// The backends, in order. Default `localhost:8081..8083`, weight 1.
    pub backends: Vec<BackendConfig>,
    /// Request filtering (allow/deny, rate limits, bans, request rules). Default: none.
    pub filter: FilterConfig,
    /// The file this came from, if any (reloads read it again).
    pub source: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        let front = Limits::default();
        Config {
            listen: "0.0.0.0:8080".into(),
            admin: Some("127.0.0.1:9090".into()),
            admin_token: None,
            workers: 64,
            queue: None,
            timeouts: Timeouts {
                connect: Duration::from_secs(2),
                response: Duration::from_secs(30),
                send: None,
                client: front.client_timeout,
                head: front.head_timeout,
                body: front.body_timeout,
                queue: front.queue_timeout,
                tunnel: front.tunnel_timeout,
            },
            limits: HeadLimits {
                max_request_line: front.max_request_line,
                max_head: front.max_head,
                max_headers: front.max_headers,
                max_connections: None,
                tunnels: front.max_tunnels,
            },
            request_buffering: front.request_buffering,
            buffers: BufferLimits::default(),
            retries: Retries {
                count: 2,
                budget_percent: 20,
                on_timeout: false,
            },
            upgrade: vec!["websocket".into()],
            health: HealthConfig::default(),
            breaker: BreakerConfig::default(),
            slow_start: Duration::from_secs(10),
            access_log: true,
            access_log_path: None,
            access_log_format: AccessFormat::Plain,
            explain: false,
            drain_timeout: Duration::from_secs(10),
            backends: (8081..=8083)
                .map(|p| BackendConfig::parse(&format!("http://localhost:{p}"), 1).unwrap())
                .collect(),
            filter: FilterConfig::default(),
            source: None,
        }
    }
}

/// A configuration problem, naming where it is: `file:line: problem`, or `--flag: problem`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, or `command line`.
    pub origin: String,
    /// 1-based line number in the file; 0 for flags and whole-file problems.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: {}", self.origin, self.line, self.message)
        } else {
            write!(f, "{}: {}", self.origin, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Whole-config rules that no single line can check.
    pub fn validate(&self) -> Result<(), String> {
        let limits = &self.limits;
        if limits.max_request_line > limits.max_head {
            return Err(format!(
                "limits: max_request_line ({}) must not be larger than max_head ({}): the request \
                 line is part of the head",
                format_size(limits.max_request_line as u64),
                format_size(limits.max_head as u64)
            ));
        }
        if let (Some(admin), None) = (&self.admin, &self.admin_token) {
            let loopback = admin
                .to_socket_addrs()
                .map(|mut a| a.all(|a: SocketAddr| a.ip().is_loopback()))
                .unwrap_or(false);
            if !loopback {
                return Err(format!(
                    "admin listener {admin} is not on loopback, so it needs a token: admin {admin} token=SECRET in the config file, or --admin-token SECRET"
                ));
            }
        }
        if self.backends.is_empty() {
            return Err("no backends configured".into());
        }
        if !self.buffers.temp_dir.is_dir() {
            return Err(format!(
                "buffers: temp_dir {} is not a directory",
                self.buffers.temp_dir.display()
            ));
        }
        self.filter.validate()?;
        Ok(())
    }
}

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
//! timeouts  connect=2s response=30s
//! backend   http://localhost:8081 weight=5
//! ```
//!
//! Every problem is reported as `file:line: problem` (see [`ConfigError`]). Flags override the file;
//! `--backend` on the command line replaces the file's backends.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::filter::{self, FilterConfig};
use crate::http::{BufferLimits, Limits};

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
    /// Time allowed to open a TCP connection to a backend. Default 2 s.
    pub connect_timeout: Duration,
    /// Time allowed for a backend's response head, and between reads of its body. Default 30 s.
    pub response_timeout: Duration,
    /// Most requests waiting for a worker; beyond that, 503 at once. `None` (the default): one
    /// per connection, so a request waits up to `queue_timeout` instead.
    pub queue: Option<usize>,
    /// Longest a client connection may wait for the first byte of a request (new or idle
    /// keep-alive), and longest one read of a request body or one write of an answer may
    /// stall. Default 60 s.
    pub client_timeout: Duration,
    /// Longest from the first byte of a request head to its end; slower gets 408. Default 10 s
    /// (HAProxy `timeout http-request`).
    pub head_timeout: Duration,
    /// Longest a complete request waits for a worker; then 503. Default 5 s (HAProxy
    /// `timeout queue`).
    pub queue_timeout: Duration,
    /// Longest from the end of a request's head to the end of its body while the poller
    /// buffers it; slower gets 408. Default 60 s.
    pub body_timeout: Duration,
    /// `request_buffering on|off`: the poller reads each request body before a worker sees the
    /// request (on, the default), or a worker streams it from the client (off: a slow client
    /// then holds a worker). Like nginx's `proxy_request_buffering`.
    pub request_buffering: bool,
    /// `buffers memory= memory_total= temp_dir= temp_file= temp_total=`: what the buffers
    /// between clients and workers may hold (see [`BufferLimits`]).
    pub buffers: BufferLimits,
    /// Longest request line; longer gets 414. Default 8 KiB.
    pub max_request_line: usize,
    /// Largest request head; larger gets 431. Default 16 KiB.
    pub max_head: usize,
    /// Most header fields in a request; more gets 431. Default 100.
    pub max_headers: usize,
    /// Most client connections at once; `None` derives it from the descriptor limit (see
    /// [`crate::http::limits::default_max_connections`]).
    pub max_connections: Option<usize>,
    /// Extra attempts on other backends when that is safe. Default 2.
    pub retries: u32,
    /// Retries allowed as a percentage of requests. Default 20.
    pub retry_budget_percent: u32,
    /// `retries ... retry_timeouts=on`: retry an idempotent request on another backend after
    /// one timed out holding it. Default off, so a client waits at most one response timeout
    /// for an answer's head.
    pub retry_timeouts: bool,
    /// Active health checks.
    pub health: HealthConfig,
    /// Circuit breaker.
    pub breaker: BreakerConfig,
    /// Ramp-up time after a backend (re)joins; zero turns it off. Default 10 s.
    pub slow_start: Duration,
    /// One info line per request on the `access` log target. Default on.
    pub access_log: bool,
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
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(30),
            client_timeout: front.client_timeout,
            head_timeout: front.head_timeout,
            queue_timeout: front.queue_timeout,
            body_timeout: front.body_timeout,
            request_buffering: front.request_buffering,
            buffers: BufferLimits::default(),
            max_request_line: front.max_request_line,
            max_head: front.max_head,
            max_headers: front.max_headers,
            max_connections: None,
            retries: 2,
            retry_budget_percent: 20,
            retry_timeouts: false,
            health: HealthConfig::default(),
            breaker: BreakerConfig::default(),
            slow_start: Duration::from_secs(10),
            access_log: true,
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

/// Parses a duration with a unit: `250ms`, `2s`, `1m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?}: expected a number and a unit (ms, s, m, h)"))?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => return Err(format!("bad duration {s:?}: unit must be ms, s, m or h")),
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("duration {s:?} is too large"))
}

/// Parses a size with a unit: `512B`, `8KiB`, `10MiB`, `1GiB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad size {s:?}: expected a number and a unit (B, KiB, MiB, GiB)"))?;
    let mult: u64 = match unit {
        "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(format!("bad size {s:?}: unit must be B, KiB, MiB or GiB")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Parses a whole number in `min..=max` (digits only: no sign); errors name `what`.
pub(crate) fn parse_count(s: &str, what: &str, min: u64, max: u64) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) && s.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!(
            "{what} must be a whole number in {min}..{max}, not {s:?}"
        )),
    }
}

fn parse_on_off(s: &str, what: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{what} must be on or off, not {s:?}")),
    }
}

/// Checks that a listen address has the `host:port` shape and resolves.
pub fn check_addr(s: &str) -> Result<String, String> {
    let resolves = s.to_socket_addrs().is_ok_and(|mut a| a.next().is_some());
    if resolves {
        Ok(s.to_string())
    } else {
        Err(format!(
            "bad address {s:?}: expected host:port, e.g. 0.0.0.0:8080"
        ))
    }
}

/// Splits `name=value` words; `allowed` lists the names this key takes. A name given twice, or
/// one not allowed, is an error.
pub(crate) fn pairs<'a>(
    words: &[&'a str],
    allowed: &[&str],
) -> Result<Vec<(&'a str, &'a str)>, String> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for w in words {
        let (k, v) = w
            .split_once('=')
            .ok_or_else(|| format!("expected name=value, found {w:?}"))?;
        if !allowed.contains(&k) {
            return Err(format!(
                "unknown option {k:?} (expected one of: {})",
                allowed.join(", ")
            ));
        }
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(format!("option {k:?} is given twice"));
        }
        out.push((k, v));
    }
    Ok(out)
}

/// Applies one settings line (`key words...`) to `config`. Shared by the file parser and the
/// tests; `seen` catches keys given twice.
fn apply_line(config: &mut Config, key: &str, words: &[&str]) -> Result<(), String> {
    let one = |what: &str| -> Result<&str, String> {
        match words {
            [w] => Ok(*w),
            _ => Err(format!("{what} takes exactly one value")),
        }
    };
    match key {
        "listen" => config.listen = check_addr(one("listen")?)?,
        "admin" => {
            let mut words = words.iter();
            let addr = words.next().ok_or("admin takes an address or off")?;
            config.admin = if *addr == "off" {
                None
            } else {
                Some(check_addr(addr)?)
            };
            let rest: Vec<&str> = words.copied().collect();
            for (k, v) in pairs(&rest, &["token"])? {
                if k == "token" {
                    if v.is_empty() {
                        return Err("token must not be empty".into());
                    }
                    config.admin_token = Some(v.to_string());
                }
            }
        }
        "workers" => config.workers = parse_count(one("workers")?, "workers", 1, 4096)? as usize,
        "queue" => {
            let w = one("queue")?;
            config.queue = if w == "off" {
                None
            } else {
                Some(parse_count(w, "queue", 1, 10_000_000)? as usize)
            };
        }
        "timeouts" => {
            if words.is_empty() {
                return Err(
                    "timeouts takes connect=, response=, client=, head=, body= and/or queue= \
                     durations"
                        .into(),
                );
            }
            let names = ["connect", "response", "client", "head", "body", "queue"];
            for (k, v) in pairs(words, &names)? {
                let d = parse_duration(v)?;
                if d.is_zero() {
                    return Err(format!("{k} timeout must be more than zero"));
                }
                match k {
                    "connect" => config.connect_timeout = d,
                    "response" => config.response_timeout = d,
                    "head" => config.head_timeout = d,
                    "body" => config.body_timeout = d,
                    "queue" => config.queue_timeout = d,
                    _ if d < Duration::from_secs(1) => {
                        return Err("client timeout must be at least 1s".into())
                    }
                    _ => config.client_timeout = d,
                }
            }
        }
        "limits" => {
            if words.is_empty() {
                return Err(format!(
                    "expected one or more of {}",
                    LIMITS.map(|k| format!("{k}=")).join(", ")
                ));
            }
            // Check every name against the whole list first, so the error lists them all.
            pairs(words, &LIMITS)?;
            let (front, filtering): (Vec<&str>, Vec<&str>) = words
                .iter()
                .partition(|w| FRONT_LIMITS.iter().any(|k| w.starts_with(&format!("{k}="))));
            for (k, v) in pairs(&front, &FRONT_LIMITS)? {
                match k {
                    "max_request_line" => {
                        config.max_request_line = parse_size_in(v, k, 256, 1 << 20)?
                    }
                    "max_head" => config.max_head = parse_size_in(v, k, 1 << 10, 1 << 20)?,
                    "max_headers" => {
                        config.max_headers = parse_count(v, "max_headers", 1, 1000)? as usize
                    }
                    _ => {
                        config.max_connections =
                            Some(parse_count(v, "max_connections", 1, 10_000_000)? as usize)
                    }
                }
            }
            if !filtering.is_empty() {
                config.filter.apply_line("limits", &filtering)?;
            }
        }
        "retries" => {
            let (n, rest) = words.split_first().ok_or("retries takes a count")?;
            config.retries = parse_count(n, "retries", 0, 10)? as u32;
            for (k, v) in pairs(rest, &["budget", "retry_timeouts"])? {
                if k == "retry_timeouts" {
                    config.retry_timeouts = parse_on_off(v, "retry_timeouts")?;
                    continue;
                }
                let pct = v
                    .strip_suffix('%')
                    .ok_or_else(|| format!("budget must be a percentage like 20%, not {v:?}"))?;
                config.retry_budget_percent = parse_count(pct, "budget", 0, 100)? as u32;
            }
        }
        "health" => {
            if words == ["off"] {
                config.health.enabled = false;
                return Ok(());
            }
            let h = &mut config.health;
            h.enabled = true;
            for (k, v) in pairs(words, &["path", "interval", "timeout", "rise", "fall"])? {
                match k {
                    "path" if v.starts_with('/') => h.path = v.to_string(),
                    "path" => return Err(format!("health path must start with /, not {v:?}")),
                    "interval" | "timeout" => {
                        let d = parse_duration(v)?;
                        if d.is_zero() {
                            return Err(format!("health {k} must be more than zero"));
                        }
                        if k == "interval" {
                            h.interval = d
                        } else {
                            h.timeout = d
                        }
                    }
                    "rise" => h.rise = parse_count(v, "rise", 1, 100)? as u32,
                    _ => h.fall = parse_count(v, "fall", 1, 100)? as u32,
                }
            }
        }
        "breaker" => {
            let b = &mut config.breaker;
            for (k, v) in pairs(words, &["failures", "cooldown", "max_cooldown", "statuses"])? {
                match k {
                    "failures" => b.failures = parse_count(v, "failures", 1, 1000)? as u32,
                    "cooldown" => b.cooldown = parse_duration(v)?,
                    "max_cooldown" => b.max_cooldown = parse_duration(v)?,
                    _ => {
                        b.failure_statuses = v
                            .split(',')
                            .map(|s| parse_count(s, "status", 100, 599).map(|n| n as u16))
                            .collect::<Result<_, _>>()?
                    }
                }
            }
            if b.max_cooldown < b.cooldown {
                return Err("max_cooldown must not be less than cooldown".into());
            }
        }
        "slow_start" => {
            let w = one("slow_start")?;
            config.slow_start = if w == "off" {
                Duration::ZERO
            } else {
                parse_duration(w)?
            };
        }
        "access_log" => config.access_log = parse_on_off(one("access_log")?, "access_log")?,
        "drain_timeout" => config.drain_timeout = parse_duration(one("drain_timeout")?)?,
        "request_buffering" => {
            config.request_buffering = parse_on_off(one("request_buffering")?, "request_buffering")?
        }
        "buffers" => {
            if words.is_empty() {
                return Err(format!(
                    "buffers takes one or more of {}",
                    BUFFERS.map(|k| format!("{k}=")).join(", ")
                ));
            }
            let b = &mut config.buffers;
            for (k, v) in pairs(words, &BUFFERS)? {
                match k {
                    "memory" => b.memory = parse_size_in(v, k, 1 << 10, 1 << 30)?,
                    "memory_total" => {
                        b.memory_total = parse_size_in(v, k, 1 << 10, 1 << 40)? as u64
                    }
                    "temp_file" => b.temp_file = parse_size_in(v, k, 0, 1 << 50)? as u64,
                    "temp_total" => b.temp_total = parse_size_in(v, k, 0, 1 << 50)? as u64,
                    _ => {
                        let dir = Path::new(v);
                        if !dir.is_absolute() {
                            return Err(format!("temp_dir must be an absolute path, not {v:?}"));
                        }
                        b.temp_dir = dir.to_path_buf();
                    }
                }
            }
        }
        "backend" => {
            let (url, rest) = words.split_first().ok_or("backend takes a URL")?;
            let mut weight = 1;
            for (_, v) in pairs(rest, &["weight"])? {
                weight = parse_count(v, "weight", 1, 1000)? as u32;
            }
            let b = BackendConfig::parse(url, weight)?;
            if config.backends.iter().any(|x| x.url == b.url) {
                return Err(format!("backend {} is listed twice", b.url));
            }
            config.backends.push(b);
        }
        k if filter::KEYS.contains(&k) => config.filter.apply_line(k, words)?,
        _ => return Err(format!("unknown setting {key:?}")),
    }
    Ok(())
}

/// Names the `limits` key takes: the front end's and the filter's.
const LIMITS: [&str; 7] = [
    "max_request_line",
    "max_head",
    "max_headers",
    "max_connections",
    "max_target",
    "max_body",
    "max_clients",
];

/// Of [`LIMITS`], the front end's.
const FRONT_LIMITS: [&str; 4] = [
    "max_request_line",
    "max_head",
    "max_headers",
    "max_connections",
];

/// Parses a size in `min..=max` bytes; errors name `what`.
fn parse_size_in(s: &str, what: &str, min: u64, max: u64) -> Result<usize, String> {
    let n = parse_size(s)?;
    if !(min..=max).contains(&n) {
        return Err(format!(
            "{what} must be between {min} and {max} bytes, not {s}"
        ));
    }
    Ok(n as usize)
}

/// The names the `buffers` line takes.
const BUFFERS: [&str; 5] = [
    "memory",
    "memory_total",
    "temp_dir",
    "temp_file",
    "temp_total",
];

/// Keys that may appear on more than one line.
const REPEATABLE: &[&str] = &["backend"];

impl Config {
    /// Parses config text. `origin` names the file in errors. Settings not in the text keep their
    /// defaults, except backends: a file that lists any replaces the default three.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Config::parse_noting_defaults(text, origin).map(|(config, _)| config)
    }

    /// [`Config::parse`], also telling whether the text listed no backend, so the default
    /// three were filled in.
    fn parse_noting_defaults(text: &str, origin: &str) -> Result<(Config, bool), ConfigError> {
        let mut config = Config::default();
        config.backends.clear();
        let mut seen: Vec<&str> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let err = |message: String| ConfigError {
                origin: origin.to_string(),
                line: i + 1,
                message,
            };
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let key = words.next().unwrap_or_default();
            let words: Vec<&str> = words.collect();
            if !REPEATABLE.contains(&key) && !filter::REPEATABLE.contains(&key) {
                if seen.contains(&key) {
                    return Err(err(format!("setting {key:?} is given twice")));
                }
                seen.push(key);
            }
            apply_line(&mut config, key, &words).map_err(|m| err(format!("{key}: {m}")))?;
        }
        let defaulted = config.backends.is_empty();
        if defaulted {
            config.backends = Config::default().backends;
        }
        config.validate().map_err(|message| ConfigError {
            origin: origin.to_string(),
            line: 0,
            message,
        })?;
        Ok((config, defaulted))
    }

    /// Reads and parses a config file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        Config::read_noting_defaults(path).map(|(config, _)| config)
    }

    fn read_noting_defaults(path: &Path) -> Result<(Config, bool), ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            line: 0,
            message: format!("cannot read: {e}"),
        })?;
        let (mut config, defaulted) = Config::parse_noting_defaults(&text, &origin)?;
        config.source = Some(path.to_path_buf());
        Ok((config, defaulted))
    }

    /// Whole-config rules that no single line can check.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_request_line > self.max_head {
            return Err(format!(
                "limits: max_request_line ({}) must not be larger than max_head ({}): the request \
                 line is part of the head",
                format_size(self.max_request_line as u64),
                format_size(self.max_head as u64)
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

/// Writes a duration in the largest unit that states it exactly: `250ms`, `2s`, `5m`, `1h`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    let units = [(3_600_000, "h"), (60_000, "m"), (1000, "s")];
    match units.iter().find(|(n, _)| ms > 0 && ms.is_multiple_of(*n)) {
        Some((n, unit)) => format!("{}{unit}", ms / n),
        None if ms == 0 => "0s".to_string(),
        None => format!("{ms}ms"),
    }
}

/// Writes a size in the largest unit that states it exactly: `512B`, `8KiB`, `10MiB`, `1GiB`.
pub fn format_size(n: u64) -> String {
    let units = [(30, "GiB"), (20, "MiB"), (10, "KiB")];
    units
        .iter()
        .find(|(shift, _)| n > 0 && n.is_multiple_of(1u64 << shift))
        .map_or_else(
            || format!("{n}B"),
            |(shift, u)| format!("{}{u}", n >> shift),
        )
}

/// The admin token as `--check` prints it: the secret itself stays out of terminals and CI logs.
pub const HIDDEN_TOKEN: &str = "********";

/// The configuration in the config-file grammar, one key per line, every setting spelled out
/// (filtering keys only when set). Parsing the text gives back the same configuration, except
/// the admin token, written as [`HIDDEN_TOKEN`]. This is what `loadbalancer --check` prints.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = |d: Duration| format_duration(d);
        let on_off = |b: bool| if b { "on" } else { "off" };
        writeln!(f, "listen        {}", self.listen)?;
        match (&self.admin, &self.admin_token) {
            (None, _) => writeln!(f, "admin         off")?,
            (Some(a), None) => writeln!(f, "admin         {a}")?,
            (Some(a), Some(_)) => writeln!(f, "admin         {a} token={HIDDEN_TOKEN}")?,
        }
        writeln!(f, "workers       {}", self.workers)?;
        match self.queue {
            Some(n) => writeln!(f, "queue         {n}")?,
            None => writeln!(f, "queue         off")?,
        }
        writeln!(
            f,
            "timeouts      connect={} response={} client={} head={} body={} queue={}",
            d(self.connect_timeout),
            d(self.response_timeout),
            d(self.client_timeout),
            d(self.head_timeout),
            d(self.body_timeout),
            d(self.queue_timeout)
        )?;
        let mut limits = vec![
            format!(
                "max_request_line={}",
                format_size(self.max_request_line as u64)
            ),
            format!("max_head={}", format_size(self.max_head as u64)),
            format!("max_headers={}", self.max_headers),
        ];
        if let Some(n) = self.max_connections {
            limits.push(format!("max_connections={n}"));
        }
        limits.extend(self.filter.limits_words());
        writeln!(f, "limits        {}", limits.join(" "))?;
        writeln!(
            f,
            "retries       {} budget={}% retry_timeouts={}",
            self.retries,
            self.retry_budget_percent,
            on_off(self.retry_timeouts)
        )?;
        let h = &self.health;
        if h.enabled {
            writeln!(
                f,
                "health        path={} interval={} timeout={} rise={} fall={}",
                h.path,
                d(h.interval),
                d(h.timeout),
                h.rise,
                h.fall
            )?;
        } else {
            writeln!(f, "health        off")?;
        }
        let b = &self.breaker;
        write!(
            f,
            "breaker       failures={} cooldown={} max_cooldown={}",
            b.failures,
            d(b.cooldown),
            d(b.max_cooldown)
        )?;
        let statuses: Vec<String> = b.failure_statuses.iter().map(u16::to_string).collect();
        if !statuses.is_empty() {
            write!(f, " statuses={}", statuses.join(","))?;
        }
        writeln!(f)?;
        if self.slow_start.is_zero() {
            writeln!(f, "slow_start    off")?;
        } else {
            writeln!(f, "slow_start    {}", d(self.slow_start))?;
        }
        writeln!(f, "request_buffering {}", on_off(self.request_buffering))?;
        let b = &self.buffers;
        writeln!(
            f,
            "buffers       memory={} memory_total={} temp_dir={} temp_file={} temp_total={}",
            format_size(b.memory as u64),
            format_size(b.memory_total),
            b.temp_dir.display(),
            format_size(b.temp_file),
            format_size(b.temp_total)
        )?;
        writeln!(f, "access_log    {}", on_off(self.access_log))?;
        writeln!(f, "drain_timeout {}", d(self.drain_timeout))?;
        write!(f, "{}", self.filter)?;
        for b in &self.backends {
            writeln!(f, "backend       {} weight={}", b.url, b.weight)?;
        }
        Ok(())
    }
}

/// What the command line asked for, besides the config.
#[derive(Debug, Default)]
pub struct Cli {
    /// The merged configuration.
    pub config: Config,
    /// `--demo`: also start demo backends for the configured localhost ports.
    pub demo: bool,
    /// `--help` was given: print [`USAGE`] and exit.
    pub help: bool,
    /// `--version` was given: print the version and exit.
    pub version: bool,
    /// `--check` was given: print the effective configuration and exit without binding anything.
    pub check: bool,
    /// The backends are the built-in defaults (`localhost:8081..8083`): neither a config file
    /// nor `--backend` named any. Worth a warning at start-up.
    pub default_backends: bool,
}

/// The `--help` text: every option with its default.
pub const USAGE: &str = "\
loadbalancer: a synchronous HTTP/1.1 load balancer

USAGE:
    loadbalancer [OPTIONS]
    loadbalancer --check [--config FILE] [OPTIONS]

OPTIONS:
    --config FILE            config file (default: ./loadbalancer.conf if it exists)
    --listen ADDR            client-facing address (default 0.0.0.0:8080)
    --backend URL[,weight=N] a backend, repeatable; replaces the file's backends
                             (default http://localhost:8081..8083, weight 1);
                             also --backend URL weight=N, as in the config file
    --workers N              worker threads (default 64)
    --queue N|off            most requests waiting for a worker before 503 at once
                             (default off: one per connection; each waits up to
                             `timeouts queue=`, default 5s)
    --connect-timeout DUR    backend connect timeout (default 2s)
    --response-timeout DUR   longest wait for a backend's answer; a timed-out request is
                             not retried (default 30s; config: retries retry_timeouts=on)
    --access-log on|off      one log line per request (default on)
    --admin ADDR|off         dashboard, /status, /metrics, /health (default 127.0.0.1:9090)
    --admin-token SECRET     token the admin listener requires (default none; needed off
                             loopback)
    --demo                   also run demo backends for localhost:8081.. backends
    --check                  print the effective configuration and exit: 0 when valid,
                             2 with file:line when not (binds nothing, like nginx -t)
    --version                print the version
    --help                   print this help

Durations take ms, s, m or h (e.g. 500ms, 2s). Logging follows RUST_LOG (default info).
Every setting, with the config file grammar, is documented in README.md.
";

/// The `--version` line: `loadbalancer X.Y.Z`.
pub fn version() -> String {
    format!("loadbalancer {}", env!("CARGO_PKG_VERSION"))
}

/// Parses command-line arguments (without the program name) into a [`Cli`]. The config file
/// (from `--config`, or `./loadbalancer.conf` when present) is read first, then flags override it.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Cli, ConfigError> {
    parse_args_in(args, Path::new("."))
}

/// Flags that take a value.
const VALUE_FLAGS: &[&str] = &[
    "--config",
    "--listen",
    "--backend",
    "--workers",
    "--queue",
    "--connect-timeout",
    "--response-timeout",
    "--access-log",
    "--admin",
    "--admin-token",
];

/// Parses a `--backend` value: the URL, then `weight=N` separated by a comma or blanks
/// (`URL,weight=2`, `"URL weight=2"`).
fn parse_backend_flag(value: &str) -> Result<BackendConfig, String> {
    let mut parts = value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty());
    let url = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    let mut weight = 1;
    for (_, v) in pairs(&rest, &["weight"])? {
        weight = parse_count(v, "weight", 1, 1000)? as u32;
    }
    BackendConfig::parse(url, weight)
}

/// [`parse_args`] with the directory in which the default config file is looked for.
pub fn parse_args_in<I: IntoIterator<Item = String>>(
    args: I,
    dir: &Path,
) -> Result<Cli, ConfigError> {
    let flag_err = |flag: &str, message: String| ConfigError {
        origin: flag.to_string(),
        line: 0,
        message,
    };
    let mut file: Option<PathBuf> = None;
    let mut flags: Vec<(String, String)> = Vec::new();
    let mut cli = Cli::default();
    let mut args = args.into_iter().peekable();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        match name.as_str() {
            "--help" | "-h" => cli.help = true,
            "--version" | "-V" => cli.version = true,
            "--check" => cli.check = true,
            "--demo" => cli.demo = true,
            flag if VALUE_FLAGS.contains(&flag) => {
                let mut value = match inline {
                    Some(v) => v,
                    None => args
                        .next()
                        .ok_or_else(|| flag_err(&name, "needs a value".into()))?,
                };
                // `--backend URL weight=N`, as the config file writes it.
                if name == "--backend" {
                    while let Some(w) = args.next_if(|a| a.starts_with("weight=")) {
                        value = format!("{value},{w}");
                    }
                }
                if name == "--config" {
                    file = Some(PathBuf::from(value));
                } else {
                    flags.push((name, value));
                }
            }
            _ => return Err(flag_err(&arg, "unknown option (see --help)".to_string())),
        }
    }
    if cli.help || cli.version {
        // Answered without reading a config file, which may be broken.
        return Ok(cli);
    }
    let default_file = dir.join(DEFAULT_CONFIG_FILE);
    let (mut config, file_defaulted) = match file {
        Some(f) => Config::read_noting_defaults(&f)?,
        None if default_file.is_file() => Config::read_noting_defaults(&default_file)?,
        None => (Config::default(), true),
    };
    let mut flag_backends = Vec::new();
    for (name, value) in flags {
        let e = |m: String| flag_err(&name, m);
        match name.as_str() {
            "--listen" => config.listen = check_addr(&value).map_err(e)?,
            "--backend" => {
                let b = parse_backend_flag(&value).map_err(e)?;
                if flag_backends.iter().any(|x: &BackendConfig| x.url == b.url) {
                    return Err(e(format!("backend {} is given twice", b.url)));
                }
                flag_backends.push(b);
            }
            "--workers" => {
                config.workers = parse_count(&value, "workers", 1, 4096).map_err(e)? as usize
            }
            "--queue" => {
                config.queue = if value == "off" {
                    None
                } else {
                    Some(parse_count(&value, "queue", 1, 10_000_000).map_err(e)? as usize)
                }
            }
            "--connect-timeout" | "--response-timeout" => {
                let d = parse_duration(&value).map_err(e)?;
                if d.is_zero() {
                    return Err(e("must be more than zero".into()));
                }
                if name == "--connect-timeout" {
                    config.connect_timeout = d
                } else {
                    config.response_timeout = d
                }
            }
            "--access-log" => config.access_log = parse_on_off(&value, "access-log").map_err(e)?,
            "--admin" => {
                config.admin = if value == "off" {
                    None
                } else {
                    Some(check_addr(&value).map_err(e)?)
                }
            }
            "--admin-token" if value.is_empty() => return Err(e("must not be empty".into())),
            "--admin-token" => config.admin_token = Some(value),
            _ => unreachable!("flag list above"),
        }
    }
    cli.default_backends = file_defaulted && flag_backends.is_empty();
    if !flag_backends.is_empty() {
        config.backends = flag_backends;
    }
    config
        .validate()
        .map_err(|m| flag_err("configuration", m))?;
    cli.config = config;
    Ok(cli)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text, "lb.conf").unwrap_err().to_string()
    }

    #[test]
    fn defaults_match_design() {
        let c = Config::default();
        assert_eq!(c.listen, "0.0.0.0:8080");
        assert_eq!(c.admin.as_deref(), Some("127.0.0.1:9090"));
        assert_eq!(c.backends.len(), 3);
        assert_eq!(c.backends[0].url, "http://localhost:8081");
        assert_eq!(c.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.response_timeout, Duration::from_secs(30));
        assert_eq!((c.health.rise, c.health.fall), (2, 3));
        assert_eq!(c.breaker.failures, 5);
    }

    #[test]
    fn parses_the_design_example() {
        let text = "\
listen    0.0.0.0:8080
admin     127.0.0.1:9090
workers   64
queue     1024
timeouts  connect=2s response=30s
retries   2 budget=20%
health    path=/health interval=2s timeout=1s rise=2 fall=3
breaker   failures=5 cooldown=10s max_cooldown=5m
slow_start 10s
access_log on
backend   http://localhost:8081 weight=1   # a comment
backend   http://localhost:8082 weight=5
";
        let c = Config::parse(text, "x").unwrap();
        assert_eq!(c.backends.len(), 2);
        assert_eq!(c.backends[1].weight, 5);
        assert_eq!(c.breaker.max_cooldown, Duration::from_secs(300));
        assert_eq!(c.retry_budget_percent, 20);
    }

    #[test]
    fn errors_name_file_line_and_problem() {
        assert_eq!(
            err("workers 4\n\nworkers 5\n"),
            "lb.conf:3: setting \"workers\" is given twice"
        );
        assert_eq!(
            err("# c\nfrobnicate 1\n"),
            "lb.conf:2: frobnicate: unknown setting \"frobnicate\""
        );
        assert!(err("timeouts connect=2x\n").starts_with("lb.conf:1: timeouts: bad duration"));
        assert!(err("backend ftp://x:1\n").starts_with("lb.conf:1: backend:"));
        assert!(err("backend http://a:1\nbackend http://a:1\n").starts_with("lb.conf:2:"));
        assert!(err("backend http://a:1 weight=0\n").contains("weight"));
        assert!(err("workers 0\n").starts_with("lb.conf:1: workers:"));
        assert!(err("listen nowhere\n").starts_with("lb.conf:1: listen: bad address"));
        assert!(err("timeouts connect=2s connect=3s\n").contains("twice"));
        assert!(err("health interval=0s\n").contains("more than zero"));
        assert!(err("admin 0.0.0.0:9090\n").contains("needs a token"));
        assert!(err("limits max_request_line=32KiB\n").contains("must not be larger than max_head"));
        assert!(err("limits max_head=100B\n").contains("max_head must be between"));
        assert!(err("timeouts head=0s\n").contains("head timeout must be more than zero"));
        assert!(err("queue 0\n").contains("queue must be a whole number"));
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("2").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("99999999999999999h").is_err());
        assert_eq!(parse_size("8KiB").unwrap(), 8192);
        assert_eq!(parse_size("10MiB").unwrap(), 10 << 20);
        assert!(parse_size("10MB").is_err());
    }

    #[test]
    fn backend_urls() {
        let b = BackendConfig::parse("http://localhost", 1).unwrap();
        assert_eq!((b.host.as_str(), b.port), ("localhost", 80));
        let b = BackendConfig::parse("http://[::1]:9000/", 2).unwrap();
        assert_eq!(
            (b.host.as_str(), b.port, b.url.as_str()),
            ("::1", 9000, "http://[::1]:9000")
        );
        assert!(BackendConfig::parse("http://a:1/path", 1).is_err());
        assert!(BackendConfig::parse("http://a:0", 1).is_err());
        assert!(BackendConfig::parse("http://a:99999", 1).is_err());
        assert!(BackendConfig::parse("http://", 1).is_err());
    }

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("lbcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("x.conf");
        std::fs::write(&file, "workers 8\nbackend http://a:1\nbackend http://b:2\n").unwrap();
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cli = parse_args_in(
            args(&[
                "--config",
                file.to_str().unwrap(),
                "--workers",
                "3",
                "--backend=http://c:3,weight=4",
            ]),
            &dir,
        )
        .unwrap();
        assert_eq!(cli.config.workers, 3);
        assert_eq!(cli.config.backends.len(), 1);
        assert_eq!(cli.config.backends[0].weight, 4);
        let e = parse_args_in(args(&["--workers", "x"]), &dir).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--workers: workers must be a whole number in 1..4096, not \"x\""
        );
        assert!(parse_args_in(args(&["--bogus"]), &dir).is_err());
        assert!(parse_args_in(args(&["--listen"]), &dir).is_err());
        // the default file in the working directory is used when present
        std::fs::write(dir.join(DEFAULT_CONFIG_FILE), "workers 9\n").unwrap();
        assert_eq!(parse_args_in(args(&[]), &dir).unwrap().config.workers, 9);
        std::fs::remove_dir_all(&dir).ok();
    }

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn retry_timeouts_is_off_by_default_and_set_on_the_retries_line() {
        assert!(!Config::default().retry_timeouts);
        let c = Config::parse("retries 2 budget=20% retry_timeouts=on\n", "x").unwrap();
        assert!(c.retry_timeouts);
        assert_eq!(c.retry_budget_percent, 20);
        assert!(err("retries 2 retry_timeouts=yes\n").contains("retry_timeouts must be on or off"));
    }

    #[test]
    fn the_printed_configuration_parses_back_to_the_same() {
        let text = "\
listen 127.0.0.1:8000
admin 127.0.0.1:9999
workers 7
queue 99
timeouts connect=250ms response=1500ms client=2m head=3s body=20s queue=750ms
request_buffering off
buffers memory=16KiB memory_total=1MiB temp_dir=/ temp_file=2MiB temp_total=8MiB
retries 3 budget=50% retry_timeouts=on
health path=/up interval=1h timeout=3s rise=4 fall=5
breaker failures=9 cooldown=1m max_cooldown=2h statuses=500,503
slow_start off
access_log off
drain_timeout 0s
deny 10.0.0.0/8 192.0.2.7 2001:db8::/32
allow 127.0.0.0/8 ::1
trusted_proxies 10.1.0.0/16
rate_limit rate=100/s burst=200
rate_limit rate=10/m path=/login
ban after=3 window=1m duration=10m
limits max_target=8KiB max_body=1000B max_clients=5000 max_head=32KiB max_connections=700
deny_method TRACE connect
deny_path /.git /admin
backend http://localhost:8081 weight=3
backend http://[::1]:9000
";
        let c = Config::parse(text, "x").unwrap();
        let printed = c.to_string();
        assert_eq!(Config::parse(&printed, "printed").unwrap(), c, "{printed}");
        assert!(printed.contains(
            "timeouts      connect=250ms response=1500ms client=2m head=3s body=20s queue=750ms"
        ));
        assert!(printed.contains("request_buffering off"));
        assert!(printed.contains(
            "buffers       memory=16KiB memory_total=1MiB temp_dir=/ temp_file=2MiB temp_total=8MiB"
        ));
        assert!(printed.contains(
            "limits        max_request_line=8KiB max_head=32KiB max_headers=100 \
             max_connections=700 max_target=8KiB max_body=1000B max_clients=5000"
        ));
        // The defaults print every setting, and parse back too.
        let d = Config::default();
        assert_eq!(Config::parse(&d.to_string(), "d").unwrap(), d);
        // The token is hidden.
        let mut t = d.clone();
        t.admin_token = Some("s3cret".into());
        assert!(!t.to_string().contains("s3cret"));
        assert!(t.to_string().contains("token=********"));
    }

    #[test]
    fn backend_flag_takes_the_weight_as_in_the_file() {
        let dir = std::env::temp_dir().join(format!("lbcfg-flags-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for form in [
            &["--backend", "http://a:1", "weight=3"][..],
            &["--backend", "http://a:1 weight=3"],
            &["--backend", "http://a:1,weight=3"],
            &["--backend=http://a:1", "weight=3"],
        ] {
            let cli = parse_args_in(args(form), &dir).unwrap();
            assert_eq!(cli.config.backends.len(), 1, "{form:?}");
            assert_eq!(cli.config.backends[0].weight, 3, "{form:?}");
            assert!(!cli.default_backends);
        }
        let e = parse_args_in(args(&["--backend", "http://a:1", "weight=0"]), &dir).unwrap_err();
        assert!(e.to_string().starts_with("--backend: weight"), "{e}");
        // No file and no --backend: the defaults, noted for the start-up warning.
        let cli = parse_args_in(args(&[]), &dir).unwrap();
        assert!(cli.default_backends);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn tls_backends_get_a_clear_refusal_in_the_file_and_on_the_command_line() {
        let e = err("workers 2\nbackend https://api.example:443\n");
        assert!(e.starts_with("lb.conf:2: backend:"), "{e}");
        assert!(e.contains("TLS backends are not supported"), "{e}");
        assert!(e.contains("http://api.example:443"), "{e}");
        let dir = std::env::temp_dir();
        let e = parse_args_in(args(&["--backend", "https://b:8443"]), &dir).unwrap_err();
        assert!(e.to_string().starts_with("--backend:"), "{e}");
        assert!(
            e.to_string().contains("TLS backends are not supported"),
            "{e}"
        );
    }

    #[test]
    fn admin_token_flag_allows_a_listener_off_loopback() {
        let dir = std::env::temp_dir().join(format!("lbcfg-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = parse_args_in(args(&["--admin", "0.0.0.0:9090"]), &dir).unwrap_err();
        assert!(e.to_string().contains("--admin-token SECRET"), "{e}");
        let cli = parse_args_in(
            args(&["--admin", "0.0.0.0:9090", "--admin-token", "s3cret"]),
            &dir,
        )
        .unwrap();
        assert_eq!(cli.config.admin_token.as_deref(), Some("s3cret"));
        assert!(parse_args_in(args(&["--admin-token="]), &dir).is_err());
        // --version and --help answer even when the config file is broken.
        std::fs::write(dir.join(DEFAULT_CONFIG_FILE), "workers zero\n").unwrap();
        assert!(parse_args_in(args(&["--version"]), &dir).unwrap().version);
        assert!(parse_args_in(args(&["--help"]), &dir).unwrap().help);
        assert!(parse_args_in(args(&[]), &dir).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn formats() {
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_size(10 << 20), "10MiB");
        assert_eq!(format_size(1000), "1000B");
        assert_eq!(format_size(0), "0B");
    }
}

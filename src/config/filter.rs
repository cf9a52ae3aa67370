//! The filtering keys of the config file: what they mean, their defaults, how their lines are
//! parsed and checked, and how `--check` prints them back.
//!
//! ```text
//! deny            10.0.0.0/8 192.0.2.7 2001:db8::/32
//! allow           127.0.0.0/8 ::1
//! trusted_proxies 10.0.0.0/8
//! rate_limit      rate=100/s burst=200
//! rate_limit      rate=10/s burst=20 path=/login
//! ban             after=5 window=1m duration=10m
//! limits          max_target=8KiB max_body=10MiB max_clients=100000
//! deny_method     TRACE CONNECT
//! deny_path       /.git /admin
//! ```
//!
//! The config parser hands each line of these keys ([`KEYS`]) to [`FilterConfig::apply_line`];
//! the result is a [`FilterConfig`], the settings the rest of the filter runs on. This file is
//! the grammar and nothing else: the runtime (the other files of `filter/`) reads a
//! `FilterConfig` and never a config line, and this file uses nothing of the runtime but the
//! address type [`Cidr`] (cidr.rs, which depends on nothing in the crate). It is the only file of
//! the filter that uses `crate::config` (its word parsers: `name=value` pairs, sizes, durations),
//! so the grammar can move next to the rest of the config as one file.
//!
//! Everything is checked here, once, when the file is read: a range with host bits set, a path
//! with `..` segments, two general rate limits, a `ban` without a `rate_limit`. The runtime
//! trusts what it is given (a `FilterConfig` built by hand is validated again by `Filter::new`,
//! which logs what is wrong).

use std::fmt;
use std::time::Duration;

use super::cidr::Cidr;
use super::shared::SharedConfig;
use super::words::{
    format_duration, format_size, pairs, parse_count, parse_duration, parse_on_off, parse_size,
};

/// Default cap on each client table (`limits max_clients=`).
pub const DEFAULT_MAX_CLIENTS: usize = 100_000;

/// Largest `ban after=`: a client's recent rate-limit refusals are remembered exactly (at most
/// `after + 1` timestamps each), so this bounds the memory of one hit window.
pub const MAX_BAN_AFTER: u32 = 100;

/// Largest rate count (`rate=N/s` or `N/m`) and burst.
const MAX_RATE: u64 = 1_000_000;

/// Largest `limits max_clients=`.
const MAX_CLIENTS_LIMIT: u64 = 100_000_000;

/// A rate: `count` requests per `per` (one second or one minute).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Requests allowed per `per`.
    pub count: u64,
    /// The period: 1 s for `N/s`, 60 s for `N/m`.
    pub per: Duration,
}

impl Rate {
    /// Parses `100/s` or `30/m`.
    pub fn parse(s: &str) -> Result<Rate, String> {
        let shape = || format!("rate must look like 100/s or 30/m, not {s:?}");
        let (n, unit) = s.split_once('/').ok_or_else(shape)?;
        let per = match unit {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            _ => return Err(shape()),
        };
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err(shape());
        }
        match n.parse::<u64>() {
            Ok(count) if (1..=MAX_RATE).contains(&count) => Ok(Rate { count, per }),
            _ => Err(format!(
                "rate {s:?} is out of range: the count must be 1..{MAX_RATE}"
            )),
        }
    }

    /// Time for one token to come back.
    pub fn interval(&self) -> Duration {
        let nanos = self.per.as_nanos() / self.count as u128;
        Duration::from_nanos(nanos.max(1) as u64)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = if self.per.as_secs() == 60 { "m" } else { "s" };
        write!(f, "{}/{unit}", self.count)
    }
}

/// One `rate_limit` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Tokens per period.
    pub rate: Rate,
    /// Bucket size: requests a client may send at once after being quiet. Default: the rate's
    /// count.
    pub burst: u64,
    /// The path prefix this rule is for (`None`: the general rule).
    pub path: Option<String>,
    /// `shared=on`: the bucket is kept in Redis for every balancer of the `shared` line
    /// (`filter/shared/`). Default off: each balancer keeps its own.
    pub shared: bool,
}

/// The `ban` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BanConfig {
    /// A client refused by the rate limit more than this many times within `window` is banned.
    /// Default 5, at most [`MAX_BAN_AFTER`].
    pub after: u32,
    /// Default 1 min.
    pub window: Duration,
    /// How long a ban lasts. Default 10 min.
    pub duration: Duration,
    /// `shared=on`: the rate-limit refusals are counted in Redis and a ban reaches every
    /// balancer of the `shared` line. Default off.
    pub shared: bool,
}

impl Default for BanConfig {
    fn default() -> Self {
        BanConfig {
            after: 5,
            window: Duration::from_secs(60),
            duration: Duration::from_secs(600),
            shared: false,
        }
    }
}

/// Filtering settings from the config file's filtering keys. The default filters nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct FilterConfig {
    /// `deny`: clients in these ranges get 403.
    pub deny: Vec<Cidr>,
    /// `allow`: when not empty, clients outside these ranges get 403.
    pub allow: Vec<Cidr>,
    /// `trusted_proxies`: peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<Cidr>,
    /// `rate_limit` lines: at most one without a path, at most one per path.
    pub rate_limits: Vec<RateLimit>,
    /// `ban`.
    pub ban: Option<BanConfig>,
    /// Longest request target accepted (`limits max_target=`); `None` for no limit.
    pub max_target: Option<u64>,
    /// Largest request body accepted (`limits max_body=`); `None` for no limit.
    pub max_body: Option<u64>,
    /// Cap on each client table (`limits max_clients=`). Default [`DEFAULT_MAX_CLIENTS`].
    pub max_clients: usize,
    /// `deny_method`: methods answered with 405 (compared ignoring case).
    pub deny_methods: Vec<String>,
    /// `deny_path`: path prefixes answered with 403, matched on whole path segments.
    pub deny_paths: Vec<String>,
    /// `shared`: the Redis server for the rules marked `shared=on`. Default none.
    pub shared: Option<SharedConfig>,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            deny: Vec::new(),
            allow: Vec::new(),
            trusted_proxies: Vec::new(),
            rate_limits: Vec::new(),
            ban: None,
            max_target: None,
            max_body: None,
            max_clients: DEFAULT_MAX_CLIENTS,
            deny_methods: Vec::new(),
            deny_paths: Vec::new(),
            shared: None,
        }
    }
}

/// Config keys this module parses.
pub const KEYS: &[&str] = &[
    "deny",
    "allow",
    "trusted_proxies",
    "rate_limit",
    "ban",
    "limits",
    "deny_method",
    "deny_path",
    "shared",
];

/// Of [`KEYS`], the ones that may appear on several lines.
pub const REPEATABLE: &[&str] = &[
    "deny",
    "allow",
    "trusted_proxies",
    "rate_limit",
    "deny_method",
    "deny_path",
];

/// A configured path prefix: starts with `/`, written decoded (no `%`), no `?`, `#`, `\`, empty,
/// `.` or `..` segments. A trailing `/` is dropped (`/admin/` means `/admin`).
fn parse_path_prefix(p: &str) -> Result<String, String> {
    if !p.starts_with('/') {
        return Err(format!("path must start with /, not {p:?}"));
    }
    if p.contains(['?', '#', '%', '\\']) {
        return Err(format!(
            "path {p:?} must be a plain decoded path: no ?, #, % escapes or backslashes"
        ));
    }
    let trimmed = p.trim_end_matches('/');
    if trimmed
        .split('/')
        .skip(1)
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(format!("path {p:?} must not have empty, . or .. segments"));
    }
    Ok(if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    })
}

/// True for an HTTP method token (RFC 9110 `tchar`s).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl FilterConfig {
    /// Applies one config line `key words...` (key is one of [`KEYS`]). Errors do not repeat the
    /// key: the config parser puts `file:line: key: ` in front.
    pub fn apply_line(&mut self, key: &str, words: &[&str]) -> Result<(), String> {
        match key {
            "deny" | "allow" | "trusted_proxies" => {
                if words.is_empty() {
                    return Err(
                        "expected one or more addresses or ranges, e.g. 10.0.0.0/8 192.0.2.7 2001:db8::/32"
                            .into(),
                    );
                }
                let list = match key {
                    "deny" => &mut self.deny,
                    "allow" => &mut self.allow,
                    _ => &mut self.trusted_proxies,
                };
                for w in words {
                    let c = Cidr::parse(w)?;
                    if !list.contains(&c) {
                        list.push(c);
                    }
                }
            }
            "rate_limit" => {
                let mut rate = None;
                let mut burst = None;
                let mut path = None;
                let mut shared = false;
                for (k, v) in pairs(words, &["rate", "burst", "path", "shared"])? {
                    match k {
                        "rate" => rate = Some(Rate::parse(v)?),
                        "burst" => burst = Some(parse_count(v, "burst", 1, MAX_RATE)?),
                        "shared" => shared = parse_on_off(v, "shared")?,
                        _ => path = Some(parse_path_prefix(v)?),
                    }
                }
                let rate = rate.ok_or("rate= is required, e.g. rate_limit rate=100/s burst=200")?;
                if let Some(old) = self.rate_limits.iter().find(|r| r.path == path) {
                    return Err(match &old.path {
                        None => "a general rate_limit (without path=) is already set; add path=/prefix for a stricter rule on part of the site".into(),
                        Some(p) => format!("a rate_limit for path={p} is already set"),
                    });
                }
                self.rate_limits.push(RateLimit {
                    rate,
                    burst: burst.unwrap_or(rate.count),
                    path,
                    shared,
                });
            }
            "ban" => {
                let mut ban = BanConfig::default();
                for (k, v) in pairs(words, &["after", "window", "duration", "shared"])? {
                    match k {
                        "shared" => ban.shared = parse_on_off(v, "shared")?,
                        "after" => {
                            ban.after = parse_count(v, "after", 1, MAX_BAN_AFTER as u64)? as u32
                        }
                        _ => {
                            let d = parse_duration(v)?;
                            if d.is_zero() {
                                return Err(format!("{k} must be more than zero"));
                            }
                            if k == "window" {
                                ban.window = d;
                            } else {
                                ban.duration = d;
                            }
                        }
                    }
                }
                self.ban = Some(ban);
            }
            "limits" => {
                if words.is_empty() {
                    return Err(
                        "expected max_target=SIZE, max_body=SIZE and/or max_clients=N".into(),
                    );
                }
                for (k, v) in pairs(words, &["max_target", "max_body", "max_clients"])? {
                    match k {
                        "max_target" => {
                            let n = parse_size(v)?;
                            if n == 0 {
                                return Err("max_target must be at least 1B".into());
                            }
                            self.max_target = Some(n);
                        }
                        "max_body" => self.max_body = Some(parse_size(v)?),
                        _ => {
                            self.max_clients =
                                parse_count(v, "max_clients", 1, MAX_CLIENTS_LIMIT)? as usize
                        }
                    }
                }
            }
            "deny_method" => {
                if words.is_empty() {
                    return Err("expected one or more methods, e.g. TRACE CONNECT".into());
                }
                for w in words {
                    if !is_token(w) {
                        return Err(format!("{w:?} is not a method name"));
                    }
                    let m = w.to_ascii_uppercase();
                    if !self.deny_methods.contains(&m) {
                        self.deny_methods.push(m);
                    }
                }
            }
            "deny_path" => {
                if words.is_empty() {
                    return Err("expected one or more path prefixes, e.g. /.git /admin".into());
                }
                for w in words {
                    let p = parse_path_prefix(w)?;
                    if !self.deny_paths.contains(&p) {
                        self.deny_paths.push(p);
                    }
                }
            }
            "shared" => self.shared = Some(SharedConfig::parse(words)?),
            _ => return Err(format!("unknown filtering key {key:?}")),
        }
        Ok(())
    }

    /// True when these settings refuse nothing (the filter then costs one atomic load).
    pub fn filters_nothing(&self) -> bool {
        self.deny.is_empty()
            && self.allow.is_empty()
            && self.rate_limits.is_empty()
            && self.max_target.is_none()
            && self.max_body.is_none()
            && self.deny_methods.is_empty()
            && self.deny_paths.is_empty()
    }

    /// Rules between lines that no single line can check. (`Config::validate` should call this.)
    pub fn validate(&self) -> Result<(), String> {
        if self.ban.is_some() && self.rate_limits.is_empty() {
            return Err(
                "ban needs a rate_limit: only rate-limited requests count towards a ban".into(),
            );
        }
        let shared_rule = self.rate_limits.iter().any(|r| r.shared);
        let shared_ban = self.ban.is_some_and(|b| b.shared);
        if (shared_rule || shared_ban) && self.shared.is_none() {
            return Err(
                "shared=on needs a shared line naming the Redis server, e.g. shared \
                        redis=redis://127.0.0.1:6379/0"
                    .into(),
            );
        }
        if shared_ban && !self.rate_limits.iter().all(|r| r.shared) {
            return Err(
                "ban shared=on counts the refusals of shared rate limits: add shared=on \
                        to every rate_limit line, or keep the ban local (without shared=on)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// The filtering keys that are set, one config line each, in the config-file grammar (nothing
/// for the default, which filters nothing). Parsing the lines gives back the same settings.
impl FilterConfig {
    /// This module's words of the `limits` line (`max_target=`, `max_body=`, `max_clients=`),
    /// the ones that differ from the defaults. The config prints the line, which it shares.
    pub fn limits_words(&self) -> Vec<String> {
        let mut limits = Vec::new();
        if let Some(n) = self.max_target {
            limits.push(format!("max_target={}", format_size(n)));
        }
        if let Some(n) = self.max_body {
            limits.push(format!("max_body={}", format_size(n)));
        }
        if self.max_clients != DEFAULT_MAX_CLIENTS {
            limits.push(format!("max_clients={}", self.max_clients));
        }
        limits
    }
}

/// The filtering keys in the config-file grammar, but for `limits` (see
/// [`FilterConfig::limits_words`]).
impl fmt::Display for FilterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |items: Vec<String>| items.join(" ");
        for (key, list) in [
            ("deny", &self.deny),
            ("allow", &self.allow),
            ("trusted_proxies", &self.trusted_proxies),
        ] {
            if !list.is_empty() {
                writeln!(
                    f,
                    "{key} {}",
                    join(list.iter().map(Cidr::to_string).collect())
                )?;
            }
        }
        if let Some(s) = &self.shared {
            writeln!(f, "{s}")?;
        }
        let shared = |on: bool| if on { " shared=on" } else { "" };
        for r in &self.rate_limits {
            write!(f, "rate_limit rate={} burst={}", r.rate, r.burst)?;
            if let Some(p) = &r.path {
                write!(f, " path={p}")?;
            }
            writeln!(f, "{}", shared(r.shared))?;
        }
        if let Some(b) = &self.ban {
            writeln!(
                f,
                "ban after={} window={} duration={}{}",
                b.after,
                format_duration(b.window),
                format_duration(b.duration),
                shared(b.shared)
            )?;
        }
        if !self.deny_methods.is_empty() {
            writeln!(f, "deny_method {}", join(self.deny_methods.clone()))?;
        }
        if !self.deny_paths.is_empty() {
            writeln!(f, "deny_path {}", join(self.deny_paths.clone()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn cfg(text: &str) -> FilterConfig {
        Config::parse(text, "t")
            .unwrap_or_else(|e| panic!("{e}"))
            .filter
    }

    fn err(text: &str) -> String {
        Config::parse(text, "lb.conf").unwrap_err().to_string()
    }

    #[test]
    fn parses_the_design_example() {
        let c = cfg("\
deny        10.0.0.0/8 192.0.2.7 2001:db8::/32     # 403
allow       127.0.0.0/8 ::1                        # once set, everyone else gets 403
trusted_proxies 10.0.0.0/8
rate_limit  rate=100/s burst=200
rate_limit  rate=10/s burst=20 path=/login
ban         after=5 window=1m duration=10m
limits      max_target=8KiB max_body=10MiB
deny_method TRACE CONNECT
deny_path   /.git /admin
");
        assert_eq!(c.deny.len(), 3);
        assert_eq!(
            c.allow,
            vec![
                Cidr::parse("127.0.0.0/8").unwrap(),
                Cidr::parse("::1").unwrap()
            ]
        );
        assert_eq!(c.trusted_proxies.len(), 1);
        assert_eq!(
            c.rate_limits,
            vec![
                RateLimit {
                    rate: Rate {
                        count: 100,
                        per: Duration::from_secs(1)
                    },
                    burst: 200,
                    path: None,
                    shared: false
                },
                RateLimit {
                    rate: Rate {
                        count: 10,
                        per: Duration::from_secs(1)
                    },
                    burst: 20,
                    path: Some("/login".into()),
                    shared: false
                },
            ]
        );
        assert_eq!(
            c.ban,
            Some(BanConfig {
                after: 5,
                window: Duration::from_secs(60),
                duration: Duration::from_secs(600),
                shared: false
            })
        );
        assert_eq!(c.max_target, Some(8192));
        assert_eq!(c.max_body, Some(10 << 20));
        assert_eq!(c.max_clients, DEFAULT_MAX_CLIENTS);
        assert_eq!(c.deny_methods, vec!["TRACE", "CONNECT"]);
        assert_eq!(c.deny_paths, vec!["/.git", "/admin"]);
        assert!(c.validate().is_ok());
        assert!(!c.filters_nothing());
        assert!(FilterConfig::default().filters_nothing());
        assert!(cfg("trusted_proxies 10.0.0.0/8\nlimits max_clients=5\n").filters_nothing());
        // lists accumulate over lines; defaults fill what is not given
        let c = cfg("deny 10.0.0.0/8\ndeny 192.0.2.0/24 10.0.0.0/8\nrate_limit rate=30/m\nban\n");
        assert_eq!(c.deny.len(), 2);
        assert_eq!(c.rate_limits[0].burst, 30);
        assert_eq!(c.rate_limits[0].rate.interval(), Duration::from_secs(2));
        assert_eq!(c.ban, Some(BanConfig::default()));
        assert_eq!(cfg("deny_path /admin/ /\n").deny_paths, vec!["/admin", "/"]);
        assert_eq!(cfg("deny_method trace\n").deny_methods, vec!["TRACE"]);
    }

    #[test]
    fn shared_rules_need_the_shared_line_and_print_back() {
        let c = cfg("\
shared     redis=redis://:pw@127.0.0.1:6390/2 fallback=open
rate_limit rate=10/s burst=10 shared=on
rate_limit rate=1/s path=/login shared=on
ban        after=2 shared=on
");
        assert!(c.rate_limits.iter().all(|r| r.shared));
        assert!(c.ban.unwrap().shared);
        let s = c.shared.clone().unwrap();
        assert_eq!((s.port, s.db, s.password.as_deref()), (6390, 2, Some("pw")));
        assert_eq!(s.at.as_deref(), Some("t:1"));
        let printed = c.to_string();
        assert!(
            printed.contains("rate_limit rate=10/s burst=10 shared=on\n"),
            "{printed}"
        );
        assert!(printed.contains("ban after=2 window=1m duration=10m shared=on\n"));
        assert!(printed.contains("shared redis=redis://:********@127.0.0.1:6390/2 prefix=lb: "));
        assert!(!printed.contains("pw@"));
        // a local ban over shared limits is fine; the other way round is not
        cfg("shared redis=redis://h\nrate_limit rate=1/s shared=on\nban\n");
        assert_eq!(
            err("rate_limit rate=1/s shared=on\n"),
            "lb.conf: shared=on needs a shared line naming the Redis server, e.g. shared \
             redis=redis://127.0.0.1:6379/0"
        );
        assert!(
            err("shared redis=redis://h\nrate_limit rate=1/s\nban shared=on\n")
                .contains("add shared=on to every rate_limit line")
        );
        assert!(err("rate_limit rate=1/s shared=yes\n").contains("shared must be on or off"));
        assert_eq!(
            err("shared redis=http://127.0.0.1:6379\n"),
            "lb.conf:1: shared: the Redis URL must start with redis://, not http://, e.g. \
             redis://127.0.0.1:6379/0"
        );
        assert!(err("shared redis=redis://h\nshared redis=redis://h\n").contains("given twice"));
    }

    #[test]
    fn config_errors_are_clear() {
        assert_eq!(
            err("deny 10.0.0.0/33\n"),
            "lb.conf:1: deny: bad address or range \"10.0.0.0/33\""
        );
        assert!(err("allow\n").starts_with("lb.conf:1: allow: expected one or more addresses"));
        assert!(err("trusted_proxies 10.0.0.1/8\n").contains("did you mean 10.0.0.0/8?"));
        assert!(err("rate_limit rate=fast\n")
            .starts_with("lb.conf:1: rate_limit: rate must look like 100/s or 30/m"));
        assert!(err("rate_limit rate=10/h\n").contains("rate must look like 100/s or 30/m"));
        assert!(err("rate_limit rate=0/s\n").contains("out of range"));
        assert_eq!(
            err("rate_limit rate=1/s colour=red\n"),
            "lb.conf:1: rate_limit: unknown option \"colour\" (expected one of: rate, burst, path, shared)"
        );
        assert!(err("rate_limit burst=5\n").contains("rate= is required"));
        assert!(err("rate_limit rate=1/s burst=0\n").contains("burst must be a whole number"));
        assert!(err("rate_limit rate=1/s path=login\n").contains("path must start with /"));
        assert!(err("rate_limit rate=1/s path=/a/../b\n").contains(".. segments"));
        assert!(err("rate_limit rate=1/s rate=2/s\n").contains("given twice"));
        assert!(
            err("rate_limit rate=1/s\nrate_limit rate=2/s\n").starts_with(
                "lb.conf:2: rate_limit: a general rate_limit (without path=) is already set"
            )
        );
        assert_eq!(
            err("rate_limit rate=1/s path=/login\nrate_limit rate=2/s path=/login/\n"),
            "lb.conf:2: rate_limit: a rate_limit for path=/login is already set"
        );
        assert_eq!(
            err("rate_limit rate=1/s\nban\nban\n"),
            "lb.conf:3: setting \"ban\" is given twice"
        );
        assert!(err("ban after=0\n").contains("after must be a whole number in 1..100"));
        assert!(err("ban window=0s\n").contains("window must be more than zero"));
        assert!(err("ban duration=10\n").starts_with("lb.conf:1: ban: bad duration"));
        assert!(err("ban forever=1\n").contains("unknown option \"forever\""));
        assert!(err("limits max_target=8KB\n").starts_with("lb.conf:1: limits: bad size"));
        assert!(err("limits max_target=0B\n").contains("at least 1B"));
        assert!(err("limits max_clients=0\n").contains("max_clients must be a whole number"));
        assert!(err("limits\n").contains("expected one or more of max_request_line=, "));
        assert!(err("limits\n").contains("max_target="));
        assert!(err("limits max_body=1KiB\nlimits max_target=1KiB\n").contains("given twice"));
        assert!(err("deny_method G@T\n").contains("\"G@T\" is not a method name"));
        assert!(err("deny_method\n").contains("expected one or more methods"));
        assert!(err("deny_path admin\n").contains("path must start with /, not \"admin\""));
        assert!(err("deny_path /a?b\n").contains("plain decoded path"));
        assert!(err("deny_path /%2e\n").contains("plain decoded path"));
        assert_eq!(
            err("ban\n"),
            "lb.conf: ban needs a rate_limit: only rate-limited requests count towards a ban"
        );
    }
}

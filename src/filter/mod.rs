//! Request filtering on the poller thread, before a request takes a worker: allow/deny lists,
//! per-client rate limits, automatic bans, and request rules (method, path, target length, body
//! size).
//!
//! # Who is the client
//!
//! Every rule is about the *client address*: the TCP peer (`head.client`), unless the peer is in
//! `trusted_proxies`. Then `X-Forwarded-For` is believed, read from the right (the entries
//! appended last, by the proxies nearest to us): the client is the right-most address that is not
//! itself a trusted proxy. If every entry is a trusted proxy, the left-most one is the client; an
//! entry that is not an address stops the walk and the last good address is the client. A peer
//! that is not trusted cannot escape a rule by sending its own `X-Forwarded-For`.
//! IPv4-mapped IPv6 addresses (`::ffff:10.1.2.3`) are treated as the IPv4 address they carry.
//!
//! # Order of checks
//!
//! Cheapest and most decisive first; the first rule that refuses answers:
//!
//! | step | rule | answer | counted as |
//! | --- | --- | --- | --- |
//! | 1 | `deny` / `allow` | 403 | `denied` |
//! | 2 | current ban | 403 | `banned` |
//! | 3 | `deny_method` | 405 | `method` |
//! | 4 | `limits max_target` | 414 | `target_too_long` |
//! | 5 | `deny_path` | 403 | `path` |
//! | 6 | `limits max_body` (Content-Length) | 413 | `body_too_large` |
//! | 7 | `rate_limit` | 429 + Retry-After | `rate_limited` |
//!
//! A request refused at an earlier step takes no token from its rate-limit bucket, and only
//! rate-limit refusals count towards a ban.
//!
//! # Cost
//!
//! [`Filter::check`] runs on the single poller thread for every request. With no filtering keys
//! configured it loads one atomic flag and returns: no lock, no allocation. Otherwise it takes one
//! short `parking_lot` mutex (settings, client tables and bans live behind the same lock) and, with
//! a rate limit, does one `HashMap` lookup. Address lists are parsed once at config time into
//! `(network, prefix)` integers; long lists are grouped by prefix length into hash sets so a
//! lookup costs one hash probe per distinct prefix length. Refusals allocate their answer after
//! the lock is released.
//!
//! # Bounded memory
//!
//! Each client table (token buckets, rate-limit hit windows, bans) holds at most
//! `limits max_clients=N` entries (default [`DEFAULT_MAX_CLIENTS`]). Nothing is done until an
//! insert finds a table full; then one sweep drops the entries that carry no information any
//! more (a bucket that has refilled completely, a hit window whose last hit is older than the
//! window) and, if that frees less than an eighth of the table, the least recently active ones
//! until an eighth is free. A dropped client starts again with a full bucket and a clean hit
//! count, exactly like a client never seen: eviction can only make the filter more lenient,
//! never refuse anyone wrongly. A sweep is O(cap) and happens at most once per cap/8 new
//! clients, so the cost per request is amortised O(1). The ban table, when full of live bans,
//! ends the ban that would end soonest to make room for a new one.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::config::{pairs, parse_count, parse_duration, parse_size};
use crate::http::{Framing, Refusal, RequestHead};

mod bans;
mod cidr;
mod client;
mod path;
mod rate_limit;
mod stats;
mod table;

pub use cidr::Cidr;
pub use stats::FilterStats;

use bans::Bans;
use cidr::IpSet;
use client::client_of;
use path::{normalize_path, path_of, segment_prefix};
use rate_limit::{Buckets, RateRules};
use stats::{ceil_secs, Reason, Refused};

/// Default cap on each client table (`limits max_clients=`).
pub const DEFAULT_MAX_CLIENTS: usize = 100_000;

/// Largest `ban after=`: a client's recent rate-limit refusals are remembered exactly (at most
/// `after + 1` timestamps each), so this bounds the memory of one hit window.
pub const MAX_BAN_AFTER: u32 = 100;

/// Largest rate count (`rate=N/s` or `N/m`) and burst.
const MAX_RATE: u64 = 1_000_000;

/// Largest `limits max_clients=`.
const MAX_CLIENTS_LIMIT: u64 = 100_000_000;

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

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
}

impl Default for BanConfig {
    fn default() -> Self {
        BanConfig {
            after: 5,
            window: Duration::from_secs(60),
            duration: Duration::from_secs(600),
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
                for (k, v) in pairs(words, &["rate", "burst", "path"])? {
                    match k {
                        "rate" => rate = Some(Rate::parse(v)?),
                        "burst" => burst = Some(parse_count(v, "burst", 1, MAX_RATE)?),
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
                });
            }
            "ban" => {
                let mut ban = BanConfig::default();
                for (k, v) in pairs(words, &["after", "window", "duration"])? {
                    match k {
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
        Ok(())
    }
}

/// The filtering keys that are set, one config line each, in the config-file grammar (nothing
/// for the default, which filters nothing). Parsing the lines gives back the same settings.
impl FilterConfig {
    /// This module's words of the `limits` line (`max_target=`, `max_body=`, `max_clients=`),
    /// the ones that differ from the defaults. The config prints the line, which it shares.
    pub fn limits_words(&self) -> Vec<String> {
        use crate::config::format_size;
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
        use crate::config::format_duration;
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
        for r in &self.rate_limits {
            write!(f, "rate_limit rate={} burst={}", r.rate, r.burst)?;
            match &r.path {
                Some(p) => writeln!(f, " path={p}")?,
                None => writeln!(f)?,
            }
        }
        if let Some(b) = &self.ban {
            writeln!(
                f,
                "ban after={} window={} duration={}",
                b.after,
                format_duration(b.window),
                format_duration(b.duration)
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

// ---------------------------------------------------------------------------------------------
// The filter
// ---------------------------------------------------------------------------------------------

/// The settings compiled for checking.
#[derive(Debug)]
struct Rules {
    filters: bool,
    deny: IpSet,
    allow: IpSet,
    trusted: IpSet,
    methods: Vec<String>,
    max_target: Option<u64>,
    deny_paths: Vec<String>,
    max_body: Option<u64>,
    rate: RateRules,
    ban: Option<BanConfig>,
}

impl Rules {
    fn new(c: &FilterConfig) -> Rules {
        Rules {
            filters: !c.filters_nothing(),
            deny: IpSet::new(&c.deny),
            allow: IpSet::new(&c.allow),
            trusted: IpSet::new(&c.trusted_proxies),
            methods: c.deny_methods.clone(),
            max_target: c.max_target,
            deny_paths: c.deny_paths.clone(),
            max_body: c.max_body,
            rate: RateRules::new(&c.rate_limits),
            ban: c.ban,
        }
    }

    fn needs_path(&self) -> bool {
        !self.deny_paths.is_empty() || self.rate.has_path_rules()
    }
}

/// A refusal decided under the lock; turned into a [`Refusal`] after it is released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Verdict {
    reason: Reason,
    retry_after: Option<u32>,
}

impl Verdict {
    fn of(reason: Reason) -> Verdict {
        Verdict {
            reason,
            retry_after: None,
        }
    }

    fn refusal(self) -> Refusal {
        let (status, text) = self.reason.answer();
        let refusal = match self.retry_after {
            Some(s) => Refusal::retry_after(status, text, s),
            None => Refusal::new(status, text),
        };
        refusal.coded(self.reason.name())
    }
}

/// Everything behind the filter's one lock.
#[derive(Debug)]
struct Inner {
    config: FilterConfig,
    rules: Rules,
    /// Token buckets by (client, rate rule id).
    buckets: Buckets,
    /// Rate-limit hit windows and bans.
    bans: Bans,
}

/// The filter's live state (client tables, bans) and its current settings.
#[derive(Debug)]
pub struct Filter {
    /// False when there is nothing to check (no filtering settings and no bans): `check` is then
    /// one atomic load.
    active: AtomicBool,
    /// `max_body` for the streaming check, `u64::MAX` for none (read by every worker).
    max_body: AtomicU64,
    refused: Refused,
    inner: Mutex<Inner>,
}

impl Default for Filter {
    fn default() -> Self {
        Filter::new(FilterConfig::default())
    }
}

impl Filter {
    /// A filter with `config`.
    pub fn new(config: FilterConfig) -> Filter {
        if let Err(e) = config.validate() {
            log::warn!("filter: {e}");
        }
        let rules = Rules::new(&config);
        Filter {
            active: AtomicBool::new(rules.filters),
            max_body: AtomicU64::new(config.max_body.unwrap_or(u64::MAX)),
            refused: Default::default(),
            inner: Mutex::new(Inner {
                buckets: Buckets::new(config.max_clients),
                bans: Bans::new(config.max_clients),
                rules,
                config,
            }),
        }
    }

    /// Replaces the settings (reload); bans and client tables are kept. Buckets follow their
    /// rule by path, so a client's `/login` bucket survives a reordering of the `rate_limit`
    /// lines; buckets of removed rules, and all hit windows when `ban` is removed, are dropped.
    /// Bans run to their end even if `ban` is gone from the new settings.
    pub fn reconfigure(&self, config: FilterConfig) {
        if let Err(e) = config.validate() {
            log::warn!("filter: {e}");
        }
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        inner
            .buckets
            .follow_rules(&inner.config.rate_limits, &config.rate_limits);
        if config.ban.is_none() {
            inner.bans.forget_hits();
        }
        inner.buckets.set_max_clients(config.max_clients);
        inner.bans.set_max_clients(config.max_clients);
        inner.rules = Rules::new(&config);
        inner.config = config;
        self.max_body
            .store(inner.config.max_body.unwrap_or(u64::MAX), Ordering::Relaxed);
        self.update_active(inner);
    }

    /// The settings in force.
    pub fn config(&self) -> FilterConfig {
        self.inner.lock().config.clone()
    }

    fn update_active(&self, inner: &Inner) {
        let want = inner.rules.filters || !inner.bans.is_empty();
        if self.active.load(Ordering::Relaxed) != want {
            self.active.store(want, Ordering::Release);
        }
    }

    /// Decides whether a request may go on. `head.client` is the TCP peer; see the module
    /// documentation for who the client is and the order of the checks.
    pub fn check(&self, head: &RequestHead, framing: Framing, now: Instant) -> Result<(), Refusal> {
        if !self.active.load(Ordering::Acquire) {
            return Ok(());
        }
        let verdict = {
            let mut inner = self.inner.lock();
            let verdict = inner.check(head, framing, now);
            // Bans may have started or ended; with no other settings they alone keep the
            // filter active.
            self.update_active(&inner);
            verdict
        };
        verdict.map_err(|v| {
            self.refused.count(v.reason);
            log::debug!(
                "refused {} {} from {}: {}",
                head.method,
                head.target,
                head.client,
                v.reason.name()
            );
            v.refusal()
        })
    }

    /// The body size limit in force, if any; chunked bodies are cut off there while streaming.
    pub fn max_body(&self) -> Option<u64> {
        match self.max_body.load(Ordering::Relaxed) {
            u64::MAX => None,
            n => Some(n),
        }
    }

    /// Counts a body refused with 413 while streaming (a chunked body that grew past
    /// [`Filter::max_body`]), so [`FilterStats`] shows it under `body_too_large`.
    pub fn note_body_too_large(&self) {
        self.refused.count(Reason::BodyTooLarge);
    }

    /// Counters and bans for status and metrics. Also notices (and logs) bans that have ended.
    pub fn stats(&self, now: Instant) -> FilterStats {
        let mut inner = self.inner.lock();
        inner.bans.expire(now);
        self.update_active(&inner);
        FilterStats {
            refused: self.refused.by_reason(),
            bans: inner.bans.seconds_left(now),
            tracked: inner.buckets.map.len() + inner.bans.hits.map.len(),
            bans_started: inner.bans.started,
        }
    }
}

impl Inner {
    fn check(&mut self, head: &RequestHead, framing: Framing, now: Instant) -> Result<(), Verdict> {
        let rules = &self.rules;
        let client = client_of(head, &rules.trusted);
        // 1. deny / allow
        if rules.deny.contains(client) || (!rules.allow.is_empty() && !rules.allow.contains(client))
        {
            return Err(Verdict::of(Reason::Denied));
        }
        // 2. ban
        if self.bans.is_banned(client, now) {
            return Err(Verdict::of(Reason::Banned));
        }
        // 3. method
        if rules
            .methods
            .iter()
            .any(|m| m.eq_ignore_ascii_case(&head.method))
        {
            return Err(Verdict::of(Reason::Method));
        }
        // 4. target length
        if rules
            .max_target
            .is_some_and(|max| head.target.len() as u64 > max)
        {
            return Err(Verdict::of(Reason::TargetTooLong));
        }
        // 5. path
        let path = rules
            .needs_path()
            .then(|| normalize_path(path_of(&head.target)));
        if let Some(path) = &path {
            if rules
                .deny_paths
                .iter()
                .any(|p| segment_prefix(path, p.as_bytes()))
            {
                return Err(Verdict::of(Reason::Path));
            }
        }
        // 6. body size (declared; chunked bodies are cut off while streaming)
        if let (Framing::Length(n), Some(max)) = (framing, rules.max_body) {
            if n > max {
                return Err(Verdict::of(Reason::BodyTooLarge));
            }
        }
        // 7. rate limit
        let Some(rule) = rules.rate.bucket_for(path.as_deref()) else {
            return Ok(());
        };
        let wait = match self.buckets.take(client, rule, now) {
            Ok(()) => return Ok(()),
            Err(wait) => wait,
        };
        if let Some(ban) = rules.ban {
            if self.bans.note_hit(client, now, &ban) {
                self.bans.start(client, now, &ban);
                // Dropping the client's buckets frees memory; after the ban it starts with a
                // full bucket.
                self.buckets.forget(client, &self.rules.rate);
                return Err(Verdict::of(Reason::Banned));
            }
        }
        Err(Verdict {
            reason: Reason::RateLimited,
            retry_after: Some(ceil_secs(wait).clamp(1, u32::MAX as u64) as u32),
        })
    }
}

/// Helpers shared by the tests of this module and its files: requests, config lines, answers.
#[cfg(test)]
pub(crate) mod testing {
    use std::net::IpAddr;
    use std::time::{Duration, Instant};

    use super::{Filter, FilterConfig};
    use crate::config::Config;
    use crate::http::{Framing, RequestHead};

    pub(crate) fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    pub(crate) fn cfg(text: &str) -> FilterConfig {
        Config::parse(text, "t")
            .unwrap_or_else(|e| panic!("{e}"))
            .filter
    }

    pub(crate) fn err(text: &str) -> String {
        Config::parse(text, "lb.conf").unwrap_err().to_string()
    }

    pub(crate) fn req(
        client: &str,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
    ) -> RequestHead {
        RequestHead {
            method: method.into(),
            target: target.into(),
            http10: false,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
            client: ip(client),
        }
    }

    pub(crate) fn get(client: &str, target: &str) -> RequestHead {
        req(client, "GET", target, &[])
    }

    /// The status of checking `head` (200 when allowed) and its Retry-After.
    pub(crate) fn status(
        f: &Filter,
        head: &RequestHead,
        framing: Framing,
        now: Instant,
    ) -> (u16, Option<u32>) {
        match f.check(head, framing, now) {
            Ok(()) => (200, None),
            Err(r) => (r.status, r.retry_after),
        }
    }

    pub(crate) fn code(f: &Filter, head: &RequestHead, now: Instant) -> u16 {
        status(f, head, Framing::None, now).0
    }

    pub(crate) fn refused(f: &Filter, now: Instant, reason: &str) -> u64 {
        f.stats(now)
            .refused
            .iter()
            .find(|(r, _)| *r == reason)
            .unwrap()
            .1
    }

    pub(crate) fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    // ---- config -------------------------------------------------------------------------------

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
                    path: None
                },
                RateLimit {
                    rate: Rate {
                        count: 10,
                        per: Duration::from_secs(1)
                    },
                    burst: 20,
                    path: Some("/login".into())
                },
            ]
        );
        assert_eq!(
            c.ban,
            Some(BanConfig {
                after: 5,
                window: Duration::from_secs(60),
                duration: Duration::from_secs(600)
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
            "lb.conf:1: rate_limit: unknown option \"colour\" (expected one of: rate, burst, path)"
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

    // ---- no settings --------------------------------------------------------------------------

    #[test]
    fn no_settings_filter_nothing() {
        let f = Filter::default();
        let t = Instant::now();
        assert!(!f.active.load(Ordering::Relaxed));
        let h = req(
            "10.0.0.1",
            "TRACE",
            &format!("/{}", "a".repeat(100_000)),
            &[],
        );
        assert_eq!(status(&f, &h, Framing::Length(u64::MAX - 1), t).0, 200);
        assert_eq!(f.max_body(), None);
        let s = f.stats(t);
        assert!(s.refused.iter().all(|(_, n)| *n == 0));
        assert_eq!(s.refused.len(), 7);
        assert!(s.bans.is_empty());
    }

    // ---- request rules ------------------------------------------------------------------------

    #[test]
    fn methods_targets_and_bodies() {
        let f = Filter::new(cfg(
            "deny_method TRACE CONNECT\nlimits max_target=16B max_body=1KiB\n",
        ));
        let t = Instant::now();
        assert_eq!(code(&f, &req("10.0.0.1", "TRACE", "/", &[]), t), 405);
        assert_eq!(code(&f, &req("10.0.0.1", "trace", "/", &[]), t), 405);
        assert_eq!(code(&f, &req("10.0.0.1", "TRACEX", "/", &[]), t), 200);
        assert_eq!(code(&f, &get("10.0.0.1", "/0123456789abcde"), t), 200); // 16 bytes
        assert_eq!(code(&f, &get("10.0.0.1", "/0123456789abcdef"), t), 414); // 17 bytes
        let post = req("10.0.0.1", "POST", "/", &[]);
        assert_eq!(status(&f, &post, Framing::Length(1024), t).0, 200);
        assert_eq!(status(&f, &post, Framing::Length(1025), t).0, 413);
        // chunked bodies are left to the streaming check
        assert_eq!(status(&f, &post, Framing::Chunked, t).0, 200);
        assert_eq!(f.max_body(), Some(1024));
        f.note_body_too_large();
        let s = f.stats(t);
        assert_eq!(
            s.refused,
            vec![
                ("denied", 0),
                ("banned", 0),
                ("method", 2),
                ("target_too_long", 1),
                ("path", 0),
                ("body_too_large", 2),
                ("rate_limited", 0)
            ]
        );
    }

    #[test]
    fn checks_run_in_order() {
        let f = Filter::new(cfg("\
deny 192.0.2.0/24
rate_limit rate=1/m burst=1
ban after=1 window=1m duration=1m
deny_method TRACE
limits max_target=32B max_body=10B
deny_path /admin
"));
        let t = Instant::now();
        let long = format!("/admin/{}", "x".repeat(40));
        let post = |client: &str, method: &str, target: &str, len: u64| {
            status(
                &f,
                &req(client, method, target, &[]),
                Framing::Length(len),
                t,
            )
            .0
        };
        // denied beats everything
        assert_eq!(post("192.0.2.1", "TRACE", &long, 100), 403);
        assert_eq!(refused(&f, t, "denied"), 1);
        // method beats target length, path and body size
        assert_eq!(post("10.0.0.1", "TRACE", &long, 100), 405);
        // target length beats path
        assert_eq!(post("10.0.0.1", "POST", &long, 100), 414);
        // path beats body size
        assert_eq!(post("10.0.0.1", "POST", "/admin", 100), 403);
        assert_eq!(refused(&f, t, "path"), 1);
        // body size beats the rate limit, and refused requests take no token
        assert_eq!(post("10.0.0.1", "POST", "/", 100), 413);
        assert_eq!(post("10.0.0.1", "POST", "/", 1), 200);
        // now the bucket is empty: rate limit, then a ban (after=1: the second refusal)
        assert_eq!(post("10.0.0.1", "POST", "/", 1), 429);
        assert_eq!(post("10.0.0.1", "POST", "/", 1), 403);
        // banned beats method, target, path and body
        assert_eq!(post("10.0.0.1", "TRACE", &long, 100), 403);
        let s = f.stats(t);
        assert_eq!(
            s.refused,
            vec![
                ("denied", 1),
                ("banned", 2),
                ("method", 1),
                ("target_too_long", 1),
                ("path", 1),
                ("body_too_large", 1),
                ("rate_limited", 1)
            ]
        );
        assert_eq!(s.bans, vec![(ip("10.0.0.1"), 60)]);
    }
}

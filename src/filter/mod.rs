//! Request filtering on the poller thread, before a request takes a worker: allow/deny lists,
//! per-client rate limits, automatic bans, and request rules (method, path, target length, body
//! size). A refused request costs the balancer almost nothing: no worker, no backend.
//!
//! Every rule is about the *client address*: the TCP peer, or, behind `trusted_proxies`, the
//! address they report in `X-Forwarded-For` (client.rs says which one and why).
//!
//! # Order of checks
//!
//! [`Filter::check`] runs for every request. Cheapest and most decisive first; the first rule
//! that refuses answers:
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
//! the lock is released. Every client table is bounded by `limits max_clients=` (default
//! [`crate::config::filter::DEFAULT_MAX_CLIENTS`]), so a flood of new addresses cannot grow memory without limit.
//!
//! # Reading order
//!
//! 1. This file: [`Filter`], its settings compiled into `Rules`, and `Inner::check`, the seven
//!    steps above in order.
//! 2. `config/filter.rs` (in the config folder, with the rest of the file's grammar): the
//!    filtering keys, their defaults and checks; what [`FilterConfig`] holds.
//! 3. `client.rs`: which address is the client's; `cidr.rs`: how it is matched against the
//!    `deny`, `allow` and `trusted_proxies` lists.
//! 4. `path.rs`: the path as a backend would read it, matched on whole segments (`deny_path`,
//!    `rate_limit path=`).
//! 5. `rate_limit.rs`: the token bucket kept as one instant per client (GCRA), with a worked
//!    example; `bans.rs`: clients that keep hitting the rate limit.
//! 6. `table.rs`: the bounded per-client tables and what they drop when full.
//! 7. `stats.rs`: the refusal reasons and the counters behind `/status` and `/metrics`.
//!
//! Dependencies go one way: this file uses the others, and the settings come from the config
//! (`crate::config::filter`), which never imports the filter.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use crate::http::{Framing, Refusal, RequestHead};

mod bans;
mod cidr;
mod client;
mod path;
mod rate_limit;
mod stats;
mod table;

pub use stats::FilterStats;

use crate::config::filter::{BanConfig, FilterConfig};

use bans::Bans;
use cidr::IpSet;
use client::client_of;
use path::{normalize_path, segment_prefix};
use rate_limit::{Buckets, RateRules};
use stats::{ceil_secs, Reason, Refused};

/// The settings compiled for checking: address lists as [`IpSet`]s, rate rules with their
/// buckets. Built once per (re)configuration, read by every check.
#[derive(Debug)]
struct Rules {
    /// False when the settings refuse nothing ([`FilterConfig::filters_nothing`]).
    filters: bool,
    deny: IpSet,
    allow: IpSet,
    trusted: IpSet,
    /// `deny_method`, upper case.
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
    /// Requests refused, by reason: counted outside the lock.
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

    /// True when [`Filter::check`] looks at requests (there are rules, or bans in force): a
    /// request it let through then passed the filter, which an explanation says.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    fn update_active(&self, inner: &Inner) {
        let want = inner.rules.filters || !inner.bans.is_empty();
        if self.active.load(Ordering::Relaxed) != want {
            self.active.store(want, Ordering::Release);
        }
    }

    /// Decides whether a request may go on. `head.client` is the TCP peer (client.rs tells who
    /// the client is); see the module documentation for the order of the checks.
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
    /// The checks, in the order of the module documentation's table: the first that refuses
    /// decides.
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
        let path = rules.needs_path().then(|| normalize_path(head.path()));
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
                self.buckets.forget(client, &rules.rate);
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
mod testing {
    use std::net::IpAddr;
    use std::time::{Duration, Instant};

    use super::{Filter, FilterConfig};
    use crate::http::{Framing, RequestHead};

    pub(super) fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Filtering settings from config lines (`key words...`, one per line), read the way the
    /// config file reads them: [`FilterConfig::apply_line`], then [`FilterConfig::validate`].
    pub(super) fn cfg(text: &str) -> FilterConfig {
        let mut config = FilterConfig::default();
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if let Some((key, words)) = words.split_first() {
                config
                    .apply_line(key, words)
                    .unwrap_or_else(|e| panic!("{line}: {e}"));
            }
        }
        config.validate().unwrap_or_else(|e| panic!("{e}"));
        config
    }

    pub(super) fn req(
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

    pub(super) fn get(client: &str, target: &str) -> RequestHead {
        req(client, "GET", target, &[])
    }

    /// The status of checking `head` (200 when allowed) and its Retry-After.
    pub(super) fn status(
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

    pub(super) fn code(f: &Filter, head: &RequestHead, now: Instant) -> u16 {
        status(f, head, Framing::None, now).0
    }

    pub(super) fn refused(f: &Filter, now: Instant, reason: &str) -> u64 {
        f.stats(now)
            .refused
            .iter()
            .find(|(r, _)| *r == reason)
            .unwrap()
            .1
    }

    pub(super) fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

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

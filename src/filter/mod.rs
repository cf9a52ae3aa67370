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
//! | 7 | `rate_limit ... shared=on`, Redis away, `fallback=closed` | 503 + Retry-After | `shared_unavailable` |
//!
//! A `shared=on` rule is asked of Redis (`shared/`): [`Filter::check`] then answers
//! [`Checked::Ask`], the caller parks the request and sends the question with [`Filter::ask`],
//! and [`Filter::settle`] decides with the answer.
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
//! 8. `shared/`: the same limits kept in Redis for several balancers, and the bans they share.
//!
//! Dependencies go one way: this file uses the others, and the settings come from the config
//! (`crate::config::filter`), which never imports the filter.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::http::{Deferred, Framing, Refusal, RequestHead};

mod bans;
mod cidr;
mod client;
mod path;
mod rate_limit;
pub mod shared;
mod stats;
mod table;

pub use stats::FilterStats;

use crate::config::filter::{BanConfig, FilterConfig};
use crate::config::shared::Fallback;

use bans::Bans;
use cidr::IpSet;
use client::client_of;
use path::{normalize_path, segment_prefix};
use rate_limit::{Bucket, Buckets, RateRules, Rule};
use shared::{Answer, Outcome, SharedLimits, SharedStats};
use stats::{ceil_secs, Reason, RefusalCounts};
use table::Table;

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
    /// `shared`: whether a shared store runs (without one, `shared=on` rules are local).
    fn new(c: &FilterConfig, shared: bool) -> Rules {
        Rules {
            filters: !c.filters_nothing(),
            deny: IpSet::new(&c.deny),
            allow: IpSet::new(&c.allow),
            trusted: IpSet::new(&c.trusted_proxies),
            methods: c.deny_methods.clone(),
            max_target: c.max_target,
            deny_paths: c.deny_paths.clone(),
            max_body: c.max_body,
            rate: RateRules::new(&c.rate_limits, shared),
            ban: c.ban,
        }
    }

    fn needs_path(&self) -> bool {
        !self.deny_paths.is_empty() || self.rate.has_path_rules()
    }
}

/// Which limit decided a request a `shared=on` rule applies to: the `limit=` of the explain
/// line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitSource {
    /// Redis, or the near-cache of what it said.
    Shared,
    /// The fallback, while Redis does not answer (or did not in time).
    Fallback(Fallback),
}

impl LimitSource {
    /// `shared`, `local-fallback`, `open-fallback` or `closed-fallback`.
    pub fn name(self) -> &'static str {
        match self {
            LimitSource::Shared => "shared",
            LimitSource::Fallback(Fallback::Local) => "local-fallback",
            LimitSource::Fallback(Fallback::Open) => "open-fallback",
            LimitSource::Fallback(Fallback::Closed) => "closed-fallback",
        }
    }
}

/// A refusal decided under the lock; turned into a [`Refusal`] after it is released.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Verdict {
    reason: Reason,
    retry_after: Option<u32>,
    limit: Option<LimitSource>,
}

impl Verdict {
    fn of(reason: Reason) -> Verdict {
        Verdict {
            reason,
            retry_after: None,
            limit: None,
        }
    }

    /// 429 with a `Retry-After` of `wait` in whole seconds (at least 1).
    fn limited(wait: Duration, limit: Option<LimitSource>) -> Verdict {
        Verdict {
            reason: Reason::RateLimited,
            retry_after: Some(ceil_secs(wait).clamp(1, u32::MAX as u64) as u32),
            limit,
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
    /// Shared rules: "refused until" by (client, rule id), as Redis said (the near-cache,
    /// `shared/mod.rs`).
    near: Table<(IpAddr, u32), Instant>,
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
    refused: RefusalCounts,
    inner: Mutex<Inner>,
    /// The shared store, when the settings have a `shared` line and it was started.
    shared: OnceLock<SharedLimits>,
}

/// What [`Filter::check`] decided.
#[derive(Debug)]
pub enum Checked {
    /// Decided: admitted or refused; `limit` says which limit decided, when a `shared=on` rule
    /// applied.
    Done {
        /// Admitted, or the refusal.
        verdict: Result<(), Refusal>,
        /// Which limit decided (`shared=on` rules only).
        limit: Option<LimitSource>,
    },
    /// A `shared=on` rule applies: ask Redis ([`Filter::ask`]), then [`Filter::settle`].
    Ask(Ask),
}

impl Checked {
    /// The verdict of a check decided at once (for tests without a store).
    #[cfg(test)]
    fn decided(self) -> Result<(), Refusal> {
        match self {
            Checked::Done { verdict, .. } => verdict,
            Checked::Ask(_) => panic!("the check needs the shared store"),
        }
    }
}

/// A question for the shared store about one request (see [`Checked::Ask`]).
#[derive(Debug)]
pub struct Ask {
    client: IpAddr,
    path: Option<String>,
    bucket: Bucket,
    ban: Option<BanConfig>,
    asked: Instant,
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
        let rules = Rules::new(&config, false);
        Filter {
            active: AtomicBool::new(rules.filters),
            max_body: AtomicU64::new(config.max_body.unwrap_or(u64::MAX)),
            refused: Default::default(),
            inner: Mutex::new(Inner {
                buckets: Buckets::new(config.max_clients),
                bans: Bans::new(config.max_clients),
                near: Table::new(config.max_clients),
                rules,
                config,
            }),
            shared: OnceLock::new(),
        }
    }

    /// Gives the filter its shared store (`shared/`, started by the caller from the settings'
    /// `shared` line): from now on `shared=on` rules are asked of Redis. Once only.
    pub fn attach_shared(&self, store: SharedLimits) {
        if self.shared.set(store).is_err() {
            log::warn!("filter: a shared store is already attached");
            return;
        }
        let mut inner = self.inner.lock();
        inner.rules = Rules::new(&inner.config, true);
    }

    /// Stops the shared store's threads, if any (shutdown).
    pub fn stop_shared(&self) {
        if let Some(store) = self.shared.get() {
            store.stop();
        }
    }

    /// The shared store's state, when there is one.
    pub fn shared_stats(&self) -> Option<SharedStats> {
        self.shared.get().map(|s| s.status().stats())
    }

    /// How long a request waits at most for its shared check (the poller's safety net).
    pub fn shared_within(&self) -> Duration {
        self.shared
            .get()
            .map_or(Duration::ZERO, SharedLimits::within)
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
        inner.near.map.clear();
        let shared = self.shared.get().is_some();
        if !shared && config.rate_limits.iter().any(|r| r.shared) {
            log::warn!("filter: shared=on needs the shared store, which starts with the balancer: limiting locally until a restart");
        }
        inner.rules = Rules::new(&config, shared);
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
    /// the client is); see the module documentation for the order of the checks. A `shared=on`
    /// rule with Redis ready answers [`Checked::Ask`].
    pub fn check(&self, head: &RequestHead, framing: Framing, now: Instant) -> Checked {
        if !self.active.load(Ordering::Acquire) {
            return Checked::Done {
                verdict: Ok(()),
                limit: None,
            };
        }
        let decided = {
            let mut inner = self.inner.lock();
            let decided = inner.check(head, framing, self.shared.get(), now);
            // Bans may have started or ended; with no other settings they alone keep the
            // filter active.
            self.update_active(&inner);
            decided
        };
        match decided {
            Ok(Passed::Ask(ask)) => Checked::Ask(ask),
            Ok(Passed::Yes(limit)) => Checked::Done {
                verdict: Ok(()),
                limit,
            },
            Err(v) => Checked::Done {
                verdict: Err(self.refuse(head, v)),
                limit: v.limit,
            },
        }
    }

    /// Counts and logs a refusal, and makes its answer.
    fn refuse(&self, head: &RequestHead, v: Verdict) -> Refusal {
        self.refused.count(v.reason);
        log::debug!(
            "refused {} {} from {}: {}",
            head.method,
            head.target,
            head.client,
            v.reason.name()
        );
        v.refusal()
    }

    /// Sends `ask` to the shared store; its answer settles `deferred` (a note of type
    /// [`Answer`]). Without a store (it cannot be: [`Checked::Ask`] comes only with one) the
    /// dropped `deferred` settles without a note.
    pub fn ask(&self, ask: Ask, deferred: Deferred) {
        if let Some(store) = self.shared.get() {
            let Ask {
                client,
                path,
                bucket,
                ban,
                asked,
            } = ask;
            let (interval, depth) = (bucket.interval(), bucket.depth());
            store.ask(
                client,
                path.as_deref(),
                interval,
                depth,
                ban,
                asked,
                deferred,
            );
        }
    }

    /// Decides on a request whose check was asked of the shared store, with its answer
    /// (`None`: none came in time, which the fallback decides). The request is looked at again
    /// from its head (the rule may have changed meanwhile, by a reload).
    pub fn settle(
        &self,
        head: &RequestHead,
        answer: Option<Answer>,
        now: Instant,
    ) -> (Result<(), Refusal>, Option<LimitSource>) {
        let Some(store) = self.shared.get() else {
            return (Ok(()), None);
        };
        let decided = {
            let mut inner = self.inner.lock();
            let decided = inner.settle(head, answer, store, now);
            self.update_active(&inner);
            decided
        };
        match decided {
            Ok(limit) => (Ok(()), Some(limit)),
            Err(v) => (Err(self.refuse(head, v)), v.limit),
        }
    }

    /// Which limit decides requests like `head` now, when a `shared=on` rule applies to it: for
    /// the explanation of a request already admitted.
    pub fn limit_of(&self, head: &RequestHead) -> Option<LimitSource> {
        let store = self.shared.get()?;
        let inner = self.inner.lock();
        let rules = &inner.rules;
        let path = rules
            .rate
            .has_path_rules()
            .then(|| normalize_path(head.path()));
        let rule = rules.rate.bucket_for(path.as_deref())?;
        rule.shared.then(|| match store.status().ready() {
            true => LimitSource::Shared,
            false => LimitSource::Fallback(store.status().fallback()),
        })
    }

    /// Bans `client` for `left` because another balancer banned it (shared bans).
    pub fn adopt_ban(&self, client: IpAddr, left: Duration, now: Instant) {
        let mut inner = self.inner.lock();
        inner.bans.adopt(client, left, now);
        self.update_active(&inner);
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
    fn check(
        &mut self,
        head: &RequestHead,
        framing: Framing,
        store: Option<&SharedLimits>,
        now: Instant,
    ) -> Result<Passed, Verdict> {
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
            return Ok(Passed::Yes(None));
        };
        match store {
            Some(store) if rule.shared => self.shared_limit(client, rule, store, now),
            _ => self
                .limit_locally(client, rule.id, rule.bucket, now, None)
                .map(|()| Passed::Yes(None)),
        }
    }

    /// Takes a token from `client`'s own bucket `(id, bucket)`; a refusal counts towards a ban.
    fn limit_locally(
        &mut self,
        client: IpAddr,
        id: u32,
        bucket: Bucket,
        now: Instant,
        limit: Option<LimitSource>,
    ) -> Result<(), Verdict> {
        match self.buckets.take(client, (id, bucket), now) {
            Ok(()) => Ok(()),
            Err(wait) => Err(self.rate_limited(client, wait, now, limit, true)),
        }
    }

    /// The refusal of a rate-limited request: 429, or 403 when the refusal bans the client
    /// (`count`: the refusal is counted here, towards a ban kept here).
    fn rate_limited(
        &mut self,
        client: IpAddr,
        wait: Duration,
        now: Instant,
        limit: Option<LimitSource>,
        count: bool,
    ) -> Verdict {
        if let Some(ban) = self.rules.ban.filter(|_| count) {
            if self.bans.note_hit(client, now, &ban) {
                return self.ban(client, now, &ban, limit);
            }
        }
        Verdict::limited(wait, limit)
    }

    /// Bans `client` from `now`, and refuses its request (403).
    fn ban(
        &mut self,
        client: IpAddr,
        now: Instant,
        ban: &BanConfig,
        limit: Option<LimitSource>,
    ) -> Verdict {
        self.bans.start(client, now, ban);
        // Dropping the client's buckets frees memory; after the ban it starts with a full
        // bucket.
        self.buckets.forget(client, &self.rules.rate);
        Verdict {
            limit,
            ..Verdict::of(Reason::Banned)
        }
    }

    /// Step 7 for a `shared=on` rule: the near-cache, then Redis if it is ready, else the
    /// fallback.
    fn shared_limit(
        &mut self,
        client: IpAddr,
        rule: Rule,
        store: &SharedLimits,
        now: Instant,
    ) -> Result<Passed, Verdict> {
        let shared_ban = self.rules.ban.filter(|b| b.shared);
        if shared_ban.is_none() {
            if let Some(until) = self.near.map.get(&(client, rule.id)).copied() {
                if until > now {
                    let limit = Some(LimitSource::Shared);
                    return Err(self.rate_limited(client, until - now, now, limit, true));
                }
                self.near.map.remove(&(client, rule.id));
            }
        }
        if store.status().ready() {
            return Ok(Passed::Ask(Ask {
                client,
                path: self.rules.rate.path_of(rule.id).map(str::to_string),
                bucket: rule.bucket,
                ban: shared_ban,
                asked: now,
            }));
        }
        self.fallback(client, rule, store, now).map(Passed::Yes)
    }

    /// A `shared=on` rule decided without Redis (see [`Fallback`]).
    fn fallback(
        &mut self,
        client: IpAddr,
        rule: Rule,
        store: &SharedLimits,
        now: Instant,
    ) -> Result<Option<LimitSource>, Verdict> {
        let fallback = store.status().fallback();
        let limit = Some(LimitSource::Fallback(fallback));
        match fallback {
            Fallback::Open => Ok(limit),
            Fallback::Closed => Err(Verdict {
                retry_after: Some(1),
                limit,
                ..Verdict::of(Reason::SharedUnavailable)
            }),
            Fallback::Local => {
                let share = rule.bucket.shared_by(store.status().instances());
                self.limit_locally(client, rule.id, share, now, limit)
                    .map(|()| limit)
            }
        }
    }

    /// Decides on a request with the shared store's answer (see [`Filter::settle`]).
    fn settle(
        &mut self,
        head: &RequestHead,
        answer: Option<Answer>,
        store: &SharedLimits,
        now: Instant,
    ) -> Result<LimitSource, Verdict> {
        let client = client_of(head, &self.rules.trusted);
        let path = self
            .rules
            .rate
            .has_path_rules()
            .then(|| normalize_path(head.path()));
        let Some(rule) = self.rules.rate.bucket_for(path.as_deref()) else {
            return Ok(LimitSource::Shared);
        };
        let shared = Some(LimitSource::Shared);
        let shared_ban = self.rules.ban.filter(|b| b.shared);
        let Some(answer) = answer.filter(|a| a.outcome != Outcome::Unknown) else {
            let decided = self.fallback(client, rule, store, now)?;
            return Ok(decided.unwrap_or(LimitSource::Shared));
        };
        match answer.outcome {
            Outcome::Allowed | Outcome::Unknown => Ok(LimitSource::Shared),
            Outcome::Limited(wait) => {
                if shared_ban.is_none() {
                    let until = answer.asked + wait;
                    let cache = &mut self.near;
                    *cache.insert((client, rule.id), until, |u| *u <= now, |u| Some(*u)) = until;
                }
                let left = (answer.asked + wait).saturating_duration_since(now);
                Err(self.rate_limited(client, left, now, shared, shared_ban.is_none()))
            }
            Outcome::Banned(left) => {
                self.bans.adopt(client, left, now);
                Err(Verdict {
                    limit: shared,
                    ..Verdict::of(Reason::Banned)
                })
            }
            Outcome::BannedNow(_) => match shared_ban {
                Some(ban) => Err(self.ban(client, now, &ban, shared)),
                None => Err(Verdict::limited(Duration::from_secs(1), shared)),
            },
        }
    }
}

/// What [`Inner::check`] let through.
enum Passed {
    /// Admitted; which limit decided, for a `shared=on` rule.
    Yes(Option<LimitSource>),
    /// Ask Redis.
    Ask(Ask),
}

/// Helpers shared by the tests of this module and its files: requests, config lines, answers.
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

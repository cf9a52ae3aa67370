//! Rate limits: `rate_limit rate=2/s burst=3` lets a client send 3 requests at once after a quiet
//! spell, then 2 a second; past that it gets 429 with a `Retry-After`.
//!
//! # The token bucket
//!
//! Each client has, per rule, a bucket of `burst` tokens. A request takes one; a request that
//! finds the bucket empty is refused. Tokens come back one every `interval` = period / count
//! (500 ms for `2/s`), never more than `burst`. So a client may be bursty, but over time it gets
//! the rate and no more.
//!
//! # One instant per client (GCRA)
//!
//! Counting tokens would need a count and a last-refill time per client, and fractions of a
//! token. The generic cell rate algorithm keeps one instant instead, `tat` (the "theoretical
//! arrival time"): when the bucket will be full again if no request comes. At `now` the bucket
//! lacks `(tat - now) / interval` tokens. With `depth = burst × interval`:
//!
//! - a request at `now` is allowed when `max(tat, now) + interval - now <= depth`, and then `tat`
//!   becomes `max(tat, now) + interval`;
//! - otherwise it is refused and `tat` stays (a refused request takes no token, so refusals do
//!   not push the next token further away). A token is there again after
//!   `max(tat, now) + interval - depth - now`; that, rounded up to whole seconds and at least 1,
//!   is the `Retry-After`.
//!
//! Integer arithmetic on `Instant` and `Duration`: exact, no timer, no refill loop.
//!
//! # A worked example
//!
//! `rate=2/s burst=3`: interval 500 ms, depth 1500 ms. A client that has been quiet (its `tat` is
//! in the past, so `max(tat, now)` is `now`); times in ms after its first request:
//!
//! | at | `max(tat, now) + interval` | minus `now` | ≤ 1500? | answer | `tat` after |
//! | --- | --- | --- | --- | --- | --- |
//! | 0 | 0 + 500 = 500 | 500 | yes | allowed | 500 |
//! | 0 | 500 + 500 = 1000 | 1000 | yes | allowed | 1000 |
//! | 0 | 1000 + 500 = 1500 | 1500 | yes | allowed (the burst of 3) | 1500 |
//! | 0 | 1500 + 500 = 2000 | 2000 | no, 500 ms too soon | 429, `Retry-After: 1` | 1500 |
//! | 499 | 2000 | 1501 | no, 1 ms too soon | 429, `Retry-After: 1` | 1500 |
//! | 500 | 2000 | 1500 | yes | allowed | 2000 |
//! | 60 000 | 60 000 + 500 = 60 500 | 500 | yes (full again) | allowed | 60 500 |
//!
//! The test `the_worked_example` below runs this table.
//!
//! # Which bucket
//!
//! A client has one bucket per rule: the buckets are keyed by (client, rule id), the rule id
//! being the `rate_limit` line's place in the settings. A request draws from the rule of the
//! longest `path=` prefix that matches its path on whole segments, else from the general rule
//! (the line without `path=`), else from none: it is not limited. On reload, buckets follow their
//! rule by path, so moving lines around forgets no client's state.

use std::cmp::Reverse;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::path::segment_prefix;
use super::table::Table;
use crate::config::filter::RateLimit;

/// A compiled rate rule: a token bucket kept as a "theoretical arrival time" (GCRA, see the
/// module documentation). The state, `tat`, is kept per client in [`Buckets`].
#[derive(Clone, Copy, Debug)]
pub(super) struct Bucket {
    interval: Duration,
    /// `burst * interval`.
    depth: Duration,
}

impl Bucket {
    /// The bucket of one `rate_limit` line.
    pub(super) fn new(limit: &RateLimit) -> Bucket {
        let interval = limit.rate.interval();
        Bucket {
            interval,
            depth: interval.saturating_mul(limit.burst.min(u32::MAX as u64) as u32),
        }
    }

    /// Time for one token to come back.
    pub(super) fn interval(&self) -> Duration {
        self.interval
    }

    /// `burst * interval`.
    pub(super) fn depth(&self) -> Duration {
        self.depth
    }

    /// This bucket's share when `n` balancers limit on their own (a shared rule in the local
    /// fallback): the rate divided by `n` (the interval times `n`) and the burst too (rounded
    /// up, at least 1), so that together they stay near the shared limit. `rate=10/s burst=10`
    /// shared by 2: `5/s burst=5` each.
    pub(super) fn shared_by(&self, n: u32) -> Bucket {
        let n = n.max(1);
        let burst = (self.depth.as_nanos() / self.interval.as_nanos().max(1)) as u32;
        let interval = self.interval.saturating_mul(n);
        Bucket {
            interval,
            depth: interval.saturating_mul(burst.div_ceil(n).max(1)),
        }
    }

    /// Takes a token from the bucket whose state is `tat`, or says how long until one is there.
    fn take(&self, tat: &mut Instant, now: Instant) -> Result<(), Duration> {
        let next = (*tat).max(now) + self.interval;
        let debt = next.saturating_duration_since(now);
        if debt <= self.depth {
            *tat = next;
            Ok(())
        } else {
            Err(debt - self.depth)
        }
    }
}

/// The rate rule a request draws from.
#[derive(Clone, Copy, Debug)]
pub(super) struct Rule {
    /// The rule's id: its place in the settings.
    pub id: u32,
    pub bucket: Bucket,
    /// `shared=on`.
    pub shared: bool,
}

/// The `rate_limit` lines compiled for checking: which rule, and so which bucket, a request
/// draws from.
#[derive(Debug)]
pub(super) struct RateRules {
    /// The general rate rule and its id.
    general: Option<(u32, Bucket, bool)>,
    /// Path rules, longest prefix first, with their ids and `shared=`.
    by_path: Vec<(String, u32, Bucket, bool)>,
}

impl RateRules {
    /// Compiles the `rate_limit` lines; a rule's id is its place in `limits`. `shared` is false
    /// when there is no shared store to ask: every rule is then local.
    pub(super) fn new(limits: &[RateLimit], shared: bool) -> RateRules {
        let mut by_path: Vec<(String, u32, Bucket, bool)> = limits
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let rule = (i as u32, Bucket::new(r), r.shared && shared);
                Some((r.path.clone()?, rule.0, rule.1, rule.2))
            })
            .collect();
        by_path.sort_by_key(|(p, ..)| Reverse(p.len()));
        RateRules {
            general: limits.iter().position(|r| r.path.is_none()).map(|i| {
                (
                    i as u32,
                    Bucket::new(&limits[i]),
                    limits[i].shared && shared,
                )
            }),
            by_path,
        }
    }

    /// True when some rule has a `path=` (the request's path must then be worked out).
    pub(super) fn has_path_rules(&self) -> bool {
        !self.by_path.is_empty()
    }

    /// The rate rule for `path`: the longest matching path prefix, else the general rule.
    pub(super) fn bucket_for(&self, path: Option<&[u8]>) -> Option<Rule> {
        if let Some(path) = path {
            for (prefix, id, bucket, shared) in &self.by_path {
                if segment_prefix(path, prefix.as_bytes()) {
                    return Some(Rule {
                        id: *id,
                        bucket: *bucket,
                        shared: *shared,
                    });
                }
            }
        }
        self.general
            .map(|(id, bucket, shared)| Rule { id, bucket, shared })
    }

    /// The `path=` of rule `id` (`None` for the general rule).
    pub(super) fn path_of(&self, id: u32) -> Option<&str> {
        self.by_path
            .iter()
            .find(|(_, i, ..)| *i == id)
            .map(|(p, ..)| p.as_str())
    }

    /// The ids of all the rules.
    fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        let ids = self.general.iter().map(|(id, ..)| *id);
        ids.chain(self.by_path.iter().map(|(_, id, ..)| *id))
    }
}

/// Every client's buckets: the `tat` of each (client, rule id), in a bounded [`Table`].
pub(super) type Buckets = Table<(IpAddr, u32), Instant>;

/// How recently a bucket was used, for the table's eviction: its `tat`. The oldest `tat` is the
/// bucket nearest to full, whose loss matters least.
fn last_active(tat: &Instant) -> Option<Instant> {
    Some(*tat)
}

impl Buckets {
    /// Takes a token for `client` under `rule` (from [`RateRules::bucket_for`]), or says how long
    /// until one is there. A client not in the table starts with a full bucket.
    pub(super) fn take(
        &mut self,
        client: IpAddr,
        (id, bucket): (u32, Bucket),
        now: Instant,
    ) -> Result<(), Duration> {
        let key = (client, id);
        match self.map.get_mut(&key) {
            Some(tat) => bucket.take(tat, now),
            None => {
                // A bucket whose `tat` has passed is full again: idle, it may be swept.
                let tat = self.insert(key, now, |tat| *tat <= now, last_active);
                bucket.take(tat, now)
            }
        }
    }

    /// Drops `client`'s buckets (one lookup per rule, not a table scan): a banned client's
    /// buckets are no use, and after its ban it starts with full ones.
    pub(super) fn forget(&mut self, client: IpAddr, rules: &RateRules) {
        for id in rules.ids() {
            self.map.remove(&(client, id));
        }
    }

    /// On reload: moves each bucket to the id its rule has in the new lines, found by the rule's
    /// path, so a client's `/login` bucket survives a reordering of the `rate_limit` lines.
    /// Buckets of removed rules are dropped.
    pub(super) fn follow_rules(&mut self, old: &[RateLimit], new: &[RateLimit]) {
        let old: Vec<Option<&String>> = old.iter().map(|r| r.path.as_ref()).collect();
        let new: Vec<Option<&String>> = new.iter().map(|r| r.path.as_ref()).collect();
        if old != new {
            let remap: Vec<Option<u32>> = old
                .iter()
                .map(|p| new.iter().position(|q| q == p).map(|i| i as u32))
                .collect();
            let buckets = std::mem::take(&mut self.map);
            self.map = buckets
                .into_iter()
                .filter_map(|((ip, id), tat)| {
                    let id = remap.get(id as usize).copied().flatten()?;
                    Some(((ip, id), tat))
                })
                .collect();
        }
    }

    /// Applies a new `limits max_clients=`; an over-full table is cut down at once.
    pub(super) fn set_max_clients(&mut self, cap: usize) {
        self.set_cap(cap, last_active);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::filter::{FilterConfig, Rate, RateLimit};
    use crate::filter::testing::{cfg, code, get, ms, refused, status};
    use crate::filter::Filter;
    use crate::http::Framing;
    use std::sync::atomic::Ordering;

    #[test]
    fn the_worked_example() {
        let limit = RateLimit {
            rate: Rate::parse("2/s").unwrap(),
            burst: 3,
            path: None,
            shared: false,
        };
        let bucket = Bucket::new(&limit);
        let t = Instant::now();
        let mut tat = t;
        for (at, answer, tat_after) in [
            (0, Ok(()), 500),
            (0, Ok(()), 1000),
            (0, Ok(()), 1500),
            (0, Err(ms(500)), 1500),
            (499, Err(ms(1)), 1500),
            (500, Ok(()), 2000),
            (60_000, Ok(()), 60_500),
        ] {
            assert_eq!(bucket.take(&mut tat, t + ms(at)), answer, "at {at}");
            assert_eq!(tat, t + ms(tat_after), "at {at}");
        }
    }

    #[test]
    fn a_shared_bucket_in_the_local_fallback_is_its_share() {
        let limit = |rate: &str, burst| RateLimit {
            rate: Rate::parse(rate).unwrap(),
            burst,
            path: None,
            shared: true,
        };
        let half = Bucket::new(&limit("10/s", 10)).shared_by(2);
        assert_eq!((half.interval, half.depth), (ms(200), ms(1000)));
        let third = Bucket::new(&limit("10/s", 10)).shared_by(3);
        assert_eq!((third.interval, third.depth), (ms(300), ms(1200)));
        let one = Bucket::new(&limit("1/s", 1)).shared_by(4);
        assert_eq!((one.interval, one.depth), (ms(4000), ms(4000)));
    }

    #[test]
    fn token_bucket_burst_refill_and_retry_after() {
        let f = Filter::new(cfg("rate_limit rate=2/s burst=3\n"));
        let t = Instant::now();
        let a = get("10.0.0.1", "/");
        for _ in 0..3 {
            assert_eq!(status(&f, &a, Framing::None, t), (200, None));
        }
        // the bucket is empty; a token comes back every 500ms
        assert_eq!(status(&f, &a, Framing::None, t), (429, Some(1)));
        assert_eq!(status(&f, &a, Framing::None, t + ms(499)), (429, Some(1)));
        assert_eq!(status(&f, &a, Framing::None, t + ms(500)), (200, None));
        assert_eq!(status(&f, &a, Framing::None, t + ms(500)).0, 429);
        // a quiet client refills, but never beyond the burst
        let later = t + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(code(&f, &a, later), 200);
        }
        assert_eq!(code(&f, &a, later), 429);
        // another client has its own bucket
        assert_eq!(code(&f, &get("10.0.0.2", "/"), later), 200);
        // a refused request does not push the next token further away
        let t2 = later + ms(200);
        assert_eq!(code(&f, &a, t2), 429);
        assert_eq!(code(&f, &a, later + ms(500)), 200);
        assert_eq!(
            f.check(&a, Framing::None, later + ms(500))
                .decided()
                .unwrap_err()
                .reason,
            "rate limited"
        );
        assert_eq!(refused(&f, later, "rate_limited"), 6);
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        let f = Filter::new(cfg("rate_limit rate=10/m burst=1\n"));
        let t = Instant::now();
        let a = get("10.0.0.1", "/");
        assert_eq!(code(&f, &a, t), 200);
        assert_eq!(status(&f, &a, Framing::None, t).1, Some(6));
        assert_eq!(status(&f, &a, Framing::None, t + ms(1)).1, Some(6));
        assert_eq!(status(&f, &a, Framing::None, t + ms(1000)).1, Some(5));
        assert_eq!(status(&f, &a, Framing::None, t + ms(5500)).1, Some(1));
        assert_eq!(status(&f, &a, Framing::None, t + ms(5999)).1, Some(1));
        assert_eq!(code(&f, &a, t + ms(6000)), 200);
        let slow = Filter::new(cfg("rate_limit rate=1/m burst=2\n"));
        assert_eq!(code(&slow, &a, t), 200);
        assert_eq!(code(&slow, &a, t), 200);
        assert_eq!(status(&slow, &a, Framing::None, t).1, Some(60));
    }

    #[test]
    fn path_rules_use_their_own_bucket_longest_prefix_first() {
        let f = Filter::new(cfg("\
rate_limit rate=100/s burst=100
rate_limit rate=1/m burst=1 path=/login
rate_limit rate=1/m burst=2 path=/api
rate_limit rate=1/m burst=3 path=/api/v2
"));
        let t = Instant::now();
        let c = |target: &str| code(&f, &get("10.0.0.1", target), t);
        assert_eq!(c("/login"), 200);
        assert_eq!(c("/login/again?x"), 429); // same bucket as /login
        assert_eq!(c("/loginx"), 200); // general bucket
        assert_eq!(c("/"), 200);
        // /api/v2 (3) wins over /api (2) for its requests
        assert_eq!(
            (c("/api/v2/a"), c("/api/v2/b"), c("/api/v2/c")),
            (200, 200, 200)
        );
        assert_eq!(c("/api/v2/d"), 429);
        assert_eq!((c("/api/v1"), c("/api")), (200, 200));
        assert_eq!(c("/api/v1"), 429);
        // another client is unaffected
        assert_eq!(code(&f, &get("10.0.0.2", "/login"), t), 200);
    }

    #[test]
    fn path_rule_without_general_rule_limits_only_that_path() {
        let f = Filter::new(cfg("rate_limit rate=1/m burst=1 path=/login\n"));
        let t = Instant::now();
        for _ in 0..10 {
            assert_eq!(code(&f, &get("10.0.0.1", "/"), t), 200);
        }
        assert_eq!(code(&f, &get("10.0.0.1", "/login"), t), 200);
        assert_eq!(code(&f, &get("10.0.0.1", "/login"), t), 429);
    }

    #[test]
    fn reconfigure_keeps_buckets_by_path_and_updates_limits() {
        let f = Filter::new(cfg(
            "rate_limit rate=1/m burst=1 path=/login\nrate_limit rate=1/m burst=1\n",
        ));
        let t = Instant::now();
        let login = get("10.0.0.1", "/login");
        let root = get("10.0.0.1", "/");
        assert_eq!((code(&f, &login, t), code(&f, &root, t)), (200, 200));
        // the lines swap places and a new rule arrives: each bucket stays with its rule
        f.reconfigure(cfg(
            "rate_limit rate=1/m burst=1\nrate_limit rate=1/m burst=1 path=/api\nrate_limit rate=1/m burst=1 path=/login\nlimits max_body=5B\n",
        ));
        assert_eq!((code(&f, &login, t), code(&f, &root, t)), (429, 429));
        assert_eq!(code(&f, &get("10.0.0.1", "/api"), t), 200);
        assert_eq!(f.max_body(), Some(5));
        // a removed rule's buckets go
        f.reconfigure(cfg("rate_limit rate=1/m burst=1 path=/api\n"));
        assert_eq!(f.inner.lock().buckets.map.len(), 1);
        assert_eq!(code(&f, &root, t), 200);
        f.reconfigure(FilterConfig::default());
        assert_eq!(f.max_body(), None);
        assert!(!f.active.load(Ordering::Relaxed));
    }
}

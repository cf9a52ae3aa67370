//! Bans: a client refused by the rate limit more than `after` times within `window` is refused
//! everything for `duration` (403 `banned`), then starts again with a clean slate.
//!
//! `ban after=5 window=1m duration=10m` bans a client at its sixth rate-limit refusal within a
//! minute, for ten minutes. Only rate-limit refusals count: they are the ones a client causes by
//! its own insistence, while a refusal by a list or a request rule says nothing about its pace.
//!
//! What is kept, all of it bounded by `limits max_clients=`:
//!
//! - **Hit windows**: each client's recent rate-limit refusals, at most `after + 1` instants
//!   (which is why `after` is at most [`MAX_BAN_AFTER`]), in a [`Table`] that drops the idle and
//!   the oldest when full, like the buckets.
//! - **The ban table**: banned clients and when their ban ends. When it is full of live bans, the
//!   ban that would end soonest ends early to make room (logged).
//!
//! Ends are noticed lazily: the earliest end is remembered, so until then looking for ended bans
//! costs one compare; the first check or `/status` after it removes the bans that have ended and
//! logs each once. Bans outlive a reload, even one that removes the `ban` line: a ban runs to
//! its end.
//!
//! [`MAX_BAN_AFTER`]: super::MAX_BAN_AFTER

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use super::stats::ceil_secs;
use super::table::Table;
use crate::config::filter::BanConfig;
use crate::config::format_duration;
use crate::logging::time::Utc;

/// The hit windows and the ban table.
#[derive(Debug)]
pub(super) struct Bans {
    /// Times of each client's recent rate-limit refusals, oldest first, at most `after + 1`.
    pub(super) hits: Table<IpAddr, VecDeque<Instant>>,
    /// Banned clients and when their ban ends.
    until: HashMap<IpAddr, Instant>,
    /// Most bans at once (`limits max_clients=`).
    cap: usize,
    /// The earliest ban end (a sweep of `until` is due then).
    next_end: Option<Instant>,
    /// Bans started since the filter was created.
    pub(super) started: u64,
    /// Bans ended, by time or to make room.
    ended: u64,
}

/// How recently a hit window was used, for the table's eviction: its last hit.
fn last_hit(hits: &VecDeque<Instant>) -> Option<Instant> {
    hits.back().copied()
}

impl Bans {
    /// No bans, and tables for at most `max_clients` clients.
    pub(super) fn new(max_clients: usize) -> Bans {
        Bans {
            hits: Table::new(max_clients),
            until: HashMap::new(),
            cap: max_clients.max(1),
            next_end: None,
            started: 0,
            ended: 0,
        }
    }

    /// True when no client is banned (as far as is known: ends are noticed lazily).
    pub(super) fn is_empty(&self) -> bool {
        self.until.is_empty()
    }

    /// Clients banned (as far as is known: ends are noticed lazily).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.until.len()
    }

    /// True when `client` is banned at `now`. Notices the bans that have ended.
    pub(super) fn is_banned(&mut self, client: IpAddr, now: Instant) -> bool {
        if self.until.is_empty() {
            return false;
        }
        self.expire(now);
        self.until.contains_key(&client)
    }

    /// Records a rate-limit refusal of `client`; true when it is the one too many (the client
    /// must then be banned, and its hit window is forgotten).
    pub(super) fn note_hit(&mut self, client: IpAddr, now: Instant, ban: &BanConfig) -> bool {
        let window = ban.window;
        let in_window = |t: &Instant| now.saturating_duration_since(*t) < window;
        let record = |hits: &mut VecDeque<Instant>| {
            while hits.front().is_some_and(|t| !in_window(t)) {
                hits.pop_front();
            }
            hits.push_back(now);
            hits.len()
        };
        let count = match self.hits.map.get_mut(&client) {
            Some(h) => record(h),
            None => record(self.hits.insert(
                client,
                VecDeque::with_capacity(ban.after as usize + 1),
                |h| !h.back().is_some_and(in_window),
                last_hit,
            )),
        };
        if count > ban.after as usize {
            self.hits.map.remove(&client);
            return true;
        }
        false
    }

    /// Bans `client` from `now` for `ban.duration`, and logs it.
    pub(super) fn start(&mut self, client: IpAddr, now: Instant, ban: &BanConfig) {
        self.insert(client, now + ban.duration, now);
        self.started += 1;
        let wall = SystemTime::now() + ban.duration;
        log::warn!(
            "banned {client} for {} (until {}): rate-limited {} times within {}",
            format_duration(ban.duration),
            Utc::at(wall).seconds(),
            ban.after as u64 + 1,
            format_duration(ban.window)
        );
    }

    /// Bans `client` for `left` from `now` because another balancer banned it (shared bans):
    /// logged once, at the first news of it; news of a ban already known changes nothing but a
    /// later end.
    pub(super) fn adopt(&mut self, client: IpAddr, left: Duration, now: Instant) {
        let until = now + left;
        if left.is_zero() || self.until.get(&client).is_some_and(|u| *u >= until) {
            return;
        }
        if !self.until.contains_key(&client) {
            log::info!(
                "banned {client} for {} (until {}): banned by a balancer sharing the limits",
                format_duration(Duration::from_secs(ceil_secs(left))),
                Utc::at(SystemTime::now() + left).seconds()
            );
        }
        self.hits.map.remove(&client);
        self.insert(client, until, now);
    }

    /// Puts `client` in the ban table until `until`, making room when it is full.
    fn insert(&mut self, client: IpAddr, until: Instant, now: Instant) {
        let cap = self.cap;
        if self.until.len() >= cap && !self.until.contains_key(&client) {
            self.expire(now);
        }
        while self.until.len() >= cap && !self.until.contains_key(&client) {
            // Full of live bans: the one ending soonest makes room (O(bans), only at the cap).
            let Some((&ip, _)) = self.until.iter().min_by_key(|(_, until)| **until) else {
                break;
            };
            self.until.remove(&ip);
            self.ended += 1;
            log::info!("ban of {ip} ended early: the ban table is full ({cap} entries)");
        }
        self.until.insert(client, until);
        self.next_end = Some(self.next_end.map_or(until, |t| t.min(until)));
    }

    /// Removes bans that have ended, logging each once. Cheap unless one is due.
    pub(super) fn expire(&mut self, now: Instant) {
        if self.next_end.is_none_or(|t| t > now) {
            return;
        }
        let mut ended = 0;
        self.until.retain(|ip, until| {
            if *until <= now {
                log::info!("ban of {ip} ended");
                ended += 1;
                false
            } else {
                true
            }
        });
        self.ended += ended;
        self.next_end = self.until.values().min().copied();
    }

    /// The banned clients with the seconds left (rounded up), by address.
    pub(super) fn seconds_left(&self, now: Instant) -> Vec<(IpAddr, u64)> {
        let mut bans: Vec<(IpAddr, u64)> = self
            .until
            .iter()
            .map(|(ip, until)| (*ip, ceil_secs(until.saturating_duration_since(now))))
            .collect();
        bans.sort();
        bans
    }

    /// Forgets every hit window (the `ban` line is gone); bans run on.
    pub(super) fn forget_hits(&mut self) {
        self.hits.map.clear();
    }

    /// Applies a new `limits max_clients=`: an over-full hit table is cut down at once; the ban
    /// table keeps its bans and makes room when the next one starts.
    pub(super) fn set_max_clients(&mut self, max_clients: usize) {
        self.hits.set_cap(max_clients, last_hit);
        self.cap = max_clients.max(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::testing::{cfg, code, get, ip, ms, refused};
    use crate::filter::{Filter, FilterConfig};
    use crate::http::Framing;
    use std::net::Ipv4Addr;
    use std::sync::atomic::Ordering;

    #[test]
    fn bans_count_refusals_within_the_window_and_expire() {
        let f = Filter::new(cfg(
            "rate_limit rate=1/s burst=1\nban after=2 window=10s duration=1m\n",
        ));
        let t = Instant::now();
        let a = get("10.0.0.1", "/");
        assert_eq!(code(&f, &a, t), 200);
        assert_eq!(code(&f, &a, t), 429); // 1st refusal
        assert_eq!(code(&f, &a, t + ms(100)), 429); // 2nd
        assert_eq!(code(&f, &a, t + ms(200)), 403); // 3rd: more than 2, banned
        let r = f
            .check(&a, Framing::None, t + ms(300))
            .decided()
            .unwrap_err();
        assert_eq!(
            (r.status, r.reason.as_str(), r.retry_after),
            (403, "banned", None)
        );
        // the banned client's bucket is gone; others are not affected
        assert!(!f
            .inner
            .lock()
            .buckets
            .map
            .contains_key(&(ip("10.0.0.1"), 0)));
        assert_eq!(code(&f, &get("10.0.0.2", "/"), t + ms(300)), 200);
        let s = f.stats(t + ms(30_000));
        assert_eq!(s.bans, vec![(ip("10.0.0.1"), 31)]);
        assert_eq!(s.bans_started, 1);
        // still banned just before the end, then free with a full bucket
        assert_eq!(code(&f, &a, t + ms(60_199)), 403);
        assert_eq!(code(&f, &a, t + ms(60_200)), 200);
        assert!(f.stats(t + ms(60_200)).bans.is_empty());
        assert_eq!(f.inner.lock().bans.ended, 1);
        // the end was noticed once: later stats and checks do not see it again
        f.stats(t + ms(70_000));
        assert_eq!(code(&f, &a, t + ms(70_000)), 200);
        assert_eq!(f.inner.lock().bans.ended, 1);
        assert_eq!(refused(&f, t, "banned"), 3);
        assert_eq!(refused(&f, t, "rate_limited"), 2);
    }

    #[test]
    fn refusals_spread_wider_than_the_window_never_ban() {
        let f = Filter::new(cfg(
            "rate_limit rate=1/s burst=1\nban after=2 window=10s duration=1m\n",
        ));
        let t = Instant::now();
        let a = get("10.0.0.1", "/");
        for i in 0..20u64 {
            let at = t + Duration::from_secs(i * 5);
            assert_eq!(code(&f, &a, at), 200, "round {i}");
            assert_eq!(code(&f, &a, at), 429, "round {i}");
        }
        assert_eq!(f.stats(t + Duration::from_secs(100)).bans_started, 0);
        // but three within 10 s do
        let at = t + Duration::from_secs(200);
        assert_eq!(code(&f, &a, at), 200);
        assert_eq!(code(&f, &a, at), 429);
        assert_eq!(code(&f, &a, at + ms(9_000)), 200);
        assert_eq!(code(&f, &a, at + ms(9_000)), 429);
        assert_eq!(code(&f, &a, at + ms(9_999)), 403);
    }

    #[test]
    fn bans_of_clients_that_never_return_are_noticed_by_stats_and_other_checks() {
        let f = Filter::new(cfg(
            "rate_limit rate=1/m burst=1\nban after=1 window=1m duration=10s\n",
        ));
        let t = Instant::now();
        for c in ["10.0.0.1", "10.0.0.2"] {
            for _ in 0..3 {
                code(&f, &get(c, "/"), t);
            }
        }
        assert_eq!(f.stats(t).bans.len(), 2);
        // another client's check notices the ends
        assert_eq!(code(&f, &get("10.0.0.3", "/"), t + ms(10_000)), 200);
        assert_eq!(f.inner.lock().bans.len(), 0);
        assert_eq!(f.inner.lock().bans.ended, 2);
        assert!(f.stats(t + ms(20_000)).bans.is_empty());
        assert_eq!(f.inner.lock().bans.ended, 2);
    }

    #[test]
    fn bans_survive_reconfigure_even_without_settings() {
        let f = Filter::new(cfg(
            "rate_limit rate=1/m burst=1\nban after=1 window=1m duration=1m\n",
        ));
        let t = Instant::now();
        let a = get("10.0.0.1", "/");
        code(&f, &a, t);
        code(&f, &a, t);
        assert_eq!(code(&f, &a, t), 403);
        f.reconfigure(cfg(
            "rate_limit rate=100/s\nban after=50 window=1m duration=1h\n",
        ));
        assert_eq!(code(&f, &a, t + ms(1)), 403);
        f.reconfigure(FilterConfig::default());
        assert!(
            f.active.load(Ordering::Relaxed),
            "a live ban keeps the filter active"
        );
        assert_eq!(code(&f, &a, t + ms(2)), 403);
        assert_eq!(f.stats(t + ms(2)).bans.len(), 1);
        // when the ban ends, nothing is left to check
        assert_eq!(code(&f, &a, t + ms(60_000)), 200);
        assert!(!f.active.load(Ordering::Relaxed));
        assert!(f.stats(t + ms(60_000)).bans.is_empty());
    }

    #[test]
    fn the_ban_table_is_capped() {
        let f = Filter::new(cfg("limits max_clients=4\nrate_limit rate=1/m burst=1\nban after=1 window=1m duration=1h\n"));
        let t = Instant::now();
        for i in 0..10u32 {
            let h = get(&Ipv4Addr::from(i).to_string(), "/");
            for _ in 0..3 {
                code(&f, &h, t + ms(i as u64));
            }
        }
        let s = f.stats(t + ms(10));
        assert_eq!(s.bans.len(), 4);
        assert_eq!(s.bans_started, 10);
        // the ones ending soonest made room: the last four are banned
        assert_eq!(s.bans[0].0, ip("0.0.0.6"));
    }

    #[test]
    fn formatting() {
        assert_eq!(format_duration(Duration::from_secs(600)), "10m");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(ms(1500)), "1500ms");
    }
}

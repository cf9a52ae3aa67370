//! Bounded client tables: memory that a flood of new clients cannot grow without limit.
//!
//! The filter remembers something per client: a token bucket per rate rule (rate_limit.rs), the
//! times of recent rate-limit refusals (bans.rs). A client is an address, and an attacker has
//! many (an IPv6 /64 is 2^64 of them), so every such table is a [`Table`] that holds at most
//! `limits max_clients=N` entries (default [`DEFAULT_MAX_CLIENTS`]).
//!
//! When a table is full, which entries go is chosen so that dropping one never refuses anyone
//! wrongly (see [`Table`]). The ban table is capped too, but differently (bans.rs): a ban is
//! information, so a live ban is dropped only to make room for a new one.
//!
//! [`DEFAULT_MAX_CLIENTS`]: super::DEFAULT_MAX_CLIENTS

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Instant;

/// A client table with a size cap.
///
/// **What happens at the cap.** Nothing is done until an insert finds the table full. Then one
/// sweep runs: first it drops every *idle* entry, one that carries no information any more (a
/// token bucket that has refilled completely; a hit window whose last hit is older than the
/// window). If that frees less than an eighth of the table, the least recently active entries
/// (bucket: the one nearest to full; hit window: the oldest last hit) are dropped too, until an
/// eighth is free. A dropped client starts again with a full bucket and a clean hit count, the
/// same as a client never seen, so eviction can only make the filter more lenient, never refuse
/// someone wrongly.
///
/// **Cost.** A sweep is O(cap) and leaves at least cap/8 free slots, so it runs at most once per
/// cap/8 new clients: amortised O(1) per request. Requests from clients already in the table never
/// sweep. The table never holds more than `cap` entries (a HashMap's capacity is not given back,
/// so memory stays at the high-water mark, which is bounded by the cap).
#[derive(Debug)]
pub(super) struct Table<K, V> {
    /// The entries. Read and change them directly; insert new ones with [`Table::insert`].
    pub(super) map: HashMap<K, V>,
    cap: usize,
    /// Sweeps run so far (tests check the amortisation).
    sweeps: u64,
}

impl<K: Eq + Hash, V> Table<K, V> {
    /// An empty table of at most `cap` entries (at least 1).
    pub(super) fn new(cap: usize) -> Self {
        Table {
            map: HashMap::new(),
            cap: cap.max(1),
            sweeps: 0,
        }
    }

    /// Inserts a new entry, sweeping first when the table is full. `idle` tells an entry that
    /// carries no information any more; `age` tells when an entry was last active (the smallest
    /// ages are dropped first when dropping the idle ones is not enough).
    pub(super) fn insert(
        &mut self,
        key: K,
        value: V,
        idle: impl Fn(&V) -> bool,
        age: impl Fn(&V) -> Option<Instant>,
    ) -> &mut V {
        if self.map.len() >= self.cap {
            self.sweeps += 1;
            self.map.retain(|_, v| !idle(v));
            self.shrink(age);
        }
        self.map.entry(key).or_insert(value)
    }

    /// Drops the entries with the smallest `age` until at most `cap - max(cap/8, 1)` are left.
    fn shrink(&mut self, age: impl Fn(&V) -> Option<Instant>) {
        let target = self.cap - (self.cap / 8).max(1);
        if self.map.len() <= target {
            return;
        }
        let drop = self.map.len() - target;
        let mut ages: Vec<Option<Instant>> = self.map.values().map(&age).collect();
        let cutoff = *ages.select_nth_unstable(drop - 1).1;
        let older = ages.iter().filter(|a| **a < cutoff).count();
        let mut equal_to_drop = drop - older;
        self.map.retain(|_, v| {
            let a = age(v);
            if a < cutoff {
                false
            } else if a == cutoff && equal_to_drop > 0 {
                equal_to_drop -= 1;
                false
            } else {
                true
            }
        });
    }

    /// Applies a new cap; an over-full table is cut down at once.
    pub(super) fn set_cap(&mut self, cap: usize, age: impl Fn(&V) -> Option<Instant>) {
        self.cap = cap.max(1);
        if self.map.len() > self.cap {
            self.shrink(age);
        }
    }
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use crate::filter::testing::{cfg, code, get, ip, ms};
    use crate::filter::Filter;
    use std::net::Ipv4Addr;
    use std::time::Instant;

    #[test]
    fn client_tables_never_exceed_the_cap() {
        let f = Filter::new(cfg("limits max_clients=64\nrate_limit rate=1/s burst=5\nban after=3 window=1m duration=1m\n"));
        let t = Instant::now();
        let client = |i: u32| Ipv4Addr::from(0x0a00_0000 + i).to_string();
        // 10 000 distinct clients at one instant: none is idle, so the oldest go
        for i in 0..10_000u32 {
            assert_eq!(code(&f, &get(&client(i), "/"), t + ms(i as u64 / 100)), 200);
            let inner = f.inner.lock();
            assert!(inner.buckets.map.len() <= 64, "{}", inner.buckets.map.len());
        }
        {
            let inner = f.inner.lock();
            // amortised: a sweep frees an eighth, so at most one sweep per 8 new clients
            assert!(
                inner.buckets.sweeps <= 10_000 / 8 + 1,
                "{}",
                inner.buckets.sweeps
            );
            // the survivors are the most recent clients
            assert!(inner.buckets.map.contains_key(&(ip(&client(9_999)), 0)));
            assert!(!inner.buckets.map.contains_key(&(ip(&client(0)), 0)));
        }
        // a dropped client starts again with a full bucket
        for _ in 0..5 {
            assert_eq!(code(&f, &get(&client(0), "/"), t + ms(100)), 200);
        }
        assert_eq!(code(&f, &get(&client(0), "/"), t + ms(100)), 429);
        // hit windows are capped too
        for i in 0..2_000u32 {
            let h = get(&client(20_000 + i), "/");
            for _ in 0..6 {
                code(&f, &h, t + ms(200));
            }
            let inner = f.inner.lock();
            assert!(inner.bans.hits.map.len() <= 64 && inner.buckets.map.len() <= 64);
        }
        assert!(f.stats(t + ms(200)).tracked <= 128);
    }

    #[test]
    fn idle_entries_are_swept_first() {
        let f = Filter::new(cfg(
            "limits max_clients=100\nrate_limit rate=10/s burst=10\n",
        ));
        let t = Instant::now();
        // 99 clients use one token each and become idle (full again) after 100ms
        for i in 0..99u32 {
            code(&f, &get(&Ipv4Addr::from(i).to_string(), "/"), t);
        }
        // one busy client whose bucket is still draining
        let busy = get("192.0.2.1", "/");
        for _ in 0..10 {
            assert_eq!(code(&f, &busy, t + ms(150)), 200);
        }
        // a newcomer finds the table full: the 99 idle ones go, the busy one stays
        code(&f, &get("192.0.2.2", "/"), t + ms(200));
        let inner = f.inner.lock();
        assert_eq!(inner.buckets.sweeps, 1);
        assert_eq!(inner.buckets.map.len(), 2);
        assert!(inner.buckets.map.contains_key(&(ip("192.0.2.1"), 0)));
    }

    #[test]
    fn shrinking_the_cap_on_reload_cuts_the_tables() {
        let f = Filter::new(cfg("rate_limit rate=1/s\n"));
        let t = Instant::now();
        for i in 0..1000u32 {
            code(
                &f,
                &get(&Ipv4Addr::from(i).to_string(), "/"),
                t + ms(i as u64),
            );
        }
        f.reconfigure(cfg("rate_limit rate=1/s\nlimits max_clients=10\n"));
        let inner = f.inner.lock();
        assert!(inner.buckets.map.len() <= 10);
        assert!(inner.buckets.map.contains_key(&(ip("0.0.3.231"), 0)));
    }
}

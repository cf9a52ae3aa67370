//! Shared limits: rate limits and bans kept in Redis for several balancers (`shared=on`), so
//! that N balancers behind DNS or ECMP let a client through at the limit, not at N times it, and
//! a client banned on one is refused by all.
//!
//! ```text
//! poller   Filter::check ── shared rule ──▶ near-cache: refused until T? ── yes ──▶ 429 at once
//!             │ no; Redis ready?  no ──▶ the fallback, at once (local rate/N, open, or 503)
//!             ▼ yes: park the request (http::Admission::Later), send a Check
//! redis thread (store.rs): each loop, every waiting Check in one pipeline of EVALSHA gcra.lua
//!             │ settle each request's Deferred: channel + poller.notify()
//!             ▼
//! poller   Filter::settle: allowed · 429 (near-cache: refused until T) · 403 banned · fallback
//!
//! ban thread (subscriber.rs): SUBSCRIBE lb:bans ──▶ local ban table (every balancer refuses)
//! ```
//!
//! Files: `gcra.lua` (the algorithm, with its worked example: start there), `keys.rs` (what is
//! kept in Redis, under which names), `store.rs` (the Redis thread: pipelining, timeouts, the
//! fallback, probing, the heartbeat, bans published and read again), `outage.rs` (when to fall
//! back and when to probe, with its worked example), `subscriber.rs` (bans from
//! other balancers), `connect.rs` (connections with bounded waits), `status.rs` (what `/status`
//! and `/metrics` show).
//!
//! # The near-cache
//!
//! A refusal never moves a GCRA bucket's tat (gcra.lua), so a client refused with "a token is
//! back in `wait`" is refused by every call until then, whichever balancer makes it: the filter
//! keeps "refused until T" per client and rule and answers 429 itself until T. A flood from one
//! client costs about one Redis call per `Retry-After` period. T is counted from when the check
//! was *sent*, before Redis ran it, so the cache can only end early, never refuse a request
//! Redis would admit. With shared bans the cache is not used: each refusal must be counted in
//! Redis (a flooding client is banned after `after + 1` of them, and then costs no call).
//!
//! # When Redis is slow or gone
//!
//! No request waits on Redis longer than `timeout=` plus [`PARK_MARGIN`], plus at most the
//! millisecond by which the poller's timers may be late (`epoll_wait` counts milliseconds): the
//! poller resumes a parked request at that deadline (store.rs's own socket timeouts are
//! coarser), and a check that gets no answer in time is decided by the fallback
//! (`fallback=local`: this balancer's own bucket at rate/N and burst/N, N from `instances=` or
//! the heartbeats; `open`: admitted; `closed`: 503).
//! After three failed calls in a row the balancer stops asking until Redis answers a probe.

mod connect;
mod keys;
mod outage;
mod status;
mod store;
mod subscriber;

use std::io;
use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{unbounded, Sender};

pub use connect::{probe, Problem};
pub use outage::{FAILURES_TO_FALLBACK, FIRST_PROBE, MAX_PROBE};
pub use status::{SharedStats, SharedStatus, RECENT_RTTS, RTT_BUCKETS};
pub use store::HEARTBEAT;

use crate::config::filter::BanConfig;
use crate::config::shared::{Instances, SharedConfig};
use crate::http::Deferred;
use crate::supervise::{self, Thread};

use connect::Endpoint;
use keys::Keys;
use store::Store;

/// What a parked request may wait beyond `timeout=` for its answer to travel back. 1 ms: the
/// poller's timer may fire up to a millisecond late, so a parked request waits at most
/// `timeout=` + 2 ms.
pub const PARK_MARGIN: Duration = Duration::from_millis(1);

/// The GCRA script (gcra.lua), sent with `SCRIPT LOAD` and run with `EVALSHA`.
pub const SCRIPT: &str = include_str!("gcra.lua");

/// The SHA1 of [`SCRIPT`], by which `EVALSHA` runs it.
pub fn script_sha() -> String {
    redis::Script::new(SCRIPT).get_hash().to_string()
}

/// Where bans learnt from Redis go: the client and how long its ban has left.
pub type BanSink = Arc<dyn Fn(IpAddr, Duration) + Send + Sync>;

/// What Redis said of one check: the note a deferred admission is settled with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A token was taken.
    Allowed,
    /// Refused: a token is back after this long.
    Limited(Duration),
    /// Refused: banned for this long still.
    Banned(Duration),
    /// Refused, and this refusal was one too many: banned from now for this long.
    BannedNow(Duration),
    /// No answer in time, or an error: decided by the fallback.
    Unknown,
}

/// The answer to one check.
#[derive(Clone, Copy, Debug)]
pub struct Answer {
    /// What Redis said.
    pub outcome: Outcome,
    /// When the check was sent (the near-cache counts from it).
    pub asked: Instant,
}

/// One shared check, on its way to the Redis thread.
pub(crate) struct Check {
    /// The script's keys: the rule's bucket, the client's hits, the client's ban.
    keys: [String; 3],
    interval: Duration,
    depth: Duration,
    /// The ban, when bans are shared.
    ban: Option<BanConfig>,
    client: IpAddr,
    asked: Instant,
    deferred: Deferred,
}

/// What the Redis thread is asked to do.
pub(crate) enum Job {
    /// Run a check.
    Check(Box<Check>),
    /// Read the bans again (the subscription was made again).
    Resync,
}

/// The shared store as the filter sees it: the way to the Redis thread and its state. Dropped,
/// it stops its threads.
pub struct SharedLimits {
    jobs: Sender<Job>,
    status: Arc<SharedStatus>,
    keys: Keys,
    timeout: Duration,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for SharedLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimits")
            .field("status", &self.status)
            .finish()
    }
}

impl SharedLimits {
    /// Starts the Redis thread (`redis`) and the ban subscriber (`redis-bans`) for `config`;
    /// bans learnt from Redis go to `on_ban`. Returns once the first connection is made or has
    /// failed (the balancer then starts in its fallback), at most about three
    /// `connect_timeout=`s: a balancer that starts next to a working Redis shares its limits
    /// from its first request.
    pub fn start(config: &SharedConfig, on_ban: BanSink) -> io::Result<SharedLimits> {
        let (jobs, waiting) = unbounded();
        let status = Arc::new(SharedStatus::new(config));
        let stop = Arc::new(AtomicBool::new(false));
        let endpoint = Endpoint::new(config);
        let keys = Keys::new(&config.prefix);
        let heartbeat = (config.instances == Instances::Auto).then(instance_id);
        let store = {
            let (endpoint, keys, status) = (endpoint.clone(), keys.clone(), Arc::clone(&status));
            let (on_ban, stop) = (Arc::clone(&on_ban), Arc::clone(&stop));
            move || {
                Store::new(
                    endpoint.clone(),
                    keys.clone(),
                    Arc::clone(&status),
                    Arc::clone(&on_ban),
                    heartbeat.clone(),
                    Arc::clone(&stop),
                    waiting.clone(),
                )
            }
        };
        spawn_supervised("redis", move || store().run())?;
        let (channel, to_store, stop_bans) = (keys.bans(), jobs.clone(), Arc::clone(&stop));
        spawn_supervised("redis-bans", move || {
            subscriber::run(&endpoint, &channel, &on_ban, &to_store, &stop_bans)
        })?;
        let deadline = Instant::now() + config.connect_timeout * 3 + Duration::from_millis(100);
        while !status.ready() && !status.in_fallback() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        Ok(SharedLimits {
            jobs,
            status,
            keys,
            timeout: config.timeout,
            stop,
        })
    }

    /// The store's state.
    pub fn status(&self) -> &Arc<SharedStatus> {
        &self.status
    }

    /// How long the poller keeps a parked request at most: `timeout=` and [`PARK_MARGIN`]. The
    /// poller resumes the request at that deadline itself (with the fallback), so the wait is
    /// bounded even though the Redis thread's socket timeouts are only as fine as the kernel's
    /// clock tick (a 5 ms `SO_RCVTIMEO` ends after 8 to 12 ms on a 250 Hz kernel).
    pub fn within(&self) -> Duration {
        self.timeout + PARK_MARGIN
    }

    /// Sends one check to the Redis thread; its answer settles `deferred`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn ask(
        &self,
        client: IpAddr,
        rule: Option<&str>,
        interval: Duration,
        depth: Duration,
        ban: Option<BanConfig>,
        asked: Instant,
        deferred: Deferred,
    ) {
        let keys = [
            self.keys.rate(client, rule),
            self.keys.hits(client),
            self.keys.ban(client),
        ];
        let check = Check {
            keys,
            interval,
            depth,
            ban,
            client,
            asked,
            deferred,
        };
        // The thread is gone only at shutdown: the dropped Deferred then settles without a note.
        let _ = self.jobs.send(Job::Check(Box::new(check)));
    }
}

impl SharedLimits {
    /// Stops the threads (at shutdown): the Redis thread takes this instance out of the
    /// heartbeats and ends within a second, the subscriber too.
    pub fn stop(&self) {
        self.stop.store(true, Relaxed);
    }
}

impl Drop for SharedLimits {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts a thread that runs `body` again after a panic (logged and counted): each run starts
/// from a fresh connection, and the checks of a run that panicked are settled without a note
/// (their handles are dropped), so their requests are decided by the fallback.
fn spawn_supervised(
    name: &str,
    body: impl Fn() + Send + 'static,
) -> io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name(name.into())
        .spawn(move || loop {
            match catch_unwind(AssertUnwindSafe(|| {
                supervise::check_point(Thread::SharedStore);
                body()
            })) {
                Ok(()) => return,
                Err(panic) => {
                    supervise::survived(Thread::SharedStore, "talking to Redis", &*panic);
                    thread::sleep(FIRST_PROBE);
                }
            }
        })
}

/// This balancer's heartbeat member: host name, process id and start time, unique enough.
fn instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{host}:{}:{started}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::shared::Fallback;
    use crate::filter::testing::{cfg, get, ip, ms};
    use crate::filter::{Checked, Filter};
    use crate::http::Framing;

    /// A filter with `lines` and a store with no thread: the test answers the checks itself
    /// (`settle`) and sets the store's state.
    fn filter(lines: &str) -> (Filter, Arc<SharedStatus>) {
        let config = cfg(lines);
        let shared = config.shared.clone().unwrap();
        let (jobs, _) = unbounded();
        let status = Arc::new(SharedStatus::new(&shared));
        let store = SharedLimits {
            jobs,
            status: Arc::clone(&status),
            keys: Keys::new(&shared.prefix),
            timeout: shared.timeout,
            stop: Arc::new(AtomicBool::new(false)),
        };
        let f = Filter::new(config);
        f.attach_shared(store);
        (f, status)
    }

    /// Checks `client`'s GET /: the status (200 when admitted) and whether it must be asked of
    /// Redis (then the status is 0).
    fn check(f: &Filter, client: &str, now: Instant) -> u16 {
        match f.check(&get(client, "/"), Framing::None, now) {
            Checked::Ask(_) => 0,
            Checked::Done {
                verdict: Ok(()), ..
            } => 200,
            Checked::Done {
                verdict: Err(r), ..
            } => r.status,
        }
    }

    /// Settles `client`'s check with `outcome` (asked at `asked`): the status and Retry-After.
    fn settle(
        f: &Filter,
        client: &str,
        outcome: Option<Outcome>,
        asked: Instant,
        now: Instant,
    ) -> (u16, Option<u32>, Option<&'static str>) {
        let answer = outcome.map(|outcome| Answer { outcome, asked });
        match f.settle(&get(client, "/"), answer, now) {
            (Ok(()), limit) => (200, None, limit.map(|l| l.name())),
            (Err(r), limit) => (r.status, r.retry_after, limit.map(|l| l.name())),
        }
    }

    const SHARED: &str =
        "shared redis=redis://127.0.0.1:1 instances=2\nrate_limit rate=10/s burst=10 shared=on\n";

    #[test]
    fn redis_answers_and_the_near_cache_keeps_its_refusals() {
        let (f, status) = filter(SHARED);
        status.set_ready(true);
        let t = Instant::now();
        assert_eq!(check(&f, "10.0.0.1", t), 0, "asked of Redis");
        assert_eq!(
            settle(&f, "10.0.0.1", Some(Outcome::Allowed), t, t),
            (200, None, Some("shared"))
        );
        // Refused with a token back in 1.5 s: refused here until then, without asking.
        let refused = settle(
            &f,
            "10.0.0.1",
            Some(Outcome::Limited(ms(1500))),
            t,
            t + ms(1),
        );
        assert_eq!(refused, (429, Some(2), Some("shared")));
        assert_eq!(check(&f, "10.0.0.1", t + ms(1000)), 429);
        assert_eq!(
            check(&f, "10.0.0.2", t + ms(1000)),
            0,
            "another client is asked"
        );
        // From when it was asked: at asked + wait, Redis is asked again.
        assert_eq!(check(&f, "10.0.0.1", t + ms(1500)), 0);
    }

    #[test]
    fn without_an_answer_the_fallback_decides() {
        let (f, status) = filter(SHARED);
        status.set_ready(true);
        let t = Instant::now();
        // An unknown answer (a timeout) and none at all: the local share, 5 of the 10.
        for i in 0..5 {
            let outcome = (i % 2 == 0).then_some(Outcome::Unknown);
            assert_eq!(settle(&f, "10.0.0.1", outcome, t, t).0, 200, "{i}");
        }
        assert_eq!(
            settle(&f, "10.0.0.1", None, t, t),
            (429, Some(1), Some("local-fallback"))
        );
        // Redis away: decided at once, without asking.
        status.set_ready(false);
        assert_eq!(check(&f, "10.0.0.1", t + ms(199)), 429);
        assert_eq!(
            check(&f, "10.0.0.1", t + ms(200)),
            200,
            "5/s: a token every 200 ms"
        );
    }

    #[test]
    fn open_admits_and_closed_answers_503() {
        let (f, _) = filter(&SHARED.replace("instances=2", "fallback=open"));
        let t = Instant::now();
        for _ in 0..50 {
            assert_eq!(check(&f, "10.0.0.1", t), 200);
        }
        let (f, _) = filter(&SHARED.replace("instances=2", "fallback=closed"));
        let head = get("10.0.0.1", "/");
        let Checked::Done {
            verdict: Err(r),
            limit,
        } = f.check(&head, Framing::None, t)
        else {
            panic!("closed refuses");
        };
        assert_eq!(
            (r.status, r.retry_after, r.code),
            (503, Some(1), "shared_unavailable")
        );
        assert_eq!(
            limit,
            Some(crate::filter::LimitSource::Fallback(Fallback::Closed))
        );
    }

    #[test]
    fn shared_bans_are_kept_here_once_redis_says_so() {
        let (f, status) = filter(&format!("{SHARED}ban after=1 shared=on\n"));
        status.set_ready(true);
        let t = Instant::now();
        // With shared bans every refusal goes to Redis (it counts them): no near-cache.
        assert_eq!(
            settle(&f, "10.0.0.1", Some(Outcome::Limited(ms(900))), t, t).0,
            429
        );
        assert_eq!(check(&f, "10.0.0.1", t + ms(1)), 0);
        assert_eq!(
            settle(&f, "10.0.0.1", Some(Outcome::BannedNow(ms(600_000))), t, t).0,
            403
        );
        assert_eq!(
            check(&f, "10.0.0.1", t + ms(2)),
            403,
            "banned here, not asked"
        );
        // Banned by another balancer: learnt from the answer, or from the channel.
        assert_eq!(
            settle(&f, "10.0.0.2", Some(Outcome::Banned(ms(5000))), t, t).0,
            403
        );
        f.adopt_ban(ip("10.0.0.3"), ms(5000), t);
        assert_eq!(check(&f, "10.0.0.3", t + ms(4999)), 403);
        assert_eq!(check(&f, "10.0.0.3", t + ms(5000)), 0, "the ban has ended");
        assert_eq!(
            f.stats(t).bans_started,
            1,
            "only this balancer's own ban is counted"
        );
    }
}

//! The Redis thread: it alone owns the connection the checks go through (no pool), so the
//! poller never touches Redis.
//!
//! Each loop it takes every check waiting in its channel and sends them as one pipeline of
//! `EVALSHA` calls (one round trip however many there are), then settles each request's
//! [`Deferred`](crate::http::Deferred), which wakes the poller. Between checks it keeps the
//! heartbeat (`instances=auto`), and reads the bans again after any reconnect.
//!
//! # When Redis is slow or gone
//!
//! Every call has the `timeout=` of the `shared` line as its read and write timeout (the crate's
//! own are cleared after connecting: connect.rs). A call that fails or times out answers its
//! checks [`Outcome::Unknown`] at once (the filter applies the fallback to them), drops the
//! connection (late replies must never be read as answers to later calls) and connects again.
//! After [`FAILURES_TO_FALLBACK`](super::FAILURES_TO_FALLBACK) failures in a row the balancer is
//! *in its fallback*: logged once, shown in `/status`, and the poller no longer sends checks
//! (they are decided locally at once). The thread then probes (connect, `PING`, `SCRIPT LOAD`)
//! after [`FIRST_PROBE`](super::FIRST_PROBE), doubling up to [`MAX_PROBE`](super::MAX_PROBE),
//! and comes back by itself, logging that too. When to do what is outage.rs's, with its worked
//! example.
//!
//! A timed-out call is *unknown*, not "not counted": Redis may have run it (a stopped server
//! runs what was sent once it is continued), so its tokens may be taken although the request
//! was decided by the fallback. The README's "Several balancers" says what that means for
//! accuracy.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use redis::{Connection, Value};

use super::connect::{Endpoint, Problem};
use super::keys::Keys;
use super::outage::{AfterFailure, Outage};
use super::status::{CallResult, SharedStatus};
use super::{Answer, BanSink, Check, Job, Outcome, SCRIPT};

/// How often an instance beats (`instances=auto`). 1 s; a beat older than three of these no
/// longer counts.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// Most checks sent in one pipeline. 1000.
const MAX_BATCH: usize = 1000;

/// The Redis thread's state (see the module documentation).
pub(super) struct Store {
    endpoint: Endpoint,
    keys: Keys,
    script: redis::Script,
    con: Option<Connection>,
    status: Arc<SharedStatus>,
    on_ban: BanSink,
    /// Failures in a row, the fallback, the probes.
    outage: Outage,
    /// This instance's heartbeat member and when it next beats (`instances=auto`).
    heartbeat: Option<(String, Instant)>,
    /// The credentials problem last logged (logged again only when it changes, not at every
    /// probe).
    auth_logged: Option<String>,
    stop: Arc<AtomicBool>,
    waiting: Receiver<Job>,
}

impl Store {
    pub(super) fn new(
        endpoint: Endpoint,
        keys: Keys,
        status: Arc<SharedStatus>,
        on_ban: BanSink,
        heartbeat: Option<String>,
        stop: Arc<AtomicBool>,
        waiting: Receiver<Job>,
    ) -> Store {
        let now = Instant::now();
        Store {
            endpoint,
            keys,
            script: redis::Script::new(SCRIPT),
            con: None,
            status,
            on_ban,
            outage: Outage::new(now),
            heartbeat: heartbeat.map(|id| (id, now)),
            auth_logged: None,
            stop,
            waiting,
        }
    }

    /// Runs until the channel closes or the balancer stops.
    pub(super) fn run(mut self) {
        let jobs = self.waiting.clone();
        if let Err(p) = self.open() {
            let first = self.outage.fall_back(Instant::now());
            self.fallen(first, &p);
        }
        let mut batch: Vec<Check> = Vec::new();
        while !self.stop.load(Relaxed) {
            let wait = self.next_timer().saturating_duration_since(Instant::now());
            let mut resync = false;
            match jobs.recv_timeout(wait.min(Duration::from_secs(1))) {
                Ok(job) => job.sort(&mut batch, &mut resync),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(job) => job.sort(&mut batch, &mut resync),
                    Err(_) => break,
                }
            }
            self.checks(std::mem::take(&mut batch), true);
            if resync {
                self.resync();
            }
            self.timers();
        }
        self.leave();
    }

    /// The next heartbeat or probe.
    fn next_timer(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(1);
        if self.con.is_none() {
            return self.outage.next_probe().min(far);
        }
        self.heartbeat
            .as_ref()
            .map_or(far, |(_, at)| (*at).min(far))
    }

    /// Probes when in the fallback, beats when connected.
    fn timers(&mut self) {
        let now = Instant::now();
        if self.con.is_none() {
            if now >= self.outage.next_probe() {
                self.try_again();
            }
            return;
        }
        if let Some((_, at)) = &self.heartbeat {
            if now >= *at {
                self.beat();
            }
        }
    }

    /// Connects and sets the connection up: `PING` (a missing password shows here), the script
    /// loaded, the timeouts of every call. On success the poller sends checks again and the
    /// bans are read again (pub/sub is at most once: what was published meanwhile is lost).
    fn open(&mut self) -> Result<(), Problem> {
        self.status.set_ready(false);
        let started = Instant::now();
        let mut con = self
            .endpoint
            .connect()
            .inspect_err(|p| self.note(p, started))?;
        let setup = (|| -> Result<(), Problem> {
            redis::cmd("PING").query::<String>(&mut con)?;
            self.script.load(&mut con)?;
            self.endpoint.for_calls(&con)
        })();
        setup.inspect_err(|p| self.note(p, started))?;
        self.status.record(CallResult::Ok, started.elapsed());
        self.con = Some(con);
        self.status.set_connected(true);
        self.status.set_ready(true);
        self.resync();
        self.beat();
        // Either may have failed, and a failure drops the connection (and may have connected
        // again, or fallen back): say whether this balancer is connected now.
        match self.con {
            Some(_) => Ok(()),
            None => Err(Problem::Other(
                "the connection failed while being set up".into(),
            )),
        }
    }

    /// Records a failed call (timed out or not) and its problem.
    fn note(&mut self, problem: &Problem, started: Instant) {
        let result = match problem {
            Problem::Timeout(_) => CallResult::Timeout,
            _ => CallResult::Error,
        };
        self.status.record(result, started.elapsed());
        self.status.set_error(problem.text().to_string());
        if let Problem::Auth(text) = problem {
            if self.auth_logged.as_ref() != Some(text) {
                log::error!(
                    "shared limits: Redis at {} refused the credentials: {text}",
                    self.endpoint.name
                );
                self.auth_logged = Some(text.clone());
            }
        }
    }

    /// A call failed: drop the connection; connect again at once, or fall back after
    /// [`FAILURES_TO_FALLBACK`](super::FAILURES_TO_FALLBACK) in a row.
    fn failed(&mut self, problem: Problem, started: Instant) {
        self.note(&problem, started);
        self.drop_connection();
        // The poller sends no more checks; those already sent are answered now rather than
        // after the reconnection (a bounded wait, but longer than `timeout=`).
        self.answer_waiting();
        if let AfterFailure::FallBack { first } = self.outage.failed(Instant::now()) {
            return self.fallen(first, &problem);
        }
        if let Err(p) = self.open() {
            if let AfterFailure::FallBack { first } = self.outage.failed(Instant::now()) {
                self.fallen(first, &p);
            }
        }
    }

    /// Answers the checks waiting in the channel [`Outcome::Unknown`] (the resyncs asked are
    /// done by the next connection anyway).
    fn answer_waiting(&self) {
        while let Ok(job) = self.waiting.try_recv() {
            if let Job::Check(c) = job {
                c.settle(Outcome::Unknown);
            }
        }
    }

    fn drop_connection(&mut self) {
        self.con = None;
        self.status.set_ready(false);
        self.status.set_connected(false);
    }

    /// In the fallback (the outage says so): no connection; `first`, the fallback has just
    /// begun: shown in the status and logged, once.
    fn fallen(&mut self, first: bool, problem: &Problem) {
        self.drop_connection();
        if !first {
            return;
        }
        self.status.set_fallback(true);
        let fallback = self.status.fallback();
        let how = match fallback {
            crate::config::shared::Fallback::Local => format!(
                "each balancer limits alone at rate/{}",
                self.status.instances()
            ),
            crate::config::shared::Fallback::Open => "shared limits admit everything".into(),
            crate::config::shared::Fallback::Closed => "shared limits answer 503".into(),
        };
        log::warn!(
            "shared limits: Redis at {} does not answer ({}): fallback={} ({how}) until it does",
            self.endpoint.name,
            problem.text(),
            fallback.name()
        );
    }

    /// A probe in the fallback: back to shared limits if Redis answers, else wait longer.
    fn try_again(&mut self) {
        match self.open() {
            Ok(()) => {
                // A connection lost without a fallback comes back silently.
                let Some(down) = self.outage.recovered(Instant::now()) else {
                    return;
                };
                self.status.set_fallback(false);
                log::info!(
                    "shared limits: Redis at {} answers again after {:.1}s: limits are shared again",
                    self.endpoint.name,
                    down.as_secs_f64()
                );
            }
            Err(p) => {
                let first = self.outage.probe_failed(Instant::now());
                self.fallen(first, &p);
                log::debug!("shared limits: probe failed: {}", p.text());
            }
        }
    }

    /// Sends `checks` as one pipeline and settles each. `retry`: a check that finds its script
    /// missing (`NOSCRIPT`: Redis restarted) is sent again once the script is loaded.
    fn checks(&mut self, checks: Vec<Check>, retry: bool) {
        if checks.is_empty() {
            return;
        }
        let Some(con) = self.con.as_mut() else {
            return answer_all(checks, Outcome::Unknown);
        };
        let mut pipe = redis::pipe();
        for c in &checks {
            c.add_to(&mut pipe, self.script.get_hash());
        }
        let started = Instant::now();
        let replies = match pipe.ignore_errors().query::<Vec<Value>>(con) {
            Ok(replies) if replies.len() == checks.len() => replies,
            Ok(_) => {
                let problem = Problem::Other("a pipeline answered the wrong count".into());
                answer_all(checks, Outcome::Unknown);
                return self.failed(problem, started);
            }
            Err(e) => {
                answer_all(checks, Outcome::Unknown);
                return self.failed(e.into(), started);
            }
        };
        self.status.record(CallResult::Ok, started.elapsed());
        self.outage.answered();
        let mut missing = Vec::new();
        let mut bans = Vec::new();
        for (check, reply) in checks.into_iter().zip(replies) {
            match read_reply(reply) {
                Reply::NoScript if retry => missing.push(check),
                Reply::Verdict(outcome, now) => {
                    if let Outcome::BannedNow(duration) = outcome {
                        bans.push((check.client, now, duration));
                    }
                    check.settle(outcome);
                }
                Reply::NoScript => check.settle(Outcome::Unknown),
                Reply::Error(e) => {
                    self.status.set_error(e);
                    check.settle(Outcome::Unknown);
                }
            }
        }
        if !missing.is_empty() {
            self.reload_script(missing);
        }
        if !bans.is_empty() {
            self.publish(&bans);
        }
    }

    /// `NOSCRIPT`: Redis lost the script (a restart); loads it and sends `missing` again.
    fn reload_script(&mut self, missing: Vec<Check>) {
        log::info!("shared limits: Redis lost the script (restarted?): loading it again");
        let started = Instant::now();
        let Some(con) = self.con.as_mut() else {
            return answer_all(missing, Outcome::Unknown);
        };
        match self.script.load(con) {
            Ok(_) => {
                self.status.record(CallResult::Ok, started.elapsed());
                self.checks(missing, false);
                self.resync();
            }
            Err(e) => {
                answer_all(missing, Outcome::Unknown);
                self.failed(e.into(), started);
            }
        }
    }

    /// Records new bans in the sorted set and publishes them: `IP END NOW`.
    fn publish(&mut self, bans: &[(IpAddr, u64, Duration)]) {
        let mut pipe = redis::pipe();
        let set = self.keys.bans();
        for (client, now, duration) in bans {
            let end = now + duration.as_micros() as u64;
            pipe.cmd("ZADD").arg(&set).arg(end).arg(client.to_string());
            pipe.cmd("ZREMRANGEBYSCORE").arg(&set).arg("-inf").arg(*now);
            pipe.cmd("PUBLISH")
                .arg(&set)
                .arg(format!("{client} {end} {now}"));
        }
        self.call::<redis::Value>(&pipe);
    }

    /// Reads every live ban from the sorted set into the ban table.
    fn resync(&mut self) {
        let Some(con) = self.con.as_mut() else {
            return;
        };
        let started = Instant::now();
        let now = match redis::cmd("TIME").query::<(u64, u64)>(con) {
            Ok((s, us)) => s * 1_000_000 + us,
            Err(e) => return self.failed(e.into(), started),
        };
        let set = self.keys.bans();
        let mut pipe = redis::pipe();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(&set)
            .arg("-inf")
            .arg(now)
            .ignore();
        pipe.cmd("ZRANGEBYSCORE")
            .arg(&set)
            .arg(format!("({now}"))
            .arg("+inf")
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(MAX_RESYNC);
        let Some((bans,)) = self.call::<(Vec<(String, u64)>,)>(&pipe) else {
            return;
        };
        let count = bans.len();
        for (client, end) in bans {
            if let Ok(ip) = client.parse() {
                (self.on_ban)(ip, Duration::from_micros(end.saturating_sub(now)));
            }
        }
        log::debug!("shared limits: {count} bans read from {set}");
    }

    /// Beats (`instances=auto`): this instance's time in the sorted set, the old beats out, and
    /// the count of the live ones is the N of the local fallback.
    fn beat(&mut self) {
        let Some((id, _)) = &self.heartbeat else {
            return;
        };
        let (id, set) = (id.clone(), self.keys.instances());
        let now_ms = unix_ms();
        let mut pipe = redis::pipe();
        pipe.cmd("ZADD").arg(&set).arg(now_ms).arg(&id).ignore();
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(&set)
            .arg("-inf")
            .arg(now_ms.saturating_sub(3 * HEARTBEAT.as_millis() as u64))
            .ignore();
        pipe.cmd("ZCARD").arg(&set);
        if let Some((n,)) = self.call::<(u32,)>(&pipe) {
            self.status.set_instances(n);
        }
        if let Some((_, at)) = &mut self.heartbeat {
            *at = Instant::now() + HEARTBEAT;
        }
    }

    /// Leaves the instance count at shutdown (best effort, one bounded call).
    fn leave(&mut self) {
        if let Some((id, _)) = self.heartbeat.take() {
            let mut pipe = redis::pipe();
            pipe.cmd("ZREM").arg(self.keys.instances()).arg(id).ignore();
            self.call::<()>(&pipe);
        }
    }

    /// One round trip on the connection, if there is one: timed, counted, and a failure handled.
    fn call<T: redis::FromRedisValue>(&mut self, pipe: &redis::Pipeline) -> Option<T> {
        let con = self.con.as_mut()?;
        let started = Instant::now();
        match pipe.query::<T>(con) {
            Ok(v) => {
                self.status.record(CallResult::Ok, started.elapsed());
                self.outage.answered();
                Some(v)
            }
            Err(e) => {
                self.failed(e.into(), started);
                None
            }
        }
    }
}

/// Most bans read at a resync. 100 000 (the default `max_clients`).
const MAX_RESYNC: usize = 100_000;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn answer_all(checks: Vec<Check>, outcome: Outcome) {
    for c in checks {
        c.settle(outcome);
    }
}

/// One reply of the script.
enum Reply {
    /// The verdict, and Redis's clock (microseconds).
    Verdict(Outcome, u64),
    /// `NOSCRIPT`: the script must be loaded again.
    NoScript,
    /// Any other error.
    Error(String),
}

/// Reads the script's `{verdict, microseconds, now}`.
fn read_reply(reply: Value) -> Reply {
    let us = |v: &Value| match v {
        Value::Int(n) => Some(*n as u64),
        _ => None,
    };
    match reply {
        Value::ServerError(e) if e.code() == "NOSCRIPT" => Reply::NoScript,
        Value::ServerError(e) => Reply::Error(e.to_string()),
        Value::Array(items) if items.len() == 3 => {
            let (Some(verdict), Some(n), Some(now)) = (us(&items[0]), us(&items[1]), us(&items[2]))
            else {
                return Reply::Error("the script answered something else".into());
            };
            let d = Duration::from_micros(n);
            let outcome = match verdict {
                0 => Outcome::Allowed,
                1 => Outcome::Limited(d),
                2 => Outcome::Banned(d),
                3 => Outcome::BannedNow(d),
                _ => return Reply::Error(format!("unknown verdict {verdict}")),
            };
            Reply::Verdict(outcome, now)
        }
        _ => Reply::Error("the script answered something else".into()),
    }
}

impl Job {
    /// Puts a job where the loop deals with it.
    fn sort(self, batch: &mut Vec<Check>, resync: &mut bool) {
        match self {
            Job::Check(c) => batch.push(*c),
            Job::Resync => *resync = true,
        }
    }
}

impl Check {
    /// Adds this check's `EVALSHA` to `pipe`.
    fn add_to(&self, pipe: &mut redis::Pipeline, sha: &str) {
        let (after, window, duration) = self.ban.map_or((0, 0, 0), |b| {
            (
                b.after,
                b.window.as_micros() as u64,
                b.duration.as_micros() as u64,
            )
        });
        pipe.cmd("EVALSHA")
            .arg(sha)
            .arg(3)
            .arg(&self.keys)
            .arg(self.interval.as_micros() as u64)
            .arg(self.depth.as_micros() as u64)
            .arg(after)
            .arg(window)
            .arg(duration);
    }

    /// Settles the request's admission with `outcome`.
    fn settle(self, outcome: Outcome) {
        let answer = Answer {
            outcome,
            asked: self.asked,
        };
        self.deferred.settle(Box::new(answer));
    }
}

//! Explaining a decision: why a request went where it went, in the terms of the algorithms that
//! decided it. With `explain on` (default off; on with `--demo`), a request that carries
//! `X-Balancer-Explain: 1` gets its answer with a header of the same name, and the dashboard
//! shows the last [`RECENT`] decisions of all requests in the same words.
//!
//! # The format
//!
//! One line of ASCII, at most [`MAX_LEN`] bytes: fields separated by `"; "`, each `name=value`,
//! in this order, each only when it has something to say. Lists separate their items with `,`;
//! an item of `cw` or `ew` is `NAME:VALUE`, and backend names are `host:port`, so an item splits
//! at its *last* `:`. Weights and scores are in units of the configured weight, as in nginx's
//! worked example (up to two decimals).
//!
//! | field | value |
//! | --- | --- |
//! | `filter` | `pass` (the filter has rules and let the request through) or `refused` |
//! | `limit` | which limit decided, when a `shared=on` rate limit applies: `shared` (Redis, or what it said), `local-fallback`, `open-fallback` or `closed-fallback` (Redis did not answer). For a forwarded request, the mode when it was forwarded |
//! | `pick` | the backend of the last attempt, or `none` when no backend could take the request |
//! | `cw` | each backend's smooth WRR score in the last pick: `COMPARED>AFTER`, the score the pick compared (its stored `current` plus its weight) and what is stored for the next pick (the chosen one lost the sum of the weights). A backend left out keeps its score: `x>x` |
//! | `ew` | each backend's effective weight; when it is not the configured weight, `EFFECTIVE/CONFIGURED(REASONS)`, the reasons being the factors below 100 % of the weight formula: `latency P%`, `failures P%`, `slow_start P%`, and `floor 5%` when their product fell under the floor |
//! | `skip` | backends this request's picks passed over, `NAME(REASON)`: `tried` (a retry goes elsewhere), `unhealthy`, `breaker_open Ns` (half-open in N seconds), `half_open_trial_taken` (the one trial request is in flight) |
//! | `retry` | attempts that failed and were retried on another backend, `NAME(CODE)`, CODE as in the access log (`backend_unreachable`, `connect_timeout`, ...) |
//! | `cut` | `1` where the line was cut after a whole item, to stay within [`MAX_LEN`] |
//! | `refused` | the balancer answered the request itself: `STATUS CODE` (`429 rate_limited`, `502 backend_unreachable`, `503 no_backend`, ...); always last, never cut |
//!
//! Example, weights 5:1:1, the first request:
//!
//! ```text
//! pick=127.0.0.1:8081; cw=127.0.0.1:8081:5>-2,127.0.0.1:8082:1>1,127.0.0.1:8083:1>1; ew=127.0.0.1:8081:5,127.0.0.1:8082:1,127.0.0.1:8083:1
//! ```
//!
//! # What it costs, and who sees it
//!
//! Nothing while `explain` is off: the request header is stripped before forwarding
//! (`proxy/headers.rs`) and ignored, and no trace is made ([`Pool::pick`] fills none). While it is
//! on, every request is explained (so the dashboard's panel moves under any load): its picks fill
//! a [`PickTrace`], the line is written once, and [`Decisions`] takes one short lock to keep it.
//! Only a client that asked gets the header. The line shows backend names, weights and breaker
//! states: turn `explain` on where clients may see that (a demo, a test, a trusted network).
//!
//! [`Pool::pick`]: crate::balance::selection::Pool::pick

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::balance::backend::{Backend, Unavailable};
use crate::balance::selection::{PickTrace, TracedPeer};
use crate::balance::weights::{MIN_FACTOR, SCALE};
use crate::http::RequestHead;

/// The request header that asks for an explanation (value `1`), and the response header that
/// carries it.
pub const HEADER: &str = "X-Balancer-Explain";

/// The longest explanation, in bytes. 1024: a long pool's lists are cut (`cut=1`).
pub const MAX_LEN: usize = 1024;

/// Decisions the dashboard shows. 20.
pub const RECENT: usize = 20;

/// The longest request target a recorded [`Decision`] keeps, in bytes. 120.
pub const TARGET_LEN: usize = 120;

/// True when the client asked for an explanation: `X-Balancer-Explain: 1`.
pub fn asked(head: &RequestHead) -> bool {
    head.header_values("x-balancer-explain")
        .any(|v| v.trim_ascii() == b"1")
}

/// The filter's verdict on a request, when the filter has rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterVerdict {
    /// It checked the request and let it through.
    Pass,
    /// It refused the request (the refusal is in [`Explanation::refused`]).
    Refused,
}

/// What one request's decision was, gathered while it is made, and written as the header's line
/// by [`Explanation::line`].
#[derive(Debug, Default)]
pub struct Explanation {
    /// The filter's verdict, when it checked the request.
    pub filter: Option<FilterVerdict>,
    /// Which limit decided, when a `shared=on` rate limit applied (`LimitSource::name`).
    pub limit: Option<&'static str>,
    /// What the picks saw: the last pick's scores, every pick's refusals.
    pub trace: PickTrace,
    /// The backend of the last attempt; `None` with a trace: no backend could be picked.
    pub chosen: Option<Arc<Backend>>,
    /// Attempts that failed and were retried elsewhere: the backend and the failure's code.
    pub retries: Vec<(Arc<Backend>, &'static str)>,
    /// The status and code of the balancer's own answer, when it gave one.
    pub refused: Option<(u16, &'static str)>,
}

impl Explanation {
    /// The explanation of a request refused before any pick: by the filter (`filter` is
    /// `Some(Refused)`) or by admission.
    pub fn refusal(filter: Option<FilterVerdict>, status: u16, code: &'static str) -> Explanation {
        Explanation {
            filter,
            refused: Some((status, code)),
            ..Explanation::default()
        }
    }

    /// The line, as the module documentation describes it: ASCII, at most [`MAX_LEN`] bytes.
    pub fn line(&self) -> String {
        let mut fields: Vec<String> = Vec::new();
        if let Some(verdict) = self.filter {
            let verdict = match verdict {
                FilterVerdict::Pass => "pass",
                FilterVerdict::Refused => "refused",
            };
            fields.push(format!("filter={verdict}"));
        }
        if let Some(limit) = self.limit {
            fields.push(format!("limit={limit}"));
        }
        let peers = &self.trace.peers;
        if self.chosen.is_some() || !peers.is_empty() {
            let name = self.chosen.as_ref().map_or("none", |b| b.name.as_str());
            fields.push(format!("pick={name}"));
        }
        if !peers.is_empty() {
            fields.push(list("cw", peers.iter().map(score)));
            fields.push(list("ew", peers.iter().map(effective)));
        }
        let skipped = self.skipped();
        if !skipped.is_empty() {
            fields.push(list("skip", skipped.into_iter()));
        }
        if !self.retries.is_empty() {
            let retries = self.retries.iter();
            fields.push(list(
                "retry",
                retries.map(|(b, code)| format!("{}({code})", b.name)),
            ));
        }
        let refused = self.refused.map(|(status, code)| refused(status, code));
        bounded(ascii(fields.join("; ")), refused.as_deref())
    }

    /// `NAME(REASON)` for each backend a pick passed over, each named once: the ones this request
    /// had tried, then the ones the availability refused.
    fn skipped(&self) -> Vec<String> {
        let mut seen: Vec<u64> = Vec::new();
        let tried = self.retries.iter().map(|(b, _)| (b, "tried".to_string()));
        let refused = self.trace.refused.iter().map(|(b, why)| (b, reason(*why)));
        tried
            .chain(refused)
            .filter(|(b, _)| {
                let first = !seen.contains(&b.id);
                seen.push(b.id);
                first
            })
            .map(|(b, why)| format!("{}({why})", b.name))
            .collect()
    }
}

/// `name=a,b,c`.
fn list(name: &str, items: impl Iterator<Item = String>) -> String {
    format!("{name}={}", items.collect::<Vec<_>>().join(","))
}

/// `NAME:COMPARED>AFTER`.
fn score(p: &TracedPeer) -> String {
    format!(
        "{}:{}>{}",
        p.backend.name,
        units(p.compared),
        units(p.after)
    )
}

/// `NAME:EFFECTIVE`, or `NAME:EFFECTIVE/CONFIGURED(REASONS)` when they differ.
fn effective(p: &TracedPeer) -> String {
    let (weight, factors) = p.effective;
    let configured = p.backend.weight();
    let mut item = format!("{}:{}", p.backend.name, units(i64::from(weight)));
    if weight == configured * SCALE {
        return item;
    }
    let _ = write!(item, "/{configured}");
    let mut reasons: Vec<String> = [
        ("latency", factors.latency),
        ("failures", factors.failures),
        ("slow_start", factors.slow_start),
    ]
    .into_iter()
    .filter(|(_, f)| *f < 1.0)
    .map(|(name, f)| format!("{name} {}", percent(f)))
    .collect();
    if factors.product() < MIN_FACTOR {
        reasons.push(format!("floor {}", percent(MIN_FACTOR)));
    }
    if !reasons.is_empty() {
        let _ = write!(item, "({})", reasons.join(" "));
    }
    item
}

/// Why a backend was refused, in the line's words.
fn reason(why: Option<Unavailable>) -> String {
    match why {
        Some(Unavailable::Unhealthy) => "unhealthy".into(),
        Some(Unavailable::BreakerOpen { left }) => format!("breaker_open {}s", ceil_secs(left)),
        Some(Unavailable::TrialTaken) => "half_open_trial_taken".into(),
        None => "unavailable".into(),
    }
}

/// Whole seconds, rounded up: a breaker open for 0.2 s more is "open 1s", never "open 0s".
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// A weight or score kept in units of [`SCALE`], in units of the configured weight: `500` is
/// `5`, `-200` is `-2`, `40` is `0.4`, `125` is `1.25`.
fn units(v: i64) -> String {
    let scale = i64::from(SCALE);
    let sign = if v < 0 { "-" } else { "" };
    let (whole, frac) = (v.abs() / scale, v.abs() % scale);
    match frac {
        0 => format!("{sign}{whole}"),
        f if f % 10 == 0 => format!("{sign}{whole}.{}", f / 10),
        f => format!("{sign}{whole}.{f:02}"),
    }
}

/// A factor as a percentage to the nearest tenth: `0.4` is `40%`, `0.072` is `7.2%`.
fn percent(f: f64) -> String {
    let per_mille = (f * 1000.0).round() as u64;
    match per_mille % 10 {
        0 => format!("{}%", per_mille / 10),
        d => format!("{}.{d}%", per_mille / 10),
    }
}

/// `s` with every byte outside printable ASCII replaced by `?`: a header value must be ASCII
/// (backend names are, but nothing here should rely on it).
fn ascii(s: String) -> String {
    if s.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return s;
    }
    s.chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect()
}

/// The `refused` field.
fn refused(status: u16, code: &str) -> String {
    format!("refused={status} {code}")
}

/// Adds `refused=STATUS CODE` to a line [`Explanation::line`] wrote without one: the balancer
/// answered itself after the line was written (a backend that failed before the first byte of
/// its body gets the client a 502).
pub fn add_refusal(line: &mut String, status: u16, code: &'static str) {
    *line = bounded(std::mem::take(line), Some(&refused(status, code)));
}

/// `body`, then the field `last` if any, within [`MAX_LEN`]: when they do not fit, the body is
/// cut after its last whole item or field that fits and marked `cut=1`; `last` (the balancer's
/// own answer, the one field that says what the client got) is always kept. `body` is ASCII.
fn bounded(mut body: String, last: Option<&str>) -> String {
    const MARK: &str = "cut=1";
    let last_len = last.map_or(0, |l| l.len() + "; ".len());
    if body.len() + last_len > MAX_LEN {
        let room = MAX_LEN - last_len - "; ".len() - MARK.len();
        match body[..room].rfind([',', ';']) {
            Some(at) => body.truncate(at),
            None => body.clear(),
        }
        if !body.is_empty() {
            body.push_str("; ");
        }
        body.push_str(MARK);
    }
    if let Some(last) = last {
        if !body.is_empty() {
            body.push_str("; ");
        }
        body.push_str(last);
    }
    body
}

/// One explained decision, as `/status` and the dashboard show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// When it was made, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The request's method.
    pub method: String,
    /// The request's target, cut to [`TARGET_LEN`] bytes.
    pub target: String,
    /// The status the client got.
    pub status: u16,
    /// The line, as [`Explanation::line`] wrote it.
    pub line: String,
}

/// The last [`RECENT`] explained decisions, newest last: a bounded ring behind one short lock.
#[derive(Debug, Default)]
pub struct Decisions {
    ring: Mutex<VecDeque<Decision>>,
}

impl Decisions {
    /// Keeps the decision on `head`, answered with `status`, explained by `line`; the oldest one
    /// goes when there are [`RECENT`].
    pub fn record(&self, head: &RequestHead, status: u16, line: String) {
        let mut cut = TARGET_LEN.min(head.target.len());
        while !head.target.is_char_boundary(cut) {
            cut -= 1;
        }
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let decision = Decision {
            at_ms,
            method: head.method.clone(),
            target: head.target[..cut].to_string(),
            status,
            line,
        };
        let mut ring = self.ring.lock();
        if ring.len() == RECENT {
            ring.pop_front();
        }
        ring.push_back(decision);
    }

    /// The decisions kept, newest first.
    pub fn recent(&self) -> Vec<Decision> {
        self.ring.lock().iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::selection::Pool;
    use crate::balance::weights::Factors;
    use crate::balance::{AlwaysAvailable, Availability};
    use crate::config::BackendConfig;

    fn backend(id: u64, port: u16, weight: u32) -> Arc<Backend> {
        let config = BackendConfig::parse(&format!("http://10.0.0.{id}:{port}"), weight).unwrap();
        Arc::new(Backend::new(id, &config))
    }

    #[test]
    fn units_and_percentages() {
        let cases = [
            (500, "5"),
            (-200, "-2"),
            (40, "0.4"),
            (125, "1.25"),
            (-5, "-0.05"),
        ];
        for (v, text) in cases {
            assert_eq!(units(v), text);
        }
        assert_eq!(percent(0.4), "40%");
        assert_eq!(percent(0.072), "7.2%");
        assert_eq!(ceil_secs(Duration::from_millis(6200)), 7);
        assert_eq!(ceil_secs(Duration::from_secs(7)), 7);
    }

    /// Refuses backend 2, saying its breaker is open for 6.2 s more.
    struct BreakerOpen;
    impl Availability for BreakerOpen {
        fn admit(&self, b: &Backend) -> bool {
            b.id != 2
        }
        fn why_not(&self, _: &Backend) -> Option<Unavailable> {
            Some(Unavailable::BreakerOpen {
                left: Duration::from_millis(6200),
            })
        }
    }

    #[test]
    fn a_line_names_the_pick_scores_weights_skips_retries_and_refusal() {
        let (a, b, c) = (backend(1, 81, 5), backend(2, 82, 1), backend(3, 83, 1));
        let slow = Factors {
            latency: 0.5,
            ..Factors::NONE
        };
        c.set_effective(slow.apply(1), slow);
        let pool = Pool::new(vec![a.clone(), b.clone(), c.clone()]);
        let mut e = Explanation {
            filter: Some(FilterVerdict::Pass),
            ..Explanation::default()
        };
        // a was tried and failed; b's breaker is open: c takes it.
        e.retries.push((a.clone(), "backend_unreachable"));
        e.chosen = pool.pick_explained(&BreakerOpen, &[a.id], &mut e.trace);
        assert_eq!(e.chosen.as_ref().map(|b| b.id), Some(3));
        assert_eq!(
            e.line(),
            "filter=pass; pick=10.0.0.3:83; cw=10.0.0.1:81:0>0,10.0.0.2:82:0>0,10.0.0.3:83:0.5>0; \
             ew=10.0.0.1:81:5,10.0.0.2:82:1,10.0.0.3:83:0.5/1(latency 50%); \
             skip=10.0.0.1:81(tried),10.0.0.2:82(breaker_open 7s); \
             retry=10.0.0.1:81(backend_unreachable)"
        );
        let floor = Factors {
            latency: 0.072,
            failures: 0.5625,
            slow_start: 1.0,
        };
        c.set_effective(floor.apply(1), floor);
        let mut e = Explanation::default();
        e.chosen = pool.pick_explained(&AlwaysAvailable, &[], &mut e.trace);
        assert!(
            e.line()
                .contains("10.0.0.3:83:0.05/1(latency 7.2% failures 56.3% floor 5%)"),
            "{}",
            e.line()
        );
    }

    #[test]
    fn refusals_and_no_backend() {
        let e = Explanation::refusal(Some(FilterVerdict::Refused), 429, "rate_limited");
        assert_eq!(e.line(), "filter=refused; refused=429 rate_limited");
        let a = backend(1, 81, 1);
        let pool = Pool::new(vec![a]);
        struct Never;
        impl Availability for Never {
            fn admit(&self, _: &Backend) -> bool {
                false
            }
        }
        let mut e = Explanation {
            refused: Some((503, "no_backend")),
            ..Explanation::default()
        };
        e.chosen = pool.pick_explained(&Never, &[], &mut e.trace);
        assert_eq!(
            e.line(),
            "pick=none; cw=10.0.0.1:81:0>0; ew=10.0.0.1:81:1; skip=10.0.0.1:81(unavailable); \
             refused=503 no_backend"
        );
    }

    #[test]
    fn long_lines_are_cut_at_an_item_and_say_so() {
        let backends: Vec<Arc<Backend>> = (0..100).map(|i| backend(i, 8000, 1)).collect();
        let pool = Pool::new(backends);
        let mut e = Explanation::default();
        e.chosen = pool.pick_explained(&AlwaysAvailable, &[], &mut e.trace);
        let line = e.line();
        assert!(line.len() <= MAX_LEN, "{}", line.len());
        assert!(line.ends_with("; cut=1"), "{line}");
        let before = line.trim_end_matches("; cut=1");
        let last = before.rsplit(',').next().unwrap();
        assert!(
            last.ends_with(">0") || last.ends_with(">1"),
            "whole items: {last}"
        );
        // The balancer's own answer is never cut off.
        let mut refused = line.clone();
        add_refusal(&mut refused, 502, "backend_failed");
        assert!(refused.len() <= MAX_LEN, "{}", refused.len());
        assert!(
            refused.ends_with("; cut=1; refused=502 backend_failed"),
            "{refused}"
        );
        let mut short = "pick=a".to_string();
        add_refusal(&mut short, 502, "backend_failed");
        assert_eq!(short, "pick=a; refused=502 backend_failed");
        assert_eq!(ascii("a\u{e9}\nb".into()), "a??b");
    }

    #[test]
    fn the_ring_keeps_the_last_twenty_newest_first() {
        let decisions = Decisions::default();
        let mut head = RequestHead {
            method: "GET".into(),
            target: String::new(),
            http10: false,
            headers: vec![("X-Balancer-Explain".into(), b" 1 ".to_vec())],
            client: "10.1.2.3".parse().unwrap(),
        };
        assert!(asked(&head));
        for i in 0..25 {
            head.target = format!("/{i}");
            decisions.record(&head, 200, format!("pick=a{i}"));
        }
        let recent = decisions.recent();
        assert_eq!(recent.len(), RECENT);
        assert_eq!((recent[0].target.as_str(), recent[0].status), ("/24", 200));
        assert_eq!(recent[19].line, "pick=a5");
        head.target = format!("/{}", "é".repeat(100));
        decisions.record(&head, 404, String::new());
        assert_eq!(
            decisions.recent()[0].target.len(),
            119,
            "cut on a character"
        );
        head.headers[0].1 = b"0".to_vec();
        assert!(!asked(&head));
    }
}

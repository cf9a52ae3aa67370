//! What the filter counts: why requests were refused, and what `/status` and `/metrics` show.
//!
//! Every refusal has one [`Reason`], the step of the check that refused it. The counters are
//! atomics outside the filter's lock, so counting costs no lock and reading them for `/metrics`
//! never makes a request wait.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Why a request was refused, in check order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reason {
    Denied,
    Banned,
    Method,
    TargetTooLong,
    Path,
    BodyTooLarge,
    RateLimited,
    /// A shared rate limit with `fallback=closed` while Redis does not answer.
    SharedUnavailable,
}

/// Reason names as [`FilterStats::refused`] reports them, indexed by [`Reason`].
const REASONS: [&str; 8] = [
    "denied",
    "banned",
    "method",
    "target_too_long",
    "path",
    "body_too_large",
    "rate_limited",
    "shared_unavailable",
];

impl Reason {
    /// The reason's name: in [`FilterStats::refused`], in `/metrics`, and as the refusal's code in
    /// the access log (`reason=`).
    pub(super) fn name(self) -> &'static str {
        REASONS[self as usize]
    }

    /// The status and the text of the answer to a request refused for this reason.
    pub(super) fn answer(self) -> (u16, &'static str) {
        match self {
            Reason::Denied => (403, "access denied"),
            Reason::Banned => (403, "banned"),
            Reason::Method => (405, "method not allowed"),
            Reason::TargetTooLong => (414, "request target too long"),
            Reason::Path => (403, "path not allowed"),
            Reason::BodyTooLarge => (413, "request body too large"),
            Reason::RateLimited => (429, "rate limited"),
            Reason::SharedUnavailable => (503, "rate limit store unavailable"),
        }
    }
}

/// Requests refused since the filter was created, one counter per [`Reason`].
#[derive(Debug, Default)]
pub(super) struct Refused([AtomicU64; REASONS.len()]);

impl Refused {
    /// Counts one request refused for `reason`.
    pub(super) fn count(&self, reason: Reason) {
        self.0[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Every reason's name and count, in check order (the shape of [`FilterStats::refused`]).
    pub(super) fn by_reason(&self) -> Vec<(&'static str, u64)> {
        REASONS
            .iter()
            .zip(&self.0)
            .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
            .collect()
    }
}

/// Counters of filtered requests, for status and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilterStats {
    /// Requests refused, by reason (`denied`, `banned`, `method`, `target_too_long`, `path`,
    /// `body_too_large`, `rate_limited`, `shared_unavailable`), every reason listed, in check
    /// order.
    pub refused: Vec<(&'static str, u64)>,
    /// Clients banned right now, with seconds left (rounded up), by address.
    pub bans: Vec<(IpAddr, u64)>,
    /// Entries in the client tables (token buckets + rate-limit hit windows) right now.
    pub tracked: usize,
    /// Bans started since the filter was created.
    pub bans_started: u64,
}

/// Whole seconds, rounded up: how a wait is told to people and clients (`Retry-After`, a ban's
/// seconds left), so that waiting the number told is always enough.
pub(super) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::testing::ms;

    #[test]
    fn waits_are_whole_seconds_rounded_up() {
        assert_eq!(ceil_secs(ms(1)), 1);
        assert_eq!(ceil_secs(ms(2000)), 2);
    }
}

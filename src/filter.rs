//! Request filtering on the acceptor, before a request takes a worker: allow/deny lists,
//! per-client rate limits, automatic bans, and request rules (method, path, target length, body
//! size).
//!
//! STUB: the interface the rest of the balancer uses; the implementation is in progress.

use std::net::IpAddr;
use std::time::Instant;

use crate::proxy::{Framing, Refusal, RequestHead};

/// Filtering settings from the config file's filtering keys. The default filters nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FilterConfig {
    /// Largest request body accepted (`limits max_body=`); `None` for no limit.
    pub max_body: Option<u64>,
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

impl FilterConfig {
    /// Applies one config line `key words...` (key is one of [`KEYS`]).
    pub fn apply_line(&mut self, key: &str, words: &[&str]) -> Result<(), String> {
        Err(format!(
            "{key} is not supported yet ({} words)",
            words.len()
        ))
    }
}

/// Counters of filtered requests, for status and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilterStats {
    /// Requests refused, by reason (`denied`, `banned`, `rate_limited`, `method`, `path`,
    /// `target_too_long`, `body_too_large`).
    pub refused: Vec<(&'static str, u64)>,
    /// Clients banned right now, with seconds left.
    pub bans: Vec<(IpAddr, u64)>,
}

/// The filter's live state (client tables, bans) and its current settings.
#[derive(Debug, Default)]
pub struct Filter {
    config: parking_lot::RwLock<FilterConfig>,
}

impl Filter {
    /// A filter with `config`.
    pub fn new(config: FilterConfig) -> Filter {
        Filter {
            config: parking_lot::RwLock::new(config),
        }
    }

    /// Replaces the settings (reload); bans and client tables are kept.
    pub fn reconfigure(&self, config: FilterConfig) {
        *self.config.write() = config;
    }

    /// Decides whether a request may go on. `head.client` is the TCP peer.
    pub fn check(&self, head: &RequestHead, framing: Framing, now: Instant) -> Result<(), Refusal> {
        let _ = (head, now);
        if let (Framing::Length(n), Some(max)) = (framing, self.max_body()) {
            if n > max {
                return Err(Refusal::new(413, "request body too large"));
            }
        }
        Ok(())
    }

    /// The body size limit in force, if any; chunked bodies are cut off there while streaming.
    pub fn max_body(&self) -> Option<u64> {
        self.config.read().max_body
    }

    /// Counters and bans for status and metrics.
    pub fn stats(&self, now: Instant) -> FilterStats {
        let _ = now;
        FilterStats::default()
    }
}

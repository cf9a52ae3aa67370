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
    match f.check(head, framing, now).decided() {
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

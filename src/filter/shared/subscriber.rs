//! The ban subscriber: a thread of its own holding one connection subscribed to the bans
//! channel (`lb:bans`), because a subscribed connection blocks on its socket and takes no other
//! command. Each message `IP END NOW` (microseconds on Redis's clock) puts the client in this
//! balancer's ban table for `END - NOW`: a ban made on one balancer refuses the client on every
//! other within a round trip, without a Redis call per request.
//!
//! Pub/sub is at most once: a message published while the connection was down is lost. So each
//! time the subscription is (re)made, the Redis thread is asked to read the bans again from the
//! sorted set (`Job::Resync`).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread;
use std::time::Duration;

use crossbeam_channel::Sender;

use super::connect::Endpoint;
use super::outage::{FIRST_PROBE, MAX_PROBE};
use super::{BanSink, Job};

/// How long a read waits before the thread looks at the stop flag. 1 s.
const READ_WAIT: Duration = Duration::from_secs(1);

/// Reads `IP END NOW`: the client and how long its ban lasts.
pub(super) fn parse_ban(text: &str) -> Option<(IpAddr, Duration)> {
    let mut words = text.split_ascii_whitespace();
    let ip = words.next()?.parse().ok()?;
    let end: u64 = words.next()?.parse().ok()?;
    let now: u64 = words.next()?.parse().ok()?;
    Some((ip, Duration::from_micros(end.saturating_sub(now))))
}

/// Subscribes to `channel` and feeds `on_ban` until `stop`; reconnects with back-off.
pub(super) fn run(
    endpoint: &Endpoint,
    channel: &str,
    on_ban: &BanSink,
    jobs: &Sender<Job>,
    stop: &AtomicBool,
) {
    let mut wait = FIRST_PROBE;
    while !stop.load(Relaxed) {
        match subscribe(endpoint, channel, on_ban, jobs, stop) {
            Ok(()) => wait = FIRST_PROBE,
            Err(e) => {
                log::debug!("shared limits: ban channel: {e}");
                thread::sleep(wait);
                wait = (wait * 2).min(MAX_PROBE);
            }
        }
    }
}

/// One subscription, until its connection fails (an error) or `stop`.
fn subscribe(
    endpoint: &Endpoint,
    channel: &str,
    on_ban: &BanSink,
    jobs: &Sender<Job>,
    stop: &AtomicBool,
) -> Result<(), String> {
    let mut con = endpoint.connect().map_err(|p| p.text().to_string())?;
    let mut pubsub = con.as_pubsub();
    pubsub.subscribe(channel).map_err(|e| e.to_string())?;
    pubsub
        .set_read_timeout(Some(READ_WAIT))
        .map_err(|e| e.to_string())?;
    // Subscribed first, read second: a ban published in between is seen at least once.
    let _ = jobs.send(Job::Resync);
    while !stop.load(Relaxed) {
        match pubsub.get_message() {
            Ok(msg) => {
                let payload: String = msg.get_payload().unwrap_or_default();
                match parse_ban(&payload) {
                    Some((ip, left)) => on_ban(ip, left),
                    None => log::debug!("shared limits: ignored ban message {payload:?}"),
                }
            }
            Err(e) if e.is_timeout() => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ban_messages() {
        assert_eq!(
            parse_ban("192.0.2.7 1700000600000000 1700000000000000"),
            Some(("192.0.2.7".parse().unwrap(), Duration::from_secs(600)))
        );
        assert_eq!(
            parse_ban("2001:db8::1 5 9").map(|(_, d)| d),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_ban("nonsense"), None);
        assert_eq!(parse_ban("192.0.2.7 x 1"), None);
    }
}

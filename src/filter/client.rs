//! Who the client is: the address every rule is about.
//!
//! It is the TCP peer (`head.client`), unless the peer is in `trusted_proxies`. Then
//! `X-Forwarded-For` is believed, read from the right (the entries appended last, by the proxies
//! nearest to us): the client is the right-most address that is not itself a trusted proxy. If
//! every entry is a trusted proxy, the left-most one is the client; an entry that is not an
//! address stops the walk and the last good address is the client. A peer that is not trusted
//! cannot escape a rule by sending its own `X-Forwarded-For`. IPv4-mapped IPv6 addresses
//! (`::ffff:10.1.2.3`) are treated as the IPv4 address they carry.
//!
//! Why from the right: every proxy appends the address it received the request from, so the
//! right end was written by proxies we trust, the left end by whoever sent the request, who can
//! write anything there.

use std::net::{IpAddr, SocketAddr};

use super::cidr::IpSet;
use crate::http::RequestHead;

/// The client a request is from (see the module documentation), as its canonical address.
pub(super) fn client_of(head: &RequestHead, trusted: &IpSet) -> IpAddr {
    let peer = head.client.to_canonical();
    if trusted.is_empty() || !trusted.contains(peer) {
        return peer;
    }
    let mut client = peer;
    let values = head
        .headers
        .iter()
        .rev()
        .filter(|(k, _)| k.eq_ignore_ascii_case("x-forwarded-for"));
    for (_, value) in values {
        // Bytes that are not UTF-8 become U+FFFD: such an entry is no address.
        let value = String::from_utf8_lossy(value);
        for entry in value.rsplit(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let Some(ip) = parse_forwarded_addr(entry) else {
                return client;
            };
            client = ip.to_canonical();
            if !trusted.contains(client) {
                return client;
            }
        }
    }
    client
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `2001:db8::1`, `[2001:db8::1]`, or with a port.
fn parse_forwarded_addr(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner.parse().ok();
    }
    s.parse::<SocketAddr>().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::testing::{cfg, code, get, ip, refused, req};
    use crate::filter::Filter;
    use crate::http::Framing;
    use std::time::Instant;

    #[test]
    fn forwarded_for_is_trusted_only_from_trusted_proxies() {
        let trusted =
            IpSet::new(&cfg("trusted_proxies 10.0.0.0/8 2001:db8::/32\n").trusted_proxies);
        let xff = |peer: &str, values: &[&str]| {
            let headers: Vec<(&str, &str)> =
                values.iter().map(|v| ("X-Forwarded-For", *v)).collect();
            client_of(&req(peer, "GET", "/", &headers), &trusted)
        };
        // an untrusted peer's header is ignored
        assert_eq!(xff("203.0.113.9", &["1.1.1.1"]), ip("203.0.113.9"));
        // a trusted peer without the header is the client
        assert_eq!(xff("10.0.0.1", &[]), ip("10.0.0.1"));
        // right-most address that is not a trusted proxy
        assert_eq!(
            xff("10.0.0.1", &["6.6.6.6, 1.1.1.1, 10.0.0.2"]),
            ip("1.1.1.1")
        );
        // repeated header lines are one list, in order
        assert_eq!(
            xff("10.0.0.1", &["6.6.6.6, 1.1.1.1", "10.0.0.2"]),
            ip("1.1.1.1")
        );
        assert_eq!(
            xff("10.0.0.1", &["6.6.6.6", "1.1.1.1 ,10.9.9.9"]),
            ip("1.1.1.1")
        );
        // all trusted: the left-most
        assert_eq!(xff("10.0.0.1", &["10.0.0.3, 10.0.0.2"]), ip("10.0.0.3"));
        // garbage stops the walk at the last good address
        assert_eq!(
            xff("10.0.0.1", &["1.1.1.1, unknown, 10.0.0.2"]),
            ip("10.0.0.2")
        );
        assert_eq!(xff("10.0.0.1", &["nonsense"]), ip("10.0.0.1"));
        // ports, brackets, IPv6, mapped addresses, empty entries
        assert_eq!(xff("10.0.0.1", &["1.1.1.1:4711"]), ip("1.1.1.1"));
        assert_eq!(xff("10.0.0.1", &["[2001:db9::1]:80"]), ip("2001:db9::1"));
        assert_eq!(xff("10.0.0.1", &["[2001:db9::1]"]), ip("2001:db9::1"));
        assert_eq!(
            xff("2001:db8::5", &["2001:db9::1, 2001:db8::6"]),
            ip("2001:db9::1")
        );
        assert_eq!(xff("::ffff:10.0.0.1", &["::ffff:1.1.1.1"]), ip("1.1.1.1"));
        assert_eq!(xff("10.0.0.1", &["1.1.1.1, , 10.0.0.2,"]), ip("1.1.1.1"));
        // no trusted proxies: the peer, canonical
        assert_eq!(
            client_of(
                &req(
                    "::ffff:1.2.3.4",
                    "GET",
                    "/",
                    &[("X-Forwarded-For", "5.5.5.5")]
                ),
                &IpSet::default()
            ),
            ip("1.2.3.4")
        );
    }

    #[test]
    fn deny_and_allow_use_the_forwarded_client() {
        let f = Filter::new(cfg(
            "trusted_proxies 127.0.0.1/32\ndeny 198.51.100.0/24\nallow 127.0.0.0/8 198.51.100.0/24 203.0.113.0/24\n",
        ));
        let t = Instant::now();
        let via = |x: &str| req("127.0.0.1", "GET", "/", &[("X-Forwarded-For", x)]);
        assert_eq!(code(&f, &via("203.0.113.5"), t), 200);
        assert_eq!(code(&f, &via("198.51.100.5"), t), 403); // denied, though also allowed
        assert_eq!(code(&f, &via("192.0.2.1"), t), 403); // not allowed
        assert_eq!(code(&f, &get("127.0.0.2", "/"), t), 200);
        assert_eq!(code(&f, &get("::ffff:127.0.0.2", "/"), t), 200);
        assert_eq!(code(&f, &get("::1", "/"), t), 403);
        // an untrusted peer cannot claim an allowed address
        let spoof = req("192.0.2.1", "GET", "/", &[("X-Forwarded-For", "127.0.0.1")]);
        assert_eq!(code(&f, &spoof, t), 403);
        assert_eq!(refused(&f, t, "denied"), 4);
        assert_eq!(
            f.check(&spoof, Framing::None, t)
                .decided()
                .unwrap_err()
                .reason,
            "access denied"
        );
    }
}

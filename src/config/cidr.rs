//! An address range, as the `deny`, `allow` and `trusted_proxies` lines write it: parsed once,
//! at config time, into integers (the network's bits and the prefix length), so that checking a
//! client is a mask and a compare, never text. IPv4 and IPv6 are kept apart (a flag beside the
//! bits), and an IPv4-mapped IPv6 address (`::ffff:10.1.2.3`) counts as the IPv4 address it
//! carries, both as a client and in a range. The filter compiles lists of them
//! (`filter/cidr.rs`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address range (`10.0.0.0/8`, `2001:db8::/32`) or one address (a full-length prefix),
/// parsed once into integers. IPv4 ranges match IPv4 clients (including IPv4-mapped IPv6 ones);
/// IPv6 ranges match IPv6 clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub(crate) v6: bool,
    pub(crate) net: u128,
    pub(crate) prefix: u8,
}

/// The address as `(is IPv6, bits)`, IPv4-mapped IPv6 addresses turned into IPv4.
pub(crate) fn ip_bits(ip: IpAddr) -> (bool, u128) {
    match ip.to_canonical() {
        IpAddr::V4(a) => (false, u32::from(a) as u128),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

fn width(v6: bool) -> u8 {
    if v6 {
        128
    } else {
        32
    }
}

/// The network mask of `prefix` bits in an address of `width` bits.
pub(crate) fn mask(v6: bool, prefix: u8) -> u128 {
    let w = width(v6) as u32;
    if prefix == 0 {
        return 0;
    }
    let all = u128::MAX >> (128 - w);
    all & (u128::MAX << (w - prefix as u32))
}

impl Cidr {
    /// Parses `ADDR` or `ADDR/PREFIX` (IPv4 or IPv6). Host bits must be zero, so a typo like
    /// `10.0.0.1/8` is caught instead of silently meaning `10.0.0.0/8`.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let bad = || format!("bad address or range {s:?}");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| bad())?;
        let (mut v6, mut net) = match ip {
            IpAddr::V4(a) => (false, u32::from(a) as u128),
            IpAddr::V6(a) => (true, u128::from(a)),
        };
        let mut prefix = match prefix {
            None => width(v6),
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
        };
        if prefix > width(v6) {
            return Err(bad());
        }
        // `::ffff:10.0.0.0/104` is the IPv4 range 10.0.0.0/8.
        if let IpAddr::V6(a) = ip {
            if let (Some(v4), true) = (a.to_ipv4_mapped(), prefix >= 96) {
                (v6, net, prefix) = (false, u32::from(v4) as u128, prefix - 96);
            }
        }
        let m = mask(v6, prefix);
        if net & !m != 0 {
            let fixed = Cidr {
                v6,
                net: net & m,
                prefix,
            };
            return Err(format!(
                "{s:?} has bits set after the /{prefix} prefix; did you mean {fixed}?"
            ));
        }
        Ok(Cidr { v6, net, prefix })
    }

    /// True when `ip` is in this range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (v6, bits) = ip_bits(ip);
        v6 == self.v6 && bits & mask(v6, self.prefix) == self.net
    }

    pub(crate) fn contains_bits(&self, v6: bool, bits: u128) -> bool {
        v6 == self.v6 && bits & mask(v6, self.prefix) == self.net
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip: IpAddr = if self.v6 {
            Ipv6Addr::from(self.net).into()
        } else {
            Ipv4Addr::from(self.net as u32).into()
        };
        write!(f, "{ip}/{}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_matching_v4_v6_and_edges() {
        let c = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(c.contains(ip("10.255.1.2")));
        assert!(!c.contains(ip("11.0.0.0")));
        assert!(!c.contains(ip("9.255.255.255")));
        // IPv4-mapped IPv6 clients are their IPv4 address
        assert!(c.contains(ip("::ffff:10.1.2.3")));
        assert!(!c.contains(ip("::ffff:11.1.2.3")));
        // /0 matches its whole family, and only it
        let all4 = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all4.contains(ip("255.255.255.255")) && all4.contains(ip("0.0.0.0")));
        assert!(!all4.contains(ip("2001:db8::1")));
        let all6 = Cidr::parse("::/0").unwrap();
        assert!(all6.contains(ip("2001:db8::1")) && all6.contains(ip("::1")));
        assert!(!all6.contains(ip("10.0.0.1")));
        // /32 and a bare address are one address
        let one = Cidr::parse("192.0.2.7/32").unwrap();
        assert_eq!(one, Cidr::parse("192.0.2.7").unwrap());
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.6")));
        assert!(one.contains(ip("::ffff:192.0.2.7")));
        // IPv6
        let doc = Cidr::parse("2001:db8::/32").unwrap();
        assert!(doc.contains(ip("2001:db8:ffff::1")));
        assert!(!doc.contains(ip("2001:db9::1")));
        let host = Cidr::parse("2001:db8::7/128").unwrap();
        assert_eq!(host, Cidr::parse("2001:db8::7").unwrap());
        assert!(host.contains(ip("2001:db8::7")) && !host.contains(ip("2001:db8::8")));
        // an IPv4-mapped range is the IPv4 range
        assert_eq!(
            Cidr::parse("::ffff:10.0.0.0/104").unwrap(),
            Cidr::parse("10.0.0.0/8").unwrap()
        );
        assert_eq!(Cidr::parse("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(
            Cidr::parse("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
    }

    #[test]
    fn cidr_errors() {
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "10.0.0.0/",
            "10.0.0.0/x",
            "10.0.0.0/-1",
            "10.0.0.0/08x",
            "host.example",
            "",
        ] {
            assert_eq!(
                Cidr::parse(bad).unwrap_err(),
                format!("bad address or range {bad:?}"),
                "{bad}"
            );
        }
        assert_eq!(
            Cidr::parse("10.0.0.1/8").unwrap_err(),
            "\"10.0.0.1/8\" has bits set after the /8 prefix; did you mean 10.0.0.0/8?"
        );
    }
}

//! Address ranges: the `deny`, `allow` and `trusted_proxies` lists.
//!
//! A range is parsed once, at config time, into integers ([`Cidr`]: the network's bits and the
//! prefix length), so checking a client is a mask and a compare, never text. A list of ranges is
//! compiled into an [`IpSet`]: a short list is scanned; a long one is grouped by prefix length
//! into hash sets, so a lookup costs one hash probe per distinct prefix length however many
//! ranges there are (a deny list of 10 000 addresses is one probe).
//!
//! IPv4 and IPv6 are kept apart (a flag beside the bits), and an IPv4-mapped IPv6 address
//! (`::ffff:10.1.2.3`) counts as the IPv4 address it carries, both as a client and in a range.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Lists with at most this many ranges are scanned; longer ones are grouped into hash sets.
const SMALL_SET: usize = 16;

/// An address range (`10.0.0.0/8`, `2001:db8::/32`) or one address (a full-length prefix),
/// parsed once into integers. IPv4 ranges match IPv4 clients (including IPv4-mapped IPv6 ones);
/// IPv6 ranges match IPv6 clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    v6: bool,
    net: u128,
    prefix: u8,
}

/// The address as `(is IPv6, bits)`, IPv4-mapped IPv6 addresses turned into IPv4.
fn ip_bits(ip: IpAddr) -> (bool, u128) {
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
fn mask(v6: bool, prefix: u8) -> u128 {
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

    fn contains_bits(&self, v6: bool, bits: u128) -> bool {
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

/// A compiled list of ranges: scanned when short, grouped by prefix length into hash sets when
/// long (one probe per distinct prefix length).
#[derive(Debug, Default)]
pub(super) struct IpSet {
    small: Vec<Cidr>,
    /// `(is IPv6, prefix, networks)`, longest prefixes first.
    groups: Vec<(bool, u8, HashSet<u128>)>,
}

impl IpSet {
    /// Compiles `list` (duplicates are harmless).
    pub(super) fn new(list: &[Cidr]) -> IpSet {
        if list.len() <= SMALL_SET {
            return IpSet {
                small: list.to_vec(),
                groups: Vec::new(),
            };
        }
        let mut by_prefix: BTreeMap<(bool, u8), HashSet<u128>> = BTreeMap::new();
        for c in list {
            by_prefix.entry((c.v6, c.prefix)).or_default().insert(c.net);
        }
        IpSet {
            small: Vec::new(),
            groups: by_prefix
                .into_iter()
                .rev()
                .map(|((v6, p), set)| (v6, p, set))
                .collect(),
        }
    }

    /// True for an empty list (it contains no address).
    pub(super) fn is_empty(&self) -> bool {
        self.small.is_empty() && self.groups.is_empty()
    }

    /// True when `ip` is in one of the ranges.
    pub(super) fn contains(&self, ip: IpAddr) -> bool {
        if self.is_empty() {
            return false;
        }
        let (v6, bits) = ip_bits(ip);
        self.small.iter().any(|c| c.contains_bits(v6, bits))
            || self
                .groups
                .iter()
                .any(|(fam, p, set)| *fam == v6 && set.contains(&(bits & mask(v6, *p))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::testing::ip;

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

    #[test]
    fn long_lists_are_grouped_and_agree_with_a_scan() {
        let mut list: Vec<Cidr> = (0..200u32)
            .map(|i| {
                let prefix = 8 + (i % 25) as u8;
                let bits = (i.wrapping_mul(2_654_435_761)) as u128 & mask(false, prefix);
                Cidr {
                    v6: false,
                    net: bits,
                    prefix,
                }
            })
            .collect();
        list.push(Cidr::parse("2001:db8::/48").unwrap());
        let set = IpSet::new(&list);
        assert!(set.small.is_empty() && !set.groups.is_empty());
        for i in 0..5000u32 {
            let a = IpAddr::from(Ipv4Addr::from(i.wrapping_mul(40_503).rotate_left(i % 32)));
            assert_eq!(set.contains(a), list.iter().any(|c| c.contains(a)), "{a}");
        }
        for c in &list[..50] {
            let a: IpAddr = Ipv4Addr::from(c.net as u32).into();
            assert!(set.contains(a));
        }
        assert!(set.contains(ip("2001:db8:0:1::1")));
        assert!(!set.contains(ip("2001:db8:1::1")));
    }
}

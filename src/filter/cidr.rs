//! Lists of address ranges, compiled for the check every request makes: a short list is
//! scanned; a long one is grouped by prefix length into hash sets, so a lookup costs one hash
//! probe per distinct prefix length however many ranges there are (a deny list of 10 000
//! addresses is one probe). The ranges themselves are [`Cidr`]s, parsed by the config.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;

use crate::config::cidr::{ip_bits, mask, Cidr};

/// Lists with at most this many ranges are scanned; longer ones are grouped into hash sets.
const SMALL_SET: usize = 16;

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
    use std::net::Ipv4Addr;

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

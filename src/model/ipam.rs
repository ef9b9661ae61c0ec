//! Address and subnet allocation over a used-set (pure).
//!
//! Addresses are handed out round-robin after the last one allocated, so a
//! just-released address is not reused at once (a stale ARP entry or
//! conntrack flow would otherwise reach the new holder); the search wraps
//! around and skips every live lease, the network and broadcast addresses
//! and the gateway, so a live address is never handed out twice.

use super::cidr::Ipv4Net;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// The next free host address of `subnet` after `last` (or from the start),
/// skipping `gateway` and everything in `used`. `None` when the subnet is full.
pub fn next_free(
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    used: &BTreeSet<Ipv4Addr>,
    last: Option<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    candidates(subnet, gateway, last).find(|a| !used.contains(a))
}

/// Every assignable address of `subnet` in allocation order: round-robin
/// from the one after `last` (or from the start), wrapping around, the
/// gateway left out. A caller that cannot see the whole used-set at once
/// (one lease file per address) takes the first it can claim.
pub fn candidates(subnet: Ipv4Net, gateway: Ipv4Addr, last: Option<Ipv4Addr>) -> impl Iterator<Item = Ipv4Addr> {
    candidates_in(subnet, None, gateway, last)
}

/// [`candidates`] limited to `range` (when given) within `subnet`.
pub fn candidates_in(
    subnet: Ipv4Net,
    range: Option<Ipv4Net>,
    gateway: Ipv4Addr,
    last: Option<Ipv4Addr>,
) -> impl Iterator<Item = Ipv4Addr> {
    let mut first = u32::from(subnet.first_host());
    let mut last_host = u32::from(subnet.last_host());
    if let Some(r) = range {
        first = first.max(u32::from(r.addr()));
        last_host = last_host.min(u32::from(r.broadcast()));
    }
    let count = last_host.checked_sub(first).map_or(0, |n| n + 1);
    let start = match last.map(u32::from) {
        Some(a) if a >= first && a < last_host => a + 1,
        _ => first,
    };
    (0..count).map(move |i| Ipv4Addr::from(first + (start - first + i) % count)).filter(move |a| *a != gateway)
}

/// [`next_free`] limited to the addresses of `range` (podman's
/// `--ip-range`) that are usable hosts of `subnet`.
pub fn next_free_in(
    subnet: Ipv4Net,
    range: Ipv4Net,
    gateway: Ipv4Addr,
    used: &BTreeSet<Ipv4Addr>,
    last: Option<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    candidates_in(subnet, Some(range), gateway, last).find(|a| !used.contains(a))
}

/// Whether `addr` may be leased in `subnet`: a usable host address that is
/// not the gateway.
pub fn is_assignable(subnet: Ipv4Net, gateway: Ipv4Addr, addr: Ipv4Addr) -> bool {
    let n = u32::from(addr);
    subnet.contains(addr)
        && n >= u32::from(subnet.first_host())
        && n <= u32::from(subnet.last_host())
        && addr != gateway
}

/// The first subnet of size `/prefix` inside `pool` that overlaps none of
/// `taken`.
pub fn free_subnet(pool: Ipv4Net, prefix: u8, taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    if prefix < pool.prefix() || prefix > 30 {
        return None;
    }
    let step = 1u64 << (32 - prefix);
    let start = u64::from(u32::from(pool.addr()));
    let end = start + (1u64 << (32 - pool.prefix()));
    (0..)
        .map(|i| start + i * step)
        .take_while(|a| *a < end)
        .filter_map(|a| Ipv4Net::new(Ipv4Addr::from(a as u32), prefix).ok())
        .find(|cand| !taken.iter().any(|t| t.overlaps(cand)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_range_limits_allocation_and_wraps_inside_it() {
        let subnet: Ipv4Net = "10.1.0.0/24".parse().unwrap();
        let range: Ipv4Net = "10.1.0.252/30".parse().unwrap();
        let gw: Ipv4Addr = "10.1.0.1".parse().unwrap();
        let mut used = BTreeSet::new();
        let a = next_free_in(subnet, range, gw, &used, None).unwrap();
        assert_eq!(a.to_string(), "10.1.0.252");
        used.insert(a);
        let b = next_free_in(subnet, range, gw, &used, Some(a)).unwrap();
        assert_eq!(b.to_string(), "10.1.0.253");
        used.insert(b);
        // .255 is the subnet's broadcast: never handed out.
        let c = next_free_in(subnet, range, gw, &used, Some(b)).unwrap();
        assert_eq!(c.to_string(), "10.1.0.254");
        used.insert(c);
        assert_eq!(next_free_in(subnet, range, gw, &used, Some(c)), None);
    }
    use proptest::prelude::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn first_address_skips_network_and_gateway() {
        let got = next_free(net("10.90.0.0/24"), ip("10.90.0.1"), &BTreeSet::new(), None);
        assert_eq!(got, Some(ip("10.90.0.2")));
    }

    #[test]
    fn allocation_continues_after_the_last_and_wraps_around() {
        let used: BTreeSet<_> = [ip("10.90.0.2")].into();
        assert_eq!(
            next_free(net("10.90.0.0/24"), ip("10.90.0.1"), &used, Some(ip("10.90.0.9"))),
            Some(ip("10.90.0.10"))
        );
        assert_eq!(
            next_free(net("10.90.0.0/24"), ip("10.90.0.1"), &used, Some(ip("10.90.0.254"))),
            Some(ip("10.90.0.3"))
        );
    }

    #[test]
    fn full_subnet_yields_none() {
        let subnet = net("10.90.0.0/30");
        let used: BTreeSet<_> = [ip("10.90.0.2")].into();
        assert_eq!(next_free(subnet, ip("10.90.0.1"), &used, None), None);
    }

    #[test]
    fn assignable_excludes_gateway_network_broadcast_and_outsiders() {
        let s = net("10.90.0.0/24");
        let gw = ip("10.90.0.1");
        assert!(is_assignable(s, gw, ip("10.90.0.7")));
        for bad in ["10.90.0.0", "10.90.0.1", "10.90.0.255", "10.91.0.7"] {
            assert!(!is_assignable(s, gw, ip(bad)), "{bad}");
        }
    }

    #[test]
    fn free_subnet_skips_taken_ranges() {
        let pool = net("10.90.0.0/16");
        let taken = [net("10.90.0.0/24"), net("10.90.1.0/24"), net("10.90.2.128/25")];
        assert_eq!(free_subnet(pool, 24, &taken), Some(net("10.90.3.0/24")));
        assert_eq!(free_subnet(net("10.90.0.0/24"), 24, &[net("10.0.0.0/8")]), None);
    }

    proptest! {
        #[test]
        fn a_live_address_is_never_handed_out(used in proptest::collection::btree_set(2u32..255, 0..250), last in 0u32..256) {
            let subnet = net("10.90.0.0/24");
            let used: BTreeSet<Ipv4Addr> = used.into_iter().map(|n| Ipv4Addr::from(0x0a5a_0000 + n)).collect();
            let got = next_free(subnet, ip("10.90.0.1"), &used, Some(Ipv4Addr::from(0x0a5a_0000 + last)));
            match got {
                Some(a) => prop_assert!(!used.contains(&a) && is_assignable(subnet, ip("10.90.0.1"), a)),
                None => prop_assert_eq!(used.len(), 253),
            }
        }
    }
}

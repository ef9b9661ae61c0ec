//! The addresses a network namespace holds, read from procfs: IPv4 from
//! `/proc/<pid>/net/fib_trie` (the `/32 host LOCAL` entries), IPv6 from
//! `/proc/<pid>/net/if_inet6` (global scope). Loopback addresses are left
//! out. Works for any process the caller may inspect, without entering its
//! namespace. Pure parsers, one thin reader.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// The local IPv4 addresses in a `fib_trie` dump, loopback excluded.
pub fn parse_fib_trie(text: &str) -> BTreeSet<Ipv4Addr> {
    let mut out = BTreeSet::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(addr) = line.strip_prefix("|-- ") {
            last = addr.parse().ok();
        } else if line.starts_with("/32 host LOCAL")
            && let Some(addr) = last.take()
            && !addr.is_loopback()
        {
            out.insert(addr);
        }
    }
    out
}

/// The global-scope IPv6 addresses in an `if_inet6` dump.
pub fn parse_if_inet6(text: &str) -> BTreeSet<Ipv6Addr> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (hex, scope) = (fields.first()?, fields.get(3)?);
            if *scope != "00" || hex.len() != 32 {
                return None;
            }
            let bits = u128::from_str_radix(hex, 16).ok()?;
            Some(Ipv6Addr::from(bits))
        })
        .collect()
}

/// The addresses of the network namespace of process `pid`.
pub fn of_process(proc_root: &Path, pid: u32) -> Vec<IpAddr> {
    let read = |name: &str| std::fs::read_to_string(proc_root.join(pid.to_string()).join("net").join(name));
    let mut out: Vec<IpAddr> =
        read("fib_trie").map(|t| parse_fib_trie(&t)).unwrap_or_default().into_iter().map(IpAddr::V4).collect();
    out.extend(read("if_inet6").map(|t| parse_if_inet6(&t)).unwrap_or_default().into_iter().map(IpAddr::V6));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIB_TRIE: &str = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     \
        +-- 127.0.0.0/8 2 0 2\n           |-- 127.0.0.1\n              /32 host LOCAL\n     \
        +-- 10.0.2.0/24 2 0 2\n           |-- 10.0.2.0\n              /24 link UNICAST\n           \
        |-- 10.0.2.100\n              /32 host LOCAL\n        |-- 10.0.2.255\n           /32 link BROADCAST\n\
        Local:\n           |-- 10.0.2.100\n              /32 host LOCAL\n";

    #[test]
    fn local_ipv4_addresses_are_found_once_and_loopback_left_out() {
        assert_eq!(parse_fib_trie(FIB_TRIE).into_iter().collect::<Vec<_>>(), vec![Ipv4Addr::new(10, 0, 2, 100)]);
    }

    #[test]
    fn only_global_ipv6_addresses_are_kept() {
        let text = "fd000000000000000000000000000002 04 40 00 82     eth0\n\
                    00000000000000000000000000000001 01 80 10 80       lo\n\
                    fe8000000000000000fc00fffe000001 04 40 20 80     eth0\n";
        let got: Vec<Ipv6Addr> = parse_if_inet6(text).into_iter().collect();
        assert_eq!(got, vec!["fd00::2".parse::<Ipv6Addr>().unwrap()]);
    }

    #[test]
    fn our_own_namespace_reads_without_error() {
        let _ = of_process(Path::new("/proc"), std::process::id());
    }
}

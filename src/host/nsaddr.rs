//! The addresses a network namespace has, read from `/proc/<pid>/net`
//! without entering it (a rootless owner may not `setns` into its run's
//! namespace, but may read its procfs view).
//!
//! IPv4 comes from `fib_trie` (each local address is a `/32 host LOCAL`
//! leaf; its prefix is that of the `link UNICAST` network around it), IPv6
//! from `if_inet6`. Loopback and link-local addresses are left out: they
//! are the same in every namespace. The parsers are pure.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// One address of a namespace, printed as `ADDR/PREFIX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct IfAddress {
    /// The address.
    pub address: IpAddr,
    /// Its prefix length.
    pub prefix: u8,
}

impl std::fmt::Display for IfAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

impl serde::Serialize for IfAddress {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// IPv4 addresses from the text of `/proc/<pid>/net/fib_trie`.
pub fn parse_fib_trie(text: &str) -> Vec<IfAddress> {
    let mut nets: Vec<(u32, u8)> = Vec::new();
    let mut locals: Vec<Ipv4Addr> = Vec::new();
    let mut leaf: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(addr) = t.strip_prefix("|-- ") {
            leaf = addr.trim().parse().ok();
        } else if let (Some(addr), Some(rest)) = (leaf, t.strip_prefix('/')) {
            let mut fields = rest.split_whitespace();
            let prefix: Option<u8> = fields.next().and_then(|p| p.parse().ok());
            let kind: Vec<&str> = fields.collect();
            match (prefix, kind.as_slice()) {
                (Some(32), ["host", "LOCAL"]) => locals.push(addr),
                (Some(p), ["link", "UNICAST"]) if p < 32 => nets.push((u32::from(addr), p)),
                _ => {}
            }
        }
    }
    let mut out: Vec<IfAddress> = locals
        .into_iter()
        .filter(|a| !a.is_loopback())
        .map(|a| {
            let n = u32::from(a);
            let prefix = nets.iter().filter(|(net, p)| n & mask(*p) == *net).map(|(_, p)| *p).max().unwrap_or(32);
            IfAddress { address: IpAddr::V4(a), prefix }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) }
}

/// Global IPv6 addresses from the text of `/proc/<pid>/net/if_inet6`.
pub fn parse_if_inet6(text: &str) -> Vec<IfAddress> {
    let mut out: Vec<IfAddress> = text
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (hex, prefix, scope) = (f.first()?, f.get(2)?, f.get(3)?);
            let bits = u128::from_str_radix(hex, 16).ok()?;
            let prefix = u8::from_str_radix(prefix, 16).ok()?;
            // Scope 0 is global; 0x10 host (::1), 0x20 link-local.
            (*scope == "00").then_some(IfAddress { address: IpAddr::V6(Ipv6Addr::from(bits)), prefix })
        })
        .collect();
    out.sort();
    out
}

/// The addresses of the network namespace of process `pid`.
pub fn namespace_addresses(proc_root: &Path, pid: u32) -> io::Result<Vec<IfAddress>> {
    let dir = proc_root.join(pid.to_string()).join("net");
    let mut out = parse_fib_trie(&std::fs::read_to_string(dir.join("fib_trie"))?);
    // No if_inet6 when IPv6 is disabled: no IPv6 addresses.
    out.extend(parse_if_inet6(&std::fs::read_to_string(dir.join("if_inet6")).unwrap_or_default()));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIB_TRIE: &str = "Main:
  +-- 0.0.0.0/1 2 0 2
     +-- 10.0.2.0/24 2 0 1
        |-- 10.0.2.0
           /24 link UNICAST
        |-- 10.0.2.100
           /32 host LOCAL
        |-- 10.0.2.255
           /32 link BROADCAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
Local:
  +-- 0.0.0.0/1 2 0 2
     +-- 10.0.2.0/24 2 0 1
        |-- 10.0.2.100
           /32 host LOCAL
  |-- 192.0.2.9
     /32 host LOCAL
";

    const IF_INET6: &str = "fd000000000000000000000000000005 03 40 00 82       d0
fe800000000000001891a3fffe2a28a2 03 40 20 c0       d0
00000000000000000000000000000001 01 80 10 80       lo
";

    #[test]
    fn fib_trie_gives_local_addresses_with_their_link_prefix() {
        let got: Vec<String> = parse_fib_trie(FIB_TRIE).iter().map(ToString::to_string).collect();
        assert_eq!(got, ["10.0.2.100/24", "192.0.2.9/32"]);
    }

    #[test]
    fn if_inet6_gives_global_addresses_only() {
        let got: Vec<String> = parse_if_inet6(IF_INET6).iter().map(ToString::to_string).collect();
        assert_eq!(got, ["fd00::5/64"]);
    }

    #[test]
    fn garbage_gives_nothing_and_never_panics() {
        assert!(parse_fib_trie("|-- x\n /abc\n/32 host LOCAL\n").is_empty());
        assert!(parse_if_inet6("zz 1 2\n\n").is_empty());
    }
}

//! IPv6 in a network namespace, as `/proc/<pid>/net/ipv6_route` and
//! `/proc/<pid>/net/if_inet6` show it: is there a default route, and can
//! every global address be used yet?
//!
//! An IPv6 address is listed as soon as it is added, but it only becomes
//! usable (its `local` route inserted, packets to it delivered) once the
//! kernel's duplicate address detection work has run, which happens on a
//! workqueue even for an address added with `nodad`: on a loaded machine,
//! well after the address (and a default route added next) appeared.
//!
//! Parsers are pure; the readers take an injected proc root, like
//! [`super::procnet`]'s.

use super::procnet::{ProcNetError, RTF_UP, net_file, read_text};
use std::net::Ipv6Addr;
use std::path::Path;

/// Route flag `RTF_REJECT`: the kernel's unreachable `::/0` on `lo` carries it.
const RTF_REJECT: u32 = 0x0200;
/// Route flag `RTF_LOCAL`: a route delivering to this host (an address's own).
const RTF_LOCAL: u32 = 0x8000_0000;
/// `if_inet6` scope of a global address.
const SCOPE_GLOBAL: u8 = 0x00;
/// `if_inet6` flag `IFA_F_TENTATIVE`: duplicate address detection still runs.
const IFA_F_TENTATIVE: u8 = 0x40;

/// The IPv6 side of a namespace at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ipv6State {
    /// An up default route that is not a reject route and not on `lo`.
    pub default_route: bool,
    /// Global addresses that cannot be used yet (tentative, or without
    /// their `local` route).
    pub unusable: Vec<Ipv6Addr>,
}

fn hex_addr(field: &str) -> Option<Ipv6Addr> {
    (field.len() == 32).then(|| u128::from_str_radix(field, 16).ok().map(Ipv6Addr::from)).flatten()
}

/// True when `/proc/net/ipv6_route` text holds an up `::/0` route that is not
/// a reject route and not on `lo`.
pub fn has_ipv6_default_route(text: &str) -> bool {
    text.lines().any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [dest, plen, _, _, _, _, _, _, flags, iface] = f[..] else { return false };
        let flags = u32::from_str_radix(flags, 16).unwrap_or(0);
        hex_addr(dest) == Some(Ipv6Addr::UNSPECIFIED)
            && plen == "00"
            && flags & u32::from(RTF_UP) != 0
            && flags & RTF_REJECT == 0
            && iface != "lo"
    })
}

/// The addresses `/proc/net/ipv6_route` text has an up `local` /128 route for.
fn local_routes(text: &str) -> Vec<Ipv6Addr> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [dest, plen, _, _, _, _, _, _, flags, _] = f[..] else { return None };
            let flags = u32::from_str_radix(flags, 16).ok()?;
            (plen == "80" && flags & RTF_LOCAL != 0 && flags & u32::from(RTF_UP) != 0).then(|| hex_addr(dest))?
        })
        .collect()
}

/// The state from the text of `ipv6_route` and `if_inet6`.
pub fn ipv6_state(ipv6_route: &str, if_inet6: &str) -> Ipv6State {
    let local = local_routes(ipv6_route);
    let unusable = if_inet6
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [addr, _, _, scope, flags, _] = f[..] else { return None };
            let (scope, flags) = (u8::from_str_radix(scope, 16).ok()?, u8::from_str_radix(flags, 16).ok()?);
            let addr = hex_addr(addr)?;
            let ready = flags & IFA_F_TENTATIVE == 0 && local.contains(&addr);
            (scope == SCOPE_GLOBAL && !ready).then_some(addr)
        })
        .collect();
    Ipv6State { default_route: has_ipv6_default_route(ipv6_route), unusable }
}

/// Whether the calling thread's network namespace has an IPv6 default
/// route ([`has_ipv6_default_route`]).
pub fn read_ipv6_default_route_of_thread(proc_root: &Path) -> Result<bool, ProcNetError> {
    Ok(has_ipv6_default_route(&read_text(&proc_root.join("thread-self/net/ipv6_route"))?))
}

/// The [`Ipv6State`] of the network namespace of `pid` (of the calling
/// thread's when `None`).
pub fn read_ipv6_state(proc_root: &Path, pid: Option<u32>) -> Result<Ipv6State, ProcNetError> {
    let dir = match pid {
        Some(_) => net_file(proc_root, pid, ""),
        None => proc_root.join("thread-self/net"),
    };
    Ok(ipv6_state(&read_text(&dir.join("ipv6_route"))?, &read_text(&dir.join("if_inet6"))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pasta namespace once configured (default route via the host's
    /// gateway, the address's `local` route, link-local and loopback).
    const ROUTES: &str = "\
fd000231000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000002 00000000 00000001    fv77a
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000231000000000000000000000001 00000400 00000001 00000000 00000003    fv77a
fd000231000000000000000000000002 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000003 00000000 80200001    fv77a
";
    const ADDRS: &str = "\
fd000231000000000000000000000002 02 40 00 82    fv77a
fe8000000000000084ca80fffea5f774 02 40 20 80    fv77a
00000000000000000000000000000001 01 80 10 80       lo
";
    const FD2: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x231, 0, 0, 0, 0, 0, 2);

    #[test]
    fn configured_namespace_has_a_default_route_and_every_address_usable() {
        assert_eq!(ipv6_state(ROUTES, ADDRS), Ipv6State { default_route: true, unusable: vec![] });
    }

    #[test]
    fn an_address_without_its_local_route_is_not_usable_yet() {
        let routes: String = ROUTES.lines().filter(|l| !l.ends_with("80200001    fv77a")).map(|l| format!("{l}\n")).collect();

        assert_eq!(ipv6_state(&routes, ADDRS), Ipv6State { default_route: true, unusable: vec![FD2] });
    }

    #[test]
    fn a_tentative_address_is_not_usable_and_link_local_ones_do_not_count() {
        let addrs = ADDRS.replace("02 40 00 82", "02 40 00 c0").replace("02 40 20 80", "02 40 20 c0");

        assert_eq!(ipv6_state(ROUTES, &addrs).unusable, vec![FD2]);
    }

    #[test]
    fn no_default_route_without_one() {
        let routes: String = ROUTES.lines().filter(|l| !l.starts_with("0000")).map(|l| format!("{l}\n")).collect();

        assert!(!ipv6_state(&routes, ADDRS).default_route);
    }
}

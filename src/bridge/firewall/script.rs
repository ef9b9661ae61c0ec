//! Pure nft script builders: values in, script text out.
//!
//! Every script is meant to run as one libnftables call, i.e. one kernel
//! transaction: it applies completely or not at all. The syntax is that of
//! nftables 1.0.6 (Debian 12) and later.
//!
//! # Decisions
//!
//! - **[`table_script`] converges instead of recreating.** It `add`s the
//!   table, maps and chains (a no-op when they exist) and `flush`es and
//!   refills only the chains. Running it twice leaves exactly one copy of each
//!   rule, a changed [`NetworkRules`] (say, masquerade turned off) replaces
//!   the old rules atomically, and the maps, which hold every container's
//!   published ports, are never touched. Deleting and re-adding the table
//!   would drop them.
//! - **Removal is `add element` then `delete element`.** nftables 1.0.6 has no
//!   `destroy`, and a bare `delete element` fails on an absent key. Adding
//!   first makes an absent element a no-op; and because `add` refuses
//!   (`File exists`) a key already mapped to a *different* value, removal
//!   never deletes a host port that has since been given to another
//!   container (a bare `delete` matches on the key alone and would).
//! - **Deletion of a table is `add table` then `delete table`**, so deleting
//!   an absent table succeeds.

use std::fmt::Write as _;

use super::{Forward, NetworkRules};
use crate::model::port::PortProto;

/// The version of the table layout [`table_script`] builds, carried in the
/// table's comment ([`table_comment`]). A table with another comment (or
/// none: tables of versions before 2) is rebuilt, its forwards kept.
pub const TABLE_VERSION: u32 = 2;

/// The comment that marks a table built by this version of [`table_script`].
pub fn table_comment() -> String {
    format!("pelagos-net table v{TABLE_VERSION}")
}

/// The nftables table of network `net`: `pelagos-<net>`.
pub fn table_name(net: &str) -> String {
    format!("pelagos-{net}")
}

/// The forwarding maps, in the order rules consult them: for each protocol,
/// the host-address-specific map before the any-address one.
const MAPS: [(PortProto, bool); 4] =
    [(PortProto::Tcp, true), (PortProto::Tcp, false), (PortProto::Udp, true), (PortProto::Udp, false)];

use super::nfnl::map_name;

/// An idempotent script that creates network `net`'s table, or brings an
/// existing one's rules up to date while keeping its map elements.
pub fn table_script(net: &NetworkRules) -> String {
    let t = format!("ip {}", table_name(&net.name));
    let (subnet, bridge, gw) = (net.subnet, &net.bridge, net.gateway);
    let mut s = String::new();
    let mut line = |text: String| {
        s.push_str(&text);
        s.push('\n');
    };
    line(format!("add table {t} {{ comment \"{}\"; }}", table_comment()));
    for (proto, by_addr) in MAPS {
        let key = if by_addr { "ipv4_addr . inet_service" } else { "inet_service" };
        let name = map_name(proto, by_addr);
        line(format!("add map {t} {name} {{ type {key} : ipv4_addr . inet_service; }}"));
    }
    line(format!("add chain {t} forwards"));
    line(format!("flush chain {t} forwards"));
    for (proto, by_addr) in MAPS {
        let (p, name) = (proto.as_str(), map_name(proto, by_addr));
        let key = if by_addr { format!("ip daddr . {p} dport") } else { format!("{p} dport") };
        line(format!("add rule {t} forwards dnat ip to {key} map @{name}"));
    }
    let base = [
        ("prerouting", "nat hook prerouting priority dstnat"),
        ("output", "nat hook output priority -100"),
        ("postrouting", "nat hook postrouting priority srcnat"),
        ("isolation", "filter hook forward priority filter"),
    ];
    for (chain, hook) in base {
        line(format!("add chain {t} {chain} {{ type {hook}; policy accept; }}"));
        line(format!("flush chain {t} {chain}"));
    }
    line(format!("add rule {t} prerouting fib daddr type local jump forwards"));
    line(format!("add rule {t} output fib daddr type local jump forwards"));
    if net.masquerade {
        line(format!("add rule {t} postrouting ip saddr {subnet} oifname != \"{bridge}\" masquerade"));
    }
    line(format!("add rule {t} postrouting ct status dnat ip saddr {subnet} ip daddr {subnet} snat ip to {gw}"));
    line(format!("add rule {t} postrouting ct status dnat ip saddr 127.0.0.0/8 oifname \"{bridge}\" snat ip to {gw}"));
    // Isolation: traffic from this bridge reaches no other pelagos bridge
    // (`pelagos0`, `pn-*`) unless it was DNATed to a published port; an
    // internal network forwards nothing but published-port traffic.
    let guard = format!("iifname \"{bridge}\" oifname != \"{bridge}\" ct status != dnat");
    if !net.internal {
        line(format!("add rule {t} isolation {guard} oifname \"pelagos0\" drop"));
        line(format!("add rule {t} isolation {guard} oifname \"pn-*\" drop"));
    } else {
        line(format!("add rule {t} isolation {guard} drop"));
        line(format!("add rule {t} isolation oifname \"{bridge}\" iifname != \"{bridge}\" ct status != dnat drop"));
    }
    s
}

/// `{ KEY : VALUE, ... }` per map for `fwds`, in [`MAPS`] order; maps with no
/// element are left out.
fn elements_by_map(fwds: &[Forward]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (proto, by_addr) in MAPS {
        let mut elems = Vec::new();
        for f in fwds.iter().filter(|f| f.proto == proto && f.host_ip.is_some() == by_addr) {
            let mut e = String::new();
            if let Some(ip) = f.host_ip {
                let _ = write!(e, "{ip} . ");
            }
            let _ = write!(e, "{} : {} . {}", f.host_port, f.container_ip, f.container_port);
            elems.push(e);
        }
        if !elems.is_empty() {
            out.push((map_name(proto, by_addr), format!("{{ {} }}", elems.join(", "))));
        }
    }
    out
}

/// A script adding `fwds` to network `net`'s maps, one `add element` per
/// map. Re-adding an identical element is a no-op; a host port already
/// mapped elsewhere fails the whole transaction. Empty for no forwards.
pub fn add_forwards_script(net: &str, fwds: &[Forward]) -> String {
    let t = table_name(net);
    elements_by_map(fwds).iter().map(|(map, elems)| format!("add element ip {t} {map} {elems}\n")).collect()
}

/// A script removing `fwds` from network `net`'s maps: `add element` then
/// `delete element`, so absent elements are no-ops (see the module docs).
/// Empty for no forwards.
pub fn remove_forwards_script(net: &str, fwds: &[Forward]) -> String {
    let t = table_name(net);
    elements_by_map(fwds)
        .iter()
        .map(|(map, elems)| format!("add element ip {t} {map} {elems}\ndelete element ip {t} {map} {elems}\n"))
        .collect()
}

/// One transaction replacing network `net`'s table (built by another
/// version) with the current layout, keeping the forwards `fwds` it held.
pub fn rebuild_script(net: &NetworkRules, fwds: &[Forward]) -> String {
    let mut s = delete_table_script(&net.name);
    s.push_str(&table_script(net));
    s.push_str(&add_forwards_script(&net.name, fwds));
    s
}

/// A script deleting network `net`'s table, succeeding when it is absent.
pub fn delete_table_script(net: &str) -> String {
    let t = table_name(net);
    format!("add table ip {t}\ndelete table ip {t}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn rules(masquerade: bool) -> NetworkRules {
        NetworkRules {
            name: "web".into(),
            subnet: "10.77.0.0/24".parse().unwrap(),
            bridge: "pelagos0".into(),
            gateway: Ipv4Addr::new(10, 77, 0, 1),
            masquerade,
            internal: !masquerade,
        }
    }

    use crate::bridge::firewall::test_forward as fwd;

    const GOLDEN_TABLE: &str = r#"add table ip pelagos-web { comment "pelagos-net table v2"; }
add map ip pelagos-web fwd_tcp_addr { type ipv4_addr . inet_service : ipv4_addr . inet_service; }
add map ip pelagos-web fwd_tcp_any { type inet_service : ipv4_addr . inet_service; }
add map ip pelagos-web fwd_udp_addr { type ipv4_addr . inet_service : ipv4_addr . inet_service; }
add map ip pelagos-web fwd_udp_any { type inet_service : ipv4_addr . inet_service; }
add chain ip pelagos-web forwards
flush chain ip pelagos-web forwards
add rule ip pelagos-web forwards dnat ip to ip daddr . tcp dport map @fwd_tcp_addr
add rule ip pelagos-web forwards dnat ip to tcp dport map @fwd_tcp_any
add rule ip pelagos-web forwards dnat ip to ip daddr . udp dport map @fwd_udp_addr
add rule ip pelagos-web forwards dnat ip to udp dport map @fwd_udp_any
add chain ip pelagos-web prerouting { type nat hook prerouting priority dstnat; policy accept; }
flush chain ip pelagos-web prerouting
add chain ip pelagos-web output { type nat hook output priority -100; policy accept; }
flush chain ip pelagos-web output
add chain ip pelagos-web postrouting { type nat hook postrouting priority srcnat; policy accept; }
flush chain ip pelagos-web postrouting
add chain ip pelagos-web isolation { type filter hook forward priority filter; policy accept; }
flush chain ip pelagos-web isolation
add rule ip pelagos-web prerouting fib daddr type local jump forwards
add rule ip pelagos-web output fib daddr type local jump forwards
add rule ip pelagos-web postrouting ip saddr 10.77.0.0/24 oifname != "pelagos0" masquerade
add rule ip pelagos-web postrouting ct status dnat ip saddr 10.77.0.0/24 ip daddr 10.77.0.0/24 snat ip to 10.77.0.1
add rule ip pelagos-web postrouting ct status dnat ip saddr 127.0.0.0/8 oifname "pelagos0" snat ip to 10.77.0.1
add rule ip pelagos-web isolation iifname "pelagos0" oifname != "pelagos0" ct status != dnat oifname "pelagos0" drop
add rule ip pelagos-web isolation iifname "pelagos0" oifname != "pelagos0" ct status != dnat oifname "pn-*" drop
"#;

    #[test]
    fn table_script_matches_golden() {
        assert_eq!(table_script(&rules(true)), GOLDEN_TABLE);
    }

    #[test]
    fn table_script_of_an_internal_network_masquerades_nothing_and_forwards_only_published_ports() {
        let mut want: String = GOLDEN_TABLE
            .lines()
            .filter(|l| !l.ends_with(" masquerade") && !l.contains(" isolation iifname"))
            .map(|l| format!("{l}\n"))
            .collect();
        want.push_str(
            "add rule ip pelagos-web isolation iifname \"pelagos0\" oifname != \"pelagos0\" ct status != dnat drop\n",
        );
        want.push_str(
            "add rule ip pelagos-web isolation oifname \"pelagos0\" iifname != \"pelagos0\" ct status != dnat drop\n",
        );
        assert_eq!(table_script(&rules(false)), want);
        assert!(want.contains("snat ip to 10.77.0.1"), "hairpin and loopback rules stay");
    }

    #[test]
    fn table_script_never_flushes_or_deletes_the_table_or_maps() {
        let s = table_script(&rules(true));
        assert!(!s.contains("flush table") && !s.contains("delete") && !s.contains("flush map"), "{s}");
    }

    #[test]
    fn add_forwards_script_groups_elements_per_map_in_rule_order() {
        let fwds = [
            fwd(None, 8080, PortProto::Tcp, [10, 77, 0, 2], 80),
            fwd(None, 5353, PortProto::Udp, [10, 77, 0, 2], 53),
            fwd(Some([127, 0, 0, 1]), 8081, PortProto::Tcp, [10, 77, 0, 2], 81),
            fwd(None, 8443, PortProto::Tcp, [10, 77, 0, 2], 443),
        ];
        let want = "\
add element ip pelagos-web fwd_tcp_addr { 127.0.0.1 . 8081 : 10.77.0.2 . 81 }
add element ip pelagos-web fwd_tcp_any { 8080 : 10.77.0.2 . 80, 8443 : 10.77.0.2 . 443 }
add element ip pelagos-web fwd_udp_any { 5353 : 10.77.0.2 . 53 }
";
        assert_eq!(add_forwards_script("web", &fwds), want);
    }

    #[test]
    fn remove_forwards_script_adds_then_deletes_each_map_batch() {
        let fwds = [
            fwd(Some([10, 78, 0, 2]), 53, PortProto::Udp, [10, 77, 0, 3], 5353),
            fwd(None, 8080, PortProto::Tcp, [10, 77, 0, 3], 80),
        ];
        let want = "\
add element ip pelagos-web fwd_tcp_any { 8080 : 10.77.0.3 . 80 }
delete element ip pelagos-web fwd_tcp_any { 8080 : 10.77.0.3 . 80 }
add element ip pelagos-web fwd_udp_addr { 10.78.0.2 . 53 : 10.77.0.3 . 5353 }
delete element ip pelagos-web fwd_udp_addr { 10.78.0.2 . 53 : 10.77.0.3 . 5353 }
";
        assert_eq!(remove_forwards_script("web", &fwds), want);
    }

    #[test]
    fn forwards_scripts_are_empty_for_no_forwards() {
        assert_eq!(add_forwards_script("web", &[]), "");
        assert_eq!(remove_forwards_script("web", &[]), "");
    }

    #[test]
    fn a_rebuild_deletes_recreates_and_refills_in_one_script() {
        let fwds = [fwd(None, 8080, PortProto::Tcp, [10, 77, 0, 2], 80)];
        let s = rebuild_script(&rules(true), &fwds);
        assert!(
            s.starts_with("add table ip pelagos-web\ndelete table ip pelagos-web\nadd table ip pelagos-web { comment"),
            "{s}"
        );
        assert!(s.ends_with("add element ip pelagos-web fwd_tcp_any { 8080 : 10.77.0.2 . 80 }\n"), "{s}");
    }

    #[test]
    fn delete_table_script_adds_before_deleting_so_absent_is_fine() {
        assert_eq!(delete_table_script("a.b_c-1"), "add table ip pelagos-a.b_c-1\ndelete table ip pelagos-a.b_c-1\n");
    }
}

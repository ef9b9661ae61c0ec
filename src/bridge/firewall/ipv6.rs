//! The IPv6 side of a dual-stack bridge network: `table ip6 pelagos-<net>`,
//! beside the IPv4 table and in the same style (converging script, one
//! transaction, never another table touched).
//!
//! It masquerades egress from the network's IPv6 subnet (NAT66, as podman
//! and docker do for a ULA subnet: the containers' unique local addresses
//! are not routable outside) and applies the same isolation as IPv4. Published
//! ports stay IPv4: no IPv6 DNAT (a port published without a host address is
//! reached on the host's IPv4 addresses).

use crate::model::cidr6::Ipv6Net;

use super::script::table_name;

/// What a network's IPv6 table implements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network6Rules {
    /// Network name; the table is `ip6 pelagos-<name>`.
    pub name: String,
    /// The network's IPv6 subnet.
    pub subnet: Ipv6Net,
    /// The bridge.
    pub bridge: String,
    /// Masquerade egress (false: an internal network).
    pub masquerade: bool,
}

/// An idempotent script creating or refreshing network `net`'s IPv6 table.
pub fn table6_script(net: &Network6Rules) -> String {
    let t = format!("ip6 {}", table_name(&net.name));
    let (subnet, bridge) = (net.subnet, &net.bridge);
    let mut s = format!("add table {t}\n");
    for (chain, hook) in
        [("postrouting", "nat hook postrouting priority srcnat"), ("isolation", "filter hook forward priority filter")]
    {
        s.push_str(&format!("add chain {t} {chain} {{ type {hook}; policy accept; }}\nflush chain {t} {chain}\n"));
    }
    if net.masquerade {
        s.push_str(&format!("add rule {t} postrouting ip6 saddr {subnet} oifname != \"{bridge}\" masquerade\n"));
    }
    let guard = format!("iifname \"{bridge}\" oifname != \"{bridge}\"");
    if net.masquerade {
        s.push_str(&format!("add rule {t} isolation {guard} oifname \"pelagos0\" drop\n"));
        s.push_str(&format!("add rule {t} isolation {guard} oifname \"pn-*\" drop\n"));
    } else {
        s.push_str(&format!("add rule {t} isolation {guard} drop\n"));
        s.push_str(&format!("add rule {t} isolation oifname \"{bridge}\" iifname != \"{bridge}\" drop\n"));
    }
    s
}

/// A script deleting network `net`'s IPv6 table, succeeding when it is absent.
pub fn delete_table6_script(net: &str) -> String {
    let t = table_name(net);
    format!("add table ip6 {t}\ndelete table ip6 {t}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_table_masquerades_the_subnet_and_isolates_the_bridge() {
        let rules = Network6Rules {
            name: "web".into(),
            subnet: "fd70:656c:6167::/64".parse().unwrap(),
            bridge: "pn-web".into(),
            masquerade: true,
        };
        let s = table6_script(&rules);
        assert!(s.starts_with("add table ip6 pelagos-web\n"), "{s}");
        assert!(
            s.contains(
                "add rule ip6 pelagos-web postrouting ip6 saddr fd70:656c:6167::/64 oifname != \"pn-web\" masquerade\n"
            ),
            "{s}"
        );
        assert!(s.contains("isolation iifname \"pn-web\" oifname != \"pn-web\" oifname \"pn-*\" drop"), "{s}");
        let internal = table6_script(&Network6Rules { masquerade: false, ..rules });
        assert!(!internal.contains("masquerade") && internal.contains("oifname \"pn-web\" iifname != \"pn-web\" drop"));
        assert_eq!(delete_table6_script("web"), "add table ip6 pelagos-web\ndelete table ip6 pelagos-web\n");
    }
}

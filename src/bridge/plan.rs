//! Pure planning for one container on a bridge network: names, address,
//! and the per-port forwards, computed before anything is touched.

use crate::bridge::firewall::{Forward, NetworkRules};
use crate::bridge::network::NetworkDef;
use crate::model::ifname::{IfName, generate_ns_name, veth_name};
use crate::model::port::PortMapping;
use std::net::{IpAddr, Ipv4Addr};

/// Why a plan cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A mapping still has no host port.
    #[error("published port {0} has no host port (resolve ephemeral ports first)")]
    UnresolvedHostPort(String),
    /// Bridge networks are IPv4-only so far.
    #[error("published port {0} binds an IPv6 host address; bridge networks are IPv4-only")]
    Ipv6HostIp(String),
    /// Host and container ranges differ in length.
    #[error("published port {0} maps ranges of different lengths")]
    RangeMismatch(String),
}

/// Everything one attach will create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgePlan {
    /// Named netns (`pelagos-<id>`).
    pub ns_name: String,
    /// Host end of the veth pair.
    pub veth_host: IfName,
    /// Name of the container end.
    pub peer: IfName,
    /// Container address.
    pub address: Ipv4Addr,
    /// Subnet prefix length.
    pub prefix: u8,
    /// Default gateway (`None` for a secondary network).
    pub gateway: Option<Ipv4Addr>,
    /// MTU of both veth ends (`None`: the kernel's default).
    pub mtu: Option<u32>,
    /// The IPv6 side on a dual-stack network.
    pub v6: Option<Plan6>,
    /// One forward per published port.
    pub forwards: Vec<Forward>,
}

/// A container's IPv6 side on a dual-stack network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan6 {
    /// Its address (the IPv6 subnet plus the IPv4 address's offset).
    pub address: std::net::Ipv6Addr,
    /// The IPv6 subnet's prefix length.
    pub prefix: u8,
    /// IPv6 default gateway (`None` for a secondary network).
    pub gateway: Option<std::net::Ipv6Addr>,
}

impl Plan6 {
    /// The IPv6 side of `address` on `def` (`None` for an IPv4-only network);
    /// `primary` attaches get the default route.
    pub fn of(def: &NetworkDef, address: Ipv4Addr, primary: bool) -> Option<Self> {
        let subnet6 = def.options.subnet6?;
        Some(Self {
            address: crate::bridge::network::address6_of(def, address)?,
            prefix: subnet6.prefix(),
            gateway: if primary { def.options.gateway6 } else { None },
        })
    }
}

/// The IPv6 rules of a dual-stack network (`None` for IPv4 only).
pub fn rules6_for(def: &NetworkDef) -> Option<crate::bridge::firewall::Network6Rules> {
    Some(crate::bridge::firewall::Network6Rules {
        name: def.name.to_string(),
        subnet: def.options.subnet6?,
        bridge: def.bridge.to_string(),
        masquerade: !def.internal,
    })
}

/// The nftables description of a network.
pub fn rules_for(def: &NetworkDef) -> NetworkRules {
    NetworkRules {
        name: def.name.to_string(),
        subnet: def.subnet,
        bridge: def.bridge.to_string(),
        gateway: def.gateway,
        masquerade: def.masquerade && !def.internal,
        internal: def.internal,
    }
}

/// Expand `ports` into one forward per port to `address`.
pub fn forwards(address: Ipv4Addr, ports: &[PortMapping]) -> Result<Vec<Forward>, PlanError> {
    let mut out = Vec::new();
    for m in ports {
        let host = m.host.ok_or_else(|| PlanError::UnresolvedHostPort(m.to_string()))?;
        if host.len() != m.container.len() {
            return Err(PlanError::RangeMismatch(m.to_string()));
        }
        let host_ip = match m.host_ip {
            None => None,
            Some(IpAddr::V4(v4)) => Some(v4),
            Some(IpAddr::V6(_)) => return Err(PlanError::Ipv6HostIp(m.to_string())),
        };
        out.extend(host.iter().zip(m.container.iter()).map(|(h, c)| Forward {
            host_ip,
            host_port: h,
            proto: m.proto,
            container_ip: address,
            container_port: c,
        }));
    }
    Ok(out)
}

/// Plan the primary attach of container `id` at `address`.
pub fn plan(def: &NetworkDef, id: &str, address: Ipv4Addr, ports: &[PortMapping]) -> Result<BridgePlan, PlanError> {
    Ok(BridgePlan {
        ns_name: generate_ns_name(id),
        veth_host: veth_name(id),
        peer: IfName::new("eth0").expect("valid"),
        address,
        prefix: def.subnet.prefix(),
        gateway: Some(def.gateway),
        mtu: def.options.mtu,
        v6: Plan6::of(def, address, true),
        forwards: forwards(address, ports)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::network::default_network_def;

    #[test]
    fn ranges_expand_to_one_forward_per_port() {
        let ports: Vec<PortMapping> = vec!["127.0.0.1:8000-8001:80-81".parse().unwrap(), "53:53/udp".parse().unwrap()];
        let p = plan(&default_network_def(), "0123456789abcdef", "10.90.0.5".parse().unwrap(), &ports).unwrap();
        assert_eq!(p.ns_name, "pelagos-0123456789abcdef");
        assert_eq!(p.veth_host.as_str(), "pv0123456789ab");
        let pairs: Vec<(Option<Ipv4Addr>, u16, u16)> =
            p.forwards.iter().map(|f| (f.host_ip, f.host_port, f.container_port)).collect();
        let lo = Some(Ipv4Addr::LOCALHOST);
        assert_eq!(pairs, vec![(lo, 8000, 80), (lo, 8001, 81), (None, 53, 53)]);
        assert_eq!(p.gateway, Some("10.90.0.1".parse().unwrap()));
    }

    #[test]
    fn ipv6_host_ip_and_unresolved_ports_are_refused() {
        let v6: PortMapping = "[::1]:8080:80".parse().unwrap();
        assert!(matches!(forwards(Ipv4Addr::LOCALHOST, &[v6]), Err(PlanError::Ipv6HostIp(_))));
        let eph: PortMapping = "80".parse().unwrap();
        assert!(matches!(forwards(Ipv4Addr::LOCALHOST, &[eph]), Err(PlanError::UnresolvedHostPort(_))));
    }

    #[test]
    fn internal_networks_do_not_masquerade() {
        let mut def = default_network_def();
        assert!(rules_for(&def).masquerade);
        def.internal = true;
        assert!(!rules_for(&def).masquerade);
    }
}

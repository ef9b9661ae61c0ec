//! Policy routing for the builtin port driver's source-address
//! preservation: a rule sending marked packets to a table whose only route
//! is `local default dev lo`, and the namespace's routed addresses.

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::route::{RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Netlink, NetlinkError};

/// Address family of a rule or route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl IpFamily {
    fn netlink(self) -> AddressFamily {
        match self {
            Self::V4 => AddressFamily::Inet,
            Self::V6 => AddressFamily::Inet6,
        }
    }
}

/// `ip rule add fwmark MARK lookup TABLE priority PRIORITY`.
fn fwmark_rule(family: IpFamily, mark: u32, table: u32, priority: u32) -> RuleMessage {
    let mut msg = RuleMessage::default();
    msg.header.family = family.netlink();
    msg.header.action = RuleAction::ToTable;
    msg.header.table = RouteHeader::RT_TABLE_UNSPEC;
    msg.attributes.push(RuleAttribute::FwMark(mark));
    msg.attributes.push(RuleAttribute::FwMask(u32::MAX));
    msg.attributes.push(RuleAttribute::Table(table));
    msg.attributes.push(RuleAttribute::Priority(priority));
    msg
}

/// `ip route add local default dev lo table TABLE`.
fn local_default(family: IpFamily, table: u32, lo: u32) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = family.netlink();
    msg.header.destination_prefix_length = 0;
    msg.header.table = RouteHeader::RT_TABLE_UNSPEC;
    msg.header.protocol = RouteProtocol::Boot;
    msg.header.scope = RouteScope::Host;
    msg.header.kind = RouteType::Local;
    msg.attributes.push(RouteAttribute::Table(table));
    msg.attributes.push(RouteAttribute::Oif(lo));
    msg
}

/// The first routed (non-loopback, non-link-local) address of each family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoutedAddresses {
    /// IPv4.
    pub v4: Option<Ipv4Addr>,
    /// IPv6 (global scope).
    pub v6: Option<Ipv6Addr>,
}

fn routed(msg: &AddressMessage) -> Option<IpAddr> {
    if msg.header.scope != AddressScope::Universe {
        return None;
    }
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let address = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    });
    local.or(address).filter(|ip| !ip.is_loopback())
}

impl Netlink {
    /// Route packets carrying `mark` through `table` (both must be new).
    pub fn add_fwmark_rule(
        &mut self,
        family: IpFamily,
        mark: u32,
        table: u32,
        priority: u32,
    ) -> Result<(), NetlinkError> {
        let msg = fwmark_rule(family, mark, table, priority);
        self.request(RouteNetlinkMessage::NewRule(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map(drop)
            .map_err(|source| NetlinkError::AddRule { mark, table, source })
    }

    /// Make every destination local in `table`, through link `lo`.
    pub fn add_local_default_route(&mut self, family: IpFamily, table: u32, lo: u32) -> Result<(), NetlinkError> {
        self.request(RouteNetlinkMessage::NewRoute(local_default(family, table, lo)), NLM_F_CREATE | NLM_F_EXCL)
            .map(drop)
            .map_err(|source| NetlinkError::AddLocalRoute { table, source })
    }

    /// The namespace's first routed address of each family.
    pub fn routed_addresses(&mut self) -> Result<RoutedAddresses, NetlinkError> {
        let mut found = RoutedAddresses::default();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut query = AddressMessage::default();
            query.header.family = family;
            let replies = self
                .dump(RouteNetlinkMessage::GetAddress(query))
                .map_err(|source| NetlinkError::ListAllAddresses { source })?;
            for reply in replies {
                let RouteNetlinkMessage::NewAddress(msg) = reply else { continue };
                match routed(&msg) {
                    Some(IpAddr::V4(ip)) if found.v4.is_none() => found.v4 = Some(ip),
                    Some(IpAddr::V6(ip)) if found.v6.is_none() => found.v6 = Some(ip),
                    _ => {}
                }
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fwmark_rule_matches_the_whole_mark_and_looks_up_the_table() {
        let msg = fwmark_rule(IpFamily::V4, 0x7067, 7067, 100);

        assert_eq!(msg.header.action, RuleAction::ToTable);
        assert!(msg.attributes.contains(&RuleAttribute::FwMark(0x7067)));
        assert!(msg.attributes.contains(&RuleAttribute::FwMask(u32::MAX)));
        assert!(msg.attributes.contains(&RuleAttribute::Table(7067)));
    }

    #[test]
    fn local_default_route_is_host_scoped_local_in_the_table() {
        let msg = local_default(IpFamily::V6, 7067, 1);

        assert_eq!(msg.header.address_family, AddressFamily::Inet6);
        assert_eq!(msg.header.kind, RouteType::Local);
        assert_eq!(msg.header.scope, RouteScope::Host);
        assert!(msg.attributes.contains(&RouteAttribute::Table(7067)));
    }
}

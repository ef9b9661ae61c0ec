//! Routes: add the IPv4 and IPv6 default routes, list the IPv4 main table.

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::net::{Ipv4Addr, Ipv6Addr};

use super::{Netlink, NetlinkError, RouteInfo, RouteTo};
use crate::model::cidr::Ipv4Net;

const RT_TABLE_MAIN: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// The `RTM_NEWROUTE` message for `default via gateway` in the main table,
/// as `ip route add default via GATEWAY` (or `ip -6 ...`) sends it.
fn default_route(family: AddressFamily, gateway: RouteAddress) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = family;
    msg.header.destination_prefix_length = 0;
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Boot;
    msg.header.scope = RouteScope::Universe;
    msg.header.kind = RouteType::Unicast;
    msg.attributes.push(RouteAttribute::Gateway(gateway));
    msg
}

/// The route of the main table `msg` describes, if it is one.
fn main_table_route(msg: RouteMessage) -> Option<RouteInfo> {
    if msg.header.address_family != AddressFamily::Inet {
        return None;
    }
    let mut table = u32::from(msg.header.table);
    let mut destination = Ipv4Addr::UNSPECIFIED;
    let mut gateway = None;
    let mut oif = None;
    for attr in msg.attributes {
        match attr {
            // RTA_TABLE holds the full id; the header's u8 only the low part.
            RouteAttribute::Table(t) => table = t,
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => destination = ip,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(ip),
            RouteAttribute::Oif(index) => oif = Some(index),
            _ => {}
        }
    }
    if table != RT_TABLE_MAIN {
        return None;
    }
    let destination = Ipv4Net::truncating(destination, msg.header.destination_prefix_length).ok()?;
    Some(RouteInfo { destination, gateway, oif })
}

impl Netlink {
    /// Add the IPv4 default route via `gateway` to the main table. The
    /// kernel picks the output link whose subnet holds `gateway`, so that
    /// link must be up with its address first (else `ENETUNREACH`).
    pub fn add_default_route(&mut self, gateway: Ipv4Addr) -> Result<(), NetlinkError> {
        let msg = default_route(AddressFamily::Inet, RouteAddress::Inet(gateway));
        self.request(RouteNetlinkMessage::NewRoute(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map(drop)
            .map_err(|source| NetlinkError::AddDefaultRoute { gateway, source })
    }

    /// Networks the host already has: the networks of its addresses and the
    /// destinations of its routes (the default route excluded). A new
    /// network's subnet must overlap none of them.
    pub fn host_networks(&mut self) -> Result<Vec<crate::model::cidr::Ipv4Net>, NetlinkError> {
        let mut nets: Vec<crate::model::cidr::Ipv4Net> = self
            .ipv4_addresses()?
            .into_iter()
            .filter_map(|a| crate::model::cidr::Ipv4Net::truncating(a.address, a.prefix).ok())
            .collect();
        nets.extend(self.ipv4_routes()?.into_iter().map(|r| r.destination).filter(|d| d.prefix() > 0));
        Ok(nets)
    }

    /// Add the IPv6 default route via `gateway` (on-link through the
    /// subnet route of the link's address) to the main table.
    pub fn add_default_route6(&mut self, gateway: Ipv6Addr) -> Result<(), NetlinkError> {
        let msg = default_route(AddressFamily::Inet6, RouteAddress::Inet6(gateway));
        self.request(RouteNetlinkMessage::NewRoute(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map(drop)
            .map_err(|source| NetlinkError::AddDefaultRoute6 { gateway, source })
    }

    /// Where packets to `destination` go, as `ip route get` says.
    pub fn route_to(&mut self, destination: std::net::IpAddr) -> Result<RouteTo, NetlinkError> {
        let mut query = RouteMessage::default();
        let (family, addr, len) = match destination {
            std::net::IpAddr::V4(v4) => (AddressFamily::Inet, RouteAddress::Inet(v4), 32),
            std::net::IpAddr::V6(v6) => (AddressFamily::Inet6, RouteAddress::Inet6(v6), 128),
        };
        query.header.address_family = family;
        query.header.destination_prefix_length = len;
        query.attributes.push(RouteAttribute::Destination(addr));
        let replies = self
            .request(RouteNetlinkMessage::GetRoute(query), 0)
            .map_err(|source| NetlinkError::GetRoute { destination, source })?;
        let route = replies.into_iter().find_map(|reply| match reply {
            RouteNetlinkMessage::NewRoute(msg) => Some(msg),
            _ => None,
        });
        Ok(route.map_or(RouteTo { oif: None, local: false }, |msg| RouteTo {
            oif: msg.attributes.iter().find_map(|a| if let RouteAttribute::Oif(i) = a { Some(*i) } else { None }),
            local: msg.header.kind == RouteType::Local,
        }))
    }

    /// Every IPv4 route of the main table.
    pub fn ipv4_routes(&mut self) -> Result<Vec<RouteInfo>, NetlinkError> {
        let mut query = RouteMessage::default();
        query.header.address_family = AddressFamily::Inet;
        let replies =
            self.dump(RouteNetlinkMessage::GetRoute(query)).map_err(|source| NetlinkError::ListRoutes { source })?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewRoute(msg) => main_table_route(msg),
                _ => None,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_route_reads_back_as_main_table_default_via_gateway() {
        let gateway = Ipv4Addr::new(10, 88, 0, 1);

        let info = main_table_route(default_route(AddressFamily::Inet, RouteAddress::Inet(gateway))).unwrap();

        assert_eq!(info.destination, "0.0.0.0/0".parse().unwrap());
        assert_eq!(info.gateway, Some(gateway));
        assert_eq!(info.oif, None);
    }

    #[test]
    fn route_of_local_table_is_left_out() {
        let mut msg = default_route(AddressFamily::Inet, RouteAddress::Inet(Ipv4Addr::new(10, 0, 0, 1)));
        msg.header.table = 255;

        assert!(main_table_route(msg).is_none());
    }

    #[test]
    fn table_attribute_overrides_header_table() {
        let mut msg = default_route(AddressFamily::Inet, RouteAddress::Inet(Ipv4Addr::new(10, 0, 0, 1)));
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.attributes.push(RouteAttribute::Table(1000 + 254));

        assert!(main_table_route(msg).is_none());
    }

    #[test]
    fn connected_route_has_destination_and_oif() {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.destination_prefix_length = 24;
        msg.attributes.push(RouteAttribute::Destination(RouteAddress::Inet(Ipv4Addr::new(10, 88, 0, 0))));
        msg.attributes.push(RouteAttribute::Oif(5));

        let info = main_table_route(msg).unwrap();

        assert_eq!(info, RouteInfo { destination: "10.88.0.0/24".parse().unwrap(), gateway: None, oif: Some(5) });
    }
}

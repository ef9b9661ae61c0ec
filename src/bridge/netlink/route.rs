//! IPv4 routes: add the default route, list the main table.

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::net::Ipv4Addr;

use super::{Netlink, NetlinkError, RouteInfo};
use crate::model::cidr::Ipv4Net;

const RT_TABLE_MAIN: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// The `RTM_NEWROUTE` message for `default via gateway` in the main table,
/// as `ip route add default via GATEWAY` sends it.
fn default_route(gateway: Ipv4Addr) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    msg.header.destination_prefix_length = 0;
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Boot;
    msg.header.scope = RouteScope::Universe;
    msg.header.kind = RouteType::Unicast;
    msg.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
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
        self.request(RouteNetlinkMessage::NewRoute(default_route(gateway)), NLM_F_CREATE | NLM_F_EXCL)
            .map(drop)
            .map_err(|source| NetlinkError::AddDefaultRoute { gateway, source })
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

        let info = main_table_route(default_route(gateway)).unwrap();

        assert_eq!(info.destination, "0.0.0.0/0".parse().unwrap());
        assert_eq!(info.gateway, Some(gateway));
        assert_eq!(info.oif, None);
    }

    #[test]
    fn route_of_local_table_is_left_out() {
        let mut msg = default_route(Ipv4Addr::new(10, 0, 0, 1));
        msg.header.table = 255;

        assert!(main_table_route(msg).is_none());
    }

    #[test]
    fn table_attribute_overrides_header_table() {
        let mut msg = default_route(Ipv4Addr::new(10, 0, 0, 1));
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

//! IP addresses: add (IPv4 and IPv6), list (IPv4).

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nix::errno::Errno;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{AddrInfo, Netlink, NetlinkError};
use crate::model::cidr::Ipv4Net;

/// The `RTM_NEWADDR` message for `addr/prefix` on `ifindex`, with the
/// subnet's broadcast address when the subnet has one (prefix up to 30),
/// as `ip addr add ... brd +` sets it.
fn new_address(ifindex: u32, addr: Ipv4Addr, prefix: u8) -> Option<AddressMessage> {
    let net = Ipv4Net::truncating(addr, prefix).ok()?;
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = prefix;
    msg.header.index = ifindex;
    msg.attributes.push(AddressAttribute::Local(addr.into()));
    msg.attributes.push(AddressAttribute::Address(addr.into()));
    if prefix <= 30 {
        msg.attributes.push(AddressAttribute::Broadcast(net.broadcast()));
    }
    Some(msg)
}

fn addr_info(msg: AddressMessage) -> Option<AddrInfo> {
    let v4 = |a: &AddressAttribute| match a {
        AddressAttribute::Local(IpAddr::V4(ip)) => Some((0, *ip)),
        AddressAttribute::Address(IpAddr::V4(ip)) => Some((1, *ip)),
        _ => None,
    };
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS differs from it
    // only on point-to-point links, where it is the peer's.
    let (_, address) = msg.attributes.iter().filter_map(v4).min_by_key(|(rank, _)| *rank)?;
    Some(AddrInfo { ifindex: msg.header.index, address, prefix: msg.header.prefix_len })
}

impl Netlink {
    /// Add `addr/prefix` to link `ifindex`. Fails with `EEXIST` if the link
    /// already has that address, `EINVAL` if `prefix > 32`.
    pub fn add_address(&mut self, ifindex: u32, addr: Ipv4Addr, prefix: u8) -> Result<(), NetlinkError> {
        let err = |source| NetlinkError::AddAddress { ifindex, addr, prefix, source };
        let msg = new_address(ifindex, addr, prefix).ok_or_else(|| err(Errno::EINVAL.into()))?;
        self.request(RouteNetlinkMessage::NewAddress(msg), NLM_F_CREATE | NLM_F_EXCL).map(drop).map_err(err)
    }

    /// Add `addr/prefix` to link `ifindex` without duplicate address
    /// detection (`nodad`, as `ip addr add ... nodad`): the address is
    /// ours by construction and usable at once, not after DAD's ~1 s.
    /// `EEXIST` when the link has it already.
    pub fn add_address6(&mut self, ifindex: u32, addr: Ipv6Addr, prefix: u8) -> Result<(), NetlinkError> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet6;
        msg.header.prefix_len = prefix;
        msg.header.index = ifindex;
        msg.header.flags = AddressHeaderFlags::Nodad;
        msg.attributes.push(AddressAttribute::Address(addr.into()));
        msg.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
        self.request(RouteNetlinkMessage::NewAddress(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map(drop)
            .map_err(|source| NetlinkError::AddAddress6 { ifindex, addr, prefix, source })
    }

    /// Every IPv4 address in this namespace.
    pub fn ipv4_addresses(&mut self) -> Result<Vec<AddrInfo>, NetlinkError> {
        let mut query = AddressMessage::default();
        query.header.family = AddressFamily::Inet;
        let replies = self
            .dump(RouteNetlinkMessage::GetAddress(query))
            .map_err(|source| NetlinkError::ListAddresses { source })?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewAddress(msg) if msg.header.family == AddressFamily::Inet => addr_info(msg),
                _ => None,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_address_carries_local_address_and_broadcast() {
        let msg = new_address(4, Ipv4Addr::new(10, 88, 0, 2), 16).unwrap();

        assert_eq!(msg.header.index, 4);
        assert_eq!(msg.header.prefix_len, 16);
        assert!(msg.attributes.contains(&AddressAttribute::Local(Ipv4Addr::new(10, 88, 0, 2).into())));
        assert!(msg.attributes.contains(&AddressAttribute::Broadcast(Ipv4Addr::new(10, 88, 255, 255))));
    }

    #[test]
    fn new_address_of_point_to_point_prefix_has_no_broadcast() {
        let msg = new_address(4, Ipv4Addr::new(10, 0, 0, 1), 31).unwrap();

        assert!(!msg.attributes.iter().any(|a| matches!(a, AddressAttribute::Broadcast(_))));
    }

    #[test]
    fn new_address_with_prefix_over_32_is_refused() {
        assert!(new_address(4, Ipv4Addr::new(10, 0, 0, 1), 33).is_none());
    }

    #[test]
    fn addr_info_prefers_local_over_peer_address() {
        let mut msg = AddressMessage::default();
        msg.header.index = 2;
        msg.header.prefix_len = 32;
        msg.attributes.push(AddressAttribute::Address(Ipv4Addr::new(10, 0, 0, 9).into()));
        msg.attributes.push(AddressAttribute::Local(Ipv4Addr::new(10, 0, 0, 1).into()));

        let info = addr_info(msg).unwrap();

        assert_eq!(info, AddrInfo { ifindex: 2, address: Ipv4Addr::new(10, 0, 0, 1), prefix: 32 });
    }
}

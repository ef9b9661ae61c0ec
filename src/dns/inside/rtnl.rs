//! The namespace child's rtnetlink requests for name resolution (the DNS
//! address on `lo`, the rule that makes TCP to it fail fast): encoded before
//! the fork, sent from the child with raw, async-signal-safe system calls.

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage, RulePortRange};
use netlink_packet_route::{AddressFamily, IpProtocol, RouteNetlinkMessage};
use std::net::{IpAddr, Ipv4Addr};

/// Priority of the rule that makes TCP to the DNS address fail fast.
const RULE_PRIORITY: u32 = 90;
/// The index of `lo` in every network namespace.
const LO_INDEX: u32 = 1;

/// Send one prepared rtnetlink request and read its acknowledgement.
/// Async-signal-safe. `Err(errno)` when the kernel refused it.
pub(super) fn netlink_request(msg: &[u8]) -> Result<(), i32> {
    let errno = || nix::errno::Errno::last_raw();
    // SAFETY: socket/sendto/recv/close on a socket owned here, with a
    // zeroed sockaddr_nl and stack buffers of the lengths passed.
    unsafe {
        let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE);
        if fd < 0 {
            return Err(errno());
        }
        let mut kernel: libc::sockaddr_nl = std::mem::zeroed();
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        let sent = libc::sendto(fd, msg.as_ptr().cast(), msg.len(), 0, (&raw const kernel).cast(), len);
        if sent != msg.len() as isize {
            let e = errno();
            libc::close(fd);
            return Err(e);
        }
        let mut buf = [0u8; 1024];
        let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
        let e = errno();
        libc::close(fd);
        if n < 0 {
            return Err(e);
        }
        ack_errno(&buf[..n as usize])
    }
}

/// The error code of an rtnetlink acknowledgement (`NLMSG_ERROR`, code 0 is success).
pub(super) fn ack_errno(reply: &[u8]) -> Result<(), i32> {
    if reply.len() < 20 || u16::from_ne_bytes([reply[4], reply[5]]) != libc::NLMSG_ERROR as u16 {
        return Err(libc::EPROTO);
    }
    match i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]) {
        0 => Ok(()),
        code => Err(-code),
    }
}

pub(super) fn encode(msg: RouteNetlinkMessage, seq: u32) -> Vec<u8> {
    let mut packet = NetlinkMessage::from(msg);
    packet.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
    packet.header.sequence_number = seq;
    packet.finalize();
    let mut out = vec![0; packet.buffer_len()];
    packet.serialize(&mut out);
    out
}

/// `ip addr add ADDR/32 dev lo scope host`.
pub(super) fn lo_address(addr: Ipv4Addr) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = 32;
    msg.header.scope = AddressScope::Host;
    msg.header.index = LO_INDEX;
    msg.attributes.push(AddressAttribute::Local(IpAddr::V4(addr)));
    msg.attributes.push(AddressAttribute::Address(IpAddr::V4(addr)));
    msg
}

/// `ip rule add to ADDR/32 ipproto tcp dport 53 unreachable priority 90`.
pub(super) fn tcp_unreachable(addr: Ipv4Addr) -> RuleMessage {
    let mut msg = RuleMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.dst_len = 32;
    msg.header.action = RuleAction::Unreachable;
    msg.attributes.push(RuleAttribute::Destination(IpAddr::V4(addr)));
    msg.attributes.push(RuleAttribute::IpProtocol(IpProtocol::Tcp));
    msg.attributes.push(RuleAttribute::DestinationPortRange(RulePortRange { start: 53, end: 53 }));
    msg.attributes.push(RuleAttribute::Priority(RULE_PRIORITY));
    msg
}

//! Which sockets are bound in the calling thread's network namespace, from
//! the kernel's `NETLINK_SOCK_DIAG` interface.
//!
//! Used for readiness instead of reading `/proc/net/tcp`: that file makes
//! the kernel walk the whole (shared) TCP hash table, ~1.6 ms a read on this
//! machine even in an empty namespace, while a sock_diag dump restricted to
//! listening sockets walks only the listening hash (microseconds).

use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP};
use netlink_packet_sock_diag::inet::nlas::Nla;
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, connect, recv, send, socket,
};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

/// Which sockets to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// TCP sockets in LISTEN.
    TcpListening,
    /// Bound, unconnected UDP sockets.
    UdpBound,
}

/// A bound socket: its local address, inode and owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// Local address and port.
    pub local: SocketAddr,
    /// Socket inode.
    pub inode: u64,
    /// The uid that created it, as seen from the caller's user namespace.
    pub uid: u32,
    /// An IPv6 socket with `IPV6_V6ONLY` (an IPv6 wildcard without it holds
    /// the IPv4 port too); false for IPv4 sockets.
    pub v6only: bool,
}

/// Every socket of `kind`, IPv4 and IPv6, in the calling thread's namespace.
pub fn bound(kind: Kind) -> io::Result<Vec<Bound>> {
    let mut out = Vec::new();
    for family in [AF_INET, AF_INET6] {
        dump(kind, family, &mut out)?;
    }
    Ok(out)
}

fn dump(kind: Kind, family: u8, out: &mut Vec<Bound>) -> io::Result<()> {
    let fd = socket(AddressFamily::Netlink, SockType::Datagram, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkSockDiag)?;
    connect(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
    let (protocol, states) = match kind {
        Kind::TcpListening => (IPPROTO_TCP, StateFlags::LISTEN),
        Kind::UdpBound => (IPPROTO_UDP, StateFlags::CLOSE),
    };
    let socket_id = if family == AF_INET { SocketId::new_v4() } else { SocketId::new_v6() };
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = 1;
    let request = InetRequest { family, protocol, extensions: ExtensionFlags::empty(), states, socket_id };
    let mut msg = NetlinkMessage::new(header, SockDiagMessage::InetRequest(request).into());
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    send(fd.as_raw_fd(), &buf, MsgFlags::empty())?;
    let mut rx = vec![0u8; 64 * 1024];
    loop {
        let n = recv(fd.as_raw_fd(), &mut rx, MsgFlags::empty())?;
        let mut offset = 0;
        while offset < n {
            let reply = NetlinkMessage::<SockDiagMessage>::deserialize(&rx[offset..n])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let len = reply.header.length as usize;
            match reply.payload {
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => {
                    return Err(e.code.map_or_else(
                        || io::Error::other("sock_diag error"),
                        |c| io::Error::from_raw_os_error(-c.get()),
                    ));
                }
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                    let id = &r.header.socket_id;
                    // The kernel reports it for every listening or
                    // unconnected IPv6 socket.
                    let v6only = r.nlas.iter().any(|n| matches!(n, Nla::SkV6Only(true)));
                    out.push(Bound {
                        local: SocketAddr::new(id.source_address, id.source_port),
                        inode: u64::from(r.header.inode),
                        uid: r.header.uid,
                        v6only,
                    });
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_and_a_udp_socket_of_our_own_are_listed_with_their_inodes() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let ino = |fd: i32| {
            std::fs::metadata(format!("/proc/self/fd/{fd}")).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).unwrap()
        };
        let listening = bound(Kind::TcpListening).unwrap();
        let found = listening.iter().find(|b| b.local == tcp.local_addr().unwrap()).expect("our listener");
        assert_eq!(found.inode, ino(tcp.as_raw_fd()));
        let udps = bound(Kind::UdpBound).unwrap();
        assert!(udps.iter().any(|b| b.local == udp.local_addr().unwrap() && b.inode == ino(udp.as_raw_fd())));
    }

    #[test]
    fn owners_and_the_v6only_flag_are_reported() {
        let me = nix::unistd::geteuid().as_raw();
        let dual = std::net::TcpListener::bind("[::]:0");
        let v6only = v6only_listener();
        let listening = bound(Kind::TcpListening).unwrap();
        if let Ok(dual) = dual {
            let found = listening.iter().find(|b| b.local == dual.local_addr().unwrap()).expect("dual-stack listener");
            assert_eq!((found.uid, found.v6only), (me, false));
        }
        if let Some((fd, addr)) = v6only {
            let found = listening.iter().find(|b| b.local == addr).expect("v6only listener");
            assert_eq!((found.uid, found.v6only), (me, true));
            drop(fd);
        }
    }

    /// A listening `[::1]:0` socket with `IPV6_V6ONLY`, when IPv6 works here.
    fn v6only_listener() -> Option<(std::os::fd::OwnedFd, SocketAddr)> {
        use nix::sys::socket::{
            AddressFamily, Backlog, SockFlag, SockType, SockaddrIn6, bind, getsockname, listen, setsockopt, socket,
            sockopt,
        };
        let fd = socket(AddressFamily::Inet6, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).ok()?;
        setsockopt(&fd, sockopt::Ipv6V6Only, &true).ok()?;
        bind(fd.as_raw_fd(), &SockaddrIn6::from(std::net::SocketAddrV6::new(std::net::Ipv6Addr::LOCALHOST, 0, 0, 0)))
            .ok()?;
        listen(&fd, Backlog::new(1).ok()?).ok()?;
        let addr: SockaddrIn6 = getsockname(fd.as_raw_fd()).ok()?;
        Some((fd, SocketAddr::V6(std::net::SocketAddrV6::new(addr.ip(), addr.port(), 0, 0))))
    }
}

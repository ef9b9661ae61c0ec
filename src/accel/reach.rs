//! Which TCP connections the accelerator may make from the owner's network
//! namespace, and which stay inside the run's: a pure function of the
//! destination and of what the run's helper reaches.
//!
//! The rule is to mirror the helper, never to exceed it. A switched socket
//! lives in the owner's namespace, where the host's loopback, the host's
//! own addresses and every route of the host are one `connect` away; the
//! run reaches far less through pasta or slirp4netns:
//!
//! | destination | pasta (`--no-map-gw`) | slirp4netns (`--disable-host-loopback`) | here |
//! |---|---|---|---|
//! | 127.0.0.0/8, ::1 | the namespace's own loopback | the namespace's own loopback | inside |
//! | 127.0.0.1:P, P a `--host-port` | the host's 127.0.0.1:P (`-T`) | (no `--host-port`) | switched to the host's 127.0.0.1:P |
//! | 0.0.0.0, :: | the namespace itself | the namespace itself | inside |
//! | the namespace's own addresses | inside (pasta copies the host's: those are never the host's) | inside | inside |
//! | the helper's network (10.0.2.0/24, fd00::/64) | - | slirp4netns's virtual hosts: 10.0.2.2 is the host's loopback, blocked; 10.0.2.3 is DNS | inside |
//! | link-local, multicast, broadcast, reserved | the helper's own business (DNS forwarding on 169.254.1.1) | likewise | inside |
//! | the host's other addresses | reached (pasta connects to them from the host) | reached | switched |
//! | anything else routed | reached | reached | switched |
//! | IPv6, when the namespace has no IPv6 address | unreachable | unreachable | inside |
//!
//! "Inside" costs nothing but speed: the connection goes through the
//! helper, with the helper's own rules. So when in doubt, inside.
//!
//! The namespace's addresses are taken once, when the run starts: a
//! command that later adds an address to its namespace and connects to it
//! is switched (the helper would reach that address too, from the host);
//! one that removes the address pasta copied still has it kept inside.

use crate::model::cidr::Ipv4Net;
use crate::model::cidr6::Ipv6Net;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

/// A network served inside the run by its helper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelperNetwork {
    /// An IPv4 network (slirp4netns's `10.0.2.0/24`).
    V4(Ipv4Net),
    /// An IPv6 network (slirp4netns's `fd00::/64`).
    V6(Ipv6Net),
}

impl HelperNetwork {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip) {
            (Self::V4(n), IpAddr::V4(a)) => n.contains(a),
            (Self::V6(n), IpAddr::V6(a)) => n.contains(a),
            _ => false,
        }
    }
}

/// A published TCP port whose server took over the host's listener: inside
/// the namespace nothing listens on `container_port` any more, so a client
/// of the run reaches its own server at `host`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnServer {
    /// The port the server bound inside.
    pub container_port: u16,
    /// The address the host listener is bound to.
    pub host: SocketAddr,
}

/// What the run reaches through its helper, as the decision needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reach {
    /// The namespace's own addresses when the run started (loopback and
    /// link-local need not be listed).
    pub own: Vec<IpAddr>,
    /// Networks the helper serves inside the namespace.
    pub helper_networks: Vec<HelperNetwork>,
    /// Whether IPv6 leaves the namespace at all.
    pub ipv6: bool,
    /// `--host-port` ports: `127.0.0.1:PORT` inside is the host's.
    pub host_loopback_ports: Vec<u16>,
    /// Published ports whose server holds the host's listener.
    pub own_servers: Vec<OwnServer>,
}

/// Why a destination stays inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inside {
    /// 127.0.0.0/8 or ::1 (not a `--host-port`).
    Loopback,
    /// 0.0.0.0 or ::: the namespace itself.
    Unspecified,
    /// One of the namespace's own addresses.
    OwnAddress,
    /// A network the helper serves inside (slirp4netns's virtual hosts).
    HelperNetwork,
    /// 169.254.0.0/16 or fe80::/10.
    LinkLocal,
    /// Multicast or broadcast.
    Multicast,
    /// 0.0.0.0/8, 240.0.0.0/4, IPv4-compatible IPv6, port 0.
    Reserved,
    /// IPv6 when the namespace has no IPv6 address.
    NoIpv6,
    /// A published port whose server no longer listens on the host, or an
    /// IPv4 client of a server listening on IPv6 only.
    OwnServerGone,
}

/// What to do with a `connect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Leave it to the kernel, inside the namespace.
    Inside(Inside),
    /// Connect a socket of the owner's namespace to this address (the
    /// destination itself; for a `--host-port`, the host's loopback).
    Switch(SocketAddr),
    /// Connect to the run's own server, listening on the host at this
    /// address, once its listener is confirmed to be the one it took over.
    OwnServer {
        /// Where to connect.
        to: SocketAddr,
        /// The host listener's address, to confirm it is still the server's.
        listener: SocketAddr,
    },
}

/// The verdict for a TCP `connect` to `dst`.
pub fn decide(dst: SocketAddr, reach: &Reach) -> Verdict {
    let mapped = match dst {
        SocketAddr::V6(v6) => v6.ip().to_ipv4_mapped(),
        SocketAddr::V4(_) => None,
    };
    // An IPv4-mapped address on an IPv6 socket is an IPv4 connection.
    let ip = mapped.map_or(dst.ip(), IpAddr::V4);
    let port = dst.port();
    let local = ip.is_loopback() || ip.is_unspecified() || reach.own.contains(&ip);
    if local && let Some(server) = reach.own_servers.iter().find(|s| s.container_port == port) {
        return own_server(dst, server);
    }
    if let Some(why) = stays_inside(ip, port, reach) {
        if why == Inside::Loopback && ip == IpAddr::V4(Ipv4Addr::LOCALHOST) && reach.host_loopback_ports.contains(&port)
        {
            return Verdict::Switch(dst);
        }
        return Verdict::Inside(why);
    }
    Verdict::Switch(dst)
}

fn stays_inside(ip: IpAddr, port: u16, reach: &Reach) -> Option<Inside> {
    if ip.is_loopback() {
        return Some(Inside::Loopback);
    }
    if ip.is_unspecified() {
        return Some(Inside::Unspecified);
    }
    if reach.own.contains(&ip) {
        return Some(Inside::OwnAddress);
    }
    if reach.helper_networks.iter().any(|n| n.contains(ip)) {
        return Some(Inside::HelperNetwork);
    }
    if port == 0 {
        return Some(Inside::Reserved);
    }
    match ip {
        IpAddr::V4(v4) => v4_special(v4),
        IpAddr::V6(v6) => v6_special(v6).or((!reach.ipv6).then_some(Inside::NoIpv6)),
    }
}

fn v4_special(ip: Ipv4Addr) -> Option<Inside> {
    let first = ip.octets()[0];
    if ip.is_link_local() {
        Some(Inside::LinkLocal)
    } else if ip.is_multicast() || ip.is_broadcast() {
        Some(Inside::Multicast)
    } else if first == 0 || first >= 240 {
        Some(Inside::Reserved)
    } else {
        None
    }
}

fn v6_special(ip: Ipv6Addr) -> Option<Inside> {
    let seg = ip.segments();
    if seg[0] & 0xffc0 == 0xfe80 {
        Some(Inside::LinkLocal)
    } else if ip.is_multicast() {
        Some(Inside::Multicast)
    } else if seg[..6] == [0; 6] {
        // IPv4-compatible (::a.b.c.d), deprecated; :: and ::1 are handled before.
        Some(Inside::Reserved)
    } else {
        None
    }
}

/// Where a client of the run finds its own server: the host listener's
/// address, its loopback when it listens on every address, in the client's
/// family (an IPv6 client reaches an IPv4 listener through a mapped address).
fn own_server(dst: SocketAddr, server: &OwnServer) -> Verdict {
    let host_ip = match server.host.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let port = server.host.port();
    let to = match (dst, host_ip) {
        (SocketAddr::V4(_), IpAddr::V4(v4)) => SocketAddr::new(IpAddr::V4(v4), port),
        (SocketAddr::V6(_), IpAddr::V4(v4)) => SocketAddr::V6(SocketAddrV6::new(v4.to_ipv6_mapped(), port, 0, 0)),
        (SocketAddr::V6(_), IpAddr::V6(v6)) => SocketAddr::V6(SocketAddrV6::new(v6, port, 0, 0)),
        (SocketAddr::V4(_), IpAddr::V6(_)) => return Verdict::Inside(Inside::OwnServerGone),
    };
    Verdict::OwnServer { to, listener: server.host }
}

#[cfg(test)]
#[path = "reach_tests.rs"]
mod tests;

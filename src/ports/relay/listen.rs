//! Host-side listeners: which sockets a set of port mappings needs
//! ([`plan_listeners`], pure) and binding them in the caller's namespace.
//!
//! A mapping without a host ip is published on `0.0.0.0` and on `[::]`
//! (`IPV6_V6ONLY`, so the two never conflict); the IPv6 one is optional, so
//! a host without an IPv6 stack still publishes on IPv4. Ranges map port by
//! port. Ephemeral host ports are the caller's to resolve: binding refuses
//! them rather than pick a port nobody asked for.

use super::{PortfwdError, SockFamily};
use crate::model::port::{PortMapping, PortProto};
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt, socket, sockopt,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};

/// Backlog of every TCP listener.
const BACKLOG: i32 = 1024;

/// A bound host-side socket and where its traffic goes.
#[derive(Debug)]
pub struct Listener {
    /// The socket: listening (TCP) or bound (UDP), nonblocking, close-on-exec.
    pub fd: OwnedFd,
    /// The address it is bound to.
    pub local: SocketAddr,
    /// Protocol.
    pub proto: PortProto,
    /// Port inside the namespace.
    pub container_port: u16,
}

/// Whether failing to bind a planned listener fails the whole set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Asked for explicitly (or the IPv4 wildcard).
    Required,
    /// The IPv6 wildcard of a mapping without host ip: skipped when the host
    /// has no IPv6.
    IfIpv6Available,
}

/// One listener to bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListenerPlan {
    /// Host address and port.
    pub(crate) addr: SocketAddr,
    /// Protocol.
    pub(crate) proto: PortProto,
    /// Port inside the namespace.
    pub(crate) container_port: u16,
    /// Whether a failure is fatal.
    pub(crate) need: Need,
}

/// The listeners `mappings` need, in mapping order, port by port.
pub(crate) fn plan_listeners(mappings: &[PortMapping]) -> Result<Vec<ListenerPlan>, PortfwdError> {
    let mut plans = Vec::new();
    for mapping in mappings {
        let host = mapping.host.ok_or_else(|| PortfwdError::UnresolvedHostPort { mapping: mapping.to_string() })?;
        let ips: &[(IpAddr, Need)] = match mapping.host_ip {
            Some(ref ip) => &[(*ip, Need::Required)],
            None => &[
                (IpAddr::V4(Ipv4Addr::UNSPECIFIED), Need::Required),
                (IpAddr::V6(Ipv6Addr::UNSPECIFIED), Need::IfIpv6Available),
            ],
        };
        for (host_port, container_port) in host.iter().zip(mapping.container.iter()) {
            for &(ip, need) in ips {
                plans.push(ListenerPlan {
                    addr: SocketAddr::new(ip, host_port),
                    proto: mapping.proto,
                    container_port,
                    need,
                });
            }
        }
    }
    Ok(plans)
}

/// Bind every host port of the mappings in the caller's namespace: TCP
/// listening (backlog 1024, `SO_REUSEADDR`), UDP bound. A missing host ip
/// means `0.0.0.0` and `[::]` (a missing IPv6 stack is tolerated). Ranges map
/// port by port. On error nothing stays bound.
pub fn bind_listeners(mappings: &[PortMapping]) -> Result<Vec<Listener>, PortfwdError> {
    let mut listeners = Vec::new();
    for plan in plan_listeners(mappings)? {
        match bind_one(&plan) {
            Ok(fd) => listeners.push(Listener {
                fd,
                local: plan.addr,
                proto: plan.proto,
                container_port: plan.container_port,
            }),
            Err(err) if plan.need == Need::IfIpv6Available && no_ipv6(&err) => {
                log::debug!("no ipv6 listener for {}: {err}", plan.addr);
            }
            Err(err) => return Err(err),
        }
    }
    Ok(listeners)
}

/// Whether an error means "this host has no IPv6".
fn no_ipv6(err: &PortfwdError) -> bool {
    let errno = match err {
        PortfwdError::Socket { source, .. }
        | PortfwdError::Bind { source, .. }
        | PortfwdError::SetOption { source, .. } => *source,
        _ => return false,
    };
    matches!(errno, Errno::EAFNOSUPPORT | Errno::EADDRNOTAVAIL | Errno::EPROTONOSUPPORT)
}

fn bind_one(plan: &ListenerPlan) -> Result<OwnedFd, PortfwdError> {
    let (addr, proto) = (plan.addr, plan.proto);
    let family = match SockFamily::of(&addr) {
        SockFamily::V4 => AddressFamily::Inet,
        SockFamily::V6 => AddressFamily::Inet6,
    };
    let ty = match proto {
        PortProto::Tcp => SockType::Stream,
        PortProto::Udp => SockType::Datagram,
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = socket(family, ty, flags, None).map_err(|source| PortfwdError::Socket { addr, proto, source })?;
    let option = |option: &'static str| move |source| PortfwdError::SetOption { option, addr, proto, source };
    if proto == PortProto::Tcp {
        // Not for UDP: there SO_REUSEADDR would let a second socket share
        // the port silently instead of reporting it in use.
        setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(option("SO_REUSEADDR"))?;
    }
    if family == AddressFamily::Inet6 {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true).map_err(option("IPV6_V6ONLY"))?;
    }
    match bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)) {
        Ok(()) => {}
        Err(Errno::EADDRINUSE) => return Err(PortfwdError::PortInUse { addr, proto }),
        Err(source) => return Err(PortfwdError::Bind { addr, proto, source }),
    }
    if proto == PortProto::Tcp {
        let backlog = Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN);
        listen(&fd, backlog).map_err(|source| PortfwdError::Listen { addr, source })?;
    }
    Ok(fd)
}

#[cfg(test)]
#[path = "listen_tests.rs"]
mod tests;

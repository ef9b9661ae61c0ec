//! Where a TCP connection goes inside the namespace, in order (pure).
//!
//! 1. With source preservation, a non-loopback client and a routed target of
//!    the client's family: a transparent socket bound to the client address,
//!    connecting to the target (the kernel drops a foreign source sent to
//!    127.0.0.1, hence a routed target).
//! 2. Loopback of the listener's family.
//! 3. Loopback of the other family (a server listening on IPv4 only still
//!    answers clients of an IPv6 listener, as docker-proxy does).
//!
//! The relay moves to the next attempt on any connect failure.
//!
//! A UDP flow has the last two only ([`flow_destinations`]): it moves to the
//! other family when the first cannot be connected or refuses a datagram
//! before answering any.

use super::{SockFamily, Targets};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Source-preservation settings of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transparent {
    /// The client's address, bound (port 0) on the namespace-side socket.
    pub(crate) source: IpAddr,
    /// `SO_MARK` of the socket, routing the server's replies back locally.
    pub(crate) mark: u32,
}

/// One connect attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attempt {
    /// Address connected to inside the namespace.
    pub(crate) dest: SocketAddr,
    /// `Some` for a source-preserving attempt.
    pub(crate) transparent: Option<Transparent>,
}

impl Attempt {
    /// The family of the socket this attempt needs.
    pub(crate) fn family(&self) -> SockFamily {
        SockFamily::of(&self.dest)
    }
}

/// What an accepted connection needs to plan its attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Accepted {
    /// The client's address as accepted.
    pub(crate) client: SocketAddr,
    /// Family of the listener that accepted it.
    pub(crate) listener: SockFamily,
    /// Port inside the namespace.
    pub(crate) container_port: u16,
}

fn loopback(family: SockFamily) -> IpAddr {
    match family {
        SockFamily::V4 => IpAddr::V4(Ipv4Addr::LOCALHOST),
        SockFamily::V6 => IpAddr::V6(Ipv6Addr::LOCALHOST),
    }
}

fn other(family: SockFamily) -> SockFamily {
    match family {
        SockFamily::V4 => SockFamily::V6,
        SockFamily::V6 => SockFamily::V4,
    }
}

/// The attempts for one connection, in order.
pub(crate) fn plan_attempts(accepted: Accepted, targets: &Targets, preserve: Option<u32>) -> Vec<Attempt> {
    let mut attempts = Vec::with_capacity(3);
    let client = accepted.client.ip().to_canonical();
    let port = accepted.container_port;
    if let Some(mark) = preserve
        && !client.is_loopback()
    {
        let target = match client {
            IpAddr::V4(_) => targets.v4.map(IpAddr::V4),
            IpAddr::V6(_) => targets.v6.map(IpAddr::V6),
        };
        if let Some(target) = target {
            attempts.push(Attempt {
                dest: SocketAddr::new(target, port),
                transparent: Some(Transparent { source: client, mark }),
            });
        }
    }
    for family in [accepted.listener, other(accepted.listener)] {
        attempts.push(Attempt { dest: SocketAddr::new(loopback(family), port), transparent: None });
    }
    attempts
}

/// Where a UDP flow of a listener of `listener`'s family goes, in order:
/// loopback of that family, then of the other.
pub(crate) fn flow_destinations(listener: SockFamily, port: u16) -> [SocketAddr; 2] {
    [SocketAddr::new(loopback(listener), port), SocketAddr::new(loopback(other(listener)), port)]
}

#[cfg(test)]
#[path = "attempt_tests.rs"]
mod tests;

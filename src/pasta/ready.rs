//! When is a pasta-backed namespace ready? A pure decision over what
//! `/proc` shows, plus the thin reader that gathers it.
//!
//! Ready means: a default route exists inside the namespace (pasta adds it
//! last, after bringing the interface up and assigning the address), every
//! published host port has a socket owned by *this* pasta process (a
//! listener of someone else on the same port does not count), and every
//! `--host-port` has pasta's listener on the namespace side.

use crate::procnet::{self, SockKind};
use crate::spec::port::PortProto;
use std::collections::HashSet;
use std::io;
use std::path::Path;

/// What must exist before the command may start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expectation {
    /// A default route in the namespace.
    pub default_route: bool,
    /// Host-side sockets pasta must hold: (protocol, port).
    pub host_ports: Vec<(PortProto, u16)>,
    /// Namespace-side TCP listeners pasta must hold (`-T`).
    pub ns_tcp_ports: Vec<u16>,
}

/// What `/proc` showed at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// A default route exists in the namespace.
    pub default_route: bool,
    /// Host-side (protocol, port) pairs with a socket owned by pasta.
    pub host_ports: HashSet<(PortProto, u16)>,
    /// Namespace-side TCP ports with a listener owned by pasta.
    pub ns_tcp_ports: HashSet<u16>,
}

/// One thing still missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// No default route in the namespace yet.
    DefaultRoute,
    /// pasta holds no socket on this host port.
    HostPort(PortProto, u16),
    /// pasta holds no listener on this namespace-side port.
    NsPort(u16),
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::DefaultRoute => f.write_str("default route in the namespace"),
            Self::HostPort(proto, port) => write!(f, "host port {port}/{proto}"),
            Self::NsPort(port) => write!(f, "namespace-side listener 127.0.0.1:{port}/tcp"),
        }
    }
}

/// Everything in `want` that `seen` lacks (empty = ready).
pub fn missing(want: &Expectation, seen: &Observation) -> Vec<Missing> {
    let mut out = Vec::new();
    if want.default_route && !seen.default_route {
        out.push(Missing::DefaultRoute);
    }
    for &(proto, port) in &want.host_ports {
        if !seen.host_ports.contains(&(proto, port)) {
            out.push(Missing::HostPort(proto, port));
        }
    }
    for &port in &want.ns_tcp_ports {
        if !seen.ns_tcp_ports.contains(&port) {
            out.push(Missing::NsPort(port));
        }
    }
    out
}

/// Read the current state from `/proc`: the namespace through `ns_pid`, the
/// host side through our own `/proc/self/net`, ownership through pasta's fds.
pub fn observe(
    proc_root: &Path,
    ns_pid: u32,
    pasta_pid: u32,
    want: &Expectation,
) -> io::Result<Observation> {
    let mut seen = Observation::default();
    if want.default_route {
        let routes = procnet::read_routes(proc_root, Some(ns_pid)).map_err(io::Error::other)?;
        seen.default_route = procnet::has_default_route(&routes);
    }
    if want.host_ports.is_empty() && want.ns_tcp_ports.is_empty() {
        return Ok(seen);
    }
    let owned = procnet::socket_inodes_of(proc_root, pasta_pid).map_err(io::Error::other)?;
    let wants = |proto: PortProto| want.host_ports.iter().any(|(p, _)| *p == proto);
    for (proto, kinds) in [
        (PortProto::Tcp, [SockKind::Tcp, SockKind::Tcp6]),
        (PortProto::Udp, [SockKind::Udp, SockKind::Udp6]),
    ] {
        if !wants(proto) {
            continue;
        }
        for kind in kinds {
            for s in procnet::read_sockets(proc_root, None, kind).map_err(io::Error::other)? {
                let listening = proto == PortProto::Udp || procnet::is_listening_tcp(&s);
                if listening && owned.contains(&s.inode) {
                    seen.host_ports.insert((proto, s.local.port()));
                }
            }
        }
    }
    if !want.ns_tcp_ports.is_empty() {
        for kind in [SockKind::Tcp, SockKind::Tcp6] {
            for s in
                procnet::read_sockets(proc_root, Some(ns_pid), kind).map_err(io::Error::other)?
            {
                if procnet::is_listening_tcp(&s) && owned.contains(&s.inode) {
                    seen.ns_tcp_ports.insert(s.local.port());
                }
            }
        }
    }
    Ok(seen)
}

/// Host ports among `ports` that some socket (of anyone) is bound to right
/// now: used to name the culprit when pasta fails to bind.
pub fn occupied_host_ports(proc_root: &Path, ports: &[(PortProto, u16)]) -> Vec<(PortProto, u16)> {
    let mut out = Vec::new();
    for &(proto, port) in ports {
        let kinds = match proto {
            PortProto::Tcp => [SockKind::Tcp, SockKind::Tcp6],
            PortProto::Udp => [SockKind::Udp, SockKind::Udp6],
        };
        let taken = kinds.into_iter().any(|kind| {
            procnet::read_sockets(proc_root, None, kind).is_ok_and(|socks| {
                socks.iter().any(|s| {
                    s.local.port() == port
                        && (proto == PortProto::Udp || procnet::is_listening_tcp(s))
                })
            })
        });
        if taken {
            out.push((proto, port));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want() -> Expectation {
        Expectation {
            default_route: true,
            host_ports: vec![(PortProto::Tcp, 8080), (PortProto::Udp, 5353)],
            ns_tcp_ports: vec![9000],
        }
    }

    #[test]
    fn nothing_seen_means_everything_missing_in_order() {
        let m = missing(&want(), &Observation::default());
        assert_eq!(
            m,
            vec![
                Missing::DefaultRoute,
                Missing::HostPort(PortProto::Tcp, 8080),
                Missing::HostPort(PortProto::Udp, 5353),
                Missing::NsPort(9000)
            ]
        );
    }

    #[test]
    fn a_port_of_the_other_protocol_does_not_count() {
        let seen = Observation {
            default_route: true,
            host_ports: [(PortProto::Udp, 8080), (PortProto::Udp, 5353)].into(),
            ns_tcp_ports: [9000].into(),
        };
        assert_eq!(
            missing(&want(), &seen),
            vec![Missing::HostPort(PortProto::Tcp, 8080)]
        );
    }

    #[test]
    fn everything_seen_is_ready() {
        let seen = Observation {
            default_route: true,
            host_ports: [(PortProto::Tcp, 8080), (PortProto::Udp, 5353)].into(),
            ns_tcp_ports: [9000].into(),
        };
        assert!(missing(&want(), &seen).is_empty());
    }

    #[test]
    fn missing_items_read_as_a_user_would_say_them() {
        assert_eq!(
            Missing::HostPort(PortProto::Udp, 53).to_string(),
            "host port 53/udp"
        );
        assert_eq!(
            Missing::DefaultRoute.to_string(),
            "default route in the namespace"
        );
    }
}

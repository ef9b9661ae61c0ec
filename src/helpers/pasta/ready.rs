//! When is a pasta-backed namespace ready? A pure decision over what
//! `/proc` shows, plus the thin reader that gathers it.
//!
//! Ready means: a default route exists inside the namespace (pasta adds it
//! last, after bringing the interface up and assigning the address), and,
//! when pasta configures IPv6 (after IPv4: the IPv4 route alone once
//! released a command, and started the port relay, before the namespace had
//! its IPv6 address), an IPv6 default route with every global IPv6 address
//! usable (see [`crate::host::procnet6`]: an address is usable only once the
//! kernel's address work has run, later still on a loaded machine), every
//! published host port has a socket that was not there before pasta started
//! (a listener of someone else on the same port does not count), and every
//! `--host-port` has a listener on the namespace side.
//!
//! Ownership is judged against a baseline taken just before pasta is
//! spawned, not by reading pasta's fd table: a rootless pasta makes itself
//! non-dumpable, so its `/proc/<pid>/fd` is closed to its own user.

use crate::host::procnet::{self, SockKind, SocketEntry};
use crate::model::port::PortProto;
use std::collections::HashSet;
use std::io;
use std::net::IpAddr;
use std::path::Path;

/// A host-side socket pasta must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// Protocol.
    pub proto: PortProto,
    /// Bound address (`None`: all addresses).
    pub ip: Option<IpAddr>,
    /// Port.
    pub port: u16,
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.port, self.proto)
    }
}

/// What must exist before the command may start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expectation {
    /// A default route in the namespace.
    pub default_route: bool,
    /// An IPv6 default route in the namespace (pasta adds it last, after
    /// the IPv6 address), and every global IPv6 address usable.
    pub ipv6_default_route: bool,
    /// Host-side sockets pasta must hold.
    pub host_ports: Vec<HostPort>,
    /// Namespace-side ports pasta must hold (`-T` and `-U`, for
    /// `--host-port`): a TCP listener and a bound UDP socket on each.
    pub ns_ports: Vec<u16>,
}

/// What `/proc` showed at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// A default route exists in the namespace.
    pub default_route: bool,
    /// An IPv6 default route exists in the namespace.
    pub ipv6_default_route: bool,
    /// Global IPv6 addresses of the namespace not usable yet.
    pub ipv6_unusable: Vec<std::net::Ipv6Addr>,
    /// Host ports with a socket that is not in the baseline.
    pub host_ports: HashSet<HostPort>,
    /// Namespace-side TCP ports with a listener.
    pub ns_tcp_ports: HashSet<u16>,
    /// Namespace-side UDP ports with a bound, unconnected socket.
    pub ns_udp_ports: HashSet<u16>,
}

/// One thing still missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// No default route in the namespace yet.
    DefaultRoute,
    /// No IPv6 default route in the namespace yet.
    Ipv6DefaultRoute,
    /// An IPv6 address of the namespace is not usable yet.
    Ipv6Address(std::net::Ipv6Addr),
    /// pasta holds no socket on this host port.
    HostPort(HostPort),
    /// No listener (TCP) or bound socket (UDP) on this namespace-side port.
    NsPort(u16, PortProto),
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::DefaultRoute => f.write_str("default route in the namespace"),
            Self::Ipv6DefaultRoute => f.write_str("IPv6 default route in the namespace"),
            Self::Ipv6Address(ip) => write!(f, "IPv6 address {ip} usable in the namespace"),
            Self::HostPort(hp) => write!(f, "host port {hp}"),
            Self::NsPort(port, proto) => write!(f, "namespace-side socket 127.0.0.1:{port}/{proto}"),
        }
    }
}

/// Everything in `want` that `seen` lacks (empty = ready).
pub fn missing(want: &Expectation, seen: &Observation) -> Vec<Missing> {
    let mut out = Vec::new();
    if want.default_route && !seen.default_route {
        out.push(Missing::DefaultRoute);
    }
    if want.ipv6_default_route {
        if !seen.ipv6_default_route {
            out.push(Missing::Ipv6DefaultRoute);
        }
        out.extend(seen.ipv6_unusable.iter().map(|ip| Missing::Ipv6Address(*ip)));
    }
    out.extend(want.host_ports.iter().filter(|hp| !seen.host_ports.contains(hp)).map(|hp| Missing::HostPort(*hp)));
    for (proto, held) in [(PortProto::Tcp, &seen.ns_tcp_ports), (PortProto::Udp, &seen.ns_udp_ports)] {
        out.extend(want.ns_ports.iter().filter(|p| !held.contains(p)).map(|p| Missing::NsPort(*p, proto)));
    }
    out
}

/// Whether socket `s` can serve (or block) `hp`: same protocol and port,
/// bound (TCP: listening), and addresses that overlap.
pub fn socket_matches(s: &SocketEntry, hp: &HostPort) -> bool {
    let proto_ok = match hp.proto {
        PortProto::Tcp => s.kind.is_tcp() && procnet::is_listening_tcp(s),
        PortProto::Udp => !s.kind.is_tcp(),
    };
    let addr = s.local.ip();
    let addr_ok = match hp.ip {
        None => true,
        Some(ip) => addr.is_unspecified() || addr == ip || mapped_v4(addr) == Some(ip),
    };
    proto_ok && s.local.port() == hp.port && addr_ok
}

fn mapped_v4(addr: IpAddr) -> Option<IpAddr> {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    }
}

fn kinds(proto: PortProto) -> [SockKind; 2] {
    match proto {
        PortProto::Tcp => [SockKind::Tcp, SockKind::Tcp6],
        PortProto::Udp => [SockKind::Udp, SockKind::Udp6],
    }
}

/// Host-side sockets (of the calling thread's namespace) relevant to `want`,
/// from sock_diag: reading `/proc/net/tcp` instead costs ~1.6 ms a read.
fn host_sockets(proc_root: &Path, want: &Expectation) -> io::Result<Vec<SocketEntry>> {
    let _ = proc_root; // the host side is the calling thread's own namespace
    let mut out = Vec::new();
    for proto in [PortProto::Tcp, PortProto::Udp] {
        if !want.host_ports.iter().any(|hp| hp.proto == proto) {
            continue;
        }
        let (kind, state) = match proto {
            PortProto::Tcp => (crate::host::sockdiag::Kind::TcpListening, procnet::TCP_LISTEN),
            PortProto::Udp => (crate::host::sockdiag::Kind::UdpBound, procnet::TCP_CLOSE),
        };
        for b in crate::host::sockdiag::bound(kind)? {
            let [v4, v6] = kinds(proto);
            out.push(SocketEntry {
                kind: if b.local.is_ipv4() { v4 } else { v6 },
                local: b.local,
                remote: std::net::SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), 0),
                state,
                uid: 0,
                inode: b.inode,
            });
        }
    }
    Ok(out)
}

/// The sockets present before pasta starts, and the requested host ports
/// someone already holds (pasta cannot get those).
#[derive(Debug, Clone, Default)]
pub struct Baseline {
    inodes: HashSet<u64>,
    /// Requested host ports that another socket holds already.
    pub occupied: Vec<HostPort>,
}

/// Take the baseline; call just before spawning pasta.
pub fn baseline(proc_root: &Path, want: &Expectation) -> io::Result<Baseline> {
    let socks = host_sockets(proc_root, want)?;
    let occupied = want.host_ports.iter().filter(|hp| socks.iter().any(|s| socket_matches(s, hp))).copied().collect();
    Ok(Baseline { inodes: socks.iter().map(|s| s.inode).collect(), occupied })
}

/// Where readiness is read inside the namespace.
#[derive(Debug, Clone, Copy)]
pub enum NsView<'a> {
    /// `/proc/<pid>/net` of a process inside it.
    Process(u32),
    /// `/proc/thread-self/net` of a short-lived thread that joins it (a
    /// caller that may `setns`, for a namespace no known process is in).
    Netns(std::os::fd::BorrowedFd<'a>),
}

impl std::fmt::Display for NsView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Process(pid) => write!(f, "pid {pid}"),
            Self::Netns(fd) => write!(f, "namespace fd {}", std::os::fd::AsRawFd::as_raw_fd(fd)),
        }
    }
}

/// What the namespace shows: its default routes, and (when asked) its
/// listening TCP ports; the host side is left empty.
fn inside(proc_root: &Path, ns: NsView<'_>, want: &Expectation) -> io::Result<Observation> {
    let read = |thread: bool| -> io::Result<Observation> {
        let pid = match ns {
            NsView::Process(pid) => Some(pid),
            NsView::Netns(_) => None,
        };
        let mut seen = Observation::default();
        if want.default_route {
            let routes = match (thread, pid) {
                (false, Some(pid)) => procnet::read_routes(proc_root, Some(pid)),
                _ => procnet::read_routes_of_thread(proc_root),
            };
            seen.default_route = procnet::has_default_route(&routes.map_err(io::Error::other)?);
        }
        if want.ipv6_default_route {
            let pid = if thread { None } else { pid };
            let v6 = crate::host::procnet6::read_ipv6_state(proc_root, pid).map_err(io::Error::other)?;
            (seen.ipv6_default_route, seen.ipv6_unusable) = (v6.default_route, v6.unusable);
        }
        if !want.ns_ports.is_empty() {
            for kind in [SockKind::Tcp, SockKind::Tcp6, SockKind::Udp, SockKind::Udp6] {
                let socks = match (thread, pid) {
                    (false, Some(pid)) => procnet::read_sockets(proc_root, Some(pid), kind),
                    _ => procnet::read_sockets_of_thread(proc_root, kind),
                };
                let ports = if kind.is_tcp() { &mut seen.ns_tcp_ports } else { &mut seen.ns_udp_ports };
                ports.extend(
                    socks.map_err(io::Error::other)?.iter().filter(|s| s.is_listener()).map(|s| s.local.port()),
                );
            }
        }
        Ok(seen)
    };
    match ns {
        NsView::Process(_) => read(false),
        NsView::Netns(fd) => std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                    read(true)
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        }),
    }
}

/// Read the current state: the namespace through `ns`, the host side
/// through the calling thread's namespace.
pub fn observe(proc_root: &Path, ns: NsView<'_>, base: &Baseline, want: &Expectation) -> io::Result<Observation> {
    let mut seen = inside(proc_root, ns, want)?;
    let socks = host_sockets(proc_root, want)?;
    for hp in &want.host_ports {
        if socks.iter().any(|s| !base.inodes.contains(&s.inode) && socket_matches(s, hp)) {
            seen.host_ports.insert(*hp);
        }
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn hp(proto: PortProto, ip: Option<&str>, port: u16) -> HostPort {
        HostPort { proto, ip: ip.map(|s| s.parse().unwrap()), port }
    }

    fn want() -> Expectation {
        Expectation {
            default_route: true,
            ipv6_default_route: true,
            host_ports: vec![hp(PortProto::Tcp, None, 8080), hp(PortProto::Udp, None, 5353)],
            ns_ports: vec![9000],
        }
    }

    fn sock(kind: SockKind, local: &str, state: u8) -> SocketEntry {
        SocketEntry {
            kind,
            local: local.parse::<SocketAddr>().unwrap(),
            remote: "0.0.0.0:0".parse().unwrap(),
            state,
            uid: 0,
            inode: 1,
        }
    }

    #[test]
    fn nothing_seen_means_everything_missing_in_order() {
        let w = want();
        let m = missing(&w, &Observation::default());
        assert_eq!(
            m,
            vec![
                Missing::DefaultRoute,
                Missing::Ipv6DefaultRoute,
                Missing::HostPort(w.host_ports[0]),
                Missing::HostPort(w.host_ports[1]),
                Missing::NsPort(9000, PortProto::Tcp),
                Missing::NsPort(9000, PortProto::Udp)
            ]
        );
    }

    #[test]
    fn everything_seen_is_ready() {
        let w = want();
        let seen = Observation {
            default_route: true,
            ipv6_default_route: true,
            ipv6_unusable: vec![],
            host_ports: w.host_ports.iter().copied().collect(),
            ns_tcp_ports: [9000].into(),
            ns_udp_ports: [9000].into(),
        };
        assert!(missing(&w, &seen).is_empty());
        let tcp_only = Observation { ns_udp_ports: HashSet::new(), ..seen };
        assert_eq!(missing(&w, &tcp_only), vec![Missing::NsPort(9000, PortProto::Udp)]);
    }

    #[test]
    fn an_ipv4_route_alone_is_not_ready_when_ipv6_is_expected() {
        let w = Expectation { default_route: true, ipv6_default_route: true, ..Expectation::default() };
        let v4_only = Observation { default_route: true, ..Observation::default() };

        assert_eq!(missing(&w, &v4_only), vec![Missing::Ipv6DefaultRoute]);
        assert!(missing(&Expectation { ipv6_default_route: false, ..w.clone() }, &v4_only).is_empty());
        let fd2 = "fd00::2".parse().unwrap();
        let unusable = Observation { ipv6_default_route: true, ipv6_unusable: vec![fd2], ..v4_only };
        assert_eq!(missing(&w, &unusable), vec![Missing::Ipv6Address(fd2)]);
        assert_eq!(Missing::Ipv6Address(fd2).to_string(), "IPv6 address fd00::2 usable in the namespace");
    }

    #[test]
    fn tcp_needs_a_listener_and_udp_a_bound_socket() {
        let tcp = hp(PortProto::Tcp, None, 8080);
        assert!(socket_matches(&sock(SockKind::Tcp, "0.0.0.0:8080", procnet::TCP_LISTEN), &tcp));
        assert!(
            !socket_matches(&sock(SockKind::Tcp, "10.0.0.1:8080", 0x01), &tcp),
            "an established connection is no listener"
        );
        assert!(
            !socket_matches(&sock(SockKind::Udp, "0.0.0.0:8080", procnet::TCP_CLOSE), &tcp),
            "udp does not serve tcp"
        );
        assert!(socket_matches(
            &sock(SockKind::Udp6, "[::]:8080", procnet::TCP_CLOSE),
            &hp(PortProto::Udp, None, 8080)
        ));
    }

    #[test]
    fn addresses_must_overlap() {
        let lo = hp(PortProto::Tcp, Some("127.0.0.1"), 80);
        assert!(socket_matches(&sock(SockKind::Tcp, "127.0.0.1:80", procnet::TCP_LISTEN), &lo));
        assert!(
            socket_matches(&sock(SockKind::Tcp, "0.0.0.0:80", procnet::TCP_LISTEN), &lo),
            "a wildcard bind blocks every address"
        );
        assert!(!socket_matches(&sock(SockKind::Tcp, "127.0.0.2:80", procnet::TCP_LISTEN), &lo));
        assert!(socket_matches(&sock(SockKind::Tcp6, "[::ffff:127.0.0.1]:80", procnet::TCP_LISTEN), &lo));
    }

    #[test]
    fn missing_items_read_as_a_user_would_say_them() {
        assert_eq!(Missing::HostPort(hp(PortProto::Udp, None, 53)).to_string(), "host port 53/udp");
        assert_eq!(Missing::DefaultRoute.to_string(), "default route in the namespace");
        assert_eq!(Missing::NsPort(5432, PortProto::Udp).to_string(), "namespace-side socket 127.0.0.1:5432/udp");
    }
}

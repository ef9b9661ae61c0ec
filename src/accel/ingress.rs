//! Published TCP ports without a relay: when the command's server binds a
//! published container port, it gets the host's listener instead of a
//! socket inside the namespace, and accepts its clients straight from the
//! host, with their real addresses.
//!
//! The host listeners are bound before the run starts and relayed by the
//! builtin port driver until the server binds (so early clients are served
//! as without the accelerator, and a port whose server never binds keeps
//! its relay). At the bind, the relay lets go of the listener and the
//! supervisor puts it in place of the server's socket. A server takes a
//! port over only when it serves every listener of it: a dual-stack server
//! (an IPv6 socket without `IPV6_V6ONLY`) on a port published on every
//! address gets one dual-stack listener in place of the relay's two, an
//! IPv4 server a port published on one IPv4 address; an IPv4 server on a
//! port published on every address keeps the relay (its IPv6 clients reach
//! it only through the relay's fallback to the other family inside). A
//! server that binds the port again later (it restarted) gets a freshly
//! bound listener on the same host address.
//!
//! [`plan`] decides (pure); the supervisor does it.

use super::reach::OwnServer;
use super::switch::{Facts, Templates};
use super::{filter, sockopt, sys};
use nix::errno::Errno;
use nix::sys::socket::{SockaddrLike, SockaddrStorage};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

/// Hands over the host listeners the builtin port driver holds.
pub trait ListenerSource: Send {
    /// Stops relaying the TCP listener bound to `local` and returns it.
    fn release(&mut self, local: SocketAddr) -> Option<OwnedFd>;
}

impl ListenerSource for crate::ports::relay::ListenerReleaser {
    fn release(&mut self, local: SocketAddr) -> Option<OwnedFd> {
        crate::ports::relay::ListenerReleaser::release(self, local)
    }
}

/// A host listener still relayed, and the container port it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Its address.
    pub local: SocketAddr,
    /// The container port.
    pub container_port: u16,
}

/// A container port whose server took a host listener over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handed {
    /// The container port.
    pub container_port: u16,
    /// The address the listener is bound to (the IPv6 form for a
    /// dual-stack one).
    pub host: SocketAddr,
    /// `IPV6_V6ONLY` of an IPv6 listener.
    pub v6only: bool,
}

/// A server's `bind` of a container port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindRequest {
    /// The port.
    pub port: u16,
    /// Its socket's family is IPv6.
    pub ipv6: bool,
    /// `IPV6_V6ONLY` of its IPv6 socket.
    pub v6only: bool,
}

/// What to do with a `bind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handover {
    /// Not a published TCP port, or nothing of the server's family: the
    /// kernel binds inside (the relay keeps the port).
    Inside,
    /// Take this relayed listener as it is.
    Take(SocketAddr),
    /// Take these relayed listeners off the relay (closing them) and bind
    /// one new socket to `bind`.
    Rebind {
        /// Relayed listeners to release and close.
        release: Vec<SocketAddr>,
        /// Where the new socket binds.
        bind: SocketAddr,
        /// Its `IPV6_V6ONLY`.
        v6only: bool,
    },
}

/// The handover for `req`, given the listeners still relayed and the ports
/// handed over before.
pub fn plan(req: BindRequest, held: &[Held], handed: &[Handed]) -> Handover {
    if let Some(h) = handed.iter().find(|h| h.container_port == req.port && fits(req, h.host, h.v6only)) {
        return Handover::Rebind { release: Vec::new(), bind: h.host, v6only: h.v6only };
    }
    let mine: Vec<SocketAddr> = held.iter().filter(|h| h.container_port == req.port).map(|h| h.local).collect();
    let v4: Vec<SocketAddr> = mine.iter().copied().filter(SocketAddr::is_ipv4).collect();
    let v6: Vec<SocketAddr> = mine.iter().copied().filter(SocketAddr::is_ipv6).collect();
    match (req.ipv6, req.v6only, v4.as_slice(), v6.as_slice()) {
        // A server takes the listeners only when it can serve all of them:
        // clients of a family it does not listen on stay with the relay,
        // which reaches a server of the other family inside the namespace
        // and would find nobody there.
        (false, _, [one], []) | (true, _, [], [one]) => Handover::Take(*one),
        (true, false, [v4], v6) if v6.len() <= 1 => dual_stack(*v4, v6.first().copied()),
        _ => Handover::Inside,
    }
}

/// Whether a listener bound to `host` serves a server of `req`'s family.
fn fits(req: BindRequest, host: SocketAddr, v6only: bool) -> bool {
    match (req.ipv6, host) {
        (false, SocketAddr::V4(_)) => true,
        (true, SocketAddr::V6(_)) => v6only == req.v6only,
        _ => false,
    }
}

/// A dual-stack server on a port published on IPv4 (and, for the wildcard,
/// IPv6 too): one IPv6 socket without `IPV6_V6ONLY` in their place.
fn dual_stack(v4: SocketAddr, v6: Option<SocketAddr>) -> Handover {
    let IpAddr::V4(ip4) = v4.ip() else { return Handover::Inside };
    let ip = if ip4.is_unspecified() {
        // Both wildcards, or the IPv4 one alone on a host without IPv6,
        // where a dual-stack socket cannot be had.
        match v6 {
            Some(v6) if v6.ip().is_unspecified() => Ipv6Addr::UNSPECIFIED,
            _ => return Handover::Inside,
        }
    } else if v6.is_none() {
        ip4.to_ipv6_mapped()
    } else {
        return Handover::Inside;
    };
    let release = std::iter::once(v4).chain(v6).collect();
    Handover::Rebind { release, bind: SocketAddr::V6(SocketAddrV6::new(ip, v4.port(), 0, 0)), v6only: false }
}

/// The ingress side of a run: the listeners still relayed, the ports
/// handed over, and where to get the listeners from.
pub struct Ingress {
    held: Vec<Held>,
    handed: Vec<(Handed, u64)>,
    source: Box<dyn ListenerSource>,
}

/// A listener ready for a server: bound (and, when taken from the relay,
/// listening), with the server's options and the lock.
#[derive(Debug)]
pub struct Listener {
    /// The socket.
    pub socket: OwnedFd,
    handed: Handed,
}

impl Ingress {
    /// Ingress over the relayed listeners `held`, released by `source`.
    pub fn new(held: Vec<Held>, source: Box<dyn ListenerSource>) -> Self {
        Self { held, handed: Vec::new(), source }
    }

    /// The listener for a server's `bind` (`original` is its socket, with
    /// `facts`): `None` when the port stays inside, an errno when the
    /// port cannot be bound on the host (the server gets that error).
    pub fn listener_for(
        &mut self,
        req: BindRequest,
        original: BorrowedFd<'_>,
        facts: &Facts,
        templates: &Templates,
    ) -> Result<Option<Listener>, Errno> {
        let handed_now: Vec<Handed> = self.handed.iter().map(|(h, _)| *h).collect();
        let (socket, host, v6only) = match plan(req, &self.held, &handed_now) {
            Handover::Inside => return Ok(None),
            Handover::Take(addr) => {
                let Some(socket) = self.release(addr) else { return Ok(None) };
                (socket, addr, addr.is_ipv6())
            }
            Handover::Rebind { release, bind, v6only } => {
                for addr in release {
                    drop(self.release(addr));
                }
                (bind_listener(bind, v6only)?, bind, v6only)
            }
        };
        let options = sockopt::changed(&sockopt::read(original, facts.domain), templates.of(facts.domain));
        if let Err((name, e)) = sockopt::apply(socket.as_fd(), &options) {
            // Options a listener takes only before it listens (IPV6_V6ONLY ...).
            log::debug!("accelerator: listener {host}: {name}: {e}");
        }
        sys::attach_locked_filter(socket.as_fd(), &filter::listener_lock())?;
        let flags = sys::status_flags(socket.as_fd())? & !libc::O_NONBLOCK;
        sys::set_status_flags(socket.as_fd(), flags | (facts.status & libc::O_NONBLOCK))?;
        Ok(Some(Listener { socket, handed: Handed { container_port: req.port, host, v6only } }))
    }

    fn release(&mut self, addr: SocketAddr) -> Option<OwnedFd> {
        self.held.retain(|h| h.local != addr);
        self.source.release(addr)
    }

    /// Records a listener given to a server (whether or not the server got
    /// it: a server that asks again gets a freshly bound one).
    pub fn handed(&mut self, listener: &Listener) {
        let inode = listener_inode(listener.socket.as_fd()).unwrap_or(0);
        self.handed.retain(|(h, _)| h.container_port != listener.handed.container_port);
        self.handed.push((listener.handed, inode));
    }

    /// Whether `socket` is a listener handed over (by its inode).
    pub fn holds(&self, socket: BorrowedFd<'_>) -> bool {
        let inode = listener_inode(socket);
        inode.is_some_and(|i| self.handed.iter().any(|(_, h)| *h == i))
    }

    /// The run's own servers, for [`reach::decide`](super::reach::decide).
    pub fn own_servers(&self) -> Vec<OwnServer> {
        self.handed.iter().map(|(h, _)| OwnServer { container_port: h.container_port, host: h.host }).collect()
    }

    /// Whether the listener handed over at `addr` still listens there (and
    /// is the one handed over: its inode).
    pub fn is_listening(&self, addr: SocketAddr) -> bool {
        let Some((_, inode)) = self.handed.iter().find(|(h, _)| h.host == addr) else { return false };
        match crate::host::sockdiag::bound(crate::host::sockdiag::Kind::TcpListening) {
            Ok(list) => list.iter().any(|b| b.local == addr && b.inode == *inode),
            Err(e) => {
                log::debug!("accelerator: list listening sockets: {e}");
                false
            }
        }
    }
}

fn listener_inode(fd: BorrowedFd<'_>) -> Option<u64> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// A TCP socket bound to `addr` for a server to listen on.
fn bind_listener(addr: SocketAddr, v6only: bool) -> Result<OwnedFd, Errno> {
    let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    let socket = super::switch::tcp_socket(domain)?;
    sys::setsockopt_bytes(socket.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, &1i32.to_ne_bytes())?;
    if addr.is_ipv6() {
        let v = i32::from(v6only).to_ne_bytes();
        sys::setsockopt_bytes(socket.as_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, &v)?;
    }
    let sa = SockaddrStorage::from(addr);
    // SAFETY: bind(2) with an address nix built for its own length.
    Errno::result(unsafe { libc::bind(socket.as_raw_fd(), sa.as_ptr(), sa.len()) })?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn held(list: &[(&str, u16)]) -> Vec<Held> {
        list.iter().map(|(a, p)| Held { local: sa(a), container_port: *p }).collect()
    }

    const V4: BindRequest = BindRequest { port: 80, ipv6: false, v6only: false };
    const V6ONLY: BindRequest = BindRequest { port: 80, ipv6: true, v6only: true };
    const DUAL: BindRequest = BindRequest { port: 80, ipv6: true, v6only: false };

    #[test]
    fn a_server_takes_the_listener_of_its_family_when_it_is_the_only_one() {
        let local = held(&[("127.0.0.1:8080", 80)]);
        assert_eq!(plan(V4, &local, &[]), Handover::Take(sa("127.0.0.1:8080")));
        assert_eq!(plan(V6ONLY, &local, &[]), Handover::Inside);
        let local6 = held(&[("[::1]:8080", 80)]);
        assert_eq!(plan(V6ONLY, &local6, &[]), Handover::Take(sa("[::1]:8080")));
        assert_eq!(plan(V4, &local6, &[]), Handover::Inside);
    }

    #[test]
    fn a_single_family_server_leaves_a_port_published_on_every_address_to_the_relay() {
        let both = held(&[("0.0.0.0:8080", 80), ("[::]:8080", 80)]);
        assert_eq!(plan(V4, &both, &[]), Handover::Inside);
        assert_eq!(plan(V6ONLY, &both, &[]), Handover::Inside);
    }

    #[test]
    fn a_dual_stack_server_gets_one_dual_stack_listener() {
        let both = held(&[("0.0.0.0:8080", 80), ("[::]:8080", 80)]);
        let want = Handover::Rebind {
            release: vec![sa("0.0.0.0:8080"), sa("[::]:8080")],
            bind: sa("[::]:8080"),
            v6only: false,
        };
        assert_eq!(plan(DUAL, &both, &[]), want);
        let local = held(&[("127.0.0.1:8080", 80)]);
        let mapped = Handover::Rebind {
            release: vec![sa("127.0.0.1:8080")],
            bind: sa("[::ffff:127.0.0.1]:8080"),
            v6only: false,
        };
        assert_eq!(plan(DUAL, &local, &[]), mapped);
        assert_eq!(plan(DUAL, &held(&[("[::1]:8080", 80)]), &[]), Handover::Take(sa("[::1]:8080")));
        // No IPv6 on the host: the relay keeps the port.
        assert_eq!(plan(DUAL, &held(&[("0.0.0.0:8080", 80)]), &[]), Handover::Inside);
    }

    #[test]
    fn ports_that_are_not_published_or_published_twice_stay_inside() {
        let both = held(&[("0.0.0.0:8080", 80), ("[::]:8080", 80)]);
        assert_eq!(plan(BindRequest { port: 81, ..V4 }, &both, &[]), Handover::Inside);
        let twice = held(&[("0.0.0.0:8080", 80), ("0.0.0.0:9090", 80)]);
        assert_eq!(plan(V4, &twice, &[]), Handover::Inside);
    }

    #[test]
    fn a_server_binding_again_gets_a_fresh_listener_where_the_first_was() {
        let handed = [Handed { container_port: 80, host: sa("0.0.0.0:8080"), v6only: false }];
        let want = Handover::Rebind { release: vec![], bind: sa("0.0.0.0:8080"), v6only: false };
        assert_eq!(plan(V4, &[], &handed), want);
        assert_eq!(plan(DUAL, &[], &handed), Handover::Inside);
        let dual = [Handed { container_port: 80, host: sa("[::]:8080"), v6only: false }];
        assert_eq!(plan(DUAL, &[], &dual), Handover::Rebind { release: vec![], bind: sa("[::]:8080"), v6only: false });
    }
}

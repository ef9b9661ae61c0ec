//! The switch of one TCP socket: what is known of the command's socket,
//! whether it may be switched (pure), and the new socket, made in the
//! owner's network namespace, carrying the command's options, locked to
//! its peer and connected by the supervisor itself to the address the
//! supervisor checked.

use super::trace::{Phase, Trace};
use super::{filter, sockopt, sys};
use crate::ports::relay::sys::socket_addr;
use nix::errno::Errno;
use nix::sys::socket::{SockaddrLike, SockaddrStorage};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// What the supervisor learns of the command's socket before switching it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// `SO_DOMAIN`.
    pub domain: i32,
    /// `SO_TYPE`.
    pub kind: i32,
    /// `SO_PROTOCOL`.
    pub protocol: i32,
    /// The network namespace it belongs to (`SO_NETNS_COOKIE`).
    pub netns: u64,
    /// Its local address (`getsockname`), when it has one.
    pub local: Option<SocketAddr>,
    /// Whether it has a peer already (`getpeername` succeeds).
    pub connected: bool,
    /// `SO_BINDTOIFINDEX`, `SO_MARK`, the length of an attached filter,
    /// `IP(V6)_TRANSPARENT`, `TCP_REPAIR`: state that means something only
    /// in its own namespace, or that cannot be copied.
    pub device: i32,
    /// See [`Facts::device`].
    pub mark: i32,
    /// See [`Facts::device`].
    pub filter_len: usize,
    /// See [`Facts::device`].
    pub transparent: bool,
    /// See [`Facts::device`].
    pub repair: bool,
    /// File status flags (`O_NONBLOCK`, `O_ASYNC`).
    pub status: i32,
}

/// Why a socket is left to the kernel, inside the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Not TCP over IPv4 or IPv6 (UDP, MPTCP, SCTP ...).
    NotTcp,
    /// The address's family is not the socket's (the kernel refuses it).
    Family,
    /// Made in another namespace (one the command created inside the run).
    OtherNamespace,
    /// Connected already (the kernel answers `EISCONN`).
    Connected,
    /// Bound to an address, or to a port, of the namespace.
    Bound,
    /// Bound to a device, marked, filtered, transparent, in repair mode, or
    /// signal-driven (`O_ASYNC`).
    NamespaceState,
}

/// Whether a socket with `facts` may be switched to connect to `dst`.
/// `run` is the run's namespace; a socket already switched (of the owner's
/// namespace, `here`) may be switched again, to a new peer.
pub fn eligible(facts: &Facts, dst: &SocketAddr, run: u64, here: u64) -> Result<(), Keep> {
    let tcp = facts.kind == libc::SOCK_STREAM && facts.protocol == libc::IPPROTO_TCP;
    if !tcp || !matches!(facts.domain, libc::AF_INET | libc::AF_INET6) {
        return Err(Keep::NotTcp);
    }
    let family = if dst.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    if family != facts.domain {
        return Err(Keep::Family);
    }
    if facts.netns != run && facts.netns != here {
        return Err(Keep::OtherNamespace);
    }
    if facts.connected {
        return Err(Keep::Connected);
    }
    if facts.local.is_some_and(|l| !l.ip().is_unspecified() || l.port() != 0) {
        return Err(Keep::Bound);
    }
    if facts.device != 0
        || facts.mark != 0
        || facts.filter_len != 0
        || facts.transparent
        || facts.repair
        || facts.status & libc::O_ASYNC != 0
    {
        return Err(Keep::NamespaceState);
    }
    Ok(())
}

/// Reads [`Facts`]; `None` when `fd` is no socket (the kernel answers
/// `ENOTSOCK` itself).
pub fn facts(fd: BorrowedFd<'_>) -> Option<Facts> {
    let int = |level, name| sys::getsockopt_int(fd, level, name).unwrap_or(0);
    let domain = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).ok()?;
    let kind = int(libc::SOL_SOCKET, libc::SO_TYPE);
    let protocol = int(libc::SOL_SOCKET, libc::SO_PROTOCOL);
    let mut f = Facts {
        domain,
        kind,
        protocol,
        netns: sys::netns_cookie(fd).unwrap_or(0),
        status: sys::status_flags(fd).unwrap_or(0),
        ..Facts::default()
    };
    if kind != libc::SOCK_STREAM || protocol != libc::IPPROTO_TCP {
        return Some(f);
    }
    f.local = nix::sys::socket::getsockname::<SockaddrStorage>(fd.as_raw_fd()).ok().and_then(|s| socket_addr(&s));
    f.connected = nix::sys::socket::getpeername::<SockaddrStorage>(fd.as_raw_fd()).is_ok();
    f.device = int(libc::SOL_SOCKET, libc::SO_BINDTOIFINDEX);
    f.mark = int(libc::SOL_SOCKET, libc::SO_MARK);
    f.filter_len = sys::getsockopt_bytes(fd, libc::SOL_SOCKET, libc::SO_GET_FILTER, &mut []).unwrap_or(0);
    f.transparent = if domain == libc::AF_INET6 {
        int(libc::SOL_IPV6, libc::IPV6_TRANSPARENT) != 0
    } else {
        int(libc::SOL_IP, libc::IP_TRANSPARENT) != 0
    };
    f.repair = int(libc::IPPROTO_TCP, libc::TCP_REPAIR) != 0;
    Some(f)
}

/// A fresh TCP socket of `domain` in this thread's namespace, nonblocking
/// and close-on-exec.
pub fn tcp_socket(domain: i32) -> Result<OwnedFd, Errno> {
    let kind = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: socket(2) with constant arguments; the result is a new fd we own.
    let fd = Errno::result(unsafe { libc::socket(domain, kind, libc::IPPROTO_TCP) })?;
    // SAFETY: a fresh descriptor, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The option values of a fresh socket of each family: what "not set by
/// the command" looks like.
#[derive(Debug, Clone)]
pub struct Templates {
    v4: Vec<sockopt::Value>,
    v6: Vec<sockopt::Value>,
}

impl Templates {
    /// Reads them from two fresh sockets of this thread's namespace.
    pub fn read() -> Result<Self, Errno> {
        let of = |domain| tcp_socket(domain).map(|s| sockopt::read(s.as_fd(), domain));
        Ok(Self { v4: of(libc::AF_INET)?, v6: of(libc::AF_INET6).unwrap_or_default() })
    }

    pub(super) fn of(&self, domain: i32) -> &[sockopt::Value] {
        if domain == libc::AF_INET6 { &self.v6 } else { &self.v4 }
    }
}

/// How a switched socket is confined to what the run may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lock {
    /// A locked socket filter: packets from the checked peer only
    /// (`SO_ATTACH_FILTER` + `SO_LOCK_FILTER`). Airtight; needs root, or a
    /// kernel that still lets an unprivileged process filter its TCP
    /// sockets (recent kernels want `CAP_NET_ADMIN` for it).
    Peer,
    /// Bound to the output device of the checked route
    /// (`SO_BINDTODEVICE`, which only `CAP_NET_RAW` in the owner's
    /// namespace could undo): never the host's loopback, never another
    /// device's network, but the device's own addresses stay within reach.
    Device,
}

impl Lock {
    /// Which lock this process can put on its TCP sockets: a locked filter
    /// is tried on a fresh socket.
    pub fn available() -> Self {
        let peer = tcp_socket(libc::AF_INET).and_then(|s| {
            sys::attach_locked_filter(s.as_fd(), &filter::peer_lock(SocketAddr::from(([127, 0, 0, 1], 1))))
        });
        if peer.is_ok() { Lock::Peer } else { Lock::Device }
    }
}

/// The lock put on one switched socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confine {
    /// [`Lock::Peer`].
    Peer,
    /// [`Lock::Device`], to this interface index.
    Device(u32),
}

/// How the supervisor's own `connect` went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Connected at once (loopback), or nothing to wait for (fast open).
    Connected,
    /// The handshake is under way.
    InProgress,
}

/// Why no switched socket was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failed {
    /// Keep the connection inside: an option could not be carried over, or
    /// the lock not attached.
    Keep(String),
    /// The connect itself failed at once: the command gets this error.
    Refused(Errno),
}

/// Where a switched socket connects, and how it is locked there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The checked destination.
    pub to: SocketAddr,
    /// Its lock.
    pub confine: Confine,
}

/// Fresh sockets of the owner's namespace made ahead, one per family, so
/// that a switched connect does not wait for `socket(2)`: one is taken,
/// and made again after the answer is sent.
#[derive(Debug, Default)]
pub struct Spares {
    v4: Option<OwnedFd>,
    v6: Option<OwnedFd>,
    /// The families this host refused a socket of: not asked again.
    refused: Vec<i32>,
}

impl Spares {
    fn slot(&mut self, domain: i32) -> &mut Option<OwnedFd> {
        if domain == libc::AF_INET6 { &mut self.v6 } else { &mut self.v4 }
    }

    /// A fresh socket of `domain`: the spare, or a new one.
    pub fn take(&mut self, domain: i32) -> Result<OwnedFd, Errno> {
        self.slot(domain).take().map_or_else(|| tcp_socket(domain), Ok)
    }

    /// Makes the spares that were taken (a family this host lacks stays
    /// without one).
    pub fn refill(&mut self) {
        for domain in [libc::AF_INET, libc::AF_INET6] {
            if self.refused.contains(&domain) || self.slot(domain).is_some() {
                continue;
            }
            match tcp_socket(domain) {
                Ok(s) => *self.slot(domain) = Some(s),
                Err(Errno::EAFNOSUPPORT) => self.refused.push(domain),
                Err(_) => {}
            }
        }
    }
}

/// The switched socket `socket` (fresh, of the owner's namespace) for a
/// command's socket `original` (with `facts`): carrying its options,
/// locked, connected (or connecting) to the target, blocking or not as the
/// original.
pub fn connect_switched(
    socket: OwnedFd,
    original: BorrowedFd<'_>,
    facts: &Facts,
    target: Target,
    templates: &Templates,
    trace: &mut Trace,
) -> Result<(OwnedFd, Progress), Failed> {
    let Target { to, confine } = target;
    let options = sockopt::changed(&sockopt::read(original, facts.domain), templates.of(facts.domain));
    sockopt::apply(socket.as_fd(), &options).map_err(|(name, e)| Failed::Keep(format!("{name}: {e}")))?;
    trace.mark(Phase::Options);
    match confine {
        Confine::Peer => sys::attach_locked_filter(socket.as_fd(), &filter::peer_lock(to))
            .map_err(|e| Failed::Keep(format!("lock to the peer: {e}")))?,
        Confine::Device(index) => {
            let index = i32::try_from(index).map_err(|_| Failed::Keep(format!("interface index {index}")))?;
            sys::setsockopt_bytes(socket.as_fd(), libc::SOL_SOCKET, libc::SO_BINDTOIFINDEX, &index.to_ne_bytes())
                .map_err(|e| Failed::Keep(format!("bind to interface {index}: {e}")))?
        }
    }
    trace.mark(Phase::Lock);
    let addr = SockaddrStorage::from(to);
    // SAFETY: connect(2) with an address nix built for its own length.
    let r = unsafe { libc::connect(socket.as_raw_fd(), addr.as_ptr(), addr.len()) };
    let progress = match Errno::result(r) {
        Ok(_) => Progress::Connected,
        Err(Errno::EINPROGRESS) => Progress::InProgress,
        Err(e) => return Err(Failed::Refused(e)),
    };
    trace.mark(Phase::Connect);
    if facts.status & libc::O_NONBLOCK == 0 {
        let flags = sys::status_flags(socket.as_fd()).map_err(Failed::Refused)?;
        sys::set_status_flags(socket.as_fd(), flags & !libc::O_NONBLOCK).map_err(Failed::Refused)?;
    }
    Ok((socket, progress))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_facts() -> Facts {
        Facts {
            domain: libc::AF_INET,
            kind: libc::SOCK_STREAM,
            protocol: libc::IPPROTO_TCP,
            netns: 7,
            status: libc::O_RDWR,
            ..Facts::default()
        }
    }

    fn dst() -> SocketAddr {
        "10.231.0.1:80".parse().unwrap()
    }

    #[test]
    fn a_fresh_tcp_socket_of_the_run_is_switched() {
        assert_eq!(eligible(&tcp_facts(), &dst(), 7, 1), Ok(()));
        let wildcard = Facts { local: Some("0.0.0.0:0".parse().unwrap()), ..tcp_facts() };
        assert_eq!(eligible(&wildcard, &dst(), 7, 1), Ok(()));
        let nonblocking = Facts { status: libc::O_RDWR | libc::O_NONBLOCK, ..tcp_facts() };
        assert_eq!(eligible(&nonblocking, &dst(), 7, 1), Ok(()));
        // Switched before (its connect failed), switched again.
        assert_eq!(eligible(&Facts { netns: 1, ..tcp_facts() }, &dst(), 7, 1), Ok(()));
    }

    #[test]
    fn sockets_of_another_namespace_stay_there() {
        assert_eq!(eligible(&Facts { netns: 9, ..tcp_facts() }, &dst(), 7, 1), Err(Keep::OtherNamespace));
    }

    #[test]
    fn only_tcp_is_switched() {
        let udp = Facts { kind: libc::SOCK_DGRAM, protocol: libc::IPPROTO_UDP, ..tcp_facts() };
        assert_eq!(eligible(&udp, &dst(), 7, 1), Err(Keep::NotTcp));
        let mptcp = Facts { protocol: 262, ..tcp_facts() };
        assert_eq!(eligible(&mptcp, &dst(), 7, 1), Err(Keep::NotTcp));
        let unix = Facts { domain: libc::AF_UNIX, ..tcp_facts() };
        assert_eq!(eligible(&unix, &dst(), 7, 1), Err(Keep::NotTcp));
    }

    #[test]
    fn an_address_of_the_other_family_is_left_to_the_kernel() {
        let v6 = Facts { domain: libc::AF_INET6, ..tcp_facts() };
        assert_eq!(eligible(&v6, &dst(), 7, 1), Err(Keep::Family));
        assert_eq!(eligible(&v6, &"[::ffff:10.231.0.1]:80".parse().unwrap(), 7, 1), Ok(()));
    }

    #[test]
    fn state_that_belongs_to_the_namespace_keeps_the_socket_inside() {
        let cases = [
            Facts { local: Some("10.0.2.100:0".parse().unwrap()), ..tcp_facts() },
            Facts { local: Some("0.0.0.0:5000".parse().unwrap()), ..tcp_facts() },
        ];
        for f in cases {
            assert_eq!(eligible(&f, &dst(), 7, 1), Err(Keep::Bound), "{f:?}");
        }
        let cases = [
            Facts { device: 2, ..tcp_facts() },
            Facts { mark: 0x504e, ..tcp_facts() },
            Facts { filter_len: 4, ..tcp_facts() },
            Facts { transparent: true, ..tcp_facts() },
            Facts { repair: true, ..tcp_facts() },
            Facts { status: libc::O_RDWR | libc::O_ASYNC, ..tcp_facts() },
        ];
        for f in cases {
            assert_eq!(eligible(&f, &dst(), 7, 1), Err(Keep::NamespaceState), "{f:?}");
        }
        assert_eq!(eligible(&Facts { connected: true, ..tcp_facts() }, &dst(), 7, 1), Err(Keep::Connected));
    }
}

//! A small DNS resolver in the process that owns a run: it answers names
//! from a pluggable local table ([`LocalNames`]) and forwards every other
//! query to upstream resolvers, stubs on the host's loopback included.
//!
//! Why in-process: a bridge network's containers cannot reach the host's
//! `127.0.0.53`, and neither can a namespace whose `--dns` names another
//! address on the host's loopback. One thread with one epoll instance
//! serves UDP and TCP on port 53; no daemon outlives the run.
//!
//! Bounded and non-blocking: at most [`Limits::max_pending`] UDP queries in
//! flight (beyond that a query is answered SERVFAIL at once), at most
//! [`Limits::max_tcp`] TCP clients (beyond that a connection is closed),
//! every upstream attempt has a deadline after which the next upstream is
//! tried, and a query no upstream answers gets SERVFAIL. Upstream replies
//! are accepted only from the upstream asked, with the ID it was given (a
//! random one) and the question asked.
//!
//! Several runs on one bridge network each run a forwarder on the same
//! gateway address: the sockets carry `SO_REUSEPORT`, the kernel spreads
//! queries over them, and any one of them answers alike.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

mod cache;
mod event_loop;
mod tcp;
mod udp;

/// The port DNS uses.
pub const DNS_PORT: u16 = 53;

pub use cache::{CACHE_ENV, CacheConfig};

/// What the local table says of a name asked by a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalAnswer {
    /// These addresses (the reply carries those of the question's type:
    /// none of that type is an empty, NOERROR answer).
    Addresses(Vec<IpAddr>),
    /// No such name, answered at once (NXDOMAIN): a name in a domain the
    /// table is the authority for.
    NoSuchName,
    /// Not a local name: ask upstream.
    Forward,
}

/// Names the forwarder answers itself.
pub trait LocalNames: Send + Sync + 'static {
    /// The addresses of `name` (lowercase, without the final dot), or `None`
    /// to forward the query upstream.
    fn lookup(&self, name: &str) -> Option<Vec<IpAddr>>;

    /// The answer to `client` for `name` (lowercase, without the final
    /// dot). By default [`LocalNames::lookup`]'s, the same for every client;
    /// a table may answer per client (a network's names only to the
    /// network's own addresses) or refuse a name at once.
    fn answer(&self, client: IpAddr, name: &str) -> LocalAnswer {
        let _ = client;
        match self.lookup(name) {
            Some(addrs) => LocalAnswer::Addresses(addrs),
            None => LocalAnswer::Forward,
        }
    }
}

/// No local names: forward everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLocalNames;

impl LocalNames for NoLocalNames {
    fn lookup(&self, _name: &str) -> Option<Vec<IpAddr>> {
        None
    }
}

/// A fixed table of names.
#[derive(Debug, Clone, Default)]
pub struct StaticNames {
    map: HashMap<String, Vec<IpAddr>>,
}

impl StaticNames {
    /// A table from `(name, addresses)` pairs; names are matched without regard to case.
    pub fn new<'a>(entries: impl IntoIterator<Item = (&'a str, Vec<IpAddr>)>) -> Self {
        let map = entries.into_iter().map(|(n, a)| (n.trim_end_matches('.').to_ascii_lowercase(), a)).collect();
        Self { map }
    }
}

impl LocalNames for StaticNames {
    fn lookup(&self, name: &str) -> Option<Vec<IpAddr>> {
        self.map.get(name).cloned()
    }
}

/// The forwarder's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long one upstream gets to answer before the next is asked.
    pub attempt_timeout: Duration,
    /// UDP queries in flight at once.
    pub max_pending: usize,
    /// TCP clients at once.
    pub max_tcp: usize,
    /// How long a TCP client may stay idle.
    pub tcp_idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_millis(2000),
            max_pending: 1024,
            max_tcp: 64,
            tcp_idle: Duration::from_secs(10),
        }
    }
}

/// What the forwarder does.
#[derive(Clone)]
pub struct ForwarderConfig {
    /// Upstream resolvers, asked in order.
    pub upstreams: Vec<SocketAddr>,
    /// Names answered locally.
    pub names: Arc<dyn LocalNames>,
    /// TTL of local answers, in seconds.
    pub local_ttl: u32,
    /// Bounds.
    pub limits: Limits,
    /// The answer cache ([`CacheConfig::OFF`] for none).
    pub cache: CacheConfig,
}

impl std::fmt::Debug for ForwarderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwarderConfig")
            .field("upstreams", &self.upstreams)
            .field("local_ttl", &self.local_ttl)
            .field("limits", &self.limits)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl ForwarderConfig {
    /// Forward to `upstreams` (port 53), with no local names and default limits.
    pub fn forward_to(upstreams: &[IpAddr]) -> Self {
        Self {
            upstreams: upstreams.iter().map(|ip| SocketAddr::new(*ip, DNS_PORT)).collect(),
            names: Arc::new(NoLocalNames),
            local_ttl: 0,
            limits: Limits::default(),
            cache: CacheConfig::default(),
        }
    }
}

/// Errors of the forwarder.
#[derive(Debug, thiserror::Error)]
pub enum ForwarderError {
    /// A listening socket could not be set up.
    #[error("listen for DNS on {addr} ({proto})")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// udp or tcp.
        proto: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// An upstream socket could not be created.
    #[error("open a socket to the upstream resolvers")]
    Upstream(#[source] io::Error),
    /// The epoll instance or the thread could not be started.
    #[error("start the DNS forwarder")]
    Start(#[source] io::Error),
}

/// The two listening sockets, bound and nonblocking.
#[derive(Debug)]
pub struct Listeners {
    /// UDP.
    pub udp: UdpSocket,
    /// TCP.
    pub tcp: TcpListener,
}

impl Listeners {
    /// Bind UDP and TCP on `addr` (with `SO_REUSEADDR` and `SO_REUSEPORT`)
    /// in the caller's namespace.
    pub fn bind(addr: SocketAddr) -> Result<Self, ForwarderError> {
        let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
        let mk = |ty| new_socket(domain, ty).map_err(|source| listen_err(addr, ty, source));
        Self::from_sockets(mk(libc::SOCK_DGRAM)?, mk(libc::SOCK_STREAM)?, addr)
    }

    /// Sockets already bound, non-blocking, the TCP one listening (the
    /// namespace child's, see [`crate::dns::inside`]).
    pub fn bound(udp: OwnedFd, tcp: OwnedFd) -> Self {
        Self { udp: UdpSocket::from(udp), tcp: TcpListener::from(tcp) }
    }

    /// Configure and bind sockets made elsewhere (inside a namespace, by a
    /// socket factory): `udp` a datagram socket, `tcp` a stream socket of
    /// `addr`'s family.
    pub fn from_sockets(udp: OwnedFd, tcp: OwnedFd, addr: SocketAddr) -> Result<Self, ForwarderError> {
        let udp = prepare(udp, addr, false).map_err(|source| listen_err(addr, libc::SOCK_DGRAM, source))?;
        let udp = UdpSocket::from(udp);
        // Port 0 (tests): TCP takes the port UDP was given.
        let addr = udp.local_addr().map_err(|source| listen_err(addr, libc::SOCK_DGRAM, source))?;
        let tcp = prepare(tcp, addr, true).map_err(|source| listen_err(addr, libc::SOCK_STREAM, source))?;
        Ok(Self { udp, tcp: TcpListener::from(tcp) })
    }
}

fn listen_err(addr: SocketAddr, ty: i32, source: io::Error) -> ForwarderError {
    ForwarderError::Listen { addr, proto: if ty == libc::SOCK_DGRAM { "udp" } else { "tcp" }, source }
}

/// A new nonblocking, close-on-exec socket.
pub(crate) fn new_socket(domain: i32, ty: i32) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the result is owned at once.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socket(2) just returned this descriptor; nothing else owns it.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

fn prepare(fd: OwnedFd, addr: SocketAddr, listen: bool) -> io::Result<OwnedFd> {
    use nix::sys::socket::{SockaddrStorage, setsockopt, sockopt};
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    setsockopt(&fd, sockopt::ReusePort, &true)?;
    // The address may not exist yet (a bridge's gateway before its first
    // container, lo's DNS address before the child adds it).
    // (IP_FREEBIND covers IPv6 sockets too.)
    setsockopt(&fd, sockopt::IpFreebind, &true)?;
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))?;
    nix::sys::socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    if listen {
        nix::sys::socket::listen(&fd.as_fd(), nix::sys::socket::Backlog::new(64)?)?;
    }
    Ok(fd)
}

/// What a forwarder did, reported when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwarderStats {
    /// UDP queries received.
    pub udp_queries: u64,
    /// TCP queries received.
    pub tcp_queries: u64,
    /// Queries answered from the local table.
    pub local_answers: u64,
    /// Queries answered with SERVFAIL (no upstream answered, or over the bounds).
    pub servfail: u64,
    /// TCP connections closed at once because [`Limits::max_tcp`] were open.
    pub tcp_refused: u64,
    /// UDP queries answered from the cache.
    pub cache_hits: u64,
}

/// A running forwarder; dropping it stops it.
#[derive(Debug)]
pub struct Forwarder {
    waker: Arc<nix::sys::eventfd::EventFd>,
    thread: Option<JoinHandle<ForwarderStats>>,
    local: SocketAddr,
}

impl Forwarder {
    /// Serve on `listeners` until stopped.
    pub fn start(listeners: Listeners, cfg: ForwarderConfig) -> Result<Self, ForwarderError> {
        let local = listeners.udp.local_addr().map_err(ForwarderError::Start)?;
        let lp = event_loop::Loop::new(listeners, cfg)?;
        let waker = lp.waker();
        let thread = crate::ports::relay::sys::spawn_with_signals_blocked("pelagos-dns", move || lp.run())
            .map_err(ForwarderError::Start)?;
        Ok(Self { waker, thread: Some(thread), local })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Stop it, close its sockets, and report what it did.
    pub fn stop(mut self) -> ForwarderStats {
        self.shutdown()
    }

    fn shutdown(&mut self) -> ForwarderStats {
        let _ = self.waker.write(1);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or_default()
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shutdown();
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

#[cfg(test)]
#[path = "cache_live_tests.rs"]
mod cache_live_tests;

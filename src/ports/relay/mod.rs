//! The builtin port driver: published ports relayed by this process, in one
//! thread, into a network namespace.
//!
//! # Why a builtin relay
//!
//! pasta forwards published ports well from loopback clients but, on some
//! builds, not from other hosts. Relaying in-process needs no helper: the
//! process that owns the run listens on the host side, and for every
//! connection opens a socket **inside the target namespace** through a
//! [`SocketSource`]. A socket stays in the namespace it was created in, even
//! when another thread (or another process, over `SCM_RIGHTS`) uses it, so
//! one thread in the host namespace relays between both worlds.
//!
//! # Shape
//!
//! - [`bind_listeners`] binds every host port of the mappings in the
//!   caller's namespace (it owns planning: ranges port by port, a missing
//!   host ip meaning `0.0.0.0` and `[::]`).
//! - [`Forwarder::start`] moves the listeners to one relay thread running an
//!   epoll loop: no thread per connection, memory bounded by
//!   [`ForwarderConfig::max_connections`] times two pipes.
//! - Pipes are charged to the user that owns them, against a limit the
//!   container shares when it runs as the same user: a pipe is enlarged to
//!   [`ForwarderConfig::pipe_size`] only while all relay pipes stay within
//!   a quarter of `fs.pipe-user-pages-soft`, and a direction holds its pipe
//!   only from its first read until it ends.
//! - TCP is relayed with `splice(2)` through one pipe per direction, so
//!   payload never enters user space; a full pipe stops reading its source
//!   (backpressure) and a drained one resumes it; EOF becomes
//!   `shutdown(SHUT_WR)` on the other side (half-close); an error or a reset
//!   on either side, even after a half-close, resets both (`SO_LINGER` 0),
//!   once what the failed socket received before it is passed on, as far as
//!   the other side takes it without waiting.
//! - UDP is relayed per client flow (a connected socket inside the
//!   namespace per client address), expired when idle and bounded per
//!   listener, least recently used evicted first. Replies leave from the
//!   address the client sent to, even on a wildcard listener, and a flow
//!   refused on the loopback of its listener's family moves to the other.
//!
//! # Client source addresses
//!
//! With [`ForwarderConfig::preserve_source`], a TCP connection from a
//! non-loopback client is made from the client's own address: the
//! namespace-side socket is `IP_TRANSPARENT`, marked, and bound to the
//! client address, and connects to a routed address of the namespace
//! ([`Targets`]), because the kernel drops packets to 127.0.0.1 from a
//! foreign source. The namespace must route marked replies back locally
//! (`ip rule add fwmark MARK lookup T`, `ip route add local 0.0.0.0/0 dev lo
//! table T`, `net.ipv4.tcp_fwmark_accept=1`). Every failure falls back to a
//! plain connection from the namespace's loopback.
//!
//! UDP flows are never source-preserving: a transparent datagram socket per
//! client would need the same routing for every reply and a flow table the
//! kernel already keeps for TCP only; the UDP clients this driver serves
//! (DNS, metrics, test fixtures) do not depend on it.
//!
//! # What it never does
//!
//! It never creates namespaces, routes or rules, and never changes process
//! limits: a caller expecting many connections raises `RLIMIT_NOFILE` (each
//! TCP connection holds six descriptors). The relay thread blocks every
//! signal, so a process-wide `signalfd` keeps receiving them; a `SIGPIPE`
//! raised by `splice` to a closed socket stays pending on that thread and is
//! harmless.

mod attempt;
mod event_loop;
mod listen;
mod pipes;
mod pump;
mod source;
pub(crate) mod sys;
mod tcp;
mod udp;

pub use listen::{Listener, bind_listeners};
pub use source::{Here, JoinNetns, open_socket};

use crate::model::port::PortProto;
use nix::errno::Errno;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Address family of a socket to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SockFamily {
    /// IPv4 (`AF_INET`).
    V4,
    /// IPv6 (`AF_INET6`).
    V6,
}

impl SockFamily {
    /// The family of an address.
    pub fn of(addr: &SocketAddr) -> Self {
        match addr {
            SocketAddr::V4(_) => SockFamily::V4,
            SocketAddr::V6(_) => SockFamily::V6,
        }
    }
}

/// Type of a socket to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SockKind {
    /// TCP (`SOCK_STREAM`).
    Stream,
    /// UDP (`SOCK_DGRAM`).
    Datagram,
}

/// Makes sockets inside the target namespace. Called from the relay thread.
pub trait SocketSource: Send {
    /// A new socket of `family` and `kind`, nonblocking and close-on-exec,
    /// created inside the target namespace.
    fn socket(&mut self, family: SockFamily, kind: SockKind) -> std::io::Result<OwnedFd>;
}

/// Addresses of the namespace reachable by routing (non-loopback), used as
/// connect targets when preserving the client's source address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Targets {
    /// IPv4 target, for IPv4 clients.
    pub v4: Option<Ipv4Addr>,
    /// IPv6 target, for IPv6 clients.
    pub v6: Option<Ipv6Addr>,
}

/// How the relay behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwarderConfig {
    /// Routed addresses of the namespace, for source preservation.
    pub targets: Targets,
    /// `Some(mark)`: preserve TCP client source addresses with this fwmark;
    /// `None`: connect from the namespace's loopback.
    pub preserve_source: Option<u32>,
    /// A UDP flow idle this long is closed.
    pub udp_idle: Duration,
    /// UDP flows per listener; the least recently used is evicted beyond.
    pub max_udp_flows: usize,
    /// TCP connections relayed at once; beyond, new ones are accepted and reset.
    pub max_connections: usize,
    /// How long one connect attempt inside the namespace may take before the
    /// next one is tried.
    pub connect_timeout: Duration,
    /// Size asked for each relay pipe (`F_SETPIPE_SZ`) while the relay's
    /// pipes stay within a quarter of `fs.pipe-user-pages-soft`; beyond that,
    /// or when the request is refused, the kernel's default size stays.
    pub pipe_size: usize,
}

impl Default for ForwarderConfig {
    fn default() -> Self {
        Self {
            targets: Targets::default(),
            preserve_source: None,
            udp_idle: Duration::from_secs(60),
            max_udp_flows: 1024,
            max_connections: 4096,
            connect_timeout: Duration::from_secs(5),
            pipe_size: tcp::DEFAULT_PIPE_SIZE,
        }
    }
}

/// Errors of the builtin port driver.
#[derive(Debug, thiserror::Error)]
pub enum PortfwdError {
    /// A mapping has no host port: the caller resolves ephemeral ports first.
    #[error("port mapping {mapping} has no host port (ephemeral ports must be resolved before binding)")]
    UnresolvedHostPort {
        /// The mapping, in canonical form.
        mapping: String,
    },
    /// A socket could not be created.
    #[error("create {proto} socket for {addr}")]
    Socket {
        /// Address it was for.
        addr: SocketAddr,
        /// Protocol.
        proto: PortProto,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// A socket option could not be set.
    #[error("set {option} on {proto} socket for {addr}")]
    SetOption {
        /// Option name.
        option: &'static str,
        /// Address the socket is for.
        addr: SocketAddr,
        /// Protocol.
        proto: PortProto,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// The host port is held by another socket.
    #[error("bind {proto} {addr}: port in use")]
    PortInUse {
        /// Address.
        addr: SocketAddr,
        /// Protocol.
        proto: PortProto,
    },
    /// Binding failed for another reason.
    #[error("bind {proto} {addr}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Protocol.
        proto: PortProto,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// `listen(2)` failed.
    #[error("listen on tcp {addr}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// The epoll instance or its wake-up eventfd could not be created.
    #[error("create the relay event loop")]
    EventLoop {
        /// Cause.
        #[source]
        source: Errno,
    },
    /// A listener could not be made nonblocking or added to the event loop.
    #[error("register {proto} listener {addr} with the relay")]
    Register {
        /// Address.
        addr: SocketAddr,
        /// Protocol.
        proto: PortProto,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// The relay thread could not be spawned.
    #[error("spawn the relay thread")]
    Spawn {
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Waiting for events failed; the relay stopped.
    #[error("wait for relay events")]
    Wait {
        /// Cause.
        #[source]
        source: Errno,
    },
    /// The relay thread panicked.
    #[error("relay thread panicked")]
    Panicked,
}

/// Counters shared between the relay thread and [`Forwarder::stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) tcp_accepted: AtomicU64,
    pub(crate) tcp_active: AtomicU64,
    pub(crate) tcp_rejected: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) bytes_to_container: AtomicU64,
    pub(crate) bytes_from_container: AtomicU64,
    pub(crate) udp_flows_created: AtomicU64,
    pub(crate) udp_flows_active: AtomicU64,
    pub(crate) udp_dropped: AtomicU64,
}

/// A snapshot of the relay's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwarderStats {
    /// TCP connections accepted and relayed (or tried).
    pub tcp_accepted: u64,
    /// TCP connections open now.
    pub tcp_active: u64,
    /// TCP connections reset because `max_connections` were open.
    pub tcp_rejected: u64,
    /// TCP connections whose every connect attempt failed.
    pub connect_failures: u64,
    /// Bytes delivered from clients to the namespace (TCP and UDP).
    pub bytes_to_container: u64,
    /// Bytes delivered from the namespace to clients (TCP and UDP).
    pub bytes_from_container: u64,
    /// UDP flows created.
    pub udp_flows_created: u64,
    /// UDP flows open now.
    pub udp_flows_active: u64,
    /// UDP datagrams dropped (socket buffers full, no flow socket, refused
    /// inside the namespace and not resent).
    pub udp_dropped: u64,
}

impl Counters {
    fn snapshot(&self) -> ForwarderStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ForwarderStats {
            tcp_accepted: get(&self.tcp_accepted),
            tcp_active: get(&self.tcp_active),
            tcp_rejected: get(&self.tcp_rejected),
            connect_failures: get(&self.connect_failures),
            bytes_to_container: get(&self.bytes_to_container),
            bytes_from_container: get(&self.bytes_from_container),
            udp_flows_created: get(&self.udp_flows_created),
            udp_flows_active: get(&self.udp_flows_active),
            udp_dropped: get(&self.udp_dropped),
        }
    }
}

/// What the relay did, returned by [`Forwarder::stop`].
#[derive(Debug)]
pub struct ForwarderReport {
    /// Final counters.
    pub stats: ForwarderStats,
    /// CPU time (user + system) the relay thread used.
    pub relay_cpu: Duration,
    /// Why the relay stopped on its own, if it did.
    pub error: Option<PortfwdError>,
}

/// What the relay thread hands back when it ends.
pub(crate) struct LoopEnd {
    pub(crate) cpu: Duration,
    pub(crate) error: Option<PortfwdError>,
}

/// Requests to release TCP listeners, for the relay thread to answer.
#[derive(Debug)]
pub(crate) struct Releases {
    queue: std::sync::Mutex<Vec<(SocketAddr, std::sync::mpsc::SyncSender<Option<OwnedFd>>)>>,
    /// Written to wake the relay thread.
    pub(crate) wake: nix::sys::eventfd::EventFd,
}

impl Releases {
    fn new() -> Result<Self, Errno> {
        use nix::sys::eventfd::{EfdFlags, EventFd};
        let wake = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
        Ok(Self { queue: std::sync::Mutex::new(Vec::new()), wake })
    }

    /// The pending requests.
    pub(crate) fn take(&self) -> Vec<(SocketAddr, std::sync::mpsc::SyncSender<Option<OwnedFd>>)> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// Takes TCP listeners away from a running relay, for a server that will
/// accept on them itself (the accelerator's ingress). Connections the
/// relay accepted before stay relayed.
#[derive(Debug, Clone)]
pub struct ListenerReleaser {
    releases: Arc<Releases>,
}

impl ListenerReleaser {
    /// How long a release waits for the relay thread.
    const WAIT: Duration = Duration::from_secs(2);

    /// The TCP listener bound to `local`, no longer relayed; `None` when the
    /// relay has none there (or has stopped).
    pub fn release(&self, local: SocketAddr) -> Option<OwnedFd> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.releases.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((local, tx));
        self.releases.wake.write(1).ok()?;
        rx.recv_timeout(Self::WAIT).ok().flatten()
    }
}

/// A running relay thread. Stop it with [`Forwarder::stop`]; dropping it
/// stops it too.
#[derive(Debug)]
pub struct Forwarder {
    releases: Arc<Releases>,
    waker: Option<Arc<nix::sys::eventfd::EventFd>>,
    thread: Option<JoinHandle<LoopEnd>>,
    counters: Arc<Counters>,
    tid: libc::pid_t,
}

impl Forwarder {
    /// Starts relaying `listeners` into the namespace `source` makes sockets
    /// in. Listeners are registered before this returns, so an error here
    /// leaves nothing running.
    pub fn start(
        listeners: Vec<Listener>,
        source: Box<dyn SocketSource>,
        cfg: ForwarderConfig,
    ) -> Result<Self, PortfwdError> {
        let counters = Arc::new(Counters::default());
        let relay = event_loop::Relay::new(listeners, source, cfg, Arc::clone(&counters))?;
        let waker = relay.waker();
        let releases = relay.releases();
        let (tid_tx, tid_rx) = std::sync::mpsc::sync_channel(1);
        let thread = sys::spawn_with_signals_blocked("pelagos-portfwd", move || {
            // SAFETY: gettid has no preconditions.
            let _ = tid_tx.send(unsafe { libc::gettid() });
            relay.run()
        })
        .map_err(|source| PortfwdError::Spawn { source })?;
        let tid = tid_rx.recv().unwrap_or(0);
        Ok(Self { releases, waker: Some(waker), thread: Some(thread), counters, tid })
    }

    /// A handle that takes TCP listeners away from the relay.
    pub fn releaser(&self) -> ListenerReleaser {
        ListenerReleaser { releases: Arc::clone(&self.releases) }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ForwarderStats {
        self.counters.snapshot()
    }

    /// The kernel thread id of the relay thread (for `/proc/self/task/TID`).
    pub fn relay_tid(&self) -> libc::pid_t {
        self.tid
    }

    /// Wakes the loop, which closes the listeners and every connection, and
    /// joins the thread.
    pub fn stop(mut self) -> ForwarderReport {
        self.shutdown()
    }

    fn shutdown(&mut self) -> ForwarderReport {
        if let Some(waker) = self.waker.take() {
            // A full counter (impossible in practice) still wakes the loop.
            let _ = waker.write(1);
        }
        let end = match self.thread.take().map(JoinHandle::join) {
            Some(Ok(end)) => end,
            Some(Err(_)) => LoopEnd { cpu: Duration::ZERO, error: Some(PortfwdError::Panicked) },
            None => LoopEnd { cpu: Duration::ZERO, error: None },
        };
        ForwarderReport { stats: self.counters.snapshot(), relay_cpu: end.cpu, error: end.error }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.shutdown();
        }
    }
}

//! The builtin port driver of a run: listeners on the host, a socket
//! factory inside the namespace, source-address routing, and the relay.
//!
//! Order matters and is the same for every mode:
//! 1. [`bind_listeners`] in the host namespace, before anything else is
//!    created, so a taken port fails the run first and cheaply;
//! 2. once the namespace's network is ready, [`start_builtin_ports`] forks
//!    the [`SocketFactory`] into it, reads the namespace's routed addresses,
//!    installs the source-preservation routing (below), and starts the
//!    [`Forwarder`] thread;
//! 3. [`stop_builtin_ports`] closes the listeners and connections and
//!    stops the factory. The routing lives in the namespace and dies with it.
//!
//! # Keeping the client's address
//!
//! For a TCP client that is not on the host's loopback, the relay's socket
//! inside the namespace is made transparent (`IP_TRANSPARENT`), marked
//! ([`SOURCE_MARK`]), bound to the client's own address and connected to
//! the namespace's routed address, so the server sees the real client. The
//! server's replies are addressed to the client, so they must not leave by
//! the default route: `tcp_fwmark_accept` gives the server's accepted
//! socket the mark of the connection request, and a rule sends marked
//! packets to a table whose only route is `local default dev lo`, which
//! delivers them back to the relay's socket. Loopback clients and UDP are
//! relayed from the namespace's own loopback (a UDP server's replies carry
//! no mark to route by). When the routing cannot be installed, the run
//! still works, with every client seen as a loopback one, and says so.

use crate::bridge::netlink::{IpFamily, Netlink, NetlinkError};
use crate::host::procfs::ProcessId;
use crate::model::port::PortMapping;
use crate::model::target::NsTarget;
use crate::ports::nsfactory::{FactoryError, SocketFactory};
use crate::ports::relay::{
    Forwarder, ForwarderConfig, ForwarderReport, JoinNetns, Listener, PortfwdError, SocketSource, Targets,
};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

pub use crate::ports::relay::bind_listeners;

/// Firewall mark of the relay's source-preserving sockets (and, through
/// `tcp_fwmark_accept`, of the server's replies to them).
pub const SOURCE_MARK: u32 = 0x504e;
/// Routing table holding `local default dev lo` for marked packets.
pub const SOURCE_TABLE: u32 = 0x504e;
/// Priority of the rule, ahead of the `local` table's (0 is taken by it).
const SOURCE_RULE_PRIORITY: u32 = 100;

/// Errors starting the builtin driver.
#[derive(Debug, thiserror::Error)]
pub enum BuiltinPortsError {
    /// The socket factory could not start or enter the namespace.
    #[error(transparent)]
    Factory(#[from] FactoryError),
    /// The namespace's rtnetlink socket could not be had.
    #[error("open rtnetlink inside the namespace")]
    Netlink(#[source] NetlinkError),
    /// Asking the factory for a socket failed.
    #[error("get a socket inside the namespace")]
    Socket(#[source] std::io::Error),
    /// The relay could not start.
    #[error(transparent)]
    Relay(#[from] PortfwdError),
    /// The namespace file could not be opened.
    #[error("open network namespace {path}")]
    OpenNetns {
        /// The namespace file.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// How the driver reaches inside the namespace.
enum Inside {
    /// A rootless caller: a forked socket factory in the user+net namespace.
    Factory(SocketFactory),
    /// A caller that may `setns` (root, no user namespace): the relay thread
    /// joins the namespace itself, no extra process.
    Join(OwnedFd),
}

impl Inside {
    fn open(cfg: &BuiltinPortsConfig<'_>) -> Result<Self, BuiltinPortsError> {
        if cfg.target.userns.is_none() && nix::unistd::geteuid().is_root() {
            let path = &cfg.target.netns;
            let fd = std::fs::File::open(path)
                .map_err(|source| BuiltinPortsError::OpenNetns { path: path.to_owned(), source })?;
            return Ok(Self::Join(fd.into()));
        }
        Ok(Self::Factory(SocketFactory::spawn(cfg.target, cfg.proc_root)?))
    }

    fn netlink(&mut self) -> Result<Netlink, BuiltinPortsError> {
        match self {
            Self::Factory(f) => {
                let fd = f.netlink_route().map_err(BuiltinPortsError::Socket)?;
                Netlink::from_fd(fd).map_err(BuiltinPortsError::Netlink)
            }
            Self::Join(netns) => Netlink::open_in(netns.as_fd()).map_err(BuiltinPortsError::Netlink),
        }
    }

    fn enable_fwmark_accept(&mut self) -> std::io::Result<()> {
        match self {
            Self::Factory(f) => f.enable_fwmark_accept(),
            Self::Join(netns) => {
                let netns = netns.as_fd();
                // /proc/sys/net shows the namespace of the thread that opens it.
                std::thread::scope(|scope| {
                    scope
                        .spawn(move || {
                            nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET)?;
                            std::fs::write("/proc/sys/net/ipv4/tcp_fwmark_accept", "1\n")
                        })
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
            }
        }
    }

    fn factory_id(&self) -> Option<ProcessId> {
        match self {
            Self::Factory(f) => Some(f.id()),
            Self::Join(_) => None,
        }
    }

    fn into_source(self) -> Box<dyn SocketSource> {
        match self {
            Self::Factory(f) => Box::new(f),
            Self::Join(netns) => Box::new(JoinNetns::new(netns)),
        }
    }
}

/// What the driver needs to start.
#[derive(Debug)]
pub struct BuiltinPortsConfig<'a> {
    /// The namespaces to relay into.
    pub target: &'a NsTarget,
    /// `/proc`.
    pub proc_root: &'a Path,
    /// Keep TCP client source addresses (see the module docs).
    pub preserve_source: bool,
}

/// A running builtin driver.
#[derive(Debug)]
pub struct BuiltinPorts {
    forwarder: Forwarder,
    factory: Option<ProcessId>,
    /// Whether client addresses are kept (the routing is in place).
    pub preserving: bool,
}

impl BuiltinPorts {
    /// The socket factory process, for the run record (none when the relay
    /// thread joins the namespace itself).
    pub fn factory_id(&self) -> Option<ProcessId> {
        self.factory
    }

    /// The relay, for statistics.
    pub fn forwarder(&self) -> &Forwarder {
        &self.forwarder
    }
}

/// Start relaying `listeners` into the namespace of `cfg.target`.
pub fn start_builtin_ports(
    listeners: Vec<Listener>,
    cfg: &BuiltinPortsConfig<'_>,
) -> Result<BuiltinPorts, BuiltinPortsError> {
    let mut inside = Inside::open(cfg)?;
    crate::fault::point("ports.factory-started");
    let (targets, preserving) = prepare_targets(&mut inside, cfg.preserve_source);
    crate::fault::point("ports.routing-installed");
    let factory_id = inside.factory_id();
    let config =
        ForwarderConfig { targets, preserve_source: preserving.then_some(SOURCE_MARK), ..ForwarderConfig::default() };
    let forwarder = Forwarder::start(listeners, inside.into_source(), config)?;
    crate::fault::point("ports.relay-started");
    Ok(BuiltinPorts { forwarder, factory: factory_id, preserving })
}

/// Errors installing the source-preservation routing.
#[derive(Debug, thiserror::Error)]
enum RoutingError {
    #[error("read the namespace's addresses")]
    Addresses(#[source] BuiltinPortsError),
    #[error("set net.ipv4.tcp_fwmark_accept inside the namespace")]
    Sysctl(#[source] std::io::Error),
    #[error("find lo inside the namespace")]
    NoLoopback,
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
}

/// The namespace's routed addresses, as connect targets, with the routing
/// that keeps client addresses installed for each family it could be.
/// Never fails the run: what cannot be had is warned about, and those
/// clients are relayed from the namespace's loopback instead.
fn prepare_targets(inside: &mut Inside, preserve: bool) -> (Targets, bool) {
    let warn = |e: &dyn std::fmt::Display| {
        log::warn!("cannot keep client source addresses (servers will see 127.0.0.1): {e}");
    };
    let (mut netlink, routed) = match read_routed(inside) {
        Ok(found) => found,
        Err(e) => {
            warn(&e);
            return (Targets::default(), false);
        }
    };
    let mut targets = Targets { v4: routed.v4, v6: routed.v6 };
    if !preserve || (targets.v4.is_none() && targets.v6.is_none()) {
        return (targets, false);
    }
    if let Err(e) = common_routing(inside, &mut netlink) {
        warn(&e);
        return (targets, false);
    }
    for family in [IpFamily::V4, IpFamily::V6] {
        let present = match family {
            IpFamily::V4 => targets.v4.is_some(),
            IpFamily::V6 => targets.v6.is_some(),
        };
        if present && let Err(e) = family_routing(&mut netlink, family) {
            warn(&format_args!("{family:?}: {e}"));
            match family {
                IpFamily::V4 => targets.v4 = None,
                IpFamily::V6 => targets.v6 = None,
            }
        }
    }
    let preserving = targets.v4.is_some() || targets.v6.is_some();
    (targets, preserving)
}

fn read_routed(inside: &mut Inside) -> Result<(Netlink, crate::bridge::netlink::RoutedAddresses), RoutingError> {
    let mut netlink = inside.netlink().map_err(RoutingError::Addresses)?;
    let routed = netlink.routed_addresses()?;
    Ok((netlink, routed))
}

fn common_routing(inside: &mut Inside, netlink: &mut Netlink) -> Result<(), RoutingError> {
    inside.enable_fwmark_accept().map_err(RoutingError::Sysctl)?;
    netlink.link_index("lo")?.ok_or(RoutingError::NoLoopback).map(drop)
}

fn family_routing(netlink: &mut Netlink, family: IpFamily) -> Result<(), RoutingError> {
    let lo = netlink.link_index("lo")?.ok_or(RoutingError::NoLoopback)?;
    netlink.add_local_default_route(family, SOURCE_TABLE, lo).or_else(ignore_exists)?;
    netlink.add_fwmark_rule(family, SOURCE_MARK, SOURCE_TABLE, SOURCE_RULE_PRIORITY).or_else(ignore_exists)?;
    Ok(())
}

/// A namespace shared by several runs (a bridge netns is per run, but a
/// retried setup may meet its own earlier routing) already has it.
fn ignore_exists(e: NetlinkError) -> Result<(), NetlinkError> {
    if e.is_exists() { Ok(()) } else { Err(e) }
}

/// [`bind_listeners`], retrying for a moment a port that the exiting pasta
/// of a run that just ended still holds
/// (`helpers::pasta::setup::PORT_RELEASE_GRACE`).
pub fn bind_listeners_with_grace(ports: &[PortMapping]) -> Result<Vec<Listener>, PortfwdError> {
    let deadline = std::time::Instant::now() + crate::helpers::pasta::setup::PORT_RELEASE_GRACE;
    loop {
        match bind_listeners(ports) {
            Err(PortfwdError::PortInUse { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => {
                for l in other.iter().flatten() {
                    log::debug!("listening on {} ({:?}) for container port {}", l.local, l.proto, l.container_port);
                }
                return other;
            }
        }
    }
}

/// `ADDR:PORT/PROTO` of each listener, as records and logs show them.
pub fn describe_listeners(listeners: &[Listener]) -> Vec<String> {
    listeners.iter().map(|l| format!("{}/{}", l.local, l.proto)).collect()
}

/// Each relayed TCP connection holds six descriptors (two sockets, two
/// pipes); lift the soft limit to the hard one, as servers do. Call it
/// after the command's process is forked, which keeps the usual limit.
pub fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        log::debug!("raise the open-file limit from {soft} to {hard}: {e}");
    }
}

/// Stop the relay and the factory.
pub fn stop_builtin_ports(ports: BuiltinPorts) -> ForwarderReport {
    // The factory is owned by the forwarder (its socket source) and stops
    // when the forwarder drops it.
    crate::fault::point("ports.stop");
    ports.forwarder.stop()
}

//! Before a run publishes a port: nothing else may hold it.
//!
//! Every mode checks the same way, before anything of the run exists
//! ([`claim`]):
//!
//! 1. **One run, one holder per port** ([`duplicate`], pure): publishing a
//!    host port twice in one run is a usage error (`-p 8080:80 -p 8080:81`).
//! 2. **Other runs**: a live run recorded under the runtime directory that
//!    publishes an overlapping port refuses the new one (`already published
//!    by run <id>`). Only the record knows a bridge run's ports: kernel DNAT
//!    holds no socket, and a second DNAT of the same port would silently
//!    take the first one's clients.
//! 3. **The host's sockets** (sock_diag, listening TCP and unconnected UDP,
//!    IPv4 and IPv6): a socket on the port whose address overlaps refuses
//!    it, naming the process when it can be seen (`port in use by python3
//!    (pid 4242)`). Without this, bridge mode's DNAT would silently take a
//!    host server's clients. A socket held by a network helper (pasta,
//!    slirp4netns, pelagos-net), or by a process of ours no descriptor
//!    table shows (one that is exiting: its table goes before its sockets
//!    close; a rootless pasta, which is not dumpable), gets 1.5 s
//!    (`PORT_RELEASE_GRACE`) to go: the exiting helper of a run that just
//!    ended. Anything else fails at once.
//!
//! Addresses overlap as the kernel sees binds: a port without a host
//! address covers `0.0.0.0` and `[::]`; an unspecified address covers its
//! whole family; an IPv6 wildcard without `IPV6_V6ONLY` (another program's)
//! covers IPv4 too, while every IPv6 socket a run binds is IPv6-only.
//!
//! Checks 2 and 3 run under a lock on the runs directory, held by the
//! returned [`PortClaim`] until the caller has written its own record, so
//! two runs starting together cannot both pass.

use crate::helpers::pasta::setup::PORT_RELEASE_GRACE;
use crate::host::procfs::ProcessId;
use crate::host::sockdiag::{self, Bound, Kind};
use crate::model::port::{PortMapping, PortProto};
use crate::state::paths::Paths;
use crate::state::port_index::PortIndex;
use crate::state::store::{Store, StoreError};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, Instant};

/// Why a run may not publish its ports.
#[derive(Debug, thiserror::Error)]
pub enum PortCheckError {
    /// Two mappings of one run publish the same host port.
    #[error("-p {first} and -p {second} publish the same host port {port}/{}", .first.proto)]
    Duplicate {
        /// The first mapping.
        first: PortMapping,
        /// The one that repeats it.
        second: PortMapping,
        /// A port both publish.
        port: u16,
    },
    /// A live run publishes the port already.
    #[error("host port {port}/{}: already published by run {run} (-p {theirs})", .theirs.proto)]
    AlreadyPublished {
        /// The port.
        port: u16,
        /// The other run's id.
        run: String,
        /// Its mapping.
        theirs: PortMapping,
    },
    /// A socket on the host holds the port.
    #[error("host port {port}/{proto}: port in use by {holder}, bound to {local}")]
    InUse {
        /// The port.
        port: u16,
        /// Protocol.
        proto: PortProto,
        /// The holding socket's address.
        local: std::net::SocketAddr,
        /// Who holds it.
        holder: Holder,
    },
    /// The host's sockets could not be listed.
    #[error("list the sockets bound on the host")]
    ListSockets(#[source] std::io::Error),
    /// The runtime directory could not be opened or locked.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The lock on the runs directory could not be taken.
    #[error("lock {}", .path.display())]
    Lock {
        /// The runs directory.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// The process holding a socket, as far as it can be seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// Found in `/proc`.
    Process {
        /// Its pid.
        pid: u32,
        /// Its command name (`/proc/<pid>/comm`).
        name: String,
    },
    /// No descriptor table we may read holds it; the socket's owner.
    Hidden {
        /// The socket owner's uid.
        uid: u32,
        /// We may read every descriptor table of that uid: so the holder
        /// is exiting (its table is gone while its sockets close) or, for
        /// a user, hides its descriptors (a rootless pasta makes itself
        /// non-dumpable).
        ours: bool,
    },
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Process { pid, name } => write!(f, "{name} (pid {pid})"),
            Self::Hidden { uid, ours: true } => {
                write!(f, "a process of uid {uid} that is exiting or hides its descriptors (as pasta does)")
            }
            Self::Hidden { uid, ours: false } => write!(f, "a process of uid {uid} (not visible to this user)"),
        }
    }
}

impl Holder {
    /// A holder that may be the exiting network helper of a run that just
    /// ended: pasta (also under its `passt` names), slirp4netns or
    /// pelagos-net itself (the builtin driver's listeners), or a process of
    /// ours that cannot be seen (exiting, or a non-dumpable pasta).
    pub fn may_be_exiting_helper(&self) -> bool {
        match self {
            Self::Process { name, .. } => {
                matches!(name.as_str(), "pasta" | "passt" | "passt.avx2" | "pasta.avx2" | "slirp4netns")
                    || name.starts_with("pelagos-net")
            }
            Self::Hidden { ours, .. } => *ours,
        }
    }
}

/// Held while the caller records its ports: other runs' checks wait.
#[derive(Debug)]
pub struct PortClaim {
    _lock: Option<nix::fcntl::Flock<std::fs::File>>,
}

/// Check that `ports` (host ports resolved) are free, for the calling
/// user's runs under `paths.run_dir` and on the host (see the module docs).
/// Keep the claim until the run's record, with its ports, is written.
pub fn claim(paths: &Paths, ports: &[PortMapping]) -> Result<PortClaim, PortCheckError> {
    if ports.is_empty() {
        return Ok(PortClaim { _lock: None });
    }
    if let Some(e) = duplicate(ports) {
        return Err(e);
    }
    let store = Store::open(&paths.run_dir, nix::unistd::geteuid().as_raw())?;
    let lock = lock_runs(&paths.runs_dir())?;
    check_records(&store, paths, ports)?;
    check_sockets(&paths.proc_root, ports)?;
    Ok(PortClaim { _lock: Some(lock) })
}

/// The runs directory's lock alone, for a setup that checks something
/// else against the records (a name) and publishes no port.
pub fn lock_runs_dir(paths: &Paths) -> Result<PortClaim, PortCheckError> {
    Store::open(&paths.run_dir, nix::unistd::geteuid().as_raw())?;
    Ok(PortClaim { _lock: Some(lock_runs(&paths.runs_dir())?) })
}

fn lock_runs(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, PortCheckError> {
    let err = |source| PortCheckError::Lock { path: dir.to_owned(), source };
    let file = std::fs::File::open(dir).map_err(err)?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| err(e.into()))
}

/// Live records publishing one of `ports`: only the records the port
/// index names for these ports are read (`crate::state::port_index`).
fn check_records(store: &Store, paths: &Paths, ports: &[PortMapping]) -> Result<(), PortCheckError> {
    for id in PortIndex::new(&paths.run_dir).candidates(ports) {
        // Gone, unreadable or dead: not a holder (gc removes the entry).
        let Ok(record) = store.record(&id) else { continue };
        if !record.alive(&paths.proc_root) {
            continue;
        }
        for theirs in &record.ports {
            if let Some(m) = ports.iter().find_map(|ours| shared_port(ours, theirs)) {
                return Err(PortCheckError::AlreadyPublished { port: m, run: record.id, theirs: theirs.clone() });
            }
        }
    }
    Ok(())
}

/// The host's sockets on our ports; a network helper's gets the grace.
fn check_sockets(proc_root: &Path, ports: &[PortMapping]) -> Result<(), PortCheckError> {
    let deadline = Instant::now() + PORT_RELEASE_GRACE;
    let mut known: Option<(u64, Holder)> = None;
    loop {
        let Some((proto, sock)) = first_conflict(ports)? else { return Ok(()) };
        let holder = match known.take() {
            Some((inode, holder)) if inode == sock.inode => holder,
            _ => holder_of(proc_root, &sock),
        };
        if !(holder.may_be_exiting_helper() && Instant::now() < deadline) {
            return Err(PortCheckError::InUse { port: sock.local.port(), proto, local: sock.local, holder });
        }
        known = Some((sock.inode, holder));
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn first_conflict(ports: &[PortMapping]) -> Result<Option<(PortProto, Bound)>, PortCheckError> {
    for (proto, kind) in [(PortProto::Tcp, Kind::TcpListening), (PortProto::Udp, Kind::UdpBound)] {
        if !ports.iter().any(|m| m.proto == proto) {
            continue;
        }
        let ranges: Vec<(u16, u16)> =
            ports.iter().filter(|m| m.proto == proto).filter_map(|m| m.host).map(|r| (r.start(), r.end())).collect();
        let socks = sockdiag::bound_on(kind, &ranges).map_err(PortCheckError::ListSockets)?;
        if let Some(s) = socks.into_iter().find(|s| ports.iter().any(|m| socket_holds(m, proto, s))) {
            return Ok(Some((proto, s)));
        }
    }
    Ok(None)
}

/// The process holding `sock`'s inode, found by reading `/proc/*/fd`
/// (only on a conflict); its owner's uid when no table we may read has it.
fn holder_of(proc_root: &Path, sock: &Bound) -> Holder {
    let euid = nix::unistd::geteuid().as_raw();
    let hidden = Holder::Hidden { uid: sock.uid, ours: euid == 0 || euid == sock.uid };
    let Ok(dir) = std::fs::read_dir(proc_root) else { return hidden };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let holds = crate::host::procnet::socket_inodes_of(proc_root, pid).is_ok_and(|s| s.contains(&sock.inode));
        if holds {
            let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default().trim().to_owned();
            // Still the same process: it may have exited while we looked.
            if ProcessId::of(proc_root, pid).is_ok() {
                return Holder::Process { pid, name };
            }
        }
    }
    hidden
}

/// The first port of `a` that `b` publishes as well (same protocol,
/// overlapping host ports and addresses); `None` when they can coexist.
/// Mappings without a host port (ephemeral) never collide.
pub fn shared_port(a: &PortMapping, b: &PortMapping) -> Option<u16> {
    let (Some(ra), Some(rb)) = (a.host, b.host) else { return None };
    if a.proto != b.proto || !overlap(&covered_by_mapping(a.host_ip), &covered_by_mapping(b.host_ip)) {
        return None;
    }
    let (start, end) = (ra.start().max(rb.start()), ra.end().min(rb.end()));
    (start <= end).then_some(start)
}

/// Two mappings of one run that publish the same host port.
pub fn duplicate(ports: &[PortMapping]) -> Option<PortCheckError> {
    ports.iter().enumerate().find_map(|(i, first)| {
        ports[i + 1..].iter().find_map(|second| {
            shared_port(first, second).map(|port| PortCheckError::Duplicate {
                first: first.clone(),
                second: second.clone(),
                port,
            })
        })
    })
}

/// Whether the bound socket `sock` (of protocol `proto`) holds a host port
/// that `wanted` publishes.
pub fn socket_holds(wanted: &PortMapping, proto: PortProto, sock: &Bound) -> bool {
    let in_range = wanted.host.is_some_and(|r| (r.start()..=r.end()).contains(&sock.local.port()));
    wanted.proto == proto
        && in_range
        && overlap(&covered_by_mapping(wanted.host_ip), &covered_by_socket(sock.local.ip(), sock.v6only))
}

const ANY4: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
const ANY6: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

/// The addresses a mapping's binds cover (an unspecified address stands
/// for its whole family).
fn covered_by_mapping(ip: Option<IpAddr>) -> Vec<IpAddr> {
    match ip {
        None => vec![ANY4, ANY6],
        Some(ip) => vec![ip.to_canonical()],
    }
}

/// The addresses a bound socket covers: an IPv6 wildcard without
/// `IPV6_V6ONLY` holds the IPv4 port as well.
fn covered_by_socket(ip: IpAddr, v6only: bool) -> Vec<IpAddr> {
    match ip.to_canonical() {
        ip if ip == ANY6 && !v6only => vec![ANY4, ANY6],
        ip => vec![ip],
    }
}

fn overlap(a: &[IpAddr], b: &[IpAddr]) -> bool {
    a.iter()
        .any(|x| b.iter().any(|y| x.is_ipv4() == y.is_ipv4() && (x.is_unspecified() || y.is_unspecified() || x == y)))
}

#[cfg(test)]
#[path = "precheck_tests.rs"]
mod tests;

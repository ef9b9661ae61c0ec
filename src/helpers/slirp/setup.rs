//! The library entry points for slirp4netns mode: [`setup_slirp_network`]
//! and [`teardown_slirp_network`].
//!
//! Ready means: slirp4netns wrote `1` on its ready pipe (tap configured,
//! route added, API socket listening), every published port was accepted
//! through the API, and each has its listening socket in slirp4netns's
//! network namespace. Sockets are read from `/proc/<slirp4netns pid>/net`,
//! not from the caller's own namespace, so the check holds wherever
//! slirp4netns runs (a launcher may put it in another namespace than ours).
//!
//! Unlike pasta's readiness ([`crate::helpers::pasta::ready`]) no baseline is needed:
//! the API acknowledges each forward after binding it, and a host port held
//! by someone else is either refused by the kernel (TCP) or found by a look
//! at the UDP tables before slirp4netns is asked.

use super::api::{ApiClient, HostFwd, SlirpApiError, forwards_for};
use super::args::SlirpPlan;
use super::process::{SlirpCommand, SlirpError, SlirpProcess, SlirpReport};
use crate::helpers::pasta::ready::{HostPort, socket_matches};
use crate::host::procfs::ProcessId;
use crate::host::procnet::{self, ProcNetError, SockKind, SocketEntry};
use crate::model::port::{PortMapping, PortProto};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Errors of setting up slirp4netns mode.
#[derive(Debug, thiserror::Error)]
pub enum SlirpSetupError {
    /// A mapping slirp4netns cannot express (checked before anything starts).
    #[error(transparent)]
    Ports(SlirpApiError),
    /// The API socket path holds something else, which slirp4netns would delete.
    #[error("api socket path {} exists and is not a socket (slirp4netns would delete it)", .path.display())]
    ApiSocketPathTaken {
        /// The path.
        path: PathBuf,
    },
    /// slirp4netns failed to start or to become ready.
    #[error(transparent)]
    Slirp(#[from] SlirpError),
    /// Another socket holds the host port.
    #[error("host port {port}/{proto} already in use ({mapping})\n--- slirp4netns output ---\n{output}", port = .forward.host_port, proto = .forward.proto)]
    PortInUse {
        /// The mapping.
        mapping: PortMapping,
        /// Its forward.
        forward: HostFwd,
        /// What slirp4netns printed.
        output: String,
    },
    /// slirp4netns did not publish a port.
    #[error("publish {mapping}\n--- slirp4netns output ---\n{output}")]
    Publish {
        /// The mapping.
        mapping: PortMapping,
        /// Cause.
        #[source]
        source: SlirpApiError,
        /// What slirp4netns printed.
        output: String,
    },
    /// slirp4netns accepted a forward but no socket appeared for it.
    #[error("host port {forward} not listening after slirp4netns accepted it ({mapping})")]
    NotListening {
        /// The mapping.
        mapping: PortMapping,
        /// Its forward.
        forward: HostFwd,
    },
    /// `/proc/<pid>/net` of slirp4netns could not be read.
    #[error("inspect sockets of slirp4netns (pid {pid}) through /proc")]
    Observe {
        /// slirp4netns's pid.
        pid: u32,
        /// Cause.
        #[source]
        source: ProcNetError,
    },
}

/// How to run slirp4netns against an existing namespace.
#[derive(Debug, Clone)]
pub struct SlirpNetworkConfig<'a> {
    /// The slirp4netns binary.
    pub program: &'a Path,
    /// Commands that `exec` slirp4netns (see [`SlirpCommand::launcher`]); usually empty.
    pub launcher: &'a [OsString],
    /// Namespace paths, API socket, MTU, host loopback.
    pub plan: &'a SlirpPlan,
    /// Published ports, host ports resolved, single ports, IPv4 host addresses.
    pub ports: &'a [PortMapping],
    /// procfs root.
    pub proc_root: &'a Path,
    /// How long to wait for readiness.
    pub timeout: Duration,
    /// Descriptors slirp4netns inherits (namespaces given as `/proc/self/fd/N`).
    pub inherit: &'a [std::os::fd::RawFd],
}

/// One port slirp4netns publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedPort {
    /// The mapping asked for.
    pub mapping: PortMapping,
    /// The forward sent to slirp4netns.
    pub forward: HostFwd,
    /// The id slirp4netns gave it (for `remove_hostfwd`).
    pub id: u32,
}

/// A running slirp4netns that made a namespace ready; hand it to
/// [`teardown_slirp_network`] when the namespace is no longer needed.
#[derive(Debug)]
pub struct SlirpSetup {
    process: SlirpProcess,
    /// The arguments slirp4netns was started with (after the program name).
    pub argv: Vec<OsString>,
    /// Published ports, in the order asked for.
    pub published: Vec<PublishedPort>,
    /// Time from spawn to the ready signal.
    pub configured_after: Duration,
    /// Time from spawn to ready (configured, every port published and listening).
    pub ready_after: Duration,
}

impl SlirpSetup {
    /// slirp4netns's pid and start time, for records.
    pub fn slirp_id(&self) -> ProcessId {
        self.process.id()
    }

    /// Exit status, if slirp4netns died while the namespace was in use.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.process.try_exit()
    }

    /// What slirp4netns printed so far.
    pub fn output(&self) -> String {
        self.process.output()
    }

    /// Let slirp4netns run on when this handle goes (it outlives this process).
    pub fn release(self) {
        self.process.release();
    }

    /// A client of its API socket, to change forwards while it runs.
    pub fn api(&self) -> ApiClient {
        ApiClient::new(self.process.api_socket())
    }
}

/// Spawn slirp4netns against an already-created namespace and return once
/// the namespace is ready and every port is published. Mappings slirp4netns
/// cannot express are refused before anything starts; on any later error
/// slirp4netns is stopped and its output is part of the error.
pub fn setup_slirp_network(
    cfg: &SlirpNetworkConfig<'_>,
    cancel: &mut dyn FnMut() -> bool,
) -> Result<SlirpSetup, SlirpSetupError> {
    spawn_slirp(cfg, None)?.wait_ready(cfg, cancel)
}

/// A slirp4netns spawned and not yet known to be ready.
#[derive(Debug)]
pub struct SlirpStart {
    process: SlirpProcess,
    argv: Vec<OsString>,
    forwards: Vec<HostFwd>,
    start: Instant,
}

/// Check the ports and the socket path and spawn slirp4netns (the first
/// half of [`setup_slirp_network`]); with `detach`, a slirp4netns that
/// outlives this process (see `helpers::detached`).
pub fn spawn_slirp(
    cfg: &SlirpNetworkConfig<'_>,
    detach: Option<crate::helpers::detached::Detach<'_>>,
) -> Result<SlirpStart, SlirpSetupError> {
    let forwards = forwards_for(cfg.ports, cfg.plan.host_loopback).map_err(SlirpSetupError::Ports)?;
    let socket = &cfg.plan.api_socket;
    if std::fs::symlink_metadata(socket).is_ok_and(|m| !m.file_type().is_socket()) {
        return Err(SlirpSetupError::ApiSocketPathTaken { path: socket.clone() });
    }
    let start = Instant::now();
    let command = SlirpCommand {
        program: cfg.program,
        launcher: cfg.launcher,
        plan: cfg.plan,
        proc_root: cfg.proc_root,
        inherit: cfg.inherit,
    };
    let (process, argv) = match detach {
        None => SlirpProcess::spawn(&command)?,
        Some(d) => SlirpProcess::spawn_detached(&command, d)?,
    };
    crate::fault::point("slirp4netns.spawned");
    Ok(SlirpStart { process, argv, forwards, start })
}

impl SlirpStart {
    /// slirp4netns's pid and start time, for the record.
    pub fn slirp_id(&self) -> ProcessId {
        self.process.id()
    }

    /// Let slirp4netns run on when this handle goes.
    pub fn release(self) {
        self.process.release();
    }

    /// Stop it before it was ready.
    pub fn stop(self, grace: Duration) -> SlirpReport {
        self.process.stop(grace)
    }

    /// Wait for the ready signal and publish the ports (see
    /// [`setup_slirp_network`]); on failure slirp4netns is stopped.
    pub fn wait_ready(
        mut self,
        cfg: &SlirpNetworkConfig<'_>,
        cancel: &mut dyn FnMut() -> bool,
    ) -> Result<SlirpSetup, SlirpSetupError> {
        let (process, start) = (&mut self.process, self.start);
        let result = process.wait_ready(cfg.timeout, cancel).map_err(SlirpSetupError::from).and_then(|_| {
            let configured_after = start.elapsed();
            publish(process, cfg, &self.forwards, start, cancel).map(|published| (configured_after, published))
        });
        match result {
            Ok((configured_after, published)) => {
                crate::fault::point("slirp4netns.ready");
                let ready_after = start.elapsed();
                Ok(SlirpSetup { process: self.process, argv: self.argv, published, configured_after, ready_after })
            }
            Err(e) => {
                let _ = self.process.stop(Duration::from_millis(200));
                Err(e)
            }
        }
    }
}

/// Stop slirp4netns (exit pipe closed, then SIGTERM, then SIGKILL), remove
/// its API socket if it left one, and return what it printed.
pub fn teardown_slirp_network(setup: SlirpSetup) -> SlirpReport {
    setup.process.stop(Duration::from_secs(2))
}

/// Add every forward through the API, then confirm each has its socket.
fn publish(
    process: &SlirpProcess,
    cfg: &SlirpNetworkConfig<'_>,
    forwards: &[HostFwd],
    start: Instant,
    cancel: &mut dyn FnMut() -> bool,
) -> Result<Vec<PublishedPort>, SlirpSetupError> {
    let pid = process.id().pid;
    let read = |protos: &[PortProto], ipv6: bool| sockets(cfg.proc_root, pid, protos, ipv6);
    let in_use = |socks: &[SocketEntry], mapping: &PortMapping, f: &HostFwd| {
        socks.iter().any(|s| socket_matches(s, &HostPort { proto: f.proto, ip: mapping.host_ip, port: f.host_port }))
    };
    let pairs = || cfg.ports.iter().zip(forwards);
    let port_in_use = |mapping: &PortMapping, forward: &HostFwd| SlirpSetupError::PortInUse {
        mapping: mapping.clone(),
        forward: *forward,
        output: process.output(),
    };
    // UDP sockets share a port under SO_REUSEADDR (which libslirp sets), so
    // slirp4netns would not notice a holder: refuse before asking. TCP
    // listeners never share, so slirp4netns refuses those itself.
    if forwards.iter().any(|f| f.proto == PortProto::Udp) {
        let socks = read(&[PortProto::Udp], true)?;
        if let Some((m, f)) = pairs().find(|(m, f)| f.proto == PortProto::Udp && in_use(&socks, m, f)) {
            return Err(port_in_use(m, f));
        }
    }
    let api = ApiClient::new(process.api_socket());
    let mut published = Vec::with_capacity(forwards.len());
    for (mapping, forward) in pairs() {
        if cancel() {
            return Err(SlirpError::Cancelled.into());
        }
        match api.add_hostfwd(forward) {
            Ok(id) => published.push(PublishedPort { mapping: mapping.clone(), forward: *forward, id }),
            Err(_) if in_use(&read(&[forward.proto], true)?, mapping, forward) => {
                return Err(port_in_use(mapping, forward));
            }
            Err(source) => {
                return Err(SlirpSetupError::Publish { mapping: mapping.clone(), source, output: process.output() });
            }
        }
    }
    // The API answers after bind(2) and listen(2), so one look normally
    // suffices. slirp4netns binds IPv4 only: the IPv6 tables are skipped
    // (reading /proc/net/tcp walks the whole hash table, ~3 ms each).
    let protos: Vec<PortProto> =
        [PortProto::Tcp, PortProto::Udp].into_iter().filter(|p| forwards.iter().any(|f| f.proto == *p)).collect();
    let deadline = (start + cfg.timeout).max(Instant::now() + Duration::from_millis(200));
    loop {
        let socks = read(&protos, false)?;
        let missing = published.iter().find(|p| {
            let (f, bound) = (p.forward, SocketAddr::from((p.forward.host_addr, p.forward.host_port)));
            !socks.iter().any(|s| s.local == bound && s.kind.is_tcp() == (f.proto == PortProto::Tcp) && s.is_listener())
        });
        match missing {
            None => return Ok(published),
            Some(p) if Instant::now() >= deadline => {
                return Err(SlirpSetupError::NotListening { mapping: p.mapping.clone(), forward: p.forward });
            }
            Some(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// Sockets of slirp4netns's network namespace for `protos` (IPv4 tables, and IPv6 ones with `ipv6`).
fn sockets(proc_root: &Path, pid: u32, protos: &[PortProto], ipv6: bool) -> Result<Vec<SocketEntry>, SlirpSetupError> {
    let mut out = Vec::new();
    for proto in protos {
        let kinds = match proto {
            PortProto::Tcp => [SockKind::Tcp, SockKind::Tcp6],
            PortProto::Udp => [SockKind::Udp, SockKind::Udp6],
        };
        for kind in kinds.into_iter().filter(|k| ipv6 || !k.is_ipv6()) {
            let socks = procnet::read_sockets(proc_root, Some(pid), kind)
                .map_err(|source| SlirpSetupError::Observe { pid, source })?;
            out.extend(socks);
        }
    }
    Ok(out)
}

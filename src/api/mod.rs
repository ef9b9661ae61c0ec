//! The library API for container runtimes: [`Network`].
//!
//! A runtime that makes its own namespaces asks pelagos-net to network
//! them, in two halves around its fork:
//!
//! 1. [`Network::prepare`] plans the setup (mode, port driver, refusals,
//!    exactly as `pelagos-net run` and `plan` do) and does what comes
//!    before the container's process exists: free host ports picked, the
//!    builtin driver's listeners bound (a taken port fails here, cheaply),
//!    the record written, and, for a bridge network, the named namespace
//!    created and configured ([`Prepared::netns_path`], for the child to
//!    `setns` into).
//! 2. [`Prepared::attach`] networks the namespace the child made or joined
//!    ([`Target`]: its pid, namespace files or descriptors) and returns once
//!    it is ready: default route in place, every published port held.
//! 3. [`Attachment::detach`] undoes everything, newest first, and reports
//!    what failed and what the helper printed.
//!
//! Everything the caller would otherwise need private knowledge for
//! happens inside: as root, pasta gets a named netns and `--runas 0`; the
//! port driver is chosen per pasta build; `/proc/<pid>/ns/*` and user
//! namespaces are found and held open. Records are written exactly as the
//! CLI writes them, so `pelagos-net gc` cleans up after a runtime that
//! crashed, and `pelagos-net detach ID` undoes a detached attachment.
//!
//! ```no_run
//! use pelagos_net::{Network, NetworkMode, NetworkOptions, Target};
//!
//! # fn fork_container_child() -> u32 { 0 }
//! # fn release_child() {}
//! let net = Network::new();
//! let opts = NetworkOptions::new(NetworkMode::Pasta).publish("127.0.0.1:8080:80".parse()?);
//! let prepared = net.prepare(&opts)?;
//! let pid = fork_container_child(); // unshare(CLONE_NEWUSER | CLONE_NEWNET), lo up, wait
//! let attachment = prepared.attach(Target::Pid(pid))?;
//! println!("ready: {} publishes {:?}", attachment.id(), attachment.ports());
//! release_child();
//! // ... the container runs ...
//! let report = attachment.detach();
//! assert!(report.errors.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bridge;
mod error;
mod options;
mod plan;

pub use crate::flow::plan::Lifetime;
pub use bridge::{
    AttachRequest, NetworkSetup, SecondaryAttachment, TeardownErrors, attach_network_to_netns, setup_bridge_network,
    teardown_network, teardown_secondary_network,
};
pub use error::{Error, ErrorKind};
pub use options::{NetworkOptions, Target};
pub use plan::SetupPlan;

use crate::flow::DetachReport;
use crate::flow::attach::Session;
use crate::flow::gc::GcReport;
use crate::flow::plan::{Given, Request, SystemLookups, TargetKind, probe_scope};
use crate::host::probe::{HostCaps, ProbeRoots};
use crate::model::mode::NetworkMode;
use crate::model::port::PortMapping;
use crate::ns::target::OpenTarget;
use crate::state::paths::{PathEnv, Paths};
use crate::state::record::ProcessRole;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// pelagos-net for one caller: where its records, leases and named
/// namespaces live, and which helper binaries it uses.
#[derive(Debug, Clone)]
pub struct Network {
    paths: Paths,
    pasta: Option<PathBuf>,
}

impl Default for Network {
    fn default() -> Self {
        Self::new()
    }
}

impl Network {
    /// The caller's default state roots (`/run/pelagos-net` as root,
    /// `$XDG_RUNTIME_DIR/pelagos-net` otherwise; see [`Paths::from_env`]).
    pub fn new() -> Self {
        Self::with_paths(Paths::from_env(&PathEnv::current()))
    }

    /// Explicit state roots.
    pub fn with_paths(paths: Paths) -> Self {
        Self { paths, pasta: None }
    }

    /// Use this pasta binary instead of the one on `PATH`.
    pub fn pasta(mut self, program: impl Into<PathBuf>) -> Self {
        self.pasta = Some(program.into());
        self
    }

    /// The state roots.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    fn host(&self, req: &Request) -> HostCaps {
        let mut roots = ProbeRoots::current(&self.paths);
        roots.pasta = self.pasta.clone();
        HostCaps::probe_scoped(&roots, probe_scope(req, nix::unistd::geteuid().as_raw()))
    }

    /// What [`Network::prepare`] networks: a named netns it creates for a
    /// bridge network, the caller's namespace otherwise.
    fn prepared_target(opts: &NetworkOptions) -> TargetKind {
        match opts.mode {
            NetworkMode::Bridge(_) => TargetKind::Created,
            _ => TargetKind::Given(Given {
                netns: "<namespace>".into(),
                userns: (!nix::unistd::geteuid().is_root()).then(|| "<user namespace>".into()),
                named: false,
            }),
        }
    }

    fn request(opts: &NetworkOptions, target: TargetKind) -> Request {
        Request {
            network: opts.config(),
            fallback: opts.fallback,
            ip: opts.ip,
            target,
            lifetime: opts.lifetime,
            command: false,
        }
    }

    /// Plan the setup and do what comes before the container's process
    /// exists (see the module docs). A refusal creates nothing.
    pub fn prepare(&self, opts: &NetworkOptions) -> Result<Prepared, Error> {
        let req = Self::request(opts, Self::prepared_target(opts));
        let host = self.host(&req);
        let networks = SystemLookups { config_dir: &self.paths.config_dir };
        let session = Session::prepare(&self.paths, req, host, &networks, opts.ready_timeout)?;
        Ok(Prepared { session: Some(session), config_dir: self.paths.config_dir.clone() })
    }

    /// Network `target` in one call: the namespace is checked (and
    /// against other attachments to it) before anything is created.
    pub fn attach(&self, opts: &NetworkOptions, target: Target<'_>) -> Result<Attachment, Error> {
        let opened = match target {
            Target::Prepared => return self.prepare(opts)?.attach(target),
            other => open_target(&other, &self.paths.proc_root)?,
        };
        if opts.lifetime == Lifetime::Detached && !opened.anchored() {
            return Err(unanchored());
        }
        let req = Self::request(opts, TargetKind::Given(Given::from(&opened)));
        let host = self.host(&req);
        let networks = SystemLookups { config_dir: &self.paths.config_dir };
        let session = crate::flow::attach::attach(&self.paths, req, host, opened, &networks, opts.ready_timeout)?;
        Ok(Attachment { session: Some(session) })
    }

    /// What [`Network::prepare`] would do, touching nothing.
    pub fn plan(&self, opts: &NetworkOptions) -> Result<SetupPlan, Error> {
        let req = Self::request(opts, Self::prepared_target(opts));
        let host = self.host(&req);
        let networks = SystemLookups { config_dir: &self.paths.config_dir };
        Ok(SetupPlan(crate::flow::plan::plan(&req, &host, &networks)?))
    }

    /// Undo the attachment `id` (one left running by [`Attachment::leave`],
    /// by `pelagos-net attach`, or by a process that died), from its record.
    pub fn detach(&self, id: &str) -> Result<DetachReport, Error> {
        Ok(crate::flow::attach::detach(&self.paths, id)?)
    }

    /// Undo what dead runs and attachments left behind.
    pub fn gc(&self) -> Result<GcReport, Error> {
        crate::flow::gc::gc(&self.paths, false).map_err(|e| Error::from(crate::flow::RunError::from(e)))
    }
}

/// A setup whose host side is done; [`Prepared::attach`] finishes it.
/// Dropping it undoes what it created.
pub struct Prepared {
    session: Option<Session>,
    config_dir: PathBuf,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").field("id", &self.id()).finish()
    }
}

impl Prepared {
    fn session(&self) -> &Session {
        self.session.as_ref().expect("a prepared setup holds its session until attached")
    }

    /// The record's id.
    pub fn id(&self) -> &str {
        self.session().exec.id()
    }

    /// Published ports, host ports picked.
    pub fn ports(&self) -> &[PortMapping] {
        &self.session().exec.ports
    }

    /// The named namespace this setup made (a bridge network's), for the
    /// container's process to `setns` into; `None` when the caller makes
    /// the namespace.
    pub fn netns_path(&self) -> Option<&Path> {
        self.session().exec.named.as_ref().map(|n| n.path.as_path())
    }

    /// Network `target` and return once it is ready. On failure everything
    /// is undone.
    pub fn attach(mut self, target: Target<'_>) -> Result<Attachment, Error> {
        let mut session = self.session.take().expect("attach takes the session once");
        let opened = match open(&target, &session) {
            Ok(t) => t,
            Err(e) => {
                session.exec.teardown();
                return Err(e);
            }
        };
        let networks = SystemLookups { config_dir: &self.config_dir };
        let session = session.attach(opened, &networks, &mut || false)?;
        Ok(Attachment { session: Some(session) })
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if let Some(mut s) = self.session.take() {
            s.exec.teardown();
        }
    }
}

/// A namespace handed over as a descriptor names no process or mount to
/// live by, so it cannot outlive its caller.
fn unanchored() -> Error {
    Error::from(crate::flow::RunError::Holder(
        "a detached attachment needs a namespace named by a process or a bind mount, not a descriptor".into(),
    ))
}

/// `target` as an open, checked namespace.
fn open_target(target: &Target<'_>, proc_root: &Path) -> Result<OpenTarget, Error> {
    let euid = nix::unistd::geteuid().as_raw();
    Ok(match *target {
        Target::Pid(pid) => {
            let ns = proc_root.join(pid.to_string()).join("ns");
            let userns = (euid != 0).then(|| ns.join("user"));
            OpenTarget::open(&ns.join("net"), userns.as_deref(), proc_root, euid)?
        }
        Target::Paths { netns, userns } => OpenTarget::open(netns, userns, proc_root, euid)?,
        Target::Fds { netns, userns } => OpenTarget::from_fds(netns, userns, euid)?,
        Target::Prepared => return Err(Error::from(crate::flow::RunError::NoNetwork)),
    })
}

/// The target as an open, checked namespace (`None`: the one prepared).
fn open(target: &Target<'_>, session: &Session) -> Result<Option<OpenTarget>, Error> {
    let exec = &session.exec;
    if let Target::Prepared = target {
        return Ok(None);
    }
    let opened = open_target(target, &exec.paths.proc_root)?;
    if let Some(named) = &exec.named {
        // A bridge network's namespace was made by prepare: the target must be it.
        let same = crate::state::record::NsId::of(&named.path).is_ok_and(|id| id == opened.ns);
        return if same { Ok(None) } else { Err(Error::from(crate::flow::RunError::NoNetwork)) };
    }
    if session.lifetime() == Lifetime::Detached && !opened.anchored() {
        return Err(unanchored());
    }
    Ok(Some(opened))
}

/// A networked namespace. Dropping it undoes it, unless its lifetime is
/// [`Lifetime::Detached`] (then it runs on; see [`Attachment::leave`]).
pub struct Attachment {
    session: Option<Session>,
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment").field("id", &self.id()).field("mode", self.mode()).finish()
    }
}

impl Attachment {
    fn session(&self) -> &Session {
        self.session.as_ref().expect("an attachment holds its session until detached")
    }

    /// The record's id (`pelagos-net detach ID`).
    pub fn id(&self) -> &str {
        self.session().exec.id()
    }

    /// The mode it runs.
    pub fn mode(&self) -> &NetworkMode {
        &self.session().plan().mode
    }

    /// The plan it executed.
    pub fn plan(&self) -> SetupPlan {
        SetupPlan(self.session().plan().clone())
    }

    /// Published ports, host ports picked.
    pub fn ports(&self) -> &[PortMapping] {
        &self.session().exec.ports
    }

    /// The processes it started: the helper, the relay, the socket
    /// factory, by role and pid.
    pub fn processes(&self) -> Vec<(&'static str, u32)> {
        let record = &self.session().exec.record;
        let mut out: Vec<(&'static str, u32)> = [ProcessRole::Pasta, ProcessRole::Slirp4netns, ProcessRole::Relay]
            .into_iter()
            .flat_map(|role| record.processes(role).map(move |p| (role.name(), p.pid)))
            .collect();
        out.extend(record.factory().map(|f| ("socket factory", f.pid)));
        out
    }

    /// The namespace's addresses (loopback aside): a bridge network's
    /// lease, slirp4netns's fixed address, or what pasta configured.
    pub fn addresses(&self) -> Vec<std::net::IpAddr> {
        let exec = &self.session().exec;
        if let Some(lease) = exec.lease {
            return vec![lease.into()];
        }
        if *self.mode() == NetworkMode::Slirp4netns {
            return vec![crate::helpers::slirp::args::GUEST_ADDR.into()];
        }
        if let Some(p) = exec.given.as_ref().and_then(|g| g.process) {
            let found = crate::host::nsaddr::namespace_addresses(&exec.paths.proc_root, p.pid);
            return found.map(|a| a.into_iter().map(|a| a.address).collect()).unwrap_or_default();
        }
        let fd = exec.given.as_ref().map(|g| g.netns_fd()).or_else(|| exec.named.as_ref().map(|n| n.fd()));
        let routed = fd.and_then(|fd| crate::bridge::netlink::Netlink::open_in(fd).ok()?.routed_addresses().ok());
        routed.map(|r| r.v4.map(Into::into).into_iter().chain(r.v6.map(Into::into)).collect()).unwrap_or_default()
    }

    /// How long the helper took from spawn to ready.
    pub fn ready_after(&self) -> Option<Duration> {
        self.session().exec.ready_after
    }

    /// Undo it, newest first; every step is attempted.
    pub fn detach(mut self) -> DetachReport {
        let mut session = self.session.take().expect("detach takes the session once");
        let id = session.exec.id().to_owned();
        let (helper_output, errors) = session.exec.teardown();
        DetachReport { id, helper_output, errors: errors.iter().map(|e| crate::flow::error_chain(e)).collect() }
    }

    /// Leave it running (a detached lifetime: it lives as long as its
    /// namespace) and return its id, for [`Network::detach`] or
    /// `pelagos-net detach` later.
    pub fn leave(mut self) -> String {
        let mut session = self.session.take().expect("leave takes the session once");
        session.exec.release();
        session.exec.id().to_owned()
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        if let Some(mut s) = self.session.take() {
            match s.exec.record.anchor {
                crate::state::record::Anchor::Owner => {
                    s.exec.teardown();
                }
                _ => s.exec.release(),
            }
        }
    }
}

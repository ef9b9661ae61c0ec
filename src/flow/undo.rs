//! The one undo function: every teardown (a run ending, a setup failing,
//! `detach`, `gc` after a crash, a runtime's detach) walks a record's
//! resources newest first through `undo`.
//!
//! Each undo tolerates "already gone", so undoing a resource that was
//! recorded but never created, or twice, does nothing the second time.
//! When the process undoing is the one that created a resource, `Live`
//! holds its handle and undo uses it (a helper stopped gently hands back its
//! output; the relay thread is joined); otherwise the record's data is
//! enough (a process is stopped by pid and start time).

use super::exec::LiveHelper;
use crate::bridge::firewall::Firewall;
use crate::bridge::lease::LeaseStore;
use crate::bridge::netlink::Netlink;
use crate::host::procfs::ProcessId;
use crate::ns::child::NsChild;
use crate::ports::builtin::{BuiltinPorts, stop_builtin_ports};
use crate::state::paths::Paths;
use crate::state::record::{ProcessRole, Resource};
use std::path::PathBuf;
use std::time::Duration;

/// Why undoing one resource failed.
#[derive(Debug, thiserror::Error)]
pub enum UndoError {
    /// A process could not be stopped.
    #[error("stop {role} (pid {pid})")]
    Stop {
        /// What it is.
        role: &'static str,
        /// Its pid.
        pid: u32,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Stopping the helper left something behind (its socket).
    #[error(transparent)]
    Slirp(#[from] crate::helpers::slirp::process::SlirpError),
    /// The named netns could not be removed.
    #[error(transparent)]
    Netns(#[from] crate::ns::netns::NetnsError),
    /// The lease could not be released.
    #[error(transparent)]
    Lease(#[from] crate::bridge::lease::LeaseError),
    /// The forwards could not be removed.
    #[error(transparent)]
    Firewall(#[from] crate::bridge::firewall::FirewallError),
    /// The veth pair could not be removed.
    #[error("remove veth {name}")]
    Veth {
        /// Host end.
        name: String,
        /// Cause.
        #[source]
        source: crate::bridge::netlink::NetlinkError,
    },
    /// The network holder could not be released.
    #[error(transparent)]
    Holder(#[from] Box<crate::holder::HolderError>),
    /// A delegated IPAM plugin's `DEL` failed.
    #[error("release the address of IPAM plugin {plugin}: {msg}")]
    Ipam {
        /// The plugin.
        plugin: PathBuf,
        /// Its error.
        msg: String,
    },
    /// A file could not be removed.
    #[error("remove {path}")]
    File {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Handles of what the undoing process itself runs.
#[derive(Debug, Default)]
pub(crate) struct Live {
    /// The command's child.
    pub child: Option<NsChild>,
    /// The network helper.
    pub helper: Option<LiveHelper>,
    /// The relay.
    pub relay: Option<BuiltinPorts>,
    /// The DNS forwarder.
    pub dns: Option<crate::dns::forwarder::Forwarder>,
    /// The accelerator's supervisor.
    pub accel: Option<crate::accel::supervisor::Supervisor>,
    /// The relay of the host's loopback ports into a holder network's run.
    pub host_loopback: Option<crate::ports::relay::Forwarder>,
}

/// What undo needs besides the resource.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Env<'a> {
    /// State roots (`/proc`, the run directory).
    pub paths: &'a Paths,
    /// Leave the deletion of veth pairs to the child the process forks as
    /// it exits (the CNI plugin: see `closer::defer_link_delete`).
    pub defer_links: bool,
}

impl<'a> Env<'a> {
    /// Undo in the caller's own time.
    pub fn new(paths: &'a Paths) -> Self {
        Self { paths, defer_links: false }
    }
}

/// How long a helper stopped by pid gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_millis(500);

/// Undo one resource. Returns a helper's output when it stopped one of
/// its own (or read a detached helper's log).
pub(crate) fn undo(resource: &Resource, env: &Env<'_>, live: &mut Live) -> Result<Option<String>, UndoError> {
    crate::fault::point(undo_point(resource));
    match resource {
        Resource::Process { role, process } => stop(*role, *process, env, live),
        Resource::NetnsName { path } => Ok(crate::ns::netns::remove_named(path).map(|_| None)?),
        Resource::Lease { network, address, holder } => {
            Ok(LeaseStore::new(&env.paths.run_dir).release(network, *address, holder).map(|_| None)?)
        }
        Resource::Veth { name } if env.defer_links => defer_veth(name).map(|_| None),
        Resource::Veth { name } => remove_veth(name).map(|_| None),
        Resource::HolderVeth { name } => {
            crate::holder::network::remove_veth(env.paths, name).map_err(Box::new)?;
            Ok(None)
        }
        Resource::Ipam { plugin, env: vars, config, .. } => {
            crate::cni::ipam::exec_bin(plugin, "DEL", vars, config.as_bytes())
                .map_err(|e| UndoError::Ipam { plugin: plugin.clone(), msg: format!("{} ({})", e.msg, e.details) })?;
            Ok(None)
        }
        Resource::Forwards { network, forwards } => {
            // Its socket is closed off this path (see the firewall's closer).
            Firewall::new()?.remove_forwards(network, forwards)?;
            Ok(None)
        }
        Resource::File { path } => remove_file(path).map(|_| None),
        Resource::Log { path, .. } => {
            let text = crate::helpers::detached::read_log(path);
            remove_file(path)?;
            Ok(text)
        }
        Resource::Dns => {
            if let Some(forwarder) = live.dns.take() {
                log::debug!("dns forwarder stopped: {:?}", forwarder.stop());
            }
            Ok(None)
        }
        Resource::Holder { id } => {
            crate::holder::usage::release(env.paths, id).map_err(Box::new)?;
            Ok(None)
        }
        Resource::Accel => {
            // First (it is recorded after the relay): it may be asking the
            // relay for a listener.
            if let Some(supervisor) = live.accel.take() {
                log::info!("accelerator: {}", supervisor.stop());
            }
            Ok(None)
        }
        Resource::Relay { factory, .. } => {
            match live.relay.take() {
                // Listeners close first: no new connection is accepted into
                // a namespace that is going away; the factory stops with it.
                Some(ports) => log::debug!("builtin port driver stopped: {:?}", stop_builtin_ports(ports)),
                None => {
                    if let Some(f) = factory {
                        kill_process(ProcessRole::Relay.name(), *f, env, Duration::ZERO)?;
                    }
                }
            }
            Ok(None)
        }
    }
}

/// The fault point before undoing `resource`.
fn undo_point(resource: &Resource) -> &'static str {
    match resource {
        Resource::Process { role: ProcessRole::Command, .. } => "undo.command",
        Resource::Process { .. } => "undo.process",
        Resource::NetnsName { .. } => "undo.netns",
        Resource::Lease { .. } | Resource::Ipam { .. } => "undo.lease",
        Resource::Veth { .. } | Resource::HolderVeth { .. } => "undo.veth",
        Resource::Forwards { .. } => "undo.forwards",
        Resource::File { .. } | Resource::Log { .. } => "undo.file",
        Resource::Relay { .. } => "undo.relay",
        Resource::Dns => "undo.dns",
        Resource::Holder { .. } => "undo.holder",
        Resource::Accel => "undo.accel",
    }
}

/// Stop a process: ours (the live child or helper), or by pid and start
/// time (SIGTERM, then SIGKILL after a grace, for helpers; SIGKILL for the
/// command, which only a crashed owner leaves behind).
fn stop(role: ProcessRole, process: ProcessId, env: &Env<'_>, live: &mut Live) -> Result<Option<String>, UndoError> {
    if role == ProcessRole::Command
        && let Some(mut child) = live.child.take()
    {
        if child.pid() == process.pid {
            child.kill_and_reap();
            return Ok(None);
        }
        live.child = Some(child);
    }
    if let Some(helper) = live.helper.take() {
        if helper.id() == process {
            let (output, mut errors) = helper.stop();
            crate::fault::point("teardown.helper-stopped");
            return match errors.pop() {
                Some(e) => Err(e.into()),
                None => Ok(Some(output)),
            };
        }
        live.helper = Some(helper);
    }
    let grace = if role == ProcessRole::Command { Duration::ZERO } else { STOP_GRACE };
    kill_process(role.name(), process, env, grace).map(|_| None)
}

fn kill_process(role: &'static str, process: ProcessId, env: &Env<'_>, grace: Duration) -> Result<(), UndoError> {
    crate::helpers::detached::stop_process(process, &env.paths.proc_root, grace).map_err(|source| UndoError::Stop {
        role,
        pid: process.pid,
        source,
    })
}

pub(crate) fn remove_veth(name: &str) -> Result<(), UndoError> {
    let err = |source| UndoError::Veth { name: name.to_owned(), source };
    Netlink::open().and_then(|mut host| host.delete_link_named(name)).map_err(err)
}

/// Cut veth `name` off its bridge now and queue its deletion for the
/// exiting process's child. The index is looked up with `if_nametoindex`
/// (an ioctl that does not take the rtnl lock, which an earlier deletion
/// may still hold), and the deletion goes by index, so it can never hit a
/// new link of the same name. Disabling the bridge port is what makes the
/// released address safe to lease again at once: until the kernel has
/// deleted the pair, its container end (which still holds the address)
/// can neither answer ARP nor send on the bridge. A port that cannot be
/// disabled is deleted here and now.
fn defer_veth(name: &str) -> Result<(), UndoError> {
    let Ok(cname) = std::ffi::CString::new(name) else { return Ok(()) };
    // SAFETY: a NUL-terminated name; the call only reads it.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        return Ok(());
    }
    let cut = Netlink::open().and_then(|mut nl| nl.disable_port(index));
    match cut {
        Ok(()) => {
            crate::bridge::firewall::closer::defer_link_delete(index);
            Ok(())
        }
        Err(e) if e.errno() == Some(nix::errno::Errno::ENODEV) => Ok(()),
        Err(e) => {
            log::debug!("cannot disable bridge port {name} ({e}); deleting it now");
            remove_veth(name)
        }
    }
}

fn remove_file(path: &std::path::Path) -> Result<(), UndoError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(UndoError::File { path: path.to_owned(), source: e }),
        _ => Ok(()),
    }
}

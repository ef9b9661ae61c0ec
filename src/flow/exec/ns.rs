//! Namespace steps: the named netns a setup creates or names, and the
//! child that will run the command.

use super::Exec;
use crate::flow::RunError;
use crate::flow::steps::{ChildNs, NsRef};
use crate::host::diagnose::UsernsKnobs;
use crate::model::ifname::generate_ns_name;
use crate::ns::child::{ChildSpec, ChildStage, NsChild, NsKind, UsernsError};
use crate::ns::netns::{self, NetNs};
use crate::state::record::{ProcessRole, Resource};
use std::os::fd::AsRawFd;
use std::path::Path;

/// `create_netns`: a new named netns `pelagos-<id>`, recorded before it exists.
pub(super) fn create_named(exec: &mut Exec) -> Result<(), RunError> {
    let name = generate_ns_name(exec.id());
    exec.add(Resource::NetnsName { path: exec.paths.netns_dir.join(&name) })?;
    // The veth's container end is configured in there next: over a socket
    // the namespace's maker opened inside (no thread to join it).
    if exec.plan.steps.iter().any(|s| matches!(s, crate::flow::steps::Step::CreateVeth { .. })) {
        let (ns, rtnl) = netns::create_named_with_rtnl(&exec.paths.netns_dir, &name)?;
        exec.named = Some(ns);
        if exec.bridge.wants.inside.is_none() {
            exec.bridge.wants.inside = crate::bridge::netlink::Netlink::from_fd(rtnl).ok();
        }
    } else {
        exec.named = Some(netns::create_named(&exec.paths.netns_dir, &name)?);
    }
    Ok(())
}

/// `name_netns`: bind the namespace `of` to `pelagos-<id>`, recorded before
/// the mount exists.
pub(super) fn name(exec: &mut Exec, of: NsRef) -> Result<(), RunError> {
    let name = generate_ns_name(exec.id());
    exec.add(Resource::NetnsName { path: exec.paths.netns_dir.join(&name) })?;
    crate::fault::point("run.netns-recorded");
    let source = exec.target(of).netns;
    let path = netns::bind_named(&exec.paths.netns_dir, &name, &source)?;
    exec.named = Some(NetNs::open(&path)?);
    Ok(())
}

/// `fork_child`: the child that will run the command is born in its
/// namespaces (PID and mount ones included: it becomes the init of the
/// run's processes), brings `lo` up and waits; recorded once it reports.
pub(super) fn fork_child(exec: &mut Exec, ns: ChildNs) -> Result<(), RunError> {
    let Some(cmd) = exec.command.take() else { return Err(RunError::NoCommand) };
    // Open until the child is spawned: its helper joins this user namespace.
    let holder_userns = match ns {
        ChildNs::InHolder => Some(super::shared::holder_userns(exec)?),
        _ => None,
    };
    let kind = match ns {
        ChildNs::InHolder => NsKind::InUserNs { userns: holder_userns.as_ref().map_or(-1, |f| f.as_raw_fd()) },
        ChildNs::NewUserAndNet => {
            NsKind::UserAndNet { uid: nix::unistd::geteuid().as_raw(), gid: nix::unistd::getegid().as_raw() }
        }
        ChildNs::NewNet => NsKind::NetOnly,
        ChildNs::Join { ns: NsRef::Named } => {
            let netns = exec.named.as_ref().map_or(-1, |n| n.fd().as_raw_fd());
            NsKind::Join { userns: None, netns }
        }
        ChildNs::Join { .. } => match &exec.given {
            Some(g) => NsKind::Join { userns: g.userns_fd().map(|f| f.as_raw_fd()), netns: g.netns_fd().as_raw_fd() },
            None => return Err(RunError::NoCommand),
        },
    };
    let spec = ChildSpec {
        ns: kind,
        program: cmd.program,
        argv: cmd.argv,
        proc_root: exec.paths.proc_root.clone(),
        sigmask: cmd.sigmask,
        dns: exec.dns.as_mut().and_then(|d| d.inside.take()),
        // Only the command's process keeps its end of the pair (ours goes
        // with `spec`): an early death reads as end-of-file.
        accel: exec.accel_hook.take(),
        release: cmd.release,
    };
    let proc_root = exec.paths.proc_root.clone();
    let mut child = NsChild::spawn(&spec).map_err(|e| namespace_error(e, &proc_root))?;
    crate::fault::point("run.child-spawned");
    let id = super::process_id(&exec.plan, &proc_root, child.pid());
    if let Err(e) = child.wait_ready() {
        child.kill_and_reap();
        return Err(namespace_error(e, &proc_root));
    }
    crate::fault::point("run.child-ready");
    exec.child = Some(child);
    exec.add(Resource::Process { role: ProcessRole::Command, process: id })
}

/// A namespace failure with the hint that fits it.
fn namespace_error(e: UsernsError, proc_root: &Path) -> RunError {
    match e {
        UsernsError::ChildFailed { stage, errno } if stage != ChildStage::Exec => {
            let hint = match stage {
                ChildStage::Unshare | ChildStage::UidMap | ChildStage::GidMap | ChildStage::SetGroups => {
                    UsernsKnobs::read(proc_root).hint()
                }
                _ => String::new(),
            };
            RunError::Namespaces { stage, errno, hint }
        }
        other => other.into(),
    }
}

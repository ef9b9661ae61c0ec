//! Steps of a rootless shared network: the user's network holder (started
//! or found), the child created inside its user namespace, the attachment
//! made by a helper that joined it. See [`crate::holder`].

use super::Exec;
use crate::flow::RunError;
use crate::holder::daemon::StartConfig;
use crate::holder::network::{AttachSpec, in_holder};
use crate::holder::{HolderError, idmap, usage};
use crate::model::ifname::{IfName, veth_name};
use crate::state::record::Resource;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

/// `ensure_holder`: recorded first (a record naming a holder that never
/// started costs nothing to undo), then found running or started, under
/// the holder's lock.
pub(super) fn ensure(exec: &mut Exec) -> Result<(), RunError> {
    let pasta = exec.plan.helper_program.clone().ok_or(RunError::Refused(crate::flow::plan::Refusal::PastaMissing))?;
    let (uid, gid) = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
    let path_env = std::env::var_os("PATH");
    let mapping = idmap::for_user(Path::new("/etc"), path_env.as_deref(), uid, gid);
    exec.add(Resource::Holder { id: exec.id().to_owned() })?;
    let cfg = StartConfig { paths: exec.paths.clone(), pasta, mapping, timeout: exec.timeout, adopt: None };
    let began = std::time::Instant::now();
    let ensured = usage::ensure(&cfg)?;
    if ensured.started {
        let ms = began.elapsed().as_secs_f64() * 1e3;
        log::info!("started the network holder (pid {}) in {ms:.2} ms", ensured.state.holder.pid);
    }
    for (id, e) in &ensured.reattached.failed {
        log::warn!("{id} could not be given its network back in the new holder: {}", crate::flow::error_chain(e));
    }
    exec.holder = Some(ensured.state);
    Ok(())
}

/// The holder's user namespace, for the child's fork.
pub(super) fn holder_userns(exec: &Exec) -> Result<File, RunError> {
    let state = exec.holder.as_ref().ok_or(HolderError::NotRunning)?;
    let path = state.ns_path(&exec.paths.proc_root, "user");
    File::open(&path).map_err(|source| HolderError::OpenNamespace { path, source }.into())
}

/// `attach_in_holder`: the network in the holder, a veth pair into the
/// child's namespace, its address and route.
pub(super) fn attach(exec: &mut Exec) -> Result<(), RunError> {
    let def = in_holder(exec.plan.network.as_ref().ok_or(RunError::NoNetwork)?);
    let state = exec.holder.as_ref().ok_or(HolderError::NotRunning)?;
    let Some(address) = exec.lease else { return Err(RunError::NoNetwork) };
    let given = exec.child.is_none();
    let path = match exec.child.as_ref() {
        Some(child) => exec.paths.proc_pid(child.pid(), "ns/net"),
        None => exec.target(crate::flow::steps::NsRef::Given).netns,
    };
    let netns = File::open(&path).map_err(|source| HolderError::OpenNamespace { path: path.clone(), source })?;
    if given {
        // A namespace someone else made: the holder may put a veth into it
        // only when its user namespace owns it.
        let userns = state.ns_path(&exec.paths.proc_root, "user");
        match crate::holder::network::owned_by(netns.as_fd(), &userns) {
            Ok(true) => {}
            Ok(false) => return Err(crate::flow::plan::Refusal::HolderForeignNetns { path }.into()),
            Err(source) => return Err(HolderError::OpenNamespace { path, source }.into()),
        }
    }
    let id = exec.id().to_owned();
    let veth = veth_name(&id);
    let peer = IfName::new("eth0").expect("valid interface name");
    let spec = AttachSpec { def: &def, veth: &veth, peer: &peer, address, id: &id, replace: false };
    let began = std::time::Instant::now();
    if given {
        // Recorded first: a failed attach leaves at most a veth to remove.
        exec.add(Resource::HolderVeth { name: veth.to_string() })?;
    }
    let state = exec.holder.as_ref().ok_or(HolderError::NotRunning)?;
    crate::holder::network::attach(&exec.paths, state, &spec, netns.as_fd())?;
    log::info!("attached to {} in the network holder in {:.2} ms", def.name, began.elapsed().as_secs_f64() * 1e3);
    crate::fault::point("holder.attached");
    names_served(exec)?;
    super::host_loopback::relay(exec)
}

/// The network's names are served on its gateway by the holder's name
/// server ([`crate::holder::names`]), not by the run (whose sockets would
/// stay in a dead holder's namespace when the holder is rebuilt): a network
/// created a moment ago is waited for, so the command's first lookup is answered.
fn names_served(exec: &mut Exec) -> Result<(), RunError> {
    let (Some(dns), Some(state), Some(def)) = (exec.dns.as_ref(), exec.holder.as_ref(), exec.plan.network.as_ref())
    else {
        return Ok(());
    };
    if dns.gateway_addr().is_none() || def.options.disable_dns {
        return Ok(());
    }
    let within = std::time::Duration::from_secs(3);
    let (network, gateway) = (def.name.as_str(), def.gateway);
    if crate::holder::names::wait_served(&exec.paths.run_dir, state.supervisor.pid, network, gateway, within) {
        Ok(())
    } else {
        Err(HolderError::Inside {
            op: "serve the network's names",
            message: format!("the holder's name server does not serve {network} on {gateway}:53"),
        }
        .into())
    }
}

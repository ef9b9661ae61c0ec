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
    for (id, e) in &ensured.reattach_failed {
        log::warn!("run {id} could not be given its network back in the new holder: {}", crate::flow::error_chain(e));
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
    let (Some(child), Some(address)) = (exec.child.as_ref(), exec.lease) else { return Err(RunError::NoNetwork) };
    let path = exec.paths.proc_pid(child.pid(), "ns/net");
    let netns = File::open(&path).map_err(|source| HolderError::OpenNamespace { path, source })?;
    let veth = veth_name(exec.id());
    let peer = IfName::new("eth0").expect("valid interface name");
    let spec = AttachSpec { def: &def, veth: &veth, peer: &peer, address, id: exec.id(), replace: false };
    let began = std::time::Instant::now();
    crate::holder::network::attach(&exec.paths, state, &spec, netns.as_fd())?;
    log::info!("attached to {} in the network holder in {:.2} ms", def.name, began.elapsed().as_secs_f64() * 1e3);
    crate::fault::point("holder.attached");
    gateway_listeners(exec)
}

/// The network's name server listens on its gateway, inside the holder:
/// its sockets are made there by a socket factory that joined it, and
/// bound (this process owns the holder's user namespace, so it may bind
/// port 53 there) with `SO_REUSEPORT`, beside every other run's of the network.
fn gateway_listeners(exec: &mut Exec) -> Result<(), RunError> {
    let (Some(dns), Some(state)) = (exec.dns.as_mut(), exec.holder.as_ref()) else { return Ok(()) };
    let Some(addr) = dns.gateway_addr() else { return Ok(()) };
    let proc_root = &exec.paths.proc_root;
    let target = crate::model::target::NsTarget {
        netns: state.ns_path(proc_root, "net"),
        userns: Some(state.ns_path(proc_root, "user")),
    };
    let factory_err = |e| RunError::Dns(crate::dns::DnsSetupError::Factory(e));
    let mut factory = crate::ports::nsfactory::SocketFactory::spawn(&target, proc_root).map_err(factory_err)?;
    let mut socket = |ty| {
        factory.socket(libc::AF_INET, ty, 0).map_err(|e| factory_err(crate::ports::nsfactory::FactoryError::Request(e)))
    };
    let (udp, tcp) = (socket(libc::SOCK_DGRAM)?, socket(libc::SOCK_STREAM)?);
    let listeners = crate::dns::forwarder::Listeners::from_sockets(udp, tcp, addr)
        .map_err(|e| RunError::Dns(crate::dns::DnsSetupError::Forwarder(e)))?;
    dns.set_gateway(listeners);
    Ok(())
}

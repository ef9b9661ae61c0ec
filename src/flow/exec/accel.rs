//! The accelerator's steps: `prepare_accel` makes the socket pair whose
//! one end the forked child carries into the command's process (which
//! installs the filter right before `exec` and sends its listener back),
//! `start_accel` takes the listener once the command runs and starts the
//! supervisor, recorded so that the one undo stops it first. A command
//! whose process could not install the filter runs on the normal path,
//! after one warning: the accelerator never fails a run.

use super::Exec;
use crate::accel::child::{self, Receiver};
use crate::accel::filter::Intercept;
use crate::accel::ingress::Ingress;
use crate::accel::probe;
use crate::accel::reach::{HelperNetwork, Reach};
use crate::accel::supervisor::{Config, Supervisor};
use crate::accel::switch::Lock;
use crate::flow::RunError;
use crate::flow::plan::accel::SLIRP_NETWORKS;
use crate::model::mode::NetworkMode;
use crate::state::record::Resource;
use std::net::IpAddr;
use std::time::Duration;

/// The accelerator between `prepare_accel` and `start_accel`.
#[derive(Debug)]
pub(crate) struct Pending {
    receiver: Receiver,
    lock: Lock,
    listeners: bool,
}

/// How long the command's process has to send its listener once released.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// `prepare_accel`: the hook the child carries, and our end of its pair.
pub(super) fn prepare(exec: &mut Exec, lock: Lock, listeners: bool) -> Result<(), RunError> {
    match child::pair(Intercept { bind: listeners, refuse_io_uring: lock == Lock::Device }) {
        Ok((hook, receiver)) => {
            exec.accel_hook = Some(hook);
            exec.accel = Some(Pending { receiver, lock, listeners });
        }
        Err(e) => log::warn!("accelerator off: {}", probe::reason(&e)),
    }
    Ok(())
}

/// `start_accel`: take the filter's listener from the running command and
/// start the supervisor in this thread's namespace (the owner's), with
/// what the run reaches through its helper.
pub(super) fn start(exec: &mut Exec) -> Result<(), RunError> {
    let Some(pending) = exec.accel.take() else { return Ok(()) };
    let Some(ns_pid) = exec.child.as_ref().map(|c| c.pid()) else { return Ok(()) };
    let installed = match pending.receiver.receive(RECEIVE_TIMEOUT) {
        Ok(i) => i,
        Err(e) => {
            log::warn!("accelerator off: {}", probe::reason(&e));
            return Ok(());
        }
    };
    let proc_root = &exec.paths.proc_root;
    let own: Vec<IpAddr> = crate::host::nsaddr::namespace_addresses(proc_root, ns_pid)
        .map(|list| list.into_iter().map(|a| a.address).collect())
        .unwrap_or_default();
    let helper_networks = match exec.plan.mode {
        NetworkMode::Slirp4netns => SLIRP_NETWORKS.iter().filter_map(|n| helper_network(n)).collect(),
        _ => Vec::new(),
    };
    let reach = Reach {
        ipv6: own.iter().any(IpAddr::is_ipv6),
        own,
        helper_networks,
        host_loopback_ports: exec.plan.host_loopback_ports.clone(),
        own_servers: Vec::new(),
    };
    let ingress = match (&exec.live.relay, pending.listeners && pending.lock == Lock::Peer) {
        (Some(relay), true) if !exec.tcp_listeners.is_empty() => {
            Some(Ingress::new(exec.tcp_listeners.clone(), Box::new(relay.forwarder().releaser())))
        }
        _ => None,
    };
    let lock = pending.lock;
    let cfg = Config { reach, proc_root: proc_root.clone(), ingress, lock };
    match Supervisor::start(installed, cfg) {
        Ok(supervisor) => {
            let how = match lock {
                Lock::Peer => "each locked to its peer",
                Lock::Device => "each bound to its route's device",
            };
            log::info!("accelerator on: TCP connections leave through sockets of this namespace, {how}");
            exec.live.accel = Some(supervisor);
            exec.add(Resource::Accel)?;
            crate::fault::point("accel.recorded");
            Ok(())
        }
        Err(e) => {
            log::warn!("accelerator failed: {}", probe::reason(&e));
            Ok(())
        }
    }
}

fn helper_network(text: &str) -> Option<HelperNetwork> {
    if let Ok(v4) = text.parse() {
        return Some(HelperNetwork::V4(v4));
    }
    text.parse().ok().map(HelperNetwork::V6)
}

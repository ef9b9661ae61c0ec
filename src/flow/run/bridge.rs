//! `run --network bridge[:NAME]`: the container's named netns is fully
//! configured before the fork (bridge, veth, address, route, forwards);
//! the child joins it with `setns`, so it never starts without its network.

use super::forward::Forward;
use super::{RunError, RunOptions, RunReport, SignalGuard, prepare_command, resolve_ephemeral, supervise};
use crate::bridge::network::{DEFAULT_NETWORK, load_network_def};
use crate::bridge::{AttachRequest, setup_bridge_network, teardown_network};
use crate::host::procfs::ProcessId;
use crate::model::ifname::NetworkName;
use crate::ns::child::{ChildSpec, NsChild, NsKind};
use crate::ports::nsfactory::FactoryTarget;
use crate::state::store::new_run_id;
use std::os::fd::AsRawFd;

/// Run the command on a bridge network.
pub(super) fn run_bridge(opts: &RunOptions, network: Option<&NetworkName>) -> Result<RunReport, RunError> {
    let (program, argv) = prepare_command(&opts.command)?;
    if !nix::unistd::geteuid().is_root() {
        return Err(RunError::BridgeNeedsRoot);
    }
    let name = network.map_or(DEFAULT_NETWORK, |n| n.as_str());
    let def = load_network_def(&opts.paths.config_dir, name).map_err(RunError::Network)?;
    let ports = resolve_ephemeral(&opts.network.ports)?;
    // DNAT holds no socket: without this a host server's port, or another
    // run's, would be taken over silently. Held until the record is written.
    let port_claim = crate::ports::precheck::claim(&opts.paths, &ports)?;
    crate::ports::exposure::warn_all_interfaces(&ports);
    let mode = crate::model::mode::NetworkMode::Bridge(network.cloned());
    let driver = super::choose_port_driver(&mode, opts.network.port_driver, &ports, None)?;
    log::info!("port driver: {} ({})", driver.name, driver.reason);
    let builtin = driver.driver == crate::model::driver::ChosenDriver::Builtin;
    let mut dns = super::dns::prepare_for(&mode, opts, None, Some(def.gateway))?;
    let mut forward = if builtin { Forward::bind(&ports)? } else { Forward::none() };
    // Ports the kernel forwards (none when pelagos-net relays them).
    let dnat_ports = if builtin { Vec::new() } else { ports.clone() };
    let signals = SignalGuard::new()?;
    let id = new_run_id();
    let proc_root = &opts.paths.proc_root;
    let owner = ProcessId::of(proc_root, std::process::id()).unwrap_or(ProcessId::unread(std::process::id()));
    let req = AttachRequest { paths: &opts.paths, def: &def, id: &id, ports: &dnat_ports, ip: opts.ip, owner };
    if let Err(e) = crate::state::gc::gc(&opts.paths, false) {
        log::debug!("gc before setup: {e}");
    }
    let setup = setup_bridge_network(&req).map_err(RunError::Bridge)?;
    drop(port_claim);
    log::info!("container {id} on network {name}: {} in {}", setup.address, setup.netns_path().display());

    let spec = ChildSpec {
        ns: NsKind::JoinNet(setup.netns.fd().as_raw_fd()),
        program: super::cstring(std::os::unix::ffi::OsStrExt::as_bytes(program.as_os_str())),
        argv,
        proc_root: proc_root.clone(),
        sigmask: signals.old,
        dns: dns.inside.take(),
    };
    let fail = |setup, err: RunError| -> RunError {
        match teardown_network(setup) {
            Ok(()) => err,
            Err(t) => RunError::Teardown(vec![err, RunError::BridgeTeardown(t)]),
        }
    };
    let mut child = match NsChild::spawn(&spec) {
        Ok(c) => c,
        Err(e) => return Err(fail(setup, e.into())),
    };
    crate::fault::point("run.child-spawned");
    if let Err(e) = child.wait_ready() {
        child.kill_and_reap();
        return Err(fail(setup, e.into()));
    }
    let dns_forwarder = match dns.start_forwarder(None, proc_root) {
        Ok(f) => f,
        Err(e) => {
            child.kill_and_reap();
            return Err(fail(setup, e.into()));
        }
    };
    let relay = match forward.start_in(FactoryTarget { userns: None, netns: setup.netns_path() }, proc_root) {
        Ok(relay) => relay,
        Err(e) => {
            child.kill_and_reap();
            return Err(fail(setup, e));
        }
    };
    let child_id = ProcessId::of(proc_root, child.pid()).ok();
    let forwarder = relay.as_ref().map(|r| r.record());
    if let Err(e) = complete_record(&opts.paths.run_dir, &id, child_id, forwarder) {
        log::debug!("record the command and port relay of {id}: {e}");
    }
    let ready =
        super::Ready { id: &id, mode: &mode, ports: &ports, pid: child.pid(), bridge_address: Some(setup.address) };
    if let Err(e) = super::start_command(&mut child, opts, &ready) {
        // Listeners close before the namespace they relay into goes.
        if let Some(r) = relay {
            r.stop();
        }
        return Err(fail(setup, e));
    }
    crate::fault::point("run.command-started");
    let (exit_code, _) = supervise(&mut child, &signals, None);
    if let Some(r) = relay {
        r.stop();
    }
    drop(dns_forwarder);
    let teardown_errors = match teardown_network(setup) {
        Ok(()) => Vec::new(),
        Err(errors) => vec![RunError::BridgeTeardown(errors)],
    };
    Ok(RunReport {
        exit_code,
        helper_output: None,
        helper_died: false,
        teardown_errors,
        ports,
        ready_after: None,
        decision: None,
        port_driver: Some(driver),
    })
}

/// Add the command's process and the relay to the run record
/// `setup_bridge_network` wrote, so `gc` can stop them after a crash (both
/// also die with us through the parent-death signal).
fn complete_record(
    run_dir: &std::path::Path,
    id: &str,
    child: Option<ProcessId>,
    forwarder: Option<crate::state::store::ForwarderRecord>,
) -> Result<(), RunError> {
    let store = crate::state::store::Store::open(run_dir, 0)?;
    let mut record = store.record(id)?;
    record.child = child;
    record.forwarder = forwarder;
    Ok(store.write_record(&record)?)
}

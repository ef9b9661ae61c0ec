//! Bridge networks one call per container, for a runtime that wants only
//! that: [`setup_bridge_network`] (a named netns on a network, configured
//! before the runtime forks) and [`attach_network_to_netns`] (a further
//! network in that netns). Both run the same steps `pelagos-net run
//! --network bridge` runs and write the same records.

use super::Error;
use crate::bridge::network::NetworkDef;
use crate::flow::RunError;
use crate::flow::exec::Exec;
use crate::flow::plan::{Given, Lifetime, OneNetwork, Request, TargetKind, plan};
use crate::host::probe::{HostCaps, ProbeRoots, ProbeScope};
use crate::host::procfs::ProcessId;
use crate::model::config::NetworkConfig;
use crate::model::driver::PortDriver;
use crate::model::ifname::{IfName, veth_name};
use crate::model::mode::NetworkMode;
use crate::model::port::{Forward, PortMapping};
use crate::ns::netns::NetNs;
use crate::ns::target::OpenTarget;
use crate::state::paths::Paths;
use crate::state::record::{RecordKind, Resource};
use std::net::Ipv4Addr;
use std::time::Duration;

/// Every error of a teardown (every step was attempted).
#[derive(Debug, thiserror::Error)]
#[error("teardown failed: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
pub struct TeardownErrors(pub Vec<Error>);

/// What one bridge attach asks for.
#[derive(Debug, Clone)]
pub struct AttachRequest<'a> {
    /// State roots.
    pub paths: &'a Paths,
    /// The network.
    pub def: &'a NetworkDef,
    /// Container id (hex; at most 12 characters are used in link names).
    pub id: &'a str,
    /// Published ports (kernel DNAT).
    pub ports: &'a [PortMapping],
    /// A requested address.
    pub ip: Option<Ipv4Addr>,
    /// Owner of the lease and record (normally the calling process).
    pub owner: ProcessId,
}

/// A container's bridge networking; hand it to [`teardown_network`].
#[derive(Debug)]
pub struct NetworkSetup {
    /// Container id.
    pub id: String,
    /// The network.
    pub def: NetworkDef,
    /// The container's named netns (`setns` into it, or `ip netns exec`).
    pub netns: NetNs,
    /// Host end of the veth pair.
    pub veth_host: IfName,
    /// Container address.
    pub address: Ipv4Addr,
    /// Installed forwards.
    pub forwards: Vec<Forward>,
    exec: Exec,
}

impl NetworkSetup {
    /// The named netns path.
    pub fn netns_path(&self) -> &std::path::Path {
        &self.netns.path
    }
}

/// Plan `req` for `target` and run every step under `req.id`.
fn run_all(req: &AttachRequest<'_>, target: TargetKind, given: Option<OpenTarget>) -> Result<Exec, Error> {
    let AttachRequest { paths, def, id, ports, ip, owner } = *req;
    let mut network = NetworkConfig::new(NetworkMode::Bridge(Some(def.name.clone())));
    network.ports = ports.to_vec();
    network.port_driver = PortDriver::Nftables;
    let req = Request { network, fallback: None, ip, target, lifetime: Lifetime::Owner, command: false };
    let host = HostCaps::probe_scoped(&ProbeRoots::current(paths), ProbeScope::Identity);
    let planned = plan(&req, &host, &OneNetwork(def))?;
    let mut exec = Exec::with_id(planned, paths, RecordKind::Attachment, Duration::from_secs(10), id.to_owned(), owner);
    if let Some(t) = given {
        exec.record.target = Some(t.record());
        exec.given = Some(t);
    }
    exec.run_steps()?;
    exec.done();
    Ok(exec)
}

/// Set up bridge networking for a container in a new named netns
/// `pelagos-<id>`: lease, netns, veth pair, address and default route,
/// forwards. Call it before forking the container; its child joins the
/// namespace with `setns` on [`NetworkSetup::netns_path`].
pub fn setup_bridge_network(req: &AttachRequest<'_>) -> Result<NetworkSetup, Error> {
    let exec = run_all(req, TargetKind::Created, None)?;
    let forwards = exec.record.resources.iter().find_map(|r| match r {
        Resource::Forwards { forwards, .. } => Some(forwards.clone()),
        _ => None,
    });
    let netns = NetNs::open(&exec.named.as_ref().map(|n| n.path.clone()).unwrap_or_default())
        .map_err(|e| Error::from(RunError::from(e)))?;
    Ok(NetworkSetup {
        id: req.id.to_owned(),
        def: req.def.clone(),
        netns,
        veth_host: veth_name(req.id),
        address: exec.lease.unwrap_or(Ipv4Addr::UNSPECIFIED),
        forwards: forwards.unwrap_or_default(),
        exec,
    })
}

/// Undo [`setup_bridge_network`]: the forwards first, then the netns (which
/// takes the veth pair with it), then the lease and the record. Every step
/// runs; all errors come back together.
pub fn teardown_network(setup: NetworkSetup) -> Result<(), TeardownErrors> {
    let NetworkSetup { netns, mut exec, .. } = setup;
    drop(netns);
    let (_, errors) = exec.teardown();
    if errors.is_empty() { Ok(()) } else { Err(TeardownErrors(errors.into_iter().map(Error::from).collect())) }
}

/// A further bridge network in a container's netns; hand it to
/// [`teardown_secondary_network`].
#[derive(Debug)]
pub struct SecondaryAttachment {
    /// Its record's id (a fresh one: the host end of its veth pair is
    /// named after it, apart from the container's primary one).
    pub id: String,
    /// The network.
    pub network: String,
    /// Interface name inside the netns (the first free `ethN`).
    pub ifname: IfName,
    /// Host end of the veth pair.
    pub veth_host: IfName,
    /// Leased address.
    pub address: Ipv4Addr,
    exec: Exec,
}

/// Attach network `def` to the existing named netns `ns` of container
/// `id` (as `eth1`, `eth2`, ...: the first free name; `slot` is logged).
/// The namespace keeps its default route.
pub fn attach_network_to_netns(
    paths: &Paths,
    def: &NetworkDef,
    ns: &NetNs,
    id: &str,
    slot: u8,
    owner: ProcessId,
) -> Result<SecondaryAttachment, Error> {
    let target = OpenTarget::open(&ns.path, None, &paths.proc_root, 0)?;
    let given = TargetKind::Given(Given::from(&target));
    let att_id = crate::state::store::new_run_id();
    log::debug!("network {} for container {id} (slot {slot}) is attachment {att_id}", def.name);
    let req = AttachRequest { paths, def, id: &att_id, ports: &[], ip: None, owner };
    let exec = run_all(&req, given, Some(target))?;
    Ok(SecondaryAttachment {
        network: def.name.to_string(),
        ifname: exec.bridge.peer().cloned().unwrap_or_else(|| IfName::new("eth1").expect("valid")),
        veth_host: veth_name(&att_id),
        address: exec.lease.unwrap_or(Ipv4Addr::UNSPECIFIED),
        id: att_id,
        exec,
    })
}

/// Undo [`attach_network_to_netns`]: the veth pair, then the lease and the
/// record; every step runs, all errors are returned.
pub fn teardown_secondary_network(att: SecondaryAttachment) -> Result<(), TeardownErrors> {
    let mut exec = att.exec;
    let (_, errors) = exec.teardown();
    if errors.is_empty() { Ok(()) } else { Err(TeardownErrors(errors.into_iter().map(Error::from).collect())) }
}

//! Managing named networks as a whole: create (against what the host
//! already routes), list with their attachments, remove and prune.
//!
//! The CLI's `network` subcommands are thin over these, and a runtime calls
//! the same functions. Removal takes the bridge, the nftables table, the
//! lease table and its lock files and finally the definition, in that order,
//! so a removal killed halfway is finished by running it again.

use crate::bridge::firewall::{Firewall, FirewallError};
use crate::bridge::lease::{LeaseError, LeaseStore};
use crate::bridge::netlink::{Netlink, NetlinkError};
use crate::bridge::network::{
    DEFAULT_NETWORK, NetworkDef, NetworkError, NetworkRequest, NetworkStore, default_network_def, plan_network,
};
use crate::bridge::plan::rules_for;
use crate::host::procfs::ProcessId;
use crate::model::cidr::Ipv4Net;
use crate::model::ifname::NetworkName;
use crate::state::paths::Paths;
use crate::state::store::Store;
use std::net::Ipv4Addr;
use std::time::Duration;

/// Errors of managing networks.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    /// Reading or writing definitions failed, or a definition was refused.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// The network could not be removed from the user's network holder.
    #[error(transparent)]
    Rootless(Box<dyn std::error::Error + Send + Sync>),
    /// The lease table could not be read or removed.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// Reading the host's networks or deleting the bridge failed.
    #[error("{op}")]
    Netlink {
        /// What was being done.
        op: String,
        /// Cause.
        #[source]
        source: NetlinkError,
    },
    /// Deleting the network's nftables table failed.
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    /// The default network is never removed.
    #[error("{0} is the default network and cannot be removed")]
    IsDefault(String),
    /// Runs are attached and removal was not forced.
    #[error("network {network} is in use by {}", describe(.users))]
    InUse {
        /// The network.
        network: String,
        /// The attached runs.
        users: Vec<Attachment>,
    },
    /// Forced removal: the attached runs did not stop in time.
    #[error("network {network}: {} still running after {waited:?}", describe(.users))]
    StopTimedOut {
        /// The network.
        network: String,
        /// The runs still attached.
        users: Vec<Attachment>,
        /// How long we waited.
        waited: Duration,
    },
}

/// A run attached to a network: its lease.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Attachment {
    /// Run id.
    pub id: String,
    /// Leased address.
    pub address: Ipv4Addr,
    /// The name it goes by on the network (`--name`), from its record.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The pelagos-net process that owns the run.
    #[serde(skip)]
    pub owner: ProcessId,
}

fn describe(users: &[Attachment]) -> String {
    users.iter().map(|a| format!("{} ({})", a.id, a.address)).collect::<Vec<_>>().join(", ")
}

fn nl_err(op: &str) -> impl FnOnce(NetlinkError) -> ManageError + '_ {
    move |source| ManageError::Netlink { op: op.to_owned(), source }
}

/// Networks the host already has: the networks of its addresses and the
/// destinations of its routes (the default route excluded).
pub fn host_networks() -> Result<Vec<Ipv4Net>, ManageError> {
    let mut nl = Netlink::open().map_err(nl_err("read the host's networks"))?;
    nl.host_networks().map_err(nl_err("read the host's addresses and routes"))
}

/// Every network, the default one first even before its definition is
/// written (it is written on first use).
pub fn list_networks(paths: &Paths) -> Result<Vec<NetworkDef>, ManageError> {
    let mut defs = NetworkStore::new(&paths.config_dir).list()?;
    if !defs.iter().any(|d| d.name.as_str() == DEFAULT_NETWORK) {
        defs.insert(0, default_network_def());
    }
    Ok(defs)
}

/// One network's definition (the default one even before it is written).
pub fn find_network(paths: &Paths, name: &NetworkName) -> Result<NetworkDef, ManageError> {
    if name.as_str() == DEFAULT_NETWORK {
        return Ok(list_networks(paths)?.remove(0));
    }
    Ok(NetworkStore::new(&paths.config_dir).load(name)?)
}

/// Create a network from `req`, validated against the other networks and
/// the host's own (see [`plan_network`]).
pub fn create_network(paths: &Paths, req: &NetworkRequest) -> Result<NetworkDef, ManageError> {
    let host_nets = host_networks()?;
    let store = NetworkStore::new(&paths.config_dir);
    Ok(store.locked(|s| {
        let mut existing = s.list()?;
        if !existing.iter().any(|d| d.name.as_str() == DEFAULT_NETWORK) {
            existing.insert(0, default_network_def());
        }
        let def = plan_network(req, &existing, &host_nets)?;
        check_host_ipv6(paths, &def)?;
        s.create(&def)?;
        Ok(def)
    })?)
}

/// Refuse an IPv6 subnet that holds one of the host's own global addresses.
fn check_host_ipv6(paths: &Paths, def: &NetworkDef) -> Result<(), NetworkError> {
    let Some(subnet6) = def.options.subnet6 else { return Ok(()) };
    let text = std::fs::read_to_string(paths.proc_root.join("self/net/if_inet6")).unwrap_or_default();
    for a in crate::host::nsaddr::parse_if_inet6(&text) {
        if let std::net::IpAddr::V6(address) = a.address
            && subnet6.contains(address)
        {
            return Err(NetworkError::OverlapsHost6 { subnet6, address });
        }
    }
    Ok(())
}

/// The runs attached to network `name` (live leases: of a live owner, of
/// a CNI attachment, which the container runtime owns, or of a live
/// record: an attachment that outlives the process that set it up),
/// creating nothing.
pub fn attachments(paths: &Paths, name: &str) -> Result<Vec<Attachment>, ManageError> {
    let leases = LeaseStore::new(&paths.run_dir).peek(name)?;
    let store = Store::open_existing(&paths.run_dir, nix::unistd::geteuid().as_raw()).ok().flatten();
    let record = |id: &str| store.as_ref().and_then(|s| s.record(id).ok());
    let recorded_alive = |id: &str| record(id).is_some_and(|r| r.alive(&paths.proc_root));
    Ok(leases
        .into_iter()
        .filter(|(_, l)| l.cni || l.owner.is_alive(&paths.proc_root) || recorded_alive(&l.id))
        .map(|(address, l)| {
            let name = record(&l.id).and_then(|r| r.name).map(String::from);
            Attachment { id: l.id, address, name, owner: l.owner }
        })
        .collect())
}

/// The definition of network `name` if it may be removed: it exists and
/// is not the default network.
pub fn removable(paths: &Paths, name: &NetworkName) -> Result<NetworkDef, ManageError> {
    if name.as_str() == DEFAULT_NETWORK {
        return Err(ManageError::IsDefault(name.to_string()));
    }
    Ok(NetworkStore::new(&paths.config_dir).load(name)?)
}

/// Remove network `name`: its bridge, firewall table, lease files and
/// definition. Refused while anything is attached ([`ManageError::InUse`];
/// `flow::network` stops the attached runs first for a forced removal).
pub fn remove_network(paths: &Paths, name: &NetworkName) -> Result<(), ManageError> {
    remove_network_with(paths, name, &remove_host_side)
}

/// How a network's bridge and table are removed: from the host (root), or
/// from wherever its networks live (a rootless user's network holder).
pub type RemoveSide<'a> = &'a dyn Fn(&Paths, &NetworkDef) -> Result<(), ManageError>;

/// [`remove_network`], the bridge and table removed by `side`.
pub fn remove_network_with(paths: &Paths, name: &NetworkName, side: RemoveSide<'_>) -> Result<(), ManageError> {
    let def = removable(paths, name)?;
    let store = NetworkStore::new(&paths.config_dir);
    let users = attachments(paths, name.as_str())?;
    if !users.is_empty() {
        return Err(ManageError::InUse { network: name.to_string(), users });
    }
    crate::fault::point("network.rm.checked");
    let leases = LeaseStore::new(&paths.run_dir);
    // Hold the setup lock so no run attaches while the bridge goes away.
    // Without a lease directory nothing ever attached: take no lock, create nothing.
    let _lock = if leases.has_dir() { Some(leases.lock_setup(name.as_str())?) } else { None };
    let users = attachments(paths, name.as_str())?;
    if !users.is_empty() {
        return Err(ManageError::InUse { network: name.to_string(), users });
    }
    side(paths, &def)?;
    leases.remove_files(name.as_str())?;
    store.remove(name)?;
    crate::fault::point("network.rm.removed");
    Ok(())
}

/// Delete the bridge and the firewall table of `def` (absent ones are fine).
pub fn remove_host_side(paths: &Paths, def: &NetworkDef) -> Result<(), ManageError> {
    let mut nl = Netlink::open().map_err(nl_err("open netlink"))?;
    let op = format!("delete bridge {}", def.bridge);
    if let Some(index) = nl.link_index(def.bridge.as_str()).map_err(nl_err(&op))? {
        nl.delete_link(index).map_err(nl_err(&op))?;
    }
    crate::fault::point("network.rm.bridge-deleted");
    let mut fw = Firewall::new()?;
    fw.delete_network(&rules_for(def).name)?;
    if def.options.subnet6.is_some() {
        fw.delete_network6(def.name.as_str())?;
    }
    // The host FORWARD rules this network needed (a FORWARD DROP host).
    let marker = paths.run_dir.join("leases").join(format!("{}.forward-accept", def.name));
    if marker.exists() {
        crate::bridge::firewall::hostfw::remove_forwarding(def.name.as_str(), def.bridge.as_str(), &marker);
    }
    crate::fault::point("network.rm.table-deleted");
    Ok(())
}

/// What a prune did.
#[derive(Debug, Default)]
pub struct PruneReport {
    /// Networks removed.
    pub removed: Vec<NetworkName>,
    /// Networks that could not be removed, with why.
    pub failed: Vec<(NetworkName, ManageError)>,
}

/// The networks [`prune_networks`] would remove: every one but the default
/// with no run attached.
pub fn unused_networks(paths: &Paths) -> Result<Vec<NetworkName>, ManageError> {
    let mut out = Vec::new();
    for def in NetworkStore::new(&paths.config_dir).list()? {
        if def.name.as_str() != DEFAULT_NETWORK && attachments(paths, def.name.as_str())?.is_empty() {
            out.push(def.name);
        }
    }
    Ok(out)
}

/// Remove every network without attached runs, except the default one;
/// one failure does not stop the others.
pub fn prune_networks(paths: &Paths, side: RemoveSide<'_>) -> Result<PruneReport, ManageError> {
    let mut report = PruneReport::default();
    for name in unused_networks(paths)? {
        match remove_network_with(paths, &name, side) {
            Ok(()) => report.removed.push(name),
            Err(e) => report.failed.push((name, e)),
        }
    }
    Ok(report)
}

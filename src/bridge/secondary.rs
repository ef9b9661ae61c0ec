//! Secondary networks: another bridge network added to an existing named
//! netns as `eth1`, `eth2`, ...: an address and the subnet's route, no
//! default route (the primary network keeps it).

use super::BridgeError;
use super::plan::{BridgePlan, forwards};
use crate::bridge::lease::LeaseStore;
use crate::bridge::netlink::Netlink;
use crate::bridge::network::NetworkDef;
use crate::host::procfs::ProcessId;
use crate::model::ifname::{IfName, veth_name};
use crate::ns::netns::NetNs;
use crate::state::paths::Paths;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// A secondary network attachment; hand it to [`teardown_secondary_network`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecondaryAttachment {
    /// Container id.
    pub id: String,
    /// The network.
    pub network: String,
    /// Interface name inside the netns (`eth1`, ...).
    pub ifname: IfName,
    /// Host end of the veth pair.
    pub veth_host: IfName,
    /// Leased address.
    pub address: Ipv4Addr,
    run_dir: PathBuf,
}

/// Attach network `def` to the existing named netns `ns` as interface
/// number `slot` (1 for `eth1`). No default route is added.
pub fn attach_network_to_netns(
    paths: &Paths,
    def: &NetworkDef,
    ns: &NetNs,
    id: &str,
    slot: u8,
    owner: ProcessId,
) -> Result<SecondaryAttachment, BridgeError> {
    let leases = LeaseStore::new(&paths.run_dir);
    let lease_id = format!("{id}/{slot}");
    let address = leases.allocate(def, &lease_id, owner, None)?;
    let host_name = format!("{}{slot}", veth_name(id).as_str().chars().take(14).collect::<String>());
    let plan = BridgePlan {
        ns_name: String::new(),
        veth_host: IfName::new(&host_name)
            .map_err(|_| BridgeError::MissingPeer { name: host_name.clone(), id: id.into() })?,
        peer: IfName::new(&format!("eth{slot}")).expect("valid"),
        address,
        prefix: def.subnet.prefix(),
        gateway: None,
        mtu: def.options.mtu,
        v6: super::plan::Plan6::of(def, address, false),
        forwards: forwards(address, &[])?,
    };
    let link_err = |op: &'static str| move |source| BridgeError::Link { op, id: id.to_owned(), source };
    let result = (|| {
        let mut host = Netlink::open().map_err(link_err("open netlink"))?;
        let mut fw = crate::bridge::firewall::Firewall::new()?;
        let bridge = super::ensure_bridge(paths, def, &mut host, &mut fw)?;
        let veth = host
            .create_veth(plan.veth_host.as_str(), plan.peer.as_str(), ns.fd(), Some(bridge))
            .map_err(link_err("create secondary veth"))?;
        if let Some(mtu) = plan.mtu {
            host.set_mtu(veth, mtu).map_err(link_err("set the secondary veth's mtu"))?;
        }
        host.set_up(veth).map_err(link_err("set secondary veth up"))?;
        super::configure_peer(ns, &plan, id)
    })();
    match result {
        Ok(()) => Ok(SecondaryAttachment {
            id: id.to_owned(),
            network: def.name.to_string(),
            ifname: plan.peer,
            veth_host: plan.veth_host,
            address,
            run_dir: paths.run_dir.clone(),
        }),
        Err(e) => {
            if let Ok(mut host) = Netlink::open()
                && let Ok(Some(i)) = host.link_index(plan.veth_host.as_str())
            {
                let _ = host.delete_link(i);
            }
            let _ = leases.release(def.name.as_str(), address, &lease_id);
            Err(e)
        }
    }
}

/// Remove a secondary network's veth pair and release its lease; both steps
/// run, all errors are returned.
pub fn teardown_secondary_network(att: SecondaryAttachment) -> Result<(), super::TeardownErrors> {
    let mut errors = Vec::new();
    let id = att.id.clone();
    let link_err = |op: &'static str| move |source| BridgeError::Link { op, id: id.clone(), source };
    match Netlink::open() {
        Ok(mut host) => match host.link_index(att.veth_host.as_str()) {
            Ok(Some(i)) => {
                if let Err(e) = host.delete_link(i) {
                    errors.push(link_err("delete secondary veth")(e));
                }
            }
            Ok(None) => {}
            Err(e) => errors.push(link_err("find secondary veth")(e)),
        },
        Err(e) => errors.push(link_err("open netlink")(e)),
    }
    let lease_id = format!("{}/{}", att.id, att.ifname.as_str().trim_start_matches("eth"));
    if let Err(e) = LeaseStore::new(&att.run_dir).release(&att.network, att.address, &lease_id) {
        errors.push(e.into());
    }
    if errors.is_empty() { Ok(()) } else { Err(super::TeardownErrors(errors)) }
}

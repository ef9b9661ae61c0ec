//! Bridge steps: lease, the network's bridge and table, the veth pair and
//! its address, the forwards. Recorded before they exist (the lease in the
//! same atomic write that allocates it, with its owner).

use super::Exec;
use crate::bridge::firewall::Firewall;
use crate::bridge::lease::LeaseStore;
use crate::bridge::netlink::{LinkState, Netlink};
use crate::bridge::network::NetworkDef;
use crate::bridge::{BridgeError, ContainerEnd, configure_container_end, configure_container_end_with, ensure_bridge};
use crate::flow::RunError;
use crate::flow::steps::{NsRef, Step};
use crate::model::ifname::{IfName, veth_name};
use crate::ns::netns::NetNs;
use crate::ns::target::OpenTarget;
use crate::state::record::Resource;
use std::net::Ipv4Addr;
use std::os::fd::BorrowedFd;

/// What the bridge steps share within one setup: one rtnetlink socket and
/// one nftables context for the host side, the bridge's index, the peer.
#[derive(Default)]
pub(crate) struct BridgeState {
    host: Option<Netlink>,
    fw: Option<Firewall>,
    bridge: Option<u32>,
    peer: Option<(IfName, bool)>,
    /// The veth pair's ends as created and configured (for a caller that
    /// reports them: the CNI result).
    ends: VethEnds,
    /// What the caller asks beyond the plan.
    pub wants: BridgeWants,
}

/// What a caller that knows the container's side itself asks of the
/// bridge steps (the CNI plugin: `CNI_IFNAME`, the config's `mtu`,
/// `hairpinMode` and `isGateway`, an IPAM plugin's address). The default
/// is the CLI's: the first free `ethN`, the network's MTU, a default route
/// unless the namespace has one.
#[derive(Default)]
pub(crate) struct BridgeWants {
    /// The container end's name (it must not exist yet).
    pub peer: Option<IfName>,
    /// The MTU of both ends, instead of the network's.
    pub mtu: Option<u32>,
    /// Hairpin mode on the host end.
    pub hairpin: bool,
    /// Whether the container gets a default route through the gateway.
    pub default_route: Option<bool>,
    /// IPv4 only, even on a dual-stack network.
    pub ipv4_only: bool,
    /// A netlink socket already open inside the namespace.
    pub inside: Option<Netlink>,
    /// The address a delegated IPAM plugin gave, with its record entry
    /// (for `use_address`).
    pub delegated: Option<(Ipv4Addr, Resource)>,
}

/// The two ends of the veth pair as this setup made them.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct VethEnds {
    /// The host end, as the kernel reported its creation.
    pub host: Option<LinkState>,
    /// The container end, as looked up to configure it.
    pub container: Option<LinkState>,
}

fn def(exec: &Exec) -> Result<NetworkDef, RunError> {
    exec.plan.network.clone().ok_or(RunError::NoNetwork)
}

fn link_err(exec: &Exec, op: &'static str) -> impl FnOnce(crate::bridge::netlink::NetlinkError) -> RunError {
    let id = exec.id().to_owned();
    move |source| RunError::Bridge(BridgeError::Link { op, id, source })
}

/// `lease_address`: the lease file records its holder and owner in the
/// write that allocates it; the record names it right after. The default
/// network's definition is written on its first use (planning only read it).
pub(super) fn lease(exec: &mut Exec, network: &str, requested: Option<Ipv4Addr>) -> Result<(), RunError> {
    let def = def(exec)?;
    if def.name.as_str() == crate::bridge::network::DEFAULT_NETWORK {
        crate::bridge::network::bootstrap_default_network(&exec.paths.config_dir).map_err(RunError::Network)?;
    }
    let holder = exec.id().to_owned();
    crate::fault::point("bridge.begin");
    let leases = LeaseStore::new(&exec.paths.run_dir);
    let address =
        leases.allocate(&def, &holder, exec.record.owner, requested).map_err(|e| RunError::Bridge(e.into()))?;
    crate::fault::point("bridge.leased");
    exec.lease = Some(address);
    add_with_veth(exec, Resource::Lease { network: network.to_owned(), address, holder })
}

/// `use_address`: the address a delegated IPAM plugin gave; recorded so
/// that undoing the attachment runs the plugin's `DEL`.
pub(super) fn delegated(exec: &mut Exec) -> Result<(), RunError> {
    let (address, resource) = exec.bridge.wants.delegated.take().ok_or(RunError::NoNetwork)?;
    exec.lease = Some(address);
    add_with_veth(exec, resource)
}

/// Record the address and, in the same write, the veth pair a later
/// `create_veth` puts into a namespace someone else made (its host end is
/// named after the record's id): one record write per attach less. Until
/// the pair exists its undo finds no link and does nothing.
fn add_with_veth(exec: &mut Exec, address: Resource) -> Result<(), RunError> {
    exec.record.resources.push(address);
    let into_given = exec.plan.steps.iter().any(|s| matches!(s, Step::CreateVeth { into: NsRef::Given, .. }));
    if into_given {
        exec.record.resources.push(Resource::Veth { name: veth_name(exec.id()).to_string() });
    }
    exec.write()
}

/// `ensure_network`.
pub(super) fn ensure(exec: &mut Exec) -> Result<(), RunError> {
    let def = def(exec)?;
    let mut host = Netlink::open().map_err(link_err(exec, "open netlink"))?;
    let mut fw = Firewall::new().map_err(|e| RunError::Bridge(e.into()))?;
    let index = ensure_bridge(&exec.paths, &def, &mut host, &mut fw).map_err(RunError::Bridge)?;
    crate::fault::point("bridge.network-ready");
    exec.bridge.host = Some(host);
    exec.bridge.fw = Some(fw);
    exec.bridge.bridge = Some(index);
    Ok(())
}

/// The namespace the veth's peer goes into.
fn ns_fd<'a>(given: &'a Option<OpenTarget>, named: &'a Option<NetNs>, into: NsRef) -> Option<BorrowedFd<'a>> {
    match into {
        NsRef::Given => given.as_ref().map(|g| g.netns_fd()),
        _ => named.as_ref().map(|n| n.fd()),
    }
}

/// `eth0`, or the first `ethN` free in a namespace someone else made; and
/// whether that namespace has a default route already (then it keeps it).
/// A caller's name and route choice win.
fn peer_name(
    ns: BorrowedFd<'_>,
    fresh: bool,
    wants: &mut BridgeWants,
) -> Result<(IfName, bool), crate::bridge::netlink::NetlinkError> {
    let eth = |n: u32| IfName::new(&format!("eth{n}")).expect("valid interface name");
    if let (Some(name), Some(route)) = (&wants.peer, wants.default_route) {
        return Ok((name.clone(), !route));
    }
    if fresh {
        return Ok((eth(0), false));
    }
    let inside = match wants.inside.as_mut() {
        Some(nl) => nl,
        None => wants.inside.insert(Netlink::open_in(ns)?),
    };
    let routed = inside.ipv4_routes()?.iter().any(|r| r.destination.prefix() == 0);
    if let Some(name) = &wants.peer {
        return Ok((name.clone(), routed || wants.default_route == Some(false)));
    }
    let mut n = 0;
    while inside.link_index(eth(n).as_str())?.is_some() {
        n += 1;
    }
    Ok((eth(n), routed || wants.default_route == Some(false)))
}

/// `create_veth`: the host end on the bridge, the peer created directly
/// inside the namespace. In a namespace someone else made the pair is
/// recorded (it outlives the setup's own names); in one this setup made it
/// goes with the namespace.
pub(super) fn veth(exec: &mut Exec, into: NsRef) -> Result<(), RunError> {
    let host_name = veth_name(exec.id());
    let ns = ns_fd(&exec.given, &exec.named, into).ok_or(RunError::NoNetwork)?;
    let (peer, routed) =
        peer_name(ns, into != NsRef::Given, &mut exec.bridge.wants).map_err(link_err(exec, "inspect the namespace"))?;
    let veth = Resource::Veth { name: host_name.to_string() };
    if into == NsRef::Given && !exec.record.resources.contains(&veth) {
        exec.add(veth)?;
    }
    crate::fault::point("bridge.netns");
    let ns = ns_fd(&exec.given, &exec.named, into).ok_or(RunError::NoNetwork)?;
    let mtu = exec.bridge.wants.mtu.or(exec.plan.network.as_ref().and_then(|d| d.options.mtu));
    let (Some(host), Some(bridge)) = (exec.bridge.host.as_mut(), exec.bridge.bridge) else {
        return Err(RunError::NoNetwork);
    };
    let id = exec.record.id.clone();
    let err = |op: &'static str| {
        let id = id.clone();
        move |source| RunError::Bridge(BridgeError::Link { op, id, source })
    };
    let created = match host.create_veth_mtu(host_name.as_str(), peer.as_str(), ns, Some(bridge), mtu) {
        // An old host end of the same name: named after this record's id,
        // which no other record has (a killed setup of the same attachment,
        // or its deletion still under way).
        Err(e) if e.is_exists() => {
            if let Some(old) = host.link_index(host_name.as_str()).map_err(err("find the old host end"))? {
                host.delete_link(old).map_err(err("delete the old host end"))?;
            }
            host.create_veth_mtu(host_name.as_str(), peer.as_str(), ns, Some(bridge), mtu)
        }
        other => other,
    }
    .map_err(err("create veth"))?;
    crate::fault::point("bridge.veth");
    host.set_port_up(created.index, exec.bridge.wants.hairpin).map_err(err("set host veth up"))?;
    exec.bridge.ends.host = Some(created);
    exec.bridge.peer = Some((peer, routed));
    Ok(())
}

/// `configure_address`: address, up, and the default route unless the
/// namespace already has one (a second network attached to it).
pub(super) fn address(exec: &mut Exec) -> Result<(), RunError> {
    let def = def(exec)?;
    let (Some((name, routed)), Some(address)) = (exec.bridge.peer.clone(), exec.lease) else {
        return Err(RunError::NoNetwork);
    };
    let v6 = crate::bridge::plan::Plan6::of(&def, address, !routed).filter(|_| !exec.bridge.wants.ipv4_only);
    let end = ContainerEnd {
        name: &name,
        address,
        prefix: def.subnet.prefix(),
        gateway: (!routed).then_some(def.gateway),
        // Set on both ends when the pair was created.
        mtu: None,
        v6: v6.as_ref(),
    };
    let into = if exec.given.is_some() { NsRef::Given } else { NsRef::Named };
    let ns = ns_fd(&exec.given, &exec.named, into).ok_or(RunError::NoNetwork)?;
    let configured = match exec.bridge.wants.inside.as_mut() {
        Some(inside) => configure_container_end_with(inside, &end, &exec.record.id),
        None => configure_container_end(ns, &end, exec.id()),
    }
    .map_err(RunError::Bridge)?;
    exec.bridge.ends.container = Some(configured);
    crate::fault::point("bridge.peer-configured");
    Ok(())
}

/// `install_forwards`: recorded (the exact elements) before they are added.
pub(super) fn forwards(exec: &mut Exec) -> Result<(), RunError> {
    let def = def(exec)?;
    let address = exec.lease.ok_or(RunError::NoNetwork)?;
    let forwards = crate::bridge::plan::forwards(address, &exec.ports).map_err(|e| RunError::Bridge(e.into()))?;
    let network = def.name.to_string();
    exec.add(Resource::Forwards { network: network.clone(), forwards: forwards.clone() })?;
    let fw = match exec.bridge.fw.as_mut() {
        Some(fw) => fw,
        None => exec.bridge.fw.insert(Firewall::new().map_err(|e| RunError::Bridge(e.into()))?),
    };
    fw.add_forwards(&network, &forwards).map_err(|e| RunError::Bridge(e.into()))?;
    crate::fault::point("bridge.forwards");
    Ok(())
}

impl BridgeState {
    /// The name of the veth's end inside the namespace, once created.
    pub(crate) fn peer(&self) -> Option<&IfName> {
        self.peer.as_ref().map(|(name, _)| name)
    }

    /// Let go of the host-side handles (a firewall context's socket is
    /// closed off this path, see [`crate::bridge::firewall`]).
    pub(crate) fn close(&mut self) {
        self.host = None;
        self.fw = None;
        self.wants.inside = None;
    }

    /// The veth pair's ends, once created and configured.
    pub(crate) fn ends(&self) -> VethEnds {
        self.ends
    }

    /// The host-side rtnetlink socket, while the setup holds it.
    pub(crate) fn host(&mut self) -> Option<&mut Netlink> {
        self.host.as_mut()
    }
}

//! Bridge networking: a container in a named network namespace, on a Linux
//! bridge shared with the other containers of its network, NATed to the
//! outside, reachable through published ports.
//!
//! Owns the pieces of one container's attachment, which the setup pipeline
//! ([`crate::flow`]) runs as steps: the network's bridge and nftables table
//! ([`ensure_bridge`], created on first use under a per-network lock), the
//! lease ([`lease`]), the veth pair (the peer created directly inside the
//! namespace, never moved) and its address and route ([`configure_container_end`])
//! over rtnetlink, the forwards in the network's table ([`firewall`]).
//! Never runs `ip` or `nft`.
//!
//! The pipeline's teardown removes the forwards first, then the netns it
//! created (which takes the veth pair with it: the kernel destroys them
//! asynchronously, so the caller does not wait ~30 ms for it) or the veth it
//! put into a namespace someone else made, then the lease and the record;
//! every step runs even when an earlier one fails.

pub mod firewall;
pub mod lease;
pub mod manage;
pub mod netlink;
pub mod network;
pub mod plan;

use crate::bridge::lease::{LeaseError, LeaseStore};
use crate::bridge::netlink::{LinkState, Netlink, NetlinkError};
use crate::bridge::network::NetworkDef;
use crate::model::ifname::IfName;
use crate::ns::netns::NetnsError;
use crate::state::paths::Paths;
use crate::state::store::StoreError;
use firewall::{Firewall, FirewallError};
use plan::PlanError;
use std::net::Ipv4Addr;
use std::os::fd::BorrowedFd;

/// Errors of bridge networking, named for the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The plan was refused.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Leasing or releasing an address failed.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// Creating or configuring the bridge failed.
    #[error("set up bridge {bridge}")]
    Bridge {
        /// Bridge.
        bridge: String,
        /// Cause.
        #[source]
        source: NetlinkError,
    },
    /// Creating, configuring or removing the container's links failed.
    #[error("{op} for container {id}")]
    Link {
        /// What was being done.
        op: &'static str,
        /// Container id.
        id: String,
        /// Cause.
        #[source]
        source: NetlinkError,
    },
    /// The container end of the veth pair is missing after creation.
    #[error("container {id} has no link {name} after creating it")]
    MissingPeer {
        /// Link name.
        name: String,
        /// Container id.
        id: String,
    },
    /// The named netns failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// nftables failed.
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    /// The record could not be written or removed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Make sure the network's bridge (with its address, up) and nftables
/// table exist, and forwarding is on. Idempotent; holds the network's setup
/// lock. The table is checked with one netlink request (no ruleset fetch)
/// and built only when missing or built by another version (then rebuilt
/// with its forwards, in one transaction): rebuilding flushes its chains,
/// and freeing the old rules is what makes a later socket close wait out
/// an RCU grace period.
pub fn ensure_bridge(
    paths: &Paths,
    def: &NetworkDef,
    host: &mut Netlink,
    fw: &mut Firewall,
) -> Result<u32, BridgeError> {
    let leases = LeaseStore::new(&paths.run_dir);
    let _lock = leases.lock_setup(def.name.as_str())?;
    let bridge = def.bridge.to_string();
    let br_err = |source| BridgeError::Bridge { bridge: bridge.clone(), source };
    let (index, up) = match host.link_brief(&bridge).map_err(br_err)? {
        Some(s) => (s.index, s.up),
        None => {
            let index = host.create_bridge(&bridge).map_err(br_err)?;
            if let Some(mtu) = def.options.mtu {
                host.set_mtu(index, mtu).map_err(br_err)?;
            }
            (index, false)
        }
    };
    let has_addr =
        host.ipv4_addresses().map_err(br_err)?.iter().any(|a| a.ifindex == index && a.address == def.gateway);
    if !has_addr {
        host.add_address(index, def.gateway, def.subnet.prefix()).map_err(br_err)?;
    }
    if !up {
        host.set_up(index).map_err(br_err)?;
    }
    firewall::enable_ip_forward(&paths.proc_root)?;
    firewall::enable_route_localnet(&paths.proc_root, &bridge)?;
    fw.converge_network(&plan::rules_for(def))?;
    let marker = paths.run_dir.join("leases").join(format!("{}.forward-accept", def.name));
    match firewall::hostfw::allow_forwarding(fw, def.name.as_str(), &bridge, &marker) {
        Ok(firewall::hostfw::HostFirewall::Firewalld) => log::warn!(
            "firewalld is active: its forward chain may reject traffic of bridge {bridge}; run `firewall-cmd --permanent --zone=trusted --add-interface={bridge} && firewall-cmd --reload`"
        ),
        Ok(_) => {}
        Err(why) => {
            log::warn!("the host's iptables FORWARD policy is DROP and bridge {bridge} could not be let through: {why}")
        }
    }
    if let (Some(rules6), Some(gateway6)) = (plan::rules6_for(def), def.options.gateway6) {
        ensure_bridge6(paths, host, index, &rules6, gateway6, fw)?;
    }
    Ok(index)
}

/// The IPv6 side of a dual-stack network's bridge: IPv6 on (a host whose
/// default is `disable_ipv6=1` would refuse the address), the gateway
/// address, forwarding, and the `ip6` table.
fn ensure_bridge6(
    paths: &Paths,
    host: &mut Netlink,
    index: u32,
    rules6: &firewall::Network6Rules,
    gateway6: std::net::Ipv6Addr,
    fw: &mut Firewall,
) -> Result<(), BridgeError> {
    let br_err = |source| BridgeError::Bridge { bridge: rules6.bridge.clone(), source };
    let knob = paths.proc_root.join("sys/net/ipv6/conf").join(&rules6.bridge).join("disable_ipv6");
    if std::fs::read_to_string(&knob).is_ok_and(|v| v.trim() == "1") {
        std::fs::write(&knob, "0\n").map_err(|source| firewall::FirewallError::WriteSysctl { path: knob, source })?;
    }
    match host.add_address6(index, gateway6, rules6.subnet.prefix()) {
        Err(e) if !e.is_exists() => return Err(br_err(e)),
        _ => {}
    }
    firewall::enable_ipv6_forward(&paths.proc_root)?;
    if !fw.table6_exists(&rules6.name)? {
        fw.ensure_network6(rules6)?;
    }
    Ok(())
}

/// The container end of a veth pair, as an attach configures it.
#[derive(Debug, Clone, Copy)]
pub struct ContainerEnd<'a> {
    /// Its name inside the namespace.
    pub name: &'a IfName,
    /// Its address.
    pub address: Ipv4Addr,
    /// The subnet's prefix length.
    pub prefix: u8,
    /// The default route's next hop (`None`: no default route).
    pub gateway: Option<Ipv4Addr>,
    /// Its MTU, when set after creation.
    pub mtu: Option<u32>,
    /// Its IPv6 side on a dual-stack network.
    pub v6: Option<&'a plan::Plan6>,
}

/// Address and default route (when `end.gateway` is set) on the
/// container end of a veth pair, inside the namespace `netns`: the step
/// every attach (CLI run, secondary network, CNI ADD) shares. Returns
/// what the end's look-up told (index, hardware address, MTU), up.
pub fn configure_container_end(
    netns: BorrowedFd<'_>,
    end: &ContainerEnd<'_>,
    id: &str,
) -> Result<LinkState, BridgeError> {
    let mut inside = Netlink::open_in(netns).map_err(|source| BridgeError::Link {
        op: "open netlink in the netns",
        id: id.to_owned(),
        source,
    })?;
    configure_container_end_with(&mut inside, end, id)
}

/// [`configure_container_end`] over a netlink socket already open inside
/// the namespace (opening one there costs a thread that joins it).
pub fn configure_container_end_with(
    inside: &mut Netlink,
    end: &ContainerEnd<'_>,
    id: &str,
) -> Result<LinkState, BridgeError> {
    let link_err = |op: &'static str| move |source| BridgeError::Link { op, id: id.to_owned(), source };
    let mut state = inside
        .link_brief(end.name.as_str())
        .map_err(link_err("find the container end"))?
        .ok_or_else(|| BridgeError::MissingPeer { name: end.name.to_string(), id: id.to_owned() })?;
    let index = state.index;
    if let Some(mtu) = end.mtu {
        inside.set_mtu(index, mtu).map_err(link_err("set the container end's mtu"))?;
        state.mtu = mtu;
    }
    inside.add_address(index, end.address, end.prefix).map_err(link_err("add the container address"))?;
    crate::fault::point("bridge.address");
    match end.v6 {
        Some(v6) => {
            inside.add_address6(index, v6.address, v6.prefix).map_err(link_err("add the container's ipv6 address"))?
        }
        // An IPv4-only attachment: no link-local address either, whose
        // multicast the bridge would flood to every other container.
        None => inside.set_no_ipv6_autoconf(index).map_err(link_err("turn off the container end's ipv6 addresses"))?,
    }
    if !state.up {
        inside.set_up(index).map_err(link_err("set the container end up"))?;
        state.up = true;
    }
    if let Some(gw) = end.gateway {
        inside.add_default_route(gw).map_err(link_err("add the default route"))?;
        crate::fault::point("bridge.route");
    }
    if let Some(gw6) = end.v6.and_then(|v6| v6.gateway) {
        inside.add_default_route6(gw6).map_err(link_err("add the ipv6 default route"))?;
    }
    Ok(state)
}

//! Networks inside the holder, run by a helper that joined it
//! ([`super::join::inside`]): the network's bridge, address and nftables
//! table (NAT to pasta's interface, isolation from the user's other
//! networks) made on first use by the same code as root's bridges, a veth
//! pair whose peer is created directly in the container's namespace, the
//! container end addressed and routed. All over rtnetlink and nfnetlink.

use super::{HolderError, HolderState};
use crate::bridge::firewall::Firewall;
use crate::bridge::netlink::Netlink;
use crate::bridge::network::NetworkDef;
use crate::bridge::{ContainerEnd, configure_container_end_with, ensure_bridge};
use crate::model::ifname::IfName;
use crate::state::paths::Paths;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, BorrowedFd};

/// The MTU of a network in the holder when its definition sets none:
/// pasta's, so nothing is fragmented on the way out.
pub const HOLDER_MTU: u32 = 65520;

/// A network's definition as the holder builds it (its MTU defaulted to pasta's).
pub fn in_holder(def: &NetworkDef) -> NetworkDef {
    let mut def = def.clone();
    def.options.mtu = Some(def.options.mtu.unwrap_or(HOLDER_MTU));
    def
}

/// One container's attachment.
#[derive(Debug, Clone)]
pub struct AttachSpec<'a> {
    /// The network (as [`in_holder`] made it).
    pub def: &'a NetworkDef,
    /// The host end's name, in the holder.
    pub veth: &'a IfName,
    /// The container end's name.
    pub peer: &'a IfName,
    /// The container's address.
    pub address: Ipv4Addr,
    /// The run's id, for errors.
    pub id: &'a str,
    /// A container end of that name left by a dead holder is replaced (its
    /// peer may live on in the dead holder's network namespace, which a
    /// socket made there still holds).
    pub replace: bool,
}

/// Attach the container whose network namespace is `netns` (opened by the
/// caller, before the helper forks) to its network in the holder.
pub fn attach(paths: &Paths, state: &HolderState, spec: &AttachSpec<'_>, netns: BorrowedFd<'_>) -> Result<(), HolderError> {
    super::join::inside(state, &paths.proc_root, "attach to the network", || {
        attach_here(paths, spec, netns).map_err(|e| crate::flow::error_chain(&e))
    })
}

/// In the helper: bridge and table (idempotent), the veth pair, the container end.
fn attach_here(paths: &Paths, spec: &AttachSpec<'_>, netns: BorrowedFd<'_>) -> Result<(), crate::bridge::BridgeError> {
    let link = |op: &'static str| {
        let id = spec.id.to_owned();
        move |source| crate::bridge::BridgeError::Link { op, id, source }
    };
    if spec.replace {
        let mut inside = Netlink::open_in(netns).map_err(link("open netlink in the container's namespace"))?;
        if let Some(index) = inside.link_index(spec.peer.as_str()).map_err(link("find the old container end"))? {
            inside.delete_link_if_present(index).map_err(link("remove the old container end"))?;
        }
    }
    let mut host = Netlink::open().map_err(link("open netlink in the holder"))?;
    let mut fw = Firewall::new()?;
    let bridge = ensure_bridge(paths, spec.def, &mut host, &mut fw)?;
    let mtu = spec.def.options.mtu;
    let index = host
        .create_veth_mtu(spec.veth.as_str(), spec.peer.as_str(), netns.as_fd(), Some(bridge), mtu)
        .map_err(link("create veth"))?
        .index;
    host.set_port_up(index, false).map_err(link("set the holder's veth end up"))?;
    // The helper exits next: its sockets close with it, no janitor thread
    // to hand them to.
    std::mem::forget(fw);
    let v6 = crate::bridge::plan::Plan6::of(spec.def, spec.address, true);
    let end = ContainerEnd {
        name: spec.peer,
        address: spec.address,
        prefix: spec.def.subnet.prefix(),
        gateway: Some(spec.def.gateway),
        mtu: None,
        v6: v6.as_ref(),
    };
    // This helper is single-threaded and done with the holder's namespace:
    // it moves into the container's itself (no thread to open a socket there).
    nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
        link("join the container's network namespace")(crate::bridge::netlink::NetlinkError::EnterNetns {
            source: e.into(),
        })
    })?;
    let mut inside = Netlink::open().map_err(link("open netlink in the container's namespace"))?;
    configure_container_end_with(&mut inside, &end, spec.id).map(drop)
}

/// Remove a network's bridge and table from the holder (`network rm`).
pub fn remove(paths: &Paths, state: &HolderState, def: &NetworkDef) -> Result<(), HolderError> {
    super::join::inside(state, &paths.proc_root, "remove the network", || {
        crate::bridge::manage::remove_host_side(paths, def).map_err(|e| crate::flow::error_chain(&e))
    })
}

/// Remove the holder's end `name` of an attachment's veth pair (its peer
/// goes with it). Nothing to do when the holder is not running: its network
/// namespace took the pair with it.
pub fn remove_veth(paths: &Paths, name: &str) -> Result<(), HolderError> {
    let Some(state) = super::HolderDir::new(&paths.run_dir).read()? else { return Ok(()) };
    if !state.alive(&paths.proc_root) {
        return Ok(());
    }
    super::join::inside(&state, &paths.proc_root, "remove the attachment's veth", || {
        Netlink::open().and_then(|mut host| host.delete_link_named(name)).map_err(|e| crate::flow::error_chain(&e))
    })
}

/// Whether the network namespace `netns` is owned by the user namespace
/// at `userns` (compared by device and inode).
pub fn owned_by(netns: BorrowedFd<'_>, userns: &std::path::Path) -> std::io::Result<bool> {
    Ok(crate::state::record::NsId::of_file(owner(netns)?)? == crate::state::record::NsId::of(userns)?)
}

/// The user namespace that owns the network namespace `netns` (`NS_GET_USERNS`).
pub fn owner(netns: BorrowedFd<'_>) -> std::io::Result<std::os::fd::OwnedFd> {
    const NS_GET_USERNS: libc::c_ulong = 0xb701;
    // SAFETY: NS_GET_USERNS takes no argument and returns a new descriptor,
    // owned at once below.
    let fd = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&netns), NS_GET_USERNS as _) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the ioctl just returned this descriptor; nothing else owns it.
    Ok(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

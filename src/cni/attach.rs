//! ADD, DEL and CHECK: a container's attachment to a bridge network, made
//! of the same steps as the CLI's bridge attach (`crate::bridge`): a lease
//! (ours, or an IPAM plugin's address), the network's bridge and nftables
//! table (`ensure_bridge`), a veth pair whose container end is created
//! directly inside `CNI_NETNS` as `CNI_IFNAME` and configured by
//! `configure_container_end`, and the published ports as elements of the
//! network's forward maps. The record is written before anything is
//! created; DEL undoes every step, tolerating each one already gone, and
//! removes the record last.

use super::config::{Addressing, NetConf};
use super::ipam;
use super::record::{CniRecord, CniStore, lease_id, veth_name};
use super::result::{CniResult, Interface, IpConfig, Route, mac_string};
use super::spec::{CniError, Code, Params};
use crate::bridge::firewall::Firewall;
use crate::bridge::lease::{Lease, LeaseError, LeaseStore};
use crate::bridge::netlink::Netlink;
use crate::bridge::network::NetworkDef;
use crate::bridge::{BridgeError, ContainerEnd, configure_container_end_with, ensure_bridge, plan};
use crate::host::procfs::ProcessId;
use crate::model::cidr::Ipv4Net;
use crate::model::ifname::IfName;
use crate::state::paths::Paths;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;

fn host(e: impl std::error::Error) -> CniError {
    CniError::new(Code::HostFailure, e.to_string(), super::error_chain(&e))
}

fn bridge_err(e: BridgeError) -> CniError {
    match e {
        BridgeError::Lease(l) => lease_err(l),
        other => host(other),
    }
}

fn lease_err(e: LeaseError) -> CniError {
    let code = match e {
        // DELs in flight will free addresses: the spec's "try again later".
        LeaseError::Exhausted(_) => Code::TryAgainLater,
        LeaseError::Taken { .. } | LeaseError::NotAssignable { .. } => Code::InvalidNetworkConfig,
        _ => Code::IoFailure,
    };
    CniError::new(code, e.to_string(), super::error_chain(&e))
}

/// A netlink socket inside `ns`, opened by the calling thread itself: it
/// joins `ns`, opens the socket and returns to its own namespace. That
/// saves the thread [`Netlink::open_in`] starts (0.2-2 ms on a busy host),
/// which matters in a plugin that lives for one call. A thread that could
/// not return would act in the container's namespace: the process aborts.
fn netlink_inside(ns: &File) -> Result<Netlink, CniError> {
    use nix::sched::{CloneFlags, setns};
    let home = File::open("/proc/thread-self/ns/net").map_err(host)?;
    setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
        .map_err(|e| CniError::new(Code::InvalidEnvironment, "CNI_NETNS is not a network namespace", e.to_string()))?;
    let opened = Netlink::open();
    if let Err(e) = setns(home.as_fd(), CloneFlags::CLONE_NEWNET) {
        eprintln!("pelagos-net-cni: cannot return to the host's network namespace: {e}");
        std::process::abort();
    }
    opened.map_err(host)
}

fn open_netns(path: &str) -> Result<File, CniError> {
    File::open(path).map_err(|e| {
        CniError::new(Code::InvalidEnvironment, format!("CNI_NETNS {path} cannot be opened"), e.to_string())
    })
}

/// The address an attachment gets: leased by us, or by the IPAM plugin.
struct Address {
    ip: Ipv4Addr,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    /// The IPAM plugin's DNS settings, passed on in our result (for the
    /// runtime; the plugin configures no resolver).
    dns: serde_json::Value,
}

fn me() -> ProcessId {
    ProcessId::of(std::path::Path::new("/proc"), std::process::id()).unwrap_or(ProcessId::unread(std::process::id()))
}

/// ADD: attach and return the result.
pub fn add(params: &Params, conf: &NetConf, paths: &Paths, stdin: &[u8]) -> Result<CniResult, CniError> {
    let netns_path = params.netns.as_deref().unwrap_or_default();
    let ns = open_netns(netns_path)?;
    let ifname = IfName::new(&params.ifname)
        .map_err(|e| CniError::new(Code::InvalidEnvironment, "CNI_IFNAME is refused", e.to_string()))?;
    let mut inside = netlink_inside(&ns)?;
    if inside.link_index(ifname.as_str()).map_err(host)?.is_some() {
        return Err(CniError::new(
            Code::InvalidEnvironment,
            format!("interface {ifname} already exists in {netns_path}"),
            "CNI_IFNAME must name an interface the container does not have yet",
        ));
    }
    let store = CniStore::new(&paths.run_dir);
    if store.read(conf.name.as_str(), &params.container_id, &params.ifname).map_err(host)?.is_some() {
        return Err(CniError::new(
            Code::InvalidEnvironment,
            format!("container {} already has {} on network {}", params.container_id, params.ifname, conf.name),
            "DEL it first",
        ));
    }
    // The address first: with a delegated IPAM plugin it also tells the subnet.
    let (def, addr) = match &conf.addressing {
        Addressing::Delegate { plugin } => {
            let res = ipam::exec(plugin, "ADD", &params.path, stdin)?.unwrap_or_default();
            let ip = res.ips.first().ok_or_else(|| {
                CniError::new(Code::InvalidNetworkConfig, format!("IPAM plugin {plugin} gave no IPv4 address"), "")
            })?;
            let subnet = Ipv4Net::truncating(ip.address, ip.prefix).map_err(host)?;
            let gateway = ip.gateway.unwrap_or_else(|| subnet.first_host());
            let def = super::network::resolve(&paths.config_dir, conf, Some(subnet), Some(gateway));
            let def = def.inspect_err(|_| {
                let _ = ipam::exec(plugin, "DEL", &params.path, stdin);
            })?;
            (def, Address { ip: ip.address, subnet, gateway, dns: res.dns.clone() })
        }
        Addressing::Leases { subnet, gateway } => {
            let def = super::network::resolve(&paths.config_dir, conf, *subnet, *gateway)?;
            let want = params.args.get("IP").map(|s| s.parse::<Ipv4Addr>()).transpose().map_err(|e| {
                CniError::new(Code::InvalidEnvironment, "CNI_ARGS IP is not an IPv4 address", e.to_string())
            })?;
            let lease = Lease { id: lease_id(&params.container_id, &params.ifname), owner: me(), cni: true };
            let ip = LeaseStore::new(&paths.run_dir).allocate_lease(&def, &lease, want).map_err(lease_err)?;
            (def.clone(), Address { ip, subnet: def.subnet, gateway: def.gateway, dns: serde_json::json!({}) })
        }
    };
    crate::fault::point("cni.leased");
    let record = CniRecord {
        network: def.name.to_string(),
        container_id: params.container_id.clone(),
        ifname: params.ifname.clone(),
        netns: netns_path.to_owned(),
        veth: veth_name(&params.container_id, &params.ifname),
        address: addr.ip,
        prefix: addr.subnet.prefix(),
        gateway: addr.gateway,
        ports: conf.ports.clone(),
        ipam: match &conf.addressing {
            Addressing::Delegate { plugin } => Some(plugin.clone()),
            Addressing::Leases { .. } => None,
        },
        created_by: me(),
    };
    if let Err(e) = store.write(&record) {
        undo(paths, &record, params, stdin);
        return Err(host(e));
    }
    crate::fault::point("cni.recorded");
    match build(paths, &def, conf, &record, (&ns, &mut inside), &ifname) {
        Ok(result) => Ok(CniResult { dns: addr.dns, ..result }),
        Err(e) => {
            undo(paths, &record, params, stdin);
            Err(e)
        }
    }
}

/// The attach itself, after the address and the record.
fn build(
    paths: &Paths,
    def: &NetworkDef,
    conf: &NetConf,
    r: &CniRecord,
    (ns, inside): (&File, &mut Netlink),
    ifname: &IfName,
) -> Result<CniResult, CniError> {
    let mut host_nl = Netlink::open().map_err(host)?;
    let mut fw = Firewall::new().map_err(host)?;
    let bridge = ensure_bridge(paths, def, &mut host_nl, &mut fw).map_err(bridge_err)?;
    crate::fault::point("cni.bridge-ready");
    let veth = create_veth(&mut host_nl, r, ifname, ns, bridge, conf.mtu.or(def.options.mtu))?;
    crate::fault::point("cni.veth");
    host_nl.set_up(veth).map_err(host)?;
    if conf.hairpin {
        host_nl.set_hairpin(veth).map_err(host)?;
    }
    let end = ContainerEnd {
        name: ifname,
        address: r.address,
        prefix: r.prefix,
        gateway: conf.is_gateway.then_some(r.gateway),
        // Set when the pair is created; IPv4 only (a dual-stack network's
        // IPv6 side is not offered over CNI).
        mtu: None,
        v6: None,
    };
    configure_container_end_with(inside, &end, &r.container_id).map_err(bridge_err)?;
    crate::fault::point("cni.configured");
    let fwds = plan::forwards(r.address, &r.ports)
        .map_err(|e| CniError::new(Code::InvalidNetworkConfig, e.to_string(), ""))?;
    if !fwds.is_empty() {
        fw.add_forwards(def.name.as_str(), &fwds).map_err(|e| {
            CniError::new(Code::InvalidNetworkConfig, "a published host port is taken", super::error_chain(&e))
        })?;
        crate::fault::point("cni.forwards");
    }
    let link = |nl: &mut Netlink, name: &str| nl.link_mac_mtu(name).map_err(host).map(|m| m.unwrap_or(([0; 6], 0)));
    let (br_mac, br_mtu) = link(&mut host_nl, def.bridge.as_str())?;
    let (veth_mac, veth_mtu) = link(&mut host_nl, &r.veth)?;
    let (c_mac, c_mtu) = link(inside, ifname.as_str())?;
    let iface = |name: &str, mac, mtu, sandbox: Option<String>| Interface {
        name: name.to_owned(),
        mac: mac_string(mac),
        sandbox,
        mtu: Some(mtu),
    };
    Ok(CniResult {
        interfaces: vec![
            iface(def.bridge.as_str(), br_mac, br_mtu, None),
            iface(&r.veth, veth_mac, veth_mtu, None),
            iface(ifname.as_str(), c_mac, c_mtu, Some(r.netns.clone())),
        ],
        ips: vec![IpConfig { address: r.address, prefix: r.prefix, gateway: Some(r.gateway), interface: Some(2) }],
        routes: if conf.is_gateway { vec![Route { dst: "0.0.0.0/0".into(), gw: Some(r.gateway) }] } else { Vec::new() },
        dns: serde_json::json!({}),
    })
}

/// Undo an attachment, best effort, for a failed ADD.
fn undo(paths: &Paths, r: &CniRecord, params: &Params, stdin: &[u8]) {
    let _ = teardown(paths, r, &params.path, stdin);
}

/// Every step of undoing `r`, in reverse order of creation; each tolerates
/// its object already gone; all errors are returned together.
pub fn teardown(paths: &Paths, r: &CniRecord, cni_path: &[String], stdin: &[u8]) -> Result<(), CniError> {
    let mut errors: Vec<String> = Vec::new();
    crate::fault::point("cni.del.begin");
    if !r.ports.is_empty() {
        match plan::forwards(r.address, &r.ports) {
            Ok(fwds) => {
                if let Err(e) = Firewall::new().and_then(|mut fw| fw.remove_forwards(&r.network, &fwds)) {
                    errors.push(super::error_chain(&e));
                }
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    crate::fault::point("cni.del.forwards-removed");
    if let Err(e) = delete_veth(&r.veth) {
        errors.push(e);
    }
    crate::fault::point("cni.del.veth-removed");
    match &r.ipam {
        Some(plugin) => {
            if let Err(e) = ipam::exec(plugin, "DEL", cni_path, stdin) {
                errors.push(e.to_string());
            }
        }
        None => {
            let leases = LeaseStore::new(&paths.run_dir);
            let released = leases
                .remove_stale_temps(&r.network)
                .and_then(|_| leases.release_holder(&r.network, &lease_id(&r.container_id, &r.ifname)));
            if let Err(e) = released {
                errors.push(super::error_chain(&e));
            }
        }
    }
    crate::fault::point("cni.del.released");
    if let Err(e) = CniStore::new(&paths.run_dir).remove(&r.network, &r.container_id, &r.ifname) {
        errors.push(super::error_chain(&e));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            Code::HostFailure,
            format!("DEL of {} on {} left errors", r.container_id, r.network),
            errors.join("; "),
        ))
    }
}

/// Delete the host end (and so both ends) of a veth pair; absent is fine.
///
/// Decision: the deletion itself is left to the child the plugin forks as
/// it exits (`closer::defer_link_delete`): the kernel's `RTM_DELLINK` of a
/// veth waits out RCU grace periods (10-20 ms here), which would be most of
/// a DEL. The runtime deletes the container's namespace next anyway; an
/// ADD that meets the old host end of the same attachment still being
/// deleted removes it itself ([`create_veth`]).
///
/// The index is looked up with `if_nametoindex` (an ioctl that does not
/// take the rtnl lock, which a previous DEL's deletion may still hold),
/// and the deletion goes by index, so it can never hit a new link of the
/// same name.
fn delete_veth(name: &str) -> Result<(), String> {
    let cname = std::ffi::CString::new(name).map_err(|e| e.to_string())?;
    // SAFETY: a NUL-terminated name; the call only reads it.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index != 0 {
        crate::bridge::firewall::closer::defer_link_delete(index);
    }
    Ok(())
}

/// Create the veth pair of attachment `r`; an old host end of the same
/// attachment (a DEL's deferred deletion still under way, or a killed
/// ADD's) is deleted first: its name is derived from this attachment and
/// no record names it (ADD checked).
fn create_veth(
    nl: &mut Netlink,
    r: &CniRecord,
    ifname: &IfName,
    ns: &File,
    bridge: u32,
    mtu: Option<u32>,
) -> Result<u32, CniError> {
    match nl.create_veth_mtu(&r.veth, ifname.as_str(), ns.as_fd(), Some(bridge), mtu) {
        Err(e) if e.is_exists() => {
            if let Some(old) = nl.link_index(&r.veth).map_err(host)? {
                nl.delete_link(old).map_err(host)?;
            }
            nl.create_veth_mtu(&r.veth, ifname.as_str(), ns.as_fd(), Some(bridge), mtu).map_err(host)
        }
        other => other.map_err(host),
    }
}

/// DEL: undo the attachment; succeed when there is nothing (left) to undo.
pub fn del(params: &Params, conf: &NetConf, paths: &Paths, stdin: &[u8]) -> Result<(), CniError> {
    let store = CniStore::new(&paths.run_dir);
    let record = store.read(conf.name.as_str(), &params.container_id, &params.ifname).map_err(host)?;
    let record = match record {
        Some(r) => r,
        // No record: an ADD that died before writing it, or a repeated DEL.
        // Whatever such an ADD could have made is found by name.
        None => CniRecord {
            network: conf.name.to_string(),
            container_id: params.container_id.clone(),
            ifname: params.ifname.clone(),
            netns: params.netns.clone().unwrap_or_default(),
            veth: veth_name(&params.container_id, &params.ifname),
            address: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
            gateway: Ipv4Addr::UNSPECIFIED,
            ports: Vec::new(),
            ipam: match &conf.addressing {
                Addressing::Delegate { plugin } => Some(plugin.clone()),
                Addressing::Leases { .. } => None,
            },
            created_by: me(),
        },
    };
    teardown(paths, &record, &params.path, stdin)
}

/// CHECK: the attachment is as ADD left it, and `prevResult` agrees.
pub fn check(params: &Params, conf: &NetConf, paths: &Paths) -> Result<(), CniError> {
    let failed = |msg: String| CniError::new(Code::HostFailure, msg, "");
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::new(Code::InvalidNetworkConfig, "CHECK needs prevResult", ""))?;
    let prev = CniResult::parse(prev)?;
    let r = CniStore::new(&paths.run_dir)
        .read(conf.name.as_str(), &params.container_id, &params.ifname)
        .map_err(host)?
        .ok_or_else(|| {
            CniError::new(
                Code::UnknownContainer,
                format!("no attachment of {} to {}", params.container_id, conf.name),
                "",
            )
        })?;
    let ours = prev.interfaces.iter().position(|i| i.name == params.ifname && i.sandbox.is_some());
    let listed = prev.ips.iter().any(|ip| ip.address == r.address && (ip.interface.is_none() || ip.interface == ours));
    if !listed {
        return Err(failed(format!("prevResult does not list {}/{} on {}", r.address, r.prefix, params.ifname)));
    }
    let ns = open_netns(params.netns.as_deref().unwrap_or_default())?;
    let mut inside = Netlink::open_in(ns.as_fd()).map_err(host)?;
    let index = inside
        .link_index(&params.ifname)
        .map_err(host)?
        .ok_or_else(|| failed(format!("{} has no interface {}", r.netns, params.ifname)))?;
    let has_addr = inside
        .ipv4_addresses()
        .map_err(host)?
        .iter()
        .any(|a| a.ifindex == index && a.address == r.address && a.prefix == r.prefix);
    if !has_addr {
        return Err(failed(format!("{} lacks its address {}/{}", params.ifname, r.address, r.prefix)));
    }
    if conf.is_gateway {
        let routes = inside.ipv4_routes().map_err(host)?;
        if !routes.iter().any(|rt| rt.destination.prefix() == 0 && rt.gateway == Some(r.gateway)) {
            return Err(failed(format!("{} has no default route via {}", r.netns, r.gateway)));
        }
    }
    let mut host_nl = Netlink::open().map_err(host)?;
    if host_nl.link_index(&r.veth).map_err(host)?.is_none() {
        return Err(failed(format!("the host end {} is gone", r.veth)));
    }
    let fwds = plan::forwards(r.address, &r.ports).map_err(|e| failed(e.to_string()))?;
    if !fwds.is_empty() {
        let have = Firewall::new().and_then(|mut fw| fw.forwards(&r.network)).map_err(host)?;
        if let Some(missing) = fwds.iter().find(|f| !have.contains(f)) {
            return Err(failed(format!("published port {} is missing from the network's table", missing.host_port)));
        }
    }
    Ok(())
}

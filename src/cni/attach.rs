//! ADD: a container's attachment to a bridge network, planned and run by
//! the step pipeline every bridge attach goes through (`crate::flow`):
//! the published ports claimed, the record written, an address leased
//! (ours, or an IPAM plugin's), the network's bridge and nftables table
//! ensured, a veth pair whose container end is created directly inside
//! `CNI_NETNS` as `CNI_IFNAME`, its address and route, the forwards. The
//! plugin only adds what CNI asks beyond the CLI (the interface name, the
//! config's `mtu`, `hairpinMode` and `isGateway`) and turns the outcome
//! into the spec's result or error.

use super::config::{Addressing, NetConf};
use super::ipam;
use super::record::attachment_id;
use super::result::{CniResult, Interface, IpConfig, Route, mac_string};
use super::spec::{CniError, Code, Params};
use crate::bridge::BridgeError;
use crate::bridge::lease::LeaseError;
use crate::bridge::netlink::{LinkState, Netlink};
use crate::bridge::network::NetworkDef;
use crate::flow::RunError;
use crate::flow::exec::{BridgeWants, Exec};
use crate::flow::plan::{Given, Lifetime, OneNetwork, Request, TargetKind, plan};
use crate::flow::steps::Step;
use crate::host::probe::HostCaps;
use crate::host::procfs::ProcessId;
use crate::model::cidr::Ipv4Net;
use crate::model::config::NetworkConfig;
use crate::model::driver::PortDriver;
use crate::model::ifname::{IfName, veth_name};
use crate::model::mode::NetworkMode;
use crate::ns::target::OpenTarget;
use crate::state::paths::Paths;
use crate::state::record::{Anchor, RecordKind, Resource};
use crate::state::store::{Store, StoreError};
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

/// How long an ADD's steps may take (none waits for a helper).
const TIMEOUT: Duration = Duration::from_secs(10);

pub(super) fn host(e: impl std::error::Error) -> CniError {
    CniError::new(Code::HostFailure, e.to_string(), super::error_chain(&e))
}

fn lease_code(e: &LeaseError) -> Code {
    match e {
        // DELs in flight will free addresses: the spec's "try again later".
        LeaseError::Exhausted(_) => Code::TryAgainLater,
        LeaseError::Taken { .. } | LeaseError::NotAssignable { .. } => Code::InvalidNetworkConfig,
        _ => Code::IoFailure,
    }
}

/// The spec's error for a failed setup (its first error decides the code).
fn run_err(e: RunError) -> CniError {
    let first = match &e {
        RunError::Teardown(all) if !all.is_empty() => &all[0],
        other => other,
    };
    CniError::new(code_of(first), first.to_string(), super::error_chain(&e))
}

fn code_of(e: &RunError) -> Code {
    match e {
        RunError::Bridge(BridgeError::Lease(l)) => lease_code(l),
        // A published host port another run, container or host socket holds.
        RunError::PortCheck(_) | RunError::Refused(_) => Code::InvalidNetworkConfig,
        // An element of the same host port is in the table: published by
        // another container of this network (refused by the kernel).
        RunError::Bridge(BridgeError::Firewall(crate::bridge::firewall::FirewallError::AddForwards { .. })) => {
            Code::InvalidNetworkConfig
        }
        RunError::Bridge(BridgeError::Plan(_)) => Code::InvalidNetworkConfig,
        RunError::Store(_) => Code::IoFailure,
        _ => Code::HostFailure,
    }
}

/// A netlink socket inside `ns`, opened by the calling thread itself: it
/// joins `ns`, opens the socket and returns to its own namespace. That
/// saves the thread [`Netlink::open_in`] starts (0.2-2 ms on a busy host),
/// which matters in a plugin that lives for one call. A thread that could
/// not return would act in the container's namespace: the process aborts.
fn netlink_inside(ns: BorrowedFd<'_>) -> Result<Netlink, CniError> {
    use nix::sched::{CloneFlags, setns};
    let home = File::open("/proc/thread-self/ns/net").map_err(host)?;
    setns(ns, CloneFlags::CLONE_NEWNET)
        .map_err(|e| CniError::new(Code::InvalidEnvironment, "CNI_NETNS is not a network namespace", e.to_string()))?;
    let opened = Netlink::open();
    if let Err(e) = setns(home.as_fd(), CloneFlags::CLONE_NEWNET) {
        eprintln!("pelagos-net-cni: cannot return to the host's network namespace: {e}");
        std::process::abort();
    }
    opened.map_err(host)
}

/// Whether `ifname` is free in the namespace. A DEL of this very
/// attachment that just ran leaves the deletion of its veth pair to its
/// exiting child: until that child has run, the container end still holds
/// the name, and the host end (named after the attachment, which has no
/// record any more) is still there. Such a pair is deleted now, so an ADD
/// right after a DEL of the same container and interface works.
fn ifname_free(inside: &mut Netlink, ifname: &IfName, id: &str) -> Result<bool, CniError> {
    if inside.link_index(ifname.as_str()).map_err(host)?.is_none() {
        return Ok(true);
    }
    let mut on_host = Netlink::open().map_err(host)?;
    let Some(old) = on_host.link_index(veth_name(id).as_str()).map_err(host)? else { return Ok(false) };
    on_host.delete_link_if_present(old).map_err(host)?;
    Ok(inside.link_index(ifname.as_str()).map_err(host)?.is_none())
}

/// `CNI_NETNS`, opened (and identified, for the record).
pub(super) fn open_target(paths: &Paths, path: &str) -> Result<OpenTarget, CniError> {
    OpenTarget::open(std::path::Path::new(path), None, &paths.proc_root, 0).map_err(|e| {
        CniError::new(Code::InvalidEnvironment, format!("CNI_NETNS {path} cannot be opened"), super::error_chain(&e))
    })
}

/// The process making the call.
pub(super) fn me() -> ProcessId {
    ProcessId::of(std::path::Path::new("/proc"), std::process::id()).unwrap_or(ProcessId::unread(std::process::id()))
}

/// The state directory (created when missing).
pub(super) fn store(paths: &Paths) -> Result<Store, CniError> {
    Store::open(&paths.run_dir, nix::unistd::geteuid().as_raw()).map_err(|e| {
        CniError::new(
            Code::IoFailure,
            format!("state directory {} is unusable", paths.run_dir.display()),
            e.to_string(),
        )
    })
}

/// The network, and the address when an IPAM plugin gives it (its
/// result's DNS settings passed on in ours: the runtime's business).
struct Addressed {
    def: NetworkDef,
    delegated: Option<(Ipv4Addr, Resource)>,
    plugin: Option<String>,
    dns: serde_json::Value,
}

/// The network `conf` means; with a delegated IPAM plugin, its `ADD`
/// first (its address tells the subnet of a network made by this call).
/// The plugin's `DEL` undoes it if anything later fails.
fn address(params: &Params, conf: &NetConf, paths: &Paths, stdin: &[u8]) -> Result<Addressed, CniError> {
    match &conf.addressing {
        Addressing::Leases { subnet, gateway } => {
            let def = super::network::resolve(&paths.config_dir, conf, *subnet, *gateway)?;
            Ok(Addressed { def, delegated: None, plugin: None, dns: serde_json::json!({}) })
        }
        Addressing::Delegate { plugin } => {
            let bin = ipam::find(plugin, &params.path)?;
            let res = ipam::exec(plugin, "ADD", params, stdin)?.unwrap_or_default();
            let undo = || drop(ipam::exec(plugin, "DEL", params, stdin));
            let Some(ip) = res.ips.first() else {
                undo();
                return Err(CniError::new(
                    Code::InvalidNetworkConfig,
                    format!("IPAM plugin {plugin} gave no IPv4 address"),
                    "",
                ));
            };
            let subnet = Ipv4Net::truncating(ip.address, ip.prefix).map_err(host)?;
            let gateway = ip.gateway.unwrap_or_else(|| subnet.first_host());
            let def = super::network::resolve(&paths.config_dir, conf, Some(subnet), Some(gateway))
                .inspect_err(|_| undo())?;
            let resource = Resource::Ipam {
                plugin: bin,
                address: ip.address,
                env: ipam::env_of(params),
                config: String::from_utf8_lossy(stdin).into_owned(),
            };
            Ok(Addressed { def, delegated: Some((ip.address, resource)), plugin: Some(plugin.clone()), dns: res.dns })
        }
    }
}

/// The pipeline's plan of this ADD: the CLI's attach of `bridge:NAME` to
/// a given namespace, the address step swapped for a delegated one.
fn plan_add(
    params: &Params,
    conf: &NetConf,
    a: &Addressed,
    target: &OpenTarget,
) -> Result<crate::flow::plan::Plan, CniError> {
    let mut network = NetworkConfig::new(NetworkMode::Bridge(Some(a.def.name.clone())));
    network.ports = conf.ports.clone();
    network.port_driver = PortDriver::Nftables;
    let ip =
        params.args.get("IP").map(|s| s.parse::<Ipv4Addr>()).transpose().map_err(|e| {
            CniError::new(Code::InvalidEnvironment, "CNI_ARGS IP is not an IPv4 address", e.to_string())
        })?;
    let req = Request {
        network,
        fallback: None,
        ip,
        target: TargetKind::Given(Given::from(target)),
        lifetime: Lifetime::Detached,
        command: false,
    };
    // An explicit root bridge mode: the plan reads who we are, nothing else.
    let host_caps = HostCaps::uids_only(nix::unistd::geteuid().as_raw(), nix::unistd::getuid().as_raw());
    let mut planned = plan(&req, &host_caps, &OneNetwork(&a.def))
        .map_err(|e| CniError::new(Code::InvalidNetworkConfig, e.to_string(), super::error_chain(&e)))?;
    if let Some(plugin) = &a.plugin {
        for step in &mut planned.steps {
            if let Step::LeaseAddress { network, .. } = step {
                *step = Step::UseAddress { network: network.clone(), plugin: plugin.clone() };
            }
        }
    }
    Ok(planned)
}

/// ADD: attach and return the result.
pub fn add(params: &Params, conf: &NetConf, paths: &Paths, stdin: &[u8]) -> Result<CniResult, CniError> {
    let netns_path = params.netns.as_deref().unwrap_or_default();
    let target = open_target(paths, netns_path)?;
    let ifname = IfName::new(&params.ifname)
        .map_err(|e| CniError::new(Code::InvalidEnvironment, "CNI_IFNAME is refused", e.to_string()))?;
    let mut inside = netlink_inside(target.netns_fd())?;
    let id = attachment_id(conf.name.as_str(), &params.container_id, &params.ifname);
    let store = store(paths)?;
    match store.record(&id) {
        Err(StoreError::ReadRecord { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
        _ => {
            return Err(CniError::new(
                Code::InvalidEnvironment,
                format!("container {} already has {} on network {}", params.container_id, params.ifname, conf.name),
                "DEL it first",
            ));
        }
    }
    if !ifname_free(&mut inside, &ifname, &id)? {
        return Err(CniError::new(
            Code::InvalidEnvironment,
            format!("interface {ifname} already exists in {netns_path}"),
            "CNI_IFNAME must name an interface the container does not have yet",
        ));
    }
    let addressed = address(params, conf, paths, stdin)?;
    let undo_ipam = |a: &Addressed| {
        if let Some(plugin) = &a.plugin {
            let _ = ipam::exec(plugin, "DEL", params, stdin);
        }
    };
    let planned = plan_add(params, conf, &addressed, &target).inspect_err(|_| undo_ipam(&addressed))?;
    let mut exec = Exec::with_id(planned, paths, RecordKind::Attachment, TIMEOUT, id, me());
    exec.gc_first = false;
    exec.defer_links = true;
    exec.record.anchor = Anchor::Runtime { container_id: params.container_id.clone(), ifname: params.ifname.clone() };
    exec.record.target = Some(target.record());
    exec.given = Some(target);
    let Addressed { def, delegated, plugin, dns } = addressed;
    exec.bridge.wants = BridgeWants {
        peer: Some(ifname.clone()),
        mtu: conf.mtu,
        hairpin: conf.hairpin,
        default_route: Some(conf.is_gateway),
        // A dual-stack network's IPv6 side is not offered over CNI.
        ipv4_only: true,
        inside: Some(inside),
        delegated,
    };
    if let Err(e) = exec.run_steps() {
        // The address was never recorded: the plugin's DEL is ours to run.
        if exec.bridge.wants.delegated.is_some()
            && let Some(plugin) = &plugin
        {
            let _ = ipam::exec(plugin, "DEL", params, stdin);
        }
        return Err(run_err(e));
    }
    let result = result_of(&mut exec, &def, conf, &ifname, netns_path);
    exec.done();
    match result {
        Ok(r) => Ok(CniResult { dns, ..r }),
        Err(e) => {
            let _ = exec.teardown();
            Err(e)
        }
    }
}

/// The spec's result of a finished attach: the bridge, the host end and
/// the container end with their MACs and MTUs, the address on the
/// container end, the default route. The ends are as the setup made them
/// (the kernel's answer to the veth's creation, the container end's
/// look-up to configure it); the bridge is looked up now, after the host
/// end joined it (a bridge without an address of its own takes its
/// lowest port's, and its MTU follows its ports').
fn result_of(
    exec: &mut Exec,
    def: &NetworkDef,
    conf: &NetConf,
    ifname: &IfName,
    netns: &str,
) -> Result<CniResult, CniError> {
    let address = exec.lease.ok_or_else(|| host(RunError::NoNetwork))?;
    let veth = veth_name(exec.id()).to_string();
    let ends = exec.bridge.ends();
    let (Some(host_end), Some(container_end)) = (ends.host, ends.container) else {
        return Err(host(RunError::NoNetwork));
    };
    let nl = exec.bridge.host().ok_or_else(|| host(RunError::NoNetwork))?;
    let bridge = nl.link_brief(def.bridge.as_str()).map_err(host)?.unwrap_or_default();
    let iface = |name: &str, link: LinkState, sandbox: Option<String>| Interface {
        name: name.to_owned(),
        mac: mac_string(link.mac),
        sandbox,
        mtu: Some(link.mtu),
    };
    let gateway = def.gateway;
    Ok(CniResult {
        interfaces: vec![
            iface(def.bridge.as_str(), bridge, None),
            iface(&veth, host_end, None),
            iface(ifname.as_str(), container_end, Some(netns.to_owned())),
        ],
        ips: vec![IpConfig { address, prefix: def.subnet.prefix(), gateway: Some(gateway), interface: Some(2) }],
        routes: if conf.is_gateway { vec![Route { dst: "0.0.0.0/0".into(), gw: Some(gateway) }] } else { Vec::new() },
        dns: serde_json::json!({}),
    })
}

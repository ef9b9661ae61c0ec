//! CHECK: the attachment is as ADD left it (its record, the container
//! end's address and route, the host end, the forwards), and `prevResult`
//! agrees.

use super::attach::{host, open_target, store};
use super::config::NetConf;
use super::record::attachment_id;
use super::result::CniResult;
use super::spec::{CniError, Code, Params};
use crate::bridge::firewall::Firewall;
use crate::bridge::netlink::Netlink;
use crate::model::ifname::veth_name;
use crate::state::paths::Paths;
use crate::state::record::{Record, Resource};

fn failed(msg: String) -> CniError {
    CniError::new(Code::HostFailure, msg, "")
}

/// The attachment's record, or the spec's "unknown container".
fn record(params: &Params, conf: &NetConf, paths: &Paths) -> Result<Record, CniError> {
    let id = attachment_id(conf.name.as_str(), &params.container_id, &params.ifname);
    store(paths)?.record(&id).map_err(|e| {
        CniError::new(
            Code::UnknownContainer,
            format!("no attachment of {} to {}", params.container_id, conf.name),
            e.to_string(),
        )
    })
}

/// CHECK: see the module docs.
pub fn check(params: &Params, conf: &NetConf, paths: &Paths) -> Result<(), CniError> {
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::new(Code::InvalidNetworkConfig, "CHECK needs prevResult", ""))?;
    let prev = CniResult::parse(prev)?;
    let r = record(params, conf, paths)?;
    let (_, address) = r.lease().ok_or_else(|| failed(format!("attachment {} has no address", r.id)))?;
    let ours = prev.interfaces.iter().position(|i| i.name == params.ifname && i.sandbox.is_some());
    let listed = prev.ips.iter().find(|ip| ip.address == address && (ip.interface.is_none() || ip.interface == ours));
    let Some(listed) = listed else {
        return Err(failed(format!("prevResult does not list {address} on {}", params.ifname)));
    };
    let netns = params.netns.as_deref().unwrap_or_default();
    let target = open_target(paths, netns)?;
    let mut inside = Netlink::open_in(target.netns_fd()).map_err(host)?;
    let index = inside
        .link_index(&params.ifname)
        .map_err(host)?
        .ok_or_else(|| failed(format!("{netns} has no interface {}", params.ifname)))?;
    let has_addr = inside
        .ipv4_addresses()
        .map_err(host)?
        .iter()
        .any(|a| a.ifindex == index && a.address == address && a.prefix == listed.prefix);
    if !has_addr {
        return Err(failed(format!("{} lacks its address {address}/{}", params.ifname, listed.prefix)));
    }
    if conf.is_gateway
        && let Some(gw) = listed.gateway
        && !inside.ipv4_routes().map_err(host)?.iter().any(|rt| rt.destination.prefix() == 0 && rt.gateway == Some(gw))
    {
        return Err(failed(format!("{netns} has no default route via {gw}")));
    }
    let veth = veth_name(&r.id);
    if Netlink::open().and_then(|mut nl| nl.link_index(veth.as_str())).map_err(host)?.is_none() {
        return Err(failed(format!("the host end {veth} is gone")));
    }
    for res in &r.resources {
        if let Resource::Forwards { network, forwards } = res {
            let have = Firewall::new().and_then(|mut fw| fw.forwards(network)).map_err(host)?;
            if let Some(missing) = forwards.iter().find(|f| !have.contains(f)) {
                return Err(failed(format!(
                    "published port {} is missing from the network's table",
                    missing.host_port
                )));
            }
        }
    }
    Ok(())
}

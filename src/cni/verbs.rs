//! GC and STATUS (spec 1.1.0).
//!
//! GC gets the runtime's list of attachments that are still valid
//! (`cni.dev/valid-attachments`) and undoes, with DEL's steps, every
//! attachment of this network it has a record of that is not in the list;
//! then it releases our leases held by attachments outside the list that
//! have no record (an ADD killed between leasing and recording), and
//! removes host ends of veth pairs on the network's bridge that no
//! remaining record names (an ADD killed before its record was removed by
//! a DEL that itself died). Never anything of a listed attachment.
//!
//! STATUS answers whether an ADD can succeed now: the state directories
//! are usable, nftables answers, a delegated IPAM plugin is installed and
//! our subnet has a free address; otherwise code 50 with the reason.

use super::attach::teardown;
use super::config::{Addressing, Attachment, NetConf};
use super::record::{CniStore, lease_id};
use super::spec::{CniError, Code, Params};
use crate::bridge::firewall::Firewall;
use crate::bridge::lease::LeaseStore;
use crate::bridge::netlink::Netlink;
use crate::bridge::network::NetworkStore;
use crate::state::paths::Paths;
use std::collections::BTreeSet;

/// GC: see the module docs.
pub fn gc(params: &Params, conf: &NetConf, paths: &Paths, stdin: &[u8]) -> Result<(), CniError> {
    let valid: BTreeSet<Attachment> = conf.valid_attachments.clone().unwrap_or_default().into_iter().collect();
    let is_valid =
        |cid: &str, ifname: &str| valid.contains(&Attachment { container_id: cid.into(), ifname: ifname.into() });
    let net = conf.name.as_str();
    let store = CniStore::new(&paths.run_dir);
    let mut errors = Vec::new();
    let mut kept = BTreeSet::new();
    for entry in store.list(Some(net)).map_err(|e| CniError::new(Code::IoFailure, e.to_string(), ""))? {
        match entry {
            Ok(r) if is_valid(&r.container_id, &r.ifname) => {
                kept.insert(r.veth.clone());
            }
            Ok(r) => {
                if let Err(e) = teardown(paths, &r, &params.path, stdin) {
                    errors.push(e.to_string());
                }
            }
            Err(e) => errors.push(super::error_chain(&e)),
        }
    }
    if matches!(conf.addressing, Addressing::Leases { .. }) {
        let leases = LeaseStore::new(&paths.run_dir);
        let held = leases.leases(net).map_err(|e| CniError::new(Code::IoFailure, e.to_string(), ""))?;
        let valid_ids: BTreeSet<String> = valid.iter().map(|a| lease_id(&a.container_id, &a.ifname)).collect();
        for (_, lease) in held.into_iter().filter(|(_, l)| l.cni && !valid_ids.contains(&l.id)) {
            if let Err(e) = leases.release_holder(net, &lease.id) {
                errors.push(super::error_chain(&e));
            }
        }
    }
    if let Err(e) = store.remove_temps(net, |_| true) {
        errors.push(super::error_chain(&e));
    }
    if let Err(e) = LeaseStore::new(&paths.run_dir).remove_stale_temps(net) {
        errors.push(super::error_chain(&e));
    }
    if let Err(e) = stray_veths(paths, net, &kept) {
        errors.push(e);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(Code::HostFailure, format!("GC of network {net} left errors"), errors.join("; ")))
    }
}

/// Delete our veths (`pc` + 12 hex digits) on the network's bridge that no
/// kept record names.
fn stray_veths(paths: &Paths, net: &str, kept: &BTreeSet<String>) -> Result<(), String> {
    let Ok(def) = NetworkStore::new(&paths.config_dir)
        .load(&crate::model::ifname::NetworkName::new(net).map_err(|e| e.to_string())?)
    else {
        return Ok(());
    };
    let mut nl = Netlink::open().map_err(|e| e.to_string())?;
    let links = nl.links().map_err(|e| e.to_string())?;
    let Some(bridge) = links.iter().find(|l| l.name == def.bridge.as_str()).map(|l| l.index) else { return Ok(()) };
    for l in links.iter().filter(|l| l.master == Some(bridge)) {
        let ours = l.name.len() == 14 && l.name.starts_with("pc") && l.name[2..].chars().all(|c| c.is_ascii_hexdigit());
        if ours && !kept.contains(&l.name) {
            nl.delete_link(l.index).map_err(|e| super::error_chain(&e))?;
        }
    }
    Ok(())
}

/// STATUS: see the module docs.
pub fn status(params: &Params, conf: &NetConf, paths: &Paths) -> Result<(), CniError> {
    let unavailable = |msg: String, details: String| CniError::new(Code::NotAvailable, msg, details);
    crate::state::store::Store::open(&paths.run_dir, nix::unistd::geteuid().as_raw()).map_err(|e| {
        unavailable(format!("state directory {} is unusable", paths.run_dir.display()), super::error_chain(&e))
    })?;
    Firewall::new().map_err(|e| unavailable("nftables is not usable".into(), super::error_chain(&e)))?;
    match &conf.addressing {
        Addressing::Delegate { plugin } => {
            super::ipam::find(plugin, &params.path).map_err(|e| unavailable(e.msg, e.details))?;
        }
        Addressing::Leases { subnet, .. } => {
            let store = NetworkStore::new(&paths.config_dir);
            let def = store.load(&conf.name).ok();
            let subnet = subnet.or(def.as_ref().map(|d| d.subnet));
            if let Some(subnet) = subnet {
                let used = LeaseStore::new(&paths.run_dir).leases(conf.name.as_str()).map(|l| l.len()).unwrap_or(0);
                // Usable hosts less the gateway.
                if used as u64 + 1 >= u64::from(subnet.host_count()) {
                    return Err(unavailable(
                        format!("network {} has no free address left", conf.name),
                        format!("{used} leases in {subnet}"),
                    ));
                }
            }
        }
    }
    Ok(())
}

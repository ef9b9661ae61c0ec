//! GC and STATUS (spec 1.1.0).
//!
//! GC gets the runtime's list of attachments that are still valid
//! (`cni.dev/valid-attachments`) and undoes, with DEL's steps, every
//! attachment of this network that has a record and is not in the list;
//! then it runs the sweep `pelagos-net gc` runs (records of ADDs killed
//! half-way, leases whose owner died before recording them, half-written
//! files), and removes host ends of veth pairs on the network's bridge
//! that no record names (a setup killed between creating its pair and
//! recording it cannot happen: the record comes first; these are what a
//! crashed deletion left). Never anything of a listed attachment, nor of
//! a live CLI run.
//!
//! STATUS answers whether an ADD can succeed now: the state directories
//! are usable, nftables answers, a delegated IPAM plugin is installed and
//! our subnet has a free address; otherwise code 50 with the reason.

use super::config::{Addressing, Attachment, NetConf};
use super::spec::{CniError, Code, Params};
use crate::bridge::firewall::Firewall;
use crate::bridge::lease::LeaseStore;
use crate::bridge::netlink::Netlink;
use crate::bridge::network::NetworkStore;
use crate::model::mode::NetworkMode;
use crate::state::paths::Paths;
use crate::state::store::Store;
use std::collections::BTreeSet;

/// GC: see the module docs.
pub fn gc(_params: &Params, conf: &NetConf, paths: &Paths, _stdin: &[u8]) -> Result<(), CniError> {
    let valid: BTreeSet<Attachment> = conf.valid_attachments.clone().unwrap_or_default().into_iter().collect();
    let net = conf.name.as_str();
    let Some(store) = Store::open_existing(&paths.run_dir, nix::unistd::geteuid().as_raw())
        .map_err(|e| CniError::new(Code::IoFailure, e.to_string(), ""))?
    else {
        return Ok(());
    };
    let mode = NetworkMode::Bridge(Some(conf.name.clone()));
    let mut errors = Vec::new();
    let mut named = BTreeSet::new();
    let records = store.records().map_err(|e| CniError::new(Code::IoFailure, e.to_string(), ""))?;
    for record in records.into_iter().flatten() {
        let stale = record.mode == mode
            && record.cni().is_some_and(|(c, i)| {
                !valid.contains(&Attachment { container_id: c.to_owned(), ifname: i.to_owned() })
            });
        if !stale {
            named.insert(crate::model::ifname::veth_name(&record.id).to_string());
            continue;
        }
        if let Err(e) = super::remove::undo(paths, &store, record) {
            errors.push(format!("{}: {}", e.msg, e.details));
        }
    }
    match crate::flow::gc::gc(paths, false) {
        Ok(report) => {
            errors.extend(report.actions.into_iter().filter_map(|a| a.error.map(|e| format!("{}: {e}", a.what))))
        }
        Err(e) => errors.push(super::error_chain(&e)),
    }
    if let Err(e) = stray_veths(paths, net, &named) {
        errors.push(e);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(Code::HostFailure, format!("GC of network {net} left errors"), errors.join("; ")))
    }
}

/// Delete veths named as ours (`pv` + 12 hex digits) on the network's
/// bridge that no remaining record names.
fn stray_veths(paths: &Paths, net: &str, named: &BTreeSet<String>) -> Result<(), String> {
    let Ok(def) = NetworkStore::new(&paths.config_dir)
        .load(&crate::model::ifname::NetworkName::new(net).map_err(|e| e.to_string())?)
    else {
        return Ok(());
    };
    let mut nl = Netlink::open().map_err(|e| e.to_string())?;
    let links = nl.links().map_err(|e| e.to_string())?;
    let Some(bridge) = links.iter().find(|l| l.name == def.bridge.as_str()).map(|l| l.index) else { return Ok(()) };
    for l in links.iter().filter(|l| l.master == Some(bridge)) {
        let ours = l.name.len() == 14 && l.name.starts_with("pv") && l.name[2..].chars().all(|c| c.is_ascii_hexdigit());
        if ours && !named.contains(&l.name) {
            match nl.delete_link(l.index) {
                Err(e) if e.errno() != Some(nix::errno::Errno::ENODEV) => return Err(super::error_chain(&e)),
                _ => {}
            }
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
    // A static plugin builds tables with the nft command: STATUS says so
    // now rather than the first ADD of a network later.
    crate::bridge::firewall::engine::usable(crate::bridge::firewall::NftEngine::BUILT_IN)
        .map_err(|e| unavailable("nftables is not usable".into(), e.to_string()))?;
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

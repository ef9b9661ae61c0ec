//! Which pelagos-net network a CNI config means (the adapter between a CNI
//! config and the network definitions `pelagos-net network` manages).
//!
//! One name, one network: a config naming an existing network uses it and
//! must agree with it (bridge, subnet, gateway, masquerade), or ADD fails
//! with code 7 naming the difference; a config naming a new network
//! creates its definition (validated like `network create`: the subnet
//! overlaps no other network and nothing the host routes), after which the
//! CLI sees it too. Networks of different names share nothing.

use super::config::NetConf;
use super::spec::{CniError, Code};
use crate::bridge::netlink::Netlink;
use crate::bridge::network::{
    DEFAULT_NETWORK, NetworkDef, NetworkError, NetworkOptions, NetworkRequest, NetworkStore, default_network_def,
    plan_network,
};
use crate::model::cidr::Ipv4Net;
use std::net::Ipv4Addr;
use std::path::Path;

fn conflict(def: &NetworkDef, what: &str, have: String, want: String) -> CniError {
    CniError::new(
        Code::InvalidNetworkConfig,
        format!("network {} exists with {what} {have}; this config says {want}", def.name),
        "a network is one definition whichever tool made it: use its values, or another name",
    )
}

fn network_error(e: NetworkError) -> CniError {
    let code = match e {
        NetworkError::Io { .. } => Code::IoFailure,
        _ => Code::InvalidNetworkConfig,
    };
    CniError::new(code, e.to_string(), crate::cni::error_chain(&e))
}

/// Check that `def` agrees with everything `conf` says about it.
fn agree(def: &NetworkDef, conf: &NetConf, subnet: Option<Ipv4Net>, gateway: Option<Ipv4Addr>) -> Result<(), CniError> {
    if let Some(b) = &conf.bridge
        && *b != def.bridge
    {
        return Err(conflict(def, "bridge", def.bridge.to_string(), b.to_string()));
    }
    if let Some(s) = subnet
        && s != def.subnet
    {
        return Err(conflict(def, "subnet", def.subnet.to_string(), s.to_string()));
    }
    if let Some(g) = gateway
        && g != def.gateway
    {
        return Err(conflict(def, "gateway", def.gateway.to_string(), g.to_string()));
    }
    let masq = def.masquerade && !def.internal;
    if masq != conf.ip_masq {
        return Err(conflict(def, "ipMasq", masq.to_string(), conf.ip_masq.to_string()));
    }
    Ok(())
}

/// The network `conf` names: loaded (and checked against `conf`) or
/// created from it. `subnet`/`gateway` come from the config or, with a
/// delegated IPAM plugin, from its result.
pub fn resolve(
    config_dir: &Path,
    conf: &NetConf,
    subnet: Option<Ipv4Net>,
    gateway: Option<Ipv4Addr>,
) -> Result<NetworkDef, CniError> {
    let store = NetworkStore::new(config_dir);
    // A definition is replaced whole (renamed into place): an existing one
    // is read without the store's lock, which only creation needs.
    if let Ok(def) = store.load(&conf.name) {
        return agree(&def, conf, subnet, gateway).map(|()| def);
    }
    store
        .locked(|s| {
            let existing = match s.load(&conf.name) {
                Ok(def) => Some(def),
                Err(NetworkError::NotFound(_)) if conf.name.as_str() == DEFAULT_NETWORK => {
                    let def = default_network_def();
                    s.create(&def)?;
                    Some(def)
                }
                Err(NetworkError::NotFound(_)) => None,
                Err(e) => return Err(e),
            };
            if let Some(def) = existing {
                return Ok(Ok(def));
            }
            let mut all = s.list()?;
            if !all.iter().any(|d| d.name.as_str() == DEFAULT_NETWORK) {
                all.push(default_network_def());
            }
            let host_nets = Netlink::open().and_then(|mut nl| nl.host_networks()).map_err(|e| NetworkError::Io {
                op: "list the host's networks",
                path: "rtnetlink".into(),
                source: std::io::Error::other(e.to_string()),
            })?;
            let options = NetworkOptions { mtu: conf.mtu, ..Default::default() };
            let req = NetworkRequest { name: conf.name.clone(), subnet, gateway, internal: false, options };
            let mut def = match plan_network(&req, &all, &host_nets) {
                Ok(d) => d,
                Err(e) => return Ok(Err(network_error(e))),
            };
            if let Some(b) = &conf.bridge {
                if let Some(other) = all.iter().find(|d| d.bridge == *b) {
                    return Ok(Err(CniError::new(
                        Code::InvalidNetworkConfig,
                        format!("bridge {b} belongs to network {}", other.name),
                        "give this network its own bridge",
                    )));
                }
                def.bridge = b.clone();
            }
            def.masquerade = conf.ip_masq;
            s.create(&def)?;
            Ok(Ok(def))
        })
        .map_err(network_error)?
        .and_then(|def| agree(&def, conf, subnet, gateway).map(|()| def))
}

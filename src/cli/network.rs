//! `pelagos-net network ...`: named network definitions.

use super::error::{CliError as Fail, Exit, error_chain};
use super::{Context, output};
use pelagos_net::bridge::firewall::Firewall;
use pelagos_net::bridge::lease::LeaseStore;
use pelagos_net::bridge::netlink::Netlink;
use pelagos_net::bridge::network::{
    DEFAULT_NETWORK, NetworkDef, NetworkError, NetworkRequest, NetworkStore, default_network_def, plan_network,
};
use pelagos_net::bridge::plan::rules_for;
use pelagos_net::model::cidr::Ipv4Net;
use pelagos_net::model::ifname::NetworkName;
use pelagos_net::state::paths::Paths;
use std::net::Ipv4Addr;

/// Network subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum NetworkCmd {
    /// Create a bridge network.
    Create {
        /// Network name.
        name: NetworkName,
        /// Subnet (default: the next free /24 of 10.90.0.0/16).
        #[arg(long)]
        subnet: Option<Ipv4Net>,
        /// Gateway address (default: the subnet's first address).
        #[arg(long)]
        gateway: Option<Ipv4Addr>,
        /// No NAT to the outside.
        #[arg(long)]
        internal: bool,
    },
    /// List networks.
    Ls {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show a network as JSON, with its live leases.
    Inspect {
        /// Network name.
        name: NetworkName,
    },
    /// Remove a network (refused while containers are attached).
    Rm {
        /// Network name.
        name: NetworkName,
    },
    /// Remove every network without attached containers (except the default).
    Prune,
}

/// Networks the host already has: the networks of its addresses and the
/// destinations of its routes (the default route excluded).
fn host_networks() -> Result<Vec<Ipv4Net>, Fail> {
    let mut nl = Netlink::open().map_err(|e| Fail::new(super::error::EXIT_USAGE, error_chain(&e)))?;
    let mut nets: Vec<Ipv4Net> = nl
        .ipv4_addresses()
        .map_err(|e| Fail::new(super::error::EXIT_USAGE, error_chain(&e)))?
        .into_iter()
        .filter_map(|a| Ipv4Net::truncating(a.address, a.prefix).ok())
        .collect();
    let routes = nl.ipv4_routes().map_err(|e| Fail::new(super::error::EXIT_USAGE, error_chain(&e)))?;
    nets.extend(routes.into_iter().map(|r| r.destination).filter(|d| d.prefix() > 0));
    Ok(nets)
}

fn all_networks(store: &NetworkStore) -> Result<Vec<NetworkDef>, NetworkError> {
    let mut defs = store.list()?;
    if !defs.iter().any(|d| d.name.as_str() == DEFAULT_NETWORK) {
        defs.insert(0, default_network_def());
    }
    Ok(defs)
}

fn net_fail(e: NetworkError) -> Fail {
    let code = match e {
        NetworkError::NotFound(_) => 1,
        _ => 125,
    };
    Fail::new(code, error_chain(&e))
}

/// Live leases of a network: (address, container id).
fn attached(paths: &Paths, name: &str) -> Result<Vec<(Ipv4Addr, String)>, Fail> {
    let leases = LeaseStore::new(&paths.run_dir)
        .leases(name)
        .map_err(|e| Fail::new(super::error::EXIT_USAGE, error_chain(&e)))?;
    Ok(leases.into_iter().filter(|(_, l)| l.owner.is_alive(&paths.proc_root)).map(|(a, l)| (a, l.id)).collect())
}

/// Delete the bridge and the firewall table of `def` (absent ones are fine,
/// so a `network rm` killed halfway is finished by running it again: the
/// definition goes last).
fn remove_host_side(def: &NetworkDef) -> Result<(), Fail> {
    let mut nl = Netlink::open().map_err(|e| Fail::new(super::error::EXIT_USAGE, error_chain(&e)))?;
    if let Some(index) =
        nl.link_index(def.bridge.as_str()).map_err(|e| Fail::new(super::error::EXIT_USAGE, error_chain(&e)))?
    {
        nl.delete_link(index).map_err(|e| Fail::new(super::error::EXIT_USAGE, error_chain(&e)))?;
    }
    pelagos_net::fault::point("network.rm.bridge-deleted");
    let mut fw = Firewall::new().map_err(|e| Fail::new(super::error::EXIT_USAGE, error_chain(&e)))?;
    fw.delete_network(&rules_for(def).name).map_err(|e| Fail::new(super::error::EXIT_USAGE, error_chain(&e)))?;
    pelagos_net::fault::point("network.rm.table-deleted");
    Ok(())
}

fn remove(paths: &Paths, store: &NetworkStore, name: &NetworkName) -> Result<(), Fail> {
    if name.as_str() == DEFAULT_NETWORK {
        return Err(Fail::new(
            super::error::EXIT_USAGE,
            format!("{DEFAULT_NETWORK} is the default network and cannot be removed"),
        ));
    }
    let def = store.load(name).map_err(net_fail)?;
    let live = attached(paths, name.as_str())?;
    if !live.is_empty() {
        let ids: Vec<String> = live.iter().map(|(a, id)| format!("{id} ({a})")).collect();
        return Err(Fail::new(super::error::EXIT_USAGE, format!("network {name} is in use by {}", ids.join(", "))));
    }
    pelagos_net::fault::point("network.rm.checked");
    remove_host_side(&def)?;
    store.remove(name).map_err(net_fail)?;
    pelagos_net::fault::point("network.rm.removed");
    Ok(())
}

/// Run a network subcommand.
pub fn run_cmd(cmd: NetworkCmd, ctx: &Context) -> Result<Exit, Fail> {
    let paths = &ctx.paths;
    let store = NetworkStore::new(&paths.config_dir);
    match cmd {
        NetworkCmd::Create { name, subnet, gateway, internal } => {
            let host_nets = host_networks()?;
            let req = NetworkRequest { name, subnet, gateway, internal };
            let def = store
                .locked(|s| {
                    let def = plan_network(&req, &all_networks(s)?, &host_nets)?;
                    s.create(&def)?;
                    Ok(def)
                })
                .map_err(net_fail)?;
            output::outln(def.name.as_str())?;
        }
        NetworkCmd::Ls { json } => {
            let defs = all_networks(&store).map_err(net_fail)?;
            if json {
                output::json(&defs)?;
            } else {
                output::outln(&format!("{:<20} {:<18} {:<15} {:<15} INTERNAL", "NAME", "SUBNET", "GATEWAY", "BRIDGE"))?;
                for d in defs {
                    let (name, subnet, gw, br) =
                        (d.name.to_string(), d.subnet.to_string(), d.gateway.to_string(), d.bridge.to_string());
                    output::outln(&format!("{name:<20} {subnet:<18} {gw:<15} {br:<15} {}", d.internal))?;
                }
            }
        }
        NetworkCmd::Inspect { name } => {
            let def = if name.as_str() == DEFAULT_NETWORK {
                all_networks(&store).map_err(net_fail)?.remove(0)
            } else {
                store.load(&name).map_err(net_fail)?
            };
            let leases: Vec<serde_json::Value> = attached(paths, name.as_str())?
                .into_iter()
                .map(|(a, id)| serde_json::json!({ "address": a, "id": id }))
                .collect();
            let mut value = serde_json::to_value(&def).map_err(|e| Fail::new(1, format!("encoding {name}: {e}")))?;
            value["containers"] = serde_json::Value::Array(leases);
            output::json(&value)?;
        }
        NetworkCmd::Rm { name } => {
            remove(paths, &store, &name)?;
            output::outln(name.as_str())?;
        }
        NetworkCmd::Prune => {
            for def in store.list().map_err(net_fail)? {
                if def.name.as_str() != DEFAULT_NETWORK && attached(paths, def.name.as_str())?.is_empty() {
                    remove(paths, &store, &def.name)?;
                    output::outln(def.name.as_str())?;
                }
            }
        }
    }
    Ok(Exit::SUCCESS)
}

//! Named networks: persistent definitions (`<config>/networks/<name>.json`)
//! and the default network `pelagos0`.
//!
//! Owns the definition files: validation (names, subnet overlaps with other
//! networks and with what the host already routes), atomic no-clobber
//! creation under a directory lock, loading with errors that name the file.
//! Never touches links or firewall rules (see `bridge`).
//!
//! [`plan`](plan_network) validates a request purely; the store (`store`)
//! keeps the files.

mod plan;
mod store;

pub use plan::{address6_of, plan_network};
pub use store::{NetworkStore, bootstrap_default_network, default_network_def, ensure_network, peek_network_def};

use crate::model::cidr::Ipv4Net;
use crate::model::cidr6::Ipv6Net;
use crate::model::ifname::{IfName, NameError, NetworkName};
use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

/// Name of the default network.
pub const DEFAULT_NETWORK: &str = "pelagos0";
/// Bridge of the default network.
pub const BRIDGE_NAME: &str = "pelagos0";
/// Gateway (bridge address) of the default network.
pub const BRIDGE_GW: Ipv4Addr = Ipv4Addr::new(10, 90, 0, 1);
/// Subnet of the default network. 10.90/16 is chosen to stay clear of
/// docker's 172.17/16 and podman's 10.88/16 defaults.
pub const DEFAULT_SUBNET: &str = "10.90.0.0/24";
/// Pool that subnets of new networks are taken from, one /24 each.
pub const SUBNET_POOL: &str = "10.90.0.0/16";
/// Pool that `--ipv6` takes a /64 from: a unique local /48 of our own
/// (`fd70:656c:6167` spells "pelag"), clear of docker's and podman's.
pub const SUBNET6_POOL: &str = "fd70:656c:6167::/48";

/// A persistent network definition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NetworkDef {
    /// Network name.
    pub name: NetworkName,
    /// Subnet containers get addresses from.
    pub subnet: Ipv4Net,
    /// Gateway: the bridge's own address.
    pub gateway: Ipv4Addr,
    /// Bridge interface.
    pub bridge: IfName,
    /// No NAT to the outside (containers reach only each other and the host).
    #[serde(default)]
    pub internal: bool,
    /// Egress is masqueraded behind the host (a network that is not
    /// internal and does not masquerade is routed: its addresses must be
    /// reachable as they are, as in a CNI config with `"ipMasq": false`).
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub masquerade: bool,
    /// `network create` options beyond the addresses.
    #[serde(flatten)]
    pub options: NetworkOptions,
}

fn yes() -> bool {
    true
}

fn is_yes(b: &bool) -> bool {
    *b
}

/// What `network create` records besides subnet, gateway and NAT (podman's
/// `--ipv6` and IPv6 `--subnet`/`--gateway`, `--ip-range`, `-o mtu=N`,
/// `--label`, `--dns`, `--disable-dns`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct NetworkOptions {
    /// Dual stack: the network also has an IPv6 subnet (asked for with
    /// `--ipv6`, which picks a free ULA /64, or with an IPv6 `--subnet`).
    pub ipv6_enabled: bool,
    /// The IPv6 subnet. A container's IPv6 address is the subnet plus its
    /// IPv4 address's offset in the IPv4 subnet (`10.90.3.7` in
    /// `10.90.3.0/24` is `SUBNET6::7`), so the IPv4 lease makes it unique.
    pub subnet6: Option<Ipv6Net>,
    /// The bridge's IPv6 address (default: `SUBNET6::` plus the IPv4
    /// gateway's offset, `::1` usually).
    pub gateway6: Option<Ipv6Addr>,
    /// Addresses are handed out from this range only (inside the subnet);
    /// a requested `--ip` may lie anywhere in the subnet.
    pub ip_range: Option<Ipv4Net>,
    /// MTU of the bridge and of every container's veth pair (`None`: the kernel's 1500).
    pub mtu: Option<u32>,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// Resolvers the network's containers use instead of the host's.
    pub dns_servers: Vec<IpAddr>,
    /// No name resolution service for the network's containers.
    pub disable_dns: bool,
}

/// Smallest MTU an IPv4 link may have (RFC 791).
pub const MTU_MIN: u32 = 68;
/// Largest MTU pelagos-net sets (the kernel's limit for a veth).
pub const MTU_MAX: u32 = 65535;

/// What `network create` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRequest {
    /// Name.
    pub name: NetworkName,
    /// Subnet (`None`: the next free /24 of the pool).
    pub subnet: Option<Ipv4Net>,
    /// Gateway (`None`: the subnet's first host).
    pub gateway: Option<Ipv4Addr>,
    /// No NAT.
    pub internal: bool,
    /// Everything else `network create` records.
    pub options: NetworkOptions,
}

/// Errors of network definitions.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// A name was refused.
    #[error(transparent)]
    Name(#[from] NameError),
    /// No definition with that name.
    #[error("network {0} does not exist (see `pelagos-net network ls`)")]
    NotFound(String),
    /// A definition with that name exists.
    #[error("network {0} already exists")]
    Exists(String),
    /// The subnet overlaps another network's.
    #[error("subnet {subnet} overlaps network {other} ({other_subnet})")]
    OverlapsNetwork {
        /// Requested subnet.
        subnet: Ipv4Net,
        /// The other network.
        other: String,
        /// Its subnet.
        other_subnet: Ipv4Net,
    },
    /// The subnet overlaps an address or route the host has.
    #[error("subnet {subnet} overlaps {host_net}, which this host already routes or uses")]
    OverlapsHost {
        /// Requested subnet.
        subnet: Ipv4Net,
        /// The host's network.
        host_net: Ipv4Net,
    },
    /// The gateway is not a usable address of the subnet.
    #[error("gateway {gateway} is not a usable address of {subnet}")]
    BadGateway {
        /// Gateway.
        gateway: Ipv4Addr,
        /// Subnet.
        subnet: Ipv4Net,
    },
    /// The address range is not inside the subnet.
    #[error("ip range {range} is not inside subnet {subnet}")]
    RangeOutsideSubnet {
        /// The range.
        range: Ipv4Net,
        /// The subnet.
        subnet: Ipv4Net,
    },
    /// The IPv6 subnet has too few host bits to mirror the IPv4 subnet.
    #[error(
        "ipv6 subnet {subnet6} is too small for {subnet}: it needs at least {needed} host bits (a /{max} or larger)"
    )]
    Subnet6TooSmall {
        /// The IPv6 subnet.
        subnet6: Ipv6Net,
        /// The IPv4 subnet.
        subnet: Ipv4Net,
        /// Host bits needed.
        needed: u8,
        /// The longest prefix that fits.
        max: u8,
    },
    /// The IPv6 subnet overlaps another network's.
    #[error("ipv6 subnet {subnet6} overlaps network {other} ({other_subnet6})")]
    OverlapsNetwork6 {
        /// Requested subnet.
        subnet6: Ipv6Net,
        /// The other network.
        other: String,
        /// Its IPv6 subnet.
        other_subnet6: Ipv6Net,
    },
    /// The IPv6 gateway is outside the subnet or would be a container's address.
    #[error("ipv6 gateway {gateway6} is not usable in {subnet6}: {why}")]
    BadGateway6 {
        /// Gateway.
        gateway6: Ipv6Addr,
        /// Subnet.
        subnet6: Ipv6Net,
        /// Why.
        why: &'static str,
    },
    /// The IPv6 subnet holds an address this host already has.
    #[error("ipv6 subnet {subnet6} holds {address}, an address this host already has")]
    OverlapsHost6 {
        /// The subnet.
        subnet6: Ipv6Net,
        /// The host's address.
        address: Ipv6Addr,
    },
    /// No free /64 left in the IPv6 pool.
    #[error("no free /64 left in {0}; pass an IPv6 --subnet")]
    Pool6Exhausted(Ipv6Net),
    /// The MTU is out of range.
    #[error("mtu {0} is out of range ({MTU_MIN} to {MTU_MAX})")]
    BadMtu(u32),
    /// The subnet is too small for a gateway and one container.
    #[error("subnet {0} is too small (needs at least a /30)")]
    TooSmall(Ipv4Net),
    /// No free subnet left in the pool.
    #[error("no free /24 left in {0}; pass --subnet")]
    PoolExhausted(Ipv4Net),
    /// A definition file could not be read or written.
    #[error("{op} {path}")]
    Io {
        /// Operation.
        op: &'static str,
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A definition file is not valid JSON of the expected shape.
    #[error("network definition {path} is corrupted; fix or delete the file")]
    Corrupt {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
}

#[cfg(test)]
mod tests;

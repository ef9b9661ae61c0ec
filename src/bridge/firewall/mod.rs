//! NAT and port forwarding for bridge networks, with nftables, in-process.
//!
//! Owns one nftables table per bridge network, `table ip pelagos-<network>`,
//! and nothing else: it never flushes or edits another table, so it
//! coexists with the host's own firewall, docker's and podman's. A
//! network's table is built from script text, once per network, run
//! through libnftables ([`ffi::NftContext`]) in the calling process, or by
//! the `nft` command in a statically linked build ([`engine`]); a
//! container's forwards are one raw nfnetlink transaction
//! ([`nfnl`]), with no libnftables load and no ruleset fetch, so an attach
//! costs the same with 1 or 200 containers.
//!
//! # Shape
//!
//! - [`script`] is pure: it turns a [`NetworkRules`] or a list of [`Forward`]s
//!   into nft script text, golden-tested without root. The table carries a
//!   version in its comment ([`TABLE_VERSION`]).
//! - [`nfnl`] is pure: the nfnetlink messages of the per-container path
//!   (map elements, one table's version, one chain's policy), golden-tested.
//! - [`Firewall`] is the thin shell that runs both, in the network namespace
//!   it was created in; a table built by another version is rebuilt, its
//!   forwards kept, in one transaction.
//! - [`closer`] closes netfilter sockets where no caller waits for the
//!   kernel's grace period.
//! - [`hostfw`] deals with the host's own firewall (iptables `FORWARD DROP`,
//!   firewalld).
//! - [`sysctl`] writes the two per-namespace knobs the rules rely on
//!   (`ip_forward`, and `route_localnet` on the bridge).
//!
//! # Why maps
//!
//! The table's structure (chains and rules) depends only on the network; each
//! published port is one element of a map keyed by host port (or host
//! address and port) whose value is the container address and port. Adding or
//! removing a container is then `add element`/`delete element`: it never
//! rewrites rules, never re-reads the ruleset, and costs the same whether the
//! network has 1 or 200 containers. Four maps: TCP and UDP, each "any host
//! address" (`fwd_tcp_any`, key: port) and "one host address"
//! (`fwd_tcp_addr`, key: address . port); the address-specific map is
//! consulted first.
//!
//! # Which traffic is forwarded
//!
//! Only packets addressed to this host (`fib daddr type local`), in
//! `prerouting` (from outside and from containers) and in `output` (from the
//! host itself, including `127.0.0.1`). Then, in `postrouting`:
//!
//! - egress from the subnet leaving by another interface is masqueraded
//!   (when [`NetworkRules::masquerade`] is set);
//! - hairpin traffic (a container reaching a published port, DNAT'd back into
//!   the same subnet) is SNAT'd to the gateway, so the reply comes back
//!   through the host instead of straight to the client, which would drop it;
//! - DNAT'd traffic from `127.0.0.0/8` leaving by the bridge is SNAT'd to the
//!   gateway: a container cannot answer a loopback address. The kernel only
//!   routes such packets out of a non-loopback interface when
//!   `route_localnet` is on for it, hence [`enable_route_localnet`].
//!
//! Dual-stack networks also get `table ip6 pelagos-<network>` ([`ipv6`]):
//! NAT66 for egress and the same isolation, no IPv6 port forwards. Our
//! `isolation` chain only drops (between pelagos networks,
//! and all but published-port traffic of an internal network): an accept in
//! one base chain cannot override a drop in another table, so a host whose
//! iptables `FORWARD` chain drops by default gets accept rules for our
//! bridges there ([`hostfw`]).

pub mod closer;
pub mod engine;
pub mod ffi;
pub mod hostfw;
pub mod ipv6;
pub mod nfnl;
mod nfsock;
pub mod script;
mod shell;
pub mod sysctl;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::model::cidr::Ipv4Net;

pub use engine::{NftCommand, NftEngine};
pub use ffi::{NftContext, NftError};
pub use ipv6::Network6Rules;
pub use script::{
    TABLE_VERSION, add_forwards_script, delete_table_script, remove_forwards_script, table_name, table_script,
};
pub use shell::{Firewall, TableState};
pub use sysctl::{enable_ip_forward, enable_ipv6_forward, enable_route_localnet};

/// What a bridge network's table implements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRules {
    /// Network name (validated elsewhere: `[a-z0-9][a-z0-9_.-]{0,30}`); the
    /// table is `pelagos-<name>`.
    pub name: String,
    /// The network's subnet.
    pub subnet: Ipv4Net,
    /// The bridge interface the containers hang off.
    pub bridge: String,
    /// The bridge's own address in `subnet`: the source of hairpin and
    /// loopback-originated connections as containers see them.
    pub gateway: Ipv4Addr,
    /// Whether egress from the subnet is masqueraded behind the host.
    pub masquerade: bool,
    /// An internal network's bridge forwards nothing but published-port
    /// traffic; any other network forwards (masqueraded or routed as is),
    /// but never to another pelagos network's bridge.
    pub internal: bool,
}

pub use crate::model::port::Forward;

/// A forward from plain values, for the unit tests of this module's parts.
#[cfg(test)]
pub(crate) fn test_forward(
    host_ip: Option<[u8; 4]>,
    host_port: u16,
    proto: crate::model::port::PortProto,
    ip: [u8; 4],
    port: u16,
) -> Forward {
    Forward {
        host_ip: host_ip.map(Ipv4Addr::from),
        host_port,
        proto,
        container_ip: Ipv4Addr::from(ip),
        container_port: port,
    }
}

/// Errors of the firewall module.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// No nftables context could be created (no netfilter netlink in this
    /// kernel or namespace, or out of file descriptors).
    #[error("open an nftables context")]
    Open {
        /// Cause.
        #[source]
        source: NftError,
    },
    /// Creating or updating a network's table failed.
    #[error("set up nftables table for network {network}")]
    EnsureNetwork {
        /// Network name.
        network: String,
        /// nft's message.
        #[source]
        source: NftError,
    },
    /// Publishing ports failed; none of them was added.
    #[error("add port forwards to network {network}")]
    AddForwards {
        /// Network name.
        network: String,
        /// nft's message.
        #[source]
        source: NftError,
    },
    /// Some published ports could not be removed (the others were).
    #[error("remove port forwards from network {network}")]
    RemoveForwards {
        /// Network name.
        network: String,
        /// nft's messages, one line per failed forward.
        #[source]
        source: NftError,
    },
    /// Deleting a network's table failed.
    #[error("delete nftables table for network {network}")]
    DeleteNetwork {
        /// Network name.
        network: String,
        /// nft's message.
        #[source]
        source: NftError,
    },
    /// Listing a network's table (or the table names) failed.
    #[error("list nftables table for network {network}")]
    ListTable {
        /// Network name.
        network: String,
        /// nft's message.
        #[source]
        source: NftError,
    },
    /// Writing a sysctl under `/proc/sys` failed.
    #[error("write sysctl {path}")]
    WriteSysctl {
        /// The file written.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

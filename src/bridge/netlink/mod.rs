//! A small synchronous rtnetlink client: links, IPv4 addresses and IPv4
//! routes of one network namespace.
//!
//! Owns: one `NETLINK_ROUTE` socket per namespace ([`Netlink`]), opened
//! inside that namespace once. A netlink socket stays bound to the namespace
//! it was created in, so [`Netlink::open_in`] creates it on a short-lived
//! thread that has entered the target namespace; no thread of the caller
//! ever changes namespace.
//!
//! Every message is encoded and decoded with `netlink-packet-route`, never
//! by hand. Every request carries `NLM_F_REQUEST | NLM_F_ACK` and a fresh
//! sequence number; replies are matched by that number (stale replies of an
//! earlier, abandoned exchange are skipped), a non-zero `NLMSG_ERROR` becomes
//! a [`NetlinkError`] naming the operation and carrying the errno, and dumps
//! are read until `NLMSG_DONE` (and restarted when the kernel marks them
//! interrupted).
//!
//! Never does: run `ip`, change the calling thread's namespace, keep state
//! beyond the socket, or retry a failed change. It is synchronous on
//! purpose: each call is a few microseconds of kernel work, and a container
//! attach is a handful of calls.

use nix::errno::Errno;
use std::io;
use std::net::Ipv4Addr;

use crate::model::cidr::Ipv4Net;

mod addr;
mod link;
mod policy;
mod route;
mod socket;

pub use policy::{IpFamily, RoutedAddresses};
pub use socket::Netlink;
pub(crate) use socket::recv_datagram;

/// Errors of the rtnetlink client, one variant per failed operation.
///
/// `source` is an [`io::Error`]: for a refusal by the kernel it is the errno
/// of the `NLMSG_ERROR` reply (see [`NetlinkError::errno`]); for a socket
/// failure, the errno of the syscall; for an undecodable reply, an
/// [`io::ErrorKind::InvalidData`] error wrapping the decoder's error.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The rtnetlink socket could not be created in the current namespace.
    #[error("open rtnetlink socket")]
    Open {
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The helper thread could not enter the target network namespace.
    #[error("enter network namespace to open an rtnetlink socket")]
    EnterNetns {
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Looking up a link by name failed (a missing link is `Ok(None)`, not this).
    #[error("look up link {name}")]
    LinkIndex {
        /// Link name.
        name: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Creating a bridge failed.
    #[error("create bridge {name}")]
    CreateBridge {
        /// Bridge name.
        name: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Creating a veth pair failed.
    #[error("create veth {host} with peer {peer}")]
    CreateVeth {
        /// Host-side name.
        host: String,
        /// Peer name (inside the peer namespace).
        peer: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Setting a link up failed.
    #[error("set link {ifindex} up")]
    SetUp {
        /// Link index.
        ifindex: u32,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Setting a link's options (bridge port options, IPv6 address
    /// generation) failed.
    #[error("set options of link {ifindex}")]
    SetLinkOptions {
        /// Link index.
        ifindex: u32,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Enslaving a link to a master (bridge) failed.
    #[error("set master of link {ifindex} to {master}")]
    SetMaster {
        /// Link index.
        ifindex: u32,
        /// Master link index.
        master: u32,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Setting a link's MTU failed.
    #[error("set mtu of link {ifindex} to {mtu}")]
    SetMtu {
        /// Link index.
        ifindex: u32,
        /// The MTU.
        mtu: u32,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Adding an IPv4 address failed.
    #[error("add address {addr}/{prefix} to link {ifindex}")]
    AddAddress {
        /// Link index.
        ifindex: u32,
        /// Address.
        addr: Ipv4Addr,
        /// Prefix length.
        prefix: u8,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Adding an IPv6 address failed.
    #[error("add address {addr}/{prefix} to link {ifindex}")]
    AddAddress6 {
        /// Link index.
        ifindex: u32,
        /// Address.
        addr: std::net::Ipv6Addr,
        /// Prefix length.
        prefix: u8,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Adding the IPv6 default route failed.
    #[error("add default route via {gateway}")]
    AddDefaultRoute6 {
        /// Gateway.
        gateway: std::net::Ipv6Addr,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Adding the IPv4 default route failed.
    #[error("add default route via {gateway}")]
    AddDefaultRoute {
        /// Gateway.
        gateway: Ipv4Addr,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Deleting a link failed.
    #[error("delete link {ifindex}")]
    DeleteLink {
        /// Link index.
        ifindex: u32,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Dumping the links failed.
    #[error("list links")]
    ListLinks {
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Dumping the IPv4 addresses failed.
    #[error("list ipv4 addresses")]
    ListAddresses {
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Dumping the IPv4 routes failed.
    #[error("list ipv4 routes")]
    ListRoutes {
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Asking for the route to an address failed.
    #[error("get the route to {destination}")]
    GetRoute {
        /// The address.
        destination: std::net::IpAddr,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Adding a policy rule failed.
    #[error("add rule fwmark {mark:#x} lookup {table}")]
    AddRule {
        /// Firewall mark matched.
        mark: u32,
        /// Table looked up.
        table: u32,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Adding a `local` default route to a table failed.
    #[error("add local default route to table {table}")]
    AddLocalRoute {
        /// Table.
        table: u32,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Dumping the addresses of both families failed.
    #[error("list addresses")]
    ListAllAddresses {
        /// Cause.
        #[source]
        source: io::Error,
    },
}

impl NetlinkError {
    fn source_io(&self) -> &io::Error {
        match self {
            Self::Open { source }
            | Self::EnterNetns { source }
            | Self::LinkIndex { source, .. }
            | Self::CreateBridge { source, .. }
            | Self::CreateVeth { source, .. }
            | Self::SetUp { source, .. }
            | Self::SetLinkOptions { source, .. }
            | Self::SetMaster { source, .. }
            | Self::SetMtu { source, .. }
            | Self::AddAddress { source, .. }
            | Self::AddAddress6 { source, .. }
            | Self::AddDefaultRoute6 { source, .. }
            | Self::AddDefaultRoute { source, .. }
            | Self::DeleteLink { source, .. }
            | Self::ListLinks { source }
            | Self::ListAddresses { source }
            | Self::ListRoutes { source }
            | Self::GetRoute { source, .. }
            | Self::ListAllAddresses { source }
            | Self::AddRule { source, .. }
            | Self::AddLocalRoute { source, .. } => source,
        }
    }

    /// The errno behind this error (the kernel's `NLMSG_ERROR` code, or the
    /// failed syscall's), if there is one.
    pub fn errno(&self) -> Option<Errno> {
        self.source_io().raw_os_error().map(Errno::from_raw)
    }

    /// Whether the kernel refused because the object already exists (`EEXIST`).
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(Errno::EEXIST)
    }
}

/// What one link's message says of it: index, whether it is up, its
/// hardware address and MTU (from a look-up, or the kernel's echo of a
/// creation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkState {
    /// Interface index.
    pub index: u32,
    /// Whether it is administratively up (`IFF_UP`).
    pub up: bool,
    /// Hardware address (zero when it has none of six bytes).
    pub mac: [u8; 6],
    /// MTU.
    pub mtu: u32,
}

/// One IPv4 address of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrInfo {
    /// Index of the link that holds the address.
    pub ifindex: u32,
    /// The address (`IFA_LOCAL`, or `IFA_ADDRESS` when there is no local one).
    pub address: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

/// One IPv4 route of the main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteInfo {
    /// Destination network (`0.0.0.0/0` for the default route).
    pub destination: Ipv4Net,
    /// Next hop, for a route through a gateway.
    pub gateway: Option<Ipv4Addr>,
    /// Output interface index.
    pub oif: Option<u32>,
}

/// Where the kernel sends packets to one address (`ip route get`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteTo {
    /// Output interface index.
    pub oif: Option<u32>,
    /// Whether the address is this host's own (delivered locally).
    pub local: bool,
}

/// One link (network interface).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// `IFLA_INFO_KIND` (`"veth"`, `"bridge"`, ...), absent for devices such as `lo`.
    pub kind: Option<String>,
    /// Index of the master (bridge) the link is enslaved to.
    pub master: Option<u32>,
    /// Whether the link is administratively up (`IFF_UP`).
    pub up: bool,
}

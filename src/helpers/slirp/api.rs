//! Port forwards through slirp4netns's API socket, and which of our port
//! mappings it can express.
//!
//! The protocol (slirp4netns(1), "API SOCKET"): one JSON request per
//! connection, the client shuts down its write side, slirp4netns answers
//! `{"return": ...}` or `{"error": {"desc": ...}}` and closes. slirp4netns
//! "stops the world" while it handles a request, so every call has a timeout.
//!
//! # What slirp4netns 1.2.0 can forward (decided by testing it)
//!
//! - One IPv4 host address per forward (`host_addr`); an IPv6 one is
//!   answered "bad arguments.host_addr", so mappings with an IPv6 host IP
//!   are refused here, naming the mapping, before anything starts.
//! - No ranges: a range would be one forward per port with no atomicity, so
//!   a range mapping is refused rather than expanded or cut to its first port.
//! - A mapping without a host IP binds `0.0.0.0` only: unlike pasta, the
//!   port is not published on the host's IPv6 addresses
//!   ([`PortFeatures::wildcard_includes_ipv6`]).
//! - TCP and UDP, with one hole: libslirp sends a UDP reply to a client on
//!   the host's loopback back to the gateway (`10.0.2.2`), which only
//!   reaches the host's loopback when [`HostLoopback::Allowed`]; with the
//!   default `Blocked` the reply is lost (podman#4586). Clients that reach
//!   the host by any other address are answered either way. So a UDP
//!   mapping bound to a loopback address is refused while host loopback is
//!   blocked (it could never answer anyone), and a UDP mapping on every
//!   address gets a [`PortCaveat`] for the caller to print.
//!
//! Mapping is pure ([`forwards_for`], [`parse_reply`]); only [`ApiClient`] touches a socket.

use super::args::{GUEST_ADDR, HostLoopback};
use crate::model::port::{PortMapping, PortProto};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the slirp4netns backend can publish, for `plan` to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PortFeatures {
    /// A mapping may bind one host address (`127.0.0.1:8080:80`).
    pub host_ip: bool,
    /// The host address may be IPv6 (`[::1]:8080:80`).
    pub ipv6_host_ip: bool,
    /// Port ranges (`8000-8010:80-90`).
    pub ranges: bool,
    /// UDP ports (`5353:53/udp`).
    pub udp: bool,
    /// Without a host IP the port is also published on the host's IPv6 addresses.
    pub wildcard_includes_ipv6: bool,
    /// UDP replies reach clients on the host's loopback (with the default
    /// [`HostLoopback::Blocked`]; [`HostLoopback::Allowed`] makes it true).
    pub udp_loopback_clients: bool,
}

/// The port features of slirp4netns (1.2.0; the API has not changed since),
/// with host loopback blocked as this backend does by default.
pub fn supported_port_features() -> PortFeatures {
    PortFeatures {
        host_ip: true,
        ipv6_host_ip: false,
        ranges: false,
        udp: true,
        wildcard_includes_ipv6: false,
        udp_loopback_clients: false,
    }
}

/// A published port that works, but not for every client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortCaveat {
    /// UDP on every address while host loopback is blocked: clients on the
    /// host's loopback get no replies.
    UdpLoopbackClientsUnanswered {
        /// The mapping.
        mapping: PortMapping,
    },
}

impl std::fmt::Display for PortCaveat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UdpLoopbackClientsUnanswered { mapping } => write!(
                f,
                "{mapping}: slirp4netns does not answer UDP clients on the host's loopback while host loopback is \
                 blocked; clients using another host address are answered (use pasta for loopback UDP)"
            ),
        }
    }
}

/// What will not work for every client among `mappings` (for the caller to warn about).
pub fn port_caveats(mappings: &[PortMapping], host_loopback: HostLoopback) -> Vec<PortCaveat> {
    mappings
        .iter()
        .filter(|m| m.proto == PortProto::Udp && m.host_ip.is_none() && host_loopback == HostLoopback::Blocked)
        .map(|m| PortCaveat::UdpLoopbackClientsUnanswered { mapping: m.clone() })
        .collect()
}

/// One `add_hostfwd` request's arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct HostFwd {
    /// Protocol.
    pub proto: PortProto,
    /// Host address to bind (`0.0.0.0`: every IPv4 address).
    pub host_addr: Ipv4Addr,
    /// Host port.
    pub host_port: u16,
    /// Namespace address (pinned to the `--configure` address).
    pub guest_addr: Ipv4Addr,
    /// Namespace port.
    pub guest_port: u16,
}

impl std::fmt::Display for HostFwd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{} -> {}:{}/{}", self.host_addr, self.host_port, self.guest_addr, self.guest_port, self.proto)
    }
}

/// One entry of `list_hostfwd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct HostFwdEntry {
    /// The id `add_hostfwd` returned.
    pub id: u32,
    /// Protocol.
    pub proto: PortProto,
    /// Bound host address.
    pub host_addr: Ipv4Addr,
    /// Host port.
    pub host_port: u16,
    /// Namespace address.
    pub guest_addr: Ipv4Addr,
    /// Namespace port.
    pub guest_port: u16,
}

/// Errors of mapping ports onto slirp4netns and of talking to its API.
#[derive(Debug, thiserror::Error)]
pub enum SlirpApiError {
    /// A port range was asked for.
    #[error("slirp4netns cannot forward port ranges ({mapping}); publish single ports or use pasta")]
    PortRange {
        /// The offending mapping.
        mapping: PortMapping,
    },
    /// An IPv6 host address was asked for.
    #[error("slirp4netns forwards only from IPv4 host addresses ({mapping}); bind an IPv4 address or use pasta")]
    Ipv6HostIp {
        /// The offending mapping.
        mapping: PortMapping,
    },
    /// A UDP mapping bound to a loopback address while host loopback is blocked.
    #[error(
        "slirp4netns cannot answer UDP clients on the host's loopback while host loopback is blocked ({mapping}); \
         publish on another address, allow host loopback, or use pasta"
    )]
    UdpLoopbackBlocked {
        /// The offending mapping.
        mapping: PortMapping,
    },
    /// A mapping still asks for an ephemeral host port.
    #[error("port mapping {mapping} has no host port; resolve it before starting slirp4netns")]
    UnresolvedHostPort {
        /// The offending mapping.
        mapping: PortMapping,
    },
    /// The API socket could not be connected to.
    #[error("connect to slirp4netns api socket {}", .path.display())]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Sending the request or reading the reply failed (or timed out).
    #[error("{request} through slirp4netns api socket {}", .path.display())]
    Exchange {
        /// What was asked.
        request: String,
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The reply was not JSON.
    #[error("decode slirp4netns reply to {request}: {reply:?}")]
    Decode {
        /// What was asked.
        request: String,
        /// The reply as received.
        reply: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// slirp4netns refused the request.
    #[error("slirp4netns refused {request}: {desc}")]
    Refused {
        /// What was asked.
        request: String,
        /// Its `error.desc`.
        desc: String,
    },
    /// The reply was JSON but not of the documented shape.
    #[error("unexpected slirp4netns reply to {request}: {reply}")]
    UnexpectedReply {
        /// What was asked.
        request: String,
        /// The reply.
        reply: String,
    },
}

/// One [`HostFwd`] per mapping, in order, or the first mapping slirp4netns
/// cannot serve. Host ports must already be resolved.
pub fn forwards_for(mappings: &[PortMapping], host_loopback: HostLoopback) -> Result<Vec<HostFwd>, SlirpApiError> {
    mappings.iter().map(|m| forward_for(m, host_loopback)).collect()
}

fn forward_for(mapping: &PortMapping, host_loopback: HostLoopback) -> Result<HostFwd, SlirpApiError> {
    let host = mapping.host.ok_or_else(|| SlirpApiError::UnresolvedHostPort { mapping: mapping.clone() })?;
    if host.len() > 1 || mapping.container.len() > 1 {
        return Err(SlirpApiError::PortRange { mapping: mapping.clone() });
    }
    let host_addr = match mapping.host_ip {
        None => Ipv4Addr::UNSPECIFIED,
        Some(IpAddr::V4(v4)) => v4,
        Some(IpAddr::V6(_)) => return Err(SlirpApiError::Ipv6HostIp { mapping: mapping.clone() }),
    };
    if mapping.proto == PortProto::Udp && host_addr.is_loopback() && host_loopback == HostLoopback::Blocked {
        return Err(SlirpApiError::UdpLoopbackBlocked { mapping: mapping.clone() });
    }
    Ok(HostFwd {
        proto: mapping.proto,
        host_addr,
        host_port: host.start(),
        guest_addr: GUEST_ADDR,
        guest_port: mapping.container.start(),
    })
}

#[derive(serde::Serialize)]
struct Request<'a, A: serde::Serialize> {
    execute: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<A>,
}

#[derive(serde::Serialize)]
struct RemoveArgs {
    id: u32,
}

fn encode<A: serde::Serialize>(execute: &str, arguments: Option<A>) -> String {
    // Serialising plain structs of numbers, strings and addresses cannot fail.
    serde_json::to_string(&Request { execute, arguments }).unwrap_or_default()
}

/// The `add_hostfwd` request for `fwd`.
pub fn add_request(fwd: &HostFwd) -> String {
    encode("add_hostfwd", Some(fwd))
}

/// The `remove_hostfwd` request for `id`.
pub fn remove_request(id: u32) -> String {
    encode("remove_hostfwd", Some(RemoveArgs { id }))
}

/// The `list_hostfwd` request.
pub fn list_request() -> String {
    encode::<()>("list_hostfwd", None)
}

/// The value a reply returns, or slirp4netns's refusal. slirp4netns 1.2.0
/// answers `list_hostfwd` with a bare `{"entries": [...]}` (no `return`
/// wrapper, unlike its manual), so a bare object counts as the value.
pub fn parse_reply(request: &str, reply: &str) -> Result<serde_json::Value, SlirpApiError> {
    let value: serde_json::Value = serde_json::from_str(reply).map_err(|source| SlirpApiError::Decode {
        request: request.to_owned(),
        reply: reply.to_owned(),
        source,
    })?;
    let unexpected = || SlirpApiError::UnexpectedReply { request: request.to_owned(), reply: reply.to_owned() };
    let serde_json::Value::Object(mut obj) = value else { return Err(unexpected()) };
    if let Some(err) = obj.get("error") {
        let desc = err.get("desc").and_then(|d| d.as_str()).map_or_else(|| err.to_string(), str::to_owned);
        return Err(SlirpApiError::Refused { request: request.to_owned(), desc });
    }
    Ok(obj.remove("return").unwrap_or(serde_json::Value::Object(obj)))
}

/// A client of one slirp4netns API socket.
#[derive(Debug, Clone)]
pub struct ApiClient {
    path: PathBuf,
    timeout: Duration,
}

impl ApiClient {
    /// Default time allowed for connecting, sending and receiving.
    pub const TIMEOUT: Duration = Duration::from_secs(5);

    /// A client for the socket at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), timeout: Self::TIMEOUT }
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Publish one port; returns its forward id.
    pub fn add_hostfwd(&self, fwd: &HostFwd) -> Result<u32, SlirpApiError> {
        let what = format!("add_hostfwd {fwd}");
        let ret = self.call(&what, &add_request(fwd))?;
        let id = ret.get("id").and_then(|v| v.as_u64()).and_then(|v| u32::try_from(v).ok());
        id.ok_or_else(|| SlirpApiError::UnexpectedReply { request: what, reply: ret.to_string() })
    }

    /// Every active forward.
    pub fn list_hostfwd(&self) -> Result<Vec<HostFwdEntry>, SlirpApiError> {
        let what = "list_hostfwd".to_owned();
        let ret = self.call(&what, &list_request())?;
        let entries = ret.get("entries").cloned().unwrap_or(serde_json::Value::Null);
        serde_json::from_value(entries).map_err(|source| SlirpApiError::Decode {
            request: what,
            reply: ret.to_string(),
            source,
        })
    }

    /// Withdraw the forward with this id.
    pub fn remove_hostfwd(&self, id: u32) -> Result<(), SlirpApiError> {
        self.call(&format!("remove_hostfwd {id}"), &remove_request(id)).map(drop)
    }

    fn call(&self, what: &str, request: &str) -> Result<serde_json::Value, SlirpApiError> {
        let mut stream = UnixStream::connect(&self.path)
            .map_err(|source| SlirpApiError::Connect { path: self.path.clone(), source })?;
        let exchange = |source| SlirpApiError::Exchange { request: what.to_owned(), path: self.path.clone(), source };
        stream.set_read_timeout(Some(self.timeout)).map_err(exchange)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(exchange)?;
        // slirp4netns reads a request with a single read(2): send it in one write.
        stream.write_all(request.as_bytes()).map_err(exchange)?;
        stream.shutdown(Shutdown::Write).map_err(exchange)?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply).map_err(exchange)?;
        parse_reply(what, &reply)
    }
}

#[cfg(test)]
#[path = "api_tests.rs"]
mod tests;

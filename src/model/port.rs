//! Published-port specifications: the docker/podman grammar
//! `[[HOST_IP:][HOST_PORT]:]CONTAINER_PORT[/tcp|udp]`.
//!
//! Pure: no sockets, no filesystem. Parsing never guesses: an unknown
//! protocol, port 0, mismatched range lengths or trailing garbage is an error
//! that says what was wrong.
//!
//! # Accepted forms
//!
//! | spec | host ip | host ports | container ports |
//! |---|---|---|---|
//! | `80` | any | ephemeral | 80 |
//! | `8080:80` | any | 8080 | 80 |
//! | `127.0.0.1:8080:80` | 127.0.0.1 | 8080 | 80 |
//! | `127.0.0.1::80` | 127.0.0.1 | ephemeral | 80 |
//! | `[::1]:8080:80`, `[::1]::80` | ::1 | 8080 / ephemeral | 80 |
//! | `8000-8010:80-90` | any | 8000..=8010 | 80..=90 |
//! | `8000-8010` | any | ephemeral | 8000..=8010 |
//!
//! Each may end in `/tcp` or `/udp` (any case); without a suffix the protocol
//! is TCP.
//!
//! # Decisions
//!
//! - **Host and container ranges must have equal lengths**, including a host
//!   range against a single container port: docker reads `8000-8010:80` as
//!   "pick one host port from the range", which this crate does not support,
//!   so it is a [`PortSpecError::RangeMismatch`] rather than a silent 1:1
//!   mapping of the first port.
//! - **IPv6 host addresses need brackets** (`[::1]:8080:80`); without them the
//!   colons are ambiguous, and the error says so. Brackets hold IPv6 only.
//! - **Lenient where docker is and it is unambiguous**: ports may carry
//!   leading zeros (`080`), and an empty host port field means ephemeral
//!   (`:80`, `127.0.0.1::80`). An empty host ip field (`::80`) is an error.
//! - **Display is canonical**: `[HOST_IP:][HOST_PORTS]:CONTAINER_PORTS/PROTO`,
//!   i.e. `80/tcp`, `8080:80/udp`, `127.0.0.1::80/tcp`,
//!   `[::1]:8000-8010:80-90/tcp`, with the protocol always written, IPv6 in
//!   brackets, single ports without `-`, no leading zeros. It always parses
//!   back to an equal [`PortMapping`]; serde uses this string.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortProto {
    /// TCP (the default when no `/proto` suffix is given).
    Tcp,
    /// UDP.
    Udp,
}

/// One published port forwarded to one container address (kernel DNAT on a
/// bridge network); callers expand ranges into one `Forward` per port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Forward {
    /// Host address the port is published on; `None` means every local
    /// address, `127.0.0.1` included.
    pub host_ip: Option<std::net::Ipv4Addr>,
    /// Host port.
    pub host_port: u16,
    /// Protocol.
    pub proto: PortProto,
    /// Container address (in the network's subnet).
    pub container_ip: std::net::Ipv4Addr,
    /// Port inside the container.
    pub container_port: u16,
}

/// An inclusive, non-empty range of non-zero ports (`8000-8010`, or a single port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    start: u16,
    end: u16,
}

/// One published-port mapping.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortMapping {
    /// Host address to bind; `None` means every address (IPv4 and IPv6).
    pub host_ip: Option<IpAddr>,
    /// Host ports; `None` means "pick a free ephemeral port" (docker's `-p 80`).
    pub host: Option<PortRange>,
    /// Ports inside the namespace.
    pub container: PortRange,
    /// Protocol.
    pub proto: PortProto,
}

impl PortRange {
    /// A range `start..=end`; errors on port 0 or `start > end`.
    pub fn new(start: u16, end: u16) -> Result<Self, PortSpecError> {
        if start == 0 || end == 0 {
            return Err(PortSpecError::ZeroPort);
        }
        if start > end {
            return Err(PortSpecError::ReversedRange { start, end });
        }
        Ok(Self { start, end })
    }

    /// A single port; errors on port 0.
    pub fn single(port: u16) -> Result<Self, PortSpecError> {
        Self::new(port, port)
    }

    /// First port.
    pub fn start(&self) -> u16 {
        self.start
    }

    /// Last port (inclusive).
    pub fn end(&self) -> u16 {
        self.end
    }

    /// Number of ports (at least 1).
    pub fn len(&self) -> u32 {
        u32::from(self.end - self.start) + 1
    }

    /// Always false: a range holds at least one port.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Every port in the range.
    pub fn iter(&self) -> impl Iterator<Item = u16> + use<> {
        self.start..=self.end
    }
}

/// The accepted grammar, quoted by the error messages.
const GRAMMAR: &str = "[[HOST_IP:][HOST_PORT]:]CONTAINER_PORT[/tcp|udp]";

/// Why a port specification was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortSpecError {
    /// Port 0 was given.
    #[error("port 0 is not a valid port")]
    ZeroPort,
    /// A range whose start is above its end.
    #[error("port range {start}-{end} is reversed")]
    ReversedRange {
        /// First port given.
        start: u16,
        /// Last port given.
        end: u16,
    },
    /// The spec was the empty string.
    #[error("empty port spec (expected {GRAMMAR})")]
    Empty,
    /// The `/PROTO` suffix is neither `tcp` nor `udp` (any case).
    #[error("unknown protocol '{proto}' (expected tcp or udp)")]
    UnknownProto {
        /// The protocol as given.
        proto: String,
    },
    /// A port field is not a number from 1 to 65535 or a range `START-END`
    /// of such numbers.
    #[error("invalid port '{text}' (expected a port from 1 to 65535 or a range START-END)")]
    InvalidPort {
        /// The port field as given.
        text: String,
    },
    /// The container port field is empty (`8080:`).
    #[error("port spec '{spec}' has no container port (expected {GRAMMAR})")]
    MissingContainerPort {
        /// The whole spec.
        spec: String,
    },
    /// Host and container port ranges hold different numbers of ports.
    #[error(
        "host ports {host} and container ports {container} differ in length ({} vs {})",
        .host.len(),
        .container.len()
    )]
    RangeMismatch {
        /// Host ports given.
        host: PortRange,
        /// Container ports given.
        container: PortRange,
    },
    /// The host address is neither an IPv4 address nor a bracketed IPv6 one.
    #[error("invalid host ip '{text}' (expected an ipv4 address, or an ipv6 address in brackets)")]
    InvalidHostIp {
        /// The host address as given.
        text: String,
    },
    /// An IPv6 host address was written without brackets, which makes its
    /// colons ambiguous with the field separators.
    #[error("ipv6 host address '{ip}' must be in brackets, e.g. '[{ip}]:8080:80'")]
    UnbracketedIpv6 {
        /// The address as found in the spec.
        ip: String,
    },
    /// More `:`-separated fields than the grammar allows.
    #[error("too many ':' in port spec '{spec}' (expected {GRAMMAR})")]
    TooManyColons {
        /// The whole spec.
        spec: String,
    },
    /// Misplaced brackets or separators around a bracketed host address.
    #[error("malformed port spec '{spec}' (expected {GRAMMAR})")]
    Malformed {
        /// The whole spec.
        spec: String,
    },
}

impl PortProto {
    /// The lowercase name, `"tcp"` or `"udp"`, as used by pasta, nft and the
    /// canonical spec form.
    pub fn as_str(&self) -> &'static str {
        match self {
            PortProto::Tcp => "tcp",
            PortProto::Udp => "udp",
        }
    }
}

impl fmt::Display for PortProto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PortProto {
    type Err = PortSpecError;

    /// `tcp` or `udp`, case-insensitive; anything else (including the empty
    /// string) is an unknown-protocol error.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("tcp") {
            Ok(PortProto::Tcp)
        } else if s.eq_ignore_ascii_case("udp") {
            Ok(PortProto::Udp)
        } else {
            Err(PortSpecError::UnknownProto { proto: s.to_owned() })
        }
    }
}

impl fmt::Display for PortRange {
    /// `80` for a single port, `8000-8010` for a range.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end { write!(f, "{}", self.start) } else { write!(f, "{}-{}", self.start, self.end) }
    }
}

impl FromStr for PortRange {
    type Err = PortSpecError;

    /// `PORT` or `START-END`, decimal digits only (leading zeros allowed).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || PortSpecError::InvalidPort { text: s.to_owned() };
        let port = |piece: &str| {
            if piece.is_empty() || !piece.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            piece.parse::<u16>().map_err(|_| invalid())
        };
        match s.split_once('-') {
            Some((start, end)) => PortRange::new(port(start)?, port(end)?),
            None => PortRange::single(port(s)?),
        }
    }
}

impl PortMapping {
    /// A mapping, checked like a parsed one: when host ports are given they
    /// must number as many as the container ports.
    pub fn new(
        host_ip: Option<IpAddr>,
        host: Option<PortRange>,
        container: PortRange,
        proto: PortProto,
    ) -> Result<Self, PortSpecError> {
        if let Some(host) = host
            && host.len() != container.len()
        {
            return Err(PortSpecError::RangeMismatch { host, container });
        }
        Ok(Self { host_ip, host, container, proto })
    }
}

/// Host ip, host port field (`None` when absent), container port field.
type Fields<'a> = (Option<IpAddr>, Option<&'a str>, &'a str);

/// Splits the part of a spec before `/PROTO` into its fields.
fn split_fields<'a>(addr: &'a str, spec: &str) -> Result<Fields<'a>, PortSpecError> {
    let malformed = || PortSpecError::Malformed { spec: spec.into() };
    let too_many = || PortSpecError::TooManyColons { spec: spec.into() };
    let bad_ip = |text: String| PortSpecError::InvalidHostIp { text };
    if let Some(rest) = addr.strip_prefix('[') {
        let (ip, ports) = rest.split_once("]:").ok_or_else(malformed)?;
        let ip = ip.parse::<Ipv6Addr>().map_err(|_| bad_ip(format!("[{ip}]")))?;
        return match ports.split(':').collect::<Vec<_>>()[..] {
            [host, container] => Ok((Some(IpAddr::V6(ip)), Some(host), container)),
            [_] => Err(malformed()),
            _ => Err(too_many()),
        };
    }
    let fields: Vec<&str> = addr.split(':').collect();
    match fields[..] {
        [container] => return Ok((None, None, container)),
        [host, container] => return Ok((None, Some(host), container)),
        [ip, host, container] => match ip.parse::<Ipv4Addr>() {
            Ok(ip) => return Ok((Some(IpAddr::V4(ip)), Some(host), container)),
            Err(_) if ip.is_empty() => return Err(bad_ip(String::new())),
            Err(_) => {}
        },
        _ => {}
    }
    // An unbracketed IPv6 address, read as `IP:HOST:CONTAINER`, then as
    // `IP:CONTAINER`, then as the whole field.
    let candidates = [addr.rsplitn(3, ':').nth(2), addr.rsplit_once(':').map(|(ip, _)| ip), Some(addr)];
    let is_v6 = |c: &&str| c.parse::<Ipv6Addr>().is_ok();
    if let Some(ip) = candidates.into_iter().flatten().find(is_v6) {
        return Err(PortSpecError::UnbracketedIpv6 { ip: ip.into() });
    }
    match fields[..] {
        [ip, _, _] => Err(bad_ip(ip.into())),
        _ => Err(too_many()),
    }
}

impl FromStr for PortMapping {
    type Err = PortSpecError;

    /// Parses `[[HOST_IP:][HOST_PORT]:]CONTAINER_PORT[/tcp|udp]`; see the
    /// module docs for the accepted forms.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        if spec.is_empty() {
            return Err(PortSpecError::Empty);
        }
        let (addr, proto) = match spec.split_once('/') {
            Some((addr, proto)) => (addr, proto.parse()?),
            None => (spec, PortProto::Tcp),
        };
        let (host_ip, host, container) = split_fields(addr, spec)?;
        if container.is_empty() {
            return Err(PortSpecError::MissingContainerPort { spec: spec.to_owned() });
        }
        let container = container.parse()?;
        let host = match host {
            None | Some("") => None,
            Some(host) => Some(host.parse()?),
        };
        PortMapping::new(host_ip, host, container, proto)
    }
}

impl fmt::Display for PortMapping {
    /// The canonical form `[HOST_IP:][HOST_PORTS]:CONTAINER_PORTS/PROTO`
    /// (see the module docs); it parses back to an equal value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            Some(IpAddr::V4(ip)) => write!(f, "{ip}:")?,
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:")?,
            None => {}
        }
        match (self.host, self.host_ip) {
            (Some(host), _) => write!(f, "{host}:")?,
            (None, Some(_)) => f.write_str(":")?,
            (None, None) => {}
        }
        write!(f, "{}/{}", self.container, self.proto)
    }
}

impl serde::Serialize for PortMapping {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PortMapping {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[path = "port_tests.rs"]
mod tests;

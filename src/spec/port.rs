//! Published-port specifications: the docker/podman grammar
//! `[[HOST_IP:][HOST_PORT]:]CONTAINER_PORT[/tcp|udp]`.
//!
//! Pure: no sockets, no filesystem. Parsing never guesses: an unknown
//! protocol, port 0, mismatched range lengths or trailing garbage is an error
//! that says what was wrong.

use std::net::IpAddr;

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortProto {
    /// TCP (the default when no `/proto` suffix is given).
    Tcp,
    /// UDP.
    Udp,
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
}

//! IPv4 networks in CIDR notation (`10.88.1.0/24`).
//!
//! This module owns [`Ipv4Net`]: parsing, printing and the address arithmetic
//! the rest of the crate needs (netmask, broadcast, containment, overlap,
//! gateway and usable host range). It never looks at the host's interfaces or
//! routes; deciding which subnet is free is `ipam`'s job, from a used-set.
//!
//! # Decisions
//!
//! - **Host bits are rejected, not silently cleared.** `10.88.1.5/24` is an
//!   error whose message suggests the network the user probably meant
//!   (`did you mean 10.88.1.0/24?`), as docker does. Silently normalising would
//!   hide typos such as `10.88.1.5/24` meant as `10.88.5.0/24`. Callers that
//!   really want "the network containing this address" use
//!   [`Ipv4Net::truncating`].
//! - **Parsing is strict.** The prefix is required; the address must be a
//!   dotted quad without leading zeros (`010.1.1.1` is ambiguous: octal in
//!   some tools, decimal in others); the prefix is `0..=32` written without
//!   sign, leading zeros or whitespace. Anything else is an error that quotes
//!   the offending text.
//! - **Serde uses the string form** (`"10.88.1.0/24"`) so stored network
//!   definitions stay readable and go through the same validation.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network: a network address with no host bits set and a prefix
/// length `0..=32`.
///
/// Ordering is by network address, then prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix: u8,
}

/// Why an IPv4 network was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// The input was empty.
    #[error("empty cidr (expected ADDRESS/PREFIX, e.g. 10.88.0.0/16)")]
    Empty,
    /// No `/PREFIX` part was given.
    #[error("cidr '{text}' has no prefix length (expected ADDRESS/PREFIX, e.g. 10.88.0.0/16)")]
    MissingPrefix {
        /// The whole input.
        text: String,
    },
    /// The address part is not a dotted-quad IPv4 address.
    #[error("invalid ipv4 address '{text}' (expected a dotted quad without leading zeros)")]
    InvalidAddress {
        /// The address part as given.
        text: String,
    },
    /// The prefix length is not a number in `0..=32`.
    #[error("invalid prefix length '{text}' (expected a number from 0 to 32)")]
    InvalidPrefix {
        /// The prefix part as given.
        text: String,
    },
    /// The address has bits set below the prefix.
    #[error("{addr}/{prefix} has host bits set; did you mean {network}?")]
    HostBitsSet {
        /// Address as given.
        addr: Ipv4Addr,
        /// Prefix length as given.
        prefix: u8,
        /// The network `addr/prefix` lies in.
        network: Ipv4Net,
    },
}

/// The netmask of a prefix length already known to be `<= 32`, as a `u32`.
fn mask_bits(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

impl Ipv4Net {
    /// The network `addr/prefix`.
    ///
    /// Errors if `prefix > 32` or if `addr` has host bits set (the error
    /// carries the network `addr` lies in).
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, CidrError> {
        let network = Self::truncating(addr, prefix)?;
        if network.addr != addr {
            return Err(CidrError::HostBitsSet { addr, prefix, network });
        }
        Ok(network)
    }

    /// The network of length `prefix` that contains `addr`, clearing host
    /// bits (`10.88.1.5`, 24 gives `10.88.1.0/24`). Errors only if
    /// `prefix > 32`.
    pub fn truncating(addr: Ipv4Addr, prefix: u8) -> Result<Self, CidrError> {
        if prefix > 32 {
            return Err(CidrError::InvalidPrefix { text: prefix.to_string() });
        }
        let addr = Ipv4Addr::from(u32::from(addr) & mask_bits(prefix));
        Ok(Self { addr, prefix })
    }

    /// The network address (host bits all zero).
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length, `0..=32`.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The netmask (`255.255.255.0` for a /24).
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask_bits(self.prefix))
    }

    /// The last address of the network (host bits all one). For a /32 this
    /// is the address itself.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !mask_bits(self.prefix))
    }

    /// Whether `ip` lies in this network (network and broadcast included).
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask_bits(self.prefix) == u32::from(self.addr)
    }

    /// Whether the two networks share at least one address (one contains
    /// the other, since CIDR blocks nest or are disjoint).
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        let mask = mask_bits(self.prefix.min(other.prefix));
        u32::from(self.addr) & mask == u32::from(other.addr) & mask
    }

    /// The conventional gateway: the first usable host (`.1` of a /24).
    ///
    /// `None` for /31 and /32, which have no room for a gateway besides the
    /// hosts themselves.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        (self.prefix <= 30).then(|| self.first_host())
    }

    /// The first usable host address.
    ///
    /// For prefixes up to /30 the network address is excluded. A /31 is a
    /// point-to-point link (RFC 3021) where both addresses are usable, so this
    /// is the network address; for a /32 it is the single address.
    pub fn first_host(&self) -> Ipv4Addr {
        if self.prefix <= 30 { Ipv4Addr::from(u32::from(self.addr) + 1) } else { self.addr }
    }

    /// The last usable host address.
    ///
    /// For prefixes up to /30 the broadcast address is excluded. For a /31 it
    /// is the second address of the pair; for a /32 the single address.
    pub fn last_host(&self) -> Ipv4Addr {
        let broadcast = self.broadcast();
        if self.prefix <= 30 { Ipv4Addr::from(u32::from(broadcast) - 1) } else { broadcast }
    }

    /// Number of usable host addresses, `first_host()..=last_host()`:
    /// `2^(32-prefix) - 2` up to /30, 2 for a /31, 1 for a /32.
    pub fn host_count(&self) -> u32 {
        u32::from(self.last_host()) - u32::from(self.first_host()) + 1
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(CidrError::Empty);
        }
        let Some((addr_text, prefix_text)) = s.split_once('/') else {
            return Err(CidrError::MissingPrefix { text: s.to_owned() });
        };
        let addr =
            addr_text.parse::<Ipv4Addr>().map_err(|_| CidrError::InvalidAddress { text: addr_text.to_owned() })?;
        Self::new(addr, parse_prefix(prefix_text)?)
    }
}

/// Parses `0..=32` written as plain decimal digits without leading zeros.
fn parse_prefix(text: &str) -> Result<u8, CidrError> {
    let invalid = || CidrError::InvalidPrefix { text: text.to_owned() };
    let well_formed = matches!(text.len(), 1 | 2)
        && text.bytes().all(|b| b.is_ascii_digit())
        && !(text.len() == 2 && text.starts_with('0'));
    if !well_formed {
        return Err(invalid());
    }
    match text.parse::<u8>() {
        Ok(prefix) if prefix <= 32 => Ok(prefix),
        _ => Err(invalid()),
    }
}

impl serde::Serialize for Ipv4Net {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Ipv4Net {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[path = "cidr_tests.rs"]
mod tests;

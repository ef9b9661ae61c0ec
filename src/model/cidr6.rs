//! IPv6 networks in CIDR notation (`fd70:656c:6167::/64`), for dual-stack
//! bridge networks. Same decisions as [`super::cidr`]: host bits are
//! rejected (with the network meant), the prefix is required, serde uses
//! the string form. Pure.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

/// An IPv6 network: an address with no host bits set and a prefix `0..=128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv6Net {
    addr: Ipv6Addr,
    prefix: u8,
}

/// Why an IPv6 network was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Cidr6Error {
    /// No `/PREFIX` part, or not an IPv6 address before it.
    #[error("invalid ipv6 cidr '{text}' (expected ADDRESS/PREFIX, e.g. fd70:656c:6167::/64)")]
    Invalid {
        /// The input.
        text: String,
    },
    /// The prefix is not a number in `0..=128`.
    #[error("invalid prefix length '{text}' (expected a number from 0 to 128)")]
    InvalidPrefix {
        /// The prefix as given.
        text: String,
    },
    /// The address has bits set below the prefix.
    #[error("{addr}/{prefix} has host bits set; did you mean {network}?")]
    HostBitsSet {
        /// Address as given.
        addr: Ipv6Addr,
        /// Prefix as given.
        prefix: u8,
        /// The network it lies in.
        network: Ipv6Net,
    },
}

fn mask(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl Ipv6Net {
    /// The network `addr/prefix`; host bits are an error.
    pub fn new(addr: Ipv6Addr, prefix: u8) -> Result<Self, Cidr6Error> {
        if prefix > 128 {
            return Err(Cidr6Error::InvalidPrefix { text: prefix.to_string() });
        }
        let network = Self { addr: Ipv6Addr::from(u128::from(addr) & mask(prefix)), prefix };
        if network.addr != addr {
            return Err(Cidr6Error::HostBitsSet { addr, prefix, network });
        }
        Ok(network)
    }

    /// The network address.
    pub fn addr(&self) -> Ipv6Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & mask(self.prefix) == u128::from(self.addr)
    }

    /// Whether the two networks share an address.
    pub fn overlaps(&self, other: &Ipv6Net) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    /// The address `index` places after the network address, if it is inside.
    pub fn nth(&self, index: u128) -> Option<Ipv6Addr> {
        let host_bits = 128 - u32::from(self.prefix);
        if host_bits < 128 && index >> host_bits != 0 {
            return None;
        }
        Some(Ipv6Addr::from(u128::from(self.addr) | index))
    }

    /// The offset of `ip` from the network address, if `ip` is inside.
    pub fn index_of(&self, ip: Ipv6Addr) -> Option<u128> {
        self.contains(ip).then(|| u128::from(ip) & !mask(self.prefix))
    }

    /// Unique local (`fc00::/7`).
    pub fn is_ula(&self) -> bool {
        self.prefix >= 7 && self.addr.segments()[0] & 0xfe00 == 0xfc00
    }
}

impl fmt::Display for Ipv6Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv6Net {
    type Err = Cidr6Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || Cidr6Error::Invalid { text: s.to_owned() };
        let (addr, prefix) = s.split_once('/').ok_or_else(invalid)?;
        let addr: Ipv6Addr = addr.parse().map_err(|_| invalid())?;
        let well_formed = (1..=3).contains(&prefix.len())
            && prefix.bytes().all(|b| b.is_ascii_digit())
            && !(prefix.len() > 1 && prefix.starts_with('0'));
        let prefix: u8 = match prefix.parse() {
            Ok(p) if well_formed && p <= 128 => p,
            _ => return Err(Cidr6Error::InvalidPrefix { text: prefix.to_owned() }),
        };
        Self::new(addr, prefix)
    }
}

impl TryFrom<String> for Ipv6Net {
    type Error = Cidr6Error;
    fn try_from(s: String) -> Result<Self, Cidr6Error> {
        s.parse()
    }
}

impl From<Ipv6Net> for String {
    fn from(n: Ipv6Net) -> String {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prints_and_refuses_host_bits() {
        let net: Ipv6Net = "fd70:656c:6167:1::/64".parse().unwrap();
        assert_eq!(net.to_string(), "fd70:656c:6167:1::/64");
        assert!(net.is_ula());
        let err = "fd00::5/64".parse::<Ipv6Net>().unwrap_err().to_string();
        assert_eq!(err, "fd00::5/64 has host bits set; did you mean fd00::/64?");
        for bad in ["fd00::", "fd00::/129", "fd00::/064", "10.0.0.0/8", "fd00::/ 64", "/64"] {
            assert!(bad.parse::<Ipv6Net>().is_err(), "{bad}");
        }
        assert!(!"2001:db8::/32".parse::<Ipv6Net>().unwrap().is_ula());
        assert_eq!(serde_json::to_string(&net).unwrap(), "\"fd70:656c:6167:1::/64\"");
        assert_eq!(serde_json::from_str::<Ipv6Net>("\"fd70:656c:6167:1::/64\"").unwrap(), net);
        assert!(serde_json::from_str::<Ipv6Net>("\"fd00::1/64\"").is_err());
    }

    #[test]
    fn arithmetic() {
        let net: Ipv6Net = "fd00:1::/120".parse().unwrap();
        assert_eq!(net.nth(1), Some("fd00:1::1".parse().unwrap()));
        assert_eq!(net.nth(255), Some("fd00:1::ff".parse().unwrap()));
        assert_eq!(net.nth(256), None);
        assert_eq!(net.index_of("fd00:1::2a".parse().unwrap()), Some(42));
        assert_eq!(net.index_of("fd00:2::2a".parse().unwrap()), None);
        assert!(net.overlaps(&"fd00::/16".parse().unwrap()));
        assert!(!net.overlaps(&"fd00:2::/64".parse().unwrap()));
        let all: Ipv6Net = "::/0".parse().unwrap();
        assert_eq!(all.nth(u128::MAX), Some(Ipv6Addr::from(u128::MAX)));
    }
}

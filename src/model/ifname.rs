//! Validated names: network names (also file names), interface names
//! (`IFNAMSIZ`), and the names pelagos-net derives from them.
//!
//! Every name is checked here, before any filesystem or netlink call sees
//! it: no `/`, no `..`, no leading `-`, no NUL, no whitespace, ASCII only,
//! and within the kernel's 15-byte interface-name limit where it becomes one.

use std::fmt;

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;
/// Longest network name (podman sets none; this keeps the lease and lock
/// file names and the nftables table name `pelagos-NAME` short).
pub const NETWORK_NAME_MAX: usize = 64;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty name.
    #[error("{kind} name is empty")]
    Empty {
        /// What kind of name.
        kind: &'static str,
    },
    /// Too long.
    #[error("{kind} name '{name}' is {len} bytes; the limit is {max}")]
    TooLong {
        /// What kind of name.
        kind: &'static str,
        /// The name (lossy).
        name: String,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A character that is not allowed.
    #[error("{kind} name '{name}' contains {what}; use letters, digits, '-', '_' and '.'")]
    BadChar {
        /// What kind of name.
        kind: &'static str,
        /// The name (lossy, escaped).
        name: String,
        /// Description of the offending character.
        what: String,
    },
    /// Starts with a character that is not allowed first.
    #[error("{kind} name '{name}' must start with a letter or digit")]
    BadStart {
        /// What kind of name.
        kind: &'static str,
        /// The name.
        name: String,
    },
}

fn describe_char(c: char) -> String {
    match c {
        '\0' => "a NUL byte".into(),
        '/' => "'/'".into(),
        c if c.is_whitespace() => "whitespace".into(),
        c if !c.is_ascii() => format!("the non-ASCII character {c:?}"),
        c => format!("'{c}'"),
    }
}

fn check(kind: &'static str, s: &str, max: usize, allowed: impl Fn(char) -> bool) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty { kind });
    }
    let shown = s.escape_debug().to_string();
    if let Some(c) = s.chars().find(|c| !allowed(*c)) {
        return Err(NameError::BadChar { kind, name: shown, what: describe_char(c) });
    }
    if s.len() > max {
        return Err(NameError::TooLong { kind, name: shown, len: s.len(), max });
    }
    if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(NameError::BadStart { kind, name: shown });
    }
    Ok(())
}

/// A network name, by podman's rule `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most
/// 64 bytes. Safe as a file name (no `/`, never `.` or `..` as a whole, since
/// the first character is alphanumeric) and inside an nftables table name;
/// interface names are derived from it ([`NetworkName::derived_bridge`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NetworkName(String);

impl NetworkName {
    /// Validate `s`.
    pub fn new(s: &str) -> Result<Self, NameError> {
        check("network", s, NETWORK_NAME_MAX, |c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))?;
        Ok(Self(s.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Bridge name for this network: the name itself for the default
    /// network, `pn-<name>` when that fits in 15 bytes, otherwise `pn-`
    /// plus a stable hash of the name. Interface names are case-sensitive,
    /// so `Web` and `web` get distinct bridges.
    pub fn derived_bridge(&self) -> IfName {
        if self.0 == crate::bridge::network::DEFAULT_NETWORK {
            return IfName(crate::bridge::network::BRIDGE_NAME.to_owned());
        }
        let plain = format!("pn-{}", self.0);
        if plain.len() <= IFNAME_MAX {
            return IfName(plain);
        }
        IfName(format!("pn-{:012x}", fnv1a(self.0.as_bytes()) & 0xffff_ffff_ffff))
    }
}

impl TryFrom<String> for NetworkName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::new(&s)
    }
}

impl From<NetworkName> for String {
    fn from(n: NetworkName) -> String {
        n.0
    }
}

impl fmt::Display for NetworkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for NetworkName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        Self::new(s)
    }
}

/// An interface name the kernel accepts: 1 to 15 ASCII bytes, no `/`, `:`,
/// whitespace or NUL, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IfName(String);

impl IfName {
    /// Validate `s`.
    pub fn new(s: &str) -> Result<Self, NameError> {
        check("interface", s, IFNAME_MAX, |c| c.is_ascii_graphic() && c != '/' && c != ':')?;
        Ok(Self(s.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IfName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::new(&s)
    }
}

impl From<IfName> for String {
    fn from(n: IfName) -> String {
        n.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Host-side veth name for a container id (`pv` + up to 12 id characters).
pub fn veth_name(id: &str) -> IfName {
    let short: String = id.chars().filter(|c| c.is_ascii_alphanumeric()).take(12).collect();
    IfName(format!("pv{short}"))
}

/// Name of a container's named network namespace (`pelagos-<id>`).
pub fn generate_ns_name(id: &str) -> String {
    format!("pelagos-{id}")
}

/// 64-bit FNV-1a: a small stable hash for derived names (not for security).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_names_that_are_safe_are_accepted() {
        for ok in ["pelagos0", "web", "a", "my-net_2.test", "0abc", "Web", "MyNet", "a..b", &"x".repeat(64)] {
            assert!(NetworkName::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn unsafe_network_names_are_refused_with_the_reason() {
        let cases = [
            ("", "is empty"),
            ("../etc", "'.'"),
            ("a/b", "'/'"),
            ("-rf", "must start"),
            (".hidden", "must start"),
            ("_x", "must start"),
            ("nul\0", "NUL"),
            ("a:b", "':'"),
            ("café", "non-ASCII"),
            ("with space", "whitespace"),
            (&"x".repeat(65), "limit is 64"),
        ];
        for (name, want) in cases {
            let err = NetworkName::new(name).unwrap_err().to_string();
            assert!(err.contains(want), "{name:?}: {err}");
        }
    }

    #[test]
    fn interface_names_respect_ifnamsiz_and_forbidden_chars() {
        assert!(IfName::new("eth0").is_ok());
        assert!(IfName::new("abcdefghijklmno").is_ok());
        assert!(IfName::new("abcdefghijklmnop").unwrap_err().to_string().contains("limit is 15"));
        assert!(IfName::new("a:b").is_err());
        assert!(IfName::new("a/b").is_err());
        assert!(IfName::new("-x").is_err());
    }

    #[test]
    fn derived_bridge_names_always_fit() {
        assert_eq!(NetworkName::new("pelagos0").unwrap().derived_bridge().as_str(), "pelagos0");
        assert_eq!(NetworkName::new("web").unwrap().derived_bridge().as_str(), "pn-web");
        let long = NetworkName::new("a-very-long-network-name").unwrap().derived_bridge();
        assert!(long.as_str().len() <= IFNAME_MAX && long.as_str().starts_with("pn-"), "{long}");
        assert_ne!(long, NetworkName::new("a-very-long-network-name2").unwrap().derived_bridge());
        let upper = NetworkName::new("Web").unwrap().derived_bridge();
        assert_eq!(upper.as_str(), "pn-Web");
    }

    #[test]
    fn veth_names_fit_and_follow_the_id() {
        assert_eq!(veth_name("0123456789abcdef").as_str(), "pv0123456789ab");
        assert_eq!(generate_ns_name("abc"), "pelagos-abc");
    }

    #[test]
    fn names_deserialize_only_when_valid() {
        assert!(serde_json::from_str::<NetworkName>("\"../x\"").is_err());
        assert_eq!(serde_json::from_str::<NetworkName>("\"web\"").unwrap().as_str(), "web");
    }
}

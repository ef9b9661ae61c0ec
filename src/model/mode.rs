//! Network modes: which kind of network a command gets.
//!
//! This module owns the names users type (`--network host`) and their
//! canonical spelling. It only names a mode; whether the host can provide it
//! is `probe`'s question and which one to use under `auto` is `select`'s.
//!
//! Names are case-sensitive lowercase, as in docker and podman: `Host` is an
//! error rather than a guess. `none` is accepted as an alias of `loopback`
//! (docker's name for the same thing) and prints as `loopback`. Serde uses
//! the same strings.

use std::fmt;
use std::str::FromStr;

/// How a command is networked. See the crate docs for what each mode needs.
///
/// Not `Copy`: later modes carry data (a bridge network's name).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NetworkMode {
    /// The caller's own network namespace; nothing is set up.
    Host,
    /// A new network namespace with only `lo` up (alias `none`).
    Loopback,
    /// A new namespace connected to the outside by pasta (rootless egress and
    /// port forwards).
    Pasta,
    /// A new namespace connected to the outside by slirp4netns (rootless
    /// egress and port forwards, for hosts without a usable pasta).
    Slirp4netns,
    /// Chosen by the selection ladder (`select`), with the reason recorded.
    Auto,
    /// A named namespace on a Linux bridge (`bridge` for the default
    /// network `pelagos0`, `bridge:NAME` for another). Needs CAP_NET_ADMIN.
    Bridge(Option<super::ifname::NetworkName>),
    /// An existing network namespace, used as it is (`ns:PATH`, podman's
    /// spelling): `/proc/<pid>/ns/net` or a bind mount such as
    /// `/run/netns/NAME`. The path must be absolute.
    Ns(std::path::PathBuf),
}

impl NetworkMode {
    /// Every name [`FromStr`] accepts, aliases included, in the order error
    /// messages and help text list them.
    pub const ACCEPTED_NAMES: &'static [&'static str] =
        &["auto", "host", "loopback", "none", "pasta", "slirp4netns", "bridge", "bridge:NAME", "ns:PATH"];
}

/// Why a network mode name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModeError {
    /// The name is not one of [`NetworkMode::ACCEPTED_NAMES`].
    #[error(
        "unknown network mode '{name}' (expected one of: {})",
        NetworkMode::ACCEPTED_NAMES.join(", ")
    )]
    Unknown {
        /// The name as given.
        name: String,
    },
    /// `bridge:NAME` with an invalid network name.
    #[error("invalid network in '{spec}': {source}")]
    BadNetwork {
        /// The mode as given.
        spec: String,
        /// Why the name is invalid.
        source: super::ifname::NameError,
    },
    /// `ns:PATH` with a path that is not absolute.
    #[error("invalid namespace in '{spec}': the path must be absolute")]
    RelativeNs {
        /// The mode as given.
        spec: String,
    },
}

impl fmt::Display for NetworkMode {
    /// The canonical name: `host`, `loopback` (also for `none`) or `pasta`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetworkMode::Host => f.write_str("host"),
            NetworkMode::Loopback => f.write_str("loopback"),
            NetworkMode::Pasta => f.write_str("pasta"),
            NetworkMode::Slirp4netns => f.write_str("slirp4netns"),
            NetworkMode::Auto => f.write_str("auto"),
            NetworkMode::Bridge(None) => f.write_str("bridge"),
            NetworkMode::Bridge(Some(name)) => write!(f, "bridge:{name}"),
            NetworkMode::Ns(path) => write!(f, "ns:{}", path.display()),
        }
    }
}

impl FromStr for NetworkMode {
    type Err = ModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "host" => Ok(NetworkMode::Host),
            "loopback" | "none" => Ok(NetworkMode::Loopback),
            "pasta" => Ok(NetworkMode::Pasta),
            "slirp4netns" => Ok(NetworkMode::Slirp4netns),
            "auto" => Ok(NetworkMode::Auto),
            "bridge" => Ok(NetworkMode::Bridge(None)),
            _ => {
                if let Some(path) = s.strip_prefix("ns:") {
                    return match path.starts_with('/') {
                        true => Ok(NetworkMode::Ns(path.into())),
                        false => Err(ModeError::RelativeNs { spec: s.to_owned() }),
                    };
                }
                match s.strip_prefix("bridge:") {
                    Some(name) => super::ifname::NetworkName::new(name)
                        .map(|n| NetworkMode::Bridge(Some(n)))
                        .map_err(|source| ModeError::BadNetwork { spec: s.to_owned(), source }),
                    None => Err(ModeError::Unknown { name: s.to_owned() }),
                }
            }
        }
    }
}

impl serde::Serialize for NetworkMode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for NetworkMode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_names_parse_and_display_canonically() {
        #[rustfmt::skip]
        let table = [
            ("host", NetworkMode::Host, "host"),
            ("loopback", NetworkMode::Loopback, "loopback"),
            ("none", NetworkMode::Loopback, "loopback"),
            ("pasta", NetworkMode::Pasta, "pasta"),
            ("bridge", NetworkMode::Bridge(None), "bridge"),
            ("bridge:web", NetworkMode::Bridge(Some("web".parse().unwrap())), "bridge:web"),
            ("ns:/proc/42/ns/net", NetworkMode::Ns("/proc/42/ns/net".into()), "ns:/proc/42/ns/net"),
        ];
        for (name, want, canonical) in table {
            assert_eq!(name.parse::<NetworkMode>(), Ok(want.clone()), "{name}");
            assert_eq!(want.to_string(), canonical, "{name}");
        }
    }

    #[test]
    fn mode_accepted_names_all_parse() {
        for name in NetworkMode::ACCEPTED_NAMES {
            let name = name.replace("NAME", "web").replace("PATH", "/run/netns/x");
            assert!(name.parse::<NetworkMode>().is_ok(), "{name}");
        }
        let err = "bridge:../x".parse::<NetworkMode>().unwrap_err().to_string();
        assert!(err.contains("invalid network in 'bridge:../x'"), "{err}");
        let err = "ns:run/netns/x".parse::<NetworkMode>().unwrap_err().to_string();
        assert!(err.contains("must be absolute"), "{err}");
    }

    #[test]
    fn mode_unknown_name_is_rejected_listing_accepted_names() {
        for name in ["", "Host", "PASTA", " host", "host ", "slirp", "nat"] {
            let err = name.parse::<NetworkMode>().unwrap_err();
            assert_eq!(err, ModeError::Unknown { name: name.into() });
            let msg = err.to_string();
            assert!(msg.contains(&format!("'{name}'")), "{msg}");
            for accepted in NetworkMode::ACCEPTED_NAMES {
                assert!(msg.contains(accepted), "{msg} should list {accepted}");
            }
        }
    }

    #[test]
    fn mode_serializes_as_canonical_name() {
        assert_eq!(serde_json::to_string(&NetworkMode::Loopback).unwrap(), "\"loopback\"");
        let mode: NetworkMode = serde_json::from_str("\"none\"").unwrap();
        assert_eq!(mode, NetworkMode::Loopback);
        let err = serde_json::from_str::<NetworkMode>("\"nat\"").unwrap_err();
        assert!(err.to_string().contains("unknown network mode 'nat'"), "{err}");
    }
}

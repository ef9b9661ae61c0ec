//! Port drivers: who forwards published ports into the namespace, and the
//! pure rule `auto` follows.
//!
//! | driver | modes | how |
//! |---|---|---|
//! | `builtin` | pasta, slirp4netns, loopback, bridge | pelagos-net listens on the host and relays each connection through a socket made inside the namespace |
//! | `pasta` | pasta | pasta's own `-t`/`-u` forwarding |
//! | `slirp4netns` | slirp4netns | slirp4netns's API `add_hostfwd` |
//! | `nftables` | bridge | kernel DNAT rules |
//!
//! # What `auto` picks, and why
//!
//! - **pasta mode**: pasta's forwarding when the pasta build is new enough
//!   to have the tap-path TCP fixes (server-speaks-first hang fixed
//!   2023_10_04, half-close corruption fixed 2024_08_06). Otherwise
//!   `builtin`, even for loopback-only binds: on Debian 12's 2023-03-09
//!   build the splice path used for loopback clients also stalls or
//!   truncates bidirectional transfers of 16 MiB and more (measured here:
//!   0 of 3 intact, 4 MiB and less intact), so no client path of that build
//!   is trusted with published ports.
//! - **slirp4netns mode**: `builtin`. It keeps the client's source address
//!   (slirp4netns shows every client as coming from its gateway), and
//!   serves ranges, host-IP binds, IPv6 and loopback UDP, which slirp4netns
//!   cannot.
//! - **loopback mode**: `builtin`, the only driver that can reach a
//!   namespace without a network helper.
//! - **bridge mode**: `nftables` (kernel DNAT, no copy), unless a port binds
//!   an IPv6 host address, which an IPv4 bridge cannot DNAT: then `builtin`.

use super::mode::NetworkMode;
use super::port::PortMapping;
use std::fmt;
use std::str::FromStr;

/// The port driver asked for (`--port-driver`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortDriver {
    /// Chosen per mode and host (see the module docs).
    #[default]
    Auto,
    /// pelagos-net's own relay.
    Builtin,
    /// pasta's forwarding.
    Pasta,
    /// slirp4netns's forwarding.
    Slirp4netns,
    /// Kernel DNAT (bridge mode).
    Nftables,
}

impl PortDriver {
    const ALL: [(Self, &'static str); 5] = [
        (Self::Auto, "auto"),
        (Self::Builtin, "builtin"),
        (Self::Pasta, "pasta"),
        (Self::Slirp4netns, "slirp4netns"),
        (Self::Nftables, "nftables"),
    ];

    /// Name as written on the command line.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(d, _)| *d == self).map_or("auto", |(_, n)| n)
    }
}

impl fmt::Display for PortDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown `--port-driver` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown port driver {0:?}: expected auto, builtin, pasta, slirp4netns or nftables")]
pub struct UnknownPortDriver(pub String);

impl FromStr for PortDriver {
    type Err = UnknownPortDriver;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(s))
            .map(|(d, _)| *d)
            .ok_or_else(|| UnknownPortDriver(s.into()))
    }
}

/// The driver a run uses, after `auto` is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChosenDriver {
    /// No port is published: nothing forwards.
    None,
    /// pelagos-net's relay.
    Builtin,
    /// The mode's own mechanism (pasta, slirp4netns or nftables).
    Native,
}

/// The resolved driver and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DriverChoice {
    /// What forwards the ports.
    pub driver: ChosenDriver,
    /// Its name for people (`builtin`, `pasta`, `slirp4netns`, `nftables`, `none`).
    pub name: String,
    /// Why, in one sentence.
    pub reason: String,
}

/// A driver that the mode cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("port driver {driver} does not work with network mode {mode}: use {valid}")]
pub struct DriverMismatch {
    /// Asked for.
    pub driver: PortDriver,
    /// The mode.
    pub mode: String,
    /// What would work.
    pub valid: String,
}

/// What is known of the pasta build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PastaBuild {
    /// It has the tap-path TCP fixes (2023_10_04 and 2024_08_06).
    Fixed,
    /// It has the tap-path TCP bugs (Debian 12's 2023-03-09 build does).
    Broken,
    /// It could not be probed (or was not asked about); assumed broken.
    Unknown,
}

/// What `auto` needs to know about the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverFacts {
    /// The pasta build.
    pub pasta: PastaBuild,
    /// A bridge network is rootless: it lives in the user's network holder,
    /// where kernel DNAT cannot reach from the host, so the builtin driver
    /// publishes its ports.
    pub rootless_bridge: bool,
}

fn native_name(mode: &NetworkMode) -> Option<&'static str> {
    match mode {
        NetworkMode::Pasta => Some("pasta"),
        NetworkMode::Slirp4netns => Some("slirp4netns"),
        NetworkMode::Bridge(_) => Some("nftables"),
        _ => None,
    }
}

fn native_driver(mode: &NetworkMode) -> Option<PortDriver> {
    match mode {
        NetworkMode::Pasta => Some(PortDriver::Pasta),
        NetworkMode::Slirp4netns => Some(PortDriver::Slirp4netns),
        NetworkMode::Bridge(_) => Some(PortDriver::Nftables),
        _ => None,
    }
}

/// Resolve `requested` for `mode` and `ports`. Pure.
pub fn choose_driver(
    mode: &NetworkMode,
    requested: PortDriver,
    ports: &[PortMapping],
    facts: DriverFacts,
) -> Result<DriverChoice, DriverMismatch> {
    let native = native_driver(mode).filter(|_| !(facts.rootless_bridge && matches!(mode, NetworkMode::Bridge(_))));
    if requested != PortDriver::Auto && requested != PortDriver::Builtin && Some(requested) != native {
        let valid = match native {
            Some(n) => format!("auto, builtin or {n}"),
            None => "auto or builtin".into(),
        };
        return Err(DriverMismatch { driver: requested, mode: mode.to_string(), valid });
    }
    let choice = |driver: ChosenDriver, reason: &str| {
        let name = match driver {
            ChosenDriver::None => "none",
            ChosenDriver::Builtin => "builtin",
            ChosenDriver::Native => native_name(mode).unwrap_or("none"),
        };
        Ok(DriverChoice { driver, name: name.into(), reason: reason.into() })
    };
    if matches!(mode, NetworkMode::Host) {
        return choice(ChosenDriver::None, "host networking: the command's sockets are the host's, nothing to forward");
    }
    if ports.is_empty() {
        return choice(ChosenDriver::None, "no port is published");
    }
    match requested {
        PortDriver::Builtin => return choice(ChosenDriver::Builtin, "asked for with --port-driver builtin"),
        PortDriver::Auto => {}
        _ => return choice(ChosenDriver::Native, "asked for with --port-driver"),
    }
    match mode {
        NetworkMode::Pasta if facts.pasta == PastaBuild::Fixed => {
            choice(ChosenDriver::Native, "this pasta build has the tap-path TCP fixes (2023_10_04, 2024_08_06)")
        }
        NetworkMode::Pasta if facts.pasta == PastaBuild::Unknown => choice(
            ChosenDriver::Builtin,
            "this pasta build could not be identified, so it is assumed to have the published-port TCP bugs of \
             builds before 2024_08_06; pelagos-net relays the ports itself",
        ),
        NetworkMode::Pasta => choice(
            ChosenDriver::Builtin,
            "this pasta build breaks TCP on published ports (server-speaks-first hangs and half-close corrupts on \
             its tap path, fixed in passt 2023_10_04 and 2024_08_06; large transfers stall on its splice path), \
             so pelagos-net relays the ports itself",
        ),
        NetworkMode::Slirp4netns => choice(
            ChosenDriver::Builtin,
            "the builtin driver keeps client source addresses and serves ranges, host-IP binds, IPv6 and loopback UDP, \
             which slirp4netns cannot",
        ),
        NetworkMode::Bridge(_) if facts.rootless_bridge => choice(
            ChosenDriver::Builtin,
            "a rootless network lives in your network holder, out of the host's reach for kernel DNAT; the builtin \
             driver publishes into the container and keeps the client's address",
        ),
        NetworkMode::Bridge(_) if ports.iter().any(|m| m.host_ip.is_some_and(|ip| ip.is_ipv6())) => choice(
            ChosenDriver::Builtin,
            "a port binds an IPv6 host address, which kernel DNAT cannot send to an IPv4 bridge",
        ),
        NetworkMode::Bridge(_) => choice(ChosenDriver::Native, "kernel DNAT forwards without copying"),
        _ => choice(ChosenDriver::Builtin, "this mode has no network helper; pelagos-net relays the ports itself"),
    }
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;

//! Which network mode to use, and why: [`select`] turns a [`Request`] and the
//! probed [`HostCaps`] into a [`Decision`] a runtime can trust and print.
//!
//! Pure: no fs, no syscalls, no spawn. Everything it knows comes from
//! [`HostCaps`] (see [`crate::host::probe`]); everything it decides is in the
//! returned value, including every mode it passed over and why.
//!
//! # The ladder
//!
//! Under [`Requested::Auto`] the modes are tried in this order; the first
//! that is *usable* (its requirements hold) and *fits* (it meets every need)
//! wins. [`Mode::Host`] is never chosen automatically.
//!
//! | caller | needs | ladder |
//! |---|---|---|
//! | no CAP_NET_ADMIN (rootless) | container-to-container or a named network | bridge (rejected: needs CAP_NET_ADMIN) → pasta → slirp4netns → loopback, all degraded |
//! | no CAP_NET_ADMIN (rootless) | anything else | pasta → slirp4netns → loopback |
//! | CAP_NET_ADMIN | container-to-container or a named network | bridge → pasta → slirp4netns → loopback |
//! | CAP_NET_ADMIN | anything else | pasta → slirp4netns → bridge → loopback |
//!
//! Build quality counts: when egress is needed and the pasta build has known
//! tap-path TCP bugs ([`TapBugs::any`](crate::helpers::pasta::features::TapBugs::any)),
//! slirp4netns is taken instead of pasta if it is usable and fits, and the
//! reason says so. A pasta with those bugs that was asked for explicitly
//! falls short of the egress need: `strict` refuses it, `warn` uses it with
//! one warning naming the bugs and the releases that fixed them, `allow`
//! uses it quietly.
//!
//! # What each mode requires, and what it cannot do
//!
//! | mode | usable when | cannot provide |
//! |---|---|---|
//! | `host` | always | a named network |
//! | `loopback` | CAP_SYS_ADMIN, or user namespaces allowed by the three knobs | egress, published ports, container-to-container, a named network |
//! | `pasta` | `pasta` on PATH with `--config-net --foreground --stderr --no-map-gw --netns --tcp-ports --udp-ports --tcp-ns --udp-ns` (and `--userns` rootless, `--runas` as root); `/dev/net/tun` opens; CAP_SYS_ADMIN or user namespaces; a default route (IPv4 or IPv6), since older builds refuse to start without one | container-to-container, a named network |
//! | `slirp4netns` | `slirp4netns` on PATH with `--configure --mtu --exit-fd --ready-fd --api-socket --netns-type --disable-host-loopback` (and `--userns-path` rootless), the options [`crate::helpers::slirp::args`] uses; `/dev/net/tun` opens; CAP_SYS_ADMIN or user namespaces | port ranges and IPv6 host addresses ([`crate::helpers::slirp::api::supported_port_features`]: its API forwards one IPv4 port at a time), container-to-container, a named network |
//! | `bridge[:NAME]` | CAP_NET_ADMIN in the user namespace that owns our network namespace, CAP_SYS_ADMIN (to mount the named netns), nftables | IPv6 ports (bridge networks are IPv4-only) |
//!
//! Port features other than those listed (binding a host IP, UDP) are
//! provided by every mode that publishes ports. A request with no needs still
//! gets the first rung: the ladder orders modes by what they give.
//!
//! Inside a container the fixes name the container's side (`--device
//! /dev/net/tun`) or say that a sysctl belongs on the host. A container's
//! seccomp profile is not guessed at: if it refuses user namespaces, the run
//! fails with the user-namespace hint rather than being predicted here.
//!
//! # Fallback
//!
//! A decision is *degraded* when it falls short of the request: the mode
//! asked for was replaced, or a need is not met.
//!
//! | fallback | explicit mode not usable | explicit mode usable but short of a need | auto: no rung fits |
//! |---|---|---|---|
//! | `strict` | `Err(Unavailable)` | `Err(Unavailable)` | `Err(NoFit)` naming the best rung |
//! | `warn` | first ladder rung that fits (else that is usable), one-line `warning` | keep it, one-line `warning` | first usable rung, one-line `warning` |
//! | `allow` | as `warn`, `warning: None` | as `warn`, `warning: None` | as `warn`, `warning: None` |
//!
//! When no mode at all is usable the answer is an error whatever the
//! fallback (`Unavailable` for an explicit mode, `NothingUsable` under auto):
//! falling back to the host's own network would silently remove isolation.

mod rungs;
mod walk;

use std::fmt;

use serde::Serialize;

use crate::host::probe::HostCaps;
use crate::model::ifname::NetworkName;
use crate::model::mode::NetworkMode;

/// A network mode `select` can choose. [`NetworkMode`] plus `slirp4netns`,
/// which the spec does not name yet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The caller's own network namespace.
    Host,
    /// A new network namespace with only `lo`.
    Loopback,
    /// A new namespace connected by pasta.
    Pasta,
    /// A new namespace connected by slirp4netns.
    Slirp4netns,
    /// A bridge network: the default (`None`) or a named one.
    Bridge(Option<NetworkName>),
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_network_mode().fmt(f)
    }
}

impl Serialize for Mode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Requested {
    /// `auto` lets the ladder choose; any other mode is asked for
    /// explicitly. `None` for `ns:PATH`, which has no ladder: the namespace
    /// is used as it is.
    pub fn of(mode: &NetworkMode) -> Option<Self> {
        Some(Requested::Explicit(match mode {
            NetworkMode::Auto => return Some(Requested::Auto),
            NetworkMode::Host => Mode::Host,
            NetworkMode::Loopback => Mode::Loopback,
            NetworkMode::Pasta => Mode::Pasta,
            NetworkMode::Slirp4netns => Mode::Slirp4netns,
            NetworkMode::Bridge(name) => Mode::Bridge(name.clone()),
            NetworkMode::Ns(_) => return None,
        }))
    }
}

impl Mode {
    /// The same mode as the spec names it.
    pub fn to_network_mode(&self) -> NetworkMode {
        match self {
            Self::Host => NetworkMode::Host,
            Self::Loopback => NetworkMode::Loopback,
            Self::Pasta => NetworkMode::Pasta,
            Self::Slirp4netns => NetworkMode::Slirp4netns,
            Self::Bridge(name) => NetworkMode::Bridge(name.clone()),
        }
    }
}

/// The mode asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Requested {
    /// Let the ladder choose.
    #[default]
    Auto,
    /// This mode.
    Explicit(Mode),
}

/// What published ports need beyond a plain TCP forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PortFeatures {
    /// A port bound to one host address (`127.0.0.1:8080:80`).
    pub host_ip_binding: bool,
    /// A port range (`8000-8010:80-90`).
    pub ranges: bool,
    /// A UDP port.
    pub udp: bool,
    /// An IPv6 host address (`[::1]:8080:80`).
    pub ipv6: bool,
}

/// What the command's network must provide.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Needs {
    /// Connections out of the namespace.
    pub egress: bool,
    /// Host ports forwarded in.
    pub published_ports: bool,
    /// Reaching other containers by address.
    pub container_to_container: bool,
    /// A named network to join (always a bridge network).
    pub named_network: Option<NetworkName>,
    /// Details of the published ports (ignored without `published_ports`).
    pub ports: PortFeatures,
    /// The host's loopback services as 127.0.0.1:PORT inside (`--host-port`; pasta only).
    pub host_loopback: bool,
    /// Ports must be forwarded by the mode's own mechanism (`--port-driver`
    /// pasta, slirp4netns or nftables). Otherwise the builtin driver may
    /// publish what a mode cannot (ranges and IPv6 under slirp4netns, any
    /// port in loopback mode, IPv6 on a bridge).
    pub native_ports_only: bool,
    /// The namespace exists already (an attachment): what it takes to
    /// create one does not count against a mode.
    pub existing_namespace: bool,
}

/// What a network must provide, from its configuration.
pub fn needs_for(network: &crate::model::config::NetworkConfig) -> Needs {
    use crate::model::driver::PortDriver;
    use crate::model::port::PortProto;
    let ports = &network.ports;
    Needs {
        egress: true,
        published_ports: !ports.is_empty(),
        container_to_container: matches!(network.mode, NetworkMode::Bridge(_)),
        named_network: match &network.mode {
            NetworkMode::Bridge(name) => name.clone(),
            _ => None,
        },
        host_loopback: !network.host_loopback_ports.is_empty(),
        native_ports_only: !matches!(network.port_driver, PortDriver::Auto | PortDriver::Builtin),
        ports: PortFeatures {
            host_ip_binding: ports.iter().any(|m| m.host_ip.is_some()),
            ranges: ports.iter().any(|m| m.container.len() > 1),
            udp: ports.iter().any(|m| m.proto == PortProto::Udp),
            ipv6: ports.iter().any(|m| matches!(m.host_ip, Some(std::net::IpAddr::V6(_)))),
        },
        existing_namespace: false,
    }
}

/// What to do when the request cannot be met in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fallback {
    /// Fail.
    Strict,
    /// Degrade, with one warning line.
    #[default]
    Warn,
    /// Degrade quietly.
    Allow,
}

/// A mode request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// The mode asked for.
    pub mode: Requested,
    /// What the network must provide.
    pub needs: Needs,
    /// What to do when that cannot be met.
    pub fallback: Fallback,
}

/// A mode that was passed over, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    /// The mode.
    pub mode: Mode,
    /// Why it was not chosen.
    pub reason: String,
}

/// The chosen mode, with its reasons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The mode to use.
    pub mode: Mode,
    /// Why, in one line, naming what was passed over.
    pub reason: String,
    /// Modes tried before it, in ladder order.
    pub rejected: Vec<Rejected>,
    /// True when the decision falls short of the request.
    pub degraded: bool,
    /// One line for the user under [`Fallback::Warn`] when degraded.
    pub warning: Option<String>,
    /// Steps that would make a better mode usable.
    pub fixes: Vec<String>,
}

/// Why no acceptable mode could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    /// The explicitly requested mode cannot be used (and fallback is strict,
    /// or nothing else is usable either).
    #[error("network mode {mode} is unavailable: {reason}")]
    Unavailable {
        /// The requested mode.
        mode: Mode,
        /// Why.
        reason: String,
        /// Steps that would fix it.
        fixes: Vec<String>,
    },
    /// Under auto with strict fallback, no usable mode meets every need.
    #[error("no network mode meets every need ({best} would): {reason}")]
    NoFit {
        /// The ladder's first rung for these needs.
        best: Mode,
        /// Why each rung falls short.
        reason: String,
        /// Steps that would fix it.
        fixes: Vec<String>,
    },
    /// Under auto, no mode on the ladder is usable at all.
    #[error("no network mode is usable here: {reason}")]
    NothingUsable {
        /// Why each rung is unusable.
        reason: String,
        /// Steps that would fix it.
        fixes: Vec<String>,
    },
}

impl SelectError {
    /// Steps that would fix it.
    pub fn fixes(&self) -> &[String] {
        match self {
            Self::Unavailable { fixes, .. } | Self::NoFit { fixes, .. } | Self::NothingUsable { fixes, .. } => fixes,
        }
    }
}

/// The auto ladder for `needs` on this host (see the module docs).
pub fn ladder(needs: &Needs, caps: &HostCaps) -> Vec<Mode> {
    let bridge = Mode::Bridge(needs.named_network.clone());
    if needs.container_to_container || needs.named_network.is_some() {
        vec![bridge, Mode::Pasta, Mode::Slirp4netns, Mode::Loopback]
    } else if caps.cap_net_admin {
        vec![Mode::Pasta, Mode::Slirp4netns, bridge, Mode::Loopback]
    } else {
        vec![Mode::Pasta, Mode::Slirp4netns, Mode::Loopback]
    }
}

/// Choose the mode for `req` on a host with `caps` (see the module docs).
pub fn select(req: &Request, caps: &HostCaps) -> Result<Decision, SelectError> {
    let ladder: Vec<Rung> = ladder(&req.needs, caps).into_iter().map(|m| Rung::assess(m, &req.needs, caps)).collect();
    match &req.mode {
        Requested::Auto => walk::auto(req, caps, ladder),
        Requested::Explicit(mode) => walk::explicit(req, caps, Rung::assess(mode.clone(), &req.needs, caps), ladder),
    }
}

/// One mode, judged against the host and the needs.
struct Rung {
    mode: Mode,
    blockers: Vec<rungs::Blocker>,
    shortfalls: Vec<String>,
}

impl Rung {
    fn assess(mode: Mode, needs: &Needs, caps: &HostCaps) -> Self {
        Self { blockers: rungs::blockers(&mode, needs, caps), shortfalls: rungs::shortfalls(&mode, needs), mode }
    }

    fn usable(&self) -> bool {
        self.blockers.is_empty()
    }

    fn fits(&self) -> bool {
        self.usable() && self.shortfalls.is_empty()
    }

    /// Blockers if any, else shortfalls, `"; "`-joined.
    fn why_not(&self) -> String {
        match self.usable() {
            false => self.blockers.iter().map(|b| b.reason.as_str()).collect::<Vec<_>>().join("; "),
            true => self.shortfalls.join("; "),
        }
    }

    fn rejected(&self) -> Rejected {
        Rejected { mode: self.mode.clone(), reason: self.why_not() }
    }
}

/// What fixes pasta's known tap-path TCP bugs.
pub const PASTA_UPGRADE: &str = "install passt 2024_08_06 or later, which fixes them";

/// `"pasta at PATH (VERSION) has known TCP bugs on its tap path: ...
/// (fixed in ...)"` when this build carries them: egress TCP from the
/// namespace may hang or be cut short.
pub fn buggy_pasta(
    path: &std::path::Path,
    features: &crate::helpers::pasta::features::PastaFeatures,
) -> Option<String> {
    let bugs = features.tcp_tap_bugs();
    bugs.any().then(|| {
        format!(
            "pasta at {} ({}) has {}",
            path.display(),
            rungs::version_text(&features.version),
            rungs::tap_bugs_text(bugs)
        )
    })
}

#[cfg(test)]
#[path = "select_tests.rs"]
mod tests;

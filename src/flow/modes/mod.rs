//! One small contract per network mode, in the spirit of netavark's
//! `NetworkDriver { validate, setup, teardown }`: a mode [`ModeDriver::check`]s
//! what it cannot do and contributes its [`ModeDriver::steps`]. Setup is
//! the executor running those steps and teardown the one undo function
//! walking what they recorded, the same for every mode, so a mode file
//! holds only what is particular to it.

mod bridge;
mod holder;
mod host;
mod loopback;
mod ns;
mod pasta;
mod slirp;

use crate::bridge::network::NetworkDef;
use crate::flow::plan::{Refusal, Request, TargetKind, ns_ref};
use crate::flow::steps::{ChildNs, NsRef, Step};
use crate::host::probe::HostCaps;
use crate::model::mode::NetworkMode;
use std::path::PathBuf;

/// What a mode's planning sees.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Input<'a> {
    /// The request.
    pub req: &'a Request,
    /// The mode chosen (never `auto`).
    pub mode: &'a NetworkMode,
    /// The probed host.
    pub host: &'a HostCaps,
    /// The builtin driver relays the published ports.
    pub builtin: bool,
    /// The mode went through the selection ladder (whose shortfalls the
    /// fallback policy accepted).
    pub decided: bool,
    /// The bridge network (bridge modes).
    pub network: Option<&'a NetworkDef>,
    /// pasta's extra argv (`pasta:OPTS`).
    pub pasta_extra: &'a [String],
    /// slirp4netns's extra options (`slirp4netns:OPTS`).
    pub slirp_options: &'a crate::model::helper_opts::SlirpOptions,
}

impl Input<'_> {
    /// The caller is not root: namespaces come with a user namespace.
    pub fn rootless(&self) -> bool {
        self.host.euid != 0
    }

    /// The namespace the mode's steps act on.
    pub fn ns(&self) -> NsRef {
        ns_ref(&self.req.target)
    }

    /// The fork of the command's child, for a run.
    pub fn fork_child(&self) -> Option<Step> {
        match self.req.target {
            TargetKind::NewChild => {
                Some(Step::ForkChild { ns: if self.host.euid != 0 { ChildNs::NewUserAndNet } else { ChildNs::NewNet } })
            }
            _ => None,
        }
    }

    /// The namespace files a plan shows for `ns` (placeholders for what
    /// only the setup learns).
    pub fn shown_target(&self, ns: NsRef) -> crate::model::target::NsTarget {
        use crate::model::target::NsTarget;
        match (&self.req.target, ns) {
            (TargetKind::Given(g), NsRef::Given) => {
                NsTarget { netns: g.netns.clone(), userns: g.userns.clone().filter(|_| self.rootless()) }
            }
            (_, NsRef::Named) => NsTarget::netns_only("/run/netns/pelagos-<id>"),
            _ => NsTarget {
                netns: "/proc/<child>/ns/net".into(),
                userns: self.rootless().then(|| "/proc/<child>/ns/user".into()),
            },
        }
    }
}

/// A network mode's part of planning.
pub(crate) trait ModeDriver {
    /// Refuse what this mode cannot do for the request.
    fn check(&self, input: &Input<'_>) -> Result<(), Refusal>;

    /// The mode's steps, after the ports are bound and the record written,
    /// up to a namespace whose network is ready.
    fn steps(&self, input: &Input<'_>) -> Vec<Step>;

    /// The published ports are forwarded by something that holds no host
    /// socket (kernel DNAT), so the setup holds them itself
    /// ([`Step::HoldPorts`]) while it lives.
    fn holds_ports(&self, _input: &Input<'_>) -> bool {
        false
    }

    /// Where the builtin relay relays to.
    fn relay_target(&self, input: &Input<'_>) -> NsRef {
        input.ns()
    }

    /// The helper program and its argv as a plan shows it (`dns_forward`:
    /// pasta's `--dns-forward` address, when name resolution sets one).
    fn helper(&self, _input: &Input<'_>, _dns_forward: Option<std::net::Ipv4Addr>) -> Option<(PathBuf, Vec<String>)> {
        None
    }

    /// pasta's `--runas`.
    fn runas(&self, _input: &Input<'_>) -> Option<u32> {
        None
    }

    /// What the ports can be published with, for people.
    fn port_support(&self, input: &Input<'_>) -> Option<String> {
        input.builtin.then(|| builtin_support(input))
    }

    /// Warnings the mode has for this request.
    fn warnings(&self, _input: &Input<'_>) -> Vec<String> {
        Vec::new()
    }
}

/// The mode's planner.
pub(crate) fn driver(mode: &NetworkMode, host: &HostCaps) -> &'static dyn ModeDriver {
    match mode {
        NetworkMode::Bridge(_) if host.euid != 0 => &holder::Holder,
        NetworkMode::Host => &host::Host,
        NetworkMode::Loopback | NetworkMode::Auto => &loopback::Loopback,
        NetworkMode::Pasta => &pasta::Pasta,
        NetworkMode::Slirp4netns => &slirp::Slirp,
        NetworkMode::Bridge(_) => &bridge::Bridge,
        NetworkMode::Ns(_) => &ns::Ns,
    }
}

/// `--host-port` with a mode that cannot serve it: refused when the mode
/// was asked for as it is (a fallback policy that chose it accepted the
/// shortfall, and said so).
fn refuse_host_loopback(input: &Input<'_>) -> Result<(), Refusal> {
    if !input.req.network.host_loopback_ports.is_empty() && !input.decided {
        return Err(Refusal::HostLoopback { mode: input.mode.clone() });
    }
    Ok(())
}

fn builtin_support(input: &Input<'_>) -> String {
    if matches!(input.mode, NetworkMode::Loopback) {
        "host-IP binding, ranges, UDP, IPv6; clients appear as 127.0.0.1".into()
    } else {
        "host-IP binding, ranges, UDP, IPv6; TCP client source addresses kept".into()
    }
}

fn argv_strings(program: &std::path::Path, argv: &[std::ffi::OsString]) -> Vec<String> {
    std::iter::once(program.display().to_string())
        .chain(argv.iter().map(|a| a.to_string_lossy().into_owned()))
        .collect()
}

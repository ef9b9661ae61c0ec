//! Why a request is refused before anything is created.
//!
//! Every refusal `run`, `attach` and the library make comes from the
//! planner, so `plan` refuses exactly what they refuse. A refusal's
//! message says what is wrong in the library's terms; [`Refusal::hint`]
//! says what to change, in the command line's terms, for the CLI to print.

use crate::bridge::network::NetworkError;
use crate::flow::select::SelectError;
use crate::helpers::slirp::api::SlirpApiError;
use crate::host::diagnose::TunProblem;
use crate::model::driver::DriverMismatch;
use crate::model::mode::NetworkMode;
use crate::model::port::PortRange;

/// A request the planner refuses.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No acceptable network mode.
    #[error("{0}")]
    Select(SelectError),
    /// The port driver does not fit the mode.
    #[error(transparent)]
    PortDriver(#[from] DriverMismatch),
    /// pasta is not installed.
    #[error("pasta not found on PATH")]
    PastaMissing,
    /// slirp4netns is not installed.
    #[error("slirp4netns not found on PATH")]
    SlirpMissing,
    /// pasta refuses to start on a host without a default route.
    #[error("the host has no default route, and pasta refuses to start without one")]
    NoDefaultRoute,
    /// pasta disables IPv6 on a host without an IPv6 default route.
    #[error("pasta cannot publish {0}: the host has no IPv6 default route, so pasta has no IPv6")]
    PastaNoIpv6(String),
    /// The tun device is unusable for the helper that needs it.
    #[error("{helper} needs the tun device to create its tap device: {problem}")]
    Tun {
        /// `pasta` or `slirp4netns`.
        helper: &'static str,
        /// What is wrong with the device.
        #[source]
        problem: TunProblem,
    },
    /// The pasta build cannot keep the host's loopback out of reach.
    #[error(
        "pasta at {} cannot keep the host's loopback private: it lacks --no-map-gw, so every service on the \
         host's 127.0.0.1 would be reachable from inside through the gateway address",
        path.display()
    )]
    PastaExposesHostLoopback {
        /// The pasta binary.
        path: std::path::PathBuf,
    },
    /// Bridge networks need privileges.
    #[error("bridge networking needs CAP_NET_ADMIN")]
    BridgeNeedsRoot,
    /// A published port slirp4netns cannot forward itself.
    #[error(transparent)]
    SlirpPorts(SlirpApiError),
    /// A mode that cannot give the namespace the host's loopback ports.
    #[error("{mode} cannot give the namespace ports of the host's loopback")]
    HostLoopback {
        /// The mode.
        mode: NetworkMode,
    },
    /// A published range without host ports.
    #[error("publishing the range {0} needs explicit host ports")]
    EphemeralRange(PortRange),
    /// Host networking with published ports.
    #[error("host networking uses the host's own ports, so there is nothing to publish ({0})")]
    HostPublishes(String),
    /// `ns:PATH` with published ports or host-loopback ports.
    #[error("an existing namespace is used as it is: a run publishes nothing into it")]
    NsPublishes,
    /// `ns:PATH` with a fallback policy.
    #[error("an existing namespace is used as it is: there is nothing to fall back to")]
    NsFallback,
    /// A mode that cannot network a namespace someone else made.
    #[error("network mode {0} cannot be attached to an existing namespace")]
    NotAttachable(NetworkMode),
    /// An attachment that would do nothing.
    #[error("loopback mode attaches nothing without published ports")]
    NothingToAttach,
    /// A published port a bridge network's DNAT cannot forward.
    #[error(transparent)]
    BridgePorts(crate::bridge::plan::PlanError),
    /// `pasta:OPTS` or `slirp4netns:OPTS` was refused.
    #[error(transparent)]
    HelperOptions(crate::model::helper_opts::HelperOptsError),
    /// The DNS options cannot be met in this mode.
    #[error(transparent)]
    Dns(crate::dns::DecideError),
    /// DNS options for a namespace the setup runs no command in.
    #[error("name resolution options apply to a command's namespace; an existing namespace keeps its own")]
    DnsNeedsCommand,
    /// The bridge network's definition could not be read.
    #[error(transparent)]
    Network(NetworkError),
    /// A rootless network joined by something other than a run or an
    /// attachment (a named netns the setup would create).
    #[error(
        "a rootless network is joined by runs and attachments only: their namespaces are owned by your \
         network holder's user namespace"
    )]
    HolderNeedsRun,
    /// An attachment to a rootless network whose namespace the holder cannot enter.
    #[error(
        "{path}: this network namespace is not owned by your network holder's user namespace, so the \
         holder cannot put a veth pair into it"
    )]
    HolderForeignNetns {
        /// The namespace.
        path: std::path::PathBuf,
    },
}

impl From<SelectError> for Refusal {
    fn from(e: SelectError) -> Self {
        Self::Select(e)
    }
}

impl Refusal {
    /// What to change, in the command line's terms.
    pub fn hint(&self) -> Option<String> {
        let text = match self {
            Self::Select(e) if !e.fixes().is_empty() => e.fixes().join("\n"),
            Self::HolderNeedsRun => "run the command with `pelagos-net run --network bridge:NAME -- CMD`".into(),
            Self::HolderForeignNetns { .. } => "create the namespace inside the holder's user namespace \
                                                (`nsenter --user=/proc/<holder>/ns/user unshare --net ...`, \
                                                the holder's pid in `<run dir>/holder/state.json`), or use \
                                                `pelagos-net run --network bridge:NAME`"
                .into(),
            Self::PastaMissing => {
                "install it with `sudo apt-get install passt` (Debian/Ubuntu), `sudo dnf install passt` \
                                   (Fedora) or your distribution's passt package, or choose `--network loopback`"
                    .into()
            }
            Self::SlirpMissing => {
                "install it with `sudo apt-get install slirp4netns`, or choose `--network pasta`".into()
            }
            Self::PastaExposesHostLoopback { .. } => {
                "install passt 2021 or later, or choose `--network slirp4netns`".into()
            }
            Self::BridgeNeedsRoot => "run as root, or use `--network pasta` (rootless)".into(),
            Self::NoDefaultRoute => "add a default route (`sudo ip route add default via GATEWAY`), or use \
                                     `--network slirp4netns` or `loopback`"
                .into(),
            Self::PastaNoIpv6(_) => "use `--port-driver builtin`, or publish on an IPv4 address".into(),
            Self::SlirpPorts(_) => "publish single IPv4 ports, or use `--port-driver builtin`".into(),
            Self::HostLoopback { .. } => "`--host-port` needs `--network pasta`".into(),
            Self::EphemeralRange(r) => format!("give the host ports, e.g. `-p 8000-{}:{r}`", 8000 + r.len() - 1),
            Self::HostPublishes(_) => "drop `-p`, or use another `--network` mode".into(),
            Self::NsPublishes => {
                "publish ports into an existing namespace with `pelagos-net attach --netns PATH -p ...`".into()
            }
            Self::NsFallback => "drop `--fallback`".into(),
            Self::NotAttachable(_) => "choose `--network pasta`, `slirp4netns`, `loopback` or `bridge[:NAME]`".into(),
            Self::NothingToAttach => "publish a port with `-p`, or choose another `--network` mode".into(),
            Self::BridgePorts(_) => "use `--port-driver builtin`".into(),
            Self::DnsNeedsCommand => "drop `--dns`, `--dns-search`, `--dns-option` and `--add-host`".into(),
            Self::HelperOptions(e) => return e.hint(),
            Self::Select(_)
            | Self::PortDriver(_)
            | Self::Tun { .. }
            | Self::Network(_)
            | Self::Dns(_) => return None,
        };
        Some(text)
    }

    /// The exit code the CLI uses for it.
    pub fn exit_code(&self) -> i32 {
        125
    }
}

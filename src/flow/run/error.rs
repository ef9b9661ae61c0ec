//! The errors of `run`, with the exit code each maps to.

use crate::helpers::pasta::setup::PastaSetupError;
use crate::host::diagnose::TunProblem;
use crate::model::driver::DriverMismatch;
use crate::model::mode::NetworkMode;
use crate::ns::child::{ChildStage, UsernsError};
use crate::ns::netns::NetnsError;
use crate::state::store::StoreError;
use nix::errno::Errno;

use super::PortError;

/// Errors of `run`. Each carries what the user needs to act.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No command was given.
    #[error("no command given")]
    NoCommand,
    /// The command is not on PATH (exit 127).
    #[error("{0}: command not found")]
    CommandNotFound(String),
    /// `execve` of the command failed (exit 126, or 127 for ENOENT).
    #[error("cannot execute {command}")]
    Exec {
        /// Command.
        command: String,
        /// errno of execve.
        #[source]
        errno: Errno,
    },
    /// pasta is not installed.
    #[error(
        "pasta not found on PATH: install it with `sudo apt-get install passt` (Debian/Ubuntu), `sudo dnf install passt` (Fedora) or your distribution's passt package, or choose `--network loopback`"
    )]
    PastaMissing,
    /// The pasta build cannot keep the host's loopback out of reach.
    #[error(
        "pasta at {} cannot keep the host's loopback private: its --help lacks --no-map-gw, so every service on the host's 127.0.0.1 would be reachable from inside through the gateway address; install passt 2021 or later, or choose --network slirp4netns",
        path.display()
    )]
    PastaExposesHostLoopback {
        /// The pasta binary.
        path: std::path::PathBuf,
    },
    /// The tun device is unusable for the helper that needs it.
    #[error("{helper} needs the tun device to create its tap device: {problem}")]
    Tun {
        /// `pasta` or `slirp4netns`.
        helper: &'static str,
        /// What is wrong with the device.
        #[source]
        problem: TunProblem,
    },
    /// The namespaces could not be created.
    #[error("cannot create the namespace ({stage}): {errno}. {hint}")]
    Namespaces {
        /// Step that failed.
        stage: ChildStage,
        /// Its errno.
        errno: Errno,
        /// What to do about it.
        hint: String,
    },
    /// The namespace child failed otherwise.
    #[error(transparent)]
    Child(#[from] UsernsError),
    /// A published port is taken (by another run or a host process), or
    /// published twice.
    #[error(transparent)]
    PortCheck(#[from] crate::ports::precheck::PortCheckError),
    /// Ephemeral port resolution failed.
    #[error(transparent)]
    Ports(#[from] PortError),
    /// pasta failed.
    #[error(transparent)]
    Pasta(#[from] PastaSetupError),
    /// The runtime state directory failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The named netns could not be created or removed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// Signal handling could not be set up.
    #[error("set up signal forwarding")]
    Signals(#[source] Errno),
    /// `--network pasta:OPTS` or `slirp4netns:OPTS` was refused.
    #[error(transparent)]
    HelperOptions(#[from] crate::model::helper_opts::HelperOptsError),
    /// The mode is not supported by `run` (yet).
    #[error("network mode {0} is not supported by run")]
    UnsupportedMode(NetworkMode),
    /// No acceptable network mode (see `select`).
    #[error("{err}{}", fixes_text(.err.fixes()))]
    Select {
        /// Why no mode fits.
        err: crate::flow::select::SelectError,
    },
    /// slirp4netns is not installed.
    #[error(
        "slirp4netns not found on PATH: install it with `sudo apt-get install slirp4netns`, or choose --network pasta"
    )]
    SlirpMissing,
    /// slirp4netns failed.
    #[error(transparent)]
    Slirp(#[from] crate::helpers::slirp::setup::SlirpSetupError),
    /// A mapping slirp4netns cannot express, or an option it lacks.
    #[error("{0}")]
    SlirpUnsupported(String),
    /// Stopping slirp4netns failed.
    #[error(transparent)]
    SlirpTeardown(crate::helpers::slirp::process::SlirpError),
    /// Bridge mode needs privileges.
    #[error("bridge networking needs CAP_NET_ADMIN: run as root, or use --network pasta (rootless)")]
    BridgeNeedsRoot,
    /// The network definition could not be loaded.
    #[error(transparent)]
    Network(crate::bridge::network::NetworkError),
    /// Bridge setup failed.
    #[error(transparent)]
    Bridge(crate::bridge::BridgeError),
    /// Bridge teardown failed (every step was attempted).
    #[error(transparent)]
    BridgeTeardown(crate::bridge::TeardownErrors),
    /// The port driver does not fit the mode.
    #[error(transparent)]
    PortDriver(#[from] DriverMismatch),
    /// A published port could not be bound (builtin driver).
    #[error(transparent)]
    Listen(crate::ports::relay::PortfwdError),
    /// The builtin port driver could not start.
    #[error(transparent)]
    BuiltinPorts(#[from] crate::ports::builtin::BuiltinPortsError),
    /// Name resolution could not be set up.
    #[error(transparent)]
    Dns(#[from] crate::dns::DnsSetupError),
    /// Several teardown steps failed.
    #[error("teardown failed: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Teardown(Vec<RunError>),
}

fn fixes_text(fixes: &[String]) -> String {
    fixes.iter().map(|f| format!("\n  fix: {f}")).collect()
}

impl RunError {
    /// The exit code pelagos-net uses for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::CommandNotFound(_) => 127,
            Self::Exec { errno: Errno::ENOENT, .. } => 127,
            Self::Exec { .. } => 126,
            _ => 125,
        }
    }
}

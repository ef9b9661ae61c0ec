//! The errors of the setup pipeline (`run`, `attach`, `detach`, the
//! library), with the exit code each maps to.

use crate::helpers::pasta::setup::PastaSetupError;
use crate::ns::child::{ChildStage, UsernsError};
use crate::ns::netns::NetnsError;
use crate::state::store::StoreError;
use nix::errno::Errno;

use crate::ports::ephemeral::PortError;

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
    /// `--name` is taken on the network, or the names could not be checked.
    #[error(transparent)]
    Name(#[from] crate::dns::names::NameClaimError),
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
    /// slirp4netns failed.
    #[error(transparent)]
    Slirp(#[from] crate::helpers::slirp::setup::SlirpSetupError),
    /// A network definition could not be read or written.
    #[error(transparent)]
    Network(crate::bridge::network::NetworkError),
    /// Name resolution could not be set up.
    #[error(transparent)]
    Dns(#[from] crate::dns::DnsSetupError),
    /// Bridge setup failed.
    #[error(transparent)]
    Bridge(crate::bridge::BridgeError),
    /// A published port could not be bound (builtin driver).
    #[error(transparent)]
    Listen(crate::ports::relay::PortfwdError),
    /// The builtin port driver could not start.
    #[error(transparent)]
    BuiltinPorts(#[from] crate::ports::builtin::BuiltinPortsError),
    /// The request was refused before anything was created.
    #[error(transparent)]
    Refused(#[from] crate::flow::plan::Refusal),
    /// The given namespace cannot be used.
    #[error(transparent)]
    Target(#[from] crate::ns::target::TargetError),
    /// A bridge step ran without its network or an earlier step's result.
    #[error("bridge step out of order (no network, lease or namespace)")]
    NoNetwork,
    /// Undoing one resource failed.
    #[error(transparent)]
    Undo(crate::flow::undo::UndoError),
    /// The socket factory for the `--host-port` listeners could not start.
    #[error("start a socket factory in the namespace for --host-port")]
    HostLoopbackFactory(#[source] crate::ports::nsfactory::FactoryError),
    /// A host loopback port (`--host-port`) could not be given to the namespace.
    #[error("{op} (--host-port {port})")]
    HostLoopback {
        /// What was being done.
        op: &'static str,
        /// The port.
        port: u16,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// No attachment has this id.
    #[error("no attachment {0}")]
    UnknownAttachment(String),
    /// The id names a run, not an attachment.
    #[error("{0} is a run, not an attachment; it ends with its command")]
    NotAnAttachment(String),
    /// The attachment is still being set up or torn down by a live process.
    #[error("attachment {id} is busy: process {pid} is {doing} it")]
    Busy {
        /// Its id.
        id: String,
        /// The process.
        pid: u32,
        /// `setting up` or `tearing down`.
        doing: &'static str,
    },
    /// The namespace is already networked in a way this attachment conflicts with.
    #[error("{netns} is already attached by {id}: {why}")]
    Conflict {
        /// The namespace given.
        netns: std::path::PathBuf,
        /// The other attachment.
        id: String,
        /// What overlaps.
        why: String,
    },
    /// A detached relay needs a process of its own, which cannot be forked
    /// from a multithreaded caller.
    #[error("a relay that outlives this process cannot be forked from it: it runs {threads} threads")]
    Threaded {
        /// Threads of this process.
        threads: usize,
    },
    /// The relay process failed to start.
    #[error("start the relay process: {0}")]
    Holder(String),
    /// The user's network holder (rootless shared networks) failed.
    #[error(transparent)]
    SharedNetwork(Box<crate::holder::HolderError>),
    /// Several teardown steps failed.
    #[error("teardown failed: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Teardown(Vec<RunError>),
}

impl From<crate::holder::HolderError> for RunError {
    fn from(e: crate::holder::HolderError) -> Self {
        Self::SharedNetwork(Box::new(e))
    }
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

    /// What to change, in the command line's terms, when there is advice.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Refused(r) => r.hint(),
            Self::Threaded { .. } => Some("attach through the `pelagos-net attach` command".into()),
            Self::Busy { .. } => Some("wait for it, or run `pelagos-net gc` if that process is stuck".into()),
            _ => None,
        }
    }
}

/// An error and its causes, `": "`-joined, each cause left out when the
/// text so far already contains it.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

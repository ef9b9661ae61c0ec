//! What the namespace child reports when a step fails: the step
//! ([`ChildStage`]), the error the parent returns ([`UsernsError`]) and the
//! mount targets of the DNS step that error messages name.

use nix::errno::Errno;
use std::io;
use std::path::Path;

use super::ChildSpec;

/// Step of the child's setup that failed, as reported through the pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ChildStage {
    /// `prctl(PR_SET_PDEATHSIG)`.
    DeathSignal = 1,
    /// `unshare(2)`.
    Unshare = 2,
    /// Writing `/proc/self/setgroups`.
    SetGroups = 3,
    /// Writing `/proc/self/uid_map`.
    UidMap = 4,
    /// Writing `/proc/self/gid_map`.
    GidMap = 5,
    /// Bringing `lo` up.
    Loopback = 6,
    /// `execve(2)` of the command.
    Exec = 7,
    /// Name resolution: the run's resolv.conf and hosts, DNS routing.
    Dns = 8,
    /// Forking the command's process from the namespace's init.
    StartCommand = 9,
    /// Handing the accelerator's notification listener to the parent.
    Accelerator = 10,
}

impl ChildStage {
    pub(super) fn from_u8(v: u8) -> Option<Self> {
        use ChildStage::*;
        [DeathSignal, Unshare, SetGroups, UidMap, GidMap, Loopback, Exec, Dns, StartCommand, Accelerator]
            .into_iter()
            .find(|s| *s as u8 == v)
    }
}

impl std::fmt::Display for ChildStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::DeathSignal => "set parent-death signal",
            Self::Unshare => "create namespaces",
            Self::SetGroups => "write setgroups",
            Self::UidMap => "write uid_map",
            Self::GidMap => "write gid_map",
            Self::Loopback => "bring up lo",
            Self::Exec => "execute the command",
            Self::Dns => "set up name resolution",
            Self::StartCommand => "start the command's process",
            Self::Accelerator => "hand over the accelerator's notification listener",
        })
    }
}

/// Errors of the namespace child.
#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    /// The report channel or a pipe to the child could not be created.
    #[error("create a channel to the namespace child")]
    CreateChannel(#[source] Errno),
    /// `fork` failed.
    #[error("fork the namespace child")]
    Fork(#[source] Errno),
    /// The child reported a failed step.
    #[error("namespace child failed to {stage}")]
    ChildFailed {
        /// The step.
        stage: ChildStage,
        /// Its errno.
        #[source]
        errno: Errno,
    },
    /// The child could not set up name resolution (see [`crate::dns::inside`]).
    #[error("namespace child failed to {}", describe_dns(*.step, .target.as_deref()))]
    DnsFailed {
        /// The step.
        step: crate::dns::inside::DnsStep,
        /// The path a mount step is about.
        target: Option<std::path::PathBuf>,
        /// Its errno.
        #[source]
        errno: Errno,
    },
    /// The child reported ready without the DNS forwarder's sockets it was
    /// to open (the report could not carry them).
    #[error("the namespace child reported ready without the DNS forwarder's sockets")]
    NoDnsListeners,
    /// The child died or closed its channel without reporting.
    #[error("namespace child exited before reporting")]
    ChildVanished,
    /// Reading from or writing to the channel to the child failed.
    #[error("talk to the namespace child")]
    Pipe(#[source] io::Error),
}

/// The mount targets of the DNS step, for error messages.
#[derive(Debug, Default)]
pub(super) struct DnsTargets(Vec<(crate::dns::inside::DnsStep, std::path::PathBuf)>);

impl DnsTargets {
    pub(super) fn of(spec: &ChildSpec) -> Self {
        use crate::dns::inside::DnsStep;
        let Some(dns) = &spec.dns else { return Self::default() };
        let steps = [DnsStep::MountFirst, DnsStep::MountSecond];
        Self(steps.into_iter().filter_map(|s| dns.target_of(s).map(|t| (s, t.to_owned()))).collect())
    }

    pub(super) fn get(&self, step: crate::dns::inside::DnsStep) -> Option<std::path::PathBuf> {
        self.0.iter().find(|(s, _)| *s == step).map(|(_, t)| t.clone())
    }
}

fn describe_dns(step: crate::dns::inside::DnsStep, target: Option<&Path>) -> String {
    use crate::dns::inside::DnsStep;
    match (step, target) {
        (DnsStep::MountFirst | DnsStep::MountSecond, Some(t)) => format!("mount the run's file over {}", t.display()),
        (DnsStep::Propagation, _) => "make its mounts private".into(),
        (DnsStep::Scratch, _) => "mount a scratch tmpfs for the run's resolv.conf and hosts".into(),
        (DnsStep::Write, _) => "write the run's resolv.conf and hosts".into(),
        (DnsStep::Address, _) => "add the DNS address to lo".into(),
        (DnsStep::Rule, _) => "add the routing rule for TCP DNS".into(),
        (DnsStep::ListenUdp, _) => "open the DNS forwarder's UDP socket inside the namespace".into(),
        (DnsStep::ListenTcp, _) => "open the DNS forwarder's TCP listener inside the namespace".into(),
        _ => "mount the run's resolv.conf and hosts".into(),
    }
}

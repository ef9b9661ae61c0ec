//! Whether the accelerator can run here, for `plan`, `doctor` and the
//! run's fallback line: the architecture, the kernel's seccomp actions, and
//! a live try (a forked child installs the very filter a run would and
//! hands its listener over), which also catches a seccomp filter this
//! process already runs under that forbids user notification.

use super::AccelError;
use super::child::{self, Installed};
use super::filter::{Intercept, NATIVE_ARCH};
use std::path::Path;
use std::time::Duration;

/// Whether the accelerator is available, and why not.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", content = "reason", rename_all = "lowercase")]
pub enum Availability {
    /// It can run.
    Available,
    /// It cannot; the run takes the normal path.
    Unavailable(String),
}

impl Availability {
    /// Whether it can run.
    pub fn is_available(&self) -> bool {
        matches!(self, Self::Available)
    }
}

/// Probes this host (`proc_root`: where procfs is mounted).
pub fn probe(proc_root: &Path) -> Availability {
    if NATIVE_ARCH.is_none() {
        return Availability::Unavailable(AccelError::Architecture.to_string());
    }
    let actions = std::fs::read_to_string(proc_root.join("sys/kernel/seccomp/actions_avail")).unwrap_or_default();
    if !actions.is_empty() && !actions.split_whitespace().any(|a| a == "user_notif") {
        return Availability::Unavailable(
            "the kernel has no seccomp user notification (Linux 5.0 or later, CONFIG_SECCOMP_FILTER)".into(),
        );
    }
    match live() {
        Ok(_) => Availability::Available,
        Err(e) => Availability::Unavailable(reason(&e)),
    }
}

/// The sentence a run prints when it falls back.
pub fn reason(e: &AccelError) -> String {
    use nix::errno::Errno;
    match e {
        AccelError::Refused { errno: Errno::EACCES | Errno::EPERM, .. } => format!(
            "{e} ({}): pelagos-net runs under a seccomp filter (a container's profile) that forbids it, \
             or without CAP_SYS_ADMIN in its user namespace",
            e.source_errno()
        ),
        AccelError::Refused { errno: Errno::EINVAL | Errno::ENOSYS, .. } => {
            format!("{e} ({}): this kernel lacks seccomp user notification (Linux 5.9 or later)", e.source_errno())
        }
        other => match std::error::Error::source(other) {
            Some(cause) => format!("{other}: {cause}"),
            None => other.to_string(),
        },
    }
}

impl AccelError {
    fn source_errno(&self) -> String {
        match self {
            AccelError::Refused { errno, .. } => errno.to_string(),
            _ => String::new(),
        }
    }
}

/// A forked child installs the filter (with `no_new_privs`: this process
/// may hold no `CAP_SYS_ADMIN`) and hands the listener over.
fn live() -> Result<Installed, AccelError> {
    let (hook, receiver) = child::pair(Intercept { bind: true, refuse_io_uring: true })?;
    // SAFETY: the child makes only async-signal-safe calls (prctl, the
    // hook's raw syscalls, _exit) on memory prepared before the fork.
    let pid = unsafe { crate::ns::init::raw_fork() };
    if pid == 0 {
        // SAFETY: prctl and _exit with constant arguments.
        unsafe {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            let code = if hook.install().is_ok() { 0 } else { 1 };
            libc::_exit(code);
        }
    }
    drop(hook);
    if pid < 0 {
        return Err(AccelError::Spawn(std::io::Error::last_os_error()));
    }
    let got = receiver.receive(Duration::from_secs(2));
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
    got
}

/// What a run asking for the accelerator gets on this host: whether it can
/// run, and with which lock.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Offer {
    /// Whether it can run at all.
    pub availability: Availability,
    /// The lock switched sockets get.
    pub lock: super::switch::Lock,
    /// The networks this host routes, read under the device lock only (a
    /// slirp4netns network the host routes too refuses it).
    #[serde(skip)]
    pub host_networks: Vec<crate::model::cidr::Ipv4Net>,
}

/// Probes this host for [`Offer`].
pub fn offer(proc_root: &Path) -> Offer {
    let lock = super::switch::Lock::available();
    let host_networks = match lock {
        super::switch::Lock::Peer => Vec::new(),
        super::switch::Lock::Device => {
            crate::bridge::netlink::Netlink::open().and_then(|mut n| n.host_networks()).unwrap_or_else(|e| {
                log::debug!("list this host's networks: {e}");
                Vec::new()
            })
        }
    };
    Offer { availability: probe(proc_root), lock, host_networks }
}

/// `doctor`'s line for the accelerator (pure).
pub fn doctor_check(offer: &Offer) -> crate::flow::doctor::Check {
    use super::switch::Lock;
    use crate::flow::doctor::{Check, Status};
    let (status, detail, fix) = match (&offer.availability, offer.lock) {
        (Availability::Unavailable(why), _) => (Status::Info, format!("unavailable: {why}"), None),
        (Availability::Available, Lock::Peer) => (
            Status::Pass,
            "available (--accel socket): pasta and slirp4netns runs, published TCP ports handed to their servers, \
             switched sockets locked to their peer"
                .to_string(),
            None,
        ),
        (Availability::Available, Lock::Device) => (
            Status::Info,
            "available for slirp4netns runs' egress (--accel socket); this kernel lets only CAP_NET_ADMIN lock a \
             TCP socket to its peer, so switched sockets are bound to their route's device, pasta runs keep pasta \
             and published ports keep the relay"
                .to_string(),
            Some(
                "as root every mode gets it; so do rootless runs on kernels that let a user filter its own TCP sockets"
                    .into(),
            ),
        ),
    };
    Check { name: "accelerator", status, detail, fix }
}

//! The namespace child: a raw `clone` whose child is born in fresh
//! namespaces (or joins the run's network namespace), reports back, and
//! then waits for the parent's word before it starts the command.
//!
//! Why not `std::process::Command`: `Command::spawn` blocks until the child
//! `exec`s, so a child cannot wait on us before `exec` (see the crate
//! docs). Here the child tells us when its namespaces exist, we make the
//! network ready, and only then let it run the command.
//!
//! The child is the init (PID 1) of a PID namespace of its own, so the run
//! owns its whole process tree: the command runs as its child (PID 2), and
//! whatever the command starts, `setsid` and double-fork included, cannot
//! outlive the run, since the kernel kills a PID namespace's processes when
//! its init exits (see [`super::init`] for what init does, and when).
//! A mount namespace comes with it, for a procfs that shows the run's own
//! processes. Rootless, the clone creates the user namespace too (the PID
//! and mount namespaces belong to it), so it works from a multithreaded
//! caller, where `unshare(CLONE_NEWUSER)` would fail.
//!
//! Everything the child does is async-signal-safe: raw syscalls on buffers
//! prepared by the parent, no allocation, no locks, so a multithreaded
//! caller (a runtime, a test harness) can use it safely.

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::Path;

use super::init::{self, Prepared};
use crate::host::spawn::ChildStack;

mod report;
use report::DnsTargets;
pub use report::{ChildStage, UsernsError};

/// Which namespaces the child enters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NsKind {
    /// New user + network namespace, the caller mapped to root inside
    /// (`uid`/`gid` are the caller's ids outside). The rootless case.
    UserAndNet {
        /// Caller's uid outside.
        uid: u32,
        /// Caller's gid outside.
        gid: u32,
    },
    /// New network namespace only (the caller has CAP_SYS_ADMIN).
    NetOnly,
    /// Join an existing network namespace through these open fds (a bridge
    /// run's named netns, configured before the clone; `ns:PATH`), entering
    /// its user namespace first when one is given (rootless). The fds must
    /// stay open until [`NsChild::wait_ready`] returns.
    ///
    /// With a user namespace to enter, the clone creates no namespace (an
    /// unprivileged caller may create PID and mount namespaces only inside
    /// a user namespace of its own, and the child joins an existing one
    /// instead): the command then shares the caller's PID namespace, and
    /// what it leaves behind at its exit is not stopped.
    Join {
        /// The user namespace to enter first.
        userns: Option<RawFd>,
        /// The network namespace.
        netns: RawFd,
    },
    /// Join an existing user namespace (the user's holder of rootless
    /// shared networks), then create network, PID and mount namespaces
    /// inside it: the new network namespace belongs to that user
    /// namespace, so whoever holds it may put a veth pair into it. The fd
    /// must stay open until [`NsChild::spawn`] returns.
    ///
    /// Joining a user namespace needs a single-threaded process, and the
    /// child must still be ours to wait for: a plain fork joins it and
    /// clones the real child as our child (`CLONE_PARENT`), then exits.
    InUserNs {
        /// The user namespace.
        userns: RawFd,
    },
}

impl NsKind {
    /// Whether the child is the init of a PID namespace of its own.
    pub fn owns_pid_ns(&self) -> bool {
        !matches!(self, Self::Join { userns: Some(_), .. })
    }
}

/// When the child starts the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// When the parent says so ([`NsChild::release`]), after its own steps.
    OnWord,
    /// Right after reporting ready: the parent has nothing to do between
    /// (a loopback run: no helper, no hook), so the word would only cost
    /// a round trip through the pipes. [`NsChild::release`] then only
    /// learns whether the exec worked.
    AtOnce,
}

/// What the child runs once released.
#[derive(Debug)]
pub struct ChildSpec {
    /// Namespaces to create.
    pub ns: NsKind,
    /// Resolved path of the program.
    pub program: CString,
    /// argv, including `argv[0]`.
    pub argv: Vec<CString>,
    /// procfs root (for `/proc/self/uid_map` and friends).
    pub proc_root: std::path::PathBuf,
    /// Signal mask the command should start with (the caller's original mask).
    pub sigmask: nix::sys::signal::SigSet,
    /// Name resolution set up inside the namespaces before exec (mounts
    /// in the child's mount namespace, DNS routing).
    pub dns: Option<crate::dns::inside::NsDns>,
    /// The accelerator's filter, installed in the command's process right
    /// before `exec` (see [`crate::accel::child`]).
    pub accel: Option<crate::accel::child::ChildHook>,
    /// When it starts the command.
    pub release: Release,
}

/// Signals the parent passes on to the command (through the namespace's
/// init, which waits for them with SIGCHLD).
pub const FORWARDED_SIGNALS: [Signal; 7] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// Byte the parent sends to let the child exec.
pub(super) const GO: u8 = b'G';
/// Size of a child report: stage byte, detail byte, 2 padding bytes, errno
/// as i32. A "ready" report has stage 0; its errno, when not 0, says why
/// the namespace has no procfs of its own.
pub(super) const REPORT_LEN: usize = 8;

/// A report read from the child.
enum Report {
    /// Namespaces exist and `lo` is up; the errno of a failed private
    /// `/proc` mount, or 0.
    Ready(i32),
    /// A step failed.
    Failed(ChildStage, Errno),
    /// The pipe closed: the command was exec'd, or the child died.
    Closed,
}

/// A forked child sitting in its new namespaces, waiting for [`NsChild::release`].
#[derive(Debug)]
pub struct NsChild {
    pid: Pid,
    report_rx: OwnedFd,
    go_tx: Option<OwnedFd>,
    reaped: bool,
    /// The detail byte of the last report.
    detail: u8,
    dns_targets: DnsTargets,
    release: Release,
    /// The DNS forwarder's sockets the child opened inside (UDP, TCP).
    dns_listeners: Option<(OwnedFd, OwnedFd)>,
    /// Whether the ready report must bring them.
    dns_listens: bool,
}

/// Outcome of releasing the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecOutcome {
    /// The command is running.
    Running,
    /// `execve` failed with this errno (ENOENT: not found; EACCES/ENOEXEC: not executable).
    Failed(Errno),
}

fn cpath(p: &Path) -> CString {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

/// The report channel: a `SOCK_SEQPACKET` pair, so that a report can
/// carry descriptors (the DNS forwarder's sockets, see
/// [`crate::dns::inside`]); end-of-file once every copy of the child's end
/// is closed, as a pipe's.
fn report_pair() -> Result<(OwnedFd, OwnedFd), UsernsError> {
    super::fdpass::pair().map_err(UsernsError::CreateChannel)
}

fn pipe_pair() -> Result<(OwnedFd, OwnedFd), UsernsError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(UsernsError::CreateChannel)
}

impl NsChild {
    /// Clone the child. It is born in its namespaces, brings `lo` up, and
    /// blocks. Call [`NsChild::wait_ready`] next.
    pub fn spawn(spec: &ChildSpec) -> Result<Self, UsernsError> {
        let mut argv_ptrs: Vec<*const libc::c_char> = spec.argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let (uid_map, gid_map) = match spec.ns {
            NsKind::UserAndNet { uid, gid } => {
                (format!("0 {uid} 1\n").into_bytes(), format!("0 {gid} 1\n").into_bytes())
            }
            NsKind::NetOnly | NsKind::Join { .. } | NsKind::InUserNs { .. } => (Vec::new(), Vec::new()),
        };
        let prep = Prepared {
            argv_ptrs,
            setgroups: cpath(&spec.proc_root.join("self/setgroups")),
            uid_map_path: cpath(&spec.proc_root.join("self/uid_map")),
            gid_map_path: cpath(&spec.proc_root.join("self/gid_map")),
            uid_map,
            gid_map,
            proc_dir: cpath(&spec.proc_root),
            signals: init_signals(),
            own_pid_ns: spec.ns.owns_pid_ns(),
        };
        // Reserved, not written: only the pages the command's process
        // touches are faulted in.
        let mut command_stack = ChildStack::reserve(init::COMMAND_STACK);
        let (report_rx, report_tx) = report_pair()?;
        let (go_rx, go_tx) = pipe_pair()?;
        let flags = libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::SIGCHLD;
        let flags = match spec.ns {
            NsKind::UserAndNet { .. } => flags | libc::CLONE_NEWUSER | libc::CLONE_NEWNET,
            NsKind::NetOnly => flags | libc::CLONE_NEWNET,
            NsKind::Join { userns: None, .. } => flags,
            NsKind::Join { userns: Some(_), .. } | NsKind::InUserNs { .. } => libc::SIGCHLD,
        };
        // The intermediate of `InUserNs` tells the real child's pid here.
        let (pid_rx, pid_tx) = pipe_pair()?;
        // SAFETY: the child branch only calls async-signal-safe functions
        // (raw syscalls on memory prepared above) and leaves with `_exit` or
        // `execv`; it never returns into Rust code of the parent.
        let pid = unsafe { init::clone_process(flags as libc::c_ulong) };
        if pid < 0 {
            // The namespaces could not be created: the same step as unshare(2).
            return Err(UsernsError::ChildFailed { stage: ChildStage::Unshare, errno: Errno::last() });
        }
        if pid == 0 {
            drop(report_rx);
            drop(go_tx);
            drop(pid_rx);
            let (tx, rx) = (report_tx.as_raw_fd(), go_rx.as_raw_fd());
            match spec.ns {
                NsKind::InUserNs { userns } => {
                    init::join_user_and_clone(spec, &prep, &mut command_stack, tx, rx, userns, pid_tx.as_raw_fd())
                }
                _ => init::child_main(spec, &prep, &mut command_stack, tx, rx),
            }
        }
        drop(report_tx);
        drop(go_rx);
        drop(pid_tx);
        let dns_targets = DnsTargets::of(spec);
        let mut child = Self {
            pid: Pid::from_raw(pid),
            report_rx,
            go_tx: Some(go_tx),
            reaped: false,
            detail: 0,
            dns_targets,
            release: spec.release,
            dns_listeners: None,
            dns_listens: spec.dns.as_ref().is_some_and(crate::dns::inside::NsDns::listens),
        };
        if let NsKind::InUserNs { .. } = spec.ns {
            child.adopt_grandchild(pid_rx)?;
        }
        Ok(child)
    }

    /// `InUserNs`: reap the intermediate and take over the child it
    /// cloned as ours, or learn why it could not.
    fn adopt_grandchild(&mut self, pid_rx: OwnedFd) -> Result<(), UsernsError> {
        let mut buf = [0u8; 4];
        let mut got = 0;
        while got < buf.len() {
            match nix::unistd::read(&pid_rx, &mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(UsernsError::Pipe(e.into())),
            }
        }
        let intermediate = self.pid;
        while let Err(Errno::EINTR) = waitpid(intermediate, None) {}
        if got == buf.len() {
            self.pid = Pid::from_raw(i32::from_ne_bytes(buf));
            return Ok(());
        }
        self.reaped = true;
        self.go_tx = None;
        match self.read_report()? {
            Report::Failed(stage, errno) => Err(UsernsError::ChildFailed { stage, errno }),
            _ => Err(UsernsError::ChildVanished),
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// Wait until the child's namespaces exist and `lo` is up.
    pub fn wait_ready(&mut self) -> Result<(), UsernsError> {
        match self.read_report()? {
            Report::Ready(_) if self.dns_listens && self.dns_listeners.is_none() => Err(UsernsError::NoDnsListeners),
            Report::Ready(0) => Ok(()),
            Report::Ready(errno) => {
                log::warn!(
                    "could not give the namespace a /proc of its own ({}): `ps` and /proc inside show the host's processes",
                    Errno::from_raw(errno).desc()
                );
                Ok(())
            }
            Report::Failed(ChildStage::Dns, errno) => {
                let step = crate::dns::inside::DnsStep::from_u8(self.detail).ok_or(UsernsError::ChildVanished)?;
                Err(UsernsError::DnsFailed { step, target: self.dns_targets.get(step), errno })
            }
            Report::Failed(stage, errno) => Err(UsernsError::ChildFailed { stage, errno }),
            Report::Closed => Err(UsernsError::ChildVanished),
        }
    }

    /// Let the child start the command (unless it does at once), and learn
    /// whether the exec worked.
    pub fn release(&mut self) -> Result<ExecOutcome, UsernsError> {
        let go = self.go_tx.take().ok_or(UsernsError::ChildVanished)?;
        if self.release == Release::OnWord {
            nix::unistd::write(&go, &[GO]).map_err(|e| UsernsError::Pipe(e.into()))?;
        }
        drop(go);
        match self.read_report()? {
            Report::Closed => Ok(ExecOutcome::Running),
            Report::Failed(ChildStage::Exec, errno) => Ok(ExecOutcome::Failed(errno)),
            Report::Failed(stage, errno) => Err(UsernsError::ChildFailed { stage, errno }),
            Report::Ready(_) => Err(UsernsError::ChildVanished),
        }
    }

    /// The DNS forwarder's sockets (UDP, TCP) the child opened inside its
    /// namespace and handed over with its ready report, once.
    pub fn take_dns_listeners(&mut self) -> Option<(OwnedFd, OwnedFd)> {
        self.dns_listeners.take()
    }

    fn read_report(&mut self) -> Result<Report, UsernsError> {
        let mut buf = [0u8; REPORT_LEN];
        // One message per report (a sequenced-packet pair).
        let (got, fds) = super::fdpass::recv(self.report_rx.as_fd(), &mut buf).map_err(UsernsError::Pipe)?;
        let mut fds = fds.into_iter();
        if let (Some(udp), Some(tcp)) = (fds.next(), fds.next()) {
            self.dns_listeners = Some((udp, tcp));
        }
        if got == 0 {
            return Ok(Report::Closed);
        }
        if got < REPORT_LEN {
            return Err(UsernsError::ChildVanished);
        }
        let errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
        self.detail = buf[1];
        if buf[0] == 0 {
            return Ok(Report::Ready(errno));
        }
        let stage = ChildStage::from_u8(buf[0]).ok_or(UsernsError::ChildVanished)?;
        Ok(Report::Failed(stage, Errno::from_raw(errno)))
    }

    /// Send a signal to the child, the namespace's init, which passes it
    /// on to the command (ignoring "already gone"). SIGKILL ends the whole
    /// run's process tree.
    pub fn signal(&self, sig: Signal) {
        if !self.reaped {
            let _ = kill(self.pid, sig);
        }
    }

    /// Non-blocking reap: `Some(status)` once the child has exited.
    pub fn try_wait(&mut self) -> Result<Option<WaitStatus>, Errno> {
        if self.reaped {
            return Err(Errno::ECHILD);
        }
        match waitpid(self.pid, Some(WaitPidFlag::WNOHANG))? {
            WaitStatus::StillAlive => Ok(None),
            st @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => {
                self.reaped = true;
                Ok(Some(st))
            }
            _ => Ok(None),
        }
    }

    /// Kill and reap the child (used when setup fails before exec).
    pub fn kill_and_reap(&mut self) {
        if self.reaped {
            return;
        }
        let _ = kill(self.pid, Signal::SIGKILL);
        loop {
            match waitpid(self.pid, None) {
                Err(Errno::EINTR) => continue,
                Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        self.reaped = true;
    }
}

impl Drop for NsChild {
    fn drop(&mut self) {
        // Best effort: never leave an unreleased child blocked forever.
        if self.go_tx.is_some() {
            self.kill_and_reap();
        }
    }
}

/// The set the namespace's init blocks and waits for: the forwarded
/// signals and SIGCHLD.
fn init_signals() -> libc::sigset_t {
    let mut set = nix::sys::signal::SigSet::empty();
    for sig in FORWARDED_SIGNALS {
        set.add(sig);
    }
    set.add(Signal::SIGCHLD);
    *set.as_ref()
}

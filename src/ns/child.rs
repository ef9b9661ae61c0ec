//! The namespace child: a raw `fork` whose child enters fresh namespaces,
//! reports back, and then waits for the parent's word before it `exec`s.
//!
//! Why a raw fork and not `std::process::Command`: `Command::spawn` blocks
//! until the child `exec`s, so a child cannot wait on us before `exec` (see
//! the crate docs). Here the child tells us when its namespaces exist, we
//! make the network ready, and only then let it run the command.
//!
//! Everything the child does after `fork` is async-signal-safe: raw
//! syscalls on buffers prepared by the parent, no allocation, no locks, so a
//! multithreaded caller (a runtime, a test harness) can use it safely.
//! `unshare(CLONE_NEWUSER)` needs a single-threaded process, which the
//! forked child always is.

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;

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
    /// Join an existing network namespace through this open fd (bridge
    /// mode: the namespace was configured before the fork). The fd must
    /// stay open until [`NsChild::wait_ready`] returns.
    JoinNet(RawFd),
}

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
}

impl ChildStage {
    fn from_u8(v: u8) -> Option<Self> {
        use ChildStage::*;
        [DeathSignal, Unshare, SetGroups, UidMap, GidMap, Loopback, Exec, Dns].into_iter().find(|s| *s as u8 == v)
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
        })
    }
}

/// Errors of the namespace child.
#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    /// A pipe could not be created.
    #[error("create sync pipe")]
    CreatePipe(#[source] Errno),
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
    /// The child died or closed its pipe without reporting.
    #[error("namespace child exited before reporting")]
    ChildVanished,
    /// Reading from or writing to the sync pipe failed.
    #[error("talk to the namespace child")]
    Pipe(#[source] io::Error),
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
    /// in a private mount namespace, DNS routing).
    pub dns: Option<crate::dns::inside::NsDns>,
}

/// Byte the parent sends to let the child exec.
const GO: u8 = b'G';
/// Size of a child report: stage byte, detail byte, 2 padding bytes, errno as i32.
const REPORT_LEN: usize = 8;

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
}

/// The mount targets of the DNS step, for error messages.
#[derive(Debug, Default)]
struct DnsTargets(Vec<(crate::dns::inside::DnsStep, std::path::PathBuf)>);

impl DnsTargets {
    fn of(spec: &ChildSpec) -> Self {
        use crate::dns::inside::DnsStep;
        let Some(dns) = &spec.dns else { return Self::default() };
        let steps = [DnsStep::MountFirst, DnsStep::MountSecond];
        Self(steps.into_iter().filter_map(|s| dns.target_of(s).map(|t| (s, t.to_owned()))).collect())
    }

    fn get(&self, step: crate::dns::inside::DnsStep) -> Option<std::path::PathBuf> {
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
        _ => "mount the run's resolv.conf and hosts".into(),
    }
}

/// Outcome of releasing the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecOutcome {
    /// The command is running.
    Running,
    /// `execve` failed with this errno (ENOENT: not found; EACCES/ENOEXEC: not executable).
    Failed(Errno),
}

struct Prepared {
    argv_ptrs: Vec<*const libc::c_char>,
    setgroups: CString,
    uid_map_path: CString,
    gid_map_path: CString,
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
    /// `CLONE_NEWNS` when the child needs a mount namespace of its own.
    mount_ns: libc::c_int,
}

fn cpath(p: &Path) -> CString {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

fn pipe_pair() -> Result<(OwnedFd, OwnedFd), UsernsError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(UsernsError::CreatePipe)
}

impl NsChild {
    /// Fork the child. It enters its namespaces, brings `lo` up, and blocks.
    /// Call [`NsChild::wait_ready`] next.
    pub fn spawn(spec: &ChildSpec) -> Result<Self, UsernsError> {
        let mut argv_ptrs: Vec<*const libc::c_char> = spec.argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let (uid_map, gid_map) = match spec.ns {
            NsKind::UserAndNet { uid, gid } => {
                (format!("0 {uid} 1\n").into_bytes(), format!("0 {gid} 1\n").into_bytes())
            }
            NsKind::NetOnly | NsKind::JoinNet(_) => (Vec::new(), Vec::new()),
        };
        let prep = Prepared {
            argv_ptrs,
            setgroups: cpath(&spec.proc_root.join("self/setgroups")),
            uid_map_path: cpath(&spec.proc_root.join("self/uid_map")),
            gid_map_path: cpath(&spec.proc_root.join("self/gid_map")),
            uid_map,
            gid_map,
            mount_ns: if spec.dns.as_ref().is_some_and(|d| d.needs_mount_ns()) { libc::CLONE_NEWNS } else { 0 },
        };
        let (report_rx, report_tx) = pipe_pair()?;
        let (go_rx, go_tx) = pipe_pair()?;
        let parent = nix::unistd::getpid();

        // SAFETY: the child branch only calls async-signal-safe functions
        // (raw syscalls on memory prepared above) and leaves with `_exit` or
        // `execv`; it never returns into Rust code of the parent.
        match unsafe { nix::unistd::fork() } {
            Err(e) => Err(UsernsError::Fork(e)),
            Ok(nix::unistd::ForkResult::Child) => {
                drop(report_rx);
                drop(go_tx);
                child_main(spec, &prep, parent.as_raw(), report_tx.as_raw_fd(), go_rx.as_raw_fd())
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                drop(report_tx);
                drop(go_rx);
                let dns_targets = DnsTargets::of(spec);
                Ok(Self { pid: child, report_rx, go_tx: Some(go_tx), reaped: false, detail: 0, dns_targets })
            }
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// Wait until the child's namespaces exist and `lo` is up.
    pub fn wait_ready(&mut self) -> Result<(), UsernsError> {
        match self.read_report()? {
            Some(None) => Ok(()),
            Some(Some((ChildStage::Dns, errno))) => {
                let step = crate::dns::inside::DnsStep::from_u8(self.detail).ok_or(UsernsError::ChildVanished)?;
                Err(UsernsError::DnsFailed { step, target: self.dns_targets.get(step), errno })
            }
            Some(Some((stage, errno))) => Err(UsernsError::ChildFailed { stage, errno }),
            None => Err(UsernsError::ChildVanished),
        }
    }

    /// Let the child exec the command, and learn whether the exec worked.
    pub fn release(&mut self) -> Result<ExecOutcome, UsernsError> {
        let go = self.go_tx.take().ok_or(UsernsError::ChildVanished)?;
        nix::unistd::write(&go, &[GO]).map_err(|e| UsernsError::Pipe(e.into()))?;
        drop(go);
        match self.read_report()? {
            None => Ok(ExecOutcome::Running),
            Some(Some((ChildStage::Exec, errno))) => Ok(ExecOutcome::Failed(errno)),
            Some(Some((stage, errno))) => Err(UsernsError::ChildFailed { stage, errno }),
            Some(None) => Err(UsernsError::ChildVanished),
        }
    }

    /// `Ok(None)` on EOF; `Ok(Some(None))` for "ready"; `Ok(Some(Some(..)))` for a failure.
    #[allow(clippy::type_complexity)]
    fn read_report(&mut self) -> Result<Option<Option<(ChildStage, Errno)>>, UsernsError> {
        let mut buf = [0u8; REPORT_LEN];
        let mut got = 0;
        while got < REPORT_LEN {
            match nix::unistd::read(&self.report_rx, &mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(UsernsError::Pipe(e.into())),
            }
        }
        if got == 0 {
            return Ok(None);
        }
        if got < REPORT_LEN {
            return Err(UsernsError::ChildVanished);
        }
        if buf[0] == 0 {
            return Ok(Some(None));
        }
        self.detail = buf[1];
        let errno = Errno::from_raw(i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]));
        let stage = ChildStage::from_u8(buf[0]).ok_or(UsernsError::ChildVanished)?;
        Ok(Some(Some((stage, errno))))
    }

    /// Send a signal to the child (ignoring "already gone").
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

// ---- everything below runs in the forked child: async-signal-safe only ----

fn report(fd: RawFd, stage: u8, errno: i32) {
    report_detail(fd, stage, 0, errno);
}

fn report_detail(fd: RawFd, stage: u8, detail: u8, errno: i32) {
    let mut buf = [0u8; REPORT_LEN];
    buf[0] = stage;
    buf[1] = detail;
    buf[4..8].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: writes our stack buffer to a pipe fd we own; result ignored on purpose
    // (nothing else can be done in the child).
    unsafe { libc::write(fd, buf.as_ptr().cast(), REPORT_LEN) };
}

fn fail(fd: RawFd, stage: ChildStage) -> ! {
    report(fd, stage as u8, Errno::last_raw());
    // SAFETY: `_exit` is async-signal-safe and never returns.
    unsafe { libc::_exit(125) }
}

fn write_file(path: &CString, data: &[u8]) -> bool {
    // SAFETY: `path` is a valid NUL-terminated string prepared before fork.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return false;
    }
    // SAFETY: `fd` is the descriptor opened above; `data` is valid for its length.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    let saved = Errno::last_raw();
    // SAFETY: closing the descriptor opened above, exactly once.
    unsafe { libc::close(fd) };
    Errno::set_raw(saved);
    n == data.len() as isize
}

fn child_main(spec: &ChildSpec, prep: &Prepared, parent: libc::pid_t, tx: RawFd, rx: RawFd) -> ! {
    // SAFETY: prctl with constant arguments; getppid has no preconditions.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            fail(tx, ChildStage::DeathSignal);
        }
        if libc::getppid() != parent {
            libc::_exit(125);
        }
    }
    let entered = match spec.ns {
        // SAFETY: unshare(2) with constant flags in a single-threaded child.
        NsKind::UserAndNet { .. } => unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET | prep.mount_ns) },
        // SAFETY: as above.
        NsKind::NetOnly => unsafe { libc::unshare(libc::CLONE_NEWNET | prep.mount_ns) },
        // SAFETY: setns(2) on an fd the parent keeps open across the fork,
        // then unshare(2) with constant flags.
        NsKind::JoinNet(fd) => unsafe {
            match libc::setns(fd, libc::CLONE_NEWNET) {
                0 if prep.mount_ns != 0 => libc::unshare(prep.mount_ns),
                rc => rc,
            }
        },
    };
    if entered != 0 {
        fail(tx, ChildStage::Unshare);
    }
    if let NsKind::UserAndNet { .. } = spec.ns {
        if !write_file(&prep.setgroups, b"deny") {
            fail(tx, ChildStage::SetGroups);
        }
        if !write_file(&prep.uid_map_path, &prep.uid_map) {
            fail(tx, ChildStage::UidMap);
        }
        if !write_file(&prep.gid_map_path, &prep.gid_map) {
            fail(tx, ChildStage::GidMap);
        }
    }
    if let Err(e) = crate::ns::loopback::bring_up_loopback() {
        report(tx, ChildStage::Loopback as u8, e.errno() as i32);
        // SAFETY: `_exit` is async-signal-safe.
        unsafe { libc::_exit(125) };
    }
    if let Some(dns) = &spec.dns
        && let Err((step, errno)) = dns.apply()
    {
        report_detail(tx, ChildStage::Dns as u8, step as u8, errno);
        // SAFETY: `_exit` is async-signal-safe.
        unsafe { libc::_exit(125) };
    }
    report(tx, 0, 0);

    let mut byte = 0u8;
    loop {
        // SAFETY: reads one byte into our stack variable from a pipe fd we own.
        let n = unsafe { libc::read(rx, (&mut byte as *mut u8).cast(), 1) };
        if n == 1 && byte == GO {
            break;
        }
        if n < 0 && Errno::last() == Errno::EINTR {
            continue;
        }
        // EOF or anything else: the parent gave up; leave quietly.
        // SAFETY: `_exit` is async-signal-safe.
        unsafe { libc::_exit(125) };
    }
    // SAFETY: restore the caller's signal mask and default SIGPIPE (Rust
    // ignores it, and ignored dispositions survive exec), then exec with
    // pointers prepared before fork. Only async-signal-safe calls.
    unsafe {
        libc::sigprocmask(libc::SIG_SETMASK, spec.sigmask.as_ref(), std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::close(rx);
        libc::execv(spec.program.as_ptr(), prep.argv_ptrs.as_ptr());
    }
    let errno = Errno::last_raw();
    report(tx, ChildStage::Exec as u8, errno);
    // SAFETY: `_exit` is async-signal-safe.
    unsafe { libc::_exit(if errno == libc::ENOENT { 127 } else { 126 }) }
}

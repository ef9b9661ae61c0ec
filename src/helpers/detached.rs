//! Helpers that outlive the process that starts them (an attachment's
//! pasta or slirp4netns): forked into a session of their own, their output
//! appended to a log file, and recorded before they may run.
//!
//! [`spawn_gated`] forks with a raw `fork` (the child runs only
//! async-signal-safe code, so a multithreaded caller may use it) and holds
//! the child at a gate: the caller records its pid and start time, then
//! lets it `exec`. If the caller dies first, the gate's pipe closes and the
//! child exits without running anything, so no helper ever runs unrecorded.
//! [`stop_process`] stops a process by pid and start time, whoever started it.

use crate::helpers::pasta::output::OutputBuf;
use crate::host::procfs::ProcessId;
use nix::sys::wait::WaitPidFlag;
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

/// How a helper that outlives its starter is started: where its output
/// goes, and how its process is recorded before it may run.
pub struct Detach<'a> {
    /// Its log file (appended to; the caller records and removes it).
    pub log: &'a Path,
    /// Records its pid and start time; called before it may `exec`.
    pub record: &'a mut dyn FnMut(ProcessId) -> io::Result<()>,
}

impl std::fmt::Debug for Detach<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detach").field("log", &self.log).finish()
    }
}

/// Byte that opens the gate.
const GO: u8 = b'G';

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in an argument"))
}

/// Fork `program args` held at a gate, its stdin `/dev/null`, stdout and
/// stderr appended to `log`, the descriptors in `keep` inherited (all must
/// be above 2), in a new session, no signal blocked. `record` gets its pid
/// and start time before it may exec; an error from `record` kills it.
/// Returns its pid once it has exec'd.
pub(crate) fn spawn_gated(
    program: &Path,
    args: &[OsString],
    log: &Path,
    keep: &[RawFd],
    proc_root: &Path,
    record: &mut dyn FnMut(ProcessId) -> io::Result<()>,
) -> io::Result<(u32, ProcessId)> {
    let prog = cstring(program.as_os_str().as_bytes())?;
    let mut argv: Vec<CString> = vec![prog.clone()];
    for a in args {
        argv.push(cstring(a.as_bytes())?);
    }
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let out: OwnedFd = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(0o600)
        .open(log)?
        .into();
    let null: OwnedFd = std::fs::File::open("/dev/null")?.into();
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from);
    let (report_rx, report_tx) = pipe()?;
    let (go_rx, go_tx) = pipe()?;
    let fds = ChildFds {
        null: null.as_raw_fd(),
        out: out.as_raw_fd(),
        go: go_rx.as_raw_fd(),
        report: report_tx.as_raw_fd(),
        parents: [go_tx.as_raw_fd(), report_rx.as_raw_fd()],
    };
    // SAFETY: the child runs only `gated_child`, which makes async-signal-safe
    // calls on memory prepared above and never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        gated_child(&fds, keep, &prog, &ptrs);
    }
    drop(report_tx);
    drop(go_rx);
    let npid = nix::unistd::Pid::from_raw(pid);
    let kill = || {
        let _ = nix::sys::signal::kill(npid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(npid, None);
    };
    let id = ProcessId::of(proc_root, pid as u32).unwrap_or(ProcessId::unread(pid as u32));
    if let Err(e) = record(id) {
        kill();
        return Err(e);
    }
    crate::fault::point("helper.recorded");
    if let Err(e) = nix::unistd::write(&go_tx, &[GO]) {
        kill();
        return Err(e.into());
    }
    drop(go_tx);
    let mut errno = [0u8; 4];
    match nix::unistd::read(&report_rx, &mut errno) {
        Ok(4) => {
            let _ = nix::sys::wait::waitpid(npid, None);
            Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)))
        }
        _ => Ok((pid as u32, id)),
    }
}

struct ChildFds {
    null: RawFd,
    out: RawFd,
    go: RawFd,
    report: RawFd,
    /// The parent's ends of the two pipes: closed first, or the gate's
    /// pipe would never read EOF when the parent dies.
    parents: [RawFd; 2],
}

/// The forked child: async-signal-safe calls only.
fn gated_child(fds: &ChildFds, keep: &[RawFd], prog: &CString, argv: &[*const libc::c_char]) -> ! {
    // SAFETY: raw syscalls on descriptors and buffers prepared before the
    // fork; the child leaves through execv or _exit.
    unsafe {
        for fd in fds.parents {
            libc::close(fd);
        }
        libc::setsid();
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let ok = libc::dup2(fds.null, 0) == 0 && libc::dup2(fds.out, 1) == 1 && libc::dup2(fds.out, 2) == 2;
        for &fd in keep {
            libc::fcntl(fd, libc::F_SETFD, 0);
        }
        let mut byte = 0u8;
        let opened = loop {
            let n = libc::read(fds.go, (&mut byte as *mut u8).cast(), 1);
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            break n == 1 && byte == GO;
        };
        if !ok || !opened {
            libc::_exit(125);
        }
        libc::execv(prog.as_ptr(), argv.as_ptr());
        let errno = (*libc::__errno_location()).to_ne_bytes();
        libc::write(fds.report, errno.as_ptr().cast(), 4);
        libc::_exit(127)
    }
}

/// What a detached helper wrote to its log file `path`: the last
/// [`OutputBuf::CAPACITY`] bytes, by line, noise dropped. `None` when there
/// is no such file.
pub(crate) fn read_log(path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = crate::state::safefs::open_nofollow(path).ok()?;
    let len = file.metadata().ok()?.len();
    let cap = OutputBuf::CAPACITY as u64;
    file.seek(SeekFrom::Start(len.saturating_sub(cap))).ok()?;
    let mut bytes = Vec::new();
    file.take(cap).read_to_end(&mut bytes).ok()?;
    let mut buf = OutputBuf::default();
    String::from_utf8_lossy(&bytes).lines().for_each(|l| buf.push_line(l));
    Some(buf.text())
}

/// Waits up to `grace` for the process behind `pidfd` to exit.
fn exited_within(pidfd: &std::os::fd::OwnedFd, grace: Duration) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let ms = PollTimeout::try_from(grace.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::ZERO);
    matches!(poll(&mut [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)], ms), Ok(n) if n > 0)
}

/// A pidfd of `process` (by pid and start time), or `None` when it is
/// gone or numbered in another pid namespace: a recycled pid, or another
/// namespace's, is never opened.
fn open_verified(process: ProcessId, proc_root: &Path) -> io::Result<Option<std::os::fd::OwnedFd>> {
    // A pid of another pid namespace names another process here.
    if !process.is_here(proc_root) || !process.is_alive(proc_root) {
        return Ok(None);
    }
    let pidfd = match crate::host::procfs::pidfd_open(process.pid, 0) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ESRCH) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    // The pidfd names whatever has the pid now: make sure it is still ours.
    Ok(process.is_alive(proc_root).then_some(pidfd))
}

/// Send `sig` through `pidfd`; a process that is gone is not an error.
fn send(pidfd: &std::os::fd::OwnedFd, sig: libc::c_int) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: pidfd_send_signal on a pidfd we own, no siginfo.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), sig, 0usize, 0) };
    match rc {
        0 => Ok(()),
        _ => match io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            e => Err(e),
        },
    }
}

/// Send `sig` to a process that may not be our child, named by pid and
/// start time (a recycled pid is never signalled; one that is gone is not
/// an error).
pub(crate) fn signal_process(process: ProcessId, proc_root: &Path, sig: libc::c_int) -> io::Result<()> {
    match open_verified(process, proc_root)? {
        Some(pidfd) => send(&pidfd, sig),
        None => Ok(()),
    }
}

/// Stop a process that may not be our child, named by pid and start time
/// (a recycled pid is never signalled): SIGTERM, up to `grace` to exit,
/// then SIGKILL, and up to a second for it to be gone. A process that is
/// already gone (or a zombie) is not an error. Reaps it when it is ours.
pub(crate) fn stop_process(process: ProcessId, proc_root: &Path, grace: Duration) -> io::Result<()> {
    let Some(pidfd) = open_verified(process, proc_root)? else { return Ok(()) };
    let reap = || {
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(process.pid as i32), Some(WaitPidFlag::WNOHANG));
    };
    if !grace.is_zero() {
        send(&pidfd, libc::SIGTERM)?;
        if exited_within(&pidfd, grace) {
            reap();
            return Ok(());
        }
    }
    send(&pidfd, libc::SIGKILL)?;
    exited_within(&pidfd, Duration::from_secs(1));
    reap();
    Ok(())
}

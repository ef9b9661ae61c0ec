//! The namespace child's own code, from the clone to its exit: it enters
//! (or joins) the run's namespaces, waits for the parent's word, starts the
//! command, and then stays as the init (PID 1) of the run's PID namespace.
//!
//! As init it reaps every process of the run (orphans, double-forked and
//! `setsid` ones are reparented to it), passes on the signals the parent
//! forwards, and when the command exits it stops what the command left:
//! SIGTERM to every other process of the namespace, up to
//! [`LEFTOVER_GRACE`] for them to exit, then its own exit, on which the
//! kernel kills whatever is still there and returns only once it is gone.
//! Its exit status is the command's (128+N when the command was killed by
//! signal N), so the parent reports it unchanged.
//!
//! Everything here is async-signal-safe: raw syscalls on memory the parent
//! prepared before the clone, no allocation, no locks, no glibc `fork`
//! (whose atfork handlers take locks a thread of the parent may have held
//! at the moment of the clone). It never returns: it leaves by `_exit` or
//! by `execv` (in the command's process).

use super::child::{ChildSpec, ChildStage, GO, NsKind, REPORT_LEN, Release};
use crate::dns::inside::ChildListeners;

use crate::host::spawn::{ChildMain, ChildStack, spawn_until_exec};
use nix::errno::Errno;
use std::ffi::CString;
use std::os::fd::RawFd;
use std::time::Duration;

/// How long the processes a command left behind get between SIGTERM and
/// the kernel's SIGKILL once the command has exited.
pub const LEFTOVER_GRACE: Duration = Duration::from_secs(2);

/// Size of the stack the command's process runs on between its clone and
/// its `exec` (it shares the init's memory until then, see
/// [`spawn_command`]); reserved by the parent before the clone.
pub(super) const COMMAND_STACK: usize = 64 * 1024;

/// The command name the init shows in `ps` (at most 15 bytes).
const INIT_NAME: &std::ffi::CStr = c"pelagos-init";

/// What the child needs, prepared by the parent before the clone.
pub(super) struct Prepared {
    /// `argv` of the command, NULL-terminated.
    pub argv_ptrs: Vec<*const libc::c_char>,
    /// `<proc>/self/setgroups`.
    pub setgroups: CString,
    /// `<proc>/self/uid_map`.
    pub uid_map_path: CString,
    /// `<proc>/self/gid_map`.
    pub gid_map_path: CString,
    /// The uid map to write (rootless).
    pub uid_map: Vec<u8>,
    /// The gid map to write (rootless).
    pub gid_map: Vec<u8>,
    /// Where the namespace's own procfs is mounted (the proc root).
    pub proc_dir: CString,
    /// The signals init waits for (forwarded ones and SIGCHLD), blocked
    /// from the start so none is lost or acted on by default.
    pub signals: libc::sigset_t,
    /// The child is the init of a PID namespace of its own (not when it
    /// joins a user namespace: see [`NsKind::Join`]); otherwise it mounts
    /// no procfs and becomes the command itself (`kill(-1)`, which stops
    /// what a command left, reaches only a namespace's processes from its
    /// init).
    pub own_pid_ns: bool,
}

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

/// The ready report (stage 0, `note` as its errno), with the DNS
/// forwarder's sockets riding along when the child opened them; our copies
/// are closed then (the parent's are the ones that serve).
fn report_ready(fd: RawFd, note: i32, listeners: Option<ChildListeners>) {
    let mut buf = [0u8; REPORT_LEN];
    buf[4..8].copy_from_slice(&note.to_ne_bytes());
    match listeners {
        Some(l) => {
            // A failed send leaves the parent with a report and no
            // sockets, which it reports as an error of its own.
            crate::ns::fdpass::send(fd, &buf, &[l.udp, l.tcp]);
            // SAFETY: closing the sockets `NsDns::apply` made, once each.
            unsafe {
                libc::close(l.udp);
                libc::close(l.tcp);
            }
        }
        None => report(fd, 0, note),
    }
}

fn fail(fd: RawFd, stage: ChildStage, errno: i32) -> ! {
    report(fd, stage as u8, errno);
    // SAFETY: `_exit` is async-signal-safe and never returns.
    unsafe { libc::_exit(125) }
}

fn write_file(path: &CString, data: &[u8]) -> bool {
    // SAFETY: `path` is a valid NUL-terminated string prepared before the clone.
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

/// The child's body. `tx` carries reports to the parent, `rx` its word to go.
pub(super) fn child_main(spec: &ChildSpec, prep: &Prepared, stack: &mut ChildStack, tx: RawFd, rx: RawFd) -> ! {
    // SAFETY: prctl and sigprocmask with constant arguments or memory
    // prepared before the clone. A parent that died before the death signal
    // was set is noticed below: its end of `rx` is closed.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            fail(tx, ChildStage::DeathSignal, Errno::last_raw());
        }
        libc::prctl(libc::PR_SET_NAME, INIT_NAME.as_ptr(), 0, 0, 0);
        libc::sigprocmask(libc::SIG_BLOCK, &prep.signals, std::ptr::null_mut());
    }
    enter(spec, prep, tx);
    let note = if prep.own_pid_ns { private_proc(prep) } else { 0 };
    // A joined namespace is used as it is (a bridge run's netns has `lo` up already).
    if !matches!(spec.ns, NsKind::Join { .. })
        && let Err(e) = crate::ns::loopback::bring_up_loopback()
    {
        fail(tx, ChildStage::Loopback, e.errno() as i32);
    }
    let listeners = match spec.dns.as_ref().map(|dns| dns.apply()) {
        Some(Err((step, errno))) => {
            report_detail(tx, ChildStage::Dns as u8, step as u8, errno);
            // SAFETY: `_exit` is async-signal-safe.
            unsafe { libc::_exit(125) }
        }
        Some(Ok(listeners)) => listeners,
        None => None,
    };
    report_ready(tx, note, listeners);
    match spec.release {
        Release::OnWord => wait_for_go(rx),
        // SAFETY: closing our own descriptor once (the parent sends nothing).
        Release::AtOnce => unsafe {
            libc::close(rx);
        },
    }
    if !prep.own_pid_ns {
        // No PID namespace to be the init of: the child becomes the command.
        exec_command(spec, prep, tx);
    }
    let command = match spawn_command(spec, prep, stack, tx) {
        Ok(pid) => pid,
        Err(e) => fail(tx, ChildStage::StartCommand, e as i32),
    };
    // Nothing of the parent's is ours to hold: not its listeners, not the
    // caller's stdio (the command has its own copies), not the pipes.
    close_all_fds();
    let code = supervise(command, &prep.signals);
    stop_leftovers(&prep.signals);
    // SAFETY: `_exit` is async-signal-safe. The kernel kills what is left
    // in the namespace before our parent can reap us.
    unsafe { libc::_exit(code) }
}

/// The intermediate of [`NsKind::InUserNs`]: join the user namespace (a
/// fork is single-threaded, so it may), clone the real child into new
/// network, PID and mount namespaces of it as a child of our parent
/// (`CLONE_PARENT`, so the parent waits for it as for any namespace child),
/// tell the parent its pid on `pid_tx`, and exit.
pub(super) fn join_user_and_clone(
    spec: &ChildSpec,
    prep: &Prepared,
    stack: &mut ChildStack,
    tx: RawFd,
    rx: RawFd,
    userns: RawFd,
    pid_tx: RawFd,
) -> ! {
    // SAFETY: setns(2) on a descriptor the parent keeps open until we
    // report; this process is a fresh single-threaded fork.
    if unsafe { libc::setns(userns, libc::CLONE_NEWUSER) } != 0 {
        fail(tx, ChildStage::Unshare, Errno::last_raw());
    }
    let flags = libc::CLONE_PARENT | libc::CLONE_NEWPID | libc::CLONE_NEWNET | libc::CLONE_NEWNS | libc::SIGCHLD;
    // SAFETY: the child runs `child_main`, which only makes
    // async-signal-safe calls and never returns.
    let pid = unsafe { clone_process(flags as libc::c_ulong) };
    if pid < 0 {
        fail(tx, ChildStage::Unshare, Errno::last_raw());
    }
    if pid == 0 {
        // SAFETY: closing the pid pipe, which is the intermediate's alone.
        unsafe { libc::close(pid_tx) };
        child_main(spec, prep, stack, tx, rx);
    }
    let bytes = pid.to_ne_bytes();
    // SAFETY: writes our stack buffer to a pipe fd we own, then leaves.
    unsafe {
        libc::write(pid_tx, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(0)
    }
}

/// Join the network namespace (bridge, `ns:PATH`; its user namespace
/// first, then a mount namespace of that user namespace's, when one is
/// given) or write the id maps (rootless); the clone itself created the rest.
fn enter(spec: &ChildSpec, prep: &Prepared, tx: RawFd) {
    match spec.ns {
        NsKind::Join { userns, netns } => {
            // SAFETY: setns(2) on fds the parent keeps open until we report
            // (a user namespace can be entered: the child is
            // single-threaded and shares no fs state), unshare(2) with a
            // constant flag.
            let joined = unsafe {
                match userns {
                    Some(fd) if libc::setns(fd, libc::CLONE_NEWUSER) != 0 => -1,
                    Some(_) => match libc::setns(netns, libc::CLONE_NEWNET) {
                        0 => libc::unshare(libc::CLONE_NEWNS),
                        rc => rc,
                    },
                    None => libc::setns(netns, libc::CLONE_NEWNET),
                }
            };
            if joined != 0 {
                fail(tx, ChildStage::Unshare, Errno::last_raw());
            }
        }
        NsKind::UserAndNet { .. } => {
            if !write_file(&prep.setgroups, b"deny") {
                fail(tx, ChildStage::SetGroups, Errno::last_raw());
            }
            if !write_file(&prep.uid_map_path, &prep.uid_map) {
                fail(tx, ChildStage::UidMap, Errno::last_raw());
            }
            if !write_file(&prep.gid_map_path, &prep.gid_map) {
                fail(tx, ChildStage::GidMap, Errno::last_raw());
            }
        }
        NsKind::NetOnly | NsKind::InUserNs { .. } => {}
    }
}

/// Give the namespace a procfs of its own, so `ps` and `/proc/<pid>` show
/// the run's processes with the pids they have inside. Mounts stay in our
/// mount namespace: the root is made a slave first (the host's mounts and
/// unmounts still reach us, ours never reach the host). Returns 0, or the
/// errno of the step that failed (the run goes on with the host's `/proc`;
/// the parent says so).
fn private_proc(prep: &Prepared) -> i32 {
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: mount(2) with NUL-terminated strings that live for the call.
    unsafe {
        if libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_SLAVE,
            std::ptr::null(),
        ) != 0
            || libc::mount(c"proc".as_ptr(), prep.proc_dir.as_ptr(), c"proc".as_ptr(), flags, std::ptr::null()) != 0
        {
            return Errno::last_raw();
        }
    }
    0
}

fn wait_for_go(rx: RawFd) {
    let mut byte = 0u8;
    loop {
        // SAFETY: reads one byte into our stack variable from a pipe fd we own.
        let n = unsafe { libc::read(rx, (&mut byte as *mut u8).cast(), 1) };
        if n == 1 && byte == GO {
            // SAFETY: closing our own descriptor once.
            unsafe { libc::close(rx) };
            return;
        }
        if n < 0 && Errno::last() == Errno::EINTR {
            continue;
        }
        // EOF or anything else: the parent gave up; leave quietly.
        // SAFETY: `_exit` is async-signal-safe.
        unsafe { libc::_exit(125) };
    }
}

/// What the command's process needs, on the init's stack while it runs.
struct CommandArgs<'a> {
    spec: &'a ChildSpec,
    prep: &'a Prepared,
    tx: RawFd,
}

/// The command's process, started the way `posix_spawn` does
/// ([`spawn_until_exec`]: it shares the init's memory, on a stack of its
/// own, while the init waits until it has called `exec` or exited).
fn spawn_command(spec: &ChildSpec, prep: &Prepared, stack: &mut ChildStack, tx: RawFd) -> Result<libc::pid_t, Errno> {
    fn command_main(args: &CommandArgs<'_>) -> libc::c_int {
        exec_command(args.spec, args.prep, args.tx)
    }
    // SAFETY: `exec_command` only makes async-signal-safe calls on memory
    // prepared before the init's clone, touches nothing of the init's but
    // the report pipe and errno, and leaves by `execv` or `_exit`.
    let main = unsafe { ChildMain::new(command_main) };
    spawn_until_exec(stack, main, &CommandArgs { spec, prep, tx }).map(|pid| pid.as_raw())
}

/// `fork` as the bare syscall: no atfork handlers, no locks.
///
/// # Safety
/// The caller's child may only make async-signal-safe calls.
pub(crate) unsafe fn raw_fork() -> libc::pid_t {
    // SAFETY: clone(2) with only SIGCHLD and no new stack is fork(2); the
    // zero arguments (stack, tid pointers, tls) are unused.
    unsafe { clone_process(libc::SIGCHLD as libc::c_ulong) }
}

/// The `clone(2)` syscall with `flags` and no new stack: the child
/// continues on a copy of the caller's stack, as after `fork`.
///
/// # Safety
/// The child may only make async-signal-safe calls.
pub(super) unsafe fn clone_process(flags: libc::c_ulong) -> libc::pid_t {
    // s390 takes the stack first; every other architecture the flags.
    #[cfg(target_arch = "s390x")]
    let (a, b) = (0, flags);
    #[cfg(not(target_arch = "s390x"))]
    let (a, b) = (flags, 0);
    // SAFETY: no new stack and no tid or tls pointers: plain fork semantics
    // plus the namespace flags; the caller upholds the child's restrictions.
    unsafe { libc::syscall(libc::SYS_clone, a, b, 0usize, 0usize, 0usize) as libc::pid_t }
}

/// In the command's process: the caller's signal mask and default SIGPIPE
/// (Rust ignores it, and an ignored disposition survives exec), then exec.
fn exec_command(spec: &ChildSpec, prep: &Prepared, tx: RawFd) -> ! {
    // SAFETY: only async-signal-safe calls on memory prepared before the clone.
    unsafe {
        libc::sigprocmask(libc::SIG_SETMASK, spec.sigmask.as_ref(), std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Last before exec: from here on the command's connects wait for the
    // supervisor.
    if let Some(hook) = &spec.accel
        && let Err(e) = hook.install()
    {
        fail(tx, ChildStage::Accelerator, e as i32);
    }
    // SAFETY: only async-signal-safe calls on memory prepared before the clone.
    unsafe {
        libc::execv(spec.program.as_ptr(), prep.argv_ptrs.as_ptr());
    }
    let errno = Errno::last_raw();
    report(tx, ChildStage::Exec as u8, errno);
    // SAFETY: `_exit` is async-signal-safe.
    unsafe { libc::_exit(if errno == libc::ENOENT { 127 } else { 126 }) }
}

fn close_all_fds() {
    // SAFETY: close_range(2) on our own descriptor table; on kernels
    // before 5.9 (ENOSYS) each descriptor is closed in turn.
    unsafe {
        if libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) != 0 {
            for fd in 0..4096 {
                libc::close(fd);
            }
        }
    }
}

/// The command's exit code in the shell's convention.
fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFSIGNALED(status) { 128 + libc::WTERMSIG(status) } else { libc::WEXITSTATUS(status) }
}

/// Reap every child that has exited; `Some(code)` once `command` has.
/// Returns `Err(())` when no child is left at all.
fn reap(command: libc::pid_t, code: &mut Option<i32>) -> Result<(), ()> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid(2) on our children, with our own stack variable.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid == 0 {
            return Ok(());
        }
        if pid < 0 {
            if Errno::last() == Errno::EINTR {
                continue;
            }
            return Err(());
        }
        if pid == command {
            *code = Some(exit_code(status));
        }
    }
}

/// Wait for the command, passing on the signals sent to us alone (a
/// terminal's signals already reached the command, which shares our
/// process group), and reaping whatever else exits meanwhile.
fn supervise(command: libc::pid_t, signals: &libc::sigset_t) -> i32 {
    let mut code = None;
    loop {
        let _ = reap(command, &mut code);
        if let Some(code) = code {
            return code;
        }
        // SAFETY: zeroed siginfo_t is a valid value to be overwritten.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: sigwaitinfo(2) on a set prepared before the clone, into our stack.
        let sig = unsafe { libc::sigwaitinfo(signals, &mut info) };
        if sig > 0 && sig != libc::SIGCHLD && info.si_code != libc::SI_KERNEL {
            // SAFETY: kill(2) of our own child.
            unsafe { libc::kill(command, sig) };
        }
    }
}

/// SIGTERM to every process left in the namespace, then wait until none is
/// left, [`LEFTOVER_GRACE`] has passed, or we are told to stop.
fn stop_leftovers(signals: &libc::sigset_t) {
    // SAFETY: kill(-1) from the init of a PID namespace reaches every other
    // process of the namespace and nothing outside it.
    if unsafe { libc::kill(-1, libc::SIGTERM) } != 0 {
        return;
    }
    let deadline = now() + LEFTOVER_GRACE;
    let mut none = None;
    while reap(0, &mut none).is_ok() {
        let Some(left) = deadline.checked_sub(now()) else { return };
        let timeout = libc::timespec { tv_sec: left.as_secs() as _, tv_nsec: left.subsec_nanos() as _ };
        // SAFETY: zeroed siginfo_t is a valid value to be overwritten.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: sigtimedwait(2) on a set prepared before the clone, into our stack.
        let sig = unsafe { libc::sigtimedwait(signals, &mut info, &timeout) };
        let stop = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];
        if (sig < 0 && Errno::last() == Errno::EAGAIN) || stop.contains(&sig) {
            return;
        }
    }
}

/// CLOCK_MONOTONIC, read without allocating.
fn now() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime(2) into our stack variable.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

//! A relay that outlives the process that set it up (an attachment's
//! builtin port driver): a process of its own, forked while the setup's
//! process is single-threaded, holding the listeners and relaying until it
//! is stopped (`detach`, `gc`).
//!
//! It is recorded before it may outlive its parent: it dies with the parent
//! (parent-death signal) until the parent has written it into the record
//! and says "go"; only then does it leave the parent's session and clear
//! that signal.

use super::Exec;
use crate::flow::RunError;
use crate::flow::steps::NsRef;
use crate::host::procfs::ProcessId;
use crate::ports::builtin::{
    BuiltinPortsConfig, describe_listeners, raise_fd_limit, start_builtin_ports, stop_builtin_ports,
};
use crate::ports::relay::Listener;
use crate::state::record::{ProcessRole, Resource};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;

/// How long the relay's fork waits for the process to be single-threaded
/// (see [`crate::host::procfs::settled_threads`]).
const SETTLE: std::time::Duration = std::time::Duration::from_secs(3);

/// `start_relay` for an attachment.
pub(super) fn start(exec: &mut Exec, target: NsRef, listeners: Vec<Listener>) -> Result<(), RunError> {
    let n = crate::host::procfs::settled_threads(&exec.paths.proc_root, SETTLE);
    if n != 1 {
        return Err(RunError::Threaded { threads: n });
    }
    let described = describe_listeners(&listeners);
    let ns = exec.target(target);
    let proc_root = exec.paths.proc_root.clone();
    let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| RunError::Holder(e.to_string()));
    let (report_rx, report_tx) = pipe()?;
    let (go_rx, go_tx) = pipe()?;
    // The relay says when it no longer dies with us (its parent-death
    // signal cleared): until then our exit would kill it.
    let (ack_rx, ack_tx) = pipe()?;
    let parent = nix::unistd::getpid();
    // SAFETY: this process is single-threaded (checked above), so the
    // child may run any code; it leaves with `_exit` and never returns.
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err(RunError::Holder(format!("fork: {e}"))),
        Ok(nix::unistd::ForkResult::Child) => {
            drop(report_rx);
            drop(go_tx);
            drop(ack_rx);
            let cfg = BuiltinPortsConfig { target: &ns, proc_root: &proc_root, preserve_source: true };
            holder_main(parent, listeners, &cfg, Handshake { report: report_tx, go: go_rx, ack: ack_tx })
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(report_tx);
            drop(go_rx);
            drop(ack_tx);
            drop(listeners);
            let pid = child.as_raw() as u32;
            let holder = ProcessId::of(&proc_root, pid).unwrap_or(ProcessId::unread(pid));
            let factory = read_report(report_rx, &proc_root).inspect_err(|_| {
                let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(child, None);
            })?;
            // Newest first at undo: the holder stops gently, then its factory if left.
            exec.add(Resource::Relay { listeners: described, factory })?;
            exec.add(Resource::Process { role: ProcessRole::Relay, process: holder })?;
            crate::fault::point("attach.relay-recorded");
            let mut go = std::fs::File::from(go_tx);
            go.write_all(b"G").map_err(|e| RunError::Holder(format!("release the relay process: {e}")))?;
            // One byte, or end of file if it died: either way it no longer
            // depends on our staying alive.
            let _ = std::fs::File::from(ack_rx).read(&mut [0u8; 1]);
            Ok(())
        }
    }
}

/// The holder's report: `ok <factory pid> <start time>` (0 0 without a
/// factory), or `err <message>`.
fn read_report(rx: OwnedFd, proc_root: &std::path::Path) -> Result<Option<ProcessId>, RunError> {
    let mut text = String::new();
    std::fs::File::from(rx).read_to_string(&mut text).map_err(|e| RunError::Holder(e.to_string()))?;
    let mut words = text.split_whitespace();
    match words.next() {
        Some("ok") => {
            let pid: u32 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
            let start_time: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
            let pid_ns = crate::host::procfs::pid_namespace(proc_root);
            Ok((pid != 0).then_some(ProcessId { pid, start_time, pid_ns }))
        }
        Some("err") => Err(RunError::Holder(text.trim_start_matches("err").trim().to_owned())),
        _ => Err(RunError::Holder("the relay process exited before reporting".into())),
    }
}

/// The relay process's ends of its pipes to the parent.
struct Handshake {
    /// `ok ...` or `err ...`, then closed.
    report: OwnedFd,
    /// The parent's "go": it has recorded us.
    go: OwnedFd,
    /// Ours: we no longer die with the parent.
    ack: OwnedFd,
}

fn holder_main(parent: nix::unistd::Pid, listeners: Vec<Listener>, cfg: &BuiltinPortsConfig<'_>, pipes: Handshake) -> ! {
    let Handshake { report, go, ack } = pipes;
    crate::fault::forked();
    // SAFETY: plain prctl; getppid has no preconditions.
    let orphaned = unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 || libc::getppid() != parent.as_raw()
    };
    let mut stop = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        stop.add(s);
    }
    let masked = nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&stop), None).is_ok();
    // A daemon holds no terminal or pipe of its starter (a `$(...)` waiting
    // for EOF would wait for it): the standard descriptors go to /dev/null
    // before anything (the socket factory) inherits them.
    // SAFETY: open and dup2 on constant arguments.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            if null > 2 {
                libc::close(null);
            }
        }
    }
    let mut report = std::fs::File::from(report);
    raise_fd_limit();
    let ports = match (orphaned, masked) {
        (false, true) => start_builtin_ports(listeners, cfg),
        _ => exit_now(1),
    };
    let ports = match ports {
        Ok(p) => p,
        Err(e) => {
            let _ = write!(report, "err {}", crate::flow::error_chain(&e));
            exit_now(1);
        }
    };
    let factory = ports.factory_id().map_or((0, 0), |f| (f.pid, f.start_time));
    let _ = write!(report, "ok {} {}", factory.0, factory.1);
    drop(report);
    let mut byte = [0u8; 1];
    if !matches!(std::fs::File::from(go).read(&mut byte), Ok(1)) {
        // The parent died before recording us: nothing must outlive it.
        exit_now(1);
    }
    // SAFETY: clearing the parent-death signal and starting a session are
    // plain syscalls.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0);
        libc::setsid();
    }
    let _ = std::fs::File::from(ack).write_all(b"A");
    let _ = stop.wait();
    let _ = stop_builtin_ports(ports);
    exit_now(0)
}

fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` ends the process without running the parent's atexit
    // handlers or destructors, which belong to the parent.
    unsafe { libc::_exit(code) }
}

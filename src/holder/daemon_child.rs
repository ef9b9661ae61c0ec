//! The holder process: forked by the supervisor (single-threaded), dies
//! with it (parent-death signal), does nothing but keep its namespaces
//! alive.
//!
//! A new holder unshares its user namespace, waits while the supervisor
//! writes its id maps, then unshares network and mount namespaces, makes
//! its mounts private and brings `lo` up. A replacement joins the
//! namespaces the supervisor kept open (user first, then network, then
//! mount: the order `setns` needs).

use super::HolderError;
use super::idmap::IdMapping;
use nix::errno::Errno;
use nix::unistd::{ForkResult, Pid};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::Command;

/// A stage of the holder child, as it reports failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Stage {
    Unshare = 1,
    Namespaces = 2,
    Mounts = 3,
    Loopback = 4,
    Join = 5,
}

impl Stage {
    fn what(code: u8) -> &'static str {
        match code {
            1 => "create the user namespace",
            2 => "create the network and mount namespaces",
            3 => "make the mounts private",
            4 => "bring lo up",
            _ => "join the holder's namespaces",
        }
    }
}

/// One byte, or a failure: `b'E'`, the stage, the errno (4 bytes).
fn read_stage(rx: &OwnedFd, want: u8) -> Result<(), HolderError> {
    let mut buf = [0u8; 6];
    let mut got = 0;
    while got < 1 || (buf[0] == b'E' && got < buf.len()) {
        match nix::unistd::read(rx, &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(HolderError::Sys { op: "read the holder's report", source: e }),
        }
    }
    match (got, buf[0]) {
        (1.., b) if b == want => Ok(()),
        (6, b'E') => {
            let errno = Errno::from_raw(i32::from_ne_bytes([buf[2], buf[3], buf[4], buf[5]]));
            Err(HolderError::Start { reason: format!("{}: {errno}", Stage::what(buf[1])) })
        }
        _ => Err(HolderError::Start { reason: "the holder process exited early".into() }),
    }
}

/// In the child: report `stage` failed with the current errno, exit.
fn fail(tx: RawFd, stage: Stage) -> ! {
    let errno = Errno::last_raw().to_ne_bytes();
    let msg = [b'E', stage as u8, errno[0], errno[1], errno[2], errno[3]];
    // SAFETY: write(2) of a stack buffer, then _exit(2).
    unsafe {
        libc::write(tx, msg.as_ptr().cast(), msg.len());
        libc::_exit(1)
    }
}

fn say(tx: RawFd, byte: u8) {
    // SAFETY: write(2) of one byte we own.
    unsafe { libc::write(tx, (&byte as *const u8).cast(), 1) };
}

/// Die with the supervisor, with no signal blocked (it blocks them all).
fn child_prelude() {
    let _ = crate::helpers::spawn::helper_child_setup();
}

/// Keep the namespaces alive until killed.
fn hold() -> ! {
    // SAFETY: closes descriptor numbers of this fresh process; nothing uses them.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0) };
    loop {
        // SAFETY: pause(2) has no arguments.
        unsafe { libc::pause() };
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), HolderError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|source| HolderError::Sys { op: "pipe", source })
}

/// Fork a new holder in new namespaces (or, with `adopt`, in that user
/// namespace, which outlived its holder, and new network and mount ones);
/// returns its pid once it is ready.
pub(super) fn spawn_new(mapping: &IdMapping, proc_root: &Path, adopt: Option<RawFd>) -> Result<Pid, HolderError> {
    let (report_rx, report_tx) = pipe()?;
    let (go_rx, go_tx) = pipe()?;
    // SAFETY: the supervisor is single-threaded; the child leaves only
    // through `fail` or `hold`, never returning.
    match unsafe { nix::unistd::fork() }.map_err(|source| HolderError::Sys { op: "fork the holder", source })? {
        ForkResult::Child => {
            child_prelude();
            let tx = report_tx.as_raw_fd();
            let entered = match adopt {
                // SAFETY: setns(2) on a descriptor the supervisor holds open;
                // this process is a single-threaded fork.
                Some(fd) => unsafe { libc::setns(fd, libc::CLONE_NEWUSER) },
                // SAFETY: unshare(2) with constant flags, single-threaded.
                None => unsafe { libc::unshare(libc::CLONE_NEWUSER) },
            };
            if entered != 0 {
                fail(tx, Stage::Unshare);
            }
            say(tx, b'u');
            let mut go = [0u8; 1];
            if !matches!(nix::unistd::read(&go_rx, &mut go), Ok(1)) {
                // SAFETY: leaves at once.
                unsafe { libc::_exit(1) };
            }
            // SAFETY: unshare(2) with constant flags; we are root of our user namespace now.
            if unsafe { libc::unshare(libc::CLONE_NEWNET | libc::CLONE_NEWNS) } != 0 {
                fail(tx, Stage::Namespaces);
            }
            let private = nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE;
            if nix::mount::mount(None::<&str>, "/", None::<&str>, private, None::<&str>).is_err() {
                fail(tx, Stage::Mounts);
            }
            if crate::ns::loopback::bring_up_loopback().is_err() {
                fail(tx, Stage::Loopback);
            }
            say(tx, b'r');
            hold()
        }
        ForkResult::Parent { child } => {
            drop(report_tx);
            drop(go_rx);
            // An adopted user namespace has its maps already.
            let result = read_stage(&report_rx, b'u')
                .and_then(|()| if adopt.is_some() { Ok(()) } else { write_maps(child, mapping, proc_root) })
                .and_then(|()| {
                    nix::unistd::write(&go_tx, b"g").map_err(|source| HolderError::Sys { op: "release the holder", source })
                })
                .and_then(|_| read_stage(&report_rx, b'r'));
            if let Err(e) = result {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(child, None);
                return Err(e);
            }
            Ok(child)
        }
    }
}

/// Write the holder's id maps from outside it.
fn write_maps(child: Pid, mapping: &IdMapping, proc_root: &Path) -> Result<(), HolderError> {
    let pid = child.as_raw().to_string();
    match mapping {
        IdMapping::SubIds { newuidmap, newgidmap, uid_args, gid_args } => {
            for (prog, args) in [(newuidmap, uid_args), (newgidmap, gid_args)] {
                let out = Command::new(prog)
                    .arg(&pid)
                    .args(args)
                    .output()
                    .map_err(|source| HolderError::State { path: prog.clone(), source })?;
                if !out.status.success() {
                    return Err(HolderError::Start {
                        reason: format!(
                            "{} {pid} {}: {}",
                            prog.display(),
                            args.join(" "),
                            String::from_utf8_lossy(&out.stderr).trim()
                        ),
                    });
                }
            }
        }
        IdMapping::Single { uid, gid } => {
            let dir = proc_root.join(&pid);
            for (file, text) in [("setgroups", "deny".to_owned()), ("uid_map", format!("0 {uid} 1")), ("gid_map", format!("0 {gid} 1"))]
            {
                let path = dir.join(file);
                std::fs::write(&path, text).map_err(|source| HolderError::State { path, source })?;
            }
        }
    }
    Ok(())
}

/// Fork a holder process that joins the namespaces `ns` (user, net, mnt).
pub(super) fn spawn_joined(ns: [RawFd; 3]) -> Result<Pid, HolderError> {
    let (report_rx, report_tx) = pipe()?;
    // SAFETY: the supervisor is single-threaded; the child never returns.
    match unsafe { nix::unistd::fork() }.map_err(|source| HolderError::Sys { op: "fork the holder", source })? {
        ForkResult::Child => {
            child_prelude();
            let tx = report_tx.as_raw_fd();
            for (fd, kind) in ns.into_iter().zip([libc::CLONE_NEWUSER, libc::CLONE_NEWNET, libc::CLONE_NEWNS]) {
                // SAFETY: setns(2) on descriptors the supervisor keeps open.
                if unsafe { libc::setns(fd, kind) } != 0 {
                    fail(tx, Stage::Join);
                }
            }
            say(tx, b'r');
            hold()
        }
        ForkResult::Parent { child } => {
            drop(report_tx);
            if let Err(e) = read_stage(&report_rx, b'r') {
                let _ = nix::sys::wait::waitpid(child, None);
                return Err(e);
            }
            Ok(child)
        }
    }
}

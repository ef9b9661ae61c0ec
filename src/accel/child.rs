//! The command's side: in its process, right before `exec`, install the
//! seccomp filter with a user-notification listener and hand the listener
//! to the supervisor over a socket pair (`SCM_RIGHTS`), with a socket of
//! the run's namespace that tells the supervisor which namespace is the
//! run's.
//!
//! [`ChildHook::install`] runs between `fork` and `exec` of a process whose
//! parent may be multithreaded: raw syscalls on memory prepared before the
//! fork only, no allocation, no locks. It never fails the command: when the
//! kernel refuses the filter (no user notification, an earlier filter that
//! forbids `seccomp(2)`, no `CAP_SYS_ADMIN` in the user namespace and no
//! `no_new_privs`), it says so to the supervisor and the command runs on
//! the normal path. The filter is installed without `no_new_privs`: the
//! process holds `CAP_SYS_ADMIN` in the run's user namespace (or is root),
//! which the kernel accepts instead, so setuid and file-capability programs
//! inside behave as they would without the accelerator.

use super::AccelError;
use super::filter::{Insn, Intercept, seccomp_program};
// The message: status, step, two bytes of padding, errno.
use crate::ns::fdpass::{self, MSG_LEN, send};
use nix::errno::Errno;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Where the child's install failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Step {
    /// Making the socket that names the run's namespace.
    Probe = 1,
    /// `seccomp(SECCOMP_SET_MODE_FILTER, NEW_LISTENER)`.
    Filter = 2,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Probe => "make a socket in the run's namespace",
            Step::Filter => "install the seccomp filter with a user-notification listener",
        })
    }
}

const OK: u8 = 0;
const FAILED: u8 = 1;

/// What the command's process needs, prepared before the fork.
#[derive(Debug)]
pub struct ChildHook {
    program: Vec<Insn>,
    sock: OwnedFd,
}

/// The supervisor's end of the pair.
#[derive(Debug)]
pub struct Receiver {
    sock: OwnedFd,
}

/// The filter is in place.
#[derive(Debug)]
pub struct Installed {
    /// The notification listener.
    pub listener: OwnedFd,
    /// The cookie of the run's network namespace.
    pub run_netns: u64,
}

/// A hook for the command and the supervisor's end to receive from.
pub fn pair(intercept: Intercept) -> Result<(ChildHook, Receiver), AccelError> {
    let program = seccomp_program(intercept).ok_or(AccelError::Architecture)?;
    let (a, b) = fdpass::pair().map_err(AccelError::SocketPair)?;
    Ok((ChildHook { program, sock: a }, Receiver { sock: b }))
}

impl ChildHook {
    /// In the command's process, right before `exec`: install the filter and
    /// hand over its listener. Async-signal-safe. `Err` only when the
    /// listener cannot be handed over after the filter is in place: the
    /// command must not start then (nobody would answer its `connect`s).
    pub fn install(&self) -> Result<(), Errno> {
        let sock = self.sock.as_raw_fd();
        // SAFETY: socket(2) with constant arguments.
        let probe = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if probe < 0 {
            send(sock, &failure(Step::Probe, Errno::last_raw()), &[]);
            return Ok(());
        }
        let fprog = libc::sock_fprog { len: self.program.len() as u16, filter: self.program.as_ptr().cast_mut() };
        let flags = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
        let mut listener = seccomp(flags, &fprog);
        if listener < 0 && Errno::last() == Errno::EINVAL {
            // Before 5.19: no killable wait.
            listener = seccomp(libc::SECCOMP_FILTER_FLAG_NEW_LISTENER, &fprog);
        }
        if listener < 0 {
            send(sock, &failure(Step::Filter, Errno::last_raw()), &[]);
            close(probe);
            return Ok(());
        }
        let sent = send(sock, &[OK, 0, 0, 0, 0, 0, 0, 0], &[listener as RawFd, probe]);
        close(listener as RawFd);
        close(probe);
        if sent { Ok(()) } else { Err(Errno::last()) }
    }
}

fn seccomp(flags: libc::c_ulong, prog: &libc::sock_fprog) -> libc::c_long {
    // SAFETY: seccomp(2) reads the program during the call; `prog` points at
    // memory prepared before the fork that outlives it.
    unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, flags, prog as *const libc::sock_fprog) }
}

fn failure(step: Step, errno: i32) -> [u8; MSG_LEN] {
    let e = errno.to_ne_bytes();
    [FAILED, step as u8, 0, 0, e[0], e[1], e[2], e[3]]
}

fn close(fd: RawFd) {
    // SAFETY: closing a descriptor this process made and owns.
    unsafe { libc::close(fd) };
}

impl Receiver {
    /// What the command's process said, within `timeout`: the listener, or
    /// why the filter is not in place.
    pub fn receive(self, timeout: Duration) -> Result<Installed, AccelError> {
        let mut pfd = libc::pollfd { fd: self.sock.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: poll(2) on one pollfd of ours.
        let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
        if ready <= 0 {
            return Err(AccelError::NoAnswer);
        }
        let mut msg = [0u8; MSG_LEN];
        let (n, fds) = fdpass::recv(self.sock.as_fd(), &mut msg).map_err(|_| AccelError::NoAnswer)?;
        match (n, msg[0]) {
            (8, OK) if fds.len() == 2 => {
                let mut fds = fds.into_iter();
                let (listener, probe) =
                    (fds.next().ok_or(AccelError::NoAnswer)?, fds.next().ok_or(AccelError::NoAnswer)?);
                let run_netns = super::sys::netns_cookie(probe.as_fd()).map_err(AccelError::NetnsCookie)?;
                Ok(Installed { listener, run_netns })
            }
            (8, FAILED) => {
                let step = if msg[1] == Step::Probe as u8 { Step::Probe } else { Step::Filter };
                let errno = Errno::from_raw(i32::from_ne_bytes([msg[4], msg[5], msg[6], msg[7]]));
                Err(AccelError::Refused { step, errno })
            }
            _ => Err(AccelError::NoAnswer),
        }
    }
}


//! Signals around the command: blocked and read from a signalfd while
//! pelagos-net supervises, forwarded to the command, and used to cancel a
//! setup that is still waiting for the network.

use super::RunError;
use crate::flow::exec::LiveHelper;
use crate::ns::child::{FORWARDED_SIGNALS, NsChild};
use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::WaitStatus;
use std::time::Duration;

/// How long the command gets to exit after a SIGTERM or SIGINT sent to
/// pelagos-net before everything in the run is killed (docker's stop
/// timeout).
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Blocks the forwarded signals (and SIGCHLD) for this thread while alive,
/// reading them from a signalfd; restores the old mask on drop.
pub(super) struct SignalGuard {
    pub(super) old: SigSet,
    pub(super) fd: SignalFd,
}

impl SignalGuard {
    pub(super) fn new() -> Result<Self, RunError> {
        let mut set = SigSet::empty();
        for s in FORWARDED_SIGNALS {
            set.add(s);
        }
        set.add(Signal::SIGCHLD);
        let mut old = SigSet::empty();
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)).map_err(RunError::Signals)?;
        let fd =
            SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).map_err(RunError::Signals)?;
        Ok(Self { old, fd })
    }

    /// A pending terminating signal, consuming everything pending.
    pub(super) fn pending_termination(&self) -> Option<Signal> {
        let mut found = None;
        while let Ok(Some(info)) = self.fd.read_signal() {
            let sig = Signal::try_from(info.ssi_signo as i32).ok();
            if matches!(sig, Some(Signal::SIGINT | Signal::SIGTERM | Signal::SIGHUP | Signal::SIGQUIT)) {
                found = sig;
            }
        }
        found
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.old), None);
    }
}

/// Forward signals and wait for the command. Returns its exit code and
/// whether pasta died meanwhile. A command still running [`STOP_GRACE`]
/// after a SIGTERM or SIGINT sent to us is killed with everything else in
/// the run (the namespace's init gets SIGKILL).
pub(super) fn supervise(
    child: &mut NsChild,
    signals: &SignalGuard,
    mut helper: Option<&mut LiveHelper>,
) -> (i32, bool) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut pasta_died = false;
    let mut stop_by: Option<std::time::Instant> = None;
    loop {
        match child.try_wait() {
            Ok(Some(WaitStatus::Exited(_, code))) => return (code, pasta_died),
            Ok(Some(WaitStatus::Signaled(_, sig, _))) => return (128 + sig as i32, pasta_died),
            Ok(_) => {}
            Err(_) => return (125, pasta_died),
        }
        if let Some(p) = helper.as_deref_mut()
            && !pasta_died
            && let Some(status) = p.try_exit()
        {
            pasta_died = true;
            log::warn!(
                "{} exited while the command runs ({}); the namespace has lost its network",
                p.name(),
                crate::helpers::pasta::process::describe(status)
            );
        }
        let timeout = match stop_by.map(|t| t.saturating_duration_since(std::time::Instant::now())) {
            Some(left) if left.is_zero() => {
                log::warn!("the command did not exit within {STOP_GRACE:?} of being told to stop; killing the run");
                child.signal(Signal::SIGKILL);
                stop_by = None;
                PollTimeout::NONE
            }
            Some(left) => PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX),
            None => PollTimeout::NONE,
        };
        let mut fds = [PollFd::new(signals.fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
        while let Ok(Some(info)) = signals.fd.read_signal() {
            let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else { continue };
            // A terminal's signal already reached the command (same process
            // group); forward only what was sent to us alone.
            if sig != Signal::SIGCHLD && info.ssi_code != libc::SI_KERNEL {
                child.signal(sig);
                if matches!(sig, Signal::SIGTERM | Signal::SIGINT) && stop_by.is_none() {
                    stop_by = Some(std::time::Instant::now() + STOP_GRACE);
                }
            }
        }
    }
}

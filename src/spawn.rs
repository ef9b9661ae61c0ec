//! What every helper process (pasta, slirp4netns) needs between `fork` and
//! `exec`: to die with its owner, and to start with no signal blocked.

use std::io;

/// Set `PR_SET_PDEATHSIG` to SIGKILL and empty the signal mask. The caller
/// may block the signals it forwards (`run` does); a helper inheriting a
/// blocked SIGTERM would ignore our stop request.
///
/// Async-signal-safe (prctl, sigemptyset, sigprocmask on a stack
/// `sigset_t`): call it only from a `pre_exec` closure or after `fork`.
pub(crate) fn helper_child_setup() -> io::Result<()> {
    // SAFETY: plain syscalls with constant arguments and a sigset_t on this
    // stack frame; nothing is allocated.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        if libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

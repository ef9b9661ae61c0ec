//! What every helper process (pasta, slirp4netns) needs: between `fork` and
//! `exec`, to die with its owner and to start with no signal blocked; once
//! started, [`HelperChild`]: its pid and start time, its output drained into
//! one bounded buffer, and a drop that never leaves it running or unreaped.

use crate::helpers::pasta::output::{OutputBuf, SharedOutput, drain};
use crate::host::procfs::ProcessId;
use nix::sys::signal::Signal;
use std::io;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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

/// A started helper with its output drains. Dropping it kills the helper if
/// it still runs and reaps it on a background thread, without blocking.
#[derive(Debug)]
pub(crate) struct HelperChild {
    child: Child,
    id: ProcessId,
    output: SharedOutput,
    drains: Vec<JoinHandle<()>>,
}

impl HelperChild {
    /// Takes over `child` (spawned with piped stdout and stderr) and starts
    /// draining its output. On error the helper is stopped.
    pub(crate) fn start(mut child: Child, proc_root: &Path) -> io::Result<Self> {
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let pid = child.id();
        let id = ProcessId::of(proc_root, pid).unwrap_or(ProcessId::unread(pid));
        // From here on, an early return drops `helper`, which stops it.
        let mut helper = Self { child, id, output: Arc::new(Mutex::new(OutputBuf::default())), drains: Vec::new() };
        if let Some(out) = stdout {
            helper.drains.push(drain(out, helper.output.clone())?);
        }
        if let Some(err) = stderr {
            helper.drains.push(drain(err, helper.output.clone())?);
        }
        Ok(helper)
    }

    /// pid and start time.
    pub(crate) fn id(&self) -> ProcessId {
        self.id
    }

    /// Exit status if the helper has already exited (and is now reaped).
    pub(crate) fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Output so far.
    pub(crate) fn output(&self) -> String {
        self.output.lock().map(|b| b.text()).unwrap_or_default()
    }

    /// Sends `sig` (best effort; the helper is not reaped yet, so its pid
    /// is still its own).
    pub(crate) fn signal(&self, sig: Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig);
    }

    /// Waits up to `grace` for the helper to exit.
    pub(crate) fn wait_exit(&mut self, grace: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + grace;
        let mut pause = Duration::from_micros(100);
        loop {
            if let Some(status) = self.try_exit() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(2));
        }
    }

    /// Waits until `deadline` for the helper's output to close; true if it did.
    pub(crate) fn wait_output_closed(&mut self, deadline: Instant) -> bool {
        loop {
            if self.drains.iter().all(|d| d.is_finished()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Joins the drains that have finished.
    pub(crate) fn join_finished_drains(&mut self) {
        for d in self.drains.drain(..).filter(|d| d.is_finished()) {
            let _ = d.join();
        }
    }

    /// Kills the helper if it still runs and reaps it on a background
    /// thread (its tap teardown takes tens of milliseconds). Never blocks.
    pub(crate) fn abandon(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        if let Ok(None) = self.child.try_wait() {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = std::thread::Builder::new().name("helper-reap".into()).spawn(move || {
                let _ = nix::sys::wait::waitpid(pid, None);
            });
        }
    }
}

impl Drop for HelperChild {
    fn drop(&mut self) {
        self.abandon();
    }
}

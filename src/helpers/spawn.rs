//! What every helper process (pasta, slirp4netns) needs: between `fork` and
//! `exec`, to die with its owner and to start with no signal blocked; once
//! started, [`HelperChild`]: its pid and start time, its output drained into
//! one bounded buffer (or, for a helper that outlives its owner, written to
//! a log file; see [`super::detached`]), and a drop that never leaves it
//! running or unreaped unless it was released to run on.

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

/// Clear close-on-exec on `fds`, so the helper keeps them (namespaces it
/// opens as `/proc/self/fd/N`). Async-signal-safe, for `pre_exec`.
pub(crate) fn inherit_fds(fds: &[std::os::fd::RawFd]) -> io::Result<()> {
    for &fd in fds {
        // SAFETY: fcntl(2) on a descriptor number; no memory is touched.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A started helper with its output drains. Dropping it kills the helper if
/// it still runs and reaps it on a background thread, without blocking
/// (unless it was [released](HelperChild::release)).
#[derive(Debug)]
pub(crate) struct HelperChild {
    child: Proc,
    id: ProcessId,
    output: SharedOutput,
    drains: Vec<JoinHandle<()>>,
    log: Option<std::path::PathBuf>,
    released: bool,
}

/// The helper process: spawned through `Command`, or forked by
/// [`super::detached::spawn_gated`].
#[derive(Debug)]
enum Proc {
    Std(Child),
    Raw { pid: nix::unistd::Pid, status: Option<ExitStatus> },
}

impl Proc {
    fn pid(&self) -> u32 {
        match self {
            Self::Std(c) => c.id(),
            Self::Raw { pid, .. } => pid.as_raw() as u32,
        }
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        match self {
            Self::Std(c) => c.try_wait().ok().flatten(),
            Self::Raw { status: Some(s), .. } => Some(*s),
            Self::Raw { pid, status } => {
                let mut raw = 0;
                // SAFETY: waitpid on our own child with a status int on this stack frame.
                let got = unsafe { libc::waitpid(pid.as_raw(), &mut raw, libc::WNOHANG) };
                if got == pid.as_raw() {
                    *status = Some(ExitStatus::from_raw(raw));
                }
                *status
            }
        }
    }
}

impl HelperChild {
    /// Takes over `child` (spawned with piped stdout and stderr) and starts
    /// draining its output. On error the helper is stopped.
    pub(crate) fn start(mut child: Child, proc_root: &Path) -> io::Result<Self> {
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let pid = child.id();
        let id = ProcessId::of(proc_root, pid).unwrap_or(ProcessId::unread(pid));
        // From here on, an early return drops `helper`, which stops it.
        let mut helper = Self {
            child: Proc::Std(child),
            id,
            output: Arc::new(Mutex::new(OutputBuf::default())),
            drains: Vec::new(),
            log: None,
            released: false,
        };
        if let Some(out) = stdout {
            helper.drains.push(drain(out, helper.output.clone())?);
        }
        if let Some(err) = stderr {
            helper.drains.push(drain(err, helper.output.clone())?);
        }
        Ok(helper)
    }

    /// Takes over a helper forked by [`super::detached::spawn_gated`],
    /// whose output goes to `log`.
    pub(crate) fn start_detached(pid: u32, id: ProcessId, log: std::path::PathBuf) -> Self {
        let child = Proc::Raw { pid: nix::unistd::Pid::from_raw(pid as i32), status: None };
        let output = Arc::new(Mutex::new(OutputBuf::default()));
        Self { child, id, output, drains: Vec::new(), log: Some(log), released: false }
    }

    /// pid and start time.
    pub(crate) fn id(&self) -> ProcessId {
        self.id
    }

    /// Exit status if the helper has already exited (and is now reaped).
    pub(crate) fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.try_wait()
    }

    /// Output so far.
    pub(crate) fn output(&self) -> String {
        match &self.log {
            Some(path) => super::detached::read_log(path).unwrap_or_default(),
            None => self.output.lock().map(|b| b.text()).unwrap_or_default(),
        }
    }

    /// Sends `sig` (best effort; the helper is not reaped yet, so its pid
    /// is still its own).
    pub(crate) fn signal(&self, sig: Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.pid() as i32), sig);
    }

    /// Let it run on after this handle is gone (a detached helper): it is
    /// reaped on a background thread if it exits while this process lives.
    pub(crate) fn release(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        let pid = nix::unistd::Pid::from_raw(self.child.pid() as i32);
        if self.try_exit().is_none() {
            let _ = std::thread::Builder::new().name("helper-reap".into()).spawn(move || {
                let _ = nix::sys::wait::waitpid(pid, None);
            });
        }
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
        if self.released {
            return;
        }
        if self.child.try_wait().is_none() {
            self.signal(Signal::SIGKILL);
        }
        if self.child.try_wait().is_none() {
            let pid = nix::unistd::Pid::from_raw(self.child.pid() as i32);
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

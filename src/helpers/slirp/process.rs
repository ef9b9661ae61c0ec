//! Running slirp4netns: spawn against an existing namespace, wait for its
//! ready signal, stop it and hand back what it printed.
//!
//! slirp4netns runs in the foreground as our child, in its own process group
//! (a terminal's Ctrl-C goes to the command, not to its network). Its stdout
//! and stderr are drained into the bounded buffer shared with pasta
//! ([`crate::helpers::pasta::output`]). Two pipes tie it to us:
//!
//! - `--ready-fd`: slirp4netns writes `1` once the tap device is configured
//!   (address, route, `lo` up) and the API socket listens (since v0.4.0), so
//!   readiness needs no polling of `/proc`; EOF without `1` means it failed.
//! - `--exit-fd`: slirp4netns exits cleanly (and unlinks its API socket) as
//!   soon as we close our end. The kernel closes it when we die, however we
//!   die, which also covers what `PR_SET_PDEATHSIG` cannot: that signal is
//!   tied to the spawning *thread*, and is cleared when a launcher such as
//!   `setpriv` changes credentials before exec.
//!
//! Both descriptors are `O_CLOEXEC` in this process (no other child inherits
//! them) and made inheritable only in slirp4netns's own `pre_exec`.

use super::args::{SlirpArgsError, SlirpFds, SlirpPlan, build_argv};
use crate::helpers::pasta::process::describe;
use crate::helpers::spawn::HelperChild;
use crate::host::procfs::ProcessId;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a slirp4netns that did not exit on its pipe gets after each
/// signal, and its output to close.
const SIGNAL_GRACE: Duration = Duration::from_millis(500);

/// Errors of running slirp4netns.
#[derive(Debug, thiserror::Error)]
pub enum SlirpError {
    /// The plan could not be turned into arguments.
    #[error("build slirp4netns arguments")]
    Args(#[from] SlirpArgsError),
    /// The ready or exit pipe could not be created.
    #[error("create the slirp4netns {which} pipe")]
    Pipe {
        /// `ready` or `exit`.
        which: &'static str,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// The program (or its launcher) could not be started.
    #[error("start {program}")]
    Spawn {
        /// Program path.
        program: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// slirp4netns exited (or closed its ready pipe) before it was ready.
    #[error("slirp4netns exited ({status}) before the network was ready\n--- slirp4netns output ---\n{output}")]
    ExitedEarly {
        /// Exit status, as text.
        status: String,
        /// What slirp4netns printed.
        output: String,
    },
    /// The deadline passed without the ready signal.
    #[error("slirp4netns not ready after {waited:?}\n--- slirp4netns output ---\n{output}")]
    NotReady {
        /// How long we waited.
        waited: Duration,
        /// What slirp4netns printed.
        output: String,
    },
    /// Something other than `1` arrived on the ready pipe.
    #[error("slirp4netns sent {byte:#04x} instead of '1' on its ready pipe\n--- slirp4netns output ---\n{output}")]
    BadReadySignal {
        /// The byte received.
        byte: u8,
        /// What slirp4netns printed.
        output: String,
    },
    /// Waiting on the ready pipe failed.
    #[error("wait on the slirp4netns ready pipe")]
    ReadyPipe(#[source] Errno),
    /// Setup was cancelled (a signal arrived) before the network was ready.
    #[error("cancelled while waiting for slirp4netns")]
    Cancelled,
    /// The API socket left behind by a killed slirp4netns could not be removed.
    #[error("remove slirp4netns api socket {}", .path.display())]
    RemoveApiSocket {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// How slirp4netns is started.
#[derive(Debug, Clone)]
pub struct SlirpCommand<'a> {
    /// The slirp4netns binary.
    pub program: &'a Path,
    /// Commands that `exec` the program, e.g. `["setpriv", "--reuid=1000", ..., "--"]`
    /// or `["ip", "netns", "exec", "NAME"]`; usually empty. Each must exec, not
    /// fork, so that the pid we hold is slirp4netns's.
    pub launcher: &'a [OsString],
    /// Namespaces, API socket, MTU, host loopback.
    pub plan: &'a SlirpPlan,
    /// procfs root.
    pub proc_root: &'a Path,
    /// Descriptors slirp4netns inherits (namespaces given as `/proc/self/fd/N`).
    pub inherit: &'a [std::os::fd::RawFd],
}

/// A running slirp4netns with its output drains and its two pipes.
#[derive(Debug)]
pub struct SlirpProcess {
    helper: HelperChild,
    ready_rx: Option<OwnedFd>,
    exit_tx: Option<OwnedFd>,
    api_socket: PathBuf,
    socket_removed: bool,
    released: bool,
}

/// What slirp4netns left behind when stopped.
#[derive(Debug)]
pub struct SlirpReport {
    /// Its exit status (`None` only when it outlived SIGKILL's grace period).
    pub status: Option<ExitStatus>,
    /// Everything it printed (bounded).
    pub output: String,
    /// Teardown steps that failed (every step was attempted).
    pub errors: Vec<SlirpError>,
}

fn pipe(which: &'static str) -> Result<(OwnedFd, OwnedFd), SlirpError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|source| SlirpError::Pipe { which, source })
}

/// `fd` itself, or a close-on-exec duplicate numbered 3 or above when it is
/// 0..=2 (which `Command` overwrites with the child's stdio).
fn above_stdio(fd: OwnedFd, which: &'static str) -> Result<OwnedFd, SlirpError> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    let raw = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))
        .map_err(|source| SlirpError::Pipe { which, source })?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

impl SlirpProcess {
    /// Start slirp4netns; returns the process and its arguments (after the program name).
    pub fn spawn(cmd: &SlirpCommand<'_>) -> Result<(Self, Vec<OsString>), SlirpError> {
        let (ready_rx, ready_tx) = pipe("ready")?;
        let (exit_rx, exit_tx) = pipe("exit")?;
        let ready_tx = above_stdio(ready_tx, "ready")?;
        let exit_rx = above_stdio(exit_rx, "exit")?;
        let (ready_fd, exit_fd) = (ready_tx.as_raw_fd(), exit_rx.as_raw_fd());
        let inherit = cmd.inherit.to_vec();
        let fds = SlirpFds { ready: ready_fd, exit: Some(exit_fd) };
        let argv = build_argv(cmd.plan, fds)?;
        let mut command = match cmd.launcher.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(cmd.program);
                c
            }
            None => Command::new(cmd.program),
        };
        let program = PathBuf::from(command.get_program());
        let spawn_err = |source| SlirpError::Spawn { program: program.clone(), source };
        command.args(&argv).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        // SAFETY: the closure runs between fork and exec and only calls
        // `helper_child_setup` and fcntl(2) on descriptors numbered above
        // stdio, all async-signal-safe; it allocates nothing.
        unsafe {
            command.pre_exec(move || {
                crate::helpers::spawn::helper_child_setup()?;
                crate::helpers::spawn::inherit_fds(&[ready_fd, exit_fd])?;
                crate::helpers::spawn::inherit_fds(&inherit)
            });
        }
        let child = command.spawn().map_err(spawn_err)?;
        // Only slirp4netns may hold these ends: EOF on ready_rx then means it is gone.
        drop(ready_tx);
        drop(exit_rx);
        let process = Self {
            helper: HelperChild::start(child, cmd.proc_root).map_err(spawn_err)?,
            ready_rx: Some(ready_rx),
            exit_tx: Some(exit_tx),
            api_socket: cmd.plan.api_socket.clone(),
            socket_removed: false,
            released: false,
        };
        Ok((process, argv))
    }

    /// Start slirp4netns so that it outlives this process: no exit pipe (it
    /// is stopped by signal), in a session of its own, its output in
    /// `detach.log`, recorded through `detach.record` before it runs.
    pub fn spawn_detached(
        cmd: &SlirpCommand<'_>,
        detach: crate::helpers::detached::Detach<'_>,
    ) -> Result<(Self, Vec<OsString>), SlirpError> {
        let (ready_rx, ready_tx) = pipe("ready")?;
        let ready_tx = above_stdio(ready_tx, "ready")?;
        let argv = build_argv(cmd.plan, SlirpFds { ready: ready_tx.as_raw_fd(), exit: None })?;
        let spawn_err = |source| SlirpError::Spawn { program: cmd.program.to_owned(), source };
        let mut keep = vec![ready_tx.as_raw_fd()];
        keep.extend_from_slice(cmd.inherit);
        let (pid, id) =
            crate::helpers::detached::spawn_gated(cmd.program, &argv, detach.log, &keep, cmd.proc_root, detach.record)
                .map_err(spawn_err)?;
        drop(ready_tx);
        let process = Self {
            helper: HelperChild::start_detached(pid, id, detach.log.to_owned()),
            ready_rx: Some(ready_rx),
            exit_tx: None,
            api_socket: cmd.plan.api_socket.clone(),
            socket_removed: false,
            released: false,
        };
        Ok((process, argv))
    }

    /// Let slirp4netns run on when this handle goes (it outlives this process).
    pub fn release(mut self) {
        self.released = true;
        self.ready_rx = None;
    }

    /// pid and start time.
    pub fn id(&self) -> ProcessId {
        self.helper.id()
    }

    /// Exit status if slirp4netns has already exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.helper.try_exit()
    }

    /// Output so far.
    pub fn output(&self) -> String {
        self.helper.output()
    }

    /// The API socket path slirp4netns was told to create.
    pub fn api_socket(&self) -> &Path {
        &self.api_socket
    }

    /// Wait for `1` on the ready pipe, until slirp4netns exits, `cancel`
    /// says so, or `timeout` passes. Returns the time waited.
    pub fn wait_ready(&mut self, timeout: Duration, cancel: &mut dyn FnMut() -> bool) -> Result<Duration, SlirpError> {
        let start = Instant::now();
        let Some(rx) = self.ready_rx.take() else { return Ok(Duration::ZERO) };
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(SlirpError::NotReady { waited: start.elapsed(), output: self.output() });
            }
            if cancel() {
                return Err(SlirpError::Cancelled);
            }
            let slice = PollTimeout::from(left.as_millis().clamp(1, 5) as u8);
            match poll(&mut [PollFd::new(rx.as_fd(), PollFlags::POLLIN)], slice) {
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => return Err(SlirpError::ReadyPipe(e)),
            }
            let mut byte = [0u8; 1];
            match nix::unistd::read(&rx, &mut byte) {
                Ok(1) if byte[0] == b'1' => return Ok(start.elapsed()),
                Ok(1) => return Err(SlirpError::BadReadySignal { byte: byte[0], output: self.output() }),
                Err(Errno::EINTR | Errno::EAGAIN) => continue,
                Err(e) => return Err(SlirpError::ReadyPipe(e)),
                Ok(_) => return Err(self.exited_early()),
            }
        }
    }

    /// The ready pipe hit EOF: slirp4netns is exiting; give it a moment to
    /// finish and its drains to catch its last words.
    fn exited_early(&mut self) -> SlirpError {
        let status = self.helper.wait_exit(Duration::from_millis(500));
        self.helper.wait_output_closed(Instant::now() + Duration::from_millis(200));
        let status = status.map_or_else(|| "still running, ready pipe closed".to_owned(), describe);
        SlirpError::ExitedEarly { status, output: self.output() }
    }

    /// Stop slirp4netns: close the exit pipe (it exits cleanly and unlinks
    /// its API socket) and wait up to `grace`, then SIGTERM, then SIGKILL,
    /// each given half a second at most. Returns as soon as it is reaped;
    /// removes the API socket if a killed slirp4netns left it behind.
    pub fn stop(mut self, grace: Duration) -> SlirpReport {
        let mut status = self.try_exit();
        drop(self.exit_tx.take());
        if status.is_none() {
            status = self.helper.wait_exit(grace);
        }
        for sig in [Signal::SIGTERM, Signal::SIGKILL] {
            if status.is_none() {
                self.helper.signal(sig);
                status = self.helper.wait_exit(SIGNAL_GRACE);
            }
        }
        self.helper.wait_output_closed(Instant::now() + SIGNAL_GRACE);
        self.helper.join_finished_drains();
        let mut errors = Vec::new();
        if let Err(e) = self.remove_socket() {
            errors.push(e);
        }
        SlirpReport { status, output: self.output(), errors }
    }

    /// Remove the API socket if it is still there (only a socket is removed).
    fn remove_socket(&mut self) -> Result<(), SlirpError> {
        self.socket_removed = true;
        let path = &self.api_socket;
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)
                .or_else(|e| if e.kind() == io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
                .map_err(|source| SlirpError::RemoveApiSocket { path: path.clone(), source }),
            _ => Ok(()),
        }
    }
}

impl Drop for SlirpProcess {
    /// Best effort, never blocks: close the exit pipe, kill slirp4netns if
    /// still running, reap it on a background thread, remove its socket.
    fn drop(&mut self) {
        if self.released {
            // It runs on, with its socket.
            self.helper.release();
            return;
        }
        drop(self.exit_tx.take());
        self.helper.abandon();
        if !self.socket_removed {
            let _ = self.remove_socket();
        }
    }
}

#[cfg(test)]
#[path = "process_tests.rs"]
mod tests;

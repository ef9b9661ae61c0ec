//! Running pasta: spawn against an existing namespace, wait until the
//! namespace is really ready, stop it and hand back what it printed.
//!
//! pasta runs in the foreground as our child, in its own process group (a
//! terminal's Ctrl-C goes to the command, not to its network), with
//! `PR_SET_PDEATHSIG` so it dies with us even if we are killed. Its stdout
//! and stderr are drained into one bounded buffer. pasta in PID/netns mode
//! does not exit when its target dies, so it is always stopped explicitly.

use super::ready::{self, Expectation, HostPort, Missing, NsView};
use crate::helpers::spawn::HelperChild;
use crate::host::procfs::ProcessId;
use nix::sys::signal::Signal;
use std::ffi::OsString;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long pasta, its output closed, is given to finish exiting.
const REAP_AFTER_CLOSE: Duration = Duration::from_millis(50);

/// Errors of running pasta.
#[derive(Debug, thiserror::Error)]
pub enum PastaError {
    /// The pasta binary could not be started.
    #[error("start {program}")]
    Spawn {
        /// Program path.
        program: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// pasta exited before the namespace was ready.
    #[error("pasta exited ({status}) before the network was ready{}\n--- pasta output ---\n{output}", culprit(.ports_in_use))]
    ExitedEarly {
        /// Exit status, as text.
        status: String,
        /// Requested host ports that another socket holds.
        ports_in_use: Vec<HostPort>,
        /// What pasta printed.
        output: String,
    },
    /// The deadline passed with parts of the network still missing.
    #[error("network not ready after {waited:?}: missing {}\n--- pasta output ---\n{output}", list(.missing))]
    NotReady {
        /// How long we waited.
        waited: Duration,
        /// What was still missing.
        missing: Vec<Missing>,
        /// What pasta printed.
        output: String,
    },
    /// Requested host ports are held by another socket, so pasta cannot serve them.
    #[error("host port {} already in use\n--- pasta output ---\n{output}", .ports.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", "))]
    PortsInUse {
        /// The ports.
        ports: Vec<HostPort>,
        /// What pasta printed.
        output: String,
    },
    /// Setup was cancelled (a signal arrived) before the network was ready.
    #[error("cancelled while waiting for the network")]
    Cancelled,
    /// `/proc` could not be read while checking readiness.
    #[error("inspect the namespace ({ns}) through /proc")]
    Observe {
        /// The namespace inspected.
        ns: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

fn culprit(ports: &[HostPort]) -> String {
    if ports.is_empty() {
        return String::new();
    }
    let names: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
    format!(": host port {} already in use", names.join(", "))
}

fn list(missing: &[Missing]) -> String {
    missing.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", ")
}

/// How long pasta gets to report a port it cannot bind (and exit) before we
/// stop waiting for it: the port is held by someone else either way. Long
/// enough for pasta to start and print why on a loaded machine.
const OCCUPIED_GRACE: Duration = Duration::from_secs(1);

/// How long a pasta that exited, or was stopped for a taken port, gets to
/// close its output, so that its own message is part of the error.
const LAST_WORDS: Duration = Duration::from_millis(500);

/// How pasta's message about a port it cannot bind begins.
const BIND_FAILED: &str = "Failed to bind";

/// A running pasta process with its output drains.
#[derive(Debug)]
pub struct PastaProcess {
    /// Dropping it kills pasta if still running and reaps it in the background.
    helper: HelperChild,
}

/// What pasta left behind when stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PastaReport {
    /// Its exit status, when it was already reaped.
    pub status: Option<ExitStatus>,
    /// Everything it printed (bounded, syslog noise removed).
    pub output: String,
}

impl PastaProcess {
    /// Start `program` with `args` (as built by `args::build_argv`).
    /// `inherit` names descriptors (above 2) pasta keeps, for namespace
    /// paths of the form `/proc/self/fd/N`.
    pub fn spawn(program: &Path, args: &[OsString], proc_root: &Path, inherit: &[RawFd]) -> Result<Self, PastaError> {
        let spawn_err = |source| PastaError::Spawn { program: program.to_owned(), source };
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        let inherit = inherit.to_vec();
        // SAFETY: the closure runs between fork and exec and only calls
        // `helper_child_setup` and fcntl(2), which are async-signal-safe; it
        // allocates nothing (the list was copied before the fork).
        unsafe {
            cmd.pre_exec(move || {
                crate::helpers::spawn::helper_child_setup()?;
                crate::helpers::spawn::inherit_fds(&inherit)
            });
        }
        let child = cmd.spawn().map_err(spawn_err)?;
        Ok(Self { helper: HelperChild::start(child, proc_root).map_err(spawn_err)? })
    }

    /// Start `program` with `args` so that it outlives this process: in a
    /// session of its own, its output in `detach.log`, recorded through
    /// `detach.record` before it runs.
    pub fn spawn_detached(
        program: &Path,
        args: &[OsString],
        proc_root: &Path,
        inherit: &[RawFd],
        detach: crate::helpers::detached::Detach<'_>,
    ) -> Result<Self, PastaError> {
        let spawn_err = |source| PastaError::Spawn { program: program.to_owned(), source };
        let (pid, id) =
            crate::helpers::detached::spawn_gated(program, args, detach.log, inherit, proc_root, detach.record)
                .map_err(spawn_err)?;
        Ok(Self { helper: HelperChild::start_detached(pid, id, detach.log.to_owned()) })
    }

    /// Let pasta run on when this handle goes (it outlives this process).
    pub fn release(mut self) {
        self.helper.release();
    }

    /// pid and start time.
    pub fn id(&self) -> ProcessId {
        self.helper.id()
    }

    /// Exit status if pasta has already exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.helper.try_exit()
    }

    /// Output so far.
    pub fn output(&self) -> String {
        self.helper.output()
    }

    /// Stop pasta: SIGTERM, then wait at most `grace` for its output to
    /// close, and return what it printed. pasta exits at once on SIGTERM,
    /// but its pipes close only after the kernel has torn its tap device
    /// down (~30 ms), and its output up to now is already captured; so a
    /// short grace is enough, and whatever is still running afterwards is
    /// killed and reaped on a background thread rather than making the
    /// caller wait.
    pub fn stop(mut self, grace: Duration) -> PastaReport {
        if self.try_exit().is_none() {
            self.helper.signal(Signal::SIGTERM);
        }
        let closed = self.helper.wait_output_closed(Instant::now() + grace);
        // Its output closes as it exits (with its files, the tap device
        // with them): its exit follows within moments, and it is reaped
        // here, not on a thread that may die with this process (its zombie
        // would go to a pid 1 that may never reap it).
        let status = if closed { self.helper.wait_exit(REAP_AFTER_CLOSE) } else { self.try_exit() };
        self.helper.join_finished_drains();
        let output = self.output();
        // Dropping kills what is left and reaps it in the background.
        drop(self);
        PastaReport { status, output }
    }

    /// Wait until `want` holds, pasta exits, `cancel` says so, or `timeout` passes.
    pub fn wait_ready(
        &mut self,
        proc_root: &Path,
        ns: NsView<'_>,
        base: &ready::Baseline,
        want: &Expectation,
        timeout: Duration,
        cancel: &mut dyn FnMut() -> bool,
    ) -> Result<Duration, PastaError> {
        let start = Instant::now();
        let mut pause = Duration::from_micros(100);
        loop {
            if let Some(status) = self.try_exit() {
                // Let the drains catch pasta's last words.
                self.helper.wait_output_closed(Instant::now() + LAST_WORDS);
                return Err(PastaError::ExitedEarly {
                    status: describe(status),
                    ports_in_use: base.occupied.clone(),
                    output: self.output(),
                });
            }
            // A port still taken after setup's wait: stop as soon as pasta
            // says why, or after the grace at the latest.
            if !base.occupied.is_empty() && (start.elapsed() >= OCCUPIED_GRACE || self.output().contains(BIND_FAILED)) {
                self.helper.signal(Signal::SIGTERM);
                self.helper.wait_output_closed(Instant::now() + LAST_WORDS);
                return Err(PastaError::PortsInUse { ports: base.occupied.clone(), output: self.output() });
            }
            let seen = ready::observe(proc_root, ns, base, want)
                .map_err(|source| PastaError::Observe { ns: ns.to_string(), source })?;
            let missing = ready::missing(want, &seen);
            if missing.is_empty() {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= timeout {
                return Err(PastaError::NotReady { waited: start.elapsed(), missing, output: self.output() });
            }
            if cancel() {
                return Err(PastaError::Cancelled);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(2));
        }
    }
}

/// "exit status 1" / "killed by signal 9".
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    }
}

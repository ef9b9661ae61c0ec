//! The holder's supervisor (see [`super::daemon`] for how it is started):
//! it brings the holder process, pasta and the name server up, reports,
//! then waits for signals: a child that died is replaced, SIGTERM stops
//! everything, and once a second it stops when no live record uses the
//! holder any more.

use super::daemon::{StartConfig, exit, has_default_route, pasta_argv, reap, report};
use super::{HolderDir, HolderError, HolderState};
use crate::host::procfs::ProcessId;
use nix::errno::Errno;
use nix::unistd::Pid;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The signals the supervisor waits for.
fn signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::Signal;
    let mut set = nix::sys::signal::SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    set
}

/// The supervisor: bring the holder up, report, then watch.
pub(super) fn supervise(cfg: &StartConfig, tx: OwnedFd) -> ! {
    let _ = signals().thread_set_mask();
    // What its children leave when they die (the name server's socket
    // factory) comes to it, to be reaped, instead of to a pid 1 that may
    // never reap.
    // SAFETY: prctl(2) with constant arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let mut sup = match Supervisor::bring_up(cfg) {
        Ok(s) => s,
        Err(e) => {
            report(&tx, &format!("error: {}", crate::flow::error_chain(&e)));
            exit(1)
        }
    };
    report(&tx, "ok");
    drop(tx);
    sup.watch()
}

/// The supervisor's children and the namespaces it keeps.
struct Supervisor {
    cfg: StartConfig,
    dir: HolderDir,
    holder: Pid,
    pasta: Option<Child>,
    /// The networks' name server ([`super::names`]).
    names: Option<Pid>,
    /// user, net, mnt of the holder.
    ns: [File; 3],
    state: HolderState,
    restarts: Vec<Instant>,
}

impl Supervisor {
    fn bring_up(cfg: &StartConfig) -> Result<Self, HolderError> {
        let proc_root = &cfg.paths.proc_root;
        let adopt = cfg.adopt.as_ref().map(|fd| fd.as_raw_fd());
        let holder = super::daemon_child::spawn_new(&cfg.mapping, proc_root, adopt)?;
        let open = |kind: &str| {
            let path = proc_root.join(holder.to_string()).join("ns").join(kind);
            File::open(&path).map_err(|source| HolderError::OpenNamespace { path, source })
        };
        let ns = [open("user")?, open("net")?, open("mnt")?];
        let me = std::process::id();
        let id = |pid: u32| ProcessId::of(proc_root, pid).unwrap_or(ProcessId::unread(pid));
        let state = HolderState {
            supervisor: id(me),
            holder: id(holder.as_raw() as u32),
            pasta: None,
            mapping: cfg.mapping.clone(),
            pasta_restarts: 0,
            holder_restarts: 0,
            names: None,
        };
        let dir = HolderDir::new(&cfg.paths.run_dir);
        let mut sup = Self { cfg: cfg.clone(), dir, holder, pasta: None, names: None, ns, state, restarts: Vec::new() };
        if let Err(e) = sup.start_pasta(cfg.timeout).and_then(|()| sup.start_names()) {
            sup.kill_children();
            return Err(e);
        }
        sup.dir.write(&sup.state)?;
        Ok(sup)
    }

    /// Start pasta against the holder and wait for its default route there.
    fn start_pasta(&mut self, timeout: Duration) -> Result<(), HolderError> {
        let proc_root = self.cfg.paths.proc_root.clone();
        let pid = self.holder.as_raw() as u32;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.pasta_log())
            .map_err(|source| HolderError::State { path: self.dir.pasta_log(), source })?;
        let log2 = log.try_clone().map_err(|source| HolderError::State { path: self.dir.pasta_log(), source })?;
        let mut cmd = Command::new(&self.cfg.pasta);
        cmd.args(pasta_argv(&proc_root, pid)).stdin(Stdio::null()).stdout(log).stderr(log2);
        // SAFETY: between fork and exec the closure calls only prctl(2) and
        // sigprocmask(2) (`helper_child_setup`), async-signal-safe, no allocation.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, crate::helpers::spawn::helper_child_setup);
        }
        let mut child = cmd.spawn().map_err(|source| HolderError::State { path: self.cfg.pasta.clone(), source })?;
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_micros(200);
        while !has_default_route(&proc_root, pid) {
            if let Ok(Some(status)) = child.try_wait() {
                let out = std::fs::read_to_string(self.dir.pasta_log()).unwrap_or_default();
                let tail: Vec<&str> = out.lines().rev().take(5).collect();
                return Err(HolderError::Start {
                    reason: format!("pasta exited ({status}): {}", tail.into_iter().rev().collect::<Vec<_>>().join(" / ")),
                });
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HolderError::Start { reason: "pasta did not configure the holder in time".into() });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(2));
        }
        self.state.pasta = Some(ProcessId::of(&proc_root, child.id()).unwrap_or(ProcessId::unread(child.id())));
        self.pasta = Some(child);
        Ok(())
    }

    /// Fork the networks' name server.
    fn start_names(&mut self) -> Result<(), HolderError> {
        let pid = super::names::spawn(&self.cfg.paths, self.holder)?;
        let raw = pid.as_raw() as u32;
        self.names = Some(pid);
        self.state.names = Some(ProcessId::of(&self.cfg.paths.proc_root, raw).unwrap_or(ProcessId::unread(raw)));
        Ok(())
    }

    fn kill_children(&mut self) {
        if let Some(names) = self.names.take() {
            let _ = nix::sys::signal::kill(names, nix::sys::signal::Signal::SIGKILL);
            reap(names);
            // Killed mid-write, it may have left its temp file.
            let dir = HolderDir::new(&self.cfg.paths.run_dir);
            let _ = std::fs::remove_file(super::names::temp_file(&dir, names.as_raw() as u32));
        }
        if let Some(mut p) = self.pasta.take() {
            let _ = nix::sys::signal::kill(Pid::from_raw(p.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let _ = p.wait();
        }
        let _ = nix::sys::signal::kill(self.holder, nix::sys::signal::Signal::SIGKILL);
        reap(self.holder);
    }

    /// Wait for signals until stopped.
    fn watch(&mut self) -> ! {
        let set = signals();
        let mut last_check = Instant::now();
        loop {
            let sig = wait_signal(&set, Duration::from_secs(1));
            match sig {
                Some(libc::SIGTERM | libc::SIGINT | libc::SIGHUP) => self.shutdown(),
                _ => self.reap_children(),
            }
            if last_check.elapsed() >= Duration::from_millis(900) {
                last_check = Instant::now();
                self.stop_when_unused();
            }
        }
    }

    /// No live record uses the holder and nobody is starting to: stop
    /// (under the lock, so no run can count on it meanwhile).
    fn stop_when_unused(&mut self) {
        let Some(_lock) = self.dir.try_lock() else { return };
        if super::usage::in_use(&self.cfg.paths, None) {
            return;
        }
        let _ = self.dir.remove();
        self.shutdown()
    }

    fn shutdown(&mut self) -> ! {
        self.kill_children();
        reap_descendants(Duration::from_secs(2));
        if self.dir.read().ok().flatten().is_some_and(|s| s.supervisor == self.state.supervisor) {
            let _ = self.dir.remove();
        }
        exit(0)
    }

    /// Replace the children that died.
    fn reap_children(&mut self) {
        loop {
            let pid = match nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(status) => match status.pid() {
                    Some(pid) => pid,
                    None => return,
                },
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            };
            if pid == self.holder {
                self.replace_holder();
            } else if self.names == Some(pid) {
                self.names = None;
                self.restart_names();
            } else if self.pasta.as_ref().is_some_and(|p| p.id() as i32 == pid.as_raw()) {
                self.pasta = None;
                self.restart_pasta();
            }
        }
    }

    fn replace_holder(&mut self) {
        let fds = [self.ns[0].as_raw_fd(), self.ns[1].as_raw_fd(), self.ns[2].as_raw_fd()];
        match super::daemon_child::spawn_joined(fds) {
            Ok(pid) => {
                self.holder = pid;
                let raw = pid.as_raw() as u32;
                self.state.holder = ProcessId::of(&self.cfg.paths.proc_root, raw).unwrap_or(ProcessId::unread(raw));
                self.state.holder_restarts += 1;
                let _ = self.dir.write(&self.state);
            }
            Err(e) => {
                log::error!("holder: cannot replace the holder process: {e}");
                self.shutdown()
            }
        }
    }

    fn restart_names(&mut self) {
        if !self.may_restart() {
            self.shutdown()
        }
        match self.start_names() {
            Ok(()) => {
                let _ = self.dir.write(&self.state);
            }
            Err(_) => self.shutdown(),
        }
    }

    /// Fewer than five restarts in the last ten seconds (a child that keeps
    /// dying is given up rather than spun on); counts this one.
    fn may_restart(&mut self) -> bool {
        let now = Instant::now();
        self.restarts.retain(|t| now.duration_since(*t) < Duration::from_secs(10));
        self.restarts.push(now);
        self.restarts.len() <= 5
    }

    fn restart_pasta(&mut self) {
        self.state.pasta = None;
        let _ = self.dir.write(&self.state);
        if !self.may_restart() {
            self.shutdown()
        }
        let timeout = self.cfg.timeout;
        match self.start_pasta(timeout) {
            Ok(()) => {
                self.state.pasta_restarts += 1;
                let _ = self.dir.write(&self.state);
            }
            Err(_) => self.shutdown(),
        }
    }
}

/// Reap what is left of the supervisor's tree (it is their subreaper),
/// waiting at most `within` for the last of them to die.
fn reap_descendants(within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        match nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(nix::sys::wait::WaitStatus::StillAlive) => return,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// Wait at most `timeout` for one of `set` (blocked); the signal or `None`.
fn wait_signal(set: &nix::sys::signal::SigSet, timeout: Duration) -> Option<i32> {
    let ts = libc::timespec { tv_sec: timeout.as_secs() as _, tv_nsec: timeout.subsec_nanos() as _ };
    // SAFETY: sigtimedwait(2) reads the set and the timeout we own; no info is asked for.
    let sig = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
    (sig > 0).then_some(sig)
}

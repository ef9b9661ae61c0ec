//! Starting the holder, and its supervisor.
//!
//! [`start`] forks twice (the supervisor leaves the caller's session and
//! is nobody's child but init's) and waits for the supervisor's one-line
//! report. The supervisor forks the holder process (user namespace first,
//! id maps written from outside, then network and mount namespaces, `lo`
//! up), keeps its namespaces open, starts pasta against it, writes the
//! state file and reports. Then it waits for signals: a child that died is
//! replaced (pasta restarted; a holder process re-created by joining the
//! namespaces it keeps), SIGTERM stops both and exits, and once a second it
//! checks whether any live record still uses the holder, stopping when none
//! does.
//!
//! The supervisor itself (bring-up, watching, restarts) is in
//! [`super::supervisor`]; it stays single-threaded, so it may fork helpers
//! that join the holder's user namespace.

use super::idmap::IdMapping;
use super::{HolderDir, HolderError, HolderState};
use crate::state::paths::Paths;
use nix::errno::Errno;
use nix::unistd::{ForkResult, Pid};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What starting a holder needs.
#[derive(Debug, Clone)]
pub struct StartConfig {
    /// State roots (the run directory holds the holder's directory and the records counted).
    pub paths: Paths,
    /// The pasta binary.
    pub pasta: PathBuf,
    /// How the user namespace maps ids.
    pub mapping: IdMapping,
    /// How long the whole start may take.
    pub timeout: Duration,
    /// A user namespace to build the holder in instead of a new one: the
    /// dead holder's, which its runs' and attachments' namespaces keep
    /// alive (open: an attachment's may be reachable by no path), so the
    /// new holder may give them their network back.
    pub adopt: Option<Arc<OwnedFd>>,
}

/// Refuse to fork helpers from a multi-threaded process.
pub fn single_threaded(proc_root: &Path) -> Result<(), HolderError> {
    match crate::host::procfs::threads(proc_root) {
        1 => Ok(()),
        threads => Err(HolderError::Threaded { threads }),
    }
}

fn sys(op: &'static str) -> impl FnOnce(nix::Error) -> HolderError {
    move |source| HolderError::Sys { op, source }
}

/// Start a holder and its supervisor; returns the state it wrote.
pub fn start(cfg: &StartConfig) -> Result<HolderState, HolderError> {
    single_threaded(&cfg.paths.proc_root)?;
    let dir = HolderDir::new(&cfg.paths.run_dir);
    dir.create()?;
    let (rx, tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
    // SAFETY: this process is single-threaded (checked above), so the child
    // may run any code; it never returns into the caller (it leaves with
    // `_exit` in `detach_and_supervise`).
    match unsafe { nix::unistd::fork() }.map_err(sys("fork the holder's supervisor"))? {
        ForkResult::Child => {
            drop(rx);
            detach_and_supervise(cfg, tx)
        }
        ForkResult::Parent { child } => {
            drop(tx);
            reap(child);
            let report = read_report(rx, cfg.timeout)?;
            match report.strip_prefix("ok") {
                Some(_) => dir.read()?.ok_or(HolderError::NotRunning),
                None => Err(HolderError::Start { reason: report.trim_start_matches("error: ").to_owned() }),
            }
        }
    }
}

pub(super) fn reap(pid: Pid) {
    while let Err(Errno::EINTR) = nix::sys::wait::waitpid(pid, None) {}
}

/// The supervisor's report line, or why there is none.
fn read_report(rx: OwnedFd, timeout: Duration) -> Result<String, HolderError> {
    let deadline = Instant::now() + timeout;
    let mut file = File::from(rx);
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HolderError::StartTimeout { waited_ms: timeout.as_millis() });
        }
        let mut fds = [nix::poll::PollFd::new(std::os::fd::AsFd::as_fd(&file), nix::poll::PollFlags::POLLIN)];
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        match nix::poll::poll(&mut fds, ms) {
            Err(Errno::EINTR) | Ok(0) => continue,
            Err(e) => return Err(sys("wait for the holder")(e)),
            Ok(_) => {}
        }
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(HolderError::State { path: "holder report pipe".into(), source: e }),
        }
        if out.contains(&b'\n') {
            break;
        }
    }
    if out.is_empty() {
        return Err(HolderError::Start { reason: "its supervisor exited without a word".into() });
    }
    Ok(String::from_utf8_lossy(&out).lines().next().unwrap_or_default().to_owned())
}

/// In the first child: leave the caller's session and stdio, fork the
/// supervisor, exit.
fn detach_and_supervise(cfg: &StartConfig, tx: OwnedFd) -> ! {
    // Its points are not the caller's steps (and it must not die at them).
    crate::fault::forked();
    let _ = nix::unistd::setsid();
    if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        for fd in 0..3 {
            // SAFETY: dup2(2) onto the standard descriptors of this process.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    let adopt = cfg.adopt.as_ref().map(|fd| fd.as_raw_fd());
    let mut keep: Vec<RawFd> = [Some(tx.as_raw_fd()), adopt].into_iter().flatten().collect();
    keep.sort_unstable();
    crate::host::fds::close_from_except(3, &keep);
    // SAFETY: still single-threaded; the child never returns.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => super::supervisor::supervise(cfg, tx),
        Ok(ForkResult::Parent { .. }) => exit(0),
        Err(e) => {
            report(&tx, &format!("error: fork the supervisor: {e}"));
            exit(1)
        }
    }
}

pub(super) fn exit(code: i32) -> ! {
    // SAFETY: leaves the process at once, running nothing of the caller's.
    unsafe { libc::_exit(code) }
}

pub(super) fn report(tx: &OwnedFd, line: &str) {
    let _ = nix::unistd::write(tx, format!("{line}\n").as_bytes());
}

/// pasta's argv for the holder: no ports of its own (the builtin driver
/// publishes), no host loopback, the holder's namespaces by path.
pub fn pasta_argv(proc_root: &Path, holder: u32) -> Vec<std::ffi::OsString> {
    let ns = proc_root.join(holder.to_string()).join("ns");
    let plan = crate::helpers::pasta::args::PastaPlan {
        target: crate::model::target::NsTarget { netns: ns.join("net"), userns: Some(ns.join("user")) },
        ports: Vec::new(),
        host_loopback_ports: Vec::new(),
        runas: None,
        extra: Vec::new(),
        dns_forward: None,
    };
    crate::helpers::pasta::args::build_argv(&plan).expect("an argv without ports builds")
}

/// Whether the process's network namespace has an IPv4 default route
/// (`<proc>/<pid>/net/route`: destination and mask 0).
pub fn has_default_route(proc_root: &Path, pid: u32) -> bool {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("net/route")).unwrap_or_default();
    default_route_in(&text)
}

fn default_route_in(route: &str) -> bool {
    route.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 7 && f[1] == "00000000" && f[7] == "00000000"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_default_route_is_found_in_proc_net_route() {
        let hdr = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";
        let with = format!("{hdr}tap0\t00000000\t0100E70A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n");
        let without = format!("{hdr}tap0\t0000E70A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n");
        assert!(default_route_in(&with));
        assert!(!default_route_in(&without));
        assert!(!default_route_in(""));
    }

    #[test]
    fn pasta_is_given_the_holder_by_path_and_no_ports() {
        let argv: Vec<String> =
            pasta_argv(Path::new("/proc"), 42).iter().map(|a| a.to_string_lossy().into_owned()).collect();
        let joined = argv.join(" ");
        assert!(joined.contains("-t none -u none -T none -U none"), "{joined}");
        assert!(joined.contains("--netns /proc/42/ns/net --userns /proc/42/ns/user"), "{joined}");
    }
}

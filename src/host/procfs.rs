//! Process identity that survives pid reuse and pid namespaces: a pid, its
//! start time (field 22 of `/proc/<pid>/stat`, in clock ticks since boot)
//! and the pid namespace the pid is numbered in.
//!
//! A run's processes live in a PID namespace of their own, so a
//! pelagos-net started inside a run records pids that mean nothing outside
//! it, and the host's pids mean nothing inside. An id from another pid
//! namespace is never used as a pid here ([`ProcessId::is_here`]) and
//! counts as alive unless its death can be proven: from the initial pid
//! namespace, which sees every process, a namespace without a process is
//! gone, and so is every process of it.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The inode of the initial pid namespace (the kernel's `PROC_PID_INIT_INO`).
const INITIAL_PID_NS: u64 = 0xEFFF_FFFC;

/// A process named by pid and start time, so a recycled pid is not mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessId {
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks since boot.
    pub start_time: u64,
    /// The pid namespace (its inode) the pid is numbered in; `None` when
    /// unknown (records written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_ns: Option<u64>,
}

/// Threads of this process (`Threads:` in `<proc>/self/status`; 0 when it
/// cannot be read).
pub fn threads(proc_root: &Path) -> usize {
    let status = std::fs::read_to_string(proc_root.join("self/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
}

/// Threads of this process once short-lived ones are gone (a joined
/// thread is still counted for a moment; a helper's reaper or output
/// drain and the netfilter sockets' janitor end within moments of their
/// work, later on a slow or emulated machine): waits up to `within` for
/// one thread, and returns the count it saw last.
pub fn settled_threads(proc_root: &Path, within: std::time::Duration) -> usize {
    let deadline = std::time::Instant::now() + within;
    loop {
        let n = threads(proc_root);
        if n == 1 || std::time::Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The pid namespace in which the pids under `proc_root` are numbered.
pub fn pid_namespace(proc_root: &Path) -> Option<u64> {
    std::fs::metadata(proc_root.join("self/ns/pid")).ok().map(|m| m.ino())
}

impl ProcessId {
    /// Identify a live process by reading `<proc_root>/<pid>/stat`.
    pub fn of(proc_root: &Path, pid: u32) -> io::Result<Self> {
        let stat = read_small(&proc_root.join(pid.to_string()).join("stat"))?;
        let start_time =
            parse_start_time(&stat).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed stat line"))?;
        Ok(Self { pid, start_time, pid_ns: pid_namespace(proc_root) })
    }

    /// An id known only by its pid (the start time could not be read).
    pub fn unread(pid: u32) -> Self {
        Self { pid, start_time: 0, pid_ns: None }
    }

    /// Whether the pid is numbered in the pid namespace of `proc_root`, so
    /// it may be signalled or looked up there (true when unknown).
    pub fn is_here(&self, proc_root: &Path) -> bool {
        match (self.pid_ns, pid_namespace(proc_root)) {
            (Some(ours), Some(here)) => ours == here,
            _ => true,
        }
    }

    /// Whether this exact process still runs (same pid, same start time).
    /// A zombie is dead: it holds nothing but its exit status, and in a
    /// container whose init does not reap, it may never go away. An id of
    /// another pid namespace is alive while that namespace has a process,
    /// and always when this is not the initial pid namespace (see the
    /// module docs).
    pub fn is_alive(&self, proc_root: &Path) -> bool {
        if !self.is_here(proc_root) {
            return self.pid_ns.is_some_and(|ns| namespace_lives(proc_root, ns));
        }
        let Ok(stat) = std::fs::read_to_string(proc_root.join(self.pid.to_string()).join("stat")) else {
            return false;
        };
        parse_start_time(&stat) == Some(self.start_time) && parse_state(&stat) != Some('Z')
    }
}

/// Whether pid namespace `ns` may still have processes: provably not only
/// when `proc_root` is the initial namespace's and no live process is in
/// `ns`. A zombie does not count (as for [`ProcessId::is_alive`]): the
/// namespace's last process, orphaned to a pid 1 or subreaper that does not
/// reap it, keeps its `ns/pid` link readable after it died.
fn namespace_lives(proc_root: &Path, ns: u64) -> bool {
    if pid_namespace(proc_root) != Some(INITIAL_PID_NS) {
        return true;
    }
    let Ok(dir) = std::fs::read_dir(proc_root) else { return true };
    dir.flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
        .filter(|e| std::fs::metadata(e.path().join("ns/pid")).is_ok_and(|m| m.ino() == ns))
        .any(|e| read_small(&e.path().join("stat")).is_ok_and(|stat| parse_state(&stat) != Some('Z')))
}

/// Field 22 (`starttime`) of a `/proc/<pid>/stat` line. The command name
/// (field 2) may hold spaces and parentheses, so counting starts after the
/// last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // After the comm come fields 3.. ; starttime is field 22, i.e. the 20th here.
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// Field 3 (`state`: R, S, D, Z, ...) of a `/proc/<pid>/stat` line.
pub fn parse_state(stat: &str) -> Option<char> {
    stat[stat.rfind(')')? + 1..].split_whitespace().next()?.chars().next()
}

/// `pidfd_open(2)`: a descriptor of process `pid` (`flags` 0, or
/// `PIDFD_THREAD` for one thread) that becomes readable once it has exited.
pub fn pidfd_open(pid: u32, flags: u32) -> Result<std::os::fd::OwnedFd, nix::errno::Errno> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags; the result is a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, flags) };
    // SAFETY: a non-negative result is a fresh descriptor owned by nobody else.
    nix::errno::Errno::result(fd).map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// A small procfs file, read whole into a buffer sized for it (two reads
/// for a `stat` line instead of six, see [`crate::state::safefs::read_small`]).
fn read_small(path: &Path) -> io::Result<String> {
    let bytes = crate::state::safefs::read_small(path, 1024)?;
    String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_parses_after_comm_with_spaces_and_parens() {
        let line = "4242 (we ird) (name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 50 18446744073709551615";
        assert_eq!(parse_start_time(line), Some(987_654));
    }

    #[test]
    fn start_time_of_truncated_line_is_none() {
        assert_eq!(parse_start_time("4242 (x) S 1 2 3"), None);
        assert_eq!(parse_start_time("no parens at all"), None);
    }

    #[test]
    fn state_parses_after_comm_and_a_zombie_child_is_not_alive() {
        assert_eq!(parse_state("4242 (we ird) (name) Z 1 4242"), Some('Z'));
        let child = std::process::Command::new("true").spawn().unwrap();
        let id = ProcessId::of(Path::new("/proc"), child.id()).unwrap();
        // Not reaped yet: a zombie once it exits.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while id.is_alive(Path::new("/proc")) {
            assert!(std::time::Instant::now() < deadline, "the exited child still counts as alive");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
        assert_eq!(parse_state(&stat), Some('Z'));
        let mut child = child;
        child.wait().unwrap();
    }

    #[test]
    fn own_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = ProcessId::of(Path::new("/proc"), std::process::id()).expect("read own stat");
        assert!(me.is_alive(Path::new("/proc")) && me.is_here(Path::new("/proc")));
        let other = ProcessId { start_time: me.start_time + 1, ..me };
        assert!(!other.is_alive(Path::new("/proc")));
    }

    #[test]
    fn an_id_of_another_pid_namespace_is_never_here_and_dead_once_its_namespace_is_gone() {
        let proc = Path::new("/proc");
        let me = ProcessId::of(proc, std::process::id()).unwrap();
        assert_eq!(me.pid_ns, pid_namespace(proc));
        // No namespace has inode 1: provably gone from the initial one.
        let foreign = ProcessId { pid_ns: Some(1), ..me };
        assert!(!foreign.is_here(proc));
        assert_eq!(foreign.is_alive(proc), pid_namespace(proc) != Some(INITIAL_PID_NS));
        // Records written before the namespace was kept are judged as before.
        let unknown = ProcessId { pid_ns: None, ..me };
        assert!(unknown.is_here(proc) && unknown.is_alive(proc));
    }

    #[test]
    fn a_live_process_of_another_pid_namespace_counts_as_alive() {
        if !nix::unistd::geteuid().is_root() || pid_namespace(Path::new("/proc")) != Some(INITIAL_PID_NS) {
            eprintln!("SKIP: needs root in the initial pid namespace to make a pid namespace");
            return;
        }
        /// Kills and reaps `unshare` however the test ends (it may be stopped).
        struct Reaped(std::process::Child);
        impl Drop for Reaped {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let mut child = Reaped(
            std::process::Command::new("unshare")
                .args(["--pid", "--fork", "--kill-child", "sleep", "30"])
                .spawn()
                .unwrap(),
        );
        let proc = Path::new("/proc");
        // `unshare` forks `sleep` as pid 1 of the new namespace.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let ns = loop {
            let own = std::fs::metadata(format!("/proc/{}/ns/pid", child.0.id())).unwrap().ino();
            let kids = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.0.id())).unwrap_or_default();
            let inner =
                kids.split_whitespace().next().and_then(|k| std::fs::metadata(format!("/proc/{k}/ns/pid")).ok());
            if let Some(m) = inner.filter(|m| m.ino() != own) {
                break m.ino();
            }
            assert!(std::time::Instant::now() < deadline, "no process in a new pid namespace");
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let inside = ProcessId { pid: 1, start_time: 0, pid_ns: Some(ns) };
        assert!(inside.is_alive(proc) && !inside.is_here(proc));
        // Its only process dead but not reaped (its parent stopped, as
        // under a pid 1 that never reaps): a zombie keeps nothing alive.
        let unshare = nix::unistd::Pid::from_raw(child.0.id() as i32);
        nix::sys::signal::kill(unshare, nix::sys::signal::Signal::SIGSTOP).unwrap();
        let kids = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", child.0.id())).unwrap();
        let inner: i32 = kids.split_whitespace().next().unwrap().parse().unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(inner), nix::sys::signal::Signal::SIGKILL).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_to_string(format!("/proc/{inner}/stat")).ok().and_then(|s| parse_state(&s)) != Some('Z') {
            assert!(std::time::Instant::now() < deadline, "the namespace's process never died");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!inside.is_alive(proc), "a zombie kept its pid namespace alive");
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while inside.is_alive(proc) {
            assert!(std::time::Instant::now() < deadline, "the namespace outlived its processes");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

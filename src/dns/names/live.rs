//! Whether the record behind a name is alive, checked per answer without
//! reading procfs.
//!
//! When the records are read (the directory changed), each gets a
//! [`Liveness`]: a record that comes down to one process of our pid
//! namespace (a run's owner, an attachment's process) holds a pidfd of it,
//! opened first and then checked against the record's start time, so it
//! names that very process; a pidfd becomes readable when its process has
//! exited (a zombie included), so an answer asks `poll` with no timeout,
//! one system call, instead of reading `<proc>/<pid>/stat`. A record found
//! dead stays dead (its process cannot come back); one whose liveness needs
//! more (a namespace's bind mount, a process of another pid namespace, a
//! kernel without `pidfd_open`) is read as [`Record::alive`] says, each time.
//!
//! The records are read again whenever the directory changed, and for a
//! moment after (a modification too recent to trust): a check about the
//! same process as before is kept then, so reading them again opens
//! nothing.

use crate::host::procfs::ProcessId;
use crate::state::record::{Liveness as Decided, Record};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// How a record's liveness is checked per answer.
#[derive(Debug)]
pub(super) enum Liveness {
    /// Alive whatever happens (a runtime's attachment, until its record goes).
    Always,
    /// This process was gone when the records were read: it stays so.
    Dead(ProcessId),
    /// Alive while this process (a pidfd of it) has not exited.
    Process(OwnedFd, ProcessId),
    /// As [`Record::alive`] says, read each time.
    Read,
}

impl Liveness {
    /// The check for `record`: `before` (the check of the record with the
    /// same id when the records were last read) when it is about the same
    /// process, else decided now.
    pub(super) fn of(record: &Record, proc_root: &Path, before: Option<Self>) -> Self {
        let process = match record.liveness() {
            Decided::Always => return Self::Always,
            Decided::Process(p) if p.is_here(proc_root) => *p,
            Decided::Process(_) | Decided::More => return Self::Read,
        };
        if let Some(kept) = before.filter(|b| b.is_about(&process)) {
            return kept;
        }
        let fd = match crate::host::procfs::pidfd_open(process.pid, 0) {
            Ok(fd) => fd,
            Err(nix::errno::Errno::ESRCH) => return Self::Dead(process),
            Err(_) => return Self::Read,
        };
        // Opened first, checked after: alive now with the recorded start
        // time, the pid is that process, and the pidfd pins it.
        if process.is_alive(proc_root) { Self::Process(fd, process) } else { Self::Dead(process) }
    }

    /// Whether it is the check of `process`.
    fn is_about(&self, process: &ProcessId) -> bool {
        matches!(self, Self::Process(_, p) | Self::Dead(p) if p == process)
    }

    /// Whether `record` (the one this was decided for) is alive now.
    pub(super) fn check(&self, record: &Record, proc_root: &Path) -> bool {
        match self {
            Self::Always => true,
            Self::Dead(_) => false,
            Self::Process(fd, _) => {
                let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                // SAFETY: poll(2) on one pollfd of ours, no timeout.
                let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
                // Readable: exited. An error says nothing: ask procfs.
                match ready {
                    0 => true,
                    n if n > 0 => false,
                    _ => record.alive(proc_root),
                }
            }
            Self::Read => record.alive(proc_root),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::mode::NetworkMode;
    use crate::state::record::RecordKind;

    fn record_of(owner: ProcessId) -> Record {
        Record::new("aaaaaaaaaaaa".into(), RecordKind::Run, owner, NetworkMode::Bridge(None))
    }

    #[test]
    fn a_live_owner_is_held_by_a_pidfd_that_sees_its_exit() {
        let proc = Path::new("/proc");
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let record = record_of(ProcessId::of(proc, child.id()).unwrap());
        let live = Liveness::of(&record, proc, None);
        assert!(matches!(live, Liveness::Process(..)), "{live:?}");
        assert!(live.check(&record, proc));
        // Read again: the same pidfd is kept.
        let fd = match &live {
            Liveness::Process(fd, _) => fd.as_raw_fd(),
            _ => unreachable!(),
        };
        let live = Liveness::of(&record, proc, Some(live));
        assert!(matches!(&live, Liveness::Process(kept, _) if kept.as_raw_fd() == fd), "{live:?}");
        child.kill().unwrap();
        // Not reaped yet: a zombie is dead too.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while live.check(&record, proc) {
            assert!(std::time::Instant::now() < deadline, "the pidfd never saw the exit");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!record.alive(proc));
        child.wait().unwrap();
    }

    #[test]
    fn anchors_without_a_process_are_always_alive_or_read_each_time() {
        use crate::state::record::{Anchor, MountAnchor, NsId, Phase};
        let proc = Path::new("/proc");
        let me = ProcessId::of(proc, std::process::id()).unwrap();
        let mut r = record_of(me);
        r.phase = Phase::Ready;
        r.anchor = Anchor::Runtime { container_id: "c".into(), ifname: "eth0".into() };
        assert!(matches!(Liveness::of(&r, proc, None), Liveness::Always));
        let ns = NsId::of(Path::new("/proc/self/ns/net")).unwrap();
        let mount = MountAnchor { path: "/proc/self/ns/net".into(), ns };
        r.anchor = Anchor::Namespace { process: Some(me), mount: Some(mount) };
        let live = Liveness::of(&r, proc, None);
        assert!(matches!(live, Liveness::Read), "{live:?}");
        assert_eq!(live.check(&r, proc), r.alive(proc));
        r.anchor = Anchor::Namespace { process: Some(me), mount: None };
        assert!(matches!(Liveness::of(&r, proc, None), Liveness::Process(..)));
    }

    #[test]
    fn a_recycled_or_gone_pid_is_dead_and_stays_so() {
        let proc = Path::new("/proc");
        let me = ProcessId::of(proc, std::process::id()).unwrap();
        let other = record_of(ProcessId { start_time: me.start_time + 1, ..me });
        let live = Liveness::of(&other, proc, None);
        assert!(matches!(live, Liveness::Dead(_)), "{live:?}");
        assert!(!live.check(&other, proc));
        // A check about another process is not kept.
        let mine = record_of(me);
        assert!(matches!(Liveness::of(&mine, proc, Some(live)), Liveness::Process(..)));
    }
}

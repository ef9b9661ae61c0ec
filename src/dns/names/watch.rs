//! Whether the records directory changed since the records were last
//! read, from an inotify watch on it: one non-blocking `read` per question,
//! and no window of doubt (a modification time has a granularity, within
//! which a change can hide, so [`super::source`] reads the records again
//! on every question for a moment after a change when it has no watch).
//!
//! The watch is added before the records are read, so a change made while
//! they are read is seen at the next question. When inotify is not
//! available (no directory yet, the user's instance limit reached), the
//! caller falls back to the directory's modification time.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// What a record's write, rename or removal in the directory raises, and
/// the directory's own removal or move.
const MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MODIFY
    | libc::IN_CLOSE_WRITE
    | libc::IN_ATTRIB
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF;

/// An inotify instance watching one directory.
#[derive(Debug)]
pub(super) struct Watch {
    fd: OwnedFd,
}

/// What [`Watch::changed`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    /// Nothing happened since the last look.
    Nothing,
    /// Something changed: read the records again.
    Changed,
    /// The watch is gone (the directory was removed or moved, the queue
    /// overflowed, a read failed): read the records again, and watch anew.
    Lost,
}

impl Watch {
    /// Watch `dir`, or `None` when it cannot be watched.
    pub(super) fn new(dir: &Path) -> Option<Self> {
        let path = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(dir.as_os_str())).ok()?;
        // SAFETY: inotify_init1(2) with constant flags; the result is owned at once.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        // SAFETY: a descriptor inotify_init1 just returned, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: inotify_add_watch(2) on our instance with a NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), MASK | libc::IN_ONLYDIR) };
        (wd >= 0).then_some(Self { fd })
    }

    /// What happened since the last look (the events are consumed).
    pub(super) fn changed(&self) -> Seen {
        #[repr(C, align(8))]
        struct Buf([u8; 4096]);
        let mut buf = Buf([0; 4096]);
        let mut seen = Seen::Nothing;
        loop {
            // SAFETY: read(2) into our buffer, within its length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.0.as_mut_ptr().cast(), buf.0.len()) };
            if n < 0 {
                return match nix::errno::Errno::last() {
                    nix::errno::Errno::EAGAIN => seen,
                    nix::errno::Errno::EINTR => continue,
                    _ => Seen::Lost,
                };
            }
            if n == 0 {
                return Seen::Lost;
            }
            let mut at = 0;
            while at + std::mem::size_of::<libc::inotify_event>() <= n as usize {
                // SAFETY: the kernel wrote whole events; the header at `at`
                // lies within the bytes read, read unaligned.
                let ev: libc::inotify_event = unsafe { std::ptr::read_unaligned(buf.0.as_ptr().add(at).cast()) };
                if ev.mask & (libc::IN_IGNORED | libc::IN_Q_OVERFLOW | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF) != 0 {
                    seen = Seen::Lost;
                } else if seen == Seen::Nothing {
                    seen = Seen::Changed;
                }
                at += std::mem::size_of::<libc::inotify_event>() + ev.len as usize;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_a_rename_and_a_removal_are_seen_once_each_and_a_removed_directory_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("runs");
        std::fs::create_dir(&runs).unwrap();
        let w = Watch::new(&runs).unwrap();
        assert_eq!(w.changed(), Seen::Nothing);
        std::fs::write(runs.join(".tmp"), "{}").unwrap();
        std::fs::rename(runs.join(".tmp"), runs.join("a.json")).unwrap();
        assert_eq!(w.changed(), Seen::Changed);
        assert_eq!(w.changed(), Seen::Nothing);
        std::fs::remove_file(runs.join("a.json")).unwrap();
        assert_eq!(w.changed(), Seen::Changed);
        std::fs::remove_dir(&runs).unwrap();
        assert_eq!(w.changed(), Seen::Lost);
        assert!(Watch::new(&runs).is_none(), "no directory, no watch");
    }
}

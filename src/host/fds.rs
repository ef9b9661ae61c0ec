//! Closing the descriptors a forked child inherited.

use std::os::fd::RawFd;

/// Close every descriptor from `first` up except `keep` (sorted, ascending;
/// values below `first` are ignored). Async-signal-safe: no allocation, only
/// `close_range(2)`, or a loop of `close(2)` up to the descriptor limit on
/// kernels without it (before 5.9). For a forked child (or a `CLONE_VM`
/// one) about to run without the parent's descriptors.
pub fn close_from_except(first: u32, keep: &[RawFd]) {
    let mut from = first;
    for &fd in keep {
        let Ok(fd) = u32::try_from(fd) else { continue };
        if fd < from {
            continue;
        }
        if fd > from {
            close_range(from, fd - 1);
        }
        from = fd.saturating_add(1);
    }
    close_range(from, u32::MAX);
}

/// `close_range(first, last, 0)`, falling back to `close(2)` one by one.
fn close_range(first: u32, last: u32) {
    if first > last {
        return;
    }
    // SAFETY: closes descriptor numbers of this process only; the caller
    // (a fresh child) uses none of them any more.
    if unsafe { libc::syscall(libc::SYS_close_range, first, last, 0 as libc::c_uint) } == 0 {
        return;
    }
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit fills a value of this frame.
    let top = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur.min(1 << 20) as u32
    } else {
        65536
    };
    for fd in first..=last.min(top) {
        // SAFETY: as above; EBADF for descriptors that are not open.
        unsafe { libc::close(fd as RawFd) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn is_open(fd: RawFd) -> bool {
        // SAFETY: F_GETFD only asks whether the descriptor is open.
        unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
    }

    #[test]
    fn only_the_kept_descriptors_survive_in_a_child() {
        let files: Vec<std::fs::File> = (0..4).map(|_| std::fs::File::open("/dev/null").unwrap()).collect();
        let fds: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        let keep = [fds[1], fds[3]];
        // SAFETY: the child only makes async-signal-safe calls and _exits.
        match unsafe { libc::fork() } {
            0 => {
                close_from_except(3, &keep);
                let ok = keep.iter().all(|&k| is_open(k)) && !is_open(fds[0]) && !is_open(fds[2]);
                // SAFETY: ends the child at once.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            pid => {
                let mut status = 0;
                // SAFETY: waits for our own child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "status {status}");
            }
        }
    }
}

//! The system calls of the accelerator the libc and nix crates do not wrap:
//! seccomp user notification (receive, answer, validate, add a descriptor),
//! pidfds, another process's memory, socket options as plain integers.
//! Each wrapper returns owned descriptors at once and checks every result.

use crate::host::procfs::pidfd_open;
use nix::errno::Errno;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `SECCOMP_IOCTL_NOTIF_RECV`: the next notification. Blocks until one
/// comes unless the listener is polled first.
pub fn notif_recv(listener: BorrowedFd<'_>) -> Result<libc::seccomp_notif, Errno> {
    // SAFETY: the kernel wants a zeroed struct; all-zero is a valid seccomp_notif.
    let mut notif: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: the ioctl writes one seccomp_notif into our struct.
    let r = unsafe { libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut notif) };
    Errno::result(r).map(|_| notif)
}

/// How a notification is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Let the kernel run the syscall as the caller made it.
    Continue,
    /// The syscall returns this value.
    Return(i64),
    /// The syscall fails with this errno.
    Fail(Errno),
}

/// `SECCOMP_IOCTL_NOTIF_SEND`. `ENOENT`: the caller is gone or was
/// interrupted; nothing to do.
pub fn notif_send(listener: BorrowedFd<'_>, id: u64, answer: Answer) -> Result<(), Errno> {
    let (val, error, flags) = match answer {
        Answer::Continue => (0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
        Answer::Return(v) => (v, 0, 0),
        Answer::Fail(e) => (0, -(e as i32), 0),
    };
    let resp = libc::seccomp_notif_resp { id, val, error, flags };
    // SAFETY: the ioctl reads one seccomp_notif_resp from our struct.
    let r = unsafe { libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &resp) };
    Errno::result(r).map(drop)
}

/// `SECCOMP_IOCTL_NOTIF_SET_FLAGS` with `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`
/// (Linux 6.6): the caller and the supervisor hand the CPU to each other,
/// as in a synchronous call, instead of waking each other up elsewhere.
/// `EINVAL` on older kernels, where notifications work as before.
pub fn notif_sync_wake_up(listener: BorrowedFd<'_>) -> Result<(), Errno> {
    const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: libc::c_ulong = 1;
    // SAFETY: the ioctl takes its flags by value.
    let r = unsafe {
        libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS, SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP)
    };
    Errno::result(r).map(drop)
}

/// `SECCOMP_IOCTL_NOTIF_ID_VALID`: whether the caller of notification `id`
/// still waits for its answer (so what was read about it is about it).
pub fn notif_id_valid(listener: BorrowedFd<'_>, id: u64) -> bool {
    // SAFETY: the ioctl reads one u64 from our variable.
    unsafe { libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &id) == 0 }
}

/// `SECCOMP_IOCTL_NOTIF_ADDFD` with `SECCOMP_ADDFD_FLAG_SETFD`: `src`
/// becomes descriptor `target` of the caller, replacing what is there
/// (as `dup2`), close-on-exec as `cloexec` says.
pub fn notif_replace_fd(
    listener: BorrowedFd<'_>,
    id: u64,
    src: BorrowedFd<'_>,
    target: RawFd,
    cloexec: bool,
) -> Result<(), Errno> {
    let addfd = libc::seccomp_notif_addfd {
        id,
        flags: libc::SECCOMP_ADDFD_FLAG_SETFD as u32,
        srcfd: src.as_raw_fd() as u32,
        newfd: target as u32,
        newfd_flags: if cloexec { libc::O_CLOEXEC as u32 } else { 0 },
    };
    // SAFETY: the ioctl reads one seccomp_notif_addfd from our struct.
    let r = unsafe { libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ADDFD, &addfd) };
    Errno::result(r).map(drop)
}

/// A pidfd for thread `tid` (`PIDFD_THREAD`, so descriptors are read from
/// that thread's table), or for its thread group on kernels before 6.9.
pub fn pidfd_open_thread(tid: u32, tgid: impl FnOnce() -> Option<u32>) -> Result<OwnedFd, Errno> {
    match pidfd_open(tid, libc::PIDFD_THREAD) {
        Err(Errno::EINVAL) => pidfd_open(tgid().ok_or(Errno::ESRCH)?, 0),
        other => other,
    }
}

/// `pidfd_getfd`: our own copy of descriptor `fd` of the process.
pub fn pidfd_getfd(pidfd: BorrowedFd<'_>, fd: RawFd) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_getfd takes two descriptors and zero flags; the result is a new fd we own.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0u32) };
    // SAFETY: a non-negative result is a fresh descriptor owned by nobody else.
    Errno::result(r).map(|fd| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Reads `buf.len()` bytes at `addr` in the memory of `pid` (`process_vm_readv`).
pub fn read_memory(pid: u32, addr: u64, buf: &mut [u8]) -> Result<(), Errno> {
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: buf.len() };
    // SAFETY: the kernel writes at most buf.len() bytes into buf; the remote
    // range is only read, in the other process, and checked by the kernel.
    let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    match Errno::result(n)? {
        n if n as usize == buf.len() => Ok(()),
        _ => Err(Errno::EFAULT),
    }
}

/// An integer socket option.
pub fn getsockopt_int(fd: BorrowedFd<'_>, level: i32, name: i32) -> Result<i32, Errno> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `v` and updates `len`.
    let r = unsafe { libc::getsockopt(fd.as_raw_fd(), level, name, (&mut v as *mut libc::c_int).cast(), &mut len) };
    Errno::result(r).map(|_| v)
}

/// A socket option into `buf`; returns the length the kernel wrote.
pub fn getsockopt_bytes(fd: BorrowedFd<'_>, level: i32, name: i32, buf: &mut [u8]) -> Result<usize, Errno> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `buf` and updates `len`.
    let r = unsafe { libc::getsockopt(fd.as_raw_fd(), level, name, buf.as_mut_ptr().cast(), &mut len) };
    Errno::result(r).map(|_| len as usize)
}

/// Sets a socket option from raw bytes.
pub fn setsockopt_bytes(fd: BorrowedFd<'_>, level: i32, name: i32, value: &[u8]) -> Result<(), Errno> {
    // SAFETY: the kernel reads `value.len()` bytes from `value`.
    let r =
        unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, value.as_ptr().cast(), value.len() as libc::socklen_t) };
    Errno::result(r).map(drop)
}

/// The cookie of the network namespace a socket belongs to (`SO_NETNS_COOKIE`).
pub fn netns_cookie(fd: BorrowedFd<'_>) -> Result<u64, Errno> {
    let mut buf = [0u8; 8];
    match getsockopt_bytes(fd, libc::SOL_SOCKET, libc::SO_NETNS_COOKIE, &mut buf)? {
        8 => Ok(u64::from_ne_bytes(buf)),
        _ => Err(Errno::EINVAL),
    }
}

/// Attaches the classic BPF `prog` to a socket and locks it.
pub fn attach_locked_filter(fd: BorrowedFd<'_>, prog: &[libc::sock_filter]) -> Result<(), Errno> {
    let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr().cast_mut() };
    // SAFETY: the kernel copies the program during the call; `prog` outlives it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    Errno::result(r)?;
    setsockopt_bytes(fd, libc::SOL_SOCKET, libc::SO_LOCK_FILTER, &1i32.to_ne_bytes())
}

/// The file status flags of a descriptor (`F_GETFL`).
pub fn status_flags(fd: BorrowedFd<'_>) -> Result<i32, Errno> {
    // SAFETY: F_GETFL reads the flags of a descriptor we hold.
    Errno::result(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })
}

/// Sets the file status flags (`F_SETFL`).
pub fn set_status_flags(fd: BorrowedFd<'_>, flags: i32) -> Result<(), Errno> {
    // SAFETY: F_SETFL on a descriptor we hold.
    Errno::result(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags) }).map(drop)
}

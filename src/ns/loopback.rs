//! Bringing up `lo` in the current network namespace.
//!
//! Owns exactly one thing: setting `IFF_UP` on `lo` with
//! `ioctl(SIOCGIFFLAGS/SIOCSIFFLAGS)`. It allocates nothing and calls only
//! async-signal-safe syscalls (`socket`, `ioctl`, `close`), so it may run in a
//! `pre_exec` closure or in a child right after `fork` of a multithreaded
//! parent. The kernel configures 127.0.0.1/8 and ::1 on its own once `lo` is up.

use nix::errno::Errno;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Why `lo` could not be brought up. `Copy` and allocation-free so it can be
/// built after `fork`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoopbackError {
    /// `socket(AF_INET, SOCK_DGRAM)` failed.
    #[error("open control socket for lo")]
    OpenSocket(#[source] Errno),
    /// `SIOCGIFFLAGS` on `lo` failed.
    #[error("read flags of lo")]
    GetFlags(#[source] Errno),
    /// `SIOCSIFFLAGS` on `lo` failed (usually: no CAP_NET_ADMIN in the namespace).
    #[error("set lo up")]
    SetFlags(#[source] Errno),
}

impl LoopbackError {
    /// The underlying errno, for reporting across a pipe.
    pub fn errno(&self) -> Errno {
        match *self {
            Self::OpenSocket(e) | Self::GetFlags(e) | Self::SetFlags(e) => e,
        }
    }
}

/// Set `IFF_UP` on `lo` in the calling thread's network namespace.
///
/// Async-signal-safe: no allocation, no locks; safe to call after `fork`.
pub fn bring_up_loopback() -> Result<(), LoopbackError> {
    // SAFETY: plain socket(2) call with constant arguments; the result is checked.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(LoopbackError::OpenSocket(Errno::last()));
    }
    // SAFETY: `raw` is a freshly opened descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };

    // SAFETY: ifreq is a plain C struct for which all-zero bytes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads into the ifreq we own; the fd is valid.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as libc::Ioctl, &mut ifr) } < 0 {
        return Err(LoopbackError::GetFlags(Errno::last()));
    }
    // SAFETY: after SIOCGIFFLAGS the union holds ifru_flags.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short != 0 {
        return Ok(());
    }
    ifr.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own; the fd is valid.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as libc::Ioctl, &ifr) } < 0 {
        return Err(LoopbackError::SetFlags(Errno::last()));
    }
    Ok(())
}

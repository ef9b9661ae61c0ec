//! The forwarder's listening sockets, opened by the namespace child inside
//! the new network namespace and handed to the parent with its ready report.

use std::net::Ipv4Addr;

/// The forwarder's sockets the child opened, bound (the TCP one listening),
/// non-blocking and close-on-exec: the child's to hand over and close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildListeners {
    /// The UDP socket.
    pub udp: libc::c_int,
    /// The TCP listener.
    pub tcp: libc::c_int,
}

/// `addr:port` as the kernel takes it.
pub(super) fn sockaddr(addr: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(addr).to_be() },
        sin_zero: [0; 8],
    }
}

/// A non-blocking, close-on-exec socket of type `ty` bound to `addr` (a
/// stream socket listening). Async-signal-safe. `Err(errno)` on failure.
pub(super) fn bound_socket(addr: &libc::sockaddr_in, ty: libc::c_int) -> Result<libc::c_int, i32> {
    let errno = || nix::errno::Errno::last_raw();
    // SAFETY: socket/setsockopt/bind/listen/close on a socket owned here,
    // with a sockaddr and an int that live for the calls.
    unsafe {
        let fd = libc::socket(libc::AF_INET, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(errno());
        }
        let one: libc::c_int = 1;
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let ok = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
            && libc::bind(fd, (addr as *const libc::sockaddr_in).cast(), len) == 0
            && (ty != libc::SOCK_STREAM || libc::listen(fd, 64) == 0);
        if !ok {
            let e = errno();
            libc::close(fd);
            return Err(e);
        }
        Ok(fd)
    }
}

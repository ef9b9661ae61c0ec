//! Thin, checked system calls the relay needs beyond what `nix` wraps with
//! owned descriptors. Every descriptor is owned the moment it exists.

use super::SockFamily;
use super::attempt::Transparent;
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl};
use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, Shutdown, SockaddrLike, SockaddrStorage, setsockopt, sockopt,
};
use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::thread::JoinHandle;
use std::time::Duration;

/// Spawns a named thread with every signal blocked from its first
/// instruction (the mask is inherited from the spawning thread, which blocks
/// all signals only around the spawn).
pub(crate) fn spawn_with_signals_blocked<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<JoinHandle<T>> {
    let mut old = SigSet::empty();
    pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::all()), Some(&mut old))?;
    let spawned = std::thread::Builder::new().name(name.into()).spawn(f);
    pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None)?;
    spawned
}

/// A `SocketAddr` from a kernel socket address (IPv4 or IPv6 only).
pub(crate) fn socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        Some(SocketAddr::V4(SocketAddrV4::from(*v4)))
    } else {
        addr.as_sockaddr_in6().map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
    }
}

/// Accepts one connection, nonblocking and close-on-exec, with its peer.
///
/// The peer comes from `accept4` itself: a client that sent data and then
/// reset before the accept leaves a closed socket whose `getpeername` fails,
/// but whose data must still be relayed.
pub(crate) fn accept(listener: BorrowedFd<'_>) -> Result<(OwnedFd, SocketAddr), Errno> {
    // SAFETY: sockaddr_storage is plain data; all zeroes is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: the address and length point at `storage` and `len`, alive and
    // large enough for any address; `listener` is a valid descriptor.
    let raw = unsafe { libc::accept4(listener.as_raw_fd(), (&raw mut storage).cast(), &mut len, flags) };
    if raw < 0 {
        return Err(Errno::last());
    }
    // SAFETY: accept4 just returned this descriptor; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: the kernel wrote a socket address of `len` bytes into `storage`.
    let peer = unsafe { SockaddrStorage::from_raw((&raw const storage).cast(), Some(len)) };
    let peer = peer.as_ref().and_then(socket_addr).ok_or(Errno::EAFNOSUPPORT)?;
    Ok((fd, peer))
}

/// Outcome of starting a nonblocking connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Connect {
    /// Connected already.
    Done,
    /// In progress: wait for the socket to become writable.
    InProgress,
}

/// Starts connecting `fd` to `dest`.
pub(crate) fn connect(fd: BorrowedFd<'_>, dest: SocketAddr) -> Result<Connect, Errno> {
    match nix::sys::socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(dest)) {
        Ok(()) => Ok(Connect::Done),
        Err(Errno::EINPROGRESS) | Err(Errno::EINTR) => Ok(Connect::InProgress),
        Err(e) => Err(e),
    }
}

/// The pending error of a socket (`SO_ERROR`), `Ok` when there is none.
pub(crate) fn socket_error(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    match nix::sys::socket::getsockopt(&fd, sockopt::SocketError)? {
        0 => Ok(()),
        e => Err(Errno::from_raw(e)),
    }
}

/// Bytes received on a TCP socket and not yet read (`FIONREAD`, which is
/// `SIOCINQ` for sockets); 0 when the kernel cannot tell.
pub(crate) fn unread_bytes(fd: BorrowedFd<'_>) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points at
    // `n`, alive for the call; `fd` is a valid descriptor borrowed for it.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    if rc < 0 { 0 } else { usize::try_from(n).unwrap_or(0) }
}

/// Makes `fd` send its client's address: transparent, marked, bound to
/// `(source, 0)` with the port chosen at connect.
pub(crate) fn make_transparent(fd: BorrowedFd<'_>, t: &Transparent) -> Result<(), Errno> {
    match t.source {
        IpAddr::V4(_) => setsockopt(&fd, sockopt::IpTransparent, &true)?,
        IpAddr::V6(_) => set_int(fd, libc::SOL_IPV6, libc::IPV6_TRANSPARENT, 1)?,
    }
    setsockopt(&fd, sockopt::Mark, &t.mark)?;
    // Best effort: without it the port is picked at bind, which only narrows
    // the ports a busy client address can use.
    let _ = set_int(fd, libc::SOL_IP, libc::IP_BIND_ADDRESS_NO_PORT, 1);
    nix::sys::socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(SocketAddr::new(t.source, 0)))
}

fn set_int(fd: BorrowedFd<'_>, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> Result<(), Errno> {
    // SAFETY: `value` is a live c_int and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    Errno::result(rc).map(drop)
}

/// Arms `SO_LINGER` 0 so that closing `fd` sends a reset.
pub(crate) fn arm_reset(fd: BorrowedFd<'_>) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    let _ = setsockopt(&fd, sockopt::Linger, &linger);
}

/// `shutdown(fd, SHUT_WR)`; a socket already gone is not an error here.
pub(crate) fn shutdown_write(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    match nix::sys::socket::shutdown(fd.as_raw_fd(), Shutdown::Write) {
        Ok(()) | Err(Errno::ENOTCONN) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A pipe (read end, write end), nonblocking and close-on-exec, resized to
/// `size` bytes when asked (the kernel's default size stays when the resize
/// is refused, or when `size` is `None`); returns its actual capacity.
pub(crate) fn pipe(size: Option<usize>) -> Result<(OwnedFd, OwnedFd, usize), Errno> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    let resized = size.map(|size| {
        let wanted = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
        fcntl(&w, FcntlArg::F_SETPIPE_SZ(wanted))
    });
    let cap = match resized {
        Some(Ok(cap)) => cap,
        // Not asked, or over the unprivileged limits: the kernel's default size.
        None | Some(Err(_)) => fcntl(&w, FcntlArg::F_GETPIPE_SZ)?,
    };
    Ok((r, w, usize::try_from(cap).unwrap_or(0)))
}

/// The size of a memory page, the unit pipes are charged in.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf only reads a configuration value.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
}

/// `splice(2)` between a socket and a pipe, never blocking.
pub(crate) fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> Result<usize, Errno> {
    let flags = SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE;
    loop {
        match nix::fcntl::splice(from, None, to, None, len, flags) {
            Err(Errno::EINTR) => continue,
            other => return other,
        }
    }
}

/// Receives one datagram without blocking, with its sender.
pub(crate) fn recv_from(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<(usize, Option<SocketAddr>), Errno> {
    let (n, from) = nix::sys::socket::recvfrom::<SockaddrStorage>(fd.as_raw_fd(), buf)?;
    Ok((n, from.as_ref().and_then(socket_addr)))
}

/// Sends one datagram on a connected socket without blocking.
pub(crate) fn send(fd: BorrowedFd<'_>, buf: &[u8]) -> Result<usize, Errno> {
    nix::sys::socket::send(fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL)
}

/// The address a datagram was sent to, as `IP_PKTINFO` / `IPV6_PKTINFO`
/// report it: the address a reply must come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LocalAddr {
    /// IPv4: the kernel's `ipi_spec_dst` (for a broadcast, the address of
    /// the receiving interface).
    V4(Ipv4Addr),
    /// IPv6, with the receiving interface (needed for a link-local address).
    V6 {
        /// Destination address.
        addr: Ipv6Addr,
        /// Receiving interface index.
        ifindex: u32,
    },
}

/// Asks the kernel to report the destination of every datagram `fd` receives.
pub(crate) fn enable_pktinfo(fd: BorrowedFd<'_>, family: SockFamily) -> Result<(), Errno> {
    match family {
        SockFamily::V4 => setsockopt(&fd, sockopt::Ipv4PacketInfo, &true),
        SockFamily::V6 => setsockopt(&fd, sockopt::Ipv6RecvPacketInfo, &true),
    }
}

/// Room for one `IP_PKTINFO` or `IPV6_PKTINFO` control message, aligned as
/// `cmsghdr` needs.
#[repr(C, align(8))]
struct PktinfoSpace([u8; 64]);

/// A received datagram: its length, sender and destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Datagram {
    /// Bytes received.
    pub(crate) len: usize,
    /// The sender, when the kernel reported one.
    pub(crate) from: Option<SocketAddr>,
    /// Where it was sent to, on a socket with [`enable_pktinfo`]; `None` for
    /// a multicast destination (not an address to reply from).
    pub(crate) to: Option<LocalAddr>,
}

/// Receives one datagram without blocking, with its sender and (with
/// [`enable_pktinfo`]) its destination.
pub(crate) fn recv_datagram(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<Datagram, Errno> {
    let mut space = PktinfoSpace([0; 64]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = nix::sys::socket::recvmsg::<SockaddrStorage>(
        fd.as_raw_fd(),
        &mut iov,
        Some(&mut space.0),
        MsgFlags::MSG_DONTWAIT,
    )?;
    let mut to = None;
    // A truncated control message (impossible with this room) only loses
    // the destination.
    for cmsg in msg.cmsgs().into_iter().flatten() {
        match cmsg {
            ControlMessageOwned::Ipv4PacketInfo(info) => {
                to = Some(LocalAddr::V4(Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr))));
            }
            ControlMessageOwned::Ipv6PacketInfo(info) => {
                let addr = Ipv6Addr::from(info.ipi6_addr.s6_addr);
                to = (!addr.is_multicast()).then_some(LocalAddr::V6 { addr, ifindex: info.ipi6_ifindex });
            }
            _ => {}
        }
    }
    Ok(Datagram { len: msg.bytes, from: msg.address.as_ref().and_then(socket_addr), to })
}

/// Sends one datagram to `to` without blocking, from `from` when given
/// (an `IP_PKTINFO` / `IPV6_PKTINFO` control message), else from the address
/// the kernel picks by route.
pub(crate) fn send_datagram(
    fd: BorrowedFd<'_>,
    buf: &[u8],
    to: SocketAddr,
    from: Option<LocalAddr>,
) -> Result<usize, Errno> {
    let addr = SockaddrStorage::from(to);
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    let iov = [IoSlice::new(buf)];
    match from {
        None => nix::sys::socket::sendto(fd.as_raw_fd(), buf, &addr, flags),
        Some(LocalAddr::V4(ip)) => {
            let info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr { s_addr: u32::from(ip).to_be() },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            let cmsg = [ControlMessage::Ipv4PacketInfo(&info)];
            nix::sys::socket::sendmsg(fd.as_raw_fd(), &iov, &cmsg, flags, Some(&addr))
        }
        Some(LocalAddr::V6 { addr: ip, ifindex }) => {
            // The interface only matters (and only binds the route) for a
            // link-local source.
            let ifindex = if ip.is_unicast_link_local() { ifindex } else { 0 };
            let info = libc::in6_pktinfo { ipi6_addr: libc::in6_addr { s6_addr: ip.octets() }, ipi6_ifindex: ifindex };
            let cmsg = [ControlMessage::Ipv6PacketInfo(&info)];
            nix::sys::socket::sendmsg(fd.as_raw_fd(), &iov, &cmsg, flags, Some(&addr))
        }
    }
}

/// Makes a caller-provided descriptor nonblocking.
pub(crate) fn set_nonblocking(fd: impl AsFd) -> Result<(), Errno> {
    let flags = OFlag::from_bits_retain(fcntl(fd.as_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map(drop)
}

/// CPU time (user + system) of the calling thread.
pub(crate) fn thread_cpu() -> Duration {
    match nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_THREAD) {
        Ok(usage) => {
            let tv = |t: nix::sys::time::TimeVal| {
                Duration::from_secs(t.tv_sec().max(0) as u64) + Duration::from_micros(t.tv_usec().max(0) as u64)
            };
            tv(usage.user_time()) + tv(usage.system_time())
        }
        Err(_) => Duration::ZERO,
    }
}

#[cfg(test)]
#[path = "sys_tests.rs"]
mod tests;

//! Eight-byte messages with up to two descriptors riding along
//! (`SCM_RIGHTS`) over a `SOCK_SEQPACKET` pair: what a process between
//! `fork` and `exec` hands its parent (the namespace child's DNS listeners
//! with its report, the command's seccomp listener).
//!
//! [`send`] is async-signal-safe: stack buffers and one system call.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Size of every message.
pub(crate) const MSG_LEN: usize = 8;
/// Descriptors one message carries at most.
const MAX_FDS: usize = 2;

/// A control buffer for one header and [`MAX_FDS`] ints, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct Control([u8; 32]);

const _: () = assert!(size_of::<libc::cmsghdr>() + MAX_FDS * size_of::<RawFd>() <= 32);

/// Send `msg` with `fds` (at most two) on `sock`. Async-signal-safe; false
/// when it was not sent whole (errno set).
pub(crate) fn send(sock: RawFd, msg: &[u8; MSG_LEN], fds: &[RawFd]) -> bool {
    let fds = &fds[..fds.len().min(MAX_FDS)];
    let mut control = Control([0; 32]);
    let mut iov = libc::iovec { iov_base: msg.as_ptr().cast_mut().cast(), iov_len: MSG_LEN };
    // SAFETY: a zeroed msghdr is valid; its pointers are set below to
    // buffers that live for the call.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    if !fds.is_empty() {
        let data_len = std::mem::size_of_val(fds) as u32;
        // SAFETY: CMSG_SPACE is arithmetic.
        hdr.msg_controllen = unsafe { libc::CMSG_SPACE(data_len) } as _;
        hdr.msg_control = control.0.as_mut_ptr().cast();
        // SAFETY: the control buffer holds one header and two ints (asserted
        // above) and is aligned for cmsghdr.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&hdr);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(data_len) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast::<RawFd>(), fds.len());
        }
    }
    // SAFETY: sendmsg(2) reads the buffers set up above.
    unsafe { libc::sendmsg(sock, &hdr, libc::MSG_NOSIGNAL) == MSG_LEN as isize }
}

/// Receive one message into `msg` and the descriptors that came with it
/// (close-on-exec, owned). Returns the bytes read (0: the peer is gone).
pub(crate) fn recv(sock: BorrowedFd<'_>, msg: &mut [u8; MSG_LEN]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut control = Control([0; 32]);
    let mut iov = libc::iovec { iov_base: msg.as_mut_ptr().cast(), iov_len: MSG_LEN };
    // SAFETY: a zeroed msghdr is valid; its pointers are set to buffers
    // that live for the call.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.0.as_mut_ptr().cast();
    hdr.msg_controllen = control.0.len() as _;
    let n = loop {
        // SAFETY: recvmsg(2) writes into the buffers set up above; received
        // descriptors are close-on-exec.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut hdr, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        break n;
    };
    // Descriptors that came are ours even when the message is short.
    let fds = received_fds(&hdr);
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((n as usize, fds))
}

/// The descriptors of the `SCM_RIGHTS` messages in `hdr`, owned.
fn received_fds(hdr: &libc::msghdr) -> Vec<OwnedFd> {
    let mut out = Vec::new();
    if hdr.msg_controllen == 0 {
        return out;
    }
    // SAFETY: walking the control buffer recvmsg filled, bounded by
    // msg_controllen, with the libc macros; SCM_RIGHTS data is an array of
    // ints, each a new descriptor of ours.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let n = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / size_of::<RawFd>();
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..n {
                    out.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    out
}

/// A connected `SOCK_SEQPACKET` pair, close-on-exec.
pub(crate) fn pair() -> Result<(OwnedFd, OwnedFd), nix::errno::Errno> {
    let mut fds = [0 as RawFd; 2];
    let kind = libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC;
    // SAFETY: socketpair(2) writes two descriptors into our array.
    nix::errno::Errno::result(unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, fds.as_mut_ptr()) })?;
    // SAFETY: both are fresh descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_message_carries_two_descriptors_and_a_closed_peer_reads_as_zero() {
        let (a, b) = pair().unwrap();
        let (x, y) = pair().unwrap();
        assert!(send(a.as_raw_fd(), b"12345678", &[x.as_raw_fd(), y.as_raw_fd()]));
        let mut msg = [0u8; MSG_LEN];
        let (n, fds) = recv(b.as_fd(), &mut msg).unwrap();
        assert_eq!((n, &msg, fds.len()), (MSG_LEN, b"12345678", 2));
        // The received ends are the same sockets: what goes into one comes out of `y`.
        assert!(send(fds[0].as_raw_fd(), b"through!", &[]));
        let (n, none) = recv(y.as_fd(), &mut msg).unwrap();
        assert_eq!((n, &msg, none.len()), (MSG_LEN, b"through!", 0));
        drop(a);
        assert_eq!(recv(b.as_fd(), &mut msg).unwrap().0, 0);
    }
}

//! A socket factory inside a network namespace: a forked copy of the
//! owning process that joins the namespace and hands back sockets made
//! there.
//!
//! Why: a socket belongs to the namespace it was created in, whoever uses
//! it afterwards. The builtin port driver listens in the host namespace and
//! needs, per connection, a socket inside the run's namespace. A rootless
//! owner cannot `setns` into that namespace itself: `setns(CLONE_NEWNET)`
//! wants `CAP_SYS_ADMIN` in the caller's own user namespace too, and a
//! multithreaded process cannot join a user namespace. A freshly forked
//! child is single-threaded, so it can join the run's user namespace (its
//! owner's uid has every capability there) and then its network namespace.
//!
//! What the factory never does: use the sockets. It creates them and
//! passes them over a `SOCK_SEQPACKET` pair with `SCM_RIGHTS`; the owner
//! configures, binds and connects them. Capability checks on those later
//! calls (`IP_TRANSPARENT`, `SO_MARK`, rtnetlink changes) are made against
//! the owner, which as the user namespace's creator holds every capability
//! in it.
//!
//! After `fork` the child runs only async-signal-safe code (raw syscalls on
//! stack buffers), so a multithreaded owner may spawn it. It exits when the
//! owner closes its end of the pair, which the kernel does when the owner
//! dies, however it dies.

use crate::host::procfs::ProcessId;
use crate::model::target::NsTarget;
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// Most fds one reply carries.
const MAX_BATCH: usize = 16;
/// Sockets fetched per round trip when a pool runs dry.
const REFILL: u32 = 8;

const OP_SOCKET: u32 = 1;
const OP_FWMARK_ACCEPT: u32 = 2;

/// Errors of the socket factory.
#[derive(Debug, thiserror::Error)]
pub enum FactoryError {
    /// Opening the namespace files failed.
    #[error("open namespace {path}")]
    OpenNamespace {
        /// The namespace file.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Creating the control socket pair or forking failed.
    #[error("start the socket factory")]
    Spawn(#[source] io::Error),
    /// The factory could not enter the namespace (or died before saying so).
    #[error("the socket factory cannot enter the namespace ({stage})")]
    Enter {
        /// Which step failed.
        stage: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A request failed.
    #[error("socket factory request failed")]
    Request(#[source] io::Error),
}

/// One request, as sent over the pair.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Request {
    op: u32,
    domain: i32,
    ty: i32,
    proto: i32,
    count: u32,
}

/// The reply header; the fds ride along as `SCM_RIGHTS`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Reply {
    errno: i32,
    count: u32,
}

/// Socket kinds kept in pools, by (domain, type).
type PoolKey = (i32, i32);

/// A running factory; dropping it stops and reaps the process.
#[derive(Debug)]
pub struct SocketFactory {
    ctl: OwnedFd,
    pid: Pid,
    id: ProcessId,
    pools: Vec<(PoolKey, VecDeque<OwnedFd>)>,
}

fn last_err() -> io::Error {
    io::Error::last_os_error()
}

impl SocketFactory {
    /// Fork the factory and wait until it has entered `target`.
    pub fn spawn(target: &NsTarget, proc_root: &Path) -> Result<Self, FactoryError> {
        let open = |path: &Path| {
            std::fs::File::open(path)
                .map(OwnedFd::from)
                .map_err(|source| FactoryError::OpenNamespace { path: path.to_owned(), source })
        };
        let userns = target.userns.as_deref().map(open).transpose()?;
        let netns = open(&target.netns)?;
        let (ours, theirs) = crate::ns::fdpass::pair().map_err(|e| FactoryError::Spawn(e.into()))?;
        // SAFETY: the child runs only async-signal-safe code (`child_main`
        // makes raw syscalls on stack values and never returns).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(FactoryError::Spawn(last_err()));
        }
        if pid == 0 {
            let user = userns.as_ref().map_or(-1, |f| f.as_raw_fd());
            child_main(theirs.as_raw_fd(), user, netns.as_raw_fd());
        }
        drop(theirs);
        let pid = Pid::from_raw(pid);
        let id = ProcessId::of(proc_root, pid.as_raw() as u32).unwrap_or(ProcessId::unread(pid.as_raw() as u32));
        let mut factory = Self { ctl: ours, pid, id, pools: Vec::new() };
        // The first message says whether the namespaces were entered.
        let mut hello = Reply::default();
        match recv_reply(factory.ctl.as_fd(), &mut hello, &mut []) {
            Ok(_) if hello.errno == 0 => Ok(factory),
            Ok(_) => {
                let stage = if hello.count == 1 { "join the user namespace" } else { "join the network namespace" };
                Err(FactoryError::Enter { stage, source: io::Error::from_raw_os_error(hello.errno) })
            }
            Err(source) => {
                factory.reap();
                Err(FactoryError::Enter { stage: "start", source })
            }
        }
    }

    /// The factory's pid and start time, for the run record.
    pub fn id(&self) -> ProcessId {
        self.id
    }

    /// A new socket inside the namespace (`SOCK_NONBLOCK | SOCK_CLOEXEC`).
    /// Internet sockets come from a pool refilled a batch at a time, so most
    /// calls cost no round trip.
    pub fn socket(&mut self, domain: i32, ty: i32, proto: i32) -> io::Result<OwnedFd> {
        let key = (domain, ty);
        let pooled = domain == libc::AF_INET || domain == libc::AF_INET6;
        if pooled && let Some(fd) = self.pool(key).pop_front() {
            return Ok(fd);
        }
        let count = if pooled { REFILL } else { 1 };
        let mut fds = self.call(Request { op: OP_SOCKET, domain, ty, proto, count })?;
        let first = fds.remove(0);
        if pooled {
            self.pool(key).extend(fds);
        }
        Ok(first)
    }

    /// An rtnetlink socket inside the namespace.
    pub fn netlink_route(&mut self) -> io::Result<OwnedFd> {
        self.socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE)
    }

    /// Set `net.ipv4.tcp_fwmark_accept = 1` inside the namespace, so accepted
    /// TCP sockets carry the mark of the connection request.
    pub fn enable_fwmark_accept(&mut self) -> io::Result<()> {
        self.call(Request { op: OP_FWMARK_ACCEPT, ..Request::default() }).map(|_| ())
    }

    fn pool(&mut self, key: PoolKey) -> &mut VecDeque<OwnedFd> {
        let at = match self.pools.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                self.pools.push((key, VecDeque::new()));
                self.pools.len() - 1
            }
        };
        &mut self.pools[at].1
    }

    fn call(&mut self, req: Request) -> io::Result<Vec<OwnedFd>> {
        // SAFETY: `req` is a plain repr(C) value; send reads its bytes.
        let sent = unsafe {
            libc::send(self.ctl.as_raw_fd(), (&raw const req).cast(), size_of::<Request>(), libc::MSG_NOSIGNAL)
        };
        if sent != size_of::<Request>() as isize {
            return Err(if sent < 0 { last_err() } else { io::ErrorKind::WriteZero.into() });
        }
        let mut reply = Reply::default();
        let mut raw = [-1 as RawFd; MAX_BATCH];
        let got = recv_reply(self.ctl.as_fd(), &mut reply, &mut raw)?;
        // SAFETY: each received fd is new in this process and owned only here.
        let fds: Vec<OwnedFd> = raw[..got].iter().map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) }).collect();
        if reply.errno != 0 {
            return Err(io::Error::from_raw_os_error(reply.errno));
        }
        if req.op == OP_SOCKET && fds.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(fds)
    }

    fn reap(&mut self) {
        let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
        let _ = waitpid(self.pid, None);
    }
}

impl Drop for SocketFactory {
    fn drop(&mut self) {
        // Closing our end makes the factory exit; reap it without blocking
        // for long, then make sure.
        // SAFETY: shutdown on our own open socket.
        unsafe { libc::shutdown(self.ctl.as_raw_fd(), libc::SHUT_RDWR) };
        for _ in 0..50 {
            match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(nix::sys::wait::WaitStatus::StillAlive) => std::thread::sleep(std::time::Duration::from_micros(200)),
                _ => return,
            }
        }
        self.reap();
    }
}

/// Control-message buffer for `MAX_BATCH` fds, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct CmsgBuf([u8; 128]);

const _: () = assert!(size_of::<libc::cmsghdr>() + MAX_BATCH * size_of::<RawFd>() <= 128);

/// Receive one reply and up to `fds.len()` fds; returns how many fds came.
fn recv_reply(ctl: BorrowedFd<'_>, reply: &mut Reply, fds: &mut [RawFd]) -> io::Result<usize> {
    let mut cbuf = CmsgBuf([0; 128]);
    let mut iov = libc::iovec { iov_base: (reply as *mut Reply).cast(), iov_len: size_of::<Reply>() };
    // SAFETY: msghdr is plain data; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr().cast();
    msg.msg_controllen = cbuf.0.len() as _;
    let n = loop {
        // SAFETY: msg points at live buffers sized as declared.
        let n = unsafe { libc::recvmsg(ctl.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        break n;
    };
    if n < 0 {
        return Err(last_err());
    }
    if n as usize != size_of::<Reply>() {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let mut got = 0;
    // SAFETY: CMSG_FIRSTHDR/NXTHDR walk the control buffer the kernel filled,
    // bounded by msg_controllen; SCM_RIGHTS data is an array of ints.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..len / size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.add(i));
                    if got < fds.len() {
                        fds[got] = fd;
                        got += 1;
                    } else {
                        libc::close(fd);
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(got)
}

/// Send a reply carrying `fds` (async-signal-safe).
fn send_reply(ctl: RawFd, reply: Reply, fds: &[RawFd]) -> isize {
    let mut cbuf = CmsgBuf([0; 128]);
    let mut reply = reply;
    let mut iov = libc::iovec { iov_base: (&raw mut reply).cast(), iov_len: size_of::<Reply>() };
    // SAFETY: msghdr is plain data; the pointers set below outlive sendmsg,
    // and the control message written fits the buffer (asserted above).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            let bytes = std::mem::size_of_val(fds) as u32;
            msg.msg_control = cbuf.0.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(bytes) as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(bytes) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast::<RawFd>(), fds.len());
        }
        libc::sendmsg(ctl, &msg, libc::MSG_NOSIGNAL)
    }
}

/// The factory process. Never returns.
///
/// It sets no parent-death signal: that signal follows the *thread* that
/// forked, and a library caller may start the driver from a short-lived
/// thread. Owner death is seen instead as EOF on the control socket, whose
/// other end only the owner holds once the inherited descriptors are closed.
fn child_main(ctl: RawFd, userns: RawFd, netns: RawFd) -> ! {
    // SAFETY: raw syscalls on values of this frame; `_exit` ends the child
    // without running the parent's destructors or atexit handlers.
    unsafe {
        let mut stage = 0;
        let mut err = 0;
        if userns >= 0 && libc::setns(userns, libc::CLONE_NEWUSER) != 0 {
            (stage, err) = (1, *libc::__errno_location());
        }
        if err == 0 && libc::setns(netns, libc::CLONE_NEWNET) != 0 {
            (stage, err) = (2, *libc::__errno_location());
        }
        // Keep nothing of the owner's open: its listeners must close when it
        // closes them, and its end of the control socket must be its alone.
        crate::host::fds::close_from_except(3, &[ctl]);
        send_reply(ctl, Reply { errno: err, count: stage }, &[]);
        if err != 0 {
            libc::_exit(1);
        }
        serve(ctl)
    }
}

/// Answer requests until the owner closes its end (async-signal-safe).
fn serve(ctl: RawFd) -> ! {
    const FWMARK_ACCEPT: &std::ffi::CStr = c"/proc/sys/net/ipv4/tcp_fwmark_accept";
    loop {
        let mut req = Request::default();
        // SAFETY: recv into a plain repr(C) value of this frame.
        let n = unsafe { libc::recv(ctl, (&raw mut req).cast(), size_of::<Request>(), 0) };
        if n == 0 {
            // SAFETY: ends the child.
            unsafe { libc::_exit(0) };
        }
        if n < 0 {
            // SAFETY: reads this thread's errno; ends the child on a real error.
            if unsafe { *libc::__errno_location() } == libc::EINTR {
                continue;
            }
            // SAFETY: ends the child.
            unsafe { libc::_exit(1) };
        }
        let mut fds = [-1 as RawFd; MAX_BATCH];
        let mut got = 0;
        let mut errno = 0;
        match req.op {
            OP_SOCKET => {
                let want = (req.count as usize).clamp(1, MAX_BATCH);
                while got < want {
                    // SAFETY: socket(2) with values from the request.
                    let fd = unsafe {
                        libc::socket(req.domain, req.ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, req.proto)
                    };
                    if fd < 0 {
                        // SAFETY: reads this thread's errno.
                        errno = unsafe { *libc::__errno_location() };
                        break;
                    }
                    fds[got] = fd;
                    got += 1;
                }
                if got > 0 {
                    errno = 0;
                }
            }
            OP_FWMARK_ACCEPT => {
                // SAFETY: open/write/close of a constant path and buffer.
                unsafe {
                    let fd = libc::open(FWMARK_ACCEPT.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 || libc::write(fd, c"1\n".as_ptr().cast(), 2) != 2 {
                        errno = *libc::__errno_location();
                    }
                    if fd >= 0 {
                        libc::close(fd);
                    }
                }
            }
            _ => errno = libc::EINVAL,
        }
        send_reply(ctl, Reply { errno, count: got as u32 }, &fds[..got]);
        for fd in &fds[..got] {
            // SAFETY: closes our copies; the owner has its own now.
            unsafe { libc::close(*fd) };
        }
    }
}

impl crate::ports::relay::SocketSource for SocketFactory {
    fn socket(
        &mut self,
        family: crate::ports::relay::SockFamily,
        kind: crate::ports::relay::SockKind,
    ) -> io::Result<OwnedFd> {
        let domain = match family {
            crate::ports::relay::SockFamily::V4 => libc::AF_INET,
            crate::ports::relay::SockFamily::V6 => libc::AF_INET6,
        };
        let ty = match kind {
            crate::ports::relay::SockKind::Stream => libc::SOCK_STREAM,
            crate::ports::relay::SockKind::Datagram => libc::SOCK_DGRAM,
        };
        SocketFactory::socket(self, domain, ty, 0)
    }
}

//! Socket sources: how the relay gets a socket inside the target namespace.
//!
//! [`JoinNetns`] is the source for callers that may `setns(2)` (root, or
//! CAP_SYS_ADMIN over the namespace): the relay thread itself joins the
//! namespace on first use. That is safe because the thread is dedicated to
//! the relay and its listeners are already bound: sockets keep the
//! namespace they were created in, whatever thread later uses them.
//! Rootless callers use a source that asks a helper process inside the
//! namespace for sockets instead.

use super::{SockFamily, SockKind, SocketSource};
use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::thread::ThreadId;

/// A new nonblocking, close-on-exec socket in the calling thread's network
/// namespace (what every [`SocketSource`] ends up calling inside the target).
pub fn open_socket(family: SockFamily, kind: SockKind) -> io::Result<OwnedFd> {
    let family = match family {
        SockFamily::V4 => AddressFamily::Inet,
        SockFamily::V6 => AddressFamily::Inet6,
    };
    let ty = match kind {
        SockKind::Stream => SockType::Stream,
        SockKind::Datagram => SockType::Datagram,
    };
    Ok(socket(family, ty, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None)?)
}

/// A [`SocketSource`] that makes the calling thread (the relay thread) join
/// a network namespace, once, then creates sockets there.
#[derive(Debug)]
pub struct JoinNetns {
    netns: OwnedFd,
    joined: Option<ThreadId>,
}

impl JoinNetns {
    /// A source for the namespace `netns` (an open `/proc/PID/ns/net` or
    /// `/run/netns/NAME`).
    pub fn new(netns: OwnedFd) -> Self {
        Self { netns, joined: None }
    }

    /// A source for the namespace file at `path`.
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(Self::new(File::open(path)?.into()))
    }
}

/// A [`SocketSource`] for the namespace the relay thread is in already
/// (a relay whose listeners were made in another namespace, connecting
/// here: the host's loopback services a run was granted).
#[derive(Debug, Clone, Copy, Default)]
pub struct Here;

impl SocketSource for Here {
    fn socket(&mut self, family: SockFamily, kind: SockKind) -> io::Result<OwnedFd> {
        open_socket(family, kind)
    }
}

impl SocketSource for JoinNetns {
    fn socket(&mut self, family: SockFamily, kind: SockKind) -> io::Result<OwnedFd> {
        let me = std::thread::current().id();
        if self.joined != Some(me) {
            setns(&self.netns, CloneFlags::CLONE_NEWNET)?;
            self.joined = Some(me);
        }
        open_socket(family, kind)
    }
}

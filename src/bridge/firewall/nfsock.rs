//! [`NfSocket`]: a raw nfnetlink socket that sends [`super::nfnl`]
//! requests and collects their replies. Opened with `SOCK_CLOEXEC` in the
//! calling thread's network namespace.
//!
//! Decision: a socket is not closed when dropped but kept for the next
//! [`NfSocket::open`] in the same namespace (a few namespaces at most; the
//! oldest is closed through [`super::closer`]). Closing a netfilter socket
//! flushes nf_tables' pending destroy work under the commit mutex, waiting
//! out an RCU grace period: a long-lived caller (a runtime tearing down
//! one container after another) would otherwise have every commit wait
//! for the close of the previous one's socket. A process about to exit
//! hands the kept sockets to the closer's child with the rest
//! ([`super::closer::detach_pending`]).

use super::nfnl::{self, ElemOp, Reply, Request};
use super::{Forward, NftError};
use crate::state::record::NsId;
use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, send, socket};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

/// A netfilter netlink socket bound to the network namespace it was opened in.
#[derive(Debug)]
pub struct NfSocket {
    fd: Option<OwnedFd>,
    seq: u32,
    /// Its namespace, when known (then it is kept for reuse when dropped).
    ns: Option<NsId>,
    /// No transaction was left half-read (a reused socket must hold no
    /// stale reply).
    clean: bool,
    /// Receive buffer, made at the first exchange and reused by the next;
    /// never zeroed (see [`crate::bridge::netlink::recv_datagram`]).
    buf: Vec<u8>,
}

/// A socket kept for reuse.
struct Kept {
    ns: NsId,
    fd: OwnedFd,
    seq: u32,
}

/// Sockets kept for reuse, oldest first.
static KEPT: Mutex<Vec<Kept>> = Mutex::new(Vec::new());
/// How many sockets are kept at most.
const KEEP_MAX: usize = 4;

fn kept() -> std::sync::MutexGuard<'static, Vec<Kept>> {
    KEPT.lock().unwrap_or_else(|p| p.into_inner())
}

/// The descriptors of the kept sockets (for the closer's child).
pub(super) fn kept_fds() -> Vec<RawFd> {
    kept().iter().map(|k| k.fd.as_raw_fd()).collect()
}

fn errno_text(errno: i32) -> String {
    nix::errno::Errno::from_raw(errno).desc().to_owned()
}

impl NfSocket {
    /// A socket in the calling thread's network namespace: one kept from
    /// an earlier use there, or a new one.
    pub fn open() -> Result<Self, NftError> {
        let ns = NsId::of(std::path::Path::new("/proc/thread-self/ns/net")).ok();
        if let Some(ns) = ns {
            let mut kept = kept();
            if let Some(i) = kept.iter().position(|k| k.ns == ns) {
                let k = kept.remove(i);
                return Ok(Self { fd: Some(k.fd), seq: k.seq, ns: Some(ns), clean: true, buf: Vec::new() });
            }
        }
        let fd = socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkNetFilter)
            .map_err(|e| NftError { message: format!("cannot open a netfilter netlink socket: {e}") })?;
        // A reply that never comes (a kernel or parsing bug) is an error, not a hang.
        let timeout = nix::sys::time::TimeVal::new(10, 0);
        nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::ReceiveTimeout, &timeout)
            .map_err(|e| NftError { message: format!("set a receive timeout on a netfilter socket: {e}") })?;
        Ok(Self { fd: Some(fd), seq: 1, ns, clean: true, buf: Vec::new() })
    }

    fn fd(&self) -> &OwnedFd {
        self.fd.as_ref().expect("open until dropped")
    }

    /// Send `req`; return the data replies, or the first error's errno.
    fn transact(&mut self, req: Request) -> Result<Vec<(u16, Vec<u8>)>, i32> {
        self.seq = req.next_seq.max(1);
        self.clean = false;
        let raw = self.fd().as_raw_fd();
        let mut sent = 0;
        while sent < req.bytes.len() {
            match send(raw, &req.bytes[sent..], MsgFlags::empty()) {
                Ok(n) => sent += n,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e as i32),
            }
        }
        let mut pending: Vec<u32> = req.acked.clone();
        let mut data = Vec::new();
        let mut first_error = None;
        if self.buf.capacity() == 0 {
            self.buf = Vec::with_capacity(1 << 16);
        }
        let fd = std::os::fd::AsFd::as_fd(self.fd.as_ref().expect("open until dropped"));
        while !pending.is_empty() {
            if let Err(e) = crate::bridge::netlink::recv_datagram(fd, &mut self.buf, 0) {
                return Err(e.raw_os_error().unwrap_or(libc::EIO));
            }
            let replies = nfnl::parse_replies(&self.buf).ok_or(libc::EBADMSG)?;
            for r in replies {
                match r {
                    Reply::Status { seq, errno } => {
                        pending.retain(|s| *s != seq);
                        if errno != 0 && first_error.is_none() {
                            first_error = Some(errno);
                        }
                    }
                    Reply::Data { seq, kind, attrs } if seq >= req.first_seq => data.push((kind, attrs.to_vec())),
                    _ => {}
                }
            }
        }
        self.clean = true;
        match first_error {
            Some(e) => Err(e),
            None => Ok(data),
        }
    }

    fn next_seq(&self) -> u32 {
        self.seq
    }

    /// The comment of table `table` of `family`: `None` when the table does
    /// not exist, `Some(None)` when it has no comment.
    pub fn table_comment(&mut self, family: u8, table: &str) -> Result<Option<Option<String>>, NftError> {
        let req = nfnl::get_table(family, table, self.next_seq());
        match self.transact(req) {
            Ok(replies) => Ok(Some(replies.iter().find_map(|(k, a)| nfnl::table_comment(*k, a)))),
            Err(libc::ENOENT) => Ok(None),
            Err(e) => Err(NftError { message: format!("get table {table}: {}", errno_text(e)) }),
        }
    }

    /// Whether base chain `chain` of `table` accepts by default: `None`
    /// when the table or chain does not exist (or it is not a base chain).
    pub fn chain_policy_accepts(&mut self, family: u8, table: &str, chain: &str) -> Result<Option<bool>, NftError> {
        let req = nfnl::get_chain(family, table, chain, self.next_seq());
        match self.transact(req) {
            Ok(replies) => Ok(replies.iter().find_map(|(_, a)| nfnl::chain_policy_accepts(a))),
            Err(libc::ENOENT) => Ok(None),
            Err(e) => Err(NftError { message: format!("get chain {table} {chain}: {}", errno_text(e)) }),
        }
    }

    /// Apply `steps` to `table`'s forward maps in one transaction.
    pub fn elements(&mut self, table: &str, steps: &[(ElemOp, &[Forward])]) -> Result<(), NftError> {
        let req = nfnl::elements_batch(table, steps, self.next_seq());
        if req.acked.is_empty() {
            return Ok(());
        }
        self.transact(req).map(drop).map_err(|e| NftError { message: errno_text(e) })
    }

    /// Every forward in `table`'s maps (for a rebuild that keeps them).
    pub fn forwards(&mut self, table: &str) -> Result<Vec<Forward>, NftError> {
        let mut out = Vec::new();
        for proto in [crate::model::port::PortProto::Tcp, crate::model::port::PortProto::Udp] {
            for by_addr in [true, false] {
                let map = nfnl::map_name(proto, by_addr);
                let req = nfnl::get_elements(table, &map, self.next_seq());
                match self.transact(req) {
                    Ok(replies) => {
                        out.extend(replies.iter().flat_map(|(k, a)| nfnl::decode_elements(&map, *k, a)));
                    }
                    Err(libc::ENOENT) => {}
                    Err(e) => return Err(NftError { message: format!("list map {table} {map}: {}", errno_text(e)) }),
                }
            }
        }
        Ok(out)
    }
}

impl Drop for NfSocket {
    /// Keep the socket for the next use in its namespace; close the oldest
    /// kept one (or this one, when it cannot be reused) off this path.
    fn drop(&mut self) {
        let Some(fd) = self.fd.take() else { return };
        let retired = match self.ns.filter(|_| self.clean) {
            Some(ns) => {
                let mut kept = kept();
                kept.push(Kept { ns, fd, seq: self.seq });
                (kept.len() > KEEP_MAX).then(|| kept.remove(0).fd)
            }
            None => Some(fd),
        };
        if let Some(fd) = retired {
            let raw = fd.as_raw_fd();
            super::closer::defer(vec![raw], Box::new(fd));
        }
    }
}

//! The socket and the request/reply protocol: sequence numbers, ACKs,
//! `NLMSG_ERROR`, and dumps read until `NLMSG_DONE`.

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkBuffer, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, connect, send, socket,
};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use super::NetlinkError;

/// Receive buffer size. The kernel sizes dump datagrams after the largest
/// buffer a reader used, capped at 32 KiB, so 64 KiB never truncates one.
const RECV_BUF_LEN: usize = 64 * 1024;

/// How often a dump the kernel marked `NLM_F_DUMP_INTR` (the set changed
/// while it was being read) is restarted before giving up with `EINTR`.
const DUMP_ATTEMPTS: usize = 5;

/// An rtnetlink socket bound to the network namespace it was opened in.
///
/// Not `Clone`: the socket is owned, and sequence numbers are per socket.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
    /// Receive buffer, reused by every exchange.
    buf: Vec<u8>,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink").field("fd", &self.fd).field("seq", &self.seq).finish_non_exhaustive()
    }
}

/// What one exchange brought back.
struct Reply {
    messages: Vec<RouteNetlinkMessage>,
    interrupted: bool,
}

fn invalid_data(e: netlink_packet_core::DecodeError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Netlink {
    /// Socket in the calling thread's current network namespace.
    pub fn open() -> Result<Self, NetlinkError> {
        Self::open_socket().map_err(|source| NetlinkError::Open { source })
    }

    /// Socket inside another network namespace.
    ///
    /// A short-lived thread `setns(CLONE_NEWNET)`s into `netns`, opens the
    /// socket there and hands it back (a netlink socket stays bound to the
    /// namespace it was created in). The calling thread's namespace is
    /// untouched. Needs `CAP_SYS_ADMIN` over the target namespace.
    pub fn open_in(netns: BorrowedFd<'_>) -> Result<Self, NetlinkError> {
        std::thread::scope(|scope| {
            let opener = scope.spawn(move || {
                setns(netns, CloneFlags::CLONE_NEWNET).map_err(|e| NetlinkError::EnterNetns { source: e.into() })?;
                Self::open()
            });
            opener.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Adopt an rtnetlink socket created elsewhere (for example inside a
    /// namespace by [`crate::ports::nsfactory::SocketFactory`]); it is connected
    /// to the kernel here.
    /// Replies are read blocking, so a nonblocking socket is made blocking.
    pub fn from_fd(fd: OwnedFd) -> Result<Self, NetlinkError> {
        let open_err = |e: Errno| NetlinkError::Open { source: e.into() };
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL).map_err(open_err)?;
        let blocking = nix::fcntl::OFlag::from_bits_truncate(flags) - nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(blocking)).map_err(open_err)?;
        connect(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(open_err)?;
        Ok(Self { fd, seq: 0, buf: Vec::with_capacity(RECV_BUF_LEN) })
    }

    fn open_socket() -> io::Result<Self> {
        let fd =
            socket(AddressFamily::Netlink, SockType::Datagram, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkRoute)?;
        // Connecting to the kernel (port 0) autobinds a port and makes the
        // kernel refuse datagrams from any other sender.
        connect(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        Ok(Self { fd, seq: 0, buf: Vec::with_capacity(RECV_BUF_LEN) })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Send `msg` with `NLM_F_REQUEST | NLM_F_ACK | flags` and return the
    /// messages the kernel sent before its ACK (or an error with its errno).
    pub(super) fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
        Ok(self.exchange(msg, flags)?.messages)
    }

    /// Dump: send `msg` with `NLM_F_DUMP` and return every message up to
    /// `NLMSG_DONE`, restarting when the kernel marks the dump interrupted.
    pub(super) fn dump(&mut self, msg: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        for _ in 0..DUMP_ATTEMPTS {
            let reply = self.exchange(msg.clone(), NLM_F_DUMP)?;
            if !reply.interrupted {
                return Ok(reply.messages);
            }
            log::debug!("rtnetlink dump interrupted by a concurrent change; restarting");
        }
        Err(Errno::EINTR.into())
    }

    fn exchange(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<Reply> {
        let seq = self.next_seq();
        let mut packet = NetlinkMessage::from(msg);
        packet.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        packet.header.sequence_number = seq;
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        let sent = send(self.fd.as_raw_fd(), &out, MsgFlags::empty())?;
        if sent != out.len() {
            return Err(Errno::EMSGSIZE.into());
        }

        let mut reply = Reply { messages: Vec::new(), interrupted: false };
        loop {
            // MSG_TRUNC makes recv return the datagram's real length, so a
            // truncated one is detected instead of misparsed.
            let len = recv_datagram(self.fd.as_fd(), &mut self.buf, libc::MSG_TRUNC)?;
            if len > self.buf.len() {
                return Err(Errno::EMSGSIZE.into());
            }
            if parse_datagram(&self.buf, seq, &mut reply)? {
                return Ok(reply);
            }
        }
    }
}

/// Receive one datagram into `buf`'s capacity, which is never zeroed: a
/// zeroed 64 KiB buffer costs its 16 pages' faults and a 64 KiB `memset`
/// per socket (glibc's `calloc` clears even fresh heap), while a reply
/// touches a page or two. `buf` holds the received bytes after (at most its
/// capacity); the datagram's length is returned, larger than `buf.len()`
/// when it was truncated and `flags` has `MSG_TRUNC`. `EINTR` is retried.
pub(crate) fn recv_datagram(fd: BorrowedFd<'_>, buf: &mut Vec<u8>, flags: libc::c_int) -> io::Result<usize> {
    buf.clear();
    loop {
        // SAFETY: the kernel writes at most `capacity` bytes into the
        // vector's allocation, which we own for the call; no byte is read
        // before `set_len` covers exactly what the kernel wrote.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.capacity(), flags) };
        if n >= 0 {
            let n = n as usize;
            // SAFETY: the first min(n, capacity) bytes were written by recv.
            unsafe { buf.set_len(n.min(buf.capacity())) };
            return Ok(n);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

impl AsFd for Netlink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Parse the netlink messages in one datagram into `reply`, skipping those
/// of other sequence numbers. Returns whether the exchange is complete (ACK
/// or `NLMSG_DONE` seen); a non-zero `NLMSG_ERROR` is returned as its errno.
fn parse_datagram(mut data: &[u8], seq: u32, reply: &mut Reply) -> io::Result<bool> {
    while !data.is_empty() {
        let len = NetlinkBuffer::new_checked(data).map_err(invalid_data)?.length() as usize;
        let (one, rest) = data.split_at(len);
        // Messages are 4-byte aligned; the last one may lack its padding.
        data = rest.get(len.next_multiple_of(4) - len..).unwrap_or_default();

        let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(one).map_err(invalid_data)?;
        if message.header.sequence_number != seq {
            log::debug!("skipping rtnetlink message of sequence {} (want {seq})", message.header.sequence_number);
            continue;
        }
        if message.header.flags & NLM_F_DUMP_INTR != 0 {
            reply.interrupted = true;
        }
        match message.payload {
            NetlinkPayload::InnerMessage(inner) => reply.messages.push(inner),
            NetlinkPayload::Error(err) => match err.code {
                None => return Ok(true),
                Some(code) => return Err(io::Error::from_raw_os_error(-code.get())),
            },
            NetlinkPayload::Done(done) if done.code < 0 => return Err(io::Error::from_raw_os_error(-done.code)),
            NetlinkPayload::Done(_) => return Ok(true),
            NetlinkPayload::Overrun(_) => return Err(Errno::ENOBUFS.into()),
            _ => {}
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{DoneMessage, ErrorMessage, NetlinkHeader};
    use netlink_packet_route::link::LinkMessage;
    use std::num::NonZeroI32;

    fn encode(seq: u32, flags: u16, payload: NetlinkPayload<RouteNetlinkMessage>) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.sequence_number = seq;
        header.flags = flags;
        let mut message = NetlinkMessage::new(header, payload);
        message.finalize();
        let mut out = vec![0; message.buffer_len()];
        message.serialize(&mut out);
        out
    }

    fn link(index: u32) -> NetlinkPayload<RouteNetlinkMessage> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(msg))
    }

    fn error(code: i32) -> NetlinkPayload<RouteNetlinkMessage> {
        let mut err = ErrorMessage::default();
        err.code = NonZeroI32::new(code);
        NetlinkPayload::Error(err)
    }

    fn done() -> NetlinkPayload<RouteNetlinkMessage> {
        NetlinkPayload::Done(DoneMessage::default())
    }

    fn empty_reply() -> Reply {
        Reply { messages: Vec::new(), interrupted: false }
    }

    #[test]
    fn dump_datagram_ends_at_done_and_keeps_messages_of_its_sequence() {
        let data =
            [encode(7, 0, link(1)), encode(6, 0, link(99)), encode(7, 0, link(2)), encode(7, 0, done())].concat();
        let mut reply = empty_reply();

        let complete = parse_datagram(&data, 7, &mut reply).unwrap();

        assert!(complete);
        let indexes: Vec<u32> = reply
            .messages
            .iter()
            .map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => l.header.index,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(indexes, [1, 2]);
        assert!(!reply.interrupted);
    }

    #[test]
    fn datagram_without_terminator_is_incomplete() {
        let data = encode(3, 0, link(1));
        let mut reply = empty_reply();

        assert!(!parse_datagram(&data, 3, &mut reply).unwrap());
        assert_eq!(reply.messages.len(), 1);
    }

    #[test]
    fn ack_completes_and_nack_returns_its_errno() {
        assert!(parse_datagram(&encode(1, 0, error(0)), 1, &mut empty_reply()).unwrap());

        let err = parse_datagram(&encode(1, 0, error(-libc::EEXIST)), 1, &mut empty_reply()).unwrap_err();

        assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
    }

    #[test]
    fn nack_of_another_sequence_is_skipped() {
        let data = [encode(1, 0, error(-libc::ENODEV)), encode(2, 0, error(0))].concat();

        assert!(parse_datagram(&data, 2, &mut empty_reply()).unwrap());
    }

    #[test]
    fn dump_intr_flag_marks_the_reply_interrupted() {
        let data = [encode(4, NLM_F_DUMP_INTR, link(1)), encode(4, 0, done())].concat();
        let mut reply = empty_reply();

        parse_datagram(&data, 4, &mut reply).unwrap();

        assert!(reply.interrupted);
    }

    #[test]
    fn truncated_datagram_is_invalid_data() {
        let data = encode(1, 0, link(1));

        let err = parse_datagram(&data[..data.len() - 4], 1, &mut empty_reply()).unwrap_err();

        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}

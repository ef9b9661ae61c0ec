//! TCP: each client connection carries length-prefixed queries, answered
//! one at a time, in order. A query not answered locally goes to the
//! upstreams over TCP (a fresh connection per attempt, so the ID needs no
//! rewriting); a failed or late attempt moves on to the next upstream, and
//! when none is left the client gets SERVFAIL. Buffers are bounded by the
//! largest DNS message.

use super::event_loop::{Loop, Token};
use super::new_socket;
use crate::dns::proto::{self, Question, RCODE_REFUSED, RCODE_SERVFAIL};
use crate::ports::relay::sys::{Connect, connect, socket_error};
use nix::sys::epoll::{EpollEvent, EpollFlags};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::time::Instant;

/// Largest framed message: a 2-byte length and 65535 bytes.
const MAX_FRAME: usize = 2 + 65_535;

/// The upstream side of one attempt.
struct Upstream {
    sock: TcpStream,
    connected: bool,
    out: Vec<u8>,
    sent: usize,
    input: Vec<u8>,
    deadline: Instant,
}

/// One client connection.
pub(super) struct Conn {
    gen_: u32,
    client: TcpStream,
    /// The client's address (local names are answered per client).
    peer: std::net::IpAddr,
    input: Vec<u8>,
    output: Vec<u8>,
    client_eof: bool,
    /// The query being resolved (framed) and its question.
    query: Option<(Vec<u8>, Question)>,
    /// Index of the upstream asked; also the attempt number in tokens.
    attempt: usize,
    upstream: Option<Upstream>,
    idle_deadline: Instant,
}

/// Client connections by slot.
#[derive(Default)]
pub(super) struct Conns {
    slots: Vec<Option<Conn>>,
    gens: Vec<u32>,
    open: usize,
}

impl Conns {
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.slots.iter().flatten().map(|c| c.upstream.as_ref().map_or(c.idle_deadline, |u| u.deadline)).min()
    }

    fn insert(&mut self, make: impl FnOnce(u32) -> Conn) -> (u32, u32) {
        let index = match self.slots.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.gens.push(0);
                self.slots.len() - 1
            }
        };
        self.gens[index] = self.gens[index].wrapping_add(1) & 0xffff;
        let gen_ = self.gens[index];
        self.slots[index] = Some(make(gen_));
        self.open += 1;
        (index as u32, gen_)
    }

    fn get(&mut self, index: u32, gen_: u32) -> Option<&mut Conn> {
        self.slots.get_mut(index as usize)?.as_mut().filter(|c| c.gen_ == gen_)
    }
}

/// Frame a message with its 2-byte length.
fn frame(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&(msg.len().min(65_535) as u16).to_be_bytes());
    out.extend_from_slice(&msg[..msg.len().min(65_535)]);
    out
}

/// The first complete frame's message, removed from `buf`.
fn take_frame(buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let len = usize::from(u16::from_be_bytes([*buf.first()?, *buf.get(1)?]));
    if buf.len() < 2 + len {
        return None;
    }
    let msg = buf[2..2 + len].to_vec();
    buf.drain(..2 + len);
    Some(msg)
}

/// Read what is there into `buf` (at most `MAX_FRAME` held); `Ok(true)` on EOF.
fn read_some(sock: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut chunk = [0u8; 4096];
    loop {
        if buf.len() >= MAX_FRAME * 2 {
            return Err(ErrorKind::OutOfMemory.into());
        }
        match sock.read(&mut chunk) {
            Ok(0) => return Ok(true),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// Write as much of `buf[*sent..]` as the socket takes.
fn write_some(sock: &mut TcpStream, buf: &[u8], sent: &mut usize) -> std::io::Result<()> {
    while *sent < buf.len() {
        match sock.write(&buf[*sent..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => *sent += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

const EDGE: EpollFlags =
    EpollFlags::EPOLLIN.union(EpollFlags::EPOLLOUT).union(EpollFlags::EPOLLRDHUP).union(EpollFlags::EPOLLET);

impl Loop {
    /// Accept every waiting client (closing those over the limit).
    pub(super) fn accept(&mut self) {
        loop {
            let (sock, peer) = match self.tcp.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            if self.conns.open >= self.cfg.limits.max_tcp || sock.set_nonblocking(true).is_err() {
                self.stats.tcp_refused += 1;
                continue;
            }
            let idle = Instant::now() + self.cfg.limits.tcp_idle;
            let (index, gen_) = self.conns.insert(|gen_| Conn {
                gen_,
                client: sock,
                peer: peer.ip(),
                input: Vec::new(),
                output: Vec::new(),
                client_eof: false,
                query: None,
                attempt: 0,
                upstream: None,
                idle_deadline: idle,
            });
            let ev = EpollEvent::new(EDGE, Token::Client(index, gen_).encode());
            let registered = match self.conns.get(index, gen_) {
                Some(c) => self.epoll.add(c.client.as_fd(), ev).is_ok(),
                None => false,
            };
            if registered {
                self.client_event(index, gen_);
            } else {
                self.close(index, gen_);
            }
        }
    }

    /// The client socket is readable or writable.
    pub(super) fn client_event(&mut self, index: u32, gen_: u32) {
        let idle = self.cfg.limits.tcp_idle;
        let Some(c) = self.conns.get(index, gen_) else { return };
        c.idle_deadline = Instant::now() + idle;
        if !c.client_eof {
            match read_some(&mut c.client, &mut c.input) {
                Ok(eof) => c.client_eof = eof,
                Err(_) => return self.close(index, gen_),
            }
        }
        self.advance(index, gen_);
    }

    /// Flush answers, start the next query, close when done.
    fn advance(&mut self, index: u32, gen_: u32) {
        loop {
            let Some(c) = self.conns.get(index, gen_) else { return };
            let mut sent = 0;
            if write_some(&mut c.client, &c.output, &mut sent).is_err() {
                return self.close(index, gen_);
            }
            c.output.drain(..sent);
            if c.query.is_some() || !c.output.is_empty() {
                return;
            }
            let client = c.peer;
            let Some(msg) = take_frame(&mut c.input) else {
                if c.client_eof {
                    self.close(index, gen_);
                }
                return;
            };
            let question = proto::question(&msg).filter(|_| proto::is_query(&msg));
            let Some(question) = question else { return self.close(index, gen_) };
            self.stats.tcp_queries += 1;
            if let Some(reply) = self.local_reply(&msg, client, &question.name) {
                if let Some(c) = self.conns.get(index, gen_) {
                    c.output = frame(&reply);
                }
                continue;
            }
            let c = self.conns.get(index, gen_).expect("present above");
            c.query = Some((msg, question));
            c.attempt = 0;
            self.start_attempt(index, gen_);
        }
    }

    /// Connect to the current upstream, moving on past those that fail at
    /// once; with none left, answer SERVFAIL.
    fn start_attempt(&mut self, index: u32, gen_: u32) {
        let timeout = self.cfg.limits.attempt_timeout;
        loop {
            let Some(c) = self.conns.get(index, gen_) else { return };
            c.upstream = None;
            let Some(&dest) = self.cfg.upstreams.get(c.attempt) else {
                let (msg, _) = c.query.take().expect("a query is being resolved");
                c.output = frame(&proto::error_reply(&msg, RCODE_SERVFAIL).unwrap_or_default());
                self.stats.servfail += 1;
                return self.advance(index, gen_);
            };
            let domain = if dest.is_ipv6() { libc::AF_INET6 } else { libc::AF_INET };
            let started = new_socket(domain, libc::SOCK_STREAM).ok().and_then(|fd| {
                let state = connect(fd.as_fd(), dest).ok()?;
                Some((fd, state))
            });
            let c = self.conns.get(index, gen_).expect("present above");
            if let Some((fd, state)) = started {
                let token = Token::Server(index, gen_, c.attempt as u8).encode();
                if self.epoll.add(&fd, EpollEvent::new(EDGE, token)).is_ok() {
                    let out = frame(&c.query.as_ref().expect("a query is being resolved").0);
                    c.upstream = Some(Upstream {
                        sock: TcpStream::from(fd),
                        connected: state == Connect::Done,
                        out,
                        sent: 0,
                        input: Vec::new(),
                        deadline: Instant::now() + timeout,
                    });
                    let attempt = c.attempt as u8;
                    return self.server_event(index, gen_, attempt);
                }
            }
            c.attempt += 1;
        }
    }

    /// The upstream socket of attempt `attempt` is ready.
    pub(super) fn server_event(&mut self, index: u32, gen_: u32, attempt: u8) {
        let Some(c) = self.conns.get(index, gen_) else { return };
        if c.attempt as u8 != attempt {
            return;
        }
        let Some(up) = c.upstream.as_mut() else { return };
        if !up.connected {
            match socket_error(up.sock.as_fd()) {
                Ok(()) => up.connected = true,
                Err(_) => return self.next_attempt(index, gen_),
            }
        }
        if write_some(&mut up.sock, &up.out, &mut up.sent).is_err() {
            return self.next_attempt(index, gen_);
        }
        let eof = match read_some(&mut up.sock, &mut up.input) {
            Ok(eof) => eof,
            Err(_) => return self.next_attempt(index, gen_),
        };
        let Some(reply) = take_frame(&mut up.input) else {
            if eof {
                self.next_attempt(index, gen_);
            }
            return;
        };
        let (_, question) = c.query.as_ref().expect("a query is being resolved");
        let last = c.attempt + 1 >= self.cfg.upstreams.len();
        let failed = matches!(proto::rcode(&reply), Some(RCODE_SERVFAIL | RCODE_REFUSED));
        if !proto::answers(question, &reply) || (failed && !last) {
            return self.next_attempt(index, gen_);
        }
        c.upstream = None;
        c.query = None;
        c.output = frame(&reply);
        self.advance(index, gen_);
    }

    fn next_attempt(&mut self, index: u32, gen_: u32) {
        if let Some(c) = self.conns.get(index, gen_) {
            c.upstream = None;
            c.attempt += 1;
            self.start_attempt(index, gen_);
        }
    }

    fn close(&mut self, index: u32, gen_: u32) {
        if self.conns.get(index, gen_).is_some() {
            // Closing the sockets removes them from the epoll set.
            self.conns.slots[index as usize] = None;
            self.conns.open -= 1;
        }
    }

    /// Move late upstream attempts on; close idle clients.
    pub(super) fn tcp_expire(&mut self, now: Instant) {
        let mut late = Vec::new();
        let mut idle = Vec::new();
        for (i, c) in self.conns.slots.iter().enumerate() {
            let Some(c) = c else { continue };
            if c.upstream.as_ref().is_some_and(|u| u.deadline <= now) {
                late.push((i as u32, c.gen_));
            } else if c.query.is_none() && c.idle_deadline <= now {
                idle.push((i as u32, c.gen_));
            }
        }
        for (i, g) in late {
            self.next_attempt(i, g);
        }
        for (i, g) in idle {
            self.close(i, g);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_cut_at_their_length_and_wait_for_the_rest() {
        let mut buf = frame(b"abc");
        buf.extend_from_slice(&[0, 5, b'x']);
        assert_eq!(take_frame(&mut buf), Some(b"abc".to_vec()));
        assert_eq!(take_frame(&mut buf), None);
        buf.extend_from_slice(b"yzzz");
        assert_eq!(take_frame(&mut buf), Some(b"xyzzz".to_vec()));
        assert!(buf.is_empty());
    }
}

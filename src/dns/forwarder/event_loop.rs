//! The forwarder thread: one epoll instance (edge-triggered), the UDP
//! listener and upstream sockets, the TCP listener and its connections,
//! and the deadlines folded into the epoll timeout. UDP handling lives in
//! `udp.rs`, TCP in `tcp.rs`.

use super::cache::Cache;
use super::tcp::Conns;
use super::udp::Pending;
use super::{ForwarderConfig, ForwarderError, ForwarderStats, Listeners, LocalAnswer, new_socket};
use crate::dns::proto;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::net::{TcpListener, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Events handled per `epoll_wait`.
const EVENTS: usize = 64;

/// What an epoll event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Token {
    Waker,
    Udp,
    Tcp,
    /// The upstream UDP socket of a family (`true`: IPv6).
    Upstream(bool),
    /// A TCP client connection: slot and generation.
    Client(u32, u32),
    /// A TCP connection's upstream side: slot, generation, attempt.
    Server(u32, u32, u8),
}

impl Token {
    pub(super) fn encode(self) -> u64 {
        let slot = |kind: u64, index: u32, gen_: u32, attempt: u8| {
            kind << 60 | u64::from(attempt) << 48 | u64::from(gen_ & 0xffff) << 32 | u64::from(index)
        };
        match self {
            Self::Waker => 0,
            Self::Udp => 1,
            Self::Tcp => 2,
            Self::Upstream(v6) => 3 + u64::from(v6),
            Self::Client(i, g) => slot(1, i, g, 0),
            Self::Server(i, g, a) => slot(2, i, g, a),
        }
    }

    fn decode(data: u64) -> Option<Self> {
        let (index, gen_, attempt) = (data as u32, (data >> 32) as u32 & 0xffff, (data >> 48) as u8);
        match (data >> 60, data) {
            (0, 0) => Some(Self::Waker),
            (0, 1) => Some(Self::Udp),
            (0, 2) => Some(Self::Tcp),
            (0, 3) => Some(Self::Upstream(false)),
            (0, 4) => Some(Self::Upstream(true)),
            (1, _) => Some(Self::Client(index, gen_)),
            (2, _) => Some(Self::Server(index, gen_, attempt)),
            _ => None,
        }
    }
}

/// Everything the thread owns.
pub(super) struct Loop {
    pub(super) epoll: Epoll,
    waker: Arc<EventFd>,
    pub(super) udp: UdpSocket,
    pub(super) tcp: TcpListener,
    /// Upstream UDP sockets, IPv4 and IPv6 (only for families with upstreams).
    pub(super) up4: Option<UdpSocket>,
    pub(super) up6: Option<UdpSocket>,
    pub(super) cfg: ForwarderConfig,
    pub(super) pending: Pending,
    pub(super) conns: Conns,
    rng: u64,
    pub(super) stats: ForwarderStats,
    /// Upstream answers kept for their TTL.
    pub(super) cache: Cache,
    /// The UDP receive buffer (taken while in use).
    pub(super) buf: Vec<u8>,
}

impl Loop {
    pub(super) fn new(listeners: Listeners, cfg: ForwarderConfig) -> Result<Self, ForwarderError> {
        let start = |e: Errno| ForwarderError::Start(e.into());
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(start)?;
        let waker = Arc::new(EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).map_err(start)?);
        let upstream = |v6: bool| -> Result<Option<UdpSocket>, ForwarderError> {
            if !cfg.upstreams.iter().any(|u| u.is_ipv6() == v6) {
                return Ok(None);
            }
            let fd = new_socket(if v6 { libc::AF_INET6 } else { libc::AF_INET }, libc::SOCK_DGRAM)
                .map_err(ForwarderError::Upstream)?;
            Ok(Some(UdpSocket::from(fd)))
        };
        let (up4, up6) = (upstream(false)?, upstream(true)?);
        let edge = EpollFlags::EPOLLIN | EpollFlags::EPOLLET;
        epoll.add(waker.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, Token::Waker.encode())).map_err(start)?;
        epoll.add(listeners.udp.as_fd(), EpollEvent::new(edge, Token::Udp.encode())).map_err(start)?;
        epoll.add(listeners.tcp.as_fd(), EpollEvent::new(edge, Token::Tcp.encode())).map_err(start)?;
        for (sock, v6) in [(&up4, false), (&up6, true)] {
            if let Some(s) = sock {
                epoll.add(s.as_fd(), EpollEvent::new(edge, Token::Upstream(v6).encode())).map_err(start)?;
            }
        }
        Ok(Self {
            epoll,
            waker,
            udp: listeners.udp,
            tcp: listeners.tcp,
            up4,
            up6,
            pending: Pending::default(),
            conns: Conns::default(),
            rng: seed(),
            stats: ForwarderStats::default(),
            cache: Cache::new(cfg.cache),
            buf: Vec::new(),
            cfg,
        })
    }

    pub(super) fn waker(&self) -> Arc<EventFd> {
        Arc::clone(&self.waker)
    }

    /// Runs until woken; everything closes when it returns.
    pub(super) fn run(mut self) -> ForwarderStats {
        let mut events = vec![EpollEvent::empty(); EVENTS];
        loop {
            let now = Instant::now();
            let next = [self.pending.next_deadline(), self.conns.next_deadline()].into_iter().flatten().min();
            let timeout = match next {
                None => EpollTimeout::NONE,
                Some(at) => {
                    let ms = at.saturating_duration_since(now).as_millis().clamp(1, 60_000);
                    EpollTimeout::try_from(Duration::from_millis(ms as u64)).unwrap_or(EpollTimeout::NONE)
                }
            };
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("dns forwarder: epoll_wait: {e}; stopping");
                    break;
                }
            };
            let mut stop = false;
            for ev in &events[..n] {
                match Token::decode(ev.data()) {
                    Some(Token::Waker) => stop = true,
                    Some(Token::Udp) => self.udp_queries(),
                    Some(Token::Upstream(v6)) => self.udp_replies(v6),
                    Some(Token::Tcp) => self.accept(),
                    Some(Token::Client(i, g)) => self.client_event(i, g),
                    Some(Token::Server(i, g, a)) => self.server_event(i, g, a),
                    None => {}
                }
            }
            if stop {
                break;
            }
            let now = Instant::now();
            self.udp_expire(now);
            self.tcp_expire(now);
        }
        self.stats
    }

    /// The reply from the local table to `client`'s `query` for `name`,
    /// or `None` to forward it.
    pub(super) fn local_reply(&mut self, query: &[u8], client: std::net::IpAddr, name: &str) -> Option<Vec<u8>> {
        let reply = match self.cfg.names.answer(client, name) {
            LocalAnswer::Forward => return None,
            LocalAnswer::Addresses(addrs) => proto::address_reply(query, &addrs, self.cfg.local_ttl),
            LocalAnswer::NoSuchName => proto::error_reply(query, proto::RCODE_NXDOMAIN),
        };
        self.stats.local_answers += 1;
        // An unparsable question was filtered before; an empty reply is dropped.
        Some(reply.unwrap_or_default())
    }

    /// A fresh random 16-bit query ID (xorshift64*; seeded from the kernel).
    pub(super) fn random_id(&mut self) -> u16 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 48) as u16
    }
}

fn seed() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: getrandom writes at most `buf.len()` bytes into our buffer.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), libc::GRND_NONBLOCK) };
    let seed = u64::from_ne_bytes(buf);
    if n == 8 && seed != 0 {
        seed
    } else {
        // Never zero (xorshift would stay at zero).
        u64::from(std::process::id()) << 32 | Instant::now().elapsed().subsec_nanos() as u64 | 1
    }
}

#[cfg(test)]
mod tests {
    use super::Token;

    #[test]
    fn tokens_round_trip() {
        for t in [
            Token::Waker,
            Token::Udp,
            Token::Tcp,
            Token::Upstream(false),
            Token::Upstream(true),
            Token::Client(7, 0xffff),
            Token::Server(u32::MAX, 3, 200),
        ] {
            assert_eq!(Token::decode(t.encode()), Some(t));
        }
    }
}

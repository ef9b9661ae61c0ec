//! The relay thread's event loop: one epoll instance, a slab of
//! connections and flows addressed by generation-checked tokens, and the
//! timers (connect deadlines, UDP idle sweep, accept pause) folded into the
//! epoll timeout. TCP handling lives in `tcp.rs`, UDP in `udp.rs`.
//!
//! Tokens carry a slot generation (and, for a namespace-side TCP socket, the
//! connect attempt), so an event queued for a socket that was closed earlier
//! in the same batch never reaches whatever reuses its slot.

use super::listen::Listener;
use super::pipes::Pipes;
use super::tcp::Conn;
use super::udp::Flow;
use super::{Counters, ForwarderConfig, LoopEnd, PortfwdError, Releases, SockFamily, SocketSource, sys};
use crate::model::port::PortProto;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Events handled per `epoll_wait`.
const EVENTS: usize = 256;
/// How long listeners rest after running out of descriptors.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Largest UDP payload.
const UDP_BUF: usize = 65_536;

/// A slot in the slab, checked by generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct SlotRef {
    pub(super) index: u32,
    pub(super) gen_: u32,
}

/// What an epoll event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Token {
    /// The stop eventfd.
    Waker,
    /// The eventfd of listener release requests.
    Release,
    /// Listener number.
    Listener(u32),
    /// Client side of a TCP connection.
    Client(SlotRef),
    /// Namespace side of a TCP connection, for one connect attempt.
    Server(SlotRef, u8),
    /// Namespace side of a UDP flow.
    Flow(SlotRef),
}

const GEN_MASK: u32 = 0x00ff_ffff;

impl Token {
    pub(super) fn encode(self) -> u64 {
        let slot = |kind: u64, r: SlotRef, attempt: u8| {
            kind << 60 | u64::from(attempt & 0xf) << 56 | u64::from(r.gen_ & GEN_MASK) << 32 | u64::from(r.index)
        };
        match self {
            Token::Waker => 0,
            Token::Listener(i) => 1 << 60 | u64::from(i),
            Token::Client(r) => slot(2, r, 0),
            Token::Server(r, attempt) => slot(3, r, attempt),
            Token::Flow(r) => slot(4, r, 0),
            Token::Release => 5 << 60,
        }
    }

    pub(super) fn decode(data: u64) -> Option<Self> {
        let r = SlotRef { index: data as u32, gen_: (data >> 32) as u32 & GEN_MASK };
        let attempt = (data >> 56) as u8 & 0xf;
        match data >> 60 {
            0 => Some(Token::Waker),
            1 => Some(Token::Listener(data as u32)),
            2 => Some(Token::Client(r)),
            3 => Some(Token::Server(r, attempt)),
            4 => Some(Token::Flow(r)),
            5 => Some(Token::Release),
            _ => None,
        }
    }
}

/// What a slot holds.
pub(super) enum Entry {
    Tcp(Box<Conn>),
    Flow(Flow),
}

struct Slot {
    gen_: u32,
    entry: Option<Entry>,
}

/// Connections and flows, addressed by [`SlotRef`].
#[derive(Default)]
pub(super) struct Slab {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

impl Slab {
    pub(super) fn insert(&mut self, entry: Entry) -> SlotRef {
        if let Some(index) = self.free.pop() {
            let slot = &mut self.slots[index as usize];
            slot.entry = Some(entry);
            SlotRef { index, gen_: slot.gen_ }
        } else {
            let index = u32::try_from(self.slots.len()).expect("fewer than 2^32 connections");
            self.slots.push(Slot { gen_: 0, entry: Some(entry) });
            SlotRef { index, gen_: 0 }
        }
    }

    pub(super) fn get(&self, r: SlotRef) -> Option<&Entry> {
        let slot = self.slots.get(r.index as usize)?;
        if slot.gen_ == r.gen_ { slot.entry.as_ref() } else { None }
    }

    /// The reference the next [`Slab::insert`] returns.
    pub(super) fn next_ref(&self) -> SlotRef {
        match self.free.last() {
            Some(&index) => SlotRef { index, gen_: self.slots[index as usize].gen_ },
            None => SlotRef { index: u32::try_from(self.slots.len()).expect("fewer than 2^32 connections"), gen_: 0 },
        }
    }

    pub(super) fn get_mut(&mut self, r: SlotRef) -> Option<&mut Entry> {
        let slot = self.slots.get_mut(r.index as usize)?;
        if slot.gen_ == r.gen_ { slot.entry.as_mut() } else { None }
    }

    pub(super) fn remove(&mut self, r: SlotRef) -> Option<Entry> {
        let slot = self.slots.get_mut(r.index as usize)?;
        if slot.gen_ != r.gen_ || slot.entry.is_none() {
            return None;
        }
        slot.gen_ = slot.gen_.wrapping_add(1) & GEN_MASK;
        self.free.push(r.index);
        slot.entry.take()
    }

    /// Every occupied slot.
    pub(super) fn iter(&self) -> impl Iterator<Item = (SlotRef, &Entry)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.entry.as_ref().map(|e| (SlotRef { index: i as u32, gen_: s.gen_ }, e)))
    }
}

/// A listener as the loop keeps it.
pub(super) struct ListenerState {
    /// The socket; `None` once released ([`super::ListenerReleaser`]).
    pub(super) fd: Option<OwnedFd>,
    pub(super) local: SocketAddr,
    pub(super) proto: PortProto,
    pub(super) container_port: u16,
    /// UDP flows by client address.
    pub(super) flows: HashMap<SocketAddr, SlotRef>,
}

/// A pending connect attempt's deadline.
#[derive(Debug, Clone, Copy)]
pub(super) struct Deadline {
    pub(super) at: Instant,
    pub(super) conn: SlotRef,
    pub(super) attempt: u8,
}

/// Everything the relay thread owns.
pub(crate) struct Relay {
    pub(super) epoll: Epoll,
    waker: Arc<EventFd>,
    releases: Arc<Releases>,
    pub(super) listeners: Vec<ListenerState>,
    pub(super) slab: Slab,
    pub(super) source: Box<dyn SocketSource>,
    pub(super) cfg: ForwarderConfig,
    pub(super) counters: Arc<Counters>,
    /// Connect deadlines in order (the timeout is the same for all).
    pub(super) connecting: VecDeque<Deadline>,
    pub(super) udp_buf: Vec<u8>,
    /// Set while TCP listeners rest after `EMFILE`.
    pub(super) accept_paused_until: Option<Instant>,
    /// Next UDP idle sweep, while any flow exists.
    pub(super) next_sweep: Option<Instant>,
    pub(super) tcp_open: usize,
    /// Makes the TCP relay pipes, within the pipe budget.
    pub(super) pipes: Pipes,
}

impl Relay {
    /// Registers the listeners and the wake-up eventfd with a new epoll instance.
    pub(crate) fn new(
        listeners: Vec<Listener>,
        source: Box<dyn SocketSource>,
        mut cfg: ForwarderConfig,
        counters: Arc<Counters>,
    ) -> Result<Self, PortfwdError> {
        cfg.max_udp_flows = cfg.max_udp_flows.max(1);
        let event_loop = |source| PortfwdError::EventLoop { source };
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(event_loop)?;
        let waker =
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).map_err(event_loop)?;
        epoll.add(waker.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, Token::Waker.encode())).map_err(event_loop)?;
        let releases = Arc::new(Releases::new().map_err(event_loop)?);
        let release_events = EpollEvent::new(EpollFlags::EPOLLIN, Token::Release.encode());
        epoll.add(releases.wake.as_fd(), release_events).map_err(event_loop)?;
        let mut states = Vec::with_capacity(listeners.len());
        for (i, l) in listeners.into_iter().enumerate() {
            let register = |source| PortfwdError::Register { addr: l.local, proto: l.proto, source };
            sys::set_nonblocking(&l.fd).map_err(register)?;
            let token = Token::Listener(u32::try_from(i).expect("fewer than 2^32 listeners")).encode();
            epoll.add(&l.fd, EpollEvent::new(EpollFlags::EPOLLIN, token)).map_err(register)?;
            // A wildcard UDP listener learns where each datagram was sent
            // (`IP_PKTINFO`), to reply from that address.
            if l.proto == PortProto::Udp && l.local.ip().is_unspecified() {
                sys::enable_pktinfo(l.fd.as_fd(), SockFamily::of(&l.local)).map_err(register)?;
            }
            states.push(ListenerState {
                fd: Some(l.fd),
                local: l.local,
                proto: l.proto,
                container_port: l.container_port,
                flows: HashMap::new(),
            });
        }
        let pipes = Pipes::new(cfg.pipe_size);
        Ok(Self {
            epoll,
            waker: Arc::new(waker),
            releases,
            listeners: states,
            slab: Slab::default(),
            source,
            cfg,
            counters,
            connecting: VecDeque::new(),
            udp_buf: vec![0; UDP_BUF],
            accept_paused_until: None,
            next_sweep: None,
            tcp_open: 0,
            pipes,
        })
    }

    /// The eventfd that stops the loop when written.
    pub(crate) fn waker(&self) -> Arc<EventFd> {
        Arc::clone(&self.waker)
    }

    /// Where listener release requests go.
    pub(crate) fn releases(&self) -> Arc<Releases> {
        Arc::clone(&self.releases)
    }

    /// Runs until woken, then closes everything.
    pub(crate) fn run(mut self) -> LoopEnd {
        let mut events = vec![EpollEvent::empty(); EVENTS];
        let error = loop {
            let timeout = self.timeout(Instant::now());
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(source) => break Some(PortfwdError::Wait { source }),
            };
            let mut stop = false;
            for event in &events[..n] {
                let flags = event.events();
                match Token::decode(event.data()) {
                    Some(Token::Waker) => stop = true,
                    Some(Token::Release) => self.on_release(),
                    Some(Token::Listener(i)) => self.on_listener(i as usize),
                    Some(Token::Client(r)) => self.on_client(r, flags),
                    Some(Token::Server(r, attempt)) => self.on_server(r, attempt, flags),
                    Some(Token::Flow(r)) => self.on_flow(r),
                    None => {}
                }
            }
            if stop {
                break None;
            }
            self.on_timers(Instant::now());
        };
        let cpu = sys::thread_cpu();
        self.close_all();
        LoopEnd { cpu, error }
    }

    /// Answers the release requests: a TCP listener leaves the loop and
    /// goes to whoever asked (connections it accepted before stay relayed).
    fn on_release(&mut self) {
        let _ = self.releases.wake.read();
        for (addr, reply) in self.releases.take() {
            let found = self.listeners.iter_mut().find(|l| l.local == addr && l.proto == PortProto::Tcp);
            let fd = found.and_then(|l| l.fd.take());
            if let Some(fd) = &fd {
                let _ = self.epoll.delete(fd);
            }
            let _ = reply.send(fd);
        }
    }

    fn on_listener(&mut self, i: usize) {
        match self.listeners.get(i).map(|l| l.proto) {
            Some(PortProto::Tcp) => self.accept_tcp(i),
            Some(PortProto::Udp) => self.on_udp_listener(i),
            None => {}
        }
    }

    /// Milliseconds until the nearest timer, or `None` (wait forever).
    fn timeout(&self, now: Instant) -> Option<u16> {
        let nearest = [self.connecting.front().map(|d| d.at), self.next_sweep, self.accept_paused_until]
            .into_iter()
            .flatten()
            .min()?;
        let wait = nearest.saturating_duration_since(now);
        // Round up so the loop never wakes just before a deadline.
        let ms = wait.as_micros().div_ceil(1000).min(1000);
        Some(ms as u16)
    }

    fn on_timers(&mut self, now: Instant) {
        if self.accept_paused_until.is_some_and(|t| t <= now) {
            self.resume_accept();
        }
        self.expire_connects(now);
        if self.next_sweep.is_some_and(|t| t <= now) {
            self.sweep_flows(now);
        }
    }

    /// Stops accepting for a moment (out of descriptors: retrying at once
    /// would spin).
    pub(super) fn pause_accept(&mut self) {
        self.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
        for (i, l) in self.listeners.iter().enumerate() {
            if let (PortProto::Tcp, Some(fd)) = (l.proto, &l.fd) {
                let mut ev = EpollEvent::new(EpollFlags::empty(), Token::Listener(i as u32).encode());
                let _ = self.epoll.modify(fd, &mut ev);
            }
        }
    }

    pub(super) fn resume_accept(&mut self) {
        if self.accept_paused_until.take().is_none() {
            return;
        }
        for (i, l) in self.listeners.iter().enumerate() {
            if let (PortProto::Tcp, Some(fd)) = (l.proto, &l.fd) {
                let mut ev = EpollEvent::new(EpollFlags::EPOLLIN, Token::Listener(i as u32).encode());
                let _ = self.epoll.modify(fd, &mut ev);
            }
        }
    }

    /// Closes every connection (with a reset: the relay is going away),
    /// every flow and every listener.
    fn close_all(&mut self) {
        for (_, entry) in self.slab.iter() {
            if let Entry::Tcp(conn) = entry {
                conn.arm_reset();
            }
        }
        self.slab = Slab::default();
        self.listeners.clear();
        self.counters.tcp_active.store(0, Ordering::Relaxed);
        self.counters.udp_flows_active.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
#[path = "event_loop_tests.rs"]
mod tests;

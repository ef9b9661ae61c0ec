//! TCP relaying: accept, connect attempts inside the namespace, and the
//! splice pump.
//!
//! Sockets are registered edge-triggered for both directions once; the
//! connection remembers which side is readable or writable and the pump
//! moves data until no step makes progress. A pipe that will not take more
//! is "full" while it still holds data (its slots may fill before its byte
//! capacity), so reading the source waits until the pipe drains: that is the
//! backpressure, and it costs no `epoll_ctl` calls. Pipes come from
//! [`Pipes`](super::pipes::Pipes), one per direction while it carries data.
//!
//! A socket reporting an error or a hang-up is pumped first. What it
//! received before a reset is still passed on: a read that meets the reset
//! ends that direction like an EOF would, and once what the pipe holds is
//! delivered, the connection is reset instead of half-closed. A write that
//! meets a reset closes the connection at once. If the connection is still
//! open and the socket holds no unread data (which the pump reads first,
//! now or once the connect completes or the pipe drains), the socket is
//! asked for its pending error (`SO_ERROR`): a reset must reach the other
//! side even when the pump had nothing to do with the reset socket (its
//! direction at EOF, nothing queued for it), or the connection would wait
//! until the other side writes, perhaps forever.

use super::attempt::{Accepted, Attempt, plan_attempts};
use super::pipes::{Pipe, Pipes};
use super::relay::{Deadline, Entry, Relay, SlotRef, Token};
use super::{SockFamily, SockKind, sys};
use nix::errno::Errno;
use nix::sys::epoll::{EpollEvent, EpollFlags};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Size asked for each relay pipe: in `examples/bench_portfwd.rs`, 256 KiB
/// relays as fast as 1 MiB (about 0.6x direct loopback) at about 0.2 core,
/// and counts four times less against unprivileged pipe limits.
pub(crate) const DEFAULT_PIPE_SIZE: usize = 256 * 1024;
/// Connections accepted per listener wake-up, so one busy port cannot
/// starve the others.
const ACCEPT_BATCH: usize = 64;
/// How many of the newest connect deadlines are searched to drop the one
/// of a finished attempt; older ones are dropped when they reach the front.
const DEADLINE_SEARCH: usize = 16;

/// One direction of a connection.
#[derive(Debug, Default)]
struct Direction {
    /// The pipe, from the first read until the direction ends.
    pipe: Option<Pipe>,
    /// Bytes in the pipe.
    queued: usize,
    /// The source sent EOF.
    eof: bool,
    /// EOF was passed on (`shutdown(SHUT_WR)` of the destination).
    shut: bool,
    /// The source ended with this error instead of EOF: once the pipe is
    /// delivered, the connection is reset.
    failed: Option<Errno>,
}

/// Which side of a connection is ready for what (edge-triggered state).
#[derive(Debug, Default, Clone, Copy)]
struct Ready {
    readable: bool,
    writable: bool,
}

impl Ready {
    fn note(&mut self, flags: EpollFlags) {
        if flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR)
        {
            self.readable = true;
        }
        if flags.intersects(EpollFlags::EPOLLOUT | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR) {
            self.writable = true;
        }
    }
}

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Relaying,
}

/// Result of pumping a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pumped {
    /// Still relaying.
    Open,
    /// Both directions ended cleanly.
    Done,
}

/// A relayed TCP connection.
#[derive(Debug)]
pub(super) struct Conn {
    client: OwnedFd,
    server: Option<OwnedFd>,
    attempts: Vec<Attempt>,
    attempt: u8,
    phase: Phase,
    client_ready: Ready,
    server_ready: Ready,
    /// Client to namespace.
    up: Direction,
    /// Namespace to client.
    down: Direction,
}

impl Conn {
    /// Arms a reset on both sockets, for when the connection is dropped.
    pub(super) fn arm_reset(&self) {
        sys::arm_reset(self.client.as_fd());
        if let Some(server) = &self.server {
            sys::arm_reset(server.as_fd());
        }
    }

    /// Returns the pipes of both directions to `pipes`.
    fn close_pipes(&mut self, pipes: &mut Pipes) {
        for dir in [&mut self.up, &mut self.down] {
            if let Some(pipe) = dir.pipe.take() {
                pipes.close(pipe);
            }
        }
    }

    fn pump(
        &mut self,
        pipes: &mut Pipes,
        to_container: &AtomicU64,
        from_container: &AtomicU64,
    ) -> Result<Pumped, Errno> {
        let Some(server) = self.server.as_ref() else { return Ok(Pumped::Open) };
        let (client, server) = (self.client.as_fd(), server.as_fd());
        loop {
            let up = pump_direction(
                &mut self.up,
                pipes,
                (client, &mut self.client_ready.readable),
                (server, &mut self.server_ready.writable),
                to_container,
            )?;
            let down = pump_direction(
                &mut self.down,
                pipes,
                (server, &mut self.server_ready.readable),
                (client, &mut self.client_ready.writable),
                from_container,
            )?;
            if !up && !down {
                break;
            }
        }
        Ok(if self.up.shut && self.down.shut { Pumped::Done } else { Pumped::Open })
    }
}

/// Moves what it can from `src` through the pipe (made on the first read)
/// to `dst`; true when anything changed.
fn pump_direction(
    dir: &mut Direction,
    pipes: &mut Pipes,
    (src, src_readable): (BorrowedFd<'_>, &mut bool),
    (dst, dst_writable): (BorrowedFd<'_>, &mut bool),
    delivered: &AtomicU64,
) -> Result<bool, Errno> {
    if dir.shut {
        return Ok(false);
    }
    if dir.pipe.is_none() && !dir.eof && *src_readable {
        dir.pipe = Some(pipes.open().inspect_err(|e| log::warn!("relay pipe: {e}"))?);
    }
    let Some(Pipe { read: pipe_r, write: pipe_w, cap, .. }) = dir.pipe.as_ref() else { return Ok(false) };
    let mut progress = false;
    if !dir.eof && *src_readable && dir.queued < *cap {
        match sys::splice(src, pipe_w.as_fd(), *cap) {
            Ok(0) => {
                dir.eof = true;
                progress = true;
            }
            Ok(n) => {
                dir.queued += n;
                progress = true;
            }
            // With data queued this may only mean "pipe full": keep the
            // source readable and retry once the pipe drains.
            Err(Errno::EAGAIN) if dir.queued == 0 => *src_readable = false,
            Err(Errno::EAGAIN) => {}
            // Deliver what arrived before the error, then reset.
            Err(e) => {
                dir.eof = true;
                dir.failed = Some(e);
                progress = true;
            }
        }
    }
    if dir.queued > 0 && *dst_writable {
        match sys::splice(pipe_r.as_fd(), dst, dir.queued) {
            Ok(n) => {
                dir.queued -= n;
                delivered.fetch_add(n as u64, Ordering::Relaxed);
                progress = progress || n > 0;
            }
            Err(Errno::EAGAIN) => *dst_writable = false,
            Err(e) => return Err(e),
        }
    }
    if dir.eof && dir.queued == 0 {
        if let Some(e) = dir.failed {
            return Err(e);
        }
        sys::shutdown_write(dst)?;
        dir.shut = true;
        progress = true;
        if let Some(pipe) = dir.pipe.take() {
            pipes.close(pipe);
        }
    }
    Ok(progress)
}

/// Whether an event may report a reset or another error.
fn may_have_failed(flags: EpollFlags) -> bool {
    flags.intersects(EpollFlags::EPOLLERR | EpollFlags::EPOLLHUP)
}

/// Whether an accept error means "out of descriptors or memory".
fn out_of_resources(e: Errno) -> bool {
    matches!(e, Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)
}

impl Relay {
    /// Accepts pending connections on TCP listener `i`.
    pub(super) fn accept_tcp(&mut self, i: usize) {
        for _ in 0..ACCEPT_BATCH {
            let listener = &self.listeners[i];
            let (client, peer) = match sys::accept(listener.fd.as_fd()) {
                Ok(accepted) => accepted,
                Err(Errno::EAGAIN) => return,
                Err(e) if out_of_resources(e) => {
                    log::warn!("accept on {}: {e}; pausing accepts", listener.local);
                    self.pause_accept();
                    return;
                }
                // The client gave up before we accepted it, and the like.
                Err(_) => continue,
            };
            if self.tcp_open >= self.cfg.max_connections {
                sys::arm_reset(client.as_fd());
                self.counters.tcp_rejected.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let accepted = Accepted {
                client: peer,
                listener: SockFamily::of(&listener.local),
                container_port: listener.container_port,
            };
            let attempts = plan_attempts(accepted, &self.cfg.targets, self.cfg.preserve_source);
            let conn = Conn {
                client,
                server: None,
                attempts,
                attempt: 0,
                phase: Phase::Connecting,
                client_ready: Ready::default(),
                server_ready: Ready::default(),
                up: Direction::default(),
                down: Direction::default(),
            };
            let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET;
            let r = self.slab.next_ref();
            if self.epoll.add(&conn.client, EpollEvent::new(flags, Token::Client(r).encode())).is_err() {
                conn.arm_reset();
                continue;
            }
            let inserted = self.slab.insert(Entry::Tcp(Box::new(conn)));
            debug_assert_eq!(inserted, r);
            self.tcp_open += 1;
            self.counters.tcp_accepted.fetch_add(1, Ordering::Relaxed);
            self.counters.tcp_active.fetch_add(1, Ordering::Relaxed);
            self.try_attempts(r);
        }
    }

    fn conn_mut(&mut self, r: SlotRef) -> Option<&mut Conn> {
        match self.slab.get_mut(r) {
            Some(Entry::Tcp(conn)) => Some(conn),
            _ => None,
        }
    }

    /// Starts the current attempt of `r`, moving on to the next on failure;
    /// all failing, resets the client.
    fn try_attempts(&mut self, r: SlotRef) {
        loop {
            let (attempt, index) = match self.conn_mut(r) {
                Some(conn) => match conn.attempts.get(conn.attempt as usize) {
                    Some(a) => (*a, conn.attempt),
                    None => break,
                },
                None => return,
            };
            match self.start_attempt(r, &attempt, index) {
                Ok(sys::Connect::InProgress) => {
                    let at = Instant::now() + self.cfg.connect_timeout;
                    self.connecting.push_back(Deadline { at, conn: r, attempt: index });
                    return;
                }
                Ok(sys::Connect::Done) => {
                    self.connected(r, index);
                    return;
                }
                Err(e) => {
                    log::debug!("connect to {} failed: {e}", attempt.dest);
                    if let Some(conn) = self.conn_mut(r) {
                        conn.server = None;
                        conn.attempt += 1;
                    }
                }
            }
        }
        self.counters.connect_failures.fetch_add(1, Ordering::Relaxed);
        self.close_conn(r, true);
    }

    fn start_attempt(&mut self, r: SlotRef, attempt: &Attempt, index: u8) -> Result<sys::Connect, Errno> {
        let fd = self
            .source
            .socket(attempt.family(), SockKind::Stream)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        if let Some(t) = &attempt.transparent {
            sys::make_transparent(fd.as_fd(), t)?;
        }
        let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET;
        self.epoll.add(&fd, EpollEvent::new(flags, Token::Server(r, index).encode()))?;
        let outcome = sys::connect(fd.as_fd(), attempt.dest);
        if let Some(conn) = self.conn_mut(r) {
            conn.server = Some(fd);
            conn.server_ready = Ready::default();
        }
        outcome
    }

    /// Attempt `attempt` of `r` connected: start relaying (the pipes come
    /// with the first data).
    fn connected(&mut self, r: SlotRef, attempt: u8) {
        self.forget_deadline(r, attempt);
        let Some(conn) = self.conn_mut(r) else { return };
        conn.phase = Phase::Relaying;
        conn.server_ready.writable = true;
        self.pump(r);
    }

    /// Drops the connect deadline of attempt `attempt` of `r`, when it is
    /// among the newest (connects finish mostly in order); any other stale
    /// deadline goes when it reaches the front of the queue.
    fn forget_deadline(&mut self, r: SlotRef, attempt: u8) {
        let newest = self.connecting.iter().rev().take(DEADLINE_SEARCH);
        if let Some(back) = newest.into_iter().position(|d| d.conn == r && d.attempt == attempt) {
            self.connecting.remove(self.connecting.len() - 1 - back);
        }
    }

    fn pump(&mut self, r: SlotRef) {
        let counters = std::sync::Arc::clone(&self.counters);
        let Some(Entry::Tcp(conn)) = self.slab.get_mut(r) else { return };
        match conn.pump(&mut self.pipes, &counters.bytes_to_container, &counters.bytes_from_container) {
            Ok(Pumped::Open) => {}
            Ok(Pumped::Done) => self.close_conn(r, false),
            Err(_) => self.close_conn(r, true),
        }
    }

    pub(super) fn on_client(&mut self, r: SlotRef, flags: EpollFlags) {
        let Some(conn) = self.conn_mut(r) else { return };
        conn.client_ready.note(flags);
        if conn.phase == Phase::Relaying {
            self.pump(r);
        }
        if may_have_failed(flags) {
            self.reset_if_failed(r, |conn| Some(conn.client.as_fd()));
        }
    }

    /// Closes `r` with a reset when the socket `side` picks has a pending
    /// error (reading it clears it: the connection goes either way), unless
    /// it still holds unread data: the pump reads that first and meets the
    /// error after it.
    fn reset_if_failed(&mut self, r: SlotRef, side: impl FnOnce(&Conn) -> Option<BorrowedFd<'_>>) {
        let Some(conn) = self.conn_mut(r) else { return };
        let Some(fd) = side(conn) else { return };
        if sys::unread_bytes(fd) > 0 {
            return;
        }
        if let Err(e) = sys::socket_error(fd) {
            log::debug!("relayed connection failed ({e}): resetting both sides");
            self.close_conn(r, true);
        }
    }

    pub(super) fn on_server(&mut self, r: SlotRef, attempt: u8, flags: EpollFlags) {
        let Some(conn) = self.conn_mut(r) else { return };
        if attempt != conn.attempt {
            return;
        }
        match conn.phase {
            Phase::Relaying => {
                conn.server_ready.note(flags);
                self.pump(r);
                if may_have_failed(flags) {
                    self.reset_if_failed(r, |conn| conn.server.as_ref().map(|s| s.as_fd()));
                }
            }
            Phase::Connecting => {
                conn.server_ready.note(flags);
                if !conn.server_ready.writable {
                    return;
                }
                let Some(server) = conn.server.as_ref() else { return };
                match sys::socket_error(server.as_fd()) {
                    Ok(()) => self.connected(r, attempt),
                    Err(e) => {
                        log::debug!("connect to {} failed: {e}", conn.attempts[attempt as usize].dest);
                        conn.server = None;
                        conn.attempt += 1;
                        self.forget_deadline(r, attempt);
                        self.try_attempts(r);
                    }
                }
            }
        }
    }

    /// Moves connections whose current attempt timed out to their next one,
    /// and drops deadlines at the front whose attempt already ended (so they
    /// never shorten the loop's timeout).
    pub(super) fn expire_connects(&mut self, now: Instant) {
        while let Some(d) = self.connecting.front().copied() {
            let pending =
                self.conn_mut(d.conn).is_some_and(|conn| conn.phase == Phase::Connecting && conn.attempt == d.attempt);
            if pending && d.at > now {
                break;
            }
            self.connecting.pop_front();
            if pending && let Some(conn) = self.conn_mut(d.conn) {
                conn.server = None;
                conn.attempt += 1;
                self.try_attempts(d.conn);
            }
        }
    }

    /// Closes a connection, with a reset when it failed.
    pub(super) fn close_conn(&mut self, r: SlotRef, reset: bool) {
        let Some(Entry::Tcp(mut conn)) = self.slab.remove(r) else { return };
        if conn.phase == Phase::Connecting {
            self.forget_deadline(r, conn.attempt);
        }
        if reset {
            conn.arm_reset();
        }
        conn.close_pipes(&mut self.pipes);
        drop(conn);
        self.tcp_open -= 1;
        self.counters.tcp_active.fetch_sub(1, Ordering::Relaxed);
        self.resume_accept();
    }
}

#[cfg(test)]
#[path = "tcp_tests.rs"]
mod tests;

//! TCP relaying: accept, connect attempts inside the namespace, and the
//! splice pump.
//!
//! Sockets are registered edge-triggered for both directions once; the
//! connection remembers which side is readable or writable and the pump
//! ([`super::pump`]) moves data until no step makes progress.
//!
//! A socket reporting an error or a hang-up is pumped first (what it
//! received before its reset is still passed on), then, if the connection
//! is still open, asked for its pending error (`SO_ERROR`): a reset must
//! reach the other side even when the pump had nothing to do with the reset
//! socket (its direction at EOF, nothing queued for it), or the connection
//! would wait until the other side writes, perhaps forever. Only while the
//! connect inside the namespace is pending is that question put off for a
//! socket with unread data, which the pump relays once connected.

use super::attempt::{Accepted, Attempt, plan_attempts};
use super::event_loop::{Deadline, Entry, Relay, SlotRef, Token};
use super::pipes::Pipes;
use super::pump::{Flow, Pumped};
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

/// Where a connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Relaying,
}

/// A relayed TCP connection.
#[derive(Debug)]
pub(super) struct Conn {
    client: OwnedFd,
    server: Option<OwnedFd>,
    attempts: Vec<Attempt>,
    attempt: u8,
    phase: Phase,
    flow: Flow,
}

impl Conn {
    /// Arms a reset on both sockets, for when the connection is dropped.
    pub(super) fn arm_reset(&self) {
        sys::arm_reset(self.client.as_fd());
        if let Some(server) = &self.server {
            sys::arm_reset(server.as_fd());
        }
    }

    fn pump(
        &mut self,
        pipes: &mut Pipes,
        to_container: &AtomicU64,
        from_container: &AtomicU64,
    ) -> Result<Pumped, Errno> {
        let Some(server) = self.server.as_ref() else { return Ok(Pumped::Open) };
        self.flow.pump(self.client.as_fd(), server.as_fd(), pipes, to_container, from_container)
    }
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
            let Some(fd) = &listener.fd else { return };
            let (client, peer) = match sys::accept(fd.as_fd()) {
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
            let conn =
                Conn { client, server: None, attempts, attempt: 0, phase: Phase::Connecting, flow: Flow::default() };
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
            conn.flow.new_server();
        }
        outcome
    }

    /// Attempt `attempt` of `r` connected: start relaying (the pipes come
    /// with the first data).
    fn connected(&mut self, r: SlotRef, attempt: u8) {
        self.forget_deadline(r, attempt);
        let Some(conn) = self.conn_mut(r) else { return };
        conn.phase = Phase::Relaying;
        conn.flow.server_connected();
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
        conn.flow.note_client(flags);
        if conn.phase == Phase::Relaying {
            self.pump(r);
        }
        if may_have_failed(flags) {
            self.reset_if_failed(r, |conn| Some(conn.client.as_fd()));
        }
    }

    /// Closes `r` with a reset when the socket `side` picks has a pending
    /// error (reading it clears it: the connection goes either way), unless
    /// the connect inside the namespace is still pending and the socket
    /// holds unread data: once connected, the pump reads that first and
    /// meets the error after it (the wait is bounded by the connect
    /// timeout). While relaying, the pump has just read what it could: data
    /// left unread means the other side is behind, and a dead peer does not
    /// hold the connection open for it.
    fn reset_if_failed(&mut self, r: SlotRef, side: impl FnOnce(&Conn) -> Option<BorrowedFd<'_>>) {
        let Some(conn) = self.conn_mut(r) else { return };
        let connecting = conn.phase == Phase::Connecting;
        let Some(fd) = side(conn) else { return };
        if connecting && sys::unread_bytes(fd) > 0 {
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
                conn.flow.note_server(flags);
                self.pump(r);
                if may_have_failed(flags) {
                    self.reset_if_failed(r, |conn| conn.server.as_ref().map(|s| s.as_fd()));
                }
            }
            Phase::Connecting => {
                conn.flow.note_server(flags);
                if !conn.flow.server_writable() {
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
        conn.flow.close_pipes(&mut self.pipes);
        drop(conn);
        self.tcp_open -= 1;
        self.counters.tcp_active.fetch_sub(1, Ordering::Relaxed);
        self.resume_accept();
    }
}

#[cfg(test)]
#[path = "tcp_tests.rs"]
mod tests;

//! UDP: queries from clients are answered locally or sent upstream under
//! a fresh random ID; replies are matched by ID, source and question and
//! sent back under the client's ID; an attempt that times out (or an
//! upstream that answers SERVFAIL or REFUSED) moves on to the next upstream.

use super::cache::Lookup;
use super::event_loop::Loop;
use crate::dns::proto::{self, Question, RCODE_REFUSED, RCODE_SERVFAIL};
use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Instant;

/// Largest datagram.
const BUF: usize = 65_536;
/// Datagrams read per readiness event before others get a turn.
const BATCH: usize = 64;

/// A query in flight upstream.
pub(super) struct Query {
    client: SocketAddr,
    client_id: u16,
    question: Question,
    /// The query as sent upstream (our ID).
    msg: Vec<u8>,
    /// Index of the upstream asked.
    upstream: usize,
    /// Which attempt the current timer belongs to.
    serial: u32,
    /// What the answer is kept under (`None`: the cache is off).
    lookup: Option<Lookup>,
}

/// Queries in flight by upstream ID, with their deadlines in order.
#[derive(Default)]
pub(super) struct Pending {
    by_id: HashMap<u16, Query>,
    timers: VecDeque<(Instant, u16, u32)>,
    serial: u32,
}

impl Pending {
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.timers.front().map(|t| t.0)
    }
}

impl Loop {
    /// Read every queued client datagram.
    pub(super) fn udp_queries(&mut self) {
        let mut buf = self.take_buf();
        let mut drained = false;
        for _ in 0..BATCH {
            match self.udp.recv_from(&mut buf) {
                Ok((n, from)) => self.udp_query(&buf[..n], from),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    drained = true;
                    break;
                }
            }
        }
        self.buf = buf;
        if !drained {
            // More may be queued: edge-triggered, so come back without a new edge.
            self.requeue_udp();
        }
    }

    /// The receive buffer, allocated once (given back by the caller).
    fn take_buf(&mut self) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.buf);
        if buf.len() < BUF {
            buf.resize(BUF, 0);
        }
        buf
    }

    fn requeue_udp(&mut self) {
        use nix::sys::epoll::{EpollEvent, EpollFlags};
        use std::os::fd::AsFd;
        let mut ev = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, super::event_loop::Token::Udp.encode());
        let _ = self.epoll.modify(self.udp.as_fd(), &mut ev);
    }

    fn udp_query(&mut self, msg: &[u8], from: SocketAddr) {
        if !proto::is_query(msg) {
            return;
        }
        let Some(question) = proto::question(msg) else {
            return;
        };
        self.stats.udp_queries += 1;
        if let Some(reply) = self.local_reply(msg, from.ip(), &question.name) {
            let _ = self.udp.send_to(&reply, from);
            return;
        }
        let lookup = if self.cache.enabled() { Lookup::of(msg, &question) } else { None };
        if let Some(look) = &lookup
            && let Some(reply) = self.cache.get(look, msg, &question, Instant::now())
        {
            self.stats.cache_hits += 1;
            let _ = self.udp.send_to(&reply, from);
            return;
        }
        if self.pending.by_id.len() >= self.cfg.limits.max_pending || self.cfg.upstreams.is_empty() {
            self.servfail_to(msg, from);
            return;
        }
        let mut id = self.random_id();
        while self.pending.by_id.contains_key(&id) {
            id = self.random_id();
        }
        let mut out = msg.to_vec();
        proto::set_id(&mut out, id);
        let client_id = proto::id(msg).unwrap_or(0);
        let q = Query { client: from, client_id, question, msg: out, upstream: 0, serial: 0, lookup };
        self.pending.by_id.insert(id, q);
        self.send_attempt(id);
    }

    /// Send query `id` to its current upstream, moving on past upstreams
    /// that cannot even be sent to; answer SERVFAIL when none is left.
    fn send_attempt(&mut self, id: u16) {
        loop {
            let Some(q) = self.pending.by_id.get_mut(&id) else { return };
            let Some(&dest) = self.cfg.upstreams.get(q.upstream) else {
                self.fail(id);
                return;
            };
            let sock = if dest.is_ipv6() { self.up6.as_ref() } else { self.up4.as_ref() };
            if sock.is_some_and(|s| s.send_to(&q.msg, dest).is_ok()) {
                self.pending.serial = self.pending.serial.wrapping_add(1);
                q.serial = self.pending.serial;
                let deadline = Instant::now() + self.cfg.limits.attempt_timeout;
                self.pending.timers.push_back((deadline, id, q.serial));
                return;
            }
            q.upstream += 1;
        }
    }

    /// Read every queued upstream reply of one family.
    pub(super) fn udp_replies(&mut self, v6: bool) {
        let mut buf = self.take_buf();
        while let Some(sock) = if v6 { self.up6.as_ref() } else { self.up4.as_ref() } {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => self.udp_reply(&buf[..n], from),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // WouldBlock (drained) or anything else: the attempt's timer
                // handles an upstream that never answers.
                Err(_) => break,
            }
        }
        self.buf = buf;
    }

    fn udp_reply(&mut self, reply: &[u8], from: SocketAddr) {
        let Some(id) = proto::id(reply) else { return };
        let Some(q) = self.pending.by_id.get(&id) else { return };
        if self.cfg.upstreams.get(q.upstream) != Some(&from) || !proto::answers(&q.question, reply) {
            return;
        }
        let more = q.upstream + 1 < self.cfg.upstreams.len();
        if more && matches!(proto::rcode(reply), Some(RCODE_SERVFAIL | RCODE_REFUSED)) {
            self.next_upstream(id);
            return;
        }
        let Some(q) = self.pending.by_id.remove(&id) else { return };
        let mut out = reply.to_vec();
        proto::set_id(&mut out, q.client_id);
        let _ = self.udp.send_to(&out, q.client);
        if let Some(look) = q.lookup {
            self.cache.put(look, &q.question, reply, Instant::now());
        }
    }

    fn next_upstream(&mut self, id: u16) {
        if let Some(q) = self.pending.by_id.get_mut(&id) {
            q.upstream += 1;
            self.send_attempt(id);
        }
    }

    /// Answer SERVFAIL for query `id` and forget it.
    fn fail(&mut self, id: u16) {
        if let Some(q) = self.pending.by_id.remove(&id) {
            let mut msg = q.msg;
            proto::set_id(&mut msg, q.client_id);
            self.servfail_to(&msg, q.client);
        }
    }

    fn servfail_to(&mut self, query: &[u8], to: SocketAddr) {
        self.stats.servfail += 1;
        if let Some(reply) = proto::error_reply(query, RCODE_SERVFAIL) {
            let _ = self.udp.send_to(&reply, to);
        }
    }

    /// Move every attempt whose deadline passed to its next upstream.
    pub(super) fn udp_expire(&mut self, now: Instant) {
        while let Some(&(at, id, serial)) = self.pending.timers.front() {
            if at > now {
                break;
            }
            self.pending.timers.pop_front();
            if self.pending.by_id.get(&id).is_some_and(|q| q.serial == serial) {
                self.next_upstream(id);
            }
        }
    }
}

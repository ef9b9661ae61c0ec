//! UDP relaying: one flow per client address, each a connected datagram
//! socket inside the namespace, replies sent back from the listener.
//!
//! A flow connects to the loopback of the listener's family and, like a TCP
//! connection, moves once to the other family's loopback when that cannot
//! be connected or refuses a datagram (an ICMP port unreachable, reported
//! as `ECONNREFUSED`) before anything was answered: a server listening on
//! IPv4 only still serves the clients of an IPv6 listener. Until the flow
//! is answered or has moved, it keeps a copy of the last datagram (up to
//! [`KEEP_MAX`] bytes, so memory stays bounded by the flow limit) to resend
//! after the move. A refused datagram that is not resent is counted as
//! dropped.
//!
//! A flow refused by both families before it was ever answered is closed:
//! nothing listens yet (a client usually starts sending before the
//! command's server has bound), and the client's next datagram opens a new
//! flow that tries both again. Kept open, the flow would stay on the second
//! family for good, and a server that binds the first a moment later would
//! never be reached while the client keeps the flow alive. A refusal only
//! ever costs the refused datagram: one that finds the refusal pending on
//! its flow's socket (and so was not sent) is sent on once the refusal is
//! handled.
//!
//! A listener bound to a wildcard address reads every datagram with its
//! destination (`IP_PKTINFO`, `IPV6_PKTINFO`) and replies from that address:
//! left to the kernel, the source of a reply follows the route back, and a
//! client that connected its socket to the address it sent to (or reached
//! a multi-homed host on another address) drops a reply from elsewhere.
//!
//! Flows end when idle for [`ForwarderConfig::udp_idle`](super::ForwarderConfig)
//! (swept on a timer that runs only while flows exist) or when a listener
//! holds `max_udp_flows` and a new client arrives (least recently used
//! evicted). A datagram that cannot be delivered at once is dropped and
//! counted, as the network would.

use super::attempt::flow_destinations;
use super::event_loop::{Entry, Relay, SlotRef, Token};
use super::sys::{self, LocalAddr};
use super::{SockFamily, SockKind};
use nix::errno::Errno;
use nix::sys::epoll::{EpollEvent, EpollFlags};
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Datagrams handled per wake-up of one socket.
const BATCH: usize = 64;
/// Largest datagram a flow keeps to resend after moving to the other family.
const KEEP_MAX: usize = 4096;

/// A UDP flow.
#[derive(Debug)]
pub(super) struct Flow {
    /// Connected socket inside the namespace.
    sock: OwnedFd,
    /// Listener index.
    listener: usize,
    /// The client.
    client: SocketAddr,
    /// Where the client's last datagram went (wildcard listeners only):
    /// replies come from there.
    local: Option<LocalAddr>,
    /// The flow has moved to its second destination (or failed to).
    moved: bool,
    /// The namespace answered: the flow stays where it is.
    answered: bool,
    /// The last datagram sent, kept while the flow may still move.
    kept: Vec<u8>,
    /// Last datagram either way.
    last: Instant,
}

impl Flow {
    fn new(sock: OwnedFd, listener: usize, client: SocketAddr, moved: bool) -> Self {
        Flow { sock, listener, client, local: None, moved, answered: false, kept: Vec::new(), last: Instant::now() }
    }

    /// A flow holding `/dev/null`, for slab tests.
    #[cfg(test)]
    pub(super) fn placeholder() -> Self {
        let sock = std::fs::File::open("/dev/null").expect("open /dev/null").into();
        Flow::new(sock, 0, SocketAddr::from(([127, 0, 0, 1], 1)), false)
    }

    fn may_move(&self) -> bool {
        !self.moved && !self.answered
    }
}

/// What handling a refusal did to its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterRefusal {
    /// The flow was answered before: it stays on its socket.
    Stays,
    /// The flow moved to its second destination.
    Moved,
    /// The flow is gone (refused by both destinations, or could not move).
    Closed,
}

/// Makes `kept` a copy of `datagram`, or empty when it is too large to keep.
fn keep(kept: &mut Vec<u8>, datagram: &[u8]) {
    kept.clear();
    if datagram.len() <= KEEP_MAX {
        kept.extend_from_slice(datagram);
    }
}

impl Relay {
    fn sweep_interval(&self) -> Duration {
        (self.cfg.udp_idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    /// Reads datagrams from UDP listener `i` and passes each to its flow.
    pub(super) fn on_udp_listener(&mut self, i: usize) {
        let mut buf = std::mem::take(&mut self.udp_buf);
        for _ in 0..BATCH {
            let Some(fd) = &self.listeners[i].fd else { break };
            let (n, client, to) = match sys::recv_datagram(fd.as_fd(), &mut buf) {
                Ok(sys::Datagram { len, from: Some(client), to }) => (len, client, to),
                Ok(_) => continue,
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::debug!("udp receive on {}: {e}", self.listeners[i].local);
                    break;
                }
            };
            let r = match self.listeners[i].flows.get(&client) {
                Some(&r) => r,
                None => match self.open_flow(i, client) {
                    Ok(r) => r,
                    Err(e) => {
                        log::debug!("udp flow for {client}: {e}");
                        self.counters.udp_dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                },
            };
            self.deliver(r, &buf[..n], to);
        }
        self.udp_buf = buf;
    }

    /// Sends a client's datagram, sent to `to`, into flow `r`.
    fn deliver(&mut self, r: SlotRef, datagram: &[u8], to: Option<LocalAddr>) {
        let Some(Entry::Flow(flow)) = self.slab.get_mut(r) else { return };
        flow.last = Instant::now();
        flow.local = to;
        let (listener, client) = (flow.listener, flow.client);
        match self.send_into(r, datagram) {
            Ok(()) => {}
            // An earlier datagram was refused, and this one was not sent:
            // handle the refusal, then send this one where the client's
            // flow now goes (a new flow when the refusal closed it).
            Err(Errno::ECONNREFUSED) => {
                let r = match self.refused(r) {
                    AfterRefusal::Closed => match self.open_flow(listener, client) {
                        Ok(r) => r,
                        Err(e) => {
                            log::debug!("udp flow for {client}: {e}");
                            self.counters.udp_dropped.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    },
                    AfterRefusal::Moved | AfterRefusal::Stays => r,
                };
                if let Some(Entry::Flow(flow)) = self.slab.get_mut(r) {
                    flow.local = to;
                }
                if self.send_into(r, datagram).is_err() {
                    self.counters.udp_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(_) => {
                self.counters.udp_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// One send of `datagram` on flow `r`'s socket; a flow that may still
    /// move keeps what it sent, to resend if it is refused.
    fn send_into(&mut self, r: SlotRef, datagram: &[u8]) -> Result<(), Errno> {
        let Some(Entry::Flow(flow)) = self.slab.get_mut(r) else { return Err(Errno::EBADF) };
        let sent = sys::send(flow.sock.as_fd(), datagram)?;
        if flow.may_move() {
            keep(&mut flow.kept, datagram);
        }
        self.counters.bytes_to_container.fetch_add(sent as u64, Ordering::Relaxed);
        Ok(())
    }

    /// A datagram socket inside the namespace connected to `dest`, its
    /// events going to flow `r`.
    fn flow_socket(&mut self, r: SlotRef, dest: SocketAddr) -> Result<OwnedFd, Errno> {
        let sock = self
            .source
            .socket(SockFamily::of(&dest), SockKind::Datagram)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        sys::connect(sock.as_fd(), dest)?;
        self.epoll.add(&sock, EpollEvent::new(EpollFlags::EPOLLIN, Token::Flow(r).encode()))?;
        Ok(sock)
    }

    fn open_flow(&mut self, i: usize, client: SocketAddr) -> Result<SlotRef, Errno> {
        if self.listeners[i].flows.len() >= self.cfg.max_udp_flows {
            self.evict_oldest(i);
        }
        let listener = &self.listeners[i];
        let dests = flow_destinations(SockFamily::of(&listener.local), listener.container_port);
        let r = self.slab.next_ref();
        let (sock, moved) = match self.flow_socket(r, dests[0]) {
            Ok(sock) => (sock, false),
            Err(e) => {
                log::debug!("udp flow to {}: {e}; trying {}", dests[0], dests[1]);
                (self.flow_socket(r, dests[1])?, true)
            }
        };
        let inserted = self.slab.insert(Entry::Flow(Flow::new(sock, i, client, moved)));
        debug_assert_eq!(inserted, r);
        self.listeners[i].flows.insert(client, r);
        self.counters.udp_flows_created.fetch_add(1, Ordering::Relaxed);
        self.counters.udp_flows_active.fetch_add(1, Ordering::Relaxed);
        if self.next_sweep.is_none() {
            self.next_sweep = Some(Instant::now() + self.sweep_interval());
        }
        Ok(r)
    }

    /// The namespace refused a datagram of flow `r` (the last one sent,
    /// as far as it can be known). An answered flow stays where it is; an
    /// unanswered one moves to its second destination and resends its kept
    /// datagram, or, refused there too, is closed. The refused datagram is
    /// counted as dropped unless it was resent.
    fn refused(&mut self, r: SlotRef) -> AfterRefusal {
        let Some(Entry::Flow(flow)) = self.slab.get_mut(r) else { return AfterRefusal::Closed };
        if flow.answered {
            self.counters.udp_dropped.fetch_add(1, Ordering::Relaxed);
            return AfterRefusal::Stays;
        }
        if flow.moved {
            log::debug!("udp flow for {} refused by both loopbacks; closed until its next datagram", flow.client);
            self.close_flow(r);
            self.counters.udp_dropped.fetch_add(1, Ordering::Relaxed);
            return AfterRefusal::Closed;
        }
        flow.moved = true;
        let kept = std::mem::take(&mut flow.kept);
        let listener = &self.listeners[flow.listener];
        let dest = flow_destinations(SockFamily::of(&listener.local), listener.container_port)[1];
        let sock = match self.flow_socket(r, dest) {
            Ok(sock) => sock,
            Err(e) => {
                log::debug!("udp flow to {dest}: {e}");
                self.close_flow(r);
                self.counters.udp_dropped.fetch_add(1, Ordering::Relaxed);
                return AfterRefusal::Closed;
            }
        };
        let Some(Entry::Flow(flow)) = self.slab.get_mut(r) else { return AfterRefusal::Closed };
        log::debug!("udp flow for {} refused; moved to {dest}", flow.client);
        let old = std::mem::replace(&mut flow.sock, sock);
        // Explicitly: the old socket may still hold events, under the same token.
        let _ = self.epoll.delete(&old);
        if kept.is_empty() || self.send_into(r, &kept).is_err() {
            self.counters.udp_dropped.fetch_add(1, Ordering::Relaxed);
        }
        AfterRefusal::Moved
    }

    fn evict_oldest(&mut self, i: usize) {
        let oldest = self.listeners[i]
            .flows
            .values()
            .filter_map(|&r| match self.slab.get(r) {
                Some(Entry::Flow(flow)) => Some((flow.last, r)),
                _ => None,
            })
            .min_by_key(|(last, _)| *last);
        if let Some((_, r)) = oldest {
            self.close_flow(r);
        }
    }

    fn close_flow(&mut self, r: SlotRef) {
        let Some(Entry::Flow(flow)) = self.slab.remove(r) else { return };
        let _ = self.epoll.delete(&flow.sock);
        if let Some(l) = self.listeners.get_mut(flow.listener) {
            l.flows.remove(&flow.client);
        }
        self.counters.udp_flows_active.fetch_sub(1, Ordering::Relaxed);
    }

    /// Passes replies of flow `r` back to its client, from the address the
    /// client sent to.
    pub(super) fn on_flow(&mut self, r: SlotRef) {
        let mut buf = std::mem::take(&mut self.udp_buf);
        let mut refused = false;
        if let Some(Entry::Flow(flow)) = self.slab.get_mut(r) {
            let listener = &self.listeners[flow.listener];
            for _ in 0..BATCH {
                let n = match sys::recv_from(flow.sock.as_fd(), &mut buf) {
                    Ok((n, _)) => n,
                    Err(Errno::EAGAIN) => break,
                    // An ICMP error for an earlier datagram.
                    Err(Errno::ECONNREFUSED) => {
                        refused = true;
                        break;
                    }
                    Err(Errno::EINTR) => continue,
                    Err(_) => break,
                };
                flow.last = Instant::now();
                if !flow.answered {
                    flow.answered = true;
                    flow.kept = Vec::new();
                }
                let Some(fd) = &listener.fd else { break };
                match sys::send_datagram(fd.as_fd(), &buf[..n], flow.client, flow.local) {
                    Ok(sent) => self.counters.bytes_from_container.fetch_add(sent as u64, Ordering::Relaxed),
                    Err(_) => self.counters.udp_dropped.fetch_add(1, Ordering::Relaxed),
                };
            }
        }
        self.udp_buf = buf;
        if refused {
            self.refused(r);
        }
    }

    /// Closes flows idle for `udp_idle`.
    pub(super) fn sweep_flows(&mut self, now: Instant) {
        let idle = self.cfg.udp_idle;
        let expired: Vec<SlotRef> = self
            .slab
            .iter()
            .filter_map(|(r, e)| match e {
                Entry::Flow(flow) if now.saturating_duration_since(flow.last) >= idle => Some(r),
                _ => None,
            })
            .collect();
        for r in expired {
            self.close_flow(r);
        }
        let any = self.listeners.iter().any(|l| !l.flows.is_empty());
        self.next_sweep = any.then(|| now + self.sweep_interval());
    }
}

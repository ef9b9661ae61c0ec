//! UDP relaying: one flow per client address, each a connected datagram
//! socket inside the namespace (to the loopback of the listener's family),
//! replies sent back from the listener with `sendto`.
//!
//! Flows end when idle for [`ForwarderConfig::udp_idle`](super::ForwarderConfig)
//! (swept on a timer that runs only while flows exist) or when a listener
//! holds `max_udp_flows` and a new client arrives (least recently used
//! evicted). A datagram that cannot be delivered at once is dropped and
//! counted, as the network would.

use super::relay::{Entry, Relay, SlotRef, Token};
use super::{SockFamily, SockKind, sys};
use nix::errno::Errno;
use nix::sys::epoll::{EpollEvent, EpollFlags};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Datagrams handled per wake-up of one socket.
const BATCH: usize = 64;

/// A UDP flow.
#[derive(Debug)]
pub(super) struct Flow {
    /// Connected socket inside the namespace.
    sock: OwnedFd,
    /// Listener index.
    listener: usize,
    /// The client.
    client: SocketAddr,
    /// Last datagram either way.
    last: Instant,
}

impl Flow {
    /// A flow holding `/dev/null`, for slab tests.
    #[cfg(test)]
    pub(super) fn placeholder() -> Self {
        let sock = std::fs::File::open("/dev/null").expect("open /dev/null").into();
        Flow { sock, listener: 0, client: SocketAddr::from(([127, 0, 0, 1], 1)), last: Instant::now() }
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
            let (n, client) = match sys::recv_from(self.listeners[i].fd.as_fd(), &mut buf) {
                Ok((n, Some(client))) => (n, client),
                Ok((_, None)) => continue,
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
            let Some(Entry::Flow(flow)) = self.slab.get_mut(r) else { continue };
            flow.last = Instant::now();
            match sys::send(flow.sock.as_fd(), &buf[..n]) {
                Ok(sent) => self.counters.bytes_to_container.fetch_add(sent as u64, Ordering::Relaxed),
                Err(_) => self.counters.udp_dropped.fetch_add(1, Ordering::Relaxed),
            };
        }
        self.udp_buf = buf;
    }

    fn open_flow(&mut self, i: usize, client: SocketAddr) -> Result<SlotRef, Errno> {
        if self.listeners[i].flows.len() >= self.cfg.max_udp_flows {
            self.evict_oldest(i);
        }
        let listener = &self.listeners[i];
        let family = SockFamily::of(&listener.local);
        let dest = match family {
            SockFamily::V4 => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listener.container_port),
            SockFamily::V6 => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), listener.container_port),
        };
        let sock = self
            .source
            .socket(family, SockKind::Datagram)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        sys::connect(sock.as_fd(), dest)?;
        let r = self.slab.next_ref();
        self.epoll.add(&sock, EpollEvent::new(EpollFlags::EPOLLIN, Token::Flow(r).encode()))?;
        let inserted = self.slab.insert(Entry::Flow(Flow { sock, listener: i, client, last: Instant::now() }));
        debug_assert_eq!(inserted, r);
        self.listeners[i].flows.insert(client, r);
        self.counters.udp_flows_created.fetch_add(1, Ordering::Relaxed);
        self.counters.udp_flows_active.fetch_add(1, Ordering::Relaxed);
        if self.next_sweep.is_none() {
            self.next_sweep = Some(Instant::now() + self.sweep_interval());
        }
        Ok(r)
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
        if let Some(l) = self.listeners.get_mut(flow.listener) {
            l.flows.remove(&flow.client);
        }
        self.counters.udp_flows_active.fetch_sub(1, Ordering::Relaxed);
    }

    /// Passes replies of flow `r` back to its client.
    pub(super) fn on_flow(&mut self, r: SlotRef) {
        let mut buf = std::mem::take(&mut self.udp_buf);
        if let Some(Entry::Flow(flow)) = self.slab.get_mut(r) {
            let listener = &self.listeners[flow.listener];
            for _ in 0..BATCH {
                let n = match sys::recv_from(flow.sock.as_fd(), &mut buf) {
                    Ok((n, _)) => n,
                    Err(Errno::EAGAIN) => break,
                    // An ICMP error for an earlier datagram: nothing to pass on.
                    Err(Errno::ECONNREFUSED) | Err(Errno::EINTR) => continue,
                    Err(_) => break,
                };
                flow.last = Instant::now();
                match sys::send_to(listener.fd.as_fd(), &buf[..n], flow.client) {
                    Ok(sent) => self.counters.bytes_from_container.fetch_add(sent as u64, Ordering::Relaxed),
                    Err(_) => self.counters.udp_dropped.fetch_add(1, Ordering::Relaxed),
                };
            }
        }
        self.udp_buf = buf;
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

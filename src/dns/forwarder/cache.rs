//! The forwarder's answer cache, as a local forwarder's user expects from
//! dnsmasq or systemd-resolved: an upstream's answer is kept for its TTL
//! and served to the next client that asks the same question, without a
//! second upstream round trip.
//!
//! Pure: time comes in as an [`Instant`], messages as bytes. What it keeps:
//!
//! - keyed on the question (name lower-cased, type, class) and the bits of
//!   the query that change the answer: EDNS present, DO (DNSSEC records
//!   wanted), CD (checking disabled) and AD (the client understands the
//!   authenticated-data bit);
//! - only NOERROR and NXDOMAIN answers that are not truncated (TC), whose
//!   question is the one asked, at most [`CacheConfig::max_reply`] bytes;
//! - for [`CacheConfig::lifetime`]: positive answers the smallest TTL of
//!   their records, negative ones (NXDOMAIN, or NOERROR without answers)
//!   the smaller of their SOA's TTL and its MINIMUM field (RFC 2308; no
//!   SOA: not cached), both capped, and a TTL of 0 is not cached;
//! - at most [`CacheConfig::max_entries`] answers; a full cache drops the
//!   oldest (first stored), in constant time per answer stored.
//!
//! A served answer carries the client's ID, RD bit and question bytes (the
//! client's own letter case), and every record's TTL counts down: the
//! smaller of its own and the entry's lifetime, minus the time it has been
//! kept. The network's own names never reach it: the forwarder answers
//! them from its table before it looks here, and only upstream answers are
//! stored.

use crate::dns::proto::{self, HEADER_LEN, Question};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Type OPT (EDNS, RFC 6891): its TTL field holds flags, not a TTL.
const TYPE_OPT: u16 = 41;
/// Type SOA.
const TYPE_SOA: u16 = 6;
/// Header flags copied from the client's query into a served answer.
const FLAG_RD: u8 = 0x01;
/// CD, in the fourth header byte.
const FLAG_CD: u8 = 0x10;
/// AD, in the fourth header byte.
const FLAG_AD: u8 = 0x20;
/// DO, in the OPT record's TTL field.
const EDNS_DO: u32 = 0x8000;
/// Largest answer a client without EDNS accepts over UDP.
const PLAIN_UDP: usize = 512;

/// The cache's bounds; `max_entries == 0` turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Answers kept at once (0: no cache).
    pub max_entries: usize,
    /// Longest a positive answer is kept, whatever its TTL.
    pub max_ttl: Duration,
    /// Longest a negative answer is kept, whatever its SOA says.
    pub max_negative_ttl: Duration,
    /// Largest answer kept, in bytes.
    pub max_reply: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entries: 1024,
            max_ttl: Duration::from_secs(3600),
            max_negative_ttl: Duration::from_secs(300),
            max_reply: 4096,
        }
    }
}

/// The environment variable that sets the cache policy
/// ([`DnsCache`](crate::dns::options::DnsCache)).
pub const CACHE_ENV: &str = "PELAGOS_DNS_CACHE";

impl CacheConfig {
    /// No cache.
    pub const OFF: Self =
        Self { max_entries: 0, max_ttl: Duration::ZERO, max_negative_ttl: Duration::ZERO, max_reply: 0 };

    /// The default when `keep` (a policy that keeps answers), else [`CacheConfig::OFF`].
    pub fn keeping(keep: bool) -> Self {
        if keep { Self::default() } else { Self::OFF }
    }

    /// Whether answers are kept at all.
    pub fn enabled(&self) -> bool {
        self.max_entries > 0
    }
}

/// What makes two queries the same for the cache.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Key {
    name: String,
    qtype: u16,
    qclass: u16,
    /// EDNS present, DO, CD, AD.
    edns: bool,
    dnssec_ok: bool,
    checking_disabled: bool,
    authentic_data: bool,
}

/// What a query asks of the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Lookup {
    pub(super) key: Key,
    /// The largest UDP answer the client accepts.
    pub(super) udp_size: usize,
}

impl Lookup {
    /// The cache key and UDP size of `query` (whose question is `q`).
    pub(super) fn of(query: &[u8], q: &Question) -> Option<Self> {
        let opt = edns(query, q)?;
        let flag = |f: u8| query.get(3).is_some_and(|b| b & f != 0);
        let key = Key {
            name: q.name.clone(),
            qtype: q.qtype,
            qclass: q.qclass,
            edns: opt.is_some(),
            dnssec_ok: opt.is_some_and(|(_, ttl)| ttl & EDNS_DO != 0),
            checking_disabled: flag(FLAG_CD),
            authentic_data: flag(FLAG_AD),
        };
        let udp_size = opt.map_or(PLAIN_UDP, |(size, _)| usize::from(size).max(PLAIN_UDP));
        Some(Self { key, udp_size })
    }
}

/// One kept answer.
struct Entry {
    /// The answer as the upstream sent it.
    reply: Vec<u8>,
    /// Offset and original value of every TTL to count down.
    ttls: Vec<(usize, u32)>,
    /// Its lifetime in whole seconds, and when it was stored.
    lifetime: u32,
    stored: Instant,
    /// Which store this was (see [`Cache::order`]).
    serial: u64,
}

/// The cache.
#[derive(Default)]
pub(super) struct Cache {
    /// Its bounds ([`CacheConfig::OFF`]: nothing is kept).
    cfg: CacheConfig,
    entries: HashMap<Key, Entry>,
    /// Keys in the order they were stored, with the store's serial (an
    /// older pair whose key was stored again since is stale and skipped).
    order: VecDeque<(Key, u64)>,
    serial: u64,
}

impl Cache {
    pub(super) fn new(cfg: CacheConfig) -> Self {
        Self { cfg, ..Self::default() }
    }

    pub(super) fn enabled(&self) -> bool {
        self.cfg.enabled()
    }

    /// The kept answer to `query` (question `q`, cache lookup `look`), made
    /// the client's: its ID, RD bit and question bytes, TTLs counted down.
    pub(super) fn get(&mut self, look: &Lookup, query: &[u8], q: &Question, now: Instant) -> Option<Vec<u8>> {
        let e = self.entries.get(&look.key)?;
        let age = now.saturating_duration_since(e.stored);
        if age >= Duration::from_secs(u64::from(e.lifetime)) {
            self.entries.remove(&look.key);
            return None;
        }
        // (The same question has the same length: the guard only keeps a
        // broken invariant from panicking.)
        if e.reply.len() > look.udp_size || e.reply.len() < q.end || query.len() < q.end {
            return None;
        }
        let mut out = e.reply.clone();
        out[..2].copy_from_slice(&query[..2]);
        out[2] = (out[2] & !FLAG_RD) | (query[2] & FLAG_RD);
        // Same name (without regard to case), same length: the client's spelling.
        out[HEADER_LEN..q.end].copy_from_slice(&query[HEADER_LEN..q.end]);
        let age = age.as_secs() as u32;
        for &(at, ttl) in &e.ttls {
            let left = ttl.min(e.lifetime).saturating_sub(age);
            out[at..at + 4].copy_from_slice(&left.to_be_bytes());
        }
        Some(out)
    }

    /// Keep `reply`, the upstream's answer to the query `look` was made of
    /// (question `q`), if it may be kept.
    pub(super) fn put(&mut self, look: Lookup, q: &Question, reply: &[u8], now: Instant) {
        let cfg = self.cfg;
        if !cfg.enabled() {
            return;
        }
        let Some((ttls, lifetime)) = cacheable(q, reply, &cfg) else { return };
        if !self.entries.contains_key(&look.key) {
            while self.entries.len() >= cfg.max_entries && self.drop_oldest() {}
        }
        self.serial += 1;
        let serial = self.serial;
        self.order.push_back((look.key.clone(), serial));
        self.entries.insert(look.key, Entry { reply: reply.to_vec(), ttls, lifetime, stored: now, serial });
        if self.order.len() > 2 * cfg.max_entries {
            let entries = &self.entries;
            self.order.retain(|(k, s)| entries.get(k).is_some_and(|e| e.serial == *s));
        }
    }

    /// Drop the oldest entry still kept; false when none is left.
    fn drop_oldest(&mut self) -> bool {
        while let Some((k, serial)) = self.order.pop_front() {
            if self.entries.get(&k).is_some_and(|e| e.serial == serial) {
                self.entries.remove(&k);
                return true;
            }
        }
        false
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// The query's EDNS OPT record: (UDP payload size, TTL field); `Some(None)`
/// without one, `None` when the message does not parse.
fn edns(msg: &[u8], q: &Question) -> Option<Option<(u16, u32)>> {
    let mut opt = None;
    walk(msg, q.end, |rr| {
        if rr.rtype == TYPE_OPT {
            opt = Some((rr.class, rr.ttl));
        }
        Some(())
    })?;
    Some(opt)
}

/// One resource record as [`walk`] sees it.
struct Rr {
    rtype: u16,
    class: u16,
    ttl: u32,
    /// Offset of the TTL field.
    ttl_at: usize,
    /// Which section: 0 answer, 1 authority, 2 additional.
    section: u8,
    /// The record's data.
    rdata: std::ops::Range<usize>,
}

/// Visit every record after the question (which ends at `at`); `None`
/// when the message is cut short or malformed.
fn walk(msg: &[u8], mut at: usize, mut visit: impl FnMut(&Rr) -> Option<()>) -> Option<()> {
    if msg.len() < HEADER_LEN {
        return None;
    }
    for section in 0..3u8 {
        for _ in 0..proto::u16_at(msg, 6 + 2 * usize::from(section))? {
            at = skip_name(msg, at)?;
            let field = |off: usize| proto::u16_at(msg, at + off);
            let (rtype, class) = (field(0)?, field(2)?);
            let ttl = u32::from_be_bytes(msg.get(at + 4..at + 8)?.try_into().ok()?);
            let len = usize::from(field(8)?);
            let start = at + 10;
            msg.get(start..start + len)?;
            visit(&Rr { rtype, class, ttl, ttl_at: at + 4, section, rdata: start..start + len })?;
            at = start + len;
        }
    }
    (at == msg.len()).then_some(())
}

/// Just past the (possibly compressed) name at `at`.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => {
                msg.get(at + 1)?;
                return Some(at + 2);
            }
            l if l & 0xc0 != 0 => return None,
            l => at += 1 + usize::from(l),
        }
    }
}

/// The TTL fields of `reply` and the lifetime it may be kept for, when it
/// may be kept at all.
fn cacheable(q: &Question, reply: &[u8], cfg: &CacheConfig) -> Option<(Vec<(usize, u32)>, u32)> {
    if reply.len() > cfg.max_reply || proto::is_truncated(reply) || !proto::answers(q, reply) {
        return None;
    }
    let rcode = proto::rcode(reply)?;
    // `answers` parsed the reply's question as the query's (same name, and
    // no compression in a question): it ends where the query's did.
    let end = q.end;
    let (mut ttls, mut min_ttl, mut answers, mut soa) = (Vec::new(), u32::MAX, 0u32, None);
    walk(reply, end, |rr| {
        if rr.rtype == TYPE_OPT {
            return Some(());
        }
        ttls.push((rr.ttl_at, rr.ttl));
        min_ttl = min_ttl.min(rr.ttl);
        answers += u32::from(rr.section == 0);
        if rr.section == 1 && rr.rtype == TYPE_SOA {
            // MINIMUM is the last 4 bytes of the SOA's data.
            let minimum = reply.get(rr.rdata.end.checked_sub(4)?..rr.rdata.end)?;
            soa = Some(rr.ttl.min(u32::from_be_bytes(minimum.try_into().ok()?)));
        }
        Some(())
    })?;
    let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    let lifetime = match (rcode, answers) {
        (0, 1..) => min_ttl.min(secs(cfg.max_ttl)),
        (0 | proto::RCODE_NXDOMAIN, _) => soa?.min(secs(cfg.max_negative_ttl)),
        _ => return None,
    };
    (lifetime > 0).then_some((ttls, lifetime))
}

#[cfg(test)]
#[path = "cache_tests.rs"]
pub(super) mod tests;

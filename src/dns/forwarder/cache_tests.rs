//! The cache's rules on hand-made messages (pure; the forwarder's use of it
//! over real sockets is in `cache_live_tests.rs`).

use super::*;
use crate::dns::proto::{RCODE_NXDOMAIN, RCODE_SERVFAIL, TYPE_A, test_query};

/// A record for [`reply`]: (section, type, TTL, data).
type Rec = (u8, u16, u32, Vec<u8>);

/// `query` with an OPT record (payload size, DO bit).
pub(in crate::dns::forwarder) fn with_opt(mut query: Vec<u8>, size: u16, dnssec_ok: bool) -> Vec<u8> {
    query[11] = 1;
    query.extend_from_slice(&[0, 0, 41]);
    query.extend_from_slice(&size.to_be_bytes());
    query.extend_from_slice(&(if dnssec_ok { EDNS_DO } else { 0 }).to_be_bytes());
    query.extend_from_slice(&[0, 0]);
    query
}

/// SOA data whose MINIMUM is `minimum` (names as root, counters zero).
pub(in crate::dns::forwarder) fn soa(minimum: u32) -> Vec<u8> {
    let mut d = vec![0, 0];
    d.extend_from_slice(&[0; 16]);
    d.extend_from_slice(&minimum.to_be_bytes());
    d
}

/// The reply to `query` with `rcode` and these records (names point at the question).
pub(in crate::dns::forwarder) fn reply(query: &[u8], rcode: u8, recs: &[Rec]) -> Vec<u8> {
    let q = proto::question(query).unwrap();
    let mut out = query[..q.end].to_vec();
    out[2] |= 0x80;
    out[3] = 0x80 | rcode;
    let mut counts = [0u16; 3];
    for (section, ty, ttl, data) in recs {
        counts[usize::from(*section)] += 1;
        out.extend_from_slice(&[0xc0, 12]);
        out.extend_from_slice(&ty.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
    }
    for (i, c) in counts.iter().enumerate() {
        out[6 + 2 * i..8 + 2 * i].copy_from_slice(&c.to_be_bytes());
    }
    out
}

fn a(ttl: u32) -> Rec {
    (0, TYPE_A, ttl, vec![198, 51, 100, 7])
}

fn ttls_of(msg: &[u8]) -> Vec<u32> {
    let q = proto::question(msg).unwrap();
    let mut out = Vec::new();
    walk(msg, q.end, |rr| {
        if rr.rtype != TYPE_OPT {
            out.push(rr.ttl);
        }
        Some(())
    })
    .unwrap();
    out
}

struct T {
    cache: Cache,
    t0: Instant,
}

impl T {
    fn new(cfg: CacheConfig) -> Self {
        Self { cache: Cache::new(cfg), t0: Instant::now() }
    }

    fn put(&mut self, query: &[u8], reply: &[u8]) {
        let q = proto::question(query).unwrap();
        let look = Lookup::of(query, &q).unwrap();
        self.cache.put(look, &q, reply, self.t0);
    }

    fn get(&mut self, query: &[u8], after: u64) -> Option<Vec<u8>> {
        let q = proto::question(query).unwrap();
        let look = Lookup::of(query, &q).unwrap();
        self.cache.get(&look, query, &q, self.t0 + Duration::from_secs(after))
    }
}

#[test]
fn a_kept_answer_is_served_under_the_clients_id_and_spelling_with_ttls_counted_down() {
    let mut t = T::new(CacheConfig::default());
    let q = test_query("www.example.test", TYPE_A, 1);
    t.put(&q, &reply(&q, 0, &[a(60), (0, TYPE_A, 300, vec![198, 51, 100, 8])]));
    let mut asked = test_query("WWW.Example.test", TYPE_A, 0xbeef);
    asked[2] &= !0x01; // RD clear
    let got = t.get(&asked, 10).unwrap();
    assert_eq!(proto::id(&got), Some(0xbeef));
    assert_eq!(got[2] & 0x01, 0);
    assert_eq!(&got[12..asked.len()], &asked[12..]);
    // Both count down from the entry's lifetime (the smallest TTL).
    assert_eq!(ttls_of(&got), vec![50, 50]);
    assert_eq!(ttls_of(&t.get(&asked, 59).unwrap()), vec![1, 1]);
    assert!(t.get(&asked, 60).is_none());
    assert_eq!(t.cache.len(), 0);
}

#[test]
fn negative_answers_live_for_the_soa_minimum_or_its_ttl_whichever_is_smaller() {
    let mut t = T::new(CacheConfig::default());
    let q = test_query("nope.example.test", TYPE_A, 1);
    t.put(&q, &reply(&q, RCODE_NXDOMAIN, &[(1, TYPE_SOA, 3600, soa(30))]));
    let got = t.get(&q, 5).unwrap();
    assert_eq!((proto::rcode(&got), ttls_of(&got)), (Some(RCODE_NXDOMAIN), vec![25]));
    assert!(t.get(&q, 30).is_none());
    // NODATA (NOERROR, no answers) likewise; the SOA's own TTL when smaller.
    let q = test_query("v4only.example.test", proto::TYPE_AAAA, 2);
    t.put(&q, &reply(&q, 0, &[(1, TYPE_SOA, 20, soa(600))]));
    assert_eq!(ttls_of(&t.get(&q, 0).unwrap()), vec![20]);
    assert!(t.get(&q, 20).is_none());
    // Without a SOA a negative answer says nothing of its lifetime: not kept.
    let q = test_query("bare.example.test", TYPE_A, 3);
    t.put(&q, &reply(&q, RCODE_NXDOMAIN, &[]));
    assert!(t.get(&q, 0).is_none());
}

#[test]
fn truncated_failed_zero_ttl_and_foreign_answers_are_not_kept() {
    let mut t = T::new(CacheConfig::default());
    let q = test_query("x.example.test", TYPE_A, 1);
    let mut tc = reply(&q, 0, &[a(60)]);
    tc[2] |= 0x02;
    t.put(&q, &tc);
    t.put(&q, &reply(&q, RCODE_SERVFAIL, &[]));
    t.put(&q, &reply(&q, proto::RCODE_REFUSED, &[]));
    t.put(&q, &reply(&q, 0, &[a(0)]));
    let other = test_query("y.example.test", TYPE_A, 1);
    t.put(&q, &reply(&other, 0, &[a(60)]));
    let mut cut = reply(&q, 0, &[a(60)]);
    cut.pop();
    t.put(&q, &cut);
    assert_eq!(t.cache.len(), 0);
    assert!(t.get(&q, 0).is_none());
}

#[test]
fn dnssec_ok_edns_and_type_are_kept_apart() {
    let mut t = T::new(CacheConfig::default());
    let plain = test_query("s.example.test", TYPE_A, 1);
    let edns = with_opt(plain.clone(), 1232, false);
    let dnssec = with_opt(plain.clone(), 1232, true);
    t.put(&dnssec, &reply(&dnssec, 0, &[a(60), (2, TYPE_OPT, EDNS_DO, vec![])]));
    assert!(t.get(&plain, 0).is_none());
    assert!(t.get(&edns, 0).is_none());
    assert!(t.get(&test_query("s.example.test", proto::TYPE_AAAA, 1), 0).is_none());
    let mut ad = dnssec.clone();
    ad[3] |= FLAG_AD;
    assert!(t.get(&ad, 0).is_none());
    let got = t.get(&dnssec, 3).unwrap();
    // The OPT record's TTL field (flags) is left alone.
    assert_eq!(ttls_of(&got), vec![57]);
    assert_eq!(&got[got.len() - 6..got.len() - 2], &EDNS_DO.to_be_bytes());
}

#[test]
fn lifetimes_and_entries_are_capped_and_off_keeps_nothing() {
    let cfg = CacheConfig { max_entries: 2, max_ttl: Duration::from_secs(100), ..CacheConfig::default() };
    let mut t = T::new(cfg);
    let q = |n: &str| test_query(n, TYPE_A, 1);
    t.put(&q("a.test"), &reply(&q("a.test"), 0, &[a(86_400)]));
    assert_eq!(ttls_of(&t.get(&q("a.test"), 0).unwrap()), vec![100]);
    t.put(&q("b.test"), &reply(&q("b.test"), 0, &[a(50)]));
    t.put(&q("c.test"), &reply(&q("c.test"), 0, &[a(70)]));
    // Full: the oldest (a) went.
    assert_eq!(t.cache.len(), 2);
    assert!(t.get(&q("a.test"), 0).is_none());
    assert!(t.get(&q("b.test"), 0).is_some() && t.get(&q("c.test"), 0).is_some());
    // Stored again, an answer is the newest.
    t.put(&q("b.test"), &reply(&q("b.test"), 0, &[a(50)]));
    t.put(&q("d.test"), &reply(&q("d.test"), 0, &[a(50)]));
    assert!(t.get(&q("c.test"), 0).is_none());
    assert!(t.get(&q("b.test"), 0).is_some() && t.get(&q("d.test"), 0).is_some());
    let mut off = T::new(CacheConfig::OFF);
    off.put(&q("a.test"), &reply(&q("a.test"), 0, &[a(60)]));
    assert!(off.get(&q("a.test"), 0).is_none());
}

#[test]
fn an_answer_larger_than_the_client_accepts_over_udp_is_not_served() {
    let mut t = T::new(CacheConfig::default());
    let big = with_opt(test_query("big.example.test", TYPE_A, 1), 4096, false);
    let recs: Vec<Rec> = (0..40).map(|i| (0, TYPE_A, 60, vec![10, 0, 0, i])).collect();
    let r = reply(&big, 0, &recs);
    assert!(r.len() > 512 + 100);
    t.put(&big, &r);
    assert!(t.get(&big, 0).is_some());
    let small = with_opt(test_query("big.example.test", TYPE_A, 2), 512, false);
    assert!(t.get(&small, 0).is_none());
}

#[test]
fn the_policy_is_read_from_its_setting() {
    use crate::dns::options::DnsCache;
    for off in ["0", "off", "OFF", " no ", "false"] {
        assert_eq!(DnsCache::from_setting(Some(off)), DnsCache::Off, "{off}");
        assert!(!CacheConfig::keeping(DnsCache::from_setting(Some(off)).keeps_answers()).enabled());
    }
    // The default, and the name it had when it was not the default.
    for on in [None, Some("1"), Some("on"), Some(""), Some(" Inside")] {
        assert_eq!(DnsCache::from_setting(on), DnsCache::On, "{on:?}");
        assert!(DnsCache::from_setting(on).forwards_inside());
    }
    assert_eq!(DnsCache::from_setting(Some(" Helper")), DnsCache::Helper);
    assert!(CacheConfig::keeping(DnsCache::Helper.keeps_answers()).enabled());
    assert!(!DnsCache::Helper.forwards_inside() && !DnsCache::Off.forwards_inside());
}

#[test]
fn arbitrary_replies_and_queries_never_panic_the_cache() {
    // Mutations of a well-formed query and reply (xorshift, fixed seed):
    // every outcome is "kept" or "not kept", never a panic.
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let query = with_opt(test_query("f.example.test", TYPE_A, 1), 1232, true);
    let good = reply(&query, RCODE_NXDOMAIN, &[a(60), (1, TYPE_SOA, 60, soa(30)), (2, TYPE_OPT, 0, vec![])]);
    let mut t = T::new(CacheConfig { max_entries: 8, ..CacheConfig::default() });
    for _ in 0..20_000 {
        let mut r = good.clone();
        for _ in 0..(next() % 4 + 1) {
            let at = (next() as usize) % r.len();
            r[at] = next() as u8;
        }
        r.truncate(r.len() - (next() as usize % 3) * (next() as usize % 8));
        let mut q = query.clone();
        let at = HEADER_LEN + (next() as usize) % (q.len() - HEADER_LEN);
        q[at] = next() as u8;
        for msg in [&q, &query] {
            let Some(parsed) = proto::question(msg) else { continue };
            let Some(look) = Lookup::of(msg, &parsed) else { continue };
            t.cache.put(look.clone(), &parsed, &r, t.t0);
            let _ = t.cache.get(&look, msg, &parsed, t.t0 + Duration::from_secs(next() % 90));
        }
    }
}

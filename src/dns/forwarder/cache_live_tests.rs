//! The answer cache in a running forwarder: real sockets on loopback, a
//! stub resolver on 127.0.0.3 that counts the queries it gets per name.

use super::cache::tests::{reply, soa, with_opt};
use super::tests::ask_udp as ask;
use super::*;
use crate::dns::proto::{self, RCODE_NXDOMAIN, RCODE_SERVFAIL, TYPE_A};
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

/// The stub's answers, by the first label of the name asked.
fn stub_answer(query: &[u8]) -> Vec<u8> {
    let name = proto::question(query).unwrap().name;
    let a = |ttl: u32| (0u8, TYPE_A, ttl, vec![198, 51, 100, 9]);
    match name.split('.').next().unwrap_or("") {
        "short" => reply(query, 0, &[a(1)]),
        "nx" => reply(query, RCODE_NXDOMAIN, &[(1, 6, 3600, soa(1))]),
        "tc" => {
            let mut r = reply(query, 0, &[a(60)]);
            r[2] |= 0x02;
            r
        }
        "fail" => reply(query, RCODE_SERVFAIL, &[]),
        _ => reply(query, 0, &[a(60)]),
    }
}

/// A stub resolver on 127.0.0.3 (UDP only): queries seen, per name.
struct Stub {
    addr: SocketAddr,
    seen: Arc<Mutex<HashMap<String, u32>>>,
    total: Arc<AtomicU32>,
}

impl Stub {
    fn start() -> Self {
        let udp = UdpSocket::bind("127.0.0.3:0").unwrap();
        let addr = udp.local_addr().unwrap();
        let seen: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        let total = Arc::new(AtomicU32::new(0));
        let (s, t) = (Arc::clone(&seen), Arc::clone(&total));
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = udp.recv_from(&mut buf) {
                let name = proto::question(&buf[..n]).map(|q| q.name).unwrap_or_default();
                *s.lock().unwrap().entry(name).or_default() += 1;
                t.fetch_add(1, Ordering::SeqCst);
                let _ = udp.send_to(&stub_answer(&buf[..n]), from);
            }
        });
        Self { addr, seen, total }
    }

    fn seen(&self, name: &str) -> u32 {
        self.seen.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

fn start(stub: &Stub, names: Arc<dyn LocalNames>, cache: CacheConfig) -> Forwarder {
    let listeners = Listeners::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let cfg = ForwarderConfig { upstreams: vec![stub.addr], names, local_ttl: 0, limits: Limits::default(), cache };
    Forwarder::start(listeners, cfg).unwrap()
}

fn q(name: &str, id: u16) -> Vec<u8> {
    proto::test_query(name, TYPE_A, id)
}

/// The TTL of the first answer record (after a question of `query_len` bytes).
fn first_ttl(reply: &[u8], query_len: usize) -> u32 {
    u32::from_be_bytes(reply[query_len + 6..query_len + 10].try_into().unwrap())
}

#[test]
fn a_cached_answer_is_served_without_a_second_upstream_query_under_each_clients_id() {
    let stub = Stub::start();
    let fwd = start(&stub, Arc::new(NoLocalNames), CacheConfig::default());
    for id in [1u16, 2, 0xbeef] {
        let r = ask(&fwd, &q("www.example.test", id));
        assert_eq!((proto::id(&r), proto::rcode(&r)), (Some(id), Some(0)));
    }
    // Another spelling of the same name is the same question.
    let r = ask(&fwd, &q("WWW.Example.Test", 4));
    assert_eq!(&r[12..16], b"\x03WWW");
    assert_eq!(stub.seen("www.example.test"), 1);
    assert_eq!(fwd.stop().cache_hits, 3);
}

#[test]
fn ttl_counts_down_and_an_expired_answer_is_asked_again() {
    let stub = Stub::start();
    let fwd = start(&stub, Arc::new(NoLocalNames), CacheConfig::default());
    let query = q("www.example.test", 1);
    assert_eq!(first_ttl(&ask(&fwd, &query), query.len()), 60);
    std::thread::sleep(Duration::from_millis(1100));
    let ttl = first_ttl(&ask(&fwd, &query), query.len());
    assert!((58..=59).contains(&ttl), "{ttl}");
    // A TTL of 1 s: gone after a second, asked again.
    let short = q("short.example.test", 2);
    ask(&fwd, &short);
    ask(&fwd, &short);
    assert_eq!(stub.seen("short.example.test"), 1);
    std::thread::sleep(Duration::from_millis(1100));
    ask(&fwd, &short);
    assert_eq!((stub.seen("short.example.test"), stub.seen("www.example.test")), (2, 1));
}

#[test]
fn nxdomain_is_kept_for_the_soa_minimum() {
    let stub = Stub::start();
    let fwd = start(&stub, Arc::new(NoLocalNames), CacheConfig::default());
    let nx = q("nx.example.test", 1);
    assert_eq!(proto::rcode(&ask(&fwd, &nx)), Some(RCODE_NXDOMAIN));
    assert_eq!(proto::rcode(&ask(&fwd, &nx)), Some(RCODE_NXDOMAIN));
    assert_eq!(stub.seen("nx.example.test"), 1);
    // SOA TTL 3600, MINIMUM 1: kept one second.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(proto::rcode(&ask(&fwd, &nx)), Some(RCODE_NXDOMAIN));
    assert_eq!(stub.seen("nx.example.test"), 2);
}

#[test]
fn truncated_and_servfail_answers_are_not_cached() {
    let stub = Stub::start();
    let fwd = start(&stub, Arc::new(NoLocalNames), CacheConfig::default());
    for id in 1..=3u16 {
        assert!(proto::is_truncated(&ask(&fwd, &q("tc.example.test", id))));
        assert_eq!(proto::rcode(&ask(&fwd, &q("fail.example.test", id))), Some(RCODE_SERVFAIL));
    }
    assert_eq!((stub.seen("tc.example.test"), stub.seen("fail.example.test")), (3, 3));
}

#[test]
fn the_dnssec_ok_bit_keeps_answers_apart() {
    let stub = Stub::start();
    let fwd = start(&stub, Arc::new(NoLocalNames), CacheConfig::default());
    let plain = with_opt(q("s.example.test", 1), 1232, false);
    let dnssec = with_opt(q("s.example.test", 2), 1232, true);
    ask(&fwd, &plain);
    ask(&fwd, &dnssec);
    assert_eq!(stub.seen("s.example.test"), 2);
    ask(&fwd, &plain);
    ask(&fwd, &dnssec);
    assert_eq!(stub.seen("s.example.test"), 2);
}

#[test]
fn with_the_cache_off_every_query_goes_upstream() {
    let stub = Stub::start();
    let fwd = start(&stub, Arc::new(NoLocalNames), CacheConfig::OFF);
    for id in 1..=3u16 {
        ask(&fwd, &q("www.example.test", id));
    }
    assert_eq!(stub.seen("www.example.test"), 3);
    assert_eq!(fwd.stop().cache_hits, 0);
}

/// A network's names as a run's life would change them: `db` while it lives.
struct Runs(Mutex<Option<Ipv4Addr>>);

impl LocalNames for Runs {
    fn lookup(&self, name: &str) -> Option<Vec<IpAddr>> {
        let db = *self.0.lock().unwrap();
        (name == "db").then_some(db).flatten().map(|a| vec![IpAddr::V4(a)])
    }
}

#[test]
fn the_networks_own_names_are_never_cached_a_run_gone_stops_resolving() {
    let stub = Stub::start();
    let runs = Arc::new(Runs(Mutex::new(Some(Ipv4Addr::new(10, 90, 0, 5)))));
    let fwd = start(&stub, Arc::clone(&runs) as Arc<dyn LocalNames>, CacheConfig::default());
    for id in 1..=2u16 {
        let r = ask(&fwd, &q("db", id));
        assert_eq!(&r[r.len() - 4..], &[10, 90, 0, 5]);
    }
    assert_eq!(stub.total.load(Ordering::SeqCst), 0);
    // The run exits: the next query is not served its old address.
    *runs.0.lock().unwrap() = None;
    let r = ask(&fwd, &q("db", 3));
    assert_eq!(&r[r.len() - 4..], &[198, 51, 100, 9]);
    assert_eq!(stub.seen("db"), 1);
    // A run takes a name upstream answered before: the run's address wins over the cache.
    *runs.0.lock().unwrap() = Some(Ipv4Addr::new(10, 90, 0, 6));
    let r = ask(&fwd, &q("db", 4));
    assert_eq!(&r[r.len() - 4..], &[10, 90, 0, 6]);
    let stats = fwd.stop();
    assert_eq!((stats.local_answers, stats.cache_hits), (3, 0));
}

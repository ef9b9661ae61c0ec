//! The forwarder against fake upstreams on 127.0.0.1 (real sockets; only
//! loopback traffic).

use super::*;
use crate::dns::proto::{self, TYPE_A};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

fn query(name: &str, id: u16) -> Vec<u8> {
    proto::test_query(name, TYPE_A, id)
}

/// A fake upstream: answers every UDP and TCP query with `addr`, counting
/// queries; `truncate` sets TC on UDP answers. Runs until the test ends.
struct Upstream {
    addr: SocketAddr,
    udp_seen: Arc<AtomicU32>,
    tcp_seen: Arc<AtomicU32>,
}

fn upstream(answer: Ipv4Addr, truncate: bool) -> Upstream {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = TcpListener::bind(addr).unwrap();
    let (udp_seen, tcp_seen) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let seen = Arc::clone(&udp_seen);
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            seen.fetch_add(1, Ordering::SeqCst);
            let mut reply = proto::address_reply(&buf[..n], &[IpAddr::V4(answer)], 60).unwrap();
            if truncate {
                reply[2] |= 0x02;
            }
            udp.send_to(&reply, from).unwrap();
        }
    });
    let seen = Arc::clone(&tcp_seen);
    std::thread::spawn(move || {
        for mut s in tcp.incoming().flatten() {
            seen.fetch_add(1, Ordering::SeqCst);
            let mut len = [0u8; 2];
            if s.read_exact(&mut len).is_err() {
                continue;
            }
            let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
            s.read_exact(&mut msg).unwrap();
            let reply = proto::address_reply(&msg, &[IpAddr::V4(answer)], 60).unwrap();
            let _ = s.write_all(&[&(reply.len() as u16).to_be_bytes()[..], &reply].concat());
        }
    });
    Upstream { addr, udp_seen, tcp_seen }
}

/// A socket that receives and never answers.
fn silent() -> (UdpSocket, SocketAddr) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let a = s.local_addr().unwrap();
    (s, a)
}

fn start(upstreams: Vec<SocketAddr>, names: StaticNames, limits: Limits) -> Forwarder {
    let listeners = Listeners::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    // The cache has its own tests (cache_live_tests.rs): these count every query upstream.
    let cfg = ForwarderConfig { upstreams, names: Arc::new(names), local_ttl: 5, limits, cache: CacheConfig::OFF };
    Forwarder::start(listeners, cfg).unwrap()
}

fn fast() -> Limits {
    Limits { attempt_timeout: Duration::from_millis(150), ..Limits::default() }
}

pub(super) fn ask_udp(fwd: &Forwarder, msg: &[u8]) -> Vec<u8> {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.send_to(msg, fwd.local_addr()).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = c.recv_from(&mut buf).unwrap();
    buf[..n].to_vec()
}

fn ask_tcp(stream: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    stream.write_all(&[&(msg.len() as u16).to_be_bytes()[..], msg].concat()).unwrap();
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).unwrap();
    let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut reply).unwrap();
    reply
}

fn a_record(reply: &[u8]) -> Ipv4Addr {
    let d = &reply[reply.len() - 4..];
    Ipv4Addr::new(d[0], d[1], d[2], d[3])
}

#[test]
fn local_names_are_answered_without_asking_upstream() {
    let up = upstream(Ipv4Addr::new(198, 51, 100, 1), false);
    let names = StaticNames::new([("DB.Example.Test.", vec!["10.90.0.5".parse().unwrap()])]);
    let fwd = start(vec![up.addr], names, fast());
    let reply = ask_udp(&fwd, &query("db.example.test", 7));
    assert_eq!((proto::id(&reply), a_record(&reply)), (Some(7), Ipv4Addr::new(10, 90, 0, 5)));
    let mut s = TcpStream::connect(fwd.local_addr()).unwrap();
    assert_eq!(a_record(&ask_tcp(&mut s, &query("db.example.test", 8))), Ipv4Addr::new(10, 90, 0, 5));
    assert_eq!(up.udp_seen.load(Ordering::SeqCst) + up.tcp_seen.load(Ordering::SeqCst), 0);
    let stats = fwd.stop();
    assert_eq!((stats.local_answers, stats.udp_queries, stats.tcp_queries), (2, 1, 1));
}

#[test]
fn udp_queries_are_forwarded_and_come_back_under_the_clients_id() {
    let up = upstream(Ipv4Addr::new(198, 51, 100, 1), false);
    let fwd = start(vec![up.addr], StaticNames::default(), fast());
    for id in [1u16, 0xbeef] {
        let reply = ask_udp(&fwd, &query("www.example.test", id));
        assert_eq!(proto::id(&reply), Some(id));
        assert_eq!(a_record(&reply), Ipv4Addr::new(198, 51, 100, 1));
    }
    assert_eq!(up.udp_seen.load(Ordering::SeqCst), 2);
}

#[test]
fn a_silent_upstream_is_passed_over_after_its_deadline() {
    let (_quiet, quiet_addr) = silent();
    let up = upstream(Ipv4Addr::new(198, 51, 100, 2), false);
    let fwd = start(vec![quiet_addr, up.addr], StaticNames::default(), fast());
    let t = Instant::now();
    let reply = ask_udp(&fwd, &query("x.example.test", 3));
    assert_eq!(a_record(&reply), Ipv4Addr::new(198, 51, 100, 2));
    assert!(t.elapsed() >= Duration::from_millis(140), "{:?}", t.elapsed());
}

#[test]
fn no_answer_anywhere_is_servfail_not_a_hang() {
    let (_quiet, quiet_addr) = silent();
    let fwd = start(vec![quiet_addr], StaticNames::default(), fast());
    let reply = ask_udp(&fwd, &query("x.example.test", 4));
    assert_eq!((proto::id(&reply), proto::rcode(&reply)), (Some(4), Some(proto::RCODE_SERVFAIL)));
    let mut s = TcpStream::connect(fwd.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let reply = ask_tcp(&mut s, &query("x.example.test", 5));
    assert_eq!(proto::rcode(&reply), Some(proto::RCODE_SERVFAIL));
}

#[test]
fn truncated_udp_answers_are_relayed_and_tcp_goes_upstream_over_tcp() {
    let up = upstream(Ipv4Addr::new(198, 51, 100, 3), true);
    let fwd = start(vec![up.addr], StaticNames::default(), fast());
    assert!(proto::is_truncated(&ask_udp(&fwd, &query("big.example.test", 9))));
    let mut s = TcpStream::connect(fwd.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for id in [10u16, 11] {
        let reply = ask_tcp(&mut s, &query("big.example.test", id));
        assert_eq!((proto::id(&reply), a_record(&reply)), (Some(id), Ipv4Addr::new(198, 51, 100, 3)));
        assert!(!proto::is_truncated(&reply));
    }
    assert_eq!(up.tcp_seen.load(Ordering::SeqCst), 2);
}

#[test]
fn replies_from_anyone_but_the_upstream_asked_are_ignored() {
    let (quiet, quiet_addr) = silent();
    let fwd =
        start(vec![quiet_addr], StaticNames::default(), Limits { attempt_timeout: Duration::from_secs(2), ..fast() });
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    client.send_to(&query("x.example.test", 12), fwd.local_addr()).unwrap();
    let mut buf = [0u8; 512];
    let (n, from) = quiet.recv_from(&mut buf).unwrap();
    // A spoofer that guessed the ID but answers from elsewhere.
    let spoof = proto::address_reply(&buf[..n], &["6.6.6.6".parse().unwrap()], 60).unwrap();
    UdpSocket::bind("127.0.0.1:0").unwrap().send_to(&spoof, from).unwrap();
    // The real upstream answers after that.
    let real = proto::address_reply(&buf[..n], &["198.51.100.4".parse().unwrap()], 60).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    quiet.send_to(&real, from).unwrap();
    let (n, _) = client.recv_from(&mut buf).unwrap();
    assert_eq!(a_record(&buf[..n]), Ipv4Addr::new(198, 51, 100, 4));
}

#[test]
fn tcp_clients_beyond_the_limit_are_closed_at_once() {
    let up = upstream(Ipv4Addr::new(198, 51, 100, 5), false);
    let fwd = start(vec![up.addr], StaticNames::default(), Limits { max_tcp: 1, ..fast() });
    let mut first = TcpStream::connect(fwd.local_addr()).unwrap();
    let _ = ask_tcp(&mut first, &query("a.example.test", 1));
    let mut second = TcpStream::connect(fwd.local_addr()).unwrap();
    second.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut byte = [0u8; 1];
    assert!(matches!(second.read(&mut byte), Ok(0) | Err(_)));
    drop(first);
    assert!(fwd.stop().tcp_refused >= 1);
}

/// Answers `db` only to 127.0.0.1 and refuses everything under `local.test`.
struct PerClient;

impl LocalNames for PerClient {
    fn lookup(&self, _name: &str) -> Option<Vec<IpAddr>> {
        None
    }

    fn answer(&self, client: IpAddr, name: &str) -> LocalAnswer {
        match name {
            "db" if client == IpAddr::V4(Ipv4Addr::LOCALHOST) => LocalAnswer::Addresses(vec![[10, 90, 0, 5].into()]),
            n if n.ends_with("local.test") => LocalAnswer::NoSuchName,
            _ => LocalAnswer::Forward,
        }
    }
}

#[test]
fn a_table_answers_per_client_and_refuses_its_own_domain_at_once_over_udp_and_tcp() {
    let up = upstream(Ipv4Addr::new(198, 51, 100, 1), false);
    let listeners = Listeners::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let cfg = ForwarderConfig {
        upstreams: vec![up.addr],
        names: Arc::new(PerClient),
        local_ttl: 0,
        limits: fast(),
        cache: CacheConfig::OFF,
    };
    let fwd = Forwarder::start(listeners, cfg).unwrap();
    assert_eq!(a_record(&ask_udp(&fwd, &query("db", 1))), Ipv4Addr::new(10, 90, 0, 5));
    let reply = ask_udp(&fwd, &query("x.local.test", 2));
    assert_eq!(proto::rcode(&reply), Some(proto::RCODE_NXDOMAIN));
    let mut s = TcpStream::connect(fwd.local_addr()).unwrap();
    assert_eq!(a_record(&ask_tcp(&mut s, &query("db", 3))), Ipv4Addr::new(10, 90, 0, 5));
    assert_eq!(proto::rcode(&ask_tcp(&mut s, &query("y.local.test", 4))), Some(proto::RCODE_NXDOMAIN));
    // Another client (127.0.0.2) is not given the name: it goes upstream.
    let other = UdpSocket::bind("127.0.0.2:0").unwrap();
    other.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    other.send_to(&query("db", 5), fwd.local_addr()).unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = other.recv_from(&mut buf).unwrap();
    assert_eq!(a_record(&buf[..n]), Ipv4Addr::new(198, 51, 100, 1));
    assert_eq!(up.udp_seen.load(Ordering::SeqCst), 1);
}

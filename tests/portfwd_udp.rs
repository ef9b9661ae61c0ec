//! The builtin port driver's relay for UDP, against real sockets in real
//! namespaces: request and response from both client paths with one flow
//! per client and idle expiry, replies from the address the client sent to,
//! an IPv6 listener in front of an IPv4-only server, datagrams refused
//! inside the container namespace, and a server that binds after its
//! client started sending.
//!
//! The rig (a throwaway topology plus a "container" namespace, see
//! `tests/common/fwdrig.rs`) binds listeners in the host namespace, the relay
//! makes its sockets in the container namespace, servers listen there, and
//! clients send either on the host's loopback or from upstream. Traffic
//! never leaves namespaces the test created.

mod common;

use common::fwdrig::{BOTH, ClientPath, Rig, shared, wait_for};
use common::{in_netns, ip, wait_ipv6_usable};
use pelagos_net::ports::relay::ForwarderConfig;
use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

#[test]
fn udp_request_response_from_both_paths_then_idle_expiry() {
    let _shared = shared();
    // Idle long enough that a flow outlives a stall of the test thread.
    let cfg = ForwarderConfig { udp_idle: Duration::from_secs(2), ..ForwarderConfig::default() };
    let Some(rig) = Rig::new(&["5353:53/udp"], cfg) else { return };
    let server = in_netns(&rig.container.name, || UdpSocket::bind("0.0.0.0:53").unwrap());
    let echo = std::thread::spawn(move || {
        let mut peers = Vec::new();
        let mut buf = [0; 1500];
        for _ in 0..4 {
            let (n, from) = server.recv_from(&mut buf).unwrap();
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            server.send_to(&reply, from).unwrap();
            peers.push(from);
        }
        peers
    });
    for path in BOTH {
        let (sock, to) = rig.udp_client(path, 5353);
        for i in 0..2 {
            let msg = format!("{path:?} {i}");
            sock.send_to(msg.as_bytes(), to).unwrap();
            let mut buf = [0; 1500];
            let (n, from) = sock.recv_from(&mut buf).unwrap();
            assert_eq!(from, to, "{path:?}: reply comes from the published address");
            assert_eq!(&buf[..n], format!("echo:{msg}").as_bytes());
        }
    }
    let peers = echo.join().unwrap();
    assert_eq!(peers[0], peers[1], "one flow per client");
    assert_ne!(peers[1], peers[2], "a flow per client");
    let stats = rig.fwd().stats();
    assert_eq!(stats.udp_flows_created, 2, "{stats:?}");
    wait_for("idle udp flows to expire", Duration::from_secs(10), || rig.fwd().stats().udp_flows_active == 0);
}

#[test]
fn udp_reply_comes_from_the_address_the_client_sent_to() {
    let _shared = shared();
    let Some(rig) = Rig::new(&["5353:53/udp"], ForwarderConfig::default()) else { return };
    // A second IPv6 address on the host, besides ::1.
    ip(&["-n", &rig.topo.host, "addr", "add", "fd00:5::2/128", "dev", "lo", "nodad"]);
    // Regression: sent before the address's local route existed, the
    // datagram was lost and the test waited 5 s for a reply (1 run in 8
    // with the suite's load).
    wait_ipv6_usable(&rig.topo.host);
    // Dual-stack: IPv4 flows arrive as mapped addresses.
    let echo = rig.udp_echo("[::]:53", 2);
    // Connected client sockets accept datagrams from the connected address
    // only; the route back to them would pick 127.0.0.1 and ::1.
    for (bind, published) in [("127.0.0.1:0", "127.0.0.2:5353"), ("[::1]:0", "[fd00:5::2]:5353")] {
        let published: SocketAddr = published.parse().unwrap();
        let sock = in_netns(&rig.topo.host, move || {
            let sock = UdpSocket::bind(bind).unwrap();
            sock.connect(published).unwrap();
            sock
        });
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        sock.send(b"who answers?").unwrap();
        let mut buf = [0; 1500];
        let (n, from) = sock.recv_from(&mut buf).unwrap_or_else(|e| panic!("no reply from {published}: {e}"));
        assert_eq!(from, published);
        assert_eq!(&buf[..n], b"who answers?");
    }
    echo.join().unwrap();
    assert_eq!(rig.fwd().stats().udp_dropped, 0, "{:?}", rig.fwd().stats());
}

#[test]
fn ipv6_udp_listener_reaches_an_ipv4_only_server() {
    let _shared = shared();
    let Some(rig) = Rig::new(&["[::1]:5353:53/udp"], ForwarderConfig::default()) else { return };
    let echo = rig.udp_echo("127.0.0.1:53", 2);
    let published: SocketAddr = "[::1]:5353".parse().unwrap();
    let sock = in_netns(&rig.topo.host, || UdpSocket::bind("[::1]:0").unwrap());
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The first datagram is refused on [::1] inside the namespace and resent
    // to 127.0.0.1; the second goes there directly.
    for msg in ["first", "second"] {
        sock.send_to(msg.as_bytes(), published).unwrap();
        let mut buf = [0; 1500];
        let (n, from) = sock.recv_from(&mut buf).unwrap_or_else(|e| panic!("no reply to {msg}: {e}"));
        assert_eq!((from, &buf[..n]), (published, msg.as_bytes()));
    }
    echo.join().unwrap();
    let stats = rig.fwd().stats();
    assert_eq!(stats.udp_flows_created, 1, "{stats:?}");
    assert_eq!(stats.udp_dropped, 0, "the refused datagram was resent: {stats:?}");
}

#[test]
fn udp_datagrams_refused_inside_the_namespace_are_counted() {
    let _shared = shared();
    let Some(rig) = Rig::new(&["127.0.0.1:5353:53/udp"], ForwarderConfig::default()) else { return };
    let (sock, to) = rig.udp_client(ClientPath::Loopback, 5353);
    sock.send_to(b"anyone?", to).unwrap();
    wait_for("the refused datagram to be counted", Duration::from_secs(5), || rig.fwd().stats().udp_dropped >= 1);
    assert_eq!(rig.fwd().stats().bytes_from_container, 0);
}

/// Regression: a client that starts sending before the server binds (the
/// run's command still starting, as a slow machine makes likely) was
/// refused on 127.0.0.1, then on [::1], and its flow stayed on [::1] for as
/// long as the client kept sending: the server that bound 127.0.0.1 a
/// moment later was never reached (a test saw no echo in 10 s of pings).
#[test]
fn udp_server_that_binds_after_the_first_datagram_is_reached() {
    let _shared = shared();
    let Some(rig) = Rig::new(&["127.0.0.1:5353:53/udp"], ForwarderConfig::default()) else { return };
    let (sock, to) = rig.udp_client(ClientPath::Loopback, 5353);
    sock.send_to(b"anyone?", to).unwrap();
    wait_for("the early datagram to be refused by both loopbacks", Duration::from_secs(5), || {
        rig.fwd().stats().udp_dropped >= 1
    });
    let echo = rig.udp_echo("0.0.0.0:53", 1);
    sock.send_to(b"now?", to).unwrap();
    let mut buf = [0; 1500];
    let (n, from) = sock
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("the server that bound late was not reached: {e} ({:?})", rig.fwd().stats()));
    assert_eq!((from, &buf[..n]), (to, &b"now?"[..]));
    echo.join().unwrap();
}

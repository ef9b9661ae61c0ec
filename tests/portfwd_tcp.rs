//! The builtin port driver's relay for TCP, against real sockets in real
//! namespaces: both client paths, half-closes and resets, bulk and many
//! short connections, source preservation, the connection limit,
//! backpressure; also the forwarder's lifecycle (stop, a port in use).
//!
//! The rig (a throwaway topology plus a "container" namespace, see
//! `tests/common/fwdrig.rs`) binds listeners in the host namespace, the relay
//! makes its sockets in the container namespace, servers listen there, and
//! clients connect either on the host's loopback or from upstream. Traffic
//! never leaves namespaces the test created.

mod common;

use common::fwdrig::{
    BOTH, CONTAINER_ADDR, ClientPath, ContainerNs, MARK, Rig, check_stream, duplex_streams, exclusive, fnv,
    send_stream, shared, start_forwarder, wait_for,
};
use common::{Tier, Topology, in_netns};
use pelagos_net::ports::relay::{ForwarderConfig, Targets, bind_listeners};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;

#[test]
fn server_speaking_first_reaches_both_client_paths() {
    let _shared = shared();
    let Some(rig) = Rig::new(&["8080:80"], ForwarderConfig::default()) else { return };
    let server = rig.serve("0.0.0.0:80", 2, |mut s| {
        s.write_all(b"220 banner\r\n").unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        rest
    });
    for path in BOTH {
        let mut client = rig.connect(path, 8080);
        let mut banner = [0; 12];
        client.read_exact(&mut banner).unwrap();
        assert_eq!(&banner, b"220 banner\r\n", "{path:?}");
        client.write_all(b"QUIT").unwrap();
    }
    assert_eq!(server.join().unwrap(), vec![b"QUIT".to_vec(), b"QUIT".to_vec()]);
}

#[test]
fn client_half_close_gets_the_exact_reply_once() {
    let _shared = shared();
    let Some(rig) = Rig::new(&["8080:80"], ForwarderConfig::default()) else { return };
    let server = rig.serve("0.0.0.0:80", 2, |mut s| {
        let mut request = Vec::new();
        s.read_to_end(&mut request).unwrap();
        s.write_all(format!("{} {:016x}\n", request.len(), fnv(&request)).as_bytes()).unwrap();
    });
    for path in BOTH {
        let request: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut client = rig.connect(path, 8080);
        client.write_all(&request).unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut reply = String::new();
        client.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, format!("{} {:016x}\n", request.len(), fnv(&request)), "{path:?}");
    }
    server.join().unwrap();
    wait_for("connections to close", Duration::from_secs(5), || rig.fwd().stats().tcp_active == 0);
}

#[test]
fn server_half_close_still_receives_client_data() {
    let _shared = shared();
    let Some(rig) = Rig::new(&["8080:80"], ForwarderConfig::default()) else { return };
    let server = rig.serve("0.0.0.0:80", 2, |mut s| {
        s.write_all(b"server done").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        rest
    });
    for path in BOTH {
        let mut client = rig.connect(path, 8080);
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"server done", "{path:?}");
        client.write_all(b"client still talking").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
    }
    let received = server.join().unwrap();
    assert_eq!(received, vec![b"client still talking".to_vec(); 2]);
}

#[test]
fn bulk_transfers_arrive_intact_both_ways() {
    const LEN: usize = 32 << 20;
    const PER_PATH: usize = 2;
    let _shared = shared();
    let Some(rig) = Rig::new(&["8080:80"], ForwarderConfig::default()) else { return };
    // The server echoes the client's seed stream with its own seed: seed + 1.
    let server = rig.serve("0.0.0.0:80", 2 * PER_PATH, |s| {
        let mut seed = [0; 8];
        (&s).read_exact(&mut seed).unwrap();
        let seed = u64::from_le_bytes(seed);
        duplex_streams(&s, seed + 1, seed, LEN)
    });
    let mut clients = Vec::new();
    for (i, path) in BOTH.iter().flat_map(|p| std::iter::repeat_n(*p, PER_PATH)).enumerate() {
        let client = rig.connect(path, 8080);
        let seed = 0x1000 * (i as u64 + 1);
        clients.push(std::thread::spawn(move || {
            (&client).write_all(&seed.to_le_bytes()).unwrap();
            (path, duplex_streams(&client, seed, seed + 1, LEN))
        }));
    }
    for c in clients {
        let (path, got) = c.join().unwrap();
        assert_eq!(got, LEN, "{path:?}: bytes from the server");
    }
    assert_eq!(server.join().unwrap(), vec![LEN; 2 * PER_PATH]);
    let stats = rig.fwd().stats();
    assert!(stats.bytes_to_container >= (2 * PER_PATH * LEN) as u64, "{stats:?}");
    assert!(stats.bytes_from_container >= (2 * PER_PATH * LEN) as u64, "{stats:?}");
}

#[test]
fn many_short_connections_all_complete() {
    const PER_PATH: usize = 250;
    let _shared = shared();
    let Some(rig) = Rig::new(&["8080:80"], ForwarderConfig::default()) else { return };
    let listener = rig.tcp_server("0.0.0.0:80");
    let server = std::thread::spawn(move || {
        for _ in 0..2 * PER_PATH {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0; 4];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&u32::from_le_bytes(buf).wrapping_mul(3).to_le_bytes()).unwrap();
        }
    });
    for path in BOTH {
        let (ns, addr) = rig.target(path, 8080);
        in_netns(&ns, move || {
            for i in 0..PER_PATH as u32 {
                let mut c = TcpStream::connect(addr).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                c.write_all(&i.to_le_bytes()).unwrap();
                let mut reply = [0; 4];
                c.read_exact(&mut reply).unwrap();
                assert_eq!(u32::from_le_bytes(reply), i.wrapping_mul(3), "{path:?} connection {i}");
            }
        });
    }
    server.join().unwrap();
    wait_for("connections to close", Duration::from_secs(5), || rig.fwd().stats().tcp_active == 0);
    let stats = rig.fwd().stats();
    assert_eq!(stats.tcp_accepted, 2 * PER_PATH as u64, "{stats:?}");
    assert_eq!(stats.connect_failures, 0, "{stats:?}");
}

#[test]
fn connection_without_server_is_reset_and_counted() {
    let _shared = shared();
    let Some(rig) = Rig::new(&["8080:80"], ForwarderConfig::default()) else { return };
    rig.assert_turned_away(ClientPath::Loopback, 8080, "a connection with no server behind it");
    assert_eq!(rig.fwd().stats().connect_failures, 1);
}

#[test]
fn source_address_is_preserved_and_loopback_only_server_still_works() {
    let _shared = shared();
    let cfg = ForwarderConfig {
        preserve_source: Some(MARK),
        targets: Targets { v4: Some(CONTAINER_ADDR), v6: None },
        ..ForwarderConfig::default()
    };
    let Some(rig) = Rig::build(&["8080:80", "8081:81"], cfg, ContainerNs::route_marked_replies_locally) else {
        return;
    };
    let tell_peer = |mut s: TcpStream| {
        let peer = s.peer_addr().unwrap().ip().to_string();
        s.write_all(peer.as_bytes()).unwrap();
    };
    let any = rig.serve("0.0.0.0:80", 2, tell_peer);
    let local_only = rig.serve("127.0.0.1:81", 2, tell_peer);
    for (path, want) in [(ClientPath::Upstream, "10.231.0.1"), (ClientPath::Loopback, "127.0.0.1")] {
        for port in [8080, 8081] {
            let mut client = rig.connect(path, port);
            let mut seen = String::new();
            client.read_to_string(&mut seen).unwrap();
            let want = if port == 8081 { "127.0.0.1" } else { want };
            assert_eq!(seen, want, "{path:?} to port {port}");
        }
    }
    any.join().unwrap();
    local_only.join().unwrap();
    assert_eq!(rig.fwd().stats().connect_failures, 0);
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn stop_closes_listeners_connections_and_thread() {
    let _alone = exclusive();
    let Some(env) = Tier::Root.require() else { return };
    let topo = Topology::new(&env);
    let container = ContainerNs::new(&topo);
    let server = in_netns(&container.name, || TcpListener::bind("0.0.0.0:80").unwrap());
    let baseline = open_fds();

    let fwd = start_forwarder(&topo, &container, &["8080:80", "5353:53/udp"], ForwarderConfig::default());
    let tid = fwd.relay_tid();
    assert!(Path::new(&format!("/proc/self/task/{tid}")).exists());
    let mut client = in_netns(&topo.host, || TcpStream::connect("127.0.0.1:8080").unwrap());
    let (mut accepted, _) = server.accept().unwrap();
    client.write_all(b"ping").unwrap();
    let mut buf = [0; 4];
    accepted.read_exact(&mut buf).unwrap();
    assert_eq!(fwd.stats().tcp_active, 1);

    let report = fwd.stop();
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!(report.stats.tcp_accepted, 1);
    // The thread's /proc entry goes a moment after the join returns.
    wait_for("the relay thread to be gone", Duration::from_secs(10), || {
        !Path::new(&format!("/proc/self/task/{tid}")).exists()
    });
    // The relayed connection is gone on both sides.
    let mut rest = Vec::new();
    assert!(client.read_to_end(&mut rest).is_err() || rest.is_empty());
    drop((client, accepted));
    assert_eq!(open_fds(), baseline, "descriptors left after stop");
    let refused = in_netns(&topo.host, || TcpStream::connect("127.0.0.1:8080").map(drop));
    assert_eq!(refused.unwrap_err().kind(), ErrorKind::ConnectionRefused);
    // The UDP port is free again.
    in_netns(&topo.host, || UdpSocket::bind("0.0.0.0:5353").map(drop)).unwrap();
}

#[test]
fn port_in_use_is_reported_with_address() {
    let _shared = shared();
    let Some(env) = Tier::Root.require() else { return };
    let topo = Topology::new(&env);
    let err = topo.in_host(|| {
        let _held = TcpListener::bind("127.0.0.1:8080").unwrap();
        bind_listeners(&["127.0.0.1:8080:80".parse().unwrap()]).unwrap_err()
    });
    assert_eq!(err.to_string(), "bind tcp 127.0.0.1:8080: port in use");
}

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// utime + stime of a thread, in clock ticks.
fn thread_ticks(tid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); after the comm, state is field 3.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn slow_reader_applies_backpressure_with_bounded_memory() {
    const LEN: usize = 64 << 20;
    let _alone = exclusive();
    let Some(rig) = Rig::new(&["8080:80"], ForwarderConfig::default()) else { return };
    let listener = rig.tcp_server("0.0.0.0:80");
    let client = rig.connect(ClientPath::Upstream, 8080);
    let sender = std::thread::spawn(move || {
        send_stream(&client, 7, LEN);
        client.shutdown(Shutdown::Write).unwrap();
        client
    });
    let (server, _) = listener.accept().unwrap();
    let rss_before = vm_rss_kib();
    let ticks_before = thread_ticks(rig.fwd().relay_tid());
    // The scenario itself: a server that does not read for a second.
    std::thread::sleep(Duration::from_secs(1));
    let rss_stalled = vm_rss_kib();
    let ticks_stalled = thread_ticks(rig.fwd().relay_tid()) - ticks_before;
    assert!(!sender.is_finished(), "64 MiB cannot fit in buffers while nobody reads");
    assert!(rss_stalled < rss_before + 16 * 1024, "rss grew from {rss_before} KiB to {rss_stalled} KiB");
    // A busy loop burns ~100 ticks a second, however slow the machine; the
    // relay's own work as the buffers fill takes longer when emulated.
    let allowed = 10 * common::time_scale();
    assert!(ticks_stalled <= allowed, "relay used {ticks_stalled} ticks (> {allowed}) while stalled: busy loop");
    assert_eq!(check_stream(&server, 7), LEN);
    drop(sender.join().unwrap());
}

#[test]
fn ipv6_listener_reaches_an_ipv4_only_server() {
    let _shared = shared();
    let Some(rig) = Rig::new(&["[::1]:8080:80"], ForwarderConfig::default()) else { return };
    let server = rig.serve("0.0.0.0:80", 1, |mut s| s.write_all(b"v4 server").unwrap());
    let mut client = in_netns(&rig.topo.host, || TcpStream::connect("[::1]:8080").unwrap());
    let mut got = String::new();
    client.read_to_string(&mut got).unwrap();
    assert_eq!(got, "v4 server");
    server.join().unwrap();
}

#[test]
fn connections_beyond_the_limit_are_reset() {
    let _shared = shared();
    let cfg = ForwarderConfig { max_connections: 1, ..ForwarderConfig::default() };
    let Some(rig) = Rig::new(&["8080:80"], cfg) else { return };
    let server = rig.serve("0.0.0.0:80", 1, |mut s| {
        s.write_all(b"first").unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
    });
    let mut first = rig.connect(ClientPath::Loopback, 8080);
    let mut banner = [0; 5];
    first.read_exact(&mut banner).unwrap();
    rig.assert_turned_away(ClientPath::Loopback, 8080, "the second connection, past the limit,");
    assert_eq!(rig.fwd().stats().tcp_rejected, 1);
    drop(first);
    server.join().unwrap();
}

/// A listener released to a server (the accelerator's ingress) leaves the
/// relay: its next client waits in its backlog for the server's accept,
/// while connections relayed before are unaffected. Releasing what the
/// relay does not hold gives nothing.
#[test]
fn a_released_listener_is_no_longer_relayed() {
    let _shared = shared();
    let Some(rig) = Rig::new(&["127.0.0.1:8080:80", "127.0.0.1:8081:81/udp"], ForwarderConfig::default()) else {
        return;
    };
    let server = rig.serve("0.0.0.0:80", 1, |mut s| {
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        got
    });
    let mut relayed = rig.connect(ClientPath::Loopback, 8080);
    let releaser = rig.fwd().releaser();
    assert!(releaser.release("127.0.0.1:8081".parse().unwrap()).is_none(), "a UDP listener is never released");
    assert!(releaser.release("127.0.0.1:9999".parse().unwrap()).is_none());
    let listener = TcpListener::from(releaser.release("127.0.0.1:8080".parse().unwrap()).expect("released"));
    assert!(releaser.release("127.0.0.1:8080".parse().unwrap()).is_none(), "released once");
    relayed.write_all(b"before").unwrap();
    relayed.shutdown(Shutdown::Write).unwrap();
    assert_eq!(server.join().unwrap(), vec![b"before".to_vec()], "the relayed connection goes on");
    let mut direct = rig.connect(ClientPath::Loopback, 8080);
    listener.set_nonblocking(false).unwrap();
    let (mut accepted, _) = listener.accept().unwrap();
    direct.write_all(b"after").unwrap();
    let mut buf = [0u8; 5];
    accepted.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"after");
    assert_eq!(rig.fwd().stats().tcp_accepted, 1, "only the first client was relayed");
}

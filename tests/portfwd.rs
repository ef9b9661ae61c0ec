//! The builtin port driver's relay against real sockets in real namespaces.
//!
//! Each test builds a throwaway topology (a "host" namespace behind an
//! "upstream" one) plus a throwaway "container" namespace with a routed
//! address on `lo`. Listeners are bound in the host namespace, the relay
//! makes its sockets in the container namespace, servers listen there, and
//! clients connect either on the host's loopback or from upstream. Traffic
//! never leaves namespaces the test created.

mod common;

use common::{Env, Tier, Topology, in_netns};
use pelagos_net::PortMapping;
use pelagos_net::portfwd::{Forwarder, ForwarderConfig, JoinNetns, Targets, bind_listeners};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::RwLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Tests that count descriptors or memory run alone.
static EXCLUSIVE: RwLock<()> = RwLock::new(());

const CONTAINER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 232, 0, 2);
const MARK: u32 = 0x7067;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// A throwaway "container" namespace, deleted on drop.
struct ContainerNs {
    name: String,
}

impl ContainerNs {
    fn new(topo: &Topology) -> Self {
        let name = topo.host.replace("pnt-h", "pnt-c");
        ip(&["netns", "add", &name]);
        let ns = Self { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ip(&["-n", &ns.name, "addr", "add", "10.232.0.2/32", "dev", "lo"]);
        ns
    }

    /// Routing for source preservation, as production sets it up.
    fn route_marked_replies_locally(&self) {
        ip(&["-n", &self.name, "rule", "add", "fwmark", "0x7067", "lookup", "7067"]);
        ip(&["-n", &self.name, "route", "add", "local", "0.0.0.0/0", "dev", "lo", "table", "7067"]);
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "sysctl", "-qw", "net.ipv4.tcp_fwmark_accept=1"])
            .output()
            .unwrap();
        assert!(out.status.success(), "sysctl: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for ContainerNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).stderr(Stdio::null()).status();
    }
}

/// Where a client connects from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientPath {
    /// 127.0.0.1 inside the host namespace.
    Loopback,
    /// The upstream namespace, to the host's 10.231.0.2.
    Upstream,
}

const BOTH: [ClientPath; 2] = [ClientPath::Loopback, ClientPath::Upstream];

/// Topology + container namespace + a running forwarder.
struct Rig {
    fwd: Option<Forwarder>,
    container: ContainerNs,
    topo: Topology,
    _env: Env,
}

impl Rig {
    fn new(mappings: &[&str], cfg: ForwarderConfig) -> Option<Self> {
        Self::build(mappings, cfg, |_| {})
    }

    fn build(mappings: &[&str], cfg: ForwarderConfig, prepare: impl FnOnce(&ContainerNs)) -> Option<Self> {
        let env = Tier::Root.require()?;
        let topo = Topology::new(&env);
        let container = ContainerNs::new(&topo);
        prepare(&container);
        let mappings: Vec<PortMapping> = mappings.iter().map(|m| m.parse().unwrap()).collect();
        let listeners = topo.in_host(move || bind_listeners(&mappings)).expect("bind listeners");
        let source = JoinNetns::open(&Path::new("/run/netns").join(&container.name)).unwrap();
        let fwd = Forwarder::start(listeners, Box::new(source), cfg).expect("start forwarder");
        Some(Self { fwd: Some(fwd), container, topo, _env: env })
    }

    fn fwd(&self) -> &Forwarder {
        self.fwd.as_ref().unwrap()
    }

    /// A TCP listener bound inside the container namespace.
    fn tcp_server(&self, addr: &str) -> TcpListener {
        let addr: SocketAddr = addr.parse().unwrap();
        in_netns(&self.container.name, move || TcpListener::bind(addr).unwrap())
    }

    /// A server accepting `conns` connections, each handled on its own thread.
    fn serve<T: Send + 'static>(&self, addr: &str, conns: usize, handler: fn(TcpStream) -> T) -> JoinHandle<Vec<T>> {
        let listener = self.tcp_server(addr);
        std::thread::spawn(move || {
            let handlers: Vec<_> = (0..conns)
                .map(|_| {
                    let (stream, _) = listener.accept().unwrap();
                    std::thread::spawn(move || handler(stream))
                })
                .collect();
            handlers.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    fn target(&self, path: ClientPath, port: u16) -> (String, SocketAddr) {
        match path {
            ClientPath::Loopback => (self.topo.host.clone(), SocketAddr::from(([127, 0, 0, 1], port))),
            ClientPath::Upstream => (self.topo.upstream.clone(), SocketAddr::from(([10, 231, 0, 2], port))),
        }
    }

    fn connect(&self, path: ClientPath, port: u16) -> TcpStream {
        let (ns, addr) = self.target(path, port);
        let stream = in_netns(&ns, move || TcpStream::connect(addr).unwrap());
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        stream
    }

    /// A UDP socket bound in the client's namespace, and where to send.
    fn udp_client(&self, path: ClientPath, port: u16) -> (UdpSocket, SocketAddr) {
        let (ns, addr) = self.target(path, port);
        let sock = in_netns(&ns, || UdpSocket::bind("0.0.0.0:0").unwrap());
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (sock, addr)
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), the same for a seed
/// however the stream is cut.
struct Stream {
    state: u64,
    word: [u8; 8],
    used: usize,
}

impl Stream {
    fn new(seed: u64) -> Self {
        Self { state: seed | 1, word: [0; 8], used: 8 }
    }

    fn fill(&mut self, buf: &mut [u8]) {
        let mut i = 0;
        while i < buf.len() {
            if self.used == 8 {
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                self.word = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
                self.used = 0;
            }
            let n = (8 - self.used).min(buf.len() - i);
            buf[i..i + n].copy_from_slice(&self.word[self.used..self.used + n]);
            self.used += n;
            i += n;
        }
    }
}

const CHUNK: usize = 64 * 1024;

/// Writes `len` bytes of stream `seed`.
fn send_stream(mut w: impl Write, seed: u64, len: usize) {
    let mut gen_ = Stream::new(seed);
    let mut buf = vec![0; CHUNK];
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK);
        gen_.fill(&mut buf[..n]);
        w.write_all(&buf[..n]).unwrap();
        left -= n;
    }
}

/// Reads to EOF, checking every byte against stream `seed`; returns the length.
fn check_stream(mut r: impl Read, seed: u64) -> usize {
    let mut want = Stream::new(seed);
    let (mut got, mut expected) = (vec![0; CHUNK], vec![0; CHUNK]);
    let mut total = 0;
    loop {
        let n = match r.read(&mut got) {
            Ok(0) => return total,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => panic!("read after {total} bytes: {e}"),
        };
        want.fill(&mut expected[..n]);
        assert!(got[..n] == expected[..n], "stream {seed:#x} differs within bytes {total}..{}", total + n);
        total += n;
    }
}

/// A small digest (FNV-1a 64) of a byte string.
fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn server_speaking_first_reaches_both_client_paths() {
    let _shared = EXCLUSIVE.read().unwrap();
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
    let _shared = EXCLUSIVE.read().unwrap();
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
    let _shared = EXCLUSIVE.read().unwrap();
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
    let _shared = EXCLUSIVE.read().unwrap();
    let Some(rig) = Rig::new(&["8080:80"], ForwarderConfig::default()) else { return };
    // The server echoes the client's seed stream with its own seed: seed + 1.
    let server = rig.serve("0.0.0.0:80", 2 * PER_PATH, |s| {
        let mut seed = [0; 8];
        (&s).read_exact(&mut seed).unwrap();
        let seed = u64::from_le_bytes(seed);
        let writer = s.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            send_stream(&writer, seed + 1, LEN);
            writer.shutdown(Shutdown::Write).unwrap();
        });
        let got = check_stream(&s, seed);
        sender.join().unwrap();
        got
    });
    let mut clients = Vec::new();
    for (i, path) in BOTH.iter().flat_map(|p| std::iter::repeat_n(*p, PER_PATH)).enumerate() {
        let client = rig.connect(path, 8080);
        let seed = 0x1000 * (i as u64 + 1);
        clients.push(std::thread::spawn(move || {
            (&client).write_all(&seed.to_le_bytes()).unwrap();
            let writer = client.try_clone().unwrap();
            let sender = std::thread::spawn(move || {
                send_stream(&writer, seed, LEN);
                writer.shutdown(Shutdown::Write).unwrap();
            });
            let got = check_stream(&client, seed + 1);
            sender.join().unwrap();
            (path, got)
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
    let _shared = EXCLUSIVE.read().unwrap();
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
    let _shared = EXCLUSIVE.read().unwrap();
    let Some(rig) = Rig::new(&["8080:80"], ForwarderConfig::default()) else { return };
    let mut client = rig.connect(ClientPath::Loopback, 8080);
    let mut buf = [0; 1];
    match client.read(&mut buf) {
        Ok(0) => {}
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
        Ok(n) => panic!("read {n} bytes from nowhere"),
    }
    assert_eq!(rig.fwd().stats().connect_failures, 1);
}

#[test]
fn udp_request_response_from_both_paths_then_idle_expiry() {
    let _shared = EXCLUSIVE.read().unwrap();
    let cfg = ForwarderConfig { udp_idle: Duration::from_millis(300), ..ForwarderConfig::default() };
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
    wait_for("idle udp flows to expire", Duration::from_secs(5), || rig.fwd().stats().udp_flows_active == 0);
}

#[test]
fn source_address_is_preserved_and_loopback_only_server_still_works() {
    let _shared = EXCLUSIVE.read().unwrap();
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
    let _alone = EXCLUSIVE.write().unwrap();
    let Some(env) = Tier::Root.require() else { return };
    let topo = Topology::new(&env);
    let container = ContainerNs::new(&topo);
    let server = in_netns(&container.name, || TcpListener::bind("0.0.0.0:80").unwrap());
    let baseline = open_fds();

    let mappings: Vec<PortMapping> = vec!["8080:80".parse().unwrap(), "5353:53/udp".parse().unwrap()];
    let listeners = topo.in_host(move || bind_listeners(&mappings)).unwrap();
    let source = JoinNetns::open(&Path::new("/run/netns").join(&container.name)).unwrap();
    let fwd = Forwarder::start(listeners, Box::new(source), ForwarderConfig::default()).unwrap();
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
    assert!(!Path::new(&format!("/proc/self/task/{tid}")).exists(), "relay thread still running");
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
    let _shared = EXCLUSIVE.read().unwrap();
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
    let _alone = EXCLUSIVE.write().unwrap();
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
    assert!(ticks_stalled <= 10, "relay used {ticks_stalled} ticks while stalled: busy loop");
    assert_eq!(check_stream(&server, 7), LEN);
    drop(sender.join().unwrap());
}

#[test]
fn ipv6_listener_reaches_an_ipv4_only_server() {
    let _shared = EXCLUSIVE.read().unwrap();
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
    let _shared = EXCLUSIVE.read().unwrap();
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
    let mut second = rig.connect(ClientPath::Loopback, 8080);
    let mut buf = [0; 1];
    match second.read(&mut buf) {
        Ok(0) => {}
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
        Ok(n) => panic!("second connection got {n} bytes past the limit"),
    }
    assert_eq!(rig.fwd().stats().tcp_rejected, 1);
    drop(first);
    server.join().unwrap();
}

/// Arms `SO_LINGER` 0 on a stream, so that dropping it sends a reset.
fn abort_on_drop(stream: &TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    nix::sys::socket::setsockopt(stream, nix::sys::socket::sockopt::Linger, &linger).unwrap();
}

#[test]
fn reset_after_half_close_reaches_the_other_side_and_frees_the_connection() {
    let _shared = EXCLUSIVE.read().unwrap();
    let Some(rig) = Rig::new(&["8080:80"], ForwarderConfig::default()) else { return };
    let listener = rig.tcp_server("0.0.0.0:80");
    for client_aborts in [true, false] {
        let client = rig.connect(ClientPath::Loopback, 8080);
        let (server, _) = listener.accept().unwrap();
        server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // One side sends its request and half-closes; the other reads it to EOF.
        let (mut closer, mut survivor) = if client_aborts { (client, server) } else { (server, client) };
        closer.write_all(b"request").unwrap();
        closer.shutdown(Shutdown::Write).unwrap();
        let mut request = Vec::new();
        survivor.read_to_end(&mut request).unwrap();
        assert_eq!(request, b"request");
        assert_eq!(rig.fwd().stats().tcp_active, 1);

        // The half-closed side now aborts.
        abort_on_drop(&closer);
        drop(closer);

        let which = if client_aborts { "client" } else { "server" };
        wait_for(&format!("the {which}'s reset to close the relayed connection"), Duration::from_secs(2), || {
            rig.fwd().stats().tcp_active == 0
        });
        wait_for(&format!("the reset of the {which} to reach the other side"), Duration::from_secs(2), || {
            survivor.write(b"late reply").is_err()
        });
    }
}

#[test]
fn udp_reply_comes_from_the_address_the_client_sent_to() {
    let _shared = EXCLUSIVE.read().unwrap();
    let Some(rig) = Rig::new(&["5353:53/udp"], ForwarderConfig::default()) else { return };
    // A second IPv6 address on the host, besides ::1.
    ip(&["-n", &rig.topo.host, "addr", "add", "fd00:5::2/128", "dev", "lo", "nodad"]);
    // Dual-stack: IPv4 flows arrive as mapped addresses.
    let server = in_netns(&rig.container.name, || UdpSocket::bind("[::]:53").unwrap());
    let echo = std::thread::spawn(move || {
        let mut buf = [0; 1500];
        for _ in 0..2 {
            let (n, from) = server.recv_from(&mut buf).unwrap();
            server.send_to(&buf[..n], from).unwrap();
        }
    });
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
    let _shared = EXCLUSIVE.read().unwrap();
    let Some(rig) = Rig::new(&["[::1]:5353:53/udp"], ForwarderConfig::default()) else { return };
    let server = in_netns(&rig.container.name, || UdpSocket::bind("127.0.0.1:53").unwrap());
    let echo = std::thread::spawn(move || {
        let mut buf = [0; 1500];
        for _ in 0..2 {
            let (n, from) = server.recv_from(&mut buf).unwrap();
            server.send_to(&buf[..n], from).unwrap();
        }
    });
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
    let _shared = EXCLUSIVE.read().unwrap();
    let Some(rig) = Rig::new(&["127.0.0.1:5353:53/udp"], ForwarderConfig::default()) else { return };
    let (sock, to) = rig.udp_client(ClientPath::Loopback, 5353);
    sock.send_to(b"anyone?", to).unwrap();
    wait_for("the refused datagram to be counted", Duration::from_secs(5), || rig.fwd().stats().udp_dropped >= 1);
    assert_eq!(rig.fwd().stats().bytes_from_container, 0);
}

#[test]
fn data_sent_just_before_a_reset_still_reaches_the_server() {
    let _shared = EXCLUSIVE.read().unwrap();
    let Some(rig) = Rig::new(&["8080:80"], ForwarderConfig::default()) else { return };
    let listener = rig.tcp_server("0.0.0.0:80");
    let mut client = rig.connect(ClientPath::Loopback, 8080);
    let (mut server, _) = listener.accept().unwrap();
    server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    client.write_all(b"last words").unwrap();
    abort_on_drop(&client);
    drop(client);
    let mut got = Vec::new();
    let mut buf = [0; 64];
    loop {
        match server.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("server read after {} bytes: {e}", got.len()),
        }
    }
    assert_eq!(got, b"last words");
    wait_for("the connection to close", Duration::from_secs(2), || rig.fwd().stats().tcp_active == 0);
}

//! The rig for the builtin port driver's relay tests (`tests/portfwd_*.rs`).
//!
//! A throwaway topology (a "host" namespace behind an "upstream" one) plus a
//! throwaway "container" namespace with a routed address on `lo`. Listeners
//! are bound in the host namespace, the relay makes its sockets in the
//! container namespace, servers listen there, and clients connect either on
//! the host's loopback or from upstream. Also here: deterministic byte
//! streams to check bulk transfers against, and small waiting and reading
//! helpers the tests share.

use super::{Env, Tier, Topology, in_netns, ip};
use pelagos_net::PortMapping;
use pelagos_net::ports::relay::{Forwarder, ForwarderConfig, JoinNetns, bind_listeners};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Tests that count descriptors or memory run alone.
static EXCLUSIVE: RwLock<()> = RwLock::new(());

/// Held by a test that may share the process with others. A failed test
/// poisons nothing: the next ones still run and report their own result.
pub fn shared() -> RwLockReadGuard<'static, ()> {
    EXCLUSIVE.read().unwrap_or_else(PoisonError::into_inner)
}

/// Held by a test that counts descriptors or memory: it runs alone.
pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    EXCLUSIVE.write().unwrap_or_else(PoisonError::into_inner)
}

pub const CONTAINER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 232, 0, 2);
pub const MARK: u32 = 0x7067;

/// A throwaway "container" namespace, deleted on drop.
pub struct ContainerNs {
    pub name: String,
}

impl ContainerNs {
    pub fn new(topo: &Topology) -> Self {
        let name = topo.host.replace("pnt-h", "pnt-c");
        ip(&["netns", "add", &name]);
        let ns = Self { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ip(&["-n", &ns.name, "addr", "add", "10.232.0.2/32", "dev", "lo"]);
        ns
    }

    /// Routing for source preservation, as production sets it up.
    pub fn route_marked_replies_locally(&self) {
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

/// Binds `mappings` in the topology's host namespace and starts a forwarder
/// that makes its sockets in `container`.
pub fn start_forwarder(topo: &Topology, container: &ContainerNs, mappings: &[&str], cfg: ForwarderConfig) -> Forwarder {
    let mappings: Vec<PortMapping> = mappings.iter().map(|m| m.parse().unwrap()).collect();
    let listeners = topo.in_host(move || bind_listeners(&mappings)).expect("bind listeners");
    let source = JoinNetns::open(&Path::new("/run/netns").join(&container.name)).unwrap();
    Forwarder::start(listeners, Box::new(source), cfg).expect("start forwarder")
}

/// Where a client connects from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientPath {
    /// 127.0.0.1 inside the host namespace.
    Loopback,
    /// The upstream namespace, to the host's 10.231.0.2.
    Upstream,
}

pub const BOTH: [ClientPath; 2] = [ClientPath::Loopback, ClientPath::Upstream];

/// Topology + container namespace + a running forwarder.
pub struct Rig {
    fwd: Option<Forwarder>,
    pub container: ContainerNs,
    pub topo: Topology,
    _env: Env,
}

impl Rig {
    pub fn new(mappings: &[&str], cfg: ForwarderConfig) -> Option<Self> {
        Self::build(mappings, cfg, |_| {})
    }

    pub fn build(mappings: &[&str], cfg: ForwarderConfig, prepare: impl FnOnce(&ContainerNs)) -> Option<Self> {
        let env = Tier::Root.require()?;
        let topo = Topology::new(&env);
        let container = ContainerNs::new(&topo);
        prepare(&container);
        let fwd = start_forwarder(&topo, &container, mappings, cfg);
        Some(Self { fwd: Some(fwd), container, topo, _env: env })
    }

    pub fn fwd(&self) -> &Forwarder {
        self.fwd.as_ref().unwrap()
    }

    /// A TCP listener bound inside the container namespace.
    pub fn tcp_server(&self, addr: &str) -> TcpListener {
        let addr: SocketAddr = addr.parse().unwrap();
        in_netns(&self.container.name, move || TcpListener::bind(addr).unwrap())
    }

    /// A server accepting `conns` connections, each handled on its own thread.
    pub fn serve<T: Send + 'static>(
        &self,
        addr: &str,
        conns: usize,
        handler: fn(TcpStream) -> T,
    ) -> JoinHandle<Vec<T>> {
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

    /// A UDP server bound inside the container namespace that sends
    /// `datagrams` datagrams back to where they came from, then ends.
    pub fn udp_echo(&self, addr: &str, datagrams: usize) -> JoinHandle<()> {
        let addr: SocketAddr = addr.parse().unwrap();
        let server = in_netns(&self.container.name, move || UdpSocket::bind(addr).unwrap());
        std::thread::spawn(move || {
            let mut buf = [0; 1500];
            for _ in 0..datagrams {
                let (n, from) = server.recv_from(&mut buf).unwrap();
                server.send_to(&buf[..n], from).unwrap();
            }
        })
    }

    pub fn target(&self, path: ClientPath, port: u16) -> (String, SocketAddr) {
        match path {
            ClientPath::Loopback => (self.topo.host.clone(), SocketAddr::from(([127, 0, 0, 1], port))),
            ClientPath::Upstream => (self.topo.upstream.clone(), SocketAddr::from(([10, 231, 0, 2], port))),
        }
    }

    pub fn connect(&self, path: ClientPath, port: u16) -> TcpStream {
        let (ns, addr) = self.target(path, port);
        let stream = in_netns(&ns, move || TcpStream::connect(addr).unwrap());
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        stream
    }

    /// Connects and checks that the relay closes or resets the connection
    /// before any data. On a slow (emulated) machine the reset can arrive
    /// before connect() returns, which counts too.
    pub fn assert_turned_away(&self, path: ClientPath, port: u16, what: &str) {
        let (ns, addr) = self.target(path, port);
        match in_netns(&ns, move || TcpStream::connect(addr)) {
            Ok(mut stream) => {
                stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                assert_closed_without_data(&mut stream, what);
            }
            Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{what}: {e}"),
        }
    }

    /// A UDP socket bound in the client's namespace, and where to send.
    pub fn udp_client(&self, path: ClientPath, port: u16) -> (UdpSocket, SocketAddr) {
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
pub fn send_stream(mut w: impl Write, seed: u64, len: usize) {
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
pub fn check_stream(mut r: impl Read, seed: u64) -> usize {
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

/// Both directions at once: sends `len` bytes of stream `send_seed` and
/// half-closes, while reading to EOF and checking against stream
/// `recv_seed`; returns the length read.
pub fn duplex_streams(stream: &TcpStream, send_seed: u64, recv_seed: u64, len: usize) -> usize {
    let writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        send_stream(&writer, send_seed, len);
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let got = check_stream(stream, recv_seed);
    sender.join().unwrap();
    got
}

/// A small digest (FNV-1a 64) of a byte string.
pub fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

pub fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Asserts that the relay closes `stream` (an EOF or a reset) without
/// sending it any data; `what` names the connection in the failure.
pub fn assert_closed_without_data(stream: &mut TcpStream, what: &str) {
    let mut buf = [0; 1];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
        Ok(n) => panic!("{what} got {n} bytes"),
    }
}

/// Arms `SO_LINGER` 0 on a stream, so that dropping it sends a reset.
pub fn abort_on_drop(stream: &TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    nix::sys::socket::setsockopt(stream, nix::sys::socket::sockopt::Linger, &linger).unwrap();
}

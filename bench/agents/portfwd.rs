//! Throughput, relay CPU and connect latency of the builtin port driver
//! against direct loopback, in throwaway namespaces (root only).
//!
//! `cargo run --release --example bench_portfwd [GIB]`
//!
//! Two namespaces are created and deleted: a "host" one holding the
//! listener and the client, and a "container" one holding the server. The
//! direct baseline runs client and server both inside the container
//! namespace on loopback. No traffic leaves these namespaces.

use pelagos_net::PortMapping;
use pelagos_net::ports::relay::{Forwarder, ForwarderConfig, JoinNetns, bind_listeners};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BUF: usize = 1 << 20;

struct Netns(String);

impl Netns {
    fn new(name: &str) -> Self {
        let ok = |args: &[&str]| assert!(Command::new("ip").args(args).status().unwrap().success(), "ip {args:?}");
        ok(&["netns", "add", name]);
        let ns = Netns(name.into());
        ok(&["-n", name, "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).stderr(Stdio::null()).status();
    }
}

fn in_netns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = Path::new("/run/netns").join(name);
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap();
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// A server in `ns` on `addr`: the first `bulk` connections are drained to
/// EOF, the rest get one byte and are closed.
fn server(ns: &str, addr: SocketAddr, bulk: usize) -> std::thread::JoinHandle<()> {
    let listener = in_netns(ns, move || TcpListener::bind(addr).unwrap());
    std::thread::spawn(move || {
        for (i, stream) in listener.incoming().enumerate() {
            let Ok(mut s) = stream else { return };
            if i < bulk {
                let mut buf = vec![0; BUF];
                while s.read(&mut buf).is_ok_and(|n| n > 0) {}
                let _ = s.write_all(b"k");
            } else {
                let _ = s.write_all(b"x");
            }
        }
    })
}

/// Sends `bytes` to `addr` from `ns`; returns the elapsed time.
fn transfer(ns: &str, addr: SocketAddr, bytes: u64) -> Duration {
    in_netns(ns, move || {
        let mut c = TcpStream::connect(addr).unwrap();
        let buf = vec![0x5a; BUF];
        let start = Instant::now();
        let mut left = bytes;
        while left > 0 {
            let n = left.min(BUF as u64) as usize;
            c.write_all(&buf[..n]).unwrap();
            left -= n as u64;
        }
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut ack = [0; 1];
        c.read_exact(&mut ack).unwrap();
        start.elapsed()
    })
}

/// p50 and p99 of connect + first byte + close, over `n` connections.
fn connect_latency(ns: &str, addr: SocketAddr, n: usize) -> (Duration, Duration) {
    in_netns(ns, move || {
        let mut samples: Vec<Duration> = (0..n)
            .map(|_| {
                let start = Instant::now();
                let mut c = TcpStream::connect(addr).unwrap();
                let mut b = [0; 1];
                c.read_exact(&mut b).unwrap();
                drop(c);
                start.elapsed()
            })
            .collect();
        samples.sort();
        (samples[n / 2], samples[n * 99 / 100])
    })
}

/// CPU time (user + system) of thread `tid` of this process.
fn thread_cpu(tid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_secs_f64(ticks as f64 / hz)
}

fn gbit(bytes: u64, d: Duration) -> f64 {
    bytes as f64 * 8.0 / d.as_secs_f64() / 1e9
}

fn main() {
    let gib: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    let bytes = gib << 30;
    let tag = std::process::id();
    let host = Netns::new(&format!("pbench-h{tag}"));
    let ctr = Netns::new(&format!("pbench-c{tag}"));
    const LATENCY_N: usize = 2000;

    let srv = "127.0.0.1:9000".parse().unwrap();
    let _server = server(&ctr.0, srv, 1);
    let direct = transfer(&ctr.0, srv, bytes);
    let (d50, d99) = connect_latency(&ctr.0, srv, LATENCY_N);
    println!(
        "direct loopback: {gib} GiB in {:.2?} = {:.2} Gbit/s; connect+byte+close p50 {d50:.1?} p99 {d99:.1?}",
        direct,
        gbit(bytes, direct)
    );

    for (i, pipe_size) in [64 << 10, 256 << 10, 512 << 10, 1 << 20].into_iter().enumerate() {
        let port = 9100 + i as u16;
        let _server = server(&ctr.0, SocketAddr::from(([127, 0, 0, 1], port)), 1);
        let mapping: PortMapping = format!("127.0.0.1:{port}:{port}").parse().unwrap();
        let listeners = in_netns(&host.0, move || bind_listeners(&[mapping]).unwrap());
        let source = JoinNetns::open(&Path::new("/run/netns").join(&ctr.0)).unwrap();
        let cfg = ForwarderConfig { pipe_size, ..ForwarderConfig::default() };
        let fwd = Forwarder::start(listeners, Box::new(source), cfg).unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let cpu_before = thread_cpu(fwd.relay_tid());
        let took = transfer(&host.0, addr, bytes);
        let cpu = thread_cpu(fwd.relay_tid()) - cpu_before;
        let (p50, p99) = connect_latency(&host.0, addr, LATENCY_N);
        let report = fwd.stop();
        println!(
            "forwarded, pipe {:>4} KiB: {gib} GiB in {:.2?} = {:.2} Gbit/s ({:.2}x direct); relay cpu {:.2?} = {:.2} core \
             (whole run {:.2?}); connect+byte+close p50 {p50:.1?} p99 {p99:.1?}",
            pipe_size >> 10,
            took,
            gbit(bytes, took),
            direct.as_secs_f64() / took.as_secs_f64(),
            cpu,
            cpu.as_secs_f64() / took.as_secs_f64(),
            report.relay_cpu,
        );
    }
}

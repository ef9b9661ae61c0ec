//! Published ports through each port driver and each client path, end to
//! end: `pelagos-net run` in a throwaway host namespace, the servers of
//! `fixtures/portcheck_server.py` as the command, clients on the host
//! namespace's loopback (pasta's splice path) and in the fake upstream
//! namespace (a non-loopback client: pasta's tap path).

#[macro_use]
mod common;

use common::running::{Running, eventually};
use common::{Accel, Env, Tier, Topology, UPSTREAM_ADDR, describe, in_netns, port};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SERVER: &str = include_str!("fixtures/portcheck_server.py");
/// The host namespace's own (non-loopback) address.
const HOST_ADDR: &str = "10.231.0.2";
const MIB: usize = 1024 * 1024;

/// Where a client connects from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientPath {
    /// 127.0.0.1 in the host namespace.
    Loopback,
    /// The upstream namespace, to the host's 10.231.0.2.
    Upstream,
}

/// The servers running inside a `pelagos-net run`.
struct Service {
    run: Running,
    dir: tempfile::TempDir,
    /// Host ports of banner, echo, server-close, peer (a range).
    tcp: u16,
    /// Host port of the UDP echo.
    udp: u16,
}

struct Ports {
    host_ip: Option<&'static str>,
    /// UDP published on the container's own port number (pasta's splice
    /// path drops remapped UDP replies on old builds).
    udp_same_port: bool,
}

const ANY: Ports = Ports { host_ip: None, udp_same_port: false };

impl Service {
    fn start(topo: &Topology, env: &Env, run_args: &[&str], ports: Ports) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let script = dir.path().join("server.py");
        std::fs::write(&script, SERVER).unwrap();
        let (tcp, ctr) = (port(31000), port(7100));
        let udp = if ports.udp_same_port { ctr } else { port(32000) };
        let ip = ports.host_ip.map_or(String::new(), |ip| format!("{ip}:"));
        let p_tcp = format!("{ip}{tcp}-{}:{ctr}-{}", tcp + 3, ctr + 3);
        let p_udp = format!("{ip}{udp}:{ctr}/udp");
        let (ctr_s, dir_s, script_s) = (ctr.to_string(), path_str(dir.path()), path_str(&script));
        let mut args: Vec<&str> = vec!["-v", "run"];
        args.extend_from_slice(run_args);
        args.extend(["-p", &p_tcp, "-p", &p_udp, "--", "python3", &script_s, &ctr_s, &dir_s]);
        let run = Running::start(topo, env, &args);
        let ready = dir.path().join("ready");
        eventually(15, || if ready.exists() { Ok(()) } else { Err(std::io::Error::other("server not ready")) });
        Self { run, dir, tcp, udp }
    }

    fn addr(&self, path: ClientPath, offset: u16) -> SocketAddr {
        let ip: IpAddr = match path {
            ClientPath::Loopback => "127.0.0.1".parse().unwrap(),
            ClientPath::Upstream => HOST_ADDR.parse().unwrap(),
        };
        SocketAddr::new(ip, self.tcp + offset)
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// SIGTERM (forwarded to the servers), then the output.
    fn stop(self) -> std::process::Output {
        self.run.stop()
    }
}

fn path_str(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

/// Run `f` as a client on `path`.
fn client<T: Send + 'static>(topo: &Topology, path: ClientPath, f: impl FnOnce() -> T + Send + 'static) -> T {
    match path {
        ClientPath::Loopback => in_netns(&topo.host, f),
        ClientPath::Upstream => in_netns(&topo.upstream, f),
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = eventually(10, || TcpStream::connect_timeout(&addr, Duration::from_secs(2)));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// The server speaks first; a broken relay hangs here.
fn banner(addr: SocketAddr) {
    let s = connect(addr);
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).expect("banner never came (server-speaks-first hang)");
    assert_eq!(line, "SSH-2.0-pelagos-test\r\n");
    (&s).write_all(b"hello\n").unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "got hello\n");
}

/// Deterministic bytes that differ at every offset of a transfer.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Send `data` while reading the echo; half-close after sending; the echo
/// must come back exactly, once.
fn echo_transfer(addr: SocketAddr, data: &[u8]) {
    let s = connect(addr);
    let reader = s.try_clone().unwrap();
    let len = data.len();
    let got = std::thread::spawn(move || {
        let mut got = Vec::with_capacity(len);
        (&reader).read_to_end(&mut got).map(|_| got)
    });
    (&s).write_all(data).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let got = got.join().unwrap().expect("read the echo");
    assert_eq!(got.len(), data.len(), "echo length (duplicated or truncated after half-close)");
    if got != data {
        let first_bad = got.iter().zip(data).position(|(a, b)| a != b);
        panic!("echo differs from byte {first_bad:?} on");
    }
}

/// The server half-closes first and keeps reading: what we send after its
/// FIN must still reach it, counted in its log.
fn server_half_close(addr: SocketAddr, log: PathBuf, seed: u64) {
    let s = connect(addr);
    let mut first = Vec::new();
    (&s).read_to_end(&mut first).unwrap();
    assert_eq!(first, b"bye\n");
    let data = pattern(200_000, seed);
    (&s).write_all(&data).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    (&s).read_to_end(&mut rest).unwrap();
    let want = format!("{} {}", data.len(), crc32(&data));
    eventually(10, || {
        let text = std::fs::read_to_string(&log)?;
        if text.lines().any(|l| l == want) { Ok(()) } else { Err(std::io::Error::other(format!("log: {text}"))) }
    });
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// The address the server saw.
fn peer_seen(addr: SocketAddr) -> String {
    let s = connect(addr);
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line.trim().to_owned()
}

fn udp_round_trips(addr: SocketAddr, count: usize) {
    let local: IpAddr =
        if addr.ip().is_loopback() { "127.0.0.1".parse().unwrap() } else { UPSTREAM_ADDR.parse().unwrap() };
    let sock = UdpSocket::bind(SocketAddr::new(local, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    for i in 0..count {
        let msg = format!("ping-{i}");
        let want = format!("echo:{msg}").into_bytes();
        // A resend's late echo of an earlier round may still be queued:
        // skip it and wait for this round's.
        let got = eventually(10, || {
            sock.send_to(msg.as_bytes(), addr)?;
            let mut buf = [0u8; 128];
            loop {
                let n = sock.recv(&mut buf)?;
                if buf[..n].starts_with(b"echo:ping-") && buf[..n] != want[..] {
                    continue;
                }
                return Ok(buf[..n].to_vec());
            }
        });
        assert_eq!(got, want);
    }
}

/// Every correctness check over one client path; returns bulk transfers done.
fn check_path(topo: &Topology, svc: &Service, path: ClientPath, bulk: usize, expect_peer: Option<&str>) -> usize {
    let (b, e, c, p) = (svc.addr(path, 0), svc.addr(path, 1), svc.addr(path, 2), svc.addr(path, 3));
    let u = SocketAddr::new(b.ip(), svc.udp);
    let log = svc.log("server-close.log");
    let seed = path as u64 + 1;
    client(topo, path, move || {
        banner(b);
        echo_transfer(e, &pattern(100_000, seed));
        server_half_close(c, log, seed);
        let start = Instant::now();
        for i in 0..bulk {
            echo_transfer(e, &pattern(32 * MIB, seed * 1000 + i as u64));
        }
        eprintln!("{path:?}: {bulk} x 32 MiB each way in {:?}", start.elapsed());
        for _ in 0..300 {
            assert!(!peer_seen(p).is_empty());
        }
        udp_round_trips(u, 20);
    });
    if let Some(want) = expect_peer {
        let seen = client(topo, path, move || peer_seen(p));
        assert_eq!(seen, want, "the server saw {seen} for a {path:?} client");
    }
    bulk
}

fn factory_pid(topo: &Topology) -> Option<u32> {
    let runs = std::fs::read_dir(topo.run_dir.join("runs")).ok()?;
    for entry in runs.flatten() {
        let text = std::fs::read_to_string(entry.path()).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        let resources = json["resources"].as_array().cloned().unwrap_or_default();
        if let Some(pid) = resources.iter().find_map(|r| r["factory"]["pid"].as_u64()) {
            return Some(pid as u32);
        }
    }
    None
}

fn refused(topo: &Topology, addr: SocketAddr) -> bool {
    in_netns(&topo.host, move || TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err())
}

/// Whether `pid` exits (or is a zombie nobody reaps, as under an init that
/// does not reap orphans) within 10 s.
fn gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    let running = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.rsplit_once(") ").is_none_or(|(_, rest)| !rest.starts_with('Z')))
    };
    while running() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Transfers of 32 MiB each way per client path: 25 per path as root (50
/// in all), 5 per path rootless (the same relay, a shorter run).
fn builtin_driver_is_correct_on_both_client_paths(env: Env) {
    let bulk = if env.user.is_some() { 5 } else { 25 };
    let topo = Topology::new(&env);
    let svc = Service::start(&topo, &env, &["--network", "pasta", "--port-driver", "builtin"], ANY);
    // Rootless runs get a socket factory process; root's relay joins itself.
    let factory = factory_pid(&topo);
    assert_eq!(factory.is_some(), env.user.is_some(), "socket factory recorded only for rootless runs");
    let mut done = check_path(&topo, &svc, ClientPath::Loopback, bulk, Some("127.0.0.1"));
    done += check_path(&topo, &svc, ClientPath::Upstream, bulk, Some(UPSTREAM_ADDR));
    // Straight to stderr, past the test harness's capture: CI logs show it.
    let tier = if env.user.is_some() { "rootless" } else { "root" };
    let _ = writeln!(std::io::stderr(), "builtin driver ({tier}): {done} transfers of 32 MiB each way, 0 corrupted");
    // An IPv6 client on the host's ::1 reaches the IPv4-only server too.
    let v6: SocketAddr = format!("[::1]:{}", svc.tcp).parse().unwrap();
    let v6_peer = SocketAddr::new(v6.ip(), svc.tcp + 3);
    client(&topo, ClientPath::Loopback, move || banner(v6));
    assert_eq!(client(&topo, ClientPath::Loopback, move || peer_seen(v6_peer)), "127.0.0.1");
    let listen = svc.addr(ClientPath::Loopback, 0);
    let out = svc.stop();
    assert_eq!(out.status.code(), Some(143), "{}", describe(&out));
    assert!(stderr_of(&out).contains("port driver: builtin"), "{}", describe(&out));
    assert!(refused(&topo, listen), "listener still open after the run");
    if let Some(factory) = factory {
        assert!(gone(factory), "socket factory {factory} outlived the run");
    }
    topo.assert_clean();
}

/// pasta's own forwarding: the checks its splice path (loopback clients)
/// passes on every build; bulk transfers and its tap path only where the
/// build is known to be fixed (Debian's 2023-03-09 build stalls or
/// truncates 16 MiB echoes on its splice path too; see the README).
fn pasta_driver_passes_what_its_build_supports(env: Env) {
    let topo = Topology::new(&env);
    let ports = Ports { host_ip: None, udp_same_port: true };
    let svc = Service::start(&topo, &env, &["--network", "pasta", "--port-driver", "pasta"], ports);
    let fixed = pasta_tap_path_is_fixed();
    check_path(&topo, &svc, ClientPath::Loopback, if fixed { 5 } else { 0 }, None);
    if fixed {
        check_path(&topo, &svc, ClientPath::Upstream, 5, None);
    } else {
        let _ = writeln!(
            std::io::stderr(),
            "pasta driver: bulk transfers and the tap path not checked: this pasta build has the known \
             TCP bugs (see `pelagos-net doctor`); auto uses the builtin driver on it"
        );
    }
    let out = svc.stop();
    assert!(stderr_of(&out).contains("port driver: pasta"), "{}", describe(&out));
    topo.assert_clean();
}

fn pasta_tap_path_is_fixed() -> bool {
    let pasta = common::which("pasta").expect("pasta");
    pelagos_net::helpers::pasta::features::probe(&pasta).is_ok_and(|f| !f.tcp_tap_bugs().any())
}

/// `auto` on a broken pasta picks the builtin driver, and a non-loopback
/// client gets its banner; on a fixed build it keeps pasta. The same for a
/// loopback-only bind.
fn auto_driver_follows_the_pasta_build(env: Env) {
    let topo = Topology::new(&env);
    let want = if pasta_tap_path_is_fixed() { "port driver: pasta" } else { "port driver: builtin" };
    let svc = Service::start(&topo, &env, &["--network", "pasta"], ANY);
    let addr = svc.addr(ClientPath::Upstream, 0);
    client(&topo, ClientPath::Upstream, move || banner(addr));
    let out = svc.stop();
    assert!(stderr_of(&out).contains(want), "{}", describe(&out));

    let ports = Ports { host_ip: Some("127.0.0.1"), udp_same_port: true };
    let svc = Service::start(&topo, &env, &["--network", "pasta"], ports);
    let addr = svc.addr(ClientPath::Loopback, 0);
    client(&topo, ClientPath::Loopback, move || banner(addr));
    let out = svc.stop();
    assert!(stderr_of(&out).contains(want), "{}", describe(&out));
    topo.assert_clean();
}

/// slirp4netns with the builtin driver (its `auto`): ranges, and the real
/// client address, which slirp4netns's own forwarding replaces.
fn slirp4netns_with_builtin_driver_keeps_client_addresses(env: Env) {
    let topo = Topology::new(&env);
    let svc = Service::start(&topo, &env, &["--network", "slirp4netns"], ANY);
    check_path(&topo, &svc, ClientPath::Upstream, 1, Some(UPSTREAM_ADDR));
    let out = svc.stop();
    assert!(stderr_of(&out).contains("port driver: builtin"), "{}", describe(&out));
    topo.assert_clean();
}

/// Loopback mode has no helper; the builtin driver still publishes into it.
fn loopback_mode_publishes_ports_through_the_builtin_driver(env: Env) {
    let topo = Topology::new(&env);
    let svc = Service::start(&topo, &env, &["--network", "loopback"], ANY);
    check_path(&topo, &svc, ClientPath::Loopback, 1, Some("127.0.0.1"));
    check_path(&topo, &svc, ClientPath::Upstream, 1, Some("127.0.0.1"));
    svc.stop();
    topo.assert_clean();
}

/// A server on [::] that tells each client its address.
const V6_PEER_SERVER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", int(sys.argv[1]))); s.listen(16)
open(sys.argv[2], "w").close()
while True:
    c, peer = s.accept(); c.sendall(peer[0].encode() + b"\n"); c.close()
"#;

/// IPv6: a client on the upstream's routed IPv6 address reaches the server
/// through the builtin driver and is seen with its own address.
fn ipv6_client_address_is_kept(env: Env) {
    let topo = Topology::new(&env);
    let seen = ipv6_peer_seen(&topo, &env, None);
    assert_eq!(seen, "fd00:231::1", "the server saw {seen} for an IPv6 upstream client");
    topo.assert_clean();
}

/// pasta, with each netlink request it sends while configuring the
/// namespace delayed by 300 ms (strace's syscall delay injection): the
/// namespace gets its IPv6 address and route well after its IPv4 route.
/// strace runs as a grandchild (`-D`), so pasta keeps the pid it was
/// spawned with and is stopped as usual.
const SLOW_PASTA: &str = r#"#!/bin/sh
case " $* " in
*" --config-net "*) exec strace -D -f -qq -o /dev/null -e trace=sendto -e inject=sendto:delay_enter=300000 "$REAL_PASTA" "$@" ;;
esac
exec "$REAL_PASTA" "$@"
"#;

/// Regression for a flake of `ipv6_client_address_is_kept` (the server once
/// saw ::1): readiness waited for the IPv4 default route only, which pasta
/// adds before it configures IPv6, so on a loaded machine the relay read
/// the namespace's addresses before its IPv6 one existed and relayed IPv6
/// clients from ::1 (and the command started without IPv6). A pasta slowed
/// down between its netlink requests made that happen every time.
fn ipv6_client_address_is_kept_when_pasta_configures_ipv6_late(env: Env) {
    let (Some(strace), Some(pasta)) = (common::which("strace"), common::which("pasta")) else {
        common::skip(env.tier.label(), "strace is needed to slow pasta down (apt-get install strace)");
        return;
    };
    let topo = Topology::new(&env);
    let bin = tempfile::tempdir().unwrap();
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let wrapper = bin.path().join("pasta");
    std::fs::write(
        &wrapper,
        SLOW_PASTA.replace("$REAL_PASTA", &path_str(&pasta)).replace("strace", &path_str(&strace)),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let seen = ipv6_peer_seen(&topo, &env, Some(bin.path()));
    assert_eq!(seen, "fd00:231::1", "the server saw {seen} for an IPv6 upstream client");
    topo.assert_clean();
}

/// The address the server of a builtin-driver pasta run sees for a client
/// connecting from the upstream's IPv6 address; `pasta_dir` goes first on
/// the run's `PATH`.
fn ipv6_peer_seen(topo: &Topology, env: &Env, pasta_dir: Option<&Path>) -> String {
    topo.add_ipv6();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let ready = dir.path().join("ready");
    let (host, ctr) = (port(34000), port(7300));
    let spec = format!("{host}:{ctr}");
    let (ctr_s, ready_s) = (ctr.to_string(), path_str(&ready));
    let args = [
        "run",
        "--network",
        "pasta",
        "--port-driver",
        "builtin",
        "-p",
        &spec,
        "--",
        "python3",
        "-c",
        V6_PEER_SERVER,
        &ctr_s,
        &ready_s,
    ];
    let mut cmd = topo.cli(env, &args);
    if let Some(first) = pasta_dir {
        cmd.env("PATH", format!("{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", path_str(first)));
    }
    let child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let run = Running { child };
    eventually(15, || if ready.exists() { Ok(()) } else { Err(std::io::Error::other("server not ready")) });
    let addr: SocketAddr = format!("[fd00:231::2]:{host}").parse().unwrap();
    let seen = client(topo, ClientPath::Upstream, move || peer_seen(addr));
    let out = run.stop();
    assert_eq!(out.status.code(), Some(143), "{}", describe(&out));
    seen
}

/// The command starts with the open-file limit it would have had: the
/// owner raises its own only after the fork.
fn command_keeps_its_open_file_limit(env: Env) {
    let topo = Topology::new(&env);
    let (soft, _) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let spec = format!("{}:80", port(33000));
    let args = ["run", "--network", "loopback", "-p", &spec, "--", "sh", "-c", "ulimit -n"];
    let out = topo.cli(&env, &args).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), soft.to_string(), "{}", describe(&out));
    topo.assert_clean();
}

/// A killed owner takes its listeners and socket factory with it; `gc`
/// removes the record.
fn killed_owner_leaves_nothing_gc_cannot_remove(env: Env) {
    let topo = Topology::new(&env);
    let svc = Service::start(&topo, &env, &["--network", "pasta", "--port-driver", "builtin"], ANY);
    let factory = factory_pid(&topo);
    let listen = svc.addr(ClientPath::Loopback, 0);
    let owner = nix::unistd::Pid::from_raw(svc.run.child.id() as i32);
    nix::sys::signal::kill(owner, nix::sys::signal::Signal::SIGKILL).unwrap();
    drop(svc);
    if let Some(factory) = factory {
        assert!(gone(factory), "socket factory {factory} outlived its killed owner");
    }
    assert!(refused(&topo, listen), "listener outlived its killed owner");
    let out = topo.cli(&env, &["gc"]).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    topo.assert_clean();
}

/// Root only: a bridge container with the builtin driver, reached from the
/// upstream, sees the client's real address.
fn bridge_with_builtin_driver_keeps_client_addresses(env: Env) {
    let topo = Topology::new(&env);
    let svc = Service::start(&topo, &env, &["--network", "bridge", "--port-driver", "builtin"], ANY);
    check_path(&topo, &svc, ClientPath::Upstream, 1, Some(UPSTREAM_ADDR));
    check_path(&topo, &svc, ClientPath::Loopback, 1, Some("127.0.0.1"));
    let out = svc.stop();
    assert!(stderr_of(&out).contains("port driver: builtin"), "{}", describe(&out));
    topo.assert_clean();
}

// Both tiers run again with the accelerator asked for: where it runs, a
// server takes its published TCP listener over from the relay.
tier_tests!(
    rootless + rootless_accel,
    super::Tier::Rootless,
    [
        builtin_driver_is_correct_on_both_client_paths,
        pasta_driver_passes_what_its_build_supports,
        auto_driver_follows_the_pasta_build,
        slirp4netns_with_builtin_driver_keeps_client_addresses,
        loopback_mode_publishes_ports_through_the_builtin_driver,
        killed_owner_leaves_nothing_gc_cannot_remove,
        command_keeps_its_open_file_limit,
        ipv6_client_address_is_kept,
        ipv6_client_address_is_kept_when_pasta_configures_ipv6_late,
    ]
);

tier_tests!(
    root + root_accel,
    super::Tier::Root,
    [
        builtin_driver_is_correct_on_both_client_paths,
        pasta_driver_passes_what_its_build_supports,
        killed_owner_leaves_nothing_gc_cannot_remove,
        bridge_with_builtin_driver_keeps_client_addresses,
        ipv6_client_address_is_kept,
        ipv6_client_address_is_kept_when_pasta_configures_ipv6_late,
    ]
);

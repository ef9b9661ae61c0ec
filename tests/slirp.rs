//! The slirp4netns backend end to end, through the library (not the CLI),
//! with the real slirp4netns run as the unprivileged test user.
//!
//! Each test builds a throwaway topology: a "host" netns with a veth to an
//! "upstream" netns (10.231.0.2/24 <-> 10.231.0.1/24, default route via
//! upstream; `common::Topology`), deleted on drop even when the test panics. The target
//! namespace is owned by the test user: `setpriv ... unshare --user
//! --map-root-user --net` run as a child *process* (a test binary is
//! multithreaded, so it cannot unshare a user namespace itself).
//!
//! slirp4netns must run as that user inside the host netns. The library's
//! `launcher` (commands that exec slirp4netns) does exactly that here:
//! `ip netns exec HOST setpriv --reuid=U ... -- slirp4netns ARGS`. Both exec
//! in place, so the pid, process group, ready pipe and exit pipe the library
//! holds are slirp4netns's own, and everything else the library does
//! (API socket, `/proc/<slirp4netns>/net`) is independent of the caller's
//! namespace. All assertions stay in this process: servers and clients run
//! on threads that `setns` into the namespace they need.
//!
//! Traffic stays on loopback or inside namespaces the test created.
//! Without root the tests print `SKIP:`; with `CI=true` or
//! `PELAGOS_REQUIRE_ALL_TIERS=1` they fail instead.

mod common;

use common::{Env, Tier, in_netns_path};
use pelagos_net::helpers::slirp::api::SlirpApiError;
use pelagos_net::helpers::slirp::args::{HostLoopback, SlirpPlan};
use pelagos_net::helpers::slirp::setup::{
    SlirpNetworkConfig, SlirpSetup, SlirpSetupError, setup_slirp_network, teardown_slirp_network,
};
use pelagos_net::model::port::PortMapping;
use pelagos_net::model::target::NsTarget;
use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Everything a test needs, or `None` after a loud skip.
struct Ctx {
    slirp: PathBuf,
    uid: u32,
    gid: u32,
    env: Env,
}

fn require() -> Option<Ctx> {
    let env = Tier::Rootless.require()?;
    let user = env.user.clone()?;
    let Some(slirp) = common::which("slirp4netns") else {
        common::skip("rootless", "slirp4netns is not installed (apt-get install slirp4netns)");
        return None;
    };
    if common::which("unshare").is_none() {
        common::skip("rootless", "unshare (util-linux) is needed");
        return None;
    }
    Some(Ctx { slirp, uid: user.uid, gid: user.gid, env })
}

/// The shared throwaway topology, plus a socket directory the test user owns.
struct Topology {
    net: common::Topology,
    dir: tempfile::TempDir,
}

impl Topology {
    fn new(ctx: &Ctx) -> Self {
        let topo = Self { net: common::Topology::new(&ctx.env), dir: tempfile::tempdir().expect("tempdir") };
        nix::unistd::chown(topo.dir.path(), Some(ctx.uid.into()), Some(ctx.gid.into())).expect("chown");
        fs::set_permissions(topo.dir.path(), fs::Permissions::from_mode(0o700)).expect("chmod");
        topo
    }

    fn ns_path(name: &str) -> PathBuf {
        Path::new("/run/netns").join(name)
    }

    fn host(&self) -> &str {
        &self.net.host
    }

    fn upstream(&self) -> &str {
        &self.net.upstream
    }

    fn api_socket(&self) -> PathBuf {
        self.dir.path().join("slirp.sock")
    }

    /// `ip netns exec HOST setpriv --reuid=U --regid=G --clear-groups --`: both exec in place.
    fn launcher(&self, ctx: &Ctx) -> Vec<OsString> {
        let (u, g) = (format!("--reuid={}", ctx.uid), format!("--regid={}", ctx.gid));
        ["ip", "netns", "exec", self.host(), "setpriv", &u, &g, "--clear-groups", "--"].map(OsString::from).to_vec()
    }

    /// Processes (pid, comm) whose network namespace is the host netns.
    fn processes_inside(&self) -> Vec<(u32, String)> {
        self.net.processes_inside()
    }

    /// Nothing left: no process in the host netns (reaping may lag a moment), no API socket.
    fn assert_clean(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.processes_inside().is_empty() {
            assert!(Instant::now() < deadline, "processes left in the host netns: {:?}", self.processes_inside());
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!self.api_socket().exists(), "api socket {} left behind", self.api_socket().display());
    }
}

/// A user+net namespace owned by the test user, held open by `sleep`; killed on drop.
struct Target(Child);

impl Target {
    fn new(ctx: &Ctx) -> Self {
        let mut child = Command::new("setpriv")
            .args([&format!("--reuid={}", ctx.uid), &format!("--regid={}", ctx.gid), "--clear-groups", "--"])
            .args(["unshare", "--user", "--map-root-user", "--net", "sh", "-c", "echo up; exec sleep 300"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the namespace holder");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "up", "namespace holder failed");
        Self(child)
    }

    fn ns(&self, kind: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/{kind}", self.0.id()))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(
    ctx: &Ctx,
    topo: &Topology,
    target: &Target,
    ports: &[&str],
    lo: HostLoopback,
) -> Result<SlirpSetup, SlirpSetupError> {
    let ports: Vec<PortMapping> = ports.iter().map(|p| p.parse().unwrap()).collect();
    let mut plan =
        SlirpPlan::new(NsTarget { netns: target.ns("net"), userns: Some(target.ns("user")) }, topo.api_socket());
    plan.host_loopback = lo;
    let launcher = topo.launcher(ctx);
    let cfg = SlirpNetworkConfig {
        program: &ctx.slirp,
        launcher: &launcher,
        plan: &plan,
        ports: &ports,
        proc_root: Path::new("/proc"),
        timeout: Duration::from_secs(10),
        inherit: &[],
    };
    let setup = setup_slirp_network(&cfg, &mut || false)?;
    eprintln!("slirp4netns configured after {:?}, ready after {:?}", setup.configured_after, setup.ready_after);
    Ok(setup)
}

/// A TCP server answering each line with `echo:LINE`, until the socket is gone.
fn serve_tcp(listener: TcpListener) {
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut line = String::new();
            let _ = BufReader::new(&conn).read_line(&mut line);
            let _ = conn.write_all(format!("echo:{line}").as_bytes());
        }
    });
}

fn serve_udp(sock: UdpSocket) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&[b"echo:", &buf[..n]].concat(), from);
        }
    });
}

fn tcp_ask(addr: SocketAddr) -> std::io::Result<String> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.write_all(b"hello\n")?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply)?;
    Ok(reply)
}

/// Sends "hello" up to `tries` times, 200 ms apart, until a reply comes:
/// a check that expects a reply gives slirp4netns seconds (a loaded
/// machine), one that expects none a second.
fn udp_ask(addr: SocketAddr, tries: usize) -> std::io::Result<String> {
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut buf = [0u8; 512];
    let mut last = None;
    for _ in 0..tries {
        sock.send_to(b"hello", addr)?;
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => return Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap())
}

/// `udp_ask` tries where a reply is expected (5 s) and where none is (1 s).
const EXPECT_REPLY: usize = 25;
const EXPECT_NONE: usize = 5;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn namespace_reaches_a_server_upstream_through_slirp4netns() {
    let Some(ctx) = require() else { return };
    let topo = Topology::new(&ctx);
    let target = Target::new(&ctx);
    serve_tcp(in_netns_path(Topology::ns_path(topo.upstream()), || TcpListener::bind("10.231.0.1:7000").unwrap()));

    let setup = start(&ctx, &topo, &target, &[], HostLoopback::Blocked).expect("slirp4netns setup");
    let reply = in_netns_path(target.ns("net"), || tcp_ask(addr("10.231.0.1:7000")));
    let report = teardown_slirp_network(setup);

    assert_eq!(reply.expect("egress to the upstream server"), "echo:hello\n", "output:\n{}", report.output);
    topo.assert_clean();
}

#[test]
fn host_loopback_is_blocked_by_default_and_reachable_when_allowed() {
    let Some(ctx) = require() else { return };
    let topo = Topology::new(&ctx);
    serve_tcp(in_netns_path(Topology::ns_path(topo.host()), || TcpListener::bind("127.0.0.1:7001").unwrap()));

    let mut replies = Vec::new();
    for lo in [HostLoopback::Blocked, HostLoopback::Allowed] {
        let target = Target::new(&ctx);
        let setup = start(&ctx, &topo, &target, &[], lo).expect("slirp4netns setup");
        replies.push(in_netns_path(target.ns("net"), || tcp_ask(addr("10.0.2.2:7001"))));
        teardown_slirp_network(setup);
    }

    assert!(replies[0].is_err(), "host loopback reachable although blocked: {:?}", replies[0]);
    assert_eq!(replies[1].as_deref().expect("host loopback when allowed"), "echo:hello\n");
    topo.assert_clean();
}

#[test]
fn published_tcp_and_udp_ports_reach_servers_in_the_namespace() {
    let Some(ctx) = require() else { return };
    let topo = Topology::new(&ctx);
    let target = Target::new(&ctx);
    let (tcp, udp) = in_netns_path(target.ns("net"), || {
        (TcpListener::bind("0.0.0.0:7080").unwrap(), UdpSocket::bind("0.0.0.0:7053").unwrap())
    });
    serve_tcp(tcp);
    serve_udp(udp);

    let ports = ["18080:7080", "127.0.0.1:18081:7080", "15353:7053/udp"];
    let setup = start(&ctx, &topo, &target, &ports, HostLoopback::Blocked).expect("slirp4netns setup");
    let listed = setup.api().list_hostfwd().expect("list_hostfwd");
    // UDP from the host netns's own address: see the loopback test below for why not 127.0.0.1.
    let replies = in_netns_path(Topology::ns_path(topo.host()), || {
        [
            tcp_ask(addr("127.0.0.1:18080")),
            tcp_ask(addr("127.0.0.1:18081")),
            udp_ask(addr("10.231.0.2:15353"), EXPECT_REPLY),
        ]
    });
    let report = teardown_slirp_network(setup);

    let got: Vec<String> = replies.into_iter().map(|r| r.unwrap_or_else(|e| format!("error: {e}"))).collect();
    assert_eq!(got, ["echo:hello\n", "echo:hello\n", "echo:hello"], "slirp4netns output:\n{}", report.output);
    assert_eq!(listed.iter().map(|e| e.host_port).collect::<Vec<_>>(), [18080, 18081, 15353]);
    topo.assert_clean();
}

/// Regression for podman#4586: libslirp sends a UDP reply for a loopback
/// client to the gateway, which reaches the host's loopback only when host
/// loopback is allowed. Hence `PortCaveat::UdpLoopbackClientsUnanswered`.
#[test]
fn udp_replies_reach_loopback_clients_only_with_host_loopback_allowed() {
    let Some(ctx) = require() else { return };
    let topo = Topology::new(&ctx);
    let mut replies = Vec::new();
    for lo in [HostLoopback::Blocked, HostLoopback::Allowed] {
        let target = Target::new(&ctx);
        serve_udp(in_netns_path(target.ns("net"), || UdpSocket::bind("0.0.0.0:7053").unwrap()));
        let setup = start(&ctx, &topo, &target, &["15353:7053/udp"], lo).expect("slirp4netns setup");
        let tries = if lo == HostLoopback::Allowed { EXPECT_REPLY } else { EXPECT_NONE };
        replies.push(in_netns_path(Topology::ns_path(topo.host()), move || udp_ask(addr("127.0.0.1:15353"), tries)));
        teardown_slirp_network(setup);
    }

    assert!(
        replies[0].is_err(),
        "slirp4netns now answers loopback UDP clients with host loopback blocked: drop the caveat ({:?})",
        replies[0]
    );
    assert_eq!(replies[1].as_deref().expect("loopback UDP with host loopback allowed"), "echo:hello");
    topo.assert_clean();
}

#[test]
fn port_range_is_refused_before_slirp4netns_starts() {
    let Some(ctx) = require() else { return };
    let topo = Topology::new(&ctx);
    let target = Target::new(&ctx);

    let err = start(&ctx, &topo, &target, &["8080:80", "9000-9002:7000-7002"], HostLoopback::Blocked).unwrap_err();

    assert!(matches!(err, SlirpSetupError::Ports(SlirpApiError::PortRange { .. })), "{err:?}");
    assert_eq!(
        err.to_string(),
        "slirp4netns cannot forward port ranges (9000-9002:7000-7002/tcp); publish single ports or use pasta"
    );
    assert!(topo.processes_inside().is_empty(), "something was started");
    topo.assert_clean();
}

#[test]
fn teardown_stops_slirp4netns_and_removes_its_api_socket() {
    let Some(ctx) = require() else { return };
    let topo = Topology::new(&ctx);
    for kill_first in [false, true] {
        let target = Target::new(&ctx);
        let setup = start(&ctx, &topo, &target, &["18082:7080"], HostLoopback::Blocked).expect("slirp4netns setup");
        let pid = setup.slirp_id().pid;
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        assert_eq!(comm.trim(), "slirp4netns", "the pid held is slirp4netns's own");
        assert!(topo.api_socket().exists());
        if kill_first {
            // A slirp4netns killed outright leaves its socket: teardown removes it.
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
        }

        let report = teardown_slirp_network(setup);

        let status = report.status.expect("reaped");
        if kill_first {
            assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9));
        } else {
            assert!(status.success(), "closing the exit pipe is a clean exit: {status:?}\n{}", report.output);
        }
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        topo.assert_clean();
    }
}

#[test]
fn host_port_in_use_is_reported_naming_the_port() {
    let Some(ctx) = require() else { return };
    let topo = Topology::new(&ctx);
    let _holders = in_netns_path(Topology::ns_path(topo.host()), || {
        (TcpListener::bind("0.0.0.0:18083").unwrap(), UdpSocket::bind("127.0.0.1:15354").unwrap())
    });

    let mut errors = Vec::new();
    for port in ["18083:7080", "15354:7053/udp"] {
        let target = Target::new(&ctx);
        errors.push(start(&ctx, &topo, &target, &["18084:7081", port], HostLoopback::Blocked).unwrap_err());
    }

    assert!(errors.iter().all(|e| matches!(e, SlirpSetupError::PortInUse { .. })), "{errors:?}");
    assert!(errors[0].to_string().starts_with("host port 18083/tcp already in use (18083:7080/tcp)"), "{}", errors[0]);
    assert!(errors[1].to_string().starts_with("host port 15354/udp already in use (15354:7053/udp)"), "{}", errors[1]);
    topo.assert_clean();
}

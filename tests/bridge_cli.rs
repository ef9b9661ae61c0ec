//! Bridge mode end to end (root tier): `pelagos-net run --network bridge`
//! and `pelagos-net network ...` through real veths, bridges, nftables and
//! sockets, inside a throwaway host namespace behind a fake upstream.

mod common;

use common::{Env, HOST_ADDR, Tier, Topology, UPSTREAM_ADDR, describe, in_netns, port};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A TCP server that answers every connection with "hello <peer ip>\n".
const GREETER: &str = r#"
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(64)
print("ready", flush=True)
while True:
    c, peer = s.accept(); c.sendall(b"hello %s\n" % peer[0].encode()); c.close()
"#;

const UDP_ECHO: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
while True:
    d, p = s.recvfrom(2048); s.sendto(b"echo:" + d, p)
"#;

fn root() -> Option<Env> {
    let env = Tier::Root.require()?;
    if common::which("nft").is_none() {
        panic!("nft is needed to inspect rules (apt-get install nftables)");
    }
    Some(env)
}

/// `pelagos-net run ...` in the background, stopped (SIGTERM) on drop.
struct Container {
    child: std::process::Child,
}

impl Container {
    /// Start and wait for the command's "ready" line.
    fn start(topo: &Topology, env: &Env, args: &[&str]) -> Self {
        let mut child = topo.cli(env, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        if line != "ready\n" {
            let out = child.wait_with_output().unwrap();
            panic!("container did not start: {line:?} {}", describe(&out));
        }
        Self { child }
    }

    fn stop(mut self) -> std::process::Output {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let child = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap());
        child.wait_with_output().unwrap()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

fn greet(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A one-shot client container: connects to `target` and prints the greeting.
fn client(topo: &Topology, env: &Env, network: &str, target: &str) -> std::process::Output {
    let (ip, p) = target.rsplit_once(':').unwrap();
    let script = format!(
        "import socket; s=socket.create_connection(('{ip}', {p}), timeout=3); print(s.recv(100).decode().strip())"
    );
    topo.cli(env, &["run", "--network", network, "--", "python3", "-c", &script]).output().unwrap()
}

/// No veth, named netns, lease or leftover table of a removed network.
fn assert_bridge_clean(topo: &Topology, tables_expected: &[&str]) {
    topo.assert_clean();
    // The kernel destroys a deleted namespace's veths in the background.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let links = Command::new("ip").args(["-n", &topo.host, "-o", "link"]).output().unwrap();
        let links = String::from_utf8_lossy(&links.stdout).into_owned();
        if !links.contains(": pv") {
            break;
        }
        assert!(Instant::now() < deadline, "veths left: {links}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let tables = Command::new("ip").args(["netns", "exec", &topo.host, "nft", "list", "tables"]).output().unwrap();
    let tables = String::from_utf8_lossy(&tables.stdout).into_owned();
    let mut found: Vec<&str> = tables.lines().filter_map(|l| l.strip_prefix("table ip pelagos-")).collect();
    found.sort();
    assert_eq!(found, tables_expected, "nft tables: {tables}");
    let leases = pelagos_net::bridge::lease::LeaseStore::new(&topo.run_dir);
    for net in leases.networks().unwrap() {
        let left = leases.leases(&net).unwrap();
        assert!(left.is_empty(), "leases left in {net}: {left:?}");
    }
}

#[test]
fn two_containers_on_the_default_network_reach_each_other_and_other_networks_cannot() {
    let Some(env) = root() else { return };
    let topo = Topology::new(&env);
    let server = Container::start(
        &topo,
        &env,
        &["run", "--network", "bridge", "--ip", "10.90.0.10", "--", "python3", "-c", GREETER, "80"],
    );
    let out = client(&topo, &env, "bridge", "10.90.0.10:80");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("hello 10.90.0."), "{}", describe(&out));
    let created = topo.cli(&env, &["network", "create", "other"]).output().unwrap();
    assert!(created.status.success(), "{}", describe(&created));
    let out = client(&topo, &env, "bridge:other", "10.90.0.10:80");
    assert!(!out.status.success(), "a container on another network reached pelagos0: {}", describe(&out));
    server.stop();
    let rm = topo.cli(&env, &["network", "rm", "other"]).output().unwrap();
    assert!(rm.status.success(), "{}", describe(&rm));
    assert_bridge_clean(&topo, &["pelagos0"]);
}

#[test]
fn egress_is_masqueraded_behind_the_host_address() {
    let Some(env) = root() else { return };
    let topo = Topology::new(&env);
    let listener = in_netns(&topo.upstream, || TcpListener::bind((UPSTREAM_ADDR, 9090)).unwrap());
    let seen = std::thread::spawn(move || {
        let (mut c, peer) = listener.accept().unwrap();
        c.write_all(format!("hello {}\n", peer.ip()).as_bytes()).unwrap();
        peer.ip().to_string()
    });
    let out = client(&topo, &env, "bridge", &format!("{UPSTREAM_ADDR}:9090"));
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(seen.join().unwrap(), HOST_ADDR, "upstream must see the host's address, not the container's");
    assert_bridge_clean(&topo, &["pelagos0"]);
}

#[test]
fn published_ports_work_from_host_loopback_upstream_and_other_containers() {
    let Some(env) = root() else { return };
    let topo = Topology::new(&env);
    let (tcp, udp, lo_only, range) = (port(30000), port(30200), port(30400), port(30600) + 10);
    let p_tcp = format!("{tcp}:80");
    let p_udp = format!("{udp}:5353/udp");
    let p_lo = format!("127.0.0.1:{lo_only}:80");
    let p_range = format!("{range}-{}:80-81", range + 1);
    let server = Container::start(
        &topo,
        &env,
        &[
            "run",
            "--network",
            "bridge",
            "-p",
            &p_tcp,
            "-p",
            &p_lo,
            "-p",
            &p_range,
            "--",
            "python3",
            "-c",
            GREETER,
            "80",
        ],
    );
    // From the host itself: loopback and its own address.
    let (via_lo, via_host, lo_only_ok, lo_only_other, range_ok) = topo.in_host(move || {
        (
            greet(addr(&format!("127.0.0.1:{tcp}"))).unwrap(),
            greet(addr(&format!("{HOST_ADDR}:{tcp}"))).unwrap(),
            greet(addr(&format!("127.0.0.1:{lo_only}"))).unwrap(),
            greet(addr(&format!("{HOST_ADDR}:{lo_only}"))),
            greet(addr(&format!("127.0.0.1:{range}"))).unwrap(),
        )
    });
    assert!(via_lo.starts_with("hello 10.90.0.1"), "loopback clients appear as the gateway: {via_lo}");
    assert!(via_host.starts_with("hello "), "{via_host}");
    assert!(lo_only_ok.starts_with("hello "), "{lo_only_ok}");
    assert!(lo_only_other.is_err(), "a 127.0.0.1-bound port answered on {HOST_ADDR}: {lo_only_other:?}");
    assert!(range_ok.starts_with("hello "), "{range_ok}");
    // From another host (the fake upstream), the client address is preserved.
    let from_upstream = in_netns(&topo.upstream, move || greet(addr(&format!("{HOST_ADDR}:{tcp}"))).unwrap());
    assert_eq!(from_upstream, format!("hello {UPSTREAM_ADDR}\n"));
    // From another container on the same network (hairpin through the host's address).
    let out = client(&topo, &env, "bridge", &format!("{HOST_ADDR}:{tcp}"));
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("hello "), "{}", describe(&out));
    server.stop();

    // UDP from upstream and from the host.
    let udp_server = Container::start(
        &topo,
        &env,
        &["run", "--network", "bridge", "-p", &p_udp, "--", "python3", "-c", UDP_ECHO, "5353"],
    );
    let echo = |target: String| {
        move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                s.send_to(b"ping", &target).unwrap();
                let mut buf = [0u8; 64];
                match s.recv(&mut buf) {
                    Ok(n) => return buf[..n].to_vec(),
                    Err(e) if Instant::now() > deadline => panic!("no udp reply from {target}: {e}"),
                    Err(_) => {}
                }
            }
        }
    };
    assert_eq!(in_netns(&topo.upstream, echo(format!("{HOST_ADDR}:{udp}"))), b"echo:ping");
    assert_eq!(topo.in_host(echo(format!("127.0.0.1:{udp}"))), b"echo:ping");
    udp_server.stop();
    assert_bridge_clean(&topo, &["pelagos0"]);
}

#[test]
fn bad_input_is_refused_clearly_and_creates_nothing() {
    let Some(env) = root() else { return };
    let topo = Topology::new(&env);
    let run = |args: &[&str]| {
        let out = topo.cli(&env, args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert_eq!(run(&["network", "create", "web", "--subnet", "10.50.0.0/24"]).0, Some(0));
    let (code, err) = run(&["network", "create", "web2", "--subnet", "10.50.0.128/25"]);
    assert_eq!((code, err.contains("overlaps network web (10.50.0.0/24)")), (Some(125), true), "{err}");
    let (code, err) = run(&["network", "create", "web3", "--subnet", "10.231.0.0/16"]);
    assert_eq!(
        (code, err.contains("overlaps 10.231.0.0/24, which this host already routes or uses")),
        (Some(125), true),
        "{err}"
    );
    for bad in ["../etc", "-rf", "a/b", "a:b", &"x".repeat(65)] {
        let (code, err) = run(&["network", "create", "--", bad]);
        assert_eq!(code, Some(125), "{bad}: {err}");
        assert!(err.contains("network name"), "{bad}: {err}");
    }
    let (code, err) = run(&["run", "--network", "bridge:nope", "--", "true"]);
    assert_eq!((code, err.contains("network nope does not exist")), (Some(125), true), "{err}");
    let (code, err) = run(&["run", "--network", "bridge:web", "--ip", "10.90.0.9", "--", "true"]);
    assert_eq!((code, err.contains("not a usable container address of network web")), (Some(125), true), "{err}");
    let user = Container::start(
        &topo,
        &env,
        &["run", "--network", "bridge:web", "--", "sh", "-c", "echo ready; exec sleep 30"],
    );
    let (code, err) = run(&["network", "rm", "web"]);
    assert_eq!((code, err.contains("network web is in use by")), (Some(2), true), "{err}");
    user.stop();
    assert_eq!(run(&["network", "rm", "web"]).0, Some(0));
    let ls = topo.cli(&env, &["network", "ls", "--json"]).output().unwrap();
    let names: Vec<String> = serde_json::from_slice::<Vec<serde_json::Value>>(&ls.stdout)
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["pelagos0"]);
    assert_bridge_clean(&topo, &[]);
}

//! `run --accel socket` end to end, as the unprivileged test user where
//! the accelerator runs rootless: TCP connections of the command (blocking,
//! nonblocking, forked, executed) leave through switched sockets, whatever
//! must stay inside stays there, a server takes its published listener
//! over and sees its real clients, and a host that refuses the filter gets
//! one line saying why and the normal path. The other scenarios (ports,
//! egress, the host's loopback) run with the accelerator in their own test
//! files (`common::Accel` tiers).

#[macro_use]
mod common;

use common::seccomp::{Refuse, refuse};
use common::{Env, HOST_ADDR, Tier, Topology, UPSTREAM_ADDR, describe, in_netns, port};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

const CLIENT: &str = include_str!("fixtures/accel_client.py");

/// A server in namespace `ns` on `addr` for `for_how_long`: "peer=<client
/// address>" to every client, then an echo of its lines.
fn serve(ns: &str, addr: &str, for_how_long: Duration) -> SocketAddr {
    let addr = addr.to_owned();
    let listener = in_netns(ns, move || TcpListener::bind(addr).unwrap());
    let local = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + for_how_long;
        while Instant::now() < deadline {
            let Ok((c, peer)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            std::thread::spawn(move || {
                let _ = c.set_nonblocking(false);
                let mut w = c.try_clone().unwrap();
                let _ = w.write_all(format!("peer={}\n", peer.ip()).as_bytes());
                for line in BufReader::new(c).lines().map_while(Result::ok) {
                    if w.write_all(format!("{line}\n").as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    local
}

/// Prints the first line a server at `argv[1]` (`HOST:PORT`) says.
const ASK: &str = "import socket, sys; h, p = sys.argv[1].rsplit(':', 1); \
                   print(socket.create_connection((h, int(p)), timeout=5).makefile().readline().strip())";

/// `pelagos-net -v run ARGS -- python3 CLIENT SPEC`: its output and its
/// client's JSON.
fn client(
    topo: &Topology,
    env: &Env,
    args: &[&str],
    spec: &serde_json::Value,
) -> (std::process::Output, serde_json::Value) {
    let spec = spec.to_string();
    let mut all = vec!["-v", "run"];
    all.extend_from_slice(args);
    all.extend(["--", "python3", "-c", CLIENT, &spec]);
    let out = topo.cli(env, &all).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(&out)));
    (out, json)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// How many connections the run's accelerator says it switched.
fn switched(out: &std::process::Output) -> u64 {
    let err = stderr(out);
    let line = err.lines().find(|l| l.contains("connections switched")).unwrap_or_else(|| panic!("no report: {err}"));
    line.split("accelerator: ").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap()
}

/// slirp4netns, the mode the accelerator runs in on every kernel: every
/// way a command makes a TCP connection is switched (the socket is the
/// host's: its local address is the host's), and the host's loopback, a
/// namespace made inside the run and UDP stay where the helper leads.
fn slirp4netns_connections_are_switched_and_nothing_more(env: Env) {
    let topo = Topology::new(&env);
    let up = serve(&topo.upstream, &format!("{UPSTREAM_ADDR}:0"), Duration::from_secs(60));
    let secret = serve(&topo.host, "127.0.0.1:0", Duration::from_secs(60));
    let secret_udp = udp_echo(&topo.host, Duration::from_secs(60));
    let spec = serde_json::json!({
        "upstream": [UPSTREAM_ADDR, up.port()],
        "host_loopback_port": secret.port(),
        "host_udp_port": secret_udp.port(),
    });
    let (out, v) = client(&topo, &env, &["--network", "slirp4netns", "--accel", "socket"], &spec);
    let peer = format!("peer={HOST_ADDR}");
    assert_eq!(v["blocking"]["peer"], peer.as_str(), "{v}");
    assert_eq!(v["blocking"]["local"], HOST_ADDR, "the socket is the host's (inside, it would be 10.0.2.100): {v}");
    assert_eq!(v["blocking"]["options"], serde_json::json!({"keepalive": 1, "nodelay": 1, "sndbuf": 131072}));
    assert_eq!(v["nonblocking"], serde_json::json!({"connect": "EINPROGRESS", "error": 0, "peer": peer}));
    for key in ["forked", "exec", "mapped"] {
        assert_eq!(v[key], peer.as_str(), "{key}: {v}");
    }
    assert_eq!(v["loopback"], "ECONNREFUSED", "the run's own loopback, never the host's: {v}");
    assert_eq!(v["nested"], "ENETUNREACH", "a namespace made inside stays cut off: {v}");
    assert_eq!(v["listen_switched"], "EINVAL", "a switched socket never listens: {v}");
    let device_lock = stderr(&out).contains("bound to its route's device");
    let io_uring = if device_lock { "ENOSYS" } else { "ok" };
    assert_eq!(v["io_uring"], io_uring, "io_uring is refused under the device lock only: {v}");
    assert_host_loopback_out_of_reach(&v);
    assert!(switched(&out) >= 6, "{}", describe(&out));
    topo.assert_clean();
}

/// Every route from a switched socket to the host's loopback known to us
/// stays shut: connected again after a disconnect (the supervisor refuses
/// a socket of the owner's namespace going where only the namespace
/// leads), connected by a fast-open `sendto` (no `connect(2)` for the
/// filter to see: the socket's lock stops it), and UDP (never switched:
/// the run's own loopback, where nothing listens). io_uring is asserted by
/// the caller (refused under the device lock, the peer lock holds it
/// otherwise).
fn assert_host_loopback_out_of_reach(v: &serde_json::Value) {
    assert_eq!(v["reconnect_loopback"], "ENETUNREACH", "{v}");
    assert_eq!(v["fastopen_inside"], "peer=127.0.0.1", "the route exists (fast open works here): {v}");
    assert_eq!(v["fastopen_loopback"], "timeout", "the lock leaves its SYN unanswered: {v}");
    let udp = v["udp_loopback"].as_str().unwrap_or_default();
    assert!(udp == "ECONNREFUSED" || udp == "timeout", "UDP reached the host's loopback ({udp}): {v}");
}

/// A UDP echo server on the host's 127.0.0.1 in namespace `ns` for `for_how_long`.
fn udp_echo(ns: &str, for_how_long: Duration) -> SocketAddr {
    let sock = in_netns(ns, || std::net::UdpSocket::bind("127.0.0.1:0").unwrap());
    let local = sock.local_addr().unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + for_how_long;
        let mut buf = [0u8; 64];
        while Instant::now() < deadline {
            if let Ok((n, peer)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(&buf[..n], peer);
            }
        }
    });
    local
}

/// A host that forbids new user-notification filters (pelagos-net itself
/// runs under a filter that refuses them, as in some container profiles):
/// one line says so, and the command runs on the normal path.
fn a_refused_filter_leaves_one_line_and_the_normal_path(env: Env) {
    let topo = Topology::new(&env);
    let up = serve(&topo.upstream, &format!("{UPSTREAM_ADDR}:0"), Duration::from_secs(30));
    let target = format!("{UPSTREAM_ADDR}:{}", up.port());
    let mut cmd =
        topo.cli(&env, &["run", "--network", "slirp4netns", "--accel", "socket", "--", "python3", "-c", ASK, &target]);
    let listener = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER as u32;
    refuse(&mut cmd, &[Refuse { nr: libc::SYS_seccomp, arg: 1, mask: listener }]);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("peer={HOST_ADDR}"), "{}", describe(&out));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("accelerator")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("accelerator off") && lines[0].contains("EPERM"), "{err}");
    let mut doctor = topo.cli(&env, &["doctor", "--json"]);
    refuse(&mut doctor, &[Refuse { nr: libc::SYS_seccomp, arg: 1, mask: listener }]);
    let detail = accel_check(&doctor.output().unwrap())["detail"].as_str().unwrap().to_owned();
    assert!(detail.starts_with("unavailable") && detail.contains("EPERM"), "doctor: {detail}");
    topo.assert_clean();
}

/// `doctor --json`'s check of the accelerator.
fn accel_check(out: &std::process::Output) -> serde_json::Value {
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(out)));
    let checks = report["report"]["checks"].as_array().unwrap_or_else(|| panic!("no checks: {report}"));
    checks.iter().find(|c| c["name"] == "accelerator").cloned().unwrap_or_else(|| panic!("no accelerator: {report}"))
}

/// Whatever lock this kernel gives the user, a pasta run asking for the
/// accelerator either gets it or is told in one line why not, and works.
fn pasta_gets_the_accelerator_or_one_line_why_not(env: Env) {
    let topo = Topology::new(&env);
    let up = serve(&topo.upstream, &format!("{UPSTREAM_ADDR}:0"), Duration::from_secs(30));
    let target = format!("{UPSTREAM_ADDR}:{}", up.port());
    let out = topo
        .cli(&env, &["-v", "run", "--network", "pasta", "--accel", "socket", "--", "python3", "-c", ASK, &target])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("peer={HOST_ADDR}"), "{}", describe(&out));
    let err = stderr(&out);
    let off: Vec<&str> = err.lines().filter(|l| l.contains("accelerator off")).collect();
    match off.as_slice() {
        [] => assert!(err.contains("accelerator on") && switched(&out) == 1, "{err}"),
        [one] => assert!(one.contains("pasta"), "{err}"),
        _ => panic!("more than one line: {err}"),
    }
    topo.assert_clean();
}

/// A server binding its published port takes the host's listener over: an
/// upstream client is seen with its own address, with no relay between,
/// and the run's own client still reaches its server.
fn a_server_takes_its_published_listener_over(env: Env) {
    let topo = Topology::new(&env);
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let ready = dir.path().join("ready");
    let (host_port, ctr) = (port(35000), port(7500));
    let spec = serde_json::json!({"serve": ctr, "ready": ready});
    let publish = format!("{HOST_ADDR}:{host_port}:{ctr}");
    let addr: SocketAddr = format!("{HOST_ADDR}:{host_port}").parse().unwrap();
    let upstream = topo.upstream.clone();
    let ready_seen = ready.clone();
    let visitor = std::thread::spawn(move || {
        common::running::eventually(20, || {
            if ready_seen.exists() { Ok(()) } else { Err(std::io::Error::other("not ready")) }
        });
        in_netns(&upstream, move || {
            let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line).unwrap();
            line.trim().to_owned()
        })
    });
    let (out, v) = client(&topo, &env, &["--network", "pasta", "--accel", "socket", "-p", &publish], &spec);
    assert_eq!(visitor.join().unwrap(), format!("peer={UPSTREAM_ADDR}"), "{}", describe(&out));
    assert_eq!(v["bound"], format!("{HOST_ADDR}:{host_port}"), "the server holds the host's listener: {v}");
    assert_eq!(v["own_server"], format!("peer={HOST_ADDR}"), "its own client reaches it: {v}");
    assert!(stderr(&out).contains("1 listeners handed over"), "{}", describe(&out));
    topo.assert_clean();
}

/// `plan` shows the accelerator as steps of the pipeline, where `run`
/// executes them: prepared before the child is forked, started once the
/// command runs; or, where the run cannot have it, one warning and no step.
fn plan_shows_its_steps_or_why_not(env: Env) {
    let topo = Topology::new(&env);
    let plan = |mode: &str| {
        let out = topo.cli(&env, &["plan", "--json", "--network", mode, "--accel", "socket", "--", "true"]).output();
        let out = out.unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let ops = |p: &serde_json::Value| -> Vec<String> {
        p["pipeline"].as_array().unwrap().iter().map(|s| s["op"].as_str().unwrap().to_owned()).collect()
    };
    let slirp = plan("slirp4netns");
    let steps = ops(&slirp);
    let at = |op: &str| steps.iter().position(|s| s == op).unwrap_or_else(|| panic!("{op} missing: {steps:?}"));
    assert!(at("prepare_accel") < at("fork_child") && at("exec_command") < at("start_accel"), "{steps:?}");
    assert_eq!(slirp["accel"]["on"], true, "{slirp}");
    let pasta = plan("pasta");
    let has_steps = ops(&pasta).iter().any(|o| o.ends_with("_accel"));
    let warned =
        pasta["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().starts_with("accelerator off"));
    assert_eq!(pasta["accel"]["on"], has_steps, "{pasta}");
    assert!(has_steps != warned, "steps or one warning: {pasta}");
    let loopback = plan("loopback");
    assert!(!ops(&loopback).iter().any(|o| o.ends_with("_accel")) && loopback["accel"]["on"] == false);
    let text = topo.cli(&env, &["plan", "--network", "slirp4netns", "--accel", "socket", "--", "true"]).output();
    let text = String::from_utf8(text.unwrap().stdout).unwrap();
    assert!(text.contains("accelerator: on") && text.contains("prepare the accelerator"), "{text}");
    let doctor = accel_check(&topo.cli(&env, &["doctor", "--json"]).output().unwrap());
    assert!(doctor["detail"].as_str().unwrap().starts_with("available"), "{doctor}");
    topo.assert_clean();
}

tier_tests!(
    rootless,
    super::Tier::Rootless,
    [
        slirp4netns_connections_are_switched_and_nothing_more,
        a_refused_filter_leaves_one_line_and_the_normal_path,
        pasta_gets_the_accelerator_or_one_line_why_not,
        plan_shows_its_steps_or_why_not,
    ]
);

// The listener handover needs the peer lock, which this kernel may give to
// root only; the rootless runs keep the relay (tests/portfwd_cli.rs).
tier_tests!(
    root,
    super::Tier::Root,
    [
        slirp4netns_connections_are_switched_and_nothing_more,
        a_refused_filter_leaves_one_line_and_the_normal_path,
        pasta_gets_the_accelerator_or_one_line_why_not,
        a_server_takes_its_published_listener_over,
        plan_shows_its_steps_or_why_not,
    ]
);

//! `pelagos-net run` end to end, through real pasta and real namespaces, in
//! both integration tiers: as the unprivileged test user and as root.
//! Every scenario runs in its own throwaway topology (see `common`).

#[macro_use]
mod common;

use common::running::{Running, Watchdog, eventually};
use common::{Accel, Env, Tier, Topology, describe, port};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Stdio;
use std::time::{Duration, Instant};

const HTTP_SERVER: &str = r#"
import http.server, os, sys
os.chdir(sys.argv[1])
class H(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[2])), H).serve_forever()
"#;

const UDP_ECHO: &str = r#"
import socket, sys, threading
def serve(p):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", p))
    while True:
        data, peer = s.recvfrom(65535)
        s.sendto(b"echo:" + data, peer)
ts = [threading.Thread(target=serve, args=(int(p),), daemon=True) for p in sys.argv[1:]]
[t.start() for t in ts]
[t.join() for t in ts]
"#;

const MULTI_TCP: &str = r#"
import socket, sys, threading
def serve(p):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", p)); s.listen()
    while True:
        c, _ = s.accept(); c.sendall(b"port %d\n" % p); c.close()
ts = [threading.Thread(target=serve, args=(int(p),), daemon=True) for p in sys.argv[1:]]
[t.start() for t in ts]
[t.join() for t in ts]
"#;

fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    if body.is_empty() {
        return Err(std::io::Error::other("empty reply"));
    }
    Ok(body)
}

fn loopback_mode_sees_only_lo_and_it_is_up(env: Env) {
    let topo = Topology::new(&env);
    let out = topo.cli(&env, &["run", "--network", "loopback", "--", "ip", "-o", "link", "show"]).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let links: Vec<&str> = stdout.lines().collect();
    assert_eq!(links.len(), 1, "expected only lo: {stdout}");
    assert!(links[0].contains(": lo:") && links[0].contains(",UP"), "lo not up: {stdout}");
    topo.assert_clean();
}

fn published_tcp_port_serves_a_page(env: Env) {
    let topo = Topology::new(&env);
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("hello.txt"), "hello from the namespace\n").unwrap();
    std::fs::set_permissions(site.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::set_permissions(site.path().join("hello.txt"), std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .unwrap();
    let host_port = port(18000);
    let spec = format!("{host_port}:8000");
    let dir = site.path().to_str().unwrap();
    let run = Running::start(
        &topo,
        &env,
        &["run", "--network", "pasta", "-p", &spec, "--", "python3", "-c", HTTP_SERVER, dir, "8000"],
    );
    let addr: SocketAddr = format!("127.0.0.1:{host_port}").parse().unwrap();
    let body = topo.in_host(move || eventually(10, || http_get(addr, "/hello.txt")));
    assert!(body.starts_with("HTTP/1.0 200"), "{body}");
    assert!(body.ends_with("hello from the namespace\n"), "{body}");
    let out = run.stop();
    assert_eq!(out.status.code(), Some(128 + 15), "{}", describe(&out));
    topo.assert_clean();
}

fn udp_echo(addr: SocketAddr) -> Vec<u8> {
    let sock = UdpSocket::bind(SocketAddr::new(addr.ip(), 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    eventually(10, || {
        sock.send_to(b"ping", addr)?;
        let mut buf = [0u8; 64];
        let n = sock.recv(&mut buf)?;
        Ok(buf[..n].to_vec())
    })
}

/// UDP from a loopback client (pasta's splice path) with the same port on
/// both sides, and a remapped port from a client on the host's own
/// non-loopback address (the throwaway host namespace's veth address).
/// Debian's pasta 2023-03-09 drops replies to loopback clients when the
/// UDP port is remapped; see the README's known issues.
fn published_udp_port_echoes(env: Env) {
    let topo = Topology::new(&env);
    let same = port(19000);
    let remapped = port(19200);
    let spec_same = format!("{same}:{same}/udp");
    let spec_remapped = format!("{remapped}:9000/udp");
    let same_s = same.to_string();
    let run = Running::start(
        &topo,
        &env,
        &[
            "run",
            "--network",
            "pasta",
            "-p",
            &spec_same,
            "-p",
            &spec_remapped,
            "--",
            "python3",
            "-c",
            UDP_ECHO,
            &same_s,
            "9000",
        ],
    );
    let (on_lo, on_host_addr) = topo.in_host(move || {
        (
            udp_echo(format!("127.0.0.1:{same}").parse().unwrap()),
            udp_echo(format!("{}:{remapped}", common::HOST_ADDR).parse().unwrap()),
        )
    });
    assert_eq!(on_lo, b"echo:ping");
    assert_eq!(on_host_addr, b"echo:ping");
    run.stop();
    topo.assert_clean();
}

/// Regression: the client starts sending before the command's server binds
/// (here a second late; on a loaded machine python's start alone took
/// that long). The relay's flow for the client, refused on both loopbacks,
/// stayed on [::1] while the client kept sending, and the server on
/// 0.0.0.0 was never reached: `udp_echo` gave up after 10 s with EAGAIN.
fn udp_server_that_binds_late_is_reached(env: Env) {
    let topo = Topology::new(&env);
    let host_port = port(19400);
    let spec = format!("{host_port}:9000/udp");
    let script = format!("sleep 1; exec python3 -c '{UDP_ECHO}' 9000");
    let run = Running::start(&topo, &env, &["run", "--network", "pasta", "-p", &spec, "--", "sh", "-c", &script]);
    let echoed = topo.in_host(move || udp_echo(format!("127.0.0.1:{host_port}").parse().unwrap()));
    assert_eq!(echoed, b"echo:ping");
    run.stop();
    topo.assert_clean();
}

fn published_range_maps_each_port(env: Env) {
    let topo = Topology::new(&env);
    let base = port(20000) + 100;
    let spec = format!("{}-{}:8001-8003", base, base + 2);
    let run = Running::start(
        &topo,
        &env,
        &["run", "--network", "pasta", "-p", &spec, "--", "python3", "-c", MULTI_TCP, "8001", "8002", "8003"],
    );
    let lines = topo.in_host(move || {
        (0..3u16)
            .map(|i| {
                eventually(10, || {
                    let mut s = TcpStream::connect(("127.0.0.1", base + i))?;
                    s.set_read_timeout(Some(Duration::from_secs(5)))?;
                    let mut line = String::new();
                    BufReader::new(&mut s).read_line(&mut line)?;
                    if line.is_empty() { Err(std::io::Error::other("empty")) } else { Ok(line) }
                })
            })
            .collect::<Vec<_>>()
    });
    assert_eq!(lines, vec!["port 8001\n", "port 8002\n", "port 8003\n"]);
    run.stop();
    topo.assert_clean();
}

fn loopback_bound_mapping_is_not_reachable_on_another_address(env: Env) {
    let topo = Topology::new(&env);
    let host_port = port(21000);
    let spec = format!("127.0.0.1:{host_port}:8000");
    let site = tempfile::tempdir().unwrap();
    std::fs::set_permissions(site.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let dir = site.path().to_str().unwrap().to_owned();
    let run = Running::start(
        &topo,
        &env,
        &["run", "--network", "pasta", "-p", &spec, "--", "python3", "-c", HTTP_SERVER, &dir, "8000"],
    );
    let (on_lo1, on_lo2) = topo.in_host(move || {
        let ok = eventually(10, || http_get(format!("127.0.0.1:{host_port}").parse().unwrap(), "/"));
        let other =
            TcpStream::connect_timeout(&format!("127.0.0.2:{host_port}").parse().unwrap(), Duration::from_secs(2));
        (ok, other.map(|_| ()))
    });
    assert!(on_lo1.starts_with("HTTP/1.0 200"), "{on_lo1}");
    let err = on_lo2.expect_err("127.0.0.2 must not reach a 127.0.0.1-bound port");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    run.stop();
    topo.assert_clean();
}

fn host_port_is_reachable_by_the_first_action_every_time(env: Env) {
    let topo = Topology::new(&env);
    let listen_port = port(22000);
    // An echo service on the host's loopback, inside the throwaway host namespace.
    let listener = topo.in_host(move || TcpListener::bind(("127.0.0.1", listen_port)).unwrap());
    // Serves until 50 connections or 120 s, so a failing run cannot hang the test.
    listener.set_nonblocking(true).unwrap();
    let server = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut served = 0;
        while served < 50 && Instant::now() < deadline {
            match listener.accept() {
                Ok((mut c, _)) => {
                    c.set_nonblocking(false).unwrap();
                    let mut line = String::new();
                    BufReader::new(&mut c).read_line(&mut line).unwrap();
                    c.write_all(line.as_bytes()).unwrap();
                    served += 1;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    });
    let script = format!("exec 3<>/dev/tcp/127.0.0.1/{listen_port} && echo hi >&3 && read -r l <&3 && [ \"$l\" = hi ]");
    let host_port = listen_port.to_string();
    let mut failures = Vec::new();
    for i in 0..50 {
        let out = topo
            .cli(&env, &["run", "--network", "pasta", "--host-port", &host_port, "--", "bash", "-c", &script])
            .output()
            .unwrap();
        if !out.status.success() {
            failures.push(format!("run {i}: {}", describe(&out)));
        }
    }
    server.join().unwrap();
    assert!(failures.is_empty(), "{} of 50 failed; first: {}", failures.len(), failures[0]);
    topo.assert_clean();
}

/// Regression: teardown does not wait for pasta to exit, so the next run
/// publishing the same port found it still bound ("already in use").
fn same_port_back_to_back_runs_succeed(env: Env) {
    let topo = Topology::new(&env);
    let spec = format!("{}:80", port(26000));
    for driver in ["pasta", "builtin", "pasta"] {
        for i in 0..4 {
            let args = ["run", "--network", "pasta", "--port-driver", driver, "-p", &spec, "--", "true"];
            let out = topo.cli(&env, &args).output().unwrap();
            assert!(out.status.success(), "{driver} run {i}: {}", describe(&out));
        }
    }
    topo.assert_clean();
}

/// A port held by a process on the host is refused before anything of the
/// run exists, in every mode and with every driver, naming the holder:
/// this test process as root, its uid where the user may not look.
fn taken_host_port_fails_with_the_port_named(env: Env) {
    let topo = Topology::new(&env);
    let host_port = port(23000);
    let blocker = topo.in_host(move || TcpListener::bind(("0.0.0.0", host_port)).unwrap());
    let spec = format!("{host_port}:80");
    let holder = match env.tier {
        Tier::Root => format!("(pid {})", std::process::id()),
        Tier::Rootless => "a process of uid 0 (not visible to this user)".to_owned(),
    };
    for (mode, driver) in [("pasta", "pasta"), ("pasta", "builtin"), ("slirp4netns", "builtin"), ("loopback", "auto")] {
        let args = ["run", "--network", mode, "--port-driver", driver, "-p", &spec, "--", "true"];
        let out = topo.cli(&env, &args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{mode}/{driver}: {}", describe(&out));
        let what = format!("host port {host_port}/tcp: port in use by ");
        assert!(stderr.contains(&what) && stderr.contains(&holder), "{mode}/{driver}: {stderr}");
        assert!(stderr.contains(&format!("bound to 0.0.0.0:{host_port}")), "{stderr}");
        topo.assert_clean();
    }
    drop(blocker);
}

/// Regression: `--network pasta` on a build known to break egress ran
/// without a word, even under `--fallback strict`.
fn explicit_pasta_on_a_buggy_build_is_named_once_and_refused_under_strict(env: Env) {
    let topo = Topology::new(&env);
    let pasta = common::which("pasta").unwrap();
    let buggy = pelagos_net::helpers::pasta::features::probe(&pasta).unwrap().tcp_tap_bugs().any();
    let warnings = |out: &std::process::Output| {
        String::from_utf8_lossy(&out.stderr).lines().filter(|l| l.contains("known TCP bugs")).count()
    };
    for fallback in [None, Some("warn")] {
        let mut args = vec!["run", "--network", "pasta"];
        args.extend(fallback.iter().flat_map(|f| ["--fallback", f]));
        args.extend(["--", "true"]);
        let out = topo.cli(&env, &args).output().unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        assert_eq!(warnings(&out), usize::from(buggy), "{fallback:?}: {}", describe(&out));
        if buggy {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("(fixed in 2024_08_06)") && stderr.contains("install passt"), "{stderr}");
        }
    }
    let out = topo.cli(&env, &["run", "--network", "pasta", "--fallback", "strict", "--", "true"]).output().unwrap();
    if buggy {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
        assert!(
            stderr.contains("network mode pasta is unavailable: pasta at") && stderr.contains("known TCP bugs"),
            "{stderr}"
        );
    } else {
        assert!(out.status.success(), "{}", describe(&out));
    }
    topo.assert_clean();
}

/// Regression: `-p 19104:80 -p 19104:81` got as far as a failed bind.
fn one_host_port_published_twice_is_a_usage_error(env: Env) {
    let topo = Topology::new(&env);
    let host_port = port(23500);
    let (a, b) = (format!("{host_port}:80"), format!("{host_port}:81"));
    let out = topo.cli(&env, &["run", "-p", &a, "-p", &b, "--", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("publish the same host port {host_port}/tcp")), "{stderr}");
    topo.assert_clean();
}

fn exit_codes_follow_the_command(env: Env) {
    let topo = Topology::new(&env);
    let code = |args: &[&str]| {
        let mut full = vec!["run", "--network", "loopback", "--"];
        full.extend_from_slice(args);
        let out = topo.cli(&env, &full).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert_eq!(code(&["sh", "-c", "exit 7"]).0, Some(7));
    assert_eq!(code(&["sh", "-c", "kill -TERM $$"]).0, Some(128 + 15));
    let (c, err) = code(&["no-such-command-pelagos"]);
    assert_eq!(c, Some(127), "{err}");
    assert!(err.contains("no-such-command-pelagos: command not found"), "{err}");
    let (c, err) = code(&["/etc/hostname"]);
    assert_eq!(c, Some(126), "{err}");
    let out = topo.cli(&env, &["run", "-p", "80/sctp", "--", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(125), "bad -p is a usage error: {}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sctp"), "{}", describe(&out));
    topo.assert_clean();
}

fn signals_are_forwarded_to_the_command(env: Env) {
    let topo = Topology::new(&env);
    for (sig, expect) in [
        (nix::sys::signal::Signal::SIGTERM, 42),
        (nix::sys::signal::Signal::SIGHUP, 43),
        (nix::sys::signal::Signal::SIGINT, 44),
    ] {
        let script =
            "trap 'exit 42' TERM; trap 'exit 43' HUP; trap 'exit 44' INT; echo ready; while :; do sleep 0.05; done";
        let mut child = topo
            .cli(&env, &["run", "--", "sh", "-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _watchdog = Watchdog::arm(&child, Duration::from_secs(30));
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line, "ready\n");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(expect), "{sig}: {}", describe(&out));
    }
    topo.assert_clean();
}

/// The slirp4netns backend end to end: egress to the fake upstream, a
/// published TCP port from the host's loopback, a published UDP port from
/// the host's own address (slirp4netns drops UDP replies to loopback
/// clients while host loopback is blocked; README), nothing left behind.
fn slirp4netns_mode_has_egress_and_published_ports(env: Env) {
    let topo = Topology::new(&env);
    let upstream = common::in_netns(&topo.upstream, || TcpListener::bind((common::UPSTREAM_ADDR, 9191)).unwrap());
    upstream.set_nonblocking(true).unwrap();
    let seen = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match upstream.accept() {
                Ok((mut c, peer)) => {
                    c.set_nonblocking(false).unwrap();
                    c.write_all(b"hi\n").unwrap();
                    return Some(peer.ip().to_string());
                }
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Err(_) => return None,
            }
        }
    });
    let (tcp, udp) = (port(25000), port(25200));
    let (p_tcp, p_udp) = (format!("{tcp}:8000"), format!("{udp}:{udp}/udp"));
    let (udp_s, up) = (udp.to_string(), common::UPSTREAM_ADDR.to_string());
    let run = Running::start(
        &topo,
        &env,
        &[
            "run",
            "--network",
            "slirp4netns",
            "-p",
            &p_tcp,
            "-p",
            &p_udp,
            "--",
            "python3",
            "-c",
            SLIRP_GUEST,
            &up,
            &udp_s,
        ],
    );
    assert_eq!(seen.join().unwrap().as_deref(), Some(common::HOST_ADDR), "egress leaves from the host's address");
    let (page, echo) = topo.in_host(move || {
        let page = eventually(10, || http_get(format!("127.0.0.1:{tcp}").parse().unwrap(), "/"));
        (page, udp_echo(format!("{}:{udp}", common::HOST_ADDR).parse().unwrap()))
    });
    assert!(page.starts_with("HTTP/1.0 200"), "{page}");
    assert_eq!(echo, b"echo:ping");
    let out = run.stop();
    assert_eq!(out.status.code(), Some(128 + 15), "{}", describe(&out));
    topo.assert_clean();
}

/// In the namespace: reach the upstream (argv 1) on 9191, echo UDP on
/// port argv 2, serve HTTP on 8000.
const SLIRP_GUEST: &str = r#"
import http.server, socket, sys, threading
c = socket.create_connection((sys.argv[1], 9191), timeout=5)
assert c.recv(3) == b"hi\n"
c.close()
def echo(port):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", port))
    while True:
        d, p = u.recvfrom(2048); u.sendto(b"echo:" + d, p)
threading.Thread(target=echo, args=(int(sys.argv[2]),), daemon=True).start()
class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok\n")
    def log_message(self, *a): pass
http.server.HTTPServer(("0.0.0.0", 8000), Ok).serve_forever()
"#;

/// Regression: pasta inherited the signals `run` blocks for forwarding, so
/// it ignored SIGTERM and every teardown waited for the SIGKILL grace.
/// Looked at from outside the run: inside, `/proc` shows the run's own
/// processes only.
fn pasta_starts_with_no_signal_blocked(env: Env) {
    let topo = Topology::new(&env);
    let host_port = port(24000);
    let spec = format!("{host_port}:80");
    let run = Running::start(
        &topo,
        &env,
        &["run", "--network", "pasta", "--port-driver", "pasta", "-p", &spec, "--", "sleep", "60"],
    );
    // Our own pasta is the one forwarding this test's unique host port.
    let ours = format!("-t {host_port}:80 ");
    let sigblk = eventually(20, || {
        for entry in std::fs::read_dir("/proc")?.flatten() {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let argv = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            if matches!(name.trim(), "pasta" | "passt" | "passt.avx2") && argv.contains(&ours) {
                let status = std::fs::read_to_string(entry.path().join("status"))?;
                if let Some(line) = status.lines().find(|l| l.starts_with("SigBlk:")) {
                    return Ok(line.to_owned());
                }
            }
        }
        Err(std::io::Error::other("no pasta forwarding our port yet"))
    });
    assert_eq!(sigblk.split_whitespace().nth(1), Some("0000000000000000"), "{sigblk}");
    run.stop();
    topo.assert_clean();
}

// Both tiers run again with the accelerator asked for: with the filter in
// place, ports, egress, exit codes and signals behave the same.
tier_tests!(
    rootless + rootless_accel,
    super::Tier::Rootless,
    [
        loopback_mode_sees_only_lo_and_it_is_up,
        published_tcp_port_serves_a_page,
        published_udp_port_echoes,
        udp_server_that_binds_late_is_reached,
        published_range_maps_each_port,
        loopback_bound_mapping_is_not_reachable_on_another_address,
        host_port_is_reachable_by_the_first_action_every_time,
        taken_host_port_fails_with_the_port_named,
        one_host_port_published_twice_is_a_usage_error,
        explicit_pasta_on_a_buggy_build_is_named_once_and_refused_under_strict,
        same_port_back_to_back_runs_succeed,
        exit_codes_follow_the_command,
        signals_are_forwarded_to_the_command,
        pasta_starts_with_no_signal_blocked,
        slirp4netns_mode_has_egress_and_published_ports,
    ]
);

tier_tests!(
    root + root_accel,
    super::Tier::Root,
    [
        loopback_mode_sees_only_lo_and_it_is_up,
        published_tcp_port_serves_a_page,
        published_udp_port_echoes,
        udp_server_that_binds_late_is_reached,
        published_range_maps_each_port,
        loopback_bound_mapping_is_not_reachable_on_another_address,
        host_port_is_reachable_by_the_first_action_every_time,
        taken_host_port_fails_with_the_port_named,
        one_host_port_published_twice_is_a_usage_error,
        explicit_pasta_on_a_buggy_build_is_named_once_and_refused_under_strict,
        same_port_back_to_back_runs_succeed,
        exit_codes_follow_the_command,
        signals_are_forwarded_to_the_command,
        pasta_starts_with_no_signal_blocked,
        slirp4netns_mode_has_egress_and_published_ports,
    ]
);

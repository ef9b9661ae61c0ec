//! The host's loopback stays private: a service bound to the host's
//! 127.0.0.1 (or ::1) is out of reach of a run's command, whichever address
//! it tries (the default gateway, the host's own addresses, slirp4netns's
//! 10.0.2.2), unless the user names its port with `--host-port`. Real
//! pasta and slirp4netns, in both tiers; the "host" is the throwaway host
//! namespace of `common::Topology`, its gateway the fake upstream.

#[macro_use]
mod common;

use common::{Accel, Env, Tier, Topology, describe, port};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

/// In the namespace: try each `proto,host,port` target (client speaks
/// first, so pasta's tap path is not at fault) and print one
/// `target=result` line each: `ok:<reply>`, `refused`, or the error.
const PROBE: &str = r#"
import socket, sys
for spec in sys.argv[1:]:
    proto, host, port = spec.split(",")
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        if proto == "tcp":
            s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(3)
            s.connect((host, int(port))); s.sendall(b"hi\n")
            got = s.recv(100)
        else:
            s = socket.socket(fam, socket.SOCK_DGRAM); s.settimeout(2)
            s.sendto(b"hi\n", (host, int(port)))
            got = s.recv(100)
        print(spec + "=ok:" + got.decode().strip(), flush=True)
    except ConnectionRefusedError:
        print(spec + "=refused", flush=True)
    except OSError as e:
        print(spec + "=" + type(e).__name__ + ":" + str(e), flush=True)
"#;

/// What the host's loopback services answer.
const SECRET: &str = "host-loopback-secret";

/// TCP and UDP services on the host namespace's loopback (127.0.0.1 and
/// ::1), answering [`SECRET`] until `for_how_long` passes.
fn host_loopback_services(topo: &Topology, port: u16, for_how_long: Duration) {
    let addrs = [format!("127.0.0.1:{port}"), format!("[::1]:{port}")];
    serve(&topo.host, &addrs, SECRET, for_how_long);
}

/// TCP and UDP services answering `reply` on `addrs` in the namespace `ns`.
fn serve(ns: &str, addrs: &[String], reply: &'static str, for_how_long: Duration) {
    for addr in addrs {
        let addr: SocketAddr = addr.parse().unwrap();
        let (tcp, udp) =
            common::in_netns(ns, move || (TcpListener::bind(addr).unwrap(), UdpSocket::bind(addr).unwrap()));
        tcp.set_nonblocking(true).unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let deadline = Instant::now() + for_how_long;
        std::thread::spawn(move || {
            while Instant::now() < deadline {
                match tcp.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.set_nonblocking(false);
                        let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut buf = [0u8; 3];
                        let _ = c.read(&mut buf);
                        let _ = c.write_all(reply.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while Instant::now() < deadline {
                if let Ok((_, peer)) = udp.recv_from(&mut buf) {
                    let _ = udp.send_to(reply.as_bytes(), peer);
                }
            }
        });
    }
}

/// Run the probe in `mode` with `extra` run options; `target=result` lines.
fn probe(topo: &Topology, env: &Env, mode: &str, extra: &[&str], targets: &[String]) -> Vec<(String, String)> {
    let mut args = vec!["run", "--network", mode];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "python3", "-c", PROBE]);
    args.extend(targets.iter().map(String::as_str));
    let out = topo.cli(env, &args).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let results: Vec<(String, String)> =
        stdout.lines().filter_map(|l| l.split_once('=').map(|(t, r)| (t.to_owned(), r.to_owned()))).collect();
    assert_eq!(results.len(), targets.len(), "{}", describe(&out));
    results
}

fn leaks(results: &[(String, String)]) -> Vec<&(String, String)> {
    results.iter().filter(|(_, r)| r.contains(SECRET)).collect()
}

/// Regression: pasta was started without `--no-map-gw`, so the default
/// gateway's address led to every service on the host's loopback.
fn pasta_run_cannot_reach_host_loopback_services_without_host_port(env: Env) {
    let topo = Topology::new(&env);
    topo.add_ipv6();
    let p = port(27000);
    host_loopback_services(&topo, p, Duration::from_secs(120));
    // The real gateway serves the same port, so a connection that reaches
    // the gateway tells which one it reached.
    // A resolver on the default gateway (the usual home router) answers
    // too: the gateway address is no longer mapped away from it.
    let upstream = [
        format!("{}:{p}", common::UPSTREAM_ADDR),
        format!("[fd00:231::1]:{p}"),
        format!("{}:53", common::UPSTREAM_ADDR),
    ];
    serve(&topo.upstream, &upstream, "upstream", Duration::from_secs(120));
    let mut targets = Vec::new();
    for host in [common::UPSTREAM_ADDR, "fd00:231::1", common::HOST_ADDR, "fd00:231::2", "10.0.2.2"] {
        targets.push(format!("tcp,{host},{p}"));
    }
    targets.push(format!("udp,{},{p}", common::UPSTREAM_ADDR));
    targets.push(format!("udp,{},53", common::UPSTREAM_ADDR));
    let results = probe(&topo, &env, "pasta", &[], &targets);
    assert!(leaks(&results).is_empty(), "the host's loopback leaked: {results:?}");
    for i in [0, 1, 5, 6] {
        let (target, result) = &results[i];
        assert_eq!(result, "ok:upstream", "{target} is the real gateway: {results:?}");
    }

    // `--host-port` opens that port, TCP and UDP, and nothing else.
    let other = port(27200);
    host_loopback_services(&topo, other, Duration::from_secs(120));
    let named = p.to_string();
    let targets = [
        format!("tcp,127.0.0.1,{p}"),
        format!("udp,127.0.0.1,{p}"),
        format!("tcp,127.0.0.1,{other}"),
        format!("udp,127.0.0.1,{other}"),
    ];
    let results = probe(&topo, &env, "pasta", &["--host-port", &named], &targets);
    assert_eq!(results[0].1, format!("ok:{SECRET}"), "--host-port opens that port to TCP: {results:?}");
    assert_eq!(results[1].1, format!("ok:{SECRET}"), "--host-port opens that port to UDP: {results:?}");
    assert!(leaks(&results[2..]).is_empty(), "--host-port opens no other port: {results:?}");
    topo.assert_clean();
}

/// slirp4netns runs get `--disable-host-loopback`: 10.0.2.2 (slirp's
/// gateway), the host's address and its default gateway all miss the
/// host's loopback, while a service on the host's own address is reached.
fn slirp4netns_run_cannot_reach_host_loopback_services(env: Env) {
    let topo = Topology::new(&env);
    let p = port(27200);
    host_loopback_services(&topo, p, Duration::from_secs(120));
    let open = port(27400);
    let public = topo.in_host(move || TcpListener::bind(("0.0.0.0", open)).unwrap());
    public.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            match public.accept() {
                Ok((mut c, _)) => {
                    let _ = c.write_all(b"public");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    let mut targets: Vec<String> =
        ["10.0.2.2", common::HOST_ADDR, common::UPSTREAM_ADDR].iter().map(|h| format!("tcp,{h},{p}")).collect();
    targets.push(format!("udp,10.0.2.2,{p}"));
    targets.push(format!("tcp,{},{open}", common::HOST_ADDR));
    let results = probe(&topo, &env, "slirp4netns", &[], &targets);
    assert!(leaks(&results).is_empty(), "the host's loopback leaked: {results:?}");
    assert_eq!(results.last().unwrap().1, "ok:public", "the host's own address works: {results:?}");
    topo.assert_clean();
}

// Both tiers run again with the accelerator: a switched socket reaches no
// more of the host's loopback than the helper does.
tier_tests!(
    rootless + rootless_accel,
    super::Tier::Rootless,
    [
        pasta_run_cannot_reach_host_loopback_services_without_host_port,
        slirp4netns_run_cannot_reach_host_loopback_services
    ]
);

tier_tests!(
    root + root_accel,
    super::Tier::Root,
    [
        pasta_run_cannot_reach_host_loopback_services_without_host_port,
        slirp4netns_run_cannot_reach_host_loopback_services
    ]
);

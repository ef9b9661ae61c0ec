//! A published port is the run's alone: bridge mode (kernel DNAT, which
//! holds no socket) refuses a port a host server holds and a port another
//! run publishes, with the clear errors every mode gives, and the host
//! server keeps its clients; while it lives, the run holds its ports with
//! sockets of its own, so no other program binds them. Root tier, real
//! bridges and nftables, inside a throwaway host namespace.

mod common;

use common::running::{Watchdog, start_ready};
use common::{HOST_ADDR, Tier, Topology, describe, port};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::Child;
use std::time::{Duration, Instant};

/// A server in the host namespace answering "host\n" on 0.0.0.0:`port`
/// until `for_how_long` passes.
fn host_server(topo: &Topology, port: u16, for_how_long: Duration) {
    let listener = topo.in_host(move || TcpListener::bind(("0.0.0.0", port)).unwrap());
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + for_how_long;
    std::thread::spawn(move || {
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((mut c, _)) => {
                    let _ = c.write_all(b"host\n");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
}

/// What a client in the host namespace reads from `addr`:`port`.
fn ask(topo: &Topology, addr: &'static str, port: u16) -> String {
    topo.in_host(move || {
        let mut s = TcpStream::connect_timeout(&format!("{addr}:{port}").parse().unwrap(), Duration::from_secs(3))
            .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(|e| e.to_string())?;
        Ok::<_, String>(out)
    })
    .unwrap_or_else(|e| format!("error: {e}"))
}

fn stop(child: Child) -> std::process::Output {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let _watchdog = Watchdog::arm(&child, Duration::from_secs(60));
    child.wait_with_output().unwrap()
}

/// The ids of the runs recorded under the topology's run directory.
fn run_ids(topo: &Topology) -> Vec<String> {
    let runs = topo.run_dir.join("runs");
    std::fs::read_dir(runs)
        .map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.strip_suffix(".json").map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// Regression: `run --network bridge -p PORT:8000` started without a word
/// on a port a host server listened on, and from then on the server's
/// clients reached the container (nft DNAT).
#[test]
fn bridge_publish_on_a_port_a_host_server_holds_fails_and_the_server_keeps_its_clients() {
    let Some(env) = Tier::Root.require() else { return };
    let topo = Topology::new(&env);
    let p = port(28000);
    host_server(&topo, p, Duration::from_secs(120));
    let spec = format!("{p}:8000");
    let out = topo.cli(&env, &["run", "--network", "bridge", "-p", &spec, "--", "true"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    let named = format!("host port {p}/tcp: port in use by ");
    assert!(stderr.contains(&named) && stderr.contains(&format!("(pid {})", std::process::id())), "{stderr}");
    assert_eq!(ask(&topo, "127.0.0.1", p), "host\n", "a loopback client still reaches the host server");
    assert_eq!(ask(&topo, HOST_ADDR, p), "host\n", "so does a client of the host's address");
    topo.assert_clean();
}

/// Regression: a second bridge run publishing the same port failed with
/// nft's raw "Could not process rule: File exists"; a run of another mode
/// (or a bridge run on another network) would have been shadowed silently.
#[test]
fn a_port_another_run_publishes_is_refused_naming_that_run() {
    let Some(env) = Tier::Root.require() else { return };
    let topo = Topology::new(&env);
    let p = port(28200);
    let spec = format!("{p}:8000");
    let first = start_ready(
        &topo,
        &env,
        &["run", "--network", "bridge", "-p", &spec, "--", "sh", "-c", "echo ready; exec sleep 60"],
    );
    let ids = run_ids(&topo);
    assert_eq!(ids.len(), 1, "{ids:?}");
    let other = format!("{p}:8001");
    for mode in ["bridge", "pasta", "loopback"] {
        let out = topo.cli(&env, &["run", "--network", mode, "-p", &other, "--", "true"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{mode}: {}", describe(&out));
        let named = format!("host port {p}/tcp: already published by run {} (-p {p}:8000/tcp)", ids[0]);
        assert!(stderr.contains(&named), "{mode}: {stderr}");
        assert!(!stderr.contains("File exists"), "{stderr}");
    }
    assert_eq!(run_ids(&topo), ids, "the refused runs left no record");
    let out = stop(first);
    assert_eq!(out.status.code(), Some(128 + 15), "{}", describe(&out));
    // Once the first run is gone, the port is free again.
    let out = topo.cli(&env, &["run", "--network", "bridge", "-p", &other, "--", "true"]).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    topo.assert_clean();
}

/// What binding each of a run's published ports does in the host namespace:
/// TCP on `0.0.0.0` (with `SO_REUSEADDR`, as std sets it) and on a
/// dual-stack `[::]`, UDP on `0.0.0.0`.
fn binds(topo: &Topology, tcp: u16, udp: u16) -> Vec<std::io::Result<()>> {
    topo.in_host(move || {
        vec![
            TcpListener::bind(("0.0.0.0", tcp)).map(drop),
            TcpListener::bind(("::", tcp)).map(drop),
            UdpSocket::bind(("0.0.0.0", udp)).map(drop),
        ]
    })
}

/// A bridge run's ports were DNAT elements only: another program could
/// bind them while the run lived (and never see a client), and a run of
/// another runtime directory (another user's, whose records are elsewhere)
/// found them free. Now the run holds them with sockets until it ends.
#[test]
fn a_bridge_run_holds_its_ports_against_other_programs_and_other_run_dirs() {
    let Some(env) = Tier::Root.require() else { return };
    let topo = Topology::new(&env);
    let (tcp, udp) = (port(28400), port(28600));
    let (p_tcp, p_udp) = (format!("{tcp}:8000"), format!("{udp}:5353/udp"));
    let run = start_ready(
        &topo,
        &env,
        &["run", "--network", "bridge", "-p", &p_tcp, "-p", &p_udp, "--", "sh", "-c", "echo ready; exec sleep 60"],
    );
    for (what, bound) in ["tcp 0.0.0.0", "tcp [::] (dual-stack)", "udp 0.0.0.0"].iter().zip(binds(&topo, tcp, udp)) {
        let err = bound.expect_err(&format!("{what} bound a port the bridge run publishes"));
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{what}: {err}");
    }
    let elsewhere = tempfile::tempdir().unwrap();
    let spec = format!("{tcp}:80");
    let out = topo
        .cli_with_run_dir(&env, elsewhere.path(), &["run", "--network", "loopback", "-p", &spec, "--", "true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(stderr.contains(&format!("host port {tcp}/tcp: port in use by pelagos-net")), "{stderr}");
    let out = stop(run);
    assert_eq!(out.status.code(), Some(128 + 15), "{}", describe(&out));
    for (what, bound) in ["tcp 0.0.0.0", "tcp [::]", "udp 0.0.0.0"].iter().zip(binds(&topo, tcp, udp)) {
        bound.unwrap_or_else(|e| panic!("{what}: the port stayed held after the run ended: {e}"));
    }
    topo.assert_clean();
}

//! `gc` end to end: an owner killed with SIGKILL leaves its record (and, in
//! bridge mode, netns name, forwards and lease; in slirp4netns mode, the API
//! socket); `gc` removes exactly that, while a live run beside it is left
//! alone.

mod common;

use common::{Env, Tier, Topology, describe};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn start(topo: &Topology, env: &Env, args: &[&str]) -> Child {
    let mut child = topo.cli(env, args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    child
}

fn records(topo: &Topology) -> usize {
    std::fs::read_dir(topo.run_dir.join("runs"))
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".json")).count())
        .unwrap_or(0)
}

fn kill9(child: &mut Child) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    child.wait().unwrap();
}

fn gc_leaves_live_runs_and_removes_dead_ones(env: Env, mode: &str, dead_port: &str) {
    let topo = Topology::new(&env);
    let script = "echo ready; exec sleep 60";
    let mut live = start(&topo, &env, &["run", "--network", mode, "--", "sh", "-c", script]);
    let mut dead = start(&topo, &env, &["run", "--network", mode, "-p", dead_port, "--", "sh", "-c", script]);
    assert_eq!(records(&topo), 2);
    kill9(&mut dead);
    let dry = topo.cli(&env, &["gc", "--dry-run"]).output().unwrap();
    assert!(dry.status.success(), "{}", describe(&dry));
    assert_eq!(records(&topo), 2, "a dry run removes nothing");
    let out = topo.cli(&env, &["gc", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["live"].as_array().unwrap().len(), 1, "{report}");
    assert!(report["actions"].as_array().unwrap().iter().any(|a| a["what"] == "record"), "{report}");
    assert_eq!(records(&topo), 1, "only the dead run's record is gone");
    let again = topo.cli(&env, &["gc", "--json"]).output().unwrap();
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert!(again["actions"].as_array().unwrap().is_empty(), "gc is idempotent: {again}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(live.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    live.wait().unwrap();
    // The dead run's processes went with their owner (parent-death signal);
    // gc removed the rest.
    let deadline = Instant::now() + Duration::from_secs(20);
    while Command::new("ip")
        .args(["-n", &topo.host, "-o", "link"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(": pv"))
        .unwrap_or(false)
    {
        assert!(Instant::now() < deadline, "veths left");
        std::thread::sleep(Duration::from_millis(20));
    }
    topo.assert_clean();
    let sockets: Vec<_> = std::fs::read_dir(&topo.run_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sock"))
        .collect();
    assert!(sockets.is_empty(), "helper sockets left in the run dir: {sockets:?}");
    if mode.starts_with("bridge") {
        let leases = pelagos_net::bridge::lease::LeaseStore::new(&topo.run_dir);
        for net in leases.networks().unwrap() {
            let left = leases.leases(&net).unwrap();
            assert!(left.is_empty(), "lease left in {net}: {left:?}");
        }
        let table = Command::new("ip")
            .args(["netns", "exec", &topo.host, "nft", "list", "map", "ip", "pelagos-pelagos0", "fwd_tcp_any"])
            .output()
            .unwrap();
        let table = String::from_utf8_lossy(&table.stdout);
        assert!(!table.contains("10.90.0."), "forward left: {table}");
    }
}

#[test]
fn rootless_pasta_run_killed_with_sigkill_is_cleaned_by_gc() {
    if let Some(env) = Tier::Rootless.require() {
        gc_leaves_live_runs_and_removes_dead_ones(env, "pasta", "26080:80");
    }
}

/// Regression: slirp4netns removes its API socket only on a clean exit, so
/// a killed run left `slirp-<id>.sock` behind that `gc` did not know.
#[test]
fn rootless_slirp4netns_run_killed_with_sigkill_is_cleaned_by_gc() {
    if let Some(env) = Tier::Rootless.require() {
        gc_leaves_live_runs_and_removes_dead_ones(env, "slirp4netns", "26082:80");
    }
}

#[test]
fn root_bridge_run_killed_with_sigkill_is_cleaned_by_gc() {
    if let Some(env) = Tier::Root.require() {
        gc_leaves_live_runs_and_removes_dead_ones(env, "bridge", "26081:80");
    }
}

#[test]
fn the_next_run_cleans_up_after_a_killed_one() {
    let Some(env) = Tier::Rootless.require() else { return };
    let topo = Topology::new(&env);
    let mut dead = start(&topo, &env, &["run", "--network", "pasta", "--", "sh", "-c", "echo ready; exec sleep 60"]);
    kill9(&mut dead);
    assert_eq!(records(&topo), 1);
    let out = topo.cli(&env, &["run", "--network", "pasta", "--", "true"]).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(records(&topo), 0, "the next run's gc removed the dead record");
    topo.assert_clean();
}

//! `attach` and `detach` end to end: a namespace someone else made (rootless:
//! `unshare -Urn` as the test user; root: a named netns) gets networked and
//! a published port, reachable from the host with the client's address
//! kept; `detach` leaves no helper, relay or record; a namespace whose
//! process dies (or whose name is deleted) loses its attachment to `gc`;
//! bad input is refused with exit 125 and nothing created.

#[macro_use]
mod common;

use common::namespace::Namespace;
use common::schema::assert_valid;
use common::{Env, Tier, Topology, UPSTREAM_ADDR, describe, in_netns, which};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::Output;
use std::time::{Duration, Instant};

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", describe(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(out)))
}

fn records(topo: &Topology) -> usize {
    std::fs::read_dir(topo.run_dir.join("runs")).map(|d| d.flatten().count()).unwrap_or(0)
}

/// What the server inside says a client from `ns` to `addr` is.
fn peer(ns: &str, addr: SocketAddr) -> String {
    in_netns(ns, move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).and_then(|s| {
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                let mut line = String::new();
                BufReader::new(s).read_line(&mut line)?;
                Ok(line)
            });
            match got {
                Ok(line) if !line.is_empty() => return line.trim().to_owned(),
                _ if Instant::now() > deadline => panic!("no answer from {addr}: {got:?}"),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    })
}

fn attach(topo: &Topology, env: &Env, ns: &Namespace, extra: &[&str]) -> Output {
    let mut args = vec!["attach", "--netns", &ns.path, "--json"];
    args.extend_from_slice(extra);
    topo.cli(env, &args).output().unwrap()
}

fn attach_serves_a_published_port_keeping_the_client_address_and_detach_leaves_nothing(env: Env) {
    if which("nsenter").is_none() || which("python3").is_none() {
        common::skip("attach", "nsenter (util-linux) and python3 are needed");
        return;
    }
    let topo = Topology::new(&env);
    let mut ns = Namespace::new(&topo, &env);
    let report = json(&attach(&topo, &env, &ns, &["--network", "pasta", "-p", "80"]));
    assert_valid("attach.schema.json", &report);
    let port = report["ports"][0]["host_port"].as_u64().expect("the chosen host port") as u16;
    assert_eq!(report["ports"][0]["container_port"], 80, "{report}");
    assert_eq!(report["mode"], "pasta", "{report}");
    assert!(!report["addresses"].as_array().unwrap().is_empty(), "pasta gives the namespace an address: {report}");
    let helpers: Vec<&str> = report["helpers"].as_array().unwrap().iter().filter_map(|h| h["role"].as_str()).collect();
    assert!(helpers.contains(&"pasta"), "{report}");
    let id = report["id"].as_str().unwrap().to_owned();
    assert_eq!(records(&topo), 1);
    ns.serve(&topo, &env, 80);
    let local: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(peer(&topo.host, local), "127.0.0.1");
    let from_upstream: SocketAddr = format!("{}:{port}", common::HOST_ADDR).parse().unwrap();
    assert_eq!(peer(&topo.upstream, from_upstream), UPSTREAM_ADDR, "the server sees the real client");
    let out = topo.cli(&env, &["detach", &id, "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let report = json(&out);
    assert_valid("detach.schema.json", &report);
    assert_eq!(report["id"], id.as_str(), "{report}");
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
    // Nothing of the attachment is left: no helper or relay in the host
    // namespace, no record, no name, no log.
    topo.assert_clean();
    let again = topo.cli(&env, &["detach", &id]).output().unwrap();
    assert_eq!(again.status.code(), Some(125), "{}", describe(&again));
    assert!(String::from_utf8_lossy(&again.stderr).contains(&format!("no attachment {id}")), "{}", describe(&again));
    ns.end();
}

fn a_namespace_that_ends_loses_its_attachment_to_gc(env: Env) {
    let topo = Topology::new(&env);
    let mut ns = Namespace::new(&topo, &env);
    json(&attach(&topo, &env, &ns, &["--network", "pasta", "-p", "127.0.0.1::80"]));
    let gc = json(&topo.cli(&env, &["gc", "--json"]).output().unwrap());
    assert_eq!(gc["live"].as_array().unwrap().len(), 1, "a live namespace keeps its attachment: {gc}");
    ns.end();
    let gc = json(&topo.cli(&env, &["gc", "--json"]).output().unwrap());
    assert!(gc["actions"].as_array().unwrap().iter().any(|a| a["what"] == "record"), "{gc}");
    topo.assert_clean();
}

fn bad_input_is_refused_naming_it_and_creates_nothing(env: Env) {
    let topo = Topology::new(&env);
    let ns = Namespace::new(&topo, &env);
    let refused = |args: &[&str], says: &str| {
        let out = topo.cli(&env, args).output().unwrap();
        assert_eq!(out.status.code(), Some(125), "{args:?}: {}", describe(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?} should say {says:?}: {stderr}");
    };
    refused(&["attach", "--netns", "/etc/hostname"], "/etc/hostname is not a network namespace");
    refused(&["attach", "--netns", "/proc/4194300/ns/net"], "there is no process 4194300");
    refused(&["detach", "0123456789ab"], "no attachment 0123456789ab");
    refused(&["attach", "--netns", &ns.path, "--network", "host"], "cannot be attached");
    assert_eq!(records(&topo), 0);
    json(&attach(&topo, &env, &ns, &["--network", "loopback", "-p", "127.0.0.1:26300:80"]));
    refused(&["attach", "--netns", &ns.path, "--network", "loopback", "-p", "127.0.0.1:26300:81"], "overlaps");
    assert_eq!(records(&topo), 1, "the refused attach created nothing");
    if env.user.is_some() {
        refused(&["attach", "--netns", "/proc/1/ns/net"], "may not join");
    }
    drop(ns);
    let gc = json(&topo.cli(&env, &["gc", "--json"]).output().unwrap());
    assert!(gc["live"].as_array().unwrap().is_empty(), "{gc}");
    topo.assert_clean();
}

fn run_in_an_existing_namespace_uses_it_as_it_is(env: Env) {
    let topo = Topology::new(&env);
    let ns = Namespace::new(&topo, &env);
    let mode = format!("ns:{}", ns.path);
    let ino = std::fs::metadata(&ns.path).map(|m| std::os::unix::fs::MetadataExt::ino(&m)).unwrap();
    let out =
        topo.cli(&env, &["run", "--network", &mode, "--", "stat", "-L", "-c", "%i", "/proc/self/ns/net"]).output();
    let out = out.unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), ino.to_string(), "the command ran in that namespace");
    let out = topo.cli(&env, &["run", "--network", &mode, "-p", "8080:80", "--", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("attach"), "the hint names attach: {}", describe(&out));
    topo.assert_clean();
}

/// A bridge attachment outlives `attach`: `network rm` counts it as in
/// use, and `network rm -f` detaches it (nothing of it is left).
fn a_bridge_attachment_keeps_its_network_in_use_until_forced_removal(env: Env) {
    let topo = Topology::new(&env);
    let ns = Namespace::new(&topo, &env);
    let run = |args: &[&str]| topo.cli(&env, args).output().unwrap();
    let out = run(&["network", "create", "att", "--subnet", "10.62.0.0/24"]);
    assert!(out.status.success(), "{}", describe(&out));
    let report = json(&attach(&topo, &env, &ns, &["--network", "att"]));
    assert_valid("attach.schema.json", &report);
    assert!(report["addresses"].as_array().unwrap().iter().any(|a| a.as_str().unwrap().starts_with("10.62.0.")));
    let out = run(&["network", "rm", "att"]);
    assert_eq!(out.status.code(), Some(2), "in use: {}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("network att is in use by"), "{}", describe(&out));
    let out = run(&["network", "rm", "-f", "att"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(records(&topo), 0, "the attachment was detached");
    drop(ns);
    topo.assert_clean();
}

tier_tests!(
    rootless,
    super::Tier::Rootless,
    [
        attach_serves_a_published_port_keeping_the_client_address_and_detach_leaves_nothing,
        a_namespace_that_ends_loses_its_attachment_to_gc,
        bad_input_is_refused_naming_it_and_creates_nothing,
        run_in_an_existing_namespace_uses_it_as_it_is,
    ]
);
tier_tests!(
    root,
    super::Tier::Root,
    [
        attach_serves_a_published_port_keeping_the_client_address_and_detach_leaves_nothing,
        a_namespace_that_ends_loses_its_attachment_to_gc,
        bad_input_is_refused_naming_it_and_creates_nothing,
        run_in_an_existing_namespace_uses_it_as_it_is,
        a_bridge_attachment_keeps_its_network_in_use_until_forced_removal,
    ]
);

//! The `--network` forms a podman user types, end to end: helper options
//! (`pasta:OPTS`, `slirp4netns:OPTS`) reach the helper, a named network
//! runs by its bare name with the options it was created with (MTU, address
//! range), shows up in `ps` and `--json-status`, and `network rm -f` stops
//! its runs and leaves no bridge, table, lease or lock file behind.

#[macro_use]
mod common;

use common::schema::{assert_each_valid, assert_valid};
use common::{Env, HOST_ADDR, Tier, Topology, describe};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The MTU of every link but `lo`, from `ip -o link` output.
fn mtus(ip_link: &str) -> Vec<String> {
    ip_link
        .lines()
        .filter(|l| !l.contains(": lo:"))
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "mtu").nth(1).map(str::to_owned))
        .collect()
}

fn helper_options_reach_the_helper(env: Env) {
    let topo = Topology::new(&env);
    for (network, want) in [("pasta:--mtu,1400", "1400"), ("slirp4netns:mtu=1280", "1280")] {
        let out = topo.cli(&env, &["run", "--network", network, "--", "ip", "-o", "link"]).output().unwrap();
        assert!(out.status.success(), "{network}: {}", describe(&out));
        let links = String::from_utf8_lossy(&out.stdout);
        assert_eq!(mtus(&links), [want], "{network}: {links}");
    }
    topo.assert_clean();
}

fn json_status_of_a_pasta_run_names_its_address(env: Env) {
    let topo = Topology::new(&env);
    // Rootless, the run dir is the test user's (and exists); as root, the
    // topology's own directory is root's.
    let dir = if env.user.is_some() { topo.run_dir.clone() } else { topo.run_dir.parent().unwrap().to_owned() };
    let status = dir.join("status.jsonl");
    let out = topo
        .cli(&env, &["run", "--network", "pasta", "--json-status", status.to_str().unwrap(), "--", "true"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let text = std::fs::read_to_string(&status).unwrap();
    let events: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for e in &events {
        assert_valid("run-status.schema.json", e);
    }
    assert_eq!(events.len(), 2, "{text}");
    let addresses: Vec<&str> = events[0]["addresses"].as_array().unwrap().iter().filter_map(|a| a.as_str()).collect();
    assert!(
        addresses.iter().any(|a| a.starts_with(&format!("{HOST_ADDR}/"))),
        "pasta copies the host's address: {text}"
    );
    assert_eq!((events[0]["mode"].as_str(), events[1]["exit_code"].as_i64()), (Some("pasta"), Some(0)));
    topo.assert_clean();
}

tier_tests!(
    rootless,
    super::Tier::Rootless,
    [helper_options_reach_the_helper, json_status_of_a_pasta_run_names_its_address]
);
tier_tests!(root, super::Tier::Root, [helper_options_reach_the_helper, json_status_of_a_pasta_run_names_its_address]);

fn ip_in_host(topo: &Topology, args: &[&str]) -> String {
    let out = Command::new("ip").args(["-n", &topo.host]).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_named_network_runs_by_name_with_its_options_and_rm_force_leaves_nothing() {
    let Some(env) = Tier::Root.require() else { return };
    let topo = Topology::new(&env);
    let run = |args: &[&str]| {
        let out = topo.cli(&env, args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let create =
        ["network", "create", "Web", "--subnet", "10.61.0.0/24", "--ip-range", "10.61.0.200/29", "-o", "mtu=1400"];
    assert_eq!(run(&create).0, Some(0));
    let script = "echo \"ready $(ip -o link show eth0 | sed 's/.* mtu \\([0-9]*\\) .*/\\1/') $(ip -o -4 addr show eth0 | awk '{print $4}')\"; exec sleep 60";
    let mut child = topo
        .cli(&env, &["run", "--network", "Web", "--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"ready"), "{line}");
    assert_eq!(words[1], "1400", "the container's MTU: {line}");
    let last: u8 = words[2].strip_prefix("10.61.0.").and_then(|a| a.strip_suffix("/24")).unwrap().parse().unwrap();
    assert!((200..=207).contains(&last), "the address comes from the range: {line}");
    assert!(ip_in_host(&topo, &["link", "show", "pn-Web"]).contains("mtu 1400"), "the bridge's MTU");

    let (code, ps, err) = run(&["ps", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let ps: serde_json::Value = serde_json::from_str(&ps).unwrap();
    assert_each_valid("run.schema.json", &ps);
    assert_eq!((ps[0]["network"].as_str(), ps[0]["mode"].as_str()), (Some("Web"), Some("bridge:Web")), "{ps}");
    assert_eq!(ps[0]["address"].as_str(), words[2].strip_suffix("/24"), "{ps}");

    let (code, _, err) = run(&["network", "rm", "Web"]);
    assert_eq!(code, Some(2), "in use: {err}");
    assert!(err.contains("network Web is in use by"), "{err}");
    assert!(err.contains("fix: stop those runs first, or `pelagos-net network rm -f Web`"), "names the way out: {err}");
    let (code, out, err) = run(&["network", "rm", "-f", "-t", "5", "Web"]);
    assert_eq!((code, out.as_str()), (Some(0), "Web\n"), "{err}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "rm -f did not stop the run");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(128 + 15), "the run was stopped with SIGTERM");
    let leases: Vec<String> = std::fs::read_dir(topo.run_dir.join("leases"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(!leases.iter().any(|n| n.starts_with("Web.")), "lease files left: {leases:?}");
    assert!(ip_in_host(&topo, &["link", "show", "pn-Web"]).is_empty(), "bridge left");
    let tables = Command::new("ip").args(["netns", "exec", &topo.host, "nft", "list", "tables"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&tables.stdout).contains("pelagos-Web"), "nft table left");
    assert_eq!(run(&["ps", "-q"]).1, "");
    topo.assert_clean();
}

/// Answers every connection with the peer's address.
const TELL_PEER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(8)
print("ready", flush=True)
while True:
    c, peer = s.accept(); c.sendall(peer[0].encode() + b"\n"); c.close()
"#;

#[test]
fn a_dual_stack_network_gives_containers_ipv6_with_nat66_egress() {
    let Some(env) = Tier::Root.require() else { return };
    let topo = Topology::new(&env);
    topo.add_ipv6();
    let run = |args: &[&str]| topo.cli(&env, args).output().unwrap();
    let out = run(&["network", "create", "dual", "--subnet", "10.62.0.0/24", "--ipv6"]);
    assert!(out.status.success(), "{}", describe(&out));
    // A server in the upstream namespace, which knows no route to the ULA subnet:
    // only NAT66 behind the host's fd00:231::2 can reach it.
    let mut server = Command::new("ip")
        .args(["netns", "exec", &topo.upstream, "python3", "-c", TELL_PEER, "fd00:231::1", "9466"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    let script = r#"ip -o -6 addr show dev eth0 scope global | awk '{print $4}'; ip -6 route show default;
python3 -c 'import socket; s = socket.create_connection(("fd00:231::1", 9466), 3); print(s.recv(100).decode().strip())'"#;
    let out = run(&["run", "--network", "dual", "--ip", "10.62.0.9", "--", "sh", "-c", script]);
    let _ = server.kill();
    let _ = server.wait();
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&"fd70:656c:6167::9/64"), "the IPv6 address mirrors 10.62.0.9: {text}");
    assert!(lines.get(1).is_some_and(|l| l.starts_with("default via fd70:656c:6167::1 dev eth0")), "{text}");
    assert_eq!(lines.get(2), Some(&"fd00:231::2"), "egress is masqueraded behind the host's address: {text}");
    let bridge = ip_in_host(&topo, &["-6", "addr", "show", "dev", "pn-dual"]);
    assert!(bridge.contains("fd70:656c:6167::1/64"), "{bridge}");
    let out = run(&["network", "rm", "dual"]);
    assert!(out.status.success(), "{}", describe(&out));
    let tables = Command::new("ip").args(["netns", "exec", &topo.host, "nft", "list", "tables"]).output().unwrap();
    let tables = String::from_utf8_lossy(&tables.stdout).into_owned();
    assert!(!tables.contains("pelagos-dual"), "tables left: {tables}");
    topo.assert_clean();
}

//! Rootless shared networks end to end (rootless tier): `pelagos-net run
//! --network bridge:NAME` as the unprivileged test user, whose networks
//! live in the user's network holder (a user, network and mount namespace
//! with pasta attached), inside a throwaway host namespace behind a fake
//! upstream.

#[macro_use]
mod common;
#[path = "holder_cli/attachments.rs"]
mod attachments;
#[path = "holder_cli/gaps.rs"]
mod gaps;

use common::running::{Running, running_ready};
use common::{Env, HOST_ADDR, Tier, Topology, UPSTREAM_ADDR, describe, in_netns, port};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// A TCP server that answers every connection with "hello <peer ip>\n",
/// and a UDP echo on the same port number that prefixes the peer's address.
const GREETER: &str = r#"
import socket, sys, threading
port = int(sys.argv[1])
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", port))
    while True:
        d, p = u.recvfrom(2048); u.sendto(b"echo %s " % p[0].encode() + d, p)
threading.Thread(target=udp, daemon=True).start()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port)); s.listen(64)
print("ready", flush=True)
while True:
    c, peer = s.accept(); c.sendall(b"hello %s\n" % peer[0].encode()); c.close()
"#;

fn rootless() -> Option<Env> {
    let env = Tier::Rootless.require()?;
    if common::which("newuidmap").is_none() {
        common::skip("rootless", "newuidmap is missing (apt-get install uidmap; scripts/setup-host does)");
        return None;
    }
    Some(env)
}

/// `pelagos-net ARGS` in the background, once its command printed `ready`.
fn start(topo: &Topology, env: &Env, args: &[&str]) -> Running {
    running_ready(topo.cli(env, args))
}

/// A one-shot client run on `network`: connects to `target` and prints what it reads.
fn client(topo: &Topology, env: &Env, network: &str, target: &str) -> Output {
    let (ip, p) = target.rsplit_once(':').unwrap();
    let script = format!(
        "import socket; s=socket.create_connection(('{ip}', {p}), timeout=3); print(s.recv(100).decode().strip())"
    );
    topo.cli(env, &["run", "--network", network, "--", "python3", "-c", &script]).output().unwrap()
}

fn cli_ok(topo: &Topology, env: &Env, args: &[&str]) -> String {
    let out = topo.cli(env, args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn greet(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn udp_echo(addr: SocketAddr) -> std::io::Result<String> {
    let u = UdpSocket::bind("0.0.0.0:0")?;
    u.set_read_timeout(Some(Duration::from_secs(3)))?;
    u.send_to(b"ping", addr)?;
    let mut buf = [0u8; 256];
    let (n, _) = u.recv_from(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// The holder's state as the supervisor wrote it (`None`: not running).
fn holder_state(topo: &Topology) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(topo.run_dir.join("holder/state.json")).ok()?;
    serde_json::from_str(&text).ok()
}

fn pid_of(state: &serde_json::Value, who: &str) -> Option<u32> {
    state.get(who)?.get("pid")?.as_u64().map(|p| p as u32)
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

/// Nothing of the user left: no process in the host namespace, no holder
/// (its processes gone, no state), no record, no lease.
fn assert_all_gone(topo: &Topology, holder_pids: &[u32]) {
    topo.assert_clean();
    assert!(holder_state(topo).is_none(), "holder state left: {:?}", holder_state(topo));
    let deadline = Instant::now() + Duration::from_secs(10);
    while holder_pids.iter().any(|p| alive(*p)) {
        assert!(Instant::now() < deadline, "holder processes left: {holder_pids:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The user's lease files (this process, root, does not take the user's locks).
    let leases = pelagos_net::bridge::lease::LeaseStore::new(&topo.run_dir);
    for net in leases.networks().unwrap_or_default() {
        let dir = leases.network_dir(&net);
        let left: Vec<_> =
            std::fs::read_dir(&dir).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "leases left in {}: {left:?}", dir.display());
    }
}

fn holder_pids(topo: &Topology) -> Vec<u32> {
    let state = holder_state(topo).expect("the holder runs");
    ["supervisor", "holder", "pasta", "names"].iter().filter_map(|w| pid_of(&state, w)).collect()
}

fn two_runs_talk_and_another_network_cannot_reach_them(env: Env) {
    let topo = Topology::new(&env);
    cli_ok(&topo, &env, &["network", "create", "web"]);
    cli_ok(&topo, &env, &["network", "create", "other"]);
    let server = start(
        &topo,
        &env,
        &["run", "--network", "bridge:web", "--ip", "10.90.1.10", "--", "python3", "-c", GREETER, "80"],
    );
    let pids = holder_pids(&topo);
    let out = client(&topo, &env, "web", "10.90.1.10:80");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("hello 10.90.1."), "{}", describe(&out));
    let out = client(&topo, &env, "bridge:other", "10.90.1.10:80");
    assert!(!out.status.success(), "a run on another network reached web: {}", describe(&out));
    let inspect = cli_ok(&topo, &env, &["network", "inspect", "web"]);
    assert!(inspect.contains("10.90.1.10"), "{inspect}");
    let rm = topo.cli(&env, &["network", "rm", "web"]).output().unwrap();
    assert!(!rm.status.success(), "network rm while a run is attached: {}", describe(&rm));
    server.stop();
    cli_ok(&topo, &env, &["network", "rm", "web", "other"]);
    assert_all_gone(&topo, &pids);
}

fn egress_reaches_the_fake_upstream_through_the_holder(env: Env) {
    let topo = Topology::new(&env);
    cli_ok(&topo, &env, &["network", "create", "web"]);
    let listener = in_netns(&topo.upstream, || TcpListener::bind((UPSTREAM_ADDR, 9090)).unwrap());
    let seen = std::thread::spawn(move || {
        let (mut c, peer) = listener.accept().unwrap();
        c.write_all(format!("hello {}\n", peer.ip()).as_bytes()).unwrap();
        peer.ip().to_string()
    });
    let out = client(&topo, &env, "web", &format!("{UPSTREAM_ADDR}:9090"));
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(seen.join().unwrap(), HOST_ADDR, "upstream must see the host's address");
    cli_ok(&topo, &env, &["network", "rm", "web"]);
    assert_all_gone(&topo, &[]);
}

fn published_ports_keep_the_client_address(env: Env) {
    let topo = Topology::new(&env);
    cli_ok(&topo, &env, &["network", "create", "web"]);
    let (lo, any) = (port(18600), port(18700));
    let server = start(
        &topo,
        &env,
        &[
            "run",
            "--network",
            "web",
            "-p",
            &format!("127.0.0.1:{lo}:80"),
            "-p",
            &format!("{any}:80"),
            "-p",
            &format!("{any}:80/udp"),
            "--",
            "python3",
            "-c",
            GREETER,
            "80",
        ],
    );
    let local: SocketAddr = format!("127.0.0.1:{lo}").parse().unwrap();
    let host: SocketAddr = format!("{HOST_ADDR}:{any}").parse().unwrap();
    assert_eq!(topo.in_host(move || greet(local)).unwrap(), "hello 127.0.0.1\n", "loopback client");
    assert_eq!(
        in_netns(&topo.upstream, move || greet(host)).unwrap(),
        format!("hello {UPSTREAM_ADDR}\n"),
        "a non-loopback client's own address"
    );
    let echoed = in_netns(&topo.upstream, move || udp_echo(host)).unwrap();
    assert!(echoed.ends_with(" ping"), "udp: {echoed}");
    let pids = holder_pids(&topo);
    server.stop();
    cli_ok(&topo, &env, &["network", "rm", "web"]);
    assert_all_gone(&topo, &pids);
}

/// Prints what `db` and argv[1] (db's id) resolve to, what db:80 says, and
/// what argv[2] (the stub's test domain, an upstream name) resolves to.
const NAME_CLIENT: &str = r#"import socket,sys
r=socket.gethostbyname
c=socket.create_connection(('db', 80), timeout=5)
print(r('db'), r(sys.argv[1]), c.recv(100).decode().strip(), r(sys.argv[2]))
"#;

/// A topology whose host resolver is a stub on 127.0.0.53 (dnsmasq,
/// answering only the test domain), named by the commands' resolv.conf:
/// upstream names reach it from the holder's networks, and nothing a test
/// asks reaches the machine's resolver.
fn stub_scene(env: &Env) -> Option<(Topology, common::dns::DnsServer, common::dns::Etc)> {
    use common::dns::{DnsServer, Etc, Resolv, STUB_ADDR, STUB_ANSWER};
    common::dns::dnsmasq()?;
    let topo = Topology::new(env);
    let stub = DnsServer::start(&topo.host, STUB_ADDR, STUB_ANSWER);
    Some((topo, stub, Etc::new(Resolv::File("nameserver 127.0.0.53\n"))))
}

fn runs_resolve_each_other_by_name_on_their_network_only(env: Env) {
    use common::dns::{DOMAIN, NONE_RESOLVE, STUB_ANSWER};
    let Some((topo, stub, etc)) = stub_scene(&env) else { return };
    let run = |args: &[&str]| common::dns::run(&topo, &env, &etc, args);
    for net in ["web", "other"] {
        let out = run(&["network", "create", net]);
        assert!(out.status.success(), "{}", describe(&out));
    }
    let server = running_ready(topo.cli_wrapped(
        &env,
        &etc.wrapper(),
        &["run", "--network", "web", "--name", "db", "--", "python3", "-c", GREETER, "80"],
    ));
    let ps = run(&["ps", "--json"]);
    let id = serde_json::from_slice::<serde_json::Value>(&ps.stdout)
        .ok()
        .and_then(|v| v.as_array()?.iter().find(|r| r["name"] == "db")?["id"].as_str().map(String::from));
    let id = id.unwrap_or_else(|| panic!("ps shows no run named db: {}", describe(&ps)));
    let out = run(&["run", "--network", "web", "--name", "app", "--", "python3", "-c", NAME_CLIENT, &id, DOMAIN]);
    assert!(out.status.success(), "{}", describe(&out));
    let words: Vec<String> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(String::from).collect();
    assert_eq!(words.len(), 5, "{}", describe(&out));
    assert!(words[0].starts_with("10.90.1.") && words[0] == words[1], "db and its id: {words:?}");
    assert_eq!(words[2], "hello", "{words:?}");
    assert_eq!(words[4], STUB_ANSWER, "an upstream name through the host's stub resolver");
    let taken = run(&["run", "--network", "web", "--name", "db", "--", "true"]);
    assert_eq!(taken.status.code(), Some(125), "a taken name: {}", describe(&taken));
    let out = run(&["run", "--network", "other", "--", "python3", "-c", NONE_RESOLVE, "db", &id, "db.dns.pelagos"]);
    assert!(out.status.success(), "another network resolved db: {}", describe(&out));
    let pids = holder_pids(&topo);
    server.stop();
    let out = run(&["network", "rm", "web", "other"]);
    assert!(out.status.success(), "{}", describe(&out));
    drop(stub);
    assert_all_gone(&topo, &pids);
}

/// Wait until the supervisor has written a state where `field` is at least `n`.
fn wait_restart(topo: &Topology, field: &str, n: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(s) = holder_state(topo)
            && s[field].as_u64().unwrap_or(0) >= n
            && s["pasta"].is_object()
        {
            return s;
        }
        assert!(Instant::now() < deadline, "no {field} after a kill: {:?}", holder_state(topo));
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn killed_pasta_and_holder_are_recovered(env: Env) {
    let topo = Topology::new(&env);
    cli_ok(&topo, &env, &["network", "create", "web"]);
    let server =
        start(&topo, &env, &["run", "--network", "web", "--ip", "10.90.1.20", "--", "python3", "-c", GREETER, "80"]);
    let kill9 = |pid: u32| {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap()
    };
    let listener = in_netns(&topo.upstream, || TcpListener::bind((UPSTREAM_ADDR, 9091)).unwrap());
    let serve = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut c, peer) = listener.accept().unwrap();
            c.write_all(format!("hello {}\n", peer.ip()).as_bytes()).unwrap();
        }
    });
    let state = holder_state(&topo).unwrap();
    kill9(pid_of(&state, "pasta").unwrap());
    let after = wait_restart(&topo, "pasta_restarts", 1);
    assert_ne!(pid_of(&after, "pasta"), pid_of(&state, "pasta"));
    let out = client(&topo, &env, "web", &format!("{UPSTREAM_ADDR}:9091"));
    assert!(out.status.success(), "egress after pasta was killed: {}", describe(&out));
    let out = client(&topo, &env, "web", "10.90.1.20:80");
    assert!(out.status.success(), "the server after pasta was killed: {}", describe(&out));
    kill9(pid_of(&after, "holder").unwrap());
    let after = wait_restart(&topo, "holder_restarts", 1);
    let out = client(&topo, &env, "web", "10.90.1.20:80");
    assert!(out.status.success(), "the server kept its address after the holder was killed: {}", describe(&out));
    let out = client(&topo, &env, "web", &format!("{UPSTREAM_ADDR}:9091"));
    assert!(out.status.success(), "egress after the holder was killed: {}", describe(&out));
    serve.join().unwrap();
    let pids: Vec<u32> = ["supervisor", "holder", "pasta"].iter().filter_map(|w| pid_of(&after, w)).collect();
    server.stop();
    cli_ok(&topo, &env, &["network", "rm", "web"]);
    assert_all_gone(&topo, &pids);
}

/// Kill the supervisor (its children die with it) and wait until all three are gone.
fn kill_holder(topo: &Topology) -> Vec<u32> {
    let old = holder_pids(topo);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old[0] as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while old.iter().any(|p| alive(*p)) {
        assert!(Instant::now() < deadline, "the holder's children outlived the supervisor: {old:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    old
}

fn a_dead_holder_is_rebuilt_by_gc_and_the_next_run_with_its_runs_reattached(env: Env) {
    let topo = Topology::new(&env);
    cli_ok(&topo, &env, &["network", "create", "web"]);
    let server =
        start(&topo, &env, &["run", "--network", "web", "--ip", "10.90.1.30", "--", "python3", "-c", GREETER, "80"]);
    let first = kill_holder(&topo);
    let gc = cli_ok(&topo, &env, &["gc"]);
    assert!(gc.contains("rebuilt: 1 runs and 0 attachments given their network back"), "{gc}");
    let second = holder_pids(&topo);
    assert!(second.iter().all(|p| !first.contains(p)), "{first:?} {second:?}");
    let out = client(&topo, &env, "web", "10.90.1.30:80");
    assert!(out.status.success(), "the server got its address back from gc's holder: {}", describe(&out));
    kill_holder(&topo);
    let out = client(&topo, &env, "web", "10.90.1.30:80");
    assert!(out.status.success(), "the server got its address back from the next run's holder: {}", describe(&out));
    let pids = holder_pids(&topo);
    server.stop();
    cli_ok(&topo, &env, &["network", "rm", "web"]);
    assert_all_gone(&topo, &pids);
}

fn a_run_killed_with_sigkill_stops_counting_and_the_holder_stops_by_itself(env: Env) {
    let topo = Topology::new(&env);
    cli_ok(&topo, &env, &["network", "create", "web"]);
    let mut server = start(&topo, &env, &["run", "--network", "web", "--", "python3", "-c", GREETER, "80"]);
    let pids = holder_pids(&topo);
    // The run's owner dies without tearing anything down: its record stays
    // until gc, but it is dead, so it no longer counts.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| alive(*p)) {
        assert!(Instant::now() < deadline, "the holder outlived its last user: {pids:?} {:?}", holder_state(&topo));
        std::thread::sleep(Duration::from_millis(20));
    }
    cli_ok(&topo, &env, &["gc"]);
    cli_ok(&topo, &env, &["network", "rm", "web"]);
    assert_all_gone(&topo, &pids);
}

/// Prints the address of eth0, then stays until its stdin closes.
const SHOW_AND_STAY: &str = "import socket,fcntl,struct,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
    print(socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, struct.pack('256s', b'eth0'))[20:24]), flush=True); \
    sys.stdin.read()";

/// Prints what each name given resolves to, space-separated.
const RESOLVE_ALL: &str = "import socket,sys; print(' '.join(socket.gethostbyname(n) for n in sys.argv[1:]))";

fn sixteen_concurrent_runs_get_distinct_addresses_and_all_names_resolve(env: Env) {
    let Some((topo, stub, etc)) = stub_scene(&env) else { return };
    let run = |args: &[&str]| common::dns::run(&topo, &env, &etc, args);
    assert!(run(&["network", "create", "web"]).status.success());
    let names: Vec<String> = (0..16).map(|i| format!("c{i}")).collect();
    let mut children: Vec<_> = names
        .iter()
        .map(|n| {
            topo.cli_wrapped(
                &env,
                &etc.wrapper(),
                &["run", "--network", "web", "--name", n, "--", "python3", "-c", SHOW_AND_STAY],
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let addrs: Vec<String> = children
        .iter_mut()
        .map(|c| {
            let mut line = String::new();
            BufReader::new(c.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                let mut err = String::new();
                c.stderr.as_mut().unwrap().read_to_string(&mut err).unwrap();
                panic!("a run printed no address: {err}");
            }
            line.trim().to_owned()
        })
        .collect();
    let mut distinct = addrs.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 16, "{addrs:?}");
    assert!(addrs.iter().all(|a| a.starts_with("10.90.1.")), "{addrs:?}");
    let mut args = vec!["run", "--network", "web", "--", "python3", "-c", RESOLVE_ALL];
    args.extend(names.iter().map(String::as_str));
    let out = run(&args);
    assert!(out.status.success(), "{}", describe(&out));
    let resolved: Vec<String> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(String::from).collect();
    assert_eq!(resolved, addrs, "every name resolves to its run's address");
    let pids = holder_pids(&topo);
    for mut c in children {
        drop(c.stdin.take());
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", describe(&out));
    }
    assert!(run(&["network", "rm", "web"]).status.success());
    drop(stub);
    assert_all_gone(&topo, &pids);
}

fn bad_input_exits_125_and_creates_nothing(env: Env) {
    let topo = Topology::new(&env);
    cli_ok(&topo, &env, &["network", "create", "--subnet", "10.90.7.0/30", "tiny"]);
    let refused = |args: &[&str], why: &str| {
        let out = topo.cli(&env, args).output().unwrap();
        assert_eq!(out.status.code(), Some(125), "{why}: {}", describe(&out));
        assert!(!String::from_utf8_lossy(&out.stderr).trim().is_empty(), "{why}: no message");
    };
    refused(&["network", "create", "../evil"], "unsafe name");
    let long = "n".repeat(65);
    refused(&["network", "create", &long], "too long");
    refused(&["network", "create", "--subnet", "10.90.7.0/24", "overlap"], "overlapping subnet");
    refused(&["network", "create", "--subnet", "10.231.0.0/24", "hostroute"], "a host route's subnet");
    refused(&["run", "--network", "bridge:nosuch", "--", "true"], "unknown network");
    refused(&["run", "--network", "tiny", "--ip", "10.90.9.9", "--", "true"], "address outside the subnet");
    let server = start(&topo, &env, &["run", "--network", "tiny", "--", "python3", "-c", GREETER, "80"]);
    let pids = holder_pids(&topo);
    refused(&["run", "--network", "tiny", "--", "true"], "full subnet");
    refused(&["run", "--network", "tiny", "--ip", "10.90.7.2", "--", "true"], "address in use");
    let records = std::fs::read_dir(topo.run_dir.join("runs")).unwrap().count();
    assert_eq!(records, 1, "only the server's record");
    server.stop();
    cli_ok(&topo, &env, &["network", "rm", "tiny"]);
    let names: Vec<String> = cli_ok(&topo, &env, &["network", "ls", "-q"]).lines().map(String::from).collect();
    assert!(!names.iter().any(|n| n == "overlap" || n == "hostroute"), "{names:?}");
    assert_all_gone(&topo, &pids);
}

fn plan_and_doctor_describe_the_holder(env: Env) {
    let topo = Topology::new(&env);
    cli_ok(&topo, &env, &["network", "create", "web"]);
    let plan = cli_ok(&topo, &env, &["plan", "--network", "web", "--", "true"]);
    assert!(plan.contains("network holder"), "{plan}");
    assert!(plan.contains("mtu 65520"), "{plan}");
    let json: serde_json::Value =
        serde_json::from_str(&cli_ok(&topo, &env, &["plan", "--json", "--network", "web", "--", "true"])).unwrap();
    common::schema::assert_valid("plan.schema.json", &json);
    let ops: Vec<&str> = json["pipeline"].as_array().unwrap().iter().map(|s| s["op"].as_str().unwrap()).collect();
    assert_eq!(
        ops,
        [
            "prepare_dns",
            "write_record",
            "ensure_holder",
            "lease_address",
            "fork_child",
            "attach_in_holder",
            "exec_command"
        ]
    );
    let doctor = cli_ok(&topo, &env, &["doctor"]);
    assert!(doctor.contains("network holder"), "{doctor}");
    assert!(holder_state(&topo).is_none(), "plan and doctor start nothing");
    cli_ok(&topo, &env, &["network", "rm", "web"]);
    assert_all_gone(&topo, &[]);
}

tier_tests!(
    rootless_tier,
    super::RootlessEnv,
    [
        two_runs_talk_and_another_network_cannot_reach_them,
        egress_reaches_the_fake_upstream_through_the_holder,
        published_ports_keep_the_client_address,
        killed_pasta_and_holder_are_recovered,
        a_dead_holder_is_rebuilt_by_gc_and_the_next_run_with_its_runs_reattached,
        a_run_killed_with_sigkill_stops_counting_and_the_holder_stops_by_itself,
        sixteen_concurrent_runs_get_distinct_addresses_and_all_names_resolve,
        bad_input_exits_125_and_creates_nothing,
        plan_and_doctor_describe_the_holder,
        runs_resolve_each_other_by_name_on_their_network_only,
    ]
);

/// The rootless tier with the holder's tools, for `tier_tests!`.
struct RootlessEnv;

impl RootlessEnv {
    fn require(&self) -> Option<Env> {
        rootless()
    }
}

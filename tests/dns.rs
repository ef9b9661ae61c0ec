//! Name resolution end to end, through the CLI, as the unprivileged test
//! user and as root.
//!
//! Every test builds a throwaway host namespace (`common::Topology`) and
//! runs its own DNS servers there (dnsmasq on 127.0.0.53, the usual
//! systemd-resolved stub address, and a second one on 127.0.0.54); the
//! command's /etc is an overlay whose resolv.conf the test writes
//! (`common::dns::Etc`), in the private mount namespace `ip netns exec`
//! gives. The machine's real resolver is never asked, and after every test
//! the host's own /etc/resolv.conf and /etc/hosts, and every file the test
//! made, are byte for byte what they were.

#[macro_use]
mod common;

use common::dns::{
    BIG_COUNT, BIG_NAME, DOMAIN, DnsServer, Etc, Resolv, STUB_ADDR, STUB_ANSWER, addresses, run, run_env,
};
use common::{Env, Tier, Topology, describe};
use std::io::Write;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const STUB_CONF: &str = "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch example.test\n";
const SECOND_ADDR: &str = "127.0.0.54";
const SECOND_ANSWER: &str = "198.51.100.77";

/// Shows the command's resolver lines, then resolves `name`.
fn resolve_cmd(name: &str) -> String {
    format!("grep ^nameserver /etc/resolv.conf; getent ahostsv4 {name}")
}

/// The modes a tier runs with its own network.
fn modes(env: &Env) -> Vec<&'static str> {
    let mut m = vec!["auto", "pasta", "slirp4netns"];
    if env.user.is_none() {
        m.push("bridge");
    }
    m
}

/// Where a test's DNS server runs.
enum At {
    /// The throwaway host namespace.
    Host,
    /// The fake upstream (the host namespace's default gateway).
    Upstream,
}

/// A throwaway topology, the DNS servers a test asks for, an /etc of the
/// test's making, and what must not change: the host's own files and every
/// file the test made. [`Scene::finish`] checks them and that the runs left
/// nothing behind.
struct Scene {
    env: Env,
    host_files: (Vec<u8>, Vec<u8>),
    servers: Vec<DnsServer>,
    etc: Etc,
    before: Vec<(std::path::PathBuf, Vec<u8>)>,
    topo: Topology,
}

impl Scene {
    /// `None` (after a loud skip) when a server is asked for and dnsmasq is missing.
    fn new(env: &Env, resolv: Resolv<'_>, servers: &[(At, &str, &str)]) -> Option<Self> {
        if !servers.is_empty() {
            common::dns::dnsmasq()?;
        }
        let host_files = common::dns::host_files();
        let topo = Topology::new(env);
        let servers = servers
            .iter()
            .map(|(at, addr, answer)| {
                let ns = match at {
                    At::Host => &topo.host,
                    At::Upstream => &topo.upstream,
                };
                DnsServer::start(ns, addr, answer)
            })
            .collect();
        let etc = Etc::new(resolv);
        let before = etc.snapshot();
        Some(Self { env: env.clone(), host_files, servers, etc, before, topo })
    }

    /// `pelagos-net ARGS` with the scene's /etc.
    fn run(&self, args: &[&str]) -> std::process::Output {
        run(&self.topo, &self.env, &self.etc, args)
    }

    /// [`Scene::run`] with `PELAGOS_DNS_CACHE` set to `cache`.
    fn run_cache(&self, cache: &str, args: &[&str]) -> std::process::Output {
        run_env(&self.topo, &self.env, &self.etc, args, &[("PELAGOS_DNS_CACHE", cache)])
    }

    fn finish(self) {
        assert!(common::dns::host_files() == self.host_files, "the host's /etc/resolv.conf or /etc/hosts changed");
        assert_eq!(self.etc.snapshot(), self.before, "a file the test made changed");
        drop(self.servers);
        self.topo.assert_clean();
    }
}

fn ok_stdout(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}", describe(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stub_on_loopback_resolves_in_every_mode(env: Env) {
    let Some(scene) = Scene::new(&env, Resolv::File(STUB_CONF), &[(At::Host, STUB_ADDR, STUB_ANSWER)]) else { return };
    for mode in modes(&env) {
        let out = scene.run(&["run", "--network", mode, "--", "sh", "-c", &resolve_cmd(&format!("www.{DOMAIN}"))]);
        let stdout = ok_stdout(&out);
        assert_eq!(addresses(&stdout), [STUB_ANSWER], "{mode}: {}", describe(&out));
        let ns = stdout.lines().next().unwrap_or_default();
        let expected = match mode {
            // pelagos-net's forwarder inside the namespace.
            "pasta" | "slirp4netns" => "nameserver 169.254.1.1",
            "bridge" => "nameserver 10.90.0.1",
            _ => ns,
        };
        assert_eq!(ns, expected, "{mode}: {}", describe(&out));
        // The search line is kept: a bare name resolves too.
        let out = scene.run(&["run", "--network", mode, "--", "getent", "ahostsv4", "www"]);
        assert_eq!(addresses(&ok_stdout(&out)), [STUB_ANSWER], "{mode}");
    }
    // The modes' own forwarders, on request.
    for (mode, expected) in [("pasta", "nameserver 169.254.1.1"), ("slirp4netns", "nameserver 10.0.2.3")] {
        let cmd = resolve_cmd(&format!("www.{DOMAIN}"));
        let out = scene.run_cache("helper", &["run", "--network", mode, "--", "sh", "-c", &cmd]);
        let stdout = ok_stdout(&out);
        assert_eq!(addresses(&stdout), [STUB_ANSWER], "{mode}, helper: {}", describe(&out));
        assert_eq!(stdout.lines().next(), Some(expected), "{mode}, helper: {}", describe(&out));
    }
    scene.finish();
}

/// The forwarder inside the namespace listens before the command starts:
/// its UDP socket and TCP listener on 169.254.1.1:53 (`0101FEA9:0035` in
/// the namespace's socket tables) are there at the command's first
/// instruction, and the first query is answered.
fn the_forwarder_inside_listens_before_the_command_starts(env: Env) {
    let Some(scene) = Scene::new(&env, Resolv::File(STUB_CONF), &[(At::Host, STUB_ADDR, STUB_ANSWER)]) else { return };
    let cmd = format!(
        "grep -c ' 0101FEA9:0035 ' /proc/net/udp; grep -c ' 0101FEA9:0035 00000000:0000 0A ' /proc/net/tcp; \
         getent ahostsv4 www.{DOMAIN}"
    );
    for mode in ["pasta", "slirp4netns"] {
        let out = scene.run(&["run", "--network", mode, "--", "sh", "-c", &cmd]);
        let stdout = ok_stdout(&out);
        let counts: Vec<&str> = stdout.lines().take(2).collect();
        assert_eq!(counts, ["1", "1"], "{mode}: {}", describe(&out));
        assert_eq!(addresses(&stdout), [STUB_ANSWER], "{mode}: {}", describe(&out));
    }
    scene.finish();
}

fn dns_flag_with_a_second_local_server_is_used_over_udp_and_tcp(env: Env) {
    let servers = [(At::Host, STUB_ADDR, STUB_ANSWER), (At::Host, SECOND_ADDR, SECOND_ANSWER)];
    let Some(scene) = Scene::new(&env, Resolv::File(STUB_CONF), &servers) else { return };
    for mode in modes(&env).into_iter().filter(|m| *m != "auto") {
        let cmd = format!("{}; getent ahostsv4 {BIG_NAME}", resolve_cmd(&format!("www.{DOMAIN}")));
        let out = scene.run(&["run", "--network", mode, "--dns", SECOND_ADDR, "--", "sh", "-c", &cmd]);
        let found = addresses(&ok_stdout(&out));
        assert_eq!(found.first().map(String::as_str), Some(SECOND_ANSWER), "{mode}: {}", describe(&out));
        // The big answer only comes over TCP, through the forwarder.
        assert_eq!(found.len(), 1 + BIG_COUNT, "{mode}: {}", describe(&out));
    }
    scene.finish();
}

fn add_host_and_host_gateway_reach_the_hosts_file(env: Env) {
    // Names the hosts file has for one family only go on to DNS for the other: answer them.
    let Some(scene) = Scene::new(&env, Resolv::File(STUB_CONF), &[(At::Host, STUB_ADDR, STUB_ANSWER)]) else { return };
    let args = ["--add-host", "db;cache:10.1.2.3", "--add-host", "hg:host-gateway", "--add-host", "v6:[fd00::5]"];
    let cmd = ["--", "getent", "hosts", "db", "cache", "hg", "v6", "host.pelagos.internal"];
    let out = scene.run(&[&["run", "--network", "pasta"][..], &args, &cmd].concat());
    let stdout = ok_stdout(&out);
    let found = |name: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().skip(1).any(|n| n == name))
            .and_then(|l| l.split_whitespace().next())
    };
    let expected = [
        ("db", "10.1.2.3"),
        ("cache", "10.1.2.3"),
        ("hg", "127.0.0.1"),
        ("v6", "fd00::5"),
        ("host.pelagos.internal", "127.0.0.1"),
    ];
    for (name, ip) in expected {
        assert_eq!(found(name), Some(ip), "{name}: {}", describe(&out));
    }
    // The host's own entries are still there.
    let out = scene.run(&["run", "--network", "pasta", "--", "getent", "hosts", "localhost"]);
    assert!(ok_stdout(&out).contains("localhost"));
    // Loopback mode: hosts entries apply; DNS options are said to do nothing.
    let loopback = ["run", "--network", "loopback", "--dns", "10.9.9.9", "--add-host", "db:10.1.2.3"];
    let out = scene.run(&[&loopback[..], &["--", "getent", "hosts", "db"]].concat());
    assert!(ok_stdout(&out).contains("10.1.2.3"), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback mode has no network"), "{}", describe(&out));
    scene.finish();
}

/// A TCP server on `addr` inside netns `ns` that greets every client with
/// "hello"; stops when the returned flag is set.
fn greeter(ns: &str, addr: &str) -> (u16, Arc<AtomicBool>) {
    let addr = addr.to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let ns_path = std::path::Path::new("/run/netns").join(ns);
    let flag = Arc::clone(&stop);
    std::thread::spawn(move || {
        let f = std::fs::File::open(&ns_path).unwrap();
        nix::sched::setns(std::os::fd::AsFd::as_fd(&f), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let l = TcpListener::bind((addr.as_str(), 0)).unwrap();
        l.set_nonblocking(true).unwrap();
        tx.send(l.local_addr().unwrap().port()).unwrap();
        while !flag.load(Ordering::SeqCst) {
            match l.accept() {
                Ok((mut s, _)) => {
                    let _ = s.write_all(b"hello");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    (rx.recv().unwrap(), stop)
}

fn host_alias_reaches_a_server_on_the_host(env: Env) {
    let Some(scene) = Scene::new(&env, Resolv::File(STUB_CONF), &[]) else { return };
    let connect =
        "import socket,sys; s=socket.create_connection((sys.argv[1], int(sys.argv[2])), 5); print(s.recv(5).decode())";
    // pasta: the host's loopback, on the ports opted into with --host-port.
    // slirp4netns: the host's own address. bridge: the gateway.
    let mut cases = vec![("pasta", "127.0.0.1"), ("slirp4netns", common::HOST_ADDR)];
    if env.user.is_none() {
        cases.push(("bridge", "0.0.0.0"));
    }
    for (mode, listen) in cases {
        let (port, stop) = greeter(&scene.topo.host, listen);
        let port = port.to_string();
        let mut args = vec!["run", "--network", mode];
        if mode == "pasta" {
            args.extend(["--host-port", &port]);
        }
        for name in ["host.pelagos.internal", "host.containers.internal"] {
            let out = scene.run(&[&args[..], &["--", "python3", "-c", connect, name, &port]].concat());
            assert_eq!(ok_stdout(&out).trim(), "hello", "{mode} {name}: {}", describe(&out));
        }
        stop.store(true, Ordering::SeqCst);
    }
    scene.finish();
}

fn resolver_that_is_the_default_gateway_works(env: Env) {
    let router_answer = "198.51.100.55";
    let conf = format!("nameserver {}\n", common::UPSTREAM_ADDR);
    let server = [(At::Upstream, common::UPSTREAM_ADDR, router_answer)];
    let Some(scene) = Scene::new(&env, Resolv::File(&conf), &server) else { return };
    for mode in modes(&env) {
        let out = scene.run(&["run", "--network", mode, "--", "sh", "-c", &resolve_cmd(&format!("a.{DOMAIN}"))]);
        assert_eq!(addresses(&ok_stdout(&out)), [router_answer], "{mode}: {}", describe(&out));
    }
    scene.finish();
}

fn symlinked_chained_and_dangling_resolv_conf(env: Env) {
    let cmd = resolve_cmd(&format!("www.{DOMAIN}"));
    let Some(scene) = Scene::new(&env, Resolv::Chain(STUB_CONF), &[(At::Host, STUB_ADDR, STUB_ANSWER)]) else { return };
    for mode in ["pasta", "slirp4netns"] {
        let out = scene.run(&["run", "--network", mode, "--", "sh", "-c", &cmd]);
        assert_eq!(addresses(&ok_stdout(&out)), [STUB_ANSWER], "{mode}: {}", describe(&out));
    }
    assert_eq!(std::fs::read_to_string(scene.etc.stub_path()).unwrap(), STUB_CONF);
    scene.finish();

    let Some(scene) = Scene::new(&env, Resolv::Dangling, &[(At::Host, SECOND_ADDR, SECOND_ANSWER)]) else { return };
    let out = scene.run(&["run", "--network", "pasta", "--", "true"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no resolver is configured"), "{}", describe(&out));
    // --dns still reaches the command: mounted on the dangling link itself.
    let out = scene.run(&["run", "--network", "pasta", "--dns", SECOND_ADDR, "--", "sh", "-c", &cmd]);
    assert_eq!(addresses(&ok_stdout(&out)), [SECOND_ANSWER], "{}", describe(&out));
    scene.finish();
}

fn tcp_only_answers_come_over_tcp_or_fail_at_once(env: Env) {
    let Some(scene) = Scene::new(&env, Resolv::File(STUB_CONF), &[(At::Host, STUB_ADDR, STUB_ANSWER)]) else { return };
    // pelagos-net's forwarders (inside the namespace by default, on the
    // bridge's gateway) carry TCP on every pasta build.
    for mode in modes(&env) {
        let out = scene.run(&["run", "--network", mode, "--", "getent", "ahostsv4", BIG_NAME]);
        assert_eq!(addresses(&ok_stdout(&out)).len(), BIG_COUNT, "{mode}: {}", describe(&out));
    }
    // `inside`, the policy's name before it was the default, still means it.
    let out = scene.run_cache("inside", &["run", "--network", "pasta", "--", "getent", "ahostsv4", BIG_NAME]);
    assert_eq!(addresses(&ok_stdout(&out)).len(), BIG_COUNT, "pasta, inside: {}", describe(&out));
    // libslirp's own forwarder carries TCP too.
    let out = scene.run_cache("helper", &["run", "--network", "slirp4netns", "--", "getent", "ahostsv4", BIG_NAME]);
    assert_eq!(addresses(&ok_stdout(&out)).len(), BIG_COUNT, "slirp4netns, helper: {}", describe(&out));
    // pasta's own forwarder (`helper`): a build that maps TCP answers in
    // full; one that does not (Debian 12's) refuses TCP to the forward
    // address at once, never hangs.
    let probe = "import socket\ntry:\n  socket.create_connection(('169.254.1.1', 53), 20)\n  print('connected')\nexcept OSError as e:\n  print(e.strerror)";
    // The lookup is timed inside the namespace: the run around it may take
    // seconds on a slow (emulated) machine.
    let cmd = format!(
        "grep -c 'does not map TCP' /etc/resolv.conf; python3 -c \"{probe}\"; s=$(date +%s%N); \
         n=$(getent ahostsv4 {BIG_NAME} | grep -c STREAM); echo $n; echo $(( ($(date +%s%N) - s) / 1000000 ))"
    );
    let out = scene.run_cache("helper", &["run", "--network", "pasta", "--", "sh", "-c", &cmd]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = stdout.lines().collect();
    if lines.first() == Some(&"1") {
        assert_eq!(lines.get(1), Some(&"Network is unreachable"), "{}", describe(&out));
        // glibc's per-server timeout is 5 s: a lookup that waited on TCP would take that long.
        let ms: u64 = lines.get(3).and_then(|l| l.parse().ok()).unwrap_or(u64::MAX);
        assert!(ms < 4000, "the lookup took {ms} ms: {}", describe(&out));
    } else {
        assert_eq!(lines.get(2), Some(&BIG_COUNT.to_string().as_str()), "{}", describe(&out));
    }
    scene.finish();
}

/// The answer cache: a repeated query is answered by pelagos-net's
/// forwarder without asking the resolver again, by default in every mode
/// (inside pasta's and slirp4netns's namespaces, on a bridge network's
/// gateway); with `PELAGOS_DNS_CACHE=helper` pasta and slirp4netns runs use
/// the mode's own forwarder, which keeps nothing, and with `off` no
/// forwarder keeps anything: every query reaches the resolver.
fn repeated_queries_are_cached_where_our_forwarder_sits_and_not_otherwise(env: Env) {
    if common::dns::dnsmasq().is_none() {
        return;
    }
    let Some(mut scene) = Scene::new(&env, Resolv::File(STUB_CONF), &[]) else { return };
    scene.servers.push(DnsServer::start_counting(&scene.topo.host, STUB_ADDR, STUB_ANSWER));
    let asks = |name: &str| {
        format!(
            "head -n 2 /etc/resolv.conf | tail -n 1; for i in 1 2 3; do getent ahostsv4 {name} >/dev/null || exit 9; done"
        )
    };
    for mode in modes(&env).into_iter().filter(|m| *m != "auto") {
        let cached = format!("cached-{mode}.{DOMAIN}");
        let out = scene.run(&["run", "--network", mode, "--", "sh", "-c", &asks(&cached)]);
        assert!(ok_stdout(&out).contains("caches answers"), "{mode}: {}", describe(&out));
        assert_eq!(scene.servers[0].queries(&cached), 1, "{mode}: {}", describe(&out));

        // Not kept: pasta's and libslirp's own forwarders, our forwarders with `off`.
        let own = match mode {
            "pasta" => "which pasta forwards",
            "slirp4netns" => "slirp4netns's built-in forwarder",
            _ => "a forwarder of pelagos-net on the network's gateway",
        };
        let policies: &[&str] = if mode == "bridge" { &["off"] } else { &["helper", "off"] };
        for cache in policies {
            let fresh = format!("uncached-{mode}-{cache}.{DOMAIN}");
            let out = scene.run_cache(cache, &["run", "--network", mode, "--", "sh", "-c", &asks(&fresh)]);
            let comment = ok_stdout(&out);
            assert!(!comment.contains("caches answers") && comment.contains(own), "{mode} {cache}: {}", describe(&out));
            assert_eq!(scene.servers[0].queries(&fresh), 3, "{mode} {cache}: {}", describe(&out));
        }
    }
    scene.finish();
}

fn no_resolv_conf_the_run_works_and_says_so(env: Env) {
    let Some(scene) = Scene::new(&env, Resolv::Missing, &[]) else { return };
    for mode in ["pasta", "slirp4netns"] {
        let out = scene.run(&["run", "--network", mode, "--", "sh", "-c", "test ! -e /etc/resolv.conf"]);
        assert!(out.status.success(), "{mode}: {}", describe(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains("no resolver is configured"), "{}", describe(&out));
    }
    let out = scene.run(&["run", "--network", "pasta", "--dns", "10.9.9.9", "--", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/etc/resolv.conf does not exist"), "{}", describe(&out));
    scene.finish();
}

fn bad_dns_input_exits_125_naming_the_value_and_creates_nothing(env: Env) {
    let topo = Topology::new(&env);
    let cases: [(&[&str], &str); 5] = [
        (&["--dns", "not-an-ip"], "not-an-ip"),
        (&["--add-host", "nocolon"], "nocolon"),
        (&["--add-host", "db:10.0.0.300"], "10.0.0.300"),
        (&["--dns-option", "ndots:1\nnameserver 6.6.6.6"], "ndots:1\\nnameserver 6.6.6.6"),
        (&["--network", "host", "--dns", "10.9.9.9"], "--network host"),
    ];
    for (bad, named) in cases {
        let mode: &[&str] = if bad.contains(&"--network") { &[] } else { &["--network", "pasta"] };
        let args = [&["run"][..], mode, bad, &["--", "true"]].concat();
        let out = topo.cli(&env, &args).output().unwrap();
        assert_eq!(out.status.code(), Some(125), "{bad:?}: {}", describe(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains(named), "{bad:?}: {}", describe(&out));
    }
    topo.assert_clean();
    let left: Vec<_> =
        std::fs::read_dir(&topo.run_dir).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty() || left == ["probe-cache"], "the run dir got {left:?}");
}

/// The same scenarios in both tiers.
macro_rules! both_tiers {
    ([$($name:ident),* $(,)?]) => {
        tier_tests!(rootless, super::Tier::Rootless, [$($name),*]);
        tier_tests!(root, super::Tier::Root, [$($name),*]);
    };
}

both_tiers!([
    stub_on_loopback_resolves_in_every_mode,
    the_forwarder_inside_listens_before_the_command_starts,
    dns_flag_with_a_second_local_server_is_used_over_udp_and_tcp,
    add_host_and_host_gateway_reach_the_hosts_file,
    host_alias_reaches_a_server_on_the_host,
    resolver_that_is_the_default_gateway_works,
    symlinked_chained_and_dangling_resolv_conf,
    tcp_only_answers_come_over_tcp_or_fail_at_once,
    repeated_queries_are_cached_where_our_forwarder_sits_and_not_otherwise,
    no_resolv_conf_the_run_works_and_says_so,
    bad_dns_input_exits_125_naming_the_value_and_creates_nothing,
]);

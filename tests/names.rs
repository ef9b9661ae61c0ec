//! Run names on shared networks, end to end through the CLI (root tier:
//! root bridge networks).
//!
//! Each test builds a throwaway host namespace (`common::Topology`) with a
//! stub resolver (dnsmasq on 127.0.0.53, the systemd-resolved address)
//! named by the command's resolv.conf (`common::dns::Etc`); runs on bridge
//! networks inside it ask the forwarder on their network's gateway, which
//! answers the network's names and forwards the rest. The machine's real
//! resolver is never asked.

#[macro_use]
mod common;

use common::dns::{DOMAIN, DnsServer, Etc, NONE_RESOLVE, Resolv, STUB_ADDR, STUB_ANSWER};
use common::{Env, Topology, describe};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

/// No search domain: a bare name must not reach the stub (it answers all of `example.test`).
const STUB_CONF: &str = "nameserver 127.0.0.53\n";
/// The port the named server listens on inside its run.
const PORT: u16 = 7000;

/// A server that answers each connection with what `web` resolves to from
/// inside its own run (or the error), then closes.
const NAMED_SERVER: &str = r#"import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen(8); print('ready', flush=True)
while True:
    c,_=s.accept()
    try: w=socket.gethostbyname('web')
    except Exception as e: w='error:'+type(e).__name__
    c.sendall((w+'\n').encode()); c.close()
"#;

/// Prints, space-separated: what `db`, argv[1] (db's id) and
/// `db.dns.pelagos` resolve to, what the server at db:PORT said `web` is,
/// this run's own address on that connection, what `web` (its own name)
/// resolves to, and what the stub's test domain resolves to.
const CLIENT: &str = r#"import socket,sys
r=socket.gethostbyname
a, i, d = r('db'), r(sys.argv[1]), r('db.dns.pelagos')
c=socket.create_connection(('db', int(sys.argv[2])), timeout=10)
seen=c.makefile().readline().strip(); me=c.getsockname()[0]
print(a, i, d, seen, me, r('web'), r(sys.argv[3]))
"#;

/// A throwaway host namespace with the stub resolver, an /etc naming it.
struct Scene {
    env: Env,
    _stub: DnsServer,
    etc: Etc,
    topo: Topology,
}

impl Scene {
    fn new(env: &Env, conf: &str) -> Option<Self> {
        common::dns::dnsmasq()?;
        let topo = Topology::new(env);
        let stub = DnsServer::start(&topo.host, STUB_ADDR, STUB_ANSWER);
        Some(Self { env: env.clone(), _stub: stub, etc: Etc::new(Resolv::File(conf)), topo })
    }

    /// `pelagos-net ARGS` to completion.
    fn run(&self, args: &[&str]) -> std::process::Output {
        common::dns::run(&self.topo, &self.env, &self.etc, args)
    }

    /// `pelagos-net ARGS` in the background, once its command printed `ready`.
    fn start(&self, args: &[&str]) -> Child {
        let mut child = self
            .topo
            .cli_wrapped(&self.env, &self.etc.wrapper(), args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pelagos-net");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        if line != "ready\n" {
            let _ = child.kill();
            panic!("the run did not start: {line:?} {}", describe(&child.wait_with_output().unwrap()));
        }
        child
    }

    /// The live runs, as `ps --json` shows them.
    fn ps(&self) -> Vec<serde_json::Value> {
        let out = self.topo.cli(&self.env, &["ps", "--json"]).output().unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The id and address of the live run named `name`.
    fn named(&self, name: &str) -> (String, String) {
        let runs = self.ps();
        let run = runs.iter().find(|r| r["name"] == name).unwrap_or_else(|| panic!("no run {name}: {runs:?}"));
        (run["id"].as_str().unwrap().to_owned(), run["address"].as_str().unwrap().to_owned())
    }

    /// `pelagos-net network ARGS`, which must succeed.
    fn network(&self, args: &[&str]) {
        let out = self.topo.cli(&self.env, &[&["network"][..], args].concat()).output().unwrap();
        assert!(out.status.success(), "{}", describe(&out));
    }

    fn finish(self) {
        drop(self._stub);
        self.topo.assert_clean();
    }
}

/// Stop a background run (SIGTERM, forwarded to its command) and wait.
fn stop(child: Child) -> std::process::Output {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let _watchdog = common::running::Watchdog::arm(&child, Duration::from_secs(60));
    child.wait_with_output().unwrap()
}

fn server_args(network: &str) -> Vec<String> {
    let port = PORT.to_string();
    ["run", "--network", network, "--name", "db", "--", "python3", "-c", NAMED_SERVER, &port].map(String::from).to_vec()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn two_runs_on_one_bridge_network_resolve_each_other_by_name_and_id_and_connect(env: Env) {
    let Some(scene) = Scene::new(&env, STUB_CONF) else { return };
    let db = scene.start(&strs(&server_args("bridge")));
    let (db_id, db_addr) = scene.named("db");
    let port = PORT.to_string();
    let upstream_name = format!("www.{DOMAIN}");
    let out = scene.run(&[
        "run",
        "--network",
        "bridge",
        "--name",
        "web",
        "--",
        "python3",
        "-c",
        CLIENT,
        &db_id,
        &port,
        &upstream_name,
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let f: Vec<&str> = stdout.split_whitespace().collect();
    eprintln!("client: {stdout}");
    assert_eq!(f.len(), 7, "{}", describe(&out));
    // db by name, by id, under the names domain: its address.
    assert_eq!(f[..3], [db_addr.as_str(); 3], "{}", describe(&out));
    // db resolved `web` to the address web connected from; web's own name
    // (its /etc/hosts) is that address too.
    assert_eq!(f[3], f[4], "db saw web as {}, web connected from {}", f[3], f[4]);
    assert_eq!(f[5], f[4], "web's own name");
    // An upstream name goes to the stub on the host's loopback.
    assert_eq!(f[6], STUB_ANSWER);
    let out = stop(db);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("error"), "{}", describe(&out));
    scene.finish();
}

fn a_run_on_another_network_cannot_resolve_them(env: Env) {
    let Some(scene) = Scene::new(&env, STUB_CONF) else { return };
    scene.network(&["create", "--subnet", "10.91.0.0/24", "other"]);
    let db = scene.start(&strs(&server_args("bridge")));
    let (db_id, _) = scene.named("db");
    let names = ["db", "db.dns.pelagos", db_id.as_str(), &format!("{db_id}.dns.pelagos")];
    let args = [&["run", "--network", "other", "--", "python3", "-c", NONE_RESOLVE][..], &names].concat();
    let out = scene.run(&args);
    assert!(out.status.success(), "another network resolved db: {}", describe(&out));
    // Asked on the default network's gateway directly, the forwarder
    // answers its names only to its own network's addresses.
    let direct = r#"import socket
q=bytes([0x12,0x34,1,0,0,1,0,0,0,0,0,0,2])+b'db'+bytes([0,0,1,0,1])
s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5); s.sendto(q, ('10.90.0.1', 53))
try: r=s.recv(512); print('answers', r[6]*256+r[7])
except socket.timeout: print('answers 0 (unreachable)')
"#;
    let out = scene.run(&["run", "--network", "other", "--", "python3", "-c", direct]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("answers 0"), "{}", describe(&out));
    stop(db);
    scene.network(&["rm", "other"]);
    scene.finish();
}

fn a_name_disappears_when_its_run_ends(env: Env) {
    let Some(scene) = Scene::new(&env, STUB_CONF) else { return };
    let db = scene.start(&strs(&server_args("bridge")));
    let (db_id, db_addr) = scene.named("db");
    let resolve = "import socket,sys; print(socket.gethostbyname(sys.argv[1]))";
    let out = scene.run(&["run", "--network", "bridge", "--", "python3", "-c", resolve, "db"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), db_addr, "{}", describe(&out));
    stop(db);
    let out =
        scene.run(&["run", "--network", "bridge", "--", "python3", "-c", NONE_RESOLVE, "db", "db.dns.pelagos", &db_id]);
    assert!(out.status.success(), "a name outlived its run: {}", describe(&out));
    scene.finish();
}

/// Inside a run on the default network: for each datagram holding a name,
/// asks the gateway forwarder for it (type A) and replies with two bytes,
/// the answer's rcode and answer count.
const PROBE: &str = r#"import socket,sys
s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', int(sys.argv[1]))); print('ready', flush=True)
g=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); g.settimeout(5)
while True:
    name, peer = s.recvfrom(512)
    q=bytes([0x42,0x42, 1,0, 0,1, 0,0, 0,0, 0,0])
    for l in name.decode().split('.'): q+=bytes([len(l)])+l.encode()
    g.sendto(q+bytes([0, 0,1, 0,1]), ('10.90.0.1', 53))
    try: r=g.recv(512); s.sendto(bytes([r[3]&15, r[7]]), peer)
    except socket.timeout: s.sendto(bytes([255, 255]), peer)
"#;

/// What the gateway forwarder answers `name` through the probe at `probe`
/// (a run's address): rcode and answer count. Asked from a run, not from
/// the host: no new setup (whose cheap gc would remove a dead record) runs.
fn ask_through(topo: &Topology, probe: &str, name: &str) -> (u8, u8) {
    let (probe, name) = (format!("{probe}:9053"), name.to_owned());
    topo.in_host(move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.send_to(name.as_bytes(), &probe).unwrap();
        let mut buf = [0u8; 2];
        s.recv(&mut buf).unwrap();
        (buf[0], buf[1])
    })
}

fn a_run_killed_without_cleaning_up_stops_resolving_before_gc(env: Env) {
    let Some(scene) = Scene::new(&env, STUB_CONF) else { return };
    let probe = scene.start(&["run", "--network", "bridge", "--name", "probe", "--", "python3", "-c", PROBE, "9053"]);
    let (_, probe_addr) = scene.named("probe");
    let cache =
        scene.start(&["run", "--network", "bridge", "--name", "cache", "--", "sh", "-c", "echo ready; sleep 600"]);
    assert_eq!(ask_through(&scene.topo, &probe_addr, "cache"), (0, 1));
    let pid = nix::unistd::Pid::from_raw(cache.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = cache.wait_with_output();
    // Its record is still there (gc has not run), but its owner is dead.
    let runs = std::fs::read_dir(scene.topo.run_dir.join("runs")).unwrap().count();
    assert_eq!(runs, 2, "the killed run's record should wait for gc");
    assert_eq!(ask_through(&scene.topo, &probe_addr, "cache.dns.pelagos"), (3, 0), "NXDOMAIN expected");
    assert_eq!(ask_through(&scene.topo, &probe_addr, "cache").1, 0, "a dead run's name resolved");
    assert_eq!(ask_through(&scene.topo, &probe_addr, "probe"), (0, 1));
    stop(probe);
    let out = scene.topo.cli(&env, &["gc"]).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    scene.finish();
}

fn a_name_taken_on_the_network_is_refused_with_125_and_nothing_is_created(env: Env) {
    let Some(scene) = Scene::new(&env, STUB_CONF) else { return };
    scene.network(&["create", "--subnet", "10.91.0.0/24", "other"]);
    let db = scene.start(&strs(&server_args("bridge")));
    let (db_id, _) = scene.named("db");
    let out = scene.run(&["run", "--network", "bridge", "--name", "DB", "--", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--name DB") && stderr.contains(&db_id), "{}", describe(&out));
    assert_eq!(scene.ps().len(), 1, "a refused run left a record");
    // The same name on another network is another name.
    let out = scene.run(&["run", "--network", "other", "--name", "db", "--", "true"]);
    assert!(out.status.success(), "{}", describe(&out));
    // Bad names: exit 125 naming the value.
    for bad in ["a.b", "-x", "1234", &"n".repeat(64)] {
        let out = scene.run(&["run", "--network", "bridge", "--name", bad, "--", "true"]);
        assert_eq!(out.status.code(), Some(125), "{bad}: {}", describe(&out));
        assert!(String::from_utf8_lossy(&out.stderr).contains(bad), "{bad}: {}", describe(&out));
    }
    stop(db);
    scene.network(&["rm", "other"]);
    scene.finish();
}

/// A UDP socket on `addr`:53 in `ns` that reads every query and never
/// answers; it stops when the returned guard is dropped.
struct Silent(std::sync::Arc<std::sync::atomic::AtomicBool>, Option<std::thread::JoinHandle<()>>);

impl Silent {
    fn start(ns: &str, addr: &str) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (path, addr, flag) = (std::path::Path::new("/run/netns").join(ns), format!("{addr}:53"), stop.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            use std::os::fd::AsFd;
            let ns = std::fs::File::open(path).unwrap();
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let sock = std::net::UdpSocket::bind(&addr).unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            tx.send(()).unwrap();
            let mut buf = [0u8; 512];
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = sock.recv_from(&mut buf);
            }
        });
        rx.recv().unwrap();
        Self(stop, Some(thread))
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.1.take() {
            let _ = t.join();
        }
    }
}

/// Sends 2000 upstream queries at once to the resolver, then asks for
/// `db`; prints `local <address> <seconds>` and `servfail <n>` (queries
/// refused at once beyond the forwarder's bound on queries in flight).
const BURST: &str = r#"import socket,time,select
def q(i, name):
    b=bytes([i>>8, i&255, 1,0, 0,1, 0,0, 0,0, 0,0])
    for l in name.split('.'): b+=bytes([len(l)])+l.encode()
    return b+bytes([0, 0,1, 0,1])
s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1<<20)
gw=('10.90.0.1', 53); fails=0; local=None
def take(m):
    global fails, local
    if m[0]==0xff and m[1]==0xfe: local=(socket.inet_ntoa(m[-4:]), time.monotonic()-t)
    elif m[3]&15==2: fails+=1
def drain(wait):
    while select.select([s],[],[],wait)[0]:
        take(s.recv(512)); wait=0
t=time.monotonic()
for w in range(40):
    for i in range(50): s.sendto(q(w*50+i, 'n%d.slow.test' % (w*50+i)), gw)
    drain(0.005)
t=time.monotonic(); s.sendto(q(0xfffe, 'db'), gw)
while local is None and time.monotonic()-t < 10:
    if not select.select([s],[],[],10)[0]: break
    take(s.recv(512))
print('local', local[0], '%.3f' % local[1]); print('servfail', fails)
"#;

fn a_burst_of_queries_to_a_silent_upstream_does_not_block_local_names(env: Env) {
    let Some(scene) = Scene::new(&env, "nameserver 127.0.0.56\n") else { return };
    let _silent = Silent::start(&scene.topo.host, "127.0.0.56");
    let db = scene.start(&strs(&server_args("bridge")));
    let (_, db_addr) = scene.named("db");
    let out = scene.run(&["run", "--network", "bridge", "--", "python3", "-c", BURST]);
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("burst: {stdout}");
    let local: Vec<&str> = stdout.lines().find(|l| l.starts_with("local")).unwrap().split_whitespace().collect();
    assert_eq!(local[1], db_addr, "{stdout}");
    // Answered while every upstream query still waits for its 2 s attempt.
    let secs: f64 = local[2].parse().unwrap();
    assert!(secs < 2.0, "the local name waited for the silent upstream: {secs} s");
    // Beyond the bound (1024 in flight) queries are refused at once, not queued.
    let fails: usize = stdout.lines().find_map(|l| l.strip_prefix("servfail ")).unwrap().parse().unwrap();
    assert!(fails >= 2000 - 1024, "only {fails} refused: {stdout}");
    stop(db);
    scene.finish();
}

fn an_attachment_with_a_name_resolves_until_detached(env: Env) {
    let Some(scene) = Scene::new(&env, STUB_CONF) else { return };
    let mut ns = common::namespace::Namespace::new(&scene.topo, &env);
    let out = scene
        .topo
        .cli(&env, &["attach", "--netns", &ns.path, "--network", "bridge", "--name", "cache", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = doc["id"].as_str().unwrap().to_owned();
    let (_, addr) = scene.named("cache");
    let resolve = "import socket,sys; print(socket.gethostbyname(sys.argv[1]))";
    let out = scene.run(&["run", "--network", "bridge", "--", "python3", "-c", resolve, "cache"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), addr, "{}", describe(&out));
    let out = scene.topo.cli(&env, &["detach", &id]).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let out = scene.run(&["run", "--network", "bridge", "--", "python3", "-c", NONE_RESOLVE, "cache", &id]);
    assert!(out.status.success(), "a name outlived its attachment: {}", describe(&out));
    ns.end();
    scene.finish();
}

fn a_dual_stack_network_answers_both_families(env: Env) {
    let Some(scene) = Scene::new(&env, STUB_CONF) else { return };
    scene.network(&["create", "--subnet", "10.92.0.0/24", "--ipv6", "dual"]);
    let db = scene.start(&strs(&server_args("dual")));
    let (_, addr) = scene.named("db");
    let resolve = "import socket; print(sorted({a[4][0] for a in socket.getaddrinfo('db', 80)}))";
    let out = scene.run(&["run", "--network", "dual", "--", "python3", "-c", resolve]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let offset = addr.rsplit('.').next().unwrap();
    assert!(stdout.contains(&format!("'{addr}'")), "{}", describe(&out));
    assert!(stdout.contains(&format!("::{offset}'")), "no IPv6 address at the IPv4 offset: {}", describe(&out));
    stop(db);
    scene.network(&["rm", "dual"]);
    scene.finish();
}

fn plan_names_the_resolver_that_serves_the_networks_names(env: Env) {
    let Some(scene) = Scene::new(&env, STUB_CONF) else { return };
    let out = scene.run(&["plan", "--network", "bridge", "--name", "db", "--", "true"]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("answers the network's run names and ids"), "{text}");
    assert!(text.contains("no live run on network pelagos0 goes by the name db"), "{text}");
    assert!(text.contains("search dns.pelagos"), "{text}");
    scene.finish();
}

tier_tests!(
    root,
    super::common::Tier::Root,
    [
        two_runs_on_one_bridge_network_resolve_each_other_by_name_and_id_and_connect,
        a_run_on_another_network_cannot_resolve_them,
        a_name_disappears_when_its_run_ends,
        a_run_killed_without_cleaning_up_stops_resolving_before_gc,
        a_name_taken_on_the_network_is_refused_with_125_and_nothing_is_created,
        a_burst_of_queries_to_a_silent_upstream_does_not_block_local_names,
        an_attachment_with_a_name_resolves_until_detached,
        a_dual_stack_network_answers_both_families,
        plan_names_the_resolver_that_serves_the_networks_names,
    ]
);

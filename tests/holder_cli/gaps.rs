//! Rootless shared networks after the holder was rebuilt, and the host's
//! services from a holder network (rootless tier).

use super::*;
use std::process::{Child, ChildStdin, ChildStdout};

/// Prints `ready`, then for each name read on stdin the address it
/// resolves to (or `error <errno>`), one line each.
const RESOLVER: &str = r#"import socket,sys
print('ready', flush=True)
for line in sys.stdin:
    try: print(socket.gethostbyname(line.strip()), flush=True)
    except socket.gaierror as e: print('error', e.errno, flush=True)
"#;

/// A run that resolves names on demand, through its own resolv.conf.
struct Asker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Asker {
    fn start(mut cmd: std::process::Command) -> Self {
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the asking run did not start");
        Self { child, stdin, stdout }
    }

    fn resolve(&mut self, name: &str) -> String {
        writeln!(self.stdin, "{name}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_owned()
    }

    fn stop(self) {
        let Self { mut child, stdin, stdout } = self;
        drop(stdin);
        drop(stdout);
        let status = child.wait().unwrap();
        assert!(status.success(), "the asking run: {status}");
    }
}

/// A run that prints its address and stays until its stdin closes.
fn stay(topo: &Topology, env: &Env, etc: &common::dns::Etc, name: &str) -> (Child, String) {
    let mut child = topo
        .cli_wrapped(
            env,
            &etc.wrapper(),
            &["run", "--network", "web", "--name", name, "--", "python3", "-c", SHOW_AND_STAY],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    (child, line.trim().to_owned())
}

fn leave(mut child: Child) {
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}

fn a_run_that_survived_a_rebuilt_holder_resolves_names(env: Env) {
    use common::dns::{DOMAIN, STUB_ANSWER};
    let Some((topo, stub, etc)) = stub_scene(&env) else { return };
    let run = |args: &[&str]| common::dns::run(&topo, &env, &etc, args);
    assert!(run(&["network", "create", "web"]).status.success());
    let mut asker = Asker::start(topo.cli_wrapped(
        &env,
        &etc.wrapper(),
        &["run", "--network", "web", "--name", "asker", "--", "python3", "-c", RESOLVER],
    ));
    assert_eq!(asker.resolve(DOMAIN), STUB_ANSWER, "before the holder died");
    let first = kill_holder(&topo);
    // The next run rebuilds the holder and gives the asker its network back.
    let (app, app_addr) = stay(&topo, &env, &etc, "app");
    assert!(holder_pids(&topo).iter().all(|p| !first.contains(p)), "the holder was not rebuilt");
    assert_eq!(asker.resolve("app"), app_addr, "the surviving run resolves the new run's name");
    leave(app);
    // No other run serves names now: the holder's name server does.
    assert_eq!(asker.resolve(DOMAIN), STUB_ANSWER, "an upstream name once the new run left");
    assert!(asker.resolve("app").starts_with("error"), "a run that left stops resolving");
    let (late, late_addr) = stay(&topo, &env, &etc, "late");
    assert_eq!(asker.resolve("late"), late_addr, "a run started after the rebuild");
    leave(late);
    let pids = holder_pids(&topo);
    asker.stop();
    assert!(run(&["network", "rm", "web"]).status.success());
    drop(stub);
    assert_all_gone(&topo, &pids);
}

/// For each `host:port` argument, what a TCP connection there reads, or `refused`.
pub(super) const TRY_CONNECT: &str = r#"import socket,sys
out=[]
for target in sys.argv[1:]:
    h,p=target.rsplit(':',1)
    try:
        c=socket.create_connection((h,int(p)),timeout=3); out.append(c.recv(100).decode().strip() or 'empty')
    except OSError: out.append('refused')
print(' '.join(out))
"#;

/// A TCP service on the throwaway host's 127.0.0.1 that greets with its name.
fn host_loopback_service(topo: &Topology, base: u16, name: &'static str) -> u16 {
    let (listener, port) = topo.in_host(move || {
        (0..50)
            .map(|_| port(base))
            .find_map(|p| TcpListener::bind(("127.0.0.1", p)).ok().map(|l| (l, p)))
            .expect("a free port on the host's loopback")
    });
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            let _ = c.write_all(format!("{name}\n").as_bytes());
        }
    });
    port
}

fn host_port_reaches_the_granted_host_loopback_service_only(env: Env) {
    let topo = Topology::new(&env);
    cli_ok(&topo, &env, &["network", "create", "web"]);
    let granted = host_loopback_service(&topo, 18800, "granted");
    let other = host_loopback_service(&topo, 18900, "other");
    let targets = [
        format!("host.pelagos.internal:{granted}"),
        format!("127.0.0.1:{granted}"),
        format!("127.0.0.1:{other}"),
        format!("host.pelagos.internal:{other}"),
        format!("10.90.1.1:{other}"),
        format!("{HOST_ADDR}:{other}"),
    ];
    let granted_arg = granted.to_string();
    let mut args = vec!["run", "--network", "web", "--host-port", &granted_arg, "--", "python3", "-c"];
    args.push(TRY_CONNECT);
    args.extend(targets.iter().map(String::as_str));
    let out = topo.cli(&env, &args).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let words: Vec<String> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(String::from).collect();
    assert_eq!(
        words,
        ["granted", "granted", "refused", "refused", "refused", "refused"],
        "{targets:?}: {}",
        describe(&out)
    );
    // Another run on the network, without the grant, does not get the port.
    let out =
        topo.cli(&env, &["run", "--network", "web", "--", "python3", "-c", TRY_CONNECT, &targets[1]]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "refused", "{}", describe(&out));
    cli_ok(&topo, &env, &["network", "rm", "web"]);
    assert_all_gone(&topo, &[]);
}

/// For each `host:port` argument, what a UDP datagram there gets back, or `none`.
const TRY_UDP: &str = r#"import socket,sys
out=[]
for target in sys.argv[1:]:
    h,p=target.rsplit(':',1)
    s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(2)
    try:
        s.sendto(b'ping',(h,int(p))); out.append(s.recv(100).decode().strip())
    except OSError: out.append('none')
print(' '.join(out))
"#;

/// A UDP service on the throwaway host's 127.0.0.1 that answers with its name.
fn host_loopback_udp_service(topo: &Topology, base: u16, name: &'static str) -> u16 {
    let (socket, port) = topo.in_host(move || {
        (0..50)
            .map(|_| port(base))
            .find_map(|p| UdpSocket::bind(("127.0.0.1", p)).ok().map(|s| (s, p)))
            .expect("a free UDP port on the host's loopback")
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((_, peer)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(name.as_bytes(), peer);
        }
    });
    port
}

fn host_port_relays_udp_to_the_granted_host_loopback_port_only(env: Env) {
    let topo = Topology::new(&env);
    cli_ok(&topo, &env, &["network", "create", "web"]);
    let granted = host_loopback_udp_service(&topo, 19000, "granted");
    let other = host_loopback_udp_service(&topo, 19100, "other");
    let targets =
        [format!("127.0.0.1:{granted}"), format!("host.pelagos.internal:{granted}"), format!("127.0.0.1:{other}")];
    let granted_arg = granted.to_string();
    let mut args = vec!["run", "--network", "web", "--host-port", &granted_arg, "--", "python3", "-c", TRY_UDP];
    args.extend(targets.iter().map(String::as_str));
    let out = topo.cli(&env, &args).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let words: Vec<String> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(String::from).collect();
    assert_eq!(words, ["granted", "granted", "none"], "{targets:?}: {}", describe(&out));
    cli_ok(&topo, &env, &["network", "rm", "web"]);
    assert_all_gone(&topo, &[]);
}

/// A shell command as the test user in the throwaway host namespace.
pub(super) fn as_user(topo: &Topology, env: &Env, script: &str) -> std::process::Command {
    let user = env.user.as_ref().expect("the rootless tier has a user");
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", &topo.host, "setpriv"])
        .arg(format!("--reuid={}", user.uid))
        .arg(format!("--regid={}", user.gid))
        .args(["--clear-groups", "--", "sh", "-c", script]);
    cmd
}

/// A process in a new network namespace made by `prefix` (a command that
/// execs the rest), printing its pid; killed on drop.
pub(super) struct Netns {
    child: Child,
    pub(super) pid: u32,
}

impl Netns {
    pub(super) fn new(topo: &Topology, env: &Env, prefix: &str) -> Self {
        let mut child = as_user(topo, env, &format!("exec {prefix} sh -c 'echo $$; exec sleep 120'"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        let pid = line.trim().parse().unwrap_or_else(|_| panic!("no pid from the namespace's maker: {line:?}"));
        Self { child, pid }
    }

    pub(super) fn path(&self) -> String {
        format!("/proc/{}/ns/net", self.pid)
    }

    /// `script` run by python3 inside the namespace (its user namespace first).
    pub(super) fn python(&self, topo: &Topology, env: &Env, script: &str, args: &[&str]) -> Output {
        self.python_cmd(topo, env, script, args).output().unwrap()
    }

    /// The command [`Netns::python`] runs, to start in the background.
    pub(super) fn python_cmd(&self, topo: &Topology, env: &Env, script: &str, args: &[&str]) -> std::process::Command {
        let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
        let cmd = format!(
            "exec nsenter --user=/proc/{pid}/ns/user --net=/proc/{pid}/ns/net --preserve-credentials python3 -c \"$0\" {}",
            quoted.join(" "),
            pid = self.pid
        );
        let mut cmd = as_user(topo, env, &cmd);
        cmd.arg(script);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid as i32), nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Asks the network's name server (argv[1]) for argv[2]'s A record and
/// prints the address (`none` without an answer). Only known names and
/// names under the names domain are asked: nothing is forwarded upstream.
pub(super) const ASK_GATEWAY: &str = r#"import socket,struct,sys
q=struct.pack('>HHHHHH',0x1234,0x0100,1,0,0,0)+b''.join(bytes([len(p)])+p.encode() for p in sys.argv[2].split('.'))+b'\0'+struct.pack('>HH',1,1)
s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(3); s.sendto(q,(sys.argv[1],53)); r=s.recv(512)
print(socket.inet_ntoa(r[-4:]) if struct.unpack('>H',r[6:8])[0] else 'none')
"#;

/// Prints the names of the namespace's interfaces.
pub(super) const LINKS: &str = "import socket; print(' '.join(sorted(n for _, n in socket.if_nameindex())))";

/// Network `web` with a run `db` (greeting on port 80) that keeps the
/// holder up, and a network namespace the user made inside the holder's
/// user namespace; `None` (skipped) without nsenter.
pub(super) fn holder_namespace_scene(env: &Env) -> Option<(Topology, Running, Vec<u32>, Netns)> {
    if common::which("nsenter").is_none() {
        common::skip("rootless", "nsenter (util-linux) is needed");
        return None;
    }
    let topo = Topology::new(env);
    cli_ok(&topo, env, &["network", "create", "web"]);
    let server = start(&topo, env, &["run", "--network", "web", "--name", "db", "--", "python3", "-c", GREETER, "80"]);
    let pids = holder_pids(&topo);
    let prefix = format!("nsenter --user=/proc/{}/ns/user --preserve-credentials unshare --net", pids[1]);
    let ns = Netns::new(&topo, env, &prefix);
    Some((topo, server, pids, ns))
}

/// `attach` the namespace `ns` to `web` as `side` (with `extra` options):
/// the attachment's id and address.
pub(super) fn attach_side(topo: &Topology, env: &Env, ns: &Netns, extra: &[&str]) -> (String, String) {
    let path = ns.path();
    let mut args = vec!["attach", "--netns", &path, "--network", "web", "--name", "side", "--json"];
    args.extend_from_slice(extra);
    let out = topo.cli(env, &args).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = report["id"].as_str().unwrap().to_owned();
    let side = report["addresses"][0].as_str().unwrap().split('/').next().unwrap().to_owned();
    assert!(side.starts_with("10.90.1."), "{report}");
    (id, side)
}

fn attach_joins_a_namespace_of_the_holder_by_name_and_detach_leaves(env: Env) {
    let Some((topo, server, pids, ns)) = holder_namespace_scene(&env) else { return };
    let (id, side) = attach_side(&topo, &env, &ns, &[]);
    let out = ns.python(&topo, &env, ASK_GATEWAY, &["10.90.1.1", "db"]);
    let db = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(db.starts_with("10.90.1.") && db != side, "the attached namespace resolves db: {}", describe(&out));
    let out = ns.python(&topo, &env, TRY_CONNECT, &[&format!("{db}:80")]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("hello {side}"), "{}", describe(&out));
    let ask = |name: &str| {
        let out = topo
            .cli(&env, &["run", "--network", "web", "--", "python3", "-c", ASK_GATEWAY, "10.90.1.1", name])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(ask("side"), side, "a run resolves the attachment");
    let out = ns.python(&topo, &env, ASK_GATEWAY, &["10.90.1.1", "side"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), side, "{}", describe(&out));
    cli_ok(&topo, &env, &["detach", &id]);
    let out = ns.python(&topo, &env, LINKS, &[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "lo", "detach removes the veth: {}", describe(&out));
    // Under the names domain the network's server is the authority: nothing goes upstream.
    assert_eq!(ask("side.dns.pelagos"), "none", "the detached namespace still resolves");
    // A namespace of the user's own user namespace: the holder cannot enter it.
    let foreign = Netns::new(&topo, &env, "unshare --user --map-root-user --net");
    let out = topo.cli(&env, &["attach", "--netns", &foreign.path(), "--network", "web"]).output().unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not owned by your network holder"), "{}", describe(&out));
    drop(foreign);
    drop(ns);
    server.stop();
    cli_ok(&topo, &env, &["network", "rm", "web"]);
    assert_all_gone(&topo, &pids);
}

tier_tests!(
    rootless_rebuilt_tier,
    super::super::RootlessEnv,
    [
        a_run_that_survived_a_rebuilt_holder_resolves_names,
        host_port_reaches_the_granted_host_loopback_service_only,
        host_port_relays_udp_to_the_granted_host_loopback_port_only,
        attach_joins_a_namespace_of_the_holder_by_name_and_detach_leaves,
    ]
);

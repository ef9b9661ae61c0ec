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
const TRY_CONNECT: &str = r#"import socket,sys
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

tier_tests!(
    rootless_rebuilt_tier,
    super::super::RootlessEnv,
    [a_run_that_survived_a_rebuilt_holder_resolves_names, host_port_reaches_the_granted_host_loopback_service_only,]
);

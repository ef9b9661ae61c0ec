//! A network namespace made by someone else, for the `attach` tests: held
//! by `unshare -Urn sleep` as the test user (rootless) or named with `ip
//! netns add` (root), with a way to run things inside it.

use super::{Env, Topology, ip};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Tells each client its address, one line.
pub const PEER_SERVER: &str = "import socket,sys\n\
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen(16); print('listening', flush=True)\n\
while True:\n    c, p = s.accept(); c.sendall(p[0].encode() + b'\\n'); c.close()\n";

/// A network namespace made by someone else, and a way into it.
pub struct Namespace {
    /// What `attach --netns` gets.
    pub path: String,
    /// The process holding it (rootless), killed on drop.
    holder: Option<Child>,
    /// The named netns (root), deleted on drop.
    name: Option<String>,
    /// Processes started inside it, killed on drop.
    inside: Vec<Child>,
}

impl Namespace {
    pub fn new(topo: &Topology, env: &Env) -> Self {
        match &env.user {
            Some(_) => Self::held(topo, env, &["unshare", "-Urn", "sleep", "600"]),
            None => {
                let name = format!("pnt-a{}-{}", std::process::id(), super::port(0));
                ip(&["netns", "add", &name]);
                Self { path: format!("/run/netns/{name}"), holder: None, name: Some(name), inside: Vec::new() }
            }
        }
    }

    /// A network namespace owned by the user namespace `userns` (a file
    /// under /proc), made by the test user (rootless tier).
    pub fn in_user_namespace(topo: &Topology, env: &Env, userns: &str) -> Self {
        let user = format!("--user={userns}");
        Self::held(topo, env, &["nsenter", &user, "--preserve-credentials", "unshare", "-n", "sleep", "600"])
    }

    /// A namespace held by `argv` (which ends by exec'ing sleep) as the test user.
    fn held(topo: &Topology, env: &Env, argv: &[&str]) -> Self {
        let u = env.user.as_ref().expect("a namespace held by a process is the rootless tier's");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &topo.host, "setpriv"]);
        cmd.args([&format!("--reuid={}", u.uid), &format!("--regid={}", u.gid), "--clear-groups", "--"]);
        cmd.args(argv);
        let holder = cmd.stdin(Stdio::null()).spawn().unwrap();
        let path = format!("/proc/{}/ns/net", holder.id());
        // It execs sleep once the namespaces exist.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(format!("/proc/{}/comm", holder.id())).unwrap_or_default().trim() != "sleep" {
            assert!(Instant::now() < deadline, "{argv:?} did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Self { path, holder: Some(holder), name: None, inside: Vec::new() }
    }

    /// `args` inside the namespace (as the test user, rootless).
    pub fn exec(&self, topo: &Topology, env: &Env, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        match (&env.user, &self.holder, &self.name) {
            (Some(u), Some(h), _) => {
                cmd.args(["netns", "exec", &topo.host, "setpriv"]);
                cmd.args([&format!("--reuid={}", u.uid), &format!("--regid={}", u.gid), "--clear-groups", "--"]);
                cmd.args(["nsenter", "--preserve-credentials", "-U", "-n", "-t", &h.id().to_string()]);
            }
            (_, _, Some(name)) => {
                cmd.args(["netns", "exec", name]);
            }
            _ => unreachable!("a namespace has a holder or a name"),
        }
        cmd.args(args);
        cmd
    }

    /// Start the peer-telling server on `port` inside.
    pub fn serve(&mut self, topo: &Topology, env: &Env, port: u16) {
        let mut child = self
            .exec(topo, env, &["python3", "-c", PEER_SERVER, &port.to_string()])
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "listening");
        self.inside.push(child);
    }

    /// The namespace ends: its process dies (rootless) or its name goes (root).
    pub fn end(&mut self) {
        for mut c in self.inside.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(mut h) = self.holder.take() {
            let _ = h.kill();
            let _ = h.wait();
        }
        if let Some(name) = self.name.take() {
            ip(&["netns", "del", &name]);
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        for c in self.inside.iter_mut().chain(self.holder.as_mut()) {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(name) = &self.name {
            let _ = Command::new("ip").args(["netns", "del", name]).stderr(Stdio::null()).status();
        }
    }
}

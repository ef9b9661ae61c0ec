//! The accelerator as a library, end to end: a process forked into a
//! throwaway user and network namespace of its own (only `lo`, no way out)
//! puts itself under the filter and runs a python client; this process
//! holds the listener and supervises from the throwaway host namespace of
//! a [`Topology`]. Whatever the client reaches outside, it reaches through
//! a switched socket; whatever must stay inside stays unreachable.
//!
//! Root only (the topology); the same paths as the unprivileged user run
//! through the CLI in tests/accel_cli.rs.

#[macro_use]
mod common;

use common::{Tier, Topology, UPSTREAM_ADDR, in_netns};
use pelagos_net::accel::child::{self, ChildHook};
use pelagos_net::accel::filter::Intercept;
use pelagos_net::accel::ingress::{Held, Ingress, ListenerSource};
use pelagos_net::accel::reach::Reach;
use pelagos_net::accel::supervisor::{Config, Report, Supervisor};
use pelagos_net::accel::switch::Lock;
use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The client: connects as told and prints what it saw, as JSON.
const CLIENT: &str = include_str!("fixtures/accel_client.py");

/// A server in the namespace at `ns` on `addr`: tells each client its
/// address, then echoes lines. Stops when the guard drops.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start(ns: &str, addr: &str) -> Self {
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (ns, addr) = (Path::new("/run/netns").join(ns), addr.to_owned());
        std::thread::spawn(move || {
            let f = std::fs::File::open(&ns).unwrap();
            nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let l = TcpListener::bind(&addr).unwrap();
            l.set_nonblocking(true).unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            while !flag.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, peer)) => {
                        std::thread::spawn(move || serve(c, peer));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self { addr: rx.recv().unwrap(), stop }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(c: TcpStream, peer: SocketAddr) {
    c.set_nonblocking(false).unwrap();
    let mut w = c.try_clone().unwrap();
    let _ = w.write_all(format!("peer={}\n", peer.ip()).as_bytes());
    for line in BufReader::new(c).lines() {
        let Ok(line) = line else { return };
        if w.write_all(format!("{line}\n").as_bytes()).is_err() {
            return;
        }
    }
}

/// A child in a fresh user+net namespace, under the filter, running the
/// client with `spec`; returns its stdout and the supervisor's report.
fn run_client(topo: &Topology, spec: &serde_json::Value, ingress: Option<Ingress>) -> (String, Report) {
    let (hook, receiver) = child::pair(Intercept { bind: ingress.is_some(), refuse_io_uring: false }).unwrap();
    let (out_r, out_w) = nix::unistd::pipe().unwrap();
    let argv: Vec<CString> =
        ["/usr/bin/python3", "-c", CLIENT, &spec.to_string()].iter().map(|s| CString::new(*s).unwrap()).collect();
    let pid = fork_child(&hook, &argv, &out_w, None);
    drop((hook, out_w));
    let installed = receiver.receive(Duration::from_secs(5)).expect("the child hands over its listener");
    let cfg = Config { reach: Reach::default(), proc_root: "/proc".into(), ingress, lock: Lock::Peer };
    let host = topo.host.clone();
    // The supervisor makes its sockets in the namespace of the thread that starts it.
    let sup = in_netns(&host, move || Supervisor::start(installed, cfg).unwrap());
    let mut out = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(out_r), &mut out).unwrap();
    let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
    let report = sup.stop();
    assert!(matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)), "client {status:?}: {out}");
    (out, report)
}

/// Fork: new user and network namespace (root mapped to root), `lo` up, an
/// optional filter first (`forbid`), the hook, then exec `argv` with stdout
/// on `out`. The child makes only async-signal-safe calls.
fn fork_child(hook: &ChildHook, argv: &[CString], out: &OwnedFd, forbid: Option<&[libc::sock_filter]>) -> i32 {
    let ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).chain([std::ptr::null()]).collect();
    let maps =
        [(c"/proc/self/setgroups", &b"deny"[..]), (c"/proc/self/uid_map", b"0 0 1"), (c"/proc/self/gid_map", b"0 0 1")];
    // SAFETY: the child only makes raw syscalls on memory prepared before the fork, then execs or exits.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0);
        if pid > 0 {
            return pid;
        }
        if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) != 0 {
            libc::_exit(90);
        }
        for (path, data) in maps {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, data.as_ptr().cast(), data.len()) != data.len() as isize {
                libc::_exit(91);
            }
            libc::close(fd);
        }
        if pelagos_net::ns::loopback::bring_up_loopback().is_err() {
            libc::_exit(92);
        }
        if let Some(prog) = forbid {
            let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr().cast_mut() };
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &fprog);
        }
        if hook.install().is_err() {
            libc::_exit(93);
        }
        libc::dup2(std::os::fd::AsRawFd::as_raw_fd(out), 1);
        libc::execv(ptrs[0], ptrs.as_ptr());
        libc::_exit(94);
    }
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("client output {out:?}: {e}"))
}

fn egress(env: common::Env) {
    let topo = Topology::new(&env);
    let up = Server::start(&topo.upstream, &format!("{UPSTREAM_ADDR}:0"));
    // The host namespace's loopback: what a run must never reach.
    let host_lo = in_netns(&topo.host, || TcpListener::bind("127.0.0.1:0").unwrap());
    let spec = serde_json::json!({"upstream": [UPSTREAM_ADDR, up.addr.port()], "host_loopback_port": host_lo.local_addr().unwrap().port()});
    let (out, report) = run_client(&topo, &spec, None);
    let v = json(&out);
    // The namespace has no route out: every answer came through a switched socket.
    assert_eq!(v["blocking"]["peer"], "peer=10.231.0.2", "{v}");
    assert_eq!(v["blocking"]["echo"], "ping", "{v}");
    assert_eq!(v["blocking"]["local"], "10.231.0.2", "the socket is the host's: {v}");
    assert_eq!(v["blocking"]["options"], serde_json::json!({"keepalive": 1, "nodelay": 1, "sndbuf": 131072}), "{v}");
    assert_eq!(v["nonblocking"], serde_json::json!({"connect": "EINPROGRESS", "error": 0, "peer": "peer=10.231.0.2"}));
    assert_eq!(v["forked"], "peer=10.231.0.2", "a forked child is switched too: {v}");
    assert_eq!(v["exec"], "peer=10.231.0.2", "and a program it executes: {v}");
    assert_eq!(v["mapped"], "peer=10.231.0.2", "an IPv4-mapped address on an IPv6 socket: {v}");
    // Loopback is the namespace's own: the host's listener is not reached.
    assert_eq!(v["loopback"], "ECONNREFUSED", "{v}");
    assert_eq!(v["udp"], "ENETUNREACH", "UDP stays inside, where there is no route: {v}");
    assert_eq!(v["nested"], "ENETUNREACH", "a namespace made inside stays cut off: {v}");
    assert_eq!(v["listen_switched"], "EINVAL", "a switched socket never listens: {v}");
    assert_eq!(v["io_uring"], "ok", "io_uring is refused under the device lock only: {v}");
    assert!(report.switched >= 5 && report.inside >= 1, "{report}");
    drop(host_lo);
    topo.assert_clean();
}

/// The listeners a test holds, as the relay would.
struct Listeners(Vec<(SocketAddr, OwnedFd)>);

impl ListenerSource for Listeners {
    fn release(&mut self, local: SocketAddr) -> Option<OwnedFd> {
        let i = self.0.iter().position(|(a, _)| *a == local)?;
        Some(self.0.remove(i).1)
    }
}

fn ingress(env: common::Env) {
    let topo = Topology::new(&env);
    let host = in_netns(&topo.host, || TcpListener::bind("0.0.0.0:0").unwrap());
    let local = host.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let ready = dir.path().join("ready");
    let spec = serde_json::json!({"serve": 80, "ready": ready});
    let held = vec![Held { local, container_port: 80 }];
    let ingress = Ingress::new(held, Box::new(Listeners(vec![(local, OwnedFd::from(host))])));
    let addr: SocketAddr = format!("10.231.0.2:{}", local.port()).parse().unwrap();
    let upstream = topo.upstream.clone();
    let client = std::thread::spawn(move || {
        common::running::eventually(
            15,
            || if ready.exists() { Ok(()) } else { Err(std::io::Error::other("not ready")) },
        );
        in_netns(&upstream, move || {
            let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line).unwrap();
            line
        })
    });
    let (out, report) = run_client(&topo, &spec, Some(ingress));
    assert_eq!(client.join().unwrap().trim(), format!("peer={UPSTREAM_ADDR}"), "the server sees the real client");
    let v = json(&out);
    assert_eq!(v["own_server"], "peer=127.0.0.1", "a client of the run reaches its own server: {v}");
    assert_eq!(v["bound"], format!("0.0.0.0:{}", local.port()), "{v}");
    assert_eq!(report.handed_over, 1, "{report}");
    topo.assert_clean();
}

/// A process under a filter that forbids new user-notification filters
/// says so, and runs on.
fn fallback_when_the_filter_is_refused(env: common::Env) {
    let _topo = Topology::new(&env);
    let (hook, receiver) = child::pair(Intercept { bind: false, refuse_io_uring: false }).unwrap();
    let (_r, w) = nix::unistd::pipe().unwrap();
    let argv = [CString::new("/bin/true").unwrap()];
    let forbid = [
        libc::sock_filter { code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16, jt: 0, jf: 0, k: 0 },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: libc::SYS_seccomp as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter { code: (libc::BPF_RET | libc::BPF_K) as u16, jt: 0, jf: 0, k: libc::SECCOMP_RET_ALLOW },
    ];
    let pid = fork_child(&hook, &argv, &w, Some(&forbid));
    drop(hook);
    let err = receiver.receive(Duration::from_secs(5)).expect_err("the filter cannot be installed");
    let why = pelagos_net::accel::probe::reason(&err);
    assert!(why.contains("EPERM") && why.contains("seccomp filter"), "{why}");
    let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
    assert!(matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)), "the command ran anyway: {status:?}");
    assert!(pelagos_net::accel::probe::probe(Path::new("/proc")).is_available());
}

tier_tests!(root, super::Tier::Root, [egress, ingress, fallback_when_the_filter_is_refused]);

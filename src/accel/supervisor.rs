//! The supervisor: one thread of the process that owns the run, answering
//! the command's notifications one at a time.
//!
//! For a `connect`, it reads the socket address from the caller's memory
//! once, checks the caller is still the one waiting
//! (`SECCOMP_IOCTL_NOTIF_ID_VALID`: the pid was not reused), decides with
//! [`reach::decide`], and either lets the kernel go on inside the namespace
//! (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`) or makes the switched socket
//! itself, connects it itself to the address it read and checked, and
//! puts it in place of the caller's descriptor
//! (`SECCOMP_ADDFD_FLAG_SETFD`). A blocking caller then waits for the
//! handshake in the kernel, on the new socket (the supervisor answers
//! `CONTINUE`: a `connect` of a socket whose handshake is under way waits
//! for it and ignores the address); a nonblocking one gets `EINPROGRESS`.
//! `SECCOMP_ADDFD_FLAG_SEND` (install and answer in one step) is not used:
//! it makes the syscall return the new descriptor's number, and `connect`
//! and `bind` return 0.
//!
//! Every wait of the loop is bounded: the supervisor's own `connect` is
//! nonblocking, and `ADDFD` returns as soon as the caller's thread has run.
//! When the last process under the filter is gone, or the run stops it,
//! the loop ends; a process still under the filter then gets `ENOSYS`
//! from the kernel for the syscalls it intercepts.

use super::child::Installed;
use super::ingress::{BindRequest, Ingress};
use super::reach::{self, Reach, Verdict};
use super::switch::{self, Confine, Failed, Lock, Progress, Spares, Target, Templates};
use super::sys::{self, Answer};
use super::trace::{Phase, Trace};
use super::{AccelError, sockaddr};
use crate::bridge::netlink::Netlink;
use nix::errno::Errno;
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

/// What the supervisor knows of the run.
pub struct Config {
    /// What the run reaches through its helper.
    pub reach: Reach,
    /// procfs root (for `/proc/<tid>/fdinfo`).
    pub proc_root: PathBuf,
    /// Published TCP ports whose listeners servers may take over (only
    /// with [`Lock::Peer`]: a listener cannot be confined to a device).
    pub ingress: Option<Ingress>,
    /// How switched sockets are confined ([`Lock::available`]).
    pub lock: Lock,
}

/// What the supervisor did, for the run's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Connections switched to the owner's namespace.
    pub switched: u64,
    /// Connections left inside (loopback, the namespace's own network ...).
    pub inside: u64,
    /// Sockets that could have been switched but were kept inside (their
    /// state belongs to the namespace, an option could not be carried).
    pub kept: u64,
    /// Listeners handed over to servers.
    pub handed_over: u64,
    /// Why the last socket was kept inside.
    pub last_kept: Option<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} connections switched, {} left inside, {} kept inside, {} listeners handed over",
            self.switched, self.inside, self.kept, self.handed_over
        )?;
        if let Some(why) = &self.last_kept {
            write!(f, " (last kept inside: {why})")?;
        }
        Ok(())
    }
}

/// The running supervisor thread.
#[derive(Debug)]
pub struct Supervisor {
    waker: Arc<EventFd>,
    thread: Option<JoinHandle<Report>>,
}

impl Supervisor {
    /// Starts answering the notifications of `installed`. Sockets are made
    /// in the namespace of the calling thread.
    pub fn start(installed: Installed, cfg: Config) -> Result<Self, AccelError> {
        let templates = Templates::read().map_err(AccelError::Template)?;
        if let Err(e) = sys::notif_sync_wake_up(installed.listener.as_fd()) {
            log::debug!("accelerator: synchronous wake-ups: {e}");
        }
        let here = switch::tcp_socket(libc::AF_INET)
            .and_then(|s| sys::netns_cookie(s.as_fd()))
            .map_err(AccelError::Template)?;
        let waker = Arc::new(
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map_err(AccelError::Template)?,
        );
        // The device lock needs the route of every destination.
        let routes = match cfg.lock {
            Lock::Peer => None,
            Lock::Device => Some(Netlink::open().map_err(|e| AccelError::Routes(e.to_string()))?),
        };
        let mut lp = Loop {
            routes,
            route_cache: HashMap::new(),
            listener: installed.listener,
            run: installed.run_netns,
            here,
            templates,
            spares: Spares::default(),
            cfg,
            tasks: HashMap::new(),
            report: Report::default(),
            trace: Trace::from_env(),
        };
        let stop = Arc::clone(&waker);
        let thread = crate::ports::relay::sys::spawn_with_signals_blocked("pelagos-accel", move || {
            lp.run(stop.as_fd());
            if let Some(summary) = lp.trace.summary() {
                log::info!("accelerator: {summary}");
            }
            lp.report
        })
        .map_err(AccelError::Spawn)?;
        Ok(Self { waker, thread: Some(thread) })
    }

    /// Stops the thread and returns what it did.
    pub fn stop(mut self) -> Report {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Report {
        let _ = self.waker.write(1);
        self.thread.take().map(|t| t.join().unwrap_or_default()).unwrap_or_default()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.shutdown();
        }
    }
}

/// Most threads kept between notifications.
const TASK_CACHE: usize = 256;
/// Most routes kept, and for how long (a route that changes is followed
/// within this time).
const ROUTE_CACHE: usize = 4096;
const ROUTE_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

struct Loop {
    /// rtnetlink in our namespace, for [`Lock::Device`], and the routes it
    /// gave lately.
    routes: Option<Netlink>,
    route_cache: HashMap<std::net::IpAddr, (crate::bridge::netlink::RouteTo, Instant)>,
    listener: OwnedFd,
    /// Cookies of the run's namespace and of ours.
    run: u64,
    here: u64,
    templates: Templates,
    /// Sockets made ahead for the next switches.
    spares: Spares,
    cfg: Config,
    /// The threads that called, by tid.
    tasks: HashMap<u32, Task>,
    report: Report,
    /// Per-phase timings (`PELAGOS_ACCEL_TRACE=1`).
    trace: Trace,
}

impl Loop {
    fn run(&mut self, stop: BorrowedFd<'_>) {
        self.spares.refill();
        loop {
            let mut fds = [
                libc::pollfd { fd: self.listener.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: stop.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            ];
            // SAFETY: poll(2) on two pollfds of ours.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if n < 0 {
                if Errno::last() == Errno::EINTR {
                    continue;
                }
                log::warn!("accelerator: poll: {}", Errno::last());
                return;
            }
            if fds[1].revents != 0 {
                return;
            }
            if fds[0].revents & libc::POLLIN != 0 {
                self.trace.begin();
                self.one();
            } else if fds[0].revents & (libc::POLLHUP | libc::POLLERR) != 0 {
                // Nobody is under the filter any more.
                return;
            }
        }
    }

    /// Receives and answers one notification.
    fn one(&mut self) {
        let notif = match sys::notif_recv(self.listener.as_fd()) {
            Ok(n) => n,
            // The caller went away between poll and receive.
            Err(Errno::ENOENT | Errno::EINTR) => return,
            Err(e) => {
                log::debug!("accelerator: receive a notification: {e}");
                return;
            }
        };
        self.trace.mark(Phase::Receive);
        let answer = match i64::from(notif.data.nr) {
            libc::SYS_connect => self.on_connect(&notif),
            libc::SYS_bind => self.on_bind(&notif),
            libc::SYS_listen => self.on_listen(&notif),
            _ => Answer::Continue,
        };
        if let Err(e) = sys::notif_send(self.listener.as_fd(), notif.id, answer)
            && e != Errno::ENOENT
        {
            log::debug!("accelerator: answer notification {}: {e}", notif.id);
        }
        self.trace.mark(Phase::Answer);
        self.trace.finish();
        // Off the caller's path: it runs again already.
        self.spares.refill();
    }

    /// The address argument, read once from the caller's memory.
    fn address(&self, n: &libc::seccomp_notif) -> Option<SocketAddr> {
        let len = (n.data.args[2] as u32).min(super::filter::MAX_ADDR_LEN) as usize;
        let mut buf = [0u8; super::filter::MAX_ADDR_LEN as usize];
        sys::read_memory(n.pid, n.data.args[1], &mut buf[..len]).ok()?;
        // The memory read was the caller's only if it still waits.
        sys::notif_id_valid(self.listener.as_fd(), n.id).then(|| sockaddr::parse(&buf[..len]))?
    }

    /// Our copy of the caller's socket (its descriptor `args[0]`).
    fn target_socket(&mut self, n: &libc::seccomp_notif) -> Option<OwnedFd> {
        let fd = n.data.args[0] as RawFd;
        for _ in 0..2 {
            if !self.tasks.contains_key(&n.pid) {
                if self.tasks.len() >= TASK_CACHE {
                    self.tasks.clear();
                }
                self.tasks.insert(n.pid, Task::open(&self.cfg.proc_root, n.pid)?);
            }
            match sys::pidfd_getfd(self.tasks[&n.pid].pidfd.as_fd(), fd) {
                // The pidfd outlived its thread (the tid was reused): open anew.
                Err(Errno::ESRCH) => drop(self.tasks.remove(&n.pid)),
                Err(_) => return None,
                // A thread that still waits is the one the pidfd names.
                Ok(sock) => return sys::notif_id_valid(self.listener.as_fd(), n.id).then_some(sock),
            }
        }
        None
    }

    fn on_connect(&mut self, n: &libc::seccomp_notif) -> Answer {
        let Some(dst) = self.address(n) else { return Answer::Continue };
        self.trace.mark(Phase::Address);
        let verdict = reach::decide(dst, &self.cfg.reach);
        self.trace.mark(Phase::Decide);
        match verdict {
            Verdict::Inside(_) => self.inside(n),
            Verdict::Switch(to) => self.switch(n, dst, to),
            Verdict::OwnServer { to, listener } => {
                let alive = self.cfg.ingress.as_ref().is_some_and(|i| i.is_listening(listener));
                if alive { self.switch(n, dst, to) } else { self.inside(n) }
            }
        }
    }

    /// Left to the kernel. A socket switched before and connected again to
    /// where only the namespace leads cannot go back: it is refused.
    fn inside(&mut self, n: &libc::seccomp_notif) -> Answer {
        self.report.inside += 1;
        match self.target_socket(n).map(|s| sys::netns_cookie(s.as_fd())) {
            Some(Ok(cookie)) if cookie == self.here => Answer::Fail(Errno::ENETUNREACH),
            _ => Answer::Continue,
        }
    }

    fn keep(&mut self, why: String) -> Answer {
        log::debug!("accelerator: kept inside: {why}");
        self.report.kept += 1;
        self.report.last_kept = Some(why);
        Answer::Continue
    }

    fn switch(&mut self, n: &libc::seccomp_notif, dst: SocketAddr, to: SocketAddr) -> Answer {
        let Some(original) = self.target_socket(n) else { return Answer::Continue };
        self.trace.mark(Phase::CopyFd);
        let Some(facts) = switch::facts(original.as_fd()) else { return Answer::Continue };
        self.trace.mark(Phase::Facts);
        if let Err(keep) = switch::eligible(&facts, &dst, self.run, self.here) {
            return match keep {
                switch::Keep::NotTcp | switch::Keep::Family | switch::Keep::Connected => Answer::Continue,
                other => self.keep(format!("{dst}: {other:?}")),
            };
        }
        let confine = match self.confine(to) {
            Ok(c) => c,
            Err(why) => return self.keep(format!("{dst}: {why}")),
        };
        self.trace.mark(Phase::Confine);
        let socket = match self.spares.take(facts.domain) {
            Ok(s) => s,
            Err(e) => return self.keep(format!("{dst}: socket: {e}")),
        };
        self.trace.mark(Phase::Socket);
        let target = Target { to, confine };
        let switched =
            switch::connect_switched(socket, original.as_fd(), &facts, target, &self.templates, &mut self.trace);
        let (socket, progress) = match switched {
            Ok(done) => done,
            Err(Failed::Keep(why)) => return self.keep(format!("{dst}: {why}")),
            Err(Failed::Refused(e)) => return Answer::Fail(e),
        };
        let (fd, cloexec) = self.callers_fd(n);
        self.trace.mark(Phase::Flags);
        if sys::notif_replace_fd(self.listener.as_fd(), n.id, socket.as_fd(), fd, cloexec).is_err() {
            // The caller is gone or was interrupted; it will ask again.
            return Answer::Continue;
        }
        self.trace.mark(Phase::AddFd);
        self.report.switched += 1;
        match progress {
            Progress::Connected => Answer::Return(0),
            Progress::InProgress if facts.status & libc::O_NONBLOCK != 0 => Answer::Fail(Errno::EINPROGRESS),
            Progress::InProgress => Answer::Continue,
        }
    }

    /// A TCP `listen` is made here, on the very file that was checked (a
    /// racing thread cannot put another socket under the descriptor), and
    /// refused for a switched socket: turned into a listener, it would open
    /// a port of the owner's namespace. A listener handed over listens. Other
    /// sockets go on in the kernel (a unix listener records its caller's
    /// credentials, which must stay the command's).
    fn on_listen(&mut self, n: &libc::seccomp_notif) -> Answer {
        let Some(sock) = self.target_socket(n) else { return Answer::Continue };
        let Some(facts) = switch::facts(sock.as_fd()) else { return Answer::Continue };
        let tcp = facts.kind == libc::SOCK_STREAM && facts.protocol == libc::IPPROTO_TCP;
        if !tcp {
            return Answer::Continue;
        }
        let handed = self.cfg.ingress.as_ref().is_some_and(|i| i.holds(sock.as_fd()));
        if facts.netns == self.here && (facts.device != 0 || facts.filter_len != 0) && !handed {
            return Answer::Fail(Errno::EINVAL);
        }
        let backlog = n.data.args[1] as i32;
        // SAFETY: listen(2) on our own copy of the caller's socket.
        match Errno::result(unsafe { libc::listen(sock.as_raw_fd(), backlog) }) {
            Ok(_) => Answer::Return(0),
            Err(e) => Answer::Fail(e),
        }
    }

    /// The lock of a socket to `to`: the peer lock, or the output device of
    /// the route to `to` (never the loopback device: this host's own
    /// addresses stay inside without the peer lock).
    fn confine(&mut self, to: SocketAddr) -> Result<Confine, String> {
        let Some(routes) = self.routes.as_mut() else { return Ok(Confine::Peer) };
        let ip = to.ip().to_canonical();
        let now = Instant::now();
        let route = match self.route_cache.get(&ip) {
            Some((r, at)) if now.duration_since(*at) < ROUTE_CACHE_TTL => Ok(*r),
            _ => routes.route_to(ip).inspect(|r| {
                if self.route_cache.len() >= ROUTE_CACHE {
                    self.route_cache.clear();
                }
                self.route_cache.insert(ip, (*r, now));
            }),
        };
        match route {
            Ok(r) if r.local => Err("an address of this host, reached through lo".into()),
            Ok(crate::bridge::netlink::RouteTo { oif: Some(oif), .. }) => Ok(Confine::Device(oif)),
            Ok(_) => Err("no route".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The descriptor the caller passed (its first argument) and whether
    /// it is close-on-exec (from its fdinfo; yes when that cannot be read),
    /// for the socket that replaces it.
    fn callers_fd(&mut self, n: &libc::seccomp_notif) -> (RawFd, bool) {
        let fd = n.data.args[0] as RawFd;
        (fd, self.tasks.get_mut(&n.pid).and_then(|t| t.close_on_exec(fd)).unwrap_or(true))
    }

    fn on_bind(&mut self, n: &libc::seccomp_notif) -> Answer {
        if self.cfg.ingress.is_none() {
            return Answer::Continue;
        }
        let Some(addr) = self.address(n) else { return Answer::Continue };
        let Some(original) = self.target_socket(n) else { return Answer::Continue };
        let Some(facts) = switch::facts(original.as_fd()) else { return Answer::Continue };
        let tcp = facts.kind == libc::SOCK_STREAM && facts.protocol == libc::IPPROTO_TCP;
        let family = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
        if !tcp || facts.netns != self.run || facts.domain != family || facts.local.is_some_and(|l| l.port() != 0) {
            return Answer::Continue;
        }
        let v6only = addr.is_ipv6()
            && sys::getsockopt_int(original.as_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY).unwrap_or(0) != 0;
        let req = BindRequest { port: addr.port(), ipv6: addr.is_ipv6(), v6only };
        let Some(ingress) = self.cfg.ingress.as_mut() else { return Answer::Continue };
        let listener = match ingress.listener_for(req, original.as_fd(), &facts, &self.templates) {
            Ok(Some(l)) => l,
            Ok(None) => return Answer::Continue,
            Err(e) => return Answer::Fail(e),
        };
        // Recorded either way: a server that did not get it (it was
        // interrupted) asks again and gets a listener bound afresh.
        ingress.handed(&listener);
        self.cfg.reach.own_servers = ingress.own_servers();
        let (fd, cloexec) = self.callers_fd(n);
        if sys::notif_replace_fd(self.listener.as_fd(), n.id, listener.socket.as_fd(), fd, cloexec).is_err() {
            return Answer::Continue;
        }
        self.report.handed_over += 1;
        Answer::Return(0)
    }
}

/// A thread that called: its pidfd, its fdinfo directory, and the fdinfo
/// file of the descriptor it asked about last, kept open.
///
/// An fdinfo file is generated when it is read, for whatever the
/// descriptor number names then in the thread's table: read again from
/// offset 0 (`pread`), it shows the current flags of that number, for one
/// syscall where opening it anew costs three and a path walk (5 µs of a
/// switched connect here). A client that closes and makes its sockets
/// again gets the same number each time.
struct Task {
    pidfd: OwnedFd,
    fdinfo: Option<std::fs::File>,
    last: Option<(RawFd, std::fs::File)>,
}

impl Task {
    fn open(proc_root: &std::path::Path, tid: u32) -> Option<Self> {
        let tgid = || thread_group(proc_root, tid);
        let pidfd = sys::pidfd_open_thread(tid, tgid).ok()?;
        let fdinfo = std::fs::File::open(proc_root.join(tid.to_string()).join("fdinfo")).ok();
        Some(Self { pidfd, fdinfo, last: None })
    }

    /// Whether its descriptor `fd` is close-on-exec, from its fdinfo.
    fn close_on_exec(&mut self, fd: RawFd) -> Option<bool> {
        if self.last.as_ref().is_none_or(|(n, _)| *n != fd) {
            self.last = None;
            let name = std::ffi::CString::new(fd.to_string()).ok()?;
            let file = nix::fcntl::openat(
                self.fdinfo.as_ref()?,
                name.as_c_str(),
                nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .ok()?;
            self.last = Some((fd, std::fs::File::from(file)));
        }
        let (_, file) = self.last.as_ref()?;
        let mut buf = [0u8; 256];
        // SAFETY: pread(2) writes at most buf.len() bytes into buf.
        let n = unsafe { libc::pread(file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let n = usize::try_from(n).ok()?;
        let info = std::str::from_utf8(&buf[..n]).ok()?;
        let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?;
        let flags = i64::from_str_radix(flags.trim(), 8).ok()?;
        Some(flags & i64::from(libc::O_CLOEXEC) != 0)
    }
}

/// The thread group of thread `tid`, from `/proc/<tid>/status`.
fn thread_group(proc_root: &std::path::Path, tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(proc_root.join(tid.to_string()).join("status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Tgid:")).and_then(|v| v.trim().parse().ok())
}

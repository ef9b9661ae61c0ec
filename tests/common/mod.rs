//! Shared harness for the integration tiers.
//!
//! Every test builds its own throwaway topology: a "host" network namespace
//! (veth to an "upstream" namespace, a default route through it, so pasta
//! has an interface to copy) in which `pelagos-net` runs, either as root or
//! as the unprivileged test user via `setpriv`. Clients connect from inside
//! that host namespace on a dedicated thread (`setns` affects only the
//! calling thread). Traffic never leaves namespaces the test created.
//!
//! Tiers: a test calls [`Tier::require`]. When the tier cannot run here
//! (not root, no test user, no pasta) it prints why; under `CI=true` or
//! `PELAGOS_REQUIRE_ALL_TIERS=1` it fails instead, so a skipped tier can
//! never pass CI.

#![allow(dead_code)]

pub mod dns;
pub mod fwdrig;
pub mod namespace;
pub mod running;
pub mod schema;
pub mod seccomp;

/// One `#[test]` per scenario and tier: `tier_tests!(rootless,
/// super::Tier::Rootless, [scenario, ...])` runs `scenario(env)` when the
/// tier can run (see [`Tier::require`]). `tier_tests!(rootless +
/// rootless_accel, ...)` runs every scenario once more with the accelerator
/// asked for ([`Accel`], which the test file imports).
#[allow(unused_macros)]
macro_rules! tier_tests {
    ($tier_mod:ident + $accel_mod:ident, $tier:expr, [$($name:ident),* $(,)?]) => {
        tier_tests!($tier_mod, $tier, [$($name),*]);
        tier_tests!($accel_mod, super::Accel($tier), [$($name),*]);
    };
    ($tier_mod:ident, $tier:expr, [$($name:ident),* $(,)?]) => {
        mod $tier_mod {
            $(
                #[test]
                fn $name() {
                    if let Some(env) = $tier.require() {
                        super::$name(env);
                    }
                }
            )*
        }
    };
}

use std::ffi::OsStr;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Who runs `pelagos-net`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// The unprivileged test user (`PELAGOS_TEST_USER`).
    Rootless,
    /// root.
    Root,
}

/// A user the rootless tier runs as.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

fn strict() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
        || std::env::var("PELAGOS_REQUIRE_ALL_TIERS").is_ok_and(|v| v == "1")
}

/// How many times slower than native this machine runs commands:
/// `PELAGOS_TEST_TIME_SCALE` (default 1). `vm/run` sets it in an emulated VM,
/// where a Python server takes seconds to start, so that waits for a command
/// to come up stretch with it.
pub fn time_scale() -> u64 {
    std::env::var("PELAGOS_TEST_TIME_SCALE").ok().and_then(|v| v.parse().ok()).filter(|&n| n >= 1).unwrap_or(1)
}

/// Skip (loudly) or fail (in CI) with `why`.
pub fn skip(tier: &str, why: &str) {
    if strict() {
        panic!("tier {tier} cannot run and skipping is not allowed in CI: {why}");
    }
    eprintln!("SKIP [{tier}]: {why}");
}

/// What the running kernel lacks of the features pelagos-net needs, each
/// with the release that brought it (empty on Linux 5.10 and later; see
/// `pelagos_net::host::kernel`).
pub fn kernel_lacks() -> Vec<String> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    pelagos_net::host::kernel::missing(&release)
        .iter()
        .map(|f| format!("{} needs Linux {} or later ({})", f.name, f.since, f.used_for))
        .collect()
}

pub fn which(prog: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).map(|d| d.join(prog)).find(|p| p.is_file())
}

fn lookup_user(name: &str) -> Option<TestUser> {
    let passwd = fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() > 3 && f[0] == name {
            Some(TestUser { name: name.into(), uid: f[2].parse().ok()?, gid: f[3].parse().ok()? })
        } else {
            None
        }
    })
}

impl Tier {
    pub fn label(self) -> &'static str {
        match self {
            Tier::Rootless => "rootless",
            Tier::Root => "root",
        }
    }

    /// The environment for this tier, or `None` (after printing why) when it cannot run.
    pub fn require(self) -> Option<Env> {
        if !nix::unistd::geteuid().is_root() {
            skip(
                self.label(),
                "the integration harness needs root to build throwaway namespaces (run scripts/test-all with sudo)",
            );
            return None;
        }
        let lacks = kernel_lacks();
        if !lacks.is_empty() {
            let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
            skip(self.label(), &format!("this kernel (Linux {}) is too old: {}", release.trim(), lacks.join("; ")));
            return None;
        }
        if which("pasta").is_none() {
            skip(self.label(), "pasta is not installed (apt-get install passt)");
            return None;
        }
        if which("ip").is_none() || which("setpriv").is_none() {
            skip(self.label(), "ip (iproute2) and setpriv (util-linux) are needed");
            return None;
        }
        let user = match self {
            Tier::Root => None,
            Tier::Rootless => {
                let Some(name) = std::env::var("PELAGOS_TEST_USER").ok().filter(|n| !n.is_empty()) else {
                    skip(self.label(), "PELAGOS_TEST_USER is not set (scripts/test-all creates the user and sets it)");
                    return None;
                };
                match lookup_user(&name) {
                    Some(u) if u.uid != 0 => Some(u),
                    _ => {
                        skip(self.label(), &format!("test user {name} does not exist or is root"));
                        return None;
                    }
                }
            }
        };
        if let Some(u) = &user
            && let Err(why) = tun_usable_by(u)
        {
            skip(self.label(), &why);
            return None;
        }
        Some(Env { tier: self, user, bin: shared_binary(), accel: false })
    }
}

fn tun_usable_by(user: &TestUser) -> Result<(), String> {
    let meta = fs::metadata("/dev/net/tun").map_err(|e| format!("/dev/net/tun: {e}"))?;
    let mode = meta.mode();
    let ok = mode & 0o006 == 0o006 || (meta.uid() == user.uid && mode & 0o600 == 0o600);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "/dev/net/tun is mode {:04o}: rootless pasta cannot open it (scripts/test-all sets 0666)",
            mode & 0o7777
        ))
    }
}

/// A copy of the binary every user can execute (the build tree may not be
/// traversable). One copy per build, shared by every test binary and kept
/// between runs (`/tmp/pelagos-net-itest/pelagos-net-<size>-<mtime>`);
/// copies of builds older than an hour are removed, so repeated runs do not
/// fill the disk.
fn shared_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = Path::new(env!("CARGO_BIN_EXE_pelagos-net"));
        let dir = std::env::temp_dir().join("pelagos-net-itest");
        match fs::create_dir(&dir) {
            Ok(()) => fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap(),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => panic!("{}: {e}", dir.display()),
        }
        let meta = fs::symlink_metadata(&dir).unwrap();
        assert!(
            meta.is_dir() && meta.uid() == nix::unistd::geteuid().as_raw() && meta.mode() & 0o022 == 0,
            "{} must be a directory of ours that nobody else can write; remove it",
            dir.display()
        );
        let built = fs::metadata(src).unwrap();
        let mtime = built.modified().unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let dst = dir.join(format!("pelagos-net-{}-{mtime}", built.len()));
        if fs::metadata(&dst).map(|m| m.len()).ok() != Some(built.len()) {
            let tmp = dir.join(format!(".copy-{}", std::process::id()));
            fs::copy(src, &tmp).unwrap();
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
            fs::rename(&tmp, &dst).unwrap();
        }
        remove_stale_copies(&dir, &dst);
        dst
    })
    .clone()
}

/// Removes copies (and interrupted copies) older than an hour, other than `keep`.
fn remove_stale_copies(dir: &Path, keep: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > Duration::from_secs(3600)));
        if path != keep && old {
            let _ = fs::remove_file(&path);
        }
    }
}

/// A tier that can run.
#[derive(Debug, Clone)]
pub struct Env {
    pub tier: Tier,
    pub user: Option<TestUser>,
    pub bin: PathBuf,
    /// Every `pelagos-net` of the test runs with `--accel socket`
    /// (`PELAGOS_NET_ACCEL`), where the mode and the host allow it.
    pub accel: bool,
}

/// A tier whose runs ask for the accelerator: `tier_tests!(rootless_accel,
/// super::Accel(super::Tier::Rootless), [...])` runs the same scenarios
/// with it.
#[derive(Debug, Clone, Copy)]
pub struct Accel(pub Tier);

impl Accel {
    /// The tier's environment, with the accelerator asked for.
    pub fn require(self) -> Option<Env> {
        self.0.require().map(|env| Env { accel: true, ..env })
    }
}

/// The throwaway host namespace's own (non-loopback) address.
pub const HOST_ADDR: &str = "10.231.0.2";
/// The fake upstream's address, the host namespace's default gateway.
pub const UPSTREAM_ADDR: &str = "10.231.0.1";

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// A throwaway host namespace behind a fake upstream, deleted on drop.
#[derive(Debug)]
pub struct Topology {
    pub host: String,
    pub upstream: String,
    pub run_dir: PathBuf,
    pub netns_dir: PathBuf,
    pub config_dir: PathBuf,
    /// The veth ends: in the host namespace, in the upstream namespace.
    pub veths: (String, String),
    _tmp: tempfile::TempDir,
}

impl Topology {
    pub fn new(env: &Env) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        // The whole pid (at most 7 digits): "tv<pid>-<n>h" stays within
        // the 15 bytes of an interface name.
        let tag = format!("{}-{n}", std::process::id());
        let host = format!("pnt-h{tag}");
        let upstream = format!("pnt-u{tag}");
        for ns in [&host, &upstream] {
            // A name with our pid in it can only be left by a killed earlier
            // process that had the same pid: stale, so replace it.
            if Path::new("/run/netns").join(ns).exists() {
                ip(&["netns", "del", ns]);
            }
            ip(&["netns", "add", ns]);
        }
        let (vh, vu) = (format!("tv{tag}h"), format!("tv{tag}u"));
        ip(&["link", "add", &vh, "netns", &host, "type", "veth", "peer", "name", &vu, "netns", &upstream]);
        for (ns, dev, addr) in [(&host, &vh, "10.231.0.2/24"), (&upstream, &vu, "10.231.0.1/24")] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
        }
        ip(&["-n", &host, "route", "add", "default", "via", "10.231.0.1"]);
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let run_dir = tmp.path().join("run");
        let netns_dir = tmp.path().join("netns");
        let config_dir = tmp.path().join("config");
        if let Some(u) = &env.user {
            // The user's own directories, as a real user has them (its
            // network definitions are written to the configuration one).
            for dir in [&run_dir, &config_dir] {
                fs::create_dir(dir).unwrap();
                nix::unistd::chown(dir, Some(u.uid.into()), Some(u.gid.into())).unwrap();
                fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).unwrap();
            }
        }
        Self { host, upstream, run_dir, netns_dir, config_dir, veths: (vh, vu), _tmp: tmp }
    }

    /// Give the topology routed IPv6 too: host fd00:231::2/64, upstream
    /// fd00:231::1/64, the host's default route through the upstream.
    /// Returns once both addresses are usable (duplicate address detection
    /// is turned off, so they are at once).
    pub fn add_ipv6(&self) {
        for (ns, dev, addr) in
            [(&self.host, &self.veths.0, "fd00:231::2/64"), (&self.upstream, &self.veths.1, "fd00:231::1/64")]
        {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev, "nodad"]);
        }
        ip(&["-n", &self.host, "-6", "route", "add", "default", "via", "fd00:231::1"]);
        wait_ipv6_usable(&self.host);
        wait_ipv6_usable(&self.upstream);
    }

    /// `pelagos-net ARGS` inside the host namespace, as the tier's user.
    pub fn cli(&self, env: &Env, args: &[&str]) -> Command {
        self.cli_wrapped(env, &[], args)
    }

    /// [`Topology::cli`] with `wrapper` (a command that execs the rest, run
    /// as root) between `ip netns exec` and the switch to the tier's user.
    pub fn cli_wrapped(&self, env: &Env, wrapper: &[std::ffi::OsString], args: &[&str]) -> Command {
        self.cli_in(env, wrapper, &self.run_dir, args)
    }

    /// [`Topology::cli`] recording under `run_dir` instead of the
    /// topology's own (another user's runs, as a run sees them).
    pub fn cli_with_run_dir(&self, env: &Env, run_dir: &Path, args: &[&str]) -> Command {
        self.cli_in(env, &[], run_dir, args)
    }

    fn cli_in(&self, env: &Env, wrapper: &[std::ffi::OsString], run_dir: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(which("ip").expect("ip"));
        cmd.args(["netns", "exec", &self.host]);
        cmd.args(wrapper);
        if let Some(u) = &env.user {
            let setpriv = which("setpriv").expect("setpriv");
            cmd.arg(setpriv).args([
                &format!("--reuid={}", u.uid),
                &format!("--regid={}", u.gid),
                "--clear-groups",
                "--",
            ]);
        }
        cmd.arg(&env.bin);
        cmd.arg("--run-dir").arg(run_dir).arg("--netns-dir").arg(&self.netns_dir);
        cmd.arg("--config-dir").arg(&self.config_dir);
        cmd.args(args);
        cmd.env_clear()
            .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8");
        if let Some(u) = &env.user {
            cmd.env("HOME", "/tmp").env("USER", &u.name);
        }
        if env.accel {
            cmd.env("PELAGOS_NET_ACCEL", "socket");
        }
        cmd.stdin(Stdio::null());
        // The command gets default signal dispositions, as from a terminal,
        // whatever the test runner inherited (a background job ignores
        // SIGINT and SIGQUIT, `nohup` SIGHUP, and an ignored signal stays
        // ignored across exec, where a shell cannot even trap it).
        // SAFETY: between fork and exec the closure only calls signal(2),
        // which is async-signal-safe, and allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                for sig in [libc::SIGINT, libc::SIGQUIT, libc::SIGHUP, libc::SIGTERM] {
                    libc::signal(sig, libc::SIG_DFL);
                }
                Ok(())
            });
        }
        cmd
    }

    /// Run `f` on a thread that has entered the host namespace.
    pub fn in_host<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        in_netns(&self.host, f)
    }

    /// Inode of the host namespace, to find processes left inside it.
    fn host_ns_inode(&self) -> u64 {
        fs::metadata(Path::new("/run/netns").join(&self.host)).unwrap().ino()
    }

    /// Processes (pid, name) whose network namespace is the host namespace.
    pub fn processes_inside(&self) -> Vec<(u32, String)> {
        let ino = self.host_ns_inode();
        let mut out = Vec::new();
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            if fs::metadata(entry.path().join("ns/net")).is_ok_and(|m| m.ino() == ino) {
                let name = fs::read_to_string(entry.path().join("comm")).unwrap_or_default().trim().to_owned();
                out.push((pid, name));
            }
        }
        out
    }

    /// Assert that nothing the run created is left: no process in the host
    /// namespace (pasta is reaped in the background, so allow it a moment),
    /// no run record, no named netns.
    pub fn assert_clean(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = self.processes_inside();
            if left.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "processes left in the host namespace: {left:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let runs = self.run_dir.join("runs");
        let records: Vec<_> =
            fs::read_dir(&runs).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
        assert!(records.is_empty(), "run records left in {}: {records:?}", runs.display());
        let names: Vec<_> =
            fs::read_dir(&self.netns_dir).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
        assert!(names.is_empty(), "named netns left in {}: {names:?}", self.netns_dir.display());
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for (pid, _) in self.processes_inside() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
        for ns in [&self.host, &self.upstream] {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
    }
}

/// Run `f` on a fresh thread that has joined the named netns.
pub fn in_netns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    in_netns_path(Path::new("/run/netns").join(name), f)
}

/// Wait until every global IPv6 address of namespace `name` can be used:
/// `ip addr add` returns before the kernel's address work (run even for
/// `nodad`, on a workqueue) inserts the address's `local` route, and a
/// packet sent to it meanwhile is lost.
pub fn wait_ipv6_usable(name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = in_netns(name, || pelagos_net::host::procnet6::read_ipv6_state(Path::new("/proc"), None));
        match state {
            Ok(s) if s.unusable.is_empty() => return,
            other => assert!(Instant::now() < deadline, "IPv6 addresses of {name} never became usable: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Run `f` on a fresh thread that has joined the network namespace at
/// `path` (a `/run/netns` name or a `/proc/<pid>/ns/net`).
pub fn in_netns_path<T: Send + 'static>(path: PathBuf, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        let ns = fs::File::open(&path).unwrap();
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// stdout+stderr of an `Output`, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A port that is free in a fresh namespace and unlikely to collide.
pub fn port(base: u16) -> u16 {
    base + (COUNTER.fetch_add(1, Ordering::SeqCst) % 100) as u16
}

pub fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

//! DNS test rig: local DNS servers (Debian's dnsmasq) inside the test's
//! throwaway namespaces, and an /etc of the test's making for `pelagos-net`
//! (an overlay on /etc in the private mount namespace `ip netns exec`
//! gives each command), so a test can name a stub on 127.0.0.53, a chain of
//! symlinks, a dangling link or no resolv.conf at all without touching the
//! host's files. The machine's real resolver is never asked.

use super::{Env, Topology, in_netns, which};
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The test domain every server answers (subdomains included).
pub const DOMAIN: &str = "example.test";
/// What the stub on the host's loopback answers for it.
pub const STUB_ANSWER: &str = "198.51.100.99";
/// Where the stub listens.
pub const STUB_ADDR: &str = "127.0.0.53";
/// A name with more A records than fit a UDP answer (TC set, TCP needed).
pub const BIG_NAME: &str = "big.bulk.test";
/// How many records it has.
pub const BIG_COUNT: usize = 120;

/// dnsmasq, or a loud skip.
pub fn dnsmasq() -> Option<PathBuf> {
    let found = which("dnsmasq");
    if found.is_none() {
        super::skip("dns", "dnsmasq is not installed (scripts/setup-host installs dnsmasq-base)");
    }
    found
}

/// A dnsmasq inside a test namespace; killed on drop.
pub struct DnsServer {
    child: Child,
    _hosts: tempfile::TempDir,
    /// Its query log, when it keeps one.
    log: Option<PathBuf>,
}

impl DnsServer {
    /// Serve `DOMAIN` as `answer` (and `BIG_NAME`) on `addr`:53 inside netns `ns`.
    pub fn start(ns: &str, addr: &str, answer: &str) -> Self {
        Self::start_with(ns, addr, answer, false)
    }

    /// [`DnsServer::start`], answering with a TTL of 60 s and logging every
    /// query it gets ([`DnsServer::queries`] counts them).
    pub fn start_counting(ns: &str, addr: &str, answer: &str) -> Self {
        Self::start_with(ns, addr, answer, true)
    }

    /// How many A queries for `name` it got.
    pub fn queries(&self, name: &str) -> usize {
        let log = self.log.as_ref().expect("a counting server");
        let needle = format!("query[A] {name} ");
        fs::read_to_string(log).unwrap_or_default().lines().filter(|l| l.contains(&needle)).count()
    }

    fn start_with(ns: &str, addr: &str, answer: &str, counting: bool) -> Self {
        let hosts = tempfile::tempdir().unwrap();
        let file = hosts.path().join("big");
        let lines: String = (1..=BIG_COUNT).map(|i| format!("198.51.100.{i} {BIG_NAME}\n")).collect();
        fs::write(&file, lines).unwrap();
        fs::set_permissions(hosts.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let log = counting.then(|| hosts.path().join("queries.log"));
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null"])
            .args(["--no-resolv", "--no-hosts", "--no-poll", "--bind-interfaces", "--pid-file=", "--user=root"])
            .arg(format!("--listen-address={addr}"))
            .arg(format!("--address=/{DOMAIN}/{answer}"))
            .arg(format!("--addn-hosts={}", file.display()))
            .args(log.iter().flat_map(|l| {
                ["--local-ttl=60".into(), "--log-queries".into(), format!("--log-facility={}", l.display())]
            }))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq");
        let server = Self { child, _hosts: hosts, log };
        let target: std::net::SocketAddr = format!("{addr}:53").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let up = in_netns(ns, move || {
            while Instant::now() < deadline {
                if std::net::TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        });
        assert!(up, "dnsmasq did not start listening on {target} in {ns}");
        server
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How the test's /etc/resolv.conf looks.
pub enum Resolv<'a> {
    /// A file with this text.
    File(&'a str),
    /// `resolv.conf -> alt/resolv.conf -> <tmp>/run/stub-resolv.conf` holding this text.
    Chain(&'a str),
    /// `resolv.conf -> <tmp>/gone/stub-resolv.conf`, which does not exist.
    Dangling,
    /// No resolv.conf at all.
    Missing,
}

/// An overlay's upper layer for /etc; what the test put there stays readable
/// after the run, to check that nothing wrote to it.
pub struct Etc {
    dir: tempfile::TempDir,
}

impl Etc {
    pub fn new(resolv: Resolv<'_>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let etc = Self { dir };
        for d in ["upper", "work", "run"] {
            fs::create_dir(etc.dir.path().join(d)).unwrap();
        }
        fs::set_permissions(etc.upper(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(etc.dir.path().join("run"), fs::Permissions::from_mode(0o755)).unwrap();
        let conf = etc.upper().join("resolv.conf");
        match resolv {
            Resolv::File(text) => write_644(&conf, text),
            Resolv::Chain(text) => {
                let stub = etc.stub_path();
                write_644(&stub, text);
                fs::create_dir(etc.upper().join("alt")).unwrap();
                fs::set_permissions(etc.upper().join("alt"), fs::Permissions::from_mode(0o755)).unwrap();
                std::os::unix::fs::symlink(&stub, etc.upper().join("alt/resolv.conf")).unwrap();
                std::os::unix::fs::symlink("alt/resolv.conf", &conf).unwrap();
            }
            Resolv::Dangling => {
                std::os::unix::fs::symlink(etc.dir.path().join("gone/stub-resolv.conf"), &conf).unwrap();
            }
            Resolv::Missing => {
                // An overlay whiteout hides the lower layer's file.
                nix::sys::stat::mknod(&conf, nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0).unwrap();
            }
        }
        etc
    }

    fn upper(&self) -> PathBuf {
        self.dir.path().join("upper")
    }

    /// The final file of a [`Resolv::Chain`].
    pub fn stub_path(&self) -> PathBuf {
        self.dir.path().join("run/stub-resolv.conf")
    }

    /// Every file and link the test made, with its bytes (or link target).
    pub fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![self.upper(), self.dir.path().join("run")];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                let meta = fs::symlink_metadata(&p).unwrap();
                if meta.is_dir() {
                    stack.push(p);
                } else if meta.file_type().is_symlink() {
                    out.push((p.clone(), fs::read_link(&p).unwrap().into_os_string().into_encoded_bytes()));
                } else if meta.is_file() {
                    out.push((p.clone(), fs::read(&p).unwrap()));
                } else {
                    out.push((p, b"<special>".to_vec()));
                }
            }
        }
        out.sort();
        out
    }

    /// `with-etc UPPER WORK`: the wrapper for [`Topology::cli_wrapped`].
    pub fn wrapper(&self) -> Vec<OsString> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/with-etc");
        vec![script.into(), self.upper().into(), self.dir.path().join("work").into()]
    }
}

fn write_644(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
}

/// The host's own /etc/resolv.conf and /etc/hosts, byte for byte.
pub fn host_files() -> (Vec<u8>, Vec<u8>) {
    (fs::read("/etc/resolv.conf").unwrap_or_default(), fs::read("/etc/hosts").unwrap_or_default())
}

/// `pelagos-net ARGS` with the test's /etc, run to completion (60 s watchdog).
pub fn run(topo: &Topology, env: &Env, etc: &Etc, args: &[&str]) -> Output {
    run_env(topo, env, etc, args, &[])
}

/// [`run`] with these environment variables set for pelagos-net.
pub fn run_env(topo: &Topology, env: &Env, etc: &Etc, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let child = topo
        .cli_wrapped(env, &etc.wrapper(), args)
        .envs(vars.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pelagos-net");
    let _watchdog = super::running::Watchdog::arm(&child, Duration::from_secs(60));
    child.wait_with_output().unwrap()
}

/// Exits 0 when no name given resolves, 1 (naming it) otherwise.
pub const NONE_RESOLVE: &str = r#"import socket,sys
for n in sys.argv[1:]:
    try: print('resolved', n, socket.gethostbyname(n)); sys.exit(1)
    except socket.gaierror: pass
"#;

/// The addresses `getent ahostsv4 NAME` printed (one per address).
pub fn addresses(stdout: &str) -> Vec<String> {
    let mut out: Vec<String> = stdout
        .lines()
        .filter(|l| l.contains("STREAM"))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    out.dedup();
    out
}

//! The host's side of name resolution, read once per run: its resolv.conf
//! (through any chain of symlinks), its hosts file and its own address.
//!
//! A thin shell over the filesystem; everything it returns is plain data for
//! [`super::decide`](mod@super::decide). The directory is injected (`/etc` in production, a
//! temporary directory in tests). Nothing here writes.

use super::resolvconf::{ResolvConf, ResolverKind};
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Most bytes read from a resolv.conf or hosts file (a larger file is cut:
/// glibc would not read past a few KiB of a resolv.conf either).
const MAX_FILE: u64 = 1 << 20;

/// How the host's resolv.conf looks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ResolvFile {
    /// Read: its parsed contents, and the symlink chain that led to it (empty
    /// when the path is the file itself).
    Present {
        /// The parsed file.
        conf: ResolvConf,
        /// The symlinks followed, in order, as written in each link.
        chain: Vec<PathBuf>,
    },
    /// There is no such file.
    Missing,
    /// A symlink chain that ends nowhere.
    Dangling {
        /// The symlinks followed.
        chain: Vec<PathBuf>,
    },
    /// It exists but cannot be read.
    Unreadable {
        /// Why.
        error: String,
    },
}

impl ResolvFile {
    /// The parsed file, when there is one.
    pub fn conf(&self) -> Option<&ResolvConf> {
        match self {
            Self::Present { conf, .. } => Some(conf),
            _ => None,
        }
    }

    /// Its kind, for `doctor` and `plan`.
    pub fn kind(&self) -> ResolverKind {
        ResolverKind::of(self.conf())
    }

    /// Whether the path exists at all (a dangling link does: a mount can go on it).
    pub fn path_exists(&self) -> bool {
        !matches!(self, Self::Missing)
    }

    /// One line for `doctor`.
    pub fn describe(&self, path: &Path) -> String {
        let via = |chain: &[PathBuf]| {
            if chain.is_empty() {
                String::new()
            } else {
                let hops: Vec<String> = chain.iter().map(|p| p.display().to_string()).collect();
                format!(" (a symlink: {})", hops.join(" -> "))
            }
        };
        match self {
            Self::Present { conf, chain } => {
                let servers: Vec<String> = conf.nameservers.iter().map(|s| s.to_string()).collect();
                let list = if servers.is_empty() { "no nameserver".to_string() } else { servers.join(", ") };
                format!("{}{}: {} ({list})", path.display(), via(chain), self.kind().describe())
            }
            Self::Missing => format!("{}: missing; no resolver is configured", path.display()),
            Self::Dangling { chain } => {
                format!("{}{}: the link leads nowhere; no resolver is configured", path.display(), via(chain))
            }
            Self::Unreadable { error } => format!("{}: unreadable ({error})", path.display()),
        }
    }
}

/// The host's DNS files, as read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostFiles {
    /// `<etc>/resolv.conf`.
    pub resolv: ResolvFile,
    /// `<etc>/hosts` (`None`: missing or unreadable).
    pub hosts: Option<String>,
    /// Whether `<etc>/hosts` exists as a path (a mount can go on it).
    pub hosts_path_exists: bool,
}

impl HostFiles {
    /// Read `<etc>/resolv.conf` and `<etc>/hosts`.
    pub fn read(etc: &Path) -> Self {
        let hosts_path = etc.join("hosts");
        Self {
            resolv: read_resolv(&etc.join("resolv.conf")),
            hosts: read_text(&hosts_path).ok(),
            hosts_path_exists: hosts_path.symlink_metadata().is_ok(),
        }
    }
}

fn read_text(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?.take(MAX_FILE).read_to_string(&mut text)?;
    Ok(text)
}

/// Follow the symlinks of `path` (at most 40, as the kernel) and read the file.
pub fn read_resolv(path: &Path) -> ResolvFile {
    let mut chain = Vec::new();
    let mut at = path.to_path_buf();
    for _ in 0..40 {
        match std::fs::read_link(&at) {
            Ok(target) => {
                chain.push(target.clone());
                at = at.parent().map_or_else(|| target.clone(), |dir| dir.join(&target));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && chain.is_empty() => return ResolvFile::Missing,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return ResolvFile::Dangling { chain },
            Err(_) => break,
        }
    }
    match read_text(path) {
        Ok(text) => ResolvFile::Present { conf: ResolvConf::parse(&text), chain },
        Err(e) if e.kind() == io::ErrorKind::NotFound && !chain.is_empty() => ResolvFile::Dangling { chain },
        Err(e) if e.kind() == io::ErrorKind::NotFound => ResolvFile::Missing,
        Err(e) => ResolvFile::Unreadable { error: e.to_string() },
    }
}

/// The source address of the host's IPv4 default route: a UDP `connect`
/// makes the kernel pick it (no packet is sent); `None` without a route.
pub fn default_source_address() -> Option<Ipv4Addr> {
    let sock = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    // TEST-NET-2: never a real peer, and connect on UDP sends nothing.
    sock.connect((Ipv4Addr::new(198, 51, 100, 1), 9)).ok()?;
    match sock.local_addr().ok()?.ip() {
        std::net::IpAddr::V4(ip) if !ip.is_unspecified() && !ip.is_loopback() => Some(ip),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_two_hop_chain_is_followed_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir_all(run.join("resolve")).unwrap();
        std::fs::write(run.join("resolve/stub-resolv.conf"), "nameserver 127.0.0.53\nsearch x.test\n").unwrap();
        let etc = dir.path().join("etc");
        std::fs::create_dir_all(etc.join("alt")).unwrap();
        symlink("../../run/resolve/stub-resolv.conf", etc.join("alt/resolv.conf")).unwrap();
        symlink("alt/resolv.conf", etc.join("resolv.conf")).unwrap();

        let files = HostFiles::read(&etc);

        let ResolvFile::Present { conf, chain } = &files.resolv else { panic!("{:?}", files.resolv) };
        assert_eq!(conf.search, ["x.test"]);
        assert_eq!(chain, &[PathBuf::from("alt/resolv.conf"), PathBuf::from("../../run/resolve/stub-resolv.conf")]);
        assert_eq!(files.resolv.kind(), ResolverKind::StubOnLoopback);
        assert!(files.hosts.is_none() && !files.hosts_path_exists);
        assert!(files.resolv.describe(&etc.join("resolv.conf")).contains("alt/resolv.conf -> ../../run"));
    }

    #[test]
    fn dangling_and_missing_files_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_resolv(&dir.path().join("resolv.conf")), ResolvFile::Missing);
        symlink("/nonexistent/stub-resolv.conf", dir.path().join("resolv.conf")).unwrap();
        let read = read_resolv(&dir.path().join("resolv.conf"));
        assert_eq!(read, ResolvFile::Dangling { chain: vec!["/nonexistent/stub-resolv.conf".into()] });
        assert!(read.path_exists());
        assert_eq!(read.kind(), ResolverKind::Missing);
    }
}

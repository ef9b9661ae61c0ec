//! IP leases per network: one file per leased address, under a file lock.
//!
//! `<run>/leases/<network>/<address>` holds one lease (its holder, as
//! JSON); `<run>/leases/<network>/.last` the last address handed out, where
//! the next search starts. An allocation claims an address by hard-linking
//! a fully written temp file to its name: the link fails when the address
//! is taken, so a lease appears whole or not at all, with its owner in the
//! same atomic step. Its cost does not depend on how many leases the network
//! has (no table is read, parsed and rewritten per container). Every change
//! happens while holding an exclusive `flock` on `<network>.lock`, so
//! concurrent attaches (threads or processes) keep the round-robin order
//! and a release never races an allocation of the same address.

use crate::bridge::network::NetworkDef;
use crate::host::procfs::ProcessId;
use crate::model::ipam;
use nix::fcntl::{Flock, FlockArg};
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Who holds a lease.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    /// Container / run id (for a CNI attachment: `<container id>/<ifname>`).
    pub id: String,
    /// Owning process (for a CNI attachment: the plugin process that made it).
    pub owner: ProcessId,
    /// The lease belongs to a CNI attachment, whose lifecycle the container
    /// runtime owns: `gc` never releases it because its owner process is
    /// gone (the plugin exits after every call); CNI `DEL` and `GC` do.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cni: bool,
}

/// Errors of lease handling.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The requested address is held by another container.
    #[error("address {addr} on network {network} is already leased to {holder}")]
    Taken {
        /// Network.
        network: String,
        /// Address.
        addr: Ipv4Addr,
        /// Current holder id.
        holder: String,
    },
    /// The requested address is not assignable on the network.
    #[error("address {addr} is not a usable container address of network {network} ({subnet}, gateway {gateway})")]
    NotAssignable {
        /// Network.
        network: String,
        /// Address.
        addr: Ipv4Addr,
        /// Subnet.
        subnet: crate::model::cidr::Ipv4Net,
        /// Gateway.
        gateway: Ipv4Addr,
    },
    /// No free address left.
    #[error("network {0} has no free address left")]
    Exhausted(String),
    /// A lease file could not be read or written.
    #[error("{op} {path}")]
    Io {
        /// Operation.
        op: &'static str,
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A lease file is corrupted.
    #[error("lease file {path} is corrupted; delete it when no container of this network runs")]
    Corrupt {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
}

/// What a sweep of one network found (see [`LeaseStore::sweep`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Leases whose owner process is dead (CNI leases never are).
    pub dead: Vec<(Ipv4Addr, Lease)>,
    /// Temp files of writers that died between writing and linking.
    pub temp_files: usize,
    /// Lease files that do not parse (named, never removed by a sweep).
    pub corrupt: Vec<PathBuf>,
}

/// Lease files under `<run>/leases`.
#[derive(Debug, Clone)]
pub struct LeaseStore {
    dir: PathBuf,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LeaseError + 'a {
    move |source| LeaseError::Io { op, path: path.to_owned(), source }
}

/// Name of the hint file holding the last address handed out.
const LAST: &str = ".last";
/// Prefix of temp files (a lease before it is linked to its address).
const TMP_PREFIX: &str = ".tmp-";

fn create_private_dir(dir: &Path) -> Result<(), LeaseError> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_err("create", dir))?;
    crate::state::safefs::check_private_dir(dir, nix::unistd::geteuid().as_raw())
        .map_err(io_err("use lease directory", dir))
}

impl LeaseStore {
    /// `<run_dir>/leases`.
    pub fn new(run_dir: &Path) -> Self {
        Self { dir: run_dir.join("leases") }
    }

    /// The directory of one network's leases.
    pub fn network_dir(&self, network: &str) -> PathBuf {
        self.dir.join(network)
    }

    /// Hold the network's setup lock (bridge and firewall table creation)
    /// until the returned guard drops.
    pub fn lock_setup(&self, network: &str) -> Result<Flock<fs::File>, LeaseError> {
        self.lock(&format!("{network}.setup.lock"))
    }

    /// Create the directory and hold an exclusive `flock` on `<dir>/<name>`.
    fn lock(&self, name: &str) -> Result<Flock<fs::File>, LeaseError> {
        create_private_dir(&self.dir)?;
        let lock_path = self.dir.join(name);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| io_err("lock", &lock_path)(e.into()))
    }

    /// Hold the network's lease lock and make sure its directory exists.
    fn lock_network(&self, network: &str) -> Result<(Flock<fs::File>, PathBuf), LeaseError> {
        let lock = self.lock(&format!("{network}.lock"))?;
        let dir = self.network_dir(network);
        create_private_dir(&dir)?;
        Ok((lock, dir))
    }

    /// Lease an address on `def` for `id`: `want` if given (refused clearly
    /// when taken or unusable), else the next free one.
    pub fn allocate(
        &self,
        def: &NetworkDef,
        id: &str,
        owner: ProcessId,
        want: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, LeaseError> {
        self.allocate_lease(def, &Lease { id: id.to_owned(), owner, cni: false }, want)
    }

    /// Lease an address on `def` for `lease`'s holder (see [`Self::allocate`]).
    pub fn allocate_lease(
        &self,
        def: &NetworkDef,
        lease: &Lease,
        want: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, LeaseError> {
        let network = def.name.to_string();
        let (_lock, dir) = self.lock_network(&network)?;
        let json = serde_json::to_vec(lease).map_err(|e| io_err("encode", &dir)(e.into()))?;
        let tmp = dir.join(format!("{TMP_PREFIX}{}", std::process::id()));
        write_new(&tmp, &json).map_err(io_err("write", &tmp))?;
        crate::fault::point("lease.tmp-written");
        let claimed = match want {
            Some(addr) => {
                if !ipam::is_assignable(def.subnet, def.gateway, addr) {
                    Err(LeaseError::NotAssignable {
                        network: network.clone(),
                        addr,
                        subnet: def.subnet,
                        gateway: def.gateway,
                    })
                } else if claim(&tmp, &dir, addr).map_err(io_err("create lease in", &dir))? {
                    Ok(addr)
                } else {
                    let holder =
                        read_lease(&dir.join(addr.to_string())).map(|l| l.id).unwrap_or_else(|e| e.to_string());
                    Err(LeaseError::Taken { network: network.clone(), addr, holder })
                }
            }
            None => {
                let last = fs::read_to_string(dir.join(LAST)).ok().and_then(|s| s.trim().parse().ok());
                let mut found = Err(LeaseError::Exhausted(network.clone()));
                for addr in ipam::candidates_in(def.subnet, def.options.ip_range, def.gateway, last) {
                    if claim(&tmp, &dir, addr).map_err(io_err("create lease in", &dir))? {
                        found = Ok(addr);
                        break;
                    }
                }
                found
            }
        };
        let _ = fs::remove_file(&tmp);
        let addr = claimed?;
        // Only a hint for where the next search starts: a lost or torn write
        // makes the next allocation start from the subnet's first address.
        let last_path = dir.join(LAST);
        let tmp_last = dir.join(format!("{TMP_PREFIX}last"));
        let _ = crate::state::store::write_atomic(&tmp_last, &last_path, addr.to_string().as_bytes());
        Ok(addr)
    }

    /// Release `addr` if `id` holds it (releasing twice is not an error).
    pub fn release(&self, network: &str, addr: Ipv4Addr, id: &str) -> Result<(), LeaseError> {
        let (_lock, dir) = self.lock_network(network)?;
        let path = dir.join(addr.to_string());
        match read_lease(&path) {
            Ok(l) if l.id == id => fs::remove_file(&path).map_err(io_err("remove", &path)),
            Ok(_) => Ok(()),
            Err(LeaseError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Release every lease of `network` held by `id` (a CNI `DEL` that has
    /// no record left to name the address). Returns the addresses released.
    pub fn release_holder(&self, network: &str, id: &str) -> Result<Vec<Ipv4Addr>, LeaseError> {
        let (_lock, dir) = self.lock_network(network)?;
        let mut released = Vec::new();
        for (addr, lease) in read_all(&dir)?.0 {
            if lease.id == id {
                let path = dir.join(addr.to_string());
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
                released.push(addr);
            }
        }
        Ok(released)
    }

    /// Remove the temp files writers that died left in `network`'s
    /// directory. Every writer holds the network's lock while its temp file
    /// exists, so under the lock any temp file is a dead writer's.
    pub fn remove_stale_temps(&self, network: &str) -> Result<usize, LeaseError> {
        let dir = self.network_dir(network);
        if !dir.exists() {
            return Ok(0);
        }
        let (_lock, dir) = self.lock_network(network)?;
        let temps = read_all(&dir)?.2;
        for tmp in &temps {
            fs::remove_file(tmp).map_err(io_err("remove", tmp))?;
        }
        Ok(temps.len())
    }

    /// Networks that have leases (a lease directory).
    pub fn networks(&self) -> Result<Vec<String>, LeaseError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("read", &self.dir)(e)),
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Under the network's lock: remove temp files a crash left, and release
    /// (unless `dry_run`) every lease whose owner is dead, unless a live
    /// record holds it (`live`: an attachment outlives the process that
    /// leased for it). CNI leases are left to the CNI verbs. A lease is written with its owner's pid and
    /// start time in the same atomic step that allocates it, so a crash
    /// between leasing and recording the run leaves nothing this cannot find.
    pub fn sweep(&self, network: &str, proc_root: &Path, dry_run: bool, live: &[String]) -> Result<Sweep, LeaseError> {
        let (_lock, dir) = self.lock_network(network)?;
        let (leases, corrupt, temps) = read_all(&dir)?;
        let dead: Vec<(Ipv4Addr, Lease)> = leases
            .into_iter()
            .filter(|(_, l)| !l.cni && !l.owner.is_alive(proc_root) && !live.contains(&l.id))
            .collect();
        if !dry_run {
            for (addr, _) in &dead {
                let path = dir.join(addr.to_string());
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
            }
            for tmp in &temps {
                fs::remove_file(tmp).map_err(io_err("remove", tmp))?;
            }
        }
        Ok(Sweep { dead, temp_files: temps.len(), corrupt })
    }

    /// Current leases of a network, creating nothing: a network that never
    /// leased an address has no lease directory, and reading it must not make one.
    pub fn peek(&self, network: &str) -> Result<BTreeMap<Ipv4Addr, Lease>, LeaseError> {
        match fs::symlink_metadata(self.network_dir(network)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            _ => self.leases(network),
        }
    }

    /// Whether the lease directory exists (anything was ever leased).
    pub fn has_dir(&self) -> bool {
        fs::symlink_metadata(&self.dir).is_ok()
    }

    /// Remove a network's lease directory and lock files (`network rm`).
    /// Call while holding the network's setup lock, with no lease live.
    pub fn remove_files(&self, network: &str) -> Result<(), LeaseError> {
        let dir = self.network_dir(network);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err("remove", &dir)(e)),
            _ => {}
        }
        for name in [format!("{network}.lock"), format!("{network}.setup.lock"), format!("{network}.forward-accept")] {
            let path = self.dir.join(name);
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err("remove", &path)(e)),
                _ => {}
            }
        }
        Ok(())
    }

    /// Current leases of a network; a corrupted lease file is an error naming it.
    pub fn leases(&self, network: &str) -> Result<BTreeMap<Ipv4Addr, Lease>, LeaseError> {
        let dir = self.network_dir(network);
        if !dir.exists() {
            return Ok(BTreeMap::new());
        }
        let (_lock, dir) = self.lock_network(network)?;
        let (leases, corrupt, _) = read_all(&dir)?;
        if let Some(path) = corrupt.into_iter().next() {
            return read_lease(&path).map(|_| BTreeMap::new());
        }
        Ok(leases)
    }
}

/// Write `bytes` to a new file `path` (0600, never through a link; an old
/// temp file of ours is replaced).
fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    f.write_all(bytes)
}

/// Link the written lease `tmp` to `addr`'s name: `true` when claimed,
/// `false` when the address is taken.
fn claim(tmp: &Path, dir: &Path, addr: Ipv4Addr) -> io::Result<bool> {
    match fs::hard_link(tmp, dir.join(addr.to_string())) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

fn read_lease(path: &Path) -> Result<Lease, LeaseError> {
    let bytes = crate::state::safefs::read_nofollow(path).map_err(io_err("read", path))?;
    serde_json::from_slice(&bytes).map_err(|source| LeaseError::Corrupt { path: path.to_owned(), source })
}

/// Every lease in `dir`, the lease files that do not parse, and temp files.
type Listing = (BTreeMap<Ipv4Addr, Lease>, Vec<PathBuf>, Vec<PathBuf>);

fn read_all(dir: &Path) -> Result<Listing, LeaseError> {
    let mut out: Listing = Default::default();
    for entry in fs::read_dir(dir).map_err(io_err("read", dir))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(TMP_PREFIX) {
            out.2.push(entry.path());
            continue;
        }
        let Ok(addr) = name.parse::<Ipv4Addr>() else { continue };
        match read_lease(&entry.path()) {
            Ok(l) => {
                out.0.insert(addr, l);
            }
            Err(LeaseError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            Err(LeaseError::Corrupt { path, .. }) => out.1.push(path),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::network::default_network_def;
    use std::collections::BTreeSet;

    fn me() -> ProcessId {
        ProcessId { pid: std::process::id(), start_time: 1, pid_ns: None }
    }

    #[test]
    fn addresses_are_distinct_and_released() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LeaseStore::new(tmp.path());
        let def = default_network_def();
        let a = store.allocate(&def, "a", me(), None).unwrap();
        let b = store.allocate(&def, "b", me(), None).unwrap();
        assert_eq!((a.to_string().as_str(), b.to_string().as_str()), ("10.90.0.2", "10.90.0.3"));
        store.release("pelagos0", a, "a").unwrap();
        store.release("pelagos0", a, "a").unwrap();
        assert_eq!(store.leases("pelagos0").unwrap().len(), 1);
        let c = store.allocate(&def, "c", me(), None).unwrap();
        assert_eq!(c.to_string(), "10.90.0.4", "a released address is not reused at once");
        assert!(tmp.path().join("leases/pelagos0/10.90.0.4").is_file(), "one file per lease");
    }

    #[test]
    fn requested_address_is_honoured_or_refused_clearly() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LeaseStore::new(tmp.path());
        let def = default_network_def();
        let want: Ipv4Addr = "10.90.0.50".parse().unwrap();
        assert_eq!(store.allocate(&def, "a", me(), Some(want)).unwrap(), want);
        let err = store.allocate(&def, "b", me(), Some(want)).unwrap_err();
        assert_eq!(err.to_string(), "address 10.90.0.50 on network pelagos0 is already leased to a");
        let err = store.allocate(&def, "b", me(), Some("10.90.0.1".parse().unwrap())).unwrap_err();
        assert!(matches!(err, LeaseError::NotAssignable { .. }), "{err}");
    }

    #[test]
    fn a_full_subnet_is_exhausted_and_leaves_no_temp_file() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LeaseStore::new(tmp.path());
        let mut def = default_network_def();
        def.subnet = "10.90.0.0/30".parse().unwrap();
        store.allocate(&def, "a", me(), None).unwrap();
        let err = store.allocate(&def, "b", me(), None).unwrap_err();
        assert!(matches!(err, LeaseError::Exhausted(_)), "{err}");
        let names: Vec<_> =
            fs::read_dir(tmp.path().join("leases/pelagos0")).unwrap().flatten().map(|e| e.file_name()).collect();
        assert!(!names.iter().any(|n| n.to_string_lossy().starts_with(TMP_PREFIX)), "{names:?}");
    }

    #[test]
    fn cni_leases_survive_a_sweep_and_release_by_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LeaseStore::new(tmp.path());
        let def = default_network_def();
        let dead = ProcessId { pid: u32::MAX - 1, start_time: 1, pid_ns: None };
        let cni = Lease { id: "c1/eth0".into(), owner: dead, cni: true };
        let a = store.allocate_lease(&def, &cni, None).unwrap();
        store.allocate(&def, "gone", dead, None).unwrap();
        fs::write(tmp.path().join("leases/pelagos0/.tmp-1"), "{").unwrap();
        let sweep = store.sweep("pelagos0", Path::new("/proc"), false, &[]).unwrap();
        assert_eq!(sweep.dead.iter().map(|(_, l)| l.id.as_str()).collect::<Vec<_>>(), ["gone"]);
        assert_eq!(sweep.temp_files, 1);
        assert_eq!(store.leases("pelagos0").unwrap().keys().copied().collect::<Vec<_>>(), [a]);
        assert_eq!(store.release_holder("pelagos0", "c1/eth0").unwrap(), [a]);
        assert!(store.leases("pelagos0").unwrap().is_empty());
    }

    #[test]
    fn a_corrupted_lease_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LeaseStore::new(tmp.path());
        let def = default_network_def();
        let a = store.allocate(&def, "a", me(), None).unwrap();
        fs::write(tmp.path().join(format!("leases/pelagos0/{a}")), "{\"id\":").unwrap();
        let err = store.leases("pelagos0").unwrap_err();
        assert!(err.to_string().contains(&format!("leases/pelagos0/{a} is corrupted")), "{err}");
        assert_ne!(store.allocate(&def, "b", me(), None).unwrap(), a, "a corrupted lease still holds its address");
    }

    #[test]
    fn concurrent_allocations_never_collide() {
        let tmp = tempfile::tempdir().unwrap();
        let store = LeaseStore::new(tmp.path());
        let def = default_network_def();
        let handles: Vec<_> = (0..32)
            .map(|i| {
                let (store, def) = (store.clone(), def.clone());
                std::thread::spawn(move || store.allocate(&def, &format!("c{i}"), me(), None).unwrap())
            })
            .collect();
        let addrs: BTreeSet<Ipv4Addr> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(addrs.len(), 32);
        assert_eq!(store.leases("pelagos0").unwrap().len(), 32);
    }
}

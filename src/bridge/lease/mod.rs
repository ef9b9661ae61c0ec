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
//!
//! The files themselves (written whole, claimed by a hard link, read back)
//! are `files`' business.

mod files;

use crate::bridge::network::NetworkDef;
use crate::host::procfs::ProcessId;
use crate::model::ipam;
use files::{claim, create_private_dir, read_all, read_lease, write_new};
use nix::fcntl::{Flock, FlockArg};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Who holds a lease.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    /// The holder: the id of the record (run, attachment, CNI attachment)
    /// that names the lease.
    pub id: String,
    /// The process that made it (for an attachment, a CNI one included,
    /// that process may be gone while the attachment lives: its record
    /// keeps the lease).
    pub owner: ProcessId,
    /// A lease kept whatever its owner process (a library caller's choice):
    /// `gc` never releases it because its owner is gone; only its holder's
    /// undo does.
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
                let last = crate::state::safefs::read_small(&dir.join(LAST), 32)
                    .ok()
                    .and_then(|b| std::str::from_utf8(b.trim_ascii()).ok()?.parse().ok());
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


#[cfg(test)]
mod tests;

//! IP leases per network, under a file lock.
//!
//! `<run>/leases/<network>.json` holds the live leases and the last address
//! handed out; every change happens while holding an exclusive `flock` on
//! `<network>.lock`, so concurrent attaches (threads or processes) never
//! get the same address. Writes are atomic (temp file + rename).

use crate::bridge::network::NetworkDef;
use crate::host::procfs::ProcessId;
use crate::model::ipam;
use nix::fcntl::{Flock, FlockArg};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Who holds a lease.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    /// Container / run id.
    pub id: String,
    /// Owning process.
    pub owner: ProcessId,
}

/// One network's lease file.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeaseTable {
    /// Last address handed out (allocation continues after it).
    pub last: Option<Ipv4Addr>,
    /// Live leases.
    pub leases: BTreeMap<Ipv4Addr, Lease>,
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
    /// The lease file could not be read or written.
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
    /// The lease file is corrupted.
    #[error("lease file {path} is corrupted; delete it when no container of this network runs")]
    Corrupt {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
}

/// Lease files under `<run>/leases`.
#[derive(Debug, Clone)]
pub struct LeaseStore {
    dir: PathBuf,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LeaseError + 'a {
    move |source| LeaseError::Io { op, path: path.to_owned(), source }
}

impl LeaseStore {
    /// `<run_dir>/leases`.
    pub fn new(run_dir: &Path) -> Self {
        Self { dir: run_dir.join("leases") }
    }

    /// Hold the network's setup lock (bridge and firewall table creation)
    /// until the returned guard drops.
    pub fn lock_setup(&self, network: &str) -> Result<Flock<fs::File>, LeaseError> {
        self.lock(&format!("{network}.setup.lock"))
    }

    /// Create the directory and hold an exclusive `flock` on `<dir>/<name>`.
    fn lock(&self, name: &str) -> Result<Flock<fs::File>, LeaseError> {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir).map_err(io_err("create", &self.dir))?;
        crate::state::safefs::check_private_dir(&self.dir, nix::unistd::geteuid().as_raw())
            .map_err(io_err("use lease directory", &self.dir))?;
        let lock_path = self.dir.join(name);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| io_err("lock", &lock_path)(e.into()))
    }

    /// Run `f` on the network's table under its lock; `f`'s changes are saved
    /// when it returns `Ok`.
    pub fn update<T>(
        &self,
        network: &str,
        f: impl FnOnce(&mut LeaseTable) -> Result<T, LeaseError>,
    ) -> Result<T, LeaseError> {
        let _lock = self.lock(&format!("{network}.lock"))?;
        let path = self.dir.join(format!("{network}.json"));
        let mut table = match crate::state::safefs::read_nofollow(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| LeaseError::Corrupt { path: path.clone(), source })?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => LeaseTable::default(),
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let before = table.clone();
        let out = f(&mut table)?;
        if table != before {
            let tmp = self.dir.join(format!(".{network}.json.tmp"));
            let json = serde_json::to_vec(&table).map_err(|e| io_err("encode", &path)(e.into()))?;
            crate::state::store::write_atomic(&tmp, &path, &json).map_err(io_err("write", &path))?;
        }
        Ok(out)
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
        let network = def.name.to_string();
        self.update(&network, |t| {
            let addr = match want {
                Some(addr) => {
                    if !ipam::is_assignable(def.subnet, def.gateway, addr) {
                        return Err(LeaseError::NotAssignable {
                            network: network.clone(),
                            addr,
                            subnet: def.subnet,
                            gateway: def.gateway,
                        });
                    }
                    if let Some(holder) = t.leases.get(&addr) {
                        return Err(LeaseError::Taken { network: network.clone(), addr, holder: holder.id.clone() });
                    }
                    addr
                }
                None => {
                    let used: BTreeSet<Ipv4Addr> = t.leases.keys().copied().collect();
                    ipam::next_free(def.subnet, def.gateway, &used, t.last)
                        .ok_or_else(|| LeaseError::Exhausted(network.clone()))?
                }
            };
            t.leases.insert(addr, Lease { id: id.to_owned(), owner });
            t.last = Some(addr);
            Ok(addr)
        })
    }

    /// Release `addr` if `id` holds it (releasing twice is not an error).
    pub fn release(&self, network: &str, addr: Ipv4Addr, id: &str) -> Result<(), LeaseError> {
        self.update(network, |t| {
            if t.leases.get(&addr).is_some_and(|l| l.id == id) {
                t.leases.remove(&addr);
            }
            Ok(())
        })
    }

    /// Networks that have a lease file.
    pub fn networks(&self) -> Result<Vec<String>, LeaseError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("read", &self.dir)(e)),
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let net = name.strip_suffix(".json").or_else(|| name.strip_suffix(".lock"))?;
                (!net.starts_with('.') && !net.ends_with(".setup")).then(|| net.to_owned())
            })
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Under the network's lock: remove a half-written temp file a crash
    /// left, and release (unless `dry_run`) every lease whose owner is dead.
    /// Returns the dead leases and whether a temp file was found. A lease is
    /// written with its owner's pid and start time in the same atomic write
    /// that allocates it, so a crash between leasing and recording the run
    /// leaves nothing this cannot find.
    pub fn sweep(
        &self,
        network: &str,
        proc_root: &Path,
        dry_run: bool,
    ) -> Result<(Vec<(Ipv4Addr, Lease)>, bool), LeaseError> {
        let tmp = self.dir.join(format!(".{network}.json.tmp"));
        self.update(network, |t| {
            let dead: Vec<(Ipv4Addr, Lease)> =
                t.leases.iter().filter(|(_, l)| !l.owner.is_alive(proc_root)).map(|(a, l)| (*a, l.clone())).collect();
            let tmp_found = fs::symlink_metadata(&tmp).is_ok();
            if !dry_run {
                for (addr, _) in &dead {
                    t.leases.remove(addr);
                }
                if tmp_found {
                    fs::remove_file(&tmp).map_err(io_err("remove", &tmp))?;
                }
            }
            Ok((dead, tmp_found))
        })
    }

    /// Current leases of a network.
    pub fn leases(&self, network: &str) -> Result<BTreeMap<Ipv4Addr, Lease>, LeaseError> {
        self.update(network, |t| Ok(t.leases.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::network::default_network_def;

    fn me() -> ProcessId {
        ProcessId { pid: std::process::id(), start_time: 1 }
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

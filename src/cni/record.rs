//! Records of CNI attachments: `<run>/cni/<network>/<key>.json`, one per
//! (container id, ifname), written before anything of the attachment is
//! created, removed last by DEL.
//!
//! Decision (liveness): a CNI attachment has no owner process: the plugin
//! exits after every call and the container runtime owns the lifecycle.
//! So plain `pelagos-net gc`, which undoes runs whose owner process died,
//! never touches these records, nor their leases (marked `cni`); it only
//! counts them. They are removed by CNI `DEL`, and by CNI `GC`, which gets
//! the runtime's list of attachments that are still valid.

use crate::host::procfs::ProcessId;
use crate::model::port::PortMapping;
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// One CNI attachment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CniRecord {
    /// Network name.
    pub network: String,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_NETNS` at ADD.
    pub netns: String,
    /// Host end of the veth pair.
    pub veth: String,
    /// Container address.
    pub address: Ipv4Addr,
    /// Subnet prefix.
    pub prefix: u8,
    /// Gateway.
    pub gateway: Ipv4Addr,
    /// Published ports (our DNAT).
    pub ports: Vec<PortMapping>,
    /// The IPAM plugin that gave the address (`None`: our lease).
    pub ipam: Option<String>,
    /// The ADD process (for diagnostics only; see the module docs).
    pub created_by: ProcessId,
}

/// FNV-1a, 64 bits: a stable short key for (container id, ifname).
fn fnv64(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        for b in p.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The key of an attachment: 16 hex digits.
pub fn key(container_id: &str, ifname: &str) -> String {
    format!("{:016x}", fnv64(&[container_id, ifname]))
}

/// The host end's name: `pc` + 12 hex digits of the key (14 characters).
pub fn veth_name(container_id: &str, ifname: &str) -> String {
    format!("pc{}", &key(container_id, ifname)[..12])
}

/// The lease holder id of an attachment.
pub fn lease_id(container_id: &str, ifname: &str) -> String {
    format!("{container_id}/{ifname}")
}

/// Errors of the record store.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}")]
pub struct RecordError {
    /// Operation.
    pub op: &'static str,
    /// File.
    pub path: PathBuf,
    /// Cause.
    #[source]
    pub source: io::Error,
}

/// The records under `<run>/cni`.
#[derive(Debug, Clone)]
pub struct CniStore {
    dir: PathBuf,
}

impl CniStore {
    /// `<run_dir>/cni`.
    pub fn new(run_dir: &Path) -> Self {
        Self { dir: run_dir.join("cni") }
    }

    fn path(&self, network: &str, container_id: &str, ifname: &str) -> PathBuf {
        self.dir.join(network).join(format!("{}.json", key(container_id, ifname)))
    }

    /// Write (or replace) a record atomically.
    pub fn write(&self, r: &CniRecord) -> Result<(), RecordError> {
        let dir = self.dir.join(&r.network);
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(err("create", &dir))?;
        let path = self.path(&r.network, &r.container_id, &r.ifname);
        let tmp = dir.join(format!(".{}.{}.tmp", key(&r.container_id, &r.ifname), std::process::id()));
        let json = serde_json::to_vec_pretty(r).map_err(io::Error::from).map_err(err("encode", &path))?;
        crate::state::store::write_atomic(&tmp, &path, &json).map_err(err("write", &path))
    }

    /// The record of an attachment, `None` when there is none.
    pub fn read(&self, network: &str, container_id: &str, ifname: &str) -> Result<Option<CniRecord>, RecordError> {
        read(&self.path(network, container_id, ifname))
    }

    /// Remove a record, and temp files of writers of it that died; a
    /// missing one is not an error.
    pub fn remove(&self, network: &str, container_id: &str, ifname: &str) -> Result<(), RecordError> {
        let prefix = format!(".{}.", key(container_id, ifname));
        self.remove_temps(network, |name| name.starts_with(&prefix))?;
        let path = self.path(network, container_id, ifname);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(RecordError { op: "remove", path, source: e }),
            _ => Ok(()),
        }
    }

    /// Remove the temp files in `network`'s directory whose name `pick`s
    /// and whose writer (the pid in the name) is gone.
    pub fn remove_temps(&self, network: &str, pick: impl Fn(&str) -> bool) -> Result<(), RecordError> {
        let dir = self.dir.join(network);
        let Ok(entries) = fs::read_dir(&dir) else { return Ok(()) };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".tmp").filter(|_| name.starts_with('.') && pick(&name)) else {
                continue;
            };
            let pid = stem.rsplit('.').next().and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|p| p != std::process::id() && !Path::new("/proc").join(p.to_string()).exists()) {
                let path = entry.path();
                match fs::remove_file(&path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(RecordError { op: "remove", path, source: e });
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Every record of `network` (`None`: of every network), each parsed
    /// or its error; temp files of dead writers are listed apart.
    pub fn list(&self, network: Option<&str>) -> Result<Vec<Result<CniRecord, RecordError>>, RecordError> {
        let nets: Vec<PathBuf> = match network {
            Some(n) => vec![self.dir.join(n)],
            None => match fs::read_dir(&self.dir) {
                Ok(d) => d.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                Err(source) => return Err(RecordError { op: "read", path: self.dir.clone(), source }),
            },
        };
        let mut out = Vec::new();
        for dir in nets {
            let entries = match fs::read_dir(&dir) {
                Ok(d) => d,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(RecordError { op: "read", path: dir, source }),
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.ends_with(".json") && !name.starts_with('.') {
                    match read(&path) {
                        Ok(Some(r)) => out.push(Ok(r)),
                        Ok(None) => {}
                        Err(e) => out.push(Err(e)),
                    }
                }
            }
        }
        Ok(out)
    }
}

fn err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RecordError + 'a {
    move |source| RecordError { op, path: path.to_owned(), source }
}

fn read(path: &Path) -> Result<Option<CniRecord>, RecordError> {
    let bytes = match crate::state::safefs::read_nofollow(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(RecordError { op: "read", path: path.to_owned(), source }),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| RecordError {
        op: "parse (corrupted; remove it after CNI DEL of its container)",
        path: path.to_owned(),
        source: e.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(cid: &str) -> CniRecord {
        CniRecord {
            network: "web".into(),
            container_id: cid.into(),
            ifname: "eth0".into(),
            netns: "/run/netns/x".into(),
            veth: veth_name(cid, "eth0"),
            address: "10.1.0.2".parse().unwrap(),
            prefix: 24,
            gateway: "10.1.0.1".parse().unwrap(),
            ports: vec!["8080:80".parse().unwrap()],
            ipam: None,
            created_by: ProcessId { pid: 1, start_time: 2, pid_ns: None },
        }
    }

    #[test]
    fn keys_and_names_are_stable_short_and_distinct() {
        assert_eq!(key("c1", "eth0").len(), 16);
        assert_eq!(veth_name("c1", "eth0").len(), 14);
        assert_eq!(veth_name("c1", "eth0"), veth_name("c1", "eth0"));
        assert_ne!(key("c1", "eth0"), key("c1", "eth1"));
        assert_ne!(key("c1e", "th0"), key("c1", "eth0"));
    }

    #[test]
    fn records_round_trip_list_and_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let store = CniStore::new(tmp.path());
        store.write(&record("c1")).unwrap();
        store.write(&record("c2")).unwrap();
        assert_eq!(store.read("web", "c1", "eth0").unwrap(), Some(record("c1")));
        assert_eq!(store.list(None).unwrap().len(), 2);
        store.remove("web", "c1", "eth0").unwrap();
        store.remove("web", "c1", "eth0").unwrap();
        assert_eq!(store.read("web", "c1", "eth0").unwrap(), None);
        assert_eq!(store.list(Some("web")).unwrap().len(), 1);
    }
}

//! The definition files: atomic no-clobber creation under a directory
//! lock, loading with errors that name the file, the default network.

use super::*;
use nix::fcntl::{Flock, FlockArg};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// The definitions directory under a config root.
#[derive(Debug, Clone)]
pub struct NetworkStore {
    dir: PathBuf,
}

impl NetworkStore {
    /// `<config_dir>/networks`.
    pub fn new(config_dir: &Path) -> Self {
        Self { dir: config_dir.join("networks") }
    }

    fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> NetworkError + 'a {
        move |source| NetworkError::Io { op, path: path.to_owned(), source }
    }

    fn path_of(&self, name: &NetworkName) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Hold the directory lock while `f` runs (creation checks and writes are atomic together).
    pub fn locked<T>(&self, f: impl FnOnce(&Self) -> Result<T, NetworkError>) -> Result<T, NetworkError> {
        fs::DirBuilder::new().recursive(true).mode(0o755).create(&self.dir).map_err(Self::io("create", &self.dir))?;
        let lock_path = self.dir.join(".lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(Self::io("open", &lock_path))?;
        let _lock =
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| Self::io("lock", &lock_path)(e.into()))?;
        f(self)
    }

    /// Every definition, sorted by name.
    pub fn list(&self) -> Result<Vec<NetworkDef>, NetworkError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io("read", &self.dir)(e)),
        };
        let mut defs = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") && !entry.file_name().to_string_lossy().starts_with('.') {
                defs.push(read_def(&path)?);
            }
        }
        defs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(defs)
    }

    /// Load one definition.
    pub fn load(&self, name: &NetworkName) -> Result<NetworkDef, NetworkError> {
        let path = self.path_of(name);
        match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(NetworkError::NotFound(name.to_string())),
            _ => read_def(&path),
        }
    }

    /// Write a new definition atomically; fails if one exists.
    pub fn create(&self, def: &NetworkDef) -> Result<(), NetworkError> {
        let path = self.path_of(&def.name);
        let tmp = self.dir.join(format!(".{}.{}.tmp", def.name, std::process::id()));
        let json = serde_json::to_vec_pretty(def).map_err(|e| Self::io("encode", &path)(e.into()))?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(Self::io("write", &tmp))?;
        f.write_all(&json).and_then(|_| f.sync_all()).map_err(Self::io("write", &tmp))?;
        crate::fault::point("network.tmp-written");
        let linked = fs::hard_link(&tmp, &path);
        crate::fault::point("network.linked");
        let _ = fs::remove_file(&tmp);
        match linked {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(NetworkError::Exists(def.name.to_string())),
            other => other.map_err(Self::io("create", &path)),
        }
    }

    /// Delete a definition.
    pub fn remove(&self, name: &NetworkName) -> Result<(), NetworkError> {
        let path = self.path_of(name);
        fs::remove_file(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => NetworkError::NotFound(name.to_string()),
            _ => Self::io("remove", &path)(e),
        })
    }
}

fn read_def(path: &Path) -> Result<NetworkDef, NetworkError> {
    let bytes = crate::state::safefs::read_nofollow(path).map_err(NetworkStore::io("read", path))?;
    serde_json::from_slice(&bytes).map_err(|source| NetworkError::Corrupt { path: path.to_owned(), source })
}

/// The default network's definition.
pub fn default_network_def() -> NetworkDef {
    NetworkDef {
        name: NetworkName::new(DEFAULT_NETWORK).expect("valid default name"),
        subnet: DEFAULT_SUBNET.parse().expect("valid default subnet"),
        gateway: BRIDGE_GW,
        bridge: IfName::new(BRIDGE_NAME).expect("valid default bridge"),
        internal: false,
        masquerade: true,
        options: NetworkOptions::default(),
    }
}

/// A network definition by name, read-only: the default network's is not
/// written when missing (what `plan` reads).
pub fn peek_network_def(config_dir: &Path, name: &str) -> Result<NetworkDef, NetworkError> {
    let name = NetworkName::new(name)?;
    match NetworkStore::new(config_dir).load(&name) {
        Err(NetworkError::NotFound(_)) if name.as_str() == DEFAULT_NETWORK => Ok(default_network_def()),
        other => other,
    }
}

/// Load the default network, writing its definition on first use.
pub fn bootstrap_default_network(config_dir: &Path) -> Result<NetworkDef, NetworkError> {
    let store = NetworkStore::new(config_dir);
    let def = default_network_def();
    store.locked(|s| match s.load(&def.name) {
        Ok(existing) => Ok(existing),
        Err(NetworkError::NotFound(_)) => {
            s.create(&def)?;
            Ok(def.clone())
        }
        Err(e) => Err(e),
    })
}

/// Ensure a named network exists: load it, or create it from `req` after
/// validating against the other networks and `host_nets`.
pub fn ensure_network(
    config_dir: &Path,
    req: &NetworkRequest,
    host_nets: &[Ipv4Net],
) -> Result<NetworkDef, NetworkError> {
    if req.name.as_str() == DEFAULT_NETWORK {
        return bootstrap_default_network(config_dir);
    }
    NetworkStore::new(config_dir).locked(|s| match s.load(&req.name) {
        Ok(def) => Ok(def),
        Err(NetworkError::NotFound(_)) => {
            let def = plan_network(req, &s.list()?, host_nets)?;
            s.create(&def)?;
            Ok(def)
        }
        Err(e) => Err(e),
    })
}


//! The holder's state on disk: `<run>/holder/state.json` (which processes
//! are the supervisor, the holder and pasta), written atomically by the
//! supervisor whenever one of them changes; `lock`, held by whoever starts,
//! counts or stops the holder; pasta's output in `pasta.log`.

use super::HolderError;
use super::idmap::IdMapping;
use crate::host::procfs::ProcessId;
use nix::fcntl::{Flock, FlockArg};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The holder's directory under the user's run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolderDir {
    /// `<run>/holder`.
    pub dir: PathBuf,
}

/// What runs, as the supervisor last wrote it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HolderState {
    /// The supervisor (host namespaces).
    pub supervisor: ProcessId,
    /// The process in the holder's namespaces.
    pub holder: ProcessId,
    /// pasta, attached to the holder (`None` while it is being restarted).
    pub pasta: Option<ProcessId>,
    /// How the user namespace maps ids.
    pub mapping: IdMapping,
    /// How often pasta was restarted.
    #[serde(default)]
    pub pasta_restarts: u32,
    /// How often the holder process was replaced.
    #[serde(default)]
    pub holder_restarts: u32,
    /// The name server of the holder's networks ([`super::names`]).
    #[serde(default)]
    pub names: Option<ProcessId>,
}

impl HolderState {
    /// The supervisor and the holder process both run.
    pub fn alive(&self, proc_root: &Path) -> bool {
        self.supervisor.is_alive(proc_root) && self.holder.is_alive(proc_root)
    }

    /// `<proc>/<holder>/ns/<kind>`.
    pub fn ns_path(&self, proc_root: &Path, kind: &str) -> PathBuf {
        proc_root.join(self.holder.pid.to_string()).join("ns").join(kind)
    }
}

impl HolderDir {
    /// The holder directory of the run directory `run_dir`.
    pub fn new(run_dir: &Path) -> Self {
        Self { dir: run_dir.join("holder") }
    }

    /// The state file.
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Which networks the holder's name server serves ([`super::names`]).
    pub fn names_file(&self) -> PathBuf {
        self.dir.join("names")
    }

    /// pasta's output.
    pub fn pasta_log(&self) -> PathBuf {
        self.dir.join("pasta.log")
    }

    fn err(path: &Path) -> impl FnOnce(std::io::Error) -> HolderError + '_ {
        move |source| HolderError::State { path: path.to_owned(), source }
    }

    /// Create the directory (0700) when missing.
    pub fn create(&self) -> Result<(), HolderError> {
        match fs::DirBuilder::new().recursive(true).mode(0o700).create(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) => Err(Self::err(&self.dir)(e)),
        }
    }

    /// Take the holder's lock (blocking), creating the directory.
    pub fn lock(&self) -> Result<Flock<fs::File>, HolderError> {
        self.create()?;
        let path = self.dir.join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
            .map_err(Self::err(&path))?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| Self::err(&path)(e.into()))
    }

    /// Take the lock only if nobody holds it.
    pub fn try_lock(&self) -> Option<Flock<fs::File>> {
        let file = fs::OpenOptions::new().write(true).custom_flags(libc::O_CLOEXEC).open(self.dir.join("lock")).ok()?;
        Flock::lock(file, FlockArg::LockExclusiveNonblock).ok()
    }

    /// The state, when a holder was started and not stopped.
    pub fn read(&self) -> Result<Option<HolderState>, HolderError> {
        let path = self.state_file();
        match crate::state::safefs::read_nofollow(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map(Some).map_err(|source| HolderError::CorruptState { path, source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::err(&path)(e)),
        }
    }

    /// Write the state atomically (temp file, rename).
    pub fn write(&self, state: &HolderState) -> Result<(), HolderError> {
        let path = self.state_file();
        let tmp = self.dir.join(format!(".state.{}", std::process::id()));
        let json = serde_json::to_vec_pretty(state).expect("holder state serializes");
        let mut f = fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(Self::err(&tmp))?;
        f.write_all(&json).map_err(Self::err(&tmp))?;
        fs::rename(&tmp, &path).map_err(Self::err(&path))
    }

    /// Remove the state file and the name server's (gone already is fine).
    pub fn remove(&self) -> Result<(), HolderError> {
        let _ = fs::remove_file(self.names_file());
        let path = self.state_file();
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Self::err(&path)(e)),
            _ => Ok(()),
        }
    }
}

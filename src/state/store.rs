//! Runtime records: what a run created, written before or as it is created,
//! so a later cleanup can find it after a crash.
//!
//! Owns the runtime state directory (`Paths::run_dir`): created 0700,
//! checked to be a real directory (not a symlink) owned by the caller.
//! Records are JSON, written atomically (temp file + rename). A corrupted
//! record is an error naming the file, never a panic.

use crate::state::record::{RECORD_FORMAT, Record};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Errors from the runtime state directory.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory could not be created or inspected.
    #[error("create state directory {path}")]
    CreateDir {
        /// Directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The state directory exists but is unsafe to use.
    #[error("state directory {path} is unsafe: {why}")]
    UnsafeDir {
        /// Directory.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A record could not be written.
    #[error("write record {path}")]
    WriteRecord {
        /// Record file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A record could not be read.
    #[error("read record {path}")]
    ReadRecord {
        /// Record file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// A record is not valid JSON of the expected shape.
    #[error("record {path} is corrupted (delete it to repair)")]
    CorruptRecord {
        /// Record file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// A record of another layout (written by another version).
    #[error("record {path} has layout {found}, not {RECORD_FORMAT} (delete it to repair)")]
    OtherFormat {
        /// Record file.
        path: PathBuf,
        /// Its layout version.
        found: u32,
    },
    /// A record could not be removed.
    #[error("remove record {path}")]
    RemoveRecord {
        /// Record file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// The runtime state directory.
#[derive(Debug, Clone)]
pub struct Store {
    runs: PathBuf,
}

impl Store {
    /// Open (creating if needed) the state directory `run_dir` for `euid`.
    pub fn open(run_dir: &Path, euid: u32) -> Result<Self, StoreError> {
        ensure_private_dir(run_dir, euid)?;
        let runs = run_dir.join("runs");
        ensure_private_dir(&runs, euid)?;
        Ok(Self { runs })
    }

    /// Open the state directory `run_dir` for `euid` without creating
    /// anything: `None` when it (or its `runs/`) does not exist; an unsafe
    /// one is refused as by [`Store::open`].
    pub fn open_existing(run_dir: &Path, euid: u32) -> Result<Option<Self>, StoreError> {
        let runs = run_dir.join("runs");
        for dir in [run_dir, runs.as_path()] {
            match fs::symlink_metadata(dir) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                _ => crate::state::safefs::check_private_dir(dir, euid)
                    .map_err(|e| StoreError::UnsafeDir { path: dir.to_owned(), why: e.to_string() })?,
            }
        }
        Ok(Some(Self { runs }))
    }

    fn record_path(&self, id: &str) -> PathBuf {
        self.runs.join(format!("{id}.json"))
    }

    /// Write (or replace) a record atomically.
    pub fn write_record(&self, record: &Record) -> Result<(), StoreError> {
        let path = self.record_path(&record.id);
        let tmp = self.runs.join(format!(".{}.{}.tmp", record.id, std::process::id()));
        let err = |source| StoreError::WriteRecord { path: path.clone(), source };
        let json = serde_json::to_vec_pretty(record).map_err(io::Error::from).map_err(err)?;
        write_atomic(&tmp, &path, &json).map_err(err)
    }

    /// Remove a record; a missing record is not an error.
    pub fn remove_record(&self, id: &str) -> Result<(), StoreError> {
        let path = self.record_path(id);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StoreError::RemoveRecord { path, source: e }),
            _ => Ok(()),
        }
    }

    /// One run's record.
    pub fn record(&self, id: &str) -> Result<Record, StoreError> {
        read_record(&self.record_path(id))
    }

    /// Every record in the directory, each parsed or its error.
    pub fn records(&self) -> Result<Vec<Result<Record, StoreError>>, StoreError> {
        let read_dir =
            fs::read_dir(&self.runs).map_err(|source| StoreError::ReadRecord { path: self.runs.clone(), source })?;
        let mut out = Vec::new();
        for entry in read_dir.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                out.push(read_record(&path));
            }
        }
        Ok(out)
    }
}

/// Write `bytes` to `tmp` (0600, never through a symlink) and rename it
/// over `path`, so readers see the old content or the new, never a mix.
pub(crate) fn write_atomic(tmp: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(tmp)?;
    file.write_all(bytes)?;
    crate::fault::point("state.tmp-written");
    fs::rename(tmp, path)
}

fn read_record(path: &Path) -> Result<Record, StoreError> {
    let bytes = crate::state::safefs::read_nofollow(path)
        .map_err(|source| StoreError::ReadRecord { path: path.to_owned(), source })?;
    #[derive(serde::Deserialize)]
    struct Layout {
        #[serde(default)]
        format: u32,
    }
    let corrupt = |source| StoreError::CorruptRecord { path: path.to_owned(), source };
    let layout: Layout = serde_json::from_slice(&bytes).map_err(corrupt)?;
    if layout.format != RECORD_FORMAT {
        return Err(StoreError::OtherFormat { path: path.to_owned(), found: layout.format });
    }
    serde_json::from_slice(&bytes).map_err(corrupt)
}

/// Create `dir` (mode 0700) if missing; refuse a symlink, a non-directory,
/// a directory owned by someone else, or one writable by group or others.
fn ensure_private_dir(dir: &Path, euid: u32) -> Result<(), StoreError> {
    // Nearly always there and right: one `lstat`. Otherwise create it and
    // name what is wrong as before.
    if crate::state::safefs::check_private_dir(dir, euid).is_ok() {
        return Ok(());
    }
    match fs::DirBuilder::new().mode(0o700).recursive(true).create(dir) {
        Ok(()) => {}
        Err(source) => return Err(StoreError::CreateDir { path: dir.to_owned(), source }),
    }
    crate::state::safefs::check_private_dir(dir, euid)
        .map_err(|e| StoreError::UnsafeDir { path: dir.to_owned(), why: e.to_string() })
}

/// A fresh random run id (12 hex digits).
pub fn new_run_id() -> String {
    let mut bytes = [0u8; 6];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer we own.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        // Fall back to pid and time: uniqueness matters, secrecy does not.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        return format!("{:06x}{:06x}", std::process::id() & 0xff_ffff, t & 0xff_ffff);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> Record {
        use crate::host::procfs::ProcessId;
        use crate::state::record::{ProcessRole, RecordKind, Resource};
        let mut r = Record::new(
            id.into(),
            RecordKind::Run,
            ProcessId { pid: 1, start_time: 2, pid_ns: None },
            crate::model::mode::NetworkMode::Pasta,
        );
        r.resources.push(Resource::Process { role: ProcessRole::Pasta, process: ProcessId { pid: 3, start_time: 4, pid_ns: None } });
        r
    }

    #[test]
    fn record_round_trips_and_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("run"), nix::unistd::geteuid().as_raw()).unwrap();
        store.write_record(&record("abc")).unwrap();
        let all: Vec<_> = store.records().unwrap().into_iter().map(Result::unwrap).collect();
        assert_eq!(all, vec![record("abc")]);
        store.remove_record("abc").unwrap();
        store.remove_record("abc").unwrap();
        assert!(store.records().unwrap().is_empty());
    }

    #[test]
    fn corrupted_record_names_its_file() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), nix::unistd::geteuid().as_raw()).unwrap();
        fs::write(tmp.path().join("runs/bad.json"), b"{\"id\": ").unwrap();
        let err = store.records().unwrap().pop().unwrap().unwrap_err();
        assert!(err.to_string().contains("bad.json"), "{err}");
    }

    #[test]
    fn a_record_of_another_layout_is_refused_naming_its_file() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), nix::unistd::geteuid().as_raw()).unwrap();
        fs::write(tmp.path().join("runs/old.json"), br#"{"id":"old","owner":{"pid":1,"start_time":2}}"#).unwrap();
        let err = store.records().unwrap().pop().unwrap().unwrap_err();
        assert!(matches!(err, StoreError::OtherFormat { found: 0, .. }), "{err}");
        assert!(err.to_string().contains("old.json"), "{err}");
    }

    #[test]
    fn state_dir_owned_by_someone_else_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let err = Store::open(tmp.path(), me + 1).unwrap_err();
        assert!(matches!(err, StoreError::UnsafeDir { .. }), "{err}");
    }

    #[test]
    fn symlinked_state_dir_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("real")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("real"), tmp.path().join("link")).unwrap();
        let err = Store::open(&tmp.path().join("link"), nix::unistd::geteuid().as_raw()).unwrap_err();
        assert!(matches!(err, StoreError::UnsafeDir { .. }), "{err}");
    }

    #[test]
    fn run_ids_are_distinct_hex() {
        let a = new_run_id();
        assert_eq!(a.len(), 12);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, new_run_id());
    }
}

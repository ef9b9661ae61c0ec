//! The lease files on disk: written whole under a temp name, claimed by
//! hard-linking it to the address's name, read back and listed.

use super::{Lease, LeaseError, TMP_PREFIX, io_err};
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub(super) fn create_private_dir(dir: &Path) -> Result<(), LeaseError> {
    let euid = nix::unistd::geteuid().as_raw();
    // Nearly always there and right: one `lstat`.
    if crate::state::safefs::check_private_dir(dir, euid).is_ok() {
        return Ok(());
    }
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_err("create", dir))?;
    crate::state::safefs::check_private_dir(dir, euid).map_err(io_err("use lease directory", dir))
}

/// Write `bytes` to a new file `path` (0600, never through a link; an old
/// temp file of ours is replaced).
pub(super) fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
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
pub(super) fn claim(tmp: &Path, dir: &Path, addr: Ipv4Addr) -> io::Result<bool> {
    match fs::hard_link(tmp, dir.join(addr.to_string())) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

pub(super) fn read_lease(path: &Path) -> Result<Lease, LeaseError> {
    let bytes = crate::state::safefs::read_nofollow(path).map_err(io_err("read", path))?;
    serde_json::from_slice(&bytes).map_err(|source| LeaseError::Corrupt { path: path.to_owned(), source })
}

/// Every lease in `dir`, the lease files that do not parse, and temp files.
pub(super) type Listing = (BTreeMap<Ipv4Addr, Lease>, Vec<PathBuf>, Vec<PathBuf>);

pub(super) fn read_all(dir: &Path) -> Result<Listing, LeaseError> {
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


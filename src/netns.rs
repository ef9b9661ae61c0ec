//! Named network namespaces, compatible with `ip netns`: a bind mount of a
//! namespace file under the netns directory (`/run/netns` by default).
//!
//! Owns: making the directory a shared mount point (as `ip netns add`
//! does, so mounts propagate into other mount namespaces), attaching a
//! process's namespace under a name, and removing the name. Never runs `ip`.

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Errors of named network namespaces.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The netns directory could not be prepared.
    #[error("prepare netns directory {dir}")]
    PrepareDir {
        /// Directory.
        dir: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The mount point file could not be created (already exists, or no permission).
    #[error("create netns file {path}")]
    CreateFile {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The bind mount failed.
    #[error("bind {source_path} to {path}")]
    Bind {
        /// Namespace file bound.
        source_path: PathBuf,
        /// Mount point.
        path: PathBuf,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// Unmounting the name failed.
    #[error("unmount {path}")]
    Unmount {
        /// Mount point.
        path: PathBuf,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// Removing the mount point file failed.
    #[error("remove {path}")]
    Remove {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// Make `dir` exist and be a shared mount point, like `ip netns add` does.
fn prepare_dir(dir: &Path) -> Result<(), NetnsError> {
    let err = |source| NetnsError::PrepareDir { dir: dir.to_owned(), source };
    fs::create_dir_all(dir).map_err(err)?;
    let shared = |d: &Path| mount(None::<&str>, d, None::<&str>, MsFlags::MS_SHARED | MsFlags::MS_REC, None::<&str>);
    match shared(dir) {
        Ok(()) => Ok(()),
        Err(Errno::EINVAL) => {
            // Not a mount point yet: bind it onto itself, then mark it shared.
            mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
                .map_err(|e| err(e.into()))?;
            shared(dir).map_err(|e| err(e.into()))
        }
        Err(e) => Err(err(e.into())),
    }
}

/// Give the network namespace of `pid` the name `name` under `dir`, the
/// equivalent of `ip netns attach NAME PID`. Returns the new path.
pub fn attach_named(dir: &Path, name: &str, proc_root: &Path, pid: u32) -> Result<PathBuf, NetnsError> {
    prepare_dir(dir)?;
    let path = dir.join(name);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(&path)
        .map_err(|source| NetnsError::CreateFile { path: path.clone(), source })?;
    let source_path = proc_root.join(pid.to_string()).join("ns/net");
    if let Err(source) = mount(Some(&source_path), &path, None::<&str>, MsFlags::MS_BIND, None::<&str>) {
        let _ = fs::remove_file(&path);
        return Err(NetnsError::Bind { source_path, path, source });
    }
    Ok(path)
}

/// Remove a name created by [`attach_named`]: lazy unmount, then delete the
/// file. The namespace itself lives on while any process or fd holds it.
/// A name that is already gone is not an error.
pub fn remove_named(path: &Path) -> Result<(), NetnsError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(source) => return Err(NetnsError::Unmount { path: path.to_owned(), source }),
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(NetnsError::Remove { path: path.to_owned(), source: e }),
        _ => Ok(()),
    }
}

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
use std::os::fd::OwnedFd;
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
    /// `unshare(CLONE_NEWNET)` failed.
    #[error("create network namespace")]
    Unshare {
        /// Cause.
        #[source]
        source: Errno,
    },
    /// The rtnetlink socket inside the new namespace could not be opened.
    #[error("open an rtnetlink socket in the new namespace")]
    Rtnl {
        /// Cause.
        #[source]
        source: Errno,
    },
    /// `lo` could not be brought up in the new namespace.
    #[error("bring up lo in the new namespace")]
    Loopback {
        /// Cause.
        #[source]
        source: crate::ns::loopback::LoopbackError,
    },
    /// A named namespace could not be opened.
    #[error("open network namespace {path}")]
    Open {
        /// Path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
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

/// Prepare `dir` and create the empty file `<dir>/<name>` a namespace is
/// bound onto, with `O_EXCL`: an existing name is an error, never reused.
fn create_mount_point(dir: &Path, name: &str) -> Result<PathBuf, NetnsError> {
    prepare_dir(dir)?;
    let path = dir.join(name);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(&path)
        .map_err(|source| NetnsError::CreateFile { path: path.clone(), source })?;
    Ok(path)
}

/// Give the network namespace file `source_path` (a `/proc/<pid>/ns/net`,
/// or `/proc/<pid>/fd/<n>` of an open namespace) the name `name` under
/// `dir`. Returns the new path.
pub fn bind_named(dir: &Path, name: &str, source_path: &Path) -> Result<PathBuf, NetnsError> {
    let path = create_mount_point(dir, name)?;
    crate::fault::point("netns.mount-point");
    if let Err(source) = mount(Some(source_path), &path, None::<&str>, MsFlags::MS_BIND, None::<&str>) {
        let _ = fs::remove_file(&path);
        return Err(NetnsError::Bind { source_path: source_path.to_owned(), path, source });
    }
    crate::fault::point("netns.bound");
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

/// A named network namespace created by `create_named`: its path and an
/// open fd (for `setns` and for netlink sockets inside it).
#[derive(Debug)]
pub struct NetNs {
    /// Bind-mount path (`<dir>/<name>`).
    pub path: PathBuf,
    fd: std::os::fd::OwnedFd,
}

impl NetNs {
    /// Open an existing named namespace.
    pub fn open(path: &Path) -> Result<Self, NetnsError> {
        let file = fs::File::open(path).map_err(|source| NetnsError::Open { path: path.to_owned(), source })?;
        Ok(Self { path: path.to_owned(), fd: file.into() })
    }

    /// The namespace fd.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_fd()
    }
}

/// Create a new network namespace named `name` under `dir` (the equivalent
/// of `ip netns add NAME`), with `lo` up. A short-lived thread unshares its
/// own network namespace and bind-mounts it; the calling thread's namespace
/// is untouched. The file is created with `O_EXCL`, so an existing name is
/// an error, never reused.
pub fn create_named(dir: &Path, name: &str) -> Result<NetNs, NetnsError> {
    create(dir, name, || Ok(())).map(|(ns, ())| ns)
}

/// [`create_named`], and an rtnetlink socket (`NETLINK_ROUTE`, not yet
/// connected) opened inside the new namespace by the thread that made it:
/// a caller that configures links in there needs no second thread to
/// join it (0.2-2 ms here).
pub fn create_named_with_rtnl(dir: &Path, name: &str) -> Result<(NetNs, OwnedFd), NetnsError> {
    create(dir, name, || {
        use nix::sys::socket::{AddressFamily, SockFlag, SockProtocol, SockType, socket};
        socket(AddressFamily::Netlink, SockType::Datagram, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkRoute)
            .map_err(|source| NetnsError::Rtnl { source })
    })
}

/// Create the namespace (see [`create_named`]); `inside` runs last on the
/// thread that made it, while that thread is still in it.
fn create<T: Send + 'static>(
    dir: &Path,
    name: &str,
    inside: impl FnOnce() -> Result<T, NetnsError> + Send + 'static,
) -> Result<(NetNs, T), NetnsError> {
    let path = create_mount_point(dir, name)?;
    crate::fault::point("netns.mount-point");
    let target = path.clone();
    let made = std::thread::spawn(move || -> Result<T, NetnsError> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Unshare { source })?;
        let own = PathBuf::from("/proc/thread-self/ns/net");
        mount(Some(&own), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|source| NetnsError::Bind { source_path: own, path: target.clone(), source })?;
        crate::ns::loopback::bring_up_loopback().map_err(|e| NetnsError::Loopback { source: e })?;
        inside()
    })
    .join()
    .unwrap_or(Err(NetnsError::Unshare { source: Errno::EIO }));
    let made = match made {
        Ok(made) => made,
        Err(e) => {
            let _ = remove_named(&path);
            return Err(e);
        }
    };
    crate::fault::point("netns.bound");
    let ns = NetNs::open(&path).inspect_err(|_| {
        let _ = remove_named(&path);
    })?;
    Ok((ns, made))
}

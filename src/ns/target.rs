//! A network namespace someone else made, opened and checked before
//! anything is created for it: [`OpenTarget::open`].
//!
//! Checks, each an error naming the path: the file exists (for
//! `/proc/<pid>/ns/net`: the process lives), it is a network namespace
//! (`NS_GET_NSTYPE`), and a rootless caller may join it: its owning user
//! namespace, given or found with `NS_GET_USERNS`, belongs to the caller
//! (`NS_GET_OWNER_UID`). The namespace is held open from then on, and
//! helpers are pointed at `/proc/<our pid>/fd/<n>` rather than the path
//! given, so a recycled pid or a replaced mount cannot swap it under them.
//!
//! What keeps an attachment alive is decided here too ([`Anchor`]): the
//! process whose `/proc/<pid>/ns/net` was given (pid + start time), or the
//! bind mount that was given (the same namespace still mounted there).

use crate::host::procfs::ProcessId;
use crate::model::target::NsTarget;
use crate::state::record::{Anchor, MountAnchor, NsId, TargetRecord};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Why a namespace cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// `/proc/<pid>/...` of a process that does not exist (or is a zombie).
    #[error("{path}: there is no process {pid}")]
    DeadProcess {
        /// The path given.
        path: PathBuf,
        /// The pid in it.
        pid: u32,
    },
    /// The file cannot be opened.
    #[error("open namespace {path}")]
    Open {
        /// The path given.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The file is not a namespace of the expected type.
    #[error("{path} is not a {expected} namespace")]
    WrongType {
        /// The path given.
        path: PathBuf,
        /// `network` or `user`.
        expected: &'static str,
    },
    /// The caller may not enter the namespace.
    #[error("{path}: this user may not join the namespace ({why})")]
    NotJoinable {
        /// The path given.
        path: PathBuf,
        /// Why not.
        why: String,
    },
}

/// The pid of a `/proc/<pid>/ns/net` (or `/proc/<pid>/task/<tid>/ns/net`) path.
pub fn proc_pid(proc_root: &Path, path: &Path) -> Option<u32> {
    let rest = path.strip_prefix(proc_root).ok()?;
    let mut parts = rest.components().map(|c| c.as_os_str().to_str());
    let pid = parts.next()??.parse().ok()?;
    let tail: Vec<Option<&str>> = parts.collect();
    let net = [Some("ns"), Some("net")];
    let ok = tail == net || (tail.len() == 4 && tail[0] == Some("task") && tail[2..] == net);
    ok.then_some(pid)
}

/// A namespace type, as `NS_GET_NSTYPE` reports it.
fn ns_type(fd: BorrowedFd<'_>) -> io::Result<i32> {
    // SAFETY: NS_GET_NSTYPE takes no argument; `fd` is open for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::NS_GET_NSTYPE as _) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

/// The user namespace owning the namespace `fd` (`NS_GET_USERNS`).
pub fn owning_userns(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: NS_GET_USERNS takes no argument; `fd` is open for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::NS_GET_USERNS as _) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success the ioctl returns a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(rc) })
}

/// The uid that created the user namespace `fd` (`NS_GET_OWNER_UID`).
fn owner_uid(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut uid: libc::uid_t = 0;
    // SAFETY: NS_GET_OWNER_UID writes one uid_t through the pointer, which
    // points at our stack variable; `fd` is open for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::NS_GET_OWNER_UID as _, &mut uid as *mut libc::uid_t) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(uid) }
}

/// A network namespace someone else made, open and checked.
#[derive(Debug)]
pub struct OpenTarget {
    /// The network namespace path as given.
    pub netns_path: PathBuf,
    /// The user namespace path as given (`None`: found, or not needed).
    pub userns_path: Option<PathBuf>,
    netns: OwnedFd,
    userns: Option<OwnedFd>,
    /// Its identity.
    pub ns: NsId,
    /// The process it was given through, if a `/proc/<pid>/...` path.
    pub process: Option<ProcessId>,
    /// It was handed over as an open descriptor, not a path.
    from_fd: bool,
}

impl OpenTarget {
    /// Open and check the network namespace at `netns` (and the user
    /// namespace at `userns`, or, for a caller that is not root, the one
    /// owning `netns`). `euid` is the caller's.
    pub fn open(netns: &Path, userns: Option<&Path>, proc_root: &Path, euid: u32) -> Result<Self, TargetError> {
        let process = match proc_pid(proc_root, netns) {
            Some(pid) => Some(
                ProcessId::of(proc_root, pid)
                    .ok()
                    .filter(|p| p.is_alive(proc_root))
                    .ok_or_else(|| TargetError::DeadProcess { path: netns.to_owned(), pid })?,
            ),
            None => None,
        };
        let net = open_ns(netns, libc::CLONE_NEWNET, "network")?;
        let ns = ns_id(&net).map_err(|source| TargetError::Open { path: netns.to_owned(), source })?;
        let user = match (userns, euid) {
            (Some(path), _) => Some(open_ns(path, libc::CLONE_NEWUSER, "user")?),
            (None, 0) => None,
            (None, _) => Some(owning_userns(net.as_fd()).map_err(|e| TargetError::NotJoinable {
                path: netns.to_owned(),
                why: format!("its user namespace is out of reach: {e}"),
            })?),
        };
        if let (Some(user), true) = (&user, euid != 0) {
            let path = userns.unwrap_or(netns);
            let owner =
                owner_uid(user.as_fd()).map_err(|source| TargetError::Open { path: path.to_owned(), source })?;
            if owner != euid {
                let why = format!("its user namespace belongs to uid {owner}");
                return Err(TargetError::NotJoinable { path: path.to_owned(), why });
            }
        }
        Ok(Self {
            netns_path: netns.to_owned(),
            userns_path: userns.map(ToOwned::to_owned),
            netns: net,
            userns: user,
            ns,
            process,
            from_fd: false,
        })
    }

    /// Check and hold (duplicates of) open namespace descriptors: a network
    /// namespace and, for a caller that is not root, the user namespace to
    /// enter first (found from the network namespace when not given).
    pub fn from_fds(netns: BorrowedFd<'_>, userns: Option<BorrowedFd<'_>>, euid: u32) -> Result<Self, TargetError> {
        let shown = |fd: BorrowedFd<'_>| PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        let dup = |fd: BorrowedFd<'_>, kind, expected| -> Result<OwnedFd, TargetError> {
            let owned = fd.try_clone_to_owned().map_err(|source| TargetError::Open { path: shown(fd), source })?;
            match ns_type(owned.as_fd()) {
                Ok(t) if t == kind => Ok(owned),
                _ => Err(TargetError::WrongType { path: shown(fd), expected }),
            }
        };
        let net = dup(netns, libc::CLONE_NEWNET, "network")?;
        let ns = ns_id(&net).map_err(|source| TargetError::Open { path: shown(netns), source })?;
        let user = match (userns, euid) {
            (Some(fd), _) => Some(dup(fd, libc::CLONE_NEWUSER, "user")?),
            (None, 0) => None,
            (None, _) => Some(owning_userns(net.as_fd()).map_err(|e| TargetError::NotJoinable {
                path: shown(netns),
                why: format!("its user namespace is out of reach: {e}"),
            })?),
        };
        if let (Some(user), true) = (&user, euid != 0) {
            let owner = owner_uid(user.as_fd()).map_err(|source| TargetError::Open { path: shown(netns), source })?;
            if owner != euid {
                return Err(TargetError::NotJoinable {
                    path: shown(netns),
                    why: format!("its user namespace belongs to uid {owner}"),
                });
            }
        }
        Ok(Self {
            netns_path: shown(netns),
            userns_path: None,
            netns: net,
            userns: user,
            ns,
            process: None,
            from_fd: true,
        })
    }

    /// The network namespace, open.
    pub fn netns_fd(&self) -> BorrowedFd<'_> {
        self.netns.as_fd()
    }

    /// The user namespace to enter first, open (rootless callers).
    pub fn userns_fd(&self) -> Option<BorrowedFd<'_>> {
        self.userns.as_ref().map(AsFd::as_fd)
    }

    /// Whether the path given is a bind mount (not a process's file, not a
    /// descriptor): a file any process may open as it is.
    pub fn named(&self) -> bool {
        self.process.is_none() && !self.from_fd
    }

    /// What keeps an attachment to it alive, when something names it: a
    /// namespace handed over as a descriptor has neither process nor mount.
    pub fn anchored(&self) -> bool {
        !self.from_fd
    }

    /// Where it is opened: `/proc/self/fd/N` of the descriptors held here,
    /// valid in this process and in a helper that inherits them
    /// ([`OpenTarget::fds`]). A helper that enters the user namespace
    /// before it opens the network namespace (pasta) could not open another
    /// process's descriptors from there.
    pub fn paths(&self, proc_root: &Path) -> NsTarget {
        let fd = |f: &OwnedFd| proc_root.join("self/fd").join(f.as_raw_fd().to_string());
        NsTarget { netns: fd(&self.netns), userns: self.userns.as_ref().map(fd) }
    }

    /// The descriptors [`OpenTarget::paths`] names, for a helper to inherit.
    pub fn fds(&self) -> Vec<std::os::fd::RawFd> {
        std::iter::once(&self.netns).chain(&self.userns).map(AsRawFd::as_raw_fd).collect()
    }

    /// What keeps an attachment to it alive.
    pub fn anchor(&self) -> Anchor {
        match self.process {
            Some(p) => Anchor::Namespace { process: Some(p), mount: None },
            None => Anchor::Namespace {
                process: None,
                mount: Some(MountAnchor { path: self.netns_path.clone(), ns: self.ns }),
            },
        }
    }

    /// As a record keeps it.
    pub fn record(&self) -> TargetRecord {
        TargetRecord { netns: self.netns_path.clone(), userns: self.userns_path.clone(), ns: self.ns }
    }
}

fn open_ns(path: &Path, kind: libc::c_int, expected: &'static str) -> Result<OwnedFd, TargetError> {
    let file = File::open(path).map_err(|source| match source.kind() {
        io::ErrorKind::PermissionDenied => TargetError::NotJoinable { path: path.to_owned(), why: source.to_string() },
        _ => TargetError::Open { path: path.to_owned(), source },
    })?;
    match ns_type(file.as_fd()) {
        Ok(t) if t == kind => Ok(file.into()),
        _ => Err(TargetError::WrongType { path: path.to_owned(), expected }),
    }
}

fn ns_id(fd: &OwnedFd) -> io::Result<NsId> {
    let st = nix::sys::stat::fstat(fd).map_err(io::Error::from)?;
    Ok(NsId { dev: st.st_dev, ino: st.st_ino })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_paths_yield_their_pid_and_others_none() {
        let proc = Path::new("/proc");
        assert_eq!(proc_pid(proc, Path::new("/proc/42/ns/net")), Some(42));
        assert_eq!(proc_pid(proc, Path::new("/proc/42/task/43/ns/net")), Some(42));
        assert_eq!(proc_pid(proc, Path::new("/proc/42/ns/user")), None);
        assert_eq!(proc_pid(proc, Path::new("/run/netns/x")), None);
        assert_eq!(proc_pid(proc, Path::new("/proc/self/ns/net")), None);
    }

    #[test]
    fn a_file_that_is_no_namespace_is_refused_naming_it() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let err = OpenTarget::open(tmp.path(), None, Path::new("/proc"), 0).unwrap_err();
        assert!(matches!(err, TargetError::WrongType { expected: "network", .. }), "{err}");
        assert!(err.to_string().contains(&tmp.path().display().to_string()), "{err}");
    }

    #[test]
    fn our_own_namespace_opens_and_is_anchored_to_us() {
        let me = std::process::id();
        let path = PathBuf::from(format!("/proc/{me}/ns/net"));
        let t = OpenTarget::open(&path, Some(Path::new("/proc/self/ns/user")), Path::new("/proc"), 0).unwrap();
        assert_eq!(t.process.map(|p| p.pid), Some(me));
        assert_eq!(t.anchor().alive(Path::new("/proc")), Some(true));
        assert!(!t.named());
        let err = OpenTarget::open(Path::new("/proc/self/ns/user"), None, Path::new("/proc"), 0).unwrap_err();
        assert!(matches!(err, TargetError::WrongType { .. }), "{err}");
    }

    #[test]
    fn a_dead_pid_is_refused_naming_the_pid() {
        let err = OpenTarget::open(Path::new("/proc/4194303/ns/net"), None, Path::new("/proc"), 0).unwrap_err();
        assert!(err.to_string().contains("there is no process 4194303"), "{err}");
    }
}

//! Turning host problems into messages a user can act on: what is wrong,
//! and the exact command that fixes it. Pure decisions over values read
//! from `/proc` and the device node, so each case is unit-tested.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Why `/dev/net/tun` cannot be used by this caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TunProblem {
    /// The device node does not exist.
    #[error(
        "{path} does not exist: load the tun module (`modprobe tun`) or create the node (`mknod {path} c 10 200 && chmod 0666 {path}`)"
    )]
    Missing {
        /// Device path.
        path: String,
    },
    /// The node exists but this user may not open it.
    #[error(
        "{path} is not usable by uid {uid} (mode {mode:04o}, owner uid {owner}). Fix: `sudo chmod 0666 {path}` (the mode most distributions ship; opening it grants no privilege by itself)"
    )]
    NotPermitted {
        /// Device path.
        path: String,
        /// Caller's uid.
        uid: u32,
        /// Node permission bits.
        mode: u32,
        /// Node owner.
        owner: u32,
    },
    /// Opening failed for another reason (no driver, ...).
    #[error("{path} cannot be opened: {error}")]
    Other {
        /// Device path.
        path: String,
        /// The OS error, as text.
        error: String,
    },
}

impl TunProblem {
    /// What is wrong, without the fix (which [`TunProblem::fix`] gives), for
    /// reports that print the fix on a line of its own.
    pub fn summary(&self) -> String {
        match self {
            Self::Missing { path } => format!("{path} does not exist"),
            Self::NotPermitted { path, uid, mode, owner } => {
                format!("{path} is not usable by uid {uid} (mode {mode:04o}, owner uid {owner})")
            }
            Self::Other { .. } => self.to_string(),
        }
    }

    /// The fix; `container` names the container we run in, if any (a
    /// missing node there is the runtime's to provide).
    pub fn fix(&self, container: Option<&str>) -> Option<String> {
        match (self, container) {
            (Self::Missing { path }, Some(label)) => {
                Some(format!("inside a container ({label}): start it with `--device {path}`"))
            }
            (Self::Missing { .. }, None) => Some("`sudo modprobe tun`".to_owned()),
            (Self::NotPermitted { path, .. }, _) => Some(format!("`sudo chmod 0666 {path}`")),
            (Self::Other { .. }, _) => None,
        }
    }
}

/// Check that `path` (normally `/dev/net/tun`) opens read-write for us.
/// Opening without `TUNSETIFF` creates nothing.
pub fn check_tun(path: &Path, uid: u32) -> Result<(), TunProblem> {
    let shown = path.display().to_string();
    match fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_CLOEXEC).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(TunProblem::Missing { path: shown }),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            let meta = fs::metadata(path).ok();
            Err(TunProblem::NotPermitted {
                path: shown,
                uid,
                mode: meta.as_ref().map_or(0, |m| m.mode() & 0o7777),
                owner: meta.as_ref().map_or(0, |m| m.uid()),
            })
        }
        Err(e) => Err(TunProblem::Other { path: shown, error: e.to_string() }),
    }
}

/// The kernel knobs that can forbid unprivileged user namespaces, as read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsernsKnobs {
    /// `user.max_user_namespaces`.
    pub max_user_namespaces: Option<u64>,
    /// `kernel.unprivileged_userns_clone` (Debian/Ubuntu kernels only).
    pub unprivileged_userns_clone: Option<u64>,
    /// `kernel.apparmor_restrict_unprivileged_userns` (Ubuntu 23.10+).
    pub apparmor_restrict: Option<u64>,
}

impl UsernsKnobs {
    /// Read the knobs under `<proc_root>/sys`.
    pub fn read(proc_root: &Path) -> Self {
        let get = |rel: &str| fs::read_to_string(proc_root.join(rel)).ok().and_then(|s| s.trim().parse().ok());
        Self {
            max_user_namespaces: get("sys/user/max_user_namespaces"),
            unprivileged_userns_clone: get("sys/kernel/unprivileged_userns_clone"),
            apparmor_restrict: get("sys/kernel/apparmor_restrict_unprivileged_userns"),
        }
    }

    /// The fix for "could not create a user namespace", naming the knob
    /// that blocks it; a generic list when none visibly does.
    pub fn hint(&self) -> String {
        if self.max_user_namespaces == Some(0) {
            return "user namespaces are disabled: user.max_user_namespaces = 0. Fix: `sudo sysctl -w user.max_user_namespaces=28633`".into();
        }
        if self.unprivileged_userns_clone == Some(0) {
            return "unprivileged user namespaces are disabled: kernel.unprivileged_userns_clone = 0. Fix: `sudo sysctl -w kernel.unprivileged_userns_clone=1`".into();
        }
        if self.apparmor_restrict == Some(1) {
            return "AppArmor restricts unprivileged user namespaces: kernel.apparmor_restrict_unprivileged_userns = 1. Fix: `sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`, or give pelagos-net an AppArmor profile with `userns,`".into();
        }
        "user namespaces may be disabled or exhausted here: check `sysctl user.max_user_namespaces kernel.unprivileged_userns_clone kernel.apparmor_restrict_unprivileged_userns`, seccomp filters of the calling container, and that the process is single-threaded".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userns_hint_names_the_knob_that_blocks() {
        let cases = [
            (UsernsKnobs { max_user_namespaces: Some(0), ..Default::default() }, "user.max_user_namespaces = 0"),
            (
                UsernsKnobs {
                    max_user_namespaces: Some(100),
                    unprivileged_userns_clone: Some(0),
                    apparmor_restrict: None,
                },
                "kernel.unprivileged_userns_clone = 0",
            ),
            (
                UsernsKnobs {
                    max_user_namespaces: Some(100),
                    unprivileged_userns_clone: Some(1),
                    apparmor_restrict: Some(1),
                },
                "apparmor_restrict_unprivileged_userns = 1",
            ),
            (UsernsKnobs::default(), "check `sysctl"),
        ];
        for (knobs, want) in cases {
            assert!(knobs.hint().contains(want), "{knobs:?} -> {}", knobs.hint());
        }
    }

    #[test]
    fn knobs_are_read_from_an_injected_proc_tree() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("sys/user")).unwrap();
        fs::create_dir_all(tmp.path().join("sys/kernel")).unwrap();
        fs::write(tmp.path().join("sys/user/max_user_namespaces"), "0\n").unwrap();
        fs::write(tmp.path().join("sys/kernel/apparmor_restrict_unprivileged_userns"), "1\n").unwrap();
        let k = UsernsKnobs::read(tmp.path());
        assert_eq!(
            k,
            UsernsKnobs { max_user_namespaces: Some(0), unprivileged_userns_clone: None, apparmor_restrict: Some(1) }
        );
    }

    #[test]
    fn missing_tun_says_how_to_create_it() {
        let err = check_tun(Path::new("/nonexistent/tun"), 1000).unwrap_err();
        assert!(err.to_string().contains("modprobe tun"), "{err}");
    }

    #[test]
    fn unreadable_tun_message_names_mode_and_fix() {
        let err = TunProblem::NotPermitted { path: "/dev/net/tun".into(), uid: 1001, mode: 0o600, owner: 0 };
        let text = err.to_string();
        assert!(text.contains("mode 0600") && text.contains("chmod 0666 /dev/net/tun"), "{text}");
    }
}

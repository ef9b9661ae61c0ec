//! [`NsTarget`]: the namespaces a helper, a relay or a command is pointed at.
//!
//! One type for every consumer (pasta's `--netns`/`--userns`, slirp4netns's
//! `--netns-type=path`/`--userns-path`, the socket factory, the namespace
//! child): a network namespace file and, when the caller must enter a user
//! namespace first to act in it (rootless), the user namespace that owns it.
//! Paths only: whether they exist is for the code that opens them.

use std::path::{Path, PathBuf};

/// A network namespace, and the user namespace to enter first (if any).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct NsTarget {
    /// Network namespace file: `/proc/<pid>/ns/net`, a bind mount such as
    /// `/run/netns/NAME`, or `/proc/<pid>/fd/<n>` of an open namespace.
    pub netns: PathBuf,
    /// The user namespace owning `netns`, entered first (rootless callers);
    /// `None` when the caller may act in `netns` as it is (root).
    pub userns: Option<PathBuf>,
}

impl NsTarget {
    /// The namespaces of process `pid` under `proc_root`: its network
    /// namespace, and its user namespace when `with_userns`.
    pub fn of_process(proc_root: &Path, pid: u32, with_userns: bool) -> Self {
        let ns = proc_root.join(pid.to_string()).join("ns");
        Self { netns: ns.join("net"), userns: with_userns.then(|| ns.join("user")) }
    }

    /// A network namespace entered as it is (no user namespace first).
    pub fn netns_only(netns: impl Into<PathBuf>) -> Self {
        Self { netns: netns.into(), userns: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_target_names_its_net_and_user_namespace_files() {
        let t = NsTarget::of_process(Path::new("/proc"), 42, true);
        assert_eq!(t.netns, PathBuf::from("/proc/42/ns/net"));
        assert_eq!(t.userns, Some(PathBuf::from("/proc/42/ns/user")));
        assert_eq!(NsTarget::of_process(Path::new("/p"), 7, false).userns, None);
    }
}

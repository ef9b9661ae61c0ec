//! Whether nftables can work here: the kernel's `nf_tables` (loaded, or a
//! module of the running kernel that autoloads) and the userspace side the
//! bridge's firewall uses: the library it loads (`libnftables.so.1`), or in
//! a statically linked build the `nft` command it runs
//! ([`NftEngine`]). Reads files only: no nft context is created and nothing
//! is loaded or run.

use std::fs;
use std::path::Path;

use super::{NftEvidence, ProbeRoots};
use crate::bridge::firewall::NftEngine;
use crate::bridge::firewall::engine::find_nft;

/// What is missing for nftables, with its fix; what bridge networks and
/// `doctor` report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NftProblem {
    /// What is missing.
    pub reason: &'static str,
    /// The fix.
    pub fix: &'static str,
}

impl NftEvidence {
    /// True when nothing is known to be missing.
    pub fn usable(self) -> bool {
        self.problem().is_none()
    }

    /// What is missing, or `None` when nftables looks usable.
    pub fn problem(self) -> Option<NftProblem> {
        match self {
            Self::ModuleLoaded | Self::ModuleAvailable | Self::NetfilterPresent => None,
            Self::NotFound => Some(NftProblem {
                reason: "the kernel has no nf_tables (not loaded, not among the running kernel's modules)",
                fix: "`sudo modprobe nf_tables` (and install nftables), or boot a kernel built with it",
            }),
            Self::LibraryMissing => Some(NftProblem {
                reason: "libnftables.so.1 is not installed",
                fix: "install it: `sudo apt-get install libnftables1` (Debian/Ubuntu) or `sudo dnf install nftables`",
            }),
            Self::CommandMissing => Some(NftProblem {
                reason: "the nft command is not installed (this static build runs it to build a network's table)",
                fix: "install it: `sudo apt-get install nftables` (Debian/Ubuntu) or `sudo dnf install nftables`",
            }),
        }
    }
}

/// The kernel side first (a kernel without nf_tables is the deeper
/// problem), then the library.
pub(super) fn evidence(roots: &ProbeRoots, release: Option<&str>) -> NftEvidence {
    let proc = &roots.proc_root;
    let loaded = fs::read_to_string(proc.join("modules")).is_ok_and(|m| super::parse::module_loaded(&m, "nf_tables"));
    let modules_dir = release.map(|r| roots.fs_root.join("lib/modules").join(r));
    let kernel = if loaded {
        NftEvidence::ModuleLoaded
    } else {
        match modules_dir.as_deref().and_then(module_listed) {
            Some(true) => NftEvidence::ModuleAvailable,
            Some(false) => NftEvidence::NotFound,
            // No module index to read (a container, a kernel installed elsewhere): netfilter's
            // core being there is the best sign left.
            None if proc.join("net/netfilter/nf_log").exists() => NftEvidence::NetfilterPresent,
            None => NftEvidence::NotFound,
        }
    };
    match NftEngine::BUILT_IN {
        _ if !kernel.usable() => kernel,
        NftEngine::Library if !library_present(&roots.fs_root) => NftEvidence::LibraryMissing,
        NftEngine::Command if !command_present(&roots.fs_root) => NftEvidence::CommandMissing,
        _ => kernel,
    }
}

/// `nft` where the firewall looks for it without a `PATH` ([`find_nft`]),
/// under `fs_root`.
fn command_present(fs_root: &Path) -> bool {
    find_nft(None, |p| p.strip_prefix("/").is_ok_and(|rel| fs_root.join(rel).is_file())).is_some()
}

/// Whether the kernel's module index lists nf_tables (a module or built in);
/// `None` when there is no index to read.
fn module_listed(dir: &Path) -> Option<bool> {
    let dep = fs::read_to_string(dir.join("modules.dep")).ok()?;
    let builtin = fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
    Some(dep.lines().chain(builtin.lines()).any(names_nf_tables))
}

/// `kernel/net/netfilter/nf_tables.ko.xz: kernel/...` (modules.dep) or
/// `kernel/net/netfilter/nf_tables.ko` (modules.builtin).
fn names_nf_tables(line: &str) -> bool {
    let path = line.split(':').next().unwrap_or_default();
    let file = path.rsplit('/').next().unwrap_or_default();
    file.split_once(".ko").is_some_and(|(name, _)| name == "nf_tables")
}

/// `libnftables.so.1` in the usual library directories under `fs_root`
/// (multiarch ones included).
fn library_present(fs_root: &Path) -> bool {
    const LIB: &str = "libnftables.so.1";
    let mut dirs: Vec<std::path::PathBuf> =
        ["usr/lib64", "usr/lib", "lib64", "lib", "usr/local/lib"].iter().map(|d| fs_root.join(d)).collect();
    for base in ["usr/lib", "lib"] {
        if let Ok(entries) = fs::read_dir(fs_root.join(base)) {
            dirs.extend(entries.flatten().map(|e| e.path()).filter(|p| p.to_string_lossy().contains("-linux-")));
        }
    }
    dirs.iter().any(|d| d.join(LIB).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nft_command_is_found_in_the_sbin_and_bin_directories() {
        let root = tempfile::tempdir().unwrap();
        assert!(!command_present(root.path()));
        fs::create_dir_all(root.path().join("usr/sbin")).unwrap();
        fs::write(root.path().join("usr/sbin/nft"), "").unwrap();
        assert!(command_present(root.path()));
        assert!(NftEvidence::CommandMissing.problem().is_some_and(|p| p.fix.contains("apt-get install nftables")));
    }

    #[test]
    fn module_index_lines_name_nf_tables_only() {
        assert!(names_nf_tables("kernel/net/netfilter/nf_tables.ko.xz: kernel/net/netfilter/nfnetlink.ko.xz"));
        assert!(names_nf_tables("kernel/net/netfilter/nf_tables.ko"));
        assert!(!names_nf_tables("kernel/net/netfilter/nf_tables_set.ko: kernel/net/netfilter/nf_tables.ko"));
        assert!(!names_nf_tables("kernel/net/netfilter/nft_nat.ko.zst:"));
    }

    #[test]
    fn every_missing_piece_has_a_reason_and_a_fix() {
        assert_eq!(NftEvidence::ModuleAvailable.problem(), None);
        assert!(NftEvidence::NotFound.problem().is_some_and(|p| p.fix.contains("sudo modprobe nf_tables")));
        assert!(NftEvidence::LibraryMissing.problem().is_some_and(|p| p.fix.contains("libnftables1")));
        assert!(!NftEvidence::LibraryMissing.usable());
    }
}

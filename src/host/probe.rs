//! What this host can do for networking, as data: [`HostCaps::probe`].
//!
//! Owns the questions a mode choice depends on: who we are (euid,
//! CAP_NET_ADMIN, CAP_SYS_ADMIN, already inside a user namespace?), whether
//! user namespaces may be created (the three kernel knobs), subordinate ids,
//! `/dev/net/tun`, the pasta and slirp4netns binaries and what they support,
//! nftables, a default route, and whether we run inside a container. It never
//! decides anything (that is [`crate::flow::select`]) and never changes the host:
//! it reads files, runs `pasta --version`/`--help` and `slirp4netns
//! --version`/`--help`, and writes only its own cache.
//!
//! Every path comes from [`ProbeRoots`], so hostile hosts are unit-tested as
//! fake trees. Failures to read are data (`false`, `None`, an empty list),
//! never errors: a probe that cannot look says so by what it reports.
//!
//! # Decisions
//!
//! - **`/dev/net/tun` openability is injectable** ([`TunCheck`]). The real
//!   probe opens the node ([`crate::host::diagnose::check_tun`]); root can open anything,
//!   so tests of a 0600 node use [`TunCheck::FromMode`], which judges the
//!   mode bits and owner against the injected euid and gid (supplementary
//!   groups and ACLs are not modelled).
//! - **nftables is read from files** ([`NftEvidence`]): `nf_tables` listed in
//!   `<proc>/modules`, else in the running kernel's module index
//!   (`lib/modules/<release>/modules.dep` or `modules.builtin`: it autoloads),
//!   else, when there is no index to read, `<proc>/net/netfilter/nf_log`
//!   (netfilter core); and `libnftables.so.1` in the library directories.
//!   Being root is *not* evidence: it says nothing about the kernel, and root
//!   is the only caller for whom the answer matters. No nft context is
//!   created here; the bridge path still reports its own failure if the
//!   guess is wrong.
//! - **Whose network namespace?** Inside a user namespace CapEff shows the
//!   capabilities held *there*. `NS_GET_USERNS` on `<proc>/self/ns/net` (a
//!   read-only ioctl) tells whether our user namespace owns our network
//!   namespace, i.e. whether CAP_NET_ADMIN reaches it.
//! - **Slow probes are cached** in `cache_dir` (one JSON file per helper),
//!   keyed by the binary's path, size, mtime and inode. Only successful
//!   probes are cached; a corrupted or stale file is ignored and rewritten
//!   atomically (temporary file + rename). The cache directory must be
//!   private to the caller: [`ProbeRoots::current`] puts it in the 0700 run
//!   directory.

mod helpers;
mod nft;
mod uids;
pub(crate) mod parse;
#[cfg(test)]
pub(crate) mod test_hosts;

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::helpers::pasta::features::{self, PastaFeatures, TapBugs};
use crate::host::diagnose::{TunProblem, UsernsKnobs};
use crate::state::paths::Paths;

pub use crate::helpers::slirp::features::SlirpFeatures;
pub use parse::IdRange;

/// Bit of `CAP_NET_ADMIN` in `CapEff`.
const CAP_NET_ADMIN: u32 = 12;
/// Bit of `CAP_SYS_ADMIN` in `CapEff`.
const CAP_SYS_ADMIN: u32 = 21;

/// Why writing the probe cache failed (only logged: a probe never fails).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The cache file could not be written.
    #[error("failed to write probe cache {}", path.display())]
    CacheWrite {
        /// File (or directory) being written.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// How [`HostCaps::probe`] decides whether `/dev/net/tun` is usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TunCheck {
    /// Open it read-write, as pasta will ([`crate::host::diagnose::check_tun`]).
    #[default]
    Open,
    /// Judge its mode bits and owner against the injected euid and gid;
    /// for fake trees, where the real caller (often root) could open anything.
    FromMode,
}

/// Every root the probe reads, injected so tests can point it at fake trees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeRoots {
    /// procfs, normally `/proc`.
    pub proc_root: PathBuf,
    /// Holds `subuid`, `subgid` and `passwd`, normally `/etc`.
    pub etc_root: PathBuf,
    /// Filesystem root holding `.dockerenv` and `run/.containerenv`, normally `/`.
    pub fs_root: PathBuf,
    /// The tun device node, normally `/dev/net/tun`.
    pub dev_tun: PathBuf,
    /// The `PATH` helpers are looked up on.
    pub path_env: Option<OsString>,
    /// The pasta binary to probe instead of the one on `PATH`.
    pub pasta: Option<PathBuf>,
    /// Where slow probe results are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Whether the cache may be written (false: read-only commands such as
    /// `doctor` and `plan` read it but never create or update it).
    pub cache_writable: bool,
    /// Effective uid.
    pub euid: u32,
    /// Real uid (whose subordinate ids newuidmap grants).
    pub uid: u32,
    /// Effective gid.
    pub gid: u32,
    /// How tun openability is decided.
    pub tun_check: TunCheck,
}

impl ProbeRoots {
    /// The real host for this process: `/proc` from `paths`, `/etc`, `/`,
    /// `/dev/net/tun`, `$PATH`, and a cache in `<run_dir>/probe-cache`. The
    /// cache is used only when the run directory already exists and is
    /// private to the caller: a refused or missing one gets nothing written
    /// into it (the run creates it, checked, and the next run caches).
    pub fn current(paths: &Paths) -> Self {
        let euid = nix::unistd::geteuid().as_raw();
        let usable = crate::state::safefs::check_private_dir(&paths.run_dir, euid).is_ok();
        Self {
            proc_root: paths.proc_root.clone(),
            etc_root: PathBuf::from("/etc"),
            fs_root: PathBuf::from("/"),
            dev_tun: PathBuf::from("/dev/net/tun"),
            path_env: std::env::var_os("PATH"),
            pasta: None,
            cache_dir: usable.then(|| paths.run_dir.join("probe-cache")),
            cache_writable: true,
            euid,
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            tun_check: TunCheck::Open,
        }
    }

    /// [`ProbeRoots::current`] for a command that only reads: the cache is
    /// read when present, never written.
    pub fn read_only(paths: &Paths) -> Self {
        Self { cache_writable: false, ..Self::current(paths) }
    }
}

/// `/dev/net/tun` as this caller sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TunStatus {
    /// Device path.
    pub path: PathBuf,
    /// Why it is unusable; `None` when it opens read-write.
    #[serde(serialize_with = "helpers::display_opt")]
    pub problem: Option<TunProblem>,
}

/// Which parts of the host a probe looks at. A run asks only what its
/// plan reads: an explicit mode needs who we are and, for a helper mode,
/// the helper and the tun device; `auto` and fallback policies need all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeScope {
    /// Who we are: uids, capabilities, user namespace, seccomp.
    Identity,
    /// Identity, pasta, the tun device and the default routes.
    Pasta,
    /// Identity, slirp4netns and the tun device.
    Slirp4netns,
    /// Everything.
    Full,
}

/// A helper binary: absent, present but unusable, or probed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Helper<F> {
    /// Not looked at (outside the probe's [`ProbeScope`]).
    NotProbed,
    /// Not found on `PATH`.
    Missing,
    /// Found, but running it for its version or options failed.
    Broken {
        /// The binary.
        path: PathBuf,
        /// What failed, with its causes.
        error: String,
    },
    /// Found and probed.
    Found {
        /// The binary.
        path: PathBuf,
        /// What it supports.
        features: F,
    },
}

impl<F> Helper<F> {
    /// The binary's path, when one was found.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Self::Missing | Self::NotProbed => None,
            Self::Broken { path, .. } | Self::Found { path, .. } => Some(path),
        }
    }

    /// The probed features, when probing succeeded.
    pub fn features(&self) -> Option<&F> {
        match self {
            Self::Found { features, .. } => Some(features),
            Self::Missing | Self::NotProbed | Self::Broken { .. } => None,
        }
    }
}

/// pasta's features plus the tap-path TCP bugs they imply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PastaCaps {
    /// Version and options.
    #[serde(flatten)]
    pub features: PastaFeatures,
    /// [`PastaFeatures::tcp_tap_bugs`], precomputed for `--json`.
    pub tcp_tap_bugs: TapBugs,
}

impl From<PastaFeatures> for PastaCaps {
    fn from(features: PastaFeatures) -> Self {
        Self { tcp_tap_bugs: features.tcp_tap_bugs(), features }
    }
}

/// Why nftables is believed usable (see the module docs for the heuristic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NftEvidence {
    /// `nf_tables` is listed in `<proc>/modules`.
    ModuleLoaded,
    /// The running kernel's module index lists `nf_tables` (it autoloads).
    ModuleAvailable,
    /// No module index to read, and `<proc>/net/netfilter/nf_log` exists.
    NetfilterPresent,
    /// The kernel has no nf_tables (or shows no sign of netfilter at all).
    NotFound,
    /// The kernel has it but `libnftables.so.1` is not installed.
    LibraryMissing,
    /// The kernel has it but the `nft` command, which a statically linked
    /// build runs instead of loading libnftables, is not installed.
    CommandMissing,
}

/// Default routes of our network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct DefaultRoute {
    /// An up IPv4 default route not on `lo`.
    pub ipv4: bool,
    /// An up IPv6 default route (`::/0`) not on `lo` and not a reject route.
    pub ipv6: bool,
}

impl DefaultRoute {
    /// True when either family has one.
    pub fn any(self) -> bool {
        self.ipv4 || self.ipv6
    }
}

/// A sign that we run inside a container, and which.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "hint", rename_all = "snake_case")]
pub enum ContainerHint {
    /// `/.dockerenv` exists (docker).
    DockerEnv,
    /// `/run/.containerenv` exists (podman).
    ContainerEnv,
    /// pid 1's environment has `container=VALUE` (systemd convention; podman, lxc).
    EnvVar {
        /// The value.
        value: String,
    },
    /// `<proc>/1/cgroup` names a container runtime.
    Cgroup {
        /// The keyword found: `docker`, `kubepods`, `libpod` or `lxc`.
        runtime: String,
    },
}

impl ContainerHint {
    /// A short human name: `docker: /.dockerenv`, `container=podman`, ...
    pub fn label(&self) -> String {
        match self {
            ContainerHint::DockerEnv => "docker: /.dockerenv".to_owned(),
            ContainerHint::ContainerEnv => "podman: /run/.containerenv".to_owned(),
            ContainerHint::EnvVar { value } => format!("container={value}"),
            ContainerHint::Cgroup { runtime } => format!("{runtime} cgroup"),
        }
    }
}

/// Everything [`crate::flow::select`] needs to know about the host, as plain data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostCaps {
    /// Effective uid.
    pub euid: u32,
    /// Real uid.
    pub uid: u32,
    /// CAP_NET_ADMIN is in CapEff (in our user namespace).
    pub cap_net_admin: bool,
    /// CAP_SYS_ADMIN is in CapEff (in our user namespace).
    pub cap_sys_admin: bool,
    /// `<proc>/self/uid_map` is not the identity map: we are in a child user namespace.
    pub in_userns: bool,
    /// Our user namespace owns our network namespace (so CAP_NET_ADMIN reaches
    /// it); `None` when that could not be determined.
    pub netns_is_own: Option<bool>,
    /// We run under a seccomp filter (`Seccomp: 2` in `<proc>/self/status`).
    pub seccomp_filter: bool,
    /// The knobs that can forbid unprivileged user namespaces.
    #[serde(serialize_with = "helpers::knobs")]
    pub userns_knobs: UsernsKnobs,
    /// Ranges in `/etc/subuid` for the real uid (by name or number).
    pub subuid: Vec<IdRange>,
    /// Ranges in `/etc/subgid` for the real uid's name (or number).
    pub subgid: Vec<IdRange>,
    /// `newuidmap` on `PATH`.
    pub newuidmap: Option<PathBuf>,
    /// `newgidmap` on `PATH`.
    pub newgidmap: Option<PathBuf>,
    /// `/dev/net/tun`.
    pub tun: TunStatus,
    /// pasta.
    pub pasta: Helper<PastaCaps>,
    /// slirp4netns.
    pub slirp4netns: Helper<SlirpFeatures>,
    /// Whether nftables looks usable, and why.
    pub nftables: NftEvidence,
    /// Default routes.
    pub default_route: DefaultRoute,
    /// Signs of running in a container; empty when none.
    pub container: Vec<ContainerHint>,
    /// The kernel's release (`<proc>/sys/kernel/osrelease`), when readable.
    pub kernel_release: Option<String>,
    /// The accelerator, probed only for a setup that asks for it
    /// ([`crate::accel::probe::offer`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accel: Option<crate::accel::probe::Offer>,
}

impl HostCaps {
    /// Probe the host under `roots`, reusing cached helper probes.
    pub fn probe(roots: &ProbeRoots) -> Self {
        probe_with(roots, roots.cache_dir.as_deref(), ProbeScope::Full)
    }

    /// Probe what `scope` covers, reusing cached helper probes; what it
    /// leaves out reads as not probed (helpers) or empty.
    pub fn probe_scoped(roots: &ProbeRoots, scope: ProbeScope) -> Self {
        probe_with(roots, roots.cache_dir.as_deref(), scope)
    }

    /// Probe without reading or writing the cache.
    pub fn probe_uncached(roots: &ProbeRoots) -> Self {
        probe_with(roots, None, ProbeScope::Full)
    }

    /// Why a user namespace cannot be created here (the fix included), or
    /// `None` when nothing visible forbids it. `max_user_namespaces = 0` stops
    /// everyone; the Debian and AppArmor knobs only stop callers without
    /// CAP_SYS_ADMIN.
    pub fn userns_blocker(&self) -> Option<String> {
        let k = &self.userns_knobs;
        let blocked = k.max_user_namespaces == Some(0)
            || (!self.cap_sys_admin && (k.unprivileged_userns_clone == Some(0) || k.apparmor_restrict == Some(1)));
        blocked.then(|| k.hint())
    }

    /// True when a new network namespace can be made: CAP_SYS_ADMIN, or a
    /// user namespace to get it in.
    pub fn can_make_netns(&self) -> bool {
        self.cap_sys_admin || self.userns_blocker().is_none()
    }

    /// True when any container hint was found.
    pub fn in_container(&self) -> bool {
        !self.container.is_empty()
    }
}

/// The features of the pasta binary at `path`, from the probe cache when it
/// is fresh (one probe per binary, not one per run).
pub fn pasta_features(roots: &ProbeRoots, path: &Path) -> Result<features::PastaFeatures, String> {
    helpers::cached(roots.cache_dir.as_deref(), roots.cache_writable, "pasta", path, || {
        features::probe(path).map_err(|e| helpers::chain(&e))
    })
}

fn find_helper(path_env: Option<&std::ffi::OsStr>, name: &str) -> Option<PathBuf> {
    crate::host::path::find_executable(path_env, name.as_ref(), crate::host::path::Entries::Absolute)
}

fn probe_with(roots: &ProbeRoots, cache: Option<&Path>, scope: ProbeScope) -> HostCaps {
    let proc = &roots.proc_root;
    let read = |p: PathBuf| fs::read_to_string(p).unwrap_or_default();
    let full = scope == ProbeScope::Full;
    let status = read(proc.join("self/status"));
    let cap_eff = parse::cap_eff(&status).unwrap_or(0);
    let user = if full { parse::user_name(&read(roots.etc_root.join("passwd")), roots.uid) } else { None };
    let ids = |file: &str| match full {
        true => parse::subid_ranges(&read(roots.etc_root.join(file)), user.as_deref(), roots.uid),
        false => Vec::new(),
    };
    let path_env = roots.path_env.as_deref();
    // A helper out of scope is not even looked up (a PATH walk per helper).
    let probe_pasta = full || scope == ProbeScope::Pasta;
    let pasta_path = probe_pasta.then(|| roots.pasta.clone().or_else(|| find_helper(path_env, "pasta")));
    let pasta =
        match (probe_pasta, pasta_path.flatten()) {
            (false, _) => Helper::NotProbed,
            (true, None) => Helper::Missing,
            (true, Some(path)) => helpers::cached(cache, roots.cache_writable, "pasta", &path, || {
                features::probe(&path).map_err(|e| helpers::chain(&e))
            })
            .map_or_else(
                |error| Helper::Broken { path: path.clone(), error },
                |f| Helper::Found { path: path.clone(), features: PastaCaps::from(f) },
            ),
        };
    let probe_slirp = full || scope == ProbeScope::Slirp4netns;
    let slirp_path = probe_slirp.then(|| find_helper(path_env, "slirp4netns")).flatten();
    let slirp4netns = match (probe_slirp, slirp_path) {
        (false, _) => Helper::NotProbed,
        (true, None) => Helper::Missing,
        (true, Some(path)) => helpers::cached(cache, roots.cache_writable, "slirp4netns", &path, || {
            crate::helpers::slirp::features::probe(&path).map_err(|e| helpers::chain(&e))
        })
        .map_or_else(
            |error| Helper::Broken { path: path.clone(), error },
            |features| Helper::Found { path: path.clone(), features },
        ),
    };
    // pasta copies the host's routes: it needs a default route, and one of
    // each family to serve that family.
    let routes = matches!(scope, ProbeScope::Full | ProbeScope::Pasta);
    let kernel_release = fs::read_to_string(proc.join("sys/kernel/osrelease")).ok().map(|r| r.trim().to_string());
    let tun_problem = match scope {
        ProbeScope::Identity => None,
        _ => helpers::tun_problem(roots).err(),
    };
    HostCaps {
        euid: roots.euid,
        uid: roots.uid,
        cap_net_admin: cap_eff & (1 << CAP_NET_ADMIN) != 0,
        cap_sys_admin: cap_eff & (1 << CAP_SYS_ADMIN) != 0,
        in_userns: fs::read_to_string(proc.join("self/uid_map")).is_ok_and(|m| !parse::is_identity_map(&m)),
        netns_is_own: if full { helpers::netns_is_own(proc) } else { None },
        seccomp_filter: parse::seccomp_mode(&status) == Some(2),
        userns_knobs: if full { UsernsKnobs::read(proc) } else { UsernsKnobs::default() },
        subuid: ids("subuid"),
        subgid: ids("subgid"),
        newuidmap: if full { find_helper(path_env, "newuidmap") } else { None },
        newgidmap: if full { find_helper(path_env, "newgidmap") } else { None },
        tun: TunStatus { path: roots.dev_tun.clone(), problem: tun_problem },
        pasta,
        slirp4netns,
        nftables: if full { nft::evidence(roots, kernel_release.as_deref()) } else { NftEvidence::NotFound },
        default_route: DefaultRoute {
            ipv4: routes
                && crate::host::procnet::read_routes(proc, None)
                    .is_ok_and(|r| crate::host::procnet::has_default_route(&r)),
            ipv6: routes && crate::host::procnet6::has_ipv6_default_route(&read(proc.join("self/net/ipv6_route"))),
        },
        container: if full { helpers::container_hints(roots) } else { Vec::new() },
        kernel_release,
        accel: None,
    }
}

#[cfg(test)]
#[path = "probe_tests.rs"]
mod tests;

//! The probe's effects: finding and running helper binaries, the cache of
//! their features, and the `NS_GET_USERNS` check. Plus serde adaptors for
//! types of other modules that do not derive `Serialize`.

use std::fmt::Display;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};

use super::{ContainerHint, ProbeError, ProbeRoots, TunCheck};
use crate::host::diagnose::{self, TunProblem, UsernsKnobs};

/// Bumped whenever the cached shape changes; other values are ignored.
const CACHE_FORMAT: u32 = 1;

/// An error and its causes, `": "`-joined.
pub(super) fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

/// One cache file: the key of the binary it describes, and the result.
#[derive(Serialize, Deserialize)]
struct CacheEntry<T> {
    format: u32,
    binary: PathBuf,
    len: u64,
    mtime_ns: i128,
    ino: u64,
    features: T,
}

/// `run()`'s result for `binary`, from `<dir>/<name>.json` when that file
/// matches the binary's path, size, mtime and inode; otherwise run it and,
/// on success, rewrite the file (when `writable`). `dir = None` always runs.
pub(super) fn cached<T, F>(dir: Option<&Path>, writable: bool, name: &str, binary: &Path, run: F) -> Result<T, String>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Result<T, String>,
{
    let (Some(dir), Ok(meta)) = (dir, fs::metadata(binary)) else { return run() };
    let file = dir.join(format!("{name}.json"));
    let mtime_ns = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
    let fresh = |e: &CacheEntry<T>| {
        e.format == CACHE_FORMAT
            && e.binary == binary
            && e.len == meta.len()
            && e.mtime_ns == mtime_ns
            && e.ino == meta.ino()
    };
    let hit = fs::read(&file).ok().and_then(|b| serde_json::from_slice::<CacheEntry<T>>(&b).ok()).filter(|e| fresh(e));
    if let Some(entry) = hit {
        return Ok(entry.features);
    }
    let features = run()?;
    let entry = CacheEntry {
        format: CACHE_FORMAT,
        binary: binary.to_owned(),
        len: meta.len(),
        mtime_ns,
        ino: meta.ino(),
        features,
    };
    if !writable {
        return Ok(entry.features);
    }
    if let Err(e) = write_atomic(dir, &file, &entry) {
        log::debug!("{}", chain(&e));
    }
    Ok(entry.features)
}

/// Write `value` as JSON to `file` through a temporary file in `dir` and a rename.
fn write_atomic<T: Serialize>(dir: &Path, file: &Path, value: &T) -> Result<(), ProbeError> {
    let fail = |path: &Path| {
        let path = path.to_owned();
        move |source| ProbeError::CacheWrite { path, source }
    };
    // Never recursive: the parent (the run directory) was checked to exist
    // and be ours; nothing is created above it.
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(fail(dir)(e)),
        _ => {}
    }
    let tmp = file.with_extension(format!("json.{}.tmp", std::process::id()));
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| fail(file)(io::Error::from(e)))?;
    let written = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(&bytes))
        .and_then(|()| fs::rename(&tmp, file));
    if written.is_err() {
        // Best effort: the temporary file may not exist.
        let _ = fs::remove_file(&tmp);
    }
    written.map_err(fail(file))
}

nix::ioctl_none!(ns_get_userns, 0xb7, 0x1);

/// True when the user namespace owning our network namespace is our own
/// (`NS_GET_USERNS` on `<proc>/self/ns/net` names the same inode as
/// `<proc>/self/ns/user`); false when it is another, or outside our scope
/// (`EPERM`); `None` when the question cannot be asked (fake trees, old kernels).
pub(super) fn netns_is_own(proc: &Path) -> Option<bool> {
    let net = File::open(proc.join("self/ns/net")).ok()?;
    // SAFETY: NS_GET_USERNS takes no argument; `net` is an open fd for the call's duration.
    match unsafe { ns_get_userns(net.as_raw_fd()) } {
        Ok(fd) => {
            // SAFETY: on success the ioctl returns a new fd that nothing else owns.
            let owner = File::from(unsafe { OwnedFd::from_raw_fd(fd) }).metadata().ok()?;
            let ours = fs::metadata(proc.join("self/ns/user")).ok()?;
            Some(owner.dev() == ours.dev() && owner.ino() == ours.ino())
        }
        Err(nix::errno::Errno::EPERM) => Some(false),
        Err(_) => None,
    }
}

/// Serialize an optional error as its message.
pub(super) fn display_opt<E: Display, S: Serializer>(value: &Option<E>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

/// Serialize [`UsernsKnobs`] as an object of its three values.
pub(super) fn knobs<S: Serializer>(k: &UsernsKnobs, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Knobs {
        max_user_namespaces: Option<u64>,
        unprivileged_userns_clone: Option<u64>,
        apparmor_restrict_unprivileged_userns: Option<u64>,
    }
    Knobs {
        max_user_namespaces: k.max_user_namespaces,
        unprivileged_userns_clone: k.unprivileged_userns_clone,
        apparmor_restrict_unprivileged_userns: k.apparmor_restrict,
    }
    .serialize(s)
}

/// Whether `/dev/net/tun` is usable, decided as [`ProbeRoots::tun_check`] says.
pub(super) fn tun_problem(roots: &ProbeRoots) -> Result<(), TunProblem> {
    match roots.tun_check {
        TunCheck::Open => diagnose::check_tun(&roots.dev_tun, roots.euid),
        TunCheck::FromMode => {
            let path = roots.dev_tun.display().to_string();
            let meta = match fs::metadata(&roots.dev_tun) {
                Ok(meta) => meta,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(TunProblem::Missing { path }),
                Err(e) => return Err(TunProblem::Other { path, error: e.to_string() }),
            };
            let mode = meta.mode() & 0o7777;
            let rw = match (meta.uid() == roots.euid, meta.gid() == roots.gid) {
                _ if roots.euid == 0 => 0o6,
                (true, _) => (mode >> 6) & 0o6,
                (false, true) => (mode >> 3) & 0o6,
                (false, false) => mode & 0o6,
            };
            if rw == 0o6 {
                Ok(())
            } else {
                Err(TunProblem::NotPermitted { path, uid: roots.euid, mode, owner: meta.uid() })
            }
        }
    }
}

/// Every container hint under `roots`.
pub(super) fn container_hints(roots: &ProbeRoots) -> Vec<ContainerHint> {
    let mut hints = Vec::new();
    if roots.fs_root.join(".dockerenv").exists() {
        hints.push(ContainerHint::DockerEnv);
    }
    if roots.fs_root.join("run/.containerenv").exists() {
        hints.push(ContainerHint::ContainerEnv);
    }
    if let Some(value) = fs::read(roots.proc_root.join("1/environ")).ok().and_then(|e| super::parse::container_env(&e))
    {
        hints.push(ContainerHint::EnvVar { value });
    }
    let cgroup = fs::read_to_string(roots.proc_root.join("1/cgroup")).unwrap_or_default();
    if let Some(runtime) = super::parse::cgroup_runtime(&cgroup) {
        hints.push(ContainerHint::Cgroup { runtime: runtime.to_owned() });
    }
    hints
}

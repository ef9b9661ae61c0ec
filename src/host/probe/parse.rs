//! Pure parsers for the text the probe reads: `/proc/self/status`,
//! `uid_map`, `/etc/sub[ug]id`, `/etc/passwd`, pid 1's cgroup
//! and environment, `/proc/modules` (the helpers' own output is parsed in
//! [`crate::helpers`]).

use serde::Serialize;

/// Keywords in pid 1's cgroup path that name a container runtime, in the
/// order they are reported.
const CGROUP_RUNTIMES: &[&str] = &["docker", "kubepods", "libpod", "lxc"];

/// One subordinate id range from `/etc/subuid` or `/etc/subgid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IdRange {
    /// First id.
    pub start: u32,
    /// Number of ids.
    pub count: u32,
}

/// The `CapEff:` mask of a `/proc/<pid>/status` text.
pub(super) fn cap_eff(status: &str) -> Option<u64> {
    status_field(status, "CapEff:").and_then(|v| u64::from_str_radix(v, 16).ok())
}

/// The `Seccomp:` mode (0 off, 1 strict, 2 filter) of a status text.
pub(super) fn seccomp_mode(status: &str) -> Option<u32> {
    status_field(status, "Seccomp:").and_then(|v| v.parse().ok())
}

fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status.lines().find_map(|l| l.strip_prefix(key)).map(str::trim)
}

/// True for the initial user namespace's map, `0 0 4294967295`.
pub(super) fn is_identity_map(map: &str) -> bool {
    let lines: Vec<Vec<&str>> =
        map.lines().map(|l| l.split_whitespace().collect()).filter(|f: &Vec<_>| !f.is_empty()).collect();
    lines == [vec!["0", "0", "4294967295"]]
}

/// The name of `uid` in `/etc/passwd` text.
pub(crate) fn user_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_owned())
    })
}

/// The ranges of `/etc/subuid`-format text (`owner:start:count`) whose owner
/// is `name` or the number `uid`. Malformed lines and comments are skipped.
pub(crate) fn subid_ranges(text: &str, name: Option<&str>, uid: u32) -> Vec<IdRange> {
    let uid = uid.to_string();
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.trim().split(':').collect();
            let [owner, start, count] = fields[..] else { return None };
            let mine = owner == uid || Some(owner) == name;
            let range = IdRange { start: start.parse().ok()?, count: count.parse().ok()? };
            (mine && range.count > 0).then_some(range)
        })
        .collect()
}

/// The first container runtime named in the paths of `/proc/1/cgroup` text.
pub(super) fn cgroup_runtime(text: &str) -> Option<&'static str> {
    let paths: Vec<&str> = text.lines().filter_map(|l| l.splitn(3, ':').nth(2)).collect();
    CGROUP_RUNTIMES.iter().copied().find(|kw| paths.iter().any(|p| p.contains(kw)))
}

/// The value of `container=` in a NUL-separated environment block.
pub(super) fn container_env(environ: &[u8]) -> Option<String> {
    environ
        .split(|&b| b == 0)
        .find_map(|var| var.strip_prefix(b"container="))
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// True when `/proc/modules` text lists module `name`.
pub(super) fn module_loaded(modules: &str, name: &str) -> bool {
    modules.lines().any(|l| l.split_whitespace().next() == Some(name))
}

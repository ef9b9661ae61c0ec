//! How the holder's user namespace maps ids. Pure: decided from the user's
//! ids, their subordinate ranges and whether `newuidmap`/`newgidmap` exist.
//!
//! With subordinate ids the user is root inside and the ranges follow
//! (`0 UID 1`, `1 START COUNT`), written by the setuid helpers; containers
//! then have ids to give their processes, and `setgroups` stays allowed.
//! Without them the holder maps the user alone (`0 UID 1`), written
//! directly after `setgroups` is denied, as an unprivileged process may.

use crate::host::probe::IdRange;
use std::path::{Path, PathBuf};

/// The holder's id mapping.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum IdMapping {
    /// The user's subordinate ranges, through the setuid helpers.
    SubIds {
        /// `newuidmap`.
        newuidmap: PathBuf,
        /// `newgidmap`.
        newgidmap: PathBuf,
        /// Arguments after the pid, for `newuidmap`.
        uid_args: Vec<String>,
        /// Arguments after the pid, for `newgidmap`.
        gid_args: Vec<String>,
    },
    /// The user alone (`0 UID 1`, `setgroups` denied).
    Single {
        /// The user's uid.
        uid: u32,
        /// The user's gid.
        gid: u32,
    },
}

impl IdMapping {
    /// Choose: subordinate ids when both helpers and both ranges exist.
    pub fn choose(
        uid: u32,
        gid: u32,
        subuid: &[IdRange],
        subgid: &[IdRange],
        helpers: Option<(PathBuf, PathBuf)>,
    ) -> Self {
        match (helpers, subuid.first(), subgid.first()) {
            (Some((newuidmap, newgidmap)), Some(u), Some(g)) if u.count > 0 && g.count > 0 => Self::SubIds {
                newuidmap,
                newgidmap,
                uid_args: args(uid, u),
                gid_args: args(gid, g),
            },
            _ => Self::Single { uid, gid },
        }
    }

    /// For people: what the holder maps.
    pub fn describe(&self) -> String {
        match self {
            Self::SubIds { uid_args, .. } => {
                format!("your uid and subordinate ids {}-{} (newuidmap)", uid_args[4], sum(&uid_args[4], &uid_args[5]))
            }
            Self::Single { uid, .. } => format!("your uid {uid} alone (no subordinate ids)"),
        }
    }
}

/// The mapping for this user on this host: `/etc/subuid`, `/etc/subgid`
/// and `/etc/passwd` under `etc`, the helpers on `path_env`.
pub fn for_user(etc: &Path, path_env: Option<&std::ffi::OsStr>, uid: u32, gid: u32) -> IdMapping {
    use crate::host::probe::parse;
    let read = |f: &str| std::fs::read_to_string(etc.join(f)).unwrap_or_default();
    let name = parse::user_name(&read("passwd"), uid);
    let find = |n: &str| crate::host::path::find_executable(path_env, n.as_ref(), crate::host::path::Entries::Absolute);
    let helpers = find("newuidmap").zip(find("newgidmap"));
    let subuid = parse::subid_ranges(&read("subuid"), name.as_deref(), uid);
    let subgid = parse::subid_ranges(&read("subgid"), name.as_deref(), uid);
    IdMapping::choose(uid, gid, &subuid, &subgid, helpers)
}

fn args(own: u32, range: &IdRange) -> Vec<String> {
    ["0", &own.to_string(), "1", "1", &range.start.to_string(), &range.count.to_string()]
        .into_iter()
        .map(String::from)
        .collect()
}

fn sum(start: &str, count: &str) -> u64 {
    let (s, c): (u64, u64) = (start.parse().unwrap_or(0), count.parse().unwrap_or(1));
    s + c.saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_with_both_helpers_map_root_then_the_range() {
        let r = [IdRange { start: 165536, count: 65536 }];
        let helpers = Some(("/usr/bin/newuidmap".into(), "/usr/bin/newgidmap".into()));
        let m = IdMapping::choose(999, 995, &r, &r, helpers);
        let IdMapping::SubIds { uid_args, gid_args, .. } = &m else { panic!("{m:?}") };
        assert_eq!(uid_args, &["0", "999", "1", "1", "165536", "65536"]);
        assert_eq!(gid_args, &["0", "995", "1", "1", "165536", "65536"]);
        assert_eq!(m.describe(), "your uid and subordinate ids 165536-231071 (newuidmap)");
    }

    #[test]
    fn without_helpers_or_ranges_the_user_is_mapped_alone() {
        let r = [IdRange { start: 165536, count: 65536 }];
        assert_eq!(IdMapping::choose(999, 995, &r, &r, None), IdMapping::Single { uid: 999, gid: 995 });
        let helpers = Some(("/a".into(), "/b".into()));
        assert_eq!(IdMapping::choose(999, 995, &[], &r, helpers), IdMapping::Single { uid: 999, gid: 995 });
    }
}

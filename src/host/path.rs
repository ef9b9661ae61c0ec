//! The one `PATH` lookup: where an executable named `name` is.
//!
//! Helpers (pasta, slirp4netns, newuidmap) are found only in absolute
//! directories: resolving a relative or empty `PATH` entry against the
//! current directory would let any directory we `cd` into choose the
//! helper. A command to run is found as `execvp` finds it (relative
//! entries too), since that is what the user's shell would run.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// Which `PATH` entries count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entries {
    /// Absolute directories only (helpers).
    Absolute,
    /// Every entry, as `execvp` does (the command of a run).
    All,
}

/// The first executable regular file `name` in the directories of
/// `path_env`; `name` itself when it holds a `/` (as `execvp` does).
/// Nothing is spawned.
pub fn find_executable(path_env: Option<&OsStr>, name: &OsStr, entries: Entries) -> Option<PathBuf> {
    let executable =
        |p: &PathBuf| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if name.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(name));
    }
    std::env::split_paths(path_env?)
        .filter(|dir| entries == Entries::All || dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(executable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::Path;

    fn find(path: Option<&OsStr>) -> Option<PathBuf> {
        find_executable(path, OsStr::new("pasta"), Entries::Absolute)
    }

    fn write_file(path: &Path, mode: u32) {
        fs::write(path, "#!/bin/sh\n").unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_helper_is_the_first_executable_file_on_path() {
        let tmp = tempfile::tempdir().unwrap();
        let [plain, dir_named, good, later] = ["plain", "dir", "good", "later"].map(|d| tmp.path().join(d));
        for dir in [&plain, &dir_named, &good, &later] {
            fs::create_dir(dir).unwrap();
        }
        write_file(&plain.join("pasta"), 0o644);
        fs::create_dir(dir_named.join("pasta")).unwrap();
        write_file(&good.join("pasta"), 0o700);
        write_file(&later.join("pasta"), 0o755);
        let path = std::env::join_paths([&plain, &dir_named, &tmp.path().join("missing"), &good, &later]).unwrap();

        assert_eq!(find(Some(&path)), Some(good.join("pasta")));
        assert_eq!(find(Some(plain.as_os_str())), None);
        assert_eq!(find(None), None);
    }

    #[test]
    fn a_helper_is_never_found_in_relative_or_empty_entries() {
        let tmp = tempfile::tempdir().unwrap();
        write_file(&tmp.path().join("pasta"), 0o755);
        let relative = relative_to_cwd(tmp.path());

        assert_eq!(find(Some(OsStr::new(&format!(":{relative}:")))), None);
    }

    /// `tmp` spelled relative to the current directory (`../../tmp/...`).
    fn relative_to_cwd(tmp: &Path) -> String {
        let depth = std::env::current_dir().unwrap().components().count() - 1;
        format!("{}{}", "../".repeat(depth), tmp.strip_prefix("/").unwrap().display())
    }

    #[test]
    fn a_command_is_found_as_execvp_finds_it() {
        assert_eq!(find_executable(None, OsStr::new("./x"), Entries::All), Some(PathBuf::from("./x")));
        let rel = std::ffi::OsString::from("no/such/dir");
        assert_eq!(find_executable(Some(&rel), OsStr::new("nope"), Entries::All), None);
    }
}

//! Finding slirp4netns and learning which version is installed.
//!
//! Everything this backend uses (`--netns-type=path`, `--userns-path`, a
//! ready signal sent after the API socket listens) exists since v0.4.0, so
//! that is the oldest version accepted. The version comes from
//! `slirp4netns --version`, whose first line is `slirp4netns version X.Y.Z`.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A slirp4netns release number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct SlirpVersion {
    /// Major.
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl std::fmt::Display for SlirpVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The oldest slirp4netns this backend drives.
pub const MIN_VERSION: SlirpVersion = SlirpVersion { major: 0, minor: 4, patch: 0 };

/// Errors of probing slirp4netns.
#[derive(Debug, thiserror::Error)]
pub enum SlirpProbeError {
    /// `slirp4netns --version` could not be run.
    #[error("run {} --version", .program.display())]
    Run {
        /// Program path.
        program: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Its output held no version number.
    #[error("no version in the output of {} --version: {output:?}", .program.display())]
    Unrecognised {
        /// Program path.
        program: PathBuf,
        /// What it printed.
        output: String,
    },
    /// The version is older than [`MIN_VERSION`].
    #[error("slirp4netns {found} is too old: {MIN_VERSION} or newer is needed")]
    TooOld {
        /// The version found.
        found: SlirpVersion,
    },
}

/// The first executable `slirp4netns` in the absolute directories of `path_env`.
pub fn find_slirp4netns(path_env: Option<&OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path_env?)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join("slirp4netns"))
        .find(|candidate| candidate.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// The version in `slirp4netns --version` output (`slirp4netns version 1.2.0`,
/// suffixes such as `+dev` ignored).
pub fn parse_version(text: &str) -> Option<SlirpVersion> {
    let line = text.lines().find_map(|l| l.trim().strip_prefix("slirp4netns version "))?;
    let digits: String = line.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    let mut parts = digits.split('.').map(|p| p.parse::<u32>().ok());
    let (major, minor) = (parts.next()??, parts.next()??);
    let patch = parts.next().flatten().unwrap_or(0);
    Some(SlirpVersion { major, minor, patch })
}

/// Run `program --version` and check it is at least [`MIN_VERSION`].
pub fn probe_version(program: &Path) -> Result<SlirpVersion, SlirpProbeError> {
    let out = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| SlirpProbeError::Run { program: program.to_owned(), source })?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let found = parse_version(&text)
        .ok_or_else(|| SlirpProbeError::Unrecognised { program: program.to_owned(), output: text.clone() })?;
    if found < MIN_VERSION {
        return Err(SlirpProbeError::TooOld { found });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_12_version_output_parses() {
        let text = "slirp4netns version 1.2.0\ncommit: 656041d45cfca7a4176f6b7eed9e4fe6c11e8383\nlibslirp: 4.7.0\n";
        assert_eq!(parse_version(text), Some(SlirpVersion { major: 1, minor: 2, patch: 0 }));
    }

    #[test]
    fn development_suffix_and_missing_patch_are_tolerated() {
        assert_eq!(parse_version("slirp4netns version 1.3.1+dev\n").map(|v| v.to_string()), Some("1.3.1".into()));
        assert_eq!(parse_version("slirp4netns version 0.4\n").map(|v| v.to_string()), Some("0.4.0".into()));
    }

    #[test]
    fn output_without_a_version_is_not_guessed() {
        assert_eq!(parse_version("Usage: slirp4netns [OPTION]..."), None);
        assert_eq!(parse_version("slirp4netns version unknown"), None);
    }

    #[test]
    fn versions_before_0_4_are_too_old() {
        assert!(SlirpVersion { major: 0, minor: 3, patch: 9 } < MIN_VERSION);
        assert!(SlirpVersion { major: 1, minor: 2, patch: 0 } >= MIN_VERSION);
    }
}

//! What the installed slirp4netns is and supports: its version and the
//! long options its `--help` lists.
//!
//! Parsing is pure ([`parse_version`], [`parse_help`],
//! [`SlirpFeatures::from_outputs`]); [`probe`] is the thin shell that runs
//! the binary twice (finding it is [`crate::host::path`]'s job). Everything
//! this backend uses (`--netns-type=path`, `--userns-path`, a ready signal
//! sent after the API socket listens) exists since v0.4.0; the selection
//! ladder checks for the options themselves.

use crate::helpers::pasta::features::{FeatureProbeError, run_captured};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::Path;

/// A slirp4netns release number (as text in JSON: `"1.2.0"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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

impl Serialize for SlirpVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SlirpVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_version(&format!("slirp4netns version {text}")).ok_or_else(|| serde::de::Error::custom("not a version"))
    }
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

/// What one slirp4netns binary is and supports.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SlirpFeatures {
    /// From `slirp4netns version 1.2.0`.
    pub version: Option<SlirpVersion>,
    /// From `commit: ...`.
    pub commit: Option<String>,
    /// From `libslirp: 4.7.0`.
    pub libslirp: Option<String>,
    /// From `SLIRP_CONFIG_VERSION_MAX: 4`; 3 or more is needed to forward IPv6.
    pub config_version_max: Option<u32>,
    /// Long options (with `--`) that `--help` defines.
    pub options: BTreeSet<String>,
}

impl SlirpFeatures {
    /// Features from the output of `--version` and `--help`.
    pub fn from_outputs(version_text: &str, help_text: &str) -> Self {
        let field =
            |key: &str| version_text.lines().find_map(|l| l.trim().strip_prefix(key)).map(|v| v.trim().to_owned());
        Self {
            version: parse_version(version_text),
            commit: field("commit:"),
            libslirp: field("libslirp:"),
            config_version_max: field("SLIRP_CONFIG_VERSION_MAX:").and_then(|v| v.parse().ok()),
            options: parse_help(help_text),
        }
    }

    /// True when `--help` defines `opt` (`"--api-socket"` or `"api-socket"`).
    pub fn has(&self, opt: &str) -> bool {
        let name = opt.strip_prefix("--").unwrap_or(opt);
        self.options.contains(&format!("--{name}"))
    }
}

/// Long options defined by slirp4netns `--help`: lines starting (after
/// optional indentation) with `-x, --long[=ARG]` or `--long[=ARG]`.
pub fn parse_help(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| {
            let mut tokens = line.split_whitespace();
            let first = tokens.next()?;
            let long =
                if first.len() == 3 && first.starts_with('-') && first.ends_with(',') { tokens.next()? } else { first };
            let name: String =
                long.strip_prefix("--")?.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
            (!name.is_empty()).then(|| format!("--{name}"))
        })
        .collect()
}

/// Run `slirp4netns --version` and `--help` (each within the probe deadline)
/// and parse them; the exit status is ignored, the text decides.
pub fn probe(path: &Path) -> Result<SlirpFeatures, FeatureProbeError> {
    let text = |arg| run_captured(path, arg).map(|c| format!("{}\n{}", c.stdout, c.stderr));
    let features = SlirpFeatures::from_outputs(&text("--version")?, &text("--help")?);
    if features.version.is_none() && !features.has("--configure") {
        return Err(FeatureProbeError::NotSlirp { path: path.to_owned() });
    }
    Ok(features)
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
    fn a_version_is_text_in_json() {
        let v = SlirpVersion { major: 1, minor: 2, patch: 0 };
        assert_eq!(serde_json::to_string(&v).unwrap(), "\"1.2.0\"");
        assert_eq!(serde_json::from_str::<SlirpVersion>("\"1.2.0\"").unwrap(), v);
    }
}

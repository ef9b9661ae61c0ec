//! Which Linux release the host runs, and which of the kernel features
//! pelagos-net relies on it lacks. Pure: the release string comes from the
//! probe (`<proc>/sys/kernel/osrelease`); `doctor` reports what is missing
//! and the test suite names the kernel a test needs.
//!
//! Only features without a fallback are listed. Those with one (open_tree
//! and move_mount, 5.2, for the resolv.conf mounts; close_range, 5.9) work
//! on any kernel.

use std::fmt;

/// A kernel release, as `major.minor` (the rest of the string is the
/// distribution's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

impl KernelVersion {
    /// Parses the leading `MAJOR.MINOR` of a release (`6.1.0-41-amd64`,
    /// `5.14.0-427.el9.x86_64`); `None` when it has none.
    pub fn parse(release: &str) -> Option<Self> {
        let mut parts = release.trim().split(['.', '-', '+']);
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(Self { major, minor })
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A kernel feature pelagos-net needs, and since which release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelFeature {
    /// Short name, as tests and `doctor` cite it.
    pub name: &'static str,
    /// First release that has it.
    pub since: KernelVersion,
    /// What needs it.
    pub used_for: &'static str,
}

/// Every kernel feature without a fallback, oldest first.
pub const FEATURES: &[KernelFeature] = &[
    KernelFeature {
        name: "pidfd",
        since: KernelVersion { major: 5, minor: 3 },
        used_for: "pidfd_open and pidfd_send_signal: stopping helpers and attachments (detach, gc, network rm -f) without hitting a recycled pid",
    },
    KernelFeature {
        name: "nftables table comments",
        since: KernelVersion { major: 5, minor: 10 },
        used_for: "bridge networks: each network's nftables table carries a comment naming its owner",
    },
];

/// The feature named `name` (a test's or doctor's citation).
pub fn feature(name: &str) -> Option<&'static KernelFeature> {
    FEATURES.iter().find(|f| f.name == name)
}

/// The features `release` lacks; empty when it has them all, or when the
/// release cannot be parsed (nothing to say about an unknown kernel).
pub fn missing(release: &str) -> Vec<&'static KernelFeature> {
    match KernelVersion::parse(release) {
        Some(v) => FEATURES.iter().filter(|f| v < f.since).collect(),
        None => Vec::new(),
    }
}

/// The oldest release that has every feature.
pub fn minimum() -> KernelVersion {
    FEATURES.iter().map(|f| f.since).max().unwrap_or(KernelVersion { major: 0, minor: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_releases_parse_to_major_minor() {
        let v = |major, minor| Some(KernelVersion { major, minor });
        assert_eq!(KernelVersion::parse("6.1.0-41-amd64"), v(6, 1));
        assert_eq!(KernelVersion::parse("5.14.0-427.el9.x86_64\n"), v(5, 14));
        assert_eq!(KernelVersion::parse("6.18.0+"), v(6, 18));
        assert_eq!(KernelVersion::parse("6"), None);
        assert_eq!(KernelVersion::parse("garbage"), None);
    }

    #[test]
    fn debian_11_and_newer_lack_nothing_and_older_kernels_are_told_what() {
        for release in ["5.10.0-35-amd64", "5.14.0-427.el9.x86_64", "5.15.0-1-generic", "6.1.0-41-amd64"] {
            assert_eq!(missing(release), Vec::<&KernelFeature>::new(), "{release}");
        }
        let names = |r| missing(r).iter().map(|f| f.name).collect::<Vec<_>>();
        assert_eq!(names("5.4.0-generic"), ["nftables table comments"]);
        assert_eq!(names("4.19.0-27-amd64"), ["pidfd", "nftables table comments"]);
        assert_eq!(missing("not a release"), Vec::<&KernelFeature>::new());
        assert_eq!(minimum().to_string(), "5.10");
        assert_eq!(feature("pidfd").map(|f| f.since.to_string()).as_deref(), Some("5.3"));
    }
}

//! The pasta build a run uses, probed once per run (and cached per binary,
//! see [`crate::host::probe::pasta_features`]): what it must support to
//! keep the host's loopback private, what it can do as root, and the known
//! bugs the user is told about.

use super::RunError;
use crate::helpers::pasta::args::NO_MAP_GW;
use crate::helpers::pasta::features::PastaFeatures;
use crate::model::port::{PortMapping, PortProto};
use crate::state::paths::Paths;
use std::path::Path;

/// The features of `program`, or `None` (logged) when it cannot be probed;
/// pasta then runs with the argv every known build accepts, and fails with
/// its own message if it does not.
pub(super) fn probe(program: &Path, paths: &Paths) -> Option<PastaFeatures> {
    let roots = crate::host::probe::ProbeRoots::current(paths);
    match crate::host::probe::pasta_features(&roots, program) {
        Ok(f) => Some(f),
        Err(e) => {
            log::debug!("probe {}: {e}", program.display());
            None
        }
    }
}

/// Refuse a build that cannot keep the host's loopback out of the
/// namespace's reach. `unchecked_choice`: pasta was named explicitly
/// without `--fallback`, so the selection ladder (which judges builds) did
/// not run; a build with known egress bugs is then named in one warning.
pub(super) fn check(program: &Path, features: Option<&PastaFeatures>, unchecked_choice: bool) -> Result<(), RunError> {
    let Some(f) = features else { return Ok(()) };
    if !f.has(NO_MAP_GW) {
        return Err(RunError::PastaExposesHostLoopback { path: program.to_owned() });
    }
    if unchecked_choice && let Some(bugs) = crate::flow::select::buggy_pasta(program, f) {
        log::warn!("{bugs}; {}", crate::flow::select::PASTA_UPGRADE);
    }
    Ok(())
}

/// Warn about mappings that an old pasta build is known to break.
pub(super) fn warn_known_bugs(features: Option<&PastaFeatures>, ports: &[PortMapping]) {
    let udp_remapped =
        ports.iter().any(|m| m.proto == PortProto::Udp && m.host.map(|h| h.start()) != Some(m.container.start()));
    // Seen with Debian 12's 2023-03-09 build: replies to loopback clients on
    // a remapped UDP port never arrive. The fix date is unknown; builds that
    // predate the tap-path fixes are assumed affected.
    if udp_remapped && features.is_some_and(|f| f.tcp_tap_bugs().any()) {
        log::warn!(
            "this pasta build drops UDP replies to loopback clients when the host port differs from the \
             container port; publish UDP with equal port numbers (-p 5353:5353/udp) or upgrade passt"
        );
    }
}

/// As root, pasta drops to "nobody" unless told otherwise; keep root when
/// this build understands `--runas`.
pub(super) fn runas_for_root(features: Option<&PastaFeatures>) -> Option<u32> {
    features.filter(|f| f.supports_runas()).map(|_| 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn debian() -> PastaFeatures {
        let help = include_str!("../../../tests/fixtures/pasta-help-2023-03-09.txt");
        PastaFeatures::from_outputs("pasta unknown version\n", help)
    }

    #[test]
    fn debians_build_can_keep_the_host_loopback_private_and_keep_root() {
        let f = debian();
        assert!(check(Path::new("/usr/bin/pasta"), Some(&f), true).is_ok());
        assert_eq!(runas_for_root(Some(&f)), Some(0));
    }

    #[test]
    fn a_build_without_no_map_gw_is_refused_naming_pasta_and_the_exposure() {
        let f = PastaFeatures::from_outputs("pasta 2021_01_01.abc\n", "  --netns PATH\n  --runas UID\n");
        let err = check(Path::new("/opt/pasta"), Some(&f), false).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("pasta at /opt/pasta cannot keep the host's loopback private"), "{text}");
        assert!(text.contains("--no-map-gw") && text.contains("slirp4netns"), "{text}");
        assert_eq!(err.exit_code(), 125);
    }
}

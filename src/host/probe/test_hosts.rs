//! Host descriptions for tests: a healthy rootless host and root, built
//! in code, plus pasta and slirp4netns builds to put on them.

use super::{DefaultRoute, Helper, HostCaps, NftEvidence, PastaCaps, SlirpFeatures, TunStatus};
use crate::helpers::pasta::features::PastaFeatures;
use crate::host::diagnose::UsernsKnobs;

pub(crate) const DEBIAN_HELP: &str = include_str!("../../../tests/fixtures/pasta-help-2023-03-09.txt");
pub(crate) const PASTA_MODERN: &[&str] = &[
    "--config-net",
    "--foreground",
    "--stderr",
    "--no-map-gw",
    "--netns",
    "--tcp-ports",
    "--udp-ports",
    "--tcp-ns",
    "--udp-ns",
    "--userns",
    "--runas",
    "--map-guest-addr",
];
pub(crate) const SLIRP_OPTIONS: &[&str] = &[
    "--configure",
    "--mtu",
    "--exit-fd",
    "--ready-fd",
    "--api-socket",
    "--netns-type",
    "--userns-path",
    "--disable-host-loopback",
    "--enable-ipv6",
];

pub(crate) fn pasta(version: &str, options: &[&str]) -> Helper<PastaCaps> {
    let help: String = options.iter().map(|o| format!("  {o} ARG\n")).collect();
    let features = PastaFeatures::from_outputs(version, &help);
    Helper::Found { path: "/usr/bin/pasta".into(), features: features.into() }
}

pub(crate) fn debian_pasta() -> Helper<PastaCaps> {
    let features = PastaFeatures::from_outputs("pasta unknown version\n", DEBIAN_HELP);
    Helper::Found { path: "/usr/bin/pasta".into(), features: features.into() }
}

pub(crate) fn slirp(options: &[&str]) -> Helper<SlirpFeatures> {
    let help: String = options.iter().map(|o| format!("{o}=X  description\n")).collect();
    let features = SlirpFeatures::from_outputs("slirp4netns version 1.2.0\n", &help);
    Helper::Found { path: "/usr/bin/slirp4netns".into(), features }
}

/// A healthy rootless host with a fixed pasta and a full slirp4netns.
pub(crate) fn rootless() -> HostCaps {
    HostCaps {
        euid: 1000,
        uid: 1000,
        cap_net_admin: false,
        cap_sys_admin: false,
        in_userns: false,
        netns_is_own: Some(true),
        seccomp_filter: false,
        userns_knobs: UsernsKnobs {
            max_user_namespaces: Some(63000),
            unprivileged_userns_clone: Some(1),
            apparmor_restrict: None,
        },
        subuid: vec![],
        subgid: vec![],
        newuidmap: None,
        newgidmap: None,
        tun: TunStatus { path: "/dev/net/tun".into(), problem: None },
        pasta: pasta("pasta 2024_08_06.ee36266\n", PASTA_MODERN),
        slirp4netns: slirp(SLIRP_OPTIONS),
        nftables: NftEvidence::NetfilterPresent,
        default_route: DefaultRoute { ipv4: true, ipv6: false },
        container: vec![],
        kernel_release: Some("6.1.0-41-amd64".into()),
        accel: None,
    }
}

pub(crate) fn root() -> HostCaps {
    HostCaps { euid: 0, uid: 0, cap_net_admin: true, cap_sys_admin: true, ..rootless() }
}

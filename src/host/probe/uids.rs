//! A [`HostCaps`] for a caller whose plan reads nothing of the host but
//! who it is.

use super::{DefaultRoute, Helper, HostCaps, NftEvidence, TunStatus, UsernsKnobs};
use std::path::PathBuf;

impl HostCaps {
    /// Who the caller is (`euid`, `uid`), with nothing read: all that
    /// `flow::plan::plan` reads of the host for an explicit mode without
    /// a fallback policy and without a helper (host, loopback, `ns:`, a
    /// root bridge network), for a caller that plans once per short-lived
    /// process (the CNI plugin: three `/proc` files less per call). The
    /// rest reads as not probed, empty or none.
    pub fn uids_only(euid: u32, uid: u32) -> Self {
        HostCaps {
            euid,
            uid,
            cap_net_admin: false,
            cap_sys_admin: false,
            in_userns: false,
            netns_is_own: None,
            seccomp_filter: false,
            userns_knobs: UsernsKnobs::default(),
            subuid: Vec::new(),
            subgid: Vec::new(),
            newuidmap: None,
            newgidmap: None,
            tun: TunStatus { path: PathBuf::from("/dev/net/tun"), problem: None },
            pasta: Helper::NotProbed,
            slirp4netns: Helper::NotProbed,
            nftables: NftEvidence::NotFound,
            default_route: DefaultRoute::default(),
            container: Vec::new(),
            kernel_release: None,
            accel: None,
        }
    }
}

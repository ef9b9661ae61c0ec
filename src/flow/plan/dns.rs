//! Name resolution in the plan: which of the mode's DNS facts apply, the
//! decision (with the host's files read, nothing bound), and whether the
//! setup has anything to prepare for it. The decision itself is
//! [`crate::dns::decide`]'s.

use super::{Refusal, TargetKind};
use crate::dns::{DnsOptions, DnsPlan, ModeDns};
use crate::flow::modes::Input;
use crate::model::mode::NetworkMode;
use std::path::Path;

/// The mode's DNS facts and the options, for a setup that runs a command;
/// `None` for an attachment (the namespace keeps the resolver its maker
/// gave it), which refuses DNS options.
pub(super) fn request(input: &Input<'_>) -> Result<Option<(ModeDns, DnsOptions)>, Refusal> {
    let options = &input.req.network.dns;
    if !input.req.command {
        return if options.is_empty() { Ok(None) } else { Err(Refusal::DnsNeedsCommand) };
    }
    let mode = match input.mode {
        NetworkMode::Pasta => {
            ModeDns::Pasta { tcp_mapped: input.host.pasta.features().is_some_and(|f| f.features.maps_tcp_dns()) }
        }
        NetworkMode::Slirp4netns => ModeDns::Slirp4netns,
        NetworkMode::Bridge(_) => match (&input.req.target, input.network) {
            (TargetKind::NewChild, Some(def)) => ModeDns::Bridge { gateway: def.gateway, listening: true },
            _ => ModeDns::Loopback,
        },
        NetworkMode::Host => ModeDns::Host,
        // A namespace used as it is gets the run's files in the command's
        // own mount namespace, as loopback does.
        NetworkMode::Loopback | NetworkMode::Auto | NetworkMode::Ns(_) => ModeDns::Loopback,
    };
    Ok(Some((mode, options.clone())))
}

/// The decision for `mode` (the host's files read from `etc`); a run on a
/// rootless shared network (`in_holder`) has the host alias on its own
/// `127.0.0.1`, as its setup decides.
pub(super) fn plan(mode: ModeDns, options: &DnsOptions, etc: &Path, in_holder: bool) -> Result<DnsPlan, Refusal> {
    if !in_holder {
        return crate::dns::files_for(mode, options, None, etc).map_err(Refusal::Dns);
    }
    let files = crate::dns::host::HostFiles::read(etc);
    let host = crate::dns::HostDns {
        resolv: files.resolv.conf(),
        hosts: files.hosts.as_deref(),
        address: None,
        alias: crate::dns::setup::loopback_alias(true),
    };
    crate::dns::decide(&crate::dns::DnsRequest { mode, host, options, own: None }).map_err(Refusal::Dns)
}

/// Whether the setup prepares anything for it (files for the child, a
/// forwarder's sockets, a rule).
pub(super) fn prepares(plan: &DnsPlan) -> bool {
    plan.resolv_conf.is_some() || plan.hosts.is_some() || plan.forwarder.is_some() || plan.tcp_fail_fast.is_some()
}

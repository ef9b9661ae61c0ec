//! Name resolution in the run flow: prepared before anything of the run
//! exists (a request that cannot be met fails first), the child's part
//! handed to the namespace child, the forwarder (if the plan has one)
//! started once the namespace is ready and stopped first at teardown.

use super::{RunError, RunOptions};
use crate::dns::decide::ModeDns;
use crate::dns::setup::{DnsSetupRequest, ETC, PreparedDns, prepare};
use crate::model::mode::NetworkMode;
use std::net::Ipv4Addr;
use std::path::Path;

/// Prepare name resolution for a run in `mode`: `pasta` is the pasta
/// binary (pasta mode), `gateway` the bridge network's gateway (bridge mode).
pub(super) fn prepare_for(
    mode: &NetworkMode,
    opts: &RunOptions,
    pasta: Option<&Path>,
    gateway: Option<Ipv4Addr>,
) -> Result<PreparedDns, RunError> {
    let mode = match (mode, gateway) {
        (NetworkMode::Pasta, _) => ModeDns::Pasta { tcp_mapped: pasta.is_some_and(|p| maps_tcp_dns(opts, p)) },
        (NetworkMode::Slirp4netns, _) => ModeDns::Slirp4netns,
        (NetworkMode::Bridge(_), Some(gateway)) => ModeDns::Bridge { gateway, listening: true },
        (NetworkMode::Host, _) => ModeDns::Host,
        _ => ModeDns::Loopback,
    };
    let req =
        DnsSetupRequest { mode, options: &opts.network.dns, own: None, etc: Path::new(ETC), gateway_elsewhere: false };
    let prepared = prepare(&req)?;
    for w in &prepared.plan.warnings {
        log::warn!("{w}");
    }
    log::info!("name resolution: {}", prepared.plan.resolver);
    Ok(prepared)
}

fn maps_tcp_dns(opts: &RunOptions, pasta: &Path) -> bool {
    let roots = crate::host::probe::ProbeRoots::current(&opts.paths);
    crate::host::probe::pasta_features(&roots, pasta).is_ok_and(|f| f.maps_tcp_dns())
}

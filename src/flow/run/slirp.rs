//! slirp4netns in the run flow: what it cannot do is refused before any
//! namespace exists, and it attaches to the child's namespace directly (it
//! keeps its capabilities, so even as root no named netns is needed).

use super::RunError;
use crate::helpers::slirp::api::{forwards_for, port_caveats};
use crate::helpers::slirp::args::HostLoopback;
use crate::helpers::slirp::args::{SlirpPlan, SlirpTarget};
use crate::helpers::slirp::setup::{SlirpNetworkConfig, SlirpSetup, setup_slirp_network};
use crate::model::port::PortMapping;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Refuse what slirp4netns cannot do (ranges, IPv6 host addresses,
/// `--host-port`) and warn about its caveats, before anything starts.
pub(super) fn check_ports(ports: &[PortMapping], host_loopback_ports: &[u16]) -> Result<(), RunError> {
    if !host_loopback_ports.is_empty() {
        return Err(RunError::SlirpUnsupported(
            "slirp4netns cannot give the namespace 127.0.0.1:PORT of the host (--host-port); use --network pasta"
                .into(),
        ));
    }
    forwards_for(ports, HostLoopback::Blocked).map_err(|e| RunError::SlirpUnsupported(e.to_string()))?;
    for caveat in port_caveats(ports, HostLoopback::Blocked) {
        log::warn!("{caveat}");
    }
    Ok(())
}

/// Start slirp4netns against the namespace of `child` and publish `ports`.
#[allow(clippy::too_many_arguments)]
pub(super) fn start(
    program: &Path,
    child: u32,
    rootless: bool,
    api_socket: PathBuf,
    ports: &[PortMapping],
    options: &crate::model::helper_opts::SlirpOptions,
    proc_root: &Path,
    timeout: Duration,
    cancel: &mut dyn FnMut() -> bool,
) -> Result<SlirpSetup, RunError> {
    let ns = |kind: &str| proc_root.join(child.to_string()).join("ns").join(kind);
    let target = SlirpTarget { netns: ns("net"), userns: rootless.then(|| ns("user")) };
    let plan = SlirpPlan::new(target, api_socket).with_options(options);
    let cfg = SlirpNetworkConfig { program, launcher: &[], plan: &plan, ports, proc_root, timeout };
    Ok(setup_slirp_network(&cfg, cancel)?)
}

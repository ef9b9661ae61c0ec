//! `slirp4netns`: the fallback for hosts without a usable pasta. It keeps
//! its capabilities, so it attaches to the namespace directly, even as root;
//! its own forwarding publishes single IPv4 ports only (the builtin driver,
//! `auto`'s choice here, has no such limits).

use super::{Input, ModeDriver, argv_strings};
use crate::flow::plan::{Refusal, TargetKind};
use crate::flow::steps::{Helper, Step};
use crate::helpers::slirp::api::{forwards_for, port_caveats, supported_port_features};
use crate::helpers::slirp::args::{HostLoopback, SlirpFds, SlirpPlan, build_argv};
use crate::model::port::PortMapping;
use std::path::PathBuf;

/// slirp4netns mode.
pub(super) struct Slirp;

/// The ports slirp4netns forwards itself, host ports unpicked or not (an
/// unpicked single port is judged as if picked).
fn native_ports(input: &Input<'_>) -> Vec<PortMapping> {
    if input.builtin {
        return Vec::new();
    }
    let picked = |m: &PortMapping| PortMapping { host: m.host.or(Some(m.container)), ..m.clone() };
    input.req.network.ports.iter().map(picked).collect()
}

impl ModeDriver for Slirp {
    fn check(&self, input: &Input<'_>) -> Result<(), Refusal> {
        if input.host.slirp4netns.path().is_none() {
            return Err(Refusal::SlirpMissing);
        }
        if let Some(problem) = &input.host.tun.problem {
            return Err(Refusal::Tun { helper: "slirp4netns", problem: problem.clone() });
        }
        if !input.req.network.host_loopback_ports.is_empty() {
            return Err(Refusal::HostLoopback { mode: input.mode.clone() });
        }
        forwards_for(&native_ports(input), HostLoopback::Blocked).map_err(Refusal::SlirpPorts)?;
        Ok(())
    }

    fn steps(&self, input: &Input<'_>) -> Vec<Step> {
        let mut steps: Vec<Step> = match input.req.target {
            TargetKind::Created => vec![Step::CreateNetns],
            _ => input.fork_child().into_iter().collect(),
        };
        steps.push(Step::SpawnHelper { helper: Helper::Slirp4netns, target: input.ns() });
        steps.push(Step::AwaitReady { helper: Helper::Slirp4netns });
        steps
    }

    fn helper(&self, input: &Input<'_>, _dns_forward: Option<std::net::Ipv4Addr>) -> Option<(PathBuf, Vec<String>)> {
        let program = input.host.slirp4netns.path().map_or_else(|| PathBuf::from("slirp4netns"), ToOwned::to_owned);
        let plan = SlirpPlan::new(input.shown_target(input.ns()), "/run/.../slirp-<id>.sock".into())
            .with_options(input.slirp_options);
        build_argv(&plan, SlirpFds { ready: 3, exit: Some(4) })
            .ok()
            .map(|argv| (program.clone(), argv_strings(&program, &argv)))
    }

    fn port_support(&self, input: &Input<'_>) -> Option<String> {
        if input.builtin {
            return Some(super::builtin_support(input));
        }
        let f = supported_port_features();
        let yes = |b: bool| if b { "yes" } else { "no" };
        Some(format!(
            "host-IP binding {}, ranges {}, UDP {}, IPv6 host addresses {}",
            yes(f.host_ip),
            yes(f.ranges),
            yes(f.udp),
            yes(f.ipv6_host_ip)
        ))
    }

    fn warnings(&self, input: &Input<'_>) -> Vec<String> {
        port_caveats(&native_ports(input), HostLoopback::Blocked).iter().map(|c| c.to_string()).collect()
    }
}

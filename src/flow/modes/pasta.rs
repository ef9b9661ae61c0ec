//! `pasta`: pasta connects the namespace to the host (egress through a tap
//! device, published ports with its own forwarding on builds that get TCP
//! right). Rootless, pasta joins the namespace's user namespace first; as
//! root it is given a named netns, because it drops its capabilities before
//! opening its target and could not open `/proc/<pid>/ns/net` of a root
//! process, and it keeps root (`--runas 0`) only to open that name.

use super::{Input, ModeDriver, argv_strings};
use crate::flow::plan::{Refusal, TargetKind};
use crate::flow::steps::{Helper, NsRef, Step};
use crate::helpers::pasta::args::{NO_MAP_GW, PastaPlan, build_argv};
use crate::model::port::PortProto;
use std::path::PathBuf;

/// pasta mode.
pub(super) struct Pasta;

impl Pasta {
    /// The namespace pasta is pointed at, and the step that names it first (root).
    fn target(input: &Input<'_>) -> (Option<Step>, NsRef) {
        let ns = input.ns();
        let named = match &input.req.target {
            TargetKind::Given(g) => g.named,
            TargetKind::Created => true,
            TargetKind::NewChild => false,
        };
        if input.rootless() || named { (None, ns) } else { (Some(Step::NameNetns { of: ns }), NsRef::Named) }
    }
}

impl ModeDriver for Pasta {
    fn check(&self, input: &Input<'_>) -> Result<(), Refusal> {
        if input.host.pasta.path().is_none() {
            return Err(Refusal::PastaMissing);
        }
        if let Some(problem) = &input.host.tun.problem {
            return Err(Refusal::Tun { helper: "pasta", problem: problem.clone() });
        }
        if let (Some(path), Some(f)) = (input.host.pasta.path(), input.host.pasta.features())
            && !f.features.has(NO_MAP_GW)
        {
            return Err(Refusal::PastaExposesHostLoopback { path: path.to_owned() });
        }
        let routes = input.host.default_route;
        if !routes.any() {
            return Err(Refusal::NoDefaultRoute);
        }
        let v6 = input.req.network.ports.iter().find(|m| m.host_ip.is_some_and(|ip| ip.is_ipv6()));
        if let (Some(m), false, false) = (v6, input.builtin, routes.ipv6) {
            return Err(Refusal::PastaNoIpv6(m.to_string()));
        }
        Ok(())
    }

    fn steps(&self, input: &Input<'_>) -> Vec<Step> {
        let mut steps: Vec<Step> = match input.req.target {
            TargetKind::Created => vec![Step::CreateNetns],
            _ => input.fork_child().into_iter().collect(),
        };
        let (name, target) = Self::target(input);
        steps.extend(name);
        steps.push(Step::SpawnHelper { helper: Helper::Pasta, target });
        steps.push(Step::AwaitReady { helper: Helper::Pasta });
        steps
    }

    fn helper(&self, input: &Input<'_>, dns_forward: Option<std::net::Ipv4Addr>) -> Option<(PathBuf, Vec<String>)> {
        let program = input.host.pasta.path().map_or_else(|| PathBuf::from("pasta"), ToOwned::to_owned);
        let ports = if input.builtin {
            Vec::new()
        } else {
            input.req.network.ports.iter().filter(|m| m.host.is_some()).cloned().collect()
        };
        let plan = PastaPlan {
            target: input.shown_target(Self::target(input).1),
            ports,
            host_loopback_ports: input.req.network.host_loopback_ports.clone(),
            runas: self.runas(input),
            extra: input.pasta_extra.iter().map(Into::into).collect(),
            dns_forward,
        };
        build_argv(&plan).ok().map(|argv| (program.clone(), argv_strings(&program, &argv)))
    }

    fn runas(&self, input: &Input<'_>) -> Option<u32> {
        let supported = input.host.pasta.features().is_some_and(|f| f.features.supports_runas());
        (!input.rootless() && supported).then_some(0)
    }

    fn port_support(&self, input: &Input<'_>) -> Option<String> {
        Some(if input.builtin { super::builtin_support(input) } else { "host-IP binding, ranges, UDP, IPv6".into() })
    }

    fn warnings(&self, input: &Input<'_>) -> Vec<String> {
        let mut out = Vec::new();
        // pasta named without a fallback policy skips the ladder, which
        // judges builds: a build with known egress bugs is named once.
        if let (false, Some(path), Some(f)) = (input.decided, input.host.pasta.path(), input.host.pasta.features())
            && let Some(bugs) = crate::flow::select::buggy_pasta(path, &f.features)
        {
            out.push(format!("{bugs}; {}", crate::flow::select::PASTA_UPGRADE));
        }
        // Seen with Debian 12's 2023-03-09 build: replies to loopback
        // clients on a remapped UDP port never arrive. The fix date is
        // unknown; builds that predate the tap-path fixes are assumed affected.
        let buggy = input.host.pasta.features().is_some_and(|f| f.tcp_tap_bugs.any());
        let remapped = input
            .req
            .network
            .ports
            .iter()
            .any(|m| m.proto == PortProto::Udp && m.host.map(|h| h.start()) != Some(m.container.start()));
        if buggy && remapped && !input.builtin {
            out.push(
                "this pasta build drops UDP replies to loopback clients when the host port differs from the \
                 container port; publish UDP with equal port numbers or upgrade passt"
                    .into(),
            );
        }
        out
    }
}

//! `bridge[:NAME]` without privileges: the network lives in the user's
//! network holder ([`crate::holder`]). The run's child is created in new
//! namespaces inside the holder's user namespace; a helper that joined the
//! holder makes the network's bridge and table there (first use) and the
//! veth pair into the child's namespace with its leased address. pasta,
//! attached to the holder, carries egress; published ports go through the
//! builtin driver, which keeps the client's address.

use super::{Input, ModeDriver, argv_strings};
use crate::flow::plan::{Refusal, TargetKind};
use crate::flow::steps::{ChildNs, NsRef, Step};
use std::path::PathBuf;

/// Rootless bridge networks.
pub(super) struct Holder;

impl ModeDriver for Holder {
    fn check(&self, input: &Input<'_>) -> Result<(), Refusal> {
        if matches!(input.req.target, TargetKind::Created) {
            return Err(Refusal::HolderNeedsRun);
        }
        if input.host.pasta.path().is_none() {
            return Err(Refusal::PastaMissing);
        }
        if let Some(problem) = &input.host.tun.problem {
            return Err(Refusal::Tun { helper: "pasta", problem: problem.clone() });
        }
        if !input.host.default_route.any() {
            return Err(Refusal::NoDefaultRoute);
        }
        Ok(())
    }

    fn steps(&self, input: &Input<'_>) -> Vec<Step> {
        let network = input.network.map_or_else(String::new, |d| d.name.to_string());
        let mut steps = vec![Step::EnsureHolder, Step::LeaseAddress { network: network.clone(), requested: input.req.ip }];
        if input.req.target == TargetKind::NewChild {
            steps.push(Step::ForkChild { ns: ChildNs::InHolder });
        }
        steps.push(Step::AttachInHolder { network });
        steps
    }

    fn relay_target(&self, input: &Input<'_>) -> NsRef {
        match input.req.target {
            TargetKind::Given(_) => NsRef::Given,
            _ => NsRef::Child,
        }
    }

    fn helper(&self, input: &Input<'_>, _dns_forward: Option<std::net::Ipv4Addr>) -> Option<(PathBuf, Vec<String>)> {
        let program = input.host.pasta.path().map_or_else(|| PathBuf::from("pasta"), ToOwned::to_owned);
        let argv = crate::holder::daemon::pasta_argv(std::path::Path::new("/proc"), 0);
        let mut shown = argv_strings(&program, &argv);
        for a in shown.iter_mut() {
            *a = a.replace("/proc/0/", "/proc/<holder>/");
        }
        Some((program, shown))
    }

    fn port_support(&self, input: &Input<'_>) -> Option<String> {
        input.builtin.then(|| super::builtin_support(input))
    }

    fn warnings(&self, _input: &Input<'_>) -> Vec<String> {
        Vec::new()
    }
}

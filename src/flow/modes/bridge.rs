//! `bridge[:NAME]` (root): the namespace gets a veth pair on the network's
//! Linux bridge, a leased address and a default route through the bridge;
//! NAT and published ports are nftables rules in the network's table.
//! A run's namespace is a named netns made before the fork, which the child
//! joins; an attachment puts the veth's peer into the given namespace.

use super::{Input, ModeDriver, refuse_host_loopback};
use crate::bridge::plan::forwards;
use crate::flow::plan::{Lifetime, Refusal, TargetKind};
use crate::flow::steps::{ChildNs, NsRef, Step};
use crate::model::port::PortMapping;
use std::net::Ipv4Addr;

/// Bridge networks.
pub(super) struct Bridge;

impl ModeDriver for Bridge {
    fn check(&self, input: &Input<'_>) -> Result<(), Refusal> {
        if input.host.euid != 0 {
            return Err(Refusal::BridgeNeedsRoot);
        }
        refuse_host_loopback(input)?;
        if !input.builtin {
            let picked = |m: &PortMapping| PortMapping { host: m.host.or(Some(m.container)), ..m.clone() };
            let ports: Vec<PortMapping> = input.req.network.ports.iter().map(picked).collect();
            forwards(Ipv4Addr::UNSPECIFIED, &ports).map_err(Refusal::BridgePorts)?;
        }
        Ok(())
    }

    fn steps(&self, input: &Input<'_>) -> Vec<Step> {
        let network = input.network.map_or_else(String::new, |d| d.name.to_string());
        let into = self.relay_target(input);
        let mut steps = vec![
            Step::LeaseAddress { network: network.clone(), requested: input.req.ip },
            Step::EnsureNetwork { network: network.clone() },
        ];
        if into == NsRef::Named {
            steps.push(Step::CreateNetns);
        }
        steps.push(Step::CreateVeth { network: network.clone(), into });
        steps.push(Step::ConfigureAddress { network: network.clone() });
        if !input.builtin && !input.req.network.ports.is_empty() {
            steps.push(Step::InstallForwards { network });
        }
        if input.req.target == TargetKind::NewChild {
            steps.push(Step::ForkChild { ns: ChildNs::Join { ns: NsRef::Named } });
        }
        steps
    }

    /// DNAT holds no socket: a run holds its ports itself. An attachment
    /// left behind has no process to hold them; the live record still
    /// refuses them to other setups of the same runtime directory.
    fn holds_ports(&self, input: &Input<'_>) -> bool {
        !input.builtin && input.req.lifetime == Lifetime::Owner && !input.req.network.ports.is_empty()
    }

    fn relay_target(&self, input: &Input<'_>) -> NsRef {
        match input.req.target {
            TargetKind::Given(_) => NsRef::Given,
            _ => NsRef::Named,
        }
    }

    fn port_support(&self, input: &Input<'_>) -> Option<String> {
        Some(if input.builtin {
            super::builtin_support(input)
        } else {
            "host-IP binding (IPv4), ranges, UDP; no IPv6".into()
        })
    }
}

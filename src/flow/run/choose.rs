//! Choosing the mode of a run: `auto`, or an explicit mode with a fallback
//! policy, goes through the host probe and the selection ladder; an
//! explicit mode without `--fallback` is used as given (strict by nature:
//! if it cannot run, the run fails with its own error), which keeps the
//! common path free of probing.

use super::RunError;
use crate::flow::select::{Decision, Fallback, Needs, PortFeatures, Request, Requested, select};
use crate::host::probe::{HostCaps, ProbeRoots};
use crate::model::config::NetworkConfig;
use crate::model::driver::PortDriver;
use crate::model::mode::NetworkMode;
use crate::model::port::PortProto;
use std::net::IpAddr;

/// What a run's network must provide, from its configuration.
pub fn needs_for(network: &NetworkConfig) -> Needs {
    let ports = &network.ports;
    Needs {
        egress: true,
        published_ports: !ports.is_empty(),
        container_to_container: matches!(network.mode, NetworkMode::Bridge(_)),
        named_network: match &network.mode {
            NetworkMode::Bridge(name) => name.clone(),
            _ => None,
        },
        host_loopback: !network.host_loopback_ports.is_empty(),
        native_ports_only: !matches!(network.port_driver, PortDriver::Auto | PortDriver::Builtin),
        ports: PortFeatures {
            host_ip_binding: ports.iter().any(|m| m.host_ip.is_some()),
            ranges: ports.iter().any(|m| m.container.len() > 1),
            udp: ports.iter().any(|m| m.proto == PortProto::Udp),
            ipv6: ports.iter().any(|m| matches!(m.host_ip, Some(IpAddr::V6(_)))),
        },
    }
}

/// The decision for this run, or `None` when the mode is used as given.
pub fn choose(
    network: &NetworkConfig,
    fallback: Option<Fallback>,
    roots: &ProbeRoots,
) -> Result<Option<Decision>, RunError> {
    let fallback = match (&network.mode, fallback) {
        (_, Some(f)) => f,
        (NetworkMode::Auto, None) => Fallback::Warn,
        (_, None) => return Ok(None),
    };
    let caps = HostCaps::probe(roots);
    let req = Request { mode: Requested::from(network.mode.clone()), needs: needs_for(network), fallback };
    let decision = select(&req, &caps).map_err(|err| RunError::Select { err })?;
    if let Some(warning) = &decision.warning {
        log::warn!("{warning}");
    }
    log::info!("network mode {}: {}", decision.mode, decision.reason);
    Ok(Some(decision))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needs_follow_the_published_ports() {
        let mut cfg = NetworkConfig::new(NetworkMode::Auto);
        cfg.ports = vec!["127.0.0.1:8000-8001:80-81".parse().unwrap(), "53:53/udp".parse().unwrap()];
        let n = needs_for(&cfg);
        assert!(n.egress && n.published_ports && !n.container_to_container);
        assert_eq!(n.ports, PortFeatures { host_ip_binding: true, ranges: true, udp: true, ipv6: false });
    }

    #[test]
    fn a_named_bridge_network_needs_container_to_container() {
        let cfg = NetworkConfig::new("bridge:web".parse().unwrap());
        let n = needs_for(&cfg);
        assert!(n.container_to_container);
        assert_eq!(n.named_network.unwrap().as_str(), "web");
    }
}

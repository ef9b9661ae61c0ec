//! The builtin port driver's steps: listeners bound first, in this
//! process's namespace; the relay started once the namespace is ready.

use super::Exec;
use crate::flow::RunError;
use crate::flow::steps::NsRef;
use crate::ports::builtin::{
    BuiltinPortsConfig, bind_listeners_with_grace, describe_listeners, raise_fd_limit, start_builtin_ports,
};
use crate::model::port::PortMapping;
use crate::ports::relay::Listener;
use crate::state::record::Resource;
use std::net::{IpAddr, Ipv4Addr};

/// `bind_listeners`: a taken port fails the setup before anything exists.
pub(super) fn bind(exec: &mut Exec) -> Result<(), RunError> {
    exec.listeners = Some(bind_listeners_with_grace(&exec.ports).map_err(RunError::Listen)?);
    Ok(())
}

/// `hold_ports`: the published ports of a DNAT driver, held by sockets of
/// this process (TCP listening, UDP bound), on the addresses DNAT forwards:
/// IPv4 only, `0.0.0.0` for a port published without a host address. DNAT
/// takes every packet for them before a socket could see it; the sockets
/// are there so that nothing else binds the ports, and so that every port
/// check (`ss`, another runtime directory's claim) sees them taken.
pub(super) fn hold(ports: &[PortMapping]) -> Result<Vec<Listener>, RunError> {
    let ipv4: Vec<PortMapping> = ports
        .iter()
        .map(|m| PortMapping { host_ip: Some(m.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))), ..m.clone() })
        .collect();
    let held = bind_listeners_with_grace(&ipv4).map_err(RunError::Listen)?;
    log::debug!("holding {}", describe_listeners(&held).join(", "));
    Ok(held)
}

/// `start_relay`: relay into `target`; recorded with its socket factory
/// (rootless), which `gc` stops if this process dies without closing it.
pub(super) fn start(exec: &mut Exec, target: NsRef, detached: bool) -> Result<(), RunError> {
    let Some(listeners) = exec.listeners.take() else { return Ok(()) };
    if detached {
        return super::holder::start(exec, target, listeners);
    }
    raise_fd_limit();
    let described = describe_listeners(&listeners);
    exec.tcp_listeners = listeners
        .iter()
        .filter(|l| l.proto == crate::model::port::PortProto::Tcp)
        .map(|l| crate::accel::ingress::Held { local: l.local, container_port: l.container_port })
        .collect();
    let ns = exec.target(target);
    let cfg = BuiltinPortsConfig { target: &ns, proc_root: &exec.paths.proc_root, preserve_source: true };
    let ports = start_builtin_ports(listeners, &cfg)?;
    log::info!(
        "builtin port driver relaying {} (client source addresses {})",
        described.join(", "),
        if ports.preserving { "kept" } else { "not kept" }
    );
    let factory = ports.factory_id();
    exec.live.relay = Some(ports);
    exec.add(Resource::Relay { listeners: described, factory })?;
    crate::fault::point("run.forwarder-recorded");
    Ok(())
}

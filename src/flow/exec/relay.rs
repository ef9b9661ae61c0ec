//! The builtin port driver's steps: listeners bound first, in this
//! process's namespace; the relay started once the namespace is ready.

use super::Exec;
use crate::flow::RunError;
use crate::flow::steps::NsRef;
use crate::ports::builtin::{
    BuiltinPortsConfig, bind_listeners_with_grace, describe_listeners, raise_fd_limit, start_builtin_ports,
};
use crate::state::record::Resource;

/// `bind_listeners`: a taken port fails the setup before anything exists.
pub(super) fn bind(exec: &mut Exec) -> Result<(), RunError> {
    exec.listeners = Some(bind_listeners_with_grace(&exec.ports).map_err(RunError::Listen)?);
    Ok(())
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

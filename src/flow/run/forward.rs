//! The builtin port driver in the run flow: listeners bound before any
//! namespace exists, the relay started once the namespace's network is
//! ready and before the command starts, stopped first at teardown.

use super::RunError;
use crate::model::port::PortMapping;
use crate::ports::builtin::{
    BuiltinPorts, BuiltinPortsConfig, bind_listeners, start_builtin_ports, stop_builtin_ports,
};
use crate::ports::nsfactory::FactoryTarget;
use crate::ports::relay::Listener;
use crate::state::store::ForwarderRecord;
use std::path::Path;

/// Listeners bound for the builtin driver, not relaying yet (or nothing,
/// when another driver forwards the ports).
pub(super) struct Forward {
    listeners: Option<Vec<Listener>>,
}

impl Forward {
    /// No builtin driver in this run.
    pub(super) fn none() -> Self {
        Self { listeners: None }
    }

    /// Bind every published host port in the caller's namespace.
    /// A port held by the exiting pasta of a run that just ended is retried
    /// for a moment ([`PORT_RELEASE_GRACE`](crate::helpers::pasta::setup::PORT_RELEASE_GRACE)).
    pub(super) fn bind(ports: &[PortMapping]) -> Result<Self, RunError> {
        let deadline = std::time::Instant::now() + crate::helpers::pasta::setup::PORT_RELEASE_GRACE;
        let listeners = loop {
            match bind_listeners(ports) {
                Err(crate::ports::relay::PortfwdError::PortInUse { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                other => break other.map_err(RunError::Listen)?,
            }
        };
        for l in &listeners {
            log::debug!("listening on {} ({:?}) for container port {}", l.local, l.proto, l.container_port);
        }
        Ok(Self { listeners: Some(listeners) })
    }

    /// Start relaying into the namespace of process `ns_pid` (joining its
    /// user namespace first when `rootless`).
    pub(super) fn start(&mut self, ns_pid: u32, rootless: bool, proc_root: &Path) -> Result<Option<Started>, RunError> {
        let ns = proc_root.join(ns_pid.to_string()).join("ns");
        let (userns, netns) = (ns.join("user"), ns.join("net"));
        self.start_in(FactoryTarget { userns: rootless.then_some(userns.as_path()), netns: &netns }, proc_root)
    }

    /// Start relaying into `target`. Call it after the command's process is
    /// forked: it raises this process's open-file limit.
    pub(super) fn start_in(
        &mut self,
        target: FactoryTarget<'_>,
        proc_root: &Path,
    ) -> Result<Option<Started>, RunError> {
        let Some(listeners) = self.listeners.take() else { return Ok(None) };
        // The command's child is forked by now and keeps the usual limit.
        raise_fd_limit();
        let described: Vec<String> = listeners.iter().map(|l| format!("{}/{}", l.local, proto_name(l))).collect();
        let cfg = BuiltinPortsConfig { target, proc_root, preserve_source: true };
        let ports = start_builtin_ports(listeners, &cfg)?;
        log::info!(
            "builtin port driver relaying {} (client source addresses {})",
            described.join(", "),
            if ports.preserving { "kept" } else { "not kept" }
        );
        Ok(Some(Started { ports, listeners: described }))
    }
}

/// Each relayed TCP connection holds six descriptors (two sockets, two
/// pipes); lift the soft limit to the hard one, as servers do.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        log::debug!("raise the open-file limit from {soft} to {hard}: {e}");
    }
}

fn proto_name(l: &Listener) -> &'static str {
    match l.proto {
        crate::model::port::PortProto::Tcp => "tcp",
        crate::model::port::PortProto::Udp => "udp",
    }
}

/// A running builtin driver.
pub(super) struct Started {
    ports: BuiltinPorts,
    listeners: Vec<String>,
}

impl Started {
    /// What the run record keeps of it.
    pub(super) fn record(&self) -> ForwarderRecord {
        ForwarderRecord { factory: self.ports.factory_id(), listeners: self.listeners.clone() }
    }

    /// Close listeners and connections, stop the factory.
    pub(super) fn stop(self) {
        let report = stop_builtin_ports(self.ports);
        log::debug!("builtin port driver stopped: {report:?}");
    }
}

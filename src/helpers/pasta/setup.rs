//! The library entry points for pasta mode: [`setup_pasta_network`] and
//! [`teardown_pasta_network`], and the two halves the setup pipeline runs
//! as separate steps: [`spawn_pasta`] (recorded as soon as it has a pid)
//! and [`PastaStart::wait_ready`].

use super::args::{PastaPlan, build_argv};
use super::process::{PastaError, PastaProcess, PastaReport};
use super::ready::{self, Baseline, Expectation, HostPort, NsView};
use crate::host::probe::DefaultRoute;
use crate::host::procfs::ProcessId;
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

/// Errors of setting up pasta mode.
#[derive(Debug, thiserror::Error)]
pub enum PastaSetupError {
    /// The plan could not be turned into pasta arguments.
    #[error("build pasta arguments")]
    Args(#[from] super::args::ArgsError),
    /// pasta failed to start or to make the namespace ready.
    #[error(transparent)]
    Pasta(#[from] PastaError),
}

/// How to run pasta against an existing namespace.
#[derive(Debug, Clone)]
pub struct PastaNetworkConfig<'a> {
    /// The pasta binary.
    pub program: &'a Path,
    /// Namespace paths, ports, privileges.
    pub plan: &'a PastaPlan,
    /// Where readiness is read inside the target namespace.
    pub ns: NsView<'a>,
    /// procfs root.
    pub proc_root: &'a Path,
    /// How long to wait for readiness.
    pub timeout: Duration,
    /// Descriptors pasta inherits (namespaces given as `/proc/self/fd/N`).
    pub inherit: &'a [std::os::fd::RawFd],
}

/// A running pasta that made a namespace ready; hand it to
/// [`teardown_pasta_network`] when the namespace is no longer needed.
#[derive(Debug)]
pub struct PastaSetup {
    process: PastaProcess,
    /// The arguments pasta was started with (after the program name).
    pub argv: Vec<OsString>,
    /// Time from spawn to ready.
    pub ready_after: Duration,
}

impl PastaSetup {
    /// pasta's pid and start time, for records.
    pub fn pasta_id(&self) -> ProcessId {
        self.process.id()
    }

    /// Exit status, if pasta died while the namespace was in use.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.process.try_exit()
    }

    /// What pasta printed so far.
    pub fn output(&self) -> String {
        self.process.output()
    }

    /// Let pasta run on when this handle goes (a pasta that outlives this process).
    pub fn release(self) {
        self.process.release();
    }
}

/// What must be true of the namespace before its command starts. pasta
/// configures IPv6 in the namespace when the host has an IPv6 default route
/// (`host_routes`, read where pasta runs) and the user's options do not
/// turn it off; the namespace is ready once that route is there too.
pub fn expectation(plan: &PastaPlan, host_routes: DefaultRoute) -> Expectation {
    let host_ports = plan
        .ports
        .iter()
        .flat_map(|m| {
            m.host.iter().flat_map(|r| r.iter()).map(move |port| HostPort { proto: m.proto, ip: m.host_ip, port })
        })
        .collect();
    let given = |flags: [&str; 2]| plan.extra.iter().any(|o| flags.iter().any(|f| o.as_os_str() == *f));
    Expectation {
        default_route: !given(["-6", "--ipv6-only"]),
        ipv6_default_route: host_routes.ipv6 && !given(["-4", "--ipv4-only"]),
        host_ports,
        ns_ports: plan.host_loopback_ports.clone(),
    }
}

/// The default routes of the calling thread's network namespace, the one
/// pasta is spawned in and copies its configuration from (a family whose
/// table cannot be read has none).
fn host_routes(proc_root: &Path) -> DefaultRoute {
    use crate::host::procnet;
    DefaultRoute {
        ipv4: procnet::read_routes_of_thread(proc_root).is_ok_and(|r| procnet::has_default_route(&r)),
        ipv6: crate::host::procnet6::read_ipv6_default_route_of_thread(proc_root).unwrap_or(false),
    }
}

/// Spawn pasta against an already-created namespace and return once the
/// namespace is really ready: default routes present, every published host
/// port held by pasta, every host-loopback port listening inside. A timeout
/// or an early exit is an error carrying pasta's status and output; pasta is
/// stopped before the error is returned.
pub fn setup_pasta_network(
    cfg: &PastaNetworkConfig<'_>,
    cancel: &mut dyn FnMut() -> bool,
) -> Result<PastaSetup, PastaSetupError> {
    spawn_pasta(cfg, cancel, None)?.wait_ready(cfg, cancel)
}

/// A pasta spawned and not yet known to be ready.
#[derive(Debug)]
pub struct PastaStart {
    process: PastaProcess,
    argv: Vec<OsString>,
    base: Baseline,
    want: Expectation,
}

impl PastaStart {
    /// pasta's pid and start time, for the record.
    pub fn pasta_id(&self) -> ProcessId {
        self.process.id()
    }

    /// Let pasta run on when this handle goes.
    pub fn release(self) {
        self.process.release();
    }

    /// Stop it before it was ready (SIGTERM, then SIGKILL after `grace`).
    pub fn stop(self, grace: Duration) -> PastaReport {
        self.process.stop(grace)
    }

    /// Wait until the namespace is ready (see [`setup_pasta_network`]); on
    /// failure pasta is stopped and its output is part of the error.
    pub fn wait_ready(
        mut self,
        cfg: &PastaNetworkConfig<'_>,
        cancel: &mut dyn FnMut() -> bool,
    ) -> Result<PastaSetup, PastaSetupError> {
        match self.process.wait_ready(cfg.proc_root, cfg.ns, &self.base, &self.want, cfg.timeout, cancel) {
            Ok(ready_after) => {
                crate::fault::point("pasta.ready");
                Ok(PastaSetup { process: self.process, argv: self.argv, ready_after })
            }
            Err(e) => {
                let _ = self.process.stop(Duration::from_millis(200));
                Err(e.into())
            }
        }
    }
}

/// Take the baseline of host sockets and spawn pasta (the first half of
/// [`setup_pasta_network`]); with `detach`, a pasta that outlives this
/// process (see `helpers::detached`).
pub fn spawn_pasta(
    cfg: &PastaNetworkConfig<'_>,
    cancel: &mut dyn FnMut() -> bool,
    detach: Option<crate::helpers::detached::Detach<'_>>,
) -> Result<PastaStart, PastaSetupError> {
    let argv = build_argv(cfg.plan)?;
    let want = expectation(cfg.plan, host_routes(cfg.proc_root));
    let observe_err = |source| PastaError::Observe { ns: cfg.ns.to_string(), source };
    let mut base = ready::baseline(cfg.proc_root, &want).map_err(observe_err)?;
    // A port still held by the exiting pasta of a run that just ended frees
    // within milliseconds, or more on a loaded machine (teardown does not
    // wait for pasta to exit); a port held by anything else still fails,
    // with pasta's own message.
    let deadline = std::time::Instant::now() + PORT_RELEASE_GRACE;
    while !base.occupied.is_empty() && std::time::Instant::now() < deadline && !cancel() {
        std::thread::sleep(Duration::from_millis(5));
        base = ready::baseline(cfg.proc_root, &want).map_err(observe_err)?;
    }
    let process = match detach {
        None => PastaProcess::spawn(cfg.program, &argv, cfg.proc_root, cfg.inherit)?,
        Some(d) => PastaProcess::spawn_detached(cfg.program, &argv, cfg.proc_root, cfg.inherit, d)?,
    };
    crate::fault::point("pasta.spawned");
    Ok(PastaStart { process, argv, base, want })
}

/// How long setup waits for a requested host port to be released (by the
/// exiting pasta of a run that just ended) before starting pasta anyway;
/// the builtin driver retries its binds as long. Only a port that stays
/// taken pays it in full. An exiting pasta releases its ports when its
/// files close, which waits on the kernel's network lock, shared with every
/// namespace and link being created or destroyed, so 300 ms left little
/// margin on a loaded 2-core machine.
pub(crate) const PORT_RELEASE_GRACE: Duration = Duration::from_millis(1500);

/// How long teardown waits for pasta's output to close after SIGTERM.
const TEARDOWN_GRACE: Duration = Duration::from_millis(3);

/// Stop pasta (SIGTERM, then SIGKILL after a short grace) and return what
/// it printed. Does not wait for the kernel to finish destroying pasta's tap
/// device; the process is reaped in the background.
pub fn teardown_pasta_network(setup: PastaSetup) -> PastaReport {
    setup.process.stop(TEARDOWN_GRACE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::target::NsTarget;

    fn plan(extra: &[&str]) -> PastaPlan {
        PastaPlan {
            target: NsTarget { netns: "/proc/42/ns/net".into(), userns: None },
            ports: vec!["8080:80".parse().unwrap()],
            host_loopback_ports: vec![5432],
            runas: None,
            extra: extra.iter().map(Into::into).collect(),
            dns_forward: None,
        }
    }

    const DUAL: DefaultRoute = DefaultRoute { ipv4: true, ipv6: true };

    #[test]
    fn ipv6_route_is_awaited_when_the_host_has_one() {
        let want = expectation(&plan(&[]), DUAL);

        assert!(want.default_route && want.ipv6_default_route, "{want:?}");
        assert_eq!(want.host_ports, vec![HostPort { proto: crate::model::port::PortProto::Tcp, ip: None, port: 8080 }]);
        assert_eq!(want.ns_ports, vec![5432]);
    }

    #[test]
    fn ipv6_route_is_not_awaited_without_one_on_the_host_or_with_ipv4_only() {
        assert!(!expectation(&plan(&[]), DefaultRoute { ipv6: false, ..DUAL }).ipv6_default_route);
        assert!(!expectation(&plan(&["-4"]), DUAL).ipv6_default_route);
        assert!(!expectation(&plan(&["--ipv4-only"]), DUAL).ipv6_default_route);
    }

    #[test]
    fn ipv6_only_waits_for_no_ipv4_route() {
        let want = expectation(&plan(&["--ipv6-only"]), DUAL);

        assert!(!want.default_route && want.ipv6_default_route, "{want:?}");
    }
}

//! Helper steps: spawn pasta or slirp4netns against the namespace (recorded
//! as soon as it has a pid), then wait until it made the namespace ready.

use super::Exec;
use crate::flow::RunError;
use crate::flow::plan::Lifetime;
use crate::flow::steps::{Helper, NsRef};
use crate::helpers::detached::Detach;
use crate::helpers::pasta::args::PastaPlan;
use crate::helpers::pasta::ready::NsView;
use crate::helpers::pasta::setup::{PastaNetworkConfig, PastaSetup, PastaStart, spawn_pasta, teardown_pasta_network};
use crate::helpers::slirp::args::SlirpPlan;
use crate::helpers::slirp::setup::{SlirpNetworkConfig, SlirpSetup, SlirpStart, spawn_slirp, teardown_slirp_network};
use crate::host::procfs::ProcessId;
use crate::state::record::Resource;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// A helper spawned by `spawn_helper`, awaited by `await_ready`.
pub(crate) struct Pending {
    start: Started,
    program: PathBuf,
}

enum Started {
    Pasta(Box<PastaStart>, PastaPlan),
    Slirp(Box<SlirpStart>, SlirpPlan),
}

/// A running helper, owned by the setup.
#[derive(Debug)]
pub(crate) enum LiveHelper {
    /// pasta, ready.
    Pasta(Box<PastaSetup>),
    /// slirp4netns, ready.
    Slirp(Box<SlirpSetup>),
    /// pasta, spawned but not ready (a setup that failed or was cancelled).
    PastaStarting(Box<PastaStart>),
    /// slirp4netns, spawned but not ready.
    SlirpStarting(Box<SlirpStart>),
}

impl LiveHelper {
    /// Name for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Pasta(_) | Self::PastaStarting(_) => "pasta",
            Self::Slirp(_) | Self::SlirpStarting(_) => "slirp4netns",
        }
    }

    /// pid and start time.
    pub fn id(&self) -> ProcessId {
        match self {
            Self::Pasta(p) => p.pasta_id(),
            Self::PastaStarting(p) => p.pasta_id(),
            Self::Slirp(s) => s.slirp_id(),
            Self::SlirpStarting(s) => s.slirp_id(),
        }
    }

    /// Exit status if it died.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        match self {
            Self::Pasta(p) => p.try_exit(),
            Self::Slirp(s) => s.try_exit(),
            Self::PastaStarting(_) | Self::SlirpStarting(_) => None,
        }
    }

    /// Let it run on when this handle goes (a helper that outlives this process).
    pub fn release(self) {
        match self {
            Self::Pasta(p) => p.release(),
            Self::Slirp(s) => s.release(),
            Self::PastaStarting(p) => p.release(),
            Self::SlirpStarting(s) => s.release(),
        }
    }

    /// Stop it; its output and what failed while stopping it.
    pub fn stop(self) -> (String, Vec<crate::helpers::slirp::process::SlirpError>) {
        match self {
            Self::Pasta(p) => (teardown_pasta_network(*p).output, Vec::new()),
            Self::PastaStarting(p) => (p.stop(Duration::from_millis(200)).output, Vec::new()),
            Self::Slirp(s) => {
                let report = teardown_slirp_network(*s);
                (report.output, report.errors)
            }
            Self::SlirpStarting(s) => {
                let report = s.stop(Duration::from_millis(200));
                (report.output, report.errors)
            }
        }
    }
}

impl Pending {
    /// The helper as a live one, for a teardown before it was ready.
    pub fn into_live(self) -> LiveHelper {
        match self.start {
            Started::Pasta(p, _) => LiveHelper::PastaStarting(p),
            Started::Slirp(s, _) => LiveHelper::SlirpStarting(s),
        }
    }
}

/// Where pasta's readiness is read: a process inside the namespace, or the
/// namespace itself (a bind mount no known process is in).
fn view<'a>(exec: &'a Exec) -> NsView<'a> {
    match (&exec.child, &exec.given, &exec.named) {
        (Some(child), _, _) => NsView::Process(child.pid()),
        (None, Some(g), _) => match g.process {
            Some(p) => NsView::Process(p.pid),
            None => NsView::Netns(g.netns_fd()),
        },
        (None, None, Some(n)) => NsView::Netns(n.fd()),
        (None, None, None) => NsView::Process(std::process::id()),
    }
}

/// `spawn_helper`: an owned helper is recorded as soon as it has a pid (it
/// dies with this process until then); one that outlives this process is
/// recorded before it may run, its log file before it is created.
pub(super) fn spawn(
    exec: &mut Exec,
    helper: Helper,
    target: NsRef,
    cancel: &mut dyn FnMut() -> bool,
) -> Result<Pending, RunError> {
    let program = exec.plan.helper_program.clone().unwrap_or_else(|| PathBuf::from(helper.name()));
    let detached = exec.plan.lifetime == Lifetime::Detached;
    let log = exec.paths.helper_log(exec.id(), helper.name());
    if detached {
        exec.add(Resource::Log { path: log.clone(), of: helper.role() })?;
    }
    if helper == Helper::Slirp4netns {
        // slirp4netns removes its socket only when it exits cleanly.
        exec.add(Resource::File { path: exec.paths.slirp_api_socket(exec.id()) })?;
    }
    // A detached helper is recorded from inside the spawn, through a copy
    // of the record (the configuration borrows the setup meanwhile).
    let (mut record, store) = (exec.record.clone(), exec.store.clone());
    let mut note = |id: ProcessId| -> std::io::Result<()> {
        record.resources.push(Resource::Process { role: helper.role(), process: id });
        store.as_ref().map_or(Ok(()), |s| s.write_record(&record).map_err(std::io::Error::other))
    };
    let started = {
        let detach = detached.then_some(Detach { log: &log, record: &mut note });
        start(exec, helper, target, &program, cancel, detach)?
    };
    let pending = Pending { start: started, program };
    if detached {
        exec.record = record;
    } else if let Err(e) = exec.add(Resource::Process { role: helper.role(), process: pending.id() }) {
        pending.into_live().stop();
        return Err(e);
    }
    Ok(pending)
}

fn start(
    exec: &Exec,
    helper: Helper,
    target: NsRef,
    program: &std::path::Path,
    cancel: &mut dyn FnMut() -> bool,
    detach: Option<Detach<'_>>,
) -> Result<Started, RunError> {
    let ns = exec.target(target);
    // A given namespace is opened through descriptors the helper inherits.
    let inherit = match (target, &exec.given) {
        (NsRef::Given, Some(g)) => g.fds(),
        _ => Vec::new(),
    };
    // Ports the helper forwards itself (none when pelagos-net relays them).
    let ports = if exec.plan.builtin() { Vec::new() } else { exec.ports.clone() };
    let proc_root = &exec.paths.proc_root;
    Ok(match helper {
        Helper::Pasta => {
            let plan = PastaPlan {
                target: ns,
                ports,
                host_loopback_ports: exec.plan.host_loopback_ports.clone(),
                runas: exec.plan.runas,
                extra: exec.plan.pasta_extra.iter().map(Into::into).collect(),
                dns_forward: match &exec.dns {
                    Some(prepared) => prepared.plan.pasta_forward,
                    None => exec.plan.dns.as_ref().and_then(|d| d.pasta_forward),
                },
            };
            let cfg = PastaNetworkConfig {
                program,
                plan: &plan,
                ns: view(exec),
                proc_root,
                timeout: exec.timeout,
                inherit: &inherit,
            };
            let start = spawn_pasta(&cfg, cancel, detach)?;
            Started::Pasta(Box::new(start), plan)
        }
        Helper::Slirp4netns => {
            let plan =
                SlirpPlan::new(ns, exec.paths.slirp_api_socket(exec.id())).with_options(&exec.plan.slirp_options);
            let cfg = SlirpNetworkConfig {
                program,
                launcher: &[],
                plan: &plan,
                ports: &ports,
                proc_root,
                timeout: exec.timeout,
                inherit: &inherit,
            };
            Started::Slirp(Box::new(spawn_slirp(&cfg, detach)?), plan)
        }
    })
}

impl Pending {
    fn id(&self) -> ProcessId {
        match &self.start {
            Started::Pasta(p, _) => p.pasta_id(),
            Started::Slirp(s, _) => s.slirp_id(),
        }
    }
}

/// `await_ready`.
pub(super) fn await_ready(exec: &mut Exec, pending: Pending, cancel: &mut dyn FnMut() -> bool) -> Result<(), RunError> {
    let proc_root = exec.paths.proc_root.clone();
    let ports = if exec.plan.builtin() { Vec::new() } else { exec.ports.clone() };
    let live = match pending.start {
        Started::Pasta(start, plan) => {
            let cfg = PastaNetworkConfig {
                program: &pending.program,
                plan: &plan,
                ns: view(exec),
                proc_root: &proc_root,
                timeout: exec.timeout,
                inherit: &[],
            };
            let setup = start.wait_ready(&cfg, cancel)?;
            exec.ready_after = Some(setup.ready_after);
            LiveHelper::Pasta(Box::new(setup))
        }
        Started::Slirp(start, plan) => {
            let cfg = SlirpNetworkConfig {
                program: &pending.program,
                launcher: &[],
                plan: &plan,
                ports: &ports,
                proc_root: &proc_root,
                timeout: exec.timeout,
                inherit: &[],
            };
            let setup = start.wait_ready(&cfg, cancel)?;
            exec.ready_after = Some(setup.ready_after);
            LiveHelper::Slirp(Box::new(setup))
        }
    };
    exec.live.helper = Some(live);
    crate::fault::point("run.helper-recorded");
    Ok(())
}

//! The `run` flow: give a command its own network namespace, make the
//! network ready, and only then let the command start.
//!
//! 1. Resolve the command (not found: 127, before anything is created).
//! 2. Probe what the plan needs of the host and plan the steps; a refusal
//!    creates nothing.
//! 3. Block the signals we forward, then execute the steps: the namespace
//!    child is forked (it enters its namespaces, brings `lo` up and waits),
//!    the helper is started against it and awaited, the relay started.
//! 4. Release the child, which execs the command (the steps after
//!    `exec_command`, the accelerator's supervisor, start now); forward
//!    signals; wait.
//! 5. Undo everything recorded, collecting every error, and return the
//!    command's status (128+N when killed by signal N).
//!
//! Every resource is recorded in the runtime state directory before or as
//! it is created, so a later `gc` can find it after a crash.

mod command;
mod supervise;

pub use command::resolve_command;

use super::RunError;
use super::exec::{ChildCommand, Exec};
use super::plan::{Plan, Request, SystemLookups, TargetKind, plan, probe_scope};
use super::select::{Decision, Fallback};
use super::steps::Step;
use crate::host::probe::{HostCaps, ProbeRoots};
use crate::model::config::NetworkConfig;
use crate::model::mode::NetworkMode;
use crate::model::port::PortMapping;
use crate::ns::child::Release;
use crate::ns::target::OpenTarget;
use crate::state::paths::Paths;
use crate::state::record::RecordKind;
use command::{cstring, prepare_command, run_host, start_command};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;
use supervise::{SignalGuard, supervise};

/// What to run and how.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Mode, published ports, host-loopback ports.
    pub network: NetworkConfig,
    /// Command and arguments.
    pub command: Vec<OsString>,
    /// State, netns and proc roots.
    pub paths: Paths,
    /// The pasta binary (`None`: search PATH).
    pub pasta: Option<PathBuf>,
    /// How long to wait for the network.
    pub ready_timeout: Duration,
    /// Path of the tun device.
    pub tun_path: PathBuf,
    /// Fallback policy (`None`: `warn` for `auto`, the mode as given otherwise).
    pub fallback: Option<Fallback>,
    /// A requested container address (bridge mode, `--ip`).
    pub ip: Option<std::net::Ipv4Addr>,
    /// Called once the network is ready, just before the command starts
    /// (see [`Ready`]; not called in host mode, where nothing is set up).
    pub on_ready: Option<ReadyHook>,
}

/// A run whose network is ready, as its [`ReadyHook`] sees it.
#[derive(Debug)]
#[non_exhaustive]
pub struct Ready<'a> {
    /// The run's id (its record's name).
    pub id: &'a str,
    /// The mode that runs.
    pub mode: &'a NetworkMode,
    /// Published ports as resolved (ephemeral host ports filled in).
    pub ports: &'a [PortMapping],
    /// The process that holds the namespace and becomes the command.
    pub pid: u32,
    /// The leased address on a bridge network.
    pub bridge_address: Option<std::net::Ipv4Addr>,
}

/// A callback for [`RunOptions::on_ready`].
#[derive(Clone)]
pub struct ReadyHook(pub std::sync::Arc<dyn Fn(&Ready<'_>) + Send + Sync>);

impl std::fmt::Debug for ReadyHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadyHook")
    }
}

/// Result of a run whose command started.
#[derive(Debug)]
pub struct RunReport {
    /// The command's exit code (128+N when killed by signal N).
    pub exit_code: i32,
    /// The network helper's output (pasta or slirp4netns), when one ran.
    pub helper_output: Option<String>,
    /// The helper died while the command ran (its output is in `helper_output`).
    pub helper_died: bool,
    /// Errors during teardown (all steps were attempted).
    pub teardown_errors: Vec<RunError>,
    /// Time from start to the network being ready.
    pub ready_after: Option<Duration>,
    /// How the mode was chosen, when it went through the selection ladder.
    pub decision: Option<Decision>,
}

/// The probe roots of a run (`--pasta` probes that binary).
pub(crate) fn probe_roots(paths: &Paths, pasta: Option<&PathBuf>, tun: &std::path::Path) -> ProbeRoots {
    let mut roots = ProbeRoots::current(paths);
    roots.pasta = pasta.cloned();
    roots.dev_tun = tun.to_owned();
    roots
}

/// The request a run makes, and the namespace it runs in when `ns:PATH`.
pub(crate) fn request(opts: &RunOptions) -> Result<(Request, Option<OpenTarget>), RunError> {
    let mut req = Request::run(opts.network.clone());
    req.fallback = opts.fallback;
    req.ip = opts.ip;
    let given = match &opts.network.mode {
        NetworkMode::Ns(path) => {
            let euid = nix::unistd::geteuid().as_raw();
            let t = OpenTarget::open(path, None, &opts.paths.proc_root, euid)?;
            req.target = TargetKind::Given(super::plan::Given::from(&t));
            Some(t)
        }
        _ => None,
    };
    Ok((req, given))
}

/// Log the decision and the plan's warnings, as a run starts.
pub(crate) fn announce(plan: &Plan) {
    if let Some(d) = &plan.decision {
        log::info!("network mode {}: {}", d.mode, d.reason);
    }
    for w in &plan.warnings {
        log::warn!("{w}");
    }
    log::info!("port driver: {} ({})", plan.port_driver.name, plan.port_driver.reason);
}

/// What of the host a run's plan reads: the probe's scope, and the
/// accelerator when the run asks for it.
fn probe_host(opts: &RunOptions, req: &Request) -> HostCaps {
    let roots = probe_roots(&opts.paths, opts.pasta.as_ref(), &opts.tun_path);
    let mut host = HostCaps::probe_scoped(&roots, probe_scope(req, nix::unistd::geteuid().as_raw()));
    if !req.network.accel.is_off() {
        host.accel = Some(crate::accel::probe::offer(&opts.paths.proc_root));
    }
    host
}

/// The plan `run` would execute for `opts`, touching nothing (a default
/// network's definition is not written).
pub fn plan_run(opts: &RunOptions) -> Result<Plan, RunError> {
    let (req, _given) = request(opts)?;
    let host = probe_host(opts, &req);
    let mut planned = plan(&req, &host, &SystemLookups { config_dir: &opts.paths.config_dir })?;
    planned.warnings.extend(host_firewall_warning(&planned, &host));
    Ok(planned)
}

/// For a bridge network: what the host's own firewall (iptables FORWARD
/// DROP, firewalld) means for it, as `doctor` reports it. Looked at only
/// with CAP_NET_ADMIN (the setup needs it anyway); `plan` alone asks, a
/// setup handles it itself.
fn host_firewall_warning(planned: &Plan, host: &HostCaps) -> Option<String> {
    let def = planned.network.as_ref().filter(|_| host.cap_net_admin)?;
    let mut fw = crate::bridge::firewall::Firewall::new().ok()?;
    let found = crate::bridge::firewall::hostfw::probe(&mut fw);
    crate::bridge::firewall::hostfw::plan_warning(&found, def.name.as_str(), def.bridge.as_str())
}

/// When the child starts the command: at once when the command is the step
/// right after the child's and no hook waits for the network to be ready
/// (the loopback mode), else on our word.
fn release_of(steps: &[Step], opts: &RunOptions) -> Release {
    let nothing_between = steps.windows(2).any(|w| matches!(w, [Step::ForkChild { .. }, Step::ExecCommand]));
    match (nothing_between, &opts.on_ready) {
        (true, None) => Release::AtOnce,
        _ => Release::OnWord,
    }
}

/// Run the command per `opts`. `Err` means the command never started
/// (or a setup failure stopped it); `Ok` carries its exit code.
pub fn run(opts: &RunOptions) -> Result<RunReport, RunError> {
    let (program, argv) = prepare_command(&opts.command)?;
    let (req, given) = request(opts)?;
    let host = probe_host(opts, &req);
    let plan = plan(&req, &host, &SystemLookups { config_dir: &opts.paths.config_dir })?;
    announce(&plan);
    if plan.steps == [Step::ExecInPlace] {
        // Nothing to set up, and the command must keep our signal mask.
        crate::fault::step(Step::ExecInPlace.op());
        return run_host(&program, &argv);
    }
    let signals = SignalGuard::new()?;
    let steps = plan.steps.clone();
    let mut exec = Exec::new(plan, &opts.paths, RecordKind::Run, opts.ready_timeout);
    exec.command = Some(ChildCommand {
        program: cstring(program.as_os_str().as_bytes()),
        argv,
        sigmask: signals.old,
        release: release_of(&steps, opts),
    });
    exec.given = given;
    let mut cancel = || signals.pending_termination().is_some();
    for step in &steps {
        let done = exec.run(step, &mut cancel).and_then(|()| match step {
            Step::ExecCommand => {
                exec.done();
                start_command(&mut exec, opts)?;
                crate::fault::point("run.command-started");
                Ok(())
            }
            _ => Ok(()),
        });
        if let Err(e) = done {
            return Err(exec.fail(e));
        }
    }
    let (exit_code, helper_died) = match exec.child.as_mut() {
        Some(child) => supervise(child, &signals, exec.live.helper.as_mut()),
        None => (125, false),
    };
    let (helper_output, teardown_errors) = exec.teardown();
    Ok(RunReport {
        exit_code,
        helper_output,
        helper_died,
        teardown_errors,
        ready_after: exec.ready_after,
        decision: exec.plan.decision.clone(),
    })
}

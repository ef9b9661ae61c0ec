//! The `run` flow: give a command its own network namespace, make the
//! network ready, and only then let the command start.
//!
//! 1. Resolve the command (not found: 127, before anything is created).
//! 2. Block the signals we forward; clone the namespace child, born in a
//!    new user+net namespace (rootless) or net namespace (root), with PID
//!    and mount namespaces of its own, which brings `lo` up and waits.
//! 3. pasta mode: start pasta against the child's namespace and wait until
//!    it is really ready (route, published ports, host-loopback ports).
//! 4. Release the child, which starts the command and stays as the init
//!    of the run's processes; forward signals; wait.
//! 5. Tear everything down, collecting every error, and return the
//!    command's status (128+N when killed by signal N).
//!
//! Every resource is recorded in the runtime state directory before the
//! step that creates it completes, so a later `gc` can find it after a crash.

use crate::helpers::pasta::args::{PastaPlan, PastaTarget};
use crate::helpers::pasta::setup::{PastaNetworkConfig, setup_pasta_network};
use crate::host::diagnose::{UsernsKnobs, check_tun};
use crate::host::procfs::ProcessId;
use crate::model::config::NetworkConfig;
use crate::model::driver::{ChosenDriver, DriverChoice, DriverFacts, PastaBuild, PortDriver, choose_driver};
use crate::model::mode::NetworkMode;
use crate::model::port::PortMapping;
use crate::ns::child::{ChildSpec, ChildStage, NsChild, NsKind, UsernsError};
use crate::ns::netns;
use crate::state::paths::Paths;
use crate::state::store::{RunRecord, Store, new_run_id};
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod bridge;
mod choose;
mod helper;
pub use helper::{Helper, HelperKind};
mod command;
mod dns;
mod forward;
use forward::Forward;
mod pasta_build;
mod ports;
mod slirp;
pub use choose::needs_for;
pub use command::resolve_command;
use command::{cstring, prepare_command, run_host, start_command};
mod error;
mod supervise;
pub use error::RunError;
pub use ports::{PortError, resolve_ephemeral};
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
    pub fallback: Option<crate::flow::select::Fallback>,
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
    /// Published ports as resolved.
    pub ports: Vec<PortMapping>,
    /// Time from start to the network being ready.
    pub ready_after: Option<Duration>,
    /// How the mode was chosen, when it went through the selection ladder.
    pub decision: Option<crate::flow::select::Decision>,
    /// Who forwarded the published ports, and why.
    pub port_driver: Option<DriverChoice>,
}

/// Run the command per `opts`. `Err` means the command never started
/// (or a setup failure stopped it); `Ok` carries its exit code.
pub fn run(opts: &RunOptions) -> Result<RunReport, RunError> {
    let decision = choose::choose(&opts.network, opts.fallback, &crate::host::probe::ProbeRoots::current(&opts.paths))?;
    let mode = decision.as_ref().map_or_else(|| opts.network.mode.clone(), |d| d.mode.to_network_mode());
    let selection = decision.as_ref().map(|d| crate::state::store::Selection {
        reason: d.reason.clone(),
        degraded: d.degraded,
        warning: d.warning.clone(),
    });
    let mut report = run_mode(opts, &mode, selection)?;
    report.decision = decision;
    Ok(report)
}

fn run_mode(
    opts: &RunOptions,
    mode: &NetworkMode,
    selection: Option<crate::state::store::Selection>,
) -> Result<RunReport, RunError> {
    let (program, argv) = prepare_command(&opts.command)?;
    let pasta_extra = opts.network.pasta_extra(mode)?;
    let slirp_options = opts.network.slirp_extra(mode)?;
    let euid = nix::unistd::geteuid().as_raw();
    let rootless = euid != 0;
    if *mode == NetworkMode::Host {
        dns::prepare_for(mode, opts, None, None)?;
    }
    let (pasta_program, slirp_program) = match *mode {
        NetworkMode::Pasta => (Some(find_pasta(opts)?), None),
        NetworkMode::Slirp4netns => (None, Some(find_slirp(opts)?)),
        NetworkMode::Loopback => (None, None),
        NetworkMode::Host => return run_host(&program, &argv),
        NetworkMode::Bridge(ref name) => return bridge::run_bridge(opts, name.as_ref()),
        NetworkMode::Auto => return Err(RunError::UnsupportedMode(mode.clone())),
    };
    let tun_user = if pasta_program.is_some() { Some("pasta") } else { slirp_program.as_ref().map(|_| "slirp4netns") };
    if let Some(helper) = tun_user {
        check_tun(&opts.tun_path, euid).map_err(|problem| RunError::Tun { helper, problem })?;
    }
    let pasta_features = pasta_program.as_deref().and_then(|p| pasta_build::probe(p, &opts.paths));
    if let Some(program) = &pasta_program {
        pasta_build::check(program, pasta_features.as_ref(), selection.is_none())?;
    }
    let ports = resolve_ephemeral(&opts.network.ports)?;
    // Nothing publishes a port another run or a host process holds; held
    // until this run's record (with its ports) is written.
    let port_claim = crate::ports::precheck::claim(&opts.paths, &ports)?;
    crate::ports::exposure::warn_all_interfaces(&ports);
    let driver = choose_port_driver(mode, opts.network.port_driver, &ports, pasta_features.as_ref())?;
    let builtin = driver.driver == ChosenDriver::Builtin;
    log::info!("port driver: {} ({})", driver.name, driver.reason);
    let mut dns = dns::prepare_for(mode, opts, pasta_program.as_deref(), None)?;
    // Ports the helper forwards itself (none when pelagos-net relays them).
    let helper_ports: Vec<PortMapping> = if builtin { Vec::new() } else { ports.clone() };
    if pasta_program.is_some() {
        pasta_build::warn_known_bugs(pasta_features.as_ref(), &helper_ports);
    }
    if slirp_program.is_some() {
        slirp::check_ports(&helper_ports, &opts.network.host_loopback_ports)?;
    }
    // Bound before anything else exists: a taken port fails first and cheaply.
    let mut forward = if builtin { Forward::bind(&ports)? } else { Forward::none() };
    let runas = match (&pasta_program, rootless) {
        (Some(_), false) => pasta_build::runas_for_root(pasta_features.as_ref()),
        _ => None,
    };

    let signals = SignalGuard::new()?;
    // A loopback run creates nothing that outlives its processes (the
    // namespaces die with them), so it writes no record
    // (unless the record is needed to show how the mode was chosen).
    let store = match (mode, &selection) {
        (NetworkMode::Loopback, None) if !builtin => None,
        _ => Some(Store::open(&opts.paths.run_dir, euid)?),
    };
    if store.is_some() {
        // The cheap gc: records of runs whose owner died are cleaned before
        // this one adds its own (a failure here never stops the run).
        match crate::state::gc::gc(&opts.paths, false) {
            Ok(report) if !report.actions.is_empty() => {
                log::info!("cleaned {} leftovers of dead runs", report.actions.len())
            }
            Ok(_) => {}
            Err(e) => log::debug!("gc before setup: {e}"),
        }
    }
    let write = |record: &RunRecord| store.as_ref().map_or(Ok(()), |s| s.write_record(record));
    let proc_root = opts.paths.proc_root.clone();
    let mut record = RunRecord {
        id: new_run_id(),
        owner: ProcessId::of(&proc_root, std::process::id()).unwrap_or(ProcessId::unread(std::process::id())),
        mode: mode.clone(),
        child: None,
        helper: None,
        netns_path: None,
        ports: ports.clone(),
        bridge: None,
        selection,
        forwarder: None,
    };
    crate::fault::point("run.before-record");
    write(&record)?;
    crate::fault::point("run.record-written");
    drop(port_claim);

    let mut res = Resources {
        store: store.as_ref(),
        record_id: record.id.clone(),
        netns_path: None,
        helper: None,
        ports: None,
        dns: None,
    };
    let spec = ChildSpec {
        ns: if rootless {
            NsKind::UserAndNet { uid: euid, gid: nix::unistd::getegid().as_raw() }
        } else {
            NsKind::NetOnly
        },
        program: cstring(program.as_os_str().as_bytes()),
        argv,
        proc_root: proc_root.clone(),
        sigmask: signals.old,
        dns: dns.inside.take(),
    };
    let mut child = match NsChild::spawn(&spec) {
        Ok(c) => c,
        Err(e) => return Err(res.fail(namespace_error(e, &proc_root))),
    };
    crate::fault::point("run.child-spawned");
    if let Err(e) = child.wait_ready() {
        child.kill_and_reap();
        return Err(res.fail(namespace_error(e, &proc_root)));
    }
    crate::fault::point("run.child-ready");
    record.child = ProcessId::of(&proc_root, child.pid()).ok();
    let mut ready_after = None;
    if let Some(program) = &pasta_program {
        let target = if rootless {
            PastaTarget {
                netns: proc_root.join(child.pid().to_string()).join("ns/net"),
                userns: Some(proc_root.join(child.pid().to_string()).join("ns/user")),
            }
        } else {
            // pasta drops capabilities before opening its target, so it may
            // not open /proc/<pid>/ns of a root process: give it a name.
            record.netns_path = Some(opts.paths.netns_dir.join(format!("pelagos-{}", record.id)));
            if let Err(e) = write(&record) {
                child.kill_and_reap();
                return Err(res.fail(e.into()));
            }
            crate::fault::point("run.netns-recorded");
            match netns::attach_named(&opts.paths.netns_dir, &format!("pelagos-{}", record.id), &proc_root, child.pid())
            {
                Ok(path) => {
                    res.netns_path = Some(path.clone());
                    PastaTarget { netns: path, userns: None }
                }
                Err(e) => {
                    child.kill_and_reap();
                    return Err(res.fail(e.into()));
                }
            }
        };
        let plan = PastaPlan {
            target,
            ports: helper_ports.clone(),
            host_loopback_ports: opts.network.host_loopback_ports.clone(),
            runas,
            extra: pasta_extra.iter().map(OsString::from).collect(),
            dns_forward: dns.plan.pasta_forward,
        };
        let cfg = PastaNetworkConfig {
            program,
            plan: &plan,
            ns_pid: child.pid(),
            proc_root: &proc_root,
            timeout: opts.ready_timeout,
        };
        let mut cancel = || signals.pending_termination().is_some();
        match setup_pasta_network(&cfg, &mut cancel) {
            Ok(setup) => {
                ready_after = Some(setup.ready_after);
                res.helper = Some(Helper::Pasta(setup));
            }
            Err(e) => {
                child.kill_and_reap();
                return Err(res.fail(e.into()));
            }
        }
    }
    if let Some(program) = &slirp_program {
        let mut cancel = || signals.pending_termination().is_some();
        let socket = opts.paths.slirp_api_socket(&record.id);
        match slirp::start(
            program,
            child.pid(),
            rootless,
            socket,
            &helper_ports,
            &slirp_options,
            &proc_root,
            opts.ready_timeout,
            &mut cancel,
        ) {
            Ok(setup) => {
                ready_after = Some(setup.ready_after);
                res.helper = Some(Helper::Slirp(Box::new(setup)));
            }
            Err(e) => {
                child.kill_and_reap();
                return Err(res.fail(e));
            }
        }
    }
    record.helper = res.helper.as_ref().map(|h| crate::state::store::HelperRecord { kind: h.kind(), process: h.id() });
    if let Err(e) = write(&record) {
        child.kill_and_reap();
        return Err(res.fail(e.into()));
    }
    crate::fault::point("run.helper-recorded");

    let ns = proc_root.join(child.pid().to_string()).join("ns");
    let (userns, netns) = (ns.join("user"), ns.join("net"));
    let target = crate::ports::nsfactory::FactoryTarget { userns: rootless.then_some(userns.as_path()), netns: &netns };
    match dns.start_forwarder(Some(target), &proc_root) {
        Ok(forwarder) => res.dns = forwarder,
        Err(e) => {
            child.kill_and_reap();
            return Err(res.fail(e.into()));
        }
    }

    match forward.start(child.pid(), rootless, &proc_root) {
        Ok(Some(started)) => {
            record.forwarder = Some(started.record());
            res.ports = Some(started);
            if let Err(e) = write(&record) {
                child.kill_and_reap();
                return Err(res.fail(e.into()));
            }
            crate::fault::point("run.forwarder-recorded");
        }
        Ok(None) => {}
        Err(e) => {
            child.kill_and_reap();
            return Err(res.fail(e));
        }
    }

    let ready = Ready { id: &record.id, mode, ports: &ports, pid: child.pid(), bridge_address: None };
    if let Err(e) = start_command(&mut child, opts, &ready) {
        return Err(res.fail(e));
    }
    crate::fault::point("run.command-started");

    let (exit_code, helper_died) = supervise(&mut child, &signals, res.helper.as_mut());
    let (helper_output, teardown_errors) = res.teardown();
    Ok(RunReport {
        exit_code,
        helper_output,
        helper_died,
        teardown_errors,
        ports,
        ready_after,
        decision: None,
        port_driver: Some(driver),
    })
}

/// What a run created, torn down in reverse order with every error kept.
struct Resources<'a> {
    store: Option<&'a Store>,
    record_id: String,
    netns_path: Option<PathBuf>,
    helper: Option<Helper>,
    ports: Option<forward::Started>,
    dns: Option<crate::dns::forwarder::Forwarder>,
}

impl Resources<'_> {
    fn teardown(&mut self) -> (Option<String>, Vec<RunError>) {
        let mut errors = Vec::new();
        crate::fault::point("teardown.begin");
        // Listeners first: no new connection is accepted into a namespace
        // that is going away.
        if let Some(ports) = self.ports.take() {
            ports.stop();
        }
        if let Some(forwarder) = self.dns.take() {
            log::debug!("dns forwarder stopped: {:?}", forwarder.stop());
        }
        let output = self.helper.take().map(|helper| {
            let (output, helper_errors) = helper.teardown();
            errors.extend(helper_errors);
            output
        });
        crate::fault::point("teardown.helper-stopped");
        if let Some(path) = self.netns_path.take()
            && let Err(e) = netns::remove_named(&path)
        {
            errors.push(e.into());
        }
        crate::fault::point("teardown.netns-removed");
        if let Some(Err(e)) = self.store.map(|s| s.remove_record(&self.record_id)) {
            errors.push(e.into());
        }
        (output, errors)
    }

    /// Tear down after a setup failure; the setup error comes first.
    fn fail(&mut self, err: RunError) -> RunError {
        let (_, errors) = self.teardown();
        if errors.is_empty() {
            err
        } else {
            let mut all = vec![err];
            all.extend(errors);
            RunError::Teardown(all)
        }
    }
}

/// Resolve the port driver; `auto` depends on the pasta build (`None`:
/// no pasta in this run, or its probe failed).
pub(super) fn choose_port_driver(
    mode: &NetworkMode,
    requested: PortDriver,
    ports: &[PortMapping],
    pasta: Option<&crate::helpers::pasta::features::PastaFeatures>,
) -> Result<DriverChoice, RunError> {
    let pasta = match pasta {
        Some(f) if f.tcp_tap_bugs().any() => PastaBuild::Broken,
        Some(_) => PastaBuild::Fixed,
        None => PastaBuild::Unknown,
    };
    Ok(choose_driver(mode, requested, ports, DriverFacts { pasta })?)
}

fn find_slirp(opts: &RunOptions) -> Result<PathBuf, RunError> {
    let _ = opts;
    crate::helpers::slirp::probe::find_slirp4netns(std::env::var_os("PATH").as_deref()).ok_or(RunError::SlirpMissing)
}

fn find_pasta(opts: &RunOptions) -> Result<PathBuf, RunError> {
    match &opts.pasta {
        Some(p) => Ok(p.clone()),
        None => crate::helpers::pasta::features::find_pasta(std::env::var_os("PATH").as_deref())
            .ok_or(RunError::PastaMissing),
    }
}

fn namespace_error(e: UsernsError, proc_root: &Path) -> RunError {
    match e {
        UsernsError::ChildFailed { stage, errno } if stage != ChildStage::Exec => {
            let hint = match stage {
                ChildStage::Unshare | ChildStage::UidMap | ChildStage::GidMap | ChildStage::SetGroups => {
                    UsernsKnobs::read(proc_root).hint()
                }
                _ => String::new(),
            };
            RunError::Namespaces { stage, errno, hint }
        }
        other => other.into(),
    }
}

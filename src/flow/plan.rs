//! The planner: a request and the probed host in, the steps of the setup
//! out. Pure: it reads nothing but its arguments (the bridge network's
//! definition comes through a lookup the caller injects).
//!
//! `run`, `attach`, the library and `plan` all call [`plan`]; the first
//! three then execute the steps, `plan` prints them. Every refusal is made
//! here (or in the shared target validation of [`crate::ns::target`]), so
//! what `plan` accepts, `run` accepts, and the other way round.
//!
//! The per-mode part lives in `flow::modes`: each mode checks what
//! it cannot do and contributes its steps. The rest is common to every mode:
//! free host ports picked and listeners bound first, the record written
//! before anything that needs undoing, the relay started once the
//! namespace is ready, and the end (the command released, or the
//! attachment committed).

pub(crate) mod accel;
mod dns;
mod refusal;
mod render;

pub use accel::AccelPlan;
pub use refusal::Refusal;
pub use render::{json, render};

use crate::bridge::network::{DEFAULT_NETWORK, NetworkDef, NetworkError};
use crate::flow::modes::{self, Input};
use crate::flow::select::{Decision, Fallback, Request as SelectRequest, Requested, select};
use crate::flow::steps::{Inside, NsRef, Step};
use crate::host::probe::{HostCaps, ProbeScope};
use crate::model::config::NetworkConfig;
use crate::model::driver::{ChosenDriver, DriverChoice, DriverFacts, PastaBuild, choose_driver};
use crate::model::mode::NetworkMode;
use crate::model::port::PortMapping;
use serde::Serialize;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Where the network goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetKind {
    /// A child forked for the command enters new namespaces (`run`).
    NewChild,
    /// A namespace someone else made (`attach`, `run --network ns:PATH`,
    /// a runtime's process).
    Given(Given),
    /// A named netns the setup creates for the caller's process to join
    /// (a runtime's bridge network).
    Created,
}

/// What the planner needs to know of a namespace someone else made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Given {
    /// Its network namespace file, as given.
    pub netns: PathBuf,
    /// The user namespace to enter first, when the caller must (rootless).
    pub userns: Option<PathBuf>,
    /// The file is a bind mount (not `/proc/<pid>/...`), which pasta can
    /// open as root.
    pub named: bool,
}

impl From<&crate::ns::target::OpenTarget> for Given {
    fn from(t: &crate::ns::target::OpenTarget) -> Self {
        Self { netns: t.netns_path.clone(), userns: t.userns_path.clone(), named: t.named() }
    }
}

/// How long what the setup starts lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lifetime {
    /// Until the calling process ends (helpers die with it).
    #[default]
    Owner,
    /// Until the namespace ends or `detach`: helpers and relays outlive the caller.
    Detached,
}

/// What a setup asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Mode, published ports, host-loopback ports, port driver.
    pub network: NetworkConfig,
    /// Fallback policy (`None`: `warn` for `auto`, the mode as given otherwise).
    pub fallback: Option<Fallback>,
    /// A requested address (bridge networks).
    pub ip: Option<Ipv4Addr>,
    /// Where the network goes.
    pub target: TargetKind,
    /// How long it lives.
    pub lifetime: Lifetime,
    /// A command runs in the namespace once it is ready (`run`); otherwise
    /// the setup ends with the namespace networked (`attach`, a runtime).
    pub command: bool,
}

impl Request {
    /// A `run` of `network`.
    pub fn run(network: NetworkConfig) -> Self {
        Self {
            network,
            fallback: None,
            ip: None,
            target: TargetKind::NewChild,
            lifetime: Lifetime::Owner,
            command: true,
        }
    }
}

/// What a setup will do.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The mode that will run.
    #[serde(serialize_with = "display")]
    pub mode: NetworkMode,
    /// How it was chosen (for `auto` or with a fallback policy).
    pub decision: Option<Decision>,
    /// Who forwards the published ports, and why.
    pub port_driver: DriverChoice,
    /// Published ports as asked for (host ports may still be unpicked).
    pub ports: Vec<PortMapping>,
    /// Host-loopback ports the namespace reaches.
    pub host_loopback_ports: Vec<u16>,
    /// The steps, in order (in JSON: `pipeline`, each with its `op`;
    /// `steps` there holds what each says in words).
    #[serde(rename = "pipeline")]
    pub steps: Vec<Step>,
    /// The helper's program, when one is spawned.
    pub helper_program: Option<PathBuf>,
    /// The helper's full command line as the plan can know it (placeholders
    /// for what only the setup learns).
    pub helper_argv: Option<Vec<String>>,
    /// pasta's `--runas` (root).
    #[serde(skip)]
    pub runas: Option<u32>,
    /// The bridge network.
    pub network: Option<NetworkDef>,
    /// What the port driver can publish.
    pub port_support: Option<String>,
    /// Warnings to print before the setup (degraded choice, exposure, known bugs).
    pub warnings: Vec<String>,
    /// How long what the setup starts lives.
    #[serde(skip)]
    pub lifetime: Lifetime,
    /// Name resolution for the command: the resolver decision and the
    /// generated files (`None` for a namespace the setup does not run a
    /// command in).
    pub dns: Option<crate::dns::DnsPlan>,
    /// The name the run goes by on its network (`--name`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<crate::model::run_name::RunName>,
    /// What the name resolution steps need: the mode's facts and the options.
    #[serde(skip)]
    pub dns_request: Option<(crate::dns::ModeDns, crate::dns::DnsOptions)>,
    /// pasta's extra argv (`pasta:OPTS`).
    #[serde(skip)]
    pub pasta_extra: Vec<String>,
    /// slirp4netns's extra options (`slirp4netns:OPTS`).
    #[serde(skip)]
    pub slirp_options: crate::model::helper_opts::SlirpOptions,
    /// What `--accel` gives the run (`None` when not asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accel: Option<AccelPlan>,
}

fn display<S: serde::Serializer>(mode: &NetworkMode, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(mode)
}

impl Plan {
    /// Whether the builtin driver relays the ports.
    pub fn builtin(&self) -> bool {
        self.port_driver.driver == ChosenDriver::Builtin
    }
}

/// What the planner reads besides the probed host: bridge network
/// definitions, and the host's `/etc` (its resolv.conf and hosts, for name
/// resolution). Injected, so that tests plan against fixed ones.
pub trait Lookups {
    /// A bridge network's definition by name.
    fn network(&self, name: &str) -> Result<NetworkDef, NetworkError>;
    /// The directory holding the host's `resolv.conf` and `hosts`.
    fn etc(&self) -> &Path;
}

/// The system's: definitions read (never written) from `config_dir`, `/etc`.
#[derive(Debug, Clone, Copy)]
pub struct SystemLookups<'a> {
    /// The configuration directory (network definitions).
    pub config_dir: &'a Path,
}

impl Lookups for SystemLookups<'_> {
    fn network(&self, name: &str) -> Result<NetworkDef, NetworkError> {
        crate::bridge::network::peek_network_def(self.config_dir, name)
    }

    fn etc(&self) -> &Path {
        Path::new(crate::dns::setup::ETC)
    }
}

/// The lookups of a setup on one network known beforehand (a runtime's
/// call, a CNI `ADD`: name resolution is the runtime's, no command runs).
#[derive(Debug, Clone, Copy)]
pub struct OneNetwork<'a>(pub &'a NetworkDef);

impl Lookups for OneNetwork<'_> {
    fn network(&self, _: &str) -> Result<NetworkDef, NetworkError> {
        Ok(self.0.clone())
    }

    fn etc(&self) -> &Path {
        Path::new(crate::dns::setup::ETC)
    }
}

/// Plan `req` on the host `host` describes, with `lookups` for network
/// definitions and the host's name resolution files.
pub fn plan(req: &Request, host: &HostCaps, lookups: &dyn Lookups) -> Result<Plan, Refusal> {
    let decision = decide(req, host)?;
    let mode = decision.as_ref().map_or_else(|| req.network.mode.clone(), |d| d.mode.to_network_mode());
    let cfg = &req.network;
    let facts = DriverFacts { pasta: pasta_build(host), rootless_bridge: host.euid != 0 };
    let port_driver = choose_driver(&mode, cfg.port_driver, &cfg.ports, facts)?;
    let def = match &mode {
        NetworkMode::Bridge(name) => {
            Some(lookups.network(name.as_ref().map_or(DEFAULT_NETWORK, |n| n.as_str())).map_err(Refusal::Network)?)
        }
        _ => None,
    };
    let pasta_extra = cfg.pasta_extra(&mode).map_err(Refusal::HelperOptions)?;
    let slirp_options = cfg.slirp_extra(&mode).map_err(Refusal::HelperOptions)?;
    let input = Input {
        req,
        mode: &mode,
        host,
        builtin: port_driver.driver == ChosenDriver::Builtin,
        decided: decision.is_some(),
        network: def.as_ref(),
        pasta_extra: &pasta_extra,
        slirp_options: &slirp_options,
    };
    check_common(&input)?;
    let driver = modes::driver(&mode, host);
    driver.check(&input)?;
    let dns_request = dns::request(&input)?;
    let mode_steps = driver.steps(&input);
    let in_holder = mode_steps.contains(&Step::EnsureHolder);
    let dns = dns_request.as_ref().map(|(m, o)| dns::plan(*m, o, lookups.etc(), in_holder)).transpose()?;
    let accel = accel::plan(&input);
    let (prepare_accel, start_accel) = accel.as_ref().and_then(AccelPlan::steps).unzip();
    let mut steps = Vec::new();
    if cfg.ports.iter().any(|m| m.host.is_none()) {
        steps.push(Step::PickHostPorts);
    }
    if !cfg.ports.is_empty() {
        steps.push(Step::ClaimPorts);
    }
    if driver.holds_ports(&input) {
        steps.push(Step::HoldPorts);
    }
    if let (Some(name), Some(def)) = (&cfg.name, &def) {
        steps.push(Step::ClaimName { network: def.name.to_string(), name: name.clone() });
    }
    if input.builtin {
        steps.push(Step::BindListeners);
    }
    if dns.as_ref().is_some_and(dns::prepares) {
        steps.push(Step::PrepareDns);
    }
    steps.extend(prepare_accel);
    if needs_record(&input) {
        steps.push(Step::WriteRecord);
    }
    steps.extend(mode_steps);
    // A rootless shared network's names are served by the holder, not the run.
    let forwarder = dns.as_ref().and_then(|d| d.forwarder.as_ref()).map(|f| f.listen).filter(|_| !in_holder);
    if let Some(crate::dns::decide::Listen::Gateway(_)) = forwarder {
        steps.push(Step::StartDns);
    }
    if input.builtin {
        let target = driver.relay_target(&input);
        let inside = if input.rootless() { Inside::Factory } else { Inside::Join };
        steps.push(Step::StartRelay { target, inside, detached: req.lifetime == Lifetime::Detached });
    }
    match (&mode, req.command, &req.target) {
        (NetworkMode::Host, ..) => {}
        (_, true, _) => steps.push(Step::ExecCommand),
        (_, false, TargetKind::Given(_)) => steps.push(Step::Commit),
        (_, false, _) => {}
    }
    steps.extend(start_accel);
    // A forwarder inside the namespace serves on sockets the child opened
    // before the command started: a query sent before its thread runs
    // waits in the socket's queue, so the thread starts off the launch's
    // path, last (after the accelerator, whose start the command's first
    // connect waits for).
    if let Some(crate::dns::decide::Listen::InNamespace(_)) = forwarder {
        steps.push(Step::StartDns);
    }
    let helper = driver.helper(&input, dns.as_ref().and_then(|d| d.pasta_forward));
    let mut warnings: Vec<String> = decision.iter().filter_map(|d| d.warning.clone()).collect();
    warnings.extend(crate::ports::exposure::all_interfaces_warning(&cfg.ports));
    warnings.extend(driver.warnings(&input));
    warnings.extend(dns.iter().flat_map(|d| d.warnings.iter().cloned()));
    warnings.extend(accel.iter().filter_map(|a| a.reason.as_ref()).map(|why| format!("accelerator off: {why}")));
    Ok(Plan {
        helper_program: helper.as_ref().map(|h| h.0.clone()),
        helper_argv: helper.map(|h| h.1),
        runas: driver.runas(&input),
        port_support: driver.port_support(&input),
        mode,
        decision,
        port_driver,
        ports: cfg.ports.clone(),
        host_loopback_ports: cfg.host_loopback_ports.clone(),
        steps,
        network: def,
        warnings,
        lifetime: req.lifetime,
        dns,
        dns_request,
        name: cfg.name.clone(),
        pasta_extra,
        slirp_options,
        accel,
    })
}

/// What of the host [`plan`] reads for `req` from a caller of effective
/// uid `euid`: an explicit mode without a fallback policy needs who the
/// caller is and its helper (with the tun device; pasta for a rootless
/// bridge network's holder); the ladder needs everything.
pub fn probe_scope(req: &Request, euid: u32) -> ProbeScope {
    match (&req.network.mode, req.fallback) {
        (NetworkMode::Pasta, None) => ProbeScope::Pasta,
        (NetworkMode::Slirp4netns, None) => ProbeScope::Slirp4netns,
        // A rootless bridge network needs pasta for its holder.
        (NetworkMode::Bridge(_), None) if euid != 0 => ProbeScope::Pasta,
        (NetworkMode::Host | NetworkMode::Loopback | NetworkMode::Bridge(_) | NetworkMode::Ns(_), None) => {
            ProbeScope::Identity
        }
        _ => ProbeScope::Full,
    }
}

/// The selection ladder's decision, or `None` when the mode is used as
/// given (an explicit mode without a fallback policy: it fails with its own
/// reason if it cannot run).
fn decide(req: &Request, host: &HostCaps) -> Result<Option<Decision>, Refusal> {
    let fallback = match (&req.network.mode, req.fallback) {
        (NetworkMode::Ns(_), Some(_)) => return Err(Refusal::NsFallback),
        (_, Some(f)) => f,
        (NetworkMode::Auto, None) => Fallback::Warn,
        (_, None) => return Ok(None),
    };
    let mut needs = crate::flow::select::needs_for(&req.network);
    needs.existing_namespace = matches!(req.target, TargetKind::Given(_));
    let Some(mode) = Requested::of(&req.network.mode) else { return Ok(None) };
    let request = SelectRequest { mode, needs, fallback };
    Ok(Some(select(&request, host)?))
}

/// What pasta build the host has, for the port driver's choice.
fn pasta_build(host: &HostCaps) -> PastaBuild {
    match host.pasta.features() {
        Some(f) if f.tcp_tap_bugs.any() => PastaBuild::Broken,
        Some(_) => PastaBuild::Fixed,
        None => PastaBuild::Unknown,
    }
}

/// Refusals every mode shares.
fn check_common(input: &Input<'_>) -> Result<(), Refusal> {
    let cfg = &input.req.network;
    if let Some(m) = cfg.ports.iter().find(|m| m.host.is_none() && m.container.len() > 1) {
        return Err(Refusal::EphemeralRange(m.container));
    }
    if let TargetKind::Given(_) = input.req.target
        && matches!(input.mode, NetworkMode::Host | NetworkMode::Auto)
    {
        return Err(Refusal::NotAttachable(input.mode.clone()));
    }
    Ok(())
}

/// A record is written when something outlives the processes of the run
/// or must be found by `gc`: anything but a plain loopback (or `ns:`, or
/// host) run, or a run whose mode choice is to be shown.
fn needs_record(input: &Input<'_>) -> bool {
    match (&input.req.target, input.mode) {
        (_, NetworkMode::Host | NetworkMode::Ns(_)) => false,
        (TargetKind::NewChild, NetworkMode::Loopback) => input.builtin || input.decided,
        _ => true,
    }
}

/// The namespace a mode's steps act on, for a target kind.
pub(crate) fn ns_ref(target: &TargetKind) -> NsRef {
    match target {
        TargetKind::NewChild => NsRef::Child,
        TargetKind::Given(_) => NsRef::Given,
        TargetKind::Created => NsRef::Named,
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "plan_props.rs"]
mod props;

//! The executor: carries out a plan's steps in order, appending what each
//! creates to the record as it goes, and tears it all down through the one
//! undo function ([`super::undo`]) when asked or when a step fails.
//!
//! The executor holds the live half of what the record names: the forked
//! child, the helper process with its output, the relay thread, open
//! namespace files. Undo uses them when they are there (a helper stopped by
//! its owner hands back its output) and the record's data otherwise (gc
//! after a crash, detach from another process).

mod accel;
mod bridge;
mod helper;
mod holder;
mod host_loopback;
mod ns;
mod relay;
mod shared;

pub(crate) use bridge::BridgeWants;
pub(crate) use helper::LiveHelper;

use super::RunError;
use super::plan::Plan;
use super::steps::{NsRef, Step};
use super::undo::{self, Live};
use crate::host::procfs::ProcessId;
use crate::model::port::PortMapping;
use crate::model::target::NsTarget;
use crate::ns::child::NsChild;
use crate::ns::netns::NetNs;
use crate::ns::target::OpenTarget;
use crate::ports::relay::Listener;
use crate::state::paths::Paths;
use crate::state::record::{Phase, Record, RecordKind, Resource, Selection};
use crate::state::store::{Store, new_run_id};
use std::ffi::CString;
use std::net::Ipv4Addr;
use std::time::Duration;

/// The command a run's child executes once released.
#[derive(Debug)]
pub(crate) struct ChildCommand {
    /// Resolved program path.
    pub program: CString,
    /// argv, `argv[0]` included.
    pub argv: Vec<CString>,
    /// The signal mask it starts with (the caller's own).
    pub sigmask: nix::sys::signal::SigSet,
    /// When it starts: at once when nothing happens between the child's
    /// report and the command (see [`crate::ns::child::Release`]).
    pub release: crate::ns::child::Release,
}

/// A setup in progress: the plan, the record, and everything live.
pub(crate) struct Exec {
    pub plan: Plan,
    pub paths: Paths,
    pub timeout: Duration,
    pub(crate) store: Option<Store>,
    pub record: Record,
    pub live: Live,
    /// Published ports, host ports picked.
    pub ports: Vec<PortMapping>,
    pub listeners: Option<Vec<Listener>>,
    /// Sockets holding the published ports that DNAT forwards (`hold_ports`).
    held: Vec<Listener>,
    pub child: Option<NsChild>,
    pub command: Option<ChildCommand>,
    pub given: Option<OpenTarget>,
    pub named: Option<NetNs>,
    pub lease: Option<Ipv4Addr>,
    pub ready_after: Option<Duration>,
    pending: Option<helper::Pending>,
    pub(crate) bridge: bridge::BridgeState,
    /// Name resolution, once prepared.
    pub dns: Option<crate::dns::PreparedDns>,
    /// The published ports' check, held until the record is written.
    claim: Option<crate::ports::precheck::PortClaim>,
    /// The user's network holder, once found or started (rootless shared networks).
    pub holder: Option<crate::holder::HolderState>,
    /// Clean what dead runs left before writing the record (the cheap gc,
    /// when due: see `gc::gc_if_due`); off for a caller that lives for one
    /// call and is timed per container (the CNI plugin: the runtime's `GC`
    /// verb does that).
    pub gc_first: bool,
    /// Undo defers veth deletions to the exiting process's child.
    pub defer_links: bool,
    /// The accelerator's hook for the command's process (`prepare_accel`,
    /// taken by `fork_child`).
    pub accel_hook: Option<crate::accel::child::ChildHook>,
    /// The accelerator, prepared and not yet started.
    accel: Option<accel::Pending>,
    /// The TCP listeners the relay took, for servers to take over.
    pub tcp_listeners: Vec<crate::accel::ingress::Held>,
}

/// How a setup of `plan` names process `pid` in its record: by pid and
/// start time when the record is written (`gc` must not mistake a recycled
/// pid for it), by pid alone when it is never written (a loopback run),
/// which spares reading `<proc>/PID/stat` on the start-up path.
pub(crate) fn process_id(plan: &Plan, proc_root: &std::path::Path, pid: u32) -> ProcessId {
    match plan.steps.contains(&Step::WriteRecord) {
        true => ProcessId::of(proc_root, pid).unwrap_or(ProcessId::unread(pid)),
        false => ProcessId::unread(pid),
    }
}

impl std::fmt::Debug for Exec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exec").field("record", &self.record).finish_non_exhaustive()
    }
}

impl Exec {
    /// A setup of `plan` under `paths`, recorded as a `kind` under a fresh id.
    pub fn new(plan: Plan, paths: &Paths, kind: RecordKind, timeout: Duration) -> Self {
        let owner = process_id(&plan, &paths.proc_root, std::process::id());
        Self::with_id(plan, paths, kind, timeout, new_run_id(), owner)
    }

    /// As [`Exec::new`], with the record's id and owner given.
    pub fn with_id(
        plan: Plan,
        paths: &Paths,
        kind: RecordKind,
        timeout: Duration,
        id: String,
        owner: ProcessId,
    ) -> Self {
        let mut record = Record::new(id, kind, owner, plan.mode.clone());
        record.name = plan.name.clone();
        record.ports = plan.ports.clone();
        record.selection = plan.decision.as_ref().map(|d| Selection {
            reason: d.reason.clone(),
            degraded: d.degraded,
            warning: d.warning.clone(),
        });
        Self {
            paths: paths.clone(),
            timeout,
            store: None,
            record,
            live: Live::default(),
            ports: plan.ports.clone(),
            plan,
            listeners: None,
            held: Vec::new(),
            child: None,
            command: None,
            given: None,
            named: None,
            lease: None,
            ready_after: None,
            pending: None,
            bridge: bridge::BridgeState::default(),
            dns: None,
            accel_hook: None,
            accel: None,
            tcp_listeners: Vec::new(),
            claim: None,
            holder: None,
            gc_first: true,
            defer_links: false,
        }
    }

    /// The record's id.
    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// Carry out one step.
    pub fn run(&mut self, step: &Step, cancel: &mut dyn FnMut() -> bool) -> Result<(), RunError> {
        crate::fault::step(step.op());
        match step {
            Step::PickHostPorts => {
                self.ports = crate::ports::ephemeral::resolve_ephemeral(&self.ports)?;
                self.record.ports = self.ports.clone();
                Ok(())
            }
            Step::ClaimPorts => {
                self.claim = Some(crate::ports::precheck::claim(&self.paths, &self.ports)?);
                Ok(())
            }
            Step::ClaimName { network, name } => {
                // One lock for ports and name: a second flock of the
                // directory from this process would wait for the first.
                if self.claim.is_none() {
                    self.claim = Some(crate::ports::precheck::lock_runs_dir(&self.paths)?);
                }
                let paths = &self.paths;
                crate::dns::names::check_name(&paths.run_dir, &paths.proc_root, network, name, &self.record.id)?;
                Ok(())
            }
            Step::BindListeners => relay::bind(self),
            Step::HoldPorts => {
                self.held = relay::hold(&self.ports)?;
                Ok(())
            }
            Step::PrepareDns => self.prepare_dns(),
            Step::WriteRecord => {
                self.open_record()?;
                // The ports are on record: other setups' checks see them.
                self.claim = None;
                Ok(())
            }
            Step::LeaseAddress { network, requested } => bridge::lease(self, network, *requested),
            Step::UseAddress { .. } => bridge::delegated(self),
            Step::EnsureNetwork { .. } => bridge::ensure(self),
            Step::EnsureHolder => shared::ensure(self),
            Step::AttachInHolder { .. } => shared::attach(self),
            Step::CreateNetns => ns::create_named(self),
            Step::ForkChild { ns } => {
                self.own_hosts_entry()?;
                ns::fork_child(self, *ns)
            }
            Step::NameNetns { of } => ns::name(self, *of),
            Step::CreateVeth { into, .. } => bridge::veth(self, *into),
            Step::ConfigureAddress { .. } => bridge::address(self),
            Step::InstallForwards { .. } => bridge::forwards(self),
            Step::SpawnHelper { helper, target } => {
                self.pending = Some(helper::spawn(self, *helper, *target, cancel)?);
                Ok(())
            }
            Step::AwaitReady { .. } => match self.pending.take() {
                Some(pending) => helper::await_ready(self, pending, cancel),
                None => Ok(()),
            },
            Step::StartDns => self.start_dns(),
            Step::StartRelay { target, detached, .. } => relay::start(self, *target, *detached),
            Step::PrepareAccel { lock, listeners } => accel::prepare(self, *lock, *listeners),
            Step::StartAccel => accel::start(self),
            Step::Commit => self.set_phase(Phase::Ready),
            // The command is the caller's business (it holds the signals).
            Step::ExecCommand | Step::ExecInPlace => Ok(()),
        }
    }

    /// Run every step of the plan in order; a failed step tears down what
    /// the earlier ones made and comes back first among the errors.
    pub fn run_steps(&mut self) -> Result<(), RunError> {
        let steps = self.plan.steps.clone();
        for step in &steps {
            if let Err(e) = self.run(step, &mut || false) {
                return Err(self.fail(e));
            }
        }
        Ok(())
    }

    /// Every step ran: let go of what only the setup needed.
    pub fn done(&mut self) {
        self.bridge.close();
    }

    /// `prepare_dns`: read the host's files, bind a bridge forwarder's
    /// sockets, prepare the child's part; what cannot be met fails here.
    fn prepare_dns(&mut self) -> Result<(), RunError> {
        let Some((mode, options)) = &self.plan.dns_request else { return Ok(()) };
        let mode = match (mode, &self.plan.network) {
            (crate::dns::ModeDns::Bridge { .. }, Some(def)) => {
                crate::dns::ModeDns::Bridge { gateway: def.gateway, listening: true }
            }
            (mode, _) => *mode,
        };
        let req = crate::dns::DnsSetupRequest {
            mode,
            options,
            own: None,
            etc: std::path::Path::new(crate::dns::setup::ETC),
            gateway_elsewhere: self.plan.steps.contains(&Step::EnsureHolder),
        };
        let prepared = crate::dns::prepare(&req)?;
        log::info!("name resolution: {}", prepared.plan.resolver);
        self.dns = Some(prepared);
        Ok(())
    }

    /// `start_dns`: the forwarder the plan asks for (inside the namespace,
    /// on the sockets the child opened there and handed over with its report).
    fn start_dns(&mut self) -> Result<(), RunError> {
        let inside = self.child.as_mut().and_then(NsChild::take_dns_listeners);
        let Some(dns) = self.dns.as_mut() else { return Ok(()) };
        // A bridge network's forwarder answers the network's names (unless
        // the network was created with --disable-dns).
        let names = self
            .plan
            .network
            .as_ref()
            .filter(|def| !def.options.disable_dns)
            .map(|def| crate::dns::names::NamesScope::of_network(def, &self.paths));
        self.live.dns = dns.start_forwarder(inside, names)?;
        self.add(Resource::Dns)
    }

    /// The run's own line in its hosts file: its name (if any) and its id,
    /// for its address on a bridge network, slirp4netns's fixed guest
    /// address, or `127.0.1.1` (a local address, as Debian names its host)
    /// in a namespace whose address only its helper knows.
    fn own_hosts_entry(&mut self) -> Result<(), RunError> {
        let Some(dns) = self.dns.as_mut() else { return Ok(()) };
        let ip = match (self.lease, &self.plan.mode) {
            (Some(lease), _) => lease,
            (None, crate::model::mode::NetworkMode::Slirp4netns) => crate::helpers::slirp::args::GUEST_ADDR,
            (None, _) => Ipv4Addr::new(127, 0, 1, 1),
        };
        let mut names: Vec<String> = self.record.name.iter().map(ToString::to_string).collect();
        names.push(self.record.id.clone());
        dns.set_own(&crate::dns::hosts::HostsEntry { ip: ip.into(), names })?;
        Ok(())
    }

    /// Open the state directory, clean what dead owners left (the cheap gc;
    /// a failure never stops the setup), and write the record.
    fn open_record(&mut self) -> Result<(), RunError> {
        let store = Store::open(&self.paths.run_dir, nix::unistd::geteuid().as_raw())?;
        match self.gc_first.then(|| super::gc::gc_if_due(&self.paths)).flatten() {
            Some(Ok(report)) if !report.actions.is_empty() => {
                log::info!("cleaned {} leftovers of dead runs", report.actions.len())
            }
            Some(Err(e)) => log::debug!("gc before setup: {e}"),
            _ => {}
        }
        crate::fault::point("run.before-record");
        store.write_record(&self.record)?;
        // Then the port index, still under the port check's lock: an entry
        // never exists without its record.
        if !self.record.ports.is_empty() {
            let index = crate::state::port_index::PortIndex::new(&self.paths.run_dir);
            if let Err(source) = index.add(&self.record.id, &self.record.ports) {
                self.store = Some(store);
                let path = self.paths.run_dir.join("ports");
                return Err(crate::state::store::StoreError::WriteRecord { path, source }.into());
            }
        }
        crate::fault::point("run.record-written");
        self.store = Some(store);
        Ok(())
    }

    /// Append `resource` to the record and write it (when one is kept).
    pub fn add(&mut self, resource: Resource) -> Result<(), RunError> {
        self.record.resources.push(resource);
        self.write()
    }

    /// Write the record as it is now (when one is kept).
    pub fn write(&self) -> Result<(), RunError> {
        if let Some(store) = &self.store {
            store.write_record(&self.record)?;
        }
        Ok(())
    }

    /// Move the record to `phase`.
    pub fn set_phase(&mut self, phase: Phase) -> Result<(), RunError> {
        self.record.phase = phase;
        self.write()
    }

    /// The namespace files of `ns`, for helpers and the relay.
    pub fn target(&self, ns: NsRef) -> NsTarget {
        let proc_root = &self.paths.proc_root;
        match ns {
            NsRef::Child => {
                let pid = self.child.as_ref().map_or(0, NsChild::pid);
                NsTarget::of_process(proc_root, pid, !nix::unistd::geteuid().is_root())
            }
            NsRef::Named => NsTarget::netns_only(self.named.as_ref().map(|n| n.path.clone()).unwrap_or_default()),
            NsRef::Given => self.given.as_ref().map_or_else(|| NsTarget::netns_only(""), |g| g.paths(proc_root)),
        }
    }

    /// Undo everything recorded, newest first, collecting every error.
    /// Returns the helper's output, when one ran.
    pub fn teardown(&mut self) -> (Option<String>, Vec<RunError>) {
        crate::fault::point("teardown.begin");
        self.bridge.close();
        if self.store.is_some() {
            let _ = self.set_phase(Phase::Teardown);
        }
        // A helper spawned but not yet ready is stopped with the rest.
        if let Some(pending) = self.pending.take() {
            self.live.helper = Some(pending.into_live());
        }
        self.live.child = self.child.take();
        let env = undo::Env { paths: &self.paths, defer_links: self.defer_links };
        let mut output = None;
        let mut errors = Vec::new();
        for resource in self.record.resources.iter().rev() {
            match undo::undo(resource, &env, &mut self.live) {
                Ok(Some(out)) => output = Some(out),
                Ok(None) => {}
                Err(e) => errors.push(RunError::Undo(e)),
            }
        }
        // Open namespace files close here, before the record goes; the
        // published ports are let go once nothing forwards them any more.
        self.named = None;
        self.held.clear();
        if let Some(store) = self.store.take() {
            if let Err(e) = store.remove_record(&self.record.id) {
                errors.push(e.into());
            }
            super::gc::forget_ports(&self.paths, &self.record);
        }
        (output, errors)
    }

    /// Let go of everything live without undoing it: what was started runs
    /// on (a detached attachment) and its record stays for `detach` or `gc`.
    pub fn release(&mut self) {
        self.bridge.close();
        if let Some(helper) = self.live.helper.take() {
            helper.release();
        }
        self.store = None;
    }

    /// Tear down after a failed step; the step's error comes first.
    pub fn fail(&mut self, err: RunError) -> RunError {
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

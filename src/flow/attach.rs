//! Networking a namespace someone else made (`attach`), and undoing it
//! (`detach`).
//!
//! An attachment is the same plan of steps as a run, executed on a given
//! namespace instead of a child's: the steps that do not need the
//! namespace (host ports, listeners, the record, a bridge lease) run first,
//! possibly before the caller's process exists ([`Session::prepare`]); the
//! rest once the namespace is known ([`Session::attach`]). The record then
//! names the namespace and what keeps the attachment alive: the caller
//! (until it ends), or the namespace itself (a detached attachment, which
//! outlives the command that made it).
//!
//! `detach ID` undoes what the record names, newest first, through the one
//! undo function; the record goes last, so a detach that dies half-way is
//! finished by running it again or by `gc`.

use super::RunError;
use super::exec::Exec;
use super::plan::{Given, Lifetime, Plan, Request, TargetKind, plan};
use super::steps::Step;
use crate::host::probe::HostCaps;
use crate::host::procfs::ProcessId;
use crate::model::mode::NetworkMode;
use crate::model::port::PortMapping;
use crate::ns::target::OpenTarget;
use crate::state::paths::Paths;
use crate::state::record::{Anchor, Phase, Record, RecordKind};
use crate::state::store::{Store, StoreError};
use std::time::Duration;

/// What planning looks up (network definitions, the host's `/etc`).
pub(crate) type Networks<'a> = &'a dyn super::plan::Lookups;

/// An attachment being set up, or set up.
pub(crate) struct Session {
    /// The executor, with the record and everything live.
    pub exec: Exec,
    next: usize,
    req: Request,
    host: HostCaps,
}

impl Session {
    /// Plan `req` and run the steps that come before the namespace is known.
    pub fn prepare(
        paths: &Paths,
        req: Request,
        host: HostCaps,
        networks: Networks<'_>,
        timeout: Duration,
    ) -> Result<Self, RunError> {
        let planned = plan(&req, &host, networks)?;
        let split = planned.steps.iter().position(Step::needs_target).unwrap_or(planned.steps.len());
        let mut exec = Exec::new(planned, paths, RecordKind::Attachment, timeout);
        run_steps(&mut exec, 0..split, &mut || false)?;
        Ok(Self { exec, next: split, req, host })
    }

    /// Run the rest of the steps on `target` (none for a namespace the
    /// setup created itself).
    pub fn attach(
        mut self,
        target: Option<OpenTarget>,
        networks: Networks<'_>,
        cancel: &mut dyn FnMut() -> bool,
    ) -> Result<Self, RunError> {
        if let Some(t) = target
            && let Err(e) = self.bind_target(t, networks)
        {
            return Err(self.exec.fail(e));
        }
        let end = self.exec.plan.steps.len();
        run_steps(&mut self.exec, self.next..end, cancel)?;
        self.next = end;
        self.exec.done();
        Ok(self)
    }

    /// Re-plan for the namespace now known (the steps already run must be
    /// those the new plan starts with), check it against other attachments
    /// to it, and record it.
    fn bind_target(&mut self, t: OpenTarget, networks: Networks<'_>) -> Result<(), RunError> {
        self.req.target = TargetKind::Given(Given::from(&t));
        let planned = plan(&self.req, &self.host, networks)?;
        if planned.steps[..self.next] != self.exec.plan.steps[..self.next] {
            return Err(RunError::Holder("the plan changed between prepare and attach".into()));
        }
        check_conflicts(&self.exec.paths, &t, &self.exec.plan, &self.exec.ports, &self.exec.record.id)?;
        self.exec.record.anchor = match self.req.lifetime {
            Lifetime::Detached => t.anchor(),
            Lifetime::Owner => Anchor::Owner,
        };
        self.exec.record.target = Some(t.record());
        self.exec.given = Some(t);
        self.exec.plan = planned;
        self.exec.write()
    }

    /// How long what it starts lives.
    pub fn lifetime(&self) -> Lifetime {
        self.req.lifetime
    }

    /// The plan being executed.
    pub fn plan(&self) -> &Plan {
        &self.exec.plan
    }
}

fn run_steps(exec: &mut Exec, range: std::ops::Range<usize>, cancel: &mut dyn FnMut() -> bool) -> Result<(), RunError> {
    for i in range {
        let step = exec.plan.steps[i].clone();
        if let Err(e) = exec.run(&step, cancel) {
            return Err(exec.fail(e));
        }
    }
    Ok(())
}

/// Plan and run a whole attachment to `target` (the CLI's `attach`): the
/// namespace is checked against other attachments before anything exists.
pub(crate) fn attach(
    paths: &Paths,
    mut req: Request,
    host: HostCaps,
    target: OpenTarget,
    networks: Networks<'_>,
    timeout: Duration,
) -> Result<Session, RunError> {
    req.target = TargetKind::Given(Given::from(&target));
    let planned = plan(&req, &host, networks)?;
    check_conflicts(paths, &target, &planned, &planned.ports, "")?;
    let session = Session::prepare(paths, req, host, networks, timeout)?;
    session.attach(Some(target), networks, &mut || false)
}

/// Refuse a second attachment to a namespace that would collide with a
/// live one: overlapping host ports, a second network helper, the same
/// bridge network twice.
fn check_conflicts(
    paths: &Paths,
    target: &OpenTarget,
    plan: &Plan,
    ports: &[PortMapping],
    own_id: &str,
) -> Result<(), RunError> {
    let Ok(store) = Store::open(&paths.run_dir, nix::unistd::geteuid().as_raw()) else { return Ok(()) };
    let others = store.records()?.into_iter().flatten().filter(|r| {
        r.id != own_id && r.target.as_ref().is_some_and(|t| t.ns == target.ns) && r.alive(&paths.proc_root)
    });
    for other in others {
        if let Some(why) = conflict(&plan.mode, ports, other.clone()) {
            return Err(RunError::Conflict { netns: target.netns_path.clone(), id: other.id, why });
        }
    }
    Ok(())
}

/// Why an attachment of `mode` publishing `ports` collides with `other`
/// on the same namespace; `None` when they can share it. Pure.
pub(crate) fn conflict(mode: &NetworkMode, ports: &[PortMapping], other: Record) -> Option<String> {
    let helper = |m: &NetworkMode| matches!(m, NetworkMode::Pasta | NetworkMode::Slirp4netns);
    if helper(mode) && helper(&other.mode) {
        return Some(format!("it is already networked by {}", other.mode));
    }
    if let (NetworkMode::Bridge(a), NetworkMode::Bridge(b)) = (mode, &other.mode)
        && a == b
    {
        return Some(format!("it is already on {mode}"));
    }
    let clash = ports.iter().find(|m| other.ports.iter().any(|o| overlap(m, o)))?;
    Some(format!("host port {clash} overlaps a port it publishes"))
}

/// Whether two published ports would take the same host socket.
fn overlap(a: &PortMapping, b: &PortMapping) -> bool {
    let (Some(ha), Some(hb)) = (a.host, b.host) else { return false };
    let ips = match (a.host_ip, b.host_ip) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    };
    a.proto == b.proto && ips && ha.start() <= hb.end() && hb.start() <= ha.end()
}

/// What a detach did.
#[derive(Debug, Default)]
pub struct DetachReport {
    /// The attachment's id.
    pub id: String,
    /// The network helper's output, when one ran.
    pub helper_output: Option<String>,
    /// What could not be undone (every step was attempted).
    pub errors: Vec<String>,
}

/// Undo the attachment `id` from its record (any process of this user may).
pub(crate) fn detach(paths: &Paths, id: &str) -> Result<DetachReport, RunError> {
    let store = Store::open(&paths.run_dir, nix::unistd::geteuid().as_raw())?;
    let valid = !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    let mut record = match store.record(id) {
        Ok(r) if valid => r,
        Err(StoreError::ReadRecord { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(RunError::UnknownAttachment(id.to_owned()));
        }
        Err(e) if valid => return Err(e.into()),
        _ => return Err(RunError::UnknownAttachment(id.to_owned())),
    };
    if record.kind != RecordKind::Attachment {
        return Err(RunError::NotAnAttachment(id.to_owned()));
    }
    let me = ProcessId::of(&paths.proc_root, std::process::id()).unwrap_or(ProcessId::unread(0));
    let busy = record.phase != Phase::Ready && record.owner != me && record.owner.is_alive(&paths.proc_root);
    if busy {
        let doing = if record.phase == Phase::Setup { "setting up" } else { "tearing down" };
        return Err(RunError::Busy { id: id.to_owned(), pid: record.owner.pid, doing });
    }
    record.phase = Phase::Teardown;
    record.owner = me;
    store.write_record(&record)?;
    crate::fault::point("detach.marked");
    let mut actions = Vec::new();
    let helper_output = super::gc::undo_record(&record, paths, &store, false, &mut actions);
    let errors = actions.into_iter().filter_map(|a| a.error.map(|e| format!("{}: {e}", a.what))).collect();
    Ok(DetachReport { id: id.to_owned(), helper_output, errors })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::record::RecordKind;

    fn other(mode: &str, ports: &[&str]) -> Record {
        let mut r =
            Record::new("x".into(), RecordKind::Attachment, ProcessId { pid: 1, start_time: 1, pid_ns: None }, mode.parse().unwrap());
        r.ports = ports.iter().map(|p| p.parse().unwrap()).collect();
        r
    }

    fn ports(specs: &[&str]) -> Vec<PortMapping> {
        specs.iter().map(|p| p.parse().unwrap()).collect()
    }

    #[test]
    fn overlapping_host_ports_collide_and_disjoint_ones_do_not() {
        let lo = NetworkMode::Loopback;
        let o = other("loopback", &["127.0.0.1:8000-8010:80-90"]);
        assert!(conflict(&lo, &ports(&["8005:80"]), o.clone()).unwrap().contains("8005:80/tcp"));
        assert_eq!(conflict(&lo, &ports(&["127.0.0.2:8005:80"]), o.clone()), None, "another address");
        assert_eq!(conflict(&lo, &ports(&["8005:80/udp"]), o.clone()), None, "another protocol");
        assert_eq!(conflict(&lo, &ports(&["8011:80"]), o.clone()), None);
        assert_eq!(conflict(&lo, &ports(&["80"]), o), None, "a port still to be picked");
    }

    #[test]
    fn a_second_helper_or_the_same_bridge_twice_collides() {
        assert!(conflict(&NetworkMode::Pasta, &[], other("slirp4netns", &[])).unwrap().contains("slirp4netns"));
        assert_eq!(conflict(&NetworkMode::Loopback, &[], other("pasta", &[])), None);
        assert!(conflict(&"bridge:web".parse().unwrap(), &[], other("bridge:web", &[])).is_some());
        assert_eq!(conflict(&"bridge:db".parse().unwrap(), &[], other("bridge:web", &[])), None);
    }
}

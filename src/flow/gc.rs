//! `gc`: undo what dead runs and attachments left, from their records,
//! through the same undo function every teardown uses.
//!
//! A record is alive while it is being set up or torn down by a live owner,
//! and once ready while its anchor lives: the owner for a run, the
//! namespace (the process it was attached through, or its bind mount) for
//! an attachment. A live record is never touched. Every undo tolerates
//! "already gone", so `gc` is idempotent and also finishes a half-done
//! cleanup. What no record names (temp files of dead writers, leases of
//! owners that died before recording their run, links planted in place of
//! records) is swept by the `leftovers` submodule.

mod leftovers;

use super::undo::{self, Live};
use crate::state::paths::Paths;
use crate::state::record::{Record, Resource};
use crate::state::store::{Store, StoreError};
use serde::Serialize;
use std::path::Path;

/// One thing `gc` did (or would do, with `dry_run`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Action {
    /// The run's id (or the record file for a corrupted record).
    pub run: String,
    /// What was removed.
    pub what: String,
    /// The error, if the step failed.
    pub error: Option<String>,
}

/// What a `gc` pass found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Records still alive (left alone).
    pub live: Vec<String>,
    /// Steps taken for dead ones.
    pub actions: Vec<Action>,
}

/// What undoing `resource` removes, for the report; `None` for a process
/// that is already gone (nothing to do).
fn describe(resource: &Resource, proc_root: &Path) -> Option<String> {
    Some(match resource {
        Resource::Process { role, process } if process.is_alive(proc_root) => {
            format!("{} process {}", role.name(), process.pid)
        }
        Resource::Process { .. } => return None,
        Resource::NetnsName { path } => format!("netns {}", path.display()),
        Resource::Lease { network, address, .. } => format!("lease {address} on {network}"),
        Resource::Veth { name } => format!("veth {name}"),
        Resource::HolderVeth { name } => format!("veth {name} in the network holder"),
        Resource::Ipam { address, plugin, .. } => format!("address {address} of IPAM plugin {}", plugin.display()),
        Resource::Forwards { network, forwards } => {
            format!("{} forwards in table ip pelagos-{network}", forwards.len())
        }
        Resource::File { path } | Resource::Log { path, .. } => format!("file {}", path.display()),
        Resource::Relay { factory: Some(f), .. } if f.is_alive(proc_root) => format!("socket factory {}", f.pid),
        Resource::Holder { .. } => "use of the network holder".into(),
        Resource::Relay { .. } | Resource::Dns | Resource::Accel => return None,
    })
}

/// Undo every resource of `record`, newest first, then remove the record;
/// each step is reported. Returns the helper output found (detached
/// helpers' logs).
pub(crate) fn undo_record(
    record: &Record,
    paths: &Paths,
    store: &Store,
    dry_run: bool,
    actions: &mut Vec<Action>,
) -> Option<String> {
    undo_record_in(record, undo::Env::new(paths), store, dry_run, actions)
}

/// [`undo_record`] with the undo environment given.
pub(crate) fn undo_record_in(
    record: &Record,
    env: undo::Env<'_>,
    store: &Store,
    dry_run: bool,
    actions: &mut Vec<Action>,
) -> Option<String> {
    let paths = env.paths;
    let mut live = Live::default();
    let mut output = None;
    for resource in record.resources.iter().rev() {
        let Some(what) = describe(resource, &paths.proc_root) else { continue };
        let error = match dry_run {
            true => None,
            false => match undo::undo(resource, &env, &mut live) {
                Ok(out) => {
                    output = out.or(output);
                    None
                }
                Err(e) => Some(crate::flow::error_chain(&e)),
            },
        };
        actions.push(Action { run: record.id.clone(), what, error });
    }
    let error = if dry_run { None } else { store.remove_record(&record.id).err().map(|e| e.to_string()) };
    if !dry_run {
        forget_ports(paths, record);
    }
    actions.push(Action { run: record.id.clone(), what: "record".into(), error });
    output
}

/// Remove the port index entries of `record` (after the record: an entry
/// may outlive its record, never the other way round); a failure leaves
/// entries `gc` sweeps later.
pub(crate) fn forget_ports(paths: &Paths, record: &Record) {
    if !record.ports.is_empty()
        && let Err(e) = crate::state::port_index::PortIndex::new(&paths.run_dir).forget(&record.id, &record.ports)
    {
        log::debug!("port index of {}: {e}", record.id);
    }
}

/// How often, at most, a setup runs the cheap gc before writing its
/// record (per state directory) once there are more than
/// [`SETUP_GC_ALWAYS_UP_TO`] records.
pub const SETUP_GC_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Up to this many records, every setup runs the cheap gc. A pass costs
/// ~50 µs per record (it reads each record, its owner's `/proc` stat, its
/// lease and ports): at 32, the bound this was before, the 33rd attach of a
/// burst took 2.9 ms instead of 1.3 (bench/bridge, scale). At 4 it stays
/// under 0.2 ms, and a killed run's leftovers are still gone by the next
/// setup on a host running a few containers.
pub const SETUP_GC_ALWAYS_UP_TO: usize = 4;

/// The gc a setup runs before writing its record, when due: always while
/// the state directory holds at most [`SETUP_GC_ALWAYS_UP_TO`] records,
/// beyond that at most once per [`SETUP_GC_EVERY`], told by the
/// modification time of `<run>/gc.stamp`. A pass reads every record, which
/// at hundreds of live containers would be most of an attach's own time;
/// leftovers of dead runs then wait at most that long (or for
/// `pelagos-net gc`). `None` when not due.
pub(crate) fn gc_if_due(paths: &Paths) -> Option<Result<GcReport, StoreError>> {
    use std::os::unix::fs::OpenOptionsExt;
    let few = crate::state::safefs::at_most_entries(&paths.runs_dir(), SETUP_GC_ALWAYS_UP_TO).unwrap_or(true);
    if few {
        return Some(gc(paths, false));
    }
    let stamp = paths.run_dir.join("gc.stamp");
    let now = std::time::SystemTime::now();
    let fresh = std::fs::symlink_metadata(&stamp)
        .and_then(|m| m.modified())
        .is_ok_and(|m| now.duration_since(m).is_ok_and(|age| age < SETUP_GC_EVERY));
    if fresh {
        return None;
    }
    let touched = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&stamp)
        .and_then(|f| f.set_modified(now));
    if let Err(e) = touched {
        log::debug!("gc stamp {}: {e}", stamp.display());
    }
    Some(gc(paths, false))
}

/// Find dead records and undo them (nothing is removed with `dry_run`).
pub fn gc(paths: &Paths, dry_run: bool) -> Result<GcReport, StoreError> {
    let euid = nix::unistd::geteuid().as_raw();
    let store = if dry_run {
        // Only looking: a state directory that does not exist holds nothing
        // to collect, and is not created.
        match Store::open_existing(&paths.run_dir, euid)? {
            Some(store) => store,
            None => return Ok(GcReport::default()),
        }
    } else {
        Store::open(&paths.run_dir, euid)?
    };
    let mut report = GcReport::default();
    for entry in store.records()? {
        let record = match entry {
            Ok(r) => r,
            // A run that finished between listing and reading: nothing to do.
            Err(StoreError::ReadRecord { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => continue,
            Err(StoreError::ReadRecord { path, .. }) if path != paths.runs_dir() => {
                // A link or a non-file where a record should be: refused by
                // the read (never followed), removed here.
                match leftovers::planted_record(&path, dry_run) {
                    Some(action) => report.actions.push(action),
                    None => report.actions.push(Action {
                        run: path.display().to_string(),
                        what: "unreadable record".into(),
                        error: Some("cannot be read; remove it by hand".into()),
                    }),
                }
                continue;
            }
            Err(StoreError::CorruptRecord { path, .. } | StoreError::OtherFormat { path, .. }) => {
                let error = if dry_run { None } else { std::fs::remove_file(&path).err().map(|e| e.to_string()) };
                report.actions.push(Action { run: path.display().to_string(), what: "corrupted record".into(), error });
                continue;
            }
            Err(e) => return Err(e),
        };
        if record.alive(&paths.proc_root) {
            report.live.push(record.id.clone());
            continue;
        }
        // The record was read before it was found dead: an owner that
        // finished normally in between removed it, and its exiting helpers
        // are not ours to kill. A dead record changes no more, so one still
        // there now is really left over.
        match store.record(&record.id) {
            Err(StoreError::ReadRecord { ref source, .. }) if source.kind() == std::io::ErrorKind::NotFound => continue,
            Ok(now) if now != record => continue,
            _ => {}
        }
        undo_record(&record, paths, &store, dry_run, &mut report.actions);
    }
    let live: Vec<String> = report.live.clone();
    leftovers::sweep(paths, dry_run, &live, &mut report.actions);
    match crate::holder::usage::collect(paths, dry_run) {
        Ok(Some(what)) => report.actions.push(Action { run: "holder".into(), what, error: None }),
        Ok(None) => {}
        Err(e) => report.actions.push(Action {
            run: "holder".into(),
            what: "network holder".into(),
            error: Some(crate::flow::error_chain(&e)),
        }),
    }
    leftovers::port_index(paths, &store, dry_run, &mut report.actions);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::procfs::ProcessId;
    use crate::model::mode::NetworkMode;
    use crate::state::record::{Anchor, Phase, ProcessRole, RecordKind};

    fn dead() -> ProcessId {
        ProcessId { pid: u32::MAX - 1, start_time: 1, pid_ns: None }
    }

    fn me() -> ProcessId {
        ProcessId::of(Path::new("/proc"), std::process::id()).unwrap()
    }

    fn alive(r: &Record, proc: &Path) -> bool {
        r.alive(proc)
    }

    fn record(owner: ProcessId, phase: Phase, anchor: Anchor) -> Record {
        let mut r = Record::new("abc".into(), RecordKind::Attachment, owner, NetworkMode::Pasta);
        r.phase = phase;
        r.anchor = anchor;
        r
    }

    #[test]
    fn a_record_in_setup_lives_with_its_owner_and_a_ready_one_with_its_namespace() {
        let proc = Path::new("/proc");
        let ns_of = |p| Anchor::Namespace { process: Some(p), mount: None };
        assert!(alive(&record(me(), Phase::Setup, ns_of(dead())), proc));
        assert!(!alive(&record(dead(), Phase::Setup, ns_of(me())), proc), "a setup whose owner died is dead");
        assert!(
            alive(&record(dead(), Phase::Ready, ns_of(me())), proc),
            "the attaching command exits; the namespace lives"
        );
        assert!(!alive(&record(me(), Phase::Ready, ns_of(dead())), proc), "its namespace's process died");
        assert!(!alive(&record(dead(), Phase::Teardown, ns_of(me())), proc), "a detach that died is finished by gc");
        assert!(alive(&record(me(), Phase::Ready, Anchor::Owner), proc));
    }

    #[test]
    fn dead_processes_are_not_reported_and_live_ones_are_named() {
        let proc = Path::new("/proc");
        let gone = Resource::Process { role: ProcessRole::Pasta, process: dead() };
        assert_eq!(describe(&gone, proc), None);
        let here = Resource::Process { role: ProcessRole::Pasta, process: me() };
        assert_eq!(describe(&here, proc), Some(format!("pasta process {}", me().pid)));
    }
}

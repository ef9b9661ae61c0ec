//! `gc`: remove what runs whose owner is gone left behind, from their
//! records. A record whose owner (pid + start time) is alive is never
//! touched. Every step tolerates "already gone", so `gc` is idempotent and
//! also finishes a half-done cleanup. What no record names (temp files of
//! dead writers, leases of owners that died before recording their run,
//! links planted in place of records) is swept by the `leftovers` submodule.

mod leftovers;

use crate::bridge::firewall::Firewall;
use crate::bridge::lease::LeaseStore;
use crate::bridge::plan::forwards;
use crate::host::procfs::ProcessId;
use crate::ns::netns;
use crate::state::paths::Paths;
use crate::state::store::{RunRecord, Store, StoreError};
use serde::Serialize;
use std::path::PathBuf;

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
    /// Runs whose owner is alive (left alone).
    pub live: Vec<String>,
    /// Steps taken for dead runs.
    pub actions: Vec<Action>,
}

/// Which step to take for a dead run's record, in teardown order (pure but
/// for the liveness reads under `paths.proc_root`).
pub fn steps(record: &RunRecord, paths: &Paths) -> Vec<Step> {
    let proc_root = &paths.proc_root;
    let mut out = Vec::new();
    let factory = record.forwarder.as_ref().and_then(|f| f.factory);
    for p in [record.helper.as_ref().map(|h| h.process), factory, record.child].into_iter().flatten() {
        // A pid of another pid namespace means another process here.
        if p.is_here(proc_root) && p.is_alive(proc_root) {
            out.push(Step::Kill(p));
        }
    }
    if record.mode == crate::model::mode::NetworkMode::Slirp4netns {
        // slirp4netns removes its API socket only when it exits cleanly.
        out.push(Step::File(paths.slirp_api_socket(&record.id)));
    }
    if let Some(b) = &record.bridge
        && b.forwards > 0
    {
        out.push(Step::Forwards);
    }
    if let Some(path) = &record.netns_path {
        out.push(Step::Netns(path.clone()));
    }
    if record.bridge.is_some() {
        out.push(Step::Lease);
    }
    out.push(Step::Record);
    out
}

/// One cleanup step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Kill a leftover process (helper or command).
    Kill(ProcessId),
    /// Remove a file the run left (a helper's socket).
    File(PathBuf),
    /// Remove the run's forwards from its network's nftables table.
    Forwards,
    /// Remove the named netns.
    Netns(PathBuf),
    /// Release the bridge lease.
    Lease,
    /// Remove the record itself.
    Record,
}

/// Find dead runs and remove what they left (nothing is removed with `dry_run`).
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
            Err(StoreError::CorruptRecord { path, .. }) => {
                let error = if dry_run { None } else { std::fs::remove_file(&path).err().map(|e| e.to_string()) };
                report.actions.push(Action { run: path.display().to_string(), what: "corrupted record".into(), error });
                continue;
            }
            Err(e) => return Err(e),
        };
        if record.owner.is_alive(&paths.proc_root) {
            report.live.push(record.id.clone());
            continue;
        }
        // The record was read before the owner was found dead: an owner that
        // finished normally in between removed it, and its exiting helpers
        // are not ours to kill. A dead owner removes nothing more, so a
        // record still there now is really left over.
        if matches!(store.record(&record.id), Err(StoreError::ReadRecord { ref source, .. }) if source.kind() == std::io::ErrorKind::NotFound)
        {
            continue;
        }
        for step in steps(&record, paths) {
            let (what, result) = describe_and_run(&step, &record, paths, &store, dry_run);
            report.actions.push(Action { run: record.id.clone(), what, error: result.err() });
        }
    }
    leftovers::sweep(paths, dry_run, &mut report.actions);
    // CNI attachments have no owner process (the container runtime owns
    // their lifecycle): listed as live, left to the CNI DEL and GC verbs.
    if let Ok(records) = crate::cni::record::CniStore::new(&paths.run_dir).list(None) {
        report.live.extend(
            records.into_iter().flatten().map(|r| format!("cni:{}/{}/{}", r.network, r.container_id, r.ifname)),
        );
    }
    Ok(report)
}

fn describe_and_run(
    step: &Step,
    record: &RunRecord,
    paths: &Paths,
    store: &Store,
    dry_run: bool,
) -> (String, Result<(), String>) {
    let run = |f: &mut dyn FnMut() -> Result<(), String>| if dry_run { Ok(()) } else { f() };
    match step {
        Step::Kill(p) => (
            format!("process {}", p.pid),
            run(&mut || {
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid as i32), nix::sys::signal::Signal::SIGKILL)
                    .map_err(|e| e.to_string())
            }),
        ),
        Step::Forwards => {
            let b = record.bridge.as_ref().expect("forwards step only for bridge records");
            (
                format!("{} forwards in table ip pelagos-{}", b.forwards, b.network),
                run(&mut || {
                    let fwds = forwards(b.address, &record.ports).map_err(|e| e.to_string())?;
                    Firewall::new().and_then(|mut fw| fw.remove_forwards(&b.network, &fwds)).map_err(|e| e.to_string())
                }),
            )
        }
        Step::File(path) => (
            format!("file {}", path.display()),
            run(&mut || match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
                _ => Ok(()),
            }),
        ),
        Step::Netns(path) => {
            (format!("netns {}", path.display()), run(&mut || netns::remove_named(path).map_err(|e| e.to_string())))
        }
        Step::Lease => {
            let b = record.bridge.as_ref().expect("lease step only for bridge records");
            (
                format!("lease {} on {}", b.address, b.network),
                run(&mut || {
                    LeaseStore::new(&paths.run_dir)
                        .release(&b.network, b.address, &record.id)
                        .map_err(|e| e.to_string())
                }),
            )
        }
        Step::Record => ("record".into(), run(&mut || store.remove_record(&record.id).map_err(|e| e.to_string()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::store::BridgeRecord;

    fn paths() -> Paths {
        Paths {
            run_dir: "/run/pelagos-test".into(),
            config_dir: "/var/lib/pelagos-test".into(),
            netns_dir: "/run/netns".into(),
            proc_root: "/proc".into(),
        }
    }

    #[test]
    fn a_dead_slirp4netns_run_loses_its_api_socket_before_its_record() {
        let record = RunRecord {
            id: "abc".into(),
            owner: dead(),
            mode: crate::model::mode::NetworkMode::Slirp4netns,
            child: Some(dead()),
            helper: None,
            netns_path: None,
            ports: vec![],
            bridge: None,
            selection: None,
            forwarder: None,
        };
        let got = steps(&record, &paths());
        assert_eq!(got, vec![Step::File("/run/pelagos-test/slirp-abc.sock".into()), Step::Record]);
    }

    fn dead() -> ProcessId {
        ProcessId { pid: u32::MAX - 1, start_time: 1, pid_ns: None }
    }

    #[test]
    fn a_dead_bridge_run_is_undone_rules_first_then_netns_lease_record() {
        let record = RunRecord {
            id: "abc".into(),
            owner: dead(),
            mode: crate::model::mode::NetworkMode::Bridge(None),
            child: Some(dead()),
            helper: None,
            netns_path: Some("/run/netns/pelagos-abc".into()),
            ports: vec!["8080:80".parse().unwrap()],
            bridge: Some(BridgeRecord {
                network: "pelagos0".into(),
                veth: "pvabc".into(),
                address: "10.90.0.2".parse().unwrap(),
                forwards: 1,
            }),
            selection: None,
            forwarder: None,
        };
        let got = steps(&record, &paths());
        assert_eq!(got, vec![Step::Forwards, Step::Netns("/run/netns/pelagos-abc".into()), Step::Lease, Step::Record]);
    }

    #[test]
    fn a_live_helper_of_a_dead_run_is_killed_first() {
        let me = ProcessId::of(std::path::Path::new("/proc"), std::process::id()).unwrap();
        let record = RunRecord {
            id: "x".into(),
            owner: dead(),
            mode: crate::model::mode::NetworkMode::Pasta,
            child: None,
            helper: Some(crate::state::store::HelperRecord { kind: crate::flow::run::HelperKind::Pasta, process: me }),
            netns_path: None,
            ports: vec![],
            bridge: None,
            selection: None,
            forwarder: None,
        };
        assert_eq!(steps(&record, &paths()), vec![Step::Kill(me), Step::Record]);
    }
}

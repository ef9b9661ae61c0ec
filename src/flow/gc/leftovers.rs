//! What a crash can leave that no run record names: half-written temp
//! files (a crash between writing and renaming a record, lease table or
//! network definition), leases whose owner died before its run record was
//! written, and links planted where a record should be.
//!
//! Temp files carry their writer's pid (`.<id>.<pid>.tmp`,
//! `.<network>.<pid>.tmp`) and are removed only when that pid is gone;
//! lease temp files and dead leases are handled under the network's lease
//! lock. Never removes anything a live process may still be writing.

use super::Action;
use crate::bridge::lease::LeaseStore;
use crate::state::paths::Paths;
use std::fs;
use std::path::Path;

/// The writer pid of a temp file named `.<anything>.<pid>.tmp`.
pub(super) fn tmp_writer(name: &str) -> Option<u32> {
    let stem = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    stem.rsplit_once('.')?.1.parse().ok()
}

fn pid_alive(proc_root: &Path, pid: u32) -> bool {
    proc_root.join(pid.to_string()).exists()
}

/// Remove `.<x>.<pid>.tmp` files of dead writers in `dir`.
fn stale_tmp_files(dir: &Path, proc_root: &Path, dry_run: bool, report: &mut Vec<Action>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = tmp_writer(&name) else { continue };
        if pid_alive(proc_root, pid) {
            continue;
        }
        // A writer that renamed its file and exited between the listing and
        // the pid check left nothing behind: no action to report.
        let path = entry.path();
        let error = match if dry_run { fs::symlink_metadata(&path).map(drop) } else { fs::remove_file(&path) } {
            Ok(()) => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => Some(e.to_string()),
        };
        report.push(Action { run: path.display().to_string(), what: "temp file of a dead writer".into(), error });
    }
}

/// Sweep temp files (runs, network definitions) and the leases of dead
/// owners, except those of the `live` records (attachments).
pub(super) fn sweep(paths: &Paths, dry_run: bool, live: &[String], report: &mut Vec<Action>) {
    stale_tmp_files(&paths.runs_dir(), &paths.proc_root, dry_run, report);
    stale_tmp_files(&paths.config_dir.join("networks"), &paths.proc_root, dry_run, report);
    stale_tmp_files(&crate::holder::HolderDir::new(&paths.run_dir).dir, &paths.proc_root, dry_run, report);
    let leases = LeaseStore::new(&paths.run_dir);
    let networks = match leases.networks() {
        Ok(n) => n,
        Err(e) => {
            report.push(Action { run: "leases".into(), what: "lease directory".into(), error: Some(e.to_string()) });
            return;
        }
    };
    for network in networks {
        match leases.sweep(&network, &paths.proc_root, dry_run, live) {
            Ok(sweep) => {
                for (addr, lease) in sweep.dead {
                    report.push(Action {
                        run: lease.id,
                        what: format!("lease {addr} on {network} (owner died before recording it)"),
                        error: None,
                    });
                }
                if sweep.temp_files > 0 {
                    report.push(Action {
                        run: network.clone(),
                        what: format!("half-written lease of {network}"),
                        error: None,
                    });
                }
                for path in sweep.corrupt {
                    report.push(Action {
                        run: network.clone(),
                        what: format!("corrupted lease file {}", path.display()),
                        error: Some("delete it when no container of this network runs".into()),
                    });
                }
            }
            Err(e) => report.push(Action {
                run: network.clone(),
                what: format!("leases of {network}"),
                error: Some(e.to_string()),
            }),
        }
    }
}

/// Port index entries whose record is gone (a teardown killed between
/// removing its record and its entries). Young entries are left alone: one
/// may belong to a setup of the same id (a CNI attachment's) that is
/// writing its record again.
pub(super) fn port_index(paths: &Paths, store: &crate::state::store::Store, dry_run: bool, report: &mut Vec<Action>) {
    use crate::state::store::StoreError;
    let index = crate::state::port_index::PortIndex::new(&paths.run_dir);
    for (slot, id) in index.older_than(std::time::Duration::from_secs(10)) {
        match store.record(&id) {
            Err(StoreError::ReadRecord { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            _ => continue,
        }
        let error = if dry_run { None } else { index.remove_entry(&slot, &id).err().map(|e| e.to_string()) };
        report.push(Action { run: id, what: format!("port index entry {slot}"), error });
    }
}

/// A record path that is a link or not a regular file: remove the entry
/// itself (never what it points to; the directory is ours and private).
pub(super) fn planted_record(path: &Path, dry_run: bool) -> Option<Action> {
    let meta = fs::symlink_metadata(path).ok()?;
    if meta.is_file() {
        return None;
    }
    let error = if dry_run { None } else { fs::remove_file(path).err().map(|e| e.to_string()) };
    let what = if meta.file_type().is_symlink() {
        "symbolic link in place of a record (not followed)"
    } else {
        "non-file in place of a record"
    };
    Some(Action { run: path.display().to_string(), what: what.into(), error })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_file_names_yield_their_writer_pid() {
        assert_eq!(tmp_writer(".abc123.4242.tmp"), Some(4242));
        assert_eq!(tmp_writer(".web.17.tmp"), Some(17));
        assert_eq!(tmp_writer(".pelagos0.json.tmp"), None);
        assert_eq!(tmp_writer("abc.json"), None);
        assert_eq!(tmp_writer(".x.tmp"), None);
    }
}

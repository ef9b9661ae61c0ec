//! Who uses the holder: it is started by the first run that needs it,
//! counted by the live records that name it (a record whose owner died
//! does not count: liveness, not a counter), and stopped when the last of
//! them leaves. Every decision is taken under the holder's lock, and a run
//! holds it from finding the holder running until its record names it.

use super::daemon::{StartConfig, start};
use super::{HolderDir, HolderError, HolderState};
use crate::host::procfs::ProcessId;
use crate::state::paths::Paths;
use crate::state::record::Resource;
use crate::state::store::Store;
use nix::fcntl::Flock;
use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

/// The running holder, with its lock held (until the caller's record names it).
#[derive(Debug)]
pub struct Ensured {
    /// What runs.
    pub state: HolderState,
    /// This call started it.
    pub started: bool,
    /// The holder's lock.
    pub lock: Flock<File>,
    /// Runs and attachments of a dead holder given their network back in
    /// the new one, and those that could not be.
    pub reattached: super::orphans::Reattached,
}

/// Make sure the user's holder runs: the one running, or a new one (after
/// clearing what a dead one left). A new one is built in the user
/// namespace the dead one's runs keep alive, and gives them their network
/// back (same address) through [`super::orphans`].
pub fn ensure(cfg: &StartConfig) -> Result<Ensured, HolderError> {
    let dir = HolderDir::new(&cfg.paths.run_dir);
    let lock = dir.lock()?;
    let proc_root = &cfg.paths.proc_root;
    if let Some(state) = dir.read()? {
        if let Some(state) = settled(&dir, state, proc_root) {
            return Ok(Ensured { state, started: false, lock, reattached: Default::default() });
        }
        clear(&dir, proc_root)?;
    }
    let orphans = super::orphans::find(&cfg.paths);
    let mut cfg = cfg.clone();
    // Their user namespace, opened when they were found.
    cfg.adopt = orphans.first().map(|o| std::sync::Arc::clone(&o.userns_fd));
    crate::fault::point("holder.start");
    let state = start(&cfg)?;
    crate::fault::point("holder.started");
    let reattached = super::orphans::reattach(&cfg.paths, &state, &orphans);
    Ok(Ensured { state, started: true, lock, reattached })
}

/// A live supervisor's state once its holder process runs (it replaces a
/// dead one within moments), or `None` when the holder is gone.
fn settled(dir: &HolderDir, mut state: HolderState, proc_root: &Path) -> Option<HolderState> {
    let deadline = Instant::now() + Duration::from_secs(2);
    while state.supervisor.is_alive(proc_root) {
        if state.holder.is_alive(proc_root) {
            return Some(state);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
        state = dir.read().ok().flatten()?;
    }
    None
}

/// For `doctor`: whether the holder runs, its processes, what it maps.
pub fn describe(paths: &Paths, mapping: &super::idmap::IdMapping) -> String {
    let dir = HolderDir::new(&paths.run_dir);
    match dir.read() {
        Ok(Some(s)) if s.alive(&paths.proc_root) => format!(
            "running: supervisor {}, holder {}, pasta {}, name server {} (pasta restarted {} times, holder {} \
             times); maps {}",
            s.supervisor.pid,
            s.holder.pid,
            s.pasta.map_or_else(|| "restarting".to_owned(), |p| p.pid.to_string()),
            s.names.map_or_else(|| "restarting".to_owned(), |p| p.pid.to_string()),
            s.pasta_restarts,
            s.holder_restarts,
            s.mapping.describe()
        ),
        Ok(Some(_)) => "dead (its leftovers go with the next run or `gc`)".into(),
        Ok(None) => format!(
            "not running (the first `run --network bridge:NAME` starts it, the last one leaving stops it); would map {}",
            mapping.describe()
        ),
        Err(e) => crate::flow::error_chain(&e),
    }
}

/// Whether a live record other than `except` uses the holder.
pub fn in_use(paths: &Paths, except: Option<&str>) -> bool {
    let euid = nix::unistd::geteuid().as_raw();
    let Ok(Some(store)) = Store::open_existing(&paths.run_dir, euid) else { return false };
    let Ok(records) = store.records() else { return true };
    records.into_iter().flatten().any(|r| {
        Some(r.id.as_str()) != except
            && r.resources.iter().any(|res| matches!(res, Resource::Holder { .. }))
            && r.alive(&paths.proc_root)
    })
}

/// The record `id` leaves the holder: stop it when no other live record
/// uses it. Returns whether it was stopped.
pub fn release(paths: &Paths, id: &str) -> Result<bool, HolderError> {
    let dir = HolderDir::new(&paths.run_dir);
    if dir.read()?.is_none() {
        return Ok(false);
    }
    let _lock = dir.lock()?;
    if in_use(paths, Some(id)) {
        return Ok(false);
    }
    crate::fault::point("holder.stop");
    clear(&dir, &paths.proc_root)?;
    Ok(true)
}

/// `gc`: stop a holder nobody uses, clear a dead one's leftovers. Returns
/// what was done, for the report.
pub fn collect(paths: &Paths, dry_run: bool) -> Result<Option<String>, HolderError> {
    let dir = HolderDir::new(&paths.run_dir);
    let Some(state) = dir.read()? else { return Ok(None) };
    let _lock = dir.lock()?;
    let what = match (state.alive(&paths.proc_root), in_use(paths, None)) {
        (true, true) => return Ok(None),
        (true, false) => "unused network holder",
        (false, _) => "dead network holder",
    };
    if dry_run {
        return Ok(Some(what.to_owned()));
    }
    clear(&dir, &paths.proc_root)?;
    drop(_lock);
    // Runs the dead holder left without a network get it back from a new one.
    let Some(cfg) = super::orphans::rebuild_config(paths) else { return Ok(Some(what.to_owned())) };
    let ensured = ensure(&cfg)?;
    let back = &ensured.reattached;
    let failed: Vec<String> =
        back.failed.iter().map(|(id, e)| format!("{id}: {}", crate::flow::error_chain(e))).collect();
    Ok(Some(format!(
        "{what} (rebuilt: {} runs and {} attachments given their network back, {} could not be{}{})",
        back.runs,
        back.attachments,
        failed.len(),
        if failed.is_empty() { "" } else { ": " },
        failed.join("; ")
    )))
}

/// Stop every process of the holder (supervisor first: its children die
/// with it) and wait until they are gone; remove the state file.
fn clear(dir: &HolderDir, proc_root: &Path) -> Result<(), HolderError> {
    if let Some(state) = dir.read()? {
        let all: Vec<ProcessId> =
            [Some(state.supervisor), Some(state.holder), state.pasta, state.names].into_iter().flatten().collect();
        signal(&state.supervisor, nix::sys::signal::Signal::SIGTERM, proc_root);
        if !wait_gone(&all, proc_root, Duration::from_secs(3)) {
            for p in &all {
                signal(p, nix::sys::signal::Signal::SIGKILL, proc_root);
            }
            wait_gone(&all, proc_root, Duration::from_secs(2));
        }
    }
    dir.remove()
}

fn signal(p: &ProcessId, sig: nix::sys::signal::Signal, proc_root: &Path) {
    if p.is_here(proc_root) && p.is_alive(proc_root) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid as i32), sig);
    }
}

fn wait_gone(all: &[ProcessId], proc_root: &Path, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut pause = Duration::from_micros(200);
    while all.iter().any(|p| p.is_alive(proc_root)) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
    true
}

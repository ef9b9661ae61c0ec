//! Removing a bridge network with containers still on it (`network rm
//! -f`): what is attached is stopped or detached first, then the network
//! goes the ordinary way ([`crate::bridge::manage::remove_network`], which
//! refuses while anything is attached).
//!
//! A run is stopped through its owner process (SIGTERM, which tears its
//! setup down; SIGKILL after the grace period; then `gc`). An attachment
//! that outlives the process that set it up is detached from its record.
//! A CNI attachment belongs to its container runtime and is left alone, so
//! the removal is refused while one exists.

use super::attach::detach;
use crate::bridge::manage::{self, Attachment, ManageError};
use crate::helpers::detached::signal_process;
use crate::model::ifname::NetworkName;
use crate::state::paths::Paths;
use crate::state::record::{Phase, RecordKind};
use crate::state::store::Store;
use std::time::{Duration, Instant};

/// What to do with what is attached to a network being removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InUse {
    /// Refuse ([`ManageError::InUse`]).
    Refuse,
    /// Stop the runs (SIGTERM to each run's owner; SIGKILL after `grace`)
    /// and detach the attachments, then remove.
    Stop {
        /// How long the runs get to stop before SIGKILL.
        grace: Duration,
    },
}

/// Remove network `name` (see the module docs).
pub fn remove_network(paths: &Paths, name: &NetworkName, in_use: InUse) -> Result<(), ManageError> {
    if let InUse::Stop { grace } = in_use {
        manage::removable(paths, name)?;
        let users = manage::attachments(paths, name.as_str())?;
        if !users.is_empty() {
            stop_users(paths, name.as_str(), &users, grace)?;
        }
    }
    manage::remove_network_with(paths, name, side())
}

/// Where this caller's networks live: the host (root) or the user's
/// network holder, where a network's bridge and table exist only while
/// the holder runs.
pub fn side() -> manage::RemoveSide<'static> {
    if nix::unistd::geteuid().is_root() { &manage::remove_host_side } else { &remove_in_holder }
}

fn remove_in_holder(paths: &Paths, def: &crate::bridge::network::NetworkDef) -> Result<(), ManageError> {
    let dir = crate::holder::HolderDir::new(&paths.run_dir);
    let boxed = |e: crate::holder::HolderError| ManageError::Rootless(Box::new(e));
    let _lock = dir.lock().map_err(boxed)?;
    match dir.read().map_err(boxed)? {
        Some(state) if state.alive(&paths.proc_root) => {
            crate::holder::network::remove(paths, &state, def).map_err(boxed)
        }
        _ => Ok(()),
    }
}

/// Detach the attachments among `users`, stop the runs, collect what the
/// stopped runs left.
fn stop_users(paths: &Paths, network: &str, users: &[Attachment], grace: Duration) -> Result<(), ManageError> {
    let store = Store::open_existing(&paths.run_dir, nix::unistd::geteuid().as_raw()).ok().flatten();
    let mut runs = Vec::new();
    for a in users {
        let record = store.as_ref().and_then(|s| s.record(&a.id).ok());
        match record {
            Some(r) if r.kind == RecordKind::Attachment && r.phase == Phase::Ready => {
                if let Err(e) = detach(paths, &a.id) {
                    log::warn!("detaching {} from network {network}: {e}", a.id);
                }
            }
            _ if a.owner.is_alive(&paths.proc_root) => runs.push(a.clone()),
            _ => {} // a CNI attachment, or one whose owner is gone (gc's)
        }
    }
    let alive = || runs.iter().filter(|a| a.owner.is_alive(&paths.proc_root)).cloned().collect::<Vec<_>>();
    let signal_all = |sig| {
        for a in alive() {
            let _ = signal_process(a.owner, &paths.proc_root, sig);
        }
    };
    let wait = |limit: Duration| {
        let deadline = Instant::now() + limit;
        while !alive().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    signal_all(libc::SIGTERM);
    wait(grace);
    signal_all(libc::SIGKILL);
    wait(Duration::from_secs(5));
    let left = alive();
    if !left.is_empty() {
        return Err(ManageError::StopTimedOut { network: network.to_owned(), users: left, waited: grace });
    }
    if let Err(e) = super::gc::gc(paths, false) {
        log::warn!("collecting the stopped runs of network {network}: {e}");
    }
    Ok(())
}

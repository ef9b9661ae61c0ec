//! Runs a dead holder left behind: their processes live on, in namespaces
//! of the dead holder's user namespace (which they keep alive), but their
//! veth pairs died with its network namespace. A new holder is built in
//! that same user namespace ([`super::daemon::StartConfig::adopt`]), so it
//! may give each of them a veth pair again, with the address it leased.

use super::daemon::StartConfig;
use super::network::{AttachSpec, in_holder};
use super::{HolderError, HolderState};
use crate::bridge::network::NetworkStore;
use crate::model::ifname::{IfName, NetworkName, veth_name};
use crate::state::paths::Paths;
use crate::state::record::{ProcessRole, Resource};
use crate::state::store::Store;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A live run of a dead holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    /// Its record's id.
    pub id: String,
    /// Its command's pid.
    pub pid: u32,
    /// Its network.
    pub network: String,
    /// Its leased address.
    pub address: Ipv4Addr,
    /// `/proc/<pid>/ns/user`.
    pub userns: PathBuf,
}

/// The live runs on a holder network whose command runs, among the
/// records (call only while no holder runs: then every one lost its holder).
/// Those of the first one's user namespace come first; runs of another
/// (an older holder's) cannot be reached and are left out.
pub fn find(paths: &Paths) -> Vec<Orphan> {
    let euid = nix::unistd::geteuid().as_raw();
    let Ok(Some(store)) = Store::open_existing(&paths.run_dir, euid) else { return Vec::new() };
    let Ok(records) = store.records() else { return Vec::new() };
    let mut found: Vec<Orphan> = records
        .into_iter()
        .flatten()
        .filter(|r| r.alive(&paths.proc_root) && r.resources.iter().any(|x| matches!(x, Resource::Holder { .. })))
        .filter_map(|r| {
            let (network, address) = r.lease()?;
            let cmd = r.processes(ProcessRole::Command).find(|p| p.is_here(&paths.proc_root) && p.is_alive(&paths.proc_root))?;
            Some(Orphan {
                id: r.id.clone(),
                pid: cmd.pid,
                network: network.to_owned(),
                address,
                userns: paths.proc_pid(cmd.pid, "ns/user"),
            })
        })
        .collect();
    let ino = |p: &Path| crate::state::record::NsId::of(p).ok();
    if let Some(first) = found.first().and_then(|o| ino(&o.userns)) {
        found.retain(|o| ino(&o.userns) == Some(first));
    }
    found
}

/// Give each orphan a veth pair on its network in the holder `state`, with
/// its address. Returns how many were, and why the others were not.
pub fn reattach(paths: &Paths, state: &HolderState, orphans: &[Orphan]) -> (usize, Vec<(String, HolderError)>) {
    let mut done = 0;
    let mut failed = Vec::new();
    for o in orphans {
        match reattach_one(paths, state, o) {
            Ok(()) => done += 1,
            Err(e) => failed.push((o.id.clone(), e)),
        }
    }
    (done, failed)
}

fn reattach_one(paths: &Paths, state: &HolderState, o: &Orphan) -> Result<(), HolderError> {
    let inside = |message: String| HolderError::Inside { op: "find the run's network", message };
    let name = NetworkName::new(&o.network).map_err(|e| inside(e.to_string()))?;
    let def = NetworkStore::new(&paths.config_dir).load(&name).map_err(|e| inside(crate::flow::error_chain(&e)))?;
    let def = in_holder(&def);
    let path = paths.proc_pid(o.pid, "ns/net");
    let netns = std::fs::File::open(&path).map_err(|source| HolderError::OpenNamespace { path, source })?;
    let veth = veth_name(&o.id);
    let peer = IfName::new("eth0").expect("valid interface name");
    let spec = AttachSpec { def: &def, veth: &veth, peer: &peer, address: o.address, id: &o.id, replace: true };
    super::network::attach(paths, state, &spec, netns.as_fd())
}

/// What `gc` starts a holder with to give orphans their network back
/// (`None` when there are none, or no pasta to start one with).
pub fn rebuild_config(paths: &Paths) -> Option<StartConfig> {
    let orphans = find(paths);
    let first = orphans.first()?;
    let path_env = std::env::var_os("PATH");
    let pasta = crate::host::path::find_executable(
        path_env.as_deref(),
        "pasta".as_ref(),
        crate::host::path::Entries::Absolute,
    )?;
    let (uid, gid) = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
    let mapping = super::idmap::for_user(Path::new("/etc"), path_env.as_deref(), uid, gid);
    Some(StartConfig {
        paths: paths.clone(),
        pasta,
        mapping,
        timeout: Duration::from_secs(10),
        adopt: Some(first.userns.clone()),
    })
}

//! Runs and attachments a dead holder left behind: their namespaces live
//! on (a run's command, or whatever anchors an attachment, keeps them), and
//! so does the dead holder's user namespace that owns them, but their veth
//! pairs died with its network namespace. A new holder is built in that
//! same user namespace ([`super::daemon::StartConfig::adopt`]), so it may
//! give each of them a veth pair again, with the address it leased.

use super::daemon::StartConfig;
use super::network::{AttachSpec, in_holder};
use super::{HolderError, HolderState};
use crate::bridge::network::NetworkStore;
use crate::model::ifname::{IfName, NetworkName, veth_name};
use crate::state::paths::Paths;
use crate::state::record::{NsId, Phase, ProcessRole, Record, RecordKind, Resource};
use crate::state::store::Store;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A live run or attachment of a dead holder.
#[derive(Debug, Clone)]
pub struct Orphan {
    /// Its record's id.
    pub id: String,
    /// A run or an attachment.
    pub kind: RecordKind,
    /// Its network.
    pub network: String,
    /// Its leased address.
    pub address: Ipv4Addr,
    /// Its network namespace: `/proc/<command>/ns/net` of a run, the
    /// namespace an attachment was given.
    pub netns: PathBuf,
    /// The user namespace owning that network namespace: its identity.
    pub userns: NsId,
    /// The same user namespace, open (what a new holder adopts; held, it
    /// cannot go away in between).
    pub userns_fd: Arc<OwnedFd>,
}

/// How many orphans were given their network back, and why the others were not.
#[derive(Debug, Default)]
pub struct Reattached {
    /// Runs given their network back.
    pub runs: usize,
    /// Attachments given their network back.
    pub attachments: usize,
    /// Those that could not be (record id, why).
    pub failed: Vec<(String, HolderError)>,
}

/// The live runs (whose command runs) and attachments (whose namespace is
/// still the one given) on a holder network, among the records (call only
/// while no holder runs: then every one lost its holder). Those of the
/// first one's user namespace come first; those of another (an older
/// holder's) cannot be reached and are left out.
pub fn find(paths: &Paths) -> Vec<Orphan> {
    let euid = nix::unistd::geteuid().as_raw();
    let Ok(Some(store)) = Store::open_existing(&paths.run_dir, euid) else { return Vec::new() };
    let Ok(records) = store.records() else { return Vec::new() };
    let mut found: Vec<Orphan> = records
        .into_iter()
        .flatten()
        .filter(|r| r.alive(&paths.proc_root) && r.resources.iter().any(|x| matches!(x, Resource::Holder { .. })))
        .filter_map(|r| orphan(paths, &r))
        .collect();
    if let Some(first) = found.first().map(|o| o.userns) {
        found.retain(|o| o.userns == first);
    }
    found
}

/// The orphan a live record of the holder is, when its namespace can be found.
fn orphan(paths: &Paths, r: &Record) -> Option<Orphan> {
    let (network, address) = r.lease()?;
    let netns = match r.kind {
        RecordKind::Attachment => {
            let target = r.target.as_ref().filter(|_| r.phase == Phase::Ready)?;
            // The path given still names the namespace attached.
            (NsId::of(&target.netns).ok()? == target.ns).then(|| target.netns.clone())?
        }
        _ => {
            let cmd = r
                .processes(ProcessRole::Command)
                .find(|p| p.is_here(&paths.proc_root) && p.is_alive(&paths.proc_root))?;
            paths.proc_pid(cmd.pid, "ns/net")
        }
    };
    let file = std::fs::File::open(&netns).ok()?;
    let userns_fd = super::network::owner(file.as_fd()).ok()?;
    let userns = NsId::of_file(&userns_fd).ok()?;
    let userns_fd = Arc::new(userns_fd);
    Some(Orphan { id: r.id.clone(), kind: r.kind, network: network.to_owned(), address, netns, userns, userns_fd })
}

/// Give each orphan a veth pair on its network in the holder `state`, with
/// its address.
pub fn reattach(paths: &Paths, state: &HolderState, orphans: &[Orphan]) -> Reattached {
    let mut done = Reattached::default();
    for o in orphans {
        match reattach_one(paths, state, o) {
            Ok(()) if o.kind == RecordKind::Attachment => done.attachments += 1,
            Ok(()) => done.runs += 1,
            Err(e) => done.failed.push((o.id.clone(), e)),
        }
    }
    done
}

fn reattach_one(paths: &Paths, state: &HolderState, o: &Orphan) -> Result<(), HolderError> {
    let inside = |message: String| HolderError::Inside { op: "find the run's network", message };
    let name = NetworkName::new(&o.network).map_err(|e| inside(e.to_string()))?;
    let def = NetworkStore::new(&paths.config_dir).load(&name).map_err(|e| inside(crate::flow::error_chain(&e)))?;
    let def = in_holder(&def);
    let netns = std::fs::File::open(&o.netns)
        .map_err(|source| HolderError::OpenNamespace { path: o.netns.clone(), source })?;
    let veth = veth_name(&o.id);
    let peer = IfName::new("eth0").expect("valid interface name");
    let spec = AttachSpec { def: &def, veth: &veth, peer: &peer, address: o.address, id: &o.id, replace: true };
    super::network::attach(paths, state, &spec, netns.as_fd())
}

/// What `gc` starts a holder with to give orphans their network back
/// (`None` when there are none, or no pasta to start one with).
pub fn rebuild_config(paths: &Paths) -> Option<StartConfig> {
    find(paths).first()?;
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
        // The orphans' user namespace, which `usage::ensure` finds again.
        adopt: None,
    })
}

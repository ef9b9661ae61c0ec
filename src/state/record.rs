//! What a run or an attachment created, as data: the [`Record`] written to
//! the runtime directory, and each [`Resource`] in it.
//!
//! A record is appended to as the setup goes, so it always names everything
//! that may exist: a resource whose name is known in advance (a netns name,
//! forwards, a helper's socket or log) is recorded before it is created, a
//! process right after it is forked and before it is let run. Undoing a
//! record walks its resources backwards; every undo tolerates "already
//! gone", so a resource recorded but never created costs nothing.
//!
//! Records are plain data: this module knows nothing of how resources are
//! made or removed (that is the flow's one undo function), so anything
//! that reads records (gc, detach, a runtime after a crash) needs only this.

use crate::host::procfs::ProcessId;
use crate::model::mode::NetworkMode;
use crate::model::port::{Forward, PortMapping};
use crate::model::run_name::RunName;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The record layout this build writes; records of other layouts are
/// refused as corrupted (runtime state does not survive a reboot, and gc
/// removes what it cannot read).
pub const RECORD_FORMAT: u32 = 2;

/// Everything one run or attachment created, keyed by its id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// Layout version ([`RECORD_FORMAT`]).
    pub format: u32,
    /// Random id (12 hex digits).
    pub id: String,
    /// A run (lives as long as its owner) or an attachment (lives as long
    /// as its namespace).
    pub kind: RecordKind,
    /// The process setting it up, running it, or tearing it down.
    pub owner: ProcessId,
    /// Where in its life it is.
    pub phase: Phase,
    /// What keeps it alive once ready.
    pub anchor: Anchor,
    /// The network mode.
    pub mode: NetworkMode,
    /// The name it goes by on its network (`--name`), which other runs on
    /// the network resolve (as they resolve its id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<RunName>,
    /// The namespace networked, when it existed before (attach, `ns:PATH`).
    #[serde(default)]
    pub target: Option<TargetRecord>,
    /// Published ports, host side resolved.
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// How the mode was chosen (`auto` or a fallback policy), degraded or not.
    #[serde(default)]
    pub selection: Option<Selection>,
    /// What was created, in order.
    #[serde(default)]
    pub resources: Vec<Resource>,
}

/// A run or an attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// `run`: the owner forked the command's namespace and tears it down.
    Run,
    /// `attach`: a namespace someone else made, networked until `detach`.
    Attachment,
}

/// Where a record is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Being set up by its owner; dead when the owner is.
    Setup,
    /// Set up; alive as long as its [`Anchor`].
    Ready,
    /// Being torn down by its owner; dead (and finished by gc) when the owner is.
    Teardown,
}

/// What a ready record lives by.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Anchor {
    /// Its owner process (runs; library attachments that die with their caller).
    Owner,
    /// The namespace it networks: the process it was attached through, or
    /// the bind mount it was attached by (the same namespace file).
    Namespace {
        /// The process whose `/proc/<pid>/ns/net` was given.
        #[serde(default)]
        process: Option<ProcessId>,
        /// The bind mount that was given.
        #[serde(default)]
        mount: Option<MountAnchor>,
    },
    /// A container runtime, through the CNI plugin: the attachment lives
    /// until the runtime's `DEL`, or a `GC` whose valid list leaves it out
    /// (the plugin exits after every call; plain `gc` leaves it alone).
    Runtime {
        /// `CNI_CONTAINERID`.
        container_id: String,
        /// `CNI_IFNAME`.
        ifname: String,
    },
}

/// A bind-mounted namespace file, identified by what `stat` shows of it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MountAnchor {
    /// The mount point.
    pub path: PathBuf,
    /// The namespace it showed.
    pub ns: NsId,
}

/// A namespace's identity: device and inode of its nsfs file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct NsId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

impl NsId {
    /// The identity of the namespace file at `path` (following it, as `stat` does).
    pub fn of(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)?;
        Ok(Self { dev: meta.dev(), ino: meta.ino() })
    }

    /// The identity of the namespace an open nsfs descriptor is.
    pub fn of_file(fd: impl std::os::fd::AsFd) -> std::io::Result<Self> {
        let st = nix::sys::stat::fstat(fd)?;
        Ok(Self { dev: st.st_dev as u64, ino: st.st_ino as u64 })
    }
}

/// The namespace a record networks, when it was given rather than made.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TargetRecord {
    /// The network namespace path as given.
    pub netns: PathBuf,
    /// The user namespace path as given, if one was.
    #[serde(default)]
    pub userns: Option<PathBuf>,
    /// Its identity, to find other records of the same namespace.
    pub ns: NsId,
}

/// The selection ladder's verdict, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Selection {
    /// Why this mode.
    pub reason: String,
    /// The network falls short of what was asked.
    pub degraded: bool,
    /// The warning printed, if any.
    pub warning: Option<String>,
}

/// What a process is to its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessRole {
    /// The command's process (it holds the run's namespaces).
    Command,
    /// pasta.
    Pasta,
    /// slirp4netns.
    Slirp4netns,
    /// The process holding a detached attachment's port relay.
    Relay,
}

impl ProcessRole {
    /// Name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Command => "command",
            Self::Pasta => "pasta",
            Self::Slirp4netns => "slirp4netns",
            Self::Relay => "port relay",
        }
    }
}

/// One thing a run or an attachment created.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Resource {
    /// A process it started.
    Process {
        /// What the process is.
        role: ProcessRole,
        /// pid and start time.
        process: ProcessId,
    },
    /// A named network namespace (bind mount) it created.
    NetnsName {
        /// The mount point.
        path: PathBuf,
    },
    /// An address leased on a bridge network.
    Lease {
        /// Network name.
        network: String,
        /// The address.
        address: Ipv4Addr,
        /// The lease's holder id.
        holder: String,
    },
    /// The host end of a veth pair in a namespace it did not create (a
    /// namespace it created takes its veth pair with it).
    Veth {
        /// Host-side interface name.
        name: String,
    },
    /// The holder's end of a veth pair into a namespace it did not create
    /// (an attachment to a rootless network), removed from inside the holder.
    HolderVeth {
        /// Holder-side interface name.
        name: String,
    },
    /// Forward elements in a bridge network's nftables table.
    Forwards {
        /// Network name.
        network: String,
        /// The elements, exactly as added.
        forwards: Vec<Forward>,
    },
    /// A file it created (a helper's API socket).
    File {
        /// The path.
        path: PathBuf,
    },
    /// The output file of a helper that outlives its starter (read into
    /// the teardown's report, then removed).
    Log {
        /// The path.
        path: PathBuf,
        /// Whose output.
        of: ProcessRole,
    },
    /// The DNS forwarder (a thread of the process that owns the run; its
    /// sockets close with it).
    Dns,
    /// The user's holder of rootless networks is in use by this record
    /// (`id`): undoing it stops the holder when no other live record uses it.
    Holder {
        /// The record's id.
        id: String,
    },
    /// An address a delegated IPAM plugin gave (CNI `ipam`): undone by
    /// running the plugin's `DEL` with the environment and configuration
    /// of the `ADD`.
    Ipam {
        /// The plugin's binary.
        plugin: PathBuf,
        /// The address.
        address: Ipv4Addr,
        /// `CNI_*` variables of the `ADD` (name, value).
        env: Vec<(String, String)>,
        /// The network configuration of the `ADD`.
        config: String,
    },
    /// The accelerator's supervisor (a thread of the process that owns the
    /// run; when it is gone, the command's intercepted calls fail with
    /// `ENOSYS` and its switched sockets stay as they are).
    Accel,
    /// The builtin port driver: listeners on the host (closed with the
    /// process holding them) and the socket factory inside the namespace
    /// (rootless; it exits when the relay closes its control socket).
    Relay {
        /// Listening addresses (`ADDR:PORT/PROTO`).
        listeners: Vec<String>,
        /// The socket factory, when one was forked.
        #[serde(default)]
        factory: Option<ProcessId>,
    },
}

impl Anchor {
    /// Whether what it names still exists (`None` for [`Anchor::Owner`]:
    /// that is the owner's liveness).
    pub fn alive(&self, proc_root: &Path) -> Option<bool> {
        match self {
            Anchor::Owner => None,
            Anchor::Runtime { .. } => Some(true),
            Anchor::Namespace { process, mount } => {
                let process_ok = process.is_none_or(|p| p.is_alive(proc_root));
                let mount_ok = mount.as_ref().is_none_or(|m| NsId::of(&m.path).is_ok_and(|id| id == m.ns));
                Some(process_ok && mount_ok)
            }
        }
    }
}

/// What a record's liveness ([`Record::alive`]) comes down to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness<'a> {
    /// Alive as long as the record exists (a runtime's attachment).
    Always,
    /// Alive while this process runs.
    Process(&'a ProcessId),
    /// More than a process: a namespace's bind mount.
    More,
}

impl Record {
    /// Whether it is alive: being set up or torn down by a live owner, or
    /// ready with its anchor alive (the owner for a run, the namespace for
    /// an attachment). `gc` undoes what is not.
    pub fn alive(&self, proc_root: &Path) -> bool {
        match self.phase {
            Phase::Setup | Phase::Teardown => self.owner.is_alive(proc_root),
            Phase::Ready => self.anchor.alive(proc_root).unwrap_or_else(|| self.owner.is_alive(proc_root)),
        }
    }

    /// What [`Record::alive`] comes down to, for a caller that checks the
    /// same record many times (a name server holding a pidfd of the process).
    pub fn liveness(&self) -> Liveness<'_> {
        match (self.phase, &self.anchor) {
            (Phase::Setup | Phase::Teardown, _) | (Phase::Ready, Anchor::Owner) => Liveness::Process(&self.owner),
            (Phase::Ready, Anchor::Runtime { .. }) => Liveness::Always,
            (Phase::Ready, Anchor::Namespace { process, mount: None }) => {
                process.as_ref().map_or(Liveness::Always, Liveness::Process)
            }
            (Phase::Ready, Anchor::Namespace { .. }) => Liveness::More,
        }
    }

    /// The leased address on a bridge network, with the network's name
    /// (an address a delegated IPAM plugin gave counts).
    pub fn lease(&self) -> Option<(&str, Ipv4Addr)> {
        let network = match &self.mode {
            NetworkMode::Bridge(Some(n)) => n.as_str(),
            _ => crate::bridge::network::DEFAULT_NETWORK,
        };
        self.resources.iter().find_map(|r| match r {
            Resource::Lease { network, address, .. } => Some((network.as_str(), *address)),
            Resource::Ipam { address, .. } => Some((network, *address)),
            _ => None,
        })
    }

    /// The CNI attachment it is (container id, ifname), when a runtime
    /// made it through the CNI plugin.
    pub fn cni(&self) -> Option<(&str, &str)> {
        match &self.anchor {
            Anchor::Runtime { container_id, ifname } => Some((container_id, ifname)),
            _ => None,
        }
    }

    /// The shared network it is on, by name: its lease's, or (before the
    /// lease) the bridge network its mode names. `None` for a mode whose
    /// network is its own (pasta, slirp4netns, loopback, host, `ns:`).
    pub fn network(&self) -> Option<&str> {
        match (self.lease(), &self.mode) {
            (Some((network, _)), _) => Some(network),
            (None, NetworkMode::Bridge(Some(name))) => Some(name.as_str()),
            (None, NetworkMode::Bridge(None)) => Some(crate::bridge::network::DEFAULT_NETWORK),
            (None, _) => None,
        }
    }

    /// A new record in the [`Phase::Setup`] phase, with nothing created yet.
    pub fn new(id: String, kind: RecordKind, owner: ProcessId, mode: NetworkMode) -> Self {
        Self {
            format: RECORD_FORMAT,
            id,
            kind,
            owner,
            phase: Phase::Setup,
            anchor: Anchor::Owner,
            mode,
            name: None,
            target: None,
            ports: Vec::new(),
            selection: None,
            resources: Vec::new(),
        }
    }

    /// Every process of one role, in the order recorded.
    pub fn processes(&self, role: ProcessRole) -> impl Iterator<Item = ProcessId> + '_ {
        self.resources.iter().filter_map(move |r| match r {
            Resource::Process { role: r, process } if *r == role => Some(*process),
            _ => None,
        })
    }

    /// The socket factory of the builtin port driver, if one was forked.
    pub fn factory(&self) -> Option<ProcessId> {
        self.resources.iter().find_map(|r| match r {
            Resource::Relay { factory, .. } => *factory,
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_through_json_with_tagged_resources() {
        let mut r =
            Record::new("abc".into(), RecordKind::Attachment, ProcessId { pid: 1, start_time: 2, pid_ns: None }, NetworkMode::Pasta);
        r.anchor = Anchor::Namespace { process: Some(ProcessId { pid: 5, start_time: 6, pid_ns: None }), mount: None };
        r.resources.push(Resource::Process { role: ProcessRole::Pasta, process: ProcessId { pid: 3, start_time: 4, pid_ns: None } });
        r.resources.push(Resource::File { path: "/run/x.log".into() });
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""kind":"process","role":"pasta""#), "{json}");
        assert!(json.contains(r#""anchor":{"by":"namespace""#), "{json}");
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), r);
        assert_eq!(r.processes(ProcessRole::Pasta).count(), 1);
    }
}

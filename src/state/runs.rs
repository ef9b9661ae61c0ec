//! Live runs and attachments as `ps` and `port` show them: a stable summary
//! read from the records, so the CLI and other tools never parse record
//! files (whose format follows the flow) themselves.

use crate::host::procfs::ProcessId;
use crate::model::port::PortMapping;
use crate::state::paths::Paths;
use crate::state::record::{ProcessRole, Record, RecordKind};
use crate::state::store::{Store, StoreError};
use std::net::Ipv4Addr;
use std::path::Path;

/// One live run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RunSummary {
    /// Run id.
    pub id: String,
    /// The name it goes by on its network (`--name`).
    pub name: Option<String>,
    /// Network mode (`pasta`, `bridge:web`, ...).
    pub mode: String,
    /// `run`, `attachment` (a namespace someone else made, networked by
    /// `attach`), or `cni` (a container runtime's, through the CNI plugin).
    pub kind: &'static str,
    /// A CNI attachment's container id and interface (`ID/IFNAME`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The pelagos-net process that owns the run.
    pub owner_pid: u32,
    /// The command's process (it holds the namespace), once started.
    pub pid: Option<u32>,
    /// The bridge network, for bridge runs.
    pub network: Option<String>,
    /// The leased address, for bridge runs.
    pub address: Option<Ipv4Addr>,
    /// Published ports, host side resolved.
    pub ports: Vec<PortMapping>,
    /// When the owner started (seconds since the Unix epoch).
    pub started: Option<u64>,
    /// The command line, when `/proc` shows it.
    pub command: Vec<String>,
}

impl RunSummary {
    fn of(record: &Record, proc_root: &Path) -> Self {
        let holder = record.target.as_ref().and(match &record.anchor {
            crate::state::record::Anchor::Namespace { process, .. } => *process,
            crate::state::record::Anchor::Owner | crate::state::record::Anchor::Runtime { .. } => None,
        });
        // A run's recorded child is its init; the command is the init's child.
        let init = record.processes(ProcessRole::Command).next();
        let pid = match init.filter(|c| c.is_here(proc_root) && c.is_alive(proc_root)) {
            Some(i) => Some(first_child(proc_root, i.pid).unwrap_or(i.pid)),
            None => holder.filter(|h| h.is_here(proc_root) && h.is_alive(proc_root)).map(|h| h.pid),
        };
        let command = pid
            .and_then(|p| std::fs::read(proc_root.join(p.to_string()).join("cmdline")).ok())
            .map(|raw| {
                raw.split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        Self {
            id: record.id.clone(),
            name: record.name.as_ref().map(ToString::to_string),
            mode: record.mode.to_string(),
            kind: match record.kind {
                RecordKind::Run => "run",
                RecordKind::Attachment if record.cni().is_some() => "cni",
                RecordKind::Attachment => "attachment",
            },
            container: record.cni().map(|(c, i)| format!("{c}/{i}")),
            owner_pid: record.owner.pid,
            pid,
            network: record.lease().map(|(n, _)| n.to_owned()),
            address: record.lease().map(|(_, a)| a),
            ports: record.ports.clone(),
            started: started_at(proc_root, record.owner),
            command,
        }
    }
}

/// The first child of `pid` (`/proc/<pid>/task/<pid>/children`).
fn first_child(proc_root: &Path, pid: u32) -> Option<u32> {
    let path = proc_root.join(pid.to_string()).join("task").join(pid.to_string()).join("children");
    std::fs::read_to_string(path).ok()?.split_whitespace().next()?.parse().ok()
}

/// Unix time at which `p` started: boot time plus its start in clock ticks.
fn started_at(proc_root: &Path, p: ProcessId) -> Option<u64> {
    let stat = std::fs::read_to_string(proc_root.join("stat")).ok()?;
    let btime: u64 = stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| btime + p.start_time / hz as u64)
}

/// Every live run and attachment, sorted by id; creates nothing. Records
/// that cannot be read are skipped (`gc` reports them).
pub fn live_runs(paths: &Paths) -> Result<Vec<RunSummary>, StoreError> {
    let Some(store) = Store::open_existing(&paths.run_dir, nix::unistd::geteuid().as_raw())? else {
        return Ok(Vec::new());
    };
    let mut out: Vec<RunSummary> = store
        .records()?
        .into_iter()
        .flatten()
        .filter(|r| r.alive(&paths.proc_root))
        .map(|r| RunSummary::of(&r, &paths.proc_root))
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// The live runs whose id starts with `prefix` (podman accepts any unique prefix).
pub fn find_runs(paths: &Paths, prefix: &str) -> Result<Vec<RunSummary>, StoreError> {
    Ok(live_runs(paths)?.into_iter().filter(|r| !prefix.is_empty() && r.id.starts_with(prefix)).collect())
}

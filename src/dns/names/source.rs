//! [`NetworkNames`]: a network's [`NameTable`] kept fresh from the run
//! records, as the forwarder's [`LocalNames`].
//!
//! Records are the truth: a run's name exists while its record does and
//! its owner (or, for an attachment, its namespace) lives. The table is
//! rebuilt when the records directory changes (an inotify watch on it,
//! [`super::watch`]; without one, its modification time, where a time too
//! recent to trust, as git treats a racy index, makes the next query look
//! again), and every name found is checked live before it is answered, so
//! a run killed without a chance to remove its record stops resolving at
//! once, before `gc` removes the record.
//!
//! A lookup costs one non-blocking `read` of the watch and one `poll` of a
//! pidfd of the record's owner ([`super::live`]); a rebuild reads the
//! records (small files on a tmpfs) and opens pidfds for new owners.
//! Nothing waits on the network.

use super::live::Liveness;
use super::table::{NameEntry, NameTable};
use super::watch::{Seen, Watch};
use crate::dns::forwarder::{LocalAnswer, LocalNames};
use crate::model::cidr::Ipv4Net;
use crate::model::cidr6::Ipv6Net;
use crate::state::record::Record;
use crate::state::store::Store;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// A directory modified less than this long ago may change again within
/// the same timestamp tick: the table built from it is looked at again.
const RACY: Duration = Duration::from_millis(50);

/// Which network, whose records, and who may ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamesScope {
    /// The network's name (as records' leases name it).
    pub network: String,
    /// Only clients in this subnet get the network's names (others are
    /// forwarded as if the names did not exist); `None`: every client.
    pub clients: Option<Ipv4Net>,
    /// A dual-stack network's IPv6 subnet: each run also has the address
    /// at its IPv4 address's offset in it (answered to AAAA queries), and
    /// clients in it get the names too.
    pub subnet6: Option<Ipv6Net>,
    /// The runtime state root holding the records (`Paths::run_dir`).
    pub run_dir: PathBuf,
    /// procfs, for liveness (`Paths::proc_root`).
    pub proc_root: PathBuf,
}

impl NamesScope {
    /// The scope of a bridge network: its name and subnet, the records and
    /// procfs of `paths`.
    pub fn of_network(def: &crate::bridge::network::NetworkDef, paths: &crate::state::paths::Paths) -> Self {
        Self {
            network: def.name.to_string(),
            clients: Some(def.subnet),
            subnet6: def.options.subnet6,
            run_dir: paths.run_dir.clone(),
            proc_root: paths.proc_root.clone(),
        }
    }
}

#[derive(Default)]
struct Cache {
    /// A watch on the records directory (`None`: not available, the
    /// directory's modification time is looked at instead).
    watch: Option<Watch>,
    /// The records directory's modification time when last read (without a watch).
    stamp: Option<SystemTime>,
    /// Read again at the next lookup (without a watch).
    racy: bool,
    table: NameTable,
    /// The records behind the table's entries, by id, with how each one's
    /// liveness is checked.
    records: HashMap<String, (Record, Liveness)>,
}

/// A network's names, from the records under a run directory.
pub struct NetworkNames {
    scope: NamesScope,
    euid: u32,
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for NetworkNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkNames").field("scope", &self.scope).finish_non_exhaustive()
    }
}

impl NetworkNames {
    /// The names of `scope`'s network (records owned by this process's euid).
    pub fn new(scope: NamesScope) -> Self {
        let euid = nix::unistd::geteuid().as_raw();
        Self { cache: Mutex::new(Cache { table: NameTable::new(&scope.network), ..Cache::default() }), scope, euid }
    }

    /// The scope.
    pub fn scope(&self) -> &NamesScope {
        &self.scope
    }

    /// The table as it is now (read again if the records changed), live entries only.
    pub fn table(&self) -> NameTable {
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.refresh(&mut cache);
        let mut table = NameTable::new(&self.scope.network);
        for entry in cache.table.entries() {
            if self.alive(&cache, entry) {
                table.insert(entry.clone());
            }
        }
        table
    }

    fn alive(&self, cache: &Cache, entry: &NameEntry) -> bool {
        cache.records.get(&entry.id).is_some_and(|(r, live)| live.check(r, &self.scope.proc_root))
    }

    fn refresh(&self, cache: &mut Cache) {
        let runs = self.scope.run_dir.join("runs");
        // With a watch on the directory: read again only when it saw a change.
        let mut stamp = None;
        match cache.watch.as_ref().map(Watch::changed) {
            Some(Seen::Nothing) => return,
            Some(Seen::Changed) => {}
            Some(Seen::Lost) => cache.watch = None,
            None => {
                stamp = std::fs::metadata(&runs).and_then(|m| m.modified()).ok();
                if stamp.is_some() && stamp == cache.stamp && !cache.racy {
                    return;
                }
            }
        }
        // Watched before reading: a change made meanwhile is seen next time.
        if cache.watch.is_none() {
            cache.watch = Watch::new(&runs);
        }
        let records: Vec<Record> = match Store::open_existing(&self.scope.run_dir, self.euid) {
            Ok(Some(store)) => store.records().map(|all| all.into_iter().flatten().collect()).unwrap_or_default(),
            Ok(None) => Vec::new(),
            Err(e) => {
                log::debug!("names of {}: {e}", self.scope.network);
                Vec::new()
            }
        };
        // Liveness is checked per answer: build from every record.
        cache.table = NameTable::new(&self.scope.network);
        for record in &records {
            if let Some(mut entry) = NameEntry::of_record(record, &self.scope.network) {
                entry.addresses.extend(self.address6(&entry));
                cache.table.insert(entry);
            }
        }
        // Only the records behind names: a pidfd each, kept from the last
        // reading while it is about the same process.
        let proc_root = &self.scope.proc_root;
        let table = &cache.table;
        let mut before = std::mem::take(&mut cache.records);
        cache.records = records
            .into_iter()
            .filter(|r| table.entries().iter().any(|e| e.id == r.id))
            .map(|r| {
                let live = Liveness::of(&r, proc_root, before.remove(&r.id).map(|(_, l)| l));
                (r.id.clone(), (r, live))
            })
            .collect();
        cache.racy = stamp.is_none_or(|s| SystemTime::now().duration_since(s).map_or(true, |age| age < RACY));
        cache.stamp = stamp;
    }

    fn serves(&self, client: IpAddr) -> bool {
        match (self.scope.clients, client) {
            (None, _) => true,
            (Some(net), IpAddr::V4(v4)) => net.contains(v4),
            (Some(_), IpAddr::V6(v6)) => self.scope.subnet6.is_some_and(|net6| net6.contains(v6)),
        }
    }

    /// The IPv6 address of `entry` on a dual-stack network: the IPv6
    /// subnet plus its IPv4 address's offset (as bridge setup assigns it).
    fn address6(&self, entry: &NameEntry) -> Option<IpAddr> {
        let (net, net6) = (self.scope.clients?, self.scope.subnet6?);
        let v4 = entry.addresses.iter().find_map(|a| match a {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        })?;
        let offset = u32::from(v4).checked_sub(u32::from(net.addr()))?;
        net6.nth(u128::from(offset)).map(IpAddr::V6)
    }
}

impl LocalNames for NetworkNames {
    fn lookup(&self, name: &str) -> Option<Vec<IpAddr>> {
        match self.answer_any(name) {
            LocalAnswer::Addresses(a) => Some(a),
            _ => None,
        }
    }

    fn answer(&self, client: IpAddr, name: &str) -> LocalAnswer {
        if !self.serves(client) {
            return LocalAnswer::Forward;
        }
        self.answer_any(name)
    }
}

impl NetworkNames {
    fn answer_any(&self, name: &str) -> LocalAnswer {
        if !NameTable::may_answer(name) {
            // Most queries: no stat of the runs directory, no record read.
            return LocalAnswer::Forward;
        }
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.refresh(&mut cache);
        let cache = &*cache;
        cache.table.answer(name, |e| self.alive(cache, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::procfs::ProcessId;
    use crate::model::mode::NetworkMode;
    use crate::model::run_name::RunName;
    use crate::state::record::{RecordKind, Resource};
    use std::net::Ipv4Addr;

    fn scope(dir: &std::path::Path, dual_stack: bool) -> NamesScope {
        NamesScope {
            network: "web".into(),
            clients: Some("10.0.0.0/24".parse().unwrap()),
            subnet6: dual_stack.then(|| "fd00:10::/64".parse().unwrap()),
            run_dir: dir.to_owned(),
            proc_root: "/proc".into(),
        }
    }

    fn record(id: &str, name: &str, owner: ProcessId, addr: [u8; 4]) -> Record {
        let mut r = Record::new(id.into(), RecordKind::Run, owner, NetworkMode::Bridge(None));
        r.name = Some(RunName::new(name).unwrap());
        r.resources.push(Resource::Lease { network: "web".into(), address: Ipv4Addr::from(addr), holder: id.into() });
        r
    }

    fn me() -> ProcessId {
        ProcessId::of(std::path::Path::new("/proc"), std::process::id()).unwrap()
    }

    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9));

    #[test]
    fn names_come_and_go_with_records_and_their_owners() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), nix::unistd::geteuid().as_raw()).unwrap();
        let names = NetworkNames::new(scope(dir.path(), false));
        assert_eq!(names.answer(CLIENT, "db"), LocalAnswer::Forward);

        store.write_record(&record("aaaaaaaaaaaa", "db", me(), [10, 0, 0, 2])).unwrap();
        assert_eq!(names.answer(CLIENT, "db"), LocalAnswer::Addresses(vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))]));

        // A dead owner (a start time that is not ours) stops resolving at once.
        let dead = ProcessId { start_time: me().start_time + 1, ..me() };
        store.write_record(&record("bbbbbbbbbbbb", "cache", dead, [10, 0, 0, 3])).unwrap();
        assert_eq!(names.answer(CLIENT, "cache"), LocalAnswer::Forward);
        assert_eq!(names.answer(CLIENT, "cache.dns.pelagos"), LocalAnswer::NoSuchName);
        assert_eq!(names.table().entries().len(), 1);

        store.remove_record("aaaaaaaaaaaa").unwrap();
        assert_eq!(names.answer(CLIENT, "db"), LocalAnswer::Forward);
    }

    #[test]
    fn a_run_whose_owner_exits_stops_resolving_before_its_record_goes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), nix::unistd::geteuid().as_raw()).unwrap();
        let mut owner = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let id = ProcessId::of(std::path::Path::new("/proc"), owner.id()).unwrap();
        store.write_record(&record("aaaaaaaaaaaa", "db", id, [10, 0, 0, 2])).unwrap();
        let names = NetworkNames::new(scope(dir.path(), false));
        assert!(matches!(names.answer(CLIENT, "db"), LocalAnswer::Addresses(_)));
        // The records directory does not change: the owner's exit alone
        // (a zombie not yet reaped) takes the name away.
        owner.kill().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while names.answer(CLIENT, "db") != LocalAnswer::Forward {
            assert!(std::time::Instant::now() < deadline, "the name outlived its owner");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(names.table().entries().is_empty());
        owner.wait().unwrap();
    }

    #[test]
    fn clients_outside_the_network_get_no_names_and_dual_stack_runs_have_both_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), nix::unistd::geteuid().as_raw()).unwrap();
        store.write_record(&record("aaaaaaaaaaaa", "db", me(), [10, 0, 0, 2])).unwrap();
        let names = NetworkNames::new(scope(dir.path(), true));
        let outsider = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 9));
        assert_eq!(names.answer(outsider, "db"), LocalAnswer::Forward);
        assert_eq!(names.answer("fd00:11::9".parse().unwrap(), "db"), LocalAnswer::Forward);
        // Dual stack: the IPv6 address at the IPv4 offset, to either family's clients.
        let both = LocalAnswer::Addresses(vec!["10.0.0.2".parse().unwrap(), "fd00:10::2".parse().unwrap()]);
        assert_eq!(names.answer(CLIENT, "db"), both);
        assert_eq!(names.answer("fd00:10::9".parse().unwrap(), "db"), both);
    }
}

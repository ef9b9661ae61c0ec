//! [`NameTable`]: one network's names, as data. Pure: built from records
//! (or from entries a caller makes), asked with a query name.
//!
//! Every run or attachment on the network contributes its addresses under
//! its id and, when it has one, under its name. A query name matches
//!
//! - `NAME` or `ID` itself;
//! - `NAME.dns.pelagos` or `ID.dns.pelagos` ([`NAMES_DOMAIN`], which runs
//!   get as their first search domain). The table is the authority for
//!   that domain: a name under it that no run has is answered "no such
//!   name" at once, so a resolver walking its search list never waits on
//!   an upstream for it.
//!
//! Anything else is not the table's (forwarded upstream).

use crate::dns::forwarder::LocalAnswer;
use crate::model::run_name::RunName;
use crate::state::record::Record;
use std::collections::HashMap;
use std::net::IpAddr;

/// The domain a network's names live under, besides their bare form.
pub const NAMES_DOMAIN: &str = "dns.pelagos";

/// One run or attachment on a network.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NameEntry {
    /// Its id (it resolves too).
    pub id: String,
    /// Its name, if it has one.
    pub name: Option<RunName>,
    /// Its addresses on the network.
    pub addresses: Vec<IpAddr>,
}

impl NameEntry {
    /// The entry of `record` on `network`: its leased address there, its id
    /// and name. `None` when it has no lease on that network (yet).
    pub fn of_record(record: &Record, network: &str) -> Option<Self> {
        let (net, address) = record.lease()?;
        (net == network).then(|| Self {
            id: record.id.clone(),
            name: record.name.clone(),
            addresses: vec![IpAddr::V4(address)],
        })
    }
}

/// What a query name resolves to in a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved<'a> {
    /// These entries (more than one only if two live runs share a name,
    /// which setup refuses, or a name equals another's id).
    Found(Vec<&'a NameEntry>),
    /// Under [`NAMES_DOMAIN`], and no entry has it.
    NoSuchName,
    /// Not a name of the table's.
    NotOurs,
}

/// One network's names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameTable {
    network: String,
    entries: Vec<NameEntry>,
    /// Lowercase name or id -> indexes into `entries`.
    keys: HashMap<String, Vec<usize>>,
}

impl NameTable {
    /// An empty table for `network`.
    pub fn new(network: &str) -> Self {
        Self { network: network.to_owned(), ..Self::default() }
    }

    /// The table of `network` from `records`, keeping those `alive` says
    /// are (the caller's liveness test: the record's `alive` against a procfs).
    pub fn from_records<'a>(
        network: &str,
        records: impl IntoIterator<Item = &'a Record>,
        mut alive: impl FnMut(&Record) -> bool,
    ) -> Self {
        let mut table = Self::new(network);
        for record in records {
            if let Some(entry) = NameEntry::of_record(record, network)
                && alive(record)
            {
                table.insert(entry);
            }
        }
        table
    }

    /// The network's name.
    pub fn network(&self) -> &str {
        &self.network
    }

    /// Add an entry (a later entry with the same id replaces nothing: both stay).
    pub fn insert(&mut self, entry: NameEntry) {
        let index = self.entries.len();
        let mut keys = vec![entry.id.to_ascii_lowercase()];
        keys.extend(entry.name.as_ref().map(RunName::key));
        keys.dedup();
        // Keys are single labels (run ids are hex, names one DNS label):
        // [`NameTable::may_answer`] relies on it to forward every other
        // dotted name without reading the records.
        for key in keys.into_iter().filter(|k| !k.contains('.')) {
            self.keys.entry(key).or_default().push(index);
        }
        self.entries.push(entry);
    }

    /// Every entry, in insertion order.
    pub fn entries(&self) -> &[NameEntry] {
        &self.entries
    }

    /// The live entry already going by `name`, if any.
    pub fn holder_of(&self, name: &RunName) -> Option<&NameEntry> {
        self.entries.iter().find(|e| e.name.as_ref().is_some_and(|n| n.same(name)))
    }

    /// Whether any table could answer `qname` (lowercase, without the
    /// final dot) itself: a single label (a name or an id) or a name under
    /// [`NAMES_DOMAIN`]. Any other name is forwarded whatever the records
    /// say, so a forwarder asks this before it reads them.
    pub fn may_answer(qname: &str) -> bool {
        !qname.contains('.')
            || qname.strip_suffix(NAMES_DOMAIN).is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
    }

    /// What `qname` (lowercase, without the final dot) resolves to.
    pub fn resolve(&self, qname: &str) -> Resolved<'_> {
        let (label, authoritative) = match qname.strip_suffix(NAMES_DOMAIN) {
            Some("") => return Resolved::NoSuchName,
            Some(rest) => match rest.strip_suffix('.') {
                Some(label) => (label, true),
                // `xdns.pelagos`: another domain.
                None => (qname, false),
            },
            None => (qname, false),
        };
        match self.keys.get(label) {
            Some(found) => Resolved::Found(found.iter().map(|i| &self.entries[*i]).collect()),
            None if authoritative => Resolved::NoSuchName,
            None => Resolved::NotOurs,
        }
    }

    /// The forwarder's answer for `qname`, from the entries `keep` accepts
    /// (a live entry that `keep` refuses is as if absent).
    pub fn answer(&self, qname: &str, mut keep: impl FnMut(&NameEntry) -> bool) -> LocalAnswer {
        let authoritative = qname.ends_with(NAMES_DOMAIN);
        match self.resolve(qname) {
            Resolved::Found(entries) => {
                let mut addrs: Vec<IpAddr> = Vec::new();
                for e in entries.into_iter().filter(|e| keep(e)) {
                    addrs.extend(e.addresses.iter().filter(|a| !addrs.contains(a)).collect::<Vec<_>>());
                }
                match (addrs.is_empty(), authoritative) {
                    (false, _) => LocalAnswer::Addresses(addrs),
                    (true, true) => LocalAnswer::NoSuchName,
                    (true, false) => LocalAnswer::Forward,
                }
            }
            Resolved::NoSuchName => LocalAnswer::NoSuchName,
            Resolved::NotOurs => LocalAnswer::Forward,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::procfs::ProcessId;
    use crate::model::mode::NetworkMode;
    use crate::state::record::{RecordKind, Resource};
    use std::net::Ipv4Addr;

    fn record(id: &str, name: Option<&str>, network: &str, addr: [u8; 4]) -> Record {
        let owner = ProcessId { pid: 1, start_time: 1, pid_ns: None };
        let mut r = Record::new(id.into(), RecordKind::Run, owner, NetworkMode::Bridge(None));
        r.name = name.map(|n| RunName::new(n).unwrap());
        r.resources.push(Resource::Lease { network: network.into(), address: Ipv4Addr::from(addr), holder: id.into() });
        r
    }

    fn addr(a: [u8; 4]) -> LocalAnswer {
        LocalAnswer::Addresses(vec![IpAddr::V4(Ipv4Addr::from(a))])
    }

    #[test]
    fn only_single_labels_and_our_domain_may_be_answered() {
        for ours in ["web", "0123456789ab", "dns.pelagos", "web.dns.pelagos", "a.b.dns.pelagos"] {
            assert!(NameTable::may_answer(ours), "{ours}");
        }
        for other in ["www.example.org", "web.example", "xdns.pelagos", "web.xdns.pelagos", "dns.pelagos.org"] {
            assert!(!NameTable::may_answer(other), "{other}");
        }
        // Whatever a table holds, a name `may_answer` refuses is never its.
        let mut table = NameTable::new("web");
        table.insert(NameEntry::of_record(&record("a.b", Some("srv"), "web", [10, 0, 0, 2]), "web").unwrap());
        assert!(matches!(table.resolve("a.b"), Resolved::NotOurs));
        assert!(matches!(table.resolve("srv"), Resolved::Found(_)));
    }

    #[test]
    fn names_and_ids_of_the_network_resolve_bare_and_under_the_names_domain() {
        let records = [
            record("aaaaaaaaaaaa", Some("DB"), "web", [10, 0, 0, 2]),
            record("bbbbbbbbbbbb", None, "web", [10, 0, 0, 3]),
        ];
        let table = NameTable::from_records("web", &records, |_| true);
        assert_eq!(table.answer("db", |_| true), addr([10, 0, 0, 2]));
        assert_eq!(table.answer("db.dns.pelagos", |_| true), addr([10, 0, 0, 2]));
        assert_eq!(table.answer("aaaaaaaaaaaa", |_| true), addr([10, 0, 0, 2]));
        assert_eq!(table.answer("bbbbbbbbbbbb.dns.pelagos", |_| true), addr([10, 0, 0, 3]));
    }

    #[test]
    fn other_networks_and_dead_records_give_no_names() {
        let records = [
            record("aaaaaaaaaaaa", Some("db"), "other", [10, 1, 0, 2]),
            record("cccccccccccc", Some("cache"), "web", [10, 0, 0, 4]),
        ];
        let table = NameTable::from_records("web", &records, |r| r.id != "cccccccccccc");
        assert!(table.entries().is_empty());
        assert_eq!(table.answer("db", |_| true), LocalAnswer::Forward);
        assert_eq!(table.answer("cache.dns.pelagos", |_| true), LocalAnswer::NoSuchName);
    }

    #[test]
    fn unknown_names_under_the_domain_are_refused_and_others_forwarded() {
        let table =
            NameTable::from_records("web", &[record("aaaaaaaaaaaa", Some("db"), "web", [10, 0, 0, 2])], |_| true);
        assert_eq!(table.answer("nope.dns.pelagos", |_| true), LocalAnswer::NoSuchName);
        assert_eq!(table.answer("dns.pelagos", |_| true), LocalAnswer::NoSuchName);
        assert_eq!(table.answer("a.db.dns.pelagos", |_| true), LocalAnswer::NoSuchName);
        assert_eq!(table.answer("www.example.test", |_| true), LocalAnswer::Forward);
        assert_eq!(table.answer("db.xdns.pelagos", |_| true), LocalAnswer::Forward);
        assert_eq!(table.answer("db.example.test", |_| true), LocalAnswer::Forward);
    }

    #[test]
    fn an_entry_the_caller_refuses_is_absent_and_the_holder_of_a_name_is_found() {
        let table =
            NameTable::from_records("web", &[record("aaaaaaaaaaaa", Some("db"), "web", [10, 0, 0, 2])], |_| true);
        assert_eq!(table.answer("db", |_| false), LocalAnswer::Forward);
        assert_eq!(table.answer("db.dns.pelagos", |_| false), LocalAnswer::NoSuchName);
        assert_eq!(table.holder_of(&RunName::new("Db").unwrap()).map(|e| e.id.as_str()), Some("aaaaaaaaaaaa"));
        assert!(table.holder_of(&RunName::new("cache").unwrap()).is_none());
    }

    #[test]
    fn a_record_without_a_lease_yet_has_no_entry() {
        let owner = ProcessId { pid: 1, start_time: 1, pid_ns: None };
        let r = Record::new("dddddddddddd".into(), RecordKind::Run, owner, NetworkMode::Bridge(None));
        assert!(NameTable::from_records("pelagos0", &[r], |_| true).entries().is_empty());
    }
}

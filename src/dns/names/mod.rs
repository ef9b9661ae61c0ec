//! Names on a shared network: a run's `--name` and its id resolve to its
//! address for every other run on the same network, and for no one else.
//!
//! Three layers, so that every network that has a gateway in some
//! namespace can serve its names the same way (a root bridge network on
//! the host, a rootless network inside a user's holder namespace):
//!
//! - [`NameTable`] (pure): one network's names and ids and their
//!   addresses, built from run records ([`NameTable::from_records`]) or
//!   entries the caller makes ([`NameTable::insert`]); it answers a query
//!   name ([`NameTable::answer`]): bare `NAME`/`ID`, or under
//!   [`NAMES_DOMAIN`], where it is the authority (unknown names: NXDOMAIN
//!   at once, so a search list never waits on an upstream).
//! - [`NetworkNames`]: the table kept fresh from the records under a run
//!   directory ([`NamesScope`]), checked live per answer, answering only
//!   clients inside the network's subnet(s); on a dual-stack network each
//!   run also has its IPv6 address (the IPv6 subnet plus its IPv4 offset). It is a
//!   [`LocalNames`](crate::dns::forwarder::LocalNames), the forwarder's
//!   pluggable table.
//! - [`serve`]: the forwarder ([`crate::dns::forwarder`]) on listeners the
//!   caller binds, answering the network's names and forwarding the rest to
//!   upstream resolvers. In-process, one thread, non-blocking and bounded
//!   ([`Limits`]: a bounded table of queries in flight, a deadline per
//!   upstream attempt; a local name never waits behind a slow upstream).
//!
//! Records are the truth: a name exists while a live run's record on the
//! network carries it (the record's `name` and its lease), so several servers of one network (each root bridge run serves
//! its network's gateway, `SO_REUSEPORT`) answer alike, and names come and
//! go with runs without anyone telling the server.
//!
//! # Serving a network's names
//!
//! ```no_run
//! use pelagos_net::dns::forwarder::{CacheConfig, Limits, Listeners};
//! use pelagos_net::dns::names::{NamesScope, serve};
//! # fn demo(paths: &pelagos_net::Paths) -> Result<(), Box<dyn std::error::Error>> {
//! let scope = NamesScope {
//!     network: "web".into(),                      // as the records' leases name it
//!     clients: Some("10.89.0.0/24".parse()?),     // the network's subnet
//!     subnet6: None,                              // its IPv6 subnet, when dual stack
//!     run_dir: paths.run_dir.clone(),             // where the records are
//!     proc_root: paths.proc_root.clone(),
//! };
//! // Bound where the network's runs send DNS: the gateway, port 53. A
//! // server for a namespace the caller is not in gets its sockets from
//! // there (a socket factory) and calls `Listeners::from_sockets`; its
//! // upstream sockets are made in the caller's namespace, so an upstream
//! // on the caller's loopback (a stub resolver) works.
//! let listeners = Listeners::bind("10.89.0.1:53".parse()?)?;
//! let upstreams = ["127.0.0.53".parse()?];
//! let server = serve(listeners, scope, &upstreams, Limits::default(), CacheConfig::default())?;
//! // ... runs come and go: their records are read as they change ...
//! let stats = server.stop(); // or drop it
//! # let _ = stats; Ok(()) }
//! ```
//!
//! A run on the network gets the gateway as its nameserver and
//! [`NAMES_DOMAIN`] as its first search domain
//! ([`crate::dns::decide()`] does that for bridge runs), and its own name and
//! id in its /etc/hosts.
//!
//! Names are unique per network among live runs: [`check_name`] says who
//! holds a name already (setup calls it under the runs directory's lock,
//! held until its own record, with the name, is written).

mod live;
mod source;
mod table;
mod watch;

pub use source::{NamesScope, NetworkNames};
pub use table::{NAMES_DOMAIN, NameEntry, NameTable, Resolved};

use crate::dns::forwarder::{CacheConfig, DNS_PORT, Forwarder, ForwarderConfig, ForwarderError, Limits, Listeners};
use crate::model::run_name::RunName;
use crate::state::record::Record;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

/// Start a forwarder on `listeners` that answers `scope`'s names and
/// forwards everything else to `upstreams` (port 53), in order, within
/// `limits`, keeping upstream answers as `cache` says.
pub fn serve(
    listeners: Listeners,
    scope: NamesScope,
    upstreams: &[IpAddr],
    limits: Limits,
    cache: CacheConfig,
) -> Result<Forwarder, ForwarderError> {
    Forwarder::start(listeners, config(scope, upstreams, limits, cache))
}

/// The forwarder configuration [`serve`] uses, for a caller that starts
/// the forwarder itself.
pub fn config(scope: NamesScope, upstreams: &[IpAddr], limits: Limits, cache: CacheConfig) -> ForwarderConfig {
    ForwarderConfig {
        upstreams: upstreams.iter().map(|ip| SocketAddr::new(*ip, DNS_PORT)).collect(),
        names: Arc::new(NetworkNames::new(scope)),
        // Names come and go with runs: nothing may cache them (and the
        // forwarder's cache keeps upstream answers only).
        local_ttl: 0,
        limits,
        cache,
    }
}

/// A live run on `network` (other than `me`) that already goes by `name`,
/// among `records`: its id. `alive` is the caller's liveness test.
pub fn name_holder<'a>(
    records: impl IntoIterator<Item = &'a Record>,
    network: &str,
    name: &RunName,
    me: &str,
    mut alive: impl FnMut(&Record) -> bool,
) -> Option<&'a Record> {
    records.into_iter().find(|r| {
        r.id != me && r.network() == Some(network) && r.name.as_ref().is_some_and(|n| n.same(name)) && alive(r)
    })
}

/// Errors of claiming a name.
#[derive(Debug, thiserror::Error)]
pub enum NameClaimError {
    /// A live run on the network has the name.
    #[error("--name {name}: run {holder} already goes by that name on network {network}")]
    Taken {
        /// The name.
        name: RunName,
        /// The network.
        network: String,
        /// The run that has it.
        holder: String,
    },
    /// The records could not be read.
    #[error("check the names of network {network}")]
    Records {
        /// The network.
        network: String,
        /// Cause.
        #[source]
        source: crate::state::store::StoreError,
    },
}

/// Check that no live run on `network` under `run_dir` goes by `name`
/// (`me`: the caller's own record, which may already be written). The
/// caller holds the runs directory's lock until its record is written.
pub fn check_name(
    run_dir: &Path,
    proc_root: &Path,
    network: &str,
    name: &RunName,
    me: &str,
) -> Result<(), NameClaimError> {
    let euid = nix::unistd::geteuid().as_raw();
    let err = |source| NameClaimError::Records { network: network.to_owned(), source };
    let Some(store) = crate::state::store::Store::open_existing(run_dir, euid).map_err(err)? else {
        return Ok(());
    };
    let records: Vec<Record> = store.records().map_err(err)?.into_iter().flatten().collect();
    match name_holder(&records, network, name, me, |r| r.alive(proc_root)) {
        Some(r) => Err(NameClaimError::Taken { name: name.clone(), network: network.to_owned(), holder: r.id.clone() }),
        None => Ok(()),
    }
}

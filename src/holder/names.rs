//! The holder's name server: every network of the user answers its names
//! on its gateway inside the holder, served by one process the supervisor
//! forks (and replaces when it dies), not by each run.
//!
//! Why not each run: a run's name server sockets are made in the holder's
//! network namespace of the moment. When the holder is rebuilt (its
//! supervisor died), a surviving run's sockets stay in the dead holder's
//! namespace, and its lookups to the gateway would be answered only while
//! another run served there. The holder's own server is rebuilt with it.
//!
//! The server runs in the host's namespaces (so an upstream on the host's
//! loopback, a stub resolver, is reachable); its listening sockets come
//! from a socket factory that joined the holder, bound with `IP_FREEBIND`
//! (a network's gateway exists once its first run attached). It watches
//! the user's network definitions (a `stat` of their directory every
//! [`POLL`]), serving a network from its creation to its removal, and
//! writes which networks it serves to `<run>/holder/names` (headed by the
//! supervisor's pid, so a file a dead holder left is not believed), which
//! a run attaching to a network just created waits for ([`wait_served`]).
//! Names are read from the run records ([`crate::dns::names`]), so nothing
//! tells the server when runs come and go.

use super::{HolderDir, HolderError};
use crate::bridge::network::{NetworkDef, NetworkStore};
use crate::dns::forwarder::{CacheConfig, DNS_PORT, Forwarder, Limits, Listeners};
use crate::dns::names::NamesScope;
use crate::model::target::NsTarget;
use crate::ports::nsfactory::SocketFactory;
use crate::state::paths::Paths;
use nix::unistd::{ForkResult, Pid};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// How often the definitions directory is looked at.
pub const POLL: Duration = Duration::from_millis(20);

/// Fork the name server of the holder whose process is `holder` (from the
/// single-threaded supervisor, whose pid heads the served file). It dies
/// with the supervisor (parent-death signal).
pub(super) fn spawn(paths: &Paths, holder: Pid) -> Result<Pid, HolderError> {
    let supervisor = nix::unistd::getpid();
    // SAFETY: the supervisor is single-threaded, so the child may run any
    // code; it never returns (it leaves with `_exit`).
    match unsafe { nix::unistd::fork() }.map_err(|source| HolderError::Sys { op: "fork the name server", source })? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            // SAFETY: plain prctl; getppid has no preconditions.
            let orphaned = unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 || libc::getppid() != supervisor.as_raw()
            };
            if !orphaned && let Err(e) = serve(paths, holder, supervisor) {
                log::error!("holder name server: {}", crate::flow::error_chain(&e));
            }
            // SAFETY: ends this forked process without running the supervisor's destructors.
            unsafe { libc::_exit(1) }
        }
    }
}

/// One network being served.
struct Served {
    gateway: Ipv4Addr,
    scope: NamesScope,
    _forwarder: Forwarder,
}

/// The server's loop: serve the definitions as they change.
fn serve(paths: &Paths, holder: Pid, supervisor: Pid) -> Result<(), HolderError> {
    let ns = paths.proc_root.join(holder.to_string()).join("ns");
    let target = NsTarget { netns: ns.join("net"), userns: Some(ns.join("user")) };
    let inside = |message: String| HolderError::Inside { op: "serve the networks' names", message };
    let mut factory = SocketFactory::spawn(&target, &paths.proc_root).map_err(|e| inside(crate::flow::error_chain(&e)))?;
    let upstreams = host_upstreams(Path::new(crate::dns::setup::ETC));
    let cache = CacheConfig::keeping(crate::dns::options::DnsCache::from_env().keeps_answers());
    let store = NetworkStore::new(&paths.config_dir);
    let defs_dir = paths.config_dir.join("networks");
    let dir = HolderDir::new(&paths.run_dir);
    let mut served: BTreeMap<String, Served> = BTreeMap::new();
    let mut seen: Option<(SystemTime, Instant)> = None;
    loop {
        let stamp = std::fs::metadata(&defs_dir).and_then(|m| m.modified()).ok();
        // A stamp younger than a tick may hide a second change: look again.
        let fresh = seen.is_some_and(|(s, at)| Some(s) == stamp && at.elapsed() > Duration::from_millis(50));
        if !fresh {
            seen = stamp.map(|s| (s, Instant::now()));
            // Definitions that cannot be read (one corrupted) change nothing served.
            match store.list() {
                Ok(defs) => sync(&mut served, &defs, paths, &upstreams, cache, &mut factory),
                Err(e) => log::warn!("holder name server: {}", crate::flow::error_chain(&e)),
            }
            write_served(&dir, supervisor, &served)?;
        }
        std::thread::sleep(POLL);
    }
}

/// Start serving the networks of `defs` not served yet (or whose subnet
/// changed), stop serving those gone.
fn sync(
    served: &mut BTreeMap<String, Served>,
    defs: &[NetworkDef],
    paths: &Paths,
    upstreams: &[IpAddr],
    cache: CacheConfig,
    factory: &mut SocketFactory,
) {
    served.retain(|name, s| {
        defs.iter().any(|d| d.name.as_str() == name && d.gateway == s.gateway && NamesScope::of_network(d, paths) == s.scope)
    });
    let missing: Vec<&NetworkDef> =
        defs.iter().filter(|d| !d.options.disable_dns && !served.contains_key(d.name.as_str())).collect();
    for def in missing {
        match listen(factory, def.gateway) {
            Ok(listeners) => {
                let scope = NamesScope::of_network(def, paths);
                let cfg = crate::dns::names::config(scope.clone(), upstreams, Limits::default(), cache);
                match Forwarder::start(listeners, cfg) {
                    Ok(f) => {
                        served.insert(def.name.to_string(), Served { gateway: def.gateway, scope, _forwarder: f });
                    }
                    Err(e) => log::warn!("holder name server: {}: {}", def.name, crate::flow::error_chain(&e)),
                }
            }
            Err(e) => log::warn!("holder name server: {}: {e}", def.name),
        }
    }
}

/// UDP and TCP listeners on `gateway:53` inside the holder.
fn listen(factory: &mut SocketFactory, gateway: Ipv4Addr) -> Result<Listeners, String> {
    let mut socket = |ty| factory.socket(libc::AF_INET, ty, 0).map_err(|e| format!("a socket in the holder: {e}"));
    let (udp, tcp) = (socket(libc::SOCK_DGRAM)?, socket(libc::SOCK_STREAM)?);
    Listeners::from_sockets(udp, tcp, SocketAddr::new(IpAddr::V4(gateway), DNS_PORT))
        .map_err(|e| crate::flow::error_chain(&e))
}

/// The host's nameservers (where a bridge run's forwarder sends what is not a name of its network).
pub fn host_upstreams(etc: &Path) -> Vec<IpAddr> {
    crate::dns::host::HostFiles::read(etc).resolv.conf().map(|c| c.nameservers.clone()).unwrap_or_default()
}

/// The served file's text: `supervisor <pid>`, then `<network> <gateway>` per line.
fn served_text(supervisor: Pid, served: &BTreeMap<String, Served>) -> String {
    let mut text = format!("supervisor {supervisor}\n");
    for (name, s) in served {
        text.push_str(&format!("{name} {}\n", s.gateway));
    }
    text
}

fn write_served(dir: &HolderDir, supervisor: Pid, served: &BTreeMap<String, Served>) -> Result<(), HolderError> {
    let path = dir.names_file();
    let tmp = temp_file(dir, std::process::id());
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| HolderError::State { path, source }
    };
    let mut f = std::fs::File::create(&tmp).map_err(err(&tmp))?;
    f.write_all(served_text(supervisor, served).as_bytes()).map_err(err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(err(&path))
}

/// The temp file the name server of pid `pid` writes the served file
/// through (`.names.<pid>.tmp`: what `gc` sweeps of dead writers).
pub(crate) fn temp_file(dir: &HolderDir, pid: u32) -> std::path::PathBuf {
    dir.dir.join(format!(".names.{pid}.tmp"))
}

/// Whether `text` (a served file) says the supervisor `supervisor` serves `network` on `gateway`.
fn serves(text: &str, supervisor: u32, network: &str, gateway: Ipv4Addr) -> bool {
    let mut lines = text.lines();
    let head = format!("supervisor {supervisor}");
    lines.next() == Some(head.as_str()) && lines.any(|l| l == format!("{network} {gateway}"))
}

/// Wait (at most `within`) until the holder of `supervisor` serves
/// `network`'s names on `gateway`; whether it does.
pub fn wait_served(run_dir: &Path, supervisor: u32, network: &str, gateway: Ipv4Addr, within: Duration) -> bool {
    let file = HolderDir::new(run_dir).names_file();
    let deadline = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if serves(&text, supervisor, network, gateway) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_served_file_counts_only_for_its_supervisor_and_gateway() {
        let text = "supervisor 42\nweb 10.90.1.1\nother 10.90.2.1\n";
        let gw: Ipv4Addr = "10.90.1.1".parse().unwrap();
        assert!(serves(text, 42, "web", gw));
        assert!(!serves(text, 43, "web", gw), "a dead holder's file");
        assert!(!serves(text, 42, "web", "10.90.3.1".parse().unwrap()), "a network created again elsewhere");
        assert!(!serves(text, 42, "db", gw));
        assert!(!serves("", 42, "web", gw));
    }
}

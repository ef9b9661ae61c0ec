//! Name resolution for one run, from request to running forwarder: the
//! effectful shell around [`super::decide`](mod@super::decide).
//!
//! [`prepare`] runs before anything of the run exists, so a request that
//! cannot be met fails first: it reads the host's files, binds the bridge
//! forwarder's sockets (whether that works changes the decision), decides,
//! and prepares the namespace child's part ([`NsDns`]). After the namespace
//! exists, [`PreparedDns::start_forwarder`] starts the forwarder the plan
//! asks for, if any (inside the namespace, on the sockets the namespace
//! child opened there); stopping it is dropping it.

use super::decide::{DecideError, DnsPlan, DnsRequest, HostDns, Listen, ModeDns, decide};
use super::forwarder::{CacheConfig, DNS_PORT, Forwarder, ForwarderConfig, ForwarderError, Limits, Listeners};
use super::host::HostFiles;
use super::hosts::HostsEntry;
use super::inside::{NsDns, PrepareError};
use super::names::NamesScope;
use super::options::DnsOptions;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// The directory whose `resolv.conf` and `hosts` a command opens.
pub const ETC: &str = "/etc";

/// Errors of setting up name resolution.
#[derive(Debug, thiserror::Error)]
pub enum DnsSetupError {
    /// The request cannot be met in this mode.
    #[error(transparent)]
    Decide(#[from] DecideError),
    /// `--dns` was given, but the host has no resolv.conf to mount over.
    #[error(
        "--dns: {} does not exist on this host, so there is nothing to mount the run's resolv.conf over \
         (pelagos-net never creates files in the host's /etc)",
        .0.display()
    )]
    NoResolvConf(PathBuf),
    /// The child's part could not be prepared.
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    /// The forwarder could not start.
    #[error(transparent)]
    Forwarder(#[from] ForwarderError),
}

/// What to set up.
#[derive(Debug, Clone, Copy)]
pub struct DnsSetupRequest<'a> {
    /// The mode (for a bridge, `listening` is ignored: [`prepare`] finds out).
    pub mode: ModeDns,
    /// The run's options.
    pub options: &'a DnsOptions,
    /// The run's own name and address, when it has them.
    pub own: Option<&'a HostsEntry>,
    /// The host's `/etc`.
    pub etc: &'a Path,
    /// A bridge network's gateway is in another namespace (a rootless
    /// network's holder): its listeners are made there and handed in
    /// ([`PreparedDns::set_gateway`]), not bound here.
    pub gateway_elsewhere: bool,
}

/// The plan, with what carrying it out needs.
#[derive(Debug)]
pub struct PreparedDns {
    /// The decision and the files' text.
    pub plan: DnsPlan,
    /// The namespace child's part (`None`: nothing to do inside).
    pub inside: Option<NsDns>,
    /// The bridge forwarder's sockets, bound in [`prepare`].
    gateway: Option<Listeners>,
    /// What deciding again needs, once the run's own address is known.
    again: Option<Again>,
}

/// The inputs of a decision, kept to decide again with the run's own entry.
#[derive(Debug)]
struct Again {
    mode: ModeDns,
    options: DnsOptions,
    files: HostFiles,
    etc: PathBuf,
    alias: Option<IpAddr>,
}

/// A network whose gateway is elsewhere (the user's holder) is not the
/// host's: the host alias names the run's own `127.0.0.1`, where the
/// host's loopback ports it was granted (`--host-port`) are relayed.
pub fn loopback_alias(gateway_elsewhere: bool) -> Option<IpAddr> {
    gateway_elsewhere.then_some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

/// Decide and prepare. Creates nothing outside this process.
pub fn prepare(req: &DnsSetupRequest<'_>) -> Result<PreparedDns, DnsSetupError> {
    // Host and loopback runs keep the host's files: nothing to read unless
    // --add-host asks for a hosts file (the common loopback start-up reads nothing).
    let keeps_files = matches!(req.mode, ModeDns::Host | ModeDns::Loopback) && req.options.add_hosts.is_empty();
    if keeps_files {
        let plan = decide(&DnsRequest { mode: req.mode, host: HostDns::default(), options: req.options, own: None })?;
        return Ok(PreparedDns { plan, inside: None, gateway: None, again: None });
    }
    let files = HostFiles::read(req.etc);
    let mut mode = req.mode;
    let mut gateway = None;
    if let ModeDns::Bridge { listening, .. } = &mut mode
        && req.gateway_elsewhere
    {
        *listening = true;
    } else if let ModeDns::Bridge { gateway: gw, listening } = &mut mode {
        match Listeners::bind(SocketAddr::new(IpAddr::V4(*gw), DNS_PORT)) {
            Ok(l) => {
                gateway = Some(l);
                *listening = true;
            }
            Err(e) => {
                log::debug!(
                    "dns forwarder: {e}: {}",
                    std::error::Error::source(&e).map(ToString::to_string).unwrap_or_default()
                );
                *listening = false;
            }
        }
    }
    let address = match mode {
        ModeDns::Slirp4netns => super::host::default_source_address(),
        _ => None,
    };
    let alias = loopback_alias(req.gateway_elsewhere);
    let host = HostDns { resolv: files.resolv.conf(), hosts: files.hosts.as_deref(), address, alias };
    let plan = decide(&DnsRequest { mode, host, options: req.options, own: req.own })?;
    if plan.forwarder.as_ref().is_none_or(|f| !matches!(f.listen, Listen::Gateway(_))) {
        gateway = None;
    }
    let inside = inside_for(&plan, &files, req.etc)?;
    let again = Again { mode, options: req.options.clone(), files, etc: req.etc.to_owned(), alias };
    Ok(PreparedDns { plan, inside, gateway, again: Some(again) })
}

/// The namespace child's part of `plan`: the files to mount over the
/// host's paths, the forwarder's address on `lo`, the TCP rule.
fn inside_for(plan: &DnsPlan, files: &HostFiles, etc: &Path) -> Result<Option<NsDns>, DnsSetupError> {
    let resolv_path = etc.join("resolv.conf");
    let hosts_path = etc.join("hosts");
    let mut mounts: Vec<(&Path, &str)> = Vec::new();
    if let Some(text) = &plan.resolv_conf {
        if files.resolv.path_exists() {
            mounts.push((&resolv_path, text));
        } else {
            return Err(DnsSetupError::NoResolvConf(resolv_path));
        }
    }
    if let Some(text) = &plan.hosts {
        if files.hosts_path_exists {
            mounts.push((&hosts_path, text));
        } else {
            log::warn!("{} does not exist: --add-host and the host alias are not available", hosts_path.display());
        }
    }
    let lo_addr = plan.forwarder.as_ref().and_then(|f| match f.listen {
        Listen::InNamespace(a) => Some(a),
        Listen::Gateway(_) => None,
    });
    if mounts.is_empty() && lo_addr.is_none() && plan.tcp_fail_fast.is_none() {
        return Ok(None);
    }
    Ok(Some(NsDns::prepare(&mounts, lo_addr, plan.tcp_fail_fast)?))
}

impl PreparedDns {
    /// The gateway forwarder's listeners, made in the namespace that holds
    /// the gateway (see [`DnsSetupRequest::gateway_elsewhere`]).
    pub fn set_gateway(&mut self, listeners: Listeners) {
        self.gateway = Some(listeners);
    }

    /// Where the forwarder listens on a network's gateway, when it does.
    pub fn gateway_addr(&self) -> Option<SocketAddr> {
        match self.plan.forwarder.as_ref()?.listen {
            Listen::Gateway(gw) => Some(SocketAddr::new(IpAddr::V4(gw), DNS_PORT)),
            Listen::InNamespace(_) => None,
        }
    }

    /// Put the run's own entry (its name and id, once its address is known)
    /// in the hosts file the command gets; before the namespace child is
    /// forked. Nothing changes when the run gets no hosts file of ours.
    pub fn set_own(&mut self, own: &HostsEntry) -> Result<(), DnsSetupError> {
        let Some(again) = &self.again else { return Ok(()) };
        if self.plan.hosts.is_none() {
            return Ok(());
        }
        let host = HostDns {
            resolv: again.files.resolv.conf(),
            hosts: again.files.hosts.as_deref(),
            address: match again.mode {
                ModeDns::Slirp4netns => super::host::default_source_address(),
                _ => None,
            },
            alias: again.alias,
        };
        let plan = decide(&DnsRequest { mode: again.mode, host, options: &again.options, own: Some(own) })?;
        self.inside = inside_for(&plan, &again.files, &again.etc)?;
        self.plan = plan;
        Ok(())
    }

    /// Start the forwarder the plan asks for. An in-namespace forwarder
    /// serves on the sockets the namespace child opened there and handed
    /// over (`inside`: UDP, TCP; see [`super::inside`]). A forwarder on a
    /// network's gateway answers the names of `names` (the network's runs,
    /// [`super::names`]).
    pub fn start_forwarder(
        &mut self,
        inside: Option<(OwnedFd, OwnedFd)>,
        names: Option<NamesScope>,
    ) -> Result<Option<Forwarder>, DnsSetupError> {
        let Some(fwd) = &self.plan.forwarder else { return Ok(None) };
        let cache = CacheConfig::keeping(fwd.cache);
        let cfg = match (fwd.listen, names) {
            (Listen::Gateway(_), Some(scope)) => super::names::config(scope, &fwd.upstreams, Limits::default(), cache),
            _ => ForwarderConfig { cache, ..ForwarderConfig::forward_to(&fwd.upstreams) },
        };
        let listeners = match (fwd.listen, self.gateway.take(), inside) {
            (Listen::Gateway(_), Some(l), _) => l,
            (Listen::InNamespace(_), _, Some((udp, tcp))) => Listeners::bound(udp, tcp),
            _ => return Ok(None),
        };
        let forwarder = Forwarder::start(listeners, cfg)?;
        log::info!("dns forwarder listening on {}", forwarder.local_addr());
        Ok(Some(forwarder))
    }
}

//! Which resolver a run's command uses, per mode, and the resolv.conf and
//! hosts files that say so.
//!
//! Pure: the host's files come in parsed, the mode's facts as data. The
//! decisions, and why:
//!
//! | mode | resolver | why |
//! |---|---|---|
//! | pasta, slirp4netns | `169.254.1.1`, where a caching forwarder of pelagos-net listens inside the namespace (its sockets opened by the namespace child), its upstream sockets on the host | the command cannot reach the host's `127.0.0.53`; a repeated query is answered inside the namespace; TCP on every pasta build |
//! | pasta with `PELAGOS_DNS_CACHE=helper` or `off` | `169.254.1.1`, which pasta forwards (`--dns-forward`) to the host's first IPv4 nameserver, loopback stubs included | pasta's own forwarder, which keeps nothing |
//! | slirp4netns with `PELAGOS_DNS_CACHE=helper` or `off` | its built-in `10.0.2.3`, forwarded by libslirp to the host's first IPv4 nameserver | the same, built in |
//! | bridge (root) | the network's gateway, where pelagos-net runs a forwarder ([`super::forwarder`]) to the host's resolvers | a container on a bridge cannot reach the host's loopback either |
//! | host | the host's files, untouched | the command shares the host's namespaces |
//! | loopback | the host's files, untouched | there is no network to resolve over |
//!
//! Why ours inside the namespace by default: every forwarder one namespace
//! hop away costs about 2x a query to a loopback stub, cold, in
//! `bench/dns` (pasta's, libslirp's and ours alike), but pasta's and
//! libslirp's keep nothing, so every repeated query pays it again; ours
//! answers a repeated query inside the namespace (about 1.0x) and carries
//! TCP where Debian 12's pasta cannot. It costs start-up almost nothing:
//! the namespace child, which exists anyway, adds the address and opens
//! the listening sockets before it reports ready and hands them over with
//! its report; the forwarder's thread starts while the command is not yet
//! released (about 0.2 ms).
//!
//! pasta's forward address is link-local (never routed) on purpose: Debian
//! 12's pasta forwards only UDP to it. A TCP query (the retry after a
//! truncated answer) is not mapped, and pasta would try to connect to the
//! literal address from the host; so on such builds the namespace gets a
//! routing rule that makes TCP to that address fail at once
//! ([`DnsPlan::tcp_fail_fast`]) rather than hang or leak.
//!
//! `--dns` servers the run can reach go straight into resolv.conf. One on
//! the host's loopback that the mode's own forwarding does not already
//! reach is served by a forwarder of pelagos-net listening inside the
//! namespace on the same link-local address, which forwards from the host
//! (UDP and TCP).

use super::hosts::{HostsEntry, HostsParts, render_hosts};
use super::options::{DnsOptions, HostTarget};
use super::resolvconf::ResolvConf;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// The address the command sends DNS to in pasta mode (and where the
/// in-namespace forwarder listens): link-local, as podman's.
pub const FORWARD_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// slirp4netns's built-in DNS forwarder.
pub const SLIRP_DNS_ADDR: Ipv4Addr = crate::helpers::slirp::args::DNS_ADDR;

/// The DNS facts of the mode a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeDns {
    /// The host's namespaces.
    Host,
    /// Only `lo`.
    Loopback,
    /// pasta.
    Pasta {
        /// The build maps TCP to the forward address too (newer than Debian 12's).
        tcp_mapped: bool,
    },
    /// slirp4netns.
    Slirp4netns,
    /// A bridge network whose gateway is this address.
    Bridge {
        /// The network's gateway (the host's address on the bridge).
        gateway: Ipv4Addr,
        /// Whether the forwarder can listen there (false when another
        /// server holds port 53 on it): then only resolvers reachable
        /// through the network are used.
        listening: bool,
    },
}

/// Facts about the host the decision needs.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostDns<'a> {
    /// The host's resolv.conf, parsed (`None`: none is usable).
    pub resolv: Option<&'a ResolvConf>,
    /// The host's /etc/hosts text (`None`: it has none).
    pub hosts: Option<&'a str>,
    /// The host's own (non-loopback) IPv4 address, the source of its
    /// default route: what the host alias names in slirp4netns mode.
    pub address: Option<Ipv4Addr>,
    /// Where the host alias points instead of the mode's usual address,
    /// when that one is not the host: a rootless shared network's gateway
    /// is the holder's, and its runs reach the host's loopback ports they
    /// were granted on their own `127.0.0.1`.
    pub alias: Option<IpAddr>,
}

/// What to decide for.
#[derive(Debug, Clone, Copy)]
pub struct DnsRequest<'a> {
    /// The mode.
    pub mode: ModeDns,
    /// The host.
    pub host: HostDns<'a>,
    /// The run's options.
    pub options: &'a DnsOptions,
    /// The run's own name and address, when it has them.
    pub own: Option<&'a HostsEntry>,
}

/// Whether TCP queries to pasta's forward address work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpDns {
    /// pasta maps them.
    Mapped,
    /// They are refused inside the namespace at once (a routing rule).
    FailsFast,
}

/// Where the forwarder of pelagos-net listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "where", content = "address", rename_all = "snake_case")]
pub enum Listen {
    /// On the bridge's gateway, in the host's namespace.
    Gateway(Ipv4Addr),
    /// Inside the run's namespace, on an address added to its `lo`.
    InNamespace(Ipv4Addr),
}

impl Listen {
    /// The address.
    pub fn addr(self) -> Ipv4Addr {
        match self {
            Self::Gateway(a) | Self::InNamespace(a) => a,
        }
    }
}

/// The resolver decision.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Resolver {
    /// Host mode: the host's files, untouched.
    Unchanged,
    /// Loopback mode: no network.
    NoNetwork,
    /// pasta's `--dns-forward`.
    PastaForward {
        /// What the command asks.
        addr: Ipv4Addr,
        /// Where pasta sends it.
        upstream: IpAddr,
        /// TCP behaviour.
        tcp: TcpDns,
    },
    /// slirp4netns's built-in forwarder.
    SlirpBuiltin {
        /// What the command asks.
        addr: Ipv4Addr,
        /// Where libslirp sends it.
        upstream: IpAddr,
    },
    /// A forwarder of pelagos-net.
    Forwarder {
        /// Where it listens.
        listen: Listen,
        /// Where it forwards, in order.
        upstreams: Vec<IpAddr>,
        /// Whether it keeps answers for their TTL.
        cache: bool,
    },
    /// The command asks these servers directly.
    Direct {
        /// The servers.
        servers: Vec<IpAddr>,
    },
    /// Nothing to resolve with: the host has no resolver and no `--dns` was given.
    NoneConfigured,
}

impl fmt::Display for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unchanged => f.write_str("the host's resolv.conf and hosts, unchanged (host mode)"),
            Self::NoNetwork => f.write_str("none: loopback mode has no network"),
            Self::PastaForward { addr, upstream, tcp } => write!(
                f,
                "{addr}, which pasta forwards to the host's resolver {upstream} (UDP{})",
                match tcp {
                    TcpDns::Mapped => " and TCP",
                    TcpDns::FailsFast => "; this pasta build does not map TCP, so TCP to it fails at once",
                }
            ),
            Self::SlirpBuiltin { addr, upstream } => {
                write!(f, "{addr}, slirp4netns's built-in forwarder to the host's resolver {upstream}")
            }
            Self::Forwarder { listen, upstreams, cache } => {
                let ups: Vec<String> = upstreams.iter().map(IpAddr::to_string).collect();
                let place = match listen {
                    Listen::Gateway(_) => "on the network's gateway",
                    Listen::InNamespace(_) => "inside the namespace",
                };
                write!(
                    f,
                    "{}, a forwarder of pelagos-net {place}, to {} (UDP and TCP)",
                    listen.addr(),
                    ups.join(", ")
                )?;
                match (cache, listen) {
                    (true, Listen::InNamespace(_)) => f.write_str(
                        "; it caches answers for their TTL (PELAGOS_DNS_CACHE=off: no cache; helper: the mode's own \
                         forwarder for the servers it reaches)",
                    )?,
                    (true, Listen::Gateway(_)) => {
                        f.write_str("; it caches answers for their TTL (PELAGOS_DNS_CACHE=off: no cache)")?
                    }
                    (false, _) => {}
                }
                if let Listen::Gateway(_) = listen {
                    write!(
                        f,
                        "; it answers the network's run names and ids itself (bare and under {}), to the \
                         network's addresses only",
                        super::names::NAMES_DOMAIN
                    )?;
                }
                Ok(())
            }
            Self::Direct { servers } => {
                let s: Vec<String> = servers.iter().map(IpAddr::to_string).collect();
                write!(f, "{} directly", s.join(", "))
            }
            Self::NoneConfigured => f.write_str("none: no resolver is configured (the host has none; give --dns IP)"),
        }
    }
}

/// A forwarder the run must start.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ForwarderPlan {
    /// Where it listens (UDP and TCP port 53).
    pub listen: Listen,
    /// Where it forwards, in order.
    pub upstreams: Vec<IpAddr>,
    /// Whether it keeps answers for their TTL.
    pub cache: bool,
}

/// Everything a run does for name resolution.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DnsPlan {
    /// The decision.
    pub resolver: Resolver,
    /// The command's resolv.conf (`None`: leave the host's in place).
    pub resolv_conf: Option<String>,
    /// The command's /etc/hosts (`None`: leave the host's in place).
    pub hosts: Option<String>,
    /// The entries pelagos-net adds to the host's (`--add-host`, the run's
    /// name, the host alias), as they appear in [`DnsPlan::hosts`].
    pub hosts_added: Vec<HostsEntry>,
    /// pasta's `--dns-forward` address.
    pub pasta_forward: Option<Ipv4Addr>,
    /// Make TCP to this address fail at once inside the namespace.
    pub tcp_fail_fast: Option<Ipv4Addr>,
    /// A forwarder to start.
    pub forwarder: Option<ForwarderPlan>,
    /// Things the user should know (printed as warnings by `run`).
    pub warnings: Vec<String>,
}

/// Why no plan can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    /// DNS options with `--network host`.
    #[error(
        "--network host runs the command in the host's namespaces, with the host's resolv.conf and hosts; \
         --dns, --dns-search, --dns-option and --add-host need a mode with its own network"
    )]
    HostMode,
    /// `host-gateway` in a mode with no host to reach.
    #[error("--add-host {name}:host-gateway: {why}")]
    NoHostGateway {
        /// The first name of the entry.
        name: String,
        /// Why there is no address.
        why: &'static str,
    },
}

/// Whether [`decide`] reads anything of the host's files for `mode`: not
/// in host mode, nor in loopback mode without `--add-host` (the two early
/// returns of `decide`), so callers need not read them.
pub(crate) fn uses_host_files(mode: ModeDns, options: &DnsOptions) -> bool {
    !(matches!(mode, ModeDns::Host) || (matches!(mode, ModeDns::Loopback) && options.add_hosts.is_empty()))
}

/// Decide.
pub fn decide(req: &DnsRequest<'_>) -> Result<DnsPlan, DecideError> {
    let opts = req.options;
    let mut plan = DnsPlan {
        resolver: Resolver::Unchanged,
        resolv_conf: None,
        hosts: None,
        hosts_added: Vec::new(),
        pasta_forward: None,
        tcp_fail_fast: None,
        forwarder: None,
        warnings: Vec::new(),
    };
    let alias = req.host.alias.or_else(|| host_alias(req.mode, req.host.address));
    match req.mode {
        ModeDns::Host if !opts.is_empty() => return Err(DecideError::HostMode),
        ModeDns::Host => return Ok(plan),
        ModeDns::Loopback => {
            plan.resolver = Resolver::NoNetwork;
            if opts.touches_resolv_conf() {
                plan.warnings
                    .push("loopback mode has no network: --dns, --dns-search and --dns-option have no effect".into());
            }
            if !opts.add_hosts.is_empty() {
                hosts_text(req, alias, &mut plan)?;
            }
            return Ok(plan);
        }
        _ => {}
    }
    let servers = resolvers(req, &mut plan);
    if let Some(servers) = servers {
        let host = req.host.resolv.cloned().unwrap_or_default();
        let mut search = opts.search.clone().unwrap_or(host.search);
        // A network's names are served with the forwarder on its gateway:
        // their domain first, answered at once (see `names`).
        let names = super::names::NAMES_DOMAIN;
        if matches!(plan.forwarder.as_ref().map(|f| f.listen), Some(Listen::Gateway(_)))
            && !search.iter().any(|s| s == names)
        {
            search.insert(0, names.to_owned());
        }
        let conf = ResolvConf { nameservers: servers, search, options: opts.options.clone().unwrap_or(host.options) };
        plan.resolv_conf = Some(conf.render(&[format!("resolver: {}", plan.resolver)]));
    } else {
        plan.warnings.push(format!("name resolution: {}", plan.resolver));
    }
    hosts_text(req, alias, &mut plan)?;
    Ok(plan)
}

/// The nameserver lines, setting the plan's resolver and helper facts;
/// `None` when there is nothing to resolve with.
fn resolvers(req: &DnsRequest<'_>, plan: &mut DnsPlan) -> Option<Vec<IpAddr>> {
    let user = &req.options.servers;
    let host = req.host.resolv;
    // Where the mode's own forwarding goes: the host's first IPv4 nameserver.
    let upstream = host.and_then(ResolvConf::first_ipv4);
    let cache = req.options.cache.keeps_answers();
    let (own_addr, reaches_v6) = match req.mode {
        ModeDns::Pasta { .. } => (FORWARD_ADDR, true),
        ModeDns::Slirp4netns => (SLIRP_DNS_ADDR, false),
        ModeDns::Bridge { gateway, listening } => {
            let upstreams =
                if user.is_empty() { host.map(|h| h.nameservers.clone()).unwrap_or_default() } else { user.clone() };
            if upstreams.is_empty() {
                plan.resolver = Resolver::NoneConfigured;
                return None;
            }
            if !listening {
                return bridge_without_forwarder(gateway, &upstreams, plan);
            }
            return Some(through_forwarder(plan, Listen::Gateway(gateway), upstreams, cache));
        }
        ModeDns::Host | ModeDns::Loopback => return None,
    };
    let direct = |ip: &IpAddr| !ip.is_loopback() && (ip.is_ipv4() || reaches_v6);
    let wanted: Vec<IpAddr> = match (user.is_empty(), upstream) {
        (false, _) => user.clone(),
        (true, Some(up)) => {
            let rest: Vec<IpAddr> = host
                .map(|h| h.nameservers.iter().copied().filter(|ip| *ip != up && direct(ip)).collect())
                .unwrap_or_default();
            std::iter::once(up).chain(rest).collect()
        }
        (true, None) => host.map(|h| h.nameservers.clone()).unwrap_or_default(),
    };
    if wanted.is_empty() {
        plan.resolver = Resolver::NoneConfigured;
        return None;
    }
    // A server neither reachable directly nor through the mode's forwarding
    // (another address on the host's loopback; IPv6 under slirp4netns)
    // sends the whole list through a forwarder inside the namespace.
    if wanted.iter().any(|ip| !direct(ip) && Some(*ip) != upstream) {
        return Some(through_forwarder(plan, Listen::InNamespace(FORWARD_ADDR), wanted, cache));
    }
    let mut servers: Vec<IpAddr> = Vec::new();
    for &ip in &wanted {
        let mapped = if Some(ip) == upstream { IpAddr::V4(own_addr) } else { ip };
        if !servers.contains(&mapped) {
            servers.push(mapped);
        }
    }
    let uses_own = servers.contains(&IpAddr::V4(own_addr));
    // By default what the mode's own forwarder would carry goes through
    // ours instead, which keeps answers (and carries TCP on every pasta
    // build); servers the command reaches directly (`--dns` with a
    // routable address) stay direct.
    if uses_own && req.options.cache.forwards_inside() {
        return Some(through_forwarder(plan, Listen::InNamespace(FORWARD_ADDR), wanted, cache));
    }
    plan.resolver = match (req.mode, upstream) {
        (ModeDns::Pasta { tcp_mapped }, Some(up)) if uses_own => {
            let tcp = if tcp_mapped { TcpDns::Mapped } else { TcpDns::FailsFast };
            plan.pasta_forward = Some(FORWARD_ADDR);
            plan.tcp_fail_fast = (tcp == TcpDns::FailsFast).then_some(FORWARD_ADDR);
            Resolver::PastaForward { addr: FORWARD_ADDR, upstream: up, tcp }
        }
        (ModeDns::Slirp4netns, Some(up)) if uses_own => Resolver::SlirpBuiltin { addr: SLIRP_DNS_ADDR, upstream: up },
        _ => Resolver::Direct { servers: servers.clone() },
    };
    Some(servers)
}

/// Every server through a forwarder of pelagos-net listening on `listen`
/// (the bridge's gateway, or [`FORWARD_ADDR`] inside the namespace): the
/// one nameserver the run is given.
fn through_forwarder(plan: &mut DnsPlan, listen: Listen, upstreams: Vec<IpAddr>, cache: bool) -> Vec<IpAddr> {
    plan.resolver = Resolver::Forwarder { listen, upstreams: upstreams.clone(), cache };
    plan.forwarder = Some(ForwarderPlan { listen, upstreams, cache });
    vec![IpAddr::V4(listen.addr())]
}

/// A bridge run whose forwarder cannot listen: the resolvers the network
/// reaches, a warning about the others.
fn bridge_without_forwarder(gateway: Ipv4Addr, upstreams: &[IpAddr], plan: &mut DnsPlan) -> Option<Vec<IpAddr>> {
    let (direct, unreachable): (Vec<IpAddr>, Vec<IpAddr>) =
        upstreams.iter().partition(|ip| ip.is_ipv4() && !ip.is_loopback());
    if !unreachable.is_empty() {
        let list: Vec<String> = unreachable.iter().map(IpAddr::to_string).collect();
        plan.warnings.push(format!(
            "the DNS forwarder cannot listen on {gateway}:53 (another server holds the port), so the network cannot \
             reach {}",
            list.join(", ")
        ));
    }
    if direct.is_empty() {
        plan.resolver = Resolver::NoneConfigured;
        return None;
    }
    plan.resolver = Resolver::Direct { servers: direct.clone() };
    Some(direct)
}

/// The address the host alias and `host-gateway` name in `mode`, if any.
///
/// - pasta: `127.0.0.1`, where pasta's `--host-port` listeners forward to the
///   host's loopback: the host's services are reachable exactly on the
///   ports the run opted into.
/// - slirp4netns: the host's own address (the host's loopback stays blocked).
/// - bridge: the gateway, the host's address on the bridge.
pub fn host_alias(mode: ModeDns, host_address: Option<Ipv4Addr>) -> Option<IpAddr> {
    match mode {
        ModeDns::Pasta { .. } => Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ModeDns::Slirp4netns => host_address.map(IpAddr::V4),
        ModeDns::Bridge { gateway, .. } => Some(IpAddr::V4(gateway)),
        ModeDns::Host | ModeDns::Loopback => None,
    }
}

fn hosts_text(req: &DnsRequest<'_>, alias: Option<IpAddr>, plan: &mut DnsPlan) -> Result<(), DecideError> {
    let mut added = Vec::new();
    for h in &req.options.add_hosts {
        let ip = match h.target {
            HostTarget::Ip(ip) => ip,
            HostTarget::HostGateway => alias.ok_or_else(|| DecideError::NoHostGateway {
                name: h.names.first().cloned().unwrap_or_default(),
                why: match req.mode {
                    ModeDns::Loopback => "loopback mode has no network, so no host to reach",
                    _ => "the host has no IPv4 address with a default route to name",
                },
            })?,
        };
        added.push(HostsEntry { ip, names: h.names.clone() });
    }
    let parts = HostsParts { added, host_file: req.host.hosts, own: req.own.cloned(), host_alias: alias };
    plan.hosts = Some(render_hosts(&parts));
    plan.hosts_added = parts.added_entries();
    Ok(())
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;

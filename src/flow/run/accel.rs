//! The accelerator in the run flow: asked for with `--accel socket`; when
//! the mode or the host cannot have it, one warning line says why and the
//! run takes the normal path. Otherwise the command's process gets the
//! filter's hook, and once it runs, the supervisor starts with what the run
//! reaches through its helper; it stops first at teardown.

use crate::accel::child::{self, ChildHook, Receiver};
use crate::accel::filter::Intercept;
use crate::accel::ingress::{Held, Ingress};
use crate::accel::reach::{HelperNetwork, Reach};
use crate::accel::supervisor::{Config, Supervisor};
use crate::accel::switch::Lock;
use crate::accel::{AccelMode, probe};
use crate::model::cidr::Ipv4Net;
use crate::model::config::NetworkConfig;
use crate::model::mode::NetworkMode;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

/// slirp4netns's network inside the namespace (its `--cidr` is pinned).
const SLIRP_NETWORKS: [&str; 2] = ["10.0.2.0/24", "fd00::/64"];

/// pasta's and slirp4netns's options that move the helper's own outgoing
/// sockets; a switched socket would not follow them.
const OUTBOUND_OPTIONS: [&str; 6] =
    ["-o", "--outbound", "--outbound-if4", "--outbound-if6", "outbound_addr", "outbound_addr6"];

/// Why `config` in `mode` cannot have the accelerator with `lock` (pure),
/// or `None`. `host_networks`: the networks this host routes (a device
/// lock must not reach a real network where slirp4netns has its own).
pub fn refusal(config: &NetworkConfig, mode: &NetworkMode, lock: Lock, host_networks: &[Ipv4Net]) -> Option<String> {
    if config.accel.is_off() {
        return None;
    }
    if !matches!(mode, NetworkMode::Pasta | NetworkMode::Slirp4netns) {
        return Some(format!(
            "it works with pasta and slirp4netns; {mode} {}",
            match mode {
                NetworkMode::Bridge(_) => "reaches the host's speed through a veth already",
                _ => "has no helper whose reach it could mirror",
            }
        ));
    }
    if let Some(o) =
        config.helper_options.iter().find(|o| OUTBOUND_OPTIONS.iter().any(|out| o.split('=').next() == Some(out)))
    {
        return Some(format!(
            "the helper option {o} moves the helper's own connections, which switched sockets would not follow"
        ));
    }
    match (lock, mode) {
        (Lock::Device, NetworkMode::Pasta) => Some(
            "this kernel lets only CAP_NET_ADMIN lock a TCP socket to its peer, and a socket confined to its \
             device instead could reach the host address pasta keeps inside the run (slirp4netns runs, and \
             pasta runs as root, can have it)"
                .into(),
        ),
        (Lock::Device, _) => {
            let slirp: Ipv4Net = SLIRP_NETWORKS[0].parse().ok()?;
            host_networks.iter().find(|n| n.overlaps(&slirp)).map(|n| {
                format!(
                    "this host routes {n}, where slirp4netns has its own virtual hosts, and without the peer \
                     lock (this kernel lets only CAP_NET_ADMIN put it on a TCP socket) a switched socket could \
                     reach the real ones"
                )
            })
        }
        (Lock::Peer, _) => None,
    }
}

/// What a run of `config` in `mode` gets from the accelerator, as `plan`
/// shows it (pure over the probed [`probe::Offer`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AccelPlan {
    /// Whether the run would have it.
    pub on: bool,
    /// The lock of its switched sockets.
    pub lock: Lock,
    /// Whether servers would take published TCP listeners over.
    pub listeners_handed_over: bool,
    /// Why not, when it is off.
    pub reason: Option<String>,
}

/// The [`AccelPlan`] of a run, `None` when it does not ask for one.
pub fn describe(
    config: &NetworkConfig,
    mode: &NetworkMode,
    offer: &probe::Offer,
    host_networks: &[Ipv4Net],
    relayed: bool,
) -> Option<AccelPlan> {
    if config.accel.is_off() {
        return None;
    }
    let reason = refusal(config, mode, offer.lock, host_networks).or(match &offer.availability {
        probe::Availability::Available => None,
        probe::Availability::Unavailable(why) => Some(why.clone()),
    });
    Some(AccelPlan {
        on: reason.is_none(),
        lock: offer.lock,
        listeners_handed_over: reason.is_none() && relayed && offer.lock == Lock::Peer,
        reason,
    })
}

/// The accelerator of a run between the fork and the start of the command.
pub(super) struct Pending {
    receiver: Receiver,
    lock: Lock,
    mode: NetworkMode,
    host_loopback_ports: Vec<u16>,
}

/// The networks this host routes (a slirp4netns network the host routes too
/// refuses the device lock).
pub fn host_networks() -> Vec<Ipv4Net> {
    match crate::bridge::netlink::Netlink::open().and_then(|mut n| n.host_networks()) {
        Ok(nets) => nets,
        Err(e) => {
            log::debug!("list this host's networks: {e}");
            Vec::new()
        }
    }
}

/// The hook for the command's process, when the run asks for the
/// accelerator and can have it; otherwise the warning is printed here.
/// `relayed`: published TCP ports the builtin driver relays (servers may
/// take their listeners over, under the peer lock).
pub(super) fn prepare(
    config: &NetworkConfig,
    mode: &NetworkMode,
    proc_root: &Path,
    relayed: bool,
) -> Option<(ChildHook, Pending)> {
    if config.accel == AccelMode::Off {
        return None;
    }
    let lock = Lock::available();
    let nets = if lock == Lock::Device { host_networks() } else { Vec::new() };
    let why = refusal(config, mode, lock, &nets).or_else(|| match probe::probe(proc_root) {
        probe::Availability::Available => None,
        probe::Availability::Unavailable(why) => Some(why),
    });
    if let Some(why) = why {
        log::warn!("accelerator off: {why}");
        return None;
    }
    if relayed && lock == Lock::Device {
        log::info!(
            "accelerator: published ports stay relayed (a listener handed to a server needs the peer lock, \
             which this kernel gives only to CAP_NET_ADMIN)"
        );
    }
    let ingress = relayed && lock == Lock::Peer;
    match child::pair(Intercept { bind: ingress, refuse_io_uring: lock == Lock::Device }) {
        Ok((hook, receiver)) => Some((
            hook,
            Pending { receiver, lock, mode: mode.clone(), host_loopback_ports: config.host_loopback_ports.clone() },
        )),
        Err(e) => {
            log::warn!("accelerator off: {}", probe::reason(&e));
            None
        }
    }
}

/// Once the command runs: take its listener and start the supervisor (in
/// this thread's namespace, the owner's). `None`, after one warning, when
/// the command's process could not install the filter.
pub(super) fn start(
    pending: Pending,
    ns_pid: u32,
    proc_root: &Path,
    ingress: Option<(Vec<Held>, crate::ports::relay::ListenerReleaser)>,
) -> Option<Supervisor> {
    let installed = match pending.receiver.receive(Duration::from_secs(5)) {
        Ok(i) => i,
        Err(e) => {
            log::warn!("accelerator off: {}", probe::reason(&e));
            return None;
        }
    };
    let own: Vec<IpAddr> = crate::host::nsaddr::namespace_addresses(proc_root, ns_pid)
        .map(|list| list.into_iter().map(|a| a.address).collect())
        .unwrap_or_default();
    let helper_networks = if pending.mode == NetworkMode::Slirp4netns {
        SLIRP_NETWORKS.iter().filter_map(|n| helper_network(n)).collect()
    } else {
        Vec::new()
    };
    let reach = Reach {
        ipv6: own.iter().any(IpAddr::is_ipv6),
        own,
        helper_networks,
        host_loopback_ports: pending.host_loopback_ports,
        own_servers: Vec::new(),
    };
    let ingress =
        ingress.filter(|_| pending.lock == Lock::Peer).map(|(held, releaser)| Ingress::new(held, Box::new(releaser)));
    let lock = pending.lock;
    let cfg = Config { reach, proc_root: proc_root.to_owned(), ingress, lock };
    match Supervisor::start(installed, cfg) {
        Ok(s) => {
            let how = match lock {
                Lock::Peer => "each locked to its peer",
                Lock::Device => "each bound to its route's device",
            };
            log::info!("accelerator on: TCP connections leave through sockets of this namespace, {how}");
            Some(s)
        }
        Err(e) => {
            log::warn!("accelerator failed: {}", probe::reason(&e));
            None
        }
    }
}

fn helper_network(text: &str) -> Option<HelperNetwork> {
    if let Ok(v4) = text.parse() {
        return Some(HelperNetwork::V4(v4));
    }
    text.parse().ok().map(HelperNetwork::V6)
}

/// Stops the supervisor and logs what it did.
pub(super) fn stop(supervisor: Supervisor) {
    let report = supervisor.stop();
    log::info!("accelerator: {report}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(mode: NetworkMode, options: &[&str]) -> NetworkConfig {
        let mut c = NetworkConfig::new(mode);
        c.accel = AccelMode::Socket;
        c.helper_options = options.iter().map(|s| s.to_string()).collect();
        c
    }

    fn peer(c: &NetworkConfig, mode: &NetworkMode) -> Option<String> {
        refusal(c, mode, Lock::Peer, &[])
    }

    #[test]
    fn pasta_and_slirp4netns_runs_can_have_it() {
        assert_eq!(peer(&config(NetworkMode::Pasta, &["--mtu", "1500"]), &NetworkMode::Pasta), None);
        let slirp = config(NetworkMode::Slirp4netns, &["enable_ipv6=true"]);
        assert_eq!(peer(&slirp, &NetworkMode::Slirp4netns), None);
        assert_eq!(refusal(&slirp, &NetworkMode::Slirp4netns, Lock::Device, &["10.231.0.0/24".parse().unwrap()]), None);
    }

    #[test]
    fn other_modes_and_outbound_options_are_refused_with_the_reason() {
        let bridge = peer(&config(NetworkMode::Bridge(None), &[]), &NetworkMode::Bridge(None)).unwrap();
        assert!(bridge.contains("veth"), "{bridge}");
        let lo = peer(&config(NetworkMode::Loopback, &[]), &NetworkMode::Loopback).unwrap();
        assert!(lo.contains("no helper"), "{lo}");
        let out = peer(&config(NetworkMode::Pasta, &["--outbound-if4", "eth1"]), &NetworkMode::Pasta).unwrap();
        assert!(out.contains("--outbound-if4"), "{out}");
        let slirp = config(NetworkMode::Slirp4netns, &["outbound_addr=10.0.0.5"]);
        assert!(peer(&slirp, &NetworkMode::Slirp4netns).unwrap().contains("outbound_addr=10.0.0.5"));
    }

    #[test]
    fn without_the_peer_lock_pasta_and_a_slirp4netns_network_the_host_routes_are_refused() {
        let pasta = refusal(&config(NetworkMode::Pasta, &[]), &NetworkMode::Pasta, Lock::Device, &[]).unwrap();
        assert!(pasta.contains("CAP_NET_ADMIN") && pasta.contains("pasta keeps inside"), "{pasta}");
        let qemu = ["10.0.2.0/24".parse().unwrap()];
        let slirp = config(NetworkMode::Slirp4netns, &[]);
        let why = refusal(&slirp, &NetworkMode::Slirp4netns, Lock::Device, &qemu).unwrap();
        assert!(why.contains("10.0.2.0/24"), "{why}");
        assert_eq!(refusal(&slirp, &NetworkMode::Slirp4netns, Lock::Peer, &qemu), None);
    }

    #[test]
    fn plan_says_what_a_run_gets_and_why_not() {
        let offer = |lock| probe::Offer { availability: probe::Availability::Available, lock };
        let pasta = config(NetworkMode::Pasta, &[]);
        let full = describe(&pasta, &NetworkMode::Pasta, &offer(Lock::Peer), &[], true).unwrap();
        assert!(full.on && full.listeners_handed_over && full.reason.is_none(), "{full:?}");
        let device = describe(&pasta, &NetworkMode::Pasta, &offer(Lock::Device), &[], true).unwrap();
        assert!(!device.on && !device.listeners_handed_over && device.reason.is_some(), "{device:?}");
        let slirp = config(NetworkMode::Slirp4netns, &[]);
        let egress = describe(&slirp, &NetworkMode::Slirp4netns, &offer(Lock::Device), &[], true).unwrap();
        assert!(egress.on && !egress.listeners_handed_over, "{egress:?}");
        let none = probe::Offer { availability: probe::Availability::Unavailable("no".into()), lock: Lock::Peer };
        assert_eq!(
            describe(&slirp, &NetworkMode::Slirp4netns, &none, &[], false).unwrap().reason.as_deref(),
            Some("no")
        );
        let mut off = slirp.clone();
        off.accel = AccelMode::Off;
        assert_eq!(describe(&off, &NetworkMode::Slirp4netns, &offer(Lock::Peer), &[], false), None);
    }

    #[test]
    fn off_is_never_refused() {
        let mut c = config(NetworkMode::Loopback, &[]);
        c.accel = AccelMode::Off;
        assert_eq!(peer(&c, &NetworkMode::Loopback), None);
    }
}

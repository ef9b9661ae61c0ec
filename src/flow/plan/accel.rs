//! What the accelerator (`--accel socket`) contributes to a plan, purely
//! from the request and the probed [`Offer`]: its two steps when the run
//! can have it, or one warning saying why not (the run then takes the
//! normal path; asking for it never refuses a run).

use super::{Input, TargetKind};
use crate::accel::probe::Availability;
use crate::accel::switch::Lock;
use crate::flow::steps::Step;
use crate::model::cidr::Ipv4Net;
use crate::model::config::NetworkConfig;
use crate::model::mode::NetworkMode;
use crate::model::port::PortProto;

/// slirp4netns's network inside the namespace (its `--cidr` is pinned).
pub(crate) const SLIRP_NETWORKS: [&str; 2] = ["10.0.2.0/24", "fd00::/64"];

/// pasta's and slirp4netns's options that move the helper's own outgoing
/// sockets; a switched socket would not follow them.
const OUTBOUND_OPTIONS: [&str; 6] =
    ["-o", "--outbound", "--outbound-if4", "--outbound-if6", "outbound_addr", "outbound_addr6"];

/// What a run gets from the accelerator, as `plan` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AccelPlan {
    /// Whether the run has it.
    pub on: bool,
    /// The lock of its switched sockets.
    pub lock: Lock,
    /// Whether servers take published TCP listeners over.
    pub listeners_handed_over: bool,
    /// Why not, when it is off.
    pub reason: Option<String>,
}

impl AccelPlan {
    /// The plan's line about it; `relayed`: the builtin driver relays
    /// published TCP ports.
    pub fn line(&self, relayed: bool) -> String {
        let listeners = match (self.listeners_handed_over, relayed) {
            (true, _) => "; published TCP listeners handed to their servers",
            (false, true) => "; published TCP ports stay relayed (handing a listener over needs the peer lock)",
            (false, false) => "",
        };
        match &self.reason {
            Some(why) => format!("accelerator: off: {why}"),
            None => format!(
                "accelerator: on, switched sockets locked {}{listeners}",
                match self.lock {
                    Lock::Peer => "to their peer",
                    Lock::Device => "to their route's device",
                }
            ),
        }
    }

    /// The steps it adds: the first before the child is forked, the second
    /// once the command runs.
    pub fn steps(&self) -> Option<(Step, Step)> {
        self.on.then_some((Step::PrepareAccel { lock: self.lock, listeners: self.listeners_handed_over }, Step::StartAccel))
    }
}

/// Why `config` in `mode` cannot have the accelerator with `lock`, or
/// `None`. `host_networks`: the networks this host routes (a device lock
/// must not reach a real network where slirp4netns has its own).
pub fn refusal(config: &NetworkConfig, mode: &NetworkMode, lock: Lock, host_networks: &[Ipv4Net]) -> Option<String> {
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

/// The [`AccelPlan`] of a setup, `None` when it does not ask for one.
pub(super) fn plan(input: &Input<'_>) -> Option<AccelPlan> {
    let config = &input.req.network;
    if config.accel.is_off() {
        return None;
    }
    if !input.req.command {
        return Some(off(Lock::Device, "only a command `run` starts can be started under its filter".into()));
    }
    let Some(offer) = input.host.accel.as_ref() else {
        return Some(off(Lock::Device, "the host was not probed for it".into()));
    };
    let elsewhere = (input.req.target != TargetKind::NewChild)
        .then(|| "a command run in a namespace someone else made has no helper whose reach it could mirror".into());
    let reason = refusal(config, input.mode, offer.lock, &offer.host_networks).or(elsewhere).or(
        match &offer.availability {
            Availability::Available => None,
            Availability::Unavailable(why) => Some(why.clone()),
        },
    );
    if let Some(why) = reason {
        return Some(off(offer.lock, why));
    }
    let relayed = relays_tcp(input.builtin, &config.ports);
    Some(AccelPlan { on: true, lock: offer.lock, listeners_handed_over: relayed && offer.lock == Lock::Peer, reason: None })
}

/// Whether the builtin driver relays published TCP ports.
pub(crate) fn relays_tcp(builtin: bool, ports: &[crate::model::port::PortMapping]) -> bool {
    builtin && ports.iter().any(|p| p.proto == PortProto::Tcp)
}

fn off(lock: Lock, why: String) -> AccelPlan {
    AccelPlan { on: false, lock, listeners_handed_over: false, reason: Some(why) }
}

/// The accelerator's available offer on a host (for tests).
#[cfg(test)]
pub(crate) fn offer(lock: Lock) -> crate::accel::probe::Offer {
    crate::accel::probe::Offer { availability: Availability::Available, lock, host_networks: Vec::new() }
}

#[cfg(test)]
#[path = "accel_tests.rs"]
mod tests;

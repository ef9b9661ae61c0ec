//! What each mode requires of the host (blockers) and which needs it cannot
//! meet (shortfalls), as reason text with the fix to try. Pure.

use std::fmt::Write as _;

use super::{Mode, Needs, Rung};
use crate::helpers::pasta::features::TapBugs;
use crate::host::probe::{ContainerHint, HostCaps};

/// Long options pelagos-net's pasta argv always uses (`-t`/`-u`/`-T`/`-U`
/// are listed by their long names; `--no-map-gw` keeps the host's loopback
/// out of reach).
const PASTA_OPTIONS: &[&str] = &[
    "--config-net",
    "--foreground",
    "--stderr",
    "--no-map-gw",
    "--netns",
    "--tcp-ports",
    "--udp-ports",
    "--tcp-ns",
    "--udp-ns",
];
/// Long options the slirp4netns backend's argv uses ([`crate::helpers::slirp::args`]),
/// `--userns-path` aside (rootless only).
const SLIRP_OPTIONS: &[&str] =
    &["--configure", "--mtu", "--exit-fd", "--ready-fd", "--api-socket", "--netns-type", "--disable-host-loopback"];

/// Why a mode cannot run here, and what would fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Blocker {
    /// What is wrong (lowercase, no trailing period).
    pub reason: String,
    /// A command or step that fixes it, when there is one.
    pub fix: Option<String>,
}

impl Blocker {
    fn new(reason: impl Into<String>, fix: impl Into<Option<String>>) -> Self {
        Self { reason: reason.into(), fix: fix.into() }
    }
}

/// Everything that stops `mode` from running on this host; empty when it can.
pub(super) fn blockers(mode: &Mode, needs: &Needs, caps: &HostCaps) -> Vec<Blocker> {
    let mut out = Vec::new();
    // Creating a namespace does not count against a mode when it exists.
    let netns_blocker = |caps: &HostCaps| if needs.existing_namespace { None } else { netns_blocker(caps) };
    match mode {
        Mode::Host => {}
        Mode::Loopback => out.extend(netns_blocker(caps)),
        Mode::Pasta => {
            let mut needed: Vec<&str> = PASTA_OPTIONS.to_vec();
            needed.push(if caps.euid == 0 { "--runas" } else { "--userns" });
            let install = "install passt (`sudo apt install passt` or `sudo dnf install passt`)";
            match (caps.pasta.path(), caps.pasta.features()) {
                (None, _) => out.push(Blocker::new("pasta is not installed (no `pasta` on PATH)", install.to_owned())),
                (Some(path), None) => out.push(Blocker::new(
                    format!("pasta at {} could not be probed: {}", path.display(), broken_error(&caps.pasta)),
                    "reinstall passt".to_owned(),
                )),
                (Some(path), Some(p)) => {
                    let missing: Vec<&str> = needed.into_iter().filter(|o| !p.features.has(o)).collect();
                    if !missing.is_empty() {
                        let reason =
                            format!("pasta at {} is too old: its --help lacks {}", path.display(), missing.join(", "));
                        out.push(Blocker::new(reason, "install a newer passt (2023 or later)".to_owned()));
                    }
                }
            }
            out.extend(tun_blocker(caps));
            out.extend(netns_blocker(caps));
            if !caps.default_route.any() {
                let fix = "add a default route (`sudo ip route add default via GATEWAY`)".to_owned();
                out.push(Blocker::new("the host has no default route, and pasta refuses to start without one", fix));
            }
        }
        Mode::Slirp4netns => {
            match (caps.slirp4netns.path(), caps.slirp4netns.features()) {
                (None, _) => out.push(Blocker::new(
                    "slirp4netns is not installed (no `slirp4netns` on PATH)",
                    "install slirp4netns (`sudo apt install slirp4netns` or `sudo dnf install slirp4netns`)".to_owned(),
                )),
                (Some(path), None) => out.push(Blocker::new(
                    format!(
                        "slirp4netns at {} could not be probed: {}",
                        path.display(),
                        broken_error(&caps.slirp4netns)
                    ),
                    "reinstall slirp4netns".to_owned(),
                )),
                (Some(path), Some(f)) => {
                    let mut needed: Vec<&str> = SLIRP_OPTIONS.to_vec();
                    if caps.euid != 0 {
                        needed.push("--userns-path");
                    }
                    let missing: Vec<&str> = needed.into_iter().filter(|o| !f.has(o)).collect();
                    if !missing.is_empty() {
                        let reason = format!(
                            "slirp4netns at {} is too old: its --help lacks {}",
                            path.display(),
                            missing.join(", ")
                        );
                        out.push(Blocker::new(reason, "install slirp4netns 0.4 or later".to_owned()));
                    }
                }
            }
            out.extend(tun_blocker(caps));
            out.extend(netns_blocker(caps));
        }
        Mode::Bridge(_) if caps.euid != 0 => {
            // Rootless: the network lives in the user's network holder,
            // which pasta connects.
            if caps.pasta.path().is_none() {
                let install = "install passt (`sudo apt install passt` or `sudo dnf install passt`)";
                out.push(Blocker::new("a rootless bridge network needs pasta for its holder", install.to_owned()));
            }
            if needs.existing_namespace {
                out.push(Blocker::new(
                    "a rootless bridge network is joined by runs only (their namespaces are made in its holder)",
                    "run the command with `pelagos-net run`, or attach as root".to_owned(),
                ));
            }
            out.extend(tun_blocker(caps));
            out.extend(netns_blocker(caps));
            if !caps.default_route.any() {
                let fix = "add a default route (`sudo ip route add default via GATEWAY`)".to_owned();
                out.push(Blocker::new("the host has no default route, and pasta refuses to start without one", fix));
            }
        }
        Mode::Bridge(_) => {
            if !caps.cap_net_admin {
                out.push(Blocker::new("bridge networks need CAP_NET_ADMIN", "run as root (`sudo`)".to_owned()));
            } else if caps.netns_is_own == Some(false) {
                out.push(Blocker::new(
                    "this process's network namespace belongs to a parent user namespace, so its CAP_NET_ADMIN does not reach it",
                    "run as root on the host, or in a user namespace that owns its network namespace (`unshare --user --net`)".to_owned(),
                ));
            }
            if caps.cap_net_admin && !caps.cap_sys_admin {
                let reason = "bridge networks need CAP_SYS_ADMIN to mount their named network namespace";
                out.push(Blocker::new(reason, "run as root (`sudo`)".to_owned()));
            }
            if let Some(problem) = caps.nftables.problem() {
                out.push(Blocker::new(problem.reason, problem.fix.to_owned()));
            }
        }
    }
    out
}

/// The needs `mode` cannot meet, as reasons; empty when it meets them all.
pub(super) fn shortfalls(mode: &Mode, needs: &Needs) -> Vec<String> {
    let mut out = Vec::new();
    let ports = needs.published_ports.then_some(&needs.ports);
    // What only the mode's own forwarding lacks; the builtin driver has it.
    let native_ports = ports.filter(|_| needs.native_ports_only);
    match mode {
        Mode::Host => {}
        Mode::Loopback => {
            if needs.egress {
                out.push("loopback has no egress".to_owned());
            }
            if needs.published_ports && needs.native_ports_only {
                out.push("loopback has no port forwarding of its own (the builtin port driver has)".to_owned());
            }
            if needs.host_loopback {
                out.push("loopback cannot reach ports of the host's 127.0.0.1".to_owned());
            }
        }
        Mode::Pasta => {}
        Mode::Slirp4netns => {
            if needs.host_loopback {
                out.push("slirp4netns cannot give the namespace ports of the host's 127.0.0.1".to_owned());
            }
            let can = crate::helpers::slirp::api::supported_port_features();
            if native_ports.is_some_and(|p| p.ranges) && !can.ranges {
                out.push("slirp4netns cannot publish port ranges (its API forwards one port at a time)".to_owned());
            }
            if native_ports.is_some_and(|p| p.ipv6) && !can.ipv6_host_ip {
                out.push(
                    "slirp4netns cannot publish ports on IPv6 host addresses (its API binds IPv4 only)".to_owned(),
                );
            }
            if native_ports.is_some_and(|p| p.udp) && !can.udp {
                out.push("slirp4netns cannot publish UDP ports".to_owned());
            }
            if native_ports.is_some_and(|p| p.host_ip_binding) && !can.host_ip {
                out.push("slirp4netns cannot bind a published port to one host address".to_owned());
            }
        }
        Mode::Bridge(_) => {
            if needs.host_loopback {
                out.push("bridge networks cannot give the namespace ports of the host's 127.0.0.1".to_owned());
            }
            if native_ports.is_some_and(|p| p.ipv6) {
                out.push(
                    "bridge networks are IPv4-only and cannot DNAT IPv6 ports (the builtin port driver can)".to_owned(),
                );
            }
        }
    }
    let shared = matches!(mode, Mode::Host | Mode::Bridge(_));
    if needs.container_to_container && !shared {
        out.push(format!("{mode} cannot connect containers to each other (that needs a bridge network)"));
    }
    if let (Some(name), false) = (&needs.named_network, matches!(mode, Mode::Bridge(_))) {
        out.push(format!("{mode} cannot join the named network {name} (named networks are bridge networks)"));
    }
    out
}

/// The tap-path TCP bugs of `bugs`, with the releases that fixed them.
pub(super) fn tap_bugs_text(bugs: TapBugs) -> String {
    let mut text = String::from("known TCP bugs on its tap path:");
    if bugs.server_first_hang {
        text.push_str(" connections where the server speaks first can hang (fixed in 2023_10_04)");
    }
    if bugs.half_close_corruption {
        let sep = if bugs.server_first_hang { ";" } else { "" };
        let _ = write!(text, "{sep} data after a half-close can be corrupted (fixed in 2024_08_06)");
    }
    text
}

fn broken_error<F>(helper: &crate::host::probe::Helper<F>) -> &str {
    match helper {
        crate::host::probe::Helper::Broken { error, .. } => error,
        _ => "unknown error",
    }
}

/// Creating a network namespace needs CAP_SYS_ADMIN or a user namespace.
fn netns_blocker(caps: &HostCaps) -> Option<Blocker> {
    if caps.cap_sys_admin {
        return None;
    }
    let hint = caps.userns_blocker()?;
    let fix = hint.split_once("Fix: ").map(|(_, f)| f.to_owned());
    let fix = match container_label(caps) {
        Some(label) => Some(format!(
            "inside a container ({label}): {} on the host, not in the container",
            fix.as_deref().unwrap_or("allow user namespaces")
        )),
        None => fix,
    };
    Some(Blocker::new(hint, fix))
}

fn tun_blocker(caps: &HostCaps) -> Option<Blocker> {
    let problem = caps.tun.problem.as_ref()?;
    // The reason without the fix: the fix is the blocker's own field, and
    // printing it in both doubled it.
    Some(Blocker::new(problem.summary(), problem.fix(container_label(caps).as_deref())))
}

/// A short name for the first container hint.
fn container_label(caps: &HostCaps) -> Option<String> {
    caps.container.first().map(ContainerHint::label)
}

/// `"mode: why"` per distinct reason, modes with the same reason grouped
/// (`"pasta and slirp4netns: /dev/net/tun does not exist..."`).
pub(super) fn summary(rungs: &[&Rung]) -> Vec<String> {
    let mut groups: Vec<(Vec<String>, String)> = Vec::new();
    for rung in rungs {
        let why = rung.why_not();
        match groups.iter_mut().find(|(_, w)| *w == why) {
            Some((modes, _)) => modes.push(rung.mode.to_string()),
            None => groups.push((vec![rung.mode.to_string()], why)),
        }
    }
    groups
        .into_iter()
        .map(|(modes, why)| match modes.split_last() {
            Some((last, [])) => format!("{last}: {why}"),
            Some((last, rest)) => format!("{} and {last}: {why}", rest.join(", ")),
            None => why,
        })
        .collect()
}

/// The distinct fixes of every blocker in `rungs`, in order.
pub(super) fn fixes_of(rungs: &[Rung]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for fix in rungs.iter().flat_map(|r| &r.blockers).filter_map(|b| b.fix.clone()) {
        if !out.contains(&fix) {
            out.push(fix);
        }
    }
    out
}

pub(super) fn version_text(v: &crate::helpers::pasta::features::PastaVersion) -> String {
    use crate::helpers::pasta::features::PastaVersion;
    match v {
        PastaVersion::Unknown => "unknown version".to_owned(),
        PastaVersion::Dated(s) | PastaVersion::Other(s) => s.clone(),
    }
}

//! `doctor`: every host probe as a checklist line (pass, warn, fail or
//! info) with the concrete fix for each problem, and which network modes
//! this host can run, for the caller and as root. Pure over [`HostCaps`].

use crate::flow::select::{Fallback, Mode, Needs, Request, Requested, select};
use crate::host::probe::{ContainerHint, Helper, HostCaps};
use serde::Serialize;

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Pass,
    /// Works, with a caveat.
    Warn,
    /// Blocks a mode.
    Fail,
    /// For information.
    Info,
}

/// One checklist line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// Outcome.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// The concrete fix, for warnings and failures.
    pub fix: Option<String>,
}

/// Whether a mode can run, and why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModeAvailability {
    /// The mode.
    pub mode: Mode,
    /// Whether it can run.
    pub available: bool,
    /// Why not, or what it provides.
    pub detail: String,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The checklist.
    pub checks: Vec<Check>,
    /// Modes for the caller.
    pub modes: Vec<ModeAvailability>,
    /// Modes as root (evaluated on the same host with root's privileges).
    pub modes_as_root: Vec<ModeAvailability>,
    /// True when at least one networked mode (pasta, slirp4netns, bridge) works for the caller.
    pub networked: bool,
}

fn check(name: &'static str, status: Status, detail: impl Into<String>, fix: Option<String>) -> Check {
    Check { name, status, detail: detail.into(), fix }
}

/// The checklist for `caps`.
pub fn checks(caps: &HostCaps) -> Vec<Check> {
    let mut out = Vec::new();
    let who = if caps.euid == 0 { "root".to_string() } else { format!("uid {}", caps.euid) };
    out.push(check(
        "privileges",
        Status::Info,
        format!("{who}; CAP_NET_ADMIN {}, CAP_SYS_ADMIN {}", yes(caps.cap_net_admin), yes(caps.cap_sys_admin)),
        None,
    ));
    out.push(kernel_check(caps.kernel_release.as_deref()));
    out.push(match caps.userns_blocker() {
        None => check("user namespaces", Status::Pass, "can be created", None),
        Some(hint) => check("user namespaces", Status::Fail, "cannot be created", Some(hint)),
    });
    if caps.in_userns {
        out.push(check("running in a user namespace", Status::Info, "already inside a user namespace", None));
    }
    out.push(match &caps.tun.problem {
        None => check("tun device", Status::Pass, format!("{} opens read-write", caps.tun.path.display()), None),
        Some(problem) => check(
            "tun device",
            Status::Fail,
            format!("{}; pasta and slirp4netns need it", problem.summary()),
            problem.fix(caps.container.first().map(ContainerHint::label).as_deref()),
        ),
    });
    let install_pasta =
        "install passt: `sudo apt-get install passt` (Debian/Ubuntu) or `sudo dnf install passt` (Fedora)";
    out.push(match &caps.pasta {
        Helper::Missing | Helper::NotProbed => {
            check("pasta", Status::Fail, "not found on PATH", Some(install_pasta.into()))
        }
        Helper::Broken { path, error } => check(
            "pasta",
            Status::Fail,
            format!("{} does not work: {error}", path.display()),
            Some(install_pasta.into()),
        ),
        Helper::Found { path, features } => {
            let version = match &features.features.version {
                crate::helpers::pasta::features::PastaVersion::Unknown => "prints \"unknown version\"".to_string(),
                crate::helpers::pasta::features::PastaVersion::Dated(v)
                | crate::helpers::pasta::features::PastaVersion::Other(v) => v.clone(),
            };
            let bugs = features.tcp_tap_bugs;
            if bugs.any() {
                let mut fixed = Vec::new();
                if bugs.server_first_hang {
                    fixed.push("2023_10_04 (server-speaks-first connections hang)");
                }
                if bugs.half_close_corruption {
                    fixed.push("2024_08_06 (half-closed connections duplicated or truncated)");
                }
                check(
                    "pasta",
                    Status::Warn,
                    format!("{} ({version}) breaks TCP on its tap path (non-loopback clients, egress)", path.display()),
                    Some(format!(
                        "upgrade passt to a build from {} or later; loopback clients are unaffected",
                        fixed.join(" and ")
                    )),
                )
            } else {
                check("pasta", Status::Pass, format!("{} ({version})", path.display()), None)
            }
        }
    });
    out.push(port_driver_check(caps));
    out.push(match &caps.slirp4netns {
        Helper::Found { path, features } => check(
            "slirp4netns",
            Status::Pass,
            format!(
                "{} (version {})",
                path.display(),
                features.version.map_or_else(|| "unknown".into(), |v| v.to_string())
            ),
            None,
        ),
        Helper::Missing | Helper::NotProbed => check(
            "slirp4netns",
            Status::Info,
            "not installed (a fallback when pasta is unusable)",
            Some("`sudo apt-get install slirp4netns`".into()),
        ),
        Helper::Broken { path, error } => {
            check("slirp4netns", Status::Warn, format!("{} does not work: {error}", path.display()), None)
        }
    });
    out.push(if caps.default_route.any() {
        check("default route", Status::Pass, "present", None)
    } else {
        check(
            "default route",
            Status::Warn,
            "none: pasta refuses to start without one",
            Some("configure the host's network (a default route), or use --network loopback".into()),
        )
    });
    out.push(match caps.nftables.problem() {
        None => check("nftables", Status::Pass, "nf_tables available (bridge NAT and published ports)", None),
        Some(problem) => check(
            "nftables",
            Status::Warn,
            format!("{}: bridge networks need it for NAT and published ports", problem.reason),
            Some(problem.fix.into()),
        ),
    });
    let subids = !caps.subuid.is_empty() && caps.newuidmap.is_some();
    out.push(check(
        "subordinate ids",
        Status::Info,
        if subids { "subuid ranges and newuidmap present" } else { "none (the namespace maps only your own uid)" },
        None,
    ));
    if caps.in_container() {
        out.push(check(
            "container",
            Status::Info,
            format!(
                "running inside a container ({})",
                caps.container.iter().map(ContainerHint::label).collect::<Vec<_>>().join(", ")
            ),
            Some(
                "the container may need `--device /dev/net/tun` and a seccomp profile that allows user namespaces"
                    .into(),
            ),
        ));
    }
    out
}

/// Whether the host's own firewall lets bridge networks forward: `found`
/// is what [`crate::bridge::firewall::hostfw::probe`] saw (`None`: it could
/// not look, as without CAP_NET_ADMIN).
pub fn host_firewall_check(found: Option<&crate::bridge::firewall::hostfw::HostFirewall>) -> Check {
    use crate::bridge::firewall::hostfw::HostFirewall;
    match found {
        None => check("host firewall", Status::Info, "not checked (needs CAP_NET_ADMIN: run doctor as root)", None),
        Some(HostFirewall::Open) => check("host firewall", Status::Pass, "forwarded traffic is accepted", None),
        Some(HostFirewall::ForwardDrop) => check(
            "host firewall",
            Status::Warn,
            "iptables' FORWARD policy is DROP (as docker leaves it): bridge setup inserts accept rules for each \
             pelagos bridge with iptables; without iptables, bridges forward nothing",
            Some(format!("for network NAME on bridge BR: {}", crate::bridge::firewall::hostfw::accept_commands("NAME", "BR").join(" && "))),
        ),
        Some(HostFirewall::Firewalld) => check(
            "host firewall",
            Status::Warn,
            "firewalld is active: its forward chain rejects traffic of interfaces outside a zone that forwards",
            Some("for each pelagos bridge BR: `firewall-cmd --permanent --zone=trusted --add-interface=BR && firewall-cmd --reload`".into()),
        ),
    }
}

/// Whether the kernel has every feature pelagos-net needs
/// ([`crate::host::kernel::FEATURES`]), and what an older one lacks.
fn kernel_check(release: Option<&str>) -> Check {
    use crate::host::kernel;
    let Some(release) = release else {
        return check("kernel", Status::Info, "release unknown (no sys/kernel/osrelease)", None);
    };
    let missing = kernel::missing(release);
    if missing.is_empty() {
        return check("kernel", Status::Pass, format!("Linux {release}"), None);
    }
    let lacks: Vec<String> = missing.iter().map(|f| format!("{} (Linux {}: {})", f.name, f.since, f.used_for)).collect();
    check(
        "kernel",
        Status::Warn,
        format!("Linux {release} lacks {}", lacks.join("; ")),
        Some(format!("boot Linux {} or later (Debian 11, RHEL 9, Ubuntu 22.04 and newer have it)", kernel::minimum())),
    )
}

/// The user's network holder of rootless bridge networks (reads its state).
pub fn holder_check(paths: &crate::state::paths::Paths, caps: &HostCaps) -> Check {
    let helpers = caps.newuidmap.clone().zip(caps.newgidmap.clone());
    let mapping = crate::holder::idmap::IdMapping::choose(caps.uid, caps.uid, &caps.subuid, &caps.subgid, helpers);
    check("network holder", Status::Info, crate::holder::usage::describe(paths, &mapping), None)
}

/// What `--port-driver auto` does with published ports on this host.
fn port_driver_check(caps: &HostCaps) -> Check {
    let detail = match caps.pasta.features() {
        Some(f) if f.tcp_tap_bugs.any() => {
            "auto: builtin in every mode but bridge (this pasta build breaks published TCP ports: its tap path \
             for non-loopback clients, and large transfers on its splice path); bridge: nftables"
        }
        Some(_) => {
            "auto: pasta's own forwarding in pasta mode; slirp4netns and loopback modes: builtin; bridge: nftables"
        }
        None => "auto: builtin in slirp4netns and loopback modes; bridge: nftables",
    };
    check("port driver", Status::Pass, detail, None)
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Availability of each mode for `caps` (asked for explicitly, strict).
pub fn modes(caps: &HostCaps) -> Vec<ModeAvailability> {
    [Mode::Pasta, Mode::Slirp4netns, Mode::Bridge(None), Mode::Loopback]
        .into_iter()
        .map(|mode| {
            let needs = Needs { egress: mode != Mode::Loopback, ..Needs::default() };
            let req = Request { mode: Requested::Explicit(mode.clone()), needs, fallback: Fallback::Strict };
            match select(&req, caps) {
                Ok(d) if d.mode == mode => ModeAvailability { mode, available: true, detail: d.reason },
                Ok(d) => ModeAvailability { mode, available: false, detail: d.reason },
                Err(e) => ModeAvailability { mode, available: false, detail: e.to_string() },
            }
        })
        .collect()
}

/// `caps` as root would see the same host: all capabilities, a tun device
/// root can open if it exists.
pub fn as_root(caps: &HostCaps) -> HostCaps {
    let mut root = caps.clone();
    root.euid = 0;
    root.cap_net_admin = true;
    root.cap_sys_admin = true;
    if matches!(root.tun.problem, Some(crate::host::diagnose::TunProblem::NotPermitted { .. })) {
        root.tun.problem = None;
    }
    root
}

/// The full report.
pub fn report(caps: &HostCaps) -> Report {
    let modes = modes(caps);
    let networked = modes.iter().any(|m| m.available && m.mode != Mode::Loopback);
    Report { checks: checks(caps), modes_as_root: self::modes(&as_root(caps)), modes, networked }
}

/// Human-readable text of a report. Each fix is printed once, under the
/// first problem it fixes; when the caller's modes are root's (as root, or
/// a host where privileges change nothing) they are listed once.
pub fn render(report: &Report) -> String {
    let mut s = String::new();
    let mut fixes_shown: Vec<&str> = Vec::new();
    for c in &report.checks {
        let tag = match c.status {
            Status::Pass => "ok  ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Info => "info",
        };
        s.push_str(&format!("[{tag}] {}: {}\n", c.name, c.detail));
        if let Some(fix) = &c.fix
            && !fixes_shown.contains(&fix.as_str())
        {
            fixes_shown.push(fix);
            s.push_str(&format!("       fix: {fix}\n"));
        }
    }
    let sections: &[(&str, &Vec<ModeAvailability>)] = if report.modes == report.modes_as_root {
        &[("you and for root", &report.modes)]
    } else {
        &[("you", &report.modes), ("root", &report.modes_as_root)]
    };
    for &(title, modes) in sections {
        s.push_str(&format!("\nmodes for {title}:\n"));
        for m in modes {
            let mark = if m.available { "yes" } else { "no " };
            s.push_str(&format!("  {mark} {:<12} {}\n", m.mode.to_string(), m.detail));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::diagnose::TunProblem;
    use crate::host::probe::test_hosts::{debian_pasta, rootless};

    fn find<'a>(checks: &'a [Check], name: &str) -> &'a Check {
        checks.iter().find(|c| c.name == name).unwrap()
    }

    #[test]
    fn tun_0600_fails_with_the_chmod_fix_and_root_still_has_every_mode() {
        let mut caps = rootless();
        caps.tun.problem =
            Some(TunProblem::NotPermitted { path: "/dev/net/tun".into(), uid: 1000, mode: 0o600, owner: 0 });
        let r = report(&caps);
        let tun = find(&r.checks, "tun device");
        assert_eq!(tun.status, Status::Fail);
        assert!(tun.fix.as_deref().unwrap().contains("chmod 0666 /dev/net/tun"), "{tun:?}");
        let pasta = r.modes.iter().find(|m| m.mode == Mode::Pasta).unwrap();
        assert!(!pasta.available, "{pasta:?}");
        assert!(r.modes.iter().any(|m| m.mode == Mode::Loopback && m.available));
        assert!(!r.networked);
        assert!(r.modes_as_root.iter().any(|m| m.mode == Mode::Pasta && m.available), "{:?}", r.modes_as_root);
    }

    #[test]
    fn missing_pasta_names_the_package_and_userns_blocker_names_the_sysctl() {
        let mut caps = rootless();
        caps.pasta = Helper::Missing;
        caps.userns_knobs.max_user_namespaces = Some(0);
        let checks = checks(&caps);
        assert!(find(&checks, "pasta").fix.as_deref().unwrap().contains("apt-get install passt"));
        let userns = find(&checks, "user namespaces");
        assert_eq!(userns.status, Status::Fail);
        assert!(userns.fix.as_deref().unwrap().contains("user.max_user_namespaces"), "{userns:?}");
    }

    #[test]
    fn debian_pasta_warns_and_names_the_fixed_versions() {
        let mut caps = rootless();
        caps.pasta = debian_pasta();
        let pasta = checks(&caps).into_iter().find(|c| c.name == "pasta").unwrap();
        assert_eq!(pasta.status, Status::Warn);
        let fix = pasta.fix.unwrap();
        assert!(fix.contains("2023_10_04") && fix.contains("2024_08_06"), "{fix}");
        let driver = checks(&caps).into_iter().find(|c| c.name == "port driver").unwrap();
        assert!(driver.detail.starts_with("auto: builtin in every mode but bridge"), "{}", driver.detail);
    }

    #[test]
    fn a_forward_drop_host_and_firewalld_are_warned_about_with_the_commands_to_run() {
        use crate::bridge::firewall::hostfw::HostFirewall;
        let drop = host_firewall_check(Some(&HostFirewall::ForwardDrop));
        assert_eq!(drop.status, Status::Warn);
        assert!(drop.fix.as_deref().unwrap().contains("iptables -I FORWARD 1 -i BR"), "{drop:?}");
        let fwd = host_firewall_check(Some(&HostFirewall::Firewalld));
        assert!(fwd.fix.as_deref().unwrap().contains("firewall-cmd --permanent --zone=trusted --add-interface=BR"));
        assert_eq!(host_firewall_check(Some(&HostFirewall::Open)).status, Status::Pass);
        assert_eq!(host_firewall_check(None).status, Status::Info);
    }

    #[test]
    fn an_old_kernel_is_warned_about_naming_each_missing_feature_and_the_release_to_boot() {
        let mut caps = rootless();
        assert_eq!(find(&checks(&caps), "kernel").status, Status::Pass);
        caps.kernel_release = Some("4.19.0-27-amd64".into());
        let checks = checks(&caps);
        let kernel = find(&checks, "kernel");
        assert_eq!(kernel.status, Status::Warn);
        assert!(kernel.detail.contains("pidfd (Linux 5.3:") && kernel.detail.contains("nftables table comments (Linux 5.10:"), "{}", kernel.detail);
        assert_eq!(kernel.fix.as_deref().map(|f| f.starts_with("boot Linux 5.10 or later")), Some(true));
    }

    #[test]
    fn healthy_host_is_networked_and_renders_every_check() {
        let r = report(&rootless());
        assert!(r.networked);
        let text = render(&r);
        // A rootless user has every mode root has (bridge networks in the user's holder).
        assert!(text.contains("[ok  ] user namespaces") && text.contains("modes for you and for root:"), "{text}");
    }

    #[test]
    fn as_root_the_modes_are_listed_once() {
        let mut caps = rootless();
        caps.euid = 0;
        caps.cap_net_admin = true;
        caps.cap_sys_admin = true;
        let text = render(&report(&caps));
        assert_eq!(text.matches("modes for").count(), 1, "{text}");
        assert!(text.contains("modes for you and for root:"), "{text}");
    }

    #[test]
    fn every_fix_is_printed_once_and_no_debug_values() {
        let mut caps = rootless();
        caps.tun.problem =
            Some(TunProblem::NotPermitted { path: "/dev/net/tun".into(), uid: 1000, mode: 0o600, owner: 0 });
        caps.container = vec![ContainerHint::DockerEnv, ContainerHint::EnvVar { value: "podman".into() }];
        let text = render(&report(&caps));
        assert_eq!(text.matches("chmod 0666").count(), 1, "{text}");
        assert!(text.contains("running inside a container (docker: /.dockerenv, container=podman)"), "{text}");
        assert!(!text.contains("DockerEnv") && !text.contains("{ value"), "{text}");
        for line in text.lines().filter(|l| l.trim_start().starts_with("fix:")) {
            assert_eq!(text.matches(line.trim()).count(), 1, "fix printed twice: {line}\n{text}");
        }
    }
}

//! `plan`: what `run` would do, touching nothing. The decision with its
//! reasons, then the concrete steps: namespaces, the helper's argv, links,
//! firewall scripts. Built from the same pure builders `run` uses.

use crate::bridge::firewall::{add_forwards_script, table_script};
use crate::bridge::network::{DEFAULT_NETWORK, NetworkDef, NetworkError, NetworkStore, default_network_def};
use crate::bridge::plan::{forwards, rules_for};
use crate::flow::select::{Decision, Fallback, Request, Requested, SelectError, select};
use crate::helpers::pasta::args::{PastaPlan, PastaTarget};
use crate::helpers::slirp::args::{SlirpFds, SlirpPlan, SlirpTarget};
use crate::host::probe::HostCaps;
use crate::model::config::NetworkConfig;
use crate::model::driver::{ChosenDriver, DriverChoice, DriverFacts, DriverMismatch, PastaBuild, choose_driver};
use crate::model::mode::NetworkMode;
use serde::Serialize;
use std::net::Ipv4Addr;
use std::path::Path;

/// Errors of planning.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// No acceptable mode.
    #[error(transparent)]
    Select(#[from] SelectError),
    /// The bridge network's definition could not be read.
    #[error(transparent)]
    Network(#[from] NetworkError),
    /// The port driver does not fit the mode.
    #[error(transparent)]
    PortDriver(#[from] DriverMismatch),
    /// `--network pasta:OPTS` or `slirp4netns:OPTS` was refused.
    #[error(transparent)]
    HelperOptions(#[from] crate::model::helper_opts::HelperOptsError),
    /// The DNS options cannot be met in this mode.
    #[error(transparent)]
    Dns(#[from] crate::dns::DecideError),
}

/// What a run would do.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The mode that would run.
    pub mode: String,
    /// How it was chosen (for `auto` or with `--fallback`).
    pub decision: Option<Decision>,
    /// The steps, in order.
    pub steps: Vec<String>,
    /// The helper's full command line, where one is spawned.
    pub helper_argv: Option<Vec<String>>,
    /// What the mode can publish: host-IP binding, ranges, UDP, IPv6.
    pub port_support: Option<String>,
    /// Who forwards the published ports, and why.
    pub port_driver: DriverChoice,
    /// Name resolution: the resolver decision and the generated files.
    pub dns: crate::dns::DnsPlan,
}

fn argv_strings(program: &str, argv: &[std::ffi::OsString]) -> Vec<String> {
    std::iter::once(program.to_owned()).chain(argv.iter().map(|a| a.to_string_lossy().into_owned())).collect()
}

/// Plan a run of `network` on the host `caps` describes.
pub fn plan(
    network: &NetworkConfig,
    fallback: Option<Fallback>,
    caps: &HostCaps,
    config_dir: &Path,
) -> Result<Plan, PlanError> {
    let decision = match (&network.mode, fallback) {
        (NetworkMode::Auto, _) | (_, Some(_)) => {
            let req = Request {
                mode: Requested::from(network.mode.clone()),
                needs: crate::flow::run::needs_for(network),
                fallback: fallback.unwrap_or(Fallback::Warn),
            };
            Some(select(&req, caps)?)
        }
        _ => None,
    };
    let mode = decision.as_ref().map_or_else(|| network.mode.clone(), |d| d.mode.to_network_mode());
    let pasta = match caps.pasta.features() {
        Some(f) if f.tcp_tap_bugs.any() => PastaBuild::Broken,
        Some(_) => PastaBuild::Fixed,
        None => PastaBuild::Unknown,
    };
    let facts = DriverFacts { pasta };
    let port_driver = choose_driver(&mode, network.port_driver, &network.ports, facts)?;
    let builtin = port_driver.driver == ChosenDriver::Builtin;
    let rootless = caps.euid != 0;
    let dns = dns_plan(&mode, network, caps, config_dir)?;
    let mut steps = Vec::new();
    let mut helper_argv = None;
    let mut port_support = None;
    let child_ns = if rootless {
        "fork a child; it unshares a user and a network namespace and maps your uid to root inside"
    } else {
        "fork a child; it unshares a network namespace"
    };
    let ephemeral: Vec<String> = network.ports.iter().filter(|m| m.host.is_none()).map(|m| m.to_string()).collect();
    let resolved: Vec<_> = network.ports.iter().filter(|m| m.host.is_some()).cloned().collect();
    if !ephemeral.is_empty() {
        steps.push(format!("pick free host ports for {}", ephemeral.join(", ")));
    }
    if builtin {
        let all: Vec<String> = network.ports.iter().map(|m| m.to_string()).collect();
        steps.push(format!("bind the host listeners of {} in this namespace", all.join(", ")));
    }
    // Ports the helper or the kernel forwards (none under the builtin driver).
    let resolved: Vec<_> = if builtin { Vec::new() } else { resolved };
    match &mode {
        NetworkMode::Host => steps.push("exec the command in the caller's namespaces (no isolation)".into()),
        NetworkMode::Loopback | NetworkMode::Auto => {
            steps.push(child_ns.into());
            steps.push("bring lo up (ioctl SIOCSIFFLAGS)".into());
        }
        NetworkMode::Pasta => {
            steps.push(child_ns.into());
            steps.push("bring lo up (ioctl SIOCSIFFLAGS)".into());
            let target = if rootless {
                PastaTarget { netns: "/proc/<child>/ns/net".into(), userns: Some("/proc/<child>/ns/user".into()) }
            } else {
                steps.push("name the namespace /run/netns/pelagos-<id> (bind mount)".into());
                PastaTarget { netns: "/run/netns/pelagos-<id>".into(), userns: None }
            };
            let runas = (!rootless).then_some(0);
            let pasta_plan = PastaPlan {
                target,
                ports: resolved.clone(),
                host_loopback_ports: network.host_loopback_ports.clone(),
                runas,
                extra: network.pasta_extra(&mode)?.into_iter().map(Into::into).collect(),
                dns_forward: dns.pasta_forward,
            };
            if let Ok(argv) = crate::helpers::pasta::args::build_argv(&pasta_plan) {
                let program = caps.pasta.path().map_or("pasta".into(), |p| p.display().to_string());
                helper_argv = Some(argv_strings(&program, &argv));
            }
            steps.push(if builtin {
                "start pasta (no port forwards); wait for the default route and every --host-port listener".into()
            } else {
                "start pasta; wait for the default route, every published host port and --host-port listener".into()
            });
            port_support = Some("host-IP binding, ranges, UDP, IPv6".into());
        }
        NetworkMode::Slirp4netns => {
            steps.push(child_ns.into());
            steps.push("bring lo up (ioctl SIOCSIFFLAGS)".into());
            let target = SlirpTarget {
                netns: "/proc/<child>/ns/net".into(),
                userns: rootless.then(|| "/proc/<child>/ns/user".into()),
            };
            let slirp_plan =
                SlirpPlan::new(target, "/run/.../slirp-<id>.sock".into()).with_options(&network.slirp_extra(&mode)?);
            if let Ok(argv) = crate::helpers::slirp::args::build_argv(&slirp_plan, SlirpFds { ready: 3, exit: 4 }) {
                let program = caps.slirp4netns.path().map_or("slirp4netns".into(), |p| p.display().to_string());
                helper_argv = Some(argv_strings(&program, &argv));
            }
            steps.push("start slirp4netns; wait for its ready-fd".into());
            for m in &resolved {
                steps.push(format!("add_hostfwd through the API socket: {m}"));
            }
            let f = crate::helpers::slirp::api::supported_port_features();
            port_support = Some(format!(
                "host-IP binding {}, ranges {}, UDP {}, IPv6 host addresses {}",
                yes(f.host_ip),
                yes(f.ranges),
                yes(f.udp),
                yes(f.ipv6_host_ip)
            ));
        }
        NetworkMode::Bridge(name) => {
            let def = load_def(config_dir, name.as_ref().map_or(DEFAULT_NETWORK, |n| n.as_str()))?;
            steps.push(format!("lease the next free address of {} ({}) under a file lock", def.name, def.subnet));
            steps.push(format!(
                "ensure bridge {} with {}/{} up; ip_forward on",
                def.bridge,
                def.gateway,
                def.subnet.prefix()
            ));
            steps.push(format!(
                "ensure nftables table ip pelagos-{}:\n{}",
                def.name,
                indent(&table_script(&rules_for(&def)))
            ));
            steps.push("create named netns /run/netns/pelagos-<id> (lo up)".into());
            steps.push(format!("create veth pv<id> on {} with its peer eth0 created inside the netns", def.bridge));
            steps.push(format!(
                "eth0: address <leased>/{}, up, default route via {}",
                def.subnet.prefix(),
                def.gateway
            ));
            let placeholder = Ipv4Addr::UNSPECIFIED;
            if let Ok(fwds) = forwards(placeholder, &resolved)
                && !fwds.is_empty()
            {
                let script = add_forwards_script(def.name.as_str(), &fwds).replace("0.0.0.0 .", "<leased> .");
                steps.push(format!("add forwards (one transaction):\n{}", indent(&script)));
            }
            steps.push("fork a child; it joins the netns with setns".into());
            port_support = Some("host-IP binding (IPv4), ranges, UDP; no IPv6".into());
        }
    }
    if builtin {
        let inside = if rootless {
            "start the relay thread, with a socket factory forked into the user and network namespace"
        } else {
            "start the relay thread, which joins the namespace"
        };
        let (routing, support) = if matches!(mode, NetworkMode::Loopback) {
            (
                "no routed address inside, so servers see every client as 127.0.0.1".to_string(),
                "host-IP binding, ranges, UDP, IPv6; clients appear as 127.0.0.1",
            )
        } else {
            (
                format!(
                    "route marked packets (fwmark {:#x}) to a local table and set tcp_fwmark_accept, so TCP servers \
                     see client source addresses",
                    crate::ports::builtin::SOURCE_MARK
                ),
                "host-IP binding, ranges, UDP, IPv6; TCP client source addresses kept",
            )
        };
        steps.push(format!("{inside} (epoll, splice); {routing}"));
        port_support = Some(support.into());
    }
    steps.extend(dns_steps(&dns));
    steps.push("release the child to exec the command; forward signals; tear down in reverse at exit".into());
    Ok(Plan { mode: mode.to_string(), decision, steps, helper_argv, port_support, port_driver, dns })
}

/// The DNS decision for `mode` on this host (its files read, nothing bound).
fn dns_plan(
    mode: &NetworkMode,
    network: &NetworkConfig,
    caps: &HostCaps,
    config_dir: &Path,
) -> Result<crate::dns::DnsPlan, PlanError> {
    use crate::dns::ModeDns;
    let mode = match mode {
        NetworkMode::Pasta => {
            ModeDns::Pasta { tcp_mapped: caps.pasta.features().is_some_and(|f| f.features.maps_tcp_dns()) }
        }
        NetworkMode::Slirp4netns => ModeDns::Slirp4netns,
        NetworkMode::Bridge(name) => {
            let def = load_def(config_dir, name.as_ref().map_or(DEFAULT_NETWORK, |n| n.as_str()))?;
            ModeDns::Bridge { gateway: def.gateway, listening: true }
        }
        NetworkMode::Host => ModeDns::Host,
        NetworkMode::Loopback | NetworkMode::Auto => ModeDns::Loopback,
    };
    Ok(crate::dns::files_for(mode, &network.dns, None, Path::new(crate::dns::setup::ETC))?)
}

/// The steps name resolution adds inside the namespace.
fn dns_steps(dns: &crate::dns::DnsPlan) -> Vec<String> {
    let mut steps = Vec::new();
    let files: Vec<&str> = [(dns.resolv_conf.is_some(), "/etc/resolv.conf"), (dns.hosts.is_some(), "/etc/hosts")]
        .into_iter()
        .filter_map(|(has, path)| has.then_some(path))
        .collect();
    if !files.is_empty() {
        steps.push(format!(
            "the child unshares a mount namespace and mounts the run's files over {} (the host's are untouched)",
            files.join(" and ")
        ));
    }
    if let Some(f) = &dns.forwarder {
        steps.push(format!("start the DNS forwarder: {}", dns.resolver));
        if let crate::dns::decide::Listen::InNamespace(a) = f.listen {
            steps.push(format!("the child adds {a}/32 to lo; the forwarder's sockets come from a socket factory"));
        }
    }
    if let Some(a) = dns.tcp_fail_fast {
        steps.push(format!("the child adds a rule: TCP to {a}:53 is unreachable (fails at once instead of hanging)"));
    }
    steps
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

/// A network's definition, read-only (the default one if not yet written).
fn load_def(config_dir: &Path, name: &str) -> Result<NetworkDef, NetworkError> {
    let name = crate::model::ifname::NetworkName::new(name)?;
    match NetworkStore::new(config_dir).load(&name) {
        Err(NetworkError::NotFound(_)) if name.as_str() == DEFAULT_NETWORK => Ok(default_network_def()),
        other => other,
    }
}

/// Human-readable text of a plan.
pub fn render(plan: &Plan) -> String {
    let mut s = format!("mode: {}\n", plan.mode);
    if let Some(d) = &plan.decision {
        s.push_str(&format!("why: {}\n", d.reason));
        for r in &d.rejected {
            s.push_str(&format!("  passed over {}: {}\n", r.mode, r.reason));
        }
        if let Some(w) = &d.warning {
            s.push_str(&format!("warning: {w}\n"));
        }
    }
    if let Some(p) = &plan.port_support {
        s.push_str(&format!("ports: {p}\n"));
    }
    if plan.port_driver.driver != ChosenDriver::None {
        s.push_str(&format!("port driver: {} ({})\n", plan.port_driver.name, plan.port_driver.reason));
    }
    s.push_str("steps:\n");
    for (i, step) in plan.steps.iter().enumerate() {
        s.push_str(&format!("  {}. {step}\n", i + 1));
    }
    if let Some(argv) = &plan.helper_argv {
        s.push_str(&format!("helper: {}\n", argv.join(" ")));
    }
    s.push_str(&format!("dns: {}\n", plan.dns.resolver));
    for w in &plan.dns.warnings {
        s.push_str(&format!("warning: {w}\n"));
    }
    if let Some(text) = &plan.dns.resolv_conf {
        s.push_str(&format!("resolv.conf:\n{}\n", indent(text)));
    }
    if plan.dns.hosts.is_some() {
        s.push_str("hosts: the host's /etc/hosts, plus:\n");
        for e in &plan.dns.hosts_added {
            s.push_str(&format!("    {}\t{}\n", e.ip, e.names.join(" ")));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::probe::test_hosts::{debian_pasta, rootless};

    fn cfg(mode: &str, ports: &[&str]) -> NetworkConfig {
        let mut c = NetworkConfig::new(mode.parse().unwrap());
        c.ports = ports.iter().map(|p| p.parse().unwrap()).collect();
        c
    }

    #[test]
    fn auto_on_a_debian_pasta_host_plans_slirp4netns_with_the_builtin_port_driver() {
        let mut caps = rootless();
        caps.pasta = debian_pasta();
        let tmp = tempfile::tempdir().unwrap();
        let p = plan(&cfg("auto", &["8080:80"]), None, &caps, tmp.path()).unwrap();
        assert_eq!(p.mode, "slirp4netns");
        assert!(p.decision.unwrap().reason.contains("2023_10_04"));
        let argv = p.helper_argv.unwrap().join(" ");
        assert!(
            argv.contains("--userns-path=/proc/<child>/ns/user") && argv.contains("--disable-host-loopback"),
            "{argv}"
        );
        assert_eq!(p.port_driver.name, "builtin");
        assert!(!p.steps.iter().any(|s| s.contains("add_hostfwd")), "{:?}", p.steps);
        assert!(p.steps.iter().any(|s| s.contains("socket factory")), "{:?}", p.steps);
    }

    #[test]
    fn slirp4netns_driver_on_request_plans_its_hostfwd() {
        let tmp = tempfile::tempdir().unwrap();
        let mut c = cfg("slirp4netns", &["8080:80"]);
        c.port_driver = crate::model::driver::PortDriver::Slirp4netns;
        let p = plan(&c, None, &rootless(), tmp.path()).unwrap();
        assert!(p.steps.iter().any(|s| s.contains("add_hostfwd") && s.contains("8080:80/tcp")), "{:?}", p.steps);
    }

    #[test]
    fn debian_pasta_with_an_all_interfaces_port_plans_the_builtin_driver_and_says_why() {
        let mut caps = rootless();
        caps.pasta = debian_pasta();
        let tmp = tempfile::tempdir().unwrap();
        let p = plan(&cfg("pasta", &["8080:80"]), None, &caps, tmp.path()).unwrap();
        let text = render(&p);
        assert!(text.contains("port driver: builtin (this pasta build breaks TCP on published ports"), "{text}");
        assert!(p.helper_argv.unwrap().join(" ").contains("-t none"));
        let mut c = cfg("pasta", &["127.0.0.1:8080:80"]);
        c.port_driver = crate::model::driver::PortDriver::Pasta;
        let p = plan(&c, None, &caps, tmp.path()).unwrap();
        assert_eq!(p.port_driver.name, "pasta");
        assert!(p.helper_argv.unwrap().join(" ").contains("-t 127.0.0.1/8080:80"));
    }

    #[test]
    fn explicit_pasta_plans_its_pinned_argv() {
        let tmp = tempfile::tempdir().unwrap();
        let p = plan(&cfg("pasta", &["127.0.0.1:8080:80"]), None, &rootless(), tmp.path()).unwrap();
        assert!(p.decision.is_none());
        let argv = p.helper_argv.unwrap().join(" ");
        assert!(
            argv.contains("-t 127.0.0.1/8080:80") && argv.contains("-u none") && argv.contains("-T none"),
            "{argv}"
        );
    }

    #[test]
    fn bridge_plan_shows_the_table_and_forward_scripts_without_touching_anything() {
        let tmp = tempfile::tempdir().unwrap();
        let p = plan(&cfg("bridge", &["8080:80"]), None, &rootless(), tmp.path()).unwrap();
        let text = render(&p);
        assert!(text.contains("add table ip pelagos-pelagos0") && text.contains("8080 : <leased> . 80"), "{text}");
        assert!(std::fs::read_dir(tmp.path()).unwrap().next().is_none(), "plan wrote into the config dir");
    }
}

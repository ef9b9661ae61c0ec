//! A plan as text for people: the decision, the port driver, then each
//! step in words with what it concerns (names, scripts, argv). Reads the
//! same [`Plan`] `--json` prints, so the two cannot disagree.

use super::Plan;
use crate::bridge::firewall::{add_forwards_script, table_script};
use crate::bridge::plan::{forwards, rules_for};
use crate::flow::steps::{ChildNs, Helper, Inside, NsRef, Step};
use crate::model::driver::ChosenDriver;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// A plan as JSON: every field of [`Plan`], the typed steps as `pipeline`,
/// and `steps`, the same steps in words.
pub fn json(plan: &Plan) -> serde_json::Value {
    let mut value = serde_json::to_value(plan).unwrap_or_default();
    value["steps"] = plan.steps.iter().map(|s| serde_json::Value::String(describe(plan, s))).collect();
    value
}

/// Human-readable text of a plan.
pub fn render(plan: &Plan) -> String {
    let mut s = format!("mode: {}\n", plan.mode);
    if let Some(d) = &plan.decision {
        let _ = writeln!(s, "why: {}", d.reason);
        for r in &d.rejected {
            let _ = writeln!(s, "  passed over {}: {}", r.mode, r.reason);
        }
    }
    for w in &plan.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    if let Some(p) = &plan.port_support {
        let _ = writeln!(s, "ports: {p}");
    }
    if plan.port_driver.driver != ChosenDriver::None {
        let _ = writeln!(s, "port driver: {} ({})", plan.port_driver.name, plan.port_driver.reason);
    }
    if let Some(a) = plan.accel.as_ref().filter(|a| a.on) {
        let _ = writeln!(s, "{}", a.line(super::accel::relays_tcp(plan.builtin(), &plan.ports)));
    }
    s.push_str("steps:\n");
    for (i, step) in plan.steps.iter().enumerate() {
        let _ = writeln!(s, "  {}. {}", i + 1, describe(plan, step));
    }
    if let Some(argv) = &plan.helper_argv {
        let _ = writeln!(s, "helper: {}", argv.join(" "));
    }
    if let Some(dns) = &plan.dns {
        let _ = writeln!(s, "dns: {}", dns.resolver);
        if let Some(text) = &dns.resolv_conf {
            let _ = writeln!(s, "resolv.conf:\n{}", indent(text));
        }
        if dns.hosts.is_some() {
            s.push_str("hosts: the host's /etc/hosts, plus:\n");
            for e in &dns.hosts_added {
                let _ = writeln!(s, "    {}\t{}", e.ip, e.names.join(" "));
            }
        }
    }
    s
}

/// What the child does for name resolution, in words (after it entered its namespaces).
fn dns_in_child(plan: &Plan) -> String {
    let Some(dns) = &plan.dns else { return String::new() };
    let mut text = String::new();
    let files: Vec<&str> = [(dns.resolv_conf.is_some(), "/etc/resolv.conf"), (dns.hosts.is_some(), "/etc/hosts")]
        .into_iter()
        .filter_map(|(has, path)| has.then_some(path))
        .collect();
    if !files.is_empty() {
        let _ = write!(
            text,
            "; it unshares a mount namespace and mounts the run's files over {} (the host's are untouched)",
            files.join(" and ")
        );
    }
    if let Some(crate::dns::decide::Listen::InNamespace(a)) = dns.forwarder.as_ref().map(|f| f.listen) {
        let _ = write!(
            text,
            "; it adds {a}/32 to lo and opens the DNS forwarder's sockets on {a}:53, which it hands to pelagos-net \
             with its report"
        );
    }
    if let Some(a) = dns.tcp_fail_fast {
        let _ = write!(text, "; it adds a rule: TCP to {a}:53 is unreachable (fails at once instead of hanging)");
    }
    text
}

fn ns_text(ns: NsRef) -> &'static str {
    ns.netns_text()
}

fn list(ports: &[crate::model::port::PortMapping]) -> String {
    ports.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", ")
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

/// One step in words.
fn describe(plan: &Plan, step: &Step) -> String {
    let def = plan.network.as_ref();
    match step {
        Step::PickHostPorts => {
            let open: Vec<_> = plan.ports.iter().filter(|m| m.host.is_none()).cloned().collect();
            format!("pick free host ports for {}", list(&open))
        }
        Step::ClaimName { network, name } => format!(
            "check that no live run on network {network} goes by the name {name} (holding the runs directory's \
             lock until the record, with the name, is written)"
        ),
        Step::ClaimPorts => format!(
            "check that no live run publishes and no host socket holds {} (held until the record is written)",
            list(&plan.ports)
        ),
        Step::BindListeners => format!("bind the host listeners of {} in this namespace", list(&plan.ports)),
        Step::HoldPorts => format!(
            "hold {} with sockets of this process while the run lives (IPv4; DNAT takes their traffic): nothing \
             else can bind them",
            list(&plan.ports)
        ),
        Step::WriteRecord => {
            "write the record (<run dir>/runs/<id>.json); everything created from here on is recorded \
                              before or as it is created"
                .into()
        }
        Step::LeaseAddress { network, requested } => match (requested, def) {
            (Some(ip), _) => format!("lease {ip} on {network} under a file lock"),
            (None, Some(d)) => format!("lease the next free address of {network} ({}) under a file lock", d.subnet),
            (None, None) => format!("lease the next free address of {network} under a file lock"),
        },
        Step::UseAddress { network, plugin } => {
            format!("use the address IPAM plugin {plugin} gave on {network} (its DEL undoes it)")
        }
        Step::EnsureNetwork { network } => match def {
            Some(d) => format!(
                "ensure bridge {} with {}/{} up; ip_forward on; nftables table ip pelagos-{network}:\n{}",
                d.bridge,
                d.gateway,
                d.subnet.prefix(),
                indent(&table_script(&rules_for(d)))
            ),
            None => format!("ensure the bridge and nftables table of {network}"),
        },
        Step::EnsureHolder => "ensure your network holder runs (<run dir>/holder): a user namespace (your \
                               subordinate ids through newuidmap when you have them, your uid alone otherwise) \
                               with a network and a mount namespace, pasta attached to it for egress, both \
                               supervised; started now if not running, stopped when its last user leaves"
            .into(),
        Step::AttachInHolder { network } => match def {
            Some(d) => format!(
                "in a helper forked into the holder (setns user, net): ensure bridge {} with {}/{} up \
                 (mtu {}), ip_forward on, nftables table ip pelagos-{network}:\n{}\n    then a veth pair (peer \
                 eth0 created in the child's namespace) on it, the leased address, default route via {}{}",
                d.bridge,
                d.gateway,
                d.subnet.prefix(),
                crate::holder::network::in_holder(d).options.mtu.unwrap_or_default(),
                indent(&table_script(&rules_for(d))),
                d.gateway,
                if plan.dns.as_ref().is_some_and(|x| x.forwarder.is_some()) {
                    format!("; the holder's name server answers the network's names on {}:53", d.gateway)
                } else {
                    String::new()
                }
            ) + &host_loopback_text(&plan.host_loopback_ports),
            None => format!("attach to {network} inside the network holder"),
        },
        Step::CreateNetns => "create named netns /run/netns/pelagos-<id> (lo up)".into(),
        Step::ForkChild { ns } => {
            let enter = match ns {
                ChildNs::NewUserAndNet => {
                    "it unshares a user and a network namespace, maps your uid to root inside, brings lo up \
                     (ioctl SIOCSIFFLAGS)"
                        .to_owned()
                }
                ChildNs::NewNet => "it unshares a network namespace, brings lo up (ioctl SIOCSIFFLAGS)".to_owned(),
                ChildNs::Join { ns } => format!("it joins {} with setns", ns_text(*ns)),
                ChildNs::InHolder => "a forked helper joins the network holder's user namespace and clones it \
                                      into new network, PID and mount namespaces there, brings lo up"
                    .to_owned(),
            };
            format!("fork a child; {enter}{}; it waits", dns_in_child(plan))
        }
        Step::PrepareDns if plan.steps.contains(&Step::EnsureHolder) => {
            "read the host's resolv.conf and hosts and prepare the run's (the network's name server listens \
             inside the holder: its sockets are made there once the network exists)"
                .into()
        }
        Step::PrepareDns => "read the host's resolv.conf and hosts and prepare the run's (a bridge forwarder's \
                             sockets are bound now)"
            .into(),
        Step::StartDns => match &plan.dns {
            Some(dns) => format!("start the DNS forwarder: {}", dns.resolver),
            None => "start the DNS forwarder".into(),
        },
        Step::NameNetns { of } => {
            format!("name the namespace /run/netns/pelagos-<id> (a bind mount of {})", ns_text(*of))
        }
        Step::CreateVeth { network, into } => {
            let bridge = def.map_or_else(|| network.clone(), |d| d.bridge.to_string());
            format!("create veth pv<id> on {bridge} with its peer eth0 created inside {}", ns_text(*into))
        }
        Step::ConfigureAddress { .. } => match def {
            Some(d) => format!("eth0: address <leased>/{}, up, default route via {}", d.subnet.prefix(), d.gateway),
            None => "eth0: address <leased>, up, default route via the gateway".into(),
        },
        Step::InstallForwards { network } => {
            let resolved: Vec<_> = plan.ports.iter().filter(|m| m.host.is_some()).cloned().collect();
            match forwards(Ipv4Addr::UNSPECIFIED, &resolved) {
                Ok(f) if !f.is_empty() => format!(
                    "add forwards (one transaction):\n{}",
                    indent(&add_forwards_script(network, &f).replace("0.0.0.0 .", "<leased> ."))
                ),
                _ => format!("add the published ports to the maps of table ip pelagos-{network}"),
            }
        }
        Step::SpawnHelper { helper, target } => {
            let forwards = if plan.builtin() || plan.ports.is_empty() { " (no port forwards)" } else { "" };
            format!("start {} against {}{forwards}", helper.name(), ns_text(*target))
        }
        Step::AwaitReady { helper: Helper::Pasta } => {
            let ports = if plan.builtin() { "" } else { ", every published host port" };
            format!("wait for the default route (and the IPv6 one when the host has one){ports} and every --host-port listener")
        }
        Step::AwaitReady { helper: Helper::Slirp4netns } => {
            let mut text = "wait for slirp4netns's ready-fd".to_owned();
            if !plan.builtin() {
                for m in &plan.ports {
                    let _ = write!(text, "; add_hostfwd through the API socket: {m}");
                }
            }
            text
        }
        Step::StartRelay { target, inside, detached } => {
            let how = match inside {
                Inside::Factory => "with a socket factory forked into the user and network namespace",
                Inside::Join => "which joins the namespace",
            };
            let proc = if *detached { "in a relay process of its own" } else { "in this process" };
            let routing = if plan.mode == crate::model::mode::NetworkMode::Loopback {
                "no routed address inside, so servers see every client as 127.0.0.1".to_owned()
            } else {
                format!(
                    "route marked packets (fwmark {:#x}) to a local table and set tcp_fwmark_accept, so TCP servers \
                     see client source addresses",
                    crate::ports::builtin::SOURCE_MARK
                )
            };
            format!("start the relay thread {proc} {how}, into {} (epoll, splice); {routing}", ns_text(*target))
        }
        Step::PrepareAccel { lock, listeners } => format!(
            "prepare the accelerator: a socket pair over which the command's process hands over the listener \
             of the seccomp filter it installs right before exec (intercepting connect{}); switched sockets \
             locked {}",
            if *listeners { ", bind and listen" } else { "" },
            match lock {
                crate::accel::switch::Lock::Peer => "to their peer",
                crate::accel::switch::Lock::Device => "to their route's device",
            }
        ),
        Step::StartAccel => "take the filter's listener and start the accelerator's supervisor (a thread of this \
                             process): TCP connections leaving through the helper get sockets of this namespace \
                             instead; a refused filter leaves one warning and the normal path"
            .into(),
        Step::Commit => "mark the attachment ready: it lives until detached or until its namespace is gone".into(),
        Step::ExecCommand => {
            "release the child to exec the command; forward signals; tear down in reverse at exit".into()
        }
        Step::ExecInPlace => "exec the command in the caller's namespaces (no isolation)".into(),
    }
}

/// A rootless shared network run's `--host-port` ports, as the attach step relays them.
fn host_loopback_text(ports: &[u16]) -> String {
    if ports.is_empty() {
        return String::new();
    }
    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    format!(
        "; then TCP listeners and UDP sockets on 127.0.0.1:{{{}}} inside the child's namespace, relayed by this process to the \
         same ports on the host's 127.0.0.1 (no other host loopback port)",
        list.join(",")
    )
}

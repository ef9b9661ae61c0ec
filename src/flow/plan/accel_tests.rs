use super::*;
use crate::accel::AccelMode;
use crate::accel::probe::Offer;
use crate::flow::plan::{Given, Lifetime, Plan, Request, plan as plan_setup};
use crate::host::probe::HostCaps;
use crate::host::probe::test_hosts::{root, rootless};

fn config(mode: NetworkMode, options: &[&str]) -> NetworkConfig {
    let mut c = NetworkConfig::new(mode);
    c.accel = AccelMode::Socket;
    c.helper_options = options.iter().map(|s| s.to_string()).collect();
    c
}

fn peer(c: &NetworkConfig, mode: &NetworkMode) -> Option<String> {
    refusal(c, mode, Lock::Peer, &[])
}

fn host(mut caps: HostCaps, lock: Lock) -> HostCaps {
    caps.accel = Some(offer(lock));
    caps
}

fn run(mode: &str, ports: &[&str], caps: &HostCaps) -> Plan {
    let mut c = config(mode.parse().unwrap(), &[]);
    c.ports = ports.iter().map(|p| p.parse().unwrap()).collect();
    c.port_driver = crate::model::driver::PortDriver::Builtin;
    plan_setup(&Request::run(c), caps, &crate::flow::plan::tests::NETS).unwrap()
}

fn ops(p: &Plan) -> Vec<&'static str> {
    p.steps.iter().map(Step::op).collect()
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
fn a_run_that_has_it_prepares_it_before_the_fork_and_starts_it_after_the_command() {
    let p = run("pasta", &["127.0.0.1:8080:80"], &host(root(), Lock::Peer));
    let steps = ops(&p);
    let at = |op| steps.iter().position(|s| *s == op).unwrap_or_else(|| panic!("{op} missing from {steps:?}"));
    assert!(at("prepare_accel") < at("fork_child"), "{steps:?}");
    assert!(at("start_relay") < at("exec_command") && at("exec_command") < at("start_accel"), "{steps:?}");
    // Right after the command (the command's connects wait for it); only
    // the forwarder inside the namespace, whose sockets exist already, after it.
    assert_eq!(steps.get(at("exec_command") + 1), Some(&"start_accel"), "{steps:?}");
    let accel = p.accel.clone().unwrap();
    assert!(accel.on && accel.listeners_handed_over, "{accel:?}");
    assert!(p.steps.contains(&Step::PrepareAccel { lock: Lock::Peer, listeners: true }));
    assert!(crate::flow::plan::render(&p).contains("accelerator: on, switched sockets locked to their peer"));
}

#[test]
fn under_the_device_lock_slirp4netns_gets_egress_only_and_pasta_a_warning() {
    let slirp = run("slirp4netns", &["127.0.0.1:8080:80"], &host(rootless(), Lock::Device));
    assert!(slirp.steps.contains(&Step::PrepareAccel { lock: Lock::Device, listeners: false }), "{:?}", ops(&slirp));
    let text = crate::flow::plan::render(&slirp);
    assert!(text.contains("to their route's device; published TCP ports stay relayed"), "{text}");
    let pasta = run("pasta", &[], &host(rootless(), Lock::Device));
    assert!(!ops(&pasta).iter().any(|o| o.ends_with("_accel")), "{:?}", ops(&pasta));
    let warning = pasta.warnings.iter().find(|w| w.starts_with("accelerator off: ")).unwrap();
    assert!(warning.contains("CAP_NET_ADMIN"), "{warning}");
    assert!(pasta.accel.as_ref().is_some_and(|a| !a.on));
}

#[test]
fn unavailable_or_unprobed_it_is_one_warning_and_no_steps() {
    let mut caps = host(rootless(), Lock::Device);
    caps.accel = Some(Offer {
        availability: Availability::Unavailable("seccomp says no".into()),
        lock: Lock::Device,
        host_networks: vec![],
    });
    let p = run("slirp4netns", &[], &caps);
    assert!(p.warnings.contains(&"accelerator off: seccomp says no".to_owned()), "{:?}", p.warnings);
    assert!(!ops(&p).iter().any(|o| o.ends_with("_accel")));
    let unprobed = run("slirp4netns", &[], &rootless());
    assert!(unprobed.accel.unwrap().reason.unwrap().contains("not probed"));
}

#[test]
fn attach_and_modes_without_a_helper_never_get_steps() {
    let caps = host(root(), Lock::Peer);
    let given = Given { netns: "/run/netns/web".into(), userns: None, named: true };
    let req = Request {
        network: config(NetworkMode::Pasta, &[]),
        fallback: None,
        ip: None,
        target: TargetKind::Given(given),
        lifetime: Lifetime::Detached,
        command: false,
    };
    let p = plan_setup(&req, &caps, &crate::flow::plan::tests::NETS).unwrap();
    assert!(p.accel.unwrap().reason.unwrap().contains("only a command"));
    for mode in ["loopback", "bridge"] {
        let p = run(mode, &[], &caps);
        assert!(!ops(&p).iter().any(|o| o.ends_with("_accel")), "{mode}: {:?}", ops(&p));
    }
}

#[test]
fn off_adds_nothing() {
    let mut c = config(NetworkMode::Pasta, &[]);
    c.accel = AccelMode::Off;
    let p = plan_setup(&Request::run(c), &host(root(), Lock::Peer), &crate::flow::plan::tests::NETS).unwrap();
    assert!(p.accel.is_none() && !ops(&p).iter().any(|o| o.ends_with("_accel")));
    assert!(!crate::flow::plan::render(&p).contains("accelerator"));
}

#[test]
fn its_steps_round_trip_through_json() {
    let p = run("pasta", &["127.0.0.1:8080:80"], &host(root(), Lock::Peer));
    for step in p.steps.iter().filter(|s| s.op().ends_with("_accel")) {
        let json = serde_json::to_value(step).unwrap();
        assert_eq!(&serde_json::from_value::<Step>(json.clone()).unwrap(), step, "{json}");
    }
    let start = p.steps.iter().find(|s| s.op() == "start_accel").unwrap();
    assert_eq!(serde_json::to_value(start).unwrap(), serde_json::json!({"op": "start_accel"}));
}

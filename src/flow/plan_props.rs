//! Properties of the planner over random requests on injected hosts:
//! planning reads only what the probe scope it asks for covers (so a run,
//! which probes only that, refuses and plans exactly as a full probe
//! would), and every plan it makes is one the executor can carry out with
//! its records right: the record before anything recorded, a helper
//! awaited right after it is spawned, the relay iff the builtin driver, the
//! command or the commit last.

use super::*;
use crate::flow::steps::ChildNs;
use crate::host::probe::test_hosts::{debian_pasta, root, rootless};
use crate::host::probe::{Helper, HostCaps};
use crate::model::driver::PortDriver;
use crate::model::port::{PortMapping, PortProto, PortRange};
use proptest::prelude::*;

fn hosts() -> Vec<HostCaps> {
    let mut out = vec![rootless(), root()];
    let mut h = rootless();
    h.pasta = debian_pasta();
    out.push(h.clone());
    h.euid = 0;
    h.cap_net_admin = true;
    h.cap_sys_admin = true;
    out.push(h);
    let mut h = rootless();
    h.pasta = Helper::Missing;
    out.push(h);
    let mut h = rootless();
    h.slirp4netns = Helper::Missing;
    h.tun.problem = Some(crate::host::diagnose::TunProblem::Missing { path: "/dev/net/tun".into() });
    out.push(h);
    let mut h = rootless();
    h.userns_knobs.max_user_namespaces = Some(0);
    out.push(h);
    out
}

fn port() -> impl Strategy<Value = PortMapping> {
    let ip = prop_oneof![Just(None), Just(Some("127.0.0.1")), Just(Some("::1"))];
    (ip, 0u8..3, prop_oneof![Just(1u16), Just(3u16)], any::<bool>(), 1u16..60000).prop_map(
        |(ip, host, len, udp, base)| {
            let base = base.max(10);
            let container = PortRange::new(base, base + len - 1).expect("valid range");
            let host = match host {
                0 => None,
                1 => Some(PortRange::new(base + 1, base + len).expect("valid range")),
                _ => PortRange::single(base).ok(),
            };
            PortMapping {
                host_ip: ip.map(|s| s.parse().expect("valid address")),
                host,
                container,
                proto: if udp { PortProto::Udp } else { PortProto::Tcp },
            }
        },
    )
}

fn request() -> impl Strategy<Value = Request> {
    let modes = ["auto", "host", "loopback", "pasta", "slirp4netns", "bridge", "bridge:web", "ns:/run/netns/x"]
        .map(String::from);
    let drivers =
        [PortDriver::Auto, PortDriver::Builtin, PortDriver::Pasta, PortDriver::Slirp4netns, PortDriver::Nftables];
    let fallbacks = [None, Some(Fallback::Strict), Some(Fallback::Warn), Some(Fallback::Allow)];
    (
        proptest::sample::select(modes.to_vec()),
        proptest::collection::vec(port(), 0..3),
        proptest::collection::vec(1u16..10, 0..2),
        proptest::sample::select(drivers.to_vec()),
        proptest::sample::select(fallbacks.to_vec()),
        0u8..4,
    )
        .prop_map(|(mode, ports, host_ports, driver, fallback, target)| {
            let mut network = NetworkConfig::new(mode.parse().expect("valid mode"));
            network.ports = ports;
            network.host_loopback_ports = host_ports;
            network.port_driver = driver;
            let given = |named| {
                TargetKind::Given(Given {
                    netns: "/proc/9/ns/net".into(),
                    userns: Some("/proc/9/ns/user".into()),
                    named,
                })
            };
            let (target, command, lifetime) = match target {
                0 => (TargetKind::NewChild, true, Lifetime::Owner),
                1 => (given(false), false, Lifetime::Detached),
                2 => (given(true), false, Lifetime::Owner),
                _ => (given(false), true, Lifetime::Owner),
            };
            Request { network, fallback, ip: None, target, lifetime, command }
        })
}

/// `host` with every fact outside `scope` made different: a plan that
/// reads only what its scope covers cannot tell the two apart.
fn garbled(host: &HostCaps, scope: ProbeScope) -> HostCaps {
    let mut h = host.clone();
    if scope != ProbeScope::Full {
        h.userns_knobs.max_user_namespaces = Some(0);
        h.nftables = crate::host::probe::NftEvidence::NotFound;
        h.netns_is_own = Some(false);
        h.cap_net_admin = !h.cap_net_admin;
    }
    if !matches!(scope, ProbeScope::Full | ProbeScope::Pasta) {
        h.default_route = Default::default();
    }
    if !matches!(scope, ProbeScope::Full | ProbeScope::Pasta) {
        h.pasta = Helper::NotProbed;
    }
    if !matches!(scope, ProbeScope::Full | ProbeScope::Slirp4netns) {
        h.slirp4netns = Helper::NotProbed;
    }
    if scope == ProbeScope::Identity {
        h.tun.problem = Some(crate::host::diagnose::TunProblem::Missing { path: "/x".into() });
    }
    h
}

/// What a plan outcome is, comparably.
fn outcome(p: &Result<Plan, Refusal>) -> Result<(String, Vec<Step>, String), String> {
    match p {
        Ok(p) => Ok((p.mode.to_string(), p.steps.clone(), p.port_driver.name.clone())),
        Err(e) => Err(format!("{:?}", std::mem::discriminant(e))),
    }
}

/// The steps that record what they create.
fn records_something(step: &Step) -> bool {
    matches!(
        step,
        Step::LeaseAddress { .. }
            | Step::UseAddress { .. }
            | Step::CreateNetns
            | Step::NameNetns { .. }
            | Step::CreateVeth { .. }
            | Step::InstallForwards { .. }
            | Step::SpawnHelper { .. }
            | Step::StartRelay { .. }
    )
}

fn check_well_formed(req: &Request, host: &HostCaps, p: &Plan) -> Result<(), TestCaseError> {
    let s = &p.steps;
    let pos = |f: &dyn Fn(&Step) -> bool| s.iter().position(f);
    let record = pos(&|x| *x == Step::WriteRecord);
    if let Some(first) = pos(&records_something) {
        prop_assert!(record.is_some_and(|r| r < first), "recorded before created: {s:?}");
    }
    for (i, step) in s.iter().enumerate() {
        if let Step::SpawnHelper { helper, .. } = step {
            prop_assert_eq!(s.get(i + 1), Some(&Step::AwaitReady { helper: *helper }), "awaited at once: {:?}", s);
        }
        if let Step::NameNetns { .. } = step {
            prop_assert_eq!(host.euid, 0, "only root names a namespace for pasta");
        }
    }
    let relays = s.iter().filter(|x| matches!(x, Step::StartRelay { .. })).count();
    prop_assert_eq!(relays, usize::from(p.builtin()), "the relay iff the builtin driver: {:?}", s);
    prop_assert_eq!(s.contains(&Step::BindListeners), p.builtin());
    let dnat = matches!(p.mode, NetworkMode::Bridge(_)) && !p.builtin() && !req.network.ports.is_empty();
    prop_assert_eq!(
        s.contains(&Step::HoldPorts),
        dnat && req.lifetime == crate::flow::plan::Lifetime::Owner,
        "DNAT'd ports held while their owner lives: {:?}",
        s
    );
    prop_assert_eq!(s.contains(&Step::PickHostPorts), req.network.ports.iter().any(|m| m.host.is_none()));
    // A forwarder inside the namespace starts after the command (its
    // sockets exist before it); nothing else does.
    let inside = p.dns.as_ref().and_then(|d| d.forwarder.as_ref()).is_some_and(|f| {
        matches!(f.listen, crate::dns::decide::Listen::InNamespace(_))
    });
    let last = match s.split_last() {
        Some((Step::StartDns, rest)) if inside => rest.last(),
        _ => s.last(),
    };
    match (&req.target, req.command, &p.mode) {
        (_, true, NetworkMode::Host) => prop_assert_eq!(s.as_slice(), [Step::ExecInPlace]),
        (_, true, _) => prop_assert_eq!(last, Some(&Step::ExecCommand)),
        (TargetKind::Given(_), false, _) => prop_assert_eq!(last, Some(&Step::Commit)),
        _ => {}
    }
    if req.target == TargetKind::NewChild && p.mode != NetworkMode::Host {
        let forks: Vec<usize> = (0..s.len()).filter(|i| matches!(s[*i], Step::ForkChild { .. })).collect();
        prop_assert_eq!(forks.len(), 1, "one child: {:?}", s);
        let uses_child = |x: &Step| match x {
            Step::SpawnHelper { target, .. } | Step::StartRelay { target, .. } => *target == NsRef::Child,
            Step::NameNetns { of } => *of == NsRef::Child,
            _ => false,
        };
        if let Some(u) = pos(&uses_child) {
            prop_assert!(forks[0] < u, "the child exists before it is used: {s:?}");
        }
    }
    if matches!(req.target, TargetKind::Given(_)) {
        prop_assert!(!s.contains(&Step::CreateNetns), "a given namespace is not made: {s:?}");
        let joins_new = s.iter().any(|x| matches!(x, Step::ForkChild { ns: ChildNs::NewNet | ChildNs::NewUserAndNet }));
        prop_assert!(!joins_new, "{s:?}");
    }
    Ok(())
}

proptest! {
    // Planning is pure and takes microseconds: many cases, so that even
    // the rarer accepted combinations (an explicit mode, a fitting port
    // driver, no fallback) are met hundreds of times.
    #![proptest_config(ProptestConfig { cases: 4096, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn plans_read_only_their_probe_scope_and_are_carried_out_recorded(req in request(), which in 0usize..7) {
        let host = &hosts()[which];
        let full = plan(&req, host, &super::tests::NETS);
        let scoped = plan(&req, &garbled(host, probe_scope(&req, host.euid)), &super::tests::NETS);
        prop_assert_eq!(outcome(&full), outcome(&scoped), "{:?} planned differently with only its scope", req);
        if let Ok(p) = &full {
            check_well_formed(&req, host, p)?;
            prop_assert_eq!(outcome(&plan(&req, host, &super::tests::NETS)), outcome(&full), "planning is deterministic");
        }
    }
}

use super::*;
use crate::bridge::network::default_network_def;
use crate::host::probe::test_hosts::{debian_pasta, root, rootless};
use crate::model::driver::PortDriver;

fn cfg(mode: &str, ports: &[&str]) -> NetworkConfig {
    let mut c = NetworkConfig::new(mode.parse().unwrap());
    c.ports = ports.iter().map(|p| p.parse().unwrap()).collect();
    c
}

/// The default network only, and an `/etc` whose resolver any namespace
/// reaches (so name resolution changes nothing unless asked).
pub(super) struct Fixed;

impl Lookups for Fixed {
    fn network(&self, name: &str) -> Result<NetworkDef, NetworkError> {
        match name {
            DEFAULT_NETWORK => Ok(default_network_def()),
            other => Err(NetworkError::NotFound(other.into())),
        }
    }

    fn etc(&self) -> &Path {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/etc-plain"))
    }
}

pub(super) const NETS: Fixed = Fixed;

fn run_plan(c: NetworkConfig, host: &HostCaps) -> Result<Plan, Refusal> {
    plan(&Request::run(c), host, &NETS)
}

fn attach(c: NetworkConfig, userns: bool, named: bool) -> Request {
    let netns = if named { "/run/netns/web" } else { "/proc/42/ns/net" };
    let given = Given { netns: netns.into(), userns: userns.then(|| "/proc/42/ns/user".into()), named };
    Request {
        network: c,
        fallback: None,
        ip: None,
        target: TargetKind::Given(given),
        lifetime: Lifetime::Detached,
        command: false,
    }
}

fn ops(p: &Plan) -> Vec<&'static str> {
    p.steps.iter().map(Step::op).collect()
}

#[test]
fn auto_on_a_debian_pasta_host_plans_slirp4netns_with_the_builtin_port_driver() {
    let mut caps = rootless();
    caps.pasta = debian_pasta();
    let p = run_plan(cfg("auto", &["8080:80"]), &caps).unwrap();
    assert_eq!(p.mode, NetworkMode::Slirp4netns);
    assert!(p.decision.as_ref().unwrap().reason.contains("2023_10_04"));
    let argv = p.helper_argv.clone().unwrap().join(" ");
    assert!(argv.contains("--userns-path=/proc/<child>/ns/user") && argv.contains("--disable-host-loopback"), "{argv}");
    assert_eq!(p.port_driver.name, "builtin");
    let text = render(&p);
    assert!(!text.contains("add_hostfwd") && text.contains("socket factory"), "{text}");
    assert_eq!(
        ops(&p),
        [
            "claim_ports",
            "bind_listeners",
            "prepare_dns",
            "write_record",
            "fork_child",
            "spawn_helper",
            "await_ready",
            "start_relay",
            "exec_command",
            "start_dns"
        ]
    );
}

#[test]
fn slirp4netns_driver_on_request_plans_its_hostfwd() {
    let mut c = cfg("slirp4netns", &["8080:80"]);
    c.port_driver = PortDriver::Slirp4netns;
    let text = render(&run_plan(c, &rootless()).unwrap());
    assert!(text.contains("add_hostfwd through the API socket: 8080:80/tcp"), "{text}");
}

#[test]
fn a_range_slirp4netns_cannot_forward_is_refused_as_run_refuses_it() {
    // Planned fine before the pipeline while `run` refused it (exit 125).
    let mut c = cfg("slirp4netns", &["127.0.0.1:18120-18122:8000-8002"]);
    c.port_driver = PortDriver::Slirp4netns;
    let err = run_plan(c, &rootless()).unwrap_err();
    assert!(matches!(err, Refusal::SlirpPorts(_)), "{err}");
    assert!(err.to_string().contains("port ranges"), "{err}");
}

#[test]
fn host_networking_with_a_published_port_is_refused_not_dropped() {
    let err = run_plan(cfg("host", &["18123:80"]), &rootless()).unwrap_err();
    assert!(matches!(err, Refusal::HostPublishes(_)), "{err}");
    assert!(err.to_string().contains("18123:80/tcp"), "{err}");
    assert!(!err.to_string().contains("-p"), "messages name no flag: {err}");
    assert_eq!(ops(&run_plan(cfg("host", &[]), &rootless()).unwrap()), ["exec_in_place"]);
}

#[test]
fn debian_pasta_with_an_all_interfaces_port_plans_the_builtin_driver_and_says_why() {
    let mut caps = rootless();
    caps.pasta = debian_pasta();
    let p = run_plan(cfg("pasta", &["8080:80"]), &caps).unwrap();
    let text = render(&p);
    assert!(text.contains("port driver: builtin (this pasta build breaks TCP on published ports"), "{text}");
    assert!(p.helper_argv.unwrap().join(" ").contains("-t none"));
    assert!(p.warnings.iter().any(|w| w.contains("all interfaces")), "{:?}", p.warnings);
    let mut c = cfg("pasta", &["127.0.0.1:8080:80"]);
    c.port_driver = PortDriver::Pasta;
    let p = run_plan(c, &caps).unwrap();
    assert_eq!(p.port_driver.name, "pasta");
    assert!(p.helper_argv.unwrap().join(" ").contains("-t 127.0.0.1/8080:80"));
}

#[test]
fn explicit_pasta_plans_its_pinned_argv_and_no_selection() {
    let p = run_plan(cfg("pasta", &["127.0.0.1:8080:80"]), &rootless()).unwrap();
    assert!(p.decision.is_none());
    let argv = p.helper_argv.clone().unwrap().join(" ");
    assert!(argv.contains("-t 127.0.0.1/8080:80") && argv.contains("-u none") && argv.contains("-T none"), "{argv}");
    assert_eq!(
        ops(&p),
        [
            "claim_ports",
            "prepare_dns",
            "write_record",
            "fork_child",
            "spawn_helper",
            "await_ready",
            "exec_command",
            "start_dns"
        ]
    );
}

#[test]
fn root_pasta_names_the_child_namespace_and_keeps_root() {
    let p = run_plan(cfg("pasta", &[]), &root()).unwrap();
    let steps = [
        "prepare_dns",
        "write_record",
        "fork_child",
        "name_netns",
        "spawn_helper",
        "await_ready",
        "exec_command",
        "start_dns",
    ];
    assert_eq!(ops(&p), steps);
    let argv = p.helper_argv.unwrap().join(" ");
    assert!(argv.ends_with("--netns /run/netns/pelagos-<id> --runas 0"), "{argv}");
}

#[test]
fn a_missing_pasta_or_an_unusable_tun_is_refused_with_a_hint() {
    let mut caps = rootless();
    caps.pasta = crate::host::probe::Helper::Missing;
    let err = run_plan(cfg("pasta", &[]), &caps).unwrap_err();
    assert!(matches!(err, Refusal::PastaMissing) && err.hint().unwrap().contains("apt-get install passt"), "{err}");
    let mut caps = rootless();
    caps.tun.problem = Some(crate::host::diagnose::TunProblem::Missing { path: "/dev/net/tun".into() });
    assert!(matches!(run_plan(cfg("slirp4netns", &[]), &caps).unwrap_err(), Refusal::Tun { helper: "slirp4netns", .. }));
}

#[test]
fn a_plain_loopback_run_writes_no_record_and_a_relayed_one_does() {
    assert_eq!(ops(&run_plan(cfg("loopback", &[]), &rootless()).unwrap()), ["fork_child", "exec_command"]);
    let p = run_plan(cfg("loopback", &["127.0.0.1::80"]), &rootless()).unwrap();
    assert_eq!(
        ops(&p),
        ["pick_host_ports", "claim_ports", "bind_listeners", "write_record", "fork_child", "start_relay", "exec_command"]
    );
    let err = run_plan(cfg("loopback", &[]).tap_host_port(5432), &rootless()).unwrap_err();
    assert!(matches!(err, Refusal::HostLoopback { .. }), "{err}");
}

#[test]
fn bridge_plan_shows_the_table_and_forward_scripts_as_root() {
    let p = run_plan(cfg("bridge", &["8080:80"]), &root()).unwrap();
    let text = render(&p);
    assert!(text.contains("add table ip pelagos-pelagos0") && text.contains("8080 : <leased> . 80"), "{text}");
    assert!(text.contains("hold 8080:80/tcp with sockets of this process"), "{text}");
    assert_eq!(
        ops(&p),
        [
            "claim_ports",
            "hold_ports",
            "prepare_dns",
            "write_record",
            "lease_address",
            "ensure_network",
            "create_netns",
            "create_veth",
            "configure_address",
            "install_forwards",
            "fork_child",
            "start_dns",
            "exec_command"
        ]
    );
    let err = run_plan(cfg("bridge:nope", &[]), &root()).unwrap_err();
    assert!(matches!(err, Refusal::Network(_)), "{err}");
}

#[test]
fn a_rootless_bridge_run_joins_the_network_holder_and_relays_its_ports() {
    let p = run_plan(cfg("bridge", &["8080:80"]), &rootless()).unwrap();
    assert_eq!(
        ops(&p),
        [
            "claim_ports",
            "bind_listeners",
            "prepare_dns",
            "write_record",
            "ensure_holder",
            "lease_address",
            "fork_child",
            "attach_in_holder",
            "start_relay",
            "exec_command"
        ]
    );
    assert!(p.builtin(), "{:?}", p.port_driver);
    let text = render(&p);
    assert!(text.contains("network holder") && text.contains("mtu 65520"), "{text}");
    assert!(text.contains("--netns /proc/<holder>/ns/net --userns /proc/<holder>/ns/user"), "{text}");
    // A namespace someone else made joins the network without a child;
    // whether the holder may enter it is found when it is known.
    let p = plan(&attach(cfg("bridge", &[]), true, false), &rootless(), &NETS).unwrap();
    assert_eq!(ops(&p), ["write_record", "ensure_holder", "lease_address", "attach_in_holder", "commit"]);
    assert!(p.steps.iter().position(Step::needs_target) == Some(3), "{:?}", p.steps);
}

#[test]
fn an_ephemeral_range_is_refused_before_anything() {
    let err = run_plan(cfg("pasta", &["80-90"]), &rootless()).unwrap_err();
    assert!(matches!(err, Refusal::EphemeralRange(_)), "{err}");
    assert!(err.hint().unwrap().contains("-p 8000-8010:80-90"), "{:?}", err.hint());
}

#[test]
fn ns_path_runs_in_the_namespace_as_it_is() {
    let mut req = attach(cfg("ns:/proc/42/ns/net", &[]), true, false);
    req.command = true;
    req.lifetime = Lifetime::Owner;
    let p = plan(&req, &rootless(), &NETS).unwrap();
    assert_eq!(ops(&p), ["fork_child", "exec_command"]);
    req.network.ports = vec!["8080:80".parse().unwrap()];
    assert!(matches!(plan(&req, &rootless(), &NETS).unwrap_err(), Refusal::NsPublishes));
    req.network.ports.clear();
    req.fallback = Some(Fallback::Warn);
    assert!(matches!(plan(&req, &rootless(), &NETS).unwrap_err(), Refusal::NsFallback));
}

#[test]
fn a_rootless_pasta_attachment_spawns_pasta_into_the_given_namespace_and_commits() {
    let p = plan(&attach(cfg("pasta", &["127.0.0.1::80"]), true, false), &rootless(), &NETS).unwrap();
    assert_eq!(
        ops(&p),
        ["pick_host_ports", "claim_ports", "write_record", "spawn_helper", "await_ready", "commit"],
        "a fixed pasta forwards the port itself"
    );
    let argv = p.helper_argv.unwrap().join(" ");
    assert!(argv.contains("--netns /proc/42/ns/net --userns /proc/42/ns/user"), "{argv}");
    let mut caps = rootless();
    caps.pasta = debian_pasta();
    let p = plan(&attach(cfg("pasta", &["127.0.0.1:8080:80"]), true, false), &caps, &NETS).unwrap();
    assert!(p.steps.contains(&Step::StartRelay { target: NsRef::Given, inside: Inside::Factory, detached: true }));
}

#[test]
fn a_root_attachment_names_a_process_namespace_but_not_a_bind_mount() {
    let p = plan(&attach(cfg("pasta", &[]), false, false), &root(), &NETS).unwrap();
    assert_eq!(ops(&p), ["write_record", "name_netns", "spawn_helper", "await_ready", "commit"]);
    let p = plan(&attach(cfg("pasta", &[]), false, true), &root(), &NETS).unwrap();
    assert_eq!(ops(&p), ["write_record", "spawn_helper", "await_ready", "commit"]);
    let p = plan(&attach(cfg("bridge", &["8080:80"]), false, true), &root(), &NETS).unwrap();
    assert_eq!(
        ops(&p),
        [
            "claim_ports",
            "write_record",
            "lease_address",
            "ensure_network",
            "create_veth",
            "configure_address",
            "install_forwards",
            "commit"
        ]
    );
}

#[test]
fn a_root_bridge_attachment_plans_the_same_from_the_uids_alone() {
    let full = root();
    let bare = HostCaps::uids_only(full.euid, full.uid);
    for ports in [&[][..], &["8080:80"][..]] {
        for named in [false, true] {
            let mut c = cfg("bridge", ports);
            c.port_driver = PortDriver::Nftables;
            let req = attach(c, false, named);
            let json = |host: &HostCaps| serde_json::to_value(plan(&req, host, &NETS).unwrap()).unwrap();
            assert_eq!(json(&bare), json(&full), "{ports:?} {named}");
        }
    }
}

#[test]
fn what_cannot_network_an_existing_namespace_is_refused() {
    for mode in ["host", "ns:/run/netns/x"] {
        let err = plan(&attach(cfg(mode, &[]), true, false), &rootless(), &NETS).unwrap_err();
        assert!(matches!(err, Refusal::NotAttachable(_)), "{mode}: {err}");
    }
    let err = plan(&attach(cfg("loopback", &[]), true, false), &rootless(), &NETS).unwrap_err();
    assert!(matches!(err, Refusal::NothingToAttach), "{err}");
}

#[test]
fn auto_on_an_existing_namespace_ignores_what_creating_one_would_take() {
    let mut caps = rootless();
    caps.userns_knobs.max_user_namespaces = Some(0);
    let mut run = Request::run(cfg("pasta", &[]));
    run.fallback = Some(Fallback::Strict);
    let err = plan(&run, &caps, &NETS).unwrap_err();
    assert!(matches!(err, Refusal::Select(_)), "a run needs a user namespace: {err}");
    let mut req = attach(cfg("auto", &[]), true, false);
    req.fallback = Some(Fallback::Strict);
    let p = plan(&req, &caps, &NETS).unwrap();
    assert_eq!(p.mode, NetworkMode::Pasta);
}

trait Tweak {
    fn tap_host_port(self, port: u16) -> Self;
}

impl Tweak for NetworkConfig {
    fn tap_host_port(mut self, port: u16) -> Self {
        self.host_loopback_ports.push(port);
        self
    }
}

#[test]
fn debians_pasta_keeps_the_host_loopback_private_keeps_root_and_is_named_once_when_chosen_by_hand() {
    let mut caps = root();
    caps.pasta = debian_pasta();
    let p = run_plan(cfg("pasta", &[]), &caps).unwrap();
    assert_eq!(p.runas, Some(0));
    assert!(p.helper_argv.as_ref().unwrap().iter().any(|a| a == "--no-map-gw"));
    let named: Vec<_> = p.warnings.iter().filter(|w| w.contains("TCP bugs")).collect();
    assert_eq!(named.len(), 1, "{:?}", p.warnings);
    assert!(named[0].contains("2024_08_06"), "{named:?}");
}

#[test]
fn a_pasta_without_no_map_gw_is_refused_naming_pasta_and_the_exposure() {
    let mut caps = rootless();
    let features = crate::helpers::pasta::features::PastaFeatures::from_outputs(
        "pasta 2021_01_01.abc\n",
        "  --netns PATH\n  --userns PATH\n  --config-net\n",
    );
    caps.pasta = crate::host::probe::Helper::Found { path: "/opt/pasta".into(), features: features.into() };
    let err = run_plan(cfg("pasta", &[]), &caps).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("pasta at /opt/pasta cannot keep the host's loopback private"), "{text}");
    assert!(err.hint().unwrap().contains("slirp4netns"), "{:?}", err.hint());
}

/// Steps are data another process can be handed (a holder running steps
/// inside another user namespace): each survives JSON unchanged.
#[test]
fn every_step_round_trips_through_json() {
    let plans = [
        run_plan(cfg("bridge", &["8080:80"]), &root()).unwrap(),
        run_plan(cfg("pasta", &["127.0.0.1::80"]), &rootless()).unwrap(),
        plan(&attach(cfg("loopback", &["127.0.0.1:8080:80"]), true, false), &rootless(), &NETS).unwrap(),
    ];
    for step in plans.iter().flat_map(|p| p.steps.iter()) {
        let json = serde_json::to_value(step).unwrap();
        assert_eq!(&serde_json::from_value::<Step>(json.clone()).unwrap(), step, "{json}");
    }
}

#[test]
fn a_named_bridge_run_claims_its_name_before_the_record_and_a_named_pasta_run_has_nothing_to_claim() {
    let mut c = cfg("bridge", &["8080:80"]);
    c.name = Some(crate::model::run_name::RunName::new("db").unwrap());
    let p = run_plan(c.clone(), &root()).unwrap();
    let o = ops(&p);
    let at = |op: &str| o.iter().position(|x| *x == op).unwrap_or_else(|| panic!("{op} missing: {o:?}"));
    assert!(at("claim_ports") < at("claim_name") && at("claim_name") < at("write_record"), "{o:?}");
    assert_eq!(p.name, c.name);
    assert!(render(&p).contains("no live run on network pelagos0 goes by the name db"), "{}", render(&p));
    c.mode = NetworkMode::Pasta;
    let p = run_plan(c, &rootless()).unwrap();
    assert!(!ops(&p).contains(&"claim_name"), "{:?}", ops(&p));
}

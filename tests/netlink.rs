//! Root tier: the rtnetlink client against the real kernel.
//!
//! Every test makes its own throwaway namespaces with `ip netns add
//! pnl-<pid>-<n>` (deleted by a guard, even on panic), runs the API on a
//! thread that has entered the throwaway "host" namespace (the real host's
//! links and routes are never touched), and checks the result with `ip`,
//! which the library itself never runs. Addresses are only configured,
//! never sent to.
//!
//! Without root the tests print a loud SKIP; under `CI=true` or
//! `PELAGOS_REQUIRE_ALL_TIERS=1` they fail instead.

use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};
use pelagos_net::bridge::netlink::{Netlink, NetlinkError};
use std::collections::BTreeSet;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const BRIDGE: &str = "pnlbr0";
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
const CONTAINER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 2);
const PREFIX: u8 = 24;

fn strict() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
        || std::env::var("PELAGOS_REQUIRE_ALL_TIERS").is_ok_and(|v| v == "1")
}

/// Whether the root tier can run; prints a loud SKIP (or panics in CI) if not.
fn root_tier(test: &str) -> bool {
    let why = if !nix::unistd::geteuid().is_root() {
        "not root"
    } else if Command::new("ip").arg("-V").output().is_err() {
        "`ip` (iproute2) is not installed"
    } else {
        return true;
    };
    if strict() {
        panic!("root tier cannot run and skipping is not allowed in CI: {test}: {why}");
    }
    eprintln!("SKIP [root] {test}: {why}");
    false
}

/// A throwaway named network namespace, deleted on drop.
struct TestNetns {
    name: String,
}

impl TestNetns {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("pnl-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        ip(&["netns", "add", &name]);
        Self { name }
    }

    fn open(&self) -> File {
        File::open(format!("/run/netns/{}", self.name)).expect("open netns file")
    }

    /// `ip -n NAME args...`, which must succeed; its stdout.
    fn ip(&self, args: &[&str]) -> String {
        ip(&[&["-n", &self.name], args].concat())
    }

    /// Whether `ip -n NAME args...` succeeds.
    fn ip_ok(&self, args: &[&str]) -> bool {
        Command::new("ip").args(["-n", &self.name]).args(args).output().expect("run ip").status.success()
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 from ip")
}

/// Run `f` on a thread that has entered `ns`; a panic in `f` is re-raised here.
fn in_netns<T: Send>(ns: &TestNetns, f: impl FnOnce() -> T + Send) -> T {
    let fd = ns.open();
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(fd.as_fd(), CloneFlags::CLONE_NEWNET).expect("setns into test namespace");
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The flags `ip link show` prints between `<` and `>`.
fn link_flags(ns: &TestNetns, dev: &str) -> Vec<String> {
    let out = ns.ip(&["link", "show", "dev", dev]);
    let flags = out.split_once('<').and_then(|(_, rest)| rest.split_once('>')).expect("flags in ip link output").0;
    flags.split(',').map(str::to_owned).collect()
}

/// `(index, name)` of every link, from `ip -o link show`.
fn ip_links(ns: &TestNetns) -> BTreeSet<(u32, String)> {
    ns.ip(&["-o", "link", "show"])
        .lines()
        .map(|line| {
            let mut fields = line.split(": ");
            let index = fields.next().unwrap().trim().parse().unwrap();
            // A veth shows as `eth0@if7` (or `@NONE`): the name is before the `@`.
            let name = fields.next().unwrap().split('@').next().unwrap().to_owned();
            (index, name)
        })
        .collect()
}

/// `(index, address, prefix)` of every IPv4 address, from `ip -o -4 addr show`.
fn ip_addresses(ns: &TestNetns) -> BTreeSet<(u32, Ipv4Addr, u8)> {
    ns.ip(&["-o", "-4", "addr", "show"])
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let index = fields[0].trim_end_matches(':').parse().unwrap();
            assert_eq!(fields[2], "inet", "unexpected line {line}");
            let (addr, prefix) = fields[3].split_once('/').unwrap();
            (index, addr.parse().unwrap(), prefix.parse().unwrap())
        })
        .collect()
}

/// `(destination, gateway, oif)` of every main-table IPv4 route, from `ip -4 route show table main`.
fn ip_routes(ns: &TestNetns) -> BTreeSet<(String, Option<Ipv4Addr>, Option<u32>)> {
    let index_of = |name: &str| ip_links(ns).into_iter().find(|(_, n)| n == name).map(|(i, _)| i);
    ns.ip(&["-4", "route", "show", "table", "main"])
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let after = |key: &str| fields.iter().position(|f| *f == key).map(|i| fields[i + 1]);
            let destination = match fields[0] {
                "default" => "0.0.0.0/0".to_owned(),
                d if d.contains('/') => d.to_owned(),
                d => format!("{d}/32"),
            };
            (destination, after("via").map(|g| g.parse().unwrap()), after("dev").and_then(index_of))
        })
        .collect()
}

/// Host namespace with bridge `BRIDGE` up at `GATEWAY/PREFIX`; returns the bridge index.
fn bridge_with_gateway(nl: &mut Netlink) -> u32 {
    let bridge = nl.create_bridge(BRIDGE).expect("create bridge");
    nl.add_address(bridge, GATEWAY, PREFIX).expect("bridge address");
    nl.set_up(bridge).expect("bridge up");
    bridge
}

/// A whole attach: the bridge with its gateway in `host`, a veth whose
/// `eth0` end is created in `ctr`, then the container side configured.
fn attach_container(host: &TestNetns, ctr: &TestNetns) {
    in_netns(host, || {
        let mut nl = Netlink::open().expect("open");
        let bridge = bridge_with_gateway(&mut nl);
        let veth = nl.create_veth("pnlv0", "eth0", ctr.open().as_fd(), Some(bridge)).expect("create veth");
        nl.set_up(veth).expect("veth up");
    });
    configure_container(ctr);
}

/// The container side of an attach: `eth0` up at `CONTAINER_ADDR`, default route via `GATEWAY`.
fn configure_container(ctr: &TestNetns) {
    let mut nl = Netlink::open_in(ctr.open().as_fd()).expect("socket in container namespace");
    let eth0 = nl.link_index("eth0").expect("look up eth0").expect("eth0 exists in the container");
    nl.set_up(eth0).expect("eth0 up");
    nl.add_address(eth0, CONTAINER_ADDR, PREFIX).expect("eth0 address");
    nl.add_default_route(GATEWAY).expect("default route");
}

#[test]
fn bridge_is_created_and_set_up() {
    if !root_tier("bridge_is_created_and_set_up") {
        return;
    }
    let host = TestNetns::new();

    let (index, looked_up) = in_netns(&host, || {
        let mut nl = Netlink::open().expect("open");
        let index = nl.create_bridge(BRIDGE).expect("create bridge");
        nl.set_up(index).expect("set up");
        (index, nl.link_index(BRIDGE).expect("look up"))
    });

    assert_eq!(looked_up, Some(index));
    let details = host.ip(&["-d", "link", "show", "dev", BRIDGE]);
    assert!(details.contains("bridge"));
    assert!(details.contains("mcast_snooping 0"), "created without multicast snooping:\n{details}");
    assert!(link_flags(&host, BRIDGE).contains(&"UP".to_owned()));
    assert!(ip_links(&host).contains(&(index, BRIDGE.to_owned())));
}

#[test]
fn missing_link_has_no_index() {
    if !root_tier("missing_link_has_no_index") {
        return;
    }
    let host = TestNetns::new();

    let index = in_netns(&host, || Netlink::open().expect("open").link_index("nosuchlink0").expect("look up"));

    assert_eq!(index, None);
}

#[test]
fn veth_peer_is_created_inside_container_namespace_with_host_end_enslaved() {
    if !root_tier("veth_peer_is_created_inside_container_namespace_with_host_end_enslaved") {
        return;
    }
    let host = TestNetns::new();
    let ctr = TestNetns::new();

    let (bridge, veth) = in_netns(&host, || {
        let mut nl = Netlink::open().expect("open");
        let bridge = nl.create_bridge(BRIDGE).expect("create bridge");
        let veth = nl.create_veth("pnlv0", "eth0", ctr.open().as_fd(), Some(bridge)).expect("create veth");
        nl.set_up(veth).expect("veth up");
        (bridge, veth)
    });

    assert!(ctr.ip_ok(&["link", "show", "eth0"]), "peer eth0 missing in the container namespace");
    assert!(!host.ip_ok(&["link", "show", "eth0"]), "peer eth0 was created in the host namespace");
    assert!(host.ip(&["link", "show", "dev", "pnlv0"]).contains(&format!("master {BRIDGE}")));
    assert!(ip_links(&host).contains(&(veth, "pnlv0".to_owned())));
    assert_ne!(veth, bridge);
}

#[test]
fn set_master_enslaves_an_existing_veth() {
    if !root_tier("set_master_enslaves_an_existing_veth") {
        return;
    }
    let host = TestNetns::new();
    let ctr = TestNetns::new();

    in_netns(&host, || {
        let mut nl = Netlink::open().expect("open");
        let bridge = nl.create_bridge(BRIDGE).expect("create bridge");
        let veth = nl.create_veth("pnlv0", "eth0", ctr.open().as_fd(), None).expect("create veth");
        assert!(!host.ip(&["link", "show", "dev", "pnlv0"]).contains("master"));
        nl.set_master(veth, bridge).expect("set master");
    });

    assert!(host.ip(&["link", "show", "dev", "pnlv0"]).contains(&format!("master {BRIDGE}")));
}

#[test]
fn container_address_and_default_route_are_set() {
    if !root_tier("container_address_and_default_route_are_set") {
        return;
    }
    let host = TestNetns::new();
    let ctr = TestNetns::new();

    attach_container(&host, &ctr);

    assert!(ctr.ip(&["-4", "addr", "show", "dev", "eth0"]).contains(&format!("inet {CONTAINER_ADDR}/{PREFIX}")));
    assert!(ctr.ip(&["-4", "route", "show"]).contains(&format!("default via {GATEWAY} dev eth0")));
    assert!(link_flags(&ctr, "eth0").contains(&"UP".to_owned()));
    // Set up from another namespace: the test's own namespace is unchanged.
    assert!(host.ip(&["-4", "route", "show"]).lines().all(|l| !l.starts_with("default")));
}

#[test]
fn listings_match_what_ip_lists() {
    if !root_tier("listings_match_what_ip_lists") {
        return;
    }
    let host = TestNetns::new();
    let ctr = TestNetns::new();
    attach_container(&host, &ctr);

    for ns in [&host, &ctr] {
        let (links, addrs, routes) = in_netns(ns, || {
            let mut nl = Netlink::open().expect("open");
            (nl.links().expect("links"), nl.ipv4_addresses().expect("addresses"), nl.ipv4_routes().expect("routes"))
        });

        let links_seen: BTreeSet<_> = links.iter().map(|l| (l.index, l.name.clone())).collect();
        assert_eq!(links_seen, ip_links(ns), "links of {}", ns.name);
        let addrs_seen: BTreeSet<_> = addrs.iter().map(|a| (a.ifindex, a.address, a.prefix)).collect();
        assert_eq!(addrs_seen, ip_addresses(ns), "addresses of {}", ns.name);
        let routes_seen: BTreeSet<_> = routes.iter().map(|r| (r.destination.to_string(), r.gateway, r.oif)).collect();
        assert_eq!(routes_seen, ip_routes(ns), "routes of {}", ns.name);

        let kind_of = |name: &str| links.iter().find(|l| l.name == name).expect(name).kind.clone();
        assert_eq!(kind_of("lo"), None);
        if ns.name == host.name {
            assert_eq!(kind_of(BRIDGE).as_deref(), Some("bridge"));
            assert_eq!(kind_of("pnlv0").as_deref(), Some("veth"));
            let bridge = links.iter().find(|l| l.name == BRIDGE).unwrap();
            let veth = links.iter().find(|l| l.name == "pnlv0").unwrap();
            assert_eq!(veth.master, Some(bridge.index));
            assert!(bridge.up && veth.up);
        } else {
            assert_eq!(kind_of("eth0").as_deref(), Some("veth"));
            assert!(addrs.iter().any(|a| a.address == CONTAINER_ADDR && a.prefix == PREFIX));
            assert!(routes.iter().any(|r| r.destination.prefix() == 0 && r.gateway == Some(GATEWAY)));
        }
    }
}

#[test]
fn deleting_the_host_end_removes_both_ends() {
    if !root_tier("deleting_the_host_end_removes_both_ends") {
        return;
    }
    let host = TestNetns::new();
    let ctr = TestNetns::new();

    let after = in_netns(&host, || {
        let mut nl = Netlink::open().expect("open");
        let veth = nl.create_veth("pnlv0", "eth0", ctr.open().as_fd(), None).expect("create veth");
        nl.delete_link(veth).expect("delete veth");
        nl.link_index("pnlv0").expect("look up")
    });

    assert_eq!(after, None);
    assert!(!host.ip_ok(&["link", "show", "pnlv0"]));
    assert!(!ctr.ip_ok(&["link", "show", "eth0"]), "peer survived deleting the host end");
}

#[test]
fn bridge_port_options_and_ipv6_address_generation_take_effect() {
    if !root_tier("bridge_port_options_and_ipv6_address_generation_take_effect") {
        return;
    }
    let host = TestNetns::new();
    let ctr = TestNetns::new();

    let veth = in_netns(&host, || {
        let mut nl = Netlink::open().expect("open");
        let bridge = bridge_with_gateway(&mut nl);
        let veth = nl.create_veth("pnlv0", "eth0", ctr.open().as_fd(), Some(bridge)).expect("create veth");
        nl.set_port_up(veth, true).expect("port up");
        veth
    });
    let mut inside = Netlink::open_in(ctr.open().as_fd()).expect("socket in container namespace");
    let eth0 = inside.link_index("eth0").expect("look up eth0").expect("eth0 exists");
    inside.set_no_ipv6_autoconf(eth0).expect("no ipv6 address generation");
    inside.set_up(eth0).expect("eth0 up");

    let port = host.ip(&["-d", "link", "show", "dev", "pnlv0"]);
    assert!(port.contains("hairpin on"), "hairpin mode not set: {port}");
    assert!(port.contains("addrgenmode none"), "host end generates IPv6 addresses: {port}");
    assert!(link_flags(&host, "pnlv0").contains(&"UP".to_owned()));
    assert!(ctr.ip(&["-d", "link", "show", "dev", "eth0"]).contains("addrgenmode none"));
    // Both ends have carrier now: no link-local address was made on either.
    let v6 = format!(
        "{}{}",
        host.ip(&["-6", "-o", "addr", "show", "dev", "pnlv0"]),
        ctr.ip(&["-6", "-o", "addr", "show", "dev", "eth0"])
    );
    assert!(v6.is_empty(), "IPv6 addresses on the veth pair: {v6}");

    // The bridge enables a disabled port on a carrier change: wait for
    // the one the container end's up brings (linkwatch, asynchronous).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !host.ip(&["-o", "link", "show", "dev", "pnlv0"]).contains("state UP") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    in_netns(&host, || Netlink::open().expect("open").disable_port(veth).expect("disable port"));
    let state = host.ip(&["-d", "link", "show", "dev", "pnlv0"]);
    assert!(state.contains("bridge_slave state disabled"), "port not disabled: {state}");
}

#[test]
fn creating_an_existing_bridge_is_exists() {
    if !root_tier("creating_an_existing_bridge_is_exists") {
        return;
    }
    let host = TestNetns::new();

    let err = in_netns(&host, || {
        let mut nl = Netlink::open().expect("open");
        nl.create_bridge(BRIDGE).expect("first create");
        nl.create_bridge(BRIDGE).expect_err("second create must fail")
    });

    assert!(err.is_exists(), "{err:?}");
    assert!(matches!(&err, NetlinkError::CreateBridge { name, .. } if name == BRIDGE));
    assert_eq!(err.to_string(), format!("create bridge {BRIDGE}"));
}

#[test]
fn adding_an_address_to_a_missing_link_names_the_operation() {
    if !root_tier("adding_an_address_to_a_missing_link_names_the_operation") {
        return;
    }
    let host = TestNetns::new();

    let err = in_netns(&host, || {
        let mut nl = Netlink::open().expect("open");
        nl.add_address(999_999, Ipv4Addr::new(10, 213, 9, 9), 24).expect_err("no such link")
    });

    assert!(matches!(err, NetlinkError::AddAddress { ifindex: 999_999, .. }), "{err:?}");
    assert_eq!(err.to_string(), "add address 10.213.9.9/24 to link 999999");
    assert_eq!(err.errno(), Some(Errno::ENODEV));
    assert!(!err.is_exists());
}

#[test]
fn creating_a_veth_with_a_taken_host_name_fails_and_leaves_no_peer() {
    if !root_tier("creating_a_veth_with_a_taken_host_name_fails_and_leaves_no_peer") {
        return;
    }
    let host = TestNetns::new();
    let ctr = TestNetns::new();

    let err = in_netns(&host, || {
        let mut nl = Netlink::open().expect("open");
        nl.create_bridge("pnlv0").expect("bridge taking the veth's name");
        nl.create_veth("pnlv0", "eth0", ctr.open().as_fd(), None).expect_err("name taken")
    });

    assert!(err.is_exists(), "{err:?}");
    assert_eq!(err.to_string(), "create veth pnlv0 with peer eth0");
    assert!(!ctr.ip_ok(&["link", "show", "eth0"]));
}

/// Average of `total` over `n`, in microseconds.
fn micros(total: Duration, n: u32) -> f64 {
    total.as_secs_f64() * 1e6 / f64::from(n)
}

#[test]
fn attach_timing_per_container() {
    if !root_tier("attach_timing_per_container") {
        return;
    }
    const CONTAINERS: u32 = 50;
    let host = TestNetns::new();
    let ctrs: Vec<TestNetns> = (0..CONTAINERS).map(|_| TestNetns::new()).collect();
    let ctr_fds: Vec<File> = ctrs.iter().map(TestNetns::open).collect();

    let [veth, host_up, open_in, ctr_up, addr, route] = in_netns(&host, || {
        let mut nl = Netlink::open().expect("open");
        let bridge = bridge_with_gateway(&mut nl);
        let mut steps = [Duration::ZERO; 6];
        let mut time = |step: usize, since: &mut Instant| {
            let now = Instant::now();
            steps[step] += now - *since;
            *since = now;
        };
        for (i, fd) in ctr_fds.iter().enumerate() {
            let mut t = Instant::now();
            let host_end = nl.create_veth(&format!("pnlv{i}"), "eth0", fd.as_fd(), Some(bridge)).expect("veth");
            time(0, &mut t);
            nl.set_up(host_end).expect("host end up");
            time(1, &mut t);
            let mut ctr = Netlink::open_in(fd.as_fd()).expect("open in container");
            time(2, &mut t);
            let eth0 = ctr.link_index("eth0").expect("look up").expect("eth0");
            ctr.set_up(eth0).expect("eth0 up");
            time(3, &mut t);
            ctr.add_address(eth0, Ipv4Addr::new(10, 213, 0, 10 + i as u8), PREFIX).expect("address");
            time(4, &mut t);
            ctr.add_default_route(GATEWAY).expect("route");
            time(5, &mut t);
        }
        steps
    });

    let total = veth + host_up + open_in + ctr_up + addr + route;
    eprintln!("TIMING attach over {CONTAINERS} containers (average per container):");
    eprintln!("  create veth (peer in netns, master in request): {:8.1} us", micros(veth, CONTAINERS));
    eprintln!("  host end up:                                    {:8.1} us", micros(host_up, CONTAINERS));
    eprintln!("  open socket in container netns (thread+setns):  {:8.1} us", micros(open_in, CONTAINERS));
    eprintln!("  look up eth0 + up:                              {:8.1} us", micros(ctr_up, CONTAINERS));
    eprintln!("  add address:                                    {:8.1} us", micros(addr, CONTAINERS));
    eprintln!("  add default route:                              {:8.1} us", micros(route, CONTAINERS));
    eprintln!("  total:                                          {:8.1} us", micros(total, CONTAINERS));
    assert_eq!(host.ip(&["-o", "link", "show", "master", BRIDGE]).lines().count(), CONTAINERS as usize);
}

//! Bridge mode through the library API (root tier): concurrent attaches and
//! secondary networks, in a throwaway host namespace.

mod common;

use common::{Env, Tier, Topology, in_netns};
use pelagos_net::bridge::lease::LeaseStore;
use pelagos_net::bridge::network::{NetworkRequest, bootstrap_default_network, ensure_network};
use pelagos_net::host::procfs::ProcessId;
use pelagos_net::state::paths::Paths;
use pelagos_net::state::record::Resource;
use pelagos_net::{
    AttachRequest, attach_network_to_netns, setup_bridge_network, teardown_network, teardown_secondary_network,
};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Command;

fn paths(topo: &Topology) -> Paths {
    Paths {
        run_dir: topo.run_dir.clone(),
        config_dir: topo.config_dir.clone(),
        netns_dir: topo.netns_dir.clone(),
        proc_root: "/proc".into(),
    }
}

fn me() -> ProcessId {
    ProcessId::of(std::path::Path::new("/proc"), std::process::id()).unwrap()
}

fn host_links(topo: &Topology) -> String {
    let out = Command::new("ip").args(["-n", &topo.host, "-o", "link"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn root() -> Option<Env> {
    Tier::Root.require()
}

#[test]
fn thirty_two_concurrent_attaches_get_distinct_addresses_and_release_them() {
    let Some(env) = root() else { return };
    let topo = Topology::new(&env);
    let p = paths(&topo);
    let def = bootstrap_default_network(&p.config_dir).unwrap();
    let handles: Vec<_> = (0..32)
        .map(|i| {
            let (p, def, host) = (p.clone(), def.clone(), topo.host.clone());
            std::thread::spawn(move || {
                in_netns(&host, move || {
                    let id = format!("c{i:02}aa{i:06x}");
                    let req = AttachRequest { paths: &p, def: &def, id: &id, ports: &[], ip: None, owner: me() };
                    setup_bridge_network(&req).map_err(|e| format!("{id}: {e:?}"))
                })
            })
        })
        .collect();
    let setups: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect::<Result<_, _>>().unwrap();
    let addrs: BTreeSet<Ipv4Addr> = setups.iter().map(|s| s.address).collect();
    assert_eq!(addrs.len(), 32, "duplicate addresses: {addrs:?}");
    assert_eq!(LeaseStore::new(&p.run_dir).leases("pelagos0").unwrap().len(), 32, "a lease was lost");
    assert_eq!(host_links(&topo).matches(": pv").count(), 32);
    // Every record parses and names its own, distinct address.
    let store = pelagos_net::state::store::Store::open(&p.run_dir, 0).unwrap();
    let recorded: BTreeSet<Ipv4Addr> = store
        .records()
        .unwrap()
        .into_iter()
        .flat_map(|r| r.unwrap().resources)
        .filter_map(|res| match res {
            Resource::Lease { address, .. } => Some(address),
            _ => None,
        })
        .collect();
    assert_eq!(recorded, addrs, "records and leases disagree");
    let host = topo.host.clone();
    let errors: Vec<String> = in_netns(&host, move || {
        setups.into_iter().filter_map(|s| teardown_network(s).err().map(|e| e.to_string())).collect()
    });
    assert!(errors.is_empty(), "{errors:?}");
    assert!(LeaseStore::new(&p.run_dir).leases("pelagos0").unwrap().is_empty());
    assert!(store.records().unwrap().is_empty(), "records left");
    // veths go with their namespaces, asynchronously.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while host_links(&topo).contains(": pv") {
        assert!(std::time::Instant::now() < deadline, "veths left: {}", host_links(&topo));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(std::fs::read_dir(&p.netns_dir).unwrap().count(), 0);
}

#[test]
fn secondary_network_attaches_as_eth1_without_default_route_and_detaches() {
    let Some(env) = root() else { return };
    let topo = Topology::new(&env);
    let p = paths(&topo);
    let host = topo.host.clone();
    let ns_path = in_netns(&host, move || {
        let primary = bootstrap_default_network(&p.config_dir).unwrap();
        let req = NetworkRequest {
            name: "back".parse().unwrap(),
            subnet: Some("10.60.0.0/24".parse().unwrap()),
            gateway: None,
            internal: true,
            options: Default::default(),
        };
        let back = ensure_network(&p.config_dir, &req, &[]).unwrap();
        let id = "5ec0ndary0001";
        let setup =
            setup_bridge_network(&AttachRequest { paths: &p, def: &primary, id, ports: &[], ip: None, owner: me() })
                .unwrap();
        let att = attach_network_to_netns(&p, &back, &setup.netns, id, 1, me()).unwrap();
        assert_eq!(att.ifname.as_str(), "eth1");
        assert_eq!(att.address.to_string(), "10.60.0.2");
        let ns_name = setup.netns_path().file_name().unwrap().to_string_lossy().into_owned();
        let netns_path = setup.netns_path().to_owned();
        // Inspect from inside the container namespace.
        let show = |args: &[&str]| {
            let out =
                Command::new("nsenter").arg(format!("--net={}", netns_path.display())).args(args).output().unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let addrs = show(&["ip", "-o", "-4", "addr"]);
        assert!(addrs.contains("eth1") && addrs.contains("10.60.0.2/24"), "{addrs}");
        let routes = show(&["ip", "route"]);
        assert!(routes.contains("default via 10.90.0.1 dev eth0"), "{routes}");
        assert!(routes.contains("10.60.0.0/24 dev eth1") && !routes.contains("default via 10.60"), "{routes}");
        teardown_secondary_network(att).unwrap();
        assert!(!show(&["ip", "-o", "link"]).contains("eth1"));
        assert!(LeaseStore::new(&p.run_dir).leases("back").unwrap().is_empty());
        teardown_network(setup).unwrap();
        ns_name
    });
    assert!(!topo.netns_dir.join(ns_path).exists());
}

#[test]
fn bridge_teardown_attempts_every_step_and_returns_every_error() {
    let Some(env) = root() else { return };
    let topo = Topology::new(&env);
    let p = paths(&topo);
    let host = topo.host.clone();
    let ports: Vec<pelagos_net::PortMapping> = vec!["127.0.0.1:27380:80".parse().unwrap()];
    let (errors, table) = in_netns(&host, move || {
        let def = bootstrap_default_network(&p.config_dir).unwrap();
        let id = "7ea2d0e00001";
        let req = AttachRequest { paths: &p, def: &def, id, ports: &ports, ip: None, owner: me() };
        let setup = setup_bridge_network(&req).unwrap();
        // Sabotage three of the four steps: the netns name, the lease file
        // and the record each become impossible to remove.
        let ns = setup.netns_path().to_owned();
        nix::mount::umount2(&ns, nix::mount::MntFlags::MNT_DETACH).unwrap();
        std::fs::remove_file(&ns).unwrap();
        std::fs::create_dir_all(ns.join("x")).unwrap();
        std::fs::write(p.run_dir.join(format!("leases/pelagos0/{}", setup.address)), "{").unwrap();
        let record = p.run_dir.join(format!("runs/{id}.json"));
        std::fs::remove_file(&record).unwrap();
        std::fs::create_dir_all(record.join("x")).unwrap();
        let errors: Vec<String> = teardown_network(setup).unwrap_err().0.iter().map(|e| e.to_string()).collect();
        let table =
            Command::new("nft").args(["list", "map", "ip", "pelagos-pelagos0", "fwd_tcp_addr"]).output().unwrap();
        std::fs::remove_dir_all(&ns).unwrap();
        std::fs::remove_dir_all(&record).unwrap();
        (errors, String::from_utf8_lossy(&table.stdout).into_owned())
    });
    // The rules went first and despite the later failures; each failure is reported.
    assert!(!table.contains("27380"), "forward left: {table}");
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors[0].starts_with("remove ") && errors[0].contains("pelagos-7ea2d0e00001"), "{errors:?}");
    assert!(errors[1].contains("leases/pelagos0/10.90.0.") && errors[1].contains("is corrupted"), "{errors:?}");
    assert!(errors[2].contains("7ea2d0e00001.json"), "{errors:?}");
}

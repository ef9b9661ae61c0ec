//! Benchmark agent for `bench/bridge/run`: drives pelagos-net's bridge
//! attach/teardown in-process and times each library call.
//!
//! Usage: `bench_bridge --host-netns PATH --state DIR [--outer-ns-ino INODE]`
//!
//! One worker thread `setns`es into the throwaway "host" network namespace
//! at PATH (refusing to run if that is the machine's own namespace: INODE,
//! the inode of the caller's original `/proc/self/ns/net`, or pid 1's) and then
//! serves one command per stdin line, answering one line on stdout:
//!
//! ```text
//! net NAME SUBNET [internal]    define a network, ensure its bridge+table  -> ok <ns>
//! attach NET ID [PORTMAP]       setup_bridge_network (PORTMAP like 20001:80) -> ok <ns> <addr> <netns path>
//! teardown ID                   teardown_network                           -> ok <ns>
//! profile NET ID [PORTMAP]      the same steps as attach, one public API call
//!                               at a time, each timed; undone at once      -> ok total=<ns> step=<ns> ...
//! tprofile ID                   the same steps as teardown, each timed     -> ok total=<ns> step=<ns> ...
//! whatif NET ID [PORTMAP]       NOT the library's flow: attach with one nft
//!                               context kept for the agent's lifetime      -> ok <ns>
//! whatifdown ID                 teardown of a whatif container, same context -> ok <ns>
//! quit                          tear down whatever is left, exit            -> ok <n left>
//! ```
//!
//! Every time is wall-clock nanoseconds of the library call alone
//! (`Instant` before and after), measured on the calling thread.

use pelagos_net::bridge::firewall::{self, Firewall};
use pelagos_net::bridge::lease::LeaseStore;
use pelagos_net::bridge::netlink::Netlink;
use pelagos_net::bridge::network::NetworkDef;
use pelagos_net::bridge::{ensure_bridge, plan};
use pelagos_net::host::procfs::ProcessId;
use pelagos_net::model::cidr::Ipv4Net;
use pelagos_net::model::ifname::NetworkName;
use pelagos_net::model::mode::NetworkMode;
use pelagos_net::model::port::PortMapping;
use pelagos_net::ns::netns;
use pelagos_net::state::paths::Paths;
use pelagos_net::state::record::{RECORD_FORMAT, Record};
use pelagos_net::state::store::Store;
use pelagos_net::{AttachRequest, NetworkSetup, setup_bridge_network, teardown_network};
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn ino(p: &str) -> u64 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("stat {p}: {e}")).ino()
}

fn ns_since(t: Instant) -> u128 {
    t.elapsed().as_nanos()
}

struct Agent {
    paths: Paths,
    owner: ProcessId,
    nets: HashMap<String, NetworkDef>,
    live: HashMap<String, NetworkSetup>,
    /// For `whatif`: one nftables context kept for the agent's lifetime.
    fw: Option<Firewall>,
    /// Containers attached by `whatif`, torn down by `whatifdown`.
    whatifs: HashMap<String, WhatIf>,
}

struct WhatIf {
    net: String,
    ns: netns::NetNs,
    address: std::net::Ipv4Addr,
    forwards: Vec<firewall::Forward>,
}

impl Agent {
    fn ports(spec: Option<&str>) -> Result<Vec<PortMapping>, String> {
        match spec {
            None => Ok(Vec::new()),
            Some(s) => Ok(vec![s.parse::<PortMapping>().map_err(|e| format!("port {s}: {e}"))?]),
        }
    }

    fn net(&self, name: &str) -> Result<&NetworkDef, String> {
        self.nets.get(name).ok_or_else(|| format!("unknown network {name}"))
    }

    fn handle(&mut self, line: &str) -> Result<String, String> {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["net", name, subnet, rest @ ..] => {
                let name = NetworkName::new(name).map_err(|e| e.to_string())?;
                let subnet: Ipv4Net = subnet.parse().map_err(|e| format!("{e}"))?;
                let def = NetworkDef {
                    bridge: name.derived_bridge(),
                    name: name.clone(),
                    subnet,
                    gateway: subnet.first_host(),
                    internal: rest.first() == Some(&"internal"),
                    masquerade: true,
                    options: Default::default(),
                };
                let mut host = Netlink::open().map_err(|e| format!("{e:?}"))?;
                let mut fw = Firewall::new().map_err(|e| format!("{e:?}"))?;
                let t = Instant::now();
                ensure_bridge(&self.paths, &def, &mut host, &mut fw).map_err(|e| format!("{e:?}"))?;
                let el = ns_since(t);
                self.nets.insert(name.to_string(), def);
                Ok(format!("ok {el}"))
            }
            ["attach", net, id, rest @ ..] => {
                let def = self.net(net)?.clone();
                let ports = Self::ports(rest.first().copied())?;
                let req =
                    AttachRequest { paths: &self.paths, def: &def, id, ports: &ports, ip: None, owner: self.owner };
                let t = Instant::now();
                let setup = setup_bridge_network(&req).map_err(|e| format!("{e:?}"))?;
                let el = ns_since(t);
                let out = format!("ok {el} {} {}", setup.address, setup.netns_path().display());
                self.live.insert(id.to_string(), setup);
                Ok(out)
            }
            ["teardown", id] => {
                let setup = self.live.remove(*id).ok_or_else(|| format!("no live container {id}"))?;
                let t = Instant::now();
                teardown_network(setup).map_err(|e| format!("{e:?}"))?;
                Ok(format!("ok {}", ns_since(t)))
            }
            ["whatif", net, id, rest @ ..] => {
                let def = self.net(net)?.clone();
                let ports = Self::ports(rest.first().copied())?;
                self.whatif(&def, id, &ports)
            }
            ["whatifdown", id] => self.whatif_down(id),
            ["tprofile", id] => {
                let setup = self.live.remove(*id).ok_or_else(|| format!("no live container {id}"))?;
                self.tprofile(setup)
            }
            ["profile", net, id, rest @ ..] => {
                let def = self.net(net)?.clone();
                let ports = Self::ports(rest.first().copied())?;
                self.profile(&def, id, &ports)
            }
            ["quit"] => {
                let n = self.live.len();
                let mut errs = Vec::new();
                for (_, s) in self.live.drain() {
                    if let Err(e) = teardown_network(s) {
                        errs.push(e.to_string());
                    }
                }
                let ids: Vec<String> = self.whatifs.keys().cloned().collect();
                for id in ids {
                    if let Err(e) = self.whatif_down(&id) {
                        errs.push(e);
                    }
                }
                if errs.is_empty() { Ok(format!("ok {n}")) } else { Err(errs.join("; ")) }
            }
            _ => Err(format!("bad command: {line}")),
        }
    }

    /// Not the library's flow: the same steps as attach, but with one
    /// nftables context kept open across containers (the library opens one
    /// per attach and one per teardown). Shows what opening and closing the
    /// nft socket costs; closing it after a deletion waits for an RCU grace
    /// period in the kernel.
    fn whatif(&mut self, def: &NetworkDef, id: &str, ports: &[PortMapping]) -> Result<String, String> {
        let e = |x: &dyn std::fmt::Debug| format!("{x:?}");
        if self.fw.is_none() {
            self.fw = Some(Firewall::new().map_err(|x| e(&x))?);
        }
        let t = Instant::now();
        let leases = LeaseStore::new(&self.paths.run_dir);
        let store = Store::open(&self.paths.run_dir, 0).map_err(|x| e(&x))?;
        let address = leases.allocate(def, id, self.owner, None).map_err(|x| e(&x))?;
        let p = plan::plan(def, id, address, ports).map_err(|x| e(&x))?;
        if let Some(record) = self.record(def, id, &p, ports) {
            store.write_record(&record).map_err(|x| e(&x))?;
        }
        let mut host = Netlink::open().map_err(|x| e(&x))?;
        let lock = leases.lock_setup(def.name.as_str()).map_err(|x| e(&x))?;
        let br = host.link_index(def.bridge.as_str()).map_err(|x| e(&x))?.ok_or("bridge missing")?;
        let _ = host.ipv4_addresses().map_err(|x| e(&x))?.iter().any(|a| a.ifindex == br && a.address == def.gateway);
        host.set_up(br).map_err(|x| e(&x))?;
        firewall::enable_ip_forward(&self.paths.proc_root).map_err(|x| e(&x))?;
        firewall::enable_route_localnet(&self.paths.proc_root, def.bridge.as_str()).map_err(|x| e(&x))?;
        let fw = self.fw.as_mut().expect("set above");
        if !fw.table_exists(def.name.as_str()).map_err(|x| e(&x))? {
            fw.ensure_network(&plan::rules_for(def)).map_err(|x| e(&x))?;
        }
        drop(lock);
        let ns = netns::create_named(&self.paths.netns_dir, &p.ns_name).map_err(|x| e(&x))?;
        let veth = host.create_veth(p.veth_host.as_str(), p.peer.as_str(), ns.fd(), Some(br)).map_err(|x| e(&x))?;
        host.set_up(veth).map_err(|x| e(&x))?;
        let mut inside = Netlink::open_in(ns.fd()).map_err(|x| e(&x))?;
        let idx = inside.link_index(p.peer.as_str()).map_err(|x| e(&x))?.ok_or("no peer")?;
        inside.add_address(idx, p.address, p.prefix).map_err(|x| e(&x))?;
        inside.set_up(idx).map_err(|x| e(&x))?;
        if let Some(gw) = p.gateway {
            inside.add_default_route(gw).map_err(|x| e(&x))?;
        }
        if !p.forwards.is_empty() {
            fw.add_forwards(def.name.as_str(), &p.forwards).map_err(|x| e(&x))?;
        }
        drop(inside);
        drop(host);
        let attach = ns_since(t);
        let net = def.name.to_string();
        self.whatifs.insert(id.to_owned(), WhatIf { net, ns, address, forwards: p.forwards });
        Ok(format!("ok {attach}"))
    }

    /// Teardown of a `whatif` container with the long-lived nft context.
    fn whatif_down(&mut self, id: &str) -> Result<String, String> {
        let e = |x: &dyn std::fmt::Debug| format!("{x:?}");
        let w = self.whatifs.remove(id).ok_or_else(|| format!("no whatif container {id}"))?;
        let fw = self.fw.as_mut().ok_or("no whatif context")?;
        let t = Instant::now();
        if !w.forwards.is_empty() {
            fw.remove_forwards(&w.net, &w.forwards).map_err(|x| e(&x))?;
        }
        let path = w.ns.path.clone();
        drop(w.ns);
        netns::remove_named(&path).map_err(|x| e(&x))?;
        LeaseStore::new(&self.paths.run_dir).release(&w.net, w.address, id).map_err(|x| e(&x))?;
        Store::open(&self.paths.run_dir, 0).and_then(|s| s.remove_record(id)).map_err(|x| e(&x))?;
        Ok(format!("ok {}", ns_since(t)))
    }

    /// The run record setup_bridge_network writes, built through serde so
    /// that fields this example does not know about take their defaults.
    /// `None` (and a warning) if the record type changed incompatibly.
    fn record(&self, def: &NetworkDef, id: &str, p: &plan::BridgePlan, ports: &[PortMapping]) -> Option<Record> {
        let value = serde_json::json!({
            "format": RECORD_FORMAT,
            "id": id,
            "kind": "attachment",
            "owner": self.owner,
            "phase": "ready",
            "anchor": { "by": "owner" },
            "mode": NetworkMode::Bridge(Some(def.name.clone())),
            "ports": ports,
            "resources": [
                { "kind": "lease", "network": def.name.to_string(), "address": p.address, "holder": id },
                { "kind": "netns_name", "path": self.paths.netns_dir.join(&p.ns_name) },
                { "kind": "forwards", "network": def.name.to_string(), "forwards": p.forwards },
            ],
        });
        serde_json::from_value(value)
            .inspect_err(|err| eprintln!("bench_bridge: cannot build a run record ({err}); profile skips that step"))
            .ok()
    }

    /// teardown_network, re-enacted step by step with the public API (same
    /// calls, same order as src/bridge/mod.rs), each timed.
    fn tprofile(&mut self, setup: NetworkSetup) -> Result<String, String> {
        let e = |x: &dyn std::fmt::Debug| format!("{x:?}");
        let NetworkSetup { id, def, netns, address, forwards, .. } = setup;
        let net = def.name.to_string();
        let mut steps: Vec<(&'static str, u128)> = Vec::new();
        let total = Instant::now();
        let mut lap = Instant::now();
        let mut mark = |name: &'static str, lap: &mut Instant| {
            steps.push((name, lap.elapsed().as_nanos()));
            *lap = Instant::now();
        };
        if !forwards.is_empty() {
            let mut fw = Firewall::new().map_err(|x| e(&x))?;
            mark("td_nft_ctx_new", &mut lap);
            fw.remove_forwards(&net, &forwards).map_err(|x| e(&x))?;
            mark("td_nft_remove_element", &mut lap);
            drop(fw);
            mark("td_nft_ctx_drop", &mut lap);
        }
        let path = netns.path.clone();
        drop(netns);
        netns::remove_named(&path).map_err(|x| e(&x))?;
        mark("td_netns_remove", &mut lap);
        LeaseStore::new(&self.paths.run_dir).release(&net, address, &id).map_err(|x| e(&x))?;
        mark("td_lease_release", &mut lap);
        Store::open(&self.paths.run_dir, 0).and_then(|s| s.remove_record(&id)).map_err(|x| e(&x))?;
        mark("td_record_remove", &mut lap);
        let mut out = format!("ok total={}", ns_since(total));
        for (k, v) in steps {
            out.push_str(&format!(" {k}={v}"));
        }
        Ok(out)
    }

    /// setup_bridge_network, re-enacted step by step with the library's
    /// public API (same calls, same order as src/bridge/mod.rs at 2202464:
    /// one nft context per attach, table script only when the table is
    /// missing), each timed.
    /// Everything is undone before returning.
    fn profile(&mut self, def: &NetworkDef, id: &str, ports: &[PortMapping]) -> Result<String, String> {
        let e = |x: &dyn std::fmt::Debug| format!("{x:?}");
        let mut steps: Vec<(&'static str, u128)> = Vec::new();
        let total = Instant::now();
        let mut lap = Instant::now();
        let mut mark = |name: &'static str, lap: &mut Instant| {
            steps.push((name, lap.elapsed().as_nanos()));
            *lap = Instant::now();
        };
        let leases = LeaseStore::new(&self.paths.run_dir);
        let store = Store::open(&self.paths.run_dir, 0).map_err(|x| e(&x))?;
        mark("store_open", &mut lap);
        let address = leases.allocate(def, id, self.owner, None).map_err(|x| e(&x))?;
        mark("lease", &mut lap);
        let p = plan::plan(def, id, address, ports).map_err(|x| e(&x))?;
        if let Some(record) = self.record(def, id, &p, ports) {
            store.write_record(&record).map_err(|x| e(&x))?;
        }
        mark("record", &mut lap);
        // apply()
        let mut host = Netlink::open().map_err(|x| e(&x))?;
        mark("netlink_open", &mut lap);
        let mut fw = Firewall::new().map_err(|x| e(&x))?;
        mark("nft_ctx_new", &mut lap);
        // ensure_bridge()
        let lock = leases.lock_setup(def.name.as_str()).map_err(|x| e(&x))?;
        mark("eb_lock", &mut lap);
        let br = host.link_index(def.bridge.as_str()).map_err(|x| e(&x))?.ok_or("bridge missing")?;
        mark("eb_link_index", &mut lap);
        let _ = host.ipv4_addresses().map_err(|x| e(&x))?.iter().any(|a| a.ifindex == br && a.address == def.gateway);
        mark("eb_addr_dump", &mut lap);
        host.set_up(br).map_err(|x| e(&x))?;
        mark("eb_set_up", &mut lap);
        firewall::enable_ip_forward(&self.paths.proc_root).map_err(|x| e(&x))?;
        firewall::enable_route_localnet(&self.paths.proc_root, def.bridge.as_str()).map_err(|x| e(&x))?;
        mark("eb_sysctl", &mut lap);
        if !fw.table_exists(def.name.as_str()).map_err(|x| e(&x))? {
            fw.ensure_network(&plan::rules_for(def)).map_err(|x| e(&x))?;
        }
        mark("eb_nft_table_exists", &mut lap);
        drop(lock);
        let ns = netns::create_named(&self.paths.netns_dir, &p.ns_name).map_err(|x| e(&x))?;
        mark("netns_create", &mut lap);
        let veth = host.create_veth(p.veth_host.as_str(), p.peer.as_str(), ns.fd(), Some(br)).map_err(|x| e(&x))?;
        mark("veth_create", &mut lap);
        host.set_up(veth).map_err(|x| e(&x))?;
        mark("veth_up", &mut lap);
        let mut inside = Netlink::open_in(ns.fd()).map_err(|x| e(&x))?;
        mark("peer_netlink_open", &mut lap);
        let idx = inside.link_index(p.peer.as_str()).map_err(|x| e(&x))?.ok_or("no peer")?;
        inside.add_address(idx, p.address, p.prefix).map_err(|x| e(&x))?;
        inside.set_up(idx).map_err(|x| e(&x))?;
        if let Some(gw) = p.gateway {
            inside.add_default_route(gw).map_err(|x| e(&x))?;
        }
        mark("peer_configure", &mut lap);
        if !p.forwards.is_empty() {
            fw.add_forwards(def.name.as_str(), &p.forwards).map_err(|x| e(&x))?;
            mark("nft_add_element", &mut lap);
        }
        drop(inside);
        drop(host);
        drop(fw);
        mark("drop_sockets", &mut lap);
        let total = ns_since(total);
        // Undo (not timed).
        if !p.forwards.is_empty() {
            Firewall::new().and_then(|mut fw| fw.remove_forwards(def.name.as_str(), &p.forwards)).map_err(|x| e(&x))?;
        }
        let path = ns.path.clone();
        drop(ns);
        netns::remove_named(&path).map_err(|x| e(&x))?;
        leases.release(def.name.as_str(), address, id).map_err(|x| e(&x))?;
        store.remove_record(id).map_err(|x| e(&x))?;
        let mut out = format!("ok total={total}");
        for (k, v) in steps {
            out.push_str(&format!(" {k}={v}"));
        }
        Ok(out)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |flag: &str| -> String {
        let i = args.iter().position(|a| a == flag).unwrap_or_else(|| {
            eprintln!("usage: bench_bridge --host-netns PATH --state DIR");
            std::process::exit(2)
        });
        args.get(i + 1).cloned().unwrap_or_else(|| std::process::exit(2))
    };
    let host_ns = PathBuf::from(arg("--host-netns"));
    let state = PathBuf::from(arg("--state"));
    let paths = Paths {
        run_dir: state.join("run"),
        config_dir: state.join("config"),
        netns_dir: state.join("netns"),
        proc_root: "/proc".into(),
    };
    let worker = std::thread::spawn(move || serve(&host_ns, paths));
    let code = worker.join().unwrap_or(3);
    std::process::exit(code);
}

fn serve(host_ns: &Path, paths: Paths) -> i32 {
    // Enter the throwaway host namespace on this thread only, and make sure
    // it really is not the machine's own namespace.
    let f = std::fs::File::open(host_ns).unwrap_or_else(|e| panic!("open {}: {e}", host_ns.display()));
    nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns into the host netns");
    let here = ino("/proc/thread-self/ns/net");
    let outer = std::env::args()
        .skip_while(|a| a != "--outer-ns-ino")
        .nth(1)
        .and_then(|v| v.parse::<u64>().ok())
        .or_else(|| std::fs::metadata("/proc/1/ns/net").ok().map(|m| m.ino()));
    if here != ino(&host_ns.to_string_lossy()) || outer.is_none() || outer == Some(here) {
        eprintln!("bench_bridge: refusing to run: not inside the throwaway host netns");
        return 4;
    }
    let owner = ProcessId::of(Path::new("/proc"), std::process::id()).expect("own ProcessId");
    let mut agent =
        Agent { paths, owner, nets: HashMap::new(), live: HashMap::new(), fw: None, whatifs: HashMap::new() };
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let quit = line == "quit";
        let reply = match agent.handle(line) {
            Ok(s) => s,
            Err(e) => format!("err {}", e.replace('\n', " ")),
        };
        let _ = writeln!(stdout, "{reply}");
        let _ = stdout.flush();
        if quit {
            return 0;
        }
    }
    // stdin closed without quit: still clean up.
    let _ = agent.handle("quit");
    0
}

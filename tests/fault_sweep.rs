//! Crash consistency: kill `pelagos-net` at every step of setup and
//! teardown, run `gc`, and check that the host is exactly as before.
//!
//! Needs the `fault-injection` feature (scripts/test-all builds the suite
//! with it). For each scenario: warm up (the default network's definition,
//! bridge and nftables table are created on first use and persist with the
//! definition; they are part of the baseline), take a snapshot, run once with
//! `PELAGOS_NET_FAULT_TRACE` to learn the steps, then for every step N and
//! every iteration run the same command dying at N (SIGKILL, as a crash),
//! run `pelagos-net gc`, and compare with the snapshot: links of the host
//! namespace, its whole nftables ruleset (the rules have no counters), files under the
//! state, config and netns directories, live leases, processes, mounts under
//! the netns directory. Nothing created may be world-writable.
//!
//! `PELAGOS_FAULT_ITERS` (default 3) sets the iterations.

#[path = "fault_sweep/attach.rs"]
mod attach;
mod common;
#[path = "fault_sweep/holder.rs"]
mod holder;

use common::{Env, Tier, Topology, describe};
use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const FAULT_AT: &str = "PELAGOS_NET_FAULT_AT";
const FAULT_TRACE: &str = "PELAGOS_NET_FAULT_TRACE";

fn iterations() -> usize {
    std::env::var("PELAGOS_FAULT_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(3)
}

/// The feature is compiled in, or (loudly) skip; under CI, fail.
fn feature_enabled() -> bool {
    if pelagos_net::fault::ENABLED {
        return true;
    }
    let strict = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
        || std::env::var("PELAGOS_REQUIRE_ALL_TIERS").is_ok_and(|v| v == "1");
    let why = "built without the fault-injection feature (cargo test --features fault-injection --test fault_sweep)";
    assert!(!strict, "fault sweep cannot run and skipping is not allowed in CI: {why}");
    let _ = writeln!(std::io::stderr(), "SKIP [fault sweep]: {why}");
    false
}

/// What the host looks like, as far as pelagos-net could have changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    links: Vec<String>,
    ruleset: String,
    files: BTreeSet<String>,
    live_leases: Vec<String>,
    processes: Vec<String>,
    mounts: Vec<String>,
    world_writable: Vec<String>,
    /// The links and the nftables ruleset of the user's network holder, when one runs.
    holder: Vec<String>,
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn walk(root: &Path, rel: &Path, files: &mut BTreeSet<String>, writable: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(root.join(rel)) else { return };
    for entry in entries.flatten() {
        let rel = rel.join(entry.file_name());
        let meta = fs::symlink_metadata(entry.path()).unwrap();
        if meta.mode() & 0o002 != 0 && !meta.file_type().is_symlink() {
            writable.push(format!("{} {:o}", entry.path().display(), meta.mode() & 0o7777));
        }
        files.insert(rel.display().to_string());
        if meta.is_dir() {
            walk(root, &rel, files, writable);
        }
    }
}

fn snapshot(topo: &Topology) -> Snapshot {
    let links = sh(&["ip", "-n", &topo.host, "-o", "link"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n).to_owned()))
        .collect();
    let ruleset = sh(&["ip", "netns", "exec", &topo.host, "nft", "list", "ruleset"]);
    let mut files = BTreeSet::new();
    let mut world_writable = Vec::new();
    for (label, dir) in [("run", &topo.run_dir), ("config", &topo.config_dir), ("netns", &topo.netns_dir)] {
        let mut found = BTreeSet::new();
        walk(dir, Path::new(""), &mut found, &mut world_writable);
        files.extend(found.into_iter().map(|f| format!("{label}/{f}")));
    }
    let mut live_leases = Vec::new();
    let leases = pelagos_net::bridge::lease::LeaseStore::new(&topo.run_dir);
    for net in leases.networks().unwrap_or_default() {
        // Another user's lease directory (the rootless tier) is not ours
        // to lock: its lease files are listed instead.
        let owned = fs::metadata(leases.network_dir(&net)).is_ok_and(|m| m.uid() == nix::unistd::geteuid().as_raw());
        if !owned {
            let dir = leases.network_dir(&net);
            let files = fs::read_dir(&dir).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>());
            live_leases.extend(files.unwrap_or_default().iter().map(|f| format!("{net}: {}", f.to_string_lossy())));
            continue;
        }
        let table = leases.leases(&net).unwrap_or_else(|e| panic!("leases of {net} do not parse: {e}"));
        live_leases.extend(table.iter().map(|(a, l)| format!("{net}: {a} {}", l.id)));
    }
    let marker = topo.run_dir.display().to_string();
    let mut processes: Vec<String> = topo.processes_inside().into_iter().map(|(p, n)| format!("{p} {n}")).collect();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&marker) {
            processes.push(format!("{pid} {cmdline}"));
        }
    }
    let netns_dir = topo.netns_dir.display().to_string();
    let mounts = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&netns_dir))
        .map(str::to_owned)
        .collect();
    let holder = holder::namespace(topo);
    Snapshot { links, ruleset, files, live_leases, processes, mounts, world_writable, holder }
}

/// The host once what earlier runs released is really gone (a dead
/// namespace's veth and a killed helper disappear asynchronously).
fn quiet_snapshot(topo: &Topology) -> Snapshot {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = snapshot(topo);
        let busy = now.processes.len() + now.links.iter().filter(|l| l.starts_with("pv")).count();
        if busy == 0 || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Wait (the kernel removes a dead namespace's veths and processes
/// asynchronously) until the host matches `want`, or return the last difference.
fn settle(topo: &Topology, want: &Snapshot) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = snapshot(topo);
        if &now == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("host differs from before:\n  before: {want:?}\n  after:  {now:?}"));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Counters of one sweep.
#[derive(Debug, Default)]
struct Tally {
    steps: usize,
    faults: usize,
    runs: usize,
    leaks: Vec<String>,
}

struct Sweep<'a> {
    env: &'a Env,
    topo: &'a Topology,
    trace_dir: tempfile::TempDir,
    tally: Tally,
}

impl<'a> Sweep<'a> {
    fn new(env: &'a Env, topo: &'a Topology) -> Self {
        let trace_dir = tempfile::tempdir().unwrap();
        fs::set_permissions(trace_dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        Self { env, topo, trace_dir, tally: Tally::default() }
    }

    fn cli(&mut self, args: &[&str]) -> Command {
        self.tally.runs += 1;
        self.topo.cli(self.env, args)
    }

    fn ok(&mut self, args: &[&str]) -> String {
        let out = self.cli(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", describe(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run `args` normally with a trace: the names of the steps it passes.
    fn trace(&mut self, args: &[&str]) -> Vec<String> {
        let path: PathBuf = self.trace_dir.path().join("trace");
        fs::write(&path, b"").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        if let Some(u) = &self.env.user {
            nix::unistd::chown(&path, Some(u.uid.into()), Some(u.gid.into())).unwrap();
        }
        let out = self.cli(args).env(FAULT_TRACE, &path).output().unwrap();
        assert!(out.status.success(), "traced run {args:?}: {}", describe(&out));
        let text = fs::read_to_string(&path).unwrap();
        text.lines().map(|l| l.split_once(' ').map_or(l, |(_, name)| name).to_owned()).collect()
    }

    /// Die at `n`, then gc. Returns how the faulted command ended.
    fn fault_then_gc(&mut self, args: &[&str], n: usize) -> std::process::Output {
        // Traced as well: a run that ends before step `n` says which steps it took.
        let took = self.trace_dir.path().join("faulted");
        fs::write(&took, b"").unwrap();
        if let Some(u) = &self.env.user {
            nix::unistd::chown(&took, Some(u.uid.into()), Some(u.gid.into())).unwrap();
        }
        let out = self.cli(args).env(FAULT_AT, n.to_string()).env(FAULT_TRACE, &took).output().unwrap();
        if out.status.signal() != Some(9) {
            let ss = Command::new("ip").args(["netns", "exec", &self.topo.host, "ss", "-ltnpa"]).output().unwrap();
            panic!(
                "step {n} of {args:?} was not reached: {}\nsteps it took: {}\nsockets: {}\nprocesses: {:?}",
                describe(&out),
                fs::read_to_string(&took).unwrap_or_default().replace('\n', " "),
                String::from_utf8_lossy(&ss.stdout),
                snapshot(self.topo).processes
            );
        }
        self.tally.faults += 1;
        let gc = self.cli(&["gc", "--json"]).output().unwrap();
        assert!(gc.status.success(), "gc after a fault at step {n}: {}", describe(&gc));
        out
    }

    /// The whole sweep of `args`, with `reset` run after each gc (for
    /// commands whose effect legitimately persists).
    fn run(&mut self, label: &str, args: &[&str], reset: &dyn Fn(&mut Self, usize)) -> Vec<String> {
        self.ok(args);
        self.ok(args);
        self.ok(&["gc"]);
        let before = quiet_snapshot(self.topo);
        assert!(before.world_writable.is_empty(), "world-writable: {:?}", before.world_writable);
        let steps = self.trace(args);
        assert!(!steps.is_empty(), "no fault points were hit: is the feature compiled in?");
        reset(self, 0);
        settle(self.topo, &before).expect("a normal run leaves nothing behind");
        self.fault_every_step(args, &steps, &before, &|_| {}, reset);
        self.ok(args);
        settle(self.topo, &before).expect("a normal run after the sweep leaves nothing behind");
        self.report(label, &steps);
        steps
    }

    /// Kill `args` at each of its `steps`, [`iterations`] times over, with
    /// `prepare` run before each fault and `recover` after its gc; each time
    /// the host must come back to `before`, or a leak is counted.
    fn fault_every_step(
        &mut self,
        args: &[&str],
        steps: &[String],
        before: &Snapshot,
        prepare: &dyn Fn(&mut Self),
        recover: &dyn Fn(&mut Self, usize),
    ) {
        self.tally.steps = steps.len();
        for iter in 0..iterations() {
            for n in 1..=steps.len() {
                prepare(self);
                self.fault_then_gc(args, n);
                recover(self, n);
                if let Err(diff) = settle(self.topo, before) {
                    self.tally.leaks.push(format!("iteration {iter}, step {n} ({}): {diff}", steps[n - 1]));
                }
            }
        }
    }

    /// Print the tally and fail on any leak.
    fn report(&self, label: &str, steps: &[String]) {
        let t = &self.tally;
        let _ = writeln!(
            std::io::stderr(),
            "fault sweep: {} steps x {} iterations = {} faults injected, {} runs, leaks after gc: {} ({label}: {})",
            t.steps,
            iterations(),
            t.faults,
            t.runs,
            t.leaks.len(),
            steps.join(" ")
        );
        assert!(t.leaks.is_empty(), "{label}: leaks after gc:\n{}", t.leaks.join("\n"));
    }
}

fn no_reset(_: &mut Sweep<'_>, _: usize) {}

fn position(steps: &[String], name: &str) -> usize {
    steps.iter().position(|s| s == name).unwrap_or_else(|| panic!("step {name} missing from {steps:?}"))
}

/// Sweep `run --network MODE EXTRA` with a published port (the builtin port
/// driver, on old pasta builds and under slirp4netns) in `tier`; returns
/// the steps for tier-specific order checks.
fn helper_sweep(tier: Tier, mode: &str, label: &str, extra: &[&str]) -> Option<Vec<String>> {
    let env = tier.require()?;
    if !feature_enabled() {
        return None;
    }
    let topo = Topology::new(&env);
    let mut sweep = Sweep::new(&env, &topo);
    let mut args = vec!["run", "--network", mode, "-p", "127.0.0.1::80"];
    args.extend_from_slice(extra);
    args.extend(["--", "true"]);
    let steps = sweep.run(label, &args, &no_reset);
    assert!(position(&steps, "run.record-written") < position(&steps, &format!("{mode}.spawned")));
    assert!(position(&steps, &format!("{mode}.ready")) < position(&steps, "run.helper-recorded"));
    Some(steps)
}

#[test]
fn rootless_slirp4netns_run_killed_at_every_step_leaves_nothing_after_gc() {
    helper_sweep(Tier::Rootless, "slirp4netns", "rootless slirp4netns", &[]);
}

#[test]
fn rootless_pasta_run_killed_at_every_step_leaves_nothing_after_gc() {
    helper_sweep(Tier::Rootless, "pasta", "rootless pasta", &[]);
}

#[test]
fn root_pasta_run_killed_at_every_step_leaves_nothing_after_gc() {
    let Some(steps) = helper_sweep(Tier::Root, "pasta", "root pasta", &[]) else { return };
    // The netns name is recorded before it is created; teardown stops pasta
    // before removing the name.
    assert!(position(&steps, "run.netns-recorded") < position(&steps, "netns.mount-point"));
    assert!(position(&steps, "teardown.helper-stopped") < position(&steps, "undo.netns"));
}

/// With the accelerator: its supervisor is recorded once it runs, stopped
/// first at teardown; killed anywhere, gc leaves nothing.
fn accel_sweep(tier: Tier, mode: &str, label: &str) {
    let Some(steps) = helper_sweep(tier, mode, label, &["--accel", "socket"]) else { return };
    assert!(position(&steps, "step.prepare_accel") < position(&steps, "step.fork_child"), "{steps:?}");
    assert!(position(&steps, "step.exec_command") < position(&steps, "step.start_accel"), "{steps:?}");
    assert!(position(&steps, "accel.recorded") < position(&steps, "undo.accel"), "{steps:?}");
    assert!(position(&steps, "undo.accel") < position(&steps, "undo.relay"), "stopped before the relay: {steps:?}");
}

#[test]
fn rootless_slirp4netns_run_with_the_accelerator_killed_at_every_step_leaves_nothing_after_gc() {
    accel_sweep(Tier::Rootless, "slirp4netns", "rootless slirp4netns --accel socket");
}

#[test]
fn root_pasta_run_with_the_accelerator_killed_at_every_step_leaves_nothing_after_gc() {
    accel_sweep(Tier::Root, "pasta", "root pasta --accel socket");
}

#[test]
fn root_bridge_run_killed_at_every_step_leaves_nothing_after_gc() {
    let Some(env) = Tier::Root.require() else { return };
    if !feature_enabled() {
        return;
    }
    let topo = Topology::new(&env);
    let mut sweep = Sweep::new(&env, &topo);
    let args = ["run", "--network", "bridge", "-p", "127.0.0.1:27280:80", "-p", "27281:81/udp", "--", "true"];
    let steps = sweep.run("root bridge", &args, &no_reset);
    // Recorded before created; torn down rules first, then links (the
    // netns), then the lease.
    assert!(position(&steps, "run.record-written") < position(&steps, "netns.mount-point"));
    let teardown = |s| position(&steps, s);
    assert!(teardown("undo.forwards") < teardown("undo.netns"));
    assert!(teardown("undo.netns") < teardown("undo.lease"));
}

#[test]
fn rootless_shared_network_run_killed_at_every_step_leaves_nothing_after_gc() {
    let Some(env) = Tier::Rootless.require() else { return };
    if !feature_enabled() {
        return;
    }
    let topo = Topology::new(&env);
    let mut sweep = Sweep::new(&env, &topo);
    sweep.ok(&["network", "create", "web"]);
    let args = ["run", "--network", "web", "-p", "127.0.0.1::80", "--", "true"];
    // Every run starts the user's network holder and stops it when it
    // leaves: a crash at any step, then gc, leaves no holder process.
    let steps = sweep.run("rootless shared network", &args, &no_reset);
    let at = |s| position(&steps, s);
    assert!(at("run.record-written") < at("holder.start"));
    assert!(at("holder.started") < at("step.attach_in_holder"));
    assert!(at("holder.attached") < at("undo.holder"));
    assert!(at("undo.command") < at("holder.stop"));
}

#[test]
fn root_network_create_killed_at_every_step_leaves_a_whole_definition_or_none() {
    let Some(env) = Tier::Root.require() else { return };
    if !feature_enabled() {
        return;
    }
    let topo = Topology::new(&env);
    let mut sweep = Sweep::new(&env, &topo);
    let args = ["network", "create", "sweep", "--subnet", "10.93.0.0/24"];
    // `network create` commits with one link(2): after a fault the
    // definition is absent or whole (it parses), never partial; it is then
    // removed so every iteration starts from the same host.
    let reset = |s: &mut Sweep<'_>, _n: usize| {
        let def = s.topo.config_dir.join("networks/sweep.json");
        if def.exists() {
            let text = s.ok(&["network", "inspect", "sweep"]);
            assert!(text.contains("10.93.0.0/24"), "{text}");
            s.ok(&["network", "rm", "sweep"]);
        }
    };
    // Warm up (the definitions directory and its lock persist), then sweep.
    sweep.ok(&args);
    sweep.ok(&["network", "rm", "sweep"]);
    sweep.ok(&["gc"]);
    let before = quiet_snapshot(&topo);
    let steps = sweep.trace(&args);
    reset(&mut sweep, 0);
    settle(&topo, &before).expect("create + rm leaves nothing behind");
    sweep.fault_every_step(&args, &steps, &before, &|_| {}, &reset);
    sweep.report("root network create", &steps);
}

#[test]
fn root_network_rm_killed_at_every_step_is_finished_by_rm_again() {
    let Some(env) = Tier::Root.require() else { return };
    if !feature_enabled() {
        return;
    }
    let topo = Topology::new(&env);
    let mut sweep = Sweep::new(&env, &topo);
    let create = ["network", "create", "sweep", "--subnet", "10.94.0.0/24"];
    let attach = ["run", "--network", "bridge:sweep", "--", "true"];
    let rm = ["network", "rm", "sweep"];
    // An attach creates the network's bridge and table, which persist with
    // its definition until `network rm`.
    let prepare = |s: &mut Sweep<'_>| {
        s.ok(&create);
        s.ok(&attach);
    };
    // Warm up (the definitions directory and its lock persist), then the
    // host with no network at all is what every iteration must get back to.
    prepare(&mut sweep);
    sweep.ok(&rm);
    sweep.ok(&["gc"]);
    let before = quiet_snapshot(&topo);
    prepare(&mut sweep);
    let steps = sweep.trace(&rm);
    settle(&topo, &before).expect("create + attach + rm leaves nothing behind");
    // The definition goes last: while it is there, rm again finishes the
    // job; once it is gone, so are the bridge and the table.
    let finish = |s: &mut Sweep<'_>, _n: usize| {
        if s.topo.config_dir.join("networks/sweep.json").exists() {
            s.ok(&rm);
        }
    };
    sweep.fault_every_step(&rm, &steps, &before, &prepare, &finish);
    let order = |s| position(&steps, s);
    assert!(order("network.rm.table-deleted") < order("network.rm.removed"), "{steps:?}");
    sweep.report("root network rm", &steps);
}

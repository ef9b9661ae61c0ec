//! A run owns its whole process tree: what the command starts in the
//! background, `setsid`s or double-forks is stopped with the run, on
//! SIGTERM, at the command's exit, and after `kill -9` of pelagos-net (and
//! `gc`). Inside, `ps` shows the run's processes only. Real namespaces, in
//! both tiers, pasta, loopback and bridge mode (root).

#[macro_use]
mod common;

use common::running::{Watchdog, start_ready};
use common::{Env, Tier, Topology, describe};
use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static N: AtomicU32 = AtomicU32::new(0);

/// `sleep` durations no other process on the machine uses: `<base>.<pid><n>`
/// for each base, so the test finds exactly its own processes.
struct Sleepers {
    args: Vec<String>,
}

impl Sleepers {
    fn new(bases: &[u32]) -> Self {
        let tag = format!("{}{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst));
        Self { args: bases.iter().map(|b| format!("{b}.{tag}")).collect() }
    }

    /// Live processes (pid, argument) running one of our sleeps. Zombies
    /// have an empty cmdline and do not count.
    fn alive(&self) -> Vec<(u32, String)> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
            let argv: Vec<String> =
                cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            if argv.first().is_some_and(|a| a.ends_with("sleep"))
                && let Some(arg) = argv.get(1).filter(|a| self.args.contains(a))
            {
                out.push((pid, arg.clone()));
            }
        }
        out
    }

    fn wait_until_all_run(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.alive().len() < self.args.len() {
            assert!(Instant::now() < deadline, "not all sleeps started: {:?}", self.alive());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        for (pid, _) in self.alive() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// The command, plus a double fork: one sleep in the background,
/// one in a new session, one orphaned by a subshell, and the command itself
/// exec'd into the last. The background ones do not hold the run's output
/// open, so a run that leaves them behind fails its test instead of
/// hanging it.
fn tree_script(s: &Sleepers) -> String {
    let a = &s.args;
    format!(
        "exec >/dev/null 2>&1 <&-; sleep {} & setsid sleep {} & (sleep {} &); exec sleep {}",
        a[0], a[1], a[2], a[3]
    )
}

fn start(topo: &Topology, env: &Env, mode: &str, script: &str) -> Child {
    let script = format!("echo ready; {script}");
    start_ready(topo, env, &["run", "--network", mode, "--", "sh", "-c", &script])
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    // `ip netns exec` execs setpriv, which execs pelagos-net: one pid.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

/// Regression: SIGTERM stopped the command, while its background, setsid'd
/// and double-forked processes kept running in a namespace nobody owned.
fn sigterm_stops_every_process_of_the_run(env: Env, mode: &str) {
    let topo = Topology::new(&env);
    let sleeps = Sleepers::new(&[3011, 3012, 3013, 3014]);
    let child = start(&topo, &env, mode, &tree_script(&sleeps));
    sleeps.wait_until_all_run();
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let _watchdog = Watchdog::arm(&child, Duration::from_secs(60));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(128 + 15), "{}", describe(&out));
    assert_eq!(sleeps.alive(), vec![], "left running after pelagos-net exited");
    topo.assert_clean();
}

fn sigterm_in_pasta_mode(env: Env) {
    sigterm_stops_every_process_of_the_run(env, "pasta");
}

fn sigterm_in_loopback_mode(env: Env) {
    sigterm_stops_every_process_of_the_run(env, "loopback");
}

/// A command that ignores the SIGTERM passed on to it is killed, with
/// everything else in the run, once the stop grace (10 s) has passed.
fn command_ignoring_sigterm_is_killed_after_the_grace(env: Env) {
    let topo = Topology::new(&env);
    let sleeps = Sleepers::new(&[3051, 3052]);
    let a = &sleeps.args;
    let script = format!("trap '' TERM; exec >/dev/null 2>&1 <&-; sleep {} & exec sleep {}", a[0], a[1]);
    let child = start(&topo, &env, "loopback", &script);
    sleeps.wait_until_all_run();
    let signalled = Instant::now();
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let _watchdog = Watchdog::arm(&child, Duration::from_secs(60));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(128 + 9), "{}", describe(&out));
    assert!(signalled.elapsed() >= Duration::from_secs(9), "killed after {:?}", signalled.elapsed());
    assert!(String::from_utf8_lossy(&out.stderr).contains("did not exit within 10s"), "{}", describe(&out));
    assert_eq!(sleeps.alive(), vec![]);
    topo.assert_clean();
}

/// When the command exits, what it left gets SIGTERM, and SIGKILL when it
/// ignores that; the run's status stays the command's.
fn command_exit_stops_what_it_left(env: Env) {
    let topo = Topology::new(&env);
    let sleeps = Sleepers::new(&[3021, 3022, 3023, 3024]);
    let a = &sleeps.args;
    let script = format!(
        "exec >/dev/null 2>&1 <&-; sleep {} & setsid sleep {} & (sleep {} &); (trap '' TERM; sleep {}) & sleep 0.5; exit 7",
        a[0], a[1], a[2], a[3]
    );
    let started = Instant::now();
    let out = topo.cli(&env, &["run", "--network", "loopback", "--", "sh", "-c", &script]).output().unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", describe(&out));
    assert_eq!(sleeps.alive(), vec![], "left running after the command exited");
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    topo.assert_clean();
}

/// After `kill -9` of pelagos-net, nothing of the run keeps running (the
/// namespace's init dies with its parent), and `gc` leaves the host clean.
fn kill9_and_gc_leave_no_process(env: Env, mode: &str) {
    let topo = Topology::new(&env);
    let sleeps = Sleepers::new(&[3031, 3032, 3033, 3034]);
    let mut child = start(&topo, &env, mode, &tree_script(&sleeps));
    sleeps.wait_until_all_run();
    signal(&child, nix::sys::signal::Signal::SIGKILL);
    child.wait().unwrap();
    let out = topo.cli(&env, &["gc"]).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sleeps.alive().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(sleeps.alive(), vec![], "left running after kill -9 and gc");
    topo.assert_clean();
}

fn kill9_in_pasta_mode(env: Env) {
    kill9_and_gc_leave_no_process(env, "pasta");
}

/// Inside, `ps` and `/proc` show the run's own processes with the pids
/// they have there: the init (1), the command (2), what it starts.
fn ps_inside_shows_only_the_run(env: Env) {
    let topo = Topology::new(&env);
    let script = "echo $$; ps -e -o pid=,comm=";
    let out = topo.cli(&env, &["run", "--network", "loopback", "--", "sh", "-c", script]).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<String> = stdout.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(lines, ["2", "1 pelagos-init", "2 sh", "3 ps"], "{stdout}");
    topo.assert_clean();
}

/// A run started inside a run records pids of its own pid namespace;
/// neither side may take the other for dead: not the inner run's own gc
/// (it cannot see the host's processes), not the host's gc while the
/// inner run lives. Once the outer run is killed, the host's gc removes
/// both, signalling no pid of the gone namespace.
fn nested_runs_never_take_each_other_for_dead(env: Env) {
    let topo = Topology::new(&env);
    let dirs = format!(
        "{} --run-dir {} --netns-dir {} --config-dir {}",
        env.bin.display(),
        topo.run_dir.display(),
        topo.netns_dir.display(),
        topo.config_dir.display()
    );
    let (outer_port, inner_port) = (common::port(29000), common::port(29200));
    let inner = format!(
        "exec {dirs} run --network loopback -p 127.0.0.1:{inner_port}:80 -- sh -c '{dirs} gc --json; echo inner-ready; exec sleep 60'"
    );
    let outer_spec = format!("127.0.0.1:{outer_port}:80");
    let script = format!("echo ready; {inner}");
    let mut outer =
        start_ready(&topo, &env, &["run", "--network", "loopback", "-p", &outer_spec, "--", "sh", "-c", &script]);
    let mut inner_gc = String::new();
    let mut stdout = BufReader::new(outer.stdout.take().unwrap());
    loop {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "the inner run ended early: {inner_gc}");
        if line == "inner-ready\n" {
            break;
        }
        inner_gc.push_str(&line);
    }
    let ids = run_ids(&topo);
    assert_eq!(ids.len(), 2, "{ids:?}");
    let inner_gc: serde_json::Value = serde_json::from_str(&inner_gc).unwrap();
    assert_eq!(inner_gc["actions"], serde_json::json!([]), "the inner gc touched nothing: {inner_gc}");
    let host_gc = topo.cli(&env, &["gc", "--json"]).output().unwrap();
    let host_gc: serde_json::Value = serde_json::from_slice(&host_gc.stdout).unwrap();
    assert_eq!(host_gc["actions"], serde_json::json!([]), "the host's gc touched nothing: {host_gc}");
    assert_eq!(run_ids(&topo), ids);
    signal(&outer, nix::sys::signal::Signal::SIGKILL);
    outer.wait().unwrap();
    // The outer run's init dies with its parent, and the kernel then ends
    // its pid namespace; until then the inner run counts as alive.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = topo.cli(&env, &["gc"]).output().unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        if run_ids(&topo).is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "records left: {:?} {}", run_ids(&topo), describe(&out));
        std::thread::sleep(Duration::from_millis(50));
    }
    topo.assert_clean();
}

fn run_ids(topo: &Topology) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(topo.run_dir.join("runs"))
        .map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.strip_suffix(".json").map(str::to_owned)).collect())
        .unwrap_or_default();
    ids.sort();
    ids
}

tier_tests!(
    rootless,
    super::Tier::Rootless,
    [
        command_ignoring_sigterm_is_killed_after_the_grace,
        sigterm_in_pasta_mode,
        sigterm_in_loopback_mode,
        command_exit_stops_what_it_left,
        kill9_in_pasta_mode,
        ps_inside_shows_only_the_run,
        nested_runs_never_take_each_other_for_dead,
    ]
);

tier_tests!(
    root,
    super::Tier::Root,
    [
        sigterm_in_pasta_mode,
        sigterm_in_loopback_mode,
        command_exit_stops_what_it_left,
        kill9_in_pasta_mode,
        ps_inside_shows_only_the_run,
        nested_runs_never_take_each_other_for_dead,
    ]
);

/// Bridge mode: the child joins a named netns made before the fork; its
/// process tree is owned the same way.
#[test]
fn root_bridge_run_sigterm_stops_every_process() {
    if let Some(env) = Tier::Root.require() {
        sigterm_stops_every_process_of_the_run(env, "bridge");
    }
}

#[test]
fn root_bridge_run_kill9_and_gc_leave_no_process() {
    if let Some(env) = Tier::Root.require() {
        kill9_and_gc_leave_no_process(env, "bridge");
    }
}

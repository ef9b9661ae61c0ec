//! Every process of ours reaps what it spawns, so a host whose pid 1 reaps
//! nothing (a container's init that only waits for its own child) does
//! not collect our zombies. The test process makes itself a child
//! subreaper, standing for that pid 1: every process whose parent exits
//! without reaping it is re-parented to the test, and stays there as a
//! zombie once it dies. After a cycle of a run (published port, host port),
//! an attachment to a rootless shared network and its detach, and the
//! holder stopping, the only zombies of ours the test may have collected
//! are the processes made to outlive their starter (the holder's
//! supervisor, an attachment's relay and helper): the supervisor's
//! children and what they leave (the name server's socket factory), a
//! relay's socket factory, a run's helpers and the first child of every
//! double fork are reaped by their parent (rootless tier).
//!
//! Not covered: a `--network pasta` run stops pasta with a 3 ms grace (the
//! command's exit to ours stays under 5 ms) and leaves it to a reaper
//! thread that dies with the run when pasta's tap teardown (~30 ms) outlasts
//! it; that pasta goes to pid 1.

#[macro_use]
mod common;

use common::{Env, Tier, Topology, describe};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Zombie children of this process: pid -> name.
fn zombies() -> BTreeMap<u32, String> {
    let me = std::process::id().to_string();
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some((head, rest)) = stat.rsplit_once(") ") else { continue };
        let name = head.split_once(" (").map_or("", |(_, n)| n).to_owned();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z") && fields.get(1) == Some(&me.as_str()) {
            out.insert(pid, name);
        }
    }
    out
}

/// Reap every zombie child (the test's own, and those it adopted).
fn reap_all() {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

fn ok(topo: &Topology, env: &Env, args: &[&str]) -> String {
    let out = topo.cli(env, args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_default()).unwrap_or_default()
}

/// The pids of the processes the record `id` names.
fn recorded_processes(topo: &Topology, id: &str) -> Vec<u32> {
    let record = json(&topo.run_dir.join("runs").join(format!("{id}.json")));
    let resources = record["resources"].as_array().cloned().unwrap_or_default();
    resources.iter().filter_map(|r| r["process"]["pid"].as_u64()).map(|p| p as u32).collect()
}

fn holder_pid(topo: &Topology, who: &str) -> Option<u32> {
    json(&topo.run_dir.join("holder/state.json"))[who]["pid"].as_u64().map(|p| p as u32)
}

#[test]
fn our_processes_reap_their_children_on_a_host_whose_init_does_not() {
    let Some(env) = Tier::Rootless.require() else { return };
    if common::which("nsenter").is_none() {
        common::skip("rootless", "nsenter (util-linux) is needed");
        return;
    }
    // SAFETY: prctl(2) with constant arguments.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }, 0);
    reap_all();
    let topo = Topology::new(&env);
    ok(&topo, &env, &["network", "create", "web"]);
    let keeper = common::running::Running::start(&topo, &env, &["run", "--network", "web", "--", "sleep", "600"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while holder_pid(&topo, "holder").is_none() {
        assert!(Instant::now() < deadline, "the holder did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let supervisor = holder_pid(&topo, "supervisor").unwrap();
    ok(&topo, &env, &["run", "--network", "web", "--host-port", "9", "-p", "127.0.0.1::80", "--", "true"]);
    let userns = format!("/proc/{}/ns/user", holder_pid(&topo, "holder").unwrap());
    let ns = common::namespace::Namespace::in_user_namespace(&topo, &env, &userns);
    let id = ok(&topo, &env, &["attach", "--netns", &ns.path, "--network", "web", "-p", "127.0.0.1::80"]);
    let id = id.trim();
    let mut outliving = recorded_processes(&topo, id);
    outliving.push(supervisor);
    ok(&topo, &env, &["detach", id]);
    let pasta_ns = common::namespace::Namespace::in_user_namespace(&topo, &env, &userns);
    let id = ok(&topo, &env, &["attach", "--netns", &pasta_ns.path, "--network", "pasta", "-p", "127.0.0.1::80"]);
    let id = id.trim();
    outliving.extend(recorded_processes(&topo, id));
    ok(&topo, &env, &["detach", id]);
    let out = keeper.stop();
    assert!(out.status.code().is_some(), "{}", describe(&out));
    let deadline = Instant::now() + Duration::from_secs(10);
    while holder_pid(&topo, "supervisor").is_some() {
        assert!(Instant::now() < deadline, "the holder did not stop");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop((ns, pasta_ns));
    ok(&topo, &env, &["network", "rm", "web"]);
    // Whatever dies is a zombie within moments.
    std::thread::sleep(Duration::from_millis(500));
    let left: BTreeMap<u32, String> = zombies().into_iter().filter(|(pid, _)| !outliving.contains(pid)).collect();
    reap_all();
    assert!(left.is_empty(), "processes whose parent did not reap them: {left:?} (made to outlive: {outliving:?})");
}

//! Attachments to a rootless shared network (`attach --network NAME`,
//! `detach`) killed at every step, then gc: nothing is left in the host
//! namespace, nor in the user's network holder (its links and its nftables
//! ruleset are part of the snapshot), no lease, no record.

use super::attach::sweep_attach_and_detach;
use super::*;
use common::running::Running;

/// The holder's links (names) and its nftables ruleset, read from inside
/// its network namespace; empty when no holder runs.
pub(super) fn namespace(topo: &Topology) -> Vec<String> {
    let Ok(text) = fs::read_to_string(topo.run_dir.join("holder/state.json")) else { return Vec::new() };
    let state: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let Some(pid) = state["holder"]["pid"].as_u64() else { return vec![format!("holder state: {text}")] };
    let net = format!("--net=/proc/{pid}/ns/net");
    let read = |args: &[&str]| {
        let out = Command::new("nsenter").arg(&net).args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (Some(links), Some(ruleset)) = (read(&["ip", "-o", "link"]), read(&["nft", "list", "ruleset"])) else {
        return vec![format!("holder {pid} cannot be read")];
    };
    let mut out: Vec<String> = links
        .lines()
        .filter_map(|l| l.split(": ").nth(1).map(|n| format!("link {}", n.split('@').next().unwrap_or(n))))
        .collect();
    out.push(ruleset);
    out
}

/// The host once it stays the same for a moment: the processes that keep
/// the holder up are part of it.
fn stable_snapshot(topo: &Topology) -> Snapshot {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = snapshot(topo);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = snapshot(topo);
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// The holder process's pid, once the holder runs.
fn holder_pid(topo: &Topology) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = fs::read_to_string(topo.run_dir.join("holder/state.json")).unwrap_or_default();
        let state: serde_json::Value = serde_json::from_str(&state).unwrap_or_default();
        if let Some(pid) = state["holder"]["pid"].as_u64() {
            return pid;
        }
        assert!(Instant::now() < deadline, "the holder did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn rootless_shared_network_attach_and_detach_killed_at_every_step_leave_nothing_after_gc() {
    let Some(env) = Tier::Rootless.require() else { return };
    if !feature_enabled() {
        return;
    }
    let topo = Topology::new(&env);
    let mut setup = Sweep::new(&env, &topo);
    setup.ok(&["network", "create", "web"]);
    // A run keeps the holder up all along: the attached namespace is made
    // in the holder's user namespace, which an attachment cannot create.
    let keeper = Running::start(&topo, &env, &["run", "--network", "web", "--", "sleep", "600"]);
    let userns = format!("/proc/{}/ns/user", holder_pid(&topo));
    let ns = common::namespace::Namespace::in_user_namespace(&topo, &env, &userns);
    let args = ["attach", "--netns", &ns.path, "--network", "web", "--name", "side", "-p", "127.0.0.1::80"];
    // The snapshot sees into the holder: an attachment's veth is there.
    let empty = namespace(&topo);
    let id = setup.ok(&args).trim().to_owned();
    let attached = namespace(&topo);
    assert!(attached.iter().any(|l| l.starts_with("link ") && !empty.contains(l)), "{empty:?} {attached:?}");
    setup.ok(&["detach", &id]);
    let label = "rootless shared network";
    let (steps, detach_steps) = sweep_attach_and_detach(&env, &topo, &args, label, stable_snapshot);
    assert!(position(&steps, "step.write_record") < position(&steps, "step.attach_in_holder"), "{steps:?}");
    assert!(position(&steps, "step.attach_in_holder") < position(&steps, "holder.attached"), "{steps:?}");
    assert!(position(&detach_steps, "detach.marked") < position(&detach_steps, "undo.veth"), "{detach_steps:?}");
    let out = keeper.stop();
    assert!(out.status.code().is_some(), "{}", describe(&out));
    drop(ns);
    setup.ok(&["network", "rm", "web"]);
}

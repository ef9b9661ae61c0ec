//! `attach` and `detach` on a namespace someone else made, killed at
//! every step, then gc (see the crate docs).

use super::*;

/// Detach every attachment recorded (a fault after an attach committed
/// leaves a whole, live attachment: that is a success, not a leak); runs
/// are left alone.
pub(super) fn detach_all(s: &mut Sweep<'_>) {
    for entry in fs::read_dir(s.topo.run_dir.join("runs")).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(id) = name.strip_suffix(".json").filter(|_| !name.starts_with('.')) {
            let record: serde_json::Value =
                fs::read(entry.path()).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
            if record["kind"] == "run" {
                continue;
            }
            let id = id.to_owned();
            s.ok(&["detach", &id]);
        }
    }
}

/// Sweep `attach` (killed at every step, then gc: the host is as before, or
/// the attachment is whole and detaches cleanly) and `detach` (killed at
/// every step, then gc finishes it) on a namespace someone else made.
fn attach_sweep(tier: Tier, label: &str) {
    let Some(env) = tier.require() else { return };
    if !feature_enabled() {
        return;
    }
    let topo = Topology::new(&env);
    let ns = common::namespace::Namespace::new(&topo, &env);
    let args = ["attach", "--netns", &ns.path, "--network", "pasta", "-p", "127.0.0.1::80"];
    let (steps, detach_steps) = sweep_attach_and_detach(&env, &topo, &args, label, quiet_snapshot);
    assert!(position(&steps, "step.write_record") < position(&steps, "helper.recorded"));
    assert!(
        position(&steps, "helper.recorded") < position(&steps, "step.await_ready"),
        "pasta is recorded before it runs"
    );
    assert!(position(&detach_steps, "detach.marked") < position(&detach_steps, "undo.process"));
}

/// Every process the attachment `id` recorded runs. One that died before
/// its detach takes its fault point with it (undo skips a process already
/// gone), so a detach faulted at the last step would end normally: the
/// attachment's relay killed by its parent's exit did that (a relay cleared
/// its parent-death signal after the attach had exited, about 1 detach in 4
/// sweeps under load).
fn assert_processes_alive(topo: &Topology, id: &str) {
    use pelagos_net::state::record::{Record, Resource};
    let bytes = fs::read(topo.run_dir.join("runs").join(format!("{id}.json"))).unwrap();
    let record: Record = serde_json::from_slice(&bytes).unwrap();
    for resource in &record.resources {
        if let Resource::Process { role, process } = resource {
            let pid = process.pid;
            assert!(process.is_alive(Path::new("/proc")), "{role:?} process {pid} of {id} died before its detach");
        }
    }
}

/// The sweeps of [`attach_sweep`] for the attach command `args`, the host
/// at rest taken by `rest`; returns the steps of attach and of detach.
pub(super) fn sweep_attach_and_detach(
    env: &Env,
    topo: &Topology,
    args: &[&str],
    label: &str,
    rest: fn(&Topology) -> Snapshot,
) -> (Vec<String>, Vec<String>) {
    let mut sweep = Sweep::new(env, topo);
    // Warm up twice (the state directories persist, and the probe cache is
    // written once the run directory exists), then the host without the attachment.
    for _ in 0..2 {
        sweep.ok(args);
        detach_all(&mut sweep);
    }
    sweep.ok(&["gc"]);
    let before = rest(topo);
    let steps = sweep.trace(args);
    detach_all(&mut sweep);
    settle(topo, &before).expect("attach + detach leaves nothing behind");
    sweep.fault_every_step(args, &steps, &before, &|_| {}, &|s, _| detach_all(s));
    sweep.report(&format!("{label} attach"), &steps);

    // detach: a fresh attachment each time, killed at every step of its
    // detach; gc finishes a detach that had begun, `detach` again one that
    // had not (its attachment is whole and alive).
    let mut sweep = Sweep::new(env, topo);
    let attach_id = |s: &mut Sweep<'_>| {
        let id = s.ok(args).trim().to_owned();
        assert_processes_alive(topo, &id);
        id
    };
    let id = attach_id(&mut sweep);
    let detach_steps = sweep.trace(&["detach", &id]);
    settle(topo, &before).expect("detach leaves nothing behind");
    sweep.tally.steps = detach_steps.len();
    for iter in 0..iterations() {
        for n in 1..=detach_steps.len() {
            let id = attach_id(&mut sweep);
            sweep.fault_then_gc(&["detach", &id], n);
            detach_all(&mut sweep);
            if let Err(diff) = settle(topo, &before) {
                sweep.tally.leaks.push(format!("iteration {iter}, step {n} ({}): {diff}", detach_steps[n - 1]));
            }
        }
    }
    sweep.report(&format!("{label} detach"), &detach_steps);
    (steps, detach_steps)
}

#[test]
fn rootless_attach_and_detach_killed_at_every_step_leave_nothing_after_gc() {
    attach_sweep(Tier::Rootless, "rootless");
}

#[test]
fn root_attach_and_detach_killed_at_every_step_leave_nothing_after_gc() {
    attach_sweep(Tier::Root, "root");
}

//! Concurrency (rootless tier): 32 `pelagos-net run --network pasta` at
//! once, each publishing its own port, while `gc` reads every record over
//! and over. All succeed, no record is ever seen half-written, `gc` never
//! touches a live run, and nothing is left afterwards.

mod common;

use common::{Tier, Topology, describe};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const RUNS: usize = 32;

#[test]
fn thirty_two_parallel_rootless_pasta_runs_all_succeed_and_leave_no_state() {
    let Some(env) = Tier::Rootless.require() else { return };
    let topo = Arc::new(Topology::new(&env));
    let base = common::port(28_000) + 200;
    let done = Arc::new(AtomicBool::new(false));
    let gc = {
        let (topo, env, done) = (topo.clone(), env.clone(), done.clone());
        std::thread::spawn(move || {
            let mut passes = 0;
            let mut bad = Vec::new();
            while !done.load(Ordering::SeqCst) {
                let out = topo.cli(&env, &["gc", "--json"]).output().unwrap();
                let report: serde_json::Value = match serde_json::from_slice(&out.stdout) {
                    Ok(v) => v,
                    Err(_) => {
                        bad.push(describe(&out));
                        continue;
                    }
                };
                // Every record of a live run parses and is left alone.
                if let Some(actions) = report["actions"].as_array().filter(|a| !a.is_empty()) {
                    bad.push(format!("gc acted during live runs: {actions:?}"));
                }
                passes += 1;
            }
            (passes, bad)
        })
    };
    let runs: Vec<_> = (0..RUNS)
        .map(|i| {
            let (topo, env) = (topo.clone(), env.clone());
            std::thread::spawn(move || {
                let publish = format!("127.0.0.1:{}:80", base + i as u16);
                topo.cli(&env, &["run", "--network", "pasta", "-p", &publish, "--", "true"]).output().unwrap()
            })
        })
        .collect();
    let outputs: Vec<_> = runs.into_iter().map(|h| h.join().unwrap()).collect();
    done.store(true, Ordering::SeqCst);
    let (gc_passes, gc_problems) = gc.join().unwrap();
    let failed: Vec<String> = outputs.iter().filter(|o| !o.status.success()).map(describe).collect();
    assert!(failed.is_empty(), "{} of {RUNS} runs failed:\n{}", failed.len(), failed.join("\n"));
    assert!(gc_problems.is_empty(), "{}", gc_problems.join("\n"));
    let left: Vec<_> = std::fs::read_dir(topo.run_dir.join("runs")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "state left in runs/: {left:?}");
    topo.assert_clean();
    let _ = writeln!(
        std::io::stderr(),
        "concurrency: {RUNS} parallel rootless pasta setups, {RUNS} succeeded, {gc_passes} concurrent gc passes, \
         corrupted records 0, records left 0"
    );
}

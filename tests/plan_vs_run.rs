//! `plan` and `run` agree, over random requests, on the real binary in a
//! throwaway topology (root and rootless): what `plan` refuses, `run`
//! refuses with the same message (exit 125, nothing run), what `plan`
//! accepts runs, and (in the fault-injection build) the steps the run
//! executed are the steps `plan --json` printed, in order.

#[macro_use]
mod common;

use common::{Env, Tier, Topology, describe};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicU16, Ordering};

/// One random request, as command-line arguments (ports relative to `base`).
#[derive(Debug, Clone)]
struct Case {
    mode: &'static str,
    ports: Vec<usize>,
    driver: &'static str,
    fallback: Option<&'static str>,
    host_port: bool,
    accel: bool,
}

const PORTS: [&str; 6] =
    ["127.0.0.1:{b}:80", "{b1}:81/udp", "127.0.0.1:{b2}-{b4}:90-92", "127.0.0.1::85", "[::1]:{b5}:86", "88-89"];

impl Case {
    fn args(&self, base: u16) -> Vec<String> {
        let mut out = vec!["--network".to_owned(), self.mode.to_owned(), "--port-driver".into(), self.driver.into()];
        for &i in &self.ports {
            let spec = PORTS[i]
                .replace("{b}", &base.to_string())
                .replace("{b1}", &(base + 1).to_string())
                .replace("{b2}", &(base + 2).to_string())
                .replace("{b4}", &(base + 4).to_string())
                .replace("{b5}", &(base + 5).to_string());
            out.extend(["-p".to_owned(), spec]);
        }
        if let Some(f) = self.fallback {
            out.extend(["--fallback".to_owned(), f.to_owned()]);
        }
        if self.host_port {
            out.extend(["--host-port".to_owned(), (base + 7).to_string()]);
        }
        if self.accel {
            out.extend(["--accel".to_owned(), "socket".to_owned()]);
        }
        out
    }
}

fn case() -> impl Strategy<Value = Case> {
    (
        proptest::sample::select(vec!["auto", "pasta", "slirp4netns", "loopback", "host", "bridge"]),
        // Most cases publish ports both can serve; the always-refused
        // ephemeral range (the last) comes up now and then.
        proptest::collection::vec(prop_oneof![8 => 0..PORTS.len() - 1, 1 => Just(PORTS.len() - 1)], 0..3),
        proptest::sample::select(vec!["auto", "auto", "auto", "auto", "builtin", "pasta", "slirp4netns", "nftables"]),
        proptest::sample::select(vec![None, None, Some("strict"), Some("warn"), Some("allow")]),
        proptest::bool::weighted(0.2),
        // The accelerator's steps (or its one warning) come from the same planner.
        proptest::bool::weighted(0.3),
    )
        .prop_map(|(mode, mut ports, driver, fallback, host_port, accel)| {
            ports.sort_unstable();
            ports.dedup();
            Case { mode, ports, driver, fallback, host_port, accel }
        })
}

/// The `op` of every step `plan --json` printed (its `pipeline`; `steps`
/// says the same steps in words, one for one).
fn planned_ops(stdout: &[u8]) -> Vec<String> {
    let plan: serde_json::Value = serde_json::from_slice(stdout).expect("plan --json is JSON");
    let pipeline = plan["pipeline"].as_array().expect("plan --json has its pipeline");
    assert_eq!(pipeline.len(), plan["steps"].as_array().map_or(0, Vec::len), "one description per step");
    pipeline.iter().map(|s| s["op"].as_str().unwrap().to_owned()).collect()
}

fn first_error(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr).lines().find(|l| l.contains("error:")).unwrap_or_default().to_owned()
}

fn plan_and_run_agree(env: Env) {
    let topo = Topology::new(&env);
    let traces = tempfile::tempdir().unwrap();
    std::fs::set_permissions(traces.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut runner = TestRunner::new(Config { cases: 40, failure_persistence: None, ..Config::default() });
    let (n, refused, ran) = (AtomicU16::new(0), AtomicU16::new(0), AtomicU16::new(0));
    let result = runner.run(&case(), |c| {
        let n = n.fetch_add(1, Ordering::SeqCst) + 1;
        let base = 27000 + n * 10;
        let args = c.args(base);
        let with = |verb: &[&str]| -> Vec<String> {
            verb.iter().map(|s| s.to_string()).chain(args.iter().cloned()).chain(["--".into(), "true".into()]).collect()
        };
        let plan_args = with(&["plan", "--json"]);
        let plan = topo.cli(&env, &plan_args.iter().map(String::as_str).collect::<Vec<_>>()).output().unwrap();
        let trace = traces.path().join(format!("trace-{n}"));
        let run_args = with(&["run"]);
        let run = topo
            .cli(&env, &run_args.iter().map(String::as_str).collect::<Vec<_>>())
            .env("PELAGOS_NET_FAULT_TRACE", &trace)
            .output()
            .unwrap();
        let what = format!("{args:?}\nplan: {}\nrun: {}", describe(&plan), describe(&run));
        match plan.status.code() {
            Some(0) => {
                ran.fetch_add(1, Ordering::SeqCst);
                prop_assert_eq!(run.status.code(), Some(0), "plan accepted what run failed: {}", what);
                if pelagos_net::fault::ENABLED {
                    let traced = std::fs::read_to_string(&trace).unwrap_or_default();
                    let executed: Vec<String> = traced
                        .lines()
                        .filter_map(|l| l.split_once(' ').and_then(|(_, name)| name.strip_prefix("step.")))
                        .map(str::to_owned)
                        .collect();
                    prop_assert_eq!(&executed, &planned_ops(&plan.stdout), "executed steps differ: {}", what);
                }
            }
            Some(125) => {
                refused.fetch_add(1, Ordering::SeqCst);
                prop_assert_eq!(run.status.code(), Some(125), "plan refused what run did not: {}", what);
                prop_assert_eq!(first_error(&run.stderr), first_error(&plan.stderr), "{}", what);
            }
            other => prop_assert!(false, "plan exited {:?}: {}", other, what),
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (ran, refused) = (ran.into_inner(), refused.into_inner());
    let _ = writeln!(std::io::stderr(), "plan vs run: {ran} accepted and run, {refused} refused by both");
    assert!(ran > 0 && refused > 0, "the cases cover both outcomes");
    topo.assert_clean();
}

tier_tests!(rootless, super::Tier::Rootless, [plan_and_run_agree]);
tier_tests!(root, super::Tier::Root, [plan_and_run_agree]);

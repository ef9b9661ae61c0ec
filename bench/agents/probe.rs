//! Host probe + mode decision: cold (uncached), warm (cached) and the cost
//! of one `pasta --version` spawn, side by side. Prints a table; never
//! fails on a missed goal. Run: `cargo run --release --example bench_probe`.

use pelagos_net::flow::select::{Fallback, Needs, Request, Requested, select};
use pelagos_net::host::probe::{HostCaps, ProbeRoots};
use pelagos_net::state::paths::{PathEnv, Paths};
use std::time::{Duration, Instant};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<T>(n: usize, mut f: impl FnMut() -> T) -> Duration {
    median(
        (0..n)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed()
            })
            .collect(),
    )
}

fn decide(roots: &ProbeRoots, cached: bool) -> String {
    let caps = if cached { HostCaps::probe(roots) } else { HostCaps::probe_uncached(roots) };
    let req =
        Request { mode: Requested::Auto, needs: Needs { egress: true, ..Needs::default() }, fallback: Fallback::Warn };
    select(&req, &caps).map(|d| d.mode.to_string()).unwrap_or_else(|e| e.to_string())
}

fn main() {
    let quick = std::env::var("BENCH_QUICK").is_ok_and(|v| v == "1");
    let n = if quick { 5 } else { 30 };
    let tmp = std::env::temp_dir().join(format!("pelagos-bench-probe-{}", std::process::id()));
    // The cache is written only into a run directory that exists (and is
    // private), as pelagos-net's own run directory.
    std::fs::create_dir_all(&tmp).expect("create the probe's run directory");
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o700)).expect("chmod 0700");
    let mut paths = Paths::from_env(&PathEnv::current());
    paths.run_dir = tmp.clone();
    let roots = ProbeRoots::current(&paths);
    let chosen = decide(&roots, true); // fills the cache
    let uncached = time(n, || decide(&roots, false));
    let cached = time(n * 10, || decide(&roots, true));
    let pasta = pelagos_net::host::path::find_executable(
        std::env::var_os("PATH").as_deref(),
        "pasta".as_ref(),
        pelagos_net::host::path::Entries::Absolute,
    );
    let spawn = pasta.as_ref().map(|p| time(n, || std::process::Command::new(p).arg("--version").output()));
    let _ = std::fs::remove_dir_all(&tmp);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("probe + decision (auto, egress) -> {chosen}");
    println!("{:<34} {:>9} {:>9} {:>7}  goal", "metric", "ms", "peer ms", "ratio");
    let spawn_ms = spawn.map(ms);
    let row = |name: &str, ours: Duration, goal: &str, pass: bool| {
        let (peer, ratio) = match spawn_ms {
            Some(s) => (format!("{s:.2}"), format!("{:.2}", ms(ours) / s)),
            None => ("-".into(), "-".into()),
        };
        println!("{name:<34} {:>9.3} {peer:>9} {ratio:>7}  {goal} {}", ms(ours), if pass { "PASS" } else { "MISS" });
    };
    row("uncached probe+select vs pasta --version", uncached, "info", true);
    row("cached probe+select vs pasta --version", cached, "cached < 1 ms", ms(cached) < 1.0);
}

//! Fault injection for crash-consistency tests (cargo feature
//! `fault-injection`, off by default).
//!
//! Owns the numbered points between resource-creating steps of setup and
//! teardown. With the feature on, [`point`] counts the points this process
//! passes; when the count reaches `PELAGOS_NET_FAULT_AT=N` the process is
//! killed with SIGKILL on the spot (no destructor, no teardown, exactly like
//! a crash), and with `PELAGOS_NET_FAULT_TRACE=<file>` every point appends
//! `<n> <name>` to that file, so a test learns how many steps a normal run
//! takes. Without the feature [`point`] is an empty inline function: release
//! builds carry no trace of it. Never used for anything but tests.

/// Environment variable: the step (1-based) at which the process dies.
pub const FAULT_AT_ENV: &str = "PELAGOS_NET_FAULT_AT";
/// Environment variable: a file every point appends its number and name to.
pub const FAULT_TRACE_ENV: &str = "PELAGOS_NET_FAULT_TRACE";

/// A crash point named `name` (`<area>.<step>`, e.g. `bridge.veth`).
#[cfg(feature = "fault-injection")]
pub fn point(name: &'static str) {
    imp::point(name);
}

/// A crash point; compiled to nothing without the `fault-injection` feature.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_name: &'static str) {}

/// The crash point before a setup step `op` (traced as `step.<op>`), so a
/// test can compare the steps a run executed with those `plan` printed.
#[cfg(feature = "fault-injection")]
pub fn step(op: &'static str) {
    imp::point_named(&format!("step.{op}"));
}

/// A step's crash point; compiled to nothing without the `fault-injection` feature.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn step(_op: &'static str) {}

/// Stop counting and tracing in this process: called first thing in a
/// forked process that runs on its own (a relay holder), whose points would
/// otherwise be numbered as if its parent passed them.
#[cfg(feature = "fault-injection")]
pub fn forked() {
    imp::disable();
}

/// Stop counting in this process; nothing to do without the feature.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn forked() {}

/// Whether this build carries fault points.
pub const ENABLED: bool = cfg!(feature = "fault-injection");

#[cfg(feature = "fault-injection")]
mod imp {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Config {
        at: Option<u64>,
        trace: Option<std::path::PathBuf>,
    }

    static HITS: AtomicU64 = AtomicU64::new(0);
    static OFF: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    pub(super) fn disable() {
        OFF.store(true, Ordering::SeqCst);
    }

    fn config() -> &'static Config {
        static CONFIG: OnceLock<Config> = OnceLock::new();
        CONFIG.get_or_init(|| Config {
            at: std::env::var(super::FAULT_AT_ENV).ok().and_then(|v| v.trim().parse().ok()),
            trace: std::env::var_os(super::FAULT_TRACE_ENV).filter(|v| !v.is_empty()).map(Into::into),
        })
    }

    pub(super) fn point(name: &'static str) {
        point_named(name);
    }

    pub(super) fn point_named(name: &str) {
        if OFF.load(Ordering::SeqCst) {
            return;
        }
        let cfg = config();
        if cfg.at.is_none() && cfg.trace.is_none() {
            return;
        }
        let n = HITS.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(path) = &cfg.trace
            && let Ok(mut f) = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
        {
            let _ = writeln!(f, "{n} {name}");
        }
        if cfg.at == Some(n) {
            let _ = writeln!(std::io::stderr(), "pelagos-net: fault injected at step {n} ({name})");
            // SAFETY: kill(2) on our own pid with a valid signal number has no
            // memory-safety preconditions; SIGKILL ends the process here.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            // SAFETY: _exit(2) never returns and touches no Rust state; it is
            // reached only if SIGKILL somehow did not end us.
            unsafe { libc::_exit(137) }
        }
    }
}

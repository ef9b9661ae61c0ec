//! Where the time of a switched `connect` goes: a timestamp per phase of
//! the supervisor's work, kept only when `PELAGOS_ACCEL_TRACE=1` is set in
//! the run's environment (a measuring aid, never on in normal runs: off, a
//! mark costs one branch). When the supervisor stops, the median and p90 of
//! each phase are logged, at `info`, with the number of connects measured.
//!
//! The clock starts when `poll` says a notification waits (the command's
//! thread entered `connect` before that: the wake-up is not in the table)
//! and stops once the answer is sent.

use std::time::Instant;

/// The environment variable that turns tracing on.
pub const ENV: &str = "PELAGOS_ACCEL_TRACE";

/// A phase of a switched connect, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Phase {
    /// `SECCOMP_IOCTL_NOTIF_RECV`.
    Receive,
    /// The socket address read from the caller's memory, and re-validated.
    Address,
    /// `reach::decide`.
    Decide,
    /// `pidfd_getfd` of the caller's socket (and the thread's pidfd when new).
    CopyFd,
    /// `Facts` of the caller's socket (type, namespace, state).
    Facts,
    /// The lock chosen (the route, under the device lock).
    Confine,
    /// The new socket, in the owner's namespace.
    Socket,
    /// The caller's options read and the changed ones set.
    Options,
    /// The lock attached.
    Lock,
    /// The supervisor's own `connect` (the SYN sent).
    Connect,
    /// Blocking mode restored, close-on-exec read from fdinfo.
    Flags,
    /// `SECCOMP_IOCTL_NOTIF_ADDFD`.
    AddFd,
    /// `SECCOMP_IOCTL_NOTIF_SEND`.
    Answer,
}

const PHASES: usize = Phase::Answer as usize + 1;
const NAMES: [&str; PHASES] = [
    "receive", "address", "decide", "copy_fd", "facts", "confine", "socket", "options", "lock", "connect", "flags",
    "addfd", "answer",
];
/// Most connects kept (the first ones).
const MAX_SAMPLES: usize = 100_000;

/// The marks of the connect under way, and those of past ones.
#[derive(Debug, Default)]
pub struct Trace {
    on: bool,
    start: Option<Instant>,
    /// Nanoseconds from the start to each phase's end (0: not reached).
    marks: [u64; PHASES],
    samples: Vec<[u64; PHASES]>,
}

impl Trace {
    /// Tracing as the environment says.
    pub fn from_env() -> Self {
        Self { on: std::env::var_os(ENV).is_some_and(|v| v == "1"), ..Self::default() }
    }

    /// A notification waits: the clock starts.
    pub fn begin(&mut self) {
        if self.on {
            self.start = Some(Instant::now());
            self.marks = [0; PHASES];
        }
    }

    /// `phase` ended now.
    pub fn mark(&mut self, phase: Phase) {
        if let Some(start) = self.start {
            self.marks[phase as usize] = start.elapsed().as_nanos() as u64;
        }
    }

    /// The answer is sent: the marks are kept when the connect was switched
    /// (its descriptor added).
    pub fn finish(&mut self) {
        let switched = self.marks[Phase::AddFd as usize] != 0;
        if self.start.take().is_some() && switched && self.samples.len() < MAX_SAMPLES {
            self.samples.push(self.marks);
        }
    }

    /// The median and p90 per phase, in microseconds, one line each; `None`
    /// when tracing is off or nothing was switched.
    pub fn summary(&self) -> Option<String> {
        if !self.on || self.samples.is_empty() {
            return None;
        }
        let mut out = format!("switched connects traced: {} (us per phase: p50 p90)", self.samples.len());
        for (i, name) in NAMES.iter().enumerate() {
            let mut d: Vec<u64> = self.samples.iter().map(|m| delta(m, i)).collect();
            out.push_str(&format!("\n  {name:<8} {}", p50_p90(&mut d)));
        }
        let mut total: Vec<u64> = self.samples.iter().map(|m| m[PHASES - 1]).collect();
        out.push_str(&format!("\n  {:<8} {}", "total", p50_p90(&mut total)));
        Some(out)
    }
}

/// The time phase `i` took: from the last phase before it that was reached.
fn delta(marks: &[u64; PHASES], i: usize) -> u64 {
    if marks[i] == 0 {
        return 0;
    }
    let before = marks[..i].iter().rev().find(|&&m| m != 0).copied().unwrap_or(0);
    marks[i].saturating_sub(before)
}

fn p50_p90(v: &mut [u64]) -> String {
    v.sort_unstable();
    let at = |q: usize| v[(v.len() - 1) * q / 100] as f64 / 1e3;
    format!("{:7.2} {:7.2}", at(50), at(90))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_it_keeps_nothing() {
        let mut t = Trace::default();
        t.begin();
        t.mark(Phase::Receive);
        t.finish();
        assert!(t.summary().is_none());
    }

    #[test]
    fn a_phase_not_reached_counts_zero_and_the_next_counts_from_the_last_reached() {
        let mut m = [0; PHASES];
        m[Phase::Receive as usize] = 1000;
        m[Phase::Connect as usize] = 5000;
        assert_eq!(delta(&m, Phase::Options as usize), 0);
        assert_eq!(delta(&m, Phase::Connect as usize), 4000);
    }

    #[test]
    fn on_it_reports_every_phase() {
        let mut t = Trace { on: true, ..Trace::default() };
        t.begin();
        t.mark(Phase::Receive);
        t.mark(Phase::AddFd);
        t.mark(Phase::Answer);
        t.finish();
        let s = t.summary().unwrap();
        assert!(s.contains("traced: 1") && s.contains("addfd") && s.contains("total"), "{s}");
    }
}

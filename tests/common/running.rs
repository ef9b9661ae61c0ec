//! A `pelagos-net run` in the background, and retrying until a command's
//! server is up.

use super::{Env, Topology};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Start `pelagos-net run ARGS` in the background; kill it on drop.
pub struct Running {
    pub child: std::process::Child,
}

impl Running {
    pub fn start(topo: &Topology, env: &Env, args: &[&str]) -> Self {
        let child =
            topo.cli(env, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn pelagos-net");
        Self { child }
    }

    /// Stop with SIGTERM (forwarded to the command) and collect the output.
    pub fn stop(mut self) -> std::process::Output {
        // `ip netns exec` execs setpriv which execs pelagos-net: same pid.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let child = std::mem::replace(&mut self.child, std::process::Command::new("true").spawn().unwrap());
        let _watchdog = Watchdog::arm(&child, Duration::from_secs(60));
        child.wait_with_output().unwrap()
    }
}

/// Start `pelagos-net ARGS` in the background and return once its command
/// printed its first line, `ready`; panic with the run's output otherwise.
pub fn start_ready(topo: &Topology, env: &Env, args: &[&str]) -> std::process::Child {
    spawn_ready(topo.cli(env, args))
}

/// [`start_ready`] of a command made otherwise (a wrapped one), as a [`Running`].
pub fn running_ready(cmd: std::process::Command) -> Running {
    Running { child: spawn_ready(cmd) }
}

fn spawn_ready(mut cmd: std::process::Command) -> std::process::Child {
    use std::io::BufRead;
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    if line != "ready\n" {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!("the run did not start: {line:?} {}", super::describe(&out));
    }
    child
}

/// Kills a child with SIGKILL if it still runs after a deadline, so a hung
/// command fails its test (killed, with its output) instead of stalling the
/// suite. Dropping the guard disarms it.
pub struct Watchdog {
    disarm: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    pub fn arm(child: &std::process::Child, after: Duration) -> Self {
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let (disarm, disarmed) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = disarmed.recv_timeout(after) {
                eprintln!("watchdog: pid {pid} still running after {after:?}; killing it");
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        });
        Self { disarm: Some(disarm), thread: Some(thread) }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.disarm.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Retry `f` until it succeeds or `secs` pass (the command needs a moment to
/// bind), times [`super::time_scale`].
pub fn eventually<T>(secs: u64, mut f: impl FnMut() -> std::io::Result<T>) -> T {
    let secs = secs * super::time_scale();
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("gave up after {secs}s: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

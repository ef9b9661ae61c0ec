//! A container runtime in one page, on pelagos-net's library API.
//!
//! ```text
//! runtime HOST_PORT CONTAINER_PORT -- COMMAND [ARG...]
//! ```
//!
//! It forks a child that makes its own namespaces (a user and a network
//! namespace when not root, a network namespace as root), brings `lo` up
//! and waits; attaches pasta to the child's namespace with one published
//! port (`127.0.0.1:HOST_PORT` to `CONTAINER_PORT`); lets the child exec the
//! command once the network is ready; waits for it; detaches; and exits
//! with the command's status. What pelagos-net starts is recorded in the
//! caller's runtime directory, so `pelagos-net gc` cleans up if this
//! process is killed.
//!
//! The child runs only async-signal-safe calls between fork and exec (it
//! may be forked from a process with threads), on strings prepared before
//! the fork.

use pelagos_net::{Network, NetworkMode, NetworkOptions, PortMapping, Target, bring_up_loopback};
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!("usage: runtime HOST_PORT CONTAINER_PORT -- COMMAND [ARG...]");
    ExitCode::from(2)
}

/// What the child needs, prepared before the fork.
struct ChildPlan {
    argv: Vec<CString>,
    /// `argv` as the null-terminated pointer array `execvp` takes.
    ptrs: Vec<*const libc::c_char>,
    rootless: bool,
    uid_map: CString,
    gid_map: CString,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(host_port), Some(port), Some("--")) = (args.first(), args.get(1), args.get(2).map(String::as_str)) else {
        return usage();
    };
    let Ok(mapping) = format!("127.0.0.1:{host_port}:{port}").parse::<PortMapping>() else { return usage() };
    let command = &args[3..];
    if command.is_empty() {
        return usage();
    }
    match run(mapping, command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("runtime: {e}");
            ExitCode::from(125)
        }
    }
}

fn run(mapping: PortMapping, command: &[String]) -> Result<u8, Box<dyn std::error::Error>> {
    let net = Network::new();
    let opts = NetworkOptions::new(NetworkMode::Pasta).publish(mapping);
    // Before the fork: the plan, the host port bound (a taken one fails here).
    let prepared = net.prepare(&opts)?;
    let (uid, gid) = (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw());
    let argv: Vec<CString> = command.iter().map(|a| CString::new(a.as_str())).collect::<Result<_, _>>()?;
    let ptrs = argv.iter().map(|a| a.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
    let plan = ChildPlan {
        argv,
        ptrs,
        rootless: uid != 0,
        uid_map: CString::new(format!("0 {uid} 1"))?,
        gid_map: CString::new(format!("0 {gid} 1"))?,
    };
    let (ready_rx, ready_tx) = nix::unistd::pipe()?;
    let (go_rx, go_tx) = nix::unistd::pipe()?;
    // SAFETY: the child branch calls only async-signal-safe functions on
    // memory prepared above and leaves through execvp or _exit.
    let child = match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => child_main(&plan, ready_tx, go_rx),
        nix::unistd::ForkResult::Parent { child } => child,
    };
    drop((ready_tx, go_rx));
    let mut byte = [0u8; 1];
    if nix::unistd::read(&ready_rx, &mut byte)? != 1 || byte[0] != b'R' {
        return Err("the child could not make its namespaces".into());
    }
    // The child's namespaces exist: network them and wait until ready.
    let attachment = prepared.attach(Target::Pid(child.as_raw() as u32))?;
    for m in attachment.ports() {
        eprintln!("runtime: published {m} (attachment {})", attachment.id());
    }
    nix::unistd::write(&go_tx, b"G")?;
    drop(go_tx);
    let code = match nix::sys::wait::waitpid(child, None)? {
        nix::sys::wait::WaitStatus::Exited(_, code) => code as u8,
        nix::sys::wait::WaitStatus::Signaled(_, sig, _) => 128 + sig as u8,
        _ => 125,
    };
    let report = attachment.detach();
    for e in &report.errors {
        eprintln!("runtime: detach: {e}");
    }
    Ok(code)
}

/// Write `data` to the file `path` (async-signal-safe).
fn write_file(path: &std::ffi::CStr, data: &[u8]) -> bool {
    // SAFETY: open/write/close on a NUL-terminated path and a live buffer.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
        let ok = fd >= 0 && libc::write(fd, data.as_ptr().cast(), data.len()) == data.len() as isize;
        if fd >= 0 {
            libc::close(fd);
        }
        ok
    }
}

fn child_main(plan: &ChildPlan, ready: OwnedFd, go: OwnedFd) -> ! {
    let flags = if plan.rootless { libc::CLONE_NEWUSER | libc::CLONE_NEWNET } else { libc::CLONE_NEWNET };
    // SAFETY: unshare with constant flags in this single-threaded child.
    let mut ok = unsafe { libc::unshare(flags) } == 0;
    if ok && plan.rootless {
        ok = write_file(c"/proc/self/setgroups", b"deny")
            && write_file(c"/proc/self/uid_map", plan.uid_map.as_bytes())
            && write_file(c"/proc/self/gid_map", plan.gid_map.as_bytes());
    }
    ok = ok && bring_up_loopback().is_ok();
    let mut byte = [if ok { b'R' } else { b'E' }];
    // SAFETY: raw reads and writes on pipe ends this child owns; execvp on
    // strings prepared before the fork; _exit ends the child.
    unsafe {
        libc::write(ready.as_raw_fd(), byte.as_ptr().cast(), 1);
        if !ok || libc::read(go.as_raw_fd(), byte.as_mut_ptr().cast(), 1) != 1 {
            libc::_exit(125);
        }
        libc::execvp(plan.argv[0].as_ptr(), plan.ptrs.as_ptr());
        libc::_exit(127)
    }
}

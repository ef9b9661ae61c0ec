//! `pelagos-net-cni`: the CNI plugin binary (install it as `pelagos-net` in
//! a CNI bin directory). All logic is in `pelagos_net::cni`.
//!
//! Decision: a C `main` (`no_main`). The plugin lives for one call, and
//! Rust's own start-up (the main thread's stack guard, found by reading
//! `/proc/self/maps`; an alternate signal stack and SIGSEGV/SIGBUS
//! handlers; checking that fds 0-2 are open) is a measurable part of it.
//! It needs none of that: it reads stdin to the end, writes one answer and
//! exits. SIGPIPE is ignored as Rust's start-up would (a runtime that
//! closed our stdout gets no answer either way; the work is not cut short).

#![no_main]

use std::io::{Read, Write};

/// The plugin: stdin and the `CNI_*` variables in, one answer out.
#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    // SAFETY: setting a signal's disposition to SIG_IGN touches no memory.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let outcome = match read {
        Ok(_) => pelagos_net::cni::run(|k| std::env::var(k).ok(), &stdin),
        Err(e) => pelagos_net::cni::Outcome {
            stdout: format!(
                "{{\"cniVersion\":\"1.1.0\",\"code\":5,\"msg\":\"cannot read stdin\",\"details\":\"{e}\"}}\n"
            ),
            status: 1,
        },
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(outcome.stdout.as_bytes());
    let _ = out.flush();
    drop(out);
    // The answer is out: let go of the runtime's pipes now, so its read
    // ends at our exit, whenever the child below is scheduled.
    for fd in 0..=2 {
        // SAFETY: nothing in this process uses fds 0-2 after this point.
        unsafe { libc::close(fd) };
    }
    // Sockets that removed forwards are closed after this process is gone,
    // so the runtime does not wait for the kernel's grace period.
    pelagos_net::cni::detach_pending();
    std::process::exit(outcome.status);
}

//! `pelagos-net-cni`: the CNI plugin binary (install it as `pelagos-net` in
//! a CNI bin directory). All logic is in `pelagos_net::cni`; the process
//! starts as `pelagos_net::cli::start` describes.
#![cfg_attr(not(test), no_main)]

use std::io::{Read, Write};

pelagos_net::binary_main!(plugin);

/// One short command per process: allocations come from a static block
/// (see `pelagos_net::cli::arena`), 4 MiB, of which an `ADD` touches a
/// few hundred KiB.
#[global_allocator]
static ALLOC: pelagos_net::cli::arena::Arena<{ 4 << 20 }> = pelagos_net::cli::arena::Arena::new();

/// The plugin's run; returns the exit status.
fn plugin() -> i32 {
    // Room for any usual configuration: one read and the one seeing EOF.
    let mut stdin = Vec::with_capacity(16 * 1024);
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
    // ends at our exit, whenever the closer's child is scheduled.
    for fd in 0..=2 {
        // SAFETY: nothing in this process uses fds 0-2 after this point.
        unsafe { libc::close(fd) };
    }
    // Sockets that removed forwards are closed after this process is gone,
    // so the runtime does not wait for the kernel's grace period.
    pelagos_net::cni::detach_pending();
    outcome.status
}

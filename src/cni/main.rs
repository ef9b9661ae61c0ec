//! `pelagos-net-cni`: the CNI plugin binary (install it as `pelagos-net` in
//! a CNI bin directory). All logic is in `pelagos_net::cni`.

use std::io::{Read, Write};

fn main() {
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
    // Sockets that removed forwards are closed after this process is gone,
    // so the runtime does not wait for the kernel's grace period.
    pelagos_net::cni::detach_pending();
    std::process::exit(outcome.status);
}

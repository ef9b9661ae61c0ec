//! Work inside the holder: a helper forked from this (single-threaded)
//! process joins the holder's user namespace, then its network namespace
//! (`setns` into a user namespace needs a single-threaded process, and the
//! user namespace must come first), runs the work there and sends the
//! result back as JSON on a pipe. The namespace files are opened here,
//! before the fork, so a failure to open them is reported plainly.

use super::{HolderError, HolderState};
use nix::errno::Errno;
use nix::unistd::ForkResult;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

/// Run `work` inside the holder's user and network namespaces; `op` names
/// it in errors. The work's error is carried back as its message chain.
pub fn inside<T, F>(state: &HolderState, proc_root: &Path, op: &'static str, work: F) -> Result<T, HolderError>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Result<T, String>,
{
    super::daemon::single_threaded(proc_root)?;
    let open = |kind: &str| {
        let path = state.ns_path(proc_root, kind);
        File::open(&path).map_err(|source| HolderError::OpenNamespace { path, source })
    };
    let (user, net) = (open("user")?, open("net")?);
    let (rx, tx) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|source| HolderError::Sys { op: "pipe", source })?;
    // SAFETY: this process is single-threaded (checked above), so the child
    // may run any code; it leaves with `_exit` and never returns.
    match unsafe { nix::unistd::fork() }.map_err(|source| HolderError::Sys { op: "fork a holder helper", source })? {
        ForkResult::Child => {
            drop(rx);
            crate::fault::forked();
            let _ = crate::helpers::spawn::helper_child_setup();
            let result: Result<T, String> = join(&user, &net).and_then(|()| work());
            let mut out = File::from(tx);
            let _ = out.write_all(&serde_json::to_vec(&result).unwrap_or_default());
            drop(out);
            // SAFETY: leaves the helper at once, running nothing of the parent's.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(tx);
            let mut bytes = Vec::new();
            let read = File::from(rx).read_to_end(&mut bytes);
            while let Err(Errno::EINTR) = nix::sys::wait::waitpid(child, None) {}
            if let Err(e) = read {
                return Err(HolderError::Inside { op, message: e.to_string() });
            }
            match serde_json::from_slice::<Result<T, String>>(&bytes) {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(message)) => Err(HolderError::Inside { op, message }),
                Err(_) => Err(HolderError::Inside { op, message: "the helper died without an answer".into() }),
            }
        }
    }
}

/// Join the user namespace, then the network namespace.
fn join(user: &File, net: &File) -> Result<(), String> {
    for (ns, kind, what) in
        [(user, libc::CLONE_NEWUSER, "join the holder's user namespace"), (net, libc::CLONE_NEWNET, "join its network namespace")]
    {
        // SAFETY: setns(2) on a descriptor we hold open; this process is a
        // fresh single-threaded fork.
        if unsafe { libc::setns(ns.as_raw_fd(), kind) } != 0 {
            return Err(format!("{what}: {}", Errno::last()));
        }
    }
    Ok(())
}

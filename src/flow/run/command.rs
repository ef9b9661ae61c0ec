//! The command of a run: resolving it before anything is created, and
//! releasing the waiting child to exec it once the network is ready.

use super::{RunError, RunOptions, RunReport};
use crate::flow::exec::Exec;
use crate::ns::child::ExecOutcome;
use nix::errno::Errno;
use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Find `cmd` like execvp would: as given when it has a `/`, else on PATH.
pub fn resolve_command(cmd: &std::ffi::OsStr, path_env: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    crate::host::path::find_executable(path_env, cmd, crate::host::path::Entries::All)
}

pub(super) fn cstring(bytes: &[u8]) -> CString {
    CString::new(bytes.to_vec()).unwrap_or_default()
}

pub(super) fn prepare_command(command: &[OsString]) -> Result<(PathBuf, Vec<CString>), RunError> {
    let first = command.first().ok_or(RunError::NoCommand)?;
    let program = resolve_command(first, std::env::var_os("PATH").as_deref())
        .ok_or_else(|| RunError::CommandNotFound(first.to_string_lossy().into_owned()))?;
    let argv = command.iter().map(|a| cstring(a.as_bytes())).collect();
    Ok((program, argv))
}

pub(super) fn run_host(program: &Path, argv: &[CString]) -> Result<RunReport, RunError> {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(program);
    cmd.arg0(std::ffi::OsStr::from_bytes(argv[0].as_bytes()));
    cmd.args(argv[1..].iter().map(|a| std::ffi::OsStr::from_bytes(a.as_bytes())));
    let err = cmd.exec();
    let errno = Errno::from_raw(err.raw_os_error().unwrap_or(libc::EIO));
    Err(RunError::Exec { command: program.display().to_string(), errno })
}

/// Announce the ports, let the child exec, and learn whether it could. On
/// failure the child is killed and reaped; the caller tears the rest down.
pub(super) fn start_command(exec: &mut Exec, opts: &RunOptions) -> Result<(), RunError> {
    let Some(child) = exec.child.as_mut() else { return Err(RunError::NoCommand) };
    if let Some(hook) = &opts.on_ready {
        let ready = super::Ready {
            id: &exec.record.id,
            mode: &exec.plan.mode,
            ports: &exec.ports,
            pid: child.pid(),
            bridge_address: exec.lease,
        };
        (hook.0)(&ready);
    }
    let err = match child.release() {
        Ok(ExecOutcome::Running) => return Ok(()),
        Ok(ExecOutcome::Failed(errno)) => {
            RunError::Exec { command: opts.command[0].to_string_lossy().into_owned(), errno }
        }
        Err(e) => e.into(),
    };
    child.kill_and_reap();
    Err(err)
}

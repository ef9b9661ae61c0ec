//! `run --json-status FD|PATH`: machine-readable run events, one JSON
//! document per line (schema `docs/schemas/run-status.schema.json`):
//! `ready` once the network is ready (id, mode, pid, ports with the chosen
//! host ports, addresses), `exit` when the run ends (exit code, or the error
//! that stopped it). A descriptor is kept from the command (close-on-exec),
//! so a reader sees end-of-file when pelagos-net exits.

use super::error::CliError;
use super::output;
use std::fs::File;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Mutex;

/// Where the events go.
#[derive(Debug)]
pub struct StatusSink(Mutex<File>);

fn bad(spec: &str, why: impl std::fmt::Display) -> CliError {
    CliError::usage(format!("invalid value '{spec}' for '--json-status <FD|PATH>': {why}"))
}

impl StatusSink {
    /// Open `spec`: a descriptor number the caller passed us (e.g.
    /// `3>status.json`, or a pipe), or a file path (created or truncated).
    pub fn open(spec: &str) -> Result<Self, CliError> {
        if spec.is_empty() {
            return Err(bad(spec, "empty"));
        }
        if spec.bytes().all(|b| b.is_ascii_digit()) {
            let fd: i32 = spec.parse().map_err(|_| bad(spec, "not a descriptor number"))?;
            return Self::from_fd(spec, fd);
        }
        let file =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(spec).map_err(|e| bad(spec, e))?;
        Ok(Self(Mutex::new(file)))
    }

    fn from_fd(spec: &str, fd: i32) -> Result<Self, CliError> {
        use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
        if fd == 0 {
            return Err(bad(spec, "descriptor 0 is stdin"));
        }
        // SAFETY: F_GETFL only reads the status flags of `fd`; an fd that is
        // not open fails with EBADF and is refused.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(bad(spec, "descriptor is not open"));
        }
        let mode = OFlag::from_bits_truncate(flags) & OFlag::O_ACCMODE;
        if mode == OFlag::O_RDONLY {
            return Err(bad(spec, "descriptor is not open for writing"));
        }
        // SAFETY: `fd` is open (checked above) and nothing in this process
        // owns it: it was inherited for us. stdout and stderr stay with the
        // process; we write to a duplicate of them.
        let owned = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let file = if fd > 2 {
            // SAFETY: as above; from here on the OwnedFd is its only owner.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            fcntl(&owned, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|e| bad(spec, e))?;
            File::from(owned)
        } else {
            File::from(owned.try_clone_to_owned().map_err(|e| bad(spec, e))?)
        };
        Ok(Self(Mutex::new(file)))
    }

    /// Write one document as a line. A reader that went away is warned
    /// about once per document, never fatal: the run goes on.
    pub fn emit(&self, value: &serde_json::Value) {
        let mut line = value.to_string();
        line.push('\n');
        let mut file = match self.0.lock() {
            Ok(f) => f,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Err(e) = file.write_all(line.as_bytes()).and_then(|()| file.flush()) {
            output::warn(&format!("writing the JSON status: {e}"));
        }
    }
}

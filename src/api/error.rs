//! The error a runtime gets: what failed (its message never names a
//! command-line flag), what kind of failure it is, and a separate hint in
//! the command line's terms for tools that print one.

use crate::flow::RunError;

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request was refused before anything was created (a mode the
    /// host cannot run, a port the mode cannot publish, ...).
    Refused,
    /// The namespace cannot be used (not a network namespace, a dead
    /// process, not joinable), or collides with another attachment.
    Target,
    /// No attachment has the id, or it is busy.
    NotFound,
    /// Setting up failed (a helper, the kernel, the state directory);
    /// everything created was undone.
    Setup,
}

/// A failure of the library API.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Error(#[from] RunError);

impl Error {
    /// What kind of failure it is.
    pub fn kind(&self) -> ErrorKind {
        match &self.0 {
            RunError::Refused(_) => ErrorKind::Refused,
            RunError::Target(_) | RunError::Conflict { .. } => ErrorKind::Target,
            RunError::UnknownAttachment(_) | RunError::NotAnAttachment(_) | RunError::Busy { .. } => {
                ErrorKind::NotFound
            }
            _ => ErrorKind::Setup,
        }
    }

    /// What to change, in `pelagos-net`'s command-line terms, when there
    /// is advice.
    pub fn hint(&self) -> Option<String> {
        self.0.hint()
    }

    /// The exit code `pelagos-net` uses for it.
    pub fn exit_code(&self) -> i32 {
        self.0.exit_code()
    }
}

impl From<crate::flow::plan::Refusal> for Error {
    fn from(r: crate::flow::plan::Refusal) -> Self {
        Self(r.into())
    }
}

impl From<crate::ns::target::TargetError> for Error {
    fn from(e: crate::ns::target::TargetError) -> Self {
        Self(e.into())
    }
}

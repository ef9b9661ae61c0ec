//! Subcommands of the `pelagos-net` binary beyond `run`.

pub mod attach;
pub mod network;

pub(crate) use crate::error_chain;

/// A failed subcommand: its exit code and message.
#[derive(Debug)]
pub struct Fail {
    /// Exit code.
    pub code: i32,
    /// Message (without the `pelagos-net: error:` prefix).
    pub message: String,
}

impl Fail {
    /// A failure with `code` and `message`.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

//! Exit statuses and the one error type every subcommand returns.
//!
//! Exit codes follow docker and podman: 125 when pelagos-net itself fails
//! (a usage error or a runtime error before the command ran), 126/127 when
//! the command cannot be executed or is not found, otherwise the command's
//! own status. Read-only subcommands use 1 for "the answer is no" (a
//! network that does not exist, a host that cannot network).

/// Usage errors and failures of pelagos-net itself.
pub const EXIT_USAGE: i32 = 125;

/// How a subcommand ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit(i32);

impl Exit {
    /// Exit status 0.
    pub const SUCCESS: Exit = Exit(0);
    /// Exit status 1: the command worked and the answer is "no".
    pub const NO: Exit = Exit(1);

    /// Exit with `code` (clamped to 0..=255).
    pub fn code(code: i32) -> Exit {
        Exit(code)
    }

    /// The process's exit status (clamped to 0..=255).
    pub fn status(self) -> i32 {
        self.0.clamp(0, 255)
    }
}

/// A subcommand that failed: its exit code and one message, printed once as
/// `pelagos-net: error: MESSAGE`.
#[derive(Debug)]
pub struct CliError {
    /// Exit code.
    pub code: i32,
    /// Message (without the `pelagos-net: error:` prefix).
    pub message: String,
}

impl CliError {
    /// A usage error (exit 125). The message names the offending flag or value.
    pub fn usage(message: impl Into<String>) -> Self {
        Self { code: EXIT_USAGE, message: message.into() }
    }

    /// A failure with `code` and `message`.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// A failure of pelagos-net itself (exit 125), described by `err` and its causes.
    pub fn from_error(err: &dyn std::error::Error) -> Self {
        Self::new(EXIT_USAGE, error_chain(err))
    }
}

pub use crate::flow::error_chain;

/// `message`, and the hint on the lines after it (each `  fix: HINT`, as
/// the selection's fixes were always printed).
pub fn with_hint(message: &str, hint: Option<String>) -> String {
    let mut text = message.to_owned();
    for line in hint.iter().flat_map(|h| h.lines()) {
        text.push_str("\n  fix: ");
        text.push_str(line);
    }
    text
}

/// The text of a clap parse error in our style: `error: X` becomes
/// `pelagos-net: error: X`, the tip and usage lines are kept.
pub fn clap_message(err: &clap::Error) -> String {
    let text = err.render().to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    text.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_skips_repeated_sources() {
        let err = Wrapper(std::io::Error::other("disk full"));
        assert_eq!(error_chain(&err), "writing: disk full");
    }

    #[derive(Debug)]
    struct Wrapper(std::io::Error);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "writing")
        }
    }
    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn exit_codes_clamp() {
        assert_eq!(Exit::code(300).status(), 255);
        assert_eq!(Exit::code(-1).status(), 0);
    }
}

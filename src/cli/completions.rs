//! `pelagos-net completions SHELL`: a completion script generated from the
//! same clap definitions the parser uses, so it never drifts from them.
//!
//! bash: `source <(pelagos-net completions bash)`, or save it as
//! `/usr/share/bash-completion/completions/pelagos-net`; zsh: save as
//! `_pelagos-net` on `$fpath`; fish: save under
//! `~/.config/fish/completions/pelagos-net.fish`.

use super::error::{CliError, Exit};
use super::{Context, output};

/// Shells we generate for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Shell {
    /// bash.
    Bash,
    /// zsh.
    Zsh,
    /// fish.
    Fish,
}

/// Options of `completions`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell.
    shell: Shell,
}

/// Print the script.
pub fn run_cmd(args: Args, _ctx: &Context) -> Result<Exit, CliError> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut super::command(), "pelagos-net", &mut script);
    output::out(&String::from_utf8_lossy(&script))?;
    Ok(Exit::SUCCESS)
}
